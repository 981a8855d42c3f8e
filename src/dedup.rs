//! Idempotency windows: the keys seen recently, bounded by count and by age.
//!
//! Two users: a subscriber remembers the keys that *succeeded* for it (under its run
//! lock, like the handler), and a topic remembers the keys it *accepted*, each with the
//! `seq` it was accepted at (under its commit lock, see `topic`).
//!
//! # Design
//!
//! A window keeps a 128-bit hash of each key, never the key itself, so an entry costs
//! the same whatever the key's size, and a window of `capacity` entries stays flat
//! however many distinct keys pass. The cost per key is measured, not estimated (see
//! `DedupWindow`'s docs): the entry (32 bytes for a subscriber, 40 for a topic, which
//! keeps a `seq`), a slot in the insertion-order queue (16), and the hash table's spare
//! room. Once a full window starts evicting, removals leave tombstones and the table
//! grows once to about twice its entries; while it grows, the old table is live too. The
//! hash is keyed with two random seeds drawn per bus (`KeyHasher`), so keys chosen by
//! an adversary cannot be made to collide; two distinct keys share an entry with
//! probability about `n² / 2^129` for `n` keys. An event's key is hashed once, by the
//! first window that needs it, and the hash travels with the event
//! (`IdempotencyKey`); a topic hashes outside its lock, so a 1 MiB key costs its
//! publisher, not everyone waiting for the lock.
//!
//! Entries sit in a map (hash → when, value) and in a queue in insertion order. Before
//! each look-up, entries at least `max_age` old are purged from the front of the queue,
//! and inserting beyond `capacity` evicts the oldest. Whichever bound is hit first
//! evicts.

use std::collections::hash_map::Entry;
use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// How long, and for how many keys, an idempotency key is remembered: by a subscriber
/// once it succeeded ([`SubscriberBuilder::dedup`](crate::SubscriberBuilder::dedup)),
/// or by a topic once a publish was accepted
/// ([`Topic::set_dedup_window`](crate::Topic::set_dedup_window)).
///
/// For a subscriber, an event whose key succeeded for it less than `max_age` ago (on the
/// bus [`Clock`](crate::Clock), counted from the start of the attempt that succeeded)
/// and is still among the last `capacity` keys remembered is skipped and counted as
/// `deduplicated`. A key is remembered only once its event *succeeded*, so a retry of
/// a failed event is never skipped. At exactly `max_age` the key is forgotten and the
/// event is delivered again. For a topic, read "accepted" for "succeeded" (counted
/// from the accepted publish): a repeated key is not published again. Both bounds must
/// be above zero (`subscribe` and `set_dedup_window` refuse them otherwise).
///
/// # Memory
///
/// A key costs the same whatever its length: the window keeps a keyed 128-bit hash of
/// it. Measured with a counting allocator, a full window of 100,000 keys after a
/// million distinct keys holds 10.7 MB in a subscriber (107 bytes per key) and 12.8 MB
/// in a topic (128 bytes per key), peaking at 15.1 MB and 18.2 MB while its table
/// grows: budget 200 bytes per key of capacity (`benches/tests/memory_bounds.rs` pins
/// that bound). An empty window costs next to nothing; it grows with the keys it holds.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use crier::DedupWindow;
///
/// // Like SQS FIFO's 5-minute deduplication interval, at most 100,000 keys.
/// let window = DedupWindow::new(100_000, Duration::from_secs(300));
/// assert_eq!(window.capacity(), 100_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct DedupWindow {
    capacity: usize,
    max_age: Duration,
}

impl DedupWindow {
    /// At most `capacity` keys, each for less than `max_age`.
    pub fn new(capacity: usize, max_age: Duration) -> DedupWindow {
        DedupWindow { capacity, max_age }
    }

    /// The most keys remembered at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How long a key is remembered.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if self.capacity == 0 {
            return Err("a dedup window must hold at least 1 key");
        }
        if self.max_age.is_zero() {
            return Err("a dedup window must last longer than zero");
        }
        Ok(())
    }
}

/// A key's 128-bit hash, as two words: without `u128`'s 16-byte alignment an entry of
/// a topic's window takes 40 bytes instead of 48.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct KeyHash(u64, u64);

/// An event's idempotency key, with its hash once a window needed it: every window on
/// a bus hashes with the bus's one `KeyHasher`, so the key is hashed at most once
/// however many windows look at it.
#[derive(Clone)]
pub(crate) struct IdempotencyKey {
    text: Box<str>,
    hash: OnceLock<KeyHash>,
}

