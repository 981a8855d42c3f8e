//! Observe-all (`Bus::observe_all`, `Bus::observer`) and unrouted notices (`Unrouted`).

mod common;

use std::sync::{Arc, Mutex};

use common::{on_threads, FIVE_SECONDS};
use crier::{AnyEnvelope, Bus, Envelope, Overflow, Unrouted};

const OBSERVATIONS: &str = "crier::observe::AnyEnvelope";
const NOTICES: &str = "crier::observe::Unrouted";

#[test]
fn an_observer_sees_every_event_of_every_type_with_its_own_metadata() {
    let bus = Bus::builder().inline().build().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let _observer = bus
        .observe_all(move |env: &AnyEnvelope| log.lock().unwrap().push(env.envelope::<u32>().map(|e| (e.id(), *e))))
        .unwrap();
    let _typed = bus.subscribe(|_: &Envelope<u32>| {}).unwrap();
    let first = bus.publish(1_u32).unwrap();
    bus.topic_named::<String>("names").unwrap().publish("x".into()).unwrap();
    let third = bus.message(3_u32).key("k").header("h", "v").publish().unwrap();
    assert_eq!(*seen.lock().unwrap(), [Some((first.id, 1)), None, Some((third.id, 3))]);

    let rx = bus.observer().capacity(8).receiver().unwrap();
    bus.message(4_u32).key("user-1").header("lang", "en").publish().unwrap();
    let outer = rx.try_recv().unwrap();
    // The outer envelope is the observation's; the event's own metadata are inside.
    assert_eq!(outer.topic(), OBSERVATIONS);
    let observed: &AnyEnvelope = outer.event();
    assert_eq!(observed.type_name(), "u32");
    assert_eq!(
        (observed.topic(), observed.seq(), observed.key()),
        ("u32", 2, Some("user-1"))
    );
    assert_eq!(observed.headers().get("lang"), Some("en"));
    assert_eq!(observed.downcast_ref::<u32>(), Some(&4));
    assert_eq!(observed.downcast_ref::<u64>(), None);
    assert_eq!(observed.correlation_id(), observed.id());
    assert!(observed.event().is::<u32>());
}

#[test]
fn an_observer_sees_an_event_before_what_its_handlers_publish() {
    let bus = Bus::builder().inline().build().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let _observer = bus
        .observe_all(move |env: &AnyEnvelope| log.lock().unwrap().push(env.type_name()))
        .unwrap();
    let b = bus.clone();
    let _a = bus
        .subscribe(move |_: &Envelope<u32>| {
            b.publish(1_u64).unwrap();
        })
        .unwrap();
    let _b = bus.subscribe(|_: &Envelope<u64>| {}).unwrap();
    bus.publish(1_u32).unwrap();
    assert_eq!(*seen.lock().unwrap(), ["u32", "u64"]);
}

#[test]
fn observers_do_not_route_and_unrouted_events_are_announced() {
    let bus = Bus::builder().inline().build().unwrap();
    let observed = bus.observer().unbounded().receiver().unwrap();
    let notices = bus.subscriber::<Unrouted>().unbounded().receiver().unwrap();
    let _picky = bus
        .subscriber::<u32>()
        .filter(|n| *n > 10)
        .subscribe(|_: &Envelope<u32>| {})
        .unwrap();
    bus.publish(5_u32).unwrap(); // the only subscriber's filter says no
    bus.publish(50_u32).unwrap(); // routed
    bus.topic_named::<u64>("nobody").unwrap().publish(6).unwrap();
    let lost: Vec<(String, String)> = notices
        .try_iter()
        .map(|n| {
            (
                n.event().topic().to_owned(),
                format!(
                    "{:?}",
                    n.downcast_ref::<u32>()
                        .copied()
                        .or(n.downcast_ref::<u64>().map(|&v| v as u32))
                ),
            )
        })
        .collect();
    assert_eq!(
        lost,
        [
            ("u32".to_owned(), "Some(5)".to_owned()),
            ("nobody".to_owned(), "Some(6)".to_owned())
        ]
    );
    let kinds: Vec<&str> = observed.try_iter().map(|env| env.event().type_name()).collect();
    assert_eq!(
        kinds,
        [
            "u32",
            "crier::observe::Unrouted",
            "u32",
            "u64",
            "crier::observe::Unrouted"
        ],
        "the observer saw all three events and both notices, and routed none"
    );
    let stats = bus.stats();
    assert_eq!(stats.topic("u32").unwrap().unrouted, 1);
    assert_eq!(stats.topic("nobody").unwrap().unrouted, 1);
    // The notices were observed too; the observations announce nothing.
    assert_eq!(stats.topic(NOTICES).unwrap().published, 2);
    assert_eq!(stats.topic(OBSERVATIONS).unwrap().published, 3 + 2);
}

