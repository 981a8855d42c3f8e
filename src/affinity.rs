//! `Affinity<T>`: key affinity for a consumer group. Events with the same partition
//! key go to the same member while membership is stable, and are handled one at a time
//! in `seq` order, also while the key moves to another member (Kafka partitions,
//! Axon's sequencing policies).
//!
//! This module is the bookkeeping only, a plain structure the group keeps under one
//! lock (`group` wires it to the group's queue and members); the protocol around it is
//! below.
//!
//! # Design
//!
//! The group's queue stays the *intake*: publishes push there as for any group, so
//! capacity, overflow and accounting do not change. A member that looks for work
//! first *routes* everything in the intake, under the affinity lock, into
//! - the *line* of the event's key: a FIFO per key that has events waiting or one in
//!   progress (lines come and go with their events, so their number is bounded by the
//!   events the group holds), or
//! - the *keyless* queue, which any member takes from.
//!
//! A key hashes (a fixed hash, the same in every run) to one of [`PARTITIONS`]
//! partitions, and each partition has one owning member. A member takes from the lines
//! of the keys it owns and from the keyless queue, the older (lower `seq`) first.
//!
//! A line is *busy* from when a member takes its front event until that event is
//! finished for the member: handled, skipped as a duplicate, failed for good, dead-
//! lettered, dropped, or given back when the member leaves. An event waiting for its
//! retry keeps its line busy. Nothing else of the key is taken meanwhile, by any
//! member.
//!
//! **Assignment** is sticky: a joining member takes partitions one at a time from the
//! member that has most, until no member has more than one over another; a leaving
//! member's partitions go one at a time to the member that has fewest. Only
//! partitions that must move, move.
//!
//! # Invariants
//!
//! - A1 (ready): each member has a *ready* list, the keys it owns whose line has events
//!   waiting and is not busy. A key is in its owner's ready list exactly once while
//!   that holds, and in no list otherwise.
//! - A2 (order): each key's events enter its line in intake order, which is `seq`
//!   order (routing pops the intake under the lock; publishes push under the topic's
//!   commit lock), and a given-back event goes back to the front. With the busy flag,
//!   each key's events are taken one at a time, in `seq` order.
//! - A3 (no stranded event): every operation that makes a key ready for a member
//!   returns that member (route, finish, give back, join, leave), and the caller wakes
//!   it once the lock is released (`Members::wake_seat`: a member woken while it runs
//!   looks again; `wake_one` says why). A member that is leaving gives its partitions
//!   away under the lock, and the new owners are woken. Keyless events need no wake of
//!   their own: the member that routed them looks again before it stops, and every
//!   publish wakes a member.
//! - A4 (bounded): routed events keep their slot in the intake's capacity until a
//!   member takes them (`group` does that part), so the capacity bounds intake and
//!   lines together.
//! - A5 (idle under a manual clock): under a clock moved by hand, an event waiting for
//!   its retry is not in flight (see `retries`), and neither are the events its line
//!   holds back: its member *parks* the line, and [`lent`](Affinity::lent) counts
//!   the events waiting in parked lines. The group settles every change of `lent`
//!   with `in_flight` before it releases the lock: lent events leave it, and come
//!   back before anyone can take them (the retry is taken, finished or given back,
//!   or the lines are cleared), so `in_flight` never goes below the truth and
//!   `wait_idle` does not wait for a retry that only the test can make due.
//!
//! Loom model: `loom_affinity_*` in `loom_tests` (routing, taking, finishing and
//! waking by two members, with a member leaving).

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};

/// How many partitions the keys spread over: the most members that share the keyed
/// events of a group (more members only take keyless events).
pub(crate) const PARTITIONS: usize = 64;

/// A member, by the number it got when it joined.
pub(crate) type SeatId = u64;

/// What the structure needs of an event.
pub(crate) trait Keyed {
    fn partition_key(&self) -> Option<&str>;
    fn seq(&self) -> u64;
}

/// A key's hash by a fixed hasher: the same key lands in the same partition in every
/// run. (A 64-bit collision between two keys only serializes them together.)
pub(crate) fn key_hash(key: &str) -> u64 {
    // `DefaultHasher::new()` is SipHash with fixed keys (not `RandomState`'s).
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut hasher);
    hasher.finish()
}

