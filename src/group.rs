//! Consumer groups: subscribers that share one stream, each event handled by one
//! member (competing consumers, like a RabbitMQ queue with several consumers or a NATS
//! queue group).
//!
//! # Design
//!
//! A group is one queue on its topic plus its members.
//! - **The queue** is a `Subscriber<E>` without a handler (the *hub*): it sits in the
//!   topic's roster like any subscriber, so a publish reserves, commits, counts and
//!   applies the overflow policy for the group exactly as for one subscriber, and
//!   pushes the event once. Its `notify` and `submit` wake one member instead of
//!   running it (see `wake_one`, which says why no event waits with every member
//!   idle).
//! - **A member** is a `Subscriber<E, GroupSeat<E>>`: an ordinary push subscriber
//!   (handler, delivery policy, retries, dead letters, counters) whose inbox pops from
//!   the hub's queue. A member takes the next event when it is free, so a slow member
//!   never hoards work and a member that fails every event gets no more than its turn.
//!
//! With key affinity (see `affinity`), the queue is the group's intake: a member that
//! looks for work routes what is queued into per-key lines under the affinity lock,
//! and takes from the keys its partitions hold and from the keyless events.
//!
//! A group of *receivers* has the same queue, not in flight (its hub is a receiver
//! for the publish's accounting). Its members are never woken: each `recv` takes from
//! the queue itself, blocking on it, and the close at shutdown reaches every blocked
//! one (`Mailbox::pop_blocking` passes the wake marker on). A group is all push
//! members, all receivers or all ack receivers.
//!
//! A group of *ack receivers* shares the queue the same way, but each member takes
//! through its own gate (`ack`: its limit of handles out, its retries). The gate wakes
//! its waiting receiver with a marker in its source; in a queue that others pop, another
//! member could take that marker, so each member's source is the group's queue for
//! events and a *bell* of its own for markers and the close: it waits on both. When
//! it leaves, its waiting retries are given back to the queue (`hand_over`), and so is
//! a handle it had given out that is nacked or dropped after it left: another member
//! takes it, with its next attempt number, at once (the backoff was the leaver's).
//!
//! The *lanes* of one subscriber with `concurrency(n)` (see `lanes`) are a group of
//! their own, made with its `n` members and kept off the topic's group map: keyed like
//! the above, except that every lane may take every key (they share one seat in the
//! affinity, and whoever makes a key ready wakes any idle lane).
//!
//! Leaving needs no hand-over of queued events: they are the group's, not the
//! member's, and the others take them. A leaving member's events that wait for a retry
//! are given back to the queue with their attempt count (`hand_over`), where another
//! member retries them under its own policy. The member that leaves last dissolves the
//! group: the hub leaves the topic, then that member takes what is still queued and
//! drops it, counted in its own stats (`Unsubscribed`) as for any subscriber that
//! leaves, so its final stats show it. A later member makes a new group.
//!
//! # Invariants
//!
//! - G1: each accepted event is in exactly one place: the queue, one member (running,
//!   waiting for its retry, settled), or a drop counter. Pops from the queue are
//!   atomic (crossbeam), and the hub is the only subscriber the publish pushes to.
//! - G2: nothing is added to a dissolved group's queue after its last member drains
//!   it. Joining, leaving, dissolving and giving back all hold the group's
//!   `dissolved` lock (which also orders changes to the member list), and a give-back
//!   checks the flag under it, and drops instead when no other member is listed (the
//!   last member gives back before it leaves); a dissolve takes the hub off the topic
//!   and passes its commit lock under it, so no publish pushes after that; the drain
//!   comes after the dissolve.
//! - G3: a member never joins a dissolved group: joining checks `dissolved` under the
//!   same lock, and under the topic's group map lock, and makes a new group if so.
//! - G4 (key affinity): a member's seat is in the member list before it is in the
//!   affinity's assignment, and a wake is sent after the affinity lock is released
//!   (`affinity` has the rest).
//! - G5 (groups of receivers): nothing is given back to a closed queue, and an ack
//!   receiver's bell is closed only after the queue. The queue is closed under
//!   `dissolved` (after shutdown sealed the topics: no publish pushes any more), and a
//!   give-back checks it under the same lock, so once a member's gate reads its bell
//!   closed, "the queue is empty" is final.
//!
//! # Lock order
//!
//! topic group map → group `dissolved` → roster / commit lock, or → the affinity lock;
//! a member's run lock → group `dissolved` (a leave runs under the leaver's run lock)
//! → the affinity lock. Publishers take neither `dissolved`, the map nor the affinity
//! lock: only the member list's read lock, after the commit lock is released. Nothing
//! is woken under the affinity lock. An ack receiver gives back after its gate's lock
//! is released, so it never holds that lock when it takes `dissolved`.

