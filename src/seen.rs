//! A dedup window's store: the keys seen recently, by hash, bounded by count and by
//! age (see `dedup` for what the windows promise, and who keeps one under which lock).
//!
//! # Design
//!
//! Two arrays, both flat, so a look-up touches one line of the index and, on a tag
//! match, one entry of the ring, and an eviction touches the ring's front (read in
//! order, so the hardware prefetches it) and one line of the index:
//!
//! - **The ring** holds the entries (hash, expiry, value) in insertion order, a circular
//!   buffer of at most `capacity` entries. An entry stays at its position until it is
//!   popped from the front, so the index can name it by position. The ring grows by
//!   doubling up to `capacity` (an empty window costs nothing) and is rebuilt when the
//!   window shrinks; either way the index is rebuilt with it.
//! - **The index** ([`KeyIndex`]) finds an entry by its key's hash: it names the
//!   entry's ring position, and has room for as many entries as the ring.
//!
//! # Invariants
//!
//! - S1: the index names exactly the ring's entries, each by its position (both change
//!   together: `push`, `pop_front`, `resize`), so it finds each (its I1 and I2).
//! - S3: a key has at most one entry.
//!
//! An entry keeps when it expires (its stamp plus `max_age`, computed once, at insert,
//! as a `Stamp`: nanoseconds), so a look-up compares two integers. Entries are *not*
//! in expiry order (an event retried late is remembered late with its early stamp):
//! the front is only the oldest inserted. So a look-up checks the entry's own expiry,
//! and the purge pops from the front while the front has expired.

use crate::dedup::{DedupWindow, KeyHash};
use crate::key_index::KeyIndex;
use crate::stamp::{nanos, Stamp};

#[derive(Clone, Copy)]
struct Entry<V> {
    key: KeyHash,
    /// Its stamp plus `max_age`; `Stamp::NEVER`: past the end of the range, so never.
    expires: Stamp,
    value: V,
}

/// The keys seen recently, by hash, each with a stamp and a value (a topic keeps the
/// `seq` the key was accepted at; a subscriber keeps nothing).
pub(crate) struct Seen<V: Copy = ()> {
    window: DedupWindow,
    /// `window.max_age()` in nanoseconds.
    max_age: i64,
    /// The entries in insertion order: `len` of them from `head`, wrapping.
    ring: Vec<Entry<V>>,
    head: usize,
    len: usize,
    index: KeyIndex,
    /// Entries evicted to keep within `capacity` (not those that aged out).
    pub(crate) evicted: u64,
}

impl<V: Copy> Seen<V> {
    pub(crate) fn new(window: DedupWindow) -> Seen<V> {
        Seen {
            window,
            max_age: nanos(window.max_age()),
            ring: Vec::new(),
            head: 0,
            len: 0,
            index: KeyIndex::new(),
            evicted: 0,
        }
    }

