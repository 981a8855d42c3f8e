//! A topic's key table: the dedup windows of its inline subscribers kept in one table,
//! each with exactly the semantics of a window of its own (`seen`, and `dedup` for what
//! a window promises).
//!
//! # Why
//!
//! A window of its own per subscriber keeps its own copy of every key, and costs a
//! random cache line or two per delivery: with 8 subscribers of 10,000 keys, 8 windows
//! of about 500 KB, against 512 KB of L2 per core. The inline subscribers of a topic
//! usually succeed for the same keys, from the same publishes: here each key is kept
//! once, and the deliveries of one event touch its record's line once, then find it
//! cached.
//!
//! # Design
//!
//! - **Records**, one per key: its hash, a bit per member that remembers it
//!   (`holders`), and a stamp. They live in chunks of [`CHUNK`] records, so the table
//!   grows without copying (and 32 KB at a time); a free record is chained to the next
//!   free one through its stamp.
//! - **The index** ([`KeyIndex`]) finds a key's record; it grows by doubling with the
//!   records in use.
//! - **Members** (subscribers): each keeps, in a ring of its own, the records it
//!   remembers in the order it remembered them (4 bytes each), so its own count bound
//!   and its own eviction order; and, in `own`, its stamp for any record whose stamp is
//!   not its own, so its own ages. That happens only when members remember a key from
//!   different publishes (one of them renews a key that aged out for it alone, or
//!   remembers a key again that the others kept); a member alone never needs it.
//!
//! # Invariants
//!
//! - T1: bit `m` of a record's `holders` is set exactly while the record is in member
//!   `m`'s ring, where it is once.
//! - T2: a record with no holder is free: the index does not name it. The index names
//!   exactly the records in use (its I1).
//! - T3: a member's stamp for a record it holds is `own[slot]` if present, otherwise
//!   the record's stamp.
//! - T4: a key has at most one record.
//!
//! # Locking
//!
//! The table has a lock of its own ([`SharedKeys`]). A member takes it for each
//! operation, under its subscriber's run lock, where a window of its own would be
//! used; nothing else is locked or called while it is held. Only a topic's inline
//! subscribers share it: they run on the publishing thread, one after another, so the
//! lock is taken by as many threads at once as publish on the topic. Pool subscribers
//! run in parallel on the workers, and keep windows of their own.
//!
//! # Memory
//!
//! Every record in use has a holder, and a member holds at most its capacity, so the
//! table holds at most the sum of its members' capacities. Per key of capacity: 32
//! bytes of record, 16 to 32 of index (up to 48 while it doubles), 4 of ring (up to 6
//! while it grows): at most 86, within the 100 a window of its own is given. Records
//! are not moved, so the table keeps the chunks its largest sum of capacities needed
//! until its last member leaves, which gives everything back. A member's `own` stamps,
//! when members remember a key from different publishes, are a map of up to one entry
//! per key it holds (up to about 60 bytes per entry while it grows).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::dedup::{DedupWindow, KeyHash};
use crate::key_index::KeyIndex;
use crate::seen::Seen;
use crate::stamp::{nanos, Stamp};

/// Records per chunk: 32 KB.
const CHUNK: usize = 1024;

/// The most records a table may hold: slots fit the index's `u32`, with room to spare.
const MOST_RECORDS: usize = 1 << 31;

/// No next free record.
const NO_FREE: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Record {
    key: KeyHash,
    /// A bit per member that remembers the key (T1); 0: free (T2).
    holders: u64,
    /// When the first holder remembered it; for a free record, the next free slot.
    stamp: Stamp,
}

const FREE: Record = Record {
    key: KeyHash(0, 0),
    holders: 0,
    stamp: Stamp(NO_FREE as i64),
};

/// A topic's table, shared by its members (see the module docs).
pub(crate) type SharedKeys = Arc<Mutex<KeyTable>>;

