//! A first, dependency-free comparison of crier's fan-out against its floors, run with
//! `cargo bench --bench fanout`. It prints the median ratio crier/floor over several
//! rounds (contenders alternate order each round) with its min and max: on a shared
//! machine only same-run ratios mean much. The criterion suite with peer crates
//! (`tokio::sync::broadcast`, `bus`, `async-broadcast`) is issue 3.
//!
//! - pull: 1 publisher -> 4 receivers (lossless, capacity 1024), every receiver drains
//!   every event; floor: 4 crossbeam `bounded(1024)` channels of `Arc<E>`.
//! - inline: 1 event -> 8 inline handlers on the publishing thread; floor: a
//!   `Vec<Box<dyn Fn(&E)>>` loop.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crier::{Bus, Envelope};

const ROUNDS: usize = 7;
const PULL_EVENTS: u64 = 200_000;
const INLINE_EVENTS: u64 = 200_000;

#[derive(Clone, Copy)]
struct Payload([u8; 64]);

type BoxedHandler = Box<dyn Fn(&Payload)>;

/// One thread per receiver, each taking `PULL_EVENTS` events with `recv`.
fn drain_on_threads<R: Send + 'static>(receivers: Vec<R>, recv: fn(&R) -> u8) -> Vec<JoinHandle<u64>> {
    let drain = move |rx: R| (0..PULL_EVENTS).map(|_| u64::from(recv(&rx))).sum();
    receivers
        .into_iter()
        .map(|rx| std::thread::spawn(move || drain(rx)))
        .collect()
}

fn join(readers: Vec<JoinHandle<u64>>) {
    for reader in readers {
        black_box(reader.join().expect("reader"));
    }
}

fn crier_pull() -> Duration {
    let bus = Bus::builder().capacity(1024).build().expect("valid options");
    let receivers: Vec<_> = (0..4)
        .map(|_| bus.receiver::<Payload>().expect("bus is open"))
        .collect();
    let start = Instant::now();
    let readers = drain_on_threads(receivers, |rx| rx.recv().expect("lossless").0[0]);
    for n in 0..PULL_EVENTS {
        bus.publish(Payload([n as u8; 64])).expect("lossless");
    }
    join(readers);
    start.elapsed()
}

fn crossbeam_pull() -> Duration {
    let (txs, rxs): (Vec<_>, Vec<_>) = (0..4).map(|_| crossbeam_channel::bounded::<Arc<Payload>>(1024)).unzip();
    let start = Instant::now();
    let readers = drain_on_threads(rxs, |rx| rx.recv().expect("lossless").0[0]);
    for n in 0..PULL_EVENTS {
        let event = Arc::new(Payload([n as u8; 64]));
        for tx in &txs {
            tx.send(event.clone()).expect("lossless");
        }
    }
    join(readers);
    start.elapsed()
}

fn crier_inline() -> Duration {
    let bus = Bus::builder().inline().build().expect("valid options");
    let counter = Arc::new(AtomicU64::new(0));
    let _subs: Vec<_> = (0..8)
        .map(|_| {
            let c = counter.clone();
            bus.subscribe(move |env: &Envelope<Payload>| {
                c.fetch_add(u64::from(env.0[0]), Ordering::Relaxed);
            })
            .expect("bus is open")
        })
        .collect();
    let start = Instant::now();
    for n in 0..INLINE_EVENTS {
        bus.publish(Payload([n as u8; 64])).expect("inline");
    }
    black_box(counter.load(Ordering::Relaxed));
    start.elapsed()
}

fn closure_loop() -> Duration {
    let counter = Arc::new(AtomicU64::new(0));
    let handlers: Vec<BoxedHandler> = (0..8)
        .map(|_| {
            let c = counter.clone();
            Box::new(move |p: &Payload| {
                c.fetch_add(u64::from(p.0[0]), Ordering::Relaxed);
            }) as BoxedHandler
        })
        .collect();
    let start = Instant::now();
    for n in 0..INLINE_EVENTS {
        let event = black_box(Payload([n as u8; 64]));
        for h in &handlers {
            h(&event);
        }
    }
    black_box(counter.load(Ordering::Relaxed));
    start.elapsed()
}

fn compare(name: &str, events: u64, crier: fn() -> Duration, floor: fn() -> Duration) {
    let (mut ratios, mut crier_ns) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let (c, f) = if round % 2 == 0 {
            let c = crier();
            (c, floor())
        } else {
            let f = floor();
            (crier(), f)
        };
        ratios.push(c.as_secs_f64() / f.as_secs_f64());
        crier_ns.push(c.as_nanos() as f64 / events as f64);
    }
    ratios.sort_by(f64::total_cmp);
    crier_ns.sort_by(f64::total_cmp);
    println!(
        "{name:<8} crier/floor median {:.2} (min {:.2}, max {:.2}); crier {:.0} ns/event (median)",
        ratios[ROUNDS / 2],
        ratios[0],
        ratios[ROUNDS - 1],
        crier_ns[ROUNDS / 2]
    );
}

fn main() {
    compare("pull", PULL_EVENTS, crier_pull, crossbeam_pull);
    compare("inline", INLINE_EVENTS, crier_inline, closure_loop);
}
