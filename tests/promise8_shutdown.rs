//! Promise 8: shutdown refuses new publishes, drains what was accepted (including the
//! flows it started), reports everything; abort drops and counts; dropping the last
//! handle shuts down gracefully.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{with_deadline, Probe, Token, FIVE_SECONDS};
use crier::{Bus, Dispatch, DropReason, Envelope, PublishError, RecvError, SubscribeError};

#[test]
fn shutdown_drains_every_accepted_event() {
    with_deadline(Duration::from_secs(30), || {
        let bus = Bus::builder().workers(2).build().unwrap();
        let pool = bus.subscribe(|_: &Envelope<u32>| std::hint::spin_loop()).unwrap();
        let own = bus
            .subscriber::<u32>()
            .dispatch(Dispatch::Thread)
            .subscribe(|_: &Envelope<u32>| {})
            .unwrap();
        for n in 0..5_000_u32 {
            bus.publish(n).unwrap();
        }
        let report = bus.shutdown(Duration::from_secs(20)).unwrap();
        assert!(report.drained, "{report}");
        assert_eq!(
            (report.pending, report.handlers_running, report.threads_running),
            (0, 0, 0)
        );
        assert_eq!(report.delivered(), 10_000);
        assert!(report.stats.subscribers.iter().all(|s| s.is_balanced()));
        assert_eq!(pool.stats().delivered, 5_000);
        assert_eq!(own.stats().delivered, 5_000);
    });
}

#[test]
fn after_shutdown_publish_and_subscribe_are_refused() {
    let bus = Bus::new();
    bus.shutdown(FIVE_SECONDS).unwrap();
    assert!(bus.is_closed());
    assert!(matches!(bus.publish(String::from("late")), Err(PublishError::Closed(s)) if s == "late"));
    assert!(matches!(bus.try_publish(1_u8), Err(PublishError::Closed(1))));
    let named = bus.topic_named::<u8>("created.after.shutdown").unwrap();
    assert!(matches!(named.publish(2), Err(PublishError::Closed(2))));
    assert!(matches!(
        bus.subscribe(|_: &Envelope<u8>| {}),
        Err(SubscribeError::Closed)
    ));
    assert!(matches!(bus.receiver::<u8>(), Err(SubscribeError::Closed)));
}

#[test]
fn flows_started_before_shutdown_run_to_their_end() {
    struct Order;
    struct Paid;
    let bus = Bus::new();
    let weak = bus.downgrade();
    let _payment = bus
        .subscribe(move |_: &Envelope<Order>| weak.upgrade().map(|bus| bus.publish(Paid)).transpose().map(drop))
        .unwrap();
    let shipped = bus.subscribe(|_: &Envelope<Paid>| {}).unwrap();
    for _ in 0..100 {
        bus.publish(Order).unwrap();
    }
    let report = bus.shutdown(FIVE_SECONDS).unwrap();
    assert!(report.drained);
    assert_eq!(shipped.stats().delivered, 100);
    assert_eq!(report.failed(), 0);
}

#[test]
fn abort_drops_the_backlog_counts_it_and_starts_no_handler_after() {
    with_deadline(Duration::from_secs(30), || {
        let probe = Probe::default();
        let bus = Bus::builder().workers(1).build().unwrap();
        let (started_tx, started_rx) = crossbeam_channel::bounded(1);
        let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
        let aborted = Arc::new(AtomicBool::new(false));
        let late = Arc::new(AtomicU64::new(0));
        let (a, l) = (aborted.clone(), late.clone());
        let sub = bus
            .subscribe(move |env: &Envelope<(u32, Token)>| {
                if a.load(Ordering::SeqCst) {
                    l.fetch_add(1, Ordering::SeqCst);
                }
                if env.0 == 0 {
                    started_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                }
            })
            .unwrap();
        for n in 0..10_u32 {
            bus.publish((n, probe.token())).unwrap();
        }
        started_rx.recv().unwrap();
        let releaser = std::thread::spawn(move || {
            // Lets the running handler finish only once abort is under way.
            release_tx.send(()).unwrap();
        });
        let report = bus.abort().unwrap();
        aborted.store(true, Ordering::SeqCst);
        releaser.join().unwrap();
        assert!(!report.drained);
        assert_eq!(report.pending, 9, "{report}");
        let stats = sub.stats();
        assert_eq!(stats.dropped.get(DropReason::Shutdown), 9);
        assert_eq!(stats.delivered + stats.dropped.total(), 10);
        drop(sub);
        drop(bus);
        assert_eq!(late.load(Ordering::SeqCst), 0, "a handler started after abort returned");
        assert_eq!(probe.live(), 0, "every payload dropped exactly once");
    });
}

