//! Stress: publishers, subscribers joining and leaving, mixed overflow policies and
//! dispatch modes, drained receivers, all checked by the accounting checker. Scaled
//! by `STRESS_SCALE` (default 1), bounded by a deadline.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::checker::{EventKey, History};
use common::{on_threads, stress_scale, with_deadline, Probe, Token};
use crier::{Bus, Dispatch, Envelope, Overflow};

struct Ev {
    key: EventKey,
    _token: Token,
}

const POLICIES: [Overflow; 4] = [
    Overflow::Block,
    Overflow::DropNewest,
    Overflow::DropOldest,
    Overflow::Block,
];
const DISPATCH: [Dispatch; 3] = [Dispatch::Pool, Dispatch::Thread, Dispatch::Inline];

#[test]
fn publishers_churning_subscribers_and_mixed_policies_keep_every_promise() {
    let scale = stress_scale();
    with_deadline(Duration::from_secs(120 * scale), move || {
        let per_publisher = 10_000 * scale;
        let bus = Bus::builder().workers(2).build().unwrap();
        let history = Arc::new(History::new());
        let probe = Probe::default();
        let publishing = Arc::new(AtomicBool::new(true));

        // Long-lived subscribers: one lossless per dispatch mode, and a drained receiver.
        let mut fixed = Vec::new();
        for dispatch in DISPATCH {
            let name = format!("fixed-{dispatch:?}");
            let (h, n) = (history.clone(), name.clone());
            let sub = bus
                .subscriber::<Ev>()
                .name(&name)
                .capacity(32)
                .dispatch(dispatch)
                .subscribe(move |env: &Envelope<Ev>| h.delivered(&n, env.key))
                .unwrap();
            history.opened(&name, true);
            fixed.push((name, sub));
        }
        let rx = bus
            .subscriber::<Ev>()
            .name("drained")
            .capacity(8)
            .overflow(Overflow::DropOldest)
            .receiver()
            .unwrap();
        history.opened("drained", false);
        let drainer = {
            let (h, publishing) = (history.clone(), publishing.clone());
            std::thread::spawn(move || {
                while publishing.load(Ordering::SeqCst) || !rx.is_empty() {
                    if let Ok(env) = rx.recv_timeout(Duration::from_millis(5)) {
                        h.delivered("drained", env.key);
                    }
                }
                rx
            })
        };

        // Subscribers that join and leave while events flow.
        let churner = {
            let (bus, h, publishing) = (bus.clone(), history.clone(), publishing.clone());
            std::thread::spawn(move || {
                let mut round = 0_usize;
                while publishing.load(Ordering::SeqCst) {
                    let overflow = POLICIES[round % POLICIES.len()];
                    let dispatch = DISPATCH[round % DISPATCH.len()];
                    let name = format!("churn-{round}");
                    let (h2, n) = (h.clone(), name.clone());
                    let sub = bus
                        .subscriber::<Ev>()
                        .name(&name)
                        .capacity(4 + round % 16)
                        .overflow(overflow)
                        .dispatch(dispatch)
                        .subscribe(move |env: &Envelope<Ev>| h2.delivered(&n, env.key))
                        .unwrap();
                    h.opened(&name, overflow == Overflow::Block);
                    // Let some events through: wait for a few deliveries, not for time.
                    for _ in 0..200 {
                        if sub.stats().accepted >= 20 || !publishing.load(Ordering::SeqCst) {
                            break;
                        }
                        std::thread::yield_now();
                    }
                    h.closing(&name);
                    let stats = sub.unsubscribe();
                    h.closed(&name, stats);
                    round += 1;
                }
                round
            })
        };

        let (b, h, tokens) = (bus.clone(), history.clone(), probe.clone());
        on_threads(3, move |p| {
            for n in 0..per_publisher {
                let key = EventKey { publisher: p as u32, n };
                let ev = Ev {
                    key,
                    _token: tokens.token(),
                };
                h.publish(key, || b.publish(ev).map_err(drop));
            }
        });
        publishing.store(false, Ordering::SeqCst);
        let rounds = churner.join().unwrap();
        let rx = drainer.join().unwrap();
        bus.wait_idle(Duration::from_secs(60)).unwrap();

        for (name, sub) in &fixed {
            history.final_stats(name, sub.stats());
        }
        history.final_stats("drained", rx.stats());
        let report = history.check();
        report.assert_clean();
        assert!(rounds > 0, "subscribers joined and left during the run");
        for (name, sub) in &fixed {
            assert_eq!(sub.stats().delivered, 3 * per_publisher, "{name} is lossless");
        }
        drop((fixed, rx));
        let shutdown = bus.shutdown(Duration::from_secs(30)).unwrap();
        assert!(shutdown.drained);
        drop(bus);
        assert_eq!(probe.live(), 0, "every payload dropped exactly once");
    });
}

