//! "What happened to this event?", answered by the bus itself.
//!
//! An order flow on a bus that keeps delivery traces: a payment handler publishes
//! `Paid`, a shipping handler publishes `Shipped`, and a fraud check fails order 13 on
//! every attempt, so it is retried and then dead-lettered. `Bus::explain` prints what
//! happened to order 13 as a tree, and `Bus::topology` draws the wiring as Mermaid.
//!
//! ```sh
//! cargo run --example explain
//! ```

use std::time::Duration;

use crier::{Backoff, Bus, DeadLetter, Envelope, Retry};

#[derive(Debug)]
struct Paid(u32);

#[derive(Debug)]
struct Shipped(u32);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Inline: handlers run on the publishing thread, so the tree prints in one order.
    let bus = Bus::builder().inline().trace(10_000).build()?;

    let payer = bus.clone();
    let _payment = bus
        .subscriber::<u32>()
        .name("payment")
        .subscribe(move |order: &Envelope<u32>| payer.publish(Paid(**order)).map(|_| ()))?;
    let shipper = bus.clone();
    let _shipping = bus
        .subscriber::<Paid>()
        .name("shipping")
        .subscribe(move |paid: &Envelope<Paid>| shipper.publish(Shipped(paid.0)).map(|_| ()))?;
    let _fraud = bus
        .subscriber::<u32>()
        .name("fraud-check")
        .at_least_once(Retry::ordered().max_attempts(3).backoff(Backoff::exponential(
            Duration::from_millis(5),
            Duration::from_millis(50),
        )))
        .subscribe(|order: &Envelope<u32>| match **order {
            13 => Err("card reported stolen"),
            _ => Ok(()),
        })?;
    let _alerts =
        bus.subscriber::<DeadLetter<u32>>()
            .name("alerts")
            .subscribe(|letter: &Envelope<DeadLetter<u32>>| {
                println!(
                    "alert: order {} dead-lettered by {} after {} attempts: {}",
                    **letter.envelope(),
                    letter.subscriber(),
                    letter.attempts(),
                    letter.error()
                );
            })?;
    let audit = bus.subscriber::<Shipped>().name("audit").receiver()?;

    bus.publish(12_u32)?;
    let suspicious = bus.publish(13_u32)?;
    // The retries run on the bus's timer: wait until they are done.
    bus.wait_idle(Duration::from_secs(5))?;
    let shipped: Vec<u32> = audit.try_iter().map(|shipped| shipped.0).collect();
    println!("audit saw shipments of orders {shipped:?}");

    println!("\n# What happened to order 13\n");
    println!("{}", bus.explain(suspicious.id)?);

    println!("# The topology, as Mermaid\n");
    println!("{}", bus.topology().to_mermaid());
    Ok(())
}
