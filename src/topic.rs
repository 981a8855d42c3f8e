//! `Topic<E>`: a typed stream of events, and the publish protocol.
//!
//! # Publish protocol
//!
//! 0. **Duplicate?** Only for a publish with an idempotency key on a topic with a dedup
//!    window: hash the key (outside any lock), then look it up under the commit lock.
//!    A key already accepted within the window returns `Ok` with the original `seq` and
//!    `duplicate` set, before any filter runs or any mailbox is reserved, so a duplicate
//!    never waits for room and is never refused for a full mailbox.
//! 1. **Match.** Read the subscriber snapshot (an `Arc` slice that subscribe and
//!    unsubscribe replace; copy-on-write, so publishers never wait for each other here)
//!    and run each subscriber's filter. The snapshot is in order of priority (highest
//!    first, then oldest first), and every later step goes through it in that order:
//!    that is what makes priorities observable to inline subscribers.
//! 2. **Reserve.** Take a mailbox slot from every matched subscriber whose policy is
//!    all-or-nothing. A full mailbox decides by its policy: `DropNewest` and an expired
//!    `BlockTimeout` drop for that subscriber only; `Reject` (and `Block` when the call
//!    may not wait) cancels every reservation and hands the event back; `Block` and
//!    `BlockTimeout` cancel every reservation, sleep until that mailbox has space, and
//!    start step 2 again. Nothing is held while sleeping, so two blocked publishers can
//!    never wait on each other.
//! 3. **Commit**, under the topic's commit lock: refuse if closed (see `refuses`); if a
//!    subscriber joined at a cut since step 1 (its ticket is stale, see `roster`), cancel
//!    every reservation and start again at step 1; take the
//!    next `seq` (so numbers are gap-free: only an accepted event takes one); build the
//!    envelope (one `Arc` for every subscriber); append it to the history if the topic
//!    keeps one (see `history`); add the push deliveries to `in_flight`
//!    before pushing (a consumer can never take it below the truth); skip subscribers
//!    that unsubscribed meanwhile; push and `notify` each subscriber's schedule. Pushes
//!    never block, so the lock is held briefly. One lock per topic also means every
//!    subscriber sees a topic's events in `seq` order. An idle inline subscriber is
//!    *handed* the event instead of having it queued, when this thread is not already
//!    running inline handlers (see `schedule` and `subscriber`).
//!
//!    With a dedup window, the key is looked up again here, once the publish can no
//!    longer be refused (a concurrent publish of the same key may have been accepted
//!    since step 0: this one is then a duplicate and cancels its reservations), and it is
//!    recorded with the new `seq` in the same hold of the lock. Looking up and recording
//!    in one critical section, after the last way to refuse, gives: of publishes with
//!    one key inside the window, exactly one is accepted, and a refused publish (`Err`)
//!    never records its key.
//!
//!    Receivers that read the topic's broadcast ring (see `broadcast`) get the event
//!    by one write into the ring, for all of them. Before anything else in this step,
//!    the ring is checked for room: if a `Block` or `Reject` ring receiver is full, the
//!    publish cancels every reservation and releases the lock, then refuses or sleeps
//!    until that receiver reads, and starts again at step 2, as for a full mailbox.
//! 4. **Wake**: submit the subscribers whose `notify` asked for it, then run the
//!    hand-offs and this thread's inline queue, in one inline frame so that dispatch
//!    stays breadth-first. (Error hooks of filters that panicked run here too: user code
//!    never runs under the commit lock.)

use std::fmt;
use std::ops::Bound;
use std::time::{Duration, Instant, SystemTime};

use crate::broadcast::{Reader, Readers, RingSubscriber, Seat};
use crate::bus::BusShared;
use crate::context;
use crate::dedup::{Accepted, DedupWindow, KeyHash};
use crate::dispatch::{self, Runtime};
use crate::envelope::{Envelope, EventId, Lineage, Metadata, Shared};
use crate::error::{Failure, PublishError, ReplayError, SubscribeError, TopicError};
use crate::group::{Group, Groups};
use crate::history::{self, History, Log, Offset};
use crate::key_table::{KeyTable, SharedKeys};
use crate::message::{Draft, Message};
use crate::observe;
use crate::policy::{DropReason, Overflow};
use crate::receiver::Receiver;
use crate::registry::TopicName;
use crate::retention::Retention;
use crate::roster::{Cut, Roster};
use crate::seen::Seen;
use crate::stamp::Stamp;
use crate::stats::{Counters, TopicStats};
use crate::subscribe::{HandlerResult, SubscriberBuilder};
use crate::subscriber::{Admission, Parts, Subscriber};
use crate::subscription::Subscription;
use crate::sync::{Arc, AtomicBool, AtomicU64, Mutex, Ordering};
use crate::trace::{AfterFailure, TraceOutcome};
use crate::Clock;

/// What a successful publish tells the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Receipt {
    /// The event's id.
    pub id: EventId,
    /// The event's offset in its topic.
    pub seq: u64,
    /// How many subscribers accepted it (0: it was unrouted, or is a duplicate).
    pub subscribers: usize,
    /// The topic's dedup window already held this publish's idempotency key: nothing
    /// was published, and `id` and `seq` are those of the publish that was accepted
    /// with the key (see [`Topic::set_dedup_window`]).
    pub duplicate: bool,
}

/// How long a publish may wait for mailbox space.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wait {
    Never,
    Until(Option<Instant>),
}

