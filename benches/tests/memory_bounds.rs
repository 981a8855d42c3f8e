//! Promise 10, measured: heap bounds of dedup windows and dead-letter stores under a
//! million events, of a history import, and of a delivery trace store, with a counting allocator
//! (RELIABILITY-PLAN G3 and J4, and B7 at full scale).
//!
//! In the benchmark package because the allocator needs `unsafe`, which crier forbids
//! in all its targets. The allocator counts every live byte of this test binary, so
//! the tests here take one lock and run one at a time.

use std::sync::Mutex;
use std::time::Duration;

use crier::{Bus, DeadLetter, DedupWindow, Dispatch, Envelope, Retention, Retry};
use crier_benches::alloc::{live_bytes, peak_growth, Counting};

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One measurement at a time: the allocator counts the whole process.
static MEASURING: Mutex<()> = Mutex::new(());

const MIB: isize = 1 << 20;

/// The documented most bytes per key of a window's capacity, at the peak: while its
/// store grows it holds the old and the new ring at once (see `src/seen.rs`).
const BYTES_PER_KEY: isize = 100;

/// G3 on a topic: capacity 100,000, a million distinct keys. The window never holds
/// more than 100,000 keys (sampled every 10,000 publishes), evicts 900,000, and the
/// heap never grows beyond 100,000 × `BYTES_PER_KEY` + 1 MiB (the in-flight publish
/// and the test's own buffers).
#[test]
fn a_topic_window_stays_within_its_heap_bound_over_a_million_keys() {
    let _one = MEASURING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let bus = Bus::new();
    let topic = bus.topic::<u64>();
    topic
        .set_dedup_window(DedupWindow::new(100_000, Duration::from_secs(3600)))
        .unwrap();
    let mut key = String::new();
    let before = live_bytes();
    let growth = peak_growth(|| {
        for n in 0..1_000_000_u64 {
            key.clear();
            std::fmt::Write::write_fmt(&mut key, format_args!("{n:016}")).unwrap();
            topic.message(n).idempotency_key(key.as_str()).publish().unwrap();
            if n % 10_000 == 0 {
                assert!(bus.stats().topic("u64").unwrap().dedup_keys <= 100_000);
            }
        }
    });
    let stats = bus.stats();
    let topic_stats = stats.topic("u64").unwrap();
    assert_eq!((topic_stats.dedup_keys, topic_stats.dedup_evicted), (100_000, 900_000));
    let kept = live_bytes() - before;
    eprintln!("topic window of 100,000 keys: peak {growth} bytes, {kept} bytes kept after");
    assert!(growth <= 100_000 * BYTES_PER_KEY + MIB, "grew {growth} bytes");
}

/// G3 on a subscriber: the same bound, its window keeping the keys that succeeded; for
/// an inline subscriber (its window in its topic's key table) and a pool one (a window
/// of its own).
#[test]
fn a_subscriber_window_stays_within_its_heap_bound_over_a_million_keys() {
    let _one = MEASURING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for dispatch in [Dispatch::Inline, Dispatch::Pool] {
        let bus = Bus::builder().workers(1).build().unwrap();
        let sub = bus
            .subscriber::<u64>()
            .dispatch(dispatch)
            .dedup(DedupWindow::new(100_000, Duration::from_secs(3600)))
            .subscribe(|_: &Envelope<u64>| {})
            .unwrap();
        let before = live_bytes();
        let growth = peak_growth(|| {
            for n in 0..1_000_000_u64 {
                bus.message(n).idempotency_key(format!("{n:016}")).publish().unwrap();
                if n % 10_000 == 0 {
                    assert!(sub.stats().dedup_keys <= 100_000);
                }
            }
            bus.wait_idle(Duration::from_secs(60)).unwrap();
        });
        let stats = sub.stats();
        assert_eq!(
            (stats.delivered, stats.dedup_keys, stats.dedup_evicted),
            (1_000_000, 100_000, 900_000)
        );
        let kept = live_bytes() - before;
        eprintln!("{dispatch:?} subscriber window of 100,000 keys: peak {growth} bytes, {kept} bytes kept after");
        assert!(
            growth <= 100_000 * BYTES_PER_KEY + MIB,
            "{dispatch:?}: grew {growth} bytes"
        );
    }
}

/// 8 inline subscribers that succeed for the same keys share them in their topic's
/// table: together they stay within the bound of 2 windows of their own (and hold
/// about a quarter of 8).
#[test]
fn eight_inline_subscribers_share_their_keys_within_two_windows_bound() {
    let _one = MEASURING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let bus = Bus::builder().inline().build().unwrap();
    let subs: Vec<_> = (0..8)
        .map(|_| {
            bus.subscriber::<u64>()
                .dedup(DedupWindow::new(100_000, Duration::from_secs(3600)))
                .subscribe(|_: &Envelope<u64>| {})
                .unwrap()
        })
        .collect();
    let before = live_bytes();
    let growth = peak_growth(|| {
        for n in 0..300_000_u64 {
            bus.message(n).idempotency_key(format!("{n:016}")).publish().unwrap();
        }
    });
    assert!(subs.iter().all(|sub| sub.stats().dedup_keys == 100_000));
    let kept = live_bytes() - before;
    eprintln!("8 inline subscribers, windows of 100,000 keys: peak {growth} bytes, {kept} bytes kept after");
    assert!(growth <= 2 * 100_000 * BYTES_PER_KEY + MIB, "grew {growth} bytes");
}

