//! At-least-once payments: a flaky payment gateway is retried with exponential backoff,
//! a card that is always declined is dead-lettered after its last attempt and shown by
//! a dead-letter handler, a client that publishes the same charge twice is told the
//! second one is a duplicate (by its idempotency key) and is charged once, and the stats
//! account for every charge. A receipt mailer on a thread of its own pulls each
//! successful charge from an ack receiver: a receipt the mail server refuses is nacked
//! and comes back after a backoff, and is acked once it is sent.
//!
//! Run with `cargo run --example payments`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crier::{AckError, Backoff, Bus, DeadLetter, DedupWindow, Envelope, Retry};

#[derive(Debug)]
struct ChargeRequested {
    order: u32,
    cents: u64,
    card: &'static str,
}

#[derive(Debug)]
struct ChargeSucceeded {
    order: u32,
    cents: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::builder().workers(2).build()?;

    // Clients retry on timeouts, so the topic drops a charge it already accepted with
    // the same idempotency key in the last two minutes (like NATS's `Nats-Msg-Id`).
    let charges = bus.topic::<ChargeRequested>();
    charges.set_dedup_window(DedupWindow::new(100_000, Duration::from_secs(120)))?;

    // The gateway times out on the first two tries of each order; card 0000 is always
    // declined.
    let tries: Arc<Mutex<HashMap<u32, u32>>> = Arc::default();
    let ledger: Arc<Mutex<Vec<(u32, u64)>>> = Arc::default();
    let (gateway_tries, charged) = (tries.clone(), ledger.clone());
    let events = bus.downgrade();
    let payments = charges
        .subscriber()
        .name("payments")
        .at_least_once(
            Retry::ordered()
                .max_attempts(4)
                .backoff(Backoff::exponential(Duration::from_millis(10), Duration::from_millis(80)).jitter(20)),
        )
        // Skip a charge whose key already succeeded here, however it got republished.
        .dedup(DedupWindow::new(100_000, Duration::from_secs(3600)))
        .subscribe(move |env: &Envelope<ChargeRequested>| -> Result<(), String> {
            let mut tries = gateway_tries.lock().unwrap();
            let n = tries.entry(env.order).or_insert(0);
            *n += 1;
            if env.card == "0000" {
                println!(
                    "payments    order {} attempt {}: card declined",
                    env.order,
                    env.attempt()
                );
                return Err(format!("card {} declined", env.card));
            }
            if *n <= 2 {
                println!(
                    "payments    order {} attempt {}: gateway timeout",
                    env.order,
                    env.attempt()
                );
                return Err("gateway timeout".into());
            }
            println!(
                "payments    order {} attempt {}: charged {} cents",
                env.order,
                env.attempt(),
                env.cents
            );
            charged.lock().unwrap().push((env.order, env.cents));
            if let Some(bus) = events.upgrade() {
                bus.publish(ChargeSucceeded {
                    order: env.order,
                    cents: env.cents,
                })
                .map_err(|e| e.to_string())?;
            }
            Ok(())
        })?;

    // The receipt mailer pulls successful charges and acks each receipt it sent; a
    // nacked one comes back after the backoff, as its next attempt. At most 4 are out.
    let receipts = bus
        .subscriber::<ChargeSucceeded>()
        .name("receipt mailer")
        .at_least_once(
            Retry::unordered()
                .max_attempts(3)
                .backoff(Backoff::fixed(Duration::from_millis(20))),
        )
        .max_unacked(4)
        .ack_receiver()?;
    let mailer = std::thread::spawn(move || -> Result<_, AckError> {
        let mut sent = Vec::new();
        for receipt in receipts.iter() {
            if receipt.order == 1 && receipt.attempt() == 1 {
                println!("mailer      order 1 attempt 1: mail server busy, nacked");
                receipt.nack_with("mail server busy")?;
                continue;
            }
            println!(
                "mailer      order {} attempt {}: receipt for {} cents sent, acked",
                receipt.order,
                receipt.attempt(),
                receipt.cents
            );
            sent.push(receipt.order);
            receipt.ack();
            if sent.len() == 2 {
                break;
            }
        }
        Ok((sent, receipts))
    });

    // A charge that ran out of attempts arrives here as a dead letter.
    let _dead_letters = bus
        .subscriber::<DeadLetter<ChargeRequested>>()
        .name("dead letters")
        .subscribe(|env: &Envelope<DeadLetter<ChargeRequested>>| {
            let letter = &**env;
            println!(
                "dead letter order {} gave up after {} attempts in `{}`: {}",
                letter.envelope().order,
                letter.attempts(),
                letter.subscriber(),
                letter.error()
            );
        })?;

    for (order, cents, card) in [(1, 1_250, "4242"), (2, 990, "0000"), (3, 4_000, "5555")] {
        let receipt = charges
            .message(ChargeRequested { order, cents, card })
            .idempotency_key(format!("charge-{order}"))
            .publish()?;
        println!("client      order {order} accepted as seq {}", receipt.seq);
    }
    // The client timed out waiting for order 3's confirmation and sends it again.
    let again = charges
        .message(ChargeRequested {
            order: 3,
            cents: 4_000,
            card: "5555",
        })
        .idempotency_key("charge-3")
        .publish()?;
    println!(
        "client      order 3 sent again: duplicate = {}, same as seq {}",
        again.duplicate, again.seq
    );

    // With the system clock, `wait_idle` waits for the retries' backoff too.
    bus.wait_idle(Duration::from_secs(10))?;

    let mut charged = ledger.lock().unwrap().clone();
    charged.sort_unstable();
    println!("\nledger: {charged:?}");
    assert_eq!(charged, [(1, 1_250), (3, 4_000)], "each good order charged once");
    let stats = payments.stats();
    assert_eq!((stats.delivered, stats.dead_lettered, stats.retried), (2, 1, 7));
    assert!(stats.is_balanced());

    // `wait_idle` does not wait for a receiver's caller: the mailer is joined instead.
    let (mut sent, receipts) = mailer.join().expect("the mailer thread panicked")?;
    sent.sort_unstable();
    assert_eq!(sent, [1, 3], "a receipt for each charge");
    let stats = receipts.stats();
    assert_eq!((stats.delivered, stats.retried, stats.unacked), (2, 1, 0));
    assert!(stats.is_balanced());

    println!("\n{}", bus.stats());
    let report = bus.shutdown(Duration::from_secs(5))?;
    println!(
        "\nshutdown: drained = {}, dead-lettered = {}",
        report.drained,
        report.dead_lettered()
    );
    Ok(())
}
