//! Idle workers do not spin (the `bus` crate burned CPU in `park_timeout`, bus #23),
//! and a wake-up after a long idle is not lost. Its own test binary, so no other test
//! shares the process while CPU time is measured. Linux only (`/proc/self/stat`).
#![cfg(target_os = "linux")]

mod common;

use std::time::Duration;

use common::FIVE_SECONDS;
use crier::{Bus, Dispatch, Envelope};

/// User + system CPU time of this process, in clock ticks (usually 10 ms each).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("procfs");
    // Fields after the parenthesised command name; utime and stime are the 14th and
    // 15th fields of the line, the 12th and 13th after the name.
    let after_name = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

#[test]
fn an_idle_bus_uses_no_cpu_and_wakes_up_for_the_next_event() {
    let bus = Bus::builder().workers(4).build().unwrap();
    let mut subs: Vec<_> = (0..20)
        .map(|_| bus.subscribe(|_: &Envelope<u32>| {}).unwrap())
        .collect();
    for _ in 0..4 {
        subs.push(
            bus.subscriber::<u32>()
                .dispatch(Dispatch::Thread)
                .subscribe(|_: &Envelope<u32>| {})
                .unwrap(),
        );
    }
    let rx = bus.receiver::<u32>().unwrap();
    let waiting = std::thread::spawn(move || rx.recv_timeout(Duration::from_secs(30)).map(|e| *e));
    for n in 0..1_000_u32 {
        bus.publish(n).unwrap();
    }
    bus.wait_idle(FIVE_SECONDS).unwrap();

    let before = cpu_ticks();
    // The sleep is what is tested: nothing happens on the bus meanwhile.
    std::thread::sleep(Duration::from_millis(500));
    let used = cpu_ticks() - before;
    assert!(used <= 5, "{used} ticks of CPU over 500 ms of idling: something spins");

    bus.publish(7_u32).unwrap();
    bus.wait_idle(FIVE_SECONDS).unwrap();
    for sub in &subs {
        assert_eq!(sub.stats().delivered, 1_001, "a wake-up after idling was lost");
    }
    assert_eq!(waiting.join().unwrap(), Ok(0));
}