pub(crate) struct KeyTable {
    chunks: Vec<Box<[Record; CHUNK]>>,
    /// Slots ever handed out; beyond it, chunks hold unused records.
    used: u32,
    /// The first free slot below `used`, or `NO_FREE`.
    free: u32,
    /// Records with a holder.
    in_use: usize,
    index: KeyIndex,
    /// The last key looked up or added, and its record if it has one: the members of a
    /// topic look up the same key one after another, so most look-ups end here.
    last: (KeyHash, Option<u32>),
    /// A bit per member.
    members: u64,
    /// The sum of the members' capacities: the most records in use (see "Memory").
    room: usize,
}

impl KeyTable {
    pub(crate) fn new() -> SharedKeys {
        Arc::new(Mutex::new(KeyTable::empty()))
    }

    fn empty() -> KeyTable {
        KeyTable {
            chunks: Vec::new(),
            used: 0,
            free: NO_FREE,
            in_use: 0,
            index: KeyIndex::new(),
            last: (KeyHash(0, 0), None),
            members: 0,
            room: 0,
        }
    }

    #[inline]
    fn record(&self, slot: u32) -> &Record {
        &self.chunks[slot as usize / CHUNK][slot as usize % CHUNK]
    }

    #[inline]
    fn record_mut(&mut self, slot: u32) -> &mut Record {
        &mut self.chunks[slot as usize / CHUNK][slot as usize % CHUNK]
    }

    #[inline]
    fn find(&mut self, key: KeyHash) -> Option<u32> {
        if self.last.0 == key {
            return self.last.1;
        }
        let found = match self.in_use {
            0 => None,
            _ => self.index.find(key, |slot| self.record(slot).key == key),
        };
        self.last = (key, found);
        found
    }

    /// A new record (its key has none: T4).
    fn add(&mut self, record: Record) -> u32 {
        if self.in_use == self.index.room() {
            self.grow_index();
        }
        let slot = match self.free {
            NO_FREE => self.new_slot(),
            free => {
                self.free = self.record(free).stamp.0 as u32;
                free
            }
        };
        *self.record_mut(slot) = record;
        self.index.insert(record.key, slot);
        self.in_use += 1;
        self.last = (record.key, Some(slot));
        slot
    }

    /// Doubles the index (room for one more record is the next power of two), up to
    /// the most records the table may hold. Out of line, as the other rare paths here:
    /// the hot ones stay small in the instruction cache, which the handlers share.
    #[cold]
    fn grow_index(&mut self) {
        let grown = (self.in_use + 1).clamp(8, self.room.max(8));
        self.index = KeyIndex::with_room_for(grown);
        for slot in 0..self.used {
            let kept = self.record(slot);
            if kept.holders != 0 {
                let key = kept.key;
                self.index.insert(key, slot);
            }
        }
    }

    /// A slot never used before, in a new chunk if need be.
    #[cold]
    fn new_slot(&mut self) -> u32 {
        if self.used as usize == self.chunks.len() * CHUNK {
            let chunk = vec![FREE; CHUNK].into_boxed_slice();
            // A boxed slice of `CHUNK` records, as a boxed array: allocated in place.
            let chunk: Box<[Record; CHUNK]> = chunk.try_into().unwrap_or_else(|_| unreachable!());
            self.chunks.push(chunk);
        }
        self.used += 1;
        self.used - 1
    }

    /// Takes member `bit` off `slot`'s holders, freeing the record if it was the last.
    #[inline]
    fn release(&mut self, slot: u32, bit: u64) {
        let record = self.record_mut(slot);
        record.holders &= !bit;
        if record.holders == 0 {
            self.free_record(slot);
        }
    }

    /// Out of line: of the members that hold a key, only the last to let go frees it.
    #[inline(never)]
    fn free_record(&mut self, slot: u32) {
        let next_free = self.free;
        let record = self.record_mut(slot);
        let key = record.key;
        record.stamp = Stamp(i64::from(next_free));
        self.free = slot;
        self.index.remove(key, slot);
        self.in_use -= 1;
        if self.last.0 == key {
            self.last.1 = None;
        }
    }
}

