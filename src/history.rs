//! A topic's history: the events it keeps under its [`Retention`], and reading them
//! back from an [`Offset`].
//!
//! # Design
//!
//! The store ([`Log`]) lives under the topic's commit lock, beside `next_seq`: a publish
//! appends its envelope in the same hold of the lock that gives it its `seq`, so the
//! history is in `seq` order and holds every accepted event from the moment retention
//! was set (duplicates and refused publishes take no `seq` and never enter it). A
//! reader holds the lock only to clone the envelopes it wants (one reference count
//! each) and reads them after releasing it, so a replay's closure runs with no lock
//! held: it may publish, subscribe, or change the retention.
//!
//! The log is a deque of slots, oldest first. An event of a compacted topic whose key
//! comes again leaves a `Compacted` slot that keeps its `seq`, so the slots stay sorted
//! by `seq` and finding an offset is a binary search. Holes at the front go at once,
//! and once holes outnumber events the deque is swept (amortised O(1) per publish), so
//! the slots never exceed twice the events kept, plus 32.
//!
//! # What is still there: the floor
//!
//! Every accepted event with `seq >= floor` is in the log, unless compaction replaced
//! it by a newer one with its key. The floor starts at the next `seq` when retention is
//! set (earlier events were never kept) and moves past each event let go by the count
//! or the age bound. `gap_stamp` is the newest publish time among the events below the
//! floor that are gone (or, for those before retention was set, the time it was set):
//! reading "since `t`" has a gap exactly when `t <= gap_stamp`.
//!
//! Ages are checked from the front: an event leaves once it is `max_age` old and so is
//! every event before it, which keeps the floor exact whatever the clock does.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::ops::Bound;
use std::time::SystemTime;

use crate::dedup::{KeyHash, KeyHasher};
use crate::envelope::Envelope;
use crate::error::ReplayError;
use crate::retention::Retention;
use crate::stamp::{nanos, Stamp};

/// Where reading a topic's history starts: [`Topic::history_from`](crate::Topic::history_from)
/// and [`Topic::replay`](crate::Topic::replay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offset {
    /// The oldest event kept; never an error, whatever was let go before it.
    Earliest,
    /// The next event to be published: nothing from the history.
    Latest,
    /// The event with this `seq` (or, in a compacted topic, the first kept after it).
    /// An error if that event was let go, or was published before retention was set
    /// ([`ReplayError::Evicted`]), or is past the next offset ([`ReplayError::Future`]);
    /// the next offset itself gives an empty history.
    At(u64),
    /// The oldest event kept that was published at or after this time (on the bus
    /// [`Clock`](crate::Clock)), and every event after it. An error
    /// ([`ReplayError::Evicted`]) if an event published at or after that time was let go.
    Since(SystemTime),
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Offset::Earliest => f.write_str("the earliest offset"),
            Offset::Latest => f.write_str("the latest offset"),
            Offset::At(seq) => write!(f, "offset {seq}"),
            Offset::Since(time) => write!(f, "the events since {time:?}"),
        }
    }
}

/// A snapshot of (part of) a topic's history, oldest first: from
/// [`Topic::history`](crate::Topic::history), [`history_from`](crate::Topic::history_from)
/// or [`history_range`](crate::Topic::history_range).
///
/// It holds the envelopes themselves (one reference count each, the events are not
/// copied), so it stays whole whatever the topic lets go afterwards.
pub struct History<E> {
    events: Vec<Envelope<E>>,
    next_offset: u64,
}

impl<E> History<E> {
    /// The events, oldest first.
    pub fn iter(&self) -> std::slice::Iter<'_, Envelope<E>> {
        self.events.iter()
    }

    /// The events, oldest first.
    pub fn as_slice(&self) -> &[Envelope<E>] {
        &self.events
    }

    /// How many events it holds.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// `true` when it holds no event.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The topic's next offset when the snapshot was taken: reading again from
    /// `Offset::At(next_offset)` continues exactly after it.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }
}

impl<E> IntoIterator for History<E> {
    type Item = Envelope<E>;
    type IntoIter = std::vec::IntoIter<Envelope<E>>;

    fn into_iter(self) -> Self::IntoIter {
        self.events.into_iter()
    }
}

