//! Wildcard subscriptions over named topics (`SubscriberBuilder::pattern`).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{on_threads, with_deadline, FIVE_SECONDS};
use crier::{Bus, Envelope, Offset, Retry, SubscribeError};
use proptest::prelude::*;

/// What each receiver got: (topic, event), in order.
fn drain(rx: &crier::Receiver<u64>) -> Vec<(String, u64)> {
    rx.try_iter().map(|env| (env.topic().to_owned(), *env)).collect()
}

fn publish(bus: &Bus, topic: &str, event: u64) {
    bus.topic_named::<u64>(topic).unwrap().publish(event).unwrap();
}

#[test]
fn a_pattern_hears_matching_topics_made_before_and_after_it() {
    let bus = Bus::new();
    publish(&bus, "orders.eu.created", 0); // before anyone listens: unrouted
    let rx = bus.subscriber::<u64>().pattern("orders.*.created").receiver().unwrap();
    publish(&bus, "orders.eu.created", 1);
    publish(&bus, "orders.us.created", 2); // made after the subscriber
    publish(&bus, "orders.eu.paid", 3);
    publish(&bus, "orders.eu.created.late", 4);
    publish(&bus, "orders.created", 5);
    assert_eq!(
        drain(&rx),
        [("orders.eu.created".to_owned(), 1), ("orders.us.created".to_owned(), 2)]
    );
    let stats = rx.stats();
    assert_eq!((stats.topic.as_str(), stats.accepted), ("orders.*.created", 2));
}

#[test]
fn a_tail_pattern_hears_every_depth_but_not_its_prefix() {
    let bus = Bus::new();
    let rx = bus.subscriber::<u64>().pattern("orders.>").receiver().unwrap();
    publish(&bus, "orders", 1);
    publish(&bus, "orders.eu", 2);
    publish(&bus, "orders.eu.created", 3);
    publish(&bus, "billing.eu", 4);
    let events: Vec<u64> = drain(&rx).into_iter().map(|(_, e)| e).collect();
    assert_eq!(events, [2, 3]);
}

#[test]
fn a_pattern_hears_only_its_event_type_and_never_a_default_topic() {
    let bus = Bus::new();
    let rx = bus.subscriber::<u64>().pattern(">").receiver().unwrap();
    bus.topic_named::<String>("orders.names")
        .unwrap()
        .publish("x".into())
        .unwrap();
    bus.publish(7_u64).unwrap(); // u64's default topic
    publish(&bus, "orders.ids", 8);
    assert_eq!(drain(&rx), [("orders.ids".to_owned(), 8)]);
    let names = bus.stats();
    let names = names.topic("orders.names").unwrap();
    assert_eq!((names.subscribers, names.unrouted), (0, 1));
}

#[test]
fn a_literal_pattern_is_the_topic_itself() {
    let bus = Bus::new();
    let rx = bus.subscriber::<u64>().pattern("orders.eu").receiver().unwrap();
    publish(&bus, "orders.eu", 1);
    publish(&bus, "orders.eux", 2);
    assert_eq!(drain(&rx), [("orders.eu".to_owned(), 1)]);
}

