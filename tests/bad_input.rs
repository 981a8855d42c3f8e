//! Bad input and hostile handlers: each gets a typed error or documented behaviour,
//! never a panic, a deadlock or a silent loss.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{on_threads, with_deadline, FIVE_SECONDS};
use crier::{BuildError, Bus, Envelope, SubscribeError, Subscription, TopicError};
use proptest::prelude::*;

#[test]
fn a_name_bound_to_one_type_refuses_another() {
    let bus = Bus::new();
    let _orders = bus.topic_named::<String>("orders.eu").unwrap();
    let err = bus.topic_named::<u64>("orders.eu").unwrap_err();
    assert_eq!(
        err,
        TopicError::TypeMismatch {
            topic: "orders.eu".into(),
            existing: "alloc::string::String",
            requested: "u64",
        }
    );
    assert_eq!(
        err.to_string(),
        "topic `orders.eu` carries `alloc::string::String`, not `u64`"
    );
    // The same type is fine, and shares the stream.
    assert_eq!(bus.topic_named::<String>("orders.eu").unwrap().name(), "orders.eu");
}

#[test]
fn invalid_topic_names_are_typed_errors() {
    let bus = Bus::new();
    for (name, reason) in [
        ("", "the name is empty"),
        ("orders..eu", "a dot-separated token is empty"),
        (".orders", "a dot-separated token is empty"),
        ("orders.", "a dot-separated token is empty"),
        ("orders eu", "the name contains whitespace or a control character"),
        ("orders\teu", "the name contains whitespace or a control character"),
        ("orders\u{7}", "the name contains whitespace or a control character"),
        ("orders.*", "the name contains a wildcard character (`*` or `>`)"),
        ("orders.>", "the name contains a wildcard character (`*` or `>`)"),
    ] {
        let err = bus.topic_named::<u8>(name).unwrap_err();
        assert_eq!(
            err,
            TopicError::InvalidName {
                name: name.into(),
                reason
            },
            "{name:?}"
        );
    }
    let long = "a".repeat(256);
    assert!(matches!(
        bus.topic_named::<u8>(&long),
        Err(TopicError::InvalidName { .. })
    ));
    assert!(bus.topic_named::<u8>(&"a".repeat(255)).is_ok());
    assert!(
        bus.topic_named::<u8>("orders.eu-west_1.créé").is_ok(),
        "any other character is fine"
    );
}

proptest! {
    #[test]
    fn topic_names_never_panic_and_follow_the_rules(name in "\\PC{0,12}|[a-z.*> \t]{0,12}") {
        let bus = Bus::builder().inline().build().unwrap();
        let valid = !name.is_empty()
            && !name.split('.').any(str::is_empty)
            && !name.chars().any(|c| c.is_whitespace() || c.is_control() || c == '*' || c == '>');
        match bus.topic_named::<u8>(&name) {
            Ok(topic) => {
                prop_assert!(valid, "accepted {:?}", name);
                prop_assert_eq!(topic.name(), name.as_str());
                prop_assert!(topic.publish(1).is_ok());
            }
            Err(TopicError::InvalidName { .. }) => prop_assert!(!valid, "refused {:?}", name),
            Err(other) => prop_assert!(false, "unexpected {:?}", other),
        }
    }
}

#[test]
fn zero_capacities_and_zero_workers_are_refused() {
    assert!(matches!(
        Bus::builder().workers(0).build(),
        Err(BuildError::ZeroWorkers)
    ));
    assert!(matches!(
        Bus::builder().capacity(0).build(),
        Err(BuildError::ZeroCapacity)
    ));
    let bus = Bus::new();
    assert!(matches!(
        bus.subscriber::<u8>().capacity(0).receiver(),
        Err(SubscribeError::ZeroCapacity)
    ));
    assert!(matches!(
        bus.subscriber::<u8>().capacity(0).subscribe(|_: &Envelope<u8>| {}),
        Err(SubscribeError::ZeroCapacity)
    ));
    assert_eq!(
        BuildError::ZeroWorkers.to_string(),
        "the worker pool needs at least 1 thread"
    );
}

#[test]
fn unsubscribing_through_every_path_is_idempotent() {
    // `unsubscribe` consumes the guard, so "twice" means the guard, a receiver drop and
    // a shutdown all reaching the same subscriber.
    let bus = Bus::new();
    let sub = bus.subscribe(|_: &Envelope<u8>| {}).unwrap();
    let rx = bus.receiver::<u8>().unwrap();
    bus.publish(1_u8).unwrap();
    bus.wait_idle(FIVE_SECONDS).unwrap();
    let report = bus.shutdown(FIVE_SECONDS).unwrap();
    assert_eq!(report.delivered(), 1);
    let stats = sub.unsubscribe();
    assert_eq!(
        (stats.delivered, stats.dropped.total()),
        (1, 0),
        "nothing counted twice"
    );
    assert_eq!(*rx.recv().unwrap(), 1);
    drop(rx);
}

