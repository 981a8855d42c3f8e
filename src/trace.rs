//! Delivery traces: what happened to each recent event, for `Bus::explain`.
//!
//! # Design
//!
//! Opt-in per bus ([`BusBuilder::trace`](crate::BusBuilder::trace)); off, the bus
//! holds `None` and every hook is one branch. On, a topic records each event as it
//! seals it (under its commit lock, so the record exists before any subscriber can
//! take the event), and subscribers and receivers append a step per outcome: an
//! attempt handled or failed (with its duration and what came next: a retry, a dead
//! letter), a hand-out to a receiver, an ack, a dedup skip, a drop and its reason.
//!
//! One mutex guards the store: a map from id to record and the ids in publish order.
//! The store keeps the last `capacity` events; publishing one more evicts the oldest
//! (counted), and steps for an evicted event are not kept. Each event keeps at most
//! `MAX_STEPS` steps (the rest are counted), and an error's text at most
//! `MAX_ERROR_LEN` bytes, so memory is bounded by the capacity whatever happens.
//!
//! Causation is not stored twice: a record names its cause, and `explain` builds the
//! tree of events each one caused from one pass over the store.
//!
//! What a subscriber held when it left or the bus shut down is traced as it is let go
//! (a mailbox shows each event it pops; the ring shows each one it still holds). Not
//! traced one by one: events a `DropOldest` ring receiver was overtaken by, which the
//! ring overwrote before anyone let them go (the stats count them).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::envelope::Envelope;
use crate::policy::DropReason;
use crate::registry::TopicName;
use crate::stats::SubscriberId;
use crate::sync::Mutex;
use crate::EventId;

/// Steps kept per event; more are counted in [`Explanation::steps_omitted`].
pub(crate) const MAX_STEPS: usize = 64;

/// Bytes of an error's text a step keeps.
pub(crate) const MAX_ERROR_LEN: usize = 256;

/// Events an explanation lists as caused, over its whole tree.
const MAX_CAUSED: usize = 1_000;

/// The store behind [`Bus::explain`](crate::Bus::explain).
pub(crate) struct Traces {
    capacity: usize,
    store: Mutex<Store>,
}

#[derive(Default)]
struct Store {
    events: HashMap<EventId, Record, BuildHasherDefault<IdHasher>>,
    /// Ids in publish order, oldest first.
    order: VecDeque<EventId>,
    evicted: u64,
    /// Per topic (an id's high half), the highest `seq` evicted: an id at or below it
    /// was traced and let go, not unknown.
    evicted_up_to: HashMap<u64, u64>,
}

struct Record {
    type_name: &'static str,
    topic: TopicName,
    seq: u64,
    published_at: SystemTime,
    caused_by: Option<EventId>,
    correlation_id: EventId,
    steps: Vec<Step>,
    steps_omitted: u64,
}

/// A [`TraceStep`] as stored: the name shared with its subscriber, not copied.
#[derive(Clone)]
struct Step {
    subscriber: Arc<str>,
    subscriber_id: SubscriberId,
    outcome: TraceOutcome,
}

/// Hashes event ids for the store, without SipHash's cost (which doubled the cost of
/// a traced delivery): the bus assigns ids, so nobody can choose keys that collide.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u128(&mut self, id: u128) {
        // The topic's half and the seq's, multiplied so that the high bits (hashbrown's
        // tags) and the low bits (its buckets) both depend on every input bit.
        let folded = (id as u64) ^ ((id >> 64) as u64).rotate_left(32);
        let mixed = folded.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = mixed ^ (mixed >> 29);
    }

    fn write(&mut self, bytes: &[u8]) {
        // `EventId` writes one u128; anything else is folded in the same way.
        for chunk in bytes.chunks(16) {
            let mut word = [0; 16];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u128(u128::from_le_bytes(word) ^ u128::from(self.0));
        }
    }
}