impl<'a, E> IntoIterator for &'a History<E> {
    type Item = &'a Envelope<E>;
    type IntoIter = std::slice::Iter<'a, Envelope<E>>;

    fn into_iter(self) -> Self::IntoIter {
        self.events.iter()
    }
}

impl<E> fmt::Debug for History<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("History")
            .field("events", &self.events.len())
            .field("first", &self.events.first().map(Envelope::seq))
            .field("next_offset", &self.next_offset)
            .finish()
    }
}

enum Slot<E> {
    Event(Envelope<E>),
    /// An event replaced by a newer one with its key: only its `seq` is kept.
    Compacted(u64),
}

impl<E> Slot<E> {
    fn seq(&self) -> u64 {
        match self {
            Slot::Event(env) => env.seq(),
            Slot::Compacted(seq) => *seq,
        }
    }
}

/// Holes tolerated before a sweep, however few events are kept.
const SWEEP_AFTER: usize = 32;

/// A topic's kept events (see the module docs). Guarded by the topic's commit lock.
pub(crate) struct Log<E> {
    retention: Retention,
    /// The age bound in nanoseconds.
    max_age: Option<i64>,
    slots: VecDeque<Slot<E>>,
    /// `Compacted` slots in `slots`.
    holes: usize,
    /// Compacted topics: the `seq` of the latest event per key.
    latest: HashMap<KeyHash, u64>,
    hasher: KeyHasher,
    floor: u64,
    gap_stamp: Option<Stamp>,
    /// Events let go by the count or the age bound.
    evicted: u64,
    /// Events replaced by a newer one with their key.
    compacted: u64,
}

/// What a topic with no retention would answer: nothing kept, everything before
/// `next` gone, published at most at `now`.
fn nothing_kept(next: u64, now: Stamp) -> (u64, Option<Stamp>) {
    (next, (next > 0).then_some(now))
}

impl<E> Log<E> {
    /// A log that keeps what is published from `next` on, set at `now`.
    pub(crate) fn new(retention: Retention, next: u64, now: Stamp) -> Log<E> {
        let (floor, gap_stamp) = nothing_kept(next, now);
        Log {
            retention,
            max_age: retention.age().map(nanos),
            slots: VecDeque::new(),
            holes: 0,
            latest: HashMap::new(),
            hasher: KeyHasher::new(),
            floor,
            gap_stamp,
            evicted: 0,
            compacted: 0,
        }
    }

    pub(crate) fn retention(&self) -> Retention {
        self.retention
    }

    /// Events kept.
    pub(crate) fn len(&self) -> usize {
        self.slots.len() - self.holes
    }

    pub(crate) fn evicted(&self) -> u64 {
        self.evicted
    }

    pub(crate) fn compacted(&self) -> u64 {
        self.compacted
    }

    /// The oldest event kept.
    pub(crate) fn oldest(&self) -> Option<u64> {
        // Holes never stay at the front.
        self.slots.front().map(Slot::seq)
    }

    /// Appends the event just accepted (its `seq` is the next one), and lets go what
    /// the bounds no longer keep, into `gone` (to drop outside the lock).
    pub(crate) fn push(&mut self, env: Envelope<E>, gone: &mut Vec<Envelope<E>>) {
        if self.retention.is_compacted() {
            if let Some(key) = env.key() {
                let key = self.hasher.hash_text(key);
                if let Some(older) = self.latest.insert(key, env.seq()) {
                    self.replace(older, gone);
                }
            }
        }
        let now = env.stamp();
        self.slots.push_back(Slot::Event(env));
        self.trim(now, gone);
    }

    /// Takes in an import staged in a log of its own (see `export`): its floor, what it
    /// let go, and then its events, as if they had been published here. Only when this
    /// log is empty, or the import follows it directly.
    #[cfg(feature = "serde")]
    pub(crate) fn absorb(&mut self, staged: Log<E>, gone: &mut Vec<Envelope<E>>) {
        self.floor = self.floor.max(staged.floor);
        self.gap_stamp = self.gap_stamp.max(staged.gap_stamp);
        self.evicted += staged.evicted;
        self.compacted += staged.compacted;
        for slot in staged.slots {
            if let Slot::Event(env) = slot {
                self.push(env, gone);
            }
        }
    }