    pub(crate) fn window(&self) -> DedupWindow {
        self.window
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The value kept with `key`, if it was stamped less than `max_age` before `now`
    /// (or after it).
    pub(crate) fn get(&mut self, key: KeyHash, now: Stamp) -> Option<V> {
        self.purge(now);
        let entry = &self.ring[self.find(key)?];
        is_fresh(entry, now).then_some(entry.value)
    }

    /// Remembers `key` (and `value`) stamped `at`. A key already remembered keeps its
    /// first stamp and value, returned, unless it aged out by `at`: then it takes the new
    /// ones (and keeps its place in the ring). So a look-up and an insert are one probe.
    pub(crate) fn insert(&mut self, key: KeyHash, at: Stamp, value: V) -> Option<V> {
        self.purge(at);
        let expires = at.plus(self.max_age);
        if let Some(position) = self.find(key) {
            let kept = self.ring[position];
            if is_fresh(&kept, at) {
                return Some(kept.value);
            }
            self.ring[position] = Entry { key, expires, value };
            return None;
        }
        if self.len == self.window.capacity() {
            self.pop_front();
            self.evicted += 1;
        }
        let entry = Entry { key, expires, value };
        if self.len == self.ring.len() {
            let grown = (self.ring.len() * 2).max(8).min(self.window.capacity());
            self.resize(grown, entry);
        }
        self.push(entry);
        None
    }

    /// Forgets the keys stamped `max_age` or more before `now` from the front (see the
    /// module docs: others that aged out linger until they reach it, and are ignored).
    pub(crate) fn purge(&mut self, now: Stamp) {
        while self.len > 0 && !is_fresh(&self.ring[self.head], now) {
            self.pop_front();
        }
    }

    /// Applies new bounds: keeps the entries that fit, evicting the oldest, and gives
    /// back the memory a smaller capacity no longer needs.
    pub(crate) fn set_window(&mut self, window: DedupWindow, now: Stamp) {
        let old = std::mem::replace(&mut self.max_age, nanos(window.max_age()));
        self.window = window;
        if self.max_age != old {
            for entry in &mut self.ring {
                // `NEVER` stays `NEVER`: the stamp is lost, and was near the end of time.
                if entry.expires != Stamp::NEVER {
                    entry.expires = Stamp(entry.expires.0 - old).plus(self.max_age);
                }
            }
        }
        self.purge(now);
        while self.len > window.capacity() {
            self.pop_front();
            self.evicted += 1;
        }
        if self.ring.len() > window.capacity() {
            match self.ring.get(self.head) {
                Some(&front) if self.len > 0 => self.resize(window.capacity(), front),
                _ => {
                    *self = Seen {
                        evicted: self.evicted,
                        ..Seen::new(window)
                    }
                }
            }
        }
    }

    /// `position` (below twice the ring's size) as a position in the ring: a compare,
    /// not a division, since the size need not be a power of two.
    fn wrap(&self, position: usize) -> usize {
        match position >= self.ring.len() {
            true => position - self.ring.len(),
            false => position,
        }
    }

    /// The ring position of `key`'s entry.
    fn find(&self, key: KeyHash) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let found = self.index.find(key, |position| self.ring[position as usize].key == key);
        found.map(|position| position as usize)
    }

    /// Appends `entry` (not in the index yet; the ring has room).
    fn push(&mut self, entry: Entry<V>) {
        let position = self.wrap(self.head + self.len);
        self.ring[position] = entry;
        self.len += 1;
        // Ring positions fit: `DedupWindow::check` caps the capacity below `u32::MAX`.
        self.index.insert(entry.key, position as u32);
    }

    fn pop_front(&mut self) {
        self.index.remove(self.ring[self.head].key, self.head as u32);
        self.head = self.wrap(self.head + 1);
        self.len -= 1;
    }

    /// Moves the entries, oldest first, into a ring of `size` (at least `len`, and
    /// above 0), and rebuilds the index for it. Positions past `len` hold copies of
    /// `filler` until a push overwrites them.
    fn resize(&mut self, size: usize, filler: Entry<V>) {
        let mut ring = Vec::with_capacity(size);
        ring.extend((0..self.len).map(|i| self.ring[self.wrap(self.head + i)]));
        ring.resize(size, filler);
        self.ring = ring;
        self.head = 0;
        self.index = KeyIndex::with_room_for(size);
        for position in 0..self.len {
            self.index.insert(self.ring[position].key, position as u32);
        }
    }
}

