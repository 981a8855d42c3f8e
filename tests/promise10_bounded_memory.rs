//! Promise 10: every queue has a bound, and the bound is the documented one.

mod common;

use common::{Probe, Token};
use crier::{Bus, Overflow, RecvError};

#[test]
fn a_lagging_receiver_keeps_at_most_its_topics_ring_alive() {
    // A `DropOldest` receiver that reads the topic's ring pins the events it has not
    // caught up with until the ring wraps: at most the ring's capacity, here the bus
    // default of 32.
    let probe = Probe::default();
    let bus = Bus::builder().capacity(32).build().unwrap();
    let rx = bus
        .subscriber::<Token>()
        .capacity(2)
        .overflow(Overflow::DropOldest)
        .receiver()
        .unwrap();
    for _ in 0..100 {
        bus.publish(probe.token()).unwrap();
    }
    assert!(probe.live() <= 32, "{} events alive", probe.live());
    assert!(matches!(rx.recv(), Err(RecvError::Lagged(98))));
    assert_eq!(probe.live(), 2, "what it lagged past is freed once it learns of it");
    assert_eq!(rx.try_iter().count(), 2);
    assert_eq!(probe.live(), 0, "the ring keeps nothing every receiver has taken");
}

#[test]
fn dropping_a_receiver_frees_what_it_had_not_read() {
    let probe = Probe::default();
    let bus = Bus::new();
    let keeps_up = bus.receiver::<Token>().unwrap();
    let falls_behind = bus.receiver::<Token>().unwrap();
    for _ in 0..10 {
        bus.publish(probe.token()).unwrap();
    }
    assert_eq!(keeps_up.try_iter().count(), 10);
    assert_eq!(probe.live(), 10, "the other receiver has not read them");
    let stats = falls_behind.stats();
    drop(falls_behind);
    assert_eq!(probe.live(), 0);
    assert_eq!(stats.queued, 10);
}

#[test]
fn a_block_receiver_bounds_what_its_publisher_can_queue() {
    let probe = Probe::default();
    let bus = Bus::new();
    let rx = bus.subscriber::<Token>().capacity(4).receiver().unwrap();
    while bus.try_publish(probe.token()).is_ok() {}
    assert_eq!(probe.live(), 4);
    assert_eq!(rx.len(), 4);
}