/// B7 at full scale: a million events that always fail, one attempt each, and nobody
/// subscribed to the dead letters. Every event is dead-lettered and counted; the store
/// keeps the newest 1,000 and evicts 999,000; the heap never grows beyond 1,000 kept
/// dead letters of 512 bytes each (the envelope, the error text, the store's slot;
/// measured: about 290 for a `u64` event) + 1 MiB.
#[test]
fn a_million_dead_letters_keep_the_store_within_its_bound() {
    let _one = MEASURING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let bus = Bus::builder().inline().build().unwrap();
    let sub = bus
        .subscriber::<u64>()
        .at_least_once(Retry::ordered().max_attempts(1).dead_letter_capacity(1_000))
        .subscribe(|_: &Envelope<u64>| -> Result<(), &'static str> { Err("always fails") })
        .unwrap();
    let before = live_bytes();
    let growth = peak_growth(|| {
        for n in 0..1_000_000_u64 {
            bus.publish(n).unwrap();
        }
    });
    let kept_bytes = live_bytes() - before;
    let stats = sub.stats();
    assert_eq!(stats.dead_lettered, 1_000_000);
    assert_eq!((stats.dead_letters_kept, stats.dead_letters_evicted), (1_000, 999_000));
    assert!(stats.is_balanced(), "{stats:?}");
    let kept: Vec<DeadLetter<u64>> = sub.dead_letters().unwrap();
    assert_eq!(
        kept.first().map(|d| **d.envelope()),
        Some(999_000),
        "the newest are kept"
    );
    eprintln!("dead-letter store of 1,000: peak {growth} bytes, {kept_bytes} bytes kept after");
    assert!(growth <= 1_000 * 512 + MIB, "grew {growth} bytes");
}

/// J4: importing 50,000 events into a history of 1,000, or into a compacted history
/// (100 keys), holds about what the history keeps, not the file's events: the heap
/// never grows beyond 1 KiB per event kept plus 1 MiB (one line's buffer and its
/// JSON). Holding every event read took 21 MB.
#[test]
fn an_import_into_a_bounded_history_holds_only_what_it_keeps() {
    let _one = MEASURING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let source = Bus::new();
    let topic = source.topic_named::<u64>("readings").unwrap();
    topic.set_retention(Retention::last(50_000)).unwrap();
    for n in 0..50_000_u64 {
        topic.message(n).key(format!("sensor-{}", n % 100)).publish().unwrap();
    }
    let mut file = Vec::new();
    topic.export(&mut file).unwrap();
    drop(source);
    let target = Bus::new();
    target
        .topic_named::<u64>("readings")
        .unwrap()
        .set_retention(Retention::last(1_000))
        .unwrap();
    let growth = peak_growth(|| {
        assert_eq!(target.import::<u64>(file.as_slice()).unwrap(), 50_000);
    });
    eprintln!("import of 50,000 events into a history of 1,000: peak {growth} bytes");
    assert!(growth <= 1_000 * 1024 + MIB, "grew {growth} bytes");
    let compacted = target.topic_named::<u64>("readings.latest").unwrap();
    compacted.set_retention(Retention::last(100_000).compacted()).unwrap();
    let growth = peak_growth(|| {
        assert_eq!(compacted.import(file.as_slice()).unwrap(), 50_000);
    });
    assert_eq!(compacted.history().len(), 100, "the latest reading per sensor");
    eprintln!("import of 50,000 events (100 keys) into a compacted history: peak {growth} bytes");
    assert!(growth <= 100 * 1024 + MIB, "grew {growth} bytes");
}

/// The documented budget of a traced event (`BusBuilder::trace`) with a few subscribers
/// (measured below: about 1,100 bytes kept, 1,370 at the peak, while the store's map
/// grows).
const BYTES_PER_TRACED_EVENT: isize = 1536;

/// Delivery traces: a store of 10,000 events under 200,000 publishes, each reaching 4
/// subscribers, one of which fails every event with a 200-byte error (at most once, so
/// 4 steps per event). The store keeps 10,000 events, evicts the rest, and the heap
/// never grows beyond 10,000 × `BYTES_PER_TRACED_EVENT` + 1 MiB.
#[test]
fn a_trace_store_stays_within_its_heap_bound() {
    let _one = MEASURING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let bus = Bus::builder().inline().trace(10_000).build().unwrap();
    let mut subs: Vec<_> = (0..3)
        .map(|n| {
            bus.subscriber::<u64>()
                .name(format!("ok-{n}"))
                .subscribe(|_: &Envelope<u64>| {})
                .unwrap()
        })
        .collect();
    let error = "e".repeat(200);
    subs.push(
        bus.subscriber::<u64>()
            .name("failing")
            .subscribe(move |_: &Envelope<u64>| Err::<(), _>(error.clone()))
            .unwrap(),
    );
    let before = live_bytes();
    let growth = peak_growth(|| {
        for n in 0..200_000_u64 {
            bus.publish(n).unwrap();
        }
    });
    let traces = bus.trace_stats().unwrap();
    assert_eq!((traces.kept, traces.evicted), (10_000, 190_000));
    let kept = live_bytes() - before;
    eprintln!("trace store of 10,000 events, 4 steps each: peak {growth} bytes, {kept} bytes kept after");
    assert!(growth <= 10_000 * BYTES_PER_TRACED_EVENT + MIB, "grew {growth} bytes");
}
