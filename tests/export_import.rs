//! History export and import as JSON Lines (feature `serde`; RELIABILITY-PLAN group
//! J): an exact round trip, and an import that is all or nothing, never panics and
//! reads a bounded amount per line, whatever the input.
#![cfg(feature = "serde")]

use std::io::Read;
use std::time::{Duration, UNIX_EPOCH};

use crier::testing::ManualClock;
use crier::{Bus, Envelope, EventId, ImportError, Offset, ReplayError, Retention, Topic, TopicError, MAX_IMPORT_LINE};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Deposit {
    account: String,
    cents: u64,
    note: Option<String>,
}

fn deposit(n: u64) -> Deposit {
    Deposit {
        account: format!("acct-{}", n % 3),
        cents: n * 100,
        note: (n % 2 == 0).then(|| "even ✓ \"quoted\"\n".to_owned()),
    }
}

fn kept(topic: &Topic<Deposit>, retention: Retention) -> Topic<Deposit> {
    topic.set_retention(retention).unwrap();
    topic.clone()
}

/// Everything an envelope carries that an export must keep: offset, id, time, key,
/// idempotency key, headers, correlation, causation, event.
type Facts = (
    u64,
    EventId,
    std::time::SystemTime,
    Option<String>,
    Option<String>,
    Vec<(String, String)>,
    EventId,
    Option<EventId>,
    Deposit,
);

fn facts(env: &Envelope<Deposit>) -> Facts {
    (
        env.seq(),
        env.id(),
        env.published_at(),
        env.key().map(str::to_owned),
        env.idempotency_key().map(str::to_owned),
        env.headers()
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        env.correlation_id(),
        env.causation_id(),
        (**env).clone(),
    )
}

fn export(topic: &Topic<Deposit>) -> Vec<u8> {
    let mut out = Vec::new();
    topic.export(&mut out).unwrap();
    out
}

/// A bus with a topic named "deposits" keeping everything, for imports.
fn fresh() -> (Bus, Topic<Deposit>) {
    let bus = Bus::new();
    let topic = bus.topic_named::<Deposit>("deposits").unwrap();
    topic.set_retention(Retention::last(100_000)).unwrap();
    (bus, topic)
}

/// J1: ids, offsets, times, keys, headers, correlation and causation survive, and
/// exporting the import gives the same bytes.
#[test]
fn an_export_imports_back_exactly() {
    let clock = ManualClock::at(UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789));
    let bus = Bus::builder().clock(clock.clone()).inline().build().unwrap();
    let topic = kept(&bus.topic_named::<Deposit>("deposits").unwrap(), Retention::last(100));
    // A handler publishes a follow-up: causation and correlation are kept.
    let follow = topic.clone();
    let _sub = topic
        .subscribe(move |env: &Envelope<Deposit>| {
            if env.cents == 100 {
                follow.publish(deposit(99)).unwrap();
            }
        })
        .unwrap();
    topic.publish(deposit(0)).unwrap();
    clock.advance(Duration::from_nanos(7));
    topic
        .message(deposit(1))
        .key("acct-1")
        .idempotency_key("pay-1")
        .header("source", "atm")
        .header("source", "again")
        .publish()
        .unwrap();
    let file = export(&topic);
    assert_eq!(file.iter().filter(|&&b| b == b'\n').count(), 3);

    let (other, restored) = fresh();
    assert_eq!(other.import::<Deposit>(file.as_slice()).unwrap(), 3);
    let before: Vec<_> = topic.history().iter().map(facts).collect();
    let after: Vec<_> = restored.history().iter().map(facts).collect();
    assert_eq!(before, after);
    assert_eq!(
        after[2].7,
        Some(after[1].1),
        "the follow-up's cause is the deposit of 100"
    );
    assert_eq!(export(&restored), file, "byte for byte");
    assert_eq!(restored.next_offset(), 3);
    assert_eq!(
        restored.publish(deposit(5)).unwrap().seq,
        3,
        "publishing goes on after the import"
    );
}

#[test]
fn bus_import_finds_the_topic_by_name_and_checks_its_type() {
    let (bus, topic) = fresh();
    topic.publish(deposit(1)).unwrap();
    let file = export(&topic);
    let other = Bus::new();
    let _wrong = other.topic_named::<u32>("deposits").unwrap();
    let error = other.import::<Deposit>(file.as_slice()).unwrap_err();
    assert!(
        matches!(error, ImportError::Topic(TopicError::TypeMismatch { .. })),
        "{error}"
    );
    // The default topic of a type is found by its type name.
    let default = bus.topic::<Deposit>();
    default.set_retention(Retention::last(10)).unwrap();
    default.publish(deposit(2)).unwrap();
    let file = export(&default);
    let third = Bus::new();
    third.topic::<Deposit>().set_retention(Retention::last(10)).unwrap();
    assert_eq!(third.import::<Deposit>(file.as_slice()).unwrap(), 1);
    assert_eq!(third.topic::<Deposit>().history().len(), 1);
}

