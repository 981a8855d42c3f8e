//! Event sourcing: an account service whose balances are a projection of its history.
//!
//! - Deposits and withdrawals are published on one topic that keeps its history.
//! - The balances are rebuilt by folding that history (`Topic::replay`), and a snapshot
//!   is taken: the balances and the offset they are good up to.
//! - More events come; a new projection starts from the snapshot and applies only what
//!   came after it, live from then on (`start_at(Offset::At(..))`), and agrees with a
//!   full rebuild.
//! - The history is exported to a JSON Lines file and imported into a fresh bus (a
//!   restarted service), which rebuilds the same balances.
//!
//! Run with `cargo run --example event_sourcing --features serde`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::sync::{Arc, Mutex};

use crier::{Bus, Envelope, Offset, Retention, Topic};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
enum AccountEvent {
    Deposited { account: String, cents: u64 },
    Withdrawn { account: String, cents: u64 },
}

/// The read model: cents per account.
type Balances = BTreeMap<String, i64>;

fn apply(balances: &mut Balances, event: &AccountEvent) {
    match event {
        AccountEvent::Deposited { account, cents } => *balances.entry(account.clone()).or_default() += *cents as i64,
        AccountEvent::Withdrawn { account, cents } => *balances.entry(account.clone()).or_default() -= *cents as i64,
    }
}

fn rebuild(accounts: &Topic<AccountEvent>) -> Result<(Balances, u64), crier::ReplayError> {
    let mut balances = Balances::new();
    let next = accounts.replay(Offset::Earliest, |env| apply(&mut balances, env))?;
    Ok((balances, next))
}

fn deposit(accounts: &Topic<AccountEvent>, account: &str, cents: u64) -> Result<(), Box<dyn std::error::Error>> {
    let event = AccountEvent::Deposited {
        account: account.to_owned(),
        cents,
    };
    accounts.message(event).key(account).publish()?;
    Ok(())
}

fn withdraw(accounts: &Topic<AccountEvent>, account: &str, cents: u64) -> Result<(), Box<dyn std::error::Error>> {
    let event = AccountEvent::Withdrawn {
        account: account.to_owned(),
        cents,
    };
    accounts.message(event).key(account).publish()?;
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::builder().inline().build()?;
    let accounts = bus.topic_named::<AccountEvent>("accounts")?;
    accounts.set_retention(Retention::last(100_000))?;

    deposit(&accounts, "alice", 10_000)?;
    deposit(&accounts, "bob", 2_500)?;
    withdraw(&accounts, "alice", 3_000)?;

    // A snapshot: the balances, and the offset they are good up to.
    let (snapshot, offset) = rebuild(&accounts)?;
    println!("snapshot at offset {offset}: {snapshot:?}");

    deposit(&accounts, "carol", 700)?;
    withdraw(&accounts, "bob", 500)?;

    // A new projection starts from the snapshot: it applies only the events from its
    // offset on, and stays live.
    let live = Arc::new(Mutex::new(snapshot.clone()));
    let projection = live.clone();
    let _projector = accounts
        .subscriber()
        .name("projection")
        .start_at(Offset::At(offset))
        .subscribe(move |env: &Envelope<AccountEvent>| {
            apply(&mut projection.lock().unwrap(), env);
        })?;
    deposit(&accounts, "bob", 1_000)?;

    let (full, next) = rebuild(&accounts)?;
    let resumed = live.lock().unwrap().clone();
    println!("resumed from offset {offset}: {resumed:?}");
    println!("rebuilt from offset 0:   {full:?}");
    assert_eq!(resumed, full, "the snapshot plus what came after is the whole history");
    assert_eq!(next, 6);

    // The service restarts: the history goes to a file and comes back into a new bus.
    let path = std::env::temp_dir().join(format!("crier-accounts-{}.jsonl", std::process::id()));
    let lines = accounts.export(BufWriter::new(File::create(&path)?))?;
    println!("exported {lines} events to {}", path.display());

    let restarted = Bus::new();
    let restored = restarted.topic_named::<AccountEvent>("accounts")?;
    restored.set_retention(Retention::last(100_000))?;
    let imported = restarted.import::<AccountEvent>(BufReader::new(File::open(&path)?))?;
    std::fs::remove_file(&path)?;
    let (after_restart, next_after_restart) = rebuild(&restored)?;
    println!("imported {imported} events; balances after the restart: {after_restart:?}");
    assert_eq!(after_restart, full);
    assert_eq!(next_after_restart, next, "offsets are kept");
    assert_eq!(
        restored
            .publish(AccountEvent::Deposited {
                account: "dave".into(),
                cents: 1
            })?
            .seq,
        next
    );

    println!("\n{}", bus.stats());
    Ok(())
}
