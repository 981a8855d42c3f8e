//! Promise 3, idempotency: a subscriber's dedup window skips an event whose key already
//! succeeded, within bounds of count and age (RELIABILITY-PLAN scenarios G1 to G4, G6
//! and G8, on the subscriber side).

mod common;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crier::testing::ManualClock;
use crier::{Backoff, Bus, DedupWindow, Envelope, Retry, SubscribeError, Subscription};
use proptest::prelude::*;

const MS: fn(u64) -> Duration = Duration::from_millis;

/// G1: every key published twice is handled once.
#[test]
fn a_key_published_twice_is_handled_once() {
    let bus = Bus::builder().inline().build().unwrap();
    let sub = bus
        .subscriber::<u32>()
        .dedup(DedupWindow::new(10_000, Duration::from_secs(60)))
        .subscribe(|_: &Envelope<u32>| {})
        .unwrap();
    for round in 0..2 {
        for n in 0..1_000_u32 {
            bus.message(n).idempotency_key(format!("key-{n}")).publish().unwrap();
        }
        assert_eq!(sub.stats().delivered, 1_000, "round {round}");
    }
    let stats = sub.stats();
    assert_eq!((stats.deduplicated, stats.dedup_keys), (1_000, 1_000));
    assert!(stats.is_balanced(), "{stats:?}");
    // An event without a key is never skipped.
    bus.publish(1_u32).unwrap();
    bus.publish(1_u32).unwrap();
    assert_eq!(sub.stats().delivered, 1_002);
}

/// G2: a key is remembered for less than `max_age`: skipped at 119.999 s, delivered
/// again at exactly 120 s.
#[test]
fn the_window_boundary_is_exclusive_of_max_age() {
    let clock = ManualClock::new();
    let bus = Bus::builder().inline().clock(clock.clone()).build().unwrap();
    let sub = bus
        .subscriber::<u32>()
        .dedup(DedupWindow::new(100, Duration::from_secs(120)))
        .subscribe(|_: &Envelope<u32>| {})
        .unwrap();
    let publish = || bus.message(1_u32).idempotency_key("k").publish().unwrap();
    publish();
    clock.advance(Duration::from_secs(120) - MS(1));
    publish();
    assert_eq!((sub.stats().delivered, sub.stats().deduplicated), (1, 1));
    clock.advance(MS(1));
    publish();
    assert_eq!((sub.stats().delivered, sub.stats().deduplicated), (2, 1));
}

/// G3: the window never holds more than its capacity; an evicted key is delivered
/// again (a documented false negative).
#[test]
fn the_window_holds_at_most_its_capacity_and_forgets_the_oldest() {
    let bus = Bus::builder().inline().build().unwrap();
    let sub = bus
        .subscriber::<u32>()
        .dedup(DedupWindow::new(1_000, Duration::from_secs(3600)))
        .subscribe(|_: &Envelope<u32>| {})
        .unwrap();
    for n in 0..100_000_u32 {
        bus.message(n).idempotency_key(n.to_string()).publish().unwrap();
        if n % 10_000 == 0 {
            assert!(sub.stats().dedup_keys <= 1_000);
        }
    }
    assert_eq!(sub.stats().dedup_keys, 1_000);
    bus.message(0_u32).idempotency_key("0").publish().unwrap(); // long evicted
    bus.message(0_u32).idempotency_key("99999").publish().unwrap(); // still remembered
    let stats = sub.stats();
    assert_eq!((stats.delivered, stats.deduplicated), (100_001, 1));
}

