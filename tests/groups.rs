//! Consumer groups: each event to exactly one member, nothing lost as members come
//! and go, typed errors for what a member cannot be.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::checker::{EventKey, History};
use common::{churn_group_under_checker, with_deadline};
use crier::testing::ManualClock;
use crier::{Backoff, Bus, Dispatch, Envelope, EventId, Offset, Overflow, Retry, SubscribeError, Subscription};

const WAIT: Duration = Duration::from_secs(10);

/// Which member handled each event.
type Log = Arc<Mutex<Vec<(usize, EventId)>>>;

fn member(bus: &Bus, group: &str, index: usize, log: &Log) -> Subscription {
    let log = log.clone();
    bus.subscriber::<u32>()
        .name(format!("member-{index}"))
        .group(group)
        .subscribe(move |env: &Envelope<u32>| log.lock().unwrap().push((index, env.id())))
        .unwrap()
}

/// A member on a thread of its own whose handler waits for a permit per event; the
/// permits' sender is returned (dropping it lets every later event through).
fn gated_member(bus: &Bus, group: &str, index: usize, log: &Log) -> (Subscription, mpsc::Sender<()>) {
    let (permits, gate) = mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    let log = log.clone();
    let sub = bus
        .subscriber::<u32>()
        .name(format!("member-{index}"))
        .group(group)
        .dispatch(Dispatch::Thread)
        .subscribe(move |env: &Envelope<u32>| {
            let _ = gate.lock().unwrap().recv();
            log.lock().unwrap().push((index, env.id()));
        })
        .unwrap();
    (sub, permits)
}

/// A member on a thread of its own that, once let through (one permit), handles its
/// first event and unsubscribes itself from the handler: so it is known to leave while
/// it holds that event. Returns the permits' sender and where its final stats arrive.
fn leaving_member(
    bus: &Bus,
    group: &str,
    index: usize,
    log: &Log,
) -> (mpsc::Sender<()>, mpsc::Receiver<crier::SubscriberStats>) {
    let (permits, gate) = mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    let me: Arc<Mutex<Option<Subscription>>> = Arc::default();
    let (report, left) = mpsc::channel();
    let (slot, log) = (me.clone(), log.clone());
    let sub = bus
        .subscriber::<u32>()
        .name(format!("member-{index}"))
        .group(group)
        .dispatch(Dispatch::Thread)
        .subscribe(move |env: &Envelope<u32>| {
            let _ = gate.lock().unwrap().recv();
            log.lock().unwrap().push((index, env.id()));
            if let Some(sub) = slot.lock().unwrap().take() {
                report.send(sub.unsubscribe()).unwrap();
            }
        })
        .unwrap();
    *me.lock().unwrap() = Some(sub);
    (permits, left)
}

fn handled_once_each(log: &Log, published: usize) -> HashMap<usize, usize> {
    let log = log.lock().unwrap();
    let mut by_event: HashMap<EventId, usize> = HashMap::new();
    let mut by_member: HashMap<usize, usize> = HashMap::new();
    for &(member, id) in log.iter() {
        *by_event.entry(id).or_default() += 1;
        *by_member.entry(member).or_default() += 1;
    }
    assert_eq!(by_event.len(), published, "every event handled");
    assert!(by_event.values().all(|&n| n == 1), "no event handled twice");
    by_member
}

