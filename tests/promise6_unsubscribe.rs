//! Promise 6: once unsubscribe returns, the handler never runs again; it waits for a
//! running invocation (except from inside it); a subscriber added during a dispatch
//! does not see that event; what was queued is dropped and counted.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{with_deadline, FIVE_SECONDS};
use crier::{Bus, Dispatch, Envelope, Subscription};

#[test]
fn unsubscribe_waits_for_a_running_handler() {
    for dispatch in [Dispatch::Pool, Dispatch::Thread] {
        with_deadline(Duration::from_secs(30), move || {
            let bus = Bus::builder().dispatch(dispatch).build().unwrap();
            let (started_tx, started_rx) = crossbeam_channel::bounded(1);
            let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
            let returned = Arc::new(AtomicBool::new(false));
            let finished_before_return = Arc::new(AtomicBool::new(false));
            let (r, f) = (returned.clone(), finished_before_return.clone());
            let sub = bus
                .subscribe(move |_: &Envelope<u8>| {
                    started_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                    // The last thing the handler does: unsubscribe must not have returned.
                    f.store(!r.load(Ordering::SeqCst), Ordering::SeqCst);
                })
                .unwrap();
            bus.publish(1_u8).unwrap();
            started_rx.recv().unwrap();
            let (entering_tx, entering_rx) = crossbeam_channel::bounded(1);
            let r = returned.clone();
            let unsubscriber = std::thread::spawn(move || {
                entering_tx.send(()).unwrap();
                let stats = sub.unsubscribe();
                r.store(true, Ordering::SeqCst);
                stats
            });
            entering_rx.recv().unwrap();
            release_tx.send(()).unwrap();
            let stats = unsubscriber.join().unwrap();
            assert!(
                finished_before_return.load(Ordering::SeqCst),
                "{dispatch:?}: returned while running"
            );
            assert_eq!(stats.delivered, 1, "{dispatch:?}");
        });
    }
}

/// tailscale #17642: a callback ran after close returned. Many rounds of a publisher
/// racing an unsubscribe; a call that starts after unsubscribe returned is a violation.
#[test]
fn no_invocation_starts_after_unsubscribe_returns() {
    with_deadline(Duration::from_secs(60), || {
        let bus = Bus::builder().workers(2).build().unwrap();
        let violations = Arc::new(AtomicU64::new(0));
        for round in 0..200 {
            let dispatch = [Dispatch::Pool, Dispatch::Thread, Dispatch::Inline][round % 3];
            let gone = Arc::new(AtomicBool::new(false));
            let (g, v) = (gone.clone(), violations.clone());
            let sub = bus
                .subscriber::<u32>()
                .dispatch(dispatch)
                .subscribe(move |_: &Envelope<u32>| {
                    if g.load(Ordering::SeqCst) {
                        v.fetch_add(1, Ordering::SeqCst);
                    }
                })
                .unwrap();
            let stop = Arc::new(AtomicBool::new(false));
            let publisher = {
                let (bus, stop) = (bus.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut n = 0;
                    while !stop.load(Ordering::SeqCst) || n < 50 {
                        let _ = bus.publish(n);
                        n += 1;
                    }
                })
            };
            let stats = sub.unsubscribe();
            gone.store(true, Ordering::SeqCst);
            stop.store(true, Ordering::SeqCst);
            publisher.join().unwrap();
            assert!(stats.is_balanced(), "{stats:?}");
        }
        bus.wait_idle(FIVE_SECONDS).unwrap();
        assert_eq!(violations.load(Ordering::SeqCst), 0);
    });
}