/// What a publish tells the store of its event.
pub(crate) struct Published<'a> {
    pub(crate) id: EventId,
    pub(crate) type_name: &'static str,
    pub(crate) topic: &'a TopicName,
    pub(crate) seq: u64,
    pub(crate) published_at: SystemTime,
    pub(crate) caused_by: Option<EventId>,
    pub(crate) correlation_id: EventId,
}

fn split(id: EventId) -> (u64, u64) {
    let raw = id.as_u128();
    ((raw >> 64) as u64, raw as u64)
}

impl Traces {
    pub(crate) fn new(capacity: usize) -> Traces {
        Traces {
            capacity,
            store: Mutex::new(Store::default()),
        }
    }

    /// Records a sealed event, evicting the oldest if the store is full.
    pub(crate) fn published(&self, event: Published<'_>) {
        let mut store = self.store.lock();
        if store.order.len() == self.capacity {
            if let Some(old) = store.order.pop_front() {
                store.events.remove(&old);
                store.evicted += 1;
                let (topic, seq) = split(old);
                let up_to = store.evicted_up_to.entry(topic).or_insert(seq);
                *up_to = (*up_to).max(seq);
            }
        }
        store.order.push_back(event.id);
        store.events.insert(
            event.id,
            Record {
                type_name: event.type_name,
                topic: event.topic.clone(),
                seq: event.seq,
                published_at: event.published_at,
                caused_by: event.caused_by,
                correlation_id: event.correlation_id,
                steps: Vec::new(),
                steps_omitted: 0,
            },
        );
    }

    /// Appends a step to `event`'s record, if it is still kept.
    pub(crate) fn step(
        &self,
        event: EventId,
        subscriber_id: SubscriberId,
        subscriber: &Arc<str>,
        outcome: TraceOutcome,
    ) {
        let mut store = self.store.lock();
        let Some(record) = store.events.get_mut(&event) else {
            return;
        };
        if record.steps.len() == MAX_STEPS {
            record.steps_omitted += 1;
            return;
        }
        record.steps.push(Step {
            subscriber: subscriber.clone(),
            subscriber_id,
            outcome,
        });
    }

    pub(crate) fn stats(&self) -> TraceStats {
        let store = self.store.lock();
        TraceStats {
            capacity: self.capacity,
            kept: store.order.len(),
            evicted: store.evicted,
        }
    }

    pub(crate) fn explain(&self, id: EventId) -> Result<Explanation, ExplainError> {
        let store = self.store.lock();
        if !store.events.contains_key(&id) {
            let (topic, seq) = split(id);
            return Err(match store.evicted_up_to.get(&topic) {
                Some(&up_to) if seq <= up_to => ExplainError::Evicted(id),
                _ => ExplainError::Unknown(id),
            });
        }
        // Children in publish order, from one pass over the store.
        let mut children: HashMap<EventId, Vec<EventId>> = HashMap::new();
        for child in &store.order {
            if let Some(parent) = store.events[child].caused_by {
                children.entry(parent).or_default().push(*child);
            }
        }
        let mut budget = MAX_CAUSED;
        let mut visited = HashSet::new();
        Ok(store.build(id, &children, &mut budget, &mut visited))
    }
}

impl Store {
    fn build(
        &self,
        id: EventId,
        children: &HashMap<EventId, Vec<EventId>>,
        budget: &mut usize,
        visited: &mut HashSet<EventId>,
    ) -> Explanation {
        visited.insert(id);
        let record = &self.events[&id];
        let mut caused = Vec::new();
        let mut caused_omitted = 0;
        for &child in children.get(&id).map_or(&[][..], Vec::as_slice) {
            // Causation runs forward in time, so it has no cycles; the set guards the
            // recursion anyway.
            if visited.contains(&child) {
                continue;
            }
            if *budget == 0 {
                caused_omitted += 1;
                continue;
            }
            *budget -= 1;
            caused.push(self.build(child, children, budget, visited));
        }
        Explanation {
            id,
            type_name: record.type_name,
            topic: record.topic.to_string(),
            seq: record.seq,
            published_at: record.published_at,
            caused_by: record.caused_by,
            correlation_id: record.correlation_id,
            steps: record
                .steps
                .iter()
                .map(|step| TraceStep {
                    subscriber: step.subscriber.to_string(),
                    subscriber_id: step.subscriber_id,
                    outcome: step.outcome.clone(),
                })
                .collect(),
            steps_omitted: record.steps_omitted,
            caused,
            caused_omitted,
        }
    }
}