use std::collections::HashMap;
use std::time::Duration;

use crate::ack::{Source, Take};
use crate::affinity::{key_hash, Affinity, Keyed, SeatId};
use crate::bus::BusShared;
use crate::delivery::Delivery;
use crate::envelope::Envelope;
use crate::inbox::{Inbox, Next};
use crate::mailbox::{Mailbox, Pop};
use crate::policy::{Dispatch, DropReason};
use crate::stats::{Consumer, Counters, GroupStats, SubscriberId, SubscriberStats};
use crate::subscriber::{Filter, Parts, Subscriber};
use crate::subscription::Control;
use crate::sync::{Arc, AtomicU64, Mutex, Ordering, Weak};
use crate::topic::TopicCore;
use crate::wake_one::Members;

/// A topic's groups by name.
pub(crate) type Groups<E> = Mutex<HashMap<std::sync::Arc<str>, Arc<Group<E>>>>;

pub(crate) struct Group<E> {
    name: std::sync::Arc<str>,
    /// The group's queue (see the module docs).
    hub: Arc<Subscriber<E>>,
    members: std::sync::Arc<Members>,
    /// Membership changes and give-backs, one at a time (G2, G3); `true` once
    /// dissolved.
    dissolved: Mutex<bool>,
    bus: Weak<BusShared>,
    handed_out: AtomicU64,
    handed_back: AtomicU64,
    /// Per-key lines and their assignment, for a group with key affinity.
    affinity: Option<Mutex<Affinity<Envelope<E>>>>,
    /// The lanes of one subscriber: every member owns every key (see the module docs).
    lanes: bool,
    /// What its members are.
    kind: Kind,
    /// The next member's seat.
    next_seat: AtomicU64,
}

impl<E> Keyed for Envelope<E> {
    fn partition_key(&self) -> Option<&str> {
        self.key()
    }

    fn seq(&self) -> u64 {
        Envelope::seq(self)
    }
}

/// How a group shares its events out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sharing {
    /// Each event to whichever member is free.
    AnyMember,
    /// By partition key, each key owned by one member (`key_affinity`).
    ByKey,
    /// By partition key, every key to whichever lane is free (`concurrency`).
    Lanes,
}

/// What a group's members are: a group is all of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Push subscribers, woken to take the next event.
    Push,
    /// Receivers: each `recv` takes from the queue when its owner calls, and nobody is
    /// woken.
    Receivers,
    /// Ack receivers: like receivers, each through its own gate, woken by its own bell.
    AckReceivers,
}

impl Kind {
    fn of<E>(member: &Parts<E>) -> Kind {
        match (member.consumer, &member.delivery) {
            (Consumer::Handler(_), _) => Kind::Push,
            (Consumer::Receiver, Delivery::AtLeastOnce(_)) => Kind::AckReceivers,
            (Consumer::Receiver, Delivery::AtMostOnce) => Kind::Receivers,
        }
    }
}

/// The one seat every lane takes keys for.
const LANES_SEAT: SeatId = 0;

