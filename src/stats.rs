//! Counters and the snapshots `Bus::stats` returns.

use std::fmt;

use crate::delivery::Delivery;
use crate::latency::{Histogram, Latency};
use crate::policy::{Dispatch, DropReason, Overflow};
use crate::sync::{AtomicU64, Mutex, Ordering};

/// Identifies one subscriber or receiver for the lifetime of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SubscriberId(pub(crate) u64);

impl SubscriberId {
    pub(crate) fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        SubscriberId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Display for SubscriberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// One subscriber's live counters. Relaxed: they are read at quiet points, after
/// `wait_idle` or a handler's return has ordered them (see `in_flight`).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Written under the topic's commit lock only (see [`Counters::add_exclusive`]).
    pub(crate) accepted: AtomicU64,
    /// Written under the run lock for push subscribers; by any receiving thread for
    /// receivers.
    pub(crate) delivered: AtomicU64,
    pub(crate) failed: AtomicU64,
    /// At-least-once: failed attempts that were scheduled for another one.
    pub(crate) retried: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    /// At-least-once: events waiting for a retry now.
    pub(crate) retrying: AtomicU64,
    /// Events skipped because their key already succeeded (dedup window).
    pub(crate) deduplicated: AtomicU64,
    /// Keys in the dedup window after its last change.
    pub(crate) dedup_keys: AtomicU64,
    /// Keys the dedup window evicted to stay within its capacity.
    pub(crate) dedup_evicted: AtomicU64,
    /// Of `dropped[Shutdown]`: events that were waiting for a retry.
    pub(crate) abandoned_retries: AtomicU64,
    /// A group member's events that waited for a retry when it left, given back to
    /// its group for another member.
    pub(crate) handed_over: AtomicU64,
    pub(crate) dropped: [AtomicU64; 5],
    pub(crate) refused: AtomicU64,
    /// `DropOldest` evictions not yet reported to a receiver as `Lagged`.
    pub(crate) unreported_lag: AtomicU64,
    pub(crate) last_error: Mutex<Option<String>>,
    /// The handler's sampled durations.
    pub(crate) latency: Histogram,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sub(counter: &AtomicU64, n: u64) {
        counter.fetch_sub(n, Ordering::Relaxed);
    }

    /// Adds without a read-modify-write, for a counter whose writers all hold one lock:
    /// a plain load and store are then exact, and readers still see whole values.
    pub(crate) fn add_exclusive(counter: &AtomicU64, n: u64) {
        counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    pub(crate) fn drop_n(&self, reason: DropReason, n: u64) {
        Counters::add(&self.dropped[reason.index()], n);
    }

    pub(crate) fn dropped(&self) -> DropCounts {
        let get = |r: DropReason| self.dropped[r.index()].load(Ordering::Relaxed);
        DropCounts {
            newest: get(DropReason::Newest),
            oldest: get(DropReason::Oldest),
            block_timeout: get(DropReason::BlockTimeout),
            unsubscribed: get(DropReason::Unsubscribed),
            shutdown: get(DropReason::Shutdown),
        }
    }
}

/// Events dropped for one subscriber, by [`DropReason`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct DropCounts {
    /// [`DropReason::Newest`].
    pub newest: u64,
    /// [`DropReason::Oldest`].
    pub oldest: u64,
    /// [`DropReason::BlockTimeout`].
    pub block_timeout: u64,
    /// [`DropReason::Unsubscribed`].
    pub unsubscribed: u64,
    /// [`DropReason::Shutdown`].
    pub shutdown: u64,
}

impl DropCounts {
    /// All drops, whatever the reason.
    pub fn total(&self) -> u64 {
        self.newest + self.oldest + self.block_timeout + self.unsubscribed + self.shutdown
    }

    /// The count for one reason.
    pub fn get(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::Newest => self.newest,
            DropReason::Oldest => self.oldest,
            DropReason::BlockTimeout => self.block_timeout,
            DropReason::Unsubscribed => self.unsubscribed,
            DropReason::Shutdown => self.shutdown,
        }
    }

    pub(crate) fn add(&mut self, other: &DropCounts) {
        self.newest += other.newest;
        self.oldest += other.oldest;
        self.block_timeout += other.block_timeout;
        self.unsubscribed += other.unsubscribed;
        self.shutdown += other.shutdown;
    }
}

/// How a subscriber consumes its mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub enum Consumer {
    /// A push handler, run where [`Dispatch`] says.
    Handler(Dispatch),
    /// A [`Receiver`](crate::Receiver) the user drains.
    Receiver,
}

