//! Promise 9, the history half: a topic keeps what its `Retention` says and reads it
//! back from an offset or a time (RELIABILITY-PLAN scenarios H1, H2, H3, H5 and H6;
//! the subscribe-from-offset hand-off, H4, comes with subscribers that start at an
//! offset).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{on_threads, with_deadline, Probe, Token};
use crier::testing::ManualClock;
use crier::{Bus, DedupWindow, Envelope, Offset, Overflow, PublishError, ReplayError, Retention, Topic, TopicError};
use proptest::prelude::*;

fn seqs<E>(history: impl IntoIterator<Item = Envelope<E>>) -> Vec<u64> {
    history.into_iter().map(|env| env.seq()).collect()
}

fn secs(n: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(n)
}

/// H1 and H6: with room for N, publishing N + k keeps the last N, offsets never reused,
/// and the k let go are freed (the probe counts live payloads).
#[test]
fn a_count_bound_keeps_the_last_n_and_frees_the_rest() {
    let bus = Bus::new();
    let topic = bus.topic::<Token>();
    topic.set_retention(Retention::last(100)).unwrap();
    let probe = Probe::default();
    for _ in 0..250 {
        topic.publish(probe.token()).unwrap();
    }
    let history = topic.history();
    assert_eq!(seqs(history), (150..250).collect::<Vec<_>>());
    assert_eq!(probe.live(), 100, "the 150 let go are dropped");
    assert_eq!((topic.oldest_offset(), topic.next_offset()), (Some(150), 250));
    let stats = bus.stats();
    let stats = stats.topic(topic.name()).unwrap();
    assert_eq!(
        (stats.history_len, stats.history_evicted, stats.history_compacted),
        (100, 150, 0)
    );
    topic.clear_retention();
    assert_eq!(probe.live(), 0, "clearing the retention lets go of everything");
    assert!(topic.history().is_empty());
}

#[test]
fn an_age_bound_lets_events_go_at_exactly_max_age_on_the_bus_clock() {
    let clock = ManualClock::new();
    let bus = Bus::builder().clock(clock.clone()).build().unwrap();
    let topic = bus.topic::<u32>();
    topic.set_retention(Retention::within(Duration::from_secs(60))).unwrap();
    topic.publish(0).unwrap();
    clock.advance(Duration::from_secs(30));
    topic.publish(1).unwrap();
    clock.advance(Duration::from_millis(29_999));
    assert_eq!(seqs(topic.history()), [0, 1], "59.999 s old: still kept");
    clock.advance(Duration::from_millis(1));
    assert_eq!(seqs(topic.history()), [1], "60 s old: gone, without a publish");
    clock.advance(Duration::from_secs(30));
    assert!(topic.history().is_empty());
    assert_eq!(bus.stats().topic(topic.name()).unwrap().history_evicted, 2);
}

#[test]
fn both_bounds_apply_whichever_comes_first() {
    let clock = ManualClock::new();
    let bus = Bus::builder().clock(clock.clone()).build().unwrap();
    let topic = bus.topic::<u32>();
    topic
        .set_retention(Retention::last(3).max_age(Duration::from_secs(8)))
        .unwrap();
    for n in 0..5 {
        topic.publish(n).unwrap();
        clock.advance(Duration::from_secs(3));
    }
    // Published at 0, 3, 6, 9, 12 s; now 15 s: the count keeps 2..=4, the age 3 and 4.
    assert_eq!(seqs(topic.history()), [3, 4]);
    // The count bites when events come faster than the age.
    for n in 5..9 {
        topic.publish(n).unwrap();
    }
    assert_eq!(seqs(topic.history()), [6, 7, 8]);
}

#[test]
fn a_compacted_history_keeps_the_latest_event_per_key_and_every_unkeyed_one() {
    let bus = Bus::new();
    let topic = bus.topic_named::<&str>("sticky.state").unwrap();
    topic.set_retention(Retention::last(100).compacted()).unwrap();
    let publish = |key: Option<&str>, event: &'static str| {
        let message = topic.message(event);
        match key {
            Some(key) => message.key(key).publish().unwrap(),
            None => message.publish().unwrap(),
        };
    };
    publish(Some("lamp"), "lamp on");
    publish(None, "boot");
    publish(Some("door"), "door open");
    publish(Some("lamp"), "lamp off");
    publish(None, "tick");
    publish(Some("door"), "door closed");
    let state: Vec<&str> = topic.history().iter().map(|env| **env).collect();
    assert_eq!(state, ["boot", "lamp off", "tick", "door closed"]);
    let stats = bus.stats();
    assert_eq!(stats.topic("sticky.state").unwrap().history_compacted, 2);
    // An offset compacted away reads from the next event kept: no error, it is the
    // retention's choice, not a loss.
    assert_eq!(seqs(topic.history_from(Offset::At(0)).unwrap()), [1, 3, 4, 5]);
}

