//! Promise 9, the subscriber half: a subscriber, receiver or ack receiver that starts
//! at an offset gets the history from there and then the live events, with no gap and
//! no duplicate at the hand-off, and applies its policies to replayed events as to
//! live ones (RELIABILITY-PLAN H4; the loom model is `loom_joining_at_a_cut_*`).

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{stress_scale, with_deadline};
use crier::testing::ManualClock;
use crier::{
    Bus, DedupWindow, Dispatch, Envelope, Offset, Overflow, RecvError, ReplayError, Retention, Retry, SubscribeError,
};

const WAIT: Duration = Duration::from_secs(10);

fn recorded(dispatch: Dispatch) -> (Bus, Arc<Mutex<Vec<u32>>>) {
    let bus = Bus::builder().dispatch(dispatch).build().unwrap();
    (bus, Arc::new(Mutex::new(Vec::new())))
}

/// A bus whose `u32` topic keeps its history and has published `0..n`.
fn published(n: u32) -> (Bus, crier::Topic<u32>) {
    let bus = Bus::new();
    let topic = bus.topic::<u32>();
    topic.set_retention(Retention::last(100)).unwrap();
    for event in 0..n {
        topic.publish(event).unwrap();
    }
    (bus, topic)
}

/// Every kind of push subscriber: the history from the offset, then live events.
#[test]
fn a_push_subscriber_gets_the_history_from_its_offset_then_live_events() {
    for dispatch in [Dispatch::Pool, Dispatch::Thread, Dispatch::Inline] {
        let (bus, seen) = recorded(dispatch);
        let topic = bus.topic::<u32>();
        topic.set_retention(Retention::last(100)).unwrap();
        for n in 0..5 {
            topic.publish(n).unwrap();
        }
        let log = seen.clone();
        let sub = topic
            .subscriber()
            .start_at(Offset::At(2))
            .subscribe(move |env: &Envelope<u32>| log.lock().unwrap().push(**env))
            .unwrap();
        if dispatch == Dispatch::Inline {
            assert_eq!(
                *seen.lock().unwrap(),
                [2, 3, 4],
                "inline: replayed before subscribe returns"
            );
        }
        topic.publish(5).unwrap();
        bus.wait_idle(WAIT).unwrap();
        assert_eq!(*seen.lock().unwrap(), [2, 3, 4, 5], "{dispatch:?}");
        let stats = sub.stats();
        assert_eq!((stats.accepted, stats.delivered), (4, 4));
        assert!(stats.is_balanced());
    }
}

#[test]
fn receivers_and_ack_receivers_start_at_an_offset_too() {
    let (_bus, topic) = published(3);
    let rx = topic.subscriber().start_at(Offset::Earliest).receiver().unwrap();
    let acks = topic
        .subscriber()
        .start_at(Offset::At(1))
        .at_least_once(Retry::ordered())
        .ack_receiver()
        .unwrap();
    topic.publish(3).unwrap();
    assert_eq!(rx.try_iter().map(|env| *env).collect::<Vec<_>>(), [0, 1, 2, 3]);
    let mut acked = Vec::new();
    for handle in acks.try_iter() {
        acked.push(**handle);
        handle.ack();
    }
    assert_eq!(acked, [1, 2, 3]);
    assert!(rx.stats().is_balanced() && acks.stats().is_balanced());
}

#[test]
fn latest_is_the_default_and_replays_nothing() {
    let bus = Bus::new();
    let topic = bus.topic::<u32>();
    topic.set_retention(Retention::last(100)).unwrap();
    topic.publish(0).unwrap();
    let rx = topic.subscriber().start_at(Offset::Latest).receiver().unwrap();
    let default = topic.receiver().unwrap();
    topic.publish(1).unwrap();
    assert_eq!(rx.try_iter().map(|env| *env).collect::<Vec<_>>(), [1]);
    assert_eq!(default.try_iter().map(|env| *env).collect::<Vec<_>>(), [1]);
}

