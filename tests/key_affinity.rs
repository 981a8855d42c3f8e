//! Key affinity in consumer groups: a key's events go to one member while the members
//! stay, and are handled one at a time in `seq` order across the group, also as
//! members come and go, under retries, and with a clock moved by hand.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::checker::{EventKey, History};
use common::{churn_group_under_checker, with_deadline};
use crier::testing::ManualClock;
use crier::{Backoff, Bus, Dispatch, Envelope, Overflow, Retry, SubscribeError, Subscription};

const WAIT: Duration = Duration::from_secs(10);

/// Each handling: (member, key, n, attempt).
type Log = Arc<Mutex<Vec<(usize, String, u32, u32)>>>;

fn record(log: &Log, member: usize, env: &Envelope<u32>) {
    let key = env.key().unwrap_or("").to_owned();
    log.lock().unwrap().push((member, key, **env, env.attempt()));
}

fn keyed_member(bus: &Bus, index: usize, log: &Log) -> Subscription {
    let log = log.clone();
    bus.subscriber::<u32>()
        .name(format!("member-{index}"))
        .group("ledger")
        .key_affinity()
        .subscribe(move |env: &Envelope<u32>| record(&log, index, env))
        .unwrap()
}

fn publish(bus: &Bus, key: &str, n: u32) {
    bus.message(n).key(key).publish().unwrap();
}

/// The handlings of `key`, in the order they ran.
fn of_key(log: &Log, key: &str) -> Vec<(usize, u32, u32)> {
    let log = log.lock().unwrap();
    log.iter()
        .filter(|(_, k, _, _)| k == key)
        .map(|&(m, _, n, a)| (m, n, a))
        .collect()
}

#[test]
fn a_key_stays_with_one_member_and_in_order_while_the_members_stay() {
    let bus = Bus::new();
    let log = Log::default();
    let members: Vec<_> = (0..3).map(|i| keyed_member(&bus, i, &log)).collect();
    let keys: Vec<String> = (0..30).map(|k| format!("account-{k}")).collect();
    for n in 0..40 {
        for key in &keys {
            publish(&bus, key, n);
        }
    }
    bus.wait_idle(WAIT).unwrap();
    let mut owners = HashSet::new();
    for key in &keys {
        let handled = of_key(&log, key);
        let ns: Vec<u32> = handled.iter().map(|&(_, n, _)| n).collect();
        assert_eq!(ns, (0..40).collect::<Vec<_>>(), "{key} in publish order");
        let member = handled[0].0;
        assert!(
            handled.iter().all(|&(m, _, _)| m == member),
            "{key} on one member: {handled:?}"
        );
        owners.insert(member);
    }
    assert_eq!(owners.len(), 3, "the keys are shared out among the members");
    let stats = bus.stats();
    let group = stats.group("ledger").unwrap();
    assert_eq!((group.accepted, group.handed_out, group.queued), (1_200, 1_200, 0));
    assert!(group.is_balanced(), "{group:?}");
    for m in &members {
        assert!(m.stats().is_balanced(), "{:?}", m.stats());
    }
}

#[test]
fn keyless_events_go_to_any_member() {
    let bus = Bus::new();
    let log = Log::default();
    let _members: Vec<_> = (0..2).map(|i| keyed_member(&bus, i, &log)).collect();
    for n in 0..200_u32 {
        bus.publish(n).unwrap();
    }
    bus.wait_idle(WAIT).unwrap();
    let mut ns: Vec<u32> = log.lock().unwrap().iter().map(|&(_, _, n, _)| n).collect();
    ns.sort_unstable();
    assert_eq!(ns, (0..200).collect::<Vec<_>>(), "each once");
    assert!(bus.stats().group("ledger").unwrap().is_balanced());
}

/// Per key: the last `n` handled, and whether one is being handled now.
type KeyProbe = Arc<Mutex<HashMap<String, (Option<u64>, bool)>>>;

