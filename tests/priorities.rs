//! Priorities: inline subscribers of one event run highest priority first, equal
//! priorities in the order they subscribed, and breadth-first dispatch still holds.

use std::sync::{Arc, Mutex};

use crier::{Bus, Envelope, Offset, Subscription};
use proptest::prelude::*;

type Log = Arc<Mutex<Vec<String>>>;

fn inline_bus() -> Bus {
    Bus::builder().inline().build().unwrap()
}

fn logger<E: Send + Sync + 'static>(bus: &Bus, name: &str, priority: i32, log: &Log) -> Subscription {
    let (log, tag) = (log.clone(), name.to_owned());
    bus.subscriber::<E>()
        .name(name)
        .priority(priority)
        .subscribe(move |_: &Envelope<E>| log.lock().unwrap().push(tag.clone()))
        .unwrap()
}

fn taken(log: &Log) -> Vec<String> {
    std::mem::take(&mut *log.lock().unwrap())
}

#[test]
fn inline_subscribers_run_highest_priority_first_then_oldest_first() {
    let bus = inline_bus();
    let log = Log::default();
    let _subs: Vec<_> = [("a", 0), ("b", 5), ("c", -1), ("d", 5), ("e", 0)]
        .iter()
        .map(|(name, priority)| logger::<u32>(&bus, name, *priority, &log))
        .collect();
    bus.publish(1_u32).unwrap();
    assert_eq!(taken(&log), ["b", "d", "a", "e", "c"]);
    bus.publish(2_u32).unwrap();
    assert_eq!(taken(&log), ["b", "d", "a", "e", "c"], "every event, the same order");

    let stats = bus.stats();
    assert_eq!(stats.subscriber("b").unwrap().priority, 5);
    assert_eq!(stats.subscriber("c").unwrap().priority, -1);
}

#[test]
fn a_subscriber_that_comes_back_goes_after_its_equals() {
    let bus = inline_bus();
    let log = Log::default();
    let first = logger::<u32>(&bus, "first", 1, &log);
    let _second = logger::<u32>(&bus, "second", 1, &log);
    let _low = logger::<u32>(&bus, "low", 0, &log);
    drop(first);
    let _again = logger::<u32>(&bus, "again", 1, &log);
    bus.publish(1_u32).unwrap();
    assert_eq!(taken(&log), ["second", "again", "low"]);
}

#[test]
fn breadth_first_holds_each_event_in_its_own_priority_order() {
    #[derive(Debug)]
    struct Placed;
    #[derive(Debug)]
    struct Paid;
    let bus = inline_bus();
    let log = Log::default();
    // The highest subscriber of `Placed` publishes `Paid`: every subscriber of
    // `Placed` still runs before any of `Paid`.
    let weak = bus.downgrade();
    let trigger_log = log.clone();
    let _billing = bus
        .subscriber::<Placed>()
        .priority(9)
        .subscribe(move |_: &Envelope<Placed>| {
            trigger_log.lock().unwrap().push("placed:billing".into());
            weak.upgrade().unwrap().publish(Paid).unwrap();
        })
        .unwrap();
    let _mail = logger::<Placed>(&bus, "placed:mail", 0, &log);
    let _stock = logger::<Placed>(&bus, "placed:stock", 3, &log);
    let _receipt = logger::<Paid>(&bus, "paid:receipt", 0, &log);
    let _ledger = logger::<Paid>(&bus, "paid:ledger", 7, &log);
    bus.publish(Placed).unwrap();
    assert_eq!(
        taken(&log),
        [
            "placed:billing",
            "placed:stock",
            "placed:mail",
            "paid:ledger",
            "paid:receipt"
        ]
    );
}

#[test]
fn pattern_and_replaying_subscribers_take_their_place_by_priority() {
    let bus = inline_bus();
    let log = Log::default();
    let topic = bus.topic_named::<u32>("orders.eu").unwrap();
    topic.set_retention(crier::Retention::last(8)).unwrap();
    let (l, p, r) = (log.clone(), log.clone(), log.clone());
    let _low = topic
        .subscriber()
        .name("plain")
        .subscribe(move |_: &Envelope<u32>| l.lock().unwrap().push("plain".into()))
        .unwrap();
    let _pattern = bus
        .subscriber::<u32>()
        .pattern("orders.>")
        .priority(2)
        .subscribe(move |_: &Envelope<u32>| p.lock().unwrap().push("pattern".into()))
        .unwrap();
    topic.publish(1).unwrap();
    assert_eq!(taken(&log), ["pattern", "plain"]);
    let _replaying = topic
        .subscriber()
        .start_at(Offset::Earliest)
        .priority(1)
        .subscribe(move |_: &Envelope<u32>| r.lock().unwrap().push("replaying".into()))
        .unwrap();
    assert_eq!(taken(&log), ["replaying"], "its history, at the join");
    topic.publish(2).unwrap();
    assert_eq!(taken(&log), ["pattern", "replaying", "plain"]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The reference model: a stable sort by descending priority of the subscription
    /// order.
    #[test]
    fn inline_order_is_the_stable_sort_by_priority(priorities in prop::collection::vec(-3_i32..=3, 1..10)) {
        let bus = inline_bus();
        let log = Log::default();
        let _subs: Vec<_> = priorities
            .iter()
            .enumerate()
            .map(|(i, p)| logger::<u8>(&bus, &i.to_string(), *p, &log))
            .collect();
        bus.publish(0_u8).unwrap();
        let mut expected: Vec<usize> = (0..priorities.len()).collect();
        expected.sort_by_key(|&i| std::cmp::Reverse(priorities[i]));
        let expected: Vec<String> = expected.iter().map(usize::to_string).collect();
        prop_assert_eq!(taken(&log), expected);
    }
}