#[test]
fn an_import_needs_a_retention_and_respects_it() {
    let (_bus, topic) = fresh();
    for n in 0..10 {
        topic.message(deposit(n)).key(format!("k{}", n % 2)).publish().unwrap();
    }
    let file = export(&topic);
    let bus = Bus::new();
    let target = bus.topic_named::<Deposit>("deposits").unwrap();
    assert!(matches!(
        target.import(file.as_slice()),
        Err(ImportError::NoHistory { .. })
    ));
    target.set_retention(Retention::last(3)).unwrap();
    assert_eq!(target.import(file.as_slice()).unwrap(), 10);
    assert_eq!(target.history().iter().map(|e| e.seq()).collect::<Vec<_>>(), [7, 8, 9]);
    assert_eq!(target.next_offset(), 10);
    let compacted = bus.topic_named::<Deposit>("compacted").unwrap();
    compacted.set_retention(Retention::last(100).compacted()).unwrap();
    compacted.import(file.as_slice()).unwrap();
    assert_eq!(compacted.history().iter().map(|e| e.seq()).collect::<Vec<_>>(), [8, 9]);
}

/// Into a history bounded by count, an import keeps only the newest events it can
/// hold while it reads: the older ones are checked, then counted as evicted, and their
/// offsets are gone as if they had been kept and let go.
#[test]
fn a_count_bounded_import_keeps_only_what_the_retention_holds() {
    let (_bus, source) = fresh();
    for n in 0..1_000 {
        source.publish(deposit(n)).unwrap();
    }
    let file = export(&source);
    let bus = Bus::new();
    let target = bus.topic_named::<Deposit>("deposits").unwrap();
    target.set_retention(Retention::last(10)).unwrap();
    assert_eq!(bus.import::<Deposit>(file.as_slice()).unwrap(), 1_000, "lines read");
    assert_eq!(
        target.history().iter().map(|e| e.seq()).collect::<Vec<_>>(),
        (990..1_000).collect::<Vec<_>>()
    );
    let stats = bus.stats();
    let stats = stats.topic("deposits").unwrap();
    assert_eq!((stats.history_len, stats.history_evicted), (10, 990));
    assert!(matches!(
        target.history_from(Offset::At(989)),
        Err(ReplayError::Evicted { oldest: 990, .. })
    ));
    let last_gone = source
        .history_range(989..=989)
        .unwrap()
        .iter()
        .next()
        .unwrap()
        .published_at();
    assert!(matches!(
        target.history_from(Offset::Since(last_gone)),
        Err(ReplayError::Evicted { oldest: 990, .. })
    ));
    // A bad line after the kept ones still refuses the whole import.
    let mut bad = file.clone();
    bad.extend_from_slice(b"{}\n");
    let (_other, fresh_target) = fresh();
    fresh_target.set_retention(Retention::last(10)).unwrap();
    assert!(matches!(
        fresh_target.import(bad.as_slice()),
        Err(ImportError::Line { line: 1_001, .. })
    ));
    assert!(fresh_target.history().is_empty() && fresh_target.next_offset() == 0);
}

/// An import that starts past offset 0 leaves the offsets before it unavailable, and
/// subscribers that start in the history see the imported events.
#[test]
fn imported_events_are_history_like_any_other() {
    let (_bus, topic) = fresh();
    for n in 0..6 {
        topic.publish(deposit(n)).unwrap();
    }
    topic.set_retention(Retention::last(3)).unwrap();
    let file = export(&topic);
    let (_other, restored) = fresh();
    restored.import(file.as_slice()).unwrap();
    assert!(matches!(
        restored.history_from(Offset::At(1)),
        Err(ReplayError::Evicted { oldest: 3, .. })
    ));
    let rx = restored.subscriber().start_at(Offset::Earliest).receiver().unwrap();
    restored.publish(deposit(6)).unwrap();
    assert_eq!(rx.try_iter().map(|e| e.seq()).collect::<Vec<_>>(), [3, 4, 5, 6]);
}

#[test]
fn offsets_that_collide_or_leave_a_gap_are_refused() {
    let (_bus, topic) = fresh();
    for n in 0..3 {
        topic.publish(deposit(n)).unwrap();
    }
    let file = export(&topic);
    let (_other, target) = fresh();
    target.publish(deposit(9)).unwrap();
    let error = target.import(file.as_slice()).unwrap_err();
    assert!(
        matches!(
            error,
            ImportError::Offsets {
                line: 1,
                seq: 0,
                next: 1
            }
        ),
        "{error}"
    );
    // Starting later than the next offset would leave a gap in a non-empty history.
    let later: Vec<u8> = file
        .split(|&b| b == b'\n')
        .skip(2)
        .flat_map(|l| l.iter().copied().chain([b'\n']))
        .collect();
    let error = target.import(&later[..later.len() - 1]).unwrap_err();
    assert!(matches!(error, ImportError::Offsets { seq: 2, next: 1, .. }), "{error}");
    assert_eq!(target.history().len(), 1, "nothing imported");
}