/// Ack receivers under contention: publishers, and consumers on several threads that
/// ack most deliveries and nack (or drop) the rest on their early attempts, with a
/// zero backoff so retries race with new events. Every event is acked exactly once,
/// never twice and never lost; `max_unacked` is never exceeded; the counters balance.
#[test]
fn ack_receivers_under_contention_ack_every_event_exactly_once() {
    let scale = stress_scale();
    with_deadline(Duration::from_secs(120 * scale), move || {
        const PUBLISHERS: u64 = 2;
        const CONSUMERS: usize = 3;
        const MAX_UNACKED: usize = 4;
        let per_publisher = 5_000 * scale;
        let total = (PUBLISHERS * per_publisher) as usize;
        for retry in [crier::Retry::ordered(), crier::Retry::unordered()] {
            let bus = Bus::builder().workers(2).build().unwrap();
            let rx = Arc::new(
                bus.subscriber::<u64>()
                    .capacity(64)
                    .at_least_once(
                        retry
                            .unlimited_attempts()
                            .backoff(crier::Backoff::fixed(Duration::ZERO)),
                    )
                    .max_unacked(MAX_UNACKED)
                    .ack_receiver()
                    .unwrap(),
            );
            let acked: Arc<Vec<std::sync::atomic::AtomicU32>> =
                Arc::new((0..total).map(|_| std::sync::atomic::AtomicU32::new(0)).collect());
            let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let consumers: Vec<_> = (0..CONSUMERS)
                .map(|_| {
                    let (rx, acked, done) = (rx.clone(), acked.clone(), done.clone());
                    std::thread::spawn(move || {
                        while done.load(Ordering::SeqCst) < total {
                            let Ok(handle) = rx.recv_timeout(Duration::from_millis(50)) else {
                                continue;
                            };
                            assert!(rx.unacked() <= MAX_UNACKED, "max_unacked exceeded");
                            let event = **handle;
                            match (event % 7, handle.attempt()) {
                                (0, 1 | 2) => drop(handle.nack().unwrap()),
                                (1, 1) => drop(handle),
                                _ => {
                                    assert_eq!(acked[event as usize].fetch_add(1, Ordering::SeqCst), 0, "acked twice");
                                    handle.ack();
                                    done.fetch_add(1, Ordering::SeqCst);
                                }
                            }
                        }
                    })
                })
                .collect();
            on_threads(PUBLISHERS as usize, {
                let bus = bus.clone();
                move |p| {
                    for n in 0..per_publisher {
                        bus.publish(p as u64 * per_publisher + n).unwrap();
                    }
                }
            });
            for consumer in consumers {
                consumer.join().unwrap();
            }
            assert!(
                acked.iter().all(|n| n.load(Ordering::SeqCst) == 1),
                "an event was never acked"
            );
            let stats = rx.stats();
            assert!(stats.is_balanced(), "{stats:#?}");
            assert_eq!((stats.delivered, stats.unacked, stats.retrying), (total as u64, 0, 0));
            let nacked_twice = (0..total as u64).filter(|e| e % 7 == 0).count() as u64;
            let dropped_once = (0..total as u64).filter(|e| e % 7 == 1).count() as u64;
            assert_eq!(stats.retried, 2 * nacked_twice + dropped_once);
        }
    });
}

/// Inline dedup subscribers of one topic share its key table: 4 threads publish
/// overlapping keys at once, one subscriber only even keys, one leaves halfway. Every
/// subscriber that stays handles each key it is given exactly once (its window holds
/// them all), and skips and counts every other publish of it: sharing keeps each
/// window its own under concurrent publishers.
#[test]
fn inline_dedup_subscribers_sharing_a_key_table_keep_exact_windows_under_concurrent_publishers() {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use crier::DedupWindow;

    const PUBLISHERS: u64 = 4;
    const KEYS: u64 = 4_000;
    let per_publisher = 3_000 * stress_scale();
    with_deadline(Duration::from_secs(120 * stress_scale()), move || {
        let bus = Bus::builder().inline().build().unwrap();
        let window = DedupWindow::new(100_000, Duration::from_secs(3600));
        let logs: Vec<Arc<Mutex<HashMap<u64, u32>>>> = (0..5).map(|_| Arc::default()).collect();
        let subscription = |i: usize| {
            let log = logs[i].clone();
            let builder = bus.subscriber::<u64>().dedup(window);
            let builder = match i {
                4 => builder.filter(|key| key % 2 == 0),
                _ => builder,
            };
            builder
                .subscribe(move |env: &Envelope<u64>| *log.lock().unwrap().entry(**env).or_default() += 1)
                .unwrap()
        };
        let mut subs: HashMap<usize, _> = (0..5).map(|i| (i, subscription(i))).collect();
        let leaving = Arc::new(Mutex::new(subs.remove(&3)));
        on_threads(PUBLISHERS as usize, {
            let bus = bus.clone();
            move |p| {
                for n in 0..per_publisher {
                    let key = (p as u64 * 1_000 + n) % KEYS;
                    bus.message(key)
                        .idempotency_key(format!("key-{key}"))
                        .publish()
                        .unwrap();
                    if p == 0 && n == per_publisher / 2 {
                        if let Some(sub) = leaving.lock().unwrap().take() {
                            sub.unsubscribe();
                        }
                    }
                }
            }
        });
        bus.wait_idle(Duration::from_secs(10)).unwrap();
        for i in [0, 1, 2, 4] {
            let reaches = |key: u64| i != 4 || key % 2 == 0;
            let log = logs[i].lock().unwrap();
            let distinct = (0..KEYS).filter(|&key| reaches(key)).count() as u64;
            assert_eq!(log.len() as u64, distinct, "subscriber {i}: every key handled");
            assert!(log.values().all(|&n| n == 1), "subscriber {i}: a key handled twice");
            let stats = subs[&i].stats();
            let given = (0..PUBLISHERS)
                .flat_map(|p| (0..per_publisher).map(move |n| (p * 1_000 + n) % KEYS))
                .filter(|&key| reaches(key))
                .count() as u64;
            assert!(stats.is_balanced(), "{stats:#?}");
            assert_eq!(
                (stats.delivered, stats.deduplicated, stats.dedup_keys),
                (distinct, given - distinct, distinct),
                "subscriber {i}"
            );
        }
    });
}