fn partition(hash: u64) -> usize {
    (hash % PARTITIONS as u64) as usize
}

struct Line<T> {
    waiting: VecDeque<T>,
    busy: bool,
    /// Busy with an event that waits for its retry under a clock moved by hand (A5).
    parked: bool,
}

impl<T> Line<T> {
    fn new(busy: bool) -> Self {
        Line {
            waiting: VecDeque::new(),
            busy,
            parked: false,
        }
    }
}

struct Member {
    seat: SeatId,
    /// Keys of its partitions that are ready (A1), oldest-ready first.
    ready: VecDeque<u64>,
    /// How many partitions it owns.
    owns: usize,
}

pub(crate) struct Affinity<T> {
    /// Each partition's owner; `None` while the group has no member.
    owners: Vec<Option<SeatId>>,
    /// In joining order.
    members: Vec<Member>,
    lines: HashMap<u64, Line<T>>,
    keyless: VecDeque<T>,
    /// Events waiting in lines and in `keyless`.
    len: usize,
    /// Events waiting in parked lines (A5).
    lent: usize,
}

impl<T: Keyed> Affinity<T> {
    pub(crate) fn new() -> Self {
        Affinity {
            owners: vec![None; PARTITIONS],
            members: Vec::new(),
            lines: HashMap::new(),
            keyless: VecDeque::new(),
            len: 0,
            lent: 0,
        }
    }

    /// Events waiting in parked lines: not in flight (A5).
    pub(crate) fn lent(&self) -> usize {
        self.lent
    }

    /// A busy line's event waits for its retry under a clock moved by hand: what the
    /// line holds back is lent, now and as it comes (A5).
    pub(crate) fn park(&mut self, key_hash: u64) {
        if let Some(line) = self.lines.get_mut(&key_hash).filter(|l| l.busy && !l.parked) {
            line.parked = true;
            self.lent += line.waiting.len();
        }
    }

    /// The parked line's retry is taken again: what it holds back is in flight again.
    pub(crate) fn unpark(&mut self, key_hash: u64) {
        if let Some(line) = self.lines.get_mut(&key_hash) {
            Self::reclaim(&mut self.lent, line);
        }
    }

    fn reclaim(lent: &mut usize, line: &mut Line<T>) {
        if line.parked {
            line.parked = false;
            *lent -= line.waiting.len();
        }
    }

    /// Events waiting (not those in progress).
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The member that owns `key_hash`'s partition.
    pub(crate) fn owner(&self, key_hash: u64) -> Option<SeatId> {
        self.owners[partition(key_hash)]
    }

    /// Whether a keyless event waits (any member may take it).
    pub(crate) fn has_keyless(&self) -> bool {
        !self.keyless.is_empty()
    }

    /// Whether `seat` has something to take: a ready key, or a keyless event.
    pub(crate) fn has_work(&self, seat: SeatId) -> bool {
        !self.keyless.is_empty() || self.member(seat).is_some_and(|m| !m.ready.is_empty())
    }

    fn member(&self, seat: SeatId) -> Option<&Member> {
        self.members.iter().find(|m| m.seat == seat)
    }