/// A subscriber's share of its topic's table: its window.
pub(crate) struct Member {
    table: SharedKeys,
    keys: Keys,
}

/// What a member keeps of its own.
struct Keys {
    bit: u64,
    capacity: usize,
    /// The window's `max_age` in nanoseconds.
    max_age: i64,
    /// The slots it holds, in the order it remembered them (T1).
    ring: SlotRing,
    /// When its stamp for the ring's front expires (kept here so that the purge at
    /// every look-up is one comparison).
    front_expires: Stamp,
    /// Its stamps that are not its records' (T3).
    own: HashMap<u32, Stamp>,
    evicted: u64,
}

impl Member {
    /// Joins `table` with `window`; `None` if the table has no room for another member
    /// (64 of them, or more records than a slot can name).
    fn join(table: &SharedKeys, window: DedupWindow) -> Option<Member> {
        let bit = {
            let mut locked = table.lock();
            let room = locked.room + window.capacity();
            if locked.members == u64::MAX || room > MOST_RECORDS {
                return None;
            }
            let bit = 1 << (!locked.members).trailing_zeros();
            locked.members |= bit;
            locked.room = room;
            bit
        };
        Some(Member {
            table: table.clone(),
            keys: Keys {
                bit,
                capacity: window.capacity(),
                max_age: nanos(window.max_age()),
                ring: SlotRing::default(),
                front_expires: Stamp::NEVER,
                own: HashMap::new(),
                evicted: 0,
            },
        })
    }
}

impl Keys {
    /// When its stamp for `slot` (which it holds) expires (T3).
    #[inline]
    fn expires(&self, table: &KeyTable, slot: u32) -> Stamp {
        let stamp = match self.own.is_empty() {
            true => table.record(slot).stamp,
            false => match self.own.get(&slot) {
                Some(&own) => own,
                None => table.record(slot).stamp,
            },
        };
        stamp.plus(self.max_age)
    }

    #[inline]
    fn pop_front(&mut self, table: &mut KeyTable) {
        if let Some(slot) = self.ring.pop_front() {
            if !self.own.is_empty() {
                self.own.remove(&slot);
            }
            table.release(slot, self.bit);
        }
        if let Some(front) = self.ring.front() {
            self.front_expires = self.expires(table, front);
        }
    }

    /// Forgets the keys that aged out from the front, as `Seen::purge` does.
    #[inline]
    fn purge(&mut self, table: &mut KeyTable, now: Stamp) {
        while !self.ring.is_empty() && self.front_expires.has_come(now) {
            self.pop_front(table);
        }
    }

    /// As `Seen::get`: whether it remembers `key` from less than `max_age` before `now`.
    fn contains(&mut self, table: &mut KeyTable, key: KeyHash, now: Stamp) -> bool {
        self.purge(table, now);
        let Some(slot) = table.find(key) else {
            return false;
        };
        table.record(slot).holders & self.bit != 0 && !self.expires(table, slot).has_come(now)
    }

    /// As `Seen::insert`: remembers `key` stamped `at`; a key it holds keeps its stamp,
    /// unless it aged out by `at` (then it takes `at`, and keeps its place in the ring).
    fn insert(&mut self, table: &mut KeyTable, key: KeyHash, at: Stamp) {
        self.purge(table, at);
        let found = table.find(key);
        if let Some(slot) = found {
            if table.record(slot).holders & self.bit != 0 {
                if self.expires(table, slot).has_come(at) {
                    self.renew(table, slot, at);
                }
                return;
            }
        }
        if self.ring.len() == self.capacity {
            self.pop_front(table);
            self.evicted += 1;
        }
        let slot = match found {
            // The pop cannot have freed it: this member did not hold it.
            Some(slot) => {
                let record = table.record_mut(slot);
                record.holders |= self.bit;
                if record.stamp != at {
                    self.keep_own(slot, at);
                }
                slot
            }
            None => table.add(Record {
                key,
                holders: self.bit,
                stamp: at,
            }),
        };
        if self.ring.is_empty() {
            self.front_expires = at.plus(self.max_age);
        }
        self.ring.push_back(slot, self.capacity);
    }