fn is_fresh<V>(entry: &Entry<V>, now: Stamp) -> bool {
    !entry.expires.has_come(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::KeyHasher;
    use proptest::prelude::*;
    use std::time::Duration;

    const MS: u64 = 1_000_000;

    /// `nanos` after the epoch.
    fn at(nanos: u64) -> Stamp {
        Stamp::of(std::time::SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos))
    }

    fn window(capacity: usize, max_age_ms: u64) -> DedupWindow {
        DedupWindow::new(capacity, Duration::from_millis(max_age_ms))
    }

    #[test]
    fn a_key_is_remembered_for_less_than_max_age() {
        let mut seen = Seen::new(window(10, 100));
        let k = KeyHasher::new().hash("order-1");
        seen.insert(k, at(0), 7_u64);
        assert_eq!(seen.get(k, at(99 * MS)), Some(7));
        assert_eq!(seen.get(k, at(100 * MS)), None, "forgotten at exactly max_age");
        assert_eq!(seen.len(), 0);
    }

    #[test]
    fn a_key_stamped_after_now_is_fresh() {
        let mut seen: Seen = Seen::new(window(10, 100));
        seen.insert(KeyHash(1, 1), at(500 * MS), ());
        assert!(
            seen.get(KeyHash(1, 1), at(0)).is_some(),
            "an event published before the one remembered"
        );
    }

    #[test]
    fn the_oldest_key_goes_when_the_window_is_full() {
        let mut seen: Seen = Seen::new(window(3, 60_000));
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
    fn a_key_inserted_again_keeps_its_first_stamp_until_it_ages_out() {
        let mut seen = Seen::new(window(3, 100));
        seen.insert(KeyHash(1, 1), at(0), 10_u64);
        seen.insert(KeyHash(1, 1), at(50 * MS), 20_u64);
        assert_eq!((seen.len(), seen.get(KeyHash(1, 1), at(99 * MS))), (1, Some(10)));
        assert_eq!(
            seen.get(KeyHash(1, 1), at(100 * MS)),
            None,
            "aged from the first insert"
        );
    }

    #[test]
    fn an_aged_out_key_behind_a_fresh_front_is_ignored_and_renewed_in_place() {
        let mut seen = Seen::new(window(3, 100));
        seen.insert(KeyHash(1, 1), at(100 * MS), 1_u64);
        seen.insert(KeyHash(2, 2), at(0), 2);
        assert_eq!(
            seen.get(KeyHash(2, 2), at(150 * MS)),
            None,
            "aged out, though not purged"
        );
        assert_eq!(seen.len(), 2);
        seen.insert(KeyHash(2, 2), at(150 * MS), 22);
        assert_eq!((seen.len(), seen.get(KeyHash(2, 2), at(150 * MS))), (2, Some(22)));
    }

    #[test]
    fn a_smaller_window_evicts_the_oldest_at_once_and_shrinks() {
        let mut seen: Seen = Seen::new(window(50, 60_000));
        for k in 0..50 {
            seen.insert(KeyHash(k, k), at(0), ());
        }
        seen.set_window(window(2, 60_000), at(0));
        assert_eq!((seen.len(), seen.evicted, seen.ring.len()), (2, 48, 2));
        assert!(seen.get(KeyHash(49, 49), at(0)).is_some() && seen.get(KeyHash(47, 47), at(0)).is_none());
        seen.set_window(window(2, 10), at(10 * MS));
        assert_eq!(seen.len(), 0, "a shorter max_age purges at once");
    }

    #[test]
    fn keys_of_any_size_cost_one_entry() {
        let mut seen: Seen = Seen::new(window(2, 60_000));
        let hasher = KeyHasher::new();
        let big = "x".repeat(1 << 20);
        seen.insert(hasher.hash(&big), at(0), ());
        assert!(seen.get(hasher.hash(&big), at(MS)).is_some());
        assert!(seen.get(hasher.hash(""), at(MS)).is_none());
    }

    #[test]
    fn a_million_distinct_keys_never_hold_more_than_the_capacity() {
        let mut seen: Seen = Seen::new(window(1_000, 3_600_000));
        let hasher = KeyHasher::new();
        for n in 0..1_000_000_u64 {
            let key = hasher.hash(&n);
            assert!(seen.get(key, at(n * 1000)).is_none());
            seen.insert(key, at(n * 1000), ());
            assert!(seen.len() <= 1_000 && seen.ring.len() <= 1_000);
        }
        assert_eq!(seen.evicted, 999_000);
    }

    #[test]
    fn a_key_whose_expiry_is_past_the_end_of_time_never_expires() {
        let mut seen: Seen = Seen::new(DedupWindow::new(2, Duration::MAX));
        seen.insert(KeyHash(1, 1), at(5), ());
        assert!(seen.get(KeyHash(1, 1), at(u64::MAX)).is_some(), "no overflow");
        seen.set_window(DedupWindow::new(2, Duration::from_nanos(10)), at(6));
        assert!(
            seen.get(KeyHash(1, 1), at(6)).is_some(),
            "its stamp is lost: still never"
        );
        seen.insert(KeyHash(2, 2), at(5), ());
        seen.set_window(DedupWindow::new(2, Duration::from_nanos(20)), at(6));
        assert!(
            seen.get(KeyHash(2, 2), at(24)).is_some() && seen.get(KeyHash(2, 2), at(25)).is_none(),
            "a new max_age applies to the keys held"
        );
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert { key: u8, at: u64 },
        Get { key: u8, now: u64 },
        Purge(u64),
        Resize { capacity: usize, max_age: u64 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0_u8..24, 0_u64..50).prop_map(|(key, at)| Op::Insert { key, at }),
            3 => (0_u8..24, 0_u64..50).prop_map(|(key, now)| Op::Get { key, now }),
            1 => (0_u64..50).prop_map(Op::Purge),
            1 => (1_usize..20, 1_u64..30).prop_map(|(capacity, max_age)| Op::Resize { capacity, max_age }),
        ]
    }

    /// A key whose tag puts many keys in a few home buckets, at both ends of the index,
    /// so clusters form, wrap around and are shifted back.
    fn clustered(key: u8) -> KeyHash {
        let home = match key % 2 {
            0 => u32::from(key % 3),
            _ => u32::MAX - u32::from(key % 3),
        };
        KeyHash(u64::from(home) | (u64::from(key) << 40), u64::from(key))
    }

    proptest! {
        /// Against a naive model (entries in insertion order, each with its stamp):
        /// look-ups agree, the window never holds more than its capacity, and the index
        /// names exactly the ring's entries (S1) and finds each one (S2).
        #[test]
        fn the_window_matches_a_naive_model(
            capacity in 1_usize..20,
            max_age in 1_u64..30,
            ops in prop::collection::vec(op(), 1..300),
        ) {
            let mut seen = Seen::new(DedupWindow::new(capacity, Duration::from_nanos(max_age)));
            let (mut capacity, mut max_age) = (capacity, max_age);
            let mut model: std::collections::VecDeque<(u8, u64, u64)> = Default::default();
            let mut value = 0_u64;
            let purge = |model: &mut std::collections::VecDeque<(u8, u64, u64)>, now: u64, max_age: u64| {
                while model.front().is_some_and(|&(_, at, _)| now >= at + max_age) {
                    model.pop_front();
                }
            };
            for op in ops {
                match op {
                    Op::Insert { key, at } => {
                        value += 1;
                        purge(&mut model, at, max_age);
                        match model.iter_mut().find(|(k, _, _)| *k == key) {
                            Some(entry) if at >= entry.1 + max_age => *entry = (key, at, value),
                            Some(_) => {}
                            None => {
                                if model.len() == capacity {
                                    model.pop_front();
                                }
                                model.push_back((key, at, value));
                            }
                        }
                        seen.insert(clustered(key), self::at(at), value);
                    }
                    Op::Get { key, now } => {
                        purge(&mut model, now, max_age);
                        let expected = model
                            .iter()
                            .find(|&&(k, at, _)| k == key && now < at + max_age)
                            .map(|&(_, _, v)| v);
                        prop_assert_eq!(seen.get(clustered(key), self::at(now)), expected);
                    }
                    Op::Purge(now) => {
                        purge(&mut model, now, max_age);
                        seen.purge(self::at(now));
                    }
                    Op::Resize { capacity: c, max_age: m } => {
                        (capacity, max_age) = (c, m);
                        purge(&mut model, 0, max_age);
                        while model.len() > capacity {
                            model.pop_front();
                        }
                        seen.set_window(DedupWindow::new(c, Duration::from_nanos(m)), self::at(0));
                    }
                }
                prop_assert_eq!(seen.len(), model.len());
                prop_assert!(seen.len() <= capacity && seen.ring.len() <= capacity.max(seen.len()));
                prop_assert_eq!(seen.index.len(), seen.len(), "S1: one bucket per entry");
                for (i, &(key, _, _)) in model.iter().enumerate() {
                    let position = seen.find(clustered(key)).expect("S1: every entry is found");
                    prop_assert_eq!(position, (seen.head + i) % seen.ring.len(), "in insertion order");
                }
            }
        }
    }
}