    fn member_mut(&mut self, seat: SeatId) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.seat == seat)
    }

    /// Puts `key_hash` in its owner's ready list (A1: the caller checked it belongs
    /// there). Returns the owner, to wake.
    fn make_ready(&mut self, key_hash: u64) -> Option<SeatId> {
        let owner = self.owner(key_hash)?;
        if let Some(member) = self.member_mut(owner) {
            member.ready.push_back(key_hash);
        }
        Some(owner)
    }

    /// Routes an event from the intake. Returns the member to wake, if the event made
    /// a key ready.
    pub(crate) fn route(&mut self, event: T) -> Option<SeatId> {
        self.len += 1;
        let Some(key) = event.partition_key().map(key_hash) else {
            self.keyless.push_back(event);
            return None;
        };
        let line = self.lines.entry(key).or_insert_with(|| Line::new(false));
        line.waiting.push_back(event);
        self.lent += usize::from(line.parked);
        if line.busy || line.waiting.len() > 1 {
            // Busy, or ready already.
            return None;
        }
        self.make_ready(key)
    }

    /// The next event for `seat`: the front of its first ready line or of the keyless
    /// queue, whichever is older. A keyed event's line is busy until `finish`.
    pub(crate) fn take(&mut self, seat: SeatId) -> Option<T> {
        let keyless = self.keyless.front().map(Keyed::seq);
        let member = self.members.iter_mut().find(|m| m.seat == seat);
        let ready = member.as_ref().and_then(|m| m.ready.front().copied());
        let keyed = ready
            .and_then(|key| self.lines.get(&key))
            .and_then(|l| l.waiting.front().map(Keyed::seq));
        let event = match (keyed, keyless) {
            (Some(k), Some(f)) if f < k => self.keyless.pop_front(),
            (Some(_), _) => {
                let key = member.and_then(|m| m.ready.pop_front())?;
                let line = self.lines.get_mut(&key)?;
                line.busy = true;
                line.waiting.pop_front()
            }
            (None, _) => self.keyless.pop_front(),
        };
        if event.is_some() {
            self.len -= 1;
        }
        event
    }

    /// The event of `key_hash` taken last is finished: its line is free. Returns the
    /// member to wake if the line has more.
    pub(crate) fn finish(&mut self, key_hash: u64) -> Option<SeatId> {
        // No line: the group was cleared meanwhile (its last member left from inside
        // this event's handler).
        let line = self.lines.get_mut(&key_hash)?;
        Self::reclaim(&mut self.lent, line);
        line.busy = false;
        if line.waiting.is_empty() {
            self.lines.remove(&key_hash);
            return None;
        }
        self.make_ready(key_hash)
    }

    /// A taken event comes back unfinished (its member left while it waited for a
    /// retry): it goes back to the front of its line, which is free again. Returns the
    /// member to wake.
    pub(crate) fn give_back(&mut self, event: T) -> Option<SeatId> {
        self.len += 1;
        let Some(key) = event.partition_key().map(key_hash) else {
            self.keyless.push_front(event);
            return None;
        };
        let line = self.lines.entry(key).or_insert_with(|| Line::new(true));
        Self::reclaim(&mut self.lent, line);
        let was_ready = !line.busy && !line.waiting.is_empty();
        line.busy = false;
        line.waiting.push_front(event);
        if was_ready {
            return self.owner(key);
        }
        self.make_ready(key)
    }

    /// Adds a member, which takes its share of the partitions. Returns every member
    /// with a ready key, to wake.
    pub(crate) fn join(&mut self, seat: SeatId) -> Vec<SeatId> {
        self.members.push(Member {
            seat,
            ready: VecDeque::new(),
            owns: 0,
        });
        let new = self.members.len() - 1;
        if new == 0 {
            self.owners.iter_mut().for_each(|o| *o = Some(seat));
            self.members[0].owns = PARTITIONS;
        } else {
            loop {
                let (richest, most) = self
                    .members
                    .iter()
                    .enumerate()
                    .map(|(i, m)| (i, m.owns))
                    .max_by_key(|&(i, owns)| (owns, std::cmp::Reverse(i)))
                    .unwrap_or((new, 0));
                if most <= self.members[new].owns + 1 {
                    break;
                }
                let from = self.members[richest].seat;
                // Its highest-numbered partition moves.
                if let Some(p) = self.owners.iter().rposition(|&o| o == Some(from)) {
                    self.owners[p] = Some(seat);
                    self.members[richest].owns -= 1;
                    self.members[new].owns += 1;
                }
            }
        }
        self.reassign_ready()
    }

    /// Takes a member off; its partitions go to the others. Returns every member with
    /// a ready key, to wake.
    pub(crate) fn leave(&mut self, seat: SeatId) -> Vec<SeatId> {
        self.members.retain(|m| m.seat != seat);
        for p in 0..PARTITIONS {
            if self.owners[p] != Some(seat) {
                continue;
            }
            let poorest = self.members.iter_mut().min_by_key(|m| m.owns);
            self.owners[p] = poorest.map(|m| {
                m.owns += 1;
                m.seat
            });
        }
        self.reassign_ready()
    }

    /// Rebuilds every ready list from the lines (A1), oldest front event first.
    fn reassign_ready(&mut self) -> Vec<SeatId> {
        for member in &mut self.members {
            member.ready.clear();
        }
        let mut ready: Vec<(u64, u64)> = self
            .lines
            .iter()
            .filter(|(_, line)| !line.busy)
            .filter_map(|(&key, line)| line.waiting.front().map(|e| (e.seq(), key)))
            .collect();
        ready.sort_unstable();
        let mut wake = Vec::new();
        for (_, key) in ready {
            if let Some(owner) = self.make_ready(key) {
                if !wake.contains(&owner) {
                    wake.push(owner);
                }
            }
        }
        wake
    }

    /// Takes out every waiting event (the group ends). Lines in progress are
    /// forgotten: their `finish` finds nothing.
    pub(crate) fn clear(&mut self) -> Vec<T> {
        let mut all: Vec<T> = self.keyless.drain(..).collect();
        for (_, line) in self.lines.drain() {
            all.extend(line.waiting);
        }
        for member in &mut self.members {
            member.ready.clear();
        }
        self.len = 0;
        self.lent = 0;
        all
    }

    /// How many partitions each member owns, in joining order.
    #[cfg(test)]
    fn shares(&self) -> Vec<usize> {
        self.members.iter().map(|m| m.owns).collect()
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An event: its key and `seq`.
    #[derive(Debug, Clone, PartialEq)]
    struct Ev(Option<&'static str>, u64);

    impl Keyed for Ev {
        fn partition_key(&self) -> Option<&str> {
            self.0
        }
        fn seq(&self) -> u64 {
            self.1
        }
    }

    fn finish(a: &mut Affinity<Ev>, ev: &Ev) -> Option<SeatId> {
        a.finish(key_hash(ev.0.unwrap()))
    }

    #[test]
    fn one_member_takes_in_seq_order_one_event_of_a_key_at_a_time() {
        let mut a = Affinity::new();
        a.join(1);
        for (seq, key) in [Some("a"), Some("a"), None, Some("b")].into_iter().enumerate() {
            a.route(Ev(key, seq as u64));
        }
        assert_eq!(a.take(1), Some(Ev(Some("a"), 0)));
        // "a" is busy: the keyless event and "b" come first.
        assert_eq!(a.take(1), Some(Ev(None, 2)));
        assert_eq!(a.take(1), Some(Ev(Some("b"), 3)));
        assert_eq!(a.take(1), None);
        assert!(!a.has_work(1));
        assert_eq!(finish(&mut a, &Ev(Some("a"), 0)), Some(1));
        assert_eq!(a.take(1), Some(Ev(Some("a"), 1)));
        assert_eq!(a.len(), 0);
    }

    #[test]
    fn a_key_stays_with_its_member_and_moves_only_when_it_must() {
        let mut a: Affinity<Ev> = Affinity::new();
        a.join(1);
        a.join(2);
        a.join(3);
        assert_eq!(a.shares(), [21, 22, 21]);
        let owners: Vec<_> = (0..200).map(|k| a.owner(key_hash(&k.to_string()))).collect();
        a.leave(2);
        assert_eq!(a.shares(), [32, 32]);
        for (k, before) in owners.iter().enumerate() {
            let now = a.owner(key_hash(&k.to_string()));
            if *before != Some(2) {
                assert_eq!(now, *before, "key {k} moved though its member stayed");
            }
        }
        a.leave(1);
        a.leave(3);
        assert_eq!(a.owner(key_hash("x")), None);
    }

    #[test]
    fn a_busy_key_waits_for_its_finish_on_whichever_member_owns_it_now() {
        let mut a = Affinity::new();
        a.join(1);
        let key = (0..)
            .map(|k| k.to_string())
            .find(|k| partition(key_hash(k)) == PARTITIONS - 1)
            .unwrap();
        let key: &'static str = Box::leak(key.into_boxed_str());
        assert_eq!(a.route(Ev(Some(key), 0)), Some(1));
        a.route(Ev(Some(key), 1));
        let first = a.take(1).unwrap();
        // Member 2 joins and takes the highest partition, this key's: woken for
        // nothing yet, since the line is busy with member 1's event.
        assert_eq!(a.join(2), Vec::<SeatId>::new());
        assert_eq!(a.owner(key_hash(key)), Some(2));
        assert_eq!(a.take(2), None);
        assert_eq!(finish(&mut a, &first), Some(2));
        assert_eq!(a.take(2), Some(Ev(Some(key), 1)));
    }

    #[test]
    fn a_given_back_event_goes_first_again() {
        let mut a = Affinity::new();
        a.join(1);
        a.route(Ev(Some("k"), 0));
        a.route(Ev(Some("k"), 1));
        a.route(Ev(None, 2));
        let first = a.take(1).unwrap();
        let keyless = a.take(1).unwrap();
        assert_eq!(a.give_back(keyless), None);
        assert_eq!(a.give_back(first), Some(1));
        assert_eq!(a.take(1), Some(Ev(Some("k"), 0)));
        assert_eq!(a.take(1), Some(Ev(None, 2)));
        assert_eq!(a.take(1), None, "k is busy again");
        assert_eq!(a.clear(), [Ev(Some("k"), 1)]);
        assert_eq!(finish(&mut a, &Ev(Some("k"), 0)), None, "cleared lines are forgotten");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Publish(Option<u8>),
        Take(usize),
        Finish(usize),
        GiveBack(usize),
        Park(usize),
        Unpark(usize),
        Join,
        Leave(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => proptest::option::weighted(0.8, 0..6_u8).prop_map(Op::Publish),
            4 => (0..4_usize).prop_map(Op::Take),
            3 => (0..4_usize).prop_map(Op::Finish),
            1 => (0..4_usize).prop_map(Op::GiveBack),
            1 => (0..4_usize).prop_map(Op::Park),
            1 => (0..4_usize).prop_map(Op::Unpark),
            1 => Just(Op::Join),
            1 => (0..4_usize).prop_map(Op::Leave),
        ]
    }

    /// Members reported for waking look again.
    fn woken(idle: &mut Vec<SeatId>, seats: impl IntoIterator<Item = SeatId>) {
        for seat in seats {
            idle.retain(|&s| s != seat);
        }
    }

    const KEYS: [&str; 6] = ["k0", "k1", "k2", "k3", "k4", "k5"];

    proptest! {
        /// Against a model: no event is taken twice or lost; a key's events are taken
        /// one at a time in `seq` order (a given-back one again first); a member only
        /// takes keys it owns; the shares differ by at most one; every key made ready
        /// for a member is reported for waking or taken by the caller.
        #[test]
        fn affinity_keeps_each_keys_order_and_loses_nothing(ops in proptest::collection::vec(op(), 1..120)) {
            let mut a: Affinity<Ev> = Affinity::new();
            let mut seats: Vec<SeatId> = Vec::new();
            let mut next_seat = 0;
            let mut next_seq = 0;
            // Taken and not finished, by member: (event, seat).
            let mut held: Vec<(Ev, SeatId)> = Vec::new();
            // The next seq each key must yield (its events in order).
            let mut published: Vec<Ev> = Vec::new();
            let mut taken_keyed: HashMap<&str, Vec<u64>> = HashMap::new();
            let mut done: Vec<u64> = Vec::new();
            // Members that found nothing and were not woken since (A3).
            let mut idle: Vec<SeatId> = Vec::new();
            // Keys whose held event waits for a retry under a manual clock.
            let mut parked: Vec<&str> = Vec::new();
            for op in ops {
                match op {
                    Op::Join => {
                        next_seat += 1;
                        seats.push(next_seat);
                        woken(&mut idle, a.join(next_seat));
                    }
                    Op::Leave(i) if !seats.is_empty() => {
                        let seat = seats.remove(i % seats.len());
                        idle.retain(|&s| s != seat);
                        woken(&mut idle, a.leave(seat));
                        // Then it gives back what it holds (as `Subscriber::retire`).
                        for (ev, _) in held.iter().filter(|(_, s)| *s == seat) {
                            woken(&mut idle, a.give_back(ev.clone()));
                            if let Some(k) = ev.0 {
                                taken_keyed.get_mut(k).unwrap().retain(|&s| s != ev.1);
                                parked.retain(|&p| p != k);
                            }
                        }
                        held.retain(|(_, s)| *s != seat);
                    }
                    Op::Publish(key) => {
                        let ev = Ev(key.map(|k| KEYS[k as usize]), next_seq);
                        next_seq += 1;
                        published.push(ev.clone());
                        woken(&mut idle, a.route(ev));
                    }
                    Op::Take(i) if !seats.is_empty() => {
                        let seat = seats[i % seats.len()];
                        let Some(ev) = a.take(seat) else {
                            // It stops looking until something wakes it.
                            idle.push(seat);
                            continue;
                        };
                        {
                            if let Some(k) = ev.0 {
                                prop_assert_eq!(a.owner(key_hash(k)), Some(seat), "took a key it does not own");
                                prop_assert!(!held.iter().any(|(h, _)| h.0 == Some(k)), "two of key {} at once", k);
                                let order = taken_keyed.entry(k).or_default();
                                prop_assert!(order.last().map_or(true, |&last| last < ev.1), "key {} out of order", k);
                                order.push(ev.1);
                            }
                            held.push((ev, seat));
                        }
                    }
                    Op::Park(i) | Op::Unpark(i) if !held.is_empty() => {
                        if let Some(k) = held[i % held.len()].0 .0 {
                            parked.retain(|&p| p != k);
                            if matches!(op, Op::Park(_)) {
                                a.park(key_hash(k));
                                parked.push(k);
                            } else {
                                a.unpark(key_hash(k));
                            }
                        }
                    }
                    Op::Finish(i) | Op::GiveBack(i) if !held.is_empty() => {
                        let (ev, _) = held.remove(i % held.len());
                        if let Some(k) = ev.0 {
                            parked.retain(|&p| p != k);
                        }
                        if matches!(op, Op::GiveBack(_)) {
                            if let Some(k) = ev.0 {
                                taken_keyed.get_mut(k).unwrap().retain(|&s| s != ev.1);
                            }
                            woken(&mut idle, a.give_back(ev));
                        } else {
                            if let Some(k) = ev.0 {
                                woken(&mut idle, a.finish(key_hash(k)));
                            }
                            done.push(ev.1);
                        }
                    }
                    _ => {}
                }
                if let (Some(min), Some(max)) = (a.shares().iter().min(), a.shares().iter().max()) {
                    prop_assert!(max - min <= 1, "shares {:?}", a.shares());
                    prop_assert_eq!(a.shares().iter().sum::<usize>(), PARTITIONS);
                }
                prop_assert_eq!(a.len() + held.len() + done.len(), published.len());
                // A5: what parked lines hold back, and only that, is lent.
                let waiting = published.iter().filter(|e| {
                    !done.contains(&e.1) && !held.iter().any(|(h, _)| h.1 == e.1)
                });
                let lent = waiting.filter(|e| e.0.is_some_and(|k| parked.contains(&k))).count();
                prop_assert_eq!(a.lent(), lent);
                for &seat in &idle {
                    prop_assert!(a.member(seat).unwrap().ready.is_empty(), "member {} has a ready key nobody woke it for", seat);
                }
            }
            // Drain: every member takes and finishes until nothing is left.
            if !seats.is_empty() {
                for (ev, _) in held.drain(..) {
                    if let Some(k) = ev.0 { a.finish(key_hash(k)); }
                    done.push(ev.1);
                }
                loop {
                    let mut progress = false;
                    for &seat in &seats {
                        let Some(ev) = a.take(seat) else {
                            // It stops looking until something wakes it.
                            idle.push(seat);
                            continue;
                        };
                        {
                            if let Some(k) = ev.0 { a.finish(key_hash(k)); }
                            done.push(ev.1);
                            progress = true;
                        }
                    }
                    if !progress { break; }
                }
                prop_assert_eq!(a.len(), 0, "an event stranded");
                done.sort_unstable();
                prop_assert_eq!(done, (0..next_seq).collect::<Vec<_>>());
            }
        }
    }
}