    /// Its stamp for `slot`, which is not the record's (T3).
    #[cold]
    fn keep_own(&mut self, slot: u32, at: Stamp) {
        self.own.insert(slot, at);
    }

    /// A key it holds, aged out for it, remembered again stamped `at`. Never the ring's
    /// front (whose expiry is kept apart): the purge before it popped every front that
    /// aged out by `at`.
    #[cold]
    fn renew(&mut self, table: &mut KeyTable, slot: u32, at: Stamp) {
        let record = table.record_mut(slot);
        if record.holders == self.bit {
            record.stamp = at;
            self.own.remove(&slot);
        } else if record.stamp == at {
            self.own.remove(&slot);
        } else {
            self.keep_own(slot, at);
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let mut table = self.table.lock();
        for slot in self.keys.ring.iter() {
            table.release(slot, self.keys.bit);
        }
        table.members &= !self.keys.bit;
        table.room -= self.keys.capacity;
        if table.members == 0 {
            // The last member gives the memory back (see "Memory").
            *table = KeyTable::empty();
        }
    }
}

/// A member's slots in the order it remembered them: a circular buffer that grows by
/// doubling up to the member's capacity, not past it (see "Memory").
#[derive(Default)]
struct SlotRing {
    slots: Vec<u32>,
    head: usize,
    len: usize,
}

impl SlotRing {
    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `position` (below twice the buffer's size) wrapped: a compare, not a division.
    fn wrap(&self, position: usize) -> usize {
        match position >= self.slots.len() {
            true => position - self.slots.len(),
            false => position,
        }
    }

    fn front(&self) -> Option<u32> {
        (self.len > 0).then(|| self.slots[self.head])
    }

    fn pop_front(&mut self) -> Option<u32> {
        let front = self.front()?;
        self.head = self.wrap(self.head + 1);
        self.len -= 1;
        Some(front)
    }

    /// Appends `slot`; the ring holds fewer than `most` slots.
    fn push_back(&mut self, slot: u32, most: usize) {
        if self.len == self.slots.len() {
            self.grow(most);
        }
        let position = self.wrap(self.head + self.len);
        self.slots[position] = slot;
        self.len += 1;
    }

    #[cold]
    fn grow(&mut self, most: usize) {
        let size = (self.len * 2).clamp(8, most.max(8));
        let mut slots = Vec::with_capacity(size);
        slots.extend(self.iter());
        slots.resize(size, 0);
        (self.slots, self.head) = (slots, 0);
    }

    fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).map(|i| self.slots[self.wrap(self.head + i)])
    }
}

/// A subscriber's dedup window: its own, or its share of its topic's table.
pub(crate) enum Window {
    Own(Seen),
    Shared(Member),
}

impl Window {
    /// A share of `table`, if given and it has room; otherwise a window of its own.
    pub(crate) fn new(window: DedupWindow, table: Option<&SharedKeys>) -> Window {
        match table.and_then(|table| Member::join(table, window)) {
            Some(member) => Window::Shared(member),
            None => Window::Own(Seen::new(window)),
        }
    }

    /// Whether it remembers `key` from less than `max_age` before `now`.
    pub(crate) fn contains(&mut self, key: KeyHash, now: Stamp) -> bool {
        match self {
            Window::Own(seen) => seen.get(key, now).is_some(),
            Window::Shared(member) => member.keys.contains(&mut member.table.lock(), key, now),
        }
    }