/// One line of a valid export (offset 2), with `field` replaced.
fn line_with(field: &str, value: &str) -> String {
    let (_bus, topic) = fresh();
    topic.publish(deposit(1)).unwrap();
    let mut line: serde_json::Value = serde_json::from_slice(&export(&topic)).unwrap();
    // It follows the two lines of `each_malformed_line_is_refused_with_its_line_and_reason`.
    line["seq"] = 2.into();
    let topic_half = line["id"].as_str().unwrap()[..16].to_owned();
    line["id"] = format!("{topic_half}{:016x}", 2).into();
    line[field] = serde_json::from_str(value).unwrap();
    line.to_string()
}

/// Each malformed line is refused with its line number and reason, and nothing is
/// imported, even from the lines before it.
#[test]
fn each_malformed_line_is_refused_with_its_line_and_reason() {
    let (_bus, source) = fresh();
    for n in 0..2 {
        source.publish(deposit(n)).unwrap();
    }
    let good = String::from_utf8(export(&source)).unwrap();
    let first = good.lines().next().unwrap().to_owned();
    let cases: Vec<(String, &str)> = vec![
        (format!("{good}{{\"format\":1"), "EOF while parsing"),
        (format!("{good}not json\n"), "expected"),
        (format!("{good}\n"), "EOF while parsing"),
        (format!("{good}{first}\n"), "offsets must increase"),
        (format!("{good}{}\n", line_with("format", "2")), "format 2"),
        (format!("{good}{}\n", line_with("seq", "\"seven\"")), "invalid type"),
        (
            format!("{good}{}\n", line_with("topic", "\"other\"")),
            "one topic per import",
        ),
        (format!("{good}{}\n", line_with("id", "\"zz\"")), "32 hex digits"),
        (
            format!("{good}{}\n", line_with("event", "{\"account\":1}")),
            "event: invalid type",
        ),
        (format!("{good}{}\n", line_with("extra", "1")), "unknown field"),
    ];
    for (input, reason) in cases {
        let (_bus, target) = fresh();
        let error = target.import(input.as_bytes()).unwrap_err();
        let ImportError::Line { line: 3, reason: got } = &error else {
            panic!("{input:?}: {error}");
        };
        assert!(got.contains(reason), "{got:?} should say {reason:?}");
        assert!(
            target.history().is_empty() && target.next_offset() == 0,
            "half-imported"
        );
    }
    // A missing field, a duplicate id (an id is its topic half and its offset, so a
    // repeated id on a later offset does not end with that offset), bytes that are not
    // UTF-8.
    let mut missing: serde_json::Value = serde_json::from_str(&first).unwrap();
    missing.as_object_mut().unwrap().remove("schema");
    let (_bus, target) = fresh();
    let error = target.import(missing.to_string().as_bytes()).unwrap_err();
    assert!(error.to_string().contains("missing field `schema`"), "{error}");
    let mut same_id: serde_json::Value = serde_json::from_str(&first).unwrap();
    same_id["seq"] = 5.into();
    let twice = format!("{first}\n{same_id}\n");
    let error = target.import(twice.as_bytes()).unwrap_err();
    assert!(error.to_string().contains("does not end with its offset 5"), "{error}");
    let mut bad = first.into_bytes();
    bad.extend_from_slice(b"\n\xff\xfe\n");
    let error = target.import(bad.as_slice()).unwrap_err();
    assert!(
        matches!(error, ImportError::Line { line: 2, .. }) && error.to_string().contains("UTF-8"),
        "{error}"
    );
    assert!(target.history().is_empty());
}

/// J4: a 1 GiB line is refused after reading the limit, not after reading (or
/// holding) the whole line.
#[test]
fn a_gigabyte_line_is_refused_after_the_limit() {
    let (_bus, target) = fresh();
    let huge = std::io::repeat(b'x').take(1 << 30);
    let mut counted = CountingReader { inner: huge, read: 0 };
    let error = target.import(std::io::BufReader::new(&mut counted)).unwrap_err();
    assert!(matches!(error, ImportError::Line { line: 1, .. }), "{error}");
    assert!(error.to_string().contains("longer than"));
    assert!(
        counted.read <= MAX_IMPORT_LINE as u64 + 64 * 1024,
        "read {} bytes",
        counted.read
    );
}

struct CountingReader<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