#[test]
fn since_a_time_starts_at_the_first_event_published_then() {
    let clock = ManualClock::new();
    let bus = Bus::builder().clock(clock.clone()).build().unwrap();
    let topic = bus.topic::<u32>();
    topic.set_retention(Retention::last(100)).unwrap();
    for n in 0..4 {
        clock.set(UNIX_EPOCH + Duration::from_secs(60 * u64::from(n)));
        topic.publish(n).unwrap();
    }
    let since = SystemTime::UNIX_EPOCH + Duration::from_secs(90);
    let rx = topic.subscriber().start_at(Offset::Since(since)).receiver().unwrap();
    assert_eq!(rx.try_iter().map(|env| *env).collect::<Vec<_>>(), [2, 3]);
}

/// An offset that cannot be read is an error at subscribe, and nothing is subscribed.
#[test]
fn an_evicted_or_future_offset_is_a_typed_error_and_subscribes_nothing() {
    let bus = Bus::new();
    let topic = bus.topic::<u32>();
    topic.set_retention(Retention::last(2)).unwrap();
    for n in 0..5 {
        topic.publish(n).unwrap();
    }
    let evicted = topic.subscriber().start_at(Offset::At(1)).receiver().unwrap_err();
    assert!(matches!(
        evicted,
        SubscribeError::Replay(ReplayError::Evicted {
            requested: Offset::At(1),
            oldest: 3
        })
    ));
    assert_eq!(
        evicted.to_string(),
        "offset 1 is no longer in the history: the oldest offset available is 3"
    );
    let future = topic
        .subscriber()
        .start_at(Offset::At(9))
        .dispatch(Dispatch::Thread)
        .subscribe(|_: &Envelope<u32>| {})
        .unwrap_err();
    assert!(matches!(
        future,
        SubscribeError::Replay(ReplayError::Future { requested: 9, next: 5 })
    ));
    assert!(bus.stats().subscribers.is_empty());
    // Earliest never fails: it starts at the oldest event kept.
    let rx = topic.subscriber().start_at(Offset::Earliest).receiver().unwrap();
    assert_eq!(rx.try_iter().map(|env| *env).collect::<Vec<_>>(), [3, 4]);
}

/// A filter screens the replay as it screens live events; a filter that panics on a
/// replayed event fails that event (counted, and the error hook is told).
#[test]
fn a_filter_screens_the_replay() {
    for dispatch in [Dispatch::Pool, Dispatch::Inline] {
        let (bus, seen) = recorded(dispatch);
        let topic = bus.topic::<u32>();
        topic.set_retention(Retention::last(100)).unwrap();
        for n in 0..10 {
            topic.publish(n).unwrap();
        }
        let hooked = Arc::new(AtomicU64::new(0));
        let hook = hooked.clone();
        let log = seen.clone();
        let sub = topic
            .subscriber()
            .filter(|n| {
                assert_ne!(*n, 7, "seven is unlucky");
                n % 2 == 1
            })
            .on_error(move |_| {
                hook.fetch_add(1, Ordering::Relaxed);
            })
            .start_at(Offset::At(2))
            .subscribe(move |env: &Envelope<u32>| log.lock().unwrap().push(**env))
            .unwrap();
        topic.publish(11).unwrap();
        topic.publish(12).unwrap();
        bus.wait_idle(WAIT).unwrap();
        assert_eq!(*seen.lock().unwrap(), [3, 5, 9, 11], "{dispatch:?}");
        let stats = sub.stats();
        assert_eq!((stats.accepted, stats.delivered, stats.failed), (5, 4, 1));
        assert_eq!(hooked.load(Ordering::Relaxed), 1);
        assert!(stats.is_balanced());
    }
}

/// Events published while the filter screens the replay (here, by the filter itself,
/// on the subscribing thread) are queued behind the replay, not ahead of it.
#[test]
fn events_published_while_the_replay_is_screened_come_after_it() {
    for dispatch in [Dispatch::Pool, Dispatch::Inline] {
        let (bus, seen) = recorded(dispatch);
        let topic = bus.topic::<u32>();
        topic.set_retention(Retention::last(100)).unwrap();
        for n in 0..3 {
            topic.publish(n).unwrap();
        }
        let publisher = topic.clone();
        let once = Arc::new(AtomicU64::new(0));
        let log = seen.clone();
        let rx = topic
            .subscriber()
            .filter(move |n| {
                if *n == 1 && once.fetch_add(1, Ordering::Relaxed) == 0 {
                    publisher.publish(100).unwrap();
                }
                true
            })
            .start_at(Offset::Earliest)
            .receiver()
            .unwrap();
        let _sub = topic
            .subscriber()
            .start_at(Offset::Earliest)
            .subscribe(move |env: &Envelope<u32>| log.lock().unwrap().push(**env))
            .unwrap();
        bus.wait_idle(WAIT).unwrap();
        assert_eq!(rx.try_iter().map(|env| *env).collect::<Vec<_>>(), [0, 1, 2, 100]);
        assert_eq!(*seen.lock().unwrap(), [0, 1, 2, 100], "{dispatch:?}");
        assert!(rx.stats().is_balanced());
    }
}

