//! An index from a key's hash to the slot that holds it, for the dedup stores (`seen`:
//! a window's ring of entries; `key_table`: a topic's table of records). The store
//! keeps the keys; the index only finds them.
//!
//! # Design
//!
//! An open-addressing table of 8-byte buckets: the low 32 bits of the hash's first
//! word (the *tag*, whose low bits are the bucket the key belongs in) and the slot
//! plus one (0: empty). Linear probing; a removal shifts the rest of its cluster back
//! instead of leaving a tombstone, so the table never fills with dead buckets and never
//! needs a rehash. A store sizes it with [`KeyIndex::with_room_for`], at most half
//! full (an absent key probes about 2.5 buckets, a present one 1.5), so it is never
//! full and a probe always meets an empty bucket.
//!
//! # Invariants (the store keeps them by calling `insert` and `remove` in step with
//! its own changes)
//!
//! - I1: every slot in use is named by exactly one bucket, and every non-empty bucket
//!   names a slot in use.
//! - I2: a bucket sits in the cluster that starts at its home bucket (`tag & mask`):
//!   every bucket between its home and itself is non-empty. Probing stops at the first
//!   empty bucket, so I2 is what makes a look-up find its key; the back-shift keeps it.

use crate::dedup::KeyHash;

#[derive(Clone, Copy, Default)]
struct Bucket {
    /// The low 32 bits of the key's first word.
    tag: u32,
    /// The slot, plus one; 0: empty.
    slot: u32,
}

pub(crate) struct KeyIndex {
    buckets: Vec<Bucket>,
}

impl KeyIndex {
    /// No buckets: finds nothing, and takes nothing until rebuilt with room.
    pub(crate) const fn new() -> KeyIndex {
        KeyIndex { buckets: Vec::new() }
    }

    /// An empty index for up to `entries` keys (above 0), at most half full then.
    pub(crate) fn with_room_for(entries: usize) -> KeyIndex {
        // At least one bucket more than twice the entries: a probe meets an empty one.
        KeyIndex {
            buckets: vec![Bucket::default(); (2 * entries + 1).next_power_of_two()],
        }
    }

    /// How many keys it takes while at most half full.
    pub(crate) fn room(&self) -> usize {
        self.buckets.len() / 2
    }

    #[inline]
    fn mask(&self) -> usize {
        self.buckets.len() - 1
    }

    #[inline]
    fn home(&self, tag: u32) -> usize {
        tag as usize & self.mask()
    }

    /// The slot of `key`: the first whose bucket's tag matches and that `holds_key`
    /// (the store compares the whole hash). The index must have buckets: the stores
    /// check that they hold anything first.
    #[inline(always)]
    pub(crate) fn find(&self, key: KeyHash, mut holds_key: impl FnMut(u32) -> bool) -> Option<u32> {
        let (tag, mask) = (key.0 as u32, self.mask());
        let mut at = tag as usize & mask;
        loop {
            let bucket = self.buckets[at];
            if bucket.slot == 0 {
                return None;
            }
            if bucket.tag == tag && holds_key(bucket.slot - 1) {
                return Some(bucket.slot - 1);
            }
            at = (at + 1) & mask;
        }
    }

    /// Names `slot` for `key` (not named yet; the index has room).
    #[inline]
    pub(crate) fn insert(&mut self, key: KeyHash, slot: u32) {
        let tag = key.0 as u32;
        let mut at = self.home(tag);
        while self.buckets[at].slot != 0 {
            at = (at + 1) & self.mask();
        }
        // Slots fit: the stores cap their sizes below `u32::MAX`.
        self.buckets[at] = Bucket { tag, slot: slot + 1 };
    }

    /// Forgets `slot`, which `key` names (I1: its bucket exists, and I2: it is in the
    /// cluster from its home).
    #[inline]
    pub(crate) fn remove(&mut self, key: KeyHash, slot: u32) {
        let named = slot + 1;
        let mut at = self.home(key.0 as u32);
        while self.buckets[at].slot != named {
            at = (at + 1) & self.mask();
        }
        self.remove_bucket(at);
    }

    /// Empties bucket `hole`, shifting back the buckets after it in its cluster that may
    /// move (those whose home is not between the hole and themselves), so I2 holds.
    fn remove_bucket(&mut self, mut hole: usize) {
        let mask = self.mask();
        let mut next = hole;
        loop {
            next = (next + 1) & mask;
            let bucket = self.buckets[next];
            if bucket.slot == 0 {
                break;
            }
            // Distances from the bucket's home: if the hole is no farther from it
            // than the bucket itself, the bucket may move into the hole.
            let home = self.home(bucket.tag);
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                self.buckets[hole] = bucket;
                hole = next;
            }
        }
        self.buckets[hole] = Bucket::default();
    }

    /// The slots named (for the stores' checks of I1).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buckets.iter().filter(|bucket| bucket.slot != 0).count()
    }
}