/// H2: the outcome of reading from each offset.
#[test]
fn offsets_resolve_or_fail_as_documented() {
    let bus = Bus::new();
    let topic = bus.topic::<u32>();
    topic.set_retention(Retention::last(3)).unwrap();
    for n in 0..5 {
        topic.publish(n).unwrap();
    }
    assert_eq!(seqs(topic.history_from(Offset::Earliest).unwrap()), [2, 3, 4]);
    assert!(topic.history_from(Offset::Latest).unwrap().is_empty());
    assert_eq!(seqs(topic.history_from(Offset::At(3)).unwrap()), [3, 4]);
    assert_eq!(seqs(topic.history_from(Offset::At(2)).unwrap()), [2, 3, 4]);
    assert!(
        topic.history_from(Offset::At(5)).unwrap().is_empty(),
        "the next offset: nothing yet"
    );
    assert_eq!(
        topic.history_from(Offset::At(6)).unwrap_err(),
        ReplayError::Future { requested: 6, next: 5 }
    );
    let evicted = topic.history_from(Offset::At(1)).unwrap_err();
    assert_eq!(
        evicted,
        ReplayError::Evicted {
            requested: Offset::At(1),
            oldest: 2
        }
    );
    assert_eq!(
        evicted.to_string(),
        "offset 1 is no longer in the history: the oldest offset available is 2"
    );
    assert_eq!(topic.history_from(Offset::Latest).unwrap().next_offset(), 5);
}

#[test]
fn since_a_time_reads_from_the_first_event_published_then_and_fails_only_over_a_gap() {
    let clock = ManualClock::new();
    let bus = Bus::builder().clock(clock.clone()).build().unwrap();
    let topic = bus.topic::<u32>();
    topic.set_retention(Retention::last(3)).unwrap();
    for n in 0..5 {
        clock.set(secs(10 * u64::from(n)));
        topic.publish(n).unwrap();
    }
    // Published at 0, 10, 20, 30, 40 s; 0 and 10 are gone.
    assert_eq!(seqs(topic.history_from(Offset::Since(secs(20))).unwrap()), [2, 3, 4]);
    assert_eq!(seqs(topic.history_from(Offset::Since(secs(25))).unwrap()), [3, 4]);
    assert!(topic.history_from(Offset::Since(secs(41))).unwrap().is_empty());
    let gap = topic.history_from(Offset::Since(secs(10))).unwrap_err();
    assert_eq!(
        gap,
        ReplayError::Evicted {
            requested: Offset::Since(secs(10)),
            oldest: 2
        }
    );
    // Between the last event let go and the oldest kept: nothing in between was lost.
    assert_eq!(seqs(topic.history_from(Offset::Since(secs(15))).unwrap()), [2, 3, 4]);
}

#[test]
fn ranges_by_offset_clip_to_what_is_asked() {
    let bus = Bus::new();
    let topic = bus.topic::<u32>();
    topic.set_retention(Retention::last(10)).unwrap();
    for n in 0..8 {
        topic.publish(n).unwrap();
    }
    assert_eq!(seqs(topic.history_range(2..5).unwrap()), [2, 3, 4]);
    assert_eq!(seqs(topic.history_range(..=1).unwrap()), [0, 1]);
    assert_eq!(seqs(topic.history_range(6..).unwrap()), [6, 7]);
    assert!(topic.history_range(5..5).unwrap().is_empty());
    assert!(matches!(
        topic.history_range(9..),
        Err(ReplayError::Future { requested: 9, next: 8 })
    ));
}