/// A snapshot of one subscriber's counters.
///
/// The accounting identity (promise 1) reads
/// `delivered + failed + dead_lettered + deduplicated + dropped.total() + queued + retrying + unacked + handed_over == accepted`;
/// it holds whenever no handler is running and no publish is in progress, for instance
/// after [`Bus::wait_idle`](crate::Bus::wait_idle). [`is_balanced`](Self::is_balanced)
/// checks it. Each accepted event is in exactly one of those: handled, failed for good
/// (at-most-once), dead-lettered (at-least-once), skipped as a duplicate, dropped,
/// still queued, waiting for a retry, out in an [`AckHandle`](crate::AckHandle), or
/// handed over to the rest of its group when it left.
/// `retried` is not in it: it counts failed attempts, not events.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct SubscriberStats {
    /// The subscriber's id.
    pub id: SubscriberId,
    /// Its name (given on the builder, or `subscriber-{id}`).
    pub name: String,
    /// The topic it listens to.
    pub topic: String,
    /// The consumer group it is a member of ([`SubscriberBuilder::group`](crate::SubscriberBuilder::group)).
    pub group: Option<String>,
    /// How it consumes.
    pub consumer: Consumer,
    /// Its overflow policy.
    pub overflow: Overflow,
    /// Its delivery policy.
    pub delivery: Delivery,
    /// Its priority ([`SubscriberBuilder::priority`](crate::SubscriberBuilder::priority)).
    pub priority: i32,
    /// How many of its handlers may run at once
    /// ([`SubscriberBuilder::concurrency`](crate::SubscriberBuilder::concurrency)); 1:
    /// one at a time.
    pub concurrency: usize,
    /// Its mailbox capacity; `None`: unbounded.
    pub capacity: Option<usize>,
    /// Events it accepted: matched its filter in a publish that returned `Ok`. For a
    /// group member: events it took from its group's queue.
    pub accepted: u64,
    /// Events its handler handled successfully, or its receiver handed out (an ack
    /// receiver: acked).
    pub delivered: u64,
    /// Events whose handler failed (returned `Err` or panicked) under at-most-once
    /// delivery, or whose filter panicked. At-least-once failures are `retried`, then
    /// `dead_lettered`.
    pub failed: u64,
    /// At-least-once: failed attempts that were followed by another attempt.
    pub retried: u64,
    /// At-least-once: events whose attempts ran out, made into
    /// [`DeadLetter`](crate::DeadLetter)s.
    pub dead_lettered: u64,
    /// At-least-once: events waiting for their next attempt now.
    pub retrying: u64,
    /// [`AckReceiver`](crate::AckReceiver): handles out now, received and not yet
    /// settled.
    pub unacked: u64,
    /// Dead letters kept in this subscriber's store because they reached nobody
    /// (see [`Subscription::dead_letters`](crate::Subscription::dead_letters)).
    pub dead_letters_kept: u64,
    /// Dead letters evicted from the full store, oldest first.
    pub dead_letters_evicted: u64,
    /// Events skipped because their idempotency key already succeeded for this
    /// subscriber within its [`DedupWindow`](crate::DedupWindow).
    pub deduplicated: u64,
    /// Keys its dedup window remembers (at most the window's capacity). Reading the
    /// stats first forgets the keys that aged out, unless its handler is running.
    pub dedup_keys: u64,
    /// Keys its dedup window forgot early to stay within its capacity (keys that aged
    /// out are not counted): an event repeating one of those is delivered again.
    pub dedup_evicted: u64,
    /// Accepted events dropped instead of handled, by reason.
    pub dropped: DropCounts,
    /// Publishes refused (`Err(Full)`, `Err(Timeout)`) because of this subscriber's full
    /// mailbox. Refused events were not accepted, so they are not in the identity.
    pub refused: u64,
    /// Events waiting in its mailbox now (a group member has none: its group's queue
    /// is in [`GroupStats`]).
    pub queued: u64,
    /// A group member that left: events that were waiting for a retry, given back to
    /// its group for another member to take (with their attempt count).
    pub handed_over: u64,
    /// The most events its mailbox ever held at once.
    pub high_water: u64,
    /// The text of its latest failure.
    pub last_error: Option<String>,
    /// How long its handler takes, from one invocation in 16 (a receiver's stays
    /// empty).
    pub latency: Latency,
}