/// A pool bus on a manual clock with one at-least-once subscriber (one retry after
/// `backoff`, a 2 s window): event 1's first attempt fails; every success is logged.
fn event_1_fails_once(retry: Retry, backoff: Duration) -> (ManualClock, Bus, Subscription, Arc<Mutex<Vec<u32>>>) {
    let clock = ManualClock::new();
    let bus = Bus::builder().workers(1).clock(clock.clone()).build().unwrap();
    let handled = Arc::new(Mutex::new(Vec::new()));
    let log = handled.clone();
    let sub = bus
        .subscriber::<u32>()
        .at_least_once(retry.max_attempts(2).backoff(Backoff::fixed(backoff)))
        .dedup(DedupWindow::new(100, Duration::from_secs(2)))
        .subscribe(move |env: &Envelope<u32>| -> Result<(), &'static str> {
            if **env == 1 && env.attempt() == 1 {
                return Err("first attempt fails");
            }
            log.lock().unwrap().push(**env);
            Ok(())
        })
        .unwrap();
    (clock, bus, sub, handled)
}

/// Ages run in event time: a key is stamped with the publish time of the event that
/// succeeded, not the time of the attempt that succeeded. An event retried for 1 s
/// before it succeeded is forgotten 2 s after its publish, not 2 s after its success.
#[test]
fn a_key_ages_from_the_publish_of_the_event_that_succeeded() {
    let (clock, bus, sub, handled) = event_1_fails_once(Retry::ordered(), Duration::from_secs(1));
    let settle = || bus.wait_idle(Duration::from_secs(5)).unwrap();
    let publish = |n: u32| bus.message(n).idempotency_key("k").publish().unwrap();
    publish(1);
    settle();
    clock.advance(Duration::from_secs(1));
    settle();
    assert_eq!(*handled.lock().unwrap(), [1], "succeeded at 1 s, on its second attempt");
    publish(2);
    settle();
    clock.advance(Duration::from_secs(1));
    publish(3);
    settle();
    assert_eq!(
        *handled.lock().unwrap(),
        [1, 3],
        "2 (1 s after 1's publish) skipped; 3 (2 s after) not"
    );
    let stats = sub.stats();
    assert_eq!((stats.delivered, stats.deduplicated, stats.retried), (2, 1, 1));
    assert!(stats.is_balanced(), "{stats:?}");
}

/// Event time the other way: a retry is screened by its own (early) publish time, so
/// a retry that runs long after a duplicate of it succeeded is still skipped.
#[test]
fn a_late_retry_of_an_event_whose_duplicate_succeeded_is_skipped_however_late() {
    let (clock, bus, sub, handled) = event_1_fails_once(Retry::unordered(), Duration::from_secs(10));
    let settle = || bus.wait_idle(Duration::from_secs(5)).unwrap();
    bus.message(1_u32).idempotency_key("k").publish().unwrap();
    settle();
    clock.advance(MS(500));
    bus.message(2_u32).idempotency_key("k").publish().unwrap();
    settle();
    clock.advance(Duration::from_secs(10));
    settle();
    assert_eq!(
        *handled.lock().unwrap(),
        [2],
        "1's retry at 10 s: published before 2, so skipped"
    );
    let stats = sub.stats();
    assert_eq!(
        (stats.delivered, stats.deduplicated, stats.retried, stats.retrying),
        (1, 1, 1, 0)
    );
    assert!(stats.is_balanced(), "{stats:?}");
}

/// G4: an idle subscriber's window forgets aged keys when its stats are read, with no
/// further delivery, so its memory drops back after a burst.
#[test]
fn an_idle_subscriber_forgets_aged_keys_when_stats_are_read() {
    let clock = ManualClock::new();
    let bus = Bus::builder().inline().clock(clock.clone()).build().unwrap();
    let sub = bus
        .subscriber::<u32>()
        .dedup(DedupWindow::new(100_000, Duration::from_secs(120)))
        .subscribe(|_: &Envelope<u32>| {})
        .unwrap();
    for n in 0..10_000_u32 {
        bus.message(n).idempotency_key(n.to_string()).publish().unwrap();
    }
    assert_eq!(sub.stats().dedup_keys, 10_000);
    clock.advance(Duration::from_secs(120) - MS(1));
    assert_eq!(sub.stats().dedup_keys, 10_000, "younger than max_age: kept");
    clock.advance(MS(1));
    assert_eq!(sub.stats().dedup_keys, 0);
    assert_eq!(bus.stats().subscribers[0].dedup_keys, 0);
}

