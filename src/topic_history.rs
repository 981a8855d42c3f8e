//! `Topic`'s history API: retention, reading the history, folding it, and the
//! offsets (the store is `history`; subscribing from an offset is
//! `SubscriberBuilder::start_at`, and export and import are in `export`).

use std::ops::{Bound, RangeBounds};
use std::time::SystemTime;

use crate::envelope::Envelope;
use crate::error::{ReplayError, TopicError};
use crate::history::{History, Offset};
use crate::retention::Retention;
use crate::topic::Topic;

impl<E: Send + Sync + 'static> Topic<E> {
    /// Keeps this topic's history within `retention` (see [`Retention`]), from the next
    /// publish on: every accepted event enters it (a duplicate or a refused publish
    /// takes no offset and does not), with its `seq` as its offset and all its
    /// metadata. Read it with [`history`](Self::history),
    /// [`history_from`](Self::history_from), [`history_range`](Self::history_range) or
    /// [`replay`](Self::replay). A topic without retention keeps nothing and pays
    /// nothing for it.
    ///
    /// Calling it again changes the bounds at once: events they no longer keep are let
    /// go (counted in [`TopicStats::history_evicted`](crate::TopicStats::history_evicted)),
    /// and turning compaction on compacts what is kept. Snapshots already taken keep
    /// their events.
    ///
    /// The history and the subscribers' queues are independent: letting an event go
    /// from the history never takes it from a subscriber that has not handled it, and
    /// the history keeps events every subscriber is done with.
    ///
    /// # Memory
    ///
    /// An event kept costs a 16-byte slot in the history (up to twice that while the
    /// history's buffer has room to grow into), and keeps its envelope alive: the event
    /// and its metadata, one allocation shared with the subscribers. Measured (B6 in
    /// `BENCHMARKS.md`, 10,000 events of 64 bytes): the history adds 26 bytes per
    /// event; with nobody else holding the events, it keeps 234 bytes alive per event
    /// beyond the event itself (most of it the metadata), 291 in a compacted history
    /// with a 16-byte key per event, its index of keys included.
    ///
    /// # Errors
    ///
    /// [`TopicError::InvalidConfig`] for a bound of zero (to keep nothing, call
    /// [`clear_retention`](Self::clear_retention)).
    ///
    /// # Example
    ///
    /// ```
    /// use crier::{Bus, Offset, Retention};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::new();
    /// let prices = bus.topic_named::<f64>("prices")?;
    /// prices.set_retention(Retention::last(1_000).compacted())?;
    /// prices.message(101.5).key("ACME").publish()?;
    /// prices.message(7.25).key("INIT").publish()?;
    /// prices.message(102.0).key("ACME").publish()?;
    ///
    /// // The current price per symbol, oldest first.
    /// let now: Vec<(String, f64)> = prices
    ///     .history()
    ///     .iter()
    ///     .map(|env| (env.key().unwrap_or_default().to_owned(), **env))
    ///     .collect();
    /// assert_eq!(now, [("INIT".to_owned(), 7.25), ("ACME".to_owned(), 102.0)]);
    /// # Ok(()) }
    /// ```
    pub fn set_retention(&self, retention: Retention) -> Result<(), TopicError> {
        self.core.set_retention(retention)
    }

    /// Stops keeping history and lets go of what was kept. Reading from an offset
    /// before the next one is then [`ReplayError::Evicted`].
    pub fn clear_retention(&self) {
        self.core.clear_retention();
    }

    /// The topic's retention, if one is set.
    pub fn retention(&self) -> Option<Retention> {
        self.core.retention()
    }

    /// A snapshot of every event kept, oldest first (see [`History`]). Taking it clones
    /// one reference per event while publishes to this topic wait, so mind its cost
    /// on a large history: [`history_from`](Self::history_from) and
    /// [`history_range`](Self::history_range) take only part.
    pub fn history(&self) -> History<E> {
        self.core.history()
    }

    /// A snapshot of the events kept from `from` on, oldest first. Reading again from
    /// `Offset::At(history.next_offset())` continues where it ended, with no gap and no
    /// event twice.
    ///
    /// # Errors
    ///
    /// [`ReplayError::Evicted`] if events from `from` on were let go (or never kept:
    /// retention was set after they were published); [`ReplayError::Future`] for an
    /// offset past the next one. See [`Offset`].
    ///
    /// # Example
    ///
    /// ```
    /// use crier::{Bus, Offset, ReplayError, Retention};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::new();
    /// let log = bus.topic::<u32>();
    /// log.set_retention(Retention::last(3))?;
    /// for n in 0..5_u32 {
    ///     log.publish(n)?;
    /// }
    /// let tail: Vec<u32> = log.history_from(Offset::At(3))?.iter().map(|env| **env).collect();
    /// assert_eq!(tail, [3, 4]);
    /// assert_eq!(
    ///     log.history_from(Offset::At(1)).unwrap_err(),
    ///     ReplayError::Evicted { requested: Offset::At(1), oldest: 2 },
    /// );
    /// # Ok(()) }
    /// ```
    pub fn history_from(&self, from: Offset) -> Result<History<E>, ReplayError> {
        self.core.read_history(from, Bound::Unbounded)
    }

    /// A snapshot of the events kept whose offsets are in `offsets` (`3..10`, `5..`,
    /// `..=7`), oldest first. An open start reads from the oldest event kept.
    ///
    /// # Errors
    ///
    /// As [`history_from`](Self::history_from) from the range's start.
    pub fn history_range(&self, offsets: impl RangeBounds<u64>) -> Result<History<E>, ReplayError> {
        let from = match offsets.start_bound() {
            Bound::Included(&seq) => Offset::At(seq),
            Bound::Excluded(&seq) => Offset::At(seq.saturating_add(1)),
            Bound::Unbounded => Offset::Earliest,
        };
        self.core.read_history(from, offsets.end_bound().cloned())
    }

    /// A snapshot of the events kept that were published from `from` (as
    /// [`Offset::Since`]) until `until`: up to, and without, the first one published
    /// at or after `until`. Times are on the bus [`Clock`](crate::Clock).
    ///
    /// # Errors
    ///
    /// As [`history_from`](Self::history_from) with [`Offset::Since`]`(from)`.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use crier::{testing::ManualClock, Bus, Retention};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let clock = ManualClock::new();
    /// let bus = Bus::builder().clock(clock.clone()).build()?;
    /// let logins = bus.topic::<&str>();
    /// logins.set_retention(Retention::within(Duration::from_secs(86_400)))?;
    /// for user in ["ann", "bo", "cy"] {
    ///     logins.publish(user)?;
    ///     clock.advance(Duration::from_secs(3_600));
    /// }
    /// let second_hour = logins.history_between(
    ///     UNIX_EPOCH + Duration::from_secs(3_600),
    ///     UNIX_EPOCH + Duration::from_secs(7_200),
    /// )?;
    /// assert_eq!(second_hour.iter().map(|env| **env).collect::<Vec<_>>(), ["bo"]);
    /// # Ok(()) }
    /// ```
    pub fn history_between(&self, from: SystemTime, until: SystemTime) -> Result<History<E>, ReplayError> {
        self.core.history_between(from, until)
    }

    /// Folds the history from `from` into `apply`, oldest first, and returns the offset
    /// to continue from: rebuilding a projection (a read model, a cache) from the
    /// events. `apply` runs on a snapshot, with no lock held: it may publish (those
    /// events come after the returned offset) or change the retention.
    ///
    /// # Errors
    ///
    /// As [`history_from`](Self::history_from); `apply` is then not called.
    ///
    /// # Example
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use crier::{Bus, Offset, Retention};
    ///
    /// struct Deposited { account: &'static str, cents: u64 }
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::new();
    /// let deposits = bus.topic::<Deposited>();
    /// deposits.set_retention(Retention::last(100_000))?;
    /// deposits.publish(Deposited { account: "alice", cents: 500 })?;
    /// deposits.publish(Deposited { account: "bob", cents: 200 })?;
    /// deposits.publish(Deposited { account: "alice", cents: 250 })?;
    ///
    /// let mut balances: HashMap<&str, u64> = HashMap::new();
    /// let next = deposits.replay(Offset::Earliest, |env| {
    ///     *balances.entry(env.account).or_default() += env.cents;
    /// })?;
    /// assert_eq!((balances["alice"], balances["bob"], next), (750, 200, 3));
    ///
    /// // Later: apply only what came since.
    /// deposits.publish(Deposited { account: "bob", cents: 100 })?;
    /// deposits.replay(Offset::At(next), |env| *balances.entry(env.account).or_default() += env.cents)?;
    /// assert_eq!(balances["bob"], 300);
    /// # Ok(()) }
    /// ```
    pub fn replay(&self, from: Offset, mut apply: impl FnMut(&Envelope<E>)) -> Result<u64, ReplayError> {
        let history = self.history_from(from)?;
        for env in &history {
            apply(env);
        }
        Ok(history.next_offset())
    }

    /// The offset of the oldest event kept, if any.
    pub fn oldest_offset(&self) -> Option<u64> {
        self.core.oldest_offset()
    }

    /// The offset the next accepted publish gets: the number of events accepted so far.
    pub fn next_offset(&self) -> u64 {
        self.core.next_offset()
    }
}