impl<E: Send + Sync + 'static> Group<E> {
    /// A new group, its queue made like `member`'s mailbox would be.
    fn new(
        name: &str,
        member: &Parts<E>,
        capacity: Option<usize>,
        sharing: Sharing,
        filter: Option<Filter<E>>,
    ) -> Arc<Self> {
        let members = std::sync::Arc::new(Members::new());
        let hub = Parts {
            name: Some(name.to_owned()),
            topic: member.topic.clone(),
            overflow: member.overflow,
            // Like its members for the publish's accounting (`in_flight`: what a group
            // of push members holds is in flight, a group of receivers' is not); it
            // never runs.
            consumer: match member.consumer {
                Consumer::Receiver => Consumer::Receiver,
                Consumer::Handler(_) => Consumer::Handler(Dispatch::Pool),
            },
            executor: None,
            // Only lanes have one (members refuse filters): it screens at publish, and
            // its panics go to the subscriber's error hook.
            filter,
            handler: None,
            error_hook: member.error_hook.clone(),
            runtime: member.runtime.clone(),
            delivery: Delivery::AtMostOnce,
            retry_limit: member.retry_limit,
            bus: member.bus.clone(),
            dedup: None,
            dedup_key: None,
            members: Some(members.clone()),
            priority: member.priority,
            dead_letter_store: None,
            public_id: None,
            key_table: None,
        };
        Arc::new(Group {
            name: name.into(),
            hub: Subscriber::new(hub, Mailbox::new(capacity)),
            members,
            dissolved: Mutex::new(false),
            bus: member.bus.clone(),
            handed_out: AtomicU64::new(0),
            handed_back: AtomicU64::new(0),
            affinity: (sharing != Sharing::AnyMember).then(|| Mutex::new(Affinity::new())),
            lanes: sharing == Sharing::Lanes,
            kind: Kind::of(member),
            next_seat: AtomicU64::new(0),
        })
    }

    /// With key affinity: runs `op` under the affinity lock, and settles what it lent
    /// or reclaimed with `in_flight` before the lock is released (`affinity`, A5).
    fn with_affinity<R>(&self, op: impl FnOnce(&mut Affinity<Envelope<E>>) -> R) -> Option<R> {
        let mut affinity = self.affinity.as_ref()?.lock();
        let before = affinity.lent();
        let result = op(&mut affinity);
        let after = affinity.lent();
        let in_flight = &self.hub.runtime.in_flight;
        if after > before {
            in_flight.finish(after - before);
        } else if before > after {
            in_flight.add(before - after);
        }
        Some(result)
    }

    /// Events the group holds that any member may take: queued, or routed keyless.
    /// (A keyed event is for its key's owner, whom the operation that made it ready
    /// names.)
    fn has_queued(&self) -> bool {
        !self.hub.inbox.is_empty() || self.with_affinity(|a| a.has_keyless()) == Some(true)
    }

    /// Events queued now (a group of receivers has no lines).
    pub(crate) fn queued(&self) -> usize {
        self.hub.inbox.len()
    }

    /// After a push, a leave or a give-back: wakes a push member to take what is
    /// queued. Receivers are never woken: they block on the queue itself.
    fn wake_any(&self) {
        if self.kind == Kind::Push {
            self.members.wake();
        }
    }

    /// Wakes the members an affinity operation named (after its lock is released);
    /// lanes: any idle lane for each.
    fn wake_seats(&self, seats: impl IntoIterator<Item = SeatId>) {
        for seat in seats {
            if self.lanes {
                self.members.wake();
            } else {
                let _ = self.members.wake_seat(seat);
            }
        }
    }

    /// The member at `leaver` left (step 3 of its unsubscribe, under its run lock).
    /// If others remain and events are queued, one of them is woken (see `wake_one`).
    /// The last one dissolves the group: its queue leaves the topic, so nothing more
    /// is queued, and that member's `discard` drops what is (G2).
    fn leave(self: &Arc<Self>, leaver: SeatId, topic: &TopicCore<E>) {
        let mut dissolved = self.dissolved.lock();
        self.members.remove(leaver);
        // Lanes share one seat: it stays until the last lane dissolves the group.
        let keys_moved = self.with_affinity(|a| if self.lanes { Vec::new() } else { a.leave(leaver) });
        if self.members.len() > 0 {
            drop(dissolved);
            self.wake_seats(keys_moved.into_iter().flatten());
            if self.has_queued() {
                self.wake_any();
            }
            return;
        }
        *dissolved = true;
        self.hub.deactivate();
        topic.remove(&self.hub);
        topic.commit_barrier();
        drop(dissolved);
        // Publishers waiting for room in the queue learn that it is gone.
        self.hub.inbox.wake_publishers();
        topic.forget_group(self);
        if let Some(bus) = self.bus.upgrade() {
            bus.forget(self.hub.id);
        }
    }

    /// A member that joined: if events are queued, it (or another) takes them now.
    /// With key affinity, every member with a ready key is woken: the join may have
    /// moved keys.
    pub(crate) fn joined(&self) {
        let seats = self.members.seats();
        let ready = self.with_affinity(|a| seats.into_iter().filter(|&s| a.has_work(s)).collect::<Vec<_>>());
        self.wake_seats(ready.into_iter().flatten());
        if !self.hub.inbox.is_empty() {
            self.wake_any();
        }
    }

    pub(crate) fn has_members(&self) -> bool {
        self.members.len() > 0
    }

    fn is_dissolved(&self) -> bool {
        *self.dissolved.lock()
    }

    /// Shutdown: nothing more comes to the queue. Under `dissolved`, so a give-back
    /// either is queued before the close or sees it and gives nothing (G5).
    fn close_queue(&self) {
        let _dissolved = self.dissolved.lock();
        self.hub.inbox.close();
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn stats(&self) -> GroupStats {
        let hub = self.hub.stats();
        GroupStats {
            name: self.name.to_string(),
            topic: hub.topic,
            members: self.members.len(),
            receivers: self.kind != Kind::Push,
            capacity: hub.capacity,
            overflow: hub.overflow,
            accepted: hub.accepted,
            handed_out: self.handed_out.load(Ordering::Relaxed),
            handed_back: self.handed_back.load(Ordering::Relaxed),
            dropped: hub.dropped,
            refused: hub.refused,
            queued: hub.queued + self.with_affinity(|a| a.len() as u64).unwrap_or(0),
            high_water: hub.high_water,
        }
    }
}