    /// Compaction: the event at `seq` gave way to a newer one with its key.
    fn replace(&mut self, seq: u64, gone: &mut Vec<Envelope<E>>) {
        if let Ok(i) = self.slots.binary_search_by_key(&seq, Slot::seq) {
            self.compact_slot(i, gone);
        }
    }

    /// The event in slot `i` is replaced by a newer one with its key.
    fn compact_slot(&mut self, i: usize, gone: &mut Vec<Envelope<E>>) {
        let seq = self.slots[i].seq();
        if let Slot::Event(env) = std::mem::replace(&mut self.slots[i], Slot::Compacted(seq)) {
            self.holes += 1;
            self.compacted += 1;
            gone.push(env);
        }
    }

    /// Applies the bounds as of `now`.
    pub(crate) fn trim(&mut self, now: Stamp, gone: &mut Vec<Envelope<E>>) {
        loop {
            let expired = match self.slots.front() {
                None => break,
                Some(Slot::Compacted(_)) => {
                    self.slots.pop_front();
                    self.holes -= 1;
                    continue;
                }
                Some(Slot::Event(env)) => self.max_age.is_some_and(|age| env.stamp().plus(age).has_come(now)),
            };
            let over = self.retention.events().is_some_and(|n| self.len() > n);
            if !(expired || over) {
                break;
            }
            if let Some(Slot::Event(env)) = self.slots.pop_front() {
                self.let_go(env, gone);
            }
        }
        if self.holes > SWEEP_AFTER && self.holes > self.len() {
            self.slots.retain(|slot| matches!(slot, Slot::Event(_)));
            self.holes = 0;
        }
    }

    /// The front event leaves by the count or the age bound.
    fn let_go(&mut self, env: Envelope<E>, gone: &mut Vec<Envelope<E>>) {
        self.floor = env.seq() + 1;
        self.gap_stamp = self.gap_stamp.max(Some(env.stamp()));
        self.evicted += 1;
        if self.retention.is_compacted() {
            if let Some(key) = env.key() {
                let key = self.hasher.hash_text(key);
                if self.latest.get(&key) == Some(&env.seq()) {
                    self.latest.remove(&key);
                }
            }
        }
        gone.push(env);
    }

    /// New bounds: applied at once (letting go what they no longer keep); turning
    /// compaction on compacts what is kept.
    pub(crate) fn set_retention(&mut self, retention: Retention, now: Stamp, gone: &mut Vec<Envelope<E>>) {
        let compacting = retention.is_compacted() && !self.retention.is_compacted();
        self.retention = retention;
        self.max_age = retention.age().map(nanos);
        if !retention.is_compacted() {
            self.latest = HashMap::new();
        }
        if compacting {
            // Newest first: the first event met with a key is its latest.
            for i in (0..self.slots.len()).rev() {
                let Slot::Event(env) = &self.slots[i] else { continue };
                let Some(key) = env.key() else { continue };
                let (key, seq) = (self.hasher.hash_text(key), env.seq());
                let is_latest = match self.latest.entry(key) {
                    Entry::Vacant(entry) => {
                        entry.insert(seq);
                        true
                    }
                    Entry::Occupied(_) => false,
                };
                if !is_latest {
                    self.compact_slot(i, gone);
                }
            }
        }
        self.trim(now, gone);
    }
}

impl<E> Log<E> {
    /// The events from `from` up to `end` (see [`read`]).
    fn read(&self, from: u64, end: Bound<u64>) -> Vec<Envelope<E>> {
        let start = self.slots.partition_point(|slot| slot.seq() < from);
        let before_end = |seq: u64| match end {
            Bound::Included(last) => seq <= last,
            Bound::Excluded(end) => seq < end,
            Bound::Unbounded => true,
        };
        self.slots
            .range(start..)
            .take_while(|slot| before_end(slot.seq()))
            .filter_map(|slot| match slot {
                Slot::Event(env) => Some(env.clone()),
                Slot::Compacted(_) => None,
            })
            .collect()
    }

    /// The `seq` of the oldest event kept published at or after `time`.
    fn first_since(&self, time: Stamp) -> Option<u64> {
        self.slots.iter().find_map(|slot| match slot {
            Slot::Event(env) if env.stamp() >= time => Some(env.seq()),
            _ => None,
        })
    }
}