/// A member of the checker's group: every 7th event fails its first attempt (a member
/// that leaves hands it back with its attempt count); each handling checks that its
/// key is not being handled elsewhere and that it comes after the key's last.
fn checked_member(bus: &Bus, history: &Arc<History>, keys: &KeyProbe, index: u64) -> Subscription {
    let (history, keys) = (history.clone(), keys.clone());
    bus.subscriber::<EventKey>()
        .name(format!("member-{index}"))
        .group("ledger")
        .key_affinity()
        .unbounded()
        .at_least_once(Retry::unordered().backoff(Backoff::fixed(Duration::from_millis(1))))
        .subscribe(move |env: &Envelope<EventKey>| -> Result<(), String> {
            let key = env.key().unwrap().to_owned();
            {
                let mut keys = keys.lock().unwrap();
                let (last, running) = keys.entry(key.clone()).or_default();
                assert!(!*running, "two events of {key} at once");
                assert!(
                    last.map_or(true, |last| last < env.n),
                    "{key}: {} after {last:?}",
                    env.n
                );
                *running = true;
            }
            std::thread::yield_now();
            let failed = env.n % 7 == 0 && env.attempt() == 1;
            let mut keys = keys.lock().unwrap();
            let (last, running) = keys.get_mut(&key).unwrap();
            *running = false;
            if failed {
                return Err("first attempt".into());
            }
            *last = Some(env.n);
            history.delivered("ledger", **env);
            Ok(())
        })
        .unwrap()
}

/// The checker over a keyed group whose members come and go while 4 threads publish
/// on 32 keys: nothing lost or handled twice, counters balanced, and each key's events
/// handled one at a time in order, every 7th after a failed first attempt.
#[test]
fn per_key_order_holds_under_the_checker_as_members_come_and_go() {
    with_deadline(Duration::from_secs(120), || {
        let bus = Bus::new();
        let history = Arc::new(History::new());
        let keys = KeyProbe::default();
        let join = {
            let (bus, history, keys) = (bus.clone(), history.clone(), keys.clone());
            move |index| checked_member(&bus, &history, &keys, index)
        };
        let publisher = bus.clone();
        let publish = move |key: EventKey| {
            let partition = format!("{}.{}", key.publisher, key.n % 8);
            publisher.message(key).key(partition).publish().map(drop).map_err(drop)
        };
        churn_group_under_checker(&bus, &history, "ledger", join, publish);
        let keys = keys.lock().unwrap();
        assert_eq!(keys.len(), 32);
        for (key, &(last, _)) in keys.iter() {
            let residue: u64 = key.split('.').nth(1).unwrap().parse().unwrap();
            assert_eq!(last, Some(1_992 + residue), "{key} ran to its last event");
        }
    });
}

#[test]
fn a_waiting_retry_holds_back_its_key_only_and_wait_idle_returns_under_a_manual_clock() {
    for retry in [Retry::unordered(), Retry::ordered()] {
        let clock = ManualClock::new();
        let bus = Bus::builder().clock(clock.clone()).build().unwrap();
        let log = Log::default();
        let sink = log.clone();
        let member = bus
            .subscriber::<u32>()
            .group("ledger")
            .key_affinity()
            .at_least_once(retry.max_attempts(3).backoff(Backoff::fixed(Duration::from_secs(1))))
            .subscribe(move |env: &Envelope<u32>| -> Result<(), String> {
                if env.key() == Some("a") && **env == 0 && env.attempt() == 1 {
                    return Err("not yet".into());
                }
                record(&sink, 0, env);
                Ok(())
            })
            .unwrap();
        publish(&bus, "a", 0);
        publish(&bus, "a", 1);
        publish(&bus, "b", 0);
        // The bus is idle: "a" 0 waits for a clock move only the test makes, and "a" 1
        // waits behind it (neither is in flight); "b" went on.
        bus.wait_idle(WAIT).unwrap();
        assert_eq!(of_key(&log, "b"), [(0, 0, 1)]);
        assert!(of_key(&log, "a").is_empty(), "{:?}", log.lock().unwrap());
        let stats = bus.stats();
        assert_eq!(stats.group("ledger").unwrap().queued, 1, "\"a\" 1 waits in its line");
        assert_eq!((stats.in_flight, member.stats().retrying), (0, 1));

        clock.advance(Duration::from_secs(1));
        bus.wait_idle(WAIT).unwrap();
        assert_eq!(of_key(&log, "a"), [(0, 0, 2), (0, 1, 1)], "{retry:?}");
        let stats = bus.stats();
        assert!(stats.group("ledger").unwrap().is_balanced());
        assert!(member.stats().is_balanced(), "{:?}", member.stats());
    }
}