#[test]
fn each_event_is_handled_by_exactly_one_member() {
    let bus = Bus::new();
    let log = Log::default();
    let members: Vec<_> = (0..4).map(|i| member(&bus, "workers", i, &log)).collect();
    for n in 0_u32..1_000 {
        bus.publish(n).unwrap();
    }
    bus.wait_idle(WAIT).unwrap();
    handled_once_each(&log, 1_000);

    let stats = bus.stats();
    let group = stats.group("workers").unwrap();
    assert_eq!(
        (group.members, group.accepted, group.handed_out, group.queued),
        (4, 1_000, 1_000, 0)
    );
    assert!(group.is_balanced(), "{group:?}");
    let took: u64 = members.iter().map(|m| m.stats().accepted).sum();
    assert_eq!(took, 1_000);
    for m in &members {
        let s = m.stats();
        assert!(s.is_balanced(), "{s:?}");
        assert_eq!(s.group.as_deref(), Some("workers"));
    }
    // The topic sees the group as one subscriber: nothing unrouted.
    let topic = stats.topic(std::any::type_name::<u32>()).unwrap();
    assert_eq!((topic.subscribers, topic.unrouted), (1, 0));
}

#[test]
fn a_group_shares_the_stream_with_ordinary_subscribers() {
    let bus = Bus::new();
    let log = Log::default();
    let _a = member(&bus, "workers", 0, &log);
    let _b = member(&bus, "workers", 1, &log);
    let other = Log::default();
    let _c = member(&bus, "auditors", 2, &other);
    let plain = bus.subscriber::<u32>().unbounded().receiver().unwrap();
    for n in 0_u32..100 {
        bus.publish(n).unwrap();
    }
    bus.wait_idle(WAIT).unwrap();
    handled_once_each(&log, 100);
    handled_once_each(&other, 100);
    assert_eq!(plain.try_iter().count(), 100, "fan-out to the others is unchanged");
}

#[test]
fn a_stuck_member_does_not_hold_back_the_others() {
    with_deadline(Duration::from_secs(60), || {
        let bus = Bus::new();
        let log = Log::default();
        let (_stuck, permits) = gated_member(&bus, "workers", 0, &log);
        let _a = member(&bus, "workers", 1, &log);
        let _b = member(&bus, "workers", 2, &log);
        for n in 0_u32..100 {
            bus.publish(n).unwrap();
        }
        // The stuck member holds at most the one event it took; the others do the rest.
        let others = || log.lock().unwrap().iter().filter(|(m, _)| *m != 0).count();
        while others() < 99 {
            std::thread::yield_now();
        }
        drop(permits);
        bus.wait_idle(WAIT).unwrap();
        let by_member = handled_once_each(&log, 100);
        assert!(by_member.get(&0).copied().unwrap_or(0) <= 1, "{by_member:?}");
    });
}

#[test]
fn a_member_that_leaves_loses_nothing_and_a_member_that_joins_takes_its_share() {
    with_deadline(Duration::from_secs(60), || {
        let bus = Bus::new();
        let log = Log::default();
        let (a, a_permits) = gated_member(&bus, "workers", 0, &log);
        // `b` leaves while it handles an event and 48 wait in the group's queue.
        let (b_permits, left) = leaving_member(&bus, "workers", 1, &log);
        for n in 0_u32..50 {
            bus.publish(n).unwrap();
        }
        while bus.stats().group("workers").unwrap().queued < 48 {
            std::thread::yield_now();
        }
        b_permits.send(()).unwrap();
        let b_stats = left.recv().unwrap();
        assert_eq!(b_stats.accepted, 1, "{b_stats:?}");
        assert_eq!(b_stats.dropped.total(), 0, "a leaving member drops nothing");

        // `c` joins while `a` is stuck: it takes what is queued.
        let _c = member(&bus, "workers", 2, &log);
        let c_took = || log.lock().unwrap().iter().filter(|(m, _)| *m == 2).count();
        while c_took() < 48 {
            std::thread::yield_now();
        }
        drop(a_permits);
        bus.wait_idle(WAIT).unwrap();
        handled_once_each(&log, 50);
        let stats = bus.stats();
        let group = stats.group("workers").unwrap();
        assert!(group.is_balanced() && group.dropped.total() == 0, "{group:?}");
        assert_eq!(group.members, 2);
        drop(a);
    });
}