#[test]
fn a_stuck_handler_is_reported_not_waited_for_forever() {
    with_deadline(Duration::from_secs(30), || {
        let bus = Bus::builder().workers(1).build().unwrap();
        let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(1);
        let (started_tx, started_rx) = crossbeam_channel::bounded(1);
        let calls = Arc::new(AtomicU64::new(0));
        let c = calls.clone();
        let _sub = bus
            .subscribe(move |_: &Envelope<u8>| {
                if c.fetch_add(1, Ordering::SeqCst) == 0 {
                    started_tx.send(()).unwrap();
                    release_rx.recv().unwrap();
                }
            })
            .unwrap();
        for n in 0..5_u8 {
            bus.publish(n).unwrap();
        }
        started_rx.recv().unwrap();
        let report = bus.shutdown(Duration::from_millis(50)).unwrap();
        assert!(!report.drained);
        assert_eq!(
            (report.pending, report.handlers_running, report.threads_running),
            (4, 1, 1)
        );
        release_tx.send(()).unwrap();
        // The stuck call finishes; no other starts. `wait_idle` sees the count settle.
        bus.wait_idle(FIVE_SECONDS).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn receivers_keep_their_backlog_after_shutdown_then_close() {
    let bus = Bus::new();
    let rx = bus.receiver::<u32>().unwrap();
    for n in 0..3_u32 {
        bus.publish(n).unwrap();
    }
    let report = bus.shutdown(FIVE_SECONDS).unwrap();
    assert_eq!(report.in_receivers, 3);
    assert_eq!(
        rx.iter().map(|e| *e).collect::<Vec<_>>(),
        vec![0, 1, 2],
        "iter ends at close"
    );
    assert_eq!(rx.recv().unwrap_err(), RecvError::Closed);
}

#[test]
fn a_receiver_blocked_in_recv_wakes_at_shutdown() {
    with_deadline(Duration::from_secs(30), || {
        let bus = Bus::new();
        let rx = bus.receiver::<u32>().unwrap();
        let waiter = std::thread::spawn(move || rx.recv());
        bus.shutdown(FIVE_SECONDS).unwrap();
        assert_eq!(waiter.join().unwrap().unwrap_err(), RecvError::Closed);
    });
}

#[test]
fn a_publisher_blocked_on_a_full_mailbox_gets_its_event_back_at_shutdown() {
    with_deadline(Duration::from_secs(30), || {
        let bus = Bus::new();
        let _full = bus.subscriber::<u32>().capacity(1).receiver().unwrap();
        bus.publish(0_u32).unwrap();
        let (entering_tx, entering_rx) = crossbeam_channel::bounded(1);
        let publisher = {
            let bus = bus.clone();
            std::thread::spawn(move || {
                entering_tx.send(()).unwrap();
                bus.publish(7_u32)
            })
        };
        entering_rx.recv().unwrap();
        bus.shutdown(FIVE_SECONDS).unwrap();
        assert!(matches!(publisher.join().unwrap(), Err(PublishError::Closed(7))));
    });
}

#[test]
fn dropping_the_last_handle_drains_gracefully() {
    with_deadline(Duration::from_secs(30), || {
        let delivered = Arc::new(AtomicU64::new(0));
        let bus = Bus::builder().workers(1).build().unwrap();
        let d = delivered.clone();
        bus.subscribe(move |_: &Envelope<u32>| {
            d.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap()
        .detach();
        for n in 0..1_000_u32 {
            bus.publish(n).unwrap();
        }
        let clone = bus.clone();
        drop(bus);
        assert!(!clone.is_closed(), "a clone keeps the bus running");
        drop(clone);
        assert_eq!(delivered.load(Ordering::SeqCst), 1_000);
    });
}

#[test]
fn dropping_the_last_handle_inside_a_handler_does_not_deadlock() {
    with_deadline(Duration::from_secs(30), || {
        let (done_tx, done_rx) = crossbeam_channel::bounded(1);
        let bus = Bus::builder().workers(1).build().unwrap();
        let slot = Arc::new(parking_lot::Mutex::new(Some(bus.clone())));
        let held = slot.clone();
        bus.subscribe(move |_: &Envelope<u8>| {
            // The last handle dies here, on a worker.
            drop(held.lock().take());
            done_tx.send(()).unwrap();
        })
        .unwrap()
        .detach();
        let weak = bus.downgrade();
        bus.publish(1_u8).unwrap();
        drop(bus);
        done_rx.recv().unwrap();
        assert!(weak.upgrade().is_none());
    });
}

#[test]
fn shutdown_twice_returns_the_first_report() {
    let bus = Bus::new();
    let _sub = bus.subscribe(|_: &Envelope<u8>| {}).unwrap();
    bus.publish(1_u8).unwrap();
    let first = bus.shutdown(FIVE_SECONDS).unwrap();
    let second = bus.shutdown(FIVE_SECONDS).unwrap();
    assert_eq!(first, second);
    assert_eq!(bus.abort().unwrap(), first);
}

/// How a test pulls from a receiver shared by several threads: `Ok(true)` for an
/// event, `Ok(false)` for nothing yet, `Err(())` once closed.
type Pull = Arc<dyn Fn(bool) -> Result<bool, ()> + Send + Sync>;

/// A blocking receive ended: only the close may end it here.
fn expect_closed(error: RecvError) {
    assert_eq!(error, RecvError::Closed);
}

/// A `try_recv` as a [`Pull`]: nothing yet, or the close; nothing else is expected.
fn try_recv_outcome(received: Result<(), crier::TryRecvError>) -> Result<bool, ()> {
    match received {
        Ok(()) => Ok(true),
        Err(crier::TryRecvError::Empty) => Ok(false),
        Err(crier::TryRecvError::Closed) => Err(()),
        Err(error) => panic!("unexpected: {error}"),
    }
}

/// A pull subscription of each kind, to share between threads: those reading the
/// topic's ring (receivers, and lossless ack receivers), and those waiting on a queue
/// woken by a marker (groups, and lossy ack receivers).
fn shared_pulls(bus: &Bus) -> Vec<(&'static str, Pull)> {
    let receiver = |rx: crier::Receiver<u32>| -> Pull {
        Arc::new(move |block| match block {
            true => rx.recv().map(|_| true).map_err(expect_closed),
            false => try_recv_outcome(rx.try_recv().map(|_| ())),
        })
    };
    let ack_receiver = |rx: crier::AckReceiver<u32>| -> Pull {
        Arc::new(move |block| {
            match block {
                true => rx.recv().map(|handle| handle.ack()).map_err(expect_closed)?,
                false => match rx.try_recv() {
                    Ok(handle) => handle.ack(),
                    Err(error) => return try_recv_outcome(Err(error)),
                },
            }
            Ok(true)
        })
    };
    let sub = || bus.subscriber::<u32>();
    let lossy = || sub().overflow(crier::Overflow::DropOldest);
    let at_least_once = crier::Retry::unordered;
    vec![
        ("receiver", receiver(sub().receiver().unwrap())),
        ("lossy receiver", receiver(lossy().receiver().unwrap())),
        ("receiver in a group", receiver(sub().group("g").receiver().unwrap())),
        (
            "ack receiver",
            ack_receiver(sub().at_least_once(at_least_once()).ack_receiver().unwrap()),
        ),
        (
            "lossy ack receiver",
            ack_receiver(lossy().at_least_once(at_least_once()).ack_receiver().unwrap()),
        ),
        (
            "ack receiver in a group",
            ack_receiver(sub().group("h").at_least_once(at_least_once()).ack_receiver().unwrap()),
        ),
    ]
}

#[test]
fn every_thread_sharing_a_receiver_wakes_at_shutdown() {
    // One thread blocks in `recv` while another polls with `try_recv`, on each kind of
    // receiver, then the bus shuts down. The close wakes a blocked thread with one
    // marker, which the polling one may take first: it must pass it on. A round may
    // miss that race, so it runs many; each thread must see the close (a lost wake-up
    // hangs, and the deadline fails the test).
    with_deadline(Duration::from_secs(120), || {
        for round in 0..200_u32 {
            let bus = Bus::new();
            let pulls = shared_pulls(&bus);
            let threads: Vec<_> = pulls
                .iter()
                .flat_map(|&(kind, ref pull)| {
                    [true, false].map(|block| {
                        let pull = pull.clone();
                        std::thread::spawn(move || {
                            let mut events = 0;
                            loop {
                                match pull(block) {
                                    Ok(true) => events += 1,
                                    Ok(false) => std::thread::yield_now(),
                                    Err(()) => return (kind, events),
                                }
                            }
                        })
                    })
                })
                .collect();
            bus.publish(round).unwrap();
            bus.shutdown(FIVE_SECONDS).unwrap();
            let mut received = std::collections::BTreeMap::new();
            for thread in threads {
                let (kind, events) = thread.join().unwrap();
                *received.entry(kind).or_insert(0) += events;
            }
            let expected = pulls.iter().map(|(kind, _)| (*kind, 1)).collect();
            assert_eq!(received, expected, "round {round}: each kind gets the one event once");
        }
    });
}