impl SubscriberStats {
    /// Every counter at zero.
    pub(crate) fn zero(id: SubscriberId, name: String, topic: String, consumer: Consumer, overflow: Overflow) -> Self {
        SubscriberStats {
            id,
            name,
            topic,
            group: None,
            consumer,
            overflow,
            delivery: Delivery::AtMostOnce,
            priority: 0,
            concurrency: 1,
            capacity: None,
            accepted: 0,
            delivered: 0,
            failed: 0,
            retried: 0,
            dead_lettered: 0,
            retrying: 0,
            unacked: 0,
            dead_letters_kept: 0,
            dead_letters_evicted: 0,
            deduplicated: 0,
            dedup_keys: 0,
            dedup_evicted: 0,
            dropped: DropCounts::default(),
            refused: 0,
            queued: 0,
            handed_over: 0,
            high_water: 0,
            last_error: None,
            latency: Latency::default(),
        }
    }

    /// `delivered + failed + dead_lettered + deduplicated + dropped + queued + retrying
    /// + unacked + handed_over == accepted` (see the type's docs for when it must hold).
    pub fn is_balanced(&self) -> bool {
        let settled = self.delivered + self.failed + self.dead_lettered + self.deduplicated;
        let waiting = self.queued + self.retrying + self.unacked;
        settled + self.dropped.total() + waiting + self.handed_over == self.accepted
    }
}

/// A snapshot of one consumer group's queue: what its topic gave the group, and where
/// each event went. Each member's own counters are in [`BusStats::subscribers`]
/// (their `accepted` is what they took from this queue).
///
/// The group's identity: `handed_out + dropped.total() + queued == accepted + handed_back`,
/// whenever no publish is in progress and no member is taking an event.
/// [`is_balanced`](Self::is_balanced) checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct GroupStats {
    /// The group's name.
    pub name: String,
    /// The topic it listens to.
    pub topic: String,
    /// Members now.
    pub members: usize,
    /// Its members are receivers: what it queues waits for their owners (it is not in
    /// flight, and stays for them at shutdown).
    pub receivers: bool,
    /// Its queue's capacity (every member's); `None`: unbounded.
    pub capacity: Option<usize>,
    /// Its queue's overflow policy (every member's).
    pub overflow: Overflow,
    /// Events the topic gave the group (one per publish, whichever member takes it).
    pub accepted: u64,
    /// Events members took from the queue.
    pub handed_out: u64,
    /// Events a member that left gave back (they were waiting for its retry).
    pub handed_back: u64,
    /// Accepted events dropped from the queue, by reason (overflow, the last member
    /// leaving, shutdown).
    pub dropped: DropCounts,
    /// Publishes refused because the queue was full.
    pub refused: u64,
    /// Events waiting in the queue now.
    pub queued: u64,
    /// The most events the queue ever held at once.
    pub high_water: u64,
}

impl GroupStats {
    /// `handed_out + dropped + queued == accepted + handed_back` (see the type's docs).
    pub fn is_balanced(&self) -> bool {
        self.handed_out + self.dropped.total() + self.queued == self.accepted + self.handed_back
    }
}

/// A snapshot of one topic's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct TopicStats {
    /// The topic's name.
    pub name: String,
    /// The event type it carries.
    pub event_type: &'static str,
    /// Publishes accepted (returned `Ok`); also the next `seq`.
    pub published: u64,
    /// Accepted publishes that matched no subscriber.
    pub unrouted: u64,
    /// Publishes that returned `Ok` as duplicates of an accepted one (see
    /// [`Topic::set_dedup_window`](crate::Topic::set_dedup_window)); not in `published`.
    pub deduplicated: u64,
    /// Keys the topic's dedup window remembers now (at most its capacity).
    pub dedup_keys: u64,
    /// Keys its dedup window forgot early to stay within its capacity (keys that aged
    /// out are not counted).
    pub dedup_evicted: u64,
    /// Publishes refused with `Err` (full, timed out, closed).
    pub refused: u64,
    /// Live subscribers and receivers.
    pub subscribers: usize,
    /// Events its history keeps now (see [`Topic::set_retention`](crate::Topic::set_retention)).
    pub history_len: u64,
    /// Events its history let go by its count or age bound.
    pub history_evicted: u64,
    /// Events its compacted history replaced by a newer one with the same key.
    pub history_compacted: u64,
}