/// Whether a step would be recorded anywhere (see [`record`]): to skip gathering
/// what only traces need.
pub(crate) fn wanted(traces: Option<&Traces>) -> bool {
    traces.is_some() || emits()
}

/// Whether `tracing` wants steps: never without the feature.
fn emits() -> bool {
    #[cfg(feature = "tracing")]
    return crate::telemetry::wants_steps();
    #[cfg(not(feature = "tracing"))]
    false
}

/// Records a step of `env`'s delivery to a subscriber wherever it is wanted: the
/// bus's store (`traces`), and with the `tracing` feature, `tracing` (see
/// `telemetry`). `outcome` runs only if one of them wants it.
pub(crate) fn record<E>(
    traces: Option<&Traces>,
    env: &Envelope<E>,
    subscriber_id: SubscriberId,
    subscriber: &Arc<str>,
    outcome: impl FnOnce() -> TraceOutcome,
) {
    let emits = emits();
    if traces.is_none() && !emits {
        return;
    }
    let outcome = outcome();
    #[cfg(feature = "tracing")]
    if emits {
        crate::telemetry::step(env, subscriber, &outcome);
    }
    if let Some(traces) = traces {
        traces.step(env.id(), subscriber_id, subscriber, outcome);
    }
}

/// Cuts an error's text to [`MAX_ERROR_LEN`] bytes, on a character boundary.
pub(crate) fn clip(error: &str) -> String {
    if error.len() <= MAX_ERROR_LEN {
        return error.to_owned();
    }
    let mut end = MAX_ERROR_LEN;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &error[..end])
}

/// What [`Bus::explain`](crate::Bus::explain) knows of one event: where it was
/// published, what each subscriber did with it, and the events it caused.
///
/// Prints as a tree (`Display`):
///
/// ```text
/// event 5f0c…0001 (app::PaymentRequested) on "payments", seq 1
/// ├─ charge: attempt 1 failed in 12µs: card declined; retry in 10ms
/// ├─ audit: handled attempt 1 in 3µs
/// ├─ charge: attempt 2 failed in 9µs: card declined; dead-lettered
/// └─ caused event 7a21…0000 (crier::DeadLetter<app::PaymentRequested>) on "…", seq 0
///    └─ alerts: handled attempt 1 in 5µs
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Explanation {
    /// The event.
    pub id: EventId,
    /// Its Rust type.
    pub type_name: &'static str,
    /// Its topic.
    pub topic: String,
    /// Its `seq` in the topic.
    pub seq: u64,
    /// When it was published, on the bus clock.
    pub published_at: SystemTime,
    /// The event whose handler published it.
    pub caused_by: Option<EventId>,
    /// Its correlation id.
    pub correlation_id: EventId,
    /// What its subscribers did with it, in the order it happened.
    pub steps: Vec<TraceStep>,
    /// Steps beyond the 64 an event keeps, counted, not kept.
    pub steps_omitted: u64,
    /// The events its handlers published (and so on), in publish order, as far as the
    /// store still holds them.
    pub caused: Vec<Explanation>,
    /// Caused events left out: one explanation lists at most 1,000.
    pub caused_omitted: usize,
}