/// Reads a topic's history from `from` up to `end`, given its log (`None`: no
/// retention), its next offset and the time now. Under the commit lock.
pub(crate) fn read<E>(
    log: Option<&Log<E>>,
    from: Offset,
    end: Bound<u64>,
    next: u64,
    now: Stamp,
) -> Result<History<E>, ReplayError> {
    let (floor, gap_stamp) = log.map_or_else(|| nothing_kept(next, now), |log| (log.floor, log.gap_stamp));
    let start = match from {
        Offset::Earliest => log.and_then(Log::oldest).unwrap_or(next),
        Offset::Latest => next,
        Offset::At(seq) if seq > next => return Err(ReplayError::Future { requested: seq, next }),
        Offset::At(seq) if seq < floor => {
            return Err(ReplayError::Evicted {
                requested: from,
                oldest: floor,
            })
        }
        Offset::At(seq) => seq,
        Offset::Since(time) => {
            let time = Stamp::of(time);
            if gap_stamp.is_some_and(|gap| gap >= time) {
                return Err(ReplayError::Evicted {
                    requested: from,
                    oldest: floor,
                });
            }
            log.and_then(|log| log.first_since(time)).unwrap_or(next)
        }
    };
    Ok(collect(log, start, end, next))
}

/// The events published from `from` (as `Offset::Since(from)`) up to the first one
/// published at or after `until`.
pub(crate) fn read_between<E>(
    log: Option<&Log<E>>,
    from: SystemTime,
    until: SystemTime,
    next: u64,
    now: Stamp,
) -> Result<History<E>, ReplayError> {
    let mut history = read(log, Offset::Since(from), Bound::Unbounded, next, now)?;
    let until = Stamp::of(until);
    let end = history.events.iter().position(|env| env.stamp() >= until);
    // The log still holds what is cut off: no event is dropped here.
    history.events.truncate(end.unwrap_or(history.events.len()));
    Ok(history)
}

/// Every event kept.
pub(crate) fn read_all<E>(log: Option<&Log<E>>, next: u64) -> History<E> {
    collect(log, 0, Bound::Unbounded, next)
}