#[test]
fn an_upcaster_migrates_old_schemas_and_its_refusal_is_a_line_error() {
    let (_bus, source) = fresh();
    source.publish(deposit(4)).unwrap();
    let mut file = Vec::new();
    source.export_versioned(&mut file, 7).unwrap();
    let (_other, target) = fresh();
    let mut schemas = Vec::new();
    target
        .import_with(file.as_slice(), |schema, mut event| {
            schemas.push(schema);
            event["cents"] = serde_json::json!(1);
            Ok(event)
        })
        .unwrap();
    assert_eq!(schemas, [7]);
    assert_eq!(target.history().iter().next().unwrap().cents, 1);
    let (_third, refusing) = fresh();
    let error = refusing
        .import_with(file.as_slice(), |schema, _| Err(format!("schema {schema} is too old")))
        .unwrap_err();
    assert_eq!(error.to_string(), "line 1: upcast from schema 7: schema 7 is too old");
}

#[test]
fn an_empty_import_imports_nothing() {
    let (bus, target) = fresh();
    assert_eq!(target.import(&b""[..]).unwrap(), 0);
    assert_eq!(bus.import::<Deposit>(&b""[..]).unwrap(), 0);
}

/// J2: a valid export cut at every byte is either refused whole or (cut at a line's
/// end) a shorter valid history; never half-imported, never a panic.
#[test]
fn an_export_cut_anywhere_never_imports_half_a_line() {
    let (_bus, source) = fresh();
    for n in 0..4 {
        source.message(deposit(n)).key(format!("k{n}")).publish().unwrap();
    }
    let file = export(&source);
    for cut in 0..file.len() {
        let (_bus, target) = fresh();
        let whole_lines = file[..cut].iter().filter(|&&b| b == b'\n').count();
        match target.import(&file[..cut]) {
            Ok(n) => {
                assert!(n as usize == whole_lines || (n as usize == whole_lines + 1 && file[cut] == b'\n'));
                assert_eq!(target.history().len(), n as usize);
            }
            Err(_) => assert!(target.history().is_empty() && target.next_offset() == 0, "cut at {cut}"),
        }
    }
}

/// An event to publish: the event, its key, its idempotency key, its headers.
type Publish = (Deposit, Option<String>, Option<String>, Vec<(String, String)>);

fn history_strategy() -> impl Strategy<Value = Vec<Publish>> {
    proptest::collection::vec(
        (
            (
                "[a-z\\p{Greek}\"\\\\\n]{0,12}",
                any::<u64>(),
                proptest::option::of(".{0,20}"),
            )
                .prop_map(|(account, cents, note)| Deposit { account, cents, note }),
            proptest::option::of("[a-z0-9]{1,8}"),
            proptest::option::of(".{1,16}"),
            proptest::collection::vec((".{0,6}", ".{0,6}"), 0..3),
        ),
        0..40,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// J1 as a property: any history round-trips exactly, byte for byte.
    #[test]
    fn any_history_round_trips(events in history_strategy(), compacted in any::<bool>()) {
        let (_bus, source) = fresh();
        if compacted {
            source.set_retention(Retention::last(100_000).compacted()).unwrap();
        }
        for (event, key, idempotency, headers) in events {
            let mut message = source.message(event);
            if let Some(key) = key { message = message.key(key); }
            if let Some(k) = idempotency { message = message.idempotency_key(k); }
            for (name, value) in headers { message = message.header(name, value); }
            message.publish().unwrap();
        }
        let file = export(&source);
        let (_other, target) = fresh();
        target.import(file.as_slice()).unwrap();
        let before: Vec<_> = source.history().iter().map(facts).collect();
        let after: Vec<_> = target.history().iter().map(facts).collect();
        prop_assert_eq!(before, after);
        prop_assert_eq!(export(&target), file);
    }

    /// Fuzz-style: an export with random bytes changed, cut, or spliced in never
    /// panics the import, and an import that fails leaves the topic untouched.
    #[test]
    fn mangled_imports_never_panic_nor_half_import(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0_u8..3), 1..6),
        garbage in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        let (_bus, source) = fresh();
        for n in 0..5 {
            source.message(deposit(n)).key(format!("k{n}")).header("h", "v").publish().unwrap();
        }
        let mut file = export(&source);
        for (at, byte, kind) in edits {
            let i = at.index(file.len());
            match kind {
                0 => file[i] = byte,
                1 => file.truncate(i),
                _ => file.splice(i..i, garbage.iter().copied()).for_each(drop),
            }
            if file.is_empty() { break; }
        }
        let (_other, target) = fresh();
        match target.import(file.as_slice()) {
            Ok(n) => prop_assert_eq!(target.history().len() as u64, n),
            Err(_) => {
                prop_assert!(target.history().is_empty());
                prop_assert_eq!(target.next_offset(), 0);
            }
        }
    }
}