/// Adds a push member to the group `name` on `topic`, making the group if it has none
/// (or only a dissolved one, G3). Returns the member, and the group if this made it
/// (for the caller to register with the bus).
///
/// Refused (with the reason) if the member's capacity, overflow policy or key affinity
/// is not the group's: they are the queue's, which all members share.
pub(crate) fn join<E: Send + Sync + 'static>(
    topic: &Arc<TopicCore<E>>,
    name: &str,
    parts: Parts<E>,
    capacity: Option<usize>,
    sharing: Sharing,
) -> Result<Joined<E>, &'static str> {
    let mut groups = topic.groups().lock();
    let mut made = None;
    loop {
        let group = match groups.get(name) {
            Some(group) => group.clone(),
            None => {
                let group = Group::new(name, &parts, capacity, sharing, None);
                topic.add(group.hub.clone());
                groups.insert(group.name.clone(), group.clone());
                made = Some(group.clone());
                group
            }
        };
        let dissolved = group.dissolved.lock();
        if *dissolved {
            // Its last member left; it takes itself off the map once it can (G3).
            drop(dissolved);
            groups.remove(name);
            continue;
        }
        if group.hub.overflow != parts.overflow || group.hub.inbox.capacity() != capacity {
            return Err("the members of a group share its queue: give every member the same capacity and overflow");
        }
        if group.affinity.is_some() != (sharing == Sharing::ByKey) {
            return Err("key affinity is the group's: give every member key_affinity(), or none");
        }
        if group.kind != Kind::of(&parts) {
            return Err("a group's members are all push subscribers, all receivers or all ack receivers");
        }
        let member = group.seat(parts);
        // Listed before it owns keys (G4); `joined` wakes whoever the join gave keys.
        group.members.add(member.inbox.seat, member.clone());
        group.with_affinity(|a| a.join(member.inbox.seat));
        drop(dissolved);
        return Ok((member, made));
    }
}