#[test]
fn an_unrouted_notice_that_reaches_nobody_is_not_announced_again() {
    let bus = Bus::builder().inline().build().unwrap();
    let _deaf = bus
        .subscriber::<Unrouted>()
        .filter(|_| false)
        .subscribe(|_: &Envelope<Unrouted>| {})
        .unwrap();
    bus.publish(1_u32).unwrap();
    let stats = bus.stats();
    let notices = stats.topic(NOTICES).unwrap();
    assert_eq!((notices.published, notices.unrouted), (1, 1));
}

#[test]
fn without_listeners_nothing_is_announced() {
    let bus = Bus::builder().inline().build().unwrap();
    let observer = bus.observe_all(|_: &AnyEnvelope| {}).unwrap();
    let notices = bus.receiver::<Unrouted>().unwrap();
    bus.publish(1_u32).unwrap();
    drop(observer);
    drop(notices);
    bus.publish(2_u32).unwrap();
    let stats = bus.stats();
    assert_eq!(stats.topic(OBSERVATIONS).unwrap().published, 1 + 1);
    assert_eq!(stats.topic(NOTICES).unwrap().published, 1);
    assert_eq!(stats.topic("u32").unwrap().unrouted, 2);
}

#[test]
fn a_full_observer_follows_its_own_overflow_policy() {
    let bus = Bus::new();
    let rx = bus
        .observer()
        .capacity(4)
        .overflow(Overflow::DropNewest)
        .receiver()
        .unwrap();
    for n in 0..10_u32 {
        bus.publish(n).unwrap(); // never blocks on the observer
    }
    let stats = rx.stats();
    assert_eq!((stats.accepted, stats.dropped.total(), stats.queued), (10, 6, 4));
    let rejecting = bus
        .observer()
        .capacity(1)
        .overflow(Overflow::Reject)
        .receiver()
        .unwrap();
    let second = bus
        .observer()
        .capacity(1)
        .overflow(Overflow::Reject)
        .receiver()
        .unwrap();
    drop(second);
    bus.publish(100_u32).unwrap();
    let receipt = bus
        .publish(101_u32)
        .expect("the event is accepted; the observation is refused");
    assert_eq!(receipt.seq, 11);
    assert_eq!(rejecting.stats().refused, 1, "counted on the observer");
}

#[test]
fn pool_observers_are_drained_by_wait_idle_and_count_every_event() {
    let bus = Bus::new();
    let count = Arc::new(Mutex::new(0_u64));
    let seen = count.clone();
    let observer = bus
        .observer()
        .capacity(64)
        .subscribe(move |_: &Envelope<AnyEnvelope>| *seen.lock().unwrap() += 1)
        .unwrap();
    let publisher = bus.clone();
    on_threads(4, move |t| {
        let topic = publisher.topic_named::<u64>(&format!("load.{t}")).unwrap();
        for n in 0..2_000 {
            topic.publish(n).unwrap();
        }
    });
    bus.wait_idle(FIVE_SECONDS).unwrap();
    assert_eq!(*count.lock().unwrap(), 8_000);
    let stats = observer.stats();
    assert_eq!((stats.accepted, stats.delivered), (8_000, 8_000));
    let report = bus.shutdown(FIVE_SECONDS).unwrap();
    assert!(report.drained);
}
