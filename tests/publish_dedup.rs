//! Promise 3, publish-side dedup: a topic with a dedup window accepts a repeated
//! idempotency key as `Ok` with a duplicate flag and delivers nothing new; the key is
//! recorded only when the publish was accepted (RELIABILITY-PLAN scenarios G1 to G8 on
//! the topic side; G3's memory bound is in `tests/memory.rs`, K5 is a loom model).

mod common;

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crier::testing::ManualClock;
use crier::{Bus, DedupWindow, Envelope, Overflow, PublishError, Retry, TopicError};
use proptest::prelude::*;

const MS: fn(u64) -> Duration = Duration::from_millis;
const MINUTES: fn(u64) -> Duration = |m| Duration::from_secs(60 * m);

/// G1: 10,000 keys published twice each: each handled once, each repeat reported as a
/// duplicate carrying the original's id and seq.
#[test]
fn a_repeated_key_is_acknowledged_as_a_duplicate_and_delivered_once() {
    let bus = Bus::builder().inline().build().unwrap();
    let topic = bus.topic::<u32>();
    topic.set_dedup_window(DedupWindow::new(10_000, MINUTES(2))).unwrap();
    let handled = Arc::new(AtomicU64::new(0));
    let count = handled.clone();
    let _sub = topic
        .subscribe(move |_: &Envelope<u32>| {
            count.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
    let mut originals = Vec::new();
    for n in 0..10_000_u32 {
        let receipt = topic.message(n).idempotency_key(format!("k{n}")).publish().unwrap();
        assert!(!receipt.duplicate);
        assert_eq!(receipt.subscribers, 1);
        originals.push(receipt);
    }
    for (n, original) in (0..10_000_u32).zip(&originals) {
        let receipt = topic.message(n).idempotency_key(format!("k{n}")).publish().unwrap();
        assert!(receipt.duplicate);
        assert_eq!(
            (receipt.id, receipt.seq, receipt.subscribers),
            (original.id, original.seq, 0)
        );
    }
    assert_eq!(handled.load(Ordering::Relaxed), 10_000);
    let stats = bus.stats();
    let topic_stats = stats.topic(topic.name()).unwrap();
    assert_eq!((topic_stats.published, topic_stats.deduplicated), (10_000, 10_000));
    assert_eq!(topic_stats.dedup_keys, 10_000);
    // The subscriber never saw the duplicates: they were not accepted.
    assert_eq!(stats.subscribers[0].accepted, 10_000);
    assert!(stats.subscribers[0].is_balanced());
}

#[test]
fn publishes_without_a_key_are_never_deduplicated() {
    let bus = Bus::new();
    let topic = bus.topic::<u32>();
    topic.set_dedup_window(DedupWindow::new(10, MINUTES(2))).unwrap();
    let rx = topic.receiver().unwrap();
    for _ in 0..3 {
        assert!(!topic.publish(1_u32).unwrap().duplicate);
    }
    assert_eq!(rx.try_iter().count(), 3);
    // And a topic without a window ignores keys.
    let plain = bus.topic_named::<u32>("plain").unwrap();
    let rx = plain.receiver().unwrap();
    for _ in 0..3 {
        assert!(!plain.message(1_u32).idempotency_key("k").publish().unwrap().duplicate);
    }
    assert_eq!(rx.try_iter().count(), 3);
}

/// G2: with NATS's default window of 2 minutes, a repeat at 119.999 s is a duplicate
/// and one at exactly 120 s is published again (a key is kept for less than
/// `max_age`), and so is one at 120.001 s after that.
#[test]
fn the_window_boundary_is_exclusive_of_max_age() {
    let clock = ManualClock::new();
    let bus = Bus::builder().clock(clock.clone()).build().unwrap();
    let topic = bus.topic::<u32>();
    topic.set_dedup_window(DedupWindow::new(100, MINUTES(2))).unwrap();
    let publish = || topic.message(1_u32).idempotency_key("k").publish().unwrap();
    let first = publish();
    clock.advance(MINUTES(2) - MS(1));
    let inside = publish();
    assert!(inside.duplicate && inside.seq == first.seq);
    clock.advance(MS(1));
    let at_max_age = publish();
    assert!(!at_max_age.duplicate && at_max_age.seq == 1);
    // The new publish starts a new window of its own.
    clock.advance(MINUTES(2) - MS(1));
    assert_eq!(publish().seq, 1);
    clock.advance(MS(2));
    assert!(!publish().duplicate);
}

/// G3 (counts; the memory bound is in `tests/memory.rs`): the window never holds more
/// than its capacity, evicts the oldest first and counts it; an evicted key is
/// published again (a documented false negative).
#[test]
fn the_window_holds_at_most_its_capacity_and_counts_evictions() {
    let bus = Bus::new();
    let topic = bus.topic::<u32>();
    topic.set_dedup_window(DedupWindow::new(1_000, MINUTES(60))).unwrap();
    let keys = |bus: &Bus| {
        let stats = bus.stats();
        let topic = stats.topic("u32").unwrap();
        (topic.dedup_keys, topic.dedup_evicted)
    };
    for n in 0..100_000_u32 {
        topic.message(n).idempotency_key(n.to_string()).publish().unwrap();
        if n % 10_000 == 0 {
            assert!(keys(&bus).0 <= 1_000);
        }
    }
    assert_eq!(keys(&bus), (1_000, 99_000));
    assert!(
        !topic.message(0_u32).idempotency_key("0").publish().unwrap().duplicate,
        "evicted"
    );
    assert!(
        topic
            .message(0_u32)
            .idempotency_key("99999")
            .publish()
            .unwrap()
            .duplicate
    );
}

/// G4: keys that aged out are purged by reading the stats, with no publish, so an
/// idle topic's window empties after a burst.
#[test]
fn an_idle_topic_forgets_aged_keys_when_stats_are_read() {
    let clock = ManualClock::new();
    let bus = Bus::builder().clock(clock.clone()).build().unwrap();
    let topic = bus.topic::<u32>();
    topic.set_dedup_window(DedupWindow::new(100_000, MINUTES(2))).unwrap();
    for n in 0..100_000_u32 {
        topic.message(n).idempotency_key(n.to_string()).publish().unwrap();
    }
    assert_eq!(bus.stats().topic("u32").unwrap().dedup_keys, 100_000);
    clock.advance(MINUTES(4));
    let stats = bus.stats();
    let topic_stats = stats.topic("u32").unwrap();
    assert_eq!((topic_stats.dedup_keys, topic_stats.dedup_evicted), (0, 0));
}

/// G6: a publish refused with `Err` (full, timed out, closed) records nothing, so the
/// caller's retry is published; once accepted, a repeat is a duplicate even while the
/// accepted event is still failing and retrying, and after it was dead-lettered.
#[test]
fn a_key_is_recorded_only_when_its_publish_is_accepted() {
    let clock = ManualClock::new();
    let bus = Bus::builder().clock(clock.clone()).build().unwrap();
    let topic = bus.topic::<u32>();
    topic.set_dedup_window(DedupWindow::new(100, MINUTES(2))).unwrap();
    let rx = topic
        .subscriber()
        .capacity(1)
        .overflow(Overflow::Reject)
        .receiver()
        .unwrap();
    topic.publish(0_u32).unwrap(); // fills the receiver
    let refused = topic.message(1_u32).idempotency_key("pay-1").publish();
    assert!(matches!(refused, Err(PublishError::Full(1))));
    assert_eq!(rx.recv().unwrap().seq(), 0);
    let retried = topic.message(1_u32).idempotency_key("pay-1").publish().unwrap();
    assert!(!retried.duplicate);
    assert_eq!(rx.recv().unwrap().seq(), retried.seq);
    drop(rx);

    // Timed out waiting for a `Block` mailbox: nothing recorded either.
    let blocking = topic
        .subscriber()
        .capacity(1)
        .overflow(Overflow::Block)
        .receiver()
        .unwrap();
    topic.publish(0_u32).unwrap();
    let timed_out = topic.message(2_u32).idempotency_key("pay-2").publish_timeout(MS(10));
    assert!(matches!(timed_out, Err(PublishError::Timeout(2))));
    blocking.recv().unwrap();
    assert!(
        !topic
            .message(2_u32)
            .idempotency_key("pay-2")
            .publish()
            .unwrap()
            .duplicate
    );
    drop(blocking);

    // Accepted, then failing for a subscriber: repeats are still duplicates.
    let attempts = Arc::new(AtomicU64::new(0));
    let count = attempts.clone();
    let sub = topic
        .subscriber()
        .at_least_once(Retry::ordered().max_attempts(2).backoff(crier::Backoff::fixed(MS(10))))
        .subscribe(move |_: &Envelope<u32>| -> Result<(), &'static str> {
            count.fetch_add(1, Ordering::Relaxed);
            Err("down")
        })
        .unwrap();
    topic.message(3_u32).idempotency_key("pay-3").publish().unwrap();
    bus.wait_idle(Duration::from_secs(5)).unwrap();
    assert_eq!(sub.stats().retrying, 1, "waiting for its second attempt");
    assert!(
        topic
            .message(3_u32)
            .idempotency_key("pay-3")
            .publish()
            .unwrap()
            .duplicate
    );
    clock.advance(MS(10));
    bus.wait_idle(Duration::from_secs(5)).unwrap();
    assert_eq!(sub.stats().dead_lettered, 1);
    assert!(
        topic
            .message(3_u32)
            .idempotency_key("pay-3")
            .publish()
            .unwrap()
            .duplicate
    );
    assert_eq!(attempts.load(Ordering::Relaxed), 2);

    // Closed: refused, nothing recorded (and nothing could be published again anyway).
    bus.shutdown(Duration::from_secs(5)).unwrap();
    let closed = topic.message(4_u32).idempotency_key("pay-4").publish();
    assert!(matches!(closed, Err(PublishError::Closed(4))));
}

/// A repeat is answered before any mailbox is reserved: it never waits on a full
/// `Block` mailbox and is never refused by a full `Reject` one.
#[test]
fn a_duplicate_never_waits_for_room_and_is_never_refused_for_it() {
    let bus = Bus::new();
    let topic = bus.topic::<u32>();
    topic.set_dedup_window(DedupWindow::new(100, MINUTES(2))).unwrap();
    let block = topic
        .subscriber()
        .capacity(1)
        .overflow(Overflow::Block)
        .receiver()
        .unwrap();
    let reject = topic
        .subscriber()
        .capacity(1)
        .overflow(Overflow::Reject)
        .receiver()
        .unwrap();
    let first = topic.message(1_u32).idempotency_key("k").publish().unwrap();
    // Both mailboxes are full now; a new event would wait (and then be refused).
    assert!(matches!(topic.try_publish(2_u32), Err(PublishError::Full(2))));
    let repeat = topic.message(1_u32).idempotency_key("k").try_publish().unwrap();
    assert!(repeat.duplicate && repeat.seq == first.seq);
    let repeat = topic
        .message(1_u32)
        .idempotency_key("k")
        .publish_timeout(MS(1))
        .unwrap();
    assert!(repeat.duplicate);
    assert_eq!((block.try_iter().count(), reject.try_iter().count()), (1, 1));
}

/// G7: the scope is the topic: one key on two topics is published on both.
#[test]
fn the_scope_of_a_key_is_its_topic() {
    let bus = Bus::new();
    let eu = bus.topic_named::<u32>("orders.eu").unwrap();
    let us = bus.topic_named::<u32>("orders.us").unwrap();
    for topic in [&eu, &us] {
        topic.set_dedup_window(DedupWindow::new(10, MINUTES(2))).unwrap();
    }
    let (rx_eu, rx_us) = (eu.receiver().unwrap(), us.receiver().unwrap());
    assert!(!eu.message(1_u32).idempotency_key("k").publish().unwrap().duplicate);
    assert!(!us.message(1_u32).idempotency_key("k").publish().unwrap().duplicate);
    assert_eq!((rx_eu.try_iter().count(), rx_us.try_iter().count()), (1, 1));
}

/// G8: the empty key is a key like any other, a 1 MiB key costs one entry, and keys
/// are compared whole (two keys sharing a 1 MiB prefix are different keys).
#[test]
fn keys_of_any_size_work_and_cost_one_entry() {
    let bus = Bus::new();
    let topic = bus.topic::<u32>();
    topic.set_dedup_window(DedupWindow::new(10, MINUTES(2))).unwrap();
    let big = "k".repeat(1 << 20);
    let bigger = format!("{big}!");
    let outcomes: Vec<bool> = ["", big.as_str(), bigger.as_str(), "", big.as_str(), bigger.as_str()]
        .into_iter()
        .map(|key| topic.message(1_u32).idempotency_key(key).publish().unwrap().duplicate)
        .collect();
    assert_eq!(outcomes, [false, false, false, true, true, true]);
    assert_eq!(bus.stats().topic("u32").unwrap().dedup_keys, 3);
}

#[test]
fn a_zero_window_is_refused_with_a_typed_error() {
    let bus = Bus::new();
    let topic = bus.topic_named::<u32>("payments").unwrap();
    for window in [DedupWindow::new(0, MINUTES(1)), DedupWindow::new(1, Duration::ZERO)] {
        let err = topic.set_dedup_window(window).unwrap_err();
        assert!(
            matches!(&err, TopicError::InvalidConfig { topic, .. } if topic == "payments"),
            "{err:?}"
        );
    }
    assert_eq!(topic.dedup_window(), None, "a refused window is not set");
}

/// Setting a window again changes the bounds and keeps the keys that fit.
#[test]
fn a_new_window_keeps_the_keys_that_fit() {
    let bus = Bus::new();
    let topic = bus.topic::<u32>();
    topic.set_dedup_window(DedupWindow::new(10, MINUTES(2))).unwrap();
    for n in 0..10_u32 {
        topic.message(n).idempotency_key(n.to_string()).publish().unwrap();
    }
    let smaller = DedupWindow::new(4, MINUTES(2));
    topic.set_dedup_window(smaller).unwrap();
    assert_eq!(topic.dedup_window(), Some(smaller));
    // Keys 6..10 were kept; 0..6 were evicted.
    let duplicates: Vec<bool> = (6..10_u32)
        .chain(0..6)
        .map(|n| {
            topic
                .message(n)
                .idempotency_key(n.to_string())
                .publish()
                .unwrap()
                .duplicate
        })
        .collect();
    assert_eq!(
        duplicates,
        [true, true, true, true, false, false, false, false, false, false]
    );
    let stats = bus.stats();
    assert_eq!(stats.topic("u32").unwrap().dedup_evicted, 6 + 6);
}

/// A handler may publish with a key too: its repeat is a duplicate like any other.
#[test]
fn a_handler_publishing_a_repeated_key_gets_a_duplicate_receipt() {
    let bus = Bus::builder().inline().build().unwrap();
    bus.topic::<String>()
        .set_dedup_window(DedupWindow::new(10, MINUTES(2)))
        .unwrap();
    let receipts = Arc::new(Mutex::new(Vec::new()));
    let seen = receipts.clone();
    let inner = bus.clone();
    let _relay = bus
        .subscribe(move |env: &Envelope<u32>| {
            let receipt = inner
                .message(format!("order-{}", **env))
                .idempotency_key("confirm-1")
                .publish();
            seen.lock().unwrap().push(receipt.unwrap().duplicate);
        })
        .unwrap();
    let rx = bus.receiver::<String>().unwrap();
    bus.publish(1_u32).unwrap();
    bus.publish(2_u32).unwrap();
    assert_eq!(*receipts.lock().unwrap(), [false, true]);
    assert_eq!(rx.try_iter().map(|env| (*env).clone()).collect::<Vec<_>>(), ["order-1"]);
}

/// G5 under stress: 8 threads publish the same 10,000 keys at once; each key is
/// accepted exactly once and delivered exactly once, and every duplicate names the
/// accepted publish's seq.
#[test]
fn racing_publishers_of_shared_keys_publish_each_key_once() {
    common::with_deadline(Duration::from_secs(120), || {
        const KEYS: u64 = 10_000;
        let bus = Bus::new();
        let topic = bus.topic::<u64>();
        topic
            .set_dedup_window(DedupWindow::new(KEYS as usize, MINUTES(60)))
            .unwrap();
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let log = delivered.clone();
        let _sub = topic
            .subscribe(move |env: &Envelope<u64>| log.lock().unwrap().push(**env))
            .unwrap();
        let receipts = Arc::new(Mutex::new(Vec::new()));
        let out = receipts.clone();
        let publisher = topic.clone();
        common::on_threads(8, move |t| {
            let mut mine = Vec::with_capacity(KEYS as usize);
            for i in 0..KEYS {
                // Each thread walks the keys from a different start, so they collide.
                let key = (i + t as u64 * 1_250) % KEYS;
                let receipt = publisher
                    .message(key)
                    .idempotency_key(key.to_string())
                    .publish()
                    .unwrap();
                mine.push((key, receipt));
            }
            out.lock().unwrap().extend(mine);
        });
        bus.wait_idle(Duration::from_secs(60)).unwrap();

        let receipts = receipts.lock().unwrap();
        let accepted: Vec<_> = receipts.iter().filter(|(_, r)| !r.duplicate).collect();
        assert_eq!(accepted.len() as u64, KEYS, "one accepted publish per key");
        let seq_of: std::collections::HashMap<u64, u64> = accepted.iter().map(|(k, r)| (*k, r.seq)).collect();
        assert_eq!(seq_of.len() as u64, KEYS);
        for (key, receipt) in receipts.iter().filter(|(_, r)| r.duplicate) {
            assert_eq!(receipt.seq, seq_of[key], "a duplicate names the accepted seq");
        }
        let delivered = delivered.lock().unwrap();
        assert_eq!(delivered.len() as u64, KEYS);
        assert_eq!(delivered.iter().collect::<HashSet<_>>().len() as u64, KEYS);
        let stats = bus.stats();
        let topic_stats = stats.topic("u64").unwrap();
        assert_eq!((topic_stats.published, topic_stats.deduplicated), (KEYS, 7 * KEYS));
    });
}

#[derive(Debug, Clone)]
enum Op {
    Publish(u8),
    /// A publish refused because the one `Reject` receiver is full.
    PublishRefused(u8),
    Advance(u64),
}

proptest! {
    /// Against a naive model (a list of (key, seq, time) in insertion order, purged by
    /// age, trimmed by count): the same publishes are accepted, the same are reported
    /// as duplicates with the same original seq, refusals record nothing, and the
    /// window never holds more than its capacity.
    #[test]
    fn the_topic_window_matches_a_naive_model(
        capacity in 1_usize..6,
        max_age in 1_u64..60,
        ops in prop::collection::vec(
            prop_oneof![
                4 => (0_u8..8).prop_map(Op::Publish),
                1 => (0_u8..8).prop_map(Op::PublishRefused),
                1 => (0_u64..40).prop_map(Op::Advance),
            ],
            1..200,
        ),
    ) {
        let clock = ManualClock::new();
        let bus = Bus::builder().clock(clock.clone()).build().unwrap();
        let topic = bus.topic::<u8>();
        topic.set_dedup_window(DedupWindow::new(capacity, MS(max_age))).unwrap();
        let rx = topic.subscriber().capacity(1).overflow(Overflow::Reject).receiver().unwrap();
        let mut now = 0_u64;
        let mut next_seq = 0_u64;
        let mut model: VecDeque<(u8, u64, u64)> = VecDeque::new();
        for op in ops {
            match op {
                Op::Advance(ms) => {
                    now += ms;
                    clock.advance(MS(ms));
                }
                Op::Publish(key) | Op::PublishRefused(key) => {
                    let full = matches!(op, Op::PublishRefused(_));
                    if full {
                        topic.publish(u8::MAX).unwrap();
                        next_seq += 1;
                    }
                    model.retain(|&(_, _, at)| now - at < max_age);
                    let original = model.iter().find(|&&(k, _, _)| k == key).map(|&(_, seq, _)| seq);
                    let got = topic.message(key).idempotency_key(key.to_string()).publish();
                    match (original, full) {
                        (Some(seq), _) => {
                            let receipt = got.unwrap();
                            prop_assert!(receipt.duplicate);
                            prop_assert_eq!(receipt.seq, seq);
                        }
                        (None, true) => prop_assert!(matches!(got, Err(PublishError::Full(k)) if k == key)),
                        (None, false) => {
                            let receipt = got.unwrap();
                            prop_assert!(!receipt.duplicate);
                            prop_assert_eq!(receipt.seq, next_seq);
                            model.push_back((key, next_seq, now));
                            next_seq += 1;
                            while model.len() > capacity {
                                model.pop_front();
                            }
                        }
                    }
                    rx.try_iter().for_each(drop);
                    let keys = bus.stats().topic("u8").unwrap().dedup_keys;
                    prop_assert!(keys <= capacity as u64);
                }
            }
        }
    }
}
