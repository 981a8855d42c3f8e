//! The README's main example: a few subscribers, a few events, then the stats.
//!
//! Run with `cargo run --example quickstart`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crier::{Bus, Envelope, Overflow};

#[derive(Debug)]
struct UserSignedUp {
    name: String,
}

#[derive(Debug)]
struct WelcomeMailSent {
    to: String,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::new();

    // A handler that publishes: the new event's causation is the handled event.
    let weak = bus.downgrade();
    let _mailer = bus
        .subscriber::<UserSignedUp>()
        .name("mailer")
        .subscribe(move |env: &Envelope<UserSignedUp>| {
            println!("[mailer]    welcome mail to {} (event seq {})", env.name, env.seq());
            if let Some(bus) = weak.upgrade() {
                let _ = bus.publish(WelcomeMailSent { to: env.name.clone() });
            }
        })?;

    // A counter on the same event.
    let signups = Arc::new(AtomicU64::new(0));
    let counter = signups.clone();
    let _metrics = bus
        .subscriber::<UserSignedUp>()
        .name("metrics")
        .subscribe(move |_: &Envelope<UserSignedUp>| {
            counter.fetch_add(1, Ordering::Relaxed);
        })?;

    // A handler that fails on one input: contained, counted, reported to its hook.
    let _audit = bus
        .subscriber::<UserSignedUp>()
        .name("audit")
        .on_error(|e| println!("[audit]     failed: {e}"))
        .subscribe(|env: &Envelope<UserSignedUp>| -> Result<(), String> {
            if env.name.is_empty() {
                return Err("empty user name".into());
            }
            Ok(())
        })?;

    // A pull receiver with a tiny mailbox that keeps only the newest events.
    let sent = bus
        .subscriber::<WelcomeMailSent>()
        .name("mail-log")
        .capacity(2)
        .overflow(Overflow::DropOldest)
        .receiver()?;

    for name in ["ada", "grace", "", "edsger"] {
        bus.publish(UserSignedUp { name: name.to_owned() })?;
    }
    bus.wait_idle(Duration::from_secs(5))?;

    println!("[metrics]   {} sign-ups", signups.load(Ordering::Relaxed));
    for env in sent.try_iter() {
        println!(
            "[mail-log]  sent to {:?}, caused by event {}",
            env.to,
            env.causation_id().map_or("-".into(), |id| id.to_string())
        );
    }
    println!("\n{}\n", bus.stats());
    let report = bus.shutdown(Duration::from_secs(5))?;
    println!("shutdown: {report}");
    Ok(())
}