    /// Remembers `key`, stamped `at` (see `Seen::insert`).
    pub(crate) fn insert(&mut self, key: KeyHash, at: Stamp) {
        match self {
            Window::Own(seen) => {
                seen.insert(key, at, ());
            }
            Window::Shared(member) => member.keys.insert(&mut member.table.lock(), key, at),
        }
    }

    /// Forgets the keys that aged out from the front.
    pub(crate) fn purge(&mut self, now: Stamp) {
        match self {
            Window::Own(seen) => seen.purge(now),
            Window::Shared(member) => member.keys.purge(&mut member.table.lock(), now),
        }
    }

    /// The keys it holds.
    pub(crate) fn len(&self) -> usize {
        match self {
            Window::Own(seen) => seen.len(),
            Window::Shared(member) => member.keys.ring.len(),
        }
    }

    /// The keys it evicted to keep within its capacity.
    pub(crate) fn evicted(&self) -> u64 {
        match self {
            Window::Own(seen) => seen.evicted,
            Window::Shared(member) => member.keys.evicted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    #[derive(Debug, Clone)]
    enum Op {
        Insert { member: usize, key: u8, at: u64 },
        Contains { member: usize, key: u8, now: u64 },
        Purge { member: usize, now: u64 },
        Leave { member: usize },
    }

    fn op(members: usize) -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..members, 0_u8..16, 0_u64..60).prop_map(|(member, key, at)| Op::Insert { member, key, at }),
            4 => (0..members, 0_u8..16, 0_u64..60).prop_map(|(member, key, now)| Op::Contains { member, key, now }),
            1 => (0..members, 0_u64..60).prop_map(|(member, now)| Op::Purge { member, now }),
            1 => (0..members).prop_map(|member| Op::Leave { member }),
        ]
    }

    /// A key whose tag puts many keys in a few home buckets (as in `seen`'s tests).
    fn clustered(key: u8) -> KeyHash {
        KeyHash(u64::from(key % 3) | (u64::from(key) << 40), u64::from(key))
    }

    fn window((capacity, max_age): (usize, u64)) -> DedupWindow {
        DedupWindow::new(capacity, Duration::from_nanos(max_age))
    }

    fn shared(table: &SharedKeys, bounds: (usize, u64)) -> Window {
        let window = Window::new(window(bounds), Some(table));
        assert!(matches!(window, Window::Shared(_)));
        window
    }

    /// Checks T1, T2 and T4 against the members' rings.
    fn check_table(table: &KeyTable, members: &[Window]) -> Result<(), TestCaseError> {
        let mut holders: HashMap<u32, u64> = HashMap::new();
        for window in members {
            let Window::Shared(member) = window else { unreachable!() };
            for slot in member.keys.ring.iter() {
                let bits = holders.entry(slot).or_default();
                prop_assert_eq!(*bits & member.keys.bit, 0, "T1: once in a ring");
                *bits |= member.keys.bit;
            }
        }
        let mut keys = std::collections::HashSet::new();
        for slot in 0..table.used {
            let record = table.record(slot);
            prop_assert_eq!(record.holders, holders.get(&slot).copied().unwrap_or(0), "T1");
            if record.holders != 0 {
                prop_assert!(keys.insert(record.key), "T4: one record per key");
                let found = table.index.find(record.key, |s| table.record(s).key == record.key);
                prop_assert_eq!(found, Some(slot), "the index finds it");
            }
        }
        prop_assert_eq!((table.index.len(), table.in_use), (keys.len(), keys.len()), "T2");
        let (last, slot) = table.last;
        let found = (table.in_use > 0).then(|| table.index.find(last, |s| table.record(s).key == last));
        prop_assert_eq!(slot, found.flatten(), "the last look-up is still true");
        Ok(())
    }

    proptest! {
        /// Each member answers exactly as a window of its own (`Seen`, the reference)
        /// would, whatever the others do; members join and leave.
        #[test]
        fn members_answer_as_windows_of_their_own(
            bounds in prop::collection::vec((1_usize..12, 1_u64..40), 1..5),
            ops in prop::collection::vec(op(4), 1..400),
        ) {
            let at = |n: u64| Stamp(n as i64);
            let table = KeyTable::new();
            let mut members: Vec<Window> = bounds.iter().map(|&b| shared(&table, b)).collect();
            let mut own: Vec<Seen> = bounds.iter().map(|&b| Seen::new(window(b))).collect();
            for op in ops {
                match op {
                    Op::Insert { member, key, at: t } if member < own.len() => {
                        own[member].insert(clustered(key), at(t), ());
                        members[member].insert(clustered(key), at(t));
                    }
                    Op::Contains { member, key, now } if member < own.len() => {
                        let expected = own[member].get(clustered(key), at(now)).is_some();
                        prop_assert_eq!(members[member].contains(clustered(key), at(now)), expected);
                    }
                    Op::Purge { member, now } if member < own.len() => {
                        own[member].purge(at(now));
                        members[member].purge(at(now));
                    }
                    Op::Leave { member } if member < own.len() => {
                        own[member] = Seen::new(window(bounds[member]));
                        // The old member leaves first, so the new one may take its bit.
                        members[member] = Window::Own(Seen::new(window(bounds[member])));
                        members[member] = shared(&table, bounds[member]);
                    }
                    _ => {}
                }
                for (member, seen) in members.iter().zip(&own) {
                    prop_assert_eq!((member.len(), member.evicted()), (seen.len(), seen.evicted));
                }
                check_table(&table.lock(), &members)?;
            }
        }
    }

    #[test]
    fn members_of_one_table_keep_one_record_per_key() {
        let table = KeyTable::new();
        let mut members: Vec<Window> = (0..8).map(|_| shared(&table, (100, 1_000))).collect();
        for key in 0..300_u64 {
            for member in &mut members {
                member.insert(KeyHash(key, key), Stamp(0));
            }
        }
        let locked = table.lock();
        assert_eq!(locked.in_use, 100, "each key once, for all 8");
        assert!(members
            .iter()
            .all(|member| member.len() == 100 && member.evicted() == 200));
        drop(locked);
        members.clear();
        let locked = table.lock();
        assert_eq!(
            (locked.in_use, locked.members, locked.room),
            (0, 0, 0),
            "leaving frees all"
        );
        assert!(
            locked.chunks.is_empty() && locked.index.room() == 0,
            "and gives the memory back"
        );
    }

    #[test]
    fn a_full_table_gives_the_next_subscriber_a_window_of_its_own() {
        let table = KeyTable::new();
        let members: Vec<Window> = (0..64).map(|_| shared(&table, (1, 1))).collect();
        assert!(
            matches!(Window::new(window((1, 1)), Some(&table)), Window::Own(_)),
            "65th"
        );
        drop(members);
        let huge = Window::new(DedupWindow::new(1 << 31, Duration::from_secs(1)), Some(&table));
        assert!(matches!(huge, Window::Shared(_)));
        assert!(
            matches!(Window::new(window((1, 1)), Some(&table)), Window::Own(_)),
            "more records than a slot names"
        );
    }

    #[test]
    fn a_member_alone_never_keeps_stamps_of_its_own() {
        let table = KeyTable::new();
        let mut window = shared(&table, (4, 10));
        window.insert(KeyHash(1, 1), Stamp(20));
        window.insert(KeyHash(2, 2), Stamp(0));
        assert!(
            !window.contains(KeyHash(2, 2), Stamp(15)),
            "aged out behind a fresh front"
        );
        window.insert(KeyHash(2, 2), Stamp(15));
        assert!(window.contains(KeyHash(2, 2), Stamp(24)));
        let Window::Shared(member) = &window else {
            unreachable!()
        };
        assert!(member.keys.own.is_empty(), "renewed in its record");
    }
}