impl IdempotencyKey {
    pub(crate) fn new(text: String) -> Box<IdempotencyKey> {
        Box::new(IdempotencyKey {
            text: text.into_boxed_str(),
            hash: OnceLock::new(),
        })
    }

    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// The key's hash by `hasher`, which must be the bus's (the first call keeps it).
    pub(crate) fn hash(&self, hasher: &KeyHasher) -> KeyHash {
        *self.hash.get_or_init(|| hasher.hash(&*self.text))
    }
}

impl std::fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.text.fmt(f)
    }
}

/// Hashes idempotency keys for one bus's windows, with seeds of its own.
pub(crate) struct KeyHasher(RandomState, RandomState);

impl KeyHasher {
    pub(crate) fn new() -> KeyHasher {
        KeyHasher(RandomState::new(), RandomState::new())
    }

    /// The key's hash (a `str` key and the same `String` hash alike).
    pub(crate) fn hash<K: std::hash::Hash + ?Sized>(&self, key: &K) -> KeyHash {
        KeyHash(self.0.hash_one(key), self.1.hash_one(key))
    }
}

/// Looks a `KeyHash` up by its own bits: it is already a keyed random hash, so hashing
/// it again (SipHash, by default) would only cost time.
#[derive(Default, Clone, Copy)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn write(&mut self, bytes: &[u8]) {
        // Not reached for `KeyHash`, which writes two `u64`s; kept correct anyway.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 ^= word;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A topic's window: the keys it accepted recently, each with the `seq` it was
/// accepted at.
pub(crate) type Accepted = Seen<u64>;

impl Accepted {
    /// Step 3 of the publish protocol (see `topic`), under the commit lock once the
    /// publish can no longer be refused: `Err(original seq)` if `key` was accepted
    /// within the window, otherwise records it as accepted at `seq`. One call, so the
    /// look-up and the record share one hold of the lock.
    pub(crate) fn admit(&mut self, key: KeyHash, now: SystemTime, seq: u64) -> Result<(), u64> {
        if let Some(original) = self.get(key, now) {
            return Err(original);
        }
        self.insert(key, now, seq);
        Ok(())
    }
}

/// The keys seen recently, by hash, each with a value (a topic keeps the `seq` the key
/// was accepted at; a subscriber keeps nothing).
pub(crate) struct Seen<V: Copy = ()> {
    window: DedupWindow,
    entries: HashMap<KeyHash, (SystemTime, V), BuildHasherDefault<PassThrough>>,
    /// The keys in insertion order (their times are in `entries`).
    order: VecDeque<KeyHash>,
    /// No later than when the oldest key ages out: after an eviction, when the evicted
    /// key ages out (the next key came after it). `None` if the window is empty (or
    /// that time is past the end of `SystemTime`). So a purge with nothing to do is one
    /// comparison, and an eviction needs no look-up of the next key.
    oldest_expires: Option<SystemTime>,
    /// Entries evicted to keep within `capacity` (not those that aged out).
    pub(crate) evicted: u64,
}

impl<V: Copy> Seen<V> {
    pub(crate) fn new(window: DedupWindow) -> Seen<V> {
        Seen {
            window,
            entries: HashMap::default(),
            order: VecDeque::new(),
            oldest_expires: None,
            evicted: 0,
        }
    }

    /// The value kept with `key`, if it was inserted less than `max_age` before `now`.
    pub(crate) fn get(&mut self, key: KeyHash, now: SystemTime) -> Option<V> {
        self.purge(now);
        self.entries.get(&key).map(|&(_, value)| value)
    }

    /// Remembers `key` (and `value`) as of `now`; a key already remembered keeps its
    /// first time and value.
    pub(crate) fn insert(&mut self, key: KeyHash, now: SystemTime, value: V) {
        self.purge(now);
        if let Entry::Vacant(entry) = self.entries.entry(key) {
            entry.insert((now, value));
            self.order.push_back(key);
            if self.order.len() == 1 {
                self.oldest_expires = now.checked_add(self.window.max_age);
            }
        }
        self.evict_over_capacity();
    }

    /// Applies new bounds: keeps the entries that fit, evicting the oldest.
    pub(crate) fn set_window(&mut self, window: DedupWindow, now: SystemTime) {
        self.window = window;
        self.oldest_expires = self.expiry_of_oldest();
        self.purge(now);
        self.evict_over_capacity();
    }

