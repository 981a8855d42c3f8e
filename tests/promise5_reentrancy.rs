//! Promise 5: a handler may publish, subscribe and unsubscribe without deadlock; a
//! publish from a handler never waits on a full mailbox; causation is automatic.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{with_deadline, FIVE_SECONDS};
use crier::{Bus, Dispatch, Envelope, PublishError, ShutdownError, Subscription, WaitIdleError};

struct Parent;
struct Child;

#[test]
fn a_handler_may_publish_a_thousand_events_per_event() {
    for dispatch in [Dispatch::Pool, Dispatch::Thread, Dispatch::Inline] {
        with_deadline(Duration::from_secs(60), move || {
            let bus = Bus::builder().workers(2).dispatch(dispatch).build().unwrap();
            let children = bus
                .subscriber::<Child>()
                .unbounded()
                .subscribe(|_: &Envelope<Child>| {})
                .unwrap();
            let weak = bus.downgrade();
            let _parent = bus
                .subscribe(move |_: &Envelope<Parent>| {
                    let bus = weak.upgrade().unwrap();
                    for _ in 0..1_000 {
                        bus.publish(Child).unwrap();
                    }
                })
                .unwrap();
            for _ in 0..20 {
                bus.publish(Parent).unwrap();
            }
            // wait_idle covers the children that handlers published.
            bus.wait_idle(Duration::from_secs(30)).unwrap();
            assert_eq!(children.stats().delivered, 20_000, "{dispatch:?}");
        });
    }
}

/// tailscale #18012: a handler publishing more than 2x the capacity of a full mailbox
/// deadlocked the bus. Here the publish returns `Full` with the event instead.
#[test]
fn a_handler_publishing_into_a_full_block_mailbox_gets_full_not_a_deadlock() {
    with_deadline(Duration::from_secs(30), || {
        const K: usize = 16;
        let bus = Bus::builder().workers(1).build().unwrap();
        // A receiver nobody drains: its Block mailbox fills up after K events.
        let stuck = bus.subscriber::<Child>().capacity(K).receiver().unwrap();
        let (accepted, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (a, r) = (accepted.clone(), refused.clone());
        let weak = bus.downgrade();
        let _parent = bus
            .subscribe(move |_: &Envelope<Parent>| {
                let bus = weak.upgrade().unwrap();
                for _ in 0..(3 * K) {
                    match bus.publish(Child) {
                        Ok(_) => a.fetch_add(1, Ordering::SeqCst),
                        Err(PublishError::Full(Child)) => r.fetch_add(1, Ordering::SeqCst),
                        Err(other) => panic!("unexpected {other:?}"),
                    };
                }
            })
            .unwrap();
        bus.publish(Parent).unwrap();
        bus.wait_idle(FIVE_SECONDS).unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), K as u64);
        assert_eq!(refused.load(Ordering::SeqCst), 2 * K as u64);
        let stats = stuck.stats();
        assert_eq!(
            (stats.accepted, stats.queued, stats.refused),
            (K as u64, K as u64, 2 * K as u64)
        );
    });
}

#[test]
fn causation_and_correlation_are_inherited_by_handler_publishes() {
    for dispatch in [Dispatch::Pool, Dispatch::Inline] {
        let bus = Bus::builder().dispatch(dispatch).build().unwrap();
        let weak = bus.downgrade();
        let _parent = bus
            .subscribe(move |_: &Envelope<Parent>| {
                weak.upgrade().unwrap().publish(Child).unwrap();
            })
            .unwrap();
        let children = bus.receiver::<Child>().unwrap();
        let root = bus.publish(Parent).unwrap();
        let child = children.recv_timeout(FIVE_SECONDS).unwrap();
        assert_eq!(child.causation_id(), Some(root.id), "{dispatch:?}");
        assert_eq!(child.correlation_id(), root.id, "{dispatch:?}");

        // An explicit correlation id flows on to the next generation.
        let flow = crier::EventId::from_u128(42);
        let root = bus.message(Parent).correlation_id(flow).publish().unwrap();
        let child = children.recv_timeout(FIVE_SECONDS).unwrap();
        assert_eq!((child.causation_id(), child.correlation_id()), (Some(root.id), flow));

        // Outside a handler there is no causation.
        bus.publish(Child).unwrap();
        assert_eq!(children.recv_timeout(FIVE_SECONDS).unwrap().causation_id(), None);
    }
}