#[test]
fn a_leaving_member_gives_its_waiting_retry_back_ahead_of_its_key() {
    let clock = ManualClock::new();
    let bus = Bus::builder().clock(clock.clone()).build().unwrap();
    let retry = Retry::unordered()
        .max_attempts(5)
        .backoff(Backoff::fixed(Duration::from_secs(60)));
    let failing = bus
        .subscriber::<u32>()
        .group("ledger")
        .key_affinity()
        .at_least_once(retry)
        .subscribe(|_: &Envelope<u32>| -> Result<(), String> { Err("down".into()) })
        .unwrap();
    publish(&bus, "k", 0);
    bus.wait_idle(WAIT).unwrap();
    publish(&bus, "k", 1);
    publish(&bus, "k", 2);
    bus.wait_idle(WAIT).unwrap();
    assert_eq!(failing.stats().retrying, 1);

    let log = Log::default();
    let sink = log.clone();
    let good = bus
        .subscriber::<u32>()
        .group("ledger")
        .key_affinity()
        .at_least_once(retry)
        .subscribe(move |env: &Envelope<u32>| record(&sink, 1, env))
        .unwrap();
    let left = failing.unsubscribe();
    assert_eq!(
        (left.handed_over, left.retrying, left.dropped.total()),
        (1, 0, 0),
        "{left:?}"
    );
    // No clock move: the retry is first in its key again, with its attempt count.
    bus.wait_idle(WAIT).unwrap();
    assert_eq!(of_key(&log, "k"), [(1, 0, 2), (1, 1, 1), (1, 2, 1)]);
    let stats = bus.stats();
    let group = stats.group("ledger").unwrap();
    assert_eq!((group.accepted, group.handed_back, group.handed_out), (3, 1, 4));
    assert!(group.is_balanced() && good.stats().is_balanced(), "{group:?}");
}

/// A member on a thread of its own whose handler waits for a permit per event.
fn gated_member(bus: &Bus, log: &Log, capacity: usize) -> (Subscription, mpsc::Sender<()>) {
    let (permits, gate) = mpsc::channel::<()>();
    let gate = Mutex::new(gate);
    let log = log.clone();
    let sub = bus
        .subscriber::<u32>()
        .group("ledger")
        .key_affinity()
        .capacity(capacity)
        .overflow(Overflow::DropNewest)
        .dispatch(Dispatch::Thread)
        .subscribe(move |env: &Envelope<u32>| {
            let _ = gate.lock().unwrap().recv();
            record(&log, 0, env);
        })
        .unwrap();
    (sub, permits)
}

#[test]
fn the_capacity_bounds_what_a_busy_key_holds_back() {
    with_deadline(Duration::from_secs(60), || {
        let bus = Bus::new();
        let log = Log::default();
        let (_member, permits) = gated_member(&bus, &log, 4);
        publish(&bus, "k", 0);
        while bus.stats().group("ledger").unwrap().handed_out < 1 {
            std::thread::yield_now();
        }
        for n in 1..10 {
            publish(&bus, "k", n);
        }
        let group = bus.stats().group("ledger").cloned().unwrap();
        assert_eq!((group.queued, group.dropped.newest), (4, 5), "{group:?}");
        drop(permits);
        bus.wait_idle(WAIT).unwrap();
        let ns: Vec<u32> = of_key(&log, "k").iter().map(|&(_, n, _)| n).collect();
        assert_eq!(ns, [0, 1, 2, 3, 4]);
        assert!(bus.stats().group("ledger").unwrap().is_balanced());
    });
}