#[test]
fn invalid_patterns_are_typed_errors() {
    let bus = Bus::new();
    for (pattern, reason) in [
        ("", "the pattern is empty"),
        ("orders..eu", "a dot-separated token is empty"),
        ("orders.", "a dot-separated token is empty"),
        ("orders.>.eu", "`>` may only be the last token"),
        (">.>", "`>` may only be the last token"),
        ("orders.eu*", "a wildcard (`*` or `>`) must be a whole token"),
        ("orders.*x.eu", "a wildcard (`*` or `>`) must be a whole token"),
        ("orders eu", "the pattern contains whitespace or a control character"),
        ("orders.\u{7}", "the pattern contains whitespace or a control character"),
    ] {
        let err = bus.subscriber::<u64>().pattern(pattern).receiver().unwrap_err();
        match &err {
            SubscribeError::InvalidPattern { pattern: p, reason: r } => {
                assert_eq!((p.as_str(), *r), (pattern, reason));
            }
            other => panic!("{pattern:?}: expected InvalidPattern, got {other:?}"),
        }
        assert_eq!(err.to_string(), format!("invalid pattern `{pattern}`: {reason}"));
        // Every way to subscribe checks it, before any thread starts.
        let push = bus
            .subscriber::<u64>()
            .pattern(pattern)
            .subscribe(|_: &Envelope<u64>| {});
        assert!(matches!(push, Err(SubscribeError::InvalidPattern { .. })));
        let ack = bus
            .subscriber::<u64>()
            .pattern(pattern)
            .at_least_once(Retry::ordered())
            .ack_receiver();
        assert!(matches!(ack, Err(SubscribeError::InvalidPattern { .. })));
    }
    let long = "a.".repeat(129);
    assert!(matches!(
        bus.subscriber::<u64>().pattern(long.trim_end_matches('.')).receiver(),
        Err(SubscribeError::InvalidPattern {
            reason: "the pattern is longer than 255 bytes",
            ..
        })
    ));
    let replay = bus
        .subscriber::<u64>()
        .pattern("orders.>")
        .start_at(Offset::Earliest)
        .receiver();
    assert!(
        matches!(replay, Err(SubscribeError::InvalidPolicy { .. })),
        "{replay:?}"
    );
    assert_eq!(bus.stats().subscribers.len(), 0, "nothing was registered");
}

#[test]
fn one_publisher_is_heard_in_order_across_topics() {
    let bus = Bus::new();
    let rx = bus
        .subscriber::<u64>()
        .pattern("feed.*")
        .capacity(10_000)
        .receiver()
        .unwrap();
    let topics: Vec<_> = ["feed.a", "feed.b", "feed.c"]
        .iter()
        .map(|name| bus.topic_named::<u64>(name).unwrap())
        .collect();
    for n in 0..3_000_u64 {
        topics[(n * 7 % 3) as usize].publish(n).unwrap();
    }
    let events: Vec<u64> = drain(&rx).into_iter().map(|(_, e)| e).collect();
    assert_eq!(events, (0..3_000).collect::<Vec<_>>());
}

#[test]
fn unsubscribing_leaves_every_topic_and_joins_no_new_one() {
    let bus = Bus::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sub = {
        let seen = seen.clone();
        bus.subscriber::<u64>()
            .pattern("jobs.>")
            .subscribe(move |env: &Envelope<u64>| seen.lock().unwrap().push(**env))
            .unwrap()
    };
    publish(&bus, "jobs.a", 1);
    publish(&bus, "jobs.b.c", 2);
    bus.wait_idle(FIVE_SECONDS).unwrap();
    let stats = sub.unsubscribe();
    assert_eq!((stats.accepted, stats.delivered), (2, 2));
    publish(&bus, "jobs.a", 3);
    publish(&bus, "jobs.new", 4); // made after the unsubscribe
    bus.wait_idle(FIVE_SECONDS).unwrap();
    assert_eq!(*seen.lock().unwrap(), [1, 2]);
    let stats = bus.stats();
    for topic in ["jobs.a", "jobs.b.c", "jobs.new"] {
        assert_eq!(stats.topic(topic).unwrap().subscribers, 0, "{topic}");
    }
    assert_eq!(stats.topic("jobs.new").unwrap().unrouted, 1);
}

