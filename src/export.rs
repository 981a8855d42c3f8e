//! Exporting a topic's history as JSON Lines and importing it back (feature `serde`).
//!
//! # Format
//!
//! One JSON object per line, oldest first, for each event the history keeps:
//!
//! ```text
//! {"format":1,"topic":"orders","seq":0,"id":"0000…0000","published_at":1700000000000000000,
//!  "key":null,"idempotency_key":null,"headers":[],"correlation_id":"0000…0000",
//!  "causation_id":null,"schema":1,"event":{…}}
//! ```
//!
//! `format` is this layout's version (1); `schema` is the version of the event's own
//! shape, which the exporting application states ([`Topic::export_versioned`]) and an
//! upcaster reads on import ([`Topic::import_with`]). Ids are 32 hex digits, times are
//! nanoseconds since the Unix epoch.
//!
//! # Import
//!
//! An import is all or nothing: every line is read, checked and converted first, and
//! only then, in one hold of the topic's commit lock, are the events added to the
//! history, keeping their offsets, ids and metadata. The first error (with its line
//! number) leaves the topic as it was. Memory while reading is bounded: a line longer
//! than [`MAX_IMPORT_LINE`] is refused as soon as that many bytes were read, and the
//! events are staged in a history with the topic's own retention, so no more of them
//! are held than the topic keeps (the rest are checked, then counted as evicted).

use std::io::{BufRead, Read, Write};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::dedup::IdempotencyKey;
use crate::envelope::{Envelope, EventId, Headers, Lineage, Metadata, Shared};
use crate::error::{ExportError, ImportError};
use crate::history::Log;
use crate::registry::TopicName;
use crate::retention::Retention;
use crate::stamp::Stamp;
use crate::topic::Topic;
use crate::Bus;

/// The layout version this crate writes and reads.
const FORMAT: u32 = 1;

/// The longest line an import reads: 16 MiB.
pub const MAX_IMPORT_LINE: usize = 16 << 20;

/// An upcaster: the `schema` a line was exported with and its event as JSON, to the
/// JSON of the current event type (or why not).
pub(crate) type Upcast<'a> = dyn FnMut(u32, serde_json::Value) -> Result<serde_json::Value, String> + 'a;

#[derive(Serialize)]
struct LineOut<'a, E> {
    format: u32,
    topic: &'a str,
    seq: u64,
    id: String,
    published_at: i64,
    key: Option<&'a str>,
    idempotency_key: Option<&'a str>,
    headers: Vec<(&'a str, &'a str)>,
    correlation_id: String,
    causation_id: Option<String>,
    schema: u32,
    event: &'a E,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineIn {
    format: u32,
    topic: String,
    seq: u64,
    id: String,
    published_at: i64,
    key: Option<String>,
    idempotency_key: Option<String>,
    headers: Vec<(String, String)>,
    correlation_id: String,
    causation_id: Option<String>,
    schema: u32,
    event: serde_json::Value,
}

/// What an import read: its events, staged in a history with the topic's own
/// retention, so that it holds no more than the topic will keep.
pub(crate) struct Staged<E> {
    /// The first line: its number and offset (`None`: no line).
    pub(crate) first: Option<(u64, u64)>,
    /// The last line's offset.
    pub(crate) last: u64,
    /// Lines read.
    pub(crate) lines: u64,
    pub(crate) log: Option<Log<E>>,
}

fn id_text(id: EventId) -> String {
    id.to_string()
}

fn parse_id(text: &str) -> Result<EventId, String> {
    if text.len() != 32 {
        return Err(format!("an id is 32 hex digits, not {text:?}"));
    }
    u128::from_str_radix(text, 16)
        .map(EventId::from_u128)
        .map_err(|_| format!("an id is 32 hex digits, not {text:?}"))
}