/// Events published before the retention was set were never kept: asking for them is
/// an error, never a silent start somewhere else.
#[test]
fn history_starts_when_retention_is_set() {
    let clock = ManualClock::new();
    let bus = Bus::builder().clock(clock.clone()).build().unwrap();
    let topic = bus.topic::<u32>();
    assert!(topic.history().is_empty(), "no retention: nothing kept");
    assert_eq!(topic.retention(), None);
    assert!(
        topic.history_from(Offset::At(0)).unwrap().is_empty(),
        "nothing published yet"
    );
    topic.publish(0).unwrap();
    topic.publish(1).unwrap();
    assert!(matches!(
        topic.history_from(Offset::At(0)),
        Err(ReplayError::Evicted { oldest: 2, .. })
    ));
    clock.advance(Duration::from_secs(1));
    topic.set_retention(Retention::last(10)).unwrap();
    assert_eq!(topic.retention(), Some(Retention::last(10)));
    topic.publish(2).unwrap();
    assert_eq!(seqs(topic.history()), [2]);
    assert!(matches!(
        topic.history_from(Offset::At(1)),
        Err(ReplayError::Evicted { oldest: 2, .. })
    ));
    assert!(matches!(
        topic.history_from(Offset::Since(UNIX_EPOCH)),
        Err(ReplayError::Evicted { oldest: 2, .. })
    ));
    assert_eq!(seqs(topic.history_from(Offset::Earliest).unwrap()), [2]);
}

#[test]
fn zero_bounds_are_typed_errors() {
    let bus = Bus::new();
    let topic = bus.topic::<u32>();
    for retention in [
        Retention::last(0),
        Retention::within(Duration::ZERO),
        Retention::last(5).max_age(Duration::ZERO),
    ] {
        assert!(matches!(
            topic.set_retention(retention),
            Err(TopicError::InvalidConfig { .. })
        ));
    }
    assert_eq!(topic.retention(), None, "a refused retention changes nothing");
}

#[test]
fn refused_and_duplicate_publishes_take_no_offset_and_never_enter_the_history() {
    let bus = Bus::new();
    let topic = bus.topic::<u32>();
    topic.set_retention(Retention::last(10)).unwrap();
    topic
        .set_dedup_window(DedupWindow::new(10, Duration::from_secs(60)))
        .unwrap();
    let _full = topic
        .subscriber()
        .capacity(1)
        .overflow(Overflow::Reject)
        .receiver()
        .unwrap();
    topic.message(0).idempotency_key("a").publish().unwrap();
    assert!(topic.message(1).idempotency_key("a").publish().unwrap().duplicate);
    assert!(matches!(topic.publish(2), Err(PublishError::Full(2))));
    assert_eq!(topic.history().iter().map(|env| **env).collect::<Vec<_>>(), [0]);
}

/// H5: the history and a subscriber's queue are independent.
#[test]
fn a_short_history_never_takes_events_from_a_subscriber() {
    let bus = Bus::new();
    let topic = bus.topic::<u32>();
    topic.set_retention(Retention::last(4)).unwrap();
    let rx = topic.subscriber().capacity(64).receiver().unwrap();
    for n in 0..32 {
        topic.publish(n).unwrap();
    }
    assert_eq!(
        rx.try_iter().map(|env| *env).collect::<Vec<_>>(),
        (0..32).collect::<Vec<_>>()
    );
    assert_eq!(seqs(topic.history()), [28, 29, 30, 31]);
}

#[test]
fn changing_the_retention_applies_at_once_and_leaves_snapshots_whole() {
    let bus = Bus::new();
    let topic = bus.topic::<u32>();
    topic.set_retention(Retention::last(100)).unwrap();
    for n in 0..50 {
        topic.publish(n).unwrap();
    }
    let before = topic.history();
    topic.set_retention(Retention::last(5)).unwrap();
    assert_eq!(seqs(topic.history()), (45..50).collect::<Vec<_>>());
    assert_eq!(before.len(), 50, "a snapshot keeps its events");
    assert_eq!(bus.stats().topic(topic.name()).unwrap().history_evicted, 45);
}