#[test]
fn a_handler_that_subscribes_and_unsubscribes_in_every_call_does_not_deadlock() {
    with_deadline(Duration::from_secs(60), || {
        let bus = Bus::builder().workers(2).build().unwrap();
        let weak = bus.downgrade();
        let churned = Arc::new(AtomicU64::new(0));
        let c = churned.clone();
        let sub = bus
            .subscribe(move |env: &Envelope<u32>| {
                let bus = weak.upgrade().unwrap();
                // Another type: an event of this one would feed this handler forever.
                let inner = bus.subscribe(|_: &Envelope<u64>| {}).unwrap();
                let _ = bus.try_publish(u64::from(**env)); // seen by `inner` (or refused)
                let stats: crier::SubscriberStats = inner.unsubscribe();
                assert!(stats.is_balanced());
                c.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        let b = bus.clone();
        on_threads(2, move |_| {
            for n in 0..500_u32 {
                b.publish(n).unwrap();
            }
        });
        bus.wait_idle(Duration::from_secs(30)).unwrap();
        let stats = sub.stats();
        assert!(stats.is_balanced());
        assert_eq!(churned.load(Ordering::SeqCst), stats.delivered);
        assert!(stats.delivered >= 1_000);
    });
}

#[test]
fn a_handler_that_keeps_its_own_subscription_in_a_cycle_is_freed_by_shutdown() {
    // The handler owns its own guard and a Bus clone: a reference cycle. Shutdown
    // drops every handler, which breaks it.
    let bus = Bus::new();
    let marker = Arc::new(());
    let own: Arc<Mutex<Option<Subscription>>> = Arc::default();
    let (m, keep, clone) = (marker.clone(), own.clone(), bus.clone());
    let sub = bus
        .subscribe(move |_: &Envelope<u8>| {
            let _ = (&m, &keep, &clone);
        })
        .unwrap();
    *own.lock().unwrap() = Some(sub);
    assert_eq!(Arc::strong_count(&marker), 2);
    bus.shutdown(FIVE_SECONDS).unwrap();
    assert_eq!(Arc::strong_count(&marker), 1, "the handler and its captures are gone");
}

#[test]
fn the_bus_and_its_handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Bus>();
    check::<crier::WeakBus>();
    check::<crier::Topic<String>>();
    check::<Subscription>();
    check::<crier::Receiver<String>>();
    check::<Envelope<String>>();
}

#[test]
fn publish_times_are_exact_to_the_nanosecond_and_clamped_past_2262() {
    use crier::testing::ManualClock;
    use crier::{Clock, DedupWindow};
    use std::time::SystemTime;

    let epoch = SystemTime::UNIX_EPOCH;
    let clock = ManualClock::at(epoch + Duration::new(1_795_000_000, 123_456_789));
    let bus = Bus::builder().clock(clock.clone()).inline().build().unwrap();
    let rx = bus.receiver::<u32>().unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let handled = seen.clone();
    let _dedup = bus
        .subscriber::<u32>()
        .at_least_once(crier::Retry::ordered())
        .dedup(DedupWindow::new(10, Duration::from_secs(60)))
        .subscribe(move |_: &Envelope<u32>| {
            handled.fetch_add(1, Ordering::SeqCst);
            Ok::<(), std::convert::Infallible>(())
        })
        .unwrap();
    let year_2500 = epoch + Duration::from_secs(530 * 365 * 86_400);
    for (n, time) in [
        clock.now(),
        epoch - Duration::new(86_400, 1),
        year_2500,
        year_2500 + Duration::from_secs(3_600),
    ]
    .into_iter()
    .enumerate()
    {
        clock.set(time);
        bus.message(n as u32).idempotency_key("same").publish().unwrap();
        let expected = time.min(epoch + Duration::from_nanos(i64::MAX as u64));
        assert_eq!(rx.recv().unwrap().published_at(), expected, "event {n}");
    }
    // The window still counts ages at both ends: 1969 is before the key's stamp
    // (skipped, as published earlier than the event remembered), 2500 long after it
    // (handled again), and the two times past 2262 are one instant (skipped).
    assert_eq!(seen.load(Ordering::SeqCst), 2);
}