#[test]
fn the_last_member_to_leave_drops_what_is_queued_counted_and_the_group_ends() {
    with_deadline(Duration::from_secs(60), || {
        let bus = Bus::new();
        let log = Log::default();
        // It leaves while it handles its first event and 4 wait in the queue.
        let (permits, last) = leaving_member(&bus, "workers", 0, &log);
        for n in 0_u32..5 {
            bus.publish(n).unwrap();
        }
        while bus.stats().group("workers").unwrap().queued < 4 {
            std::thread::yield_now();
        }
        permits.send(()).unwrap();
        let last = last.recv().unwrap();
        // Its own event was still running when it left; the 4 queued were dropped.
        assert_eq!((last.accepted, last.dropped.unsubscribed), (5, 4), "{last:?}");
        bus.wait_idle(WAIT).unwrap();
        let stats = bus.stats();
        assert!(
            stats.groups.is_empty() && stats.subscribers.is_empty(),
            "the group ended"
        );

        // Nobody listens now; a new member makes a new group.
        let receipt = bus.publish(5_u32).unwrap();
        assert_eq!(receipt.subscribers, 0);
        log.lock().unwrap().clear();
        let _b = member(&bus, "workers", 1, &log);
        bus.publish(6_u32).unwrap();
        bus.wait_idle(WAIT).unwrap();
        let group = bus.stats().group("workers").cloned().unwrap();
        assert_eq!((group.accepted, group.handed_out), (1, 1));
        handled_once_each(&log, 1);
    });
}

#[test]
fn a_member_that_fails_every_event_does_not_starve_the_others() {
    // At-most-once: its share fails, counted; the others handle theirs.
    let bus = Bus::new();
    let log = Log::default();
    let failing = bus
        .subscriber::<u32>()
        .group("workers")
        .subscribe(|_: &Envelope<u32>| -> Result<(), String> { Err("broken".into()) })
        .unwrap();
    let others: Vec<_> = (1..3).map(|i| member(&bus, "workers", i, &log)).collect();
    for n in 0_u32..300 {
        bus.publish(n).unwrap();
    }
    bus.wait_idle(WAIT).unwrap();
    let failed = failing.stats().failed;
    let handled = log.lock().unwrap().len() as u64;
    assert_eq!(failed + handled, 300);
    assert_eq!(failing.stats().accepted, failed);
    for m in &others {
        assert!(m.stats().is_balanced());
    }
    assert!(bus.stats().group("workers").unwrap().is_balanced());
}

#[test]
fn an_at_least_once_member_retries_its_own_failures_then_dead_letters_them() {
    let clock = ManualClock::new();
    let bus = Bus::builder().clock(clock.clone()).build().unwrap();
    let retry = || {
        Retry::unordered()
            .max_attempts(2)
            .backoff(Backoff::fixed(Duration::from_secs(1)))
    };
    let failing = bus
        .subscriber::<u32>()
        .group("workers")
        .at_least_once(retry())
        .subscribe(|_: &Envelope<u32>| -> Result<(), String> { Err("broken".into()) })
        .unwrap();
    let log = Log::default();
    let sink = log.clone();
    let good = bus
        .subscriber::<u32>()
        .group("workers")
        .at_least_once(retry())
        .subscribe(move |env: &Envelope<u32>| sink.lock().unwrap().push((1, env.id())))
        .unwrap();
    for n in 0_u32..200 {
        bus.publish(n).unwrap();
    }
    bus.wait_idle(WAIT).unwrap();
    clock.advance(Duration::from_secs(1));
    bus.wait_idle(WAIT).unwrap();
    let (bad, ok) = (failing.stats(), good.stats());
    assert_eq!(bad.dead_lettered, bad.accepted, "{bad:?}");
    assert_eq!(ok.delivered as usize, log.lock().unwrap().len());
    assert_eq!(bad.accepted + ok.accepted, 200);
    assert!(bad.is_balanced() && ok.is_balanced());
}

