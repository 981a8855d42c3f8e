//! Handler latency in the stats: sampled (one invocation in 16, the first included),
//! measured around the handler, merged across the lanes of one subscriber, empty for a
//! receiver, and shown in the stats table.

use std::time::{Duration, Instant};

use crier::{Bus, Envelope};

/// A handler that works for about `d` (a busy loop: the work being measured).
fn work_for(d: Duration) {
    let start = Instant::now();
    while start.elapsed() < d {
        std::hint::spin_loop();
    }
}

#[test]
fn a_sample_of_invocations_is_timed_around_the_handler() {
    let bus = Bus::builder().inline().build().unwrap();
    let slow = bus
        .subscriber::<u32>()
        .name("slow")
        .subscribe(|_: &Envelope<u32>| work_for(Duration::from_millis(2)))
        .unwrap();
    let rx = bus.receiver::<u32>().unwrap();
    for n in 0_u32..33 {
        bus.publish(n).unwrap();
    }
    let latency = slow.stats().latency;
    assert_eq!(latency.samples, 3, "invocations 0, 16 and 32");
    let (p50, p99) = (latency.p50.unwrap(), latency.p99.unwrap());
    assert!(p50 >= Duration::from_millis(2), "{latency:?}");
    assert!(p99 >= p50, "{latency:?}");
    assert_eq!(
        rx.stats().latency,
        crier::Latency::default(),
        "a receiver runs no handler"
    );
    let table = bus.stats().to_string();
    assert!(table.contains("p50") && table.contains("p99"), "{table}");
    assert!(
        table.lines().any(|l| l.starts_with("slow") && l.contains("ms")),
        "{table}"
    );
}

#[test]
fn the_lanes_of_one_subscriber_report_one_latency() {
    let bus = Bus::new();
    let lanes = bus
        .subscriber::<u32>()
        .concurrency(2)
        .subscribe(|_: &Envelope<u32>| work_for(Duration::from_micros(200)))
        .unwrap();
    for n in 0_u32..64 {
        bus.message(n).key(format!("k{}", n % 4)).publish().unwrap();
    }
    bus.wait_idle(Duration::from_secs(10)).unwrap();
    let latency = lanes.stats().latency;
    // Each lane samples its own invocations (the first included): 4 in all, or 5 when
    // both lanes ran some.
    assert!((4..=5).contains(&latency.samples), "{latency:?}");
    assert!(latency.p50.unwrap() >= Duration::from_micros(200), "{latency:?}");
}
