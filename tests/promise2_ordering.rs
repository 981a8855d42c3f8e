//! Promise 2: per (publisher, subscriber) FIFO; one subscriber is never run twice at
//! once; a topic's events reach every subscriber in `seq` order; inline dispatch is
//! breadth-first.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::checker::{EventKey, History};
use common::{on_threads, with_deadline, FIVE_SECONDS};
use crier::{Bus, Dispatch, Envelope};

#[test]
fn each_subscriber_sees_each_publishers_events_in_order() {
    with_deadline(Duration::from_secs(60), || {
        let bus = Bus::builder().workers(2).build().unwrap();
        let history = Arc::new(History::new());
        let mut subs = Vec::new();
        for (i, dispatch) in [Dispatch::Pool, Dispatch::Pool, Dispatch::Thread, Dispatch::Inline]
            .into_iter()
            .enumerate()
        {
            let name = format!("s{i}-{dispatch:?}");
            let (h, n) = (history.clone(), name.clone());
            let sub = bus
                .subscriber::<EventKey>()
                .name(&name)
                .capacity(16)
                .dispatch(dispatch)
                .subscribe(move |env: &Envelope<EventKey>| h.delivered(&n, **env))
                .unwrap();
            history.opened(&name, true);
            subs.push((name, sub));
        }
        let (b, h) = (bus.clone(), history.clone());
        on_threads(4, move |p| {
            for n in 0..2_000 {
                let key = EventKey { publisher: p as u32, n };
                h.publish(key, || b.publish(key).map_err(drop));
            }
        });
        bus.wait_idle(FIVE_SECONDS).unwrap();
        for (name, sub) in &subs {
            history.final_stats(name, sub.stats());
        }
        let report = history.check();
        report.assert_clean();
        assert_eq!(report.deliveries, 4 * 4 * 2_000);
    });
}

#[test]
fn every_subscriber_sees_a_topic_in_seq_order() {
    with_deadline(Duration::from_secs(60), || {
        let bus = Bus::builder().workers(2).build().unwrap();
        let logs: Vec<Arc<Mutex<Vec<u64>>>> = (0..3).map(|_| Arc::default()).collect();
        let subs: Vec<_> = logs
            .iter()
            .map(|log| {
                let log = log.clone();
                bus.subscribe(move |env: &Envelope<u32>| log.lock().unwrap().push(env.seq()))
                    .unwrap()
            })
            .collect();
        let b = bus.clone();
        on_threads(3, move |_| {
            for n in 0..1_000_u32 {
                b.publish(n).unwrap();
            }
        });
        bus.wait_idle(FIVE_SECONDS).unwrap();
        let expected: Vec<u64> = (0..3_000).collect();
        for log in &logs {
            assert_eq!(
                *log.lock().unwrap(),
                expected,
                "seq order, gap-free, the same for everyone"
            );
        }
        drop(subs);
    });
}

#[test]
fn the_pool_never_runs_one_subscriber_on_two_workers() {
    with_deadline(Duration::from_secs(60), || {
        let bus = Bus::builder().workers(4).build().unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let overlaps = Arc::new(AtomicUsize::new(0));
        let (r, o) = (running.clone(), overlaps.clone());
        let sub = bus
            .subscribe(move |_: &Envelope<u32>| {
                if r.fetch_add(1, Ordering::SeqCst) != 0 {
                    o.fetch_add(1, Ordering::SeqCst);
                }
                std::hint::spin_loop();
                r.fetch_sub(1, Ordering::SeqCst);
            })
            .unwrap();
        // Other subscribers keep the other workers busy and stealing.
        let _others: Vec<_> = (0..4).map(|_| bus.subscribe(|_: &Envelope<u32>| {}).unwrap()).collect();
        let b = bus.clone();
        on_threads(2, move |_| {
            for n in 0..20_000_u32 {
                b.publish(n).unwrap();
            }
        });
        bus.wait_idle(FIVE_SECONDS).unwrap();
        assert_eq!(overlaps.load(Ordering::SeqCst), 0);
        assert_eq!(sub.stats().delivered, 40_000);
    });
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    A,
    B,
    C,
    D,
}

#[test]
fn inline_dispatch_is_breadth_first() {
    let bus = Bus::builder().inline().build().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let weak = bus.downgrade();
    let log = seen.clone();
    let _sub = bus
        .subscribe(move |env: &Envelope<Step>| {
            log.lock().unwrap().push(**env);
            let bus = weak.upgrade().unwrap();
            match **env {
                Step::A => {
                    bus.publish(Step::B).unwrap();
                    bus.publish(Step::C).unwrap();
                }
                Step::B => {
                    bus.publish(Step::D).unwrap();
                }
                Step::C | Step::D => {}
            }
        })
        .unwrap();
    let second = seen.clone();
    let _witness = bus
        .subscribe(move |env: &Envelope<Step>| second.lock().unwrap().push(**env))
        .unwrap();
    bus.publish(Step::A).unwrap();
    // Each event reaches both handlers before any event it caused.
    use Step::*;
    assert_eq!(*seen.lock().unwrap(), vec![A, A, B, B, C, C, D, D]);
}

/// Across topics too: an event published by a handler waits until every handler of
/// the current event ran, even when its own subscriber is idle and could run at once.
#[test]
fn inline_dispatch_is_breadth_first_across_topics() {
    #[derive(Debug)]
    struct Caused;
    let bus = Bus::builder().inline().build().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let weak = bus.downgrade();
    let log = seen.clone();
    let _first = bus
        .subscribe(move |_: &Envelope<Step>| {
            log.lock().unwrap().push("first saw A");
            weak.upgrade().unwrap().publish(Caused).unwrap();
        })
        .unwrap();
    let log = seen.clone();
    let _second = bus
        .subscribe(move |_: &Envelope<Step>| log.lock().unwrap().push("second saw A"))
        .unwrap();
    let log = seen.clone();
    let _caused = bus
        .subscribe(move |_: &Envelope<Caused>| log.lock().unwrap().push("caused"))
        .unwrap();
    bus.publish(Step::A).unwrap();
    assert_eq!(*seen.lock().unwrap(), vec!["first saw A", "second saw A", "caused"]);
}