/// A replay under `DropOldest` keeps the last `capacity` events, and the receiver is
/// told how many it missed, as if they had been published into a full mailbox.
#[test]
fn a_drop_oldest_replay_keeps_the_newest_and_reports_the_lag() {
    let (_bus, topic) = published(10);
    let rx = topic
        .subscriber()
        .capacity(3)
        .overflow(Overflow::DropOldest)
        .start_at(Offset::Earliest)
        .receiver()
        .unwrap();
    assert!(matches!(rx.recv(), Err(RecvError::Lagged(7))));
    assert_eq!(rx.try_iter().map(|env| *env).collect::<Vec<_>>(), [7, 8, 9]);
    let stats = rx.stats();
    assert_eq!((stats.accepted, stats.dropped.oldest, stats.delivered), (10, 7, 3));
    assert!(stats.is_balanced());
}

#[test]
fn a_drop_newest_replay_keeps_the_oldest_capacity_and_counts_the_rest() {
    let (_bus, topic) = published(10);
    let rx = topic
        .subscriber()
        .capacity(4)
        .overflow(Overflow::DropNewest)
        .start_at(Offset::Earliest)
        .receiver()
        .unwrap();
    assert_eq!(rx.try_iter().map(|env| *env).collect::<Vec<_>>(), [0, 1, 2, 3]);
    let stats = rx.stats();
    assert_eq!((stats.accepted, stats.dropped.newest), (10, 6));
    assert!(stats.is_balanced());
}

/// Under `Block` and `Reject` a replay is queued whole, beyond the capacity; live
/// publishes then meet a full mailbox until the receiver catches up.
#[test]
fn a_reject_replay_is_queued_whole_and_live_publishes_wait_for_room() {
    let (_bus, topic) = published(10);
    let rx = topic
        .subscriber()
        .capacity(4)
        .overflow(Overflow::Reject)
        .start_at(Offset::Earliest)
        .receiver()
        .unwrap();
    assert_eq!(rx.len(), 10);
    assert!(topic.publish(10).is_err(), "full: the replay holds 10 of 4");
    for _ in 0..7 {
        rx.recv().unwrap();
    }
    topic.publish(10).unwrap();
    assert_eq!(rx.try_iter().map(|env| *env).collect::<Vec<_>>(), [7, 8, 9, 10]);
    let stats = rx.stats();
    assert_eq!((stats.accepted, stats.refused, stats.high_water), (11, 1, 10));
    assert!(stats.is_balanced());
}

/// Policies apply to replayed events: an at-least-once subscriber retries a replayed
/// event that fails, and its dedup window skips a replayed key that already succeeded.
#[test]
fn at_least_once_and_dedup_apply_to_replayed_events() {
    let clock = ManualClock::new();
    let bus = Bus::builder().clock(clock.clone()).inline().build().unwrap();
    let topic = bus.topic::<u32>();
    topic.set_retention(Retention::last(100)).unwrap();
    topic.message(1).idempotency_key("a").publish().unwrap();
    topic.message(2).idempotency_key("a").publish().unwrap();
    topic.message(3).idempotency_key("b").publish().unwrap();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let log = attempts.clone();
    let sub = topic
        .subscriber()
        .start_at(Offset::Earliest)
        .at_least_once(Retry::ordered())
        .dedup(DedupWindow::new(100, Duration::from_secs(60)))
        .subscribe(move |env: &Envelope<u32>| {
            log.lock().unwrap().push((**env, env.attempt()));
            if **env == 3 && env.attempt() == 1 {
                return Err("first try fails");
            }
            Ok(())
        })
        .unwrap();
    clock.advance(Duration::from_secs(60));
    bus.wait_idle(WAIT).unwrap();
    assert_eq!(*attempts.lock().unwrap(), [(1, 1), (3, 1), (3, 2)]);
    let stats = sub.stats();
    assert_eq!((stats.delivered, stats.deduplicated, stats.retried), (2, 1, 1));
    assert!(stats.is_balanced());
}