impl Wait {
    pub(crate) fn timeout(timeout: Duration) -> Wait {
        Wait::Until(Instant::now().checked_add(timeout))
    }

    fn deadline(self) -> Option<Instant> {
        match self {
            Wait::Never => None,
            Wait::Until(deadline) => deadline,
        }
    }
}

/// Why a publish that waited for room gives up.
enum GiveUp {
    Closed,
    Timeout,
}

impl GiveUp {
    fn with<E>(self, event: E) -> PublishError<E> {
        match self {
            GiveUp::Closed => PublishError::Closed(event),
            GiveUp::Timeout => PublishError::Timeout(event),
        }
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

enum Plan {
    /// Matched; no slot yet.
    Pending,
    Reserved,
    /// `DropOldest`: push, then evict if over capacity.
    Evict,
    Drop(DropReason),
    FilterPanicked(Failure),
    /// Pushed under the commit lock; `submit`: this publish must hand the subscriber to
    /// its runner once the lock is released.
    Queued {
        submit: bool,
    },
    /// Handed off under the commit lock: this publish runs the subscriber itself.
    HandedOff,
    /// Unsubscribed while this publish waited.
    Skip,
}

struct Target<'a, E> {
    sub: &'a Arc<Subscriber<E>>,
    plan: Plan,
    /// For `BlockTimeout`: when this publish stops waiting for this subscriber.
    give_up_at: Option<Instant>,
}

enum Reservation {
    Ready,
    Wait(usize),
    Full(usize),
}

/// What the commit lock guards.
struct Commit<E> {
    /// The next `seq`.
    next_seq: u64,
    /// The broadcast ring and its receivers, from the first receiver that reads one.
    readers: Option<Readers<E>>,
    /// The idempotency keys accepted recently, with their `seq`, once a dedup window is
    /// set.
    dedup: Option<Accepted>,
    /// The events kept, once a retention is set (see `history`).
    history: Option<Log<E>>,
    /// The joins at a cut that publishes must have seen (see `roster`).
    cut: Cut,
}

impl<E: Send + Sync + 'static> Commit<E> {
    /// The `seq` the key was accepted at, if it is still in the window.
    fn accepted_with(&mut self, key: KeyHash, now: Stamp) -> Option<u64> {
        self.dedup.as_mut()?.get(key, now)
    }

    /// The ring's readers (the ring is made on first use, with room for `ring_capacity`
    /// events or `capacity` if more); `None` if the ring is smaller than `capacity`.
    fn ring_readers(&mut self, capacity: usize, ring_capacity: usize) -> Option<&mut Readers<E>> {
        let readers = self
            .readers
            .get_or_insert_with(|| Readers::new(ring_capacity.max(capacity)));
        (capacity <= readers.ring.capacity()).then_some(readers)
    }
}

pub(crate) struct TopicCore<E> {
    pub(crate) name: TopicName,
    /// High half of every `EventId` of this topic.
    id_prefix: u64,
    /// Publishers read it at step 1 (see `roster` for joins at a cut).
    subscribers: Roster<Arc<Subscriber<E>>>,
    /// Its consumer groups by name (see `group`); each group's queue is in `subscribers`.
    groups: Groups<E>,
    /// Held for step 3 of the protocol, by `close`, and by unsubscribe as a barrier.
    commit: Mutex<Commit<E>>,
    /// Set once, under `commit`.
    closed: AtomicBool,
    unrouted: AtomicU64,
    refused: AtomicU64,
    /// Set once a dedup window is (under `commit`): publishes with a key look it up.
    dedups: AtomicBool,
    deduplicated: AtomicU64,
    /// The dedup windows of its inline subscribers (see `key_table`).
    pub(crate) keys: SharedKeys,
    clock: std::sync::Arc<dyn Clock>,
    runtime: Arc<Runtime>,
}