/// A snapshot of the whole bus, from [`Bus::stats`](crate::Bus::stats).
///
/// With the `serde` feature it implements `Serialize`. `Display` prints aligned tables.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct BusStats {
    /// Every topic opened so far, sorted by name.
    pub topics: Vec<TopicStats>,
    /// Every live subscriber and receiver, in subscription order.
    pub subscribers: Vec<SubscriberStats>,
    /// Every consumer group, in the order they were made.
    pub groups: Vec<GroupStats>,
    /// Push deliveries queued or running now.
    pub in_flight: usize,
}

impl BusStats {
    /// The subscriber with this name, if exactly one has it.
    pub fn subscriber(&self, name: &str) -> Option<&SubscriberStats> {
        let mut found = self.subscribers.iter().filter(|s| s.name == name);
        found.next().filter(|_| found.next().is_none())
    }

    /// The topic with this name.
    pub fn topic(&self, name: &str) -> Option<&TopicStats> {
        self.topics.iter().find(|t| t.name == name)
    }

    /// The group with this name, if exactly one has it (one name may be a group on
    /// several topics).
    pub fn group(&self, name: &str) -> Option<&GroupStats> {
        let mut found = self.groups.iter().filter(|g| g.name == name);
        found.next().filter(|_| found.next().is_none())
    }
}

/// A duration in a few characters for the table ("850ns", "1.2µs", "35ms"); "-" for
/// none.
fn short(d: Option<std::time::Duration>) -> String {
    let Some(d) = d else {
        return "-".to_owned();
    };
    let nanos = d.as_nanos() as f64;
    let (value, unit) = match nanos {
        n if n < 1e3 => (n, "ns"),
        n if n < 1e6 => (n / 1e3, "µs"),
        n if n < 1e9 => (n / 1e6, "ms"),
        n => (n / 1e9, "s"),
    };
    match value < 10.0 && unit != "ns" {
        true => format!("{value:.1}{unit}"),
        false => format!("{value:.0}{unit}"),
    }
}

impl fmt::Display for BusStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let topic_width = self.topics.iter().map(|t| t.name.len()).max().unwrap_or(0).max(5);
        writeln!(
            f,
            "{:<topic_width$}  {:>10}  {:>9}  {:>8}  {:>10}  {:>7}  {:>5}",
            "topic", "published", "unrouted", "refused", "duplicates", "history", "subs"
        )?;
        for t in &self.topics {
            writeln!(
                f,
                "{:<topic_width$}  {:>10}  {:>9}  {:>8}  {:>10}  {:>7}  {:>5}",
                t.name, t.published, t.unrouted, t.refused, t.deduplicated, t.history_len, t.subscribers
            )?;
        }
        let name_width = self.subscribers.iter().map(|s| s.name.len()).max().unwrap_or(0).max(10);
        writeln!(f)?;
        writeln!(
            f,
            "{:<name_width$}  {:>9}  {:>9}  {:>6}  {:>7}  {:>4}  {:>7}  {:>6}  {:>4}  {:>7}  {:>7}",
            "subscriber",
            "accepted",
            "delivered",
            "failed",
            "retried",
            "dead",
            "dropped",
            "queued",
            "peak",
            "p50",
            "p99"
        )?;
        for s in &self.subscribers {
            writeln!(
                f,
                "{:<name_width$}  {:>9}  {:>9}  {:>6}  {:>7}  {:>4}  {:>7}  {:>6}  {:>4}  {:>7}  {:>7}",
                s.name,
                s.accepted,
                s.delivered,
                s.failed,
                s.retried,
                s.dead_lettered,
                s.dropped.total(),
                s.queued + s.retrying + s.unacked,
                s.high_water,
                short(s.latency.p50),
                short(s.latency.p99),
            )?;
        }
        if !self.groups.is_empty() {
            let name_width = self.groups.iter().map(|g| g.name.len()).max().unwrap_or(0).max(5);
            writeln!(f)?;
            writeln!(
                f,
                "{:<name_width$}  {:>7}  {:>9}  {:>10}  {:>11}  {:>7}  {:>6}  {:>4}",
                "group", "members", "accepted", "handed out", "handed back", "dropped", "queued", "peak"
            )?;
            for g in &self.groups {
                writeln!(
                    f,
                    "{:<name_width$}  {:>7}  {:>9}  {:>10}  {:>11}  {:>7}  {:>6}  {:>4}",
                    g.name,
                    g.members,
                    g.accepted,
                    g.handed_out,
                    g.handed_back,
                    g.dropped.total(),
                    g.queued,
                    g.high_water
                )?;
            }
        }
        write!(f, "in flight: {}", self.in_flight)
    }
}