/// `wait_idle` waits for a push subscriber's replay, like for any queued delivery.
#[test]
fn wait_idle_waits_for_a_replay() {
    let bus = Bus::new();
    let topic = bus.topic::<u32>();
    topic.set_retention(Retention::last(10_000)).unwrap();
    for n in 0..10_000 {
        topic.publish(n).unwrap();
    }
    let handled = Arc::new(AtomicU64::new(0));
    let count = handled.clone();
    let _sub = topic
        .subscriber()
        .start_at(Offset::Earliest)
        .subscribe(move |_: &Envelope<u32>| {
            count.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
    bus.wait_idle(WAIT).unwrap();
    assert_eq!(handled.load(Ordering::Relaxed), 10_000);
}

/// Unsubscribing in the middle of a replay counts what was not reached as dropped.
#[test]
fn unsubscribing_during_a_replay_accounts_for_the_rest() {
    let (bus, topic) = published(50);
    let rx = topic.subscriber().start_at(Offset::Earliest).receiver().unwrap();
    for _ in 0..10 {
        rx.recv().unwrap();
    }
    let id = rx.id();
    drop(rx);
    assert!(bus.stats().subscribers.iter().all(|s| s.id != id));
    let sub = topic
        .subscriber()
        .start_at(Offset::Earliest)
        .subscribe(|_: &Envelope<u32>| std::thread::yield_now())
        .unwrap();
    let stats = sub.unsubscribe();
    assert_eq!(stats.accepted, 50);
    assert!(stats.is_balanced(), "{stats:?}");
    bus.wait_idle(WAIT).unwrap();
}

/// H4: subscribers join at an offset while publishers run at full speed; each gets
/// every offset from its start exactly once, in order (those with a filter, every one
/// it passes).
#[test]
fn joining_while_publishers_run_has_no_gap_and_no_duplicate() {
    with_deadline(Duration::from_secs(120), || {
        let events = 20_000 * stress_scale();
        let bus = Bus::new();
        let topic = bus.topic::<u64>();
        topic.set_retention(Retention::last(events as usize * 2)).unwrap();
        let publishers: Vec<_> = (0..2)
            .map(|_| {
                let topic = topic.clone();
                std::thread::spawn(move || {
                    for n in 0..events {
                        topic.publish(n).unwrap();
                    }
                })
            })
            .collect();
        // Every other receiver only wants even events: its filter screens the replay
        // while live events keep coming.
        let mut joined = Vec::new();
        while joined.len() < 200 {
            let from = topic.next_offset().saturating_sub(50);
            let even = joined.len() % 2 == 1;
            let builder = topic.subscriber().unbounded().start_at(Offset::At(from));
            let builder = if even { builder.filter(|n| n % 2 == 0) } else { builder };
            joined.push((from, even, builder.receiver().unwrap()));
        }
        // Push subscribers on the pool join the same way.
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let from = topic.next_offset();
        let _sub = topic
            .subscriber()
            .unbounded()
            .start_at(Offset::At(from))
            .subscribe(move |env: &Envelope<u64>| log.lock().unwrap().push(env.seq()))
            .unwrap();
        for publisher in publishers {
            publisher.join().unwrap();
        }
        bus.wait_idle(WAIT).unwrap();
        let next = topic.next_offset();
        assert_eq!(next, 2 * events);
        let events: Vec<u64> = topic.history().iter().map(|env| **env).collect();
        for (from, even, rx) in &joined {
            let got: Vec<u64> = rx.try_iter().map(|env| env.seq()).collect();
            let expected: Vec<u64> = (*from..next)
                .filter(|&seq| !even || events[seq as usize] % 2 == 0)
                .collect();
            assert_eq!(got, expected, "receiver from {from}, even only: {even}");
        }
        assert_eq!(*seen.lock().unwrap(), (from..next).collect::<Vec<_>>());
    });
}