    pub(crate) fn window(&self) -> DedupWindow {
        self.window
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Forgets keys `max_age` old or older.
    pub(crate) fn purge(&mut self, now: SystemTime) {
        while self.oldest_expires.is_some_and(|bound| now >= bound) {
            let expires = self.expiry_of_oldest();
            if expires.is_some_and(|expires| now >= expires) {
                self.pop_oldest();
            } else {
                self.oldest_expires = expires;
                break;
            }
        }
    }

    fn expiry_of_oldest(&self) -> Option<SystemTime> {
        let key = self.order.front()?;
        // Every key in `order` is in `entries`: both change together, in `insert` and
        // `pop_oldest`, so the index cannot miss.
        self.entries[key].0.checked_add(self.window.max_age)
    }

    fn evict_over_capacity(&mut self) {
        while self.entries.len() > self.window.capacity {
            self.pop_oldest();
            self.evicted += 1;
        }
    }

    fn pop_oldest(&mut self) {
        let Some((at, _)) = self.order.pop_front().and_then(|key| self.entries.remove(&key)) else {
            return;
        };
        self.oldest_expires = match self.order.is_empty() {
            true => None,
            false => at.checked_add(self.window.max_age),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
    }

    #[test]
    fn a_key_is_remembered_for_less_than_max_age() {
        let mut seen = Seen::new(DedupWindow::new(10, Duration::from_millis(100)));
        let k = KeyHasher::new().hash("order-1");
        seen.insert(k, at(0), 7_u64);
        assert_eq!(seen.get(k, at(99)), Some(7));
        assert_eq!(seen.get(k, at(100)), None, "forgotten at exactly max_age");
        assert_eq!(seen.len(), 0);
    }

    #[test]
    fn the_oldest_key_goes_when_the_window_is_full() {
        let mut seen: Seen = Seen::new(DedupWindow::new(3, Duration::from_secs(60)));
        let hasher = KeyHasher::new();
        let keys: Vec<KeyHash> = (0..5).map(|n| hasher.hash(&format!("k{n}"))).collect();
        for &k in &keys {
            seen.insert(k, at(0), ());
        }
        assert_eq!((seen.len(), seen.evicted), (3, 2));
        assert!(seen.get(keys[1], at(0)).is_none());
        assert!(seen.get(keys[2], at(0)).is_some());
    }

    #[test]
    fn a_key_inserted_again_keeps_its_first_time_and_value() {
        let mut seen = Seen::new(DedupWindow::new(3, Duration::from_millis(100)));
        seen.insert(KeyHash(1, 1), at(0), 10_u64);
        seen.insert(KeyHash(1, 1), at(50), 20_u64);
        assert_eq!((seen.len(), seen.get(KeyHash(1, 1), at(99))), (1, Some(10)));
        assert_eq!(seen.get(KeyHash(1, 1), at(100)), None, "aged from the first insert");
    }

    #[test]
    fn a_smaller_window_evicts_the_oldest_at_once() {
        let mut seen: Seen = Seen::new(DedupWindow::new(5, Duration::from_secs(60)));
        for k in 0..5 {
            seen.insert(KeyHash(k, k), at(0), ());
        }
        seen.set_window(DedupWindow::new(2, Duration::from_secs(60)), at(0));
        assert_eq!((seen.len(), seen.evicted), (2, 3));
        assert!(seen.get(KeyHash(3, 3), at(0)).is_some() && seen.get(KeyHash(2, 2), at(0)).is_none());
        seen.set_window(DedupWindow::new(2, Duration::from_millis(10)), at(10));
        assert_eq!(seen.len(), 0, "a shorter max_age purges at once");
    }

    #[test]
    fn keys_of_any_size_cost_one_entry() {
        let mut seen: Seen = Seen::new(DedupWindow::new(2, Duration::from_secs(60)));
        let hasher = KeyHasher::new();
        let big = "x".repeat(1 << 20);
        seen.insert(hasher.hash(&big), at(0), ());
        assert!(seen.get(hasher.hash(&big), at(1)).is_some());
        assert!(seen.get(hasher.hash(""), at(1)).is_none());
    }

    #[test]
    fn a_million_distinct_keys_never_hold_more_than_the_capacity() {
        let mut seen: Seen = Seen::new(DedupWindow::new(1_000, Duration::from_secs(3600)));
        let hasher = KeyHasher::new();
        for n in 0..1_000_000_u64 {
            let key = hasher.hash(&n);
            assert!(seen.get(key, at(n / 1000)).is_none());
            seen.insert(key, at(n / 1000), ());
            assert!(seen.len() <= 1_000 && seen.order.len() <= 1_000);
        }
        assert_eq!(seen.evicted, 999_000);
    }

    #[test]
    fn zero_bounds_are_refused() {
        assert!(DedupWindow::new(0, Duration::from_secs(1)).check().is_err());
        assert!(DedupWindow::new(1, Duration::ZERO).check().is_err());
        assert!(DedupWindow::new(1, Duration::from_nanos(1)).check().is_ok());
    }
}
