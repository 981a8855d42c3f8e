//! The `tracing` feature: a `crier.delivery` span around each handler invocation with
//! the delivery's fields, and an event per failure, retry, dead letter and drop.
#![cfg(feature = "tracing")]

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use crier::{Backoff, Bus, Envelope, Overflow, Retry};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// What the collector saw: each span's name and fields, and each event's level,
/// fields (the message included) and the span it happened in.
#[derive(Default)]
struct Seen {
    spans: Vec<(String, Fields)>,
    events: Vec<(tracing::Level, Fields, Option<usize>)>,
    /// Entered spans, innermost last (by index into `spans`).
    stack: Vec<usize>,
}

type Fields = BTreeMap<String, String>;

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Seen>>);

struct Visitor<'a>(&'a mut Fields);

impl Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl Subscriber for Collector {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, span: &Attributes<'_>) -> Id {
        let mut fields = Fields::new();
        span.record(&mut Visitor(&mut fields));
        let mut seen = self.0.lock().unwrap();
        seen.spans.push((span.metadata().name().to_owned(), fields));
        Id::from_u64(seen.spans.len() as u64)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields::new();
        event.record(&mut Visitor(&mut fields));
        let mut seen = self.0.lock().unwrap();
        let current = seen.stack.last().copied();
        seen.events.push((*event.metadata().level(), fields, current));
    }

    fn enter(&self, span: &Id) {
        self.0.lock().unwrap().stack.push(span.into_u64() as usize - 1);
    }

    fn exit(&self, _: &Id) {
        self.0.lock().unwrap().stack.pop();
    }
}

#[test]
fn each_invocation_runs_in_a_delivery_span_and_failures_are_events() {
    let collector = Collector::default();
    let seen = collector.0.clone();
    tracing::subscriber::with_default(collector, || {
        // Inline: every handler runs on this thread, under this collector.
        let bus = Bus::builder().inline().build().unwrap();
        let _fraud = bus
            .subscriber::<u32>()
            .name("fraud")
            .at_least_once(
                Retry::ordered()
                    .max_attempts(2)
                    .backoff(Backoff::fixed(std::time::Duration::ZERO)),
            )
            .subscribe(|order: &Envelope<u32>| {
                tracing::info!("checking order {}", **order);
                Err::<(), _>("card reported stolen")
            })
            .unwrap();
        let receipt = bus.publish(13_u32).unwrap();
        bus.wait_idle(std::time::Duration::from_secs(10)).unwrap();

        let seen = seen.lock().unwrap();
        let spans: Vec<&Fields> = seen
            .spans
            .iter()
            .filter(|(name, _)| name == "crier.delivery")
            .map(|(_, f)| f)
            .collect();
        assert_eq!(spans.len(), 2, "one span per attempt");
        let id = receipt.id.to_string();
        for (attempt, span) in spans.iter().enumerate() {
            assert_eq!(span["event"], id);
            assert_eq!(span["correlation"], id);
            assert_eq!(span["topic"], "u32");
            assert_eq!(span["subscriber"], "fraud");
            assert_eq!(span["attempt"], (attempt + 1).to_string());
        }
        // The handler's own event is inside the delivery span.
        let inside: Vec<_> = seen
            .events
            .iter()
            .filter(|(_, f, _)| f["message"] == "checking order 13")
            .collect();
        assert_eq!(inside.len(), 2);
        for (_, _, span) in inside {
            assert_eq!(seen.spans[span.expect("in a span")].0, "crier.delivery");
        }
        let crier_events: Vec<(tracing::Level, &str)> = seen
            .events
            .iter()
            .filter(|(_, f, _)| f.get("subscriber").is_some_and(|s| s == "fraud"))
            .map(|(level, f, _)| (*level, f["message"].as_str()))
            .collect();
        assert_eq!(
            crier_events,
            [
                (tracing::Level::WARN, "handler failed; retry scheduled"),
                (tracing::Level::ERROR, "dead-lettered"),
            ]
        );
        let dead = seen
            .events
            .iter()
            .find(|(_, f, _)| f["message"] == "dead-lettered")
            .unwrap();
        assert_eq!(dead.1["error"], "card reported stolen");
        assert_eq!(dead.1["event"], id);
    });
}

#[test]
fn a_drop_is_a_warning_with_its_reason() {
    let collector = Collector::default();
    let seen = collector.0.clone();
    tracing::subscriber::with_default(collector, || {
        let bus = Bus::new();
        let _full = bus
            .subscriber::<u32>()
            .name("full")
            .capacity(1)
            .overflow(Overflow::DropNewest)
            .receiver()
            .unwrap();
        bus.publish(1_u32).unwrap();
        let dropped = bus.publish(2_u32).unwrap();
        let seen = seen.lock().unwrap();
        let drops: Vec<&Fields> = seen
            .events
            .iter()
            .filter(|(level, f, _)| *level == tracing::Level::WARN && f["message"] == "event dropped")
            .map(|(_, f, _)| f)
            .collect();
        assert_eq!(drops.len(), 1);
        assert_eq!(drops[0]["reason"], "Newest");
        assert_eq!(drops[0]["subscriber"], "full");
        assert_eq!(drops[0]["event"], dropped.id.to_string());
    });
}