#[test]
fn a_handler_unsubscribing_a_later_handler_of_the_same_event_stops_it() {
    let bus = Bus::builder().inline().build().unwrap();
    let victim: Arc<Mutex<Option<Subscription>>> = Arc::default();
    let slot = victim.clone();
    let _killer = bus
        .subscribe(move |_: &Envelope<u8>| {
            if let Some(sub) = slot.lock().unwrap().take() {
                let stats = sub.unsubscribe();
                // It was queued the same event: dropped and counted, never run.
                assert_eq!((stats.delivered, stats.dropped.unsubscribed), (0, 1));
            }
        })
        .unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    *victim.lock().unwrap() = Some(
        bus.subscribe(move |_: &Envelope<u8>| {
            c.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap(),
    );
    bus.publish(1_u8).unwrap();
    bus.publish(2_u8).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert!(victim.lock().unwrap().is_none());
}

#[test]
fn queued_events_are_dropped_counted_and_freed_on_unsubscribe() {
    let bus = Bus::new();
    let rx = bus.subscriber::<Arc<u32>>().capacity(16).receiver().unwrap();
    let payloads: Vec<_> = (0..10_u32).map(Arc::new).collect();
    for p in &payloads {
        bus.publish(p.clone()).unwrap();
    }
    let weak: Vec<_> = payloads.iter().map(Arc::downgrade).collect();
    drop(payloads);
    assert!(weak.iter().all(|w| w.upgrade().is_some()), "queued in the receiver");
    let id = rx.id();
    drop(rx);
    assert!(
        weak.iter().all(|w| w.upgrade().is_none()),
        "freed at once, not when the bus drops"
    );
    assert!(
        bus.stats().subscribers.iter().all(|s| s.id != id),
        "gone from the registry"
    );
}

#[test]
fn push_subscriber_backlog_is_counted_as_unsubscribed() {
    with_deadline(Duration::from_secs(30), || {
        let bus = Bus::builder().workers(1).build().unwrap();
        let (gate_tx, gate_rx) = crossbeam_channel::bounded::<()>(0);
        let (started_tx, started_rx) = crossbeam_channel::bounded(1);
        let sub = bus
            .subscribe(move |env: &Envelope<u32>| {
                if **env == 0 {
                    started_tx.send(()).unwrap();
                    gate_rx.recv().unwrap();
                }
            })
            .unwrap();
        for n in 0..10_u32 {
            bus.publish(n).unwrap();
        }
        started_rx.recv().unwrap();
        let unsubscriber = std::thread::spawn(move || sub.unsubscribe());
        gate_tx.send(()).unwrap();
        let stats = unsubscriber.join().unwrap();
        assert!(stats.is_balanced(), "{stats:?}");
        assert_eq!(stats.accepted, 10);
        assert_eq!(stats.delivered + stats.dropped.unsubscribed, 10);
        bus.wait_idle(FIVE_SECONDS).unwrap();
    });
}

#[test]
fn detach_keeps_the_handler_until_shutdown() {
    let bus = Bus::builder().inline().build().unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    bus.subscribe(move |_: &Envelope<u8>| {
        c.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap()
    .detach();
    bus.publish(1_u8).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let report = bus.shutdown(FIVE_SECONDS).unwrap();
    assert_eq!(report.delivered(), 1);
}

#[test]
fn subscription_churn_returns_the_registry_to_empty() {
    let bus = Bus::builder().inline().build().unwrap();
    for n in 0..10_000_u32 {
        let sub = bus.subscribe(|_: &Envelope<u32>| {}).unwrap();
        bus.publish(n).unwrap();
        drop(sub);
    }
    let stats = bus.stats();
    assert!(stats.subscribers.is_empty());
    assert_eq!(stats.topics[0].subscribers, 0);
    assert_eq!(stats.topics[0].published, 10_000);
}

#[test]
fn receivers_report_their_final_counters_when_unsubscribed() {
    use crier::testing::ManualClock;
    use crier::{Backoff, Nack, Retry};

    let bus = Bus::builder().clock(ManualClock::new()).build().unwrap();
    // A filter gives this receiver a mailbox of its own; the other reads the ring.
    let mailbox = bus.subscriber::<u32>().filter(|_| true).receiver().unwrap();
    let ring = bus.receiver::<u32>().unwrap();
    let retry = Retry::ordered().backoff(Backoff::fixed(Duration::from_secs(60)));
    let acked = bus.subscriber::<u32>().at_least_once(retry).ack_receiver().unwrap();
    for n in 0..4_u32 {
        bus.publish(n).unwrap();
    }
    assert_eq!(*mailbox.recv().unwrap(), 0);
    assert_eq!(acked.recv().unwrap().nack(), Ok(Nack::Retry { attempt: 2 }));

    for last in [mailbox.unsubscribe(), ring.unsubscribe()] {
        assert!(last.is_balanced(), "{last:?}");
        assert_eq!(last.accepted, 4, "{last:?}");
        assert_eq!(last.delivered + last.dropped.unsubscribed, 4, "{last:?}");
    }
    // The retry still waiting and the 3 events queued behind it are dropped.
    let last = acked.unsubscribe();
    assert!(last.is_balanced(), "{last:?}");
    let counts = (last.accepted, last.retried, last.retrying, last.dropped.unsubscribed);
    assert_eq!(counts, (4, 1, 0, 4), "{last:?}");
    assert!(bus.stats().subscribers.is_empty(), "all three left");
}
