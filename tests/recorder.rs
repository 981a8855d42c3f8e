//! `testing::Recorder`: it never misses an event, its waits end on the events or on the
//! bus's end, and each assertion passes when it should and fails with a message that
//! says what was expected and what was seen.

mod common;

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::{on_threads, panic_message, with_deadline};
use crier::testing::Recorder;
use crier::{Bus, Envelope, RecordError};

const WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq)]
struct Shipped(u32);

/// A bus whose pool subscriber ships every even order (a flow for the recorder to
/// watch, with handlers that run after `publish` returns).
fn warehouse() -> (Bus, crier::Subscription) {
    let bus = Bus::new();
    let shipper = bus.clone();
    let warehouse = bus
        .subscriber::<u32>()
        .name("warehouse")
        .subscribe(move |order: &Envelope<u32>| {
            if **order % 2 == 0 {
                shipper.publish(Shipped(**order)).unwrap();
            }
        })
        .unwrap();
    (bus, warehouse)
}

#[test]
fn it_records_every_event_of_concurrent_publishers_each_in_order() {
    with_deadline(Duration::from_secs(60), || {
        let bus = Bus::new();
        let recorder = Recorder::<(usize, u32)>::new(&bus).unwrap();
        let publisher = bus.clone();
        on_threads(4, move |p| {
            for n in 0..1_000_u32 {
                publisher.publish((p, n)).unwrap();
            }
        });
        let events = recorder.wait_for(4_000, WAIT).unwrap();
        assert_eq!(events.len(), 4_000);
        for p in 0..4 {
            let mine: Vec<u32> = events.iter().filter(|e| e.0 == p).map(|e| e.1).collect();
            assert_eq!(mine, (0..1_000).collect::<Vec<_>>(), "publisher {p}");
        }
        recorder.assert_count(4_000);
    });
}

#[test]
fn the_assertions_wait_for_the_flow_to_finish_and_pass_when_they_should() {
    let (bus, _warehouse) = warehouse();
    let shipped = Recorder::<Shipped>::new(&bus).unwrap();
    let refunds = Recorder::<String>::new(&bus).unwrap();
    for order in 1_u32..=4 {
        bus.publish(order).unwrap();
    }
    // No wait_idle here: each assertion waits until every handler has run.
    shipped.assert_events(&[Shipped(2), Shipped(4)]);
    shipped.assert_count(2);
    let four = shipped.assert_any(|e| e.0 == 4);
    assert_eq!(*four, Shipped(4));
    refunds.assert_none();
    assert_eq!(shipped.len(), 2);
    shipped.clear();
    assert!(shipped.is_empty());
    shipped.assert_none();
}

#[test]
fn each_assertion_fails_with_what_was_expected_and_what_was_seen() {
    let (bus, _warehouse) = warehouse();
    let shipped = Recorder::<Shipped>::new(&bus).unwrap();
    bus.publish(2_u32).unwrap();

    let message = panic_message(|| shipped.assert_count(2));
    assert!(
        message.starts_with("expected 2 recorder::Shipped events, recorded 1:"),
        "{message}"
    );
    assert!(
        message.contains("#0 seq 0 on recorder::Shipped: Shipped(2)"),
        "{message}"
    );

    let message = panic_message(|| shipped.assert_none());
    assert!(
        message.starts_with("expected 0 recorder::Shipped events, recorded 1:"),
        "{message}"
    );

    let message = panic_message(|| shipped.assert_events(&[Shipped(2), Shipped(4)]));
    assert!(
        message.contains("expected these 2 recorder::Shipped events"),
        "{message}"
    );
    assert!(message.contains("Shipped(\n        4,\n    )"), "{message}");
    assert!(message.contains("recorded 1 (the first difference at #1)"), "{message}");
    let message = panic_message(|| shipped.assert_events(&[Shipped(3)]));
    assert!(message.contains("the first difference at #0"), "{message}");

    let message = panic_message(|| {
        shipped.assert_any(|e| e.0 > 2);
    });
    assert!(
        message.starts_with("expected a recorder::Shipped event matching the predicate, none of 1 did:"),
        "{message}"
    );
    assert!(message.contains("Shipped(2)"), "{message}");

    let nothing = Recorder::<String>::new(&bus).unwrap();
    let message = panic_message(|| nothing.assert_count(1));
    assert_eq!(message, "expected 1 alloc::string::String events, recorded 0: none");
}

#[test]
fn an_assertion_on_a_bus_that_never_becomes_idle_says_what_is_in_flight() {
    with_deadline(Duration::from_secs(60), || {
        let bus = Bus::new();
        let (release, gate) = mpsc::channel::<()>();
        let gate = Mutex::new(gate);
        let _stuck = bus
            .subscriber::<u32>()
            .name("stuck")
            .subscribe(move |_: &Envelope<u32>| {
                let _ = gate.lock().unwrap().recv();
            })
            .unwrap();
        let recorder = Recorder::<u32>::new(&bus)
            .unwrap()
            .idle_timeout(Duration::from_millis(100));
        bus.publish(1_u32).unwrap();
        bus.publish(2_u32).unwrap();
        let message = panic_message(|| recorder.assert_count(2));
        assert!(
            message.starts_with("the bus did not become idle within 100ms: 2 deliveries still queued or running"),
            "{message}"
        );
        assert!(message.contains("busy: stuck (1 queued, 0 retrying)"), "{message}");
        drop(release);
        recorder.assert_count(2);
    });
}

#[test]
fn a_wait_ends_with_an_error_at_the_timeout_or_when_the_bus_shuts_down() {
    with_deadline(Duration::from_secs(60), || {
        let bus = Bus::new();
        let recorder = Arc::new(Recorder::<u32>::new(&bus).unwrap());
        assert_eq!(
            recorder.wait_for(1, Duration::from_millis(20)).unwrap_err(),
            (RecordError::Timeout {
                seen: 0,
                timeout: Duration::from_millis(20)
            })
        );
        let waiter = {
            let recorder = recorder.clone();
            std::thread::spawn(move || recorder.wait_for(5, Duration::from_secs(3_600)).map(|e| e.len()))
        };
        bus.publish(1_u32).unwrap();
        bus.publish(2_u32).unwrap();
        bus.shutdown(WAIT).unwrap();
        // Not an hour: the shutdown ends the wait.
        assert_eq!(waiter.join().unwrap(), Err(RecordError::Ended { seen: 2 }));
        assert_eq!(recorder.events().len(), 2, "what was recorded stays readable");
        assert!(
            Recorder::<u32>::new(&bus).is_err(),
            "a closed bus refuses a new recorder"
        );
    });
}

#[test]
fn a_recorder_can_watch_a_named_topic_or_a_pattern_and_be_stopped() {
    let bus = Bus::new();
    let audit = Recorder::with(bus.subscriber::<u32>().pattern("orders.>")).unwrap();
    let mut eu = Recorder::with(bus.topic_named::<u32>("orders.eu").unwrap().subscriber()).unwrap();
    bus.topic_named::<u32>("orders.eu").unwrap().publish(1).unwrap();
    bus.topic_named::<u32>("orders.us").unwrap().publish(2).unwrap();
    bus.publish(3_u32).unwrap();
    audit.assert_events(&[1, 2]);
    eu.assert_events(&[1]);
    eu.stop();
    bus.topic_named::<u32>("orders.eu").unwrap().publish(4).unwrap();
    eu.assert_events(&[1]);
    assert_eq!(eu.wait_for(2, WAIT).unwrap_err(), RecordError::Ended { seen: 1 });
    audit.assert_events(&[1, 2, 4]);
}
