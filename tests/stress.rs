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