/// A replay runs on a snapshot with no lock held: its closure may shrink the
/// retention, publish on the same topic and read the history, and sees exactly the
/// history as it was when the replay started.
#[test]
fn a_replay_is_unaffected_by_what_its_closure_does_to_the_topic() {
    with_deadline(Duration::from_secs(30), || {
        let bus = Bus::new();
        let topic = bus.topic::<u32>();
        topic.set_retention(Retention::last(100)).unwrap();
        for n in 0..10 {
            topic.publish(n).unwrap();
        }
        let mut seen = Vec::new();
        let next = topic
            .replay(Offset::Earliest, |env| {
                seen.push(**env);
                if **env == 3 {
                    topic.set_retention(Retention::last(1)).unwrap();
                    topic.publish(100).unwrap();
                    assert_eq!(seqs(topic.history()), [10]);
                }
            })
            .unwrap();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
        assert_eq!(next, 10, "the publish from the closure comes after the replay");
        let mut after = Vec::new();
        topic.replay(Offset::At(next), |env| after.push(**env)).unwrap();
        assert_eq!(after, [100]);
    });
}

/// An event the history lets go is dropped after the topic's lock is released: its
/// `Drop` may publish on the same topic.
#[test]
fn an_event_let_go_may_publish_from_its_drop() {
    struct Noisy {
        topic: Option<Topic<Noisy>>,
    }
    impl Drop for Noisy {
        fn drop(&mut self) {
            if let Some(topic) = self.topic.take() {
                let _ = topic.publish(Noisy { topic: None });
            }
        }
    }
    with_deadline(Duration::from_secs(30), || {
        let bus = Bus::new();
        let topic = bus.topic::<Noisy>();
        topic.set_retention(Retention::last(1)).unwrap();
        topic
            .publish(Noisy {
                topic: Some(topic.clone()),
            })
            .unwrap();
        topic.publish(Noisy { topic: None }).unwrap(); // lets the first go
        assert_eq!(topic.next_offset(), 3, "the first one's drop published");
        assert_eq!(seqs(topic.history()), [2]);
    });
}

/// H3: snapshots taken while publishers run are contiguous runs ending at the
/// snapshot's next offset (a non-compacted history is gap-free).
#[test]
fn snapshots_taken_under_concurrent_publishes_are_contiguous() {
    with_deadline(Duration::from_secs(120), || {
        let bus = Bus::new();
        let topic = bus.topic::<u64>();
        topic.set_retention(Retention::last(64)).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (topic, done) = (topic.clone(), done.clone());
            std::thread::spawn(move || {
                let mut snapshots = 0_u64;
                while !done.load(Ordering::Relaxed) {
                    let history = topic.history();
                    let got = seqs(history.iter().cloned());
                    let next = history.next_offset();
                    let expected: Vec<u64> = (next.saturating_sub(64)..next).collect();
                    assert_eq!(got, expected, "a snapshot with a gap or a duplicate");
                    snapshots += 1;
                }
                snapshots
            })
        };
        let publishers = topic.clone();
        on_threads(2, move |_| {
            for n in 0..20_000 {
                publishers.publish(n).unwrap();
            }
        });
        done.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
        assert_eq!(topic.next_offset(), 40_000);
    });
}

/// What the history should hold, computed the slow way.
#[derive(Debug, Clone)]
struct Model {
    events: Option<usize>,
    max_age: Option<u64>,
    compacted: bool,
    /// `(seq, key, published at)`, oldest first.
    kept: Vec<(u64, Option<u8>, u64)>,
    floor: u64,
    gap: Option<u64>,
}

impl Model {
    fn push(&mut self, seq: u64, key: Option<u8>, at: u64) {
        if self.compacted && key.is_some() {
            self.kept.retain(|&(_, k, _)| k != key);
        }
        self.kept.push((seq, key, at));
        self.trim(at);
    }