fn collect<E>(log: Option<&Log<E>>, start: u64, end: Bound<u64>, next: u64) -> History<E> {
    History {
        events: log.map_or_else(Vec::new, |log| log.read(start, end)),
        next_offset: next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{EventId, Metadata, Shared};
    use std::time::Duration;

    const SEC: i64 = 1_000_000_000;

    fn event(seq: u64, at_secs: i64, key: Option<&str>) -> Envelope<u64> {
        let mut meta = Metadata::for_test(EventId::new(1, seq));
        meta.seq = seq;
        meta.published_at = Stamp(at_secs * SEC);
        meta.key = key.map(Into::into);
        Envelope::new(std::sync::Arc::new(Shared { event: seq, meta }))
    }

    fn seqs(history: &History<u64>) -> Vec<u64> {
        history.iter().map(|env| env.seq()).collect()
    }

    fn all(log: &Log<u64>, next: u64) -> Vec<u64> {
        seqs(&read(Some(log), Offset::Earliest, Bound::Unbounded, next, Stamp(0)).unwrap())
    }

    #[test]
    fn a_slot_is_16_bytes() {
        // What `Topic::set_retention` documents as the history's own cost per event.
        assert_eq!(std::mem::size_of::<Slot<[u8; 64]>>(), 16);
    }

    #[test]
    fn the_count_bound_lets_the_oldest_go_and_moves_the_floor() {
        let mut log = Log::new(Retention::last(3), 0, Stamp(0));
        let mut gone = Vec::new();
        for seq in 0..5 {
            log.push(event(seq, 0, None), &mut gone);
        }
        assert_eq!(all(&log, 5), [2, 3, 4]);
        assert_eq!((log.evicted(), gone.len(), log.floor), (2, 2, 2));
        let evicted = read(Some(&log), Offset::At(1), Bound::Unbounded, 5, Stamp(0));
        assert_eq!(
            evicted.unwrap_err(),
            ReplayError::Evicted {
                requested: Offset::At(1),
                oldest: 2
            }
        );
    }

    #[test]
    fn the_age_bound_is_checked_from_the_front() {
        let mut log = Log::new(Retention::within(Duration::from_secs(10)), 0, Stamp(0));
        let mut gone = Vec::new();
        log.push(event(0, 0, None), &mut gone);
        log.push(event(1, 5, None), &mut gone);
        log.trim(Stamp(10 * SEC - 1), &mut gone);
        assert_eq!(log.len(), 2, "not yet 10 s old");
        log.trim(Stamp(10 * SEC), &mut gone);
        assert_eq!(all(&log, 2), [1], "gone at exactly max_age");
        assert_eq!(log.gap_stamp, Some(Stamp(0)));
    }

    #[test]
    fn compaction_keeps_the_latest_per_key_and_every_unkeyed_event() {
        let mut log = Log::new(Retention::last(100).compacted(), 0, Stamp(0));
        let mut gone = Vec::new();
        let keys = [Some("a"), Some("b"), None, Some("a"), None, Some("b"), Some("a")];
        for (seq, key) in keys.iter().enumerate() {
            log.push(event(seq as u64, 0, *key), &mut gone);
        }
        assert_eq!(all(&log, 7), [2, 4, 5, 6]);
        assert_eq!((log.compacted(), log.evicted(), log.floor), (3, 0, 0));
        // A compacted offset reads from the next event kept.
        let from_3 = read(Some(&log), Offset::At(3), Bound::Unbounded, 7, Stamp(0)).unwrap();
        assert_eq!(seqs(&from_3), [4, 5, 6]);
    }

    #[test]
    fn holes_are_swept_so_slots_stay_within_twice_the_events() {
        let mut log = Log::new(Retention::last(1_000).compacted(), 0, Stamp(0));
        let mut gone = Vec::new();
        log.push(event(0, 0, Some("pinned")), &mut gone);
        for seq in 1..10_000 {
            log.push(event(seq, 0, Some(if seq % 2 == 0 { "x" } else { "y" })), &mut gone);
            assert!(log.slots.len() <= 2 * log.len() + SWEEP_AFTER + 1);
        }
        assert_eq!(all(&log, 10_000), [0, 9_998, 9_999]);
    }

    #[test]
    fn turning_compaction_on_compacts_what_is_kept() {
        let mut log = Log::new(Retention::last(10), 0, Stamp(0));
        let mut gone = Vec::new();
        for (seq, key) in ["a", "b", "a", "a"].iter().enumerate() {
            log.push(event(seq as u64, 0, Some(key)), &mut gone);
        }
        log.set_retention(Retention::last(10).compacted(), Stamp(0), &mut gone);
        assert_eq!(all(&log, 4), [1, 3]);
        log.push(event(4, 0, Some("b")), &mut gone);
        assert_eq!(all(&log, 5), [3, 4]);
    }

    #[test]
    fn offsets_past_the_next_are_in_the_future_and_the_next_is_empty() {
        let log: Log<u64> = Log::new(Retention::last(3), 0, Stamp(0));
        let future = read(Some(&log), Offset::At(1), Bound::Unbounded, 0, Stamp(0));
        assert_eq!(future.unwrap_err(), ReplayError::Future { requested: 1, next: 0 });
        let next = read(Some(&log), Offset::At(0), Bound::Unbounded, 0, Stamp(0)).unwrap();
        assert!(next.is_empty());
    }

    #[test]
    fn since_a_time_is_an_error_only_if_an_event_at_or_after_it_is_gone() {
        let mut log = Log::new(Retention::last(2), 0, Stamp(0));
        let mut gone = Vec::new();
        for seq in 0..4 {
            log.push(event(seq, seq as i64, None), &mut gone);
        }
        let since = |secs: u64| {
            let time = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
            read(Some(&log), Offset::Since(time), Bound::Unbounded, 4, Stamp(0)).map(|h| seqs(&h))
        };
        assert_eq!(since(2), Ok(vec![2, 3]));
        assert_eq!(since(3), Ok(vec![3]));
        assert_eq!(since(9), Ok(vec![]));
        assert!(matches!(since(1), Err(ReplayError::Evicted { oldest: 2, .. })));
    }
}