/// The lanes of one subscriber with `concurrency(n)`, one per `parts`: a group of
/// their own on `topic`, off its group map (see the module docs), whose queue takes
/// the events `filter` admits. Returns the group, for the caller to retire with the
/// lanes.
pub(crate) fn lanes<E: Send + Sync + 'static>(
    topic: &Arc<TopicCore<E>>,
    name: &str,
    lanes: Vec<Parts<E>>,
    capacity: Option<usize>,
    filter: Option<Filter<E>>,
) -> (Arc<Group<E>>, Vec<Member<E>>) {
    let group = Group::new(name, &lanes[0], capacity, Sharing::Lanes, filter);
    group.with_affinity(|a| a.join(LANES_SEAT));
    let lanes: Vec<_> = lanes.into_iter().map(|parts| group.seat(parts)).collect();
    for lane in &lanes {
        group.members.add(lane.inbox.seat, lane.clone());
    }
    topic.add(group.hub.clone());
    (group, lanes)
}

impl<E: Send + Sync + 'static> Group<E> {
    /// A new member's subscriber, in the next seat.
    fn seat(self: &Arc<Self>, parts: Parts<E>) -> Member<E> {
        let seat = self.next_seat.fetch_add(1, Ordering::Relaxed);
        Subscriber::new(
            parts,
            GroupSeat {
                group: self.clone(),
                taken: AtomicU64::new(0),
                bell: Mailbox::new(None),
                seat,
                owner: if self.lanes { LANES_SEAT } else { seat },
            },
        )
    }
}

/// A member: a subscriber whose inbox is a seat in its group.
pub(crate) type Member<E> = Arc<Subscriber<E, GroupSeat<E>>>;

/// A new member, and its group if the join made it.
pub(crate) type Joined<E> = (Member<E>, Option<Arc<Group<E>>>);

/// A member's inbox: the group's queue, shared with the other members.
pub(crate) struct GroupSeat<E> {
    group: Arc<Group<E>>,
    /// Events this member took from the queue (its `accepted`).
    taken: AtomicU64,
    /// An ack receiver's own wake-ups (see the `Source` impl); other members leave it
    /// empty.
    bell: Mailbox<()>,
    /// Its place in the member list.
    seat: SeatId,
    /// The seat it takes keys for: its own, or the lanes' one.
    owner: SeatId,
}

impl<E> GroupSeat<E> {
    pub(crate) fn group(&self) -> &Arc<Group<E>> {
        &self.group
    }
}

impl<E: Send + Sync + 'static> GroupSeat<E> {
    /// A receiver member's take from the group's queue (see `Mailbox::take`).
    pub(crate) fn take(&self, how: Take) -> Pop<Envelope<E>> {
        let popped = self.group.hub.inbox.take(how);
        if let Pop::Item(_) = popped {
            self.count_taken(1);
        }
        popped
    }

    fn count_taken(&self, n: u64) {
        Counters::add(&self.taken, n);
        Counters::add(&self.group.handed_out, n);
    }

    /// `env`'s key hash, if it has a key and the group key affinity.
    fn keyed(&self, env: &Envelope<E>) -> Option<u64> {
        self.group.affinity.as_ref()?;
        env.key().map(key_hash)
    }

    /// With key affinity: routes what is queued, then takes this member's next event
    /// (see `affinity`); wakes the members that routing gave work.
    fn next_keyed(&self) -> Option<Envelope<E>> {
        let intake = &self.group.hub.inbox;
        let mut wake = Vec::new();
        let taken = self.group.with_affinity(|affinity| {
            while let Some(env) = intake.pop_held() {
                if let Some(owner) = affinity.route(env) {
                    // A member looks at its own keys before it stops; a lane wakes
                    // another lane for each key it made ready, so they run in parallel.
                    if self.group.lanes || (owner != self.owner && !wake.contains(&owner)) {
                        wake.push(owner);
                    }
                }
            }
            affinity.take(self.owner)
        })?;
        self.group.wake_seats(wake);
        // Its slot was held while it waited in a line (A4).
        intake.slots().release(usize::from(taken.is_some()));
        taken
    }
}