#[test]
fn a_handler_may_subscribe_and_the_new_handler_misses_the_current_event() {
    let bus = Bus::builder().inline().build().unwrap();
    let late_seen = Arc::new(Mutex::new(Vec::new()));
    let added: Arc<Mutex<Vec<Subscription>>> = Arc::default();
    let (weak, log, keep) = (bus.downgrade(), late_seen.clone(), added.clone());
    let _first = bus
        .subscribe(move |env: &Envelope<u32>| {
            if **env == 0 {
                let log = log.clone();
                let sub = weak
                    .upgrade()
                    .unwrap()
                    .subscribe(move |env: &Envelope<u32>| log.lock().unwrap().push(**env))
                    .unwrap();
                keep.lock().unwrap().push(sub);
            }
        })
        .unwrap();
    bus.publish(0_u32).unwrap();
    bus.publish(1_u32).unwrap();
    assert_eq!(*late_seen.lock().unwrap(), vec![1]);
}

#[test]
fn a_handler_may_unsubscribe_itself() {
    for dispatch in [Dispatch::Pool, Dispatch::Thread, Dispatch::Inline] {
        with_deadline(Duration::from_secs(30), move || {
            let bus = Bus::builder().dispatch(dispatch).build().unwrap();
            let own: Arc<Mutex<Option<Subscription>>> = Arc::default();
            let calls = Arc::new(AtomicU64::new(0));
            let (slot, count) = (own.clone(), calls.clone());
            let sub = bus
                .subscribe(move |_: &Envelope<u32>| {
                    count.fetch_add(1, Ordering::SeqCst);
                    let me = slot.lock().unwrap().take();
                    if let Some(me) = me {
                        let stats = me.unsubscribe(); // from inside: must not wait for itself
                        assert_eq!(stats.delivered, 0, "the running call is not finished yet");
                    }
                })
                .unwrap();
            *own.lock().unwrap() = Some(sub);
            for n in 0..10_u32 {
                let _ = bus.publish(n);
            }
            bus.wait_idle(FIVE_SECONDS).unwrap();
            assert_eq!(calls.load(Ordering::SeqCst), 1, "{dispatch:?}");
        });
    }
}

#[test]
fn wait_idle_and_shutdown_from_a_handler_are_errors_not_deadlocks() {
    with_deadline(Duration::from_secs(30), || {
        let bus = Bus::new();
        let results = Arc::new(Mutex::new(None));
        let (weak, out) = (bus.downgrade(), results.clone());
        let _sub = bus
            .subscribe(move |_: &Envelope<u8>| {
                let bus = weak.upgrade().unwrap();
                *out.lock().unwrap() = Some((bus.wait_idle(FIVE_SECONDS), bus.shutdown(FIVE_SECONDS).err()));
            })
            .unwrap();
        bus.publish(1_u8).unwrap();
        bus.wait_idle(FIVE_SECONDS).unwrap();
        let (idle, shutdown) = results.lock().unwrap().take().unwrap();
        assert_eq!(idle, Err(WaitIdleError::InsideHandler));
        assert_eq!(shutdown, Some(ShutdownError::InsideHandler));
        assert!(!bus.is_closed());
    });
}

#[test]
fn a_long_inline_chain_does_not_grow_the_stack() {
    // Each event publishes the next: breadth-first dispatch runs them in a loop, not
    // by recursion, so 100 000 links fit in the default test thread stack.
    let bus = Bus::builder().inline().build().unwrap();
    let weak = bus.downgrade();
    let sub = bus
        .subscribe(move |env: &Envelope<u32>| {
            if **env > 0 {
                weak.upgrade().unwrap().publish(**env - 1).unwrap();
            }
        })
        .unwrap();
    bus.publish(100_000_u32).unwrap();
    assert_eq!(sub.stats().delivered, 100_001);
}