impl<E: Send + Sync + 'static> TopicCore<E> {
    pub(crate) fn new(
        name: TopicName,
        id_prefix: u64,
        clock: std::sync::Arc<dyn Clock>,
        runtime: Arc<Runtime>,
    ) -> Self {
        TopicCore {
            name,
            id_prefix,
            subscribers: Roster::new(),
            groups: Groups::default(),
            commit: Mutex::new(Commit {
                next_seq: 0,
                readers: None,
                dedup: None,
                history: None,
                cut: Cut::default(),
            }),
            // A topic made after shutdown sealed the others is closed at birth. This
            // runs under the registry shard's write lock, and shutdown sets `sealed`
            // before it takes those locks to close every topic: no topic escapes both.
            closed: AtomicBool::new(runtime.is_sealed()),
            unrouted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            dedups: AtomicBool::new(false),
            deduplicated: AtomicU64::new(0),
            keys: KeyTable::new(),
            clock,
            runtime,
        }
    }

    /// Adds a subscriber from now on, after those of its priority or higher.
    pub(crate) fn add(&self, sub: Arc<Subscriber<E>>) {
        let priority = sub.priority;
        self.subscribers.add(sub, |s| s.priority < priority);
    }

    /// Adds a receiver to the topic's broadcast ring (made on first use, with room for
    /// `ring_capacity` events or `capacity` if more). `None` if the ring is smaller than
    /// `capacity`: that receiver needs a mailbox.
    pub(crate) fn join_ring(&self, capacity: usize, overflow: Overflow, ring_capacity: usize) -> Option<Seat<E>> {
        let mut commit = self.commit.lock();
        let readers = commit.ring_readers(capacity, ring_capacity)?;
        Some(readers.join(capacity, overflow))
    }

    /// Adds a push subscriber (or an ack receiver) that reads the topic's broadcast
    /// ring, as `join_ring` does for a receiver; gives `parts` back if the ring is too
    /// small for it.
    // The large `Err` is the subscriber's own parts, handed back once per subscribe.
    #[allow(clippy::result_large_err)]
    pub(crate) fn join_ring_subscriber(
        &self,
        parts: Parts<E>,
        capacity: usize,
        ring_capacity: usize,
    ) -> Result<Arc<RingSubscriber<E>>, Parts<E>> {
        let mut commit = self.commit.lock();
        let Some(readers) = commit.ring_readers(capacity, ring_capacity) else {
            return Err(parts);
        };
        let seat = readers.join(capacity, parts.overflow);
        let sub = Subscriber::new(parts, seat);
        // In the same hold of the lock as the join: the runner hears of every position.
        if sub.is_push() {
            readers.add_runner(sub.clone());
        }
        Ok(sub)
    }

    /// Removes a ring receiver; returns the ring position where it left.
    pub(crate) fn leave_ring(&self, reader: &Reader) -> u64 {
        let mut commit = self.commit.lock();
        // `join_ring` made the readers before it made `reader`, and they stay.
        commit.readers.as_mut().map_or(0, |readers| readers.leave(reader))
    }

    /// Whether anyone listens: a subscriber, or a receiver on the ring.
    pub(crate) fn has_subscribers(&self) -> bool {
        self.subscribers.len() > 0 || self.commit.lock().readers.as_ref().is_some_and(|r| r.len() > 0)
    }

    pub(crate) fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    pub(crate) fn remove(&self, sub: &Subscriber<E>) {
        self.subscribers.remove(|s| s.id == sub.id);
    }

    pub(crate) fn groups(&self) -> &Groups<E> {
        &self.groups
    }

    /// Whether the group `name` has a member now.
    pub(crate) fn has_members(&self, group: &str) -> bool {
        self.groups.lock().get(group).is_some_and(|g| g.has_members())
    }

    /// Takes a dissolved group off the map, unless a new group has its name already.
    pub(crate) fn forget_group(&self, group: &Arc<Group<E>>) {
        let mut groups = self.groups.lock();
        let name = group.name();
        if groups.get(name).is_some_and(|g| Arc::ptr_eq(g, group)) {
            groups.remove(name);
        }
    }

    /// Once this returns, no publish is between steps 3 and 4 with an old view of
    /// `active` flags or of `closed`.
    pub(crate) fn commit_barrier(&self) {
        drop(self.commit.lock());
    }

    pub(crate) fn close(&self) {
        let _commit = self.commit.lock();
        self.closed.store(true, Ordering::SeqCst);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// While the bus drains, handlers may still publish (their events belong to flows
    /// that were accepted); everyone else is refused. Once the topic is closed, all are.
    pub(crate) fn refuses(&self, in_handler: bool) -> bool {
        self.is_closed() || (!in_handler && self.runtime.is_closed())
    }

    pub(crate) fn clear_subscribers(&self) {
        self.subscribers.clear();
        self.groups.lock().clear();
        if let Some(readers) = self.commit.lock().readers.as_mut() {
            readers.clear();
        }
    }

    /// Sets or changes the dedup window (see `Topic::set_dedup_window`).
    fn set_dedup_window(&self, window: DedupWindow) -> Result<(), TopicError> {
        window.check().map_err(|reason| TopicError::InvalidConfig {
            topic: self.name.to_string(),
            reason,
        })?;
        let now = self.clock.now();
        let mut commit = self.commit.lock();
        match commit.dedup.as_mut() {
            Some(seen) => seen.set_window(window, Stamp::of(now)),
            None => commit.dedup = Some(Seen::new(window)),
        }
        self.dedups.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn dedup_window(&self) -> Option<DedupWindow> {
        self.commit.lock().dedup.as_ref().map(Seen::window)
    }

    /// Sets or changes the retention (see `Topic::set_retention`).
    pub(crate) fn set_retention(&self, retention: Retention) -> Result<(), TopicError> {
        retention.check().map_err(|reason| TopicError::InvalidConfig {
            topic: self.name.to_string(),
            reason,
        })?;
        let now = Stamp::of(self.clock.now());
        let mut gone = Vec::new();
        let mut commit = self.commit.lock();
        let next = commit.next_seq;
        match commit.history.as_mut() {
            Some(log) => log.set_retention(retention, now, &mut gone),
            None => commit.history = Some(Log::new(retention, next, now)),
        }
        drop(commit);
        drop(gone);
        Ok(())
    }

    pub(crate) fn clear_retention(&self) {
        let log = self.commit.lock().history.take();
        drop(log);
    }

    pub(crate) fn retention(&self) -> Option<Retention> {
        self.commit.lock().history.as_ref().map(Log::retention)
    }

    /// Runs `read` on the history (`None`: no retention), its next offset and the
    /// time, after letting go what aged out.
    fn with_history<R>(&self, read: impl FnOnce(Option<&Log<E>>, u64, Stamp) -> R) -> R {
        let now = Stamp::of(self.clock.now());
        let mut gone = Vec::new();
        let mut commit = self.commit.lock();
        if let Some(log) = commit.history.as_mut() {
            log.trim(now, &mut gone);
        }
        let read = read(commit.history.as_ref(), commit.next_seq, now);
        drop(commit);
        drop(gone);
        read
    }

    /// Reads the history from `from` up to `end`.
    pub(crate) fn read_history(&self, from: Offset, end: Bound<u64>) -> Result<History<E>, ReplayError> {
        self.with_history(|log, next, now| history::read(log, from, end, next, now))
    }

    pub(crate) fn history(&self) -> History<E> {
        self.with_history(|log, next, _| history::read_all(log, next))
    }

    pub(crate) fn history_between(&self, from: SystemTime, until: SystemTime) -> Result<History<E>, ReplayError> {
        self.with_history(|log, next, now| history::read_between(log, from, until, next, now))
    }

    pub(crate) fn oldest_offset(&self) -> Option<u64> {
        self.with_history(|log, _, _| log.and_then(Log::oldest))
    }

    pub(crate) fn next_offset(&self) -> u64 {
        self.commit.lock().next_seq
    }

    /// The name and retention of this topic, to stage an import in (`Err` if the topic
    /// keeps no history).
    #[cfg(feature = "serde")]
    pub(crate) fn import_target(&self) -> Result<(TopicName, Retention), crate::error::ImportError> {
        match self.retention() {
            Some(retention) => Ok((self.name.clone(), retention)),
            None => Err(crate::error::ImportError::NoHistory {
                topic: self.name.to_string(),
            }),
        }
    }

    /// Adds a staged import to the history, in one hold of the commit lock, after the
    /// checks that can refuse it (see `Topic::import`). Returns the lines read.
    #[cfg(feature = "serde")]
    pub(crate) fn import(&self, staged: crate::export::Staged<E>) -> Result<u64, crate::error::ImportError> {
        use crate::error::ImportError;
        let (Some((line, first)), Some(imported)) = (staged.first, staged.log) else {
            return Ok(0);
        };
        let mut gone = Vec::new();
        let mut commit = self.commit.lock();
        let next = commit.next_seq;
        let Some(log) = commit.history.as_mut() else {
            return Err(ImportError::NoHistory {
                topic: self.name.to_string(),
            });
        };
        if first < next || (first > next && log.len() > 0) {
            return Err(ImportError::Offsets { line, seq: first, next });
        }
        log.absorb(imported, &mut gone);
        commit.next_seq = staged.last + 1;
        drop(commit);
        drop(gone);
        Ok(staged.lines)
    }

    /// Whether reading from `from` works now (a subscriber checks before it starts
    /// threads; `join_at` checks again under the lock).
    pub(crate) fn check_start(&self, from: Offset) -> Result<(), ReplayError> {
        self.with_history(|log, next, now| history::read(log, from, Bound::Excluded(0), next, now).map(drop))
    }

    /// Adds a subscriber with a mailbox of its own that starts at `from` (`roster` says
    /// why it gets every offset from `from` on exactly once, the history first):
    /// 1. under the commit lock: the history from `from`, and the roster at a cut;
    /// 2. with a filter, the filter screens that history with no lock held (it is user
    ///    code). Live events may be queued for the subscriber meanwhile, and nothing
    ///    takes them: a push subscriber's schedule was claimed in step 1 (this thread
    ///    owns its runs until it submits it), and a receiver is not yet in its caller's
    ///    hands;
    /// 3. under the commit lock again, so no publish pushes meanwhile: what was queued
    ///    since step 1 is taken out, the history queued, and the rest put back behind
    ///    it. Without a filter, nothing is queued between steps 1 and 3: they are one
    ///    hold of the lock.
    ///
    /// Then it submits the subscriber to run what was queued (an inline one runs here,
    /// as for a publish).
    pub(crate) fn join_at(&self, sub: &Arc<Subscriber<E>>, from: Offset) -> Result<(), ReplayError> {
        let now = Stamp::of(self.clock.now());
        let mut gone = Vec::new();
        let mut commit = self.commit.lock();
        if let Some(log) = commit.history.as_mut() {
            log.trim(now, &mut gone);
        }
        let read = history::read(commit.history.as_ref(), from, Bound::Unbounded, commit.next_seq, now);
        let history: Vec<Envelope<E>> = match read {
            Ok(history) => history.into_iter().collect(),
            Err(error) => {
                drop(commit);
                return Err(error);
            }
        };
        // Brand new, so idle: the claim cannot fail.
        let owned = sub.is_push() && sub.claim();
        self.subscribers
            .add_at_cut(sub.clone(), &mut commit.cut, |s| s.priority < sub.priority);
        let mut failed = Vec::new();
        let (commit, history, queued) = if sub.has_filter() {
            drop(commit);
            let mut kept = Vec::with_capacity(history.len());
            for env in history {
                match sub.admits(&env) {
                    Admission::Yes => kept.push(env),
                    Admission::No => {}
                    Admission::FilterPanicked(failure) => failed.push((env, failure)),
                }
            }
            let commit = self.commit.lock();
            let queued = sub.inbox.take_queued();
            (commit, kept, Some(queued))
        } else {
            (commit, history, None)
        };
        if sub.is_push() {
            // Before the pushes, as for a publish: a runner never takes it below zero.
            self.runtime.in_flight.add(history.len());
        }
        for env in history {
            sub.replay(env);
        }
        for (_, failure) in &failed {
            sub.count_filter_failure(failure);
        }
        if let Some(queued) = queued {
            sub.inbox.put_back(queued);
        }
        drop(commit);
        drop(gone);
        for (env, failure) in failed {
            sub.report_failure(&env, failure);
        }
        if owned {
            sub.submit();
            if sub.is_inline() {
                dispatch::inline_frame(|| {});
            }
        }
        Ok(())
    }

    pub(crate) fn stats(&self) -> TopicStats {
        let now = self.clock.now();
        let mut gone = Vec::new();
        let (published, ring_receivers, (dedup_keys, dedup_evicted), history) = {
            let mut commit = self.commit.lock();
            // Reading the stats purges keys that aged out, so an idle topic's window
            // shrinks back after a burst (a publish with a key purges too).
            let dedup = commit.dedup.as_mut().map_or((0, 0), |seen| {
                seen.purge(Stamp::of(now));
                (seen.len() as u64, seen.evicted)
            });
            // Likewise, events that aged out of the history leave it.
            let history = commit.history.as_mut().map_or((0, 0, 0), |log| {
                log.trim(Stamp::of(now), &mut gone);
                (log.len() as u64, log.evicted(), log.compacted())
            });
            (
                commit.next_seq,
                commit.readers.as_ref().map_or(0, Readers::len),
                dedup,
                history,
            )
        };
        drop(gone);
        let (history_len, history_evicted, history_compacted) = history;
        TopicStats {
            name: self.name.to_string(),
            event_type: std::any::type_name::<E>(),
            published,
            unrouted: self.unrouted.load(Ordering::Relaxed),
            deduplicated: self.deduplicated.load(Ordering::Relaxed),
            dedup_keys,
            dedup_evicted,
            refused: self.refused.load(Ordering::Relaxed),
            subscribers: self.subscribers.len() + ring_receivers,
            history_len,
            history_evicted,
            history_compacted,
        }
    }

    /// After a publish slept for room: whether it goes on, or gives up because the bus
    /// is closing or its deadline passed (counted as refused by `refused`'s owner).
    fn after_wait(&self, wait: Wait, refused: &AtomicU64) -> Result<(), GiveUp> {
        if self.refuses(false) {
            return Err(GiveUp::Closed);
        }
        if wait.deadline().is_some_and(|d| Instant::now() >= d) {
            Counters::add(refused, 1);
            return Err(GiveUp::Timeout);
        }
        Ok(())
    }

    fn refuse(&self, error: PublishError<E>) -> Result<Receipt, PublishError<E>> {
        self.refused.fetch_add(1, Ordering::Relaxed);
        Err(error)
    }

    pub(crate) fn publish(&self, mut draft: Draft<E>, wait: Wait) -> Result<Receipt, PublishError<E>> {
        let in_handler = context::in_handler();
        if self.refuses(in_handler) {
            return self.refuse(PublishError::Closed(draft.event));
        }
        // A handler never waits for space: it may hold the worker that would make it.
        let wait = if in_handler { Wait::Never } else { wait };

        // Step 0: a duplicate returns before it costs anyone a filter call or a slot.
        let dedup_key = match &draft.idempotency_key {
            Some(key) if self.dedups.load(Ordering::Relaxed) => Some(key.hash(&self.runtime.key_hasher)),
            _ => None,
        };
        if let Some(key) = dedup_key {
            let now = Stamp::of(self.clock.now());
            let original = self.commit.lock().accepted_with(key, now);
            if let Some(seq) = original {
                return Ok(self.duplicate_of(seq));
            }
        }

        // A subscriber that joins at a cut (see `roster`) sends the publish back here.
        loop {
            // Step 1: match.
            let (snapshot, ticket) = self.subscribers.read();
            let mut targets: Vec<Target<'_, E>> = Vec::with_capacity(snapshot.len());
            for sub in snapshot.iter() {
                let plan = match sub.admits(&draft.event) {
                    Admission::Yes => Plan::Pending,
                    Admission::No => continue,
                    Admission::FilterPanicked(failure) => Plan::FilterPanicked(failure),
                };
                targets.push(Target {
                    sub,
                    plan,
                    give_up_at: None,
                });
            }

            let mut commit = loop {
                // Step 2: reserve.
                match reserve(&mut targets, wait) {
                    Reservation::Ready => {}
                    Reservation::Full(i) => {
                        Counters::add(&targets[i].sub.counters.refused, 1);
                        return self.refuse(PublishError::Full(draft.event));
                    }
                    Reservation::Wait(i) => {
                        let target = &mut targets[i];
                        let until = earliest(wait.deadline(), target.give_up_at);
                        let sub = target.sub;
                        // Only publishers outside handlers wait, and those are refused
                        // from the moment shutdown starts.
                        sub.inbox
                            .slots()
                            .wait_for_space(until, || self.refuses(false) || !sub.is_active());
                        if !sub.is_active() {
                            target.plan = Plan::Skip;
                        }
                        if let Err(give_up) = self.after_wait(wait, &sub.counters.refused) {
                            return self.refuse(give_up.with(draft.event));
                        }
                        continue;
                    }
                }

                // Step 3: commit, once the ring's receivers have room too.
                let mut commit = self.commit.lock();
                if self.refuses(in_handler) {
                    drop(commit);
                    cancel_all(&mut targets);
                    return self.refuse(PublishError::Closed(draft.event));
                }
                let Some(Seat { ring, reader: full }) = commit.readers.as_mut().and_then(|r| r.check_room().err())
                else {
                    break commit;
                };
                drop(commit);
                cancel_all(&mut targets);
                let (Overflow::Block, Wait::Until(deadline)) = (full.overflow, wait) else {
                    Counters::add(&full.refused, 1);
                    return self.refuse(PublishError::Full(draft.event));
                };
                ring.wait_for_room(&full.cursor, deadline, || self.refuses(false) || full.has_left());
                if let Err(give_up) = self.after_wait(wait, &full.refused) {
                    return self.refuse(give_up.with(draft.event));
                }
            };
            if !commit.cut.admits(ticket) {
                // A subscriber joined at a cut since step 1: match again, with it.
                drop(commit);
                cancel_all(&mut targets);
                continue;
            }
            let now = Stamp::of(self.clock.now());
            let seq = commit.next_seq;
            if let (Some(key), Some(accepted)) = (dedup_key, commit.dedup.as_mut()) {
                if let Err(original) = accepted.admit(key, now, seq) {
                    drop(commit);
                    // Not accepted, so no subscriber counts it; that includes one whose
                    // filter panicked on it (its hook is not told: there is no envelope).
                    cancel_all(&mut targets);
                    return Ok(self.duplicate_of(original));
                }
            }
            commit.next_seq += 1;
            let requester = draft.requester.take();
            let env = self.seal(draft, seq, now);
            // What the history lets go drops after the lock, with `overwritten`.
            let mut gone = Vec::new();
            if let Some(log) = commit.history.as_mut() {
                log.push(env.clone(), &mut gone);
            }
            let mut pushes = 0;
            for target in &mut targets {
                if !target.sub.is_active() {
                    if let Plan::Reserved = target.plan {
                        target.sub.inbox.slots().release(1);
                    }
                    target.plan = Plan::Skip;
                } else if matches!(target.plan, Plan::Reserved | Plan::Evict) && target.sub.is_push() {
                    pushes += 1;
                }
            }
            // Every ring write is a delivery for each push subscriber on the ring.
            pushes += commit.readers.as_ref().map_or(0, Readers::runners);
            self.runtime.in_flight.add(pushes);
            // Hand-offs run before this thread's inline queue drains, so only where no frame
            // of this thread is running inline handlers: breadth-first order holds.
            let may_hand_off = !dispatch::inline_running();
            let mut accepted = 0;
            for target in &mut targets {
                let sub = target.sub;
                let plan = match std::mem::replace(&mut target.plan, Plan::Skip) {
                    Plan::Reserved if may_hand_off && sub.is_inline() && sub.claim() => {
                        match sub.hand_off(env.clone()) {
                            Ok(()) => Plan::HandedOff,
                            Err(env) => {
                                // The claim made this publish the subscriber's owner.
                                sub.enqueue(env, false);
                                Plan::Queued { submit: true }
                            }
                        }
                    }
                    Plan::Reserved => {
                        sub.enqueue(env.clone(), false);
                        Plan::Queued { submit: sub.notify() }
                    }
                    Plan::Evict => {
                        sub.enqueue(env.clone(), true);
                        Plan::Queued { submit: sub.notify() }
                    }
                    Plan::Drop(reason) => {
                        sub.dropped_on_arrival(&env, reason);
                        Plan::Skip
                    }
                    Plan::FilterPanicked(failure) => {
                        sub.count_filter_failure(&failure);
                        // Its hook runs after the lock is released.
                        Plan::FilterPanicked(failure)
                    }
                    Plan::Skip | Plan::Pending | Plan::Queued { .. } | Plan::HandedOff => continue,
                };
                accepted += 1;
                target.plan = plan;
            }
            // The ring's readers take every accepted event: one write for all of them.
            let mut overwritten = None;
            let mut wake = Vec::new();
            if let Some(readers) = commit.readers.as_ref().filter(|r| r.len() > 0) {
                accepted += readers.len();
                overwritten = readers.write(&env, &mut wake);
            }
            drop(commit);
            // An event the ring or the history let go of may run user code as it drops:
            // not under the lock.
            drop(overwritten);
            drop(gone);
            // A reply's route is its requester, if still waiting (see `request`).
            let answered = requester.is_some_and(|requester| requester.try_send(Ok(env.clone())).is_ok());
            let unrouted = accepted == 0 && !answered;
            if unrouted {
                self.unrouted.fetch_add(1, Ordering::Relaxed);
            }

            // Step 4: wake, and tell the error hooks of filters that panicked.
            for sub in &wake {
                sub.submit();
            }
            let mut inline = false;
            for target in &mut targets {
                match &target.plan {
                    Plan::Queued { submit } => {
                        if *submit {
                            target.sub.submit();
                        }
                        inline |= target.sub.is_inline();
                    }
                    Plan::HandedOff => inline = true,
                    Plan::FilterPanicked(_) => {
                        if let Plan::FilterPanicked(failure) = std::mem::replace(&mut target.plan, Plan::Skip) {
                            target.sub.trace(&env, || TraceOutcome::Failed {
                                attempt: env.attempt(),
                                took: None,
                                error: crate::trace::clip(&failure.to_string()),
                                then: AfterFailure::Nothing,
                            });
                            target.sub.report_failure(&env, failure);
                        }
                    }
                    _ => {}
                }
            }
            // Observers see the event before anything its inline handlers publish.
            let announce = || observe::announce(self, &env, unrouted, wait);
            if inline {
                // The queued inline subscribers were submitted first: they run after the
                // hand-offs but before anything the hand-offs' handlers publish.
                dispatch::inline_frame(|| {
                    announce();
                    for target in &targets {
                        if let Plan::HandedOff = target.plan {
                            dispatch::run_inline(target.sub);
                        }
                    }
                });
            } else {
                announce();
            }
            return Ok(Receipt {
                id: env.id(),
                seq,
                subscribers: accepted,
                duplicate: false,
            });
        }
    }

    /// The bus's delivery traces, if it keeps them.
    pub(crate) fn traces(&self) -> Option<&crate::trace::Traces> {
        self.runtime.traces.as_ref()
    }

    /// The receipt of a publish whose key was accepted at `seq`; its event is dropped.
    fn duplicate_of(&self, seq: u64) -> Receipt {
        self.deduplicated.fetch_add(1, Ordering::Relaxed);
        Receipt {
            id: EventId::new(self.id_prefix, seq),
            seq,
            subscribers: 0,
            duplicate: true,
        }
    }

    /// Builds the envelope: ids, time, and causation from the handler running here.
    fn seal(&self, draft: Draft<E>, seq: u64, published_at: Stamp) -> Envelope<E> {
        let id = EventId::new(self.id_prefix, seq);
        let parent = context::current();
        let correlation_id = draft.correlation_id.or(parent.map(|p| p.correlation)).unwrap_or(id);
        if let Some(parent) = parent {
            self.runtime.causation.record(parent.public, self.id_prefix, &self.name);
        }
        if let Some(traces) = &self.runtime.traces {
            // Under the commit lock: recorded before any subscriber can take the event.
            traces.published(crate::trace::Published {
                id,
                type_name: std::any::type_name::<E>(),
                topic: &self.name,
                seq,
                published_at: published_at.time(),
                caused_by: parent.map(|p| p.event),
                correlation_id,
            });
        }
        Envelope::new(std::sync::Arc::new(Shared {
            event: draft.event,
            meta: Metadata {
                id,
                topic: self.name.clone(),
                seq,
                published_at,
                key: draft.key,
                idempotency_key: draft.idempotency_key,
                headers: draft.headers,
                correlation_id,
                lineage: Lineage::new(parent.map(|p| p.event), draft.dead_letter),
                reply_to: draft.reply_to,
            },
        }))
    }
}

/// Step 2 of the protocol, once over every target.
fn reserve<E: Send + Sync + 'static>(targets: &mut [Target<'_, E>], wait: Wait) -> Reservation {
    for i in 0..targets.len() {
        let target = &mut targets[i];
        if !matches!(target.plan, Plan::Pending) {
            continue;
        }
        if let Overflow::DropOldest = target.sub.overflow {
            target.plan = Plan::Evict;
            continue;
        }
        if target.sub.inbox.slots().try_reserve() {
            target.plan = Plan::Reserved;
            continue;
        }
        let may_wait = matches!(wait, Wait::Until(_));
        let verdict = match target.sub.overflow {
            Overflow::DropNewest => Some(Plan::Drop(DropReason::Newest)),
            Overflow::BlockTimeout(limit) if may_wait => {
                let now = Instant::now();
                let give_up_at = *target.give_up_at.get_or_insert_with(|| now + limit);
                (now >= give_up_at).then_some(Plan::Drop(DropReason::BlockTimeout))
            }
            Overflow::BlockTimeout(_) => Some(Plan::Drop(DropReason::BlockTimeout)),
            _ => None,
        };
        if let Some(plan) = verdict {
            target.plan = plan;
            continue;
        }
        cancel_all(targets);
        return match (targets[i].sub.overflow, may_wait) {
            (Overflow::Block | Overflow::BlockTimeout(_), true) => Reservation::Wait(i),
            _ => Reservation::Full(i),
        };
    }
    Reservation::Ready
}