impl Explanation {
    /// The steps of the subscriber named `name`.
    pub fn steps_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a TraceOutcome> + 'a {
        self.steps
            .iter()
            .filter(move |s| s.subscriber == name)
            .map(|s| &s.outcome)
    }

    fn write_tree(&self, f: &mut fmt::Formatter<'_>, indent: &str) -> fmt::Result {
        writeln!(
            f,
            "event {} ({}) on \"{}\", seq {}",
            self.id, self.type_name, self.topic, self.seq
        )?;
        let mut lines: Vec<Line<'_>> = self.steps.iter().map(Line::Step).collect();
        if self.steps_omitted > 0 {
            lines.push(Line::Omitted(self.steps_omitted, "steps"));
        }
        if self.steps.is_empty() && self.steps_omitted == 0 {
            lines.push(Line::Nothing);
        }
        lines.extend(self.caused.iter().map(Line::Caused));
        if self.caused_omitted > 0 {
            lines.push(Line::Omitted(self.caused_omitted as u64, "caused events"));
        }
        for (i, line) in lines.iter().enumerate() {
            let last = i + 1 == lines.len();
            let (branch, rest) = if last { ("└─ ", "   ") } else { ("├─ ", "│  ") };
            write!(f, "{indent}{branch}")?;
            match line {
                Line::Step(step) => writeln!(f, "{step}")?,
                Line::Omitted(n, what) => writeln!(f, "… {n} more {what} not kept")?,
                Line::Nothing => writeln!(f, "no subscriber has taken it yet")?,
                Line::Caused(child) => {
                    write!(f, "caused ")?;
                    child.write_tree(f, &format!("{indent}{rest}"))?;
                }
            }
        }
        Ok(())
    }
}

enum Line<'a> {
    Step(&'a TraceStep),
    Omitted(u64, &'static str),
    Nothing,
    Caused(&'a Explanation),
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_tree(f, "")
    }
}

/// One thing a subscriber or receiver did with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct TraceStep {
    /// The subscriber's name.
    pub subscriber: String,
    /// The subscriber's id.
    pub subscriber_id: SubscriberId,
    /// What happened.
    pub outcome: TraceOutcome,
}

impl fmt::Display for TraceStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.subscriber, self.outcome)
    }
}

/// What happened at one step of an event's delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TraceOutcome {
    /// The handler succeeded.
    Handled {
        /// The attempt (1 for the first).
        attempt: u32,
        /// How long the handler ran.
        took: Duration,
    },
    /// The handler failed (an `Err` or a panic), or an ack receiver's delivery was
    /// nacked or dropped without an ack.
    Failed {
        /// The attempt (1 for the first).
        attempt: u32,
        /// How long the handler ran (`None` for a receiver).
        took: Option<Duration>,
        /// The error's text, cut to 256 bytes.
        error: String,
        /// What came of it.
        then: AfterFailure,
    },
    /// A receiver took it (at-least-once: handed out, to be acked).
    Received {
        /// The attempt (1 for the first).
        attempt: u32,
    },
    /// An ack receiver's delivery was acked.
    Acked {
        /// The attempt (1 for the first).
        attempt: u32,
    },
    /// Skipped: its idempotency key already succeeded for this subscriber.
    Deduplicated {
        /// The attempt (1 for the first).
        attempt: u32,
    },
    /// Dropped, never delivered to this subscriber.
    Dropped(DropReason),
}

/// What came of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AfterFailure {
    /// At-most-once: nothing, the event is done for this subscriber.
    Nothing,
    /// Another attempt, after this delay.
    Retry {
        /// The backoff before the next attempt.
        after: Duration,
    },
    /// The attempts ran out: a dead letter was sent.
    DeadLettered,
    /// The event could not come back (its subscriber left, or the bus shut down).
    Dropped(DropReason),
}

impl fmt::Display for TraceOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TraceOutcome::Handled { attempt, took } => write!(f, "handled attempt {attempt} in {took:?}"),
            TraceOutcome::Failed {
                attempt,
                took,
                error,
                then,
            } => {
                write!(f, "attempt {attempt} failed")?;
                if let Some(took) = took {
                    write!(f, " in {took:?}")?;
                }
                write!(f, ": {error}")?;
                match then {
                    AfterFailure::Nothing => Ok(()),
                    AfterFailure::Retry { after } => write!(f, "; retry in {after:?}"),
                    AfterFailure::DeadLettered => write!(f, "; dead-lettered"),
                    AfterFailure::Dropped(reason) => write!(f, "; dropped ({reason:?})"),
                }
            }
            TraceOutcome::Received { attempt } => write!(f, "received attempt {attempt}"),
            TraceOutcome::Acked { attempt } => write!(f, "acked attempt {attempt}"),
            TraceOutcome::Deduplicated { attempt } => {
                write!(f, "attempt {attempt} skipped: its idempotency key already succeeded")
            }
            TraceOutcome::Dropped(reason) => write!(f, "dropped ({reason:?})"),
        }
    }
}