/// A member of "workers" whose handler always fails, after event 7 was published:
/// its retry waits a minute on a manual clock that never moves.
fn member_with_a_waiting_retry(bus: &Bus) -> Subscription {
    let retry = Retry::ordered().backoff(Backoff::fixed(Duration::from_secs(60)));
    let failing = bus
        .subscriber::<u32>()
        .group("workers")
        .at_least_once(retry)
        .subscribe(|_: &Envelope<u32>| -> Result<(), String> { Err("down".into()) })
        .unwrap();
    bus.publish(7_u32).unwrap();
    bus.wait_idle(WAIT).unwrap();
    assert_eq!(failing.stats().retrying, 1);
    failing
}

#[test]
fn a_leaving_member_hands_its_waiting_retries_to_the_group() {
    let bus = Bus::builder().clock(ManualClock::new()).build().unwrap();
    let failing = member_with_a_waiting_retry(&bus);

    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    let good = bus
        .subscriber::<u32>()
        .group("workers")
        .at_least_once(Retry::ordered())
        .subscribe(move |env: &Envelope<u32>| seen.lock().unwrap().push((**env, env.attempt())))
        .unwrap();
    let left = failing.unsubscribe();
    assert_eq!(
        (left.handed_over, left.retrying, left.dropped.total()),
        (1, 0, 0),
        "{left:?}"
    );
    assert!(left.is_balanced());
    // No clock move needed: the event is queued again, with its attempt count.
    bus.wait_idle(WAIT).unwrap();
    assert_eq!(*attempts.lock().unwrap(), vec![(7, 2)]);
    let stats = bus.stats();
    let group = stats.group("workers").unwrap();
    assert_eq!((group.accepted, group.handed_back, group.handed_out), (1, 1, 2));
    assert!(group.is_balanced() && good.stats().is_balanced());
}

#[test]
fn the_last_member_to_leave_drops_its_waiting_retry_counted_once() {
    let bus = Bus::builder().clock(ManualClock::new()).build().unwrap();
    let only = member_with_a_waiting_retry(&bus);
    // Nobody is left to take it: dropped where it waits, counted once (as for ack
    // receivers, `tests/ack_groups.rs`).
    let left = only.unsubscribe();
    let counts = (left.accepted, left.retried, left.handed_over, left.dropped.unsubscribed);
    assert_eq!(counts, (1, 1, 0, 1), "{left:?}");
    assert!(left.is_balanced(), "{left:?}");
    assert!(bus.stats().group("workers").is_none(), "the group ended");
}

#[test]
fn shutdown_drains_a_group_and_reports_it() {
    let bus = Bus::new();
    let done = Arc::new(AtomicU32::new(0));
    let _members: Vec<_> = (0..3)
        .map(|_| {
            let done = done.clone();
            bus.subscriber::<u32>()
                .group("workers")
                .subscribe(move |_: &Envelope<u32>| {
                    done.fetch_add(1, Ordering::Relaxed);
                })
                .unwrap()
        })
        .collect();
    for n in 0_u32..500 {
        bus.publish(n).unwrap();
    }
    let report = bus.shutdown(WAIT).unwrap();
    assert!(report.drained);
    assert_eq!((report.delivered(), report.pending), (500, 0));
    assert_eq!(done.load(Ordering::Relaxed), 500);
    let group = report.stats.group("workers").unwrap();
    assert!(group.is_balanced());
}

