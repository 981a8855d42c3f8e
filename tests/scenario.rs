//! `testing::Scenario`: the flow follows causation (and only it), each step passes
//! when it should and fails with a message saying what was expected and what happened.

mod common;

use std::time::Duration;

use common::panic_message;
use crier::testing::Scenario;
use crier::{Backoff, Bus, Envelope, Retry, Subscription};

#[derive(Debug, PartialEq)]
struct Paid(u32);

#[derive(Debug, PartialEq)]
struct Shipped(u32);

#[derive(Debug, PartialEq)]
struct Flagged(u32);

/// Orders (`u32`) are paid, then shipped; order 13 fails the fraud check, at least
/// once with two attempts, so it is dead-lettered.
fn shop() -> (Bus, Vec<Subscription>) {
    let bus = Bus::new();
    let (payer, shipper) = (bus.clone(), bus.clone());
    let payment = bus
        .subscriber::<u32>()
        .name("payment")
        .subscribe(move |order: &Envelope<u32>| {
            payer.publish(Paid(**order)).unwrap();
        })
        .unwrap();
    let shipping = bus
        .subscriber::<Paid>()
        .name("shipping")
        .subscribe(move |paid: &Envelope<Paid>| {
            shipper.publish(Shipped(paid.0)).unwrap();
        })
        .unwrap();
    let fraud = bus
        .subscriber::<u32>()
        .name("fraud")
        .at_least_once(
            Retry::ordered()
                .max_attempts(2)
                .backoff(Backoff::fixed(Duration::from_millis(1))),
        )
        .subscribe(|order: &Envelope<u32>| -> Result<(), String> {
            match **order {
                13 => Err("card reported stolen".into()),
                _ => Ok(()),
            }
        })
        .unwrap();
    (bus, vec![payment, shipping, fraud])
}

#[test]
fn a_flow_is_its_first_event_and_everything_it_caused() {
    let (bus, _shop) = shop();
    let scenario = Scenario::new(&bus)
        .unwrap()
        .given(6_u32)
        .when(7_u32)
        // Paid(6) and Shipped(6) came from the given order: not in the flow.
        .then_events(&[Paid(7)])
        .then_events(&[Shipped(7)])
        .then_events(&[7_u32])
        .then_none::<Flagged>()
        .then_succeeded("payment")
        .then_succeeded("shipping")
        .then_succeeded("fraud");
    let types: Vec<&str> = scenario.flow().iter().map(|e| e.type_name()).collect();
    assert_eq!(types.len(), 3, "{types:?}");
    assert_eq!(types[0], "u32", "the when event first");
    // An event published meanwhile by someone else is not in the flow either.
    bus.publish(Flagged(1)).unwrap();
    scenario.then_none::<Flagged>();
}

#[test]
fn a_dead_letter_in_the_flow_is_seen_after_its_retries() {
    let (bus, _shop) = shop();
    Scenario::new(&bus)
        .unwrap()
        .when(13_u32)
        .then_dead_lettered("fraud")
        .then_succeeded("payment")
        .then_events(&[Shipped(13)]);
}

#[test]
fn each_step_fails_with_what_was_expected_and_what_happened() {
    let (bus, _shop) = shop();
    let message = panic_message(|| {
        Scenario::new(&bus).unwrap().flow();
    });
    assert_eq!(message, "the scenario has no flow yet: call when(event) first");

    let scenario = || Scenario::new(&bus).unwrap().when(13_u32);
    let message = panic_message(|| {
        scenario().then_events(&[Paid(14)]);
    });
    assert!(
        message.starts_with("expected the flow to publish these 1 scenario::Paid events:"),
        "{message}"
    );
    assert!(
        message.contains("it published 1; the whole flow:\n  #0 u32 on u32"),
        "{message}"
    );
    assert!(
        message.contains("scenario::Shipped on scenario::Shipped, caused by"),
        "{message}"
    );

    let message = panic_message(|| {
        scenario().then_none::<Shipped>();
    });
    assert!(
        message.contains("expected the flow to publish these 0 scenario::Shipped events"),
        "{message}"
    );

    let message = panic_message(|| {
        scenario().then_succeeded("fraud");
    });
    assert_eq!(
        message,
        "expected `fraud` to succeed in the flow; its counters moved by: delivered +0, failed +0, dead-lettered +1, retried +1 (`fraud`)"
    );
    let message = panic_message(|| {
        scenario().then_dead_lettered("payment");
    });
    assert!(
        message
            .starts_with("expected `payment` to dead-letter an event of the flow; its counters moved by: delivered +1"),
        "{message}"
    );
    let message = panic_message(|| {
        scenario().then_succeeded("billing");
    });
    assert!(
        message.starts_with("no single subscriber is named `billing`"),
        "{message}"
    );
    assert!(message.contains("\"payment\""), "{message}");
}