    fn trim(&mut self, now: u64) {
        while let Some(&(seq, _, at)) = self.kept.first() {
            let old = self.max_age.is_some_and(|age| at + age <= now);
            let over = self.events.is_some_and(|n| self.kept.len() > n);
            if !(old || over) {
                break;
            }
            self.kept.remove(0);
            self.floor = seq + 1;
            self.gap = self.gap.max(Some(at));
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Publish(Option<u8>),
    Advance(u64),
    ReadAt(u64),
    ReadSince(u64),
    ReadBetween(u64, u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => proptest::option::of(0_u8..6).prop_map(Op::Publish),
        2 => (0_u64..40).prop_map(Op::Advance),
        1 => (0_u64..80).prop_map(Op::ReadAt),
        1 => (0_u64..400).prop_map(Op::ReadSince),
        1 => (0_u64..400, 0_u64..400).prop_map(|(a, b)| Op::ReadBetween(a, b)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// The bounds are never exceeded, compaction keeps exactly the latest per key,
    /// offsets are gap-free where nothing was compacted, and every read (from an
    /// offset, from a time) agrees with a model, errors included.
    #[test]
    fn the_history_matches_a_model(
        events in proptest::option::of(1_usize..20),
        max_age in proptest::option::of(1_u64..100),
        compacted in any::<bool>(),
        ops in proptest::collection::vec(op(), 0..150),
    ) {
        let events = if events.is_none() && max_age.is_none() { Some(10) } else { events };
        let clock = ManualClock::new();
        let bus = Bus::builder().clock(clock.clone()).build().unwrap();
        let topic = bus.topic::<u64>();
        let mut retention = match (events, max_age) {
            (Some(n), Some(age)) => Retention::last(n).max_age(Duration::from_secs(age)),
            (Some(n), None) => Retention::last(n),
            (None, Some(age)) => Retention::within(Duration::from_secs(age)),
            (None, None) => unreachable!(),
        };
        if compacted {
            retention = retention.compacted();
        }
        topic.set_retention(retention).unwrap();
        let mut model = Model { events, max_age, compacted, kept: Vec::new(), floor: 0, gap: None };
        let mut now = 0_u64;
        let mut next = 0_u64;
        for op in ops {
            match op {
                Op::Publish(key) => {
                    let message = topic.message(next);
                    let receipt = match key {
                        Some(k) => message.key(format!("k{k}")).publish(),
                        None => message.publish(),
                    }.unwrap();
                    prop_assert_eq!(receipt.seq, next);
                    model.push(next, key, now);
                    next += 1;
                }
                Op::Advance(by) => {
                    now += by;
                    clock.advance(Duration::from_secs(by));
                }
                Op::ReadAt(seq) => {
                    model.trim(now);
                    let got = topic.history_from(Offset::At(seq)).map(seqs);
                    let expected = if seq > next {
                        Err(ReplayError::Future { requested: seq, next })
                    } else if seq < model.floor {
                        Err(ReplayError::Evicted { requested: Offset::At(seq), oldest: model.floor })
                    } else {
                        Ok(model.kept.iter().map(|e| e.0).filter(|&s| s >= seq).collect())
                    };
                    prop_assert_eq!(got, expected);
                }
                Op::ReadSince(t) => {
                    model.trim(now);
                    let got = topic.history_from(Offset::Since(secs(t))).map(seqs);
                    let expected = if model.gap.is_some_and(|gap| gap >= t) {
                        Err(ReplayError::Evicted { requested: Offset::Since(secs(t)), oldest: model.floor })
                    } else {
                        let first = model.kept.iter().position(|e| e.2 >= t).unwrap_or(model.kept.len());
                        Ok(model.kept[first..].iter().map(|e| e.0).collect())
                    };
                    prop_assert_eq!(got, expected);
                }
                Op::ReadBetween(from, until) => {
                    model.trim(now);
                    let got = topic.history_between(secs(from), secs(until)).map(seqs);
                    let expected = if model.gap.is_some_and(|gap| gap >= from) {
                        Err(ReplayError::Evicted { requested: Offset::Since(secs(from)), oldest: model.floor })
                    } else {
                        Ok(model.kept.iter().filter(|e| e.2 >= from && e.2 < until).map(|e| e.0).collect())
                    };
                    prop_assert_eq!(got, expected);
                }
            }
            model.trim(now);
            let history = topic.history();
            let got: Vec<u64> = seqs(history.iter().cloned());
            prop_assert_eq!(&got, &model.kept.iter().map(|e| e.0).collect::<Vec<_>>());
            if let Some(n) = events {
                prop_assert!(got.len() <= n, "count bound exceeded");
            }
            if compacted {
                let mut keys: HashMap<&str, u64> = HashMap::new();
                for env in history.iter() {
                    if let Some(key) = env.key() {
                        prop_assert!(keys.insert(key, env.seq()).is_none(), "two events kept for one key");
                    }
                }
            } else {
                prop_assert!(got.windows(2).all(|w| w[1] == w[0] + 1), "a gap in a history that is not compacted");
                if let Some(&last) = got.last() {
                    prop_assert_eq!(last + 1, next, "the newest event is always kept");
                }
            }
            prop_assert_eq!(topic.oldest_offset(), got.first().copied());
        }
    }
}