/// An ack receiver member's source, for its gate (`ack`): events from the group's
/// queue, wake markers and the close from its own bell. A marker in the shared queue
/// could be taken by another member's pop, and the gate it was for would sleep on.
impl<E: Send + Sync + 'static> Source<Envelope<E>> for GroupSeat<E> {
    fn pop(&self) -> Option<Envelope<E>> {
        // The bell holds no events: this consumes its marker.
        let _ = self.bell.pop();
        let env = self.group.hub.inbox.pop()?;
        self.count_taken(1);
        Some(env)
    }

    fn is_empty(&self) -> bool {
        self.group.hub.inbox.is_empty()
    }

    fn len(&self) -> usize {
        self.group.hub.inbox.len()
    }

    fn is_closed(&self) -> bool {
        self.bell.is_closed()
    }

    fn wait(&self, deadline: Option<std::time::Instant>) -> bool {
        let queue = &self.group.hub.inbox;
        // A closed queue gets no more events, and keeps its marker queued (see
        // `mailbox`): waiting on it would not wait.
        match queue.is_closed() {
            true => self.bell.wait_ready(deadline),
            false => queue.wait_ready_with(&self.bell, deadline),
        }
    }

    fn wake(&self) {
        self.bell.wake();
    }
}

impl<E: Send + Sync + 'static> Inbox<E> for GroupSeat<E> {
    fn next(&self) -> Next<E> {
        let taken = match &self.group.affinity {
            None => self.group.hub.inbox.pop(),
            Some(_) => self.next_keyed(),
        };
        match taken {
            Some(env) => {
                self.count_taken(1);
                Next::Event(env)
            }
            None => Next::Empty,
        }
    }

    fn is_empty(&self) -> bool {
        self.group.hub.inbox.is_empty() && self.group.with_affinity(|a| a.has_work(self.owner)) != Some(true)
    }

    fn finished(&self, env: &Envelope<E>) {
        let Some(key) = self.keyed(env) else {
            return;
        };
        let owner = self.group.with_affinity(|a| a.finish(key)).flatten();
        // This member's own runner looks again before it stops.
        self.group.wake_seats(owner.filter(|&o| o != self.owner));
    }

    fn parked(&self, env: &Envelope<E>) {
        if let Some(key) = self.keyed(env) {
            self.group.with_affinity(|a| a.park(key));
        }
    }

    fn unparked(&self, env: &Envelope<E>) {
        if let Some(key) = self.keyed(env) {
            self.group.with_affinity(|a| a.unpark(key));
        }
    }

    fn orders_by_key(&self) -> bool {
        self.group.affinity.is_some()
    }

    fn shares(&self) -> bool {
        true
    }

    fn unread(&self) -> u64 {
        // What is queued is the group's: a member that holds for a retry lends none
        // of it (the others take it).
        0
    }

    fn release_handed(&self) {
        // Never called: members are never handed an event (they are not inline).
    }

    fn discard(&self, mut seen: Option<&mut dyn FnMut(Envelope<E>)>) -> (u64, u64) {
        // What is queued is the group's: it stays for the others, unless this member
        // was the last and dissolved the group. Then it takes what is left, to be
        // dropped and counted as its own (nobody else may pop any more).
        if !self.group.is_dissolved() {
            return (0, 0);
        }
        let intake = &self.group.hub.inbox;
        let reborrowed = seen.as_mut().map(|seen| &mut **seen as &mut dyn FnMut(Envelope<E>));
        let (mut n, _) = intake.discard(reborrowed);
        // Lent events are in flight again once cleared (A5): dropped like the rest.
        if let Some(routed) = self.group.with_affinity(Affinity::clear) {
            intake.slots().release(routed.len());
            n += routed.len() as u64;
            if let Some(seen) = seen {
                routed.into_iter().for_each(seen);
            }
        }
        self.count_taken(n);
        (n, 0)
    }

    fn hand_over(&self, waiting: Vec<Envelope<E>>, reason: DropReason) -> (Vec<Envelope<E>>, DropReason) {
        if waiting.is_empty() {
            return (waiting, reason);
        }
        let group = &self.group;
        let dissolved = group.dissolved.lock();
        // Nobody would take them: the last member left, or is leaving (it gives back
        // before it leaves, and would otherwise take them back to drop them as its
        // own, counting them twice), or the bus is closing (G5). Only shutdown closes
        // the queue: a give-back that finds it closed (a member that left before the
        // shutdown, its handle nacked after) drops for the shutdown, not for the
        // leaving.
        let closing = group.hub.inbox.is_closed();
        let nobody = *dissolved || !group.members.has_other_than(self.seat);
        if reason != DropReason::Unsubscribed || nobody || closing {
            drop(dissolved);
            // Dropped: their keys are free again.
            for env in &waiting {
                self.finished(env);
            }
            let reason = if closing { DropReason::Shutdown } else { reason };
            return (waiting, reason);
        }
        let runtime = &group.hub.runtime;
        let n = waiting.len();
        // A push group's queued deliveries are in flight; waiting retries were only
        // under a clock that moves by itself (see `retries`). Counted before the push
        // (a member may pop it at once). A group of receivers holds none in flight.
        if group.kind == Kind::Push && !runtime.retries_hold_idle {
            runtime.in_flight.add(n);
        }
        let mut keys_given = Vec::new();
        if group.affinity.is_some() {
            // Back to the front of their lines, each holding a slot again (A2, A4).
            group.with_affinity(|affinity| {
                for env in waiting {
                    group.hub.inbox.slots().occupy();
                    keys_given.extend(affinity.give_back(env));
                }
            });
        } else {
            for env in waiting {
                group.hub.inbox.push_over(env);
            }
        }
        Counters::add(&group.handed_back, n as u64);
        drop(dissolved);
        group.wake_seats(keys_given);
        group.wake_any();
        (Vec::new(), reason)
    }

    fn leave(sub: &Subscriber<E, Self>, topic: &TopicCore<E>) {
        sub.inbox.group.leave(sub.inbox.seat, topic);
    }

    fn wake_publishers(&self) {
        // Publishers wait for room in the group's queue, not in a member.
    }

    fn close(&self) {
        // Receivers block on the group's queue, which the group closes at shutdown
        // (`close_input`); a receiver that leaves takes its seat away, not the queue.
        // An ack receiver's gate learns the close from its bell, rung after the queue
        // is closed (G5): at shutdown, this member may come before the group.
        if self.group.kind == Kind::AckReceivers {
            if self.group.hub.runtime.is_sealed() {
                self.group.close_queue();
            }
            self.bell.close();
        }
    }

    fn fill(&self, stats: &mut SubscriberStats) {
        stats.accepted = self.taken.load(Ordering::Relaxed);
        stats.group = Some(self.group.name.to_string());
        stats.capacity = self.group.hub.inbox.capacity();
    }
}