/// How full the trace store is; see [`Bus::trace_stats`](crate::Bus::trace_stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct TraceStats {
    /// The most events kept.
    pub capacity: usize,
    /// Events kept now.
    pub kept: usize,
    /// Events evicted to make room for newer ones.
    pub evicted: u64,
}

/// Why [`Bus::explain`](crate::Bus::explain) has no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExplainError {
    /// The bus was built without [`BusBuilder::trace`](crate::BusBuilder::trace).
    #[error("delivery traces are off: build the bus with `BusBuilder::trace(capacity)`")]
    NotTracing,
    /// The event was traced, then evicted to make room for newer ones.
    #[error("event {0} was evicted from the trace store; a larger `trace` capacity keeps more")]
    Evicted(EventId),
    /// No event with this id was published on this bus while tracing.
    #[error("no event {0} was traced on this bus")]
    Unknown(EventId),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publish(traces: &Traces, seq: u64, caused_by: Option<EventId>) -> EventId {
        let id = EventId::new(7, seq);
        traces.published(Published {
            id,
            type_name: "T",
            topic: &TopicName::Type("t"),
            seq,
            published_at: SystemTime::UNIX_EPOCH,
            caused_by,
            correlation_id: id,
        });
        id
    }

    #[test]
    fn the_store_keeps_the_last_capacity_events_and_tells_evicted_from_unknown() {
        let traces = Traces::new(2);
        let first = publish(&traces, 0, None);
        publish(&traces, 1, None);
        let third = publish(&traces, 2, None);
        assert_eq!(traces.explain(first), Err(ExplainError::Evicted(first)));
        assert!(traces.explain(third).is_ok());
        let never = EventId::new(7, 9);
        assert_eq!(traces.explain(never), Err(ExplainError::Unknown(never)));
        let other_topic = EventId::new(8, 0);
        assert_eq!(traces.explain(other_topic), Err(ExplainError::Unknown(other_topic)));
        assert_eq!(
            traces.stats(),
            TraceStats {
                capacity: 2,
                kept: 2,
                evicted: 1
            }
        );
    }

    #[test]
    fn steps_beyond_the_bound_are_counted_not_kept() {
        let traces = Traces::new(4);
        let id = publish(&traces, 0, None);
        for attempt in 0..MAX_STEPS as u32 + 3 {
            traces.step(id, SubscriberId(1), &Arc::from("s"), TraceOutcome::Received { attempt });
        }
        let explained = traces.explain(id).unwrap();
        assert_eq!(explained.steps.len(), MAX_STEPS);
        assert_eq!(explained.steps_omitted, 3);
        assert!(explained.to_string().contains("… 3 more steps not kept"));
    }

    #[test]
    fn caused_events_form_a_tree_in_publish_order() {
        let traces = Traces::new(10);
        let root = publish(&traces, 0, None);
        let a = publish(&traces, 1, Some(root));
        let b = publish(&traces, 2, Some(root));
        let a1 = publish(&traces, 3, Some(a));
        let tree = traces.explain(root).unwrap();
        let ids: Vec<_> = tree.caused.iter().map(|e| e.id).collect();
        assert_eq!(ids, [a, b]);
        assert_eq!(tree.caused[0].caused[0].id, a1);
        assert!(tree.caused[1].caused.is_empty());
    }

    #[test]
    fn long_errors_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_ERROR_LEN);
        let cut = clip(&long);
        assert!(cut.len() <= MAX_ERROR_LEN + '…'.len_utf8());
        assert!(cut.ends_with('…'));
        assert_eq!(clip("short"), "short");
    }
}