/// Gives back every reserved slot and forgets the decisions that depended on fullness.
fn cancel_all<E: Send + Sync + 'static>(targets: &mut [Target<'_, E>]) {
    for target in targets {
        match target.plan {
            Plan::Reserved => {
                target.sub.inbox.slots().release(1);
                target.plan = Plan::Pending;
            }
            Plan::Evict | Plan::Drop(DropReason::Newest) => target.plan = Plan::Pending,
            _ => {}
        }
    }
}

/// A typed handle to one topic: publishing through it skips the registry lookup.
///
/// Get one with [`Bus::topic`](crate::Bus::topic) (the event type's default topic) or
/// [`Bus::topic_named`](crate::Bus::topic_named). Cloning is cheap. A `Topic` does not
/// keep the bus running: once the last [`Bus`](crate::Bus) handle is dropped, its
/// publishes return [`PublishError::Closed`].
///
/// # Example
///
/// ```
/// use crier::{Bus, Envelope};
///
/// struct Order { id: u32 }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = Bus::new();
/// let eu = bus.topic_named::<Order>("orders.eu")?;
/// let rx = eu.receiver()?;
/// eu.publish(Order { id: 1 })?;
/// bus.publish(Order { id: 2 })?; // the default topic: `rx` does not see it
/// let got = rx.recv()?;
/// assert_eq!((got.id, got.topic()), (1, "orders.eu"));
/// assert!(rx.try_recv().is_err());
/// # Ok(()) }
/// ```
pub struct Topic<E> {
    pub(crate) core: Arc<TopicCore<E>>,
    pub(crate) bus: Arc<BusShared>,
}

