//! Promise 4: a panicking or failing handler is a counted failure; the bus, its workers
//! and its other subscribers keep working.

mod common;

use std::sync::{Arc, Mutex};

use common::FIVE_SECONDS;
use crier::{Bus, Dispatch, Envelope};

fn always_panics<E>(_: &Envelope<E>) {
    panic!("always");
}

#[test]
fn a_handler_that_panics_every_call_does_not_stop_the_bus() {
    for dispatch in [Dispatch::Pool, Dispatch::Thread, Dispatch::Inline] {
        let bus = Bus::builder().workers(1).dispatch(dispatch).build().unwrap();
        let bad = bus.subscribe(always_panics::<u32>).unwrap();
        let good = bus.subscribe(|_: &Envelope<u32>| {}).unwrap();
        for n in 0..200_u32 {
            bus.publish(n).unwrap();
        }
        bus.wait_idle(FIVE_SECONDS).unwrap();
        assert_eq!(bad.stats().failed, 200, "{dispatch:?}");
        assert_eq!(bad.stats().last_error.as_deref(), Some("panicked: always"));
        assert_eq!(good.stats().delivered, 200, "{dispatch:?}");
        // The single worker survived: later events still run.
        bus.publish(1_u32).unwrap();
        bus.wait_idle(FIVE_SECONDS).unwrap();
        assert_eq!(good.stats().delivered, 201, "{dispatch:?}");
    }
}

#[test]
fn the_error_hook_sees_errors_and_panics() {
    let bus = Bus::builder().inline().build().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let sub = bus
        .subscriber::<i32>()
        .name("picky")
        .on_error(move |e| {
            log.lock()
                .unwrap()
                .push((e.subscriber().to_owned(), e.is_panic(), e.to_string()))
        })
        .subscribe(|env: &Envelope<i32>| -> Result<(), String> {
            match **env {
                0 => Err("zero".into()),
                n if n < 0 => panic!("negative {n}"),
                _ => Ok(()),
            }
        })
        .unwrap();
    let first = bus.publish(0).unwrap();
    bus.publish(-3).unwrap();
    bus.publish(5).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!((seen[0].0.as_str(), seen[0].1), ("picky", false));
    assert!(
        seen[0].2.contains(&first.id.to_string()) && seen[0].2.ends_with("zero"),
        "{}",
        seen[0].2
    );
    assert!(
        seen[1].1 && seen[1].2.ends_with("panicked: negative -3"),
        "{}",
        seen[1].2
    );
    let stats = sub.stats();
    assert_eq!((stats.delivered, stats.failed), (1, 2));
}

#[test]
fn the_bus_wide_hook_applies_where_no_subscriber_hook_is_set() {
    let failures = Arc::new(Mutex::new(0));
    let count = failures.clone();
    let bus = Bus::builder()
        .inline()
        .on_error(move |_| *count.lock().unwrap() += 1)
        .build()
        .unwrap();
    let _a = bus.subscribe(always_panics::<u8>).unwrap();
    let own = Arc::new(Mutex::new(0));
    let mine = own.clone();
    let _b = bus
        .subscriber::<u8>()
        .on_error(move |_| *mine.lock().unwrap() += 1)
        .subscribe(always_panics::<u8>)
        .unwrap();
    bus.publish(1_u8).unwrap();
    assert_eq!((*failures.lock().unwrap(), *own.lock().unwrap()), (1, 1));
}

#[test]
fn panicking_hooks_and_filters_are_contained() {
    let bus = Bus::builder().workers(1).build().unwrap();
    let hooked = bus
        .subscriber::<u8>()
        .on_error(|_| panic!("the hook itself panics"))
        .subscribe(|_: &Envelope<u8>| -> Result<(), &'static str> { Err("fail") })
        .unwrap();
    let filtered = bus
        .subscriber::<u8>()
        .filter(|n| if *n == 3 { panic!("bad filter") } else { true })
        .receiver()
        .unwrap();
    for n in 0..5_u8 {
        bus.publish(n).unwrap();
    }
    bus.wait_idle(FIVE_SECONDS).unwrap();
    assert_eq!(hooked.stats().failed, 5);
    let stats = filtered.stats();
    assert_eq!((stats.accepted, stats.failed, stats.queued), (5, 1, 4));
    assert!(stats.is_balanced());
    assert_eq!(stats.last_error.as_deref(), Some("panicked: in filter: bad filter"));
}

#[test]
fn a_panicking_filters_hook_runs_with_no_bus_lock_held() {
    // The hook publishes to the very topic whose publish found the panicking filter:
    // had it run under the topic's commit lock, this would deadlock.
    common::with_deadline(std::time::Duration::from_secs(30), || {
        let bus = Bus::builder().inline().build().unwrap();
        let weak = bus.downgrade();
        let republished = Arc::new(Mutex::new(Vec::new()));
        let log = republished.clone();
        let sub = bus
            .subscriber::<u8>()
            .filter(|n| if *n == 3 { panic!("three") } else { true })
            .on_error(move |_| {
                let receipt = weak.upgrade().unwrap().publish(4_u8).unwrap();
                log.lock().unwrap().push(receipt.seq);
            })
            .subscribe(|_: &Envelope<u8>| {})
            .unwrap();
        bus.publish(3_u8).unwrap();
        assert_eq!(*republished.lock().unwrap(), vec![1]);
        let stats = sub.stats();
        assert_eq!((stats.accepted, stats.failed, stats.delivered), (2, 1, 1));
    });
}