#[test]
fn a_pattern_subscriber_is_a_whole_subscriber_retries_and_accounting_included() {
    let clock = crier::testing::ManualClock::new();
    let bus = Bus::builder().inline().clock(clock.clone()).build().unwrap();
    let sub = bus
        .subscriber::<u64>()
        .pattern("pay.*")
        .at_least_once(Retry::unordered().max_attempts(2))
        .subscribe(|env: &Envelope<u64>| -> Result<(), String> {
            match **env % 2 {
                0 => Ok(()),
                _ => Err("odd".into()),
            }
        })
        .unwrap();
    for n in 0..10 {
        publish(&bus, if n % 2 == 0 { "pay.eu" } else { "pay.us" }, n);
    }
    clock.advance(Duration::from_secs(3600));
    bus.wait_idle(FIVE_SECONDS).unwrap();
    let stats = sub.stats();
    assert_eq!((stats.accepted, stats.delivered, stats.dead_lettered), (10, 5, 5));
    assert_eq!(
        stats.delivered + stats.failed + stats.dropped.total() + stats.dead_lettered + stats.deduplicated,
        stats.accepted
    );
    let letters = sub.dead_letters::<u64>().unwrap();
    assert!(letters.iter().all(|l| l.envelope().topic() == "pay.us"));
}

/// A pattern that subscribes while its topics are being made joins each of them
/// exactly once: never missed (the new topic's publish reaches it), never twice.
#[test]
fn subscribing_races_with_making_topics_without_a_miss_or_a_double() {
    with_deadline(Duration::from_secs(60), || {
        for round in 0..200 {
            let bus = Bus::new();
            let receivers = Arc::new(Mutex::new(Vec::new()));
            let (b, r) = (bus.clone(), receivers.clone());
            on_threads(2, move |thread| match thread {
                0 => {
                    let rx = b.subscriber::<u64>().pattern("race.>").receiver().unwrap();
                    r.lock().unwrap().push(rx);
                }
                _ => {
                    for n in 0..8 {
                        b.topic_named::<u64>(&format!("race.{round}.{n}")).unwrap();
                    }
                }
            });
            for n in 0..8 {
                publish(&bus, &format!("race.{round}.{n}"), n);
            }
            let receivers = receivers.lock().unwrap();
            let events: Vec<u64> = drain(&receivers[0]).into_iter().map(|(_, e)| e).collect();
            assert_eq!(events, (0..8).collect::<Vec<_>>(), "round {round}");
        }
    });
}

#[test]
fn ten_thousand_patterns_route_exactly() {
    with_deadline(Duration::from_secs(120), || {
        let bus = Bus::new();
        let receivers: Vec<_> = (0..10_000)
            .map(|n| {
                let pattern = match n % 3 {
                    0 => format!("region{}.*.created", n % 100),
                    1 => format!("region{}.>", n % 100),
                    _ => format!("region{}.shop{n}.created", n % 100),
                };
                bus.subscriber::<u64>().pattern(pattern).capacity(4).receiver().unwrap()
            })
            .collect();
        publish(&bus, "region7.shop1207.created", 1);
        let heard: Vec<usize> = (0..10_000).filter(|&n| !receivers[n].is_empty()).collect();
        let expected: Vec<usize> = (0..10_000)
            .filter(|&n| n % 100 == 7 && (n % 3 != 2 || n == 1207))
            .collect();
        assert_eq!(heard, expected);
        assert_eq!(
            bus.stats().topic("region7.shop1207.created").unwrap().subscribers,
            expected.len()
        );
    });
}

#[test]
fn a_handler_may_subscribe_a_pattern_and_make_matching_topics() {
    with_deadline(Duration::from_secs(10), || {
        let bus = Bus::builder().inline().build().unwrap();
        let inner = Arc::new(Mutex::new(None));
        let (b, slot) = (bus.clone(), inner.clone());
        let _outer = bus
            .subscribe(move |_: &Envelope<u32>| {
                let rx = b.subscriber::<u64>().pattern("made.*").receiver().unwrap();
                b.topic_named::<u64>("made.here").unwrap().publish(9).unwrap();
                *slot.lock().unwrap() = Some(rx);
            })
            .unwrap();
        bus.publish(1_u32).unwrap();
        let rx = inner.lock().unwrap().take().unwrap();
        assert_eq!(drain(&rx), [("made.here".to_owned(), 9)]);
    });
}

