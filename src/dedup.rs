//! Idempotency: a subscriber's window of keys that already succeeded, bounded by count
//! and by age.
//!
//! # Design
//!
//! The window keeps a 128-bit hash of each key, never the key itself, so an entry costs
//! the same whatever the key's size (about 48 bytes with its map slot and queue slot),
//! and a window of `capacity` entries stays flat however many distinct keys pass. The
//! hash is keyed with two random seeds drawn per window, so keys chosen by an adversary
//! cannot be made to collide; two distinct keys share an entry with probability about
//! `n² / 2^129` for `n` keys.
//!
//! Entries sit in a map (hash → when it succeeded) and in a queue in insertion order.
//! Before each look-up, entries at least `max_age` old are purged from the front of the
//! queue, and inserting beyond `capacity` evicts the oldest. Whichever bound is hit
//! first evicts. The window lives under the subscriber's run lock, like the handler.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::time::{Duration, SystemTime};

/// How long, and for how many keys, a subscriber remembers that an idempotency key
/// succeeded. Set with
/// [`SubscriberBuilder::dedup`](crate::SubscriberBuilder::dedup).
///
/// An event whose key succeeded for this subscriber less than `max_age` ago (on the bus
/// [`Clock`](crate::Clock)) and is still among the last `capacity` keys remembered is
/// skipped and counted as `deduplicated`. A key is remembered only once its event
/// *succeeded*, so a retry of a failed event is never skipped. At exactly `max_age`
/// the key is forgotten and the event is delivered again. Both bounds must be above
/// zero (`subscribe` refuses them otherwise).
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

/// The keys that succeeded recently, by hash.
pub(crate) struct Seen {
    window: DedupWindow,
    hashers: (RandomState, RandomState),
    when: HashMap<u128, SystemTime>,
    order: VecDeque<(u128, SystemTime)>,
    pub(crate) evicted: u64,
}

impl Seen {
    pub(crate) fn new(window: DedupWindow) -> Seen {
        Seen {
            window,
            hashers: (RandomState::new(), RandomState::new()),
            when: HashMap::new(),
            order: VecDeque::new(),
            evicted: 0,
        }
    }

    /// The key's 128-bit hash (a `str` key and the same `String` hash alike).
    pub(crate) fn hash<K: std::hash::Hash + ?Sized>(&self, key: &K) -> u128 {
        let high = self.hashers.0.hash_one(key);
        let low = self.hashers.1.hash_one(key);
        (u128::from(high) << 64) | u128::from(low)
    }

    /// `true` if `key` succeeded less than `max_age` before `now`.
    pub(crate) fn contains(&mut self, key: u128, now: SystemTime) -> bool {
        self.purge(now);
        self.when.contains_key(&key)
    }

    /// Remembers that `key` succeeded at `now`.
    pub(crate) fn insert(&mut self, key: u128, now: SystemTime) {
        self.purge(now);
        if self.when.insert(key, now).is_none() {
            self.order.push_back((key, now));
        }
        while self.when.len() > self.window.capacity {
            self.pop_oldest();
            self.evicted += 1;
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.when.len()
    }

    /// Forgets keys `max_age` old or older.
    fn purge(&mut self, now: SystemTime) {
        while let Some(&(_, at)) = self.order.front() {
            let age = now.duration_since(at).unwrap_or(Duration::ZERO);
            if age < self.window.max_age {
                break;
            }
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) {
        if let Some((key, _)) = self.order.pop_front() {
            self.when.remove(&key);
        }
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
        let k = seen.hash("order-1");
        seen.insert(k, at(0));
        assert!(seen.contains(k, at(99)));
        assert!(!seen.contains(k, at(100)), "forgotten at exactly max_age");
        assert_eq!(seen.len(), 0);
    }

    #[test]
    fn the_oldest_key_goes_when_the_window_is_full() {
        let mut seen = Seen::new(DedupWindow::new(3, Duration::from_secs(60)));
        let keys: Vec<u128> = (0..5).map(|n| seen.hash(&format!("k{n}"))).collect();
        for &k in &keys {
            seen.insert(k, at(0));
        }
        assert_eq!((seen.len(), seen.evicted), (3, 2));
        assert!(!seen.contains(keys[1], at(0)));
        assert!(seen.contains(keys[2], at(0)));
    }

    #[test]
    fn keys_of_any_size_cost_one_entry() {
        let mut seen = Seen::new(DedupWindow::new(2, Duration::from_secs(60)));
        let big = "x".repeat(1 << 20);
        let k = seen.hash(&big);
        seen.insert(k, at(0));
        assert!(seen.contains(seen.hash(&big), at(1)));
        assert!(!seen.contains(seen.hash(""), at(1)));
    }

    #[test]
    fn a_million_distinct_keys_never_hold_more_than_the_capacity() {
        let mut seen = Seen::new(DedupWindow::new(1_000, Duration::from_secs(3600)));
        for n in 0..1_000_000_u64 {
            let key = seen.hash(&n);
            assert!(!seen.contains(key, at(n / 1000)));
            seen.insert(key, at(n / 1000));
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
