//! An audit log and analytics, without touching the services that publish:
//!
//! - the audit subscriber listens to `orders.>`, so it hears every order topic,
//!   including `orders.us.refunded`, which is made after it subscribed;
//! - analytics observe every event on the bus, whatever its type, and count them by
//!   type;
//! - a forgotten subscription shows up as an `Unrouted` notice instead of vanishing.
//!
//! `cargo run --example audit`

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crier::{AnyEnvelope, Bus, Envelope, Overflow, Unrouted};

#[derive(Debug)]
struct Order {
    id: u32,
    cents: u64,
}

#[derive(Debug)]
struct EmailSent {
    to: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::new();

    // Audit: every order event, on any order topic, one line each.
    let audit = Arc::new(Mutex::new(Vec::new()));
    let lines = audit.clone();
    let _audit =
        bus.subscriber::<Order>()
            .name("audit")
            .pattern("orders.>")
            .subscribe(move |env: &Envelope<Order>| {
                let line = format!(
                    "#{} {:<20} order {} ({} cents)",
                    env.seq(),
                    env.topic(),
                    env.id,
                    env.cents
                );
                lines.lock().unwrap().push(line);
            })?;

    // Analytics: counts by event type across the whole bus. It must never slow a
    // publisher, so it drops (and counts) rather than blocks when it falls behind.
    let counts = Arc::new(Mutex::new(BTreeMap::new()));
    let tally = counts.clone();
    let analytics = bus
        .observer()
        .name("analytics")
        .overflow(Overflow::DropNewest)
        .subscribe(move |env: &Envelope<AnyEnvelope>| {
            *tally.lock().unwrap().entry(env.event().type_name()).or_insert(0_u64) += 1;
        })?;

    // Events nobody subscribed to.
    let unrouted = bus.subscriber::<Unrouted>().name("unrouted").receiver()?;

    let eu_created = bus.topic_named::<Order>("orders.eu.created")?;
    let eu_paid = bus.topic_named::<Order>("orders.eu.paid")?;
    eu_created.publish(Order { id: 1, cents: 2_500 })?;
    eu_paid.publish(Order { id: 1, cents: 2_500 })?;
    eu_created.publish(Order { id: 2, cents: 900 })?;
    // A topic made after the audit subscribed: the pattern picks it up.
    bus.topic_named::<Order>("orders.us.refunded")?
        .publish(Order { id: 3, cents: 4_000 })?;
    // Nobody subscribed to emails yet.
    bus.publish(EmailSent {
        to: "ada@example.com".into(),
    })?;

    bus.wait_idle(Duration::from_secs(5))?;

    println!("audit log:");
    for line in audit.lock().unwrap().iter() {
        println!("  {line}");
    }
    println!("events by type (analytics):");
    for (kind, n) in counts.lock().unwrap().iter() {
        println!("  {n:>3}  {kind}");
    }
    for notice in unrouted.try_iter() {
        let lost = notice.event();
        let email = lost.downcast_ref::<EmailSent>().map(|e| e.to.as_str());
        println!("unrouted: {} on `{}` (to {:?})", lost.type_name(), lost.topic(), email);
    }
    println!(
        "analytics: {} observed, {} dropped",
        analytics.stats().delivered,
        analytics.stats().dropped.total()
    );

    assert_eq!(audit.lock().unwrap().len(), 4);
    bus.shutdown(Duration::from_secs(5))?;
    Ok(())
}