#[test]
fn shutdown_drains_pattern_subscribers_and_topics_made_later_refuse() {
    let bus = Bus::new();
    let sub = bus
        .subscriber::<u64>()
        .pattern("late.*")
        .subscribe(|_: &Envelope<u64>| {})
        .unwrap();
    publish(&bus, "late.a", 1);
    let report = bus.shutdown(FIVE_SECONDS).unwrap();
    assert_eq!(report.stats.subscribers[0].delivered, 1);
    let topic = bus.topic_named::<u64>("late.b").unwrap();
    assert!(topic.publish(2).is_err(), "a topic made after shutdown is closed");
    drop(sub);
}

/// Reference matcher for the property test: NATS rules, spelled out.
fn naive_matches(pattern: &str, name: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let n: Vec<&str> = name.split('.').collect();
    if p.last() == Some(&">") {
        let fixed = &p[..p.len() - 1];
        return n.len() > fixed.len() && fixed.iter().zip(&n).all(|(p, n)| *p == "*" || p == n);
    }
    p.len() == n.len() && p.iter().zip(&n).all(|(p, n)| *p == "*" || p == n)
}

fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(prop_oneof![Just("a"), Just("b"), Just("c")], 1..4).prop_map(|t| t.join("."))
}

fn pattern() -> impl Strategy<Value = String> {
    let token = prop_oneof![3 => prop_oneof![Just("a"), Just("b"), Just("c")], 2 => Just("*")];
    (prop::collection::vec(token, 1..4), any::<bool>()).prop_map(|(mut tokens, tail)| {
        if tail {
            *tokens.last_mut().expect("one or more") = ">";
        }
        tokens.join(".")
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// For random topic names and patterns, some topics made before the subscribers and
    /// some after, the subscribers an event reaches are exactly those whose pattern
    /// matches its topic's name.
    #[test]
    fn an_event_reaches_exactly_the_matching_patterns(
        early in prop::collection::vec(name(), 0..6),
        patterns in prop::collection::vec(pattern(), 1..12),
        late in prop::collection::vec(name(), 1..6),
    ) {
        let bus = Bus::new();
        for topic in &early {
            bus.topic_named::<u64>(topic).unwrap();
        }
        let receivers: Vec<_> = patterns
            .iter()
            .map(|p| bus.subscriber::<u64>().pattern(p.as_str()).unbounded().receiver().unwrap())
            .collect();
        let topics: Vec<&String> = early.iter().chain(&late).collect();
        for (n, topic) in topics.iter().enumerate() {
            publish(&bus, topic, n as u64);
        }
        for (p, rx) in patterns.iter().zip(&receivers) {
            let heard: Vec<u64> = drain(rx).into_iter().map(|(_, e)| e).collect();
            let expected: Vec<u64> = (0..topics.len() as u64)
                .filter(|&n| naive_matches(p, topics[n as usize]))
                .collect();
            prop_assert_eq!(heard, expected, "pattern {}", p);
        }
    }
}

#[test]
fn an_ack_receiver_can_listen_to_a_pattern() {
    let bus = Bus::new();
    let rx = bus
        .subscriber::<u64>()
        .pattern("acks.*")
        .at_least_once(Retry::ordered())
        .ack_receiver()
        .unwrap();
    publish(&bus, "acks.a", 1);
    publish(&bus, "acks.b", 2);
    let first = rx.try_recv().unwrap();
    assert_eq!((first.topic(), **first), ("acks.a", 1));
    first.ack();
    let second = rx.try_recv().unwrap();
    assert_eq!((second.topic(), **second), ("acks.b", 2));
    second.ack();
    let stats = rx.stats();
    assert_eq!(
        (stats.topic.as_str(), stats.accepted, stats.delivered),
        ("acks.*", 2, 2)
    );
}