/// The group as the bus sees it: its queue's stats, and its end at shutdown.
impl<E: Send + Sync + 'static> Control for Group<E> {
    fn id(&self) -> SubscriberId {
        self.hub.id
    }

    fn stats(&self) -> SubscriberStats {
        self.hub.stats()
    }

    fn group(&self) -> Option<GroupStats> {
        Some(Group::stats(self))
    }

    fn unsubscribe(&self) -> SubscriberStats {
        // Only a subscribe that raced with shutdown calls this; shutdown retires it.
        self.hub.stats()
    }

    fn wake_publishers(&self) {
        self.hub.inbox.wake_publishers();
    }

    fn retire(&self, grace: Duration) -> bool {
        self.hub.deactivate();
        if self.kind != Kind::Push {
            // A group of receivers keeps its queue for them, as any receiver does.
            self.members.clear();
            return true;
        }
        let retired = self.hub.retire(DropReason::Shutdown, Some(grace), || {});
        // What was routed to lines is the queue's too (its members retire after it).
        if let Some(routed) = self.with_affinity(Affinity::clear) {
            let n = routed.len();
            self.hub.inbox.slots().release(n);
            self.hub.counters.drop_n(DropReason::Shutdown, n as u64);
            self.hub.runtime.in_flight.finish(n);
            drop(routed);
        }
        // The members hold the group and the group lists the members: let go.
        self.members.clear();
        retired
    }

    fn close_input(&self) {
        // Receivers learn that nothing more comes (all of them: see `Mailbox`; ack
        // receivers by their bells, see `GroupSeat`).
        if self.kind != Kind::Push {
            self.close_queue();
        }
    }

    fn abandoned_retries(&self) -> u64 {
        0
    }

    fn dead_letter_store(&self) -> Option<&dyn std::any::Any> {
        None
    }
}