/// Writes `history` as JSON Lines (see the module docs); returns the lines written.
pub(crate) fn write<'a, E: Serialize + 'a>(
    history: impl IntoIterator<Item = &'a Envelope<E>>,
    schema: u32,
    mut writer: impl Write,
) -> Result<u64, ExportError> {
    let mut lines = 0;
    for env in history {
        let line = LineOut {
            format: FORMAT,
            topic: env.topic(),
            seq: env.seq(),
            id: id_text(env.id()),
            published_at: env.stamp().0,
            key: env.key(),
            idempotency_key: env.idempotency_key(),
            headers: env.headers().iter().collect(),
            correlation_id: id_text(env.correlation_id()),
            causation_id: env.causation_id().map(id_text),
            schema,
            event: &**env,
        };
        serde_json::to_writer(&mut writer, &line).map_err(|source| ExportError::Event { seq: env.seq(), source })?;
        writer.write_all(b"\n").map_err(ExportError::Io)?;
        lines += 1;
    }
    writer.flush().map_err(ExportError::Io)?;
    Ok(lines)
}

/// Reads and checks every line (see the module docs), converting each event through
/// `upcast`. At the first line, `target` learns the topic the lines name and gives the
/// name and retention of the topic to import into, or refuses the import. The events
/// are staged in a history with that retention, which lets go at once of what the
/// topic would (counted as evicted), so the import holds no more than the topic keeps.
pub(crate) fn read<E: DeserializeOwned>(
    mut reader: impl BufRead,
    upcast: &mut Upcast<'_>,
    target: impl FnOnce(&str) -> Result<(TopicName, Retention), ImportError>,
) -> Result<Staged<E>, ImportError> {
    let mut staged = Staged {
        first: None,
        last: 0,
        lines: 0,
        log: None,
    };
    let mut target = Some(target);
    let mut name = TopicName::Type("");
    let mut topic = String::new();
    let mut gone = Vec::new();
    let mut buf = Vec::new();
    let mut line = 0_u64;
    loop {
        buf.clear();
        let read = reader
            .by_ref()
            .take(MAX_IMPORT_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(ImportError::Io)?;
        if read == 0 {
            return Ok(staged);
        }
        line += 1;
        let fail = |reason: String| ImportError::Line { line, reason };
        if buf.last() == Some(&b'\n') {
            buf.pop();
        } else if buf.len() > MAX_IMPORT_LINE {
            return Err(fail(format!("longer than {MAX_IMPORT_LINE} bytes")));
        }
        let text = std::str::from_utf8(&buf).map_err(|e| fail(format!("not UTF-8: {e}")))?;
        let raw: LineIn = serde_json::from_str(text).map_err(|e| fail(e.to_string()))?;
        if raw.format != FORMAT {
            return Err(fail(format!("format {} (this version reads {FORMAT})", raw.format)));
        }
        let published_at = Stamp(raw.published_at);
        if let Some(target) = target.take() {
            let (target_name, retention) = target(&raw.topic)?;
            name = target_name;
            // Offsets before the first line are not kept (nor, to be safe, anything
            // published up to its time, unless it starts at offset 0).
            staged.log = Some(Log::new(retention, raw.seq, published_at));
            staged.first = Some((line, raw.seq));
            topic.clone_from(&raw.topic);
        } else if raw.topic != topic {
            return Err(fail(format!(
                "topic `{}` after `{topic}`: one topic per import",
                raw.topic
            )));
        }
        if staged.lines > 0 && raw.seq <= staged.last {
            return Err(fail(format!(
                "offset {} after offset {}: offsets must increase",
                raw.seq, staged.last
            )));
        }
        // An id's low half is its offset: with increasing offsets, no id comes twice.
        let id = parse_id(&raw.id).map_err(fail)?;
        if id.as_u128() as u64 != raw.seq {
            return Err(fail(format!("id {id} does not end with its offset {}", raw.seq)));
        }
        let correlation_id = parse_id(&raw.correlation_id).map_err(fail)?;
        let causation_id = raw.causation_id.as_deref().map(parse_id).transpose().map_err(fail)?;
        let value =
            upcast(raw.schema, raw.event).map_err(|e| fail(format!("upcast from schema {}: {e}", raw.schema)))?;
        let event = serde_json::from_value(value).map_err(|e| fail(format!("event: {e}")))?;
        let mut headers = Headers::default();
        for (name, value) in raw.headers {
            headers.push(name, value);
        }
        let env = Envelope::new(std::sync::Arc::new(Shared {
            event,
            meta: Metadata {
                id,
                topic: name.clone(),
                seq: raw.seq,
                published_at,
                key: raw.key.map(String::into_boxed_str),
                idempotency_key: raw.idempotency_key.map(IdempotencyKey::from),
                headers,
                correlation_id,
                lineage: Lineage::new(causation_id, false),
                reply_to: None,
            },
        }));
        staged.last = raw.seq;
        staged.lines = line;
        if let Some(log) = staged.log.as_mut() {
            log.push(env, &mut gone);
            gone.clear();
        }
    }
}

/// History export and import: available with the `serde` feature.
impl<E: Send + Sync + 'static> Topic<E> {
    /// Writes the history this topic keeps (see [`set_retention`](Self::set_retention))
    /// as JSON Lines: one line per event, oldest first, with its offset, id, time,
    /// keys, headers, correlation and causation ids, schema version 1 and the event
    /// (the format is in the `export` module's docs). Returns the lines written.
    /// [`import`](Self::import) reads it back.
    ///
    /// # Errors
    ///
    /// [`ExportError::Io`] if the writer fails, [`ExportError::Event`] if an event does
    /// not serialize to JSON; the lines before it are written.
    ///
    /// # Example
    ///
    /// ```
    /// use crier::{Bus, Offset, Retention};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::new();
    /// let temps = bus.topic_named::<f32>("temps")?;
    /// temps.set_retention(Retention::last(100))?;
    /// temps.publish(21.5)?;
    /// temps.publish(22.0)?;
    /// let mut file = Vec::new();
    /// assert_eq!(temps.export(&mut file)?, 2);
    ///
    /// // Another process (here: another bus) rebuilds the same history.
    /// let restored = Bus::new();
    /// let again = restored.topic_named::<f32>("temps")?;
    /// again.set_retention(Retention::last(100))?;
    /// assert_eq!(restored.import::<f32>(file.as_slice())?, 2);
    /// let read: Vec<(u64, f32)> = again.history().iter().map(|env| (env.seq(), **env)).collect();
    /// assert_eq!(read, [(0, 21.5), (1, 22.0)]);
    /// assert_eq!(again.next_offset(), 2);
    /// # Ok(()) }
    /// ```
    pub fn export(&self, writer: impl Write) -> Result<u64, ExportError>
    where
        E: Serialize,
    {
        self.export_versioned(writer, 1)
    }

    /// Like [`export`](Self::export), stating `schema` as the version of the event's
    /// shape, for an upcaster to read on import ([`import_with`](Self::import_with)).
    ///
    /// # Errors
    ///
    /// As [`export`](Self::export).
    pub fn export_versioned(&self, writer: impl Write, schema: u32) -> Result<u64, ExportError>
    where
        E: Serialize,
    {
        write(&self.history(), schema, writer)
    }

    /// Reads a history written by [`export`](Self::export) into this topic's history,
    /// keeping each event's offset, id and metadata (whatever topic the lines name):
    /// afterwards, reading the history, [`replay`](Self::replay) and subscribers that
    /// [`start_at`](crate::SubscriberBuilder::start_at) an offset see the imported
    /// events, and the next publish takes the offset after the last one. Returns the
    /// events imported. The topic's retention applies to them as they enter (a
    /// shorter one keeps only the newest). Subscribers do not receive them, and the
    /// topic's [dedup window](Self::set_dedup_window) does not learn their
    /// idempotency keys.
    ///
    /// All or nothing: every line is read and checked before any event is added, and
    /// any error leaves the topic as it was (see [`ImportError`]). The events are held
    /// in memory until then, but no more of them than the topic's retention keeps: the
    /// rest are let go as they are read, as the history would let them go, and count as
    /// evicted. A line longer than [`MAX_IMPORT_LINE`] is refused as soon as that many
    /// bytes were read.
    ///
    /// # Errors
    ///
    /// [`ImportError::NoHistory`] if the topic has no retention;
    /// [`ImportError::Line`] for a line that cannot be imported (not UTF-8, not JSON,
    /// a missing or mistyped field, another format, another topic than the first line's,
    /// an offset not above the previous line's, an id seen before, an event that does
    /// not deserialize), naming the line and the reason;
    /// [`ImportError::Offsets`] if the first offset is below the topic's next offset
    /// (the topic already has events there), or above it while the topic's history
    /// holds events (the history would have a gap); [`ImportError::Io`] if reading
    /// fails.
    pub fn import(&self, reader: impl BufRead) -> Result<u64, ImportError>
    where
        E: DeserializeOwned,
    {
        self.import_with(reader, |_, value| Ok(value))
    }

    /// Like [`import`](Self::import), passing each event's JSON and the schema version
    /// it was exported with through `upcast`, which returns the JSON of the current
    /// event type (or why it cannot): migrating old versions as they load.
    ///
    /// # Errors
    ///
    /// As [`import`](Self::import); an `Err` from `upcast` is [`ImportError::Line`].
    ///
    /// # Example
    ///
    /// ```
    /// use crier::{Bus, Retention};
    /// use serde::Deserialize;
    ///
    /// // Version 2 of the event: `cents` used to be `amount`.
    /// #[derive(Deserialize)]
    /// struct Deposited { cents: u64 }
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let v1 = concat!(
    ///     r#"{"format":1,"topic":"deposits","seq":0,"id":"000000000000000a0000000000000000","#,
    ///     r#""published_at":0,"key":null,"idempotency_key":null,"headers":[],"#,
    ///     r#""correlation_id":"000000000000000a0000000000000000","causation_id":null,"#,
    ///     r#""schema":1,"event":{"amount":250}}"#,
    /// );
    /// let bus = Bus::new();
    /// let deposits = bus.topic_named::<Deposited>("deposits")?;
    /// deposits.set_retention(Retention::last(100))?;
    /// deposits.import_with(v1.as_bytes(), |schema, mut event| {
    ///     if schema < 2 {
    ///         event["cents"] = event["amount"].take();
    ///     }
    ///     Ok(event)
    /// })?;
    /// assert_eq!(deposits.history().iter().next().map(|env| env.cents), Some(250));
    /// # Ok(()) }
    /// ```
    pub fn import_with(
        &self,
        reader: impl BufRead,
        mut upcast: impl FnMut(u32, serde_json::Value) -> Result<serde_json::Value, String>,
    ) -> Result<u64, ImportError>
    where
        E: DeserializeOwned,
    {
        let staged = read::<E>(reader, &mut upcast, |_| self.core.import_target())?;
        self.core.import(staged)
    }
}

impl Bus {
    /// Imports a history written by [`Topic::export`] into the topic its lines name
    /// (`E`'s default topic if that is the name they carry, otherwise the named topic),
    /// as [`Topic::import`] does.
    ///
    /// # Errors
    ///
    /// As [`Topic::import`], and [`ImportError::Topic`] if the name is bound to another
    /// event type on this bus (or is not a valid topic name).
    pub fn import<E>(&self, reader: impl BufRead) -> Result<u64, ImportError>
    where
        E: DeserializeOwned + Send + Sync + 'static,
    {
        self.import_with::<E>(reader, |_, value| Ok(value))
    }

    /// Like [`Bus::import`], through an upcaster (see [`Topic::import_with`]).
    ///
    /// # Errors
    ///
    /// As [`Bus::import`].
    pub fn import_with<E>(
        &self,
        reader: impl BufRead,
        mut upcast: impl FnMut(u32, serde_json::Value) -> Result<serde_json::Value, String>,
    ) -> Result<u64, ImportError>
    where
        E: DeserializeOwned + Send + Sync + 'static,
    {
        let mut topic = None;
        let staged = read::<E>(reader, &mut upcast, |name| {
            let named = match name == std::any::type_name::<E>() {
                true => self.topic::<E>(),
                false => self.topic_named::<E>(name)?,
            };
            topic.insert(named).core.import_target()
        })?;
        match topic {
            Some(topic) => topic.core.import(staged),
            None => Ok(0),
        }
    }
}