#[test]
fn what_the_lines_hold_is_counted_when_the_last_member_leaves_or_the_bus_shuts_down() {
    with_deadline(Duration::from_secs(60), || {
        // The last member leaves from inside its handler of "k" 0, with 1..4 behind it.
        let bus = Bus::new();
        let (permits, gate) = mpsc::channel::<()>();
        let (report, left) = mpsc::channel();
        let me: Arc<Mutex<Option<Subscription>>> = Arc::default();
        let slot = me.clone();
        let member = bus
            .subscriber::<u32>()
            .group("ledger")
            .key_affinity()
            .dispatch(Dispatch::Thread)
            .subscribe(move |_: &Envelope<u32>| {
                gate.recv().unwrap();
                if let Some(me) = slot.lock().unwrap().take() {
                    report.send(me.unsubscribe()).unwrap();
                }
            })
            .unwrap();
        *me.lock().unwrap() = Some(member);
        for n in 0..5 {
            publish(&bus, "k", n);
        }
        while bus.stats().group("ledger").unwrap().queued < 4 {
            std::thread::yield_now();
        }
        permits.send(()).unwrap();
        let left = left.recv().unwrap();
        // Its own event was still running when it left; the 4 behind it were dropped.
        assert_eq!((left.accepted, left.dropped.unsubscribed), (5, 4), "{left:?}");
        bus.wait_idle(WAIT).unwrap();
        assert!(bus.stats().groups.is_empty(), "the group ended");

        // Shutdown with a member stuck on "k" 0 and 1..4 in the line.
        let bus = Bus::new();
        let log = Log::default();
        let (_member, permits) = gated_member(&bus, &log, 16);
        for n in 0..5 {
            publish(&bus, "k", n);
        }
        while bus.stats().group("ledger").unwrap().handed_out < 1 {
            std::thread::yield_now();
        }
        let report = bus.shutdown(Duration::from_millis(50)).unwrap();
        drop(permits);
        assert!(!report.drained);
        let group = report.stats.group("ledger").unwrap();
        assert_eq!((group.queued, group.dropped.shutdown), (0, 4), "{group:?}");
        assert!(group.is_balanced());
    });
}

#[test]
fn what_key_affinity_cannot_be_is_a_typed_error() {
    let bus = Bus::new();
    let sub = || bus.subscriber::<u32>();
    let handler = |_: &Envelope<u32>| {};
    for result in [
        sub().key_affinity().subscribe(handler).map(drop),
        sub().key_affinity().receiver().map(drop),
        sub()
            .key_affinity()
            .at_least_once(Retry::ordered())
            .ack_receiver()
            .map(drop),
    ] {
        match result {
            Err(SubscribeError::InvalidPolicy { reason }) => assert!(reason.contains("group"), "{reason}"),
            other => panic!("expected InvalidPolicy, got {other:?}"),
        }
    }
    let invalid = |result: Result<Subscription, SubscribeError>| match result {
        Err(SubscribeError::InvalidGroup { reason, .. }) => reason,
        other => panic!("expected InvalidGroup, got {other:?}"),
    };
    let reason = invalid(
        sub()
            .group("g")
            .key_affinity()
            .overflow(Overflow::DropOldest)
            .subscribe(handler),
    );
    assert!(reason.contains("DropOldest"), "{reason}");
    let _keyed = sub().group("g").key_affinity().subscribe(handler).unwrap();
    let reason = invalid(sub().group("g").subscribe(handler));
    assert!(reason.contains("key_affinity"), "{reason}");
    let _plain = sub().group("h").subscribe(handler).unwrap();
    let reason = invalid(sub().group("h").key_affinity().subscribe(handler));
    assert!(reason.contains("key_affinity"), "{reason}");
    assert!(matches!(
        sub().key_affinity().respond(|q: &Envelope<u32>| **q),
        Err(SubscribeError::InvalidResponder { .. })
    ));
    let stats = bus.stats();
    assert_eq!(
        (stats.group("g").unwrap().members, stats.group("h").unwrap().members),
        (1, 1)
    );
}