#[test]
fn a_full_group_applies_its_overflow_policy_once_for_the_group() {
    with_deadline(Duration::from_secs(60), || {
        let bus = Bus::new();
        let log = Log::default();
        let (permits, gate) = mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let sink = log.clone();
        let _stuck = bus
            .subscriber::<u32>()
            .group("workers")
            .capacity(2)
            .overflow(Overflow::DropNewest)
            .dispatch(Dispatch::Thread)
            .subscribe(move |env: &Envelope<u32>| {
                let _ = gate.lock().unwrap().recv();
                sink.lock().unwrap().push((0, env.id()));
            })
            .unwrap();
        bus.publish(0_u32).unwrap();
        while bus.stats().group("workers").unwrap().handed_out < 1 {
            std::thread::yield_now();
        }
        for n in 1_u32..10 {
            bus.publish(n).unwrap();
        }
        let group = bus.stats().group("workers").cloned().unwrap();
        assert_eq!((group.queued, group.dropped.newest), (2, 7), "{group:?}");
        drop(permits);
        bus.wait_idle(WAIT).unwrap();
        assert!(bus.stats().group("workers").unwrap().is_balanced());
    });
}

#[test]
fn what_a_member_cannot_be_is_a_typed_error() {
    let bus = Bus::new();
    let invalid = |result: Result<Subscription, SubscribeError>| match result {
        Err(SubscribeError::InvalidGroup { group, reason }) => (group, reason),
        other => panic!("expected InvalidGroup, got {other:?}"),
    };
    let sub = || bus.subscriber::<u32>();
    let handler = |_: &Envelope<u32>| {};
    for name in ["", "a..b", "with space", "wild.*"] {
        let (group, _) = invalid(sub().group(name).subscribe(handler));
        assert_eq!(group, name);
    }
    let (_, reason) = invalid(sub().group("g").dispatch(Dispatch::Inline).subscribe(handler));
    assert!(reason.contains("inline"), "{reason}");
    let (_, reason) = invalid(sub().group("g").filter(|n| *n > 1).subscribe(handler));
    assert!(reason.contains("filter"), "{reason}");
    let (_, reason) = invalid(sub().group("g").pattern("orders.>").subscribe(handler));
    assert!(reason.contains("pattern"), "{reason}");
    let (_, reason) = invalid(sub().group("g").start_at(Offset::Earliest).subscribe(handler));
    assert!(reason.contains("start_at"), "{reason}");
    let _first = sub().group("g").capacity(8).subscribe(handler).unwrap();
    // A group is all push members or all receivers.
    match sub().group("g").capacity(8).receiver() {
        Err(SubscribeError::InvalidGroup { reason, .. }) => assert!(reason.contains("receivers"), "{reason}"),
        other => panic!("expected InvalidGroup, got {other:?}"),
    }
    let _pull = sub().group("p").receiver().unwrap();
    let (_, reason) = invalid(sub().group("p").subscribe(handler));
    assert!(reason.contains("receivers"), "{reason}");
    let (_, reason) = invalid(sub().group("g").capacity(16).subscribe(handler));
    assert!(reason.contains("capacity"), "{reason}");
    let (_, reason) = invalid(
        sub()
            .group("g")
            .capacity(8)
            .overflow(Overflow::DropOldest)
            .subscribe(handler),
    );
    assert!(reason.contains("overflow"), "{reason}");
    let error = sub().group("a..b").subscribe(handler).unwrap_err();
    assert_eq!(
        error.to_string(),
        "invalid group `a..b`: a dot-separated token is empty"
    );
    // Nothing was left behind by the refusals: one member in each group.
    assert_eq!(bus.stats().group("g").unwrap().members, 1);
    assert_eq!(bus.stats().group("p").unwrap().members, 1);
}