impl<E: Send + Sync + 'static> Topic<E> {
    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.core.name
    }

    /// Publishes an event; waits for space where a subscriber's policy is `Block`.
    ///
    /// Returns once the event is queued for every matching subscriber or accounted for
    /// by its overflow policy.
    ///
    /// # Errors
    ///
    /// Hands the event back with [`PublishError::Full`] if a `Reject` subscriber is
    /// full (or a `Block` one and this is called from a handler), and with
    /// [`PublishError::Closed`] once the bus is shutting down.
    pub fn publish(&self, event: E) -> Result<Receipt, PublishError<E>> {
        self.core.publish(Draft::new(event), Wait::Until(None))
    }

    /// Publishes without ever waiting: a full `Block` mailbox is `Err(Full(event))`.
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish), plus [`PublishError::Full`] for a full `Block`
    /// mailbox.
    pub fn try_publish(&self, event: E) -> Result<Receipt, PublishError<E>> {
        self.core.publish(Draft::new(event), Wait::Never)
    }

    /// Publishes, waiting at most `timeout` for mailbox space.
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish), plus [`PublishError::Timeout`] when the time ran
    /// out; the event was then accepted by no subscriber.
    pub fn publish_timeout(&self, event: E, timeout: Duration) -> Result<Receipt, PublishError<E>> {
        self.core.publish(Draft::new(event), Wait::timeout(timeout))
    }

    /// Deduplicates publishes on this topic by idempotency key: a publish whose key
    /// ([`Message::idempotency_key`]) was accepted on this topic within `window` returns
    /// `Ok` with [`Receipt::duplicate`] set and the original publish's `id` and `seq`,
    /// and delivers nothing (its event is dropped). Like NATS JetStream's `Nats-Msg-Id`.
    ///
    /// - A key is recorded only when its publish is accepted (returns `Ok`, routed or
    ///   not). A publish refused with `Err` (full, timed out, closed) records nothing,
    ///   so the caller's retry of it is published.
    /// - Of several publishes racing with one key, exactly one is accepted.
    /// - The scope is this topic: the same key on another topic is another key.
    /// - What a subscriber later does with the accepted event (retries, a dead letter)
    ///   does not matter here: the key stays recorded.
    /// - The window's bounds: a key is forgotten once it is `max_age` old on the bus
    ///   [`Clock`] (a publish at exactly `max_age` is accepted again), or when
    ///   `capacity` newer keys pushed it out (counted in
    ///   [`TopicStats::dedup_evicted`](crate::TopicStats::dedup_evicted)). Budget 100
    ///   bytes per key of capacity, whatever the keys' length (see [`DedupWindow`]).
    ///   Aged keys are purged by keyed publishes and by [`Bus::stats`](crate::Bus::stats).
    /// - Publishes without a key are never deduplicated.
    ///
    /// Calling it again changes the bounds and keeps the keys that fit (the oldest are
    /// evicted if the capacity shrinks). Set it before publishing: a publish already
    /// under way when the window is first set may not record its key.
    ///
    /// # Errors
    ///
    /// [`TopicError::InvalidConfig`] if the window's capacity or age is zero.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use crier::{Bus, DedupWindow, Envelope};
    ///
    /// struct Charge { cents: u64 }
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::new();
    /// let charges = bus.topic::<Charge>();
    /// charges.set_dedup_window(DedupWindow::new(10_000, Duration::from_secs(120)))?;
    /// let rx = charges.receiver()?;
    ///
    /// let first = charges.message(Charge { cents: 500 }).idempotency_key("order-7").publish()?;
    /// // The client timed out and sends the same charge again.
    /// let again = charges.message(Charge { cents: 500 }).idempotency_key("order-7").publish()?;
    /// assert!(!first.duplicate && again.duplicate);
    /// assert_eq!(again.seq, first.seq);
    /// assert_eq!(rx.recv()?.cents, 500);
    /// assert!(rx.try_recv().is_err(), "charged once");
    /// # Ok(()) }
    /// ```
    pub fn set_dedup_window(&self, window: DedupWindow) -> Result<(), TopicError> {
        self.core.set_dedup_window(window)
    }

    /// The topic's dedup window, if one was set.
    pub fn dedup_window(&self) -> Option<DedupWindow> {
        self.core.dedup_window()
    }

    /// Starts a publish with metadata: key, headers, correlation id.
    pub fn message(&self, event: E) -> Message<E> {
        Message::new(self.core.clone(), event)
    }

    /// Subscribes a handler with the bus's default options.
    ///
    /// # Errors
    ///
    /// See [`SubscriberBuilder::subscribe`].
    pub fn subscribe<F, R>(&self, handler: F) -> Result<Subscription, SubscribeError>
    where
        F: FnMut(&Envelope<E>) -> R + Send + 'static,
        R: HandlerResult,
    {
        self.subscriber().subscribe(handler)
    }

    /// Starts a subscriber with options (name, filter, mailbox, policy, dispatch).
    pub fn subscriber(&self) -> SubscriberBuilder<E> {
        SubscriberBuilder::new(self.clone())
    }

    /// A pull receiver with the bus's default options.
    ///
    /// # Errors
    ///
    /// See [`SubscriberBuilder::receiver`].
    pub fn receiver(&self) -> Result<Receiver<E>, SubscribeError> {
        self.subscriber().receiver()
    }
}

impl<E> Clone for Topic<E> {
    fn clone(&self) -> Self {
        Topic {
            core: self.core.clone(),
            bus: self.bus.clone(),
        }
    }
}

impl<E> fmt::Debug for Topic<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Topic")
            .field("name", &self.core.name)
            .field("event_type", &std::any::type_name::<E>())
            .finish()
    }
}