/// G6: a key is remembered only once its event succeeded, so a failed event published
/// again is handled again; once it succeeded, a duplicate is skipped.
#[test]
fn a_key_is_remembered_only_after_success() {
    let bus = Bus::builder().inline().build().unwrap();
    let healthy = Arc::new(Mutex::new(false));
    let ok = healthy.clone();
    let sub = bus
        .subscriber::<u32>()
        .at_least_once(Retry::ordered().max_attempts(1))
        .dedup(DedupWindow::new(10, Duration::from_secs(60)))
        .subscribe(move |_: &Envelope<u32>| -> Result<(), &'static str> {
            if *ok.lock().unwrap() {
                Ok(())
            } else {
                Err("down")
            }
        })
        .unwrap();
    bus.message(1_u32).idempotency_key("pay-1").publish().unwrap();
    assert_eq!(sub.stats().dead_lettered, 1);
    *healthy.lock().unwrap() = true;
    bus.message(1_u32).idempotency_key("pay-1").publish().unwrap();
    bus.message(1_u32).idempotency_key("pay-1").publish().unwrap();
    let stats = sub.stats();
    assert_eq!((stats.delivered, stats.deduplicated, stats.dead_lettered), (1, 1, 1));
    assert!(stats.is_balanced(), "{stats:?}");
}

