//! Shared test tools: the accounting checker, a payload probe, and a deadline.

#![allow(dead_code)] // each test binary uses part of this module

pub mod checker;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Counts live payloads: +1 on creation, -1 on drop. A bus that leaks or double-drops
/// an event leaves it non-zero.
#[derive(Debug, Clone, Default)]
pub struct Probe(Arc<AtomicI64>);

impl Probe {
    pub fn token(&self) -> Token {
        self.0.fetch_add(1, Ordering::SeqCst);
        Token(self.0.clone())
    }

    pub fn live(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// One live payload of a [`Probe`].
#[derive(Debug)]
pub struct Token(Arc<AtomicI64>);

impl Drop for Token {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Runs `body` on its own thread and fails the test if it does not finish within
/// `limit`: a hang becomes a failure with a message instead of a stuck CI job.
pub fn with_deadline<T: Send + 'static>(limit: Duration, body: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let worker = std::thread::spawn(move || {
        let _ = tx.send(body());
    });
    match rx.recv_timeout(limit) {
        Ok(value) => {
            worker.join().expect("the test body panicked after sending its result");
            value
        }
        Err(crossbeam_channel::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the body returned without sending"),
        },
        Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
            panic!("deadline of {limit:?} passed: the test hung (deadlock or lost wake-up)")
        }
    }
}

/// Runs `body(i)` on `n` threads at once and waits for all of them.
pub fn on_threads(n: usize, body: impl Fn(usize) + Send + Sync + 'static) {
    let body = Arc::new(body);
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let body = body.clone();
            std::thread::spawn(move || body(i))
        })
        .collect();
    for thread in threads {
        thread.join().expect("a thread of on_threads panicked");
    }
}

/// The stress scale from `STRESS_SCALE` (default 1).
pub fn stress_scale() -> u64 {
    std::env::var("STRESS_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1)
}

pub const FIVE_SECONDS: Duration = Duration::from_secs(5);

/// The checker over a consumer group as members come and go: `join(0)` stays while 40
/// more members join (`join(index)`) and leave one after another, and 4 threads publish
/// 2,000 events each through `publish` (logged in `history`). Then, once the bus is
/// idle: nothing lost or handled twice, every counter of the group `group` and of each
/// member balanced, and what the members that left handed over is what the group got
/// back. The members log their deliveries under `group`.
pub fn churn_group_under_checker(
    bus: &crier::Bus,
    history: &Arc<checker::History>,
    group: &str,
    join: impl Fn(u64) -> crier::Subscription + Send + Sync + 'static,
    publish: impl Fn(checker::EventKey) -> Result<(), ()> + Send + Sync + 'static,
) {
    history.opened_group(group);
    let join = Arc::new(join);
    let anchor = join(0);
    let churn = {
        let join = join.clone();
        std::thread::spawn(move || {
            (1..=40)
                .map(|index| {
                    let member = join(index);
                    std::thread::yield_now();
                    member.unsubscribe()
                })
                .collect::<Vec<_>>()
        })
    };
    let publishers = {
        let history = history.clone();
        std::thread::spawn(move || {
            on_threads(4, move |p| {
                for n in 0..2_000 {
                    let key = checker::EventKey { publisher: p as u32, n };
                    history.publish(key, || publish(key));
                }
            })
        })
    };
    publishers.join().unwrap();
    let mut members = churn.join().unwrap();
    bus.wait_idle(Duration::from_secs(10)).unwrap();
    members.push(anchor.stats());
    let stats = bus.stats();
    let group_stats = stats.group(group).unwrap().clone();
    let handed_over: u64 = members.iter().map(|m| m.handed_over).sum();
    assert_eq!(group_stats.handed_back, handed_over);
    history.final_group(group, group_stats, members);
    history.check().assert_clean();
}

/// The message of the panic `f` raises (a failing assertion of the test kit); fails
/// the test if it does not panic.
pub fn panic_message(f: impl FnOnce()) -> String {
    let payload =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).expect_err("the assertion should have failed");
    match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => payload.downcast_ref::<&str>().expect("a text panic").to_string(),
    }
}