#[test]
fn receivers_in_a_group_share_the_stream_and_the_close_wakes_them_all() {
    with_deadline(Duration::from_secs(60), || {
        let bus = Bus::new();
        let receivers: Vec<_> = (0..3)
            .map(|_| bus.subscriber::<u32>().group("pullers").receiver().unwrap())
            .collect();
        for n in 0_u32..300 {
            bus.publish(n).unwrap();
        }
        // What a group of receivers holds waits for their owners: not in flight.
        bus.wait_idle(WAIT).unwrap();
        assert_eq!(bus.stats().group("pullers").unwrap().queued, 300);
        assert_eq!(receivers[0].len(), 300, "a member sees the group's queue");
        // Each drains on a thread of its own until the bus closes. Once the queue is
        // empty they block in recv on the same queue: the close must wake every one.
        let threads: Vec<_> = receivers
            .into_iter()
            .map(|rx| {
                std::thread::spawn(move || {
                    let mine: Vec<u32> = rx.iter().map(|env| *env).collect();
                    (mine, rx.stats())
                })
            })
            .collect();
        // Until every event is taken and counted (a receiver counts just after its
        // pop: waiting for an empty queue could catch one in between).
        while bus.stats().group("pullers").unwrap().handed_out < 300 {
            std::thread::yield_now();
        }
        let report = bus.shutdown(WAIT).unwrap();
        assert_eq!((report.pending, report.in_receivers), (0, 0));
        let mut all = Vec::new();
        for thread in threads {
            let (mine, stats) = thread.join().unwrap();
            assert_eq!(
                (stats.accepted, stats.delivered),
                (mine.len() as u64, mine.len() as u64)
            );
            assert!(stats.is_balanced(), "{stats:?}");
            all.extend(mine);
        }
        all.sort_unstable();
        assert_eq!(all, (0..300).collect::<Vec<_>>(), "each event to exactly one receiver");
        let group = report.stats.group("pullers").unwrap();
        assert!(group.receivers && group.is_balanced(), "{group:?}");
    });
}

#[test]
fn a_receiver_that_leaves_the_group_loses_nothing_and_shutdown_keeps_the_rest() {
    let bus = Bus::new();
    let first = bus.subscriber::<u32>().group("pullers").receiver().unwrap();
    let second = bus.subscriber::<u32>().group("pullers").receiver().unwrap();
    for n in 0_u32..10 {
        bus.publish(n).unwrap();
    }
    let taken: Vec<u32> = (0..3).map(|_| *first.try_recv().unwrap()).collect();
    assert_eq!(taken, [0, 1, 2]);
    drop(first);
    // The rest waits for the other member; shutdown keeps it for its owner.
    let report = bus.shutdown(WAIT).unwrap();
    assert_eq!((report.pending, report.in_receivers), (0, 7), "{report}");
    let rest: Vec<u32> = second.iter().map(|env| *env).collect();
    assert_eq!(rest, (3..10).collect::<Vec<_>>());
    assert!(matches!(second.try_recv(), Err(crier::TryRecvError::Closed)));
    let stats = second.stats();
    assert_eq!((stats.accepted, stats.delivered), (7, 7));
}

/// The checker over a group whose members come and go while 4 threads publish: no
/// event handled twice, none lost, every counter balanced across the group.
#[test]
fn groups_under_the_checker_as_members_come_and_go() {
    with_deadline(Duration::from_secs(120), || {
        let bus = Bus::new();
        let history = Arc::new(History::new());
        let join = {
            let (bus, history) = (bus.clone(), history.clone());
            move |index: u64| {
                let history = history.clone();
                bus.subscriber::<EventKey>()
                    .name(format!("member-{index}"))
                    .group("workers")
                    .unbounded()
                    .at_least_once(Retry::unordered().backoff(Backoff::fixed(Duration::from_millis(1))))
                    .subscribe(move |env: &Envelope<EventKey>| -> Result<(), String> {
                        // Every 7th event fails its first attempt (a member that leaves
                        // hands it back with its attempt count: it then succeeds anywhere).
                        if env.n % 7 == 0 && env.attempt() == 1 {
                            return Err("first attempt".into());
                        }
                        history.delivered("workers", **env);
                        Ok(())
                    })
                    .unwrap()
            }
        };
        let publisher = bus.clone();
        let publish = move |key: EventKey| publisher.publish(key).map(drop).map_err(drop);
        churn_group_under_checker(&bus, &history, "workers", join, publish);
    });
}
