//! An order flow: `OrderPlaced` fans out to inventory, email and analytics; payment
//! publishes `PaymentProcessed` from its handler (the causation is visible downstream);
//! a slow recommendations service has a small mailbox that drops its oldest events;
//! a fraud check panics on one order without stopping anyone else; then a graceful
//! shutdown prints its report.
//!
//! Run with `cargo run --example ecommerce`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crier::{Bus, Dispatch, Envelope, Overflow};

#[derive(Debug)]
struct OrderPlaced {
    order: u32,
    sku: &'static str,
    cents: u64,
}

#[derive(Debug)]
struct PaymentProcessed {
    order: u32,
    cents: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::builder().workers(2).build()?;

    let _inventory = bus
        .subscriber::<OrderPlaced>()
        .name("inventory")
        .subscribe(|env: &Envelope<OrderPlaced>| {
            println!("inventory        reserve {} for order {}", env.sku, env.order);
        })?;

    // Email blocks on I/O in real life, so it gets a thread of its own.
    let _email = bus
        .subscriber::<OrderPlaced>()
        .name("email")
        .dispatch(Dispatch::Thread)
        .subscribe(|env: &Envelope<OrderPlaced>| {
            println!("email            confirmation for order {}", env.order);
        })?;

    let revenue = Arc::new(AtomicU64::new(0));
    let total = revenue.clone();
    let _analytics =
        bus.subscriber::<OrderPlaced>()
            .name("analytics")
            .subscribe(move |env: &Envelope<OrderPlaced>| {
                total.fetch_add(env.cents, Ordering::Relaxed);
            })?;

    // Payment publishes from inside its handler: the new event's causation id is the
    // order's event id, and it shares the order's correlation id.
    let weak = bus.downgrade();
    let _payment = bus
        .subscriber::<OrderPlaced>()
        .name("payment")
        .subscribe(move |env: &Envelope<OrderPlaced>| {
            let Some(bus) = weak.upgrade() else { return Ok(()) };
            bus.publish(PaymentProcessed {
                order: env.order,
                cents: env.cents,
            })
            .map(drop)
            .map_err(|e| format!("could not publish the payment: {e}"))
        })?;

    let _shipping =
        bus.subscriber::<PaymentProcessed>()
            .name("shipping")
            .subscribe(|env: &Envelope<PaymentProcessed>| {
                println!(
                    "shipping         ship order {} (paid {} cents), caused by event {}",
                    env.order,
                    env.cents,
                    env.causation_id().map_or_else(|| "-".to_owned(), |id| id.to_string())
                );
            })?;

    // A slow subscriber with a bounded mailbox: it keeps the newest 2 orders and
    // counts what it had to drop. Other subscribers are not slowed down.
    let _recommendations = bus
        .subscriber::<OrderPlaced>()
        .name("recommendations")
        .capacity(2)
        .overflow(Overflow::DropOldest)
        .dispatch(Dispatch::Thread)
        .subscribe(|env: &Envelope<OrderPlaced>| {
            std::thread::sleep(Duration::from_millis(20)); // an expensive model, simulated
            println!("recommendations  updated after order {}", env.order);
        })?;

    // A handler with a bug: it panics on one order. The panic is contained and counted.
    let _fraud = bus
        .subscriber::<OrderPlaced>()
        .name("fraud-check")
        .on_error(|e| println!("fraud-check      FAILED: {e}"))
        .subscribe(|env: &Envelope<OrderPlaced>| {
            assert!(env.order != 3, "order 3 has no billing address");
        })?;

    let orders = [
        (1, "book", 1_999),
        (2, "lamp", 4_500),
        (3, "desk", 19_900),
        (4, "pen", 250),
        (5, "mug", 900),
    ];
    for (order, sku, cents) in orders {
        bus.publish(OrderPlaced { order, sku, cents })?;
    }

    let report = bus.shutdown(Duration::from_secs(10))?;
    println!("\nrevenue: {} cents\n", revenue.load(Ordering::Relaxed));
    println!("{}\n", report.stats);
    println!("shutdown: {report}");
    Ok(())
}
