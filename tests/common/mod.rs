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