/// A subscriber can derive the key from the event; a key function that panics fails
/// the attempt instead of skipping or losing the event.
#[test]
fn dedup_by_derives_the_key_and_a_panicking_key_function_fails_the_attempt() {
    let bus = Bus::builder().inline().build().unwrap();
    let sub = bus
        .subscriber::<(u32, &'static str)>()
        .dedup(DedupWindow::new(10, Duration::from_secs(60)))
        .dedup_by(|env: &Envelope<(u32, &'static str)>| {
            assert!(env.1 != "poison", "cannot key a poison event");
            Some(env.0)
        })
        .subscribe(|_: &Envelope<(u32, &'static str)>| {})
        .unwrap();
    bus.publish((7_u32, "a")).unwrap();
    bus.publish((7_u32, "b")).unwrap();
    bus.publish((8_u32, "poison")).unwrap();
    let stats = sub.stats();
    assert_eq!((stats.delivered, stats.deduplicated, stats.failed), (1, 1, 1));
    assert_eq!(stats.last_error.as_deref(), Some("panicked: cannot key a poison event"));
}

/// G8: keys of very different sizes (empty, 1 MiB) each cost one entry.
#[test]
fn keys_of_any_size_work_and_cost_one_entry() {
    let bus = Bus::builder().inline().build().unwrap();
    let sub = bus
        .subscriber::<u32>()
        .dedup(DedupWindow::new(2, Duration::from_secs(60)))
        .subscribe(|_: &Envelope<u32>| {})
        .unwrap();
    let big = "k".repeat(1 << 20);
    for key in ["", big.as_str(), "", big.as_str()] {
        bus.message(1_u32).idempotency_key(key).publish().unwrap();
    }
    let stats = sub.stats();
    assert_eq!((stats.delivered, stats.deduplicated, stats.dedup_keys), (2, 2, 2));
}

/// An integer key is its decimal text: a subscriber and a topic both take `42_u64` and
/// `"42"` for one key, and the event shows the text.
#[test]
fn an_integer_key_is_the_same_key_as_its_decimal_text() {
    let bus = Bus::builder().inline().build().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let sub = bus
        .subscriber::<u32>()
        .dedup(DedupWindow::new(10, Duration::from_secs(60)))
        .subscribe(move |env: &Envelope<u32>| log.lock().unwrap().push(env.idempotency_key().map(str::to_owned)))
        .unwrap();
    bus.message(1_u32).idempotency_key(42_u64).publish().unwrap();
    bus.message(2_u32).idempotency_key("42").publish().unwrap();
    bus.message(3_u32).idempotency_key(-42_i64).publish().unwrap();
    bus.message(4_u32).idempotency_key(u128::MAX).publish().unwrap();
    bus.message(5_u32)
        .idempotency_key(u128::MAX.to_string())
        .publish()
        .unwrap();
    let stats = sub.stats();
    assert_eq!((stats.delivered, stats.deduplicated), (3, 2));
    let expected = ["42", "-42", "340282366920938463463374607431768211455"];
    assert_eq!(*seen.lock().unwrap(), expected.map(|k| Some(k.to_owned())));

    let topic = bus.topic::<u32>();
    topic
        .set_dedup_window(DedupWindow::new(10, Duration::from_secs(60)))
        .unwrap();
    let first = topic.message(6).idempotency_key(7_u8).publish().unwrap();
    let again = topic.message(6).idempotency_key("7").publish().unwrap();
    assert!(!first.duplicate && again.duplicate && again.seq == first.seq);
}

#[test]
fn a_zero_window_and_a_receiver_window_are_refused() {
    let bus = Bus::new();
    for window in [
        DedupWindow::new(0, Duration::from_secs(1)),
        DedupWindow::new(1, Duration::ZERO),
    ] {
        let err = bus
            .subscriber::<u32>()
            .dedup(window)
            .subscribe(|_: &Envelope<u32>| {})
            .unwrap_err();
        assert!(matches!(err, SubscribeError::InvalidPolicy { .. }), "{err:?}");
    }
    let err = bus
        .subscriber::<u32>()
        .dedup(DedupWindow::new(1, Duration::from_secs(1)))
        .receiver()
        .unwrap_err();
    assert!(matches!(err, SubscribeError::InvalidPolicy { .. }));
}

#[derive(Debug, Clone)]
enum Op {
    Publish(u8),
    Advance(u64),
}

/// A window's bounds, in milliseconds for its age.
#[derive(Debug, Clone, Copy)]
struct Window {
    capacity: usize,
    max_age: u64,
}

/// A naive model of a subscriber's window: the keys that succeeded, in insertion
/// order, with the time they were published at.
struct Model {
    window: Window,
    keys: VecDeque<(u8, u64)>,
}

impl Model {
    fn new(window: Window) -> Model {
        Model {
            window,
            keys: VecDeque::new(),
        }
    }

    /// Whether an event with `key`, published at `now`, is handled (not skipped).
    fn handles(&mut self, key: u8, now: u64) -> bool {
        self.keys.retain(|&(_, at)| now - at < self.window.max_age);
        !self.keys.iter().any(|&(k, _)| k == key)
    }

    /// Remembers `key`, which succeeded, forgetting the oldest beyond the capacity.
    fn remember(&mut self, key: u8, now: u64) {
        self.keys.push_back((key, now));
        while self.keys.len() > self.window.capacity {
            self.keys.pop_front();
        }
    }
}

proptest! {
    /// Against a naive model (a list in insertion order, purged by age, trimmed by
    /// count): the same publishes are handled and skipped, and the window never holds
    /// more than its capacity.
    #[test]
    fn the_window_matches_a_naive_model(
        capacity in 1_usize..6,
        max_age in 1_u64..60,
        ops in prop::collection::vec(
            prop_oneof![3 => (0_u8..8).prop_map(Op::Publish), 1 => (0_u64..40).prop_map(Op::Advance)],
            1..200,
        ),
    ) {
        let clock = ManualClock::new();
        let bus = Bus::builder().inline().clock(clock.clone()).build().unwrap();
        let handled = Arc::new(Mutex::new(Vec::new()));
        let log = handled.clone();
        let sub = bus
            .subscriber::<u8>()
            .dedup(DedupWindow::new(capacity, MS(max_age)))
            .subscribe(move |env: &Envelope<u8>| log.lock().unwrap().push(**env))
            .unwrap();
        let mut now = 0_u64;
        let mut model = Model::new(Window { capacity, max_age });
        let mut expected = Vec::new();
        for op in ops {
            match op {
                Op::Advance(ms) => {
                    now += ms;
                    clock.advance(MS(ms));
                }
                Op::Publish(key) => {
                    if model.handles(key, now) {
                        expected.push(key);
                        model.remember(key, now);
                    }
                    bus.message(key).idempotency_key(key.to_string()).publish().unwrap();
                    prop_assert!(sub.stats().dedup_keys <= capacity as u64);
                }
            }
        }
        prop_assert_eq!(&*handled.lock().unwrap(), &expected);
        prop_assert!(sub.stats().is_balanced());
    }
}

proptest! {
    /// Promise 3, per subscriber: three dedup subscribers of one topic, each against a
    /// naive model of its own, with windows of their own (often alike), one failing
    /// the events of some keys and one filtering some out. Each handles and skips
    /// exactly what a window of its own would: a key that succeeded for one is not
    /// remembered for another, and one's count and age bound only its own keys.
    #[test]
    fn subscribers_of_one_topic_keep_windows_of_their_own(
        windows in prop::array::uniform3((1_usize..4, 1_u64..30).prop_map(|(capacity, max_age)| Window { capacity, max_age })),
        failing in prop::collection::vec(0_u8..8, 0..4),
        ops in prop::collection::vec(
            prop_oneof![3 => (0_u8..8).prop_map(Op::Publish), 1 => (0_u64..20).prop_map(Op::Advance)],
            1..200,
        ),
    ) {
        let clock = ManualClock::new();
        let bus = Bus::builder().inline().clock(clock.clone()).build().unwrap();
        let logs: [Arc<Mutex<Vec<u8>>>; 3] = Default::default();
        let window = |i: usize| DedupWindow::new(windows[i].capacity, MS(windows[i].max_age));
        let log = |i: usize| {
            let log = logs[i].clone();
            move |key: u8| log.lock().unwrap().push(key)
        };
        let (log0, log1, log2) = (log(0), log(1), log(2));
        let fails = failing.clone();
        let subs = [
            bus.subscriber::<u8>()
                .dedup(window(0))
                .subscribe(move |env: &Envelope<u8>| log0(**env))
                .unwrap(),
            bus.subscriber::<u8>()
                .at_least_once(Retry::ordered().max_attempts(1))
                .dedup(window(1))
                .subscribe(move |env: &Envelope<u8>| -> Result<(), &'static str> {
                    log1(**env);
                    match fails.contains(&**env) {
                        true => Err("this key always fails here"),
                        false => Ok(()),
                    }
                })
                .unwrap(),
            bus.subscriber::<u8>()
                .filter(|key| key % 2 == 0)
                .dedup(window(2))
                .subscribe(move |env: &Envelope<u8>| log2(**env))
                .unwrap(),
        ];
        let reaches = |i: usize, key: u8| i != 2 || key % 2 == 0;
        let succeeds = |i: usize, key: u8| i != 1 || !failing.contains(&key);
        let mut now = 0_u64;
        let mut models = windows.map(Model::new);
        let mut expected: [Vec<u8>; 3] = Default::default();
        for op in ops {
            match op {
                Op::Advance(ms) => {
                    now += ms;
                    clock.advance(MS(ms));
                }
                Op::Publish(key) => {
                    for (i, model) in models.iter_mut().enumerate() {
                        if reaches(i, key) && model.handles(key, now) {
                            expected[i].push(key);
                            if succeeds(i, key) {
                                model.remember(key, now);
                            }
                        }
                    }
                    bus.message(key).idempotency_key(key.to_string()).publish().unwrap();
                }
            }
        }
        for i in 0..3 {
            prop_assert_eq!(&*logs[i].lock().unwrap(), &expected[i], "subscriber {}", i);
            prop_assert!(subs[i].stats().is_balanced(), "{:?}", subs[i].stats());
            prop_assert!(subs[i].stats().dedup_keys <= windows[i].capacity as u64);
        }
    }
}
