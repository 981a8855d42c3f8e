//! loom models of the lock-free protocols. Run with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --lib --release loom_
//! ```

use std::collections::VecDeque;

use loom::sync::atomic::AtomicUsize;
use loom::sync::{Arc, Mutex};
use loom::thread;

use crate::ack::{End, Gate, Lease, Source, SourceFlags, Take};
use crate::dedup::{Accepted, DedupWindow, IdempotencyKey, KeyHasher};
use crate::in_flight::InFlight;
use crate::ring::{Cursor, Read, Ring};
use crate::roster::{Cut, Roster};
use crate::schedule::ScheduleState;
use crate::slots::Slots;
use crate::sync::Ordering;

/// A serial subscriber's mailbox reduced to the protocol: a queue, the schedule state,
/// and a probe that counts runners.
struct ModelMailbox {
    queue: Mutex<VecDeque<u32>>,
    state: ScheduleState,
    runners: AtomicUsize,
    handled: Mutex<Vec<u32>>,
}

impl ModelMailbox {
    fn new() -> Self {
        ModelMailbox {
            queue: Mutex::new(VecDeque::new()),
            state: ScheduleState::new(),
            runners: AtomicUsize::new(0),
            handled: Mutex::new(Vec::new()),
        }
    }

    /// A producer: push, then submit if `notify` says so. The submitting thread plays
    /// the executor and runs the mailbox itself, as inline dispatch does.
    fn publish(&self, item: u32, budget: usize) {
        self.queue.lock().unwrap().push_back(item);
        if self.state.notify() {
            self.run(budget);
        }
    }

    /// The runner loop of `Subscriber::run`, with a budget per turn; a yield is an
    /// immediate re-submission to the same thread.
    fn run(&self, budget: usize) {
        loop {
            self.state.begin_run();
            assert_eq!(
                self.runners.fetch_add(1, Ordering::SeqCst),
                0,
                "two runners on one mailbox"
            );
            let mut left = budget;
            let mut empty = false;
            while left > 0 {
                let next = self.queue.lock().unwrap().pop_front();
                match next {
                    Some(item) => {
                        self.handled.lock().unwrap().push(item);
                        left -= 1;
                    }
                    None => {
                        empty = true;
                        break;
                    }
                }
            }
            self.runners.fetch_sub(1, Ordering::SeqCst);
            if empty && self.state.try_release() {
                return;
            }
        }
    }
}

#[test]
fn loom_schedule_one_runner_and_no_lost_wakeup() {
    loom::model(|| {
        let mailbox = Arc::new(ModelMailbox::new());
        let producers: Vec<_> = (0..2)
            .map(|p| {
                let mailbox = mailbox.clone();
                thread::spawn(move || {
                    mailbox.publish(p * 10, 1);
                    mailbox.publish(p * 10 + 1, 1);
                })
            })
            .collect();
        for producer in producers {
            producer.join().unwrap();
        }
        // Every push was handled by someone, and per-producer order held.
        let handled = mailbox.handled.lock().unwrap().clone();
        assert_eq!(handled.len(), 4, "a pushed item was never run: {handled:?}");
        for p in 0..2 {
            let mine: Vec<_> = handled.iter().filter(|&&x| x / 10 == p).collect();
            assert_eq!(mine, vec![&(p * 10), &(p * 10 + 1)]);
        }
        assert!(mailbox.queue.lock().unwrap().is_empty());
    });
}

#[test]
fn loom_schedule_runner_releases_while_producer_pushes() {
    // One producer races a runner that is finishing: the push must not be stranded.
    loom::model(|| {
        let mailbox = Arc::new(ModelMailbox::new());
        mailbox.publish(1, 8);
        let runner = {
            let mailbox = mailbox.clone();
            thread::spawn(move || mailbox.publish(2, 8))
        };
        mailbox.publish(3, 8);
        runner.join().unwrap();
        let mut handled = mailbox.handled.lock().unwrap().clone();
        handled.sort_unstable();
        assert_eq!(handled, vec![1, 2, 3]);
    });
}

/// The inline hand-off: producers push (or claim) and notify under one commit lock; a
/// producer whose `claim` succeeds runs its item outside the queue.
struct HandOffModel {
    mailbox: ModelMailbox,
    commit: Mutex<()>,
}

impl HandOffModel {
    fn publish(&self, item: u32) {
        let commit = self.commit.lock().unwrap();
        if self.mailbox.state.claim() {
            assert!(
                self.mailbox.queue.lock().unwrap().is_empty(),
                "claimed an idle subscriber with events queued"
            );
            drop(commit);
            assert_eq!(self.mailbox.runners.fetch_add(1, Ordering::SeqCst), 0, "two runners");
            self.mailbox.handled.lock().unwrap().push(item);
            self.mailbox.runners.fetch_sub(1, Ordering::SeqCst);
            if !self.mailbox.state.try_release() {
                self.mailbox.run(1);
            }
        } else {
            self.mailbox.queue.lock().unwrap().push_back(item);
            let submit = self.mailbox.state.notify();
            drop(commit);
            if submit {
                self.mailbox.run(1);
            }
        }
    }
}

#[test]
fn loom_hand_off_keeps_order_and_loses_nothing() {
    loom::model(|| {
        let model = Arc::new(HandOffModel {
            mailbox: ModelMailbox::new(),
            commit: Mutex::new(()),
        });
        let other = {
            let model = model.clone();
            thread::spawn(move || {
                model.publish(10);
                model.publish(11);
            })
        };
        model.publish(0);
        model.publish(1);
        other.join().unwrap();
        let handled = model.mailbox.handled.lock().unwrap().clone();
        assert_eq!(handled.len(), 4, "an item was never run: {handled:?}");
        for p in 0..2 {
            let mine: Vec<_> = handled.iter().filter(|&&x| x / 10 == p).collect();
            assert_eq!(mine, vec![&(p * 10), &(p * 10 + 1)], "per-producer order");
        }
        assert!(model.mailbox.queue.lock().unwrap().is_empty());
    });
}

#[test]
fn loom_slots_blocked_publisher_is_woken() {
    // Capacity 1 and full: a publisher blocks for space; a consumer frees the slot. A
    // lost wake-up would leave the publisher asleep, which loom reports as a deadlock.
    loom::model(|| {
        let slots = Arc::new(Slots::new(1));
        assert!(slots.try_reserve());
        let publisher = {
            let slots = slots.clone();
            thread::spawn(move || {
                while !slots.try_reserve() {
                    slots.wait_for_space(None, || false);
                }
            })
        };
        slots.release(1);
        publisher.join().unwrap();
        assert_eq!(slots.used(), 1);
    });
}

#[test]
fn loom_in_flight_is_not_idle_while_a_handler_publishes() {
    // A delivery whose handler publishes one more: `wait_zero` must not return between
    // the parent's finish and the child's.
    loom::model(|| {
        let in_flight = Arc::new(InFlight::new());
        let child_done = Arc::new(AtomicUsize::new(0));
        in_flight.add(1); // the parent event, queued by the test
        let worker = {
            let in_flight = in_flight.clone();
            let child_done = child_done.clone();
            thread::spawn(move || {
                in_flight.add(1); // the handler publishes the child
                in_flight.finish(1); // the parent's handler returns
                child_done.store(1, Ordering::SeqCst);
                in_flight.finish(1); // the child's handler returns
            })
        };
        assert!(in_flight.wait_zero(None));
        assert_eq!(
            child_done.load(Ordering::SeqCst),
            1,
            "idle reported while the child was in flight"
        );
        worker.join().unwrap();
    });
}

/// The ring's writer: waits for room for `cursor` before each write, as a `Block`
/// publish does (a lossy cursor always has room), then closes the cursor.
fn ring_writer<T: Clone>(ring: &Ring<T>, cursors: &[&Cursor], values: Vec<T>) {
    for value in values {
        for cursor in cursors {
            while !ring.has_room(cursor) {
                ring.wait_for_room(cursor, None, || false);
            }
        }
        drop(ring.write(value, cursors.len() as u32));
    }
    for cursor in cursors {
        ring.close(cursor);
    }
}

/// A receiver that reads until closed: the items, and the lag it was told of.
fn ring_reader<T: Clone>(ring: &Ring<T>, cursor: &Cursor) -> (Vec<T>, u64) {
    let mut items = Vec::new();
    let mut lag = 0;
    loop {
        match ring.read(cursor, None) {
            Read::Item { value, .. } => items.push(value),
            Read::Lagged(n) => lag += n,
            Read::Closed => return (items, lag),
            Read::Empty => panic!("a read without deadline returned empty"),
        }
    }
}

#[test]
fn loom_ring_lossless_cursor_reads_everything_in_order() {
    // A cursor holding 1 on a ring of 2: the writer must wait for the reader every
    // time, and neither side may sleep through the other's wake-up.
    loom::model(|| {
        let ring = Arc::new(Ring::<u32>::new(2));
        let cursor = Arc::new(Cursor::new(0, 1, true));
        let writer = {
            let (ring, cursor) = (ring.clone(), cursor.clone());
            thread::spawn(move || ring_writer(&ring, &[&cursor], vec![0, 1, 2]))
        };
        let (items, lag) = ring_reader(&ring, &cursor);
        writer.join().unwrap();
        assert_eq!((items, lag), (vec![0, 1, 2], 0));
    });
}

#[test]
fn loom_ring_lossy_cursor_counts_exactly_what_it_missed() {
    loom::model(|| {
        let ring = Arc::new(Ring::<u32>::new(2));
        let cursor = Arc::new(Cursor::new(0, 1, false));
        let writer = {
            let (ring, cursor) = (ring.clone(), cursor.clone());
            thread::spawn(move || ring_writer(&ring, &[&cursor], vec![0, 1, 2]))
        };
        let (items, lag) = ring_reader(&ring, &cursor);
        writer.join().unwrap();
        assert!(items.windows(2).all(|w| w[0] < w[1]), "out of order: {items:?}");
        assert_eq!(items.len() as u64 + lag, 3, "items {items:?}, lag {lag}");
        // The newest is never skipped: a lagging cursor keeps the last `capacity`.
        assert_eq!(items.last(), Some(&2));
    });
}

#[test]
fn loom_ring_shared_cursor_hands_each_item_to_one_reader() {
    // Two threads race on one cursor (a `Receiver` shared by reference). The writer's
    // side is the lossless model's; here the ring is filled first, to keep the model
    // small enough for CI.
    loom::model(|| {
        let ring = Arc::new(Ring::<u32>::new(2));
        let cursor = Arc::new(Cursor::new(0, 2, true));
        ring_writer(&ring, &[&cursor], vec![0, 1]);
        let other = {
            let (ring, cursor) = (ring.clone(), cursor.clone());
            thread::spawn(move || ring_reader(&ring, &cursor).0)
        };
        let mut items = ring_reader(&ring, &cursor).0;
        items.extend(other.join().unwrap());
        items.sort_unstable();
        assert_eq!(items, vec![0, 1]);
    });
}

#[test]
fn loom_ring_last_reader_releases_the_value() {
    // Two cursors read one write; once both have read it, only the caller's copy of
    // the value is left: the ring does not keep what every reader has taken.
    loom::model(|| {
        let value = std::sync::Arc::new(7_u32);
        let ring = Arc::new(Ring::<std::sync::Arc<u32>>::new(2));
        let cursors = [Arc::new(Cursor::new(0, 1, true)), Arc::new(Cursor::new(0, 1, true))];
        drop(ring.write(value.clone(), 2));
        let other = {
            let (ring, cursor) = (ring.clone(), cursors[1].clone());
            thread::spawn(move || matches!(ring.read(&cursor, None), Read::Item { .. }))
        };
        assert!(matches!(ring.read(&cursors[0], None), Read::Item { .. }));
        assert!(other.join().unwrap());
        assert_eq!(std::sync::Arc::strong_count(&value), 1);
    });
}

/// A push subscriber on a ring, reduced to the protocol: the topic's commit lock
/// around each write and its `notify`, and a runner that reads until empty and then
/// releases, as `Subscriber::run` does.
struct ModelRingRunner {
    /// The commit lock, guarding the values in the order they were written.
    commit: Mutex<Vec<u32>>,
    ring: Ring<u32>,
    cursor: Cursor,
    state: ScheduleState,
    runners: AtomicUsize,
    handled: Mutex<Vec<u32>>,
}

impl ModelRingRunner {
    /// A publisher: write and notify under the commit lock, then, if `notify` said so,
    /// play the executor and run the subscriber.
    fn publish(&self, value: u32) {
        let submit = {
            let mut written = self.commit.lock().unwrap();
            let _overwritten = self.ring.write(value, 1);
            written.push(value);
            self.state.notify()
        };
        if submit {
            self.run();
        }
    }

    fn run(&self) {
        loop {
            self.state.begin_run();
            assert_eq!(self.runners.fetch_add(1, Ordering::SeqCst), 0, "two runners");
            while let Read::Item { value, .. } = self.ring.try_read(&self.cursor) {
                self.handled.lock().unwrap().push(value);
            }
            self.runners.fetch_sub(1, Ordering::SeqCst);
            if self.state.try_release() {
                return;
            }
        }
    }
}

#[test]
fn loom_ring_runner_handles_every_write_once_in_order() {
    // Two publishers race; whichever finds the subscriber idle runs it. A runner that
    // released while a write was unread would strand it (the final check fails); two
    // runners at once trip the probe.
    loom::model(|| {
        let model = Arc::new(ModelRingRunner {
            commit: Mutex::new(Vec::new()),
            ring: Ring::new(4),
            cursor: Cursor::new(0, 4, true),
            state: ScheduleState::new(),
            runners: AtomicUsize::new(0),
            handled: Mutex::new(Vec::new()),
        });
        let other = {
            let model = model.clone();
            thread::spawn(move || model.publish(1))
        };
        model.publish(2);
        other.join().unwrap();
        let handled = model.handled.lock().unwrap().clone();
        assert_eq!(handled, *model.commit.lock().unwrap(), "not every write once, in order");
    });
}

/// A topic's commit lock reduced to what publish-side dedup needs: the next `seq` and
/// the window of accepted keys.
struct ModelTopic {
    commit: Mutex<(u64, Accepted)>,
    hasher: KeyHasher,
}

/// What one modelled publish returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Published {
    Accepted(u64),
    Duplicate(u64),
    Refused,
}

impl ModelTopic {
    fn new() -> Self {
        let window = DedupWindow::new(8, std::time::Duration::from_secs(60));
        ModelTopic {
            commit: Mutex::new((0, Accepted::new(window))),
            hasher: KeyHasher::new(),
        }
    }

    /// `TopicCore::publish` with a key: the step-0 look-up in one hold of the lock, the
    /// reservations (elided) with the lock released, then step 3 in a second hold:
    /// refuse if `refused`, else admit and take the `seq`.
    fn publish(&self, key: &str, refused: bool) -> Published {
        let now = crate::stamp::Stamp(0);
        let key = self.hasher.hash(key);
        if let Some(original) = self.commit.lock().unwrap().1.get(key, now) {
            return Published::Duplicate(original);
        }
        thread::yield_now();
        let mut commit = self.commit.lock().unwrap();
        if refused {
            return Published::Refused;
        }
        let seq = commit.0;
        match commit.1.admit(key, now, seq) {
            Ok(()) => {
                commit.0 += 1;
                Published::Accepted(seq)
            }
            Err(original) => Published::Duplicate(original),
        }
    }
}

#[test]
fn loom_dedup_one_of_two_concurrent_publishes_of_a_key_is_accepted() {
    // K5 (G5): two publishers race with one key; exactly one is accepted and the other
    // is told the winner's `seq`.
    loom::model(|| {
        let topic = Arc::new(ModelTopic::new());
        let other = {
            let topic = topic.clone();
            thread::spawn(move || topic.publish("pay-7", false))
        };
        let mine = topic.publish("pay-7", false);
        let theirs = other.join().unwrap();
        match (mine, theirs) {
            (Published::Accepted(seq), Published::Duplicate(original))
            | (Published::Duplicate(original), Published::Accepted(seq)) => assert_eq!(seq, original),
            outcome => panic!("not exactly one accepted: {outcome:?}"),
        }
        assert_eq!(topic.commit.lock().unwrap().0, 1, "one seq taken");
    });
}

#[test]
fn loom_dedup_a_refused_publish_never_records_its_key() {
    // G6 with a race: a publish refused at step 3 (say, by a full `Reject` mailbox)
    // records nothing, so the other publish of the key is accepted whichever comes
    // first. (If that one is accepted first, the other is a duplicate instead.)
    loom::model(|| {
        let topic = Arc::new(ModelTopic::new());
        let refused = {
            let topic = topic.clone();
            thread::spawn(move || topic.publish("pay-7", true))
        };
        let mine = topic.publish("pay-7", false);
        let theirs = refused.join().unwrap();
        assert!(
            matches!(theirs, Published::Refused | Published::Duplicate(0)),
            "{theirs:?}"
        );
        assert_eq!(mine, Published::Accepted(0));
    });
}

#[test]
fn loom_key_hash_raced_by_two_windows_is_the_same_for_both() {
    // Two windows (two subscribers' threads) hash one event's key at once: each gets
    // the key's hash, whichever of them stores it, and a later look sees it whole.
    loom::model(|| {
        let hasher = Arc::new(KeyHasher::new());
        let key = Arc::new(IdempotencyKey::from("pay-7"));
        let other = {
            let (hasher, key) = (hasher.clone(), key.clone());
            thread::spawn(move || key.hash(&hasher))
        };
        let expected = hasher.hash("pay-7");
        assert_eq!(key.hash(&hasher), expected);
        assert_eq!(other.join().unwrap(), expected);
        assert_eq!(key.hash(&hasher), expected);
    });
}

/// A mailbox reduced to what the ack gate relies on: its real `SourceFlags`, and a
/// channel where items and wake markers queue in order; `wait` returns once either is
/// queued and takes nothing; a pop consumes the markers before an item.
struct ModelSource {
    /// `None` is the wake marker.
    queue: Mutex<VecDeque<Option<Delivery>>>,
    ready: loom::sync::Condvar,
    flags: SourceFlags,
}

/// (event, attempt)
type Delivery = (u32, u32);

impl ModelSource {
    fn new(events: &[u32]) -> Self {
        ModelSource {
            queue: Mutex::new(events.iter().map(|&e| Some((e, 1))).collect()),
            ready: loom::sync::Condvar::new(),
            flags: SourceFlags::new(),
        }
    }

    fn push(&self, event: u32) {
        self.queue.lock().unwrap().push_back(Some((event, 1)));
        self.ready.notify_all();
    }

    fn close(&self) {
        if self.flags.close() {
            self.wake();
        }
    }
}

impl Source<Delivery> for ModelSource {
    fn pop(&self) -> Option<Delivery> {
        let mut woke = false;
        let popped = {
            let mut queue = self.queue.lock().unwrap();
            loop {
                match queue.pop_front() {
                    Some(None) => {
                        self.flags.lower_wake();
                        woke = true;
                    }
                    Some(item) => break item,
                    None => break None,
                }
            }
        };
        // As `Mailbox::pop_held`: the close's marker is passed on.
        if woke && self.flags.is_closed() {
            self.wake();
        }
        popped
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn len(&self) -> usize {
        self.queue.lock().unwrap().iter().flatten().count()
    }

    fn is_closed(&self) -> bool {
        self.flags.is_closed()
    }

    fn wait(&self, _deadline: Option<std::time::Instant>) -> bool {
        let mut queue = self.queue.lock().unwrap();
        while queue.is_empty() {
            queue = self.ready.wait(queue).unwrap();
        }
        true
    }

    fn wake(&self) {
        if self.flags.raise_wake() {
            self.queue.lock().unwrap().push_back(None);
            self.ready.notify_all();
        }
    }
}

/// Retries in the models are due at once: the clock never moves.
fn epoch() -> std::time::SystemTime {
    std::time::SystemTime::UNIX_EPOCH
}

/// A nack as `ack_receiver` makes it: the next attempt goes into the retries, unless
/// the gate ended (then it is dropped, and `false`).
fn nack(gate: &Gate<Delivery>, source: &ModelSource, (event, attempt): Delivery) -> bool {
    gate.settle(source, |state| {
        if state.ended.is_some() {
            return false;
        }
        state.retries.push(epoch(), (event, attempt + 1));
        true
    })
}

/// What a lease handed out, from the source or the retries.
fn handed<T>(lease: Lease<T>) -> Option<T> {
    match lease {
        Lease::Item(item) | Lease::Retry(item) => Some(item),
        Lease::Empty | Lease::Closed => None,
    }
}

/// A take from a gate of at most one out, checking I4 after it.
fn take(gate: &Gate<Delivery>, source: &ModelSource, how: Take) -> Lease<Delivery> {
    let lease = gate.take(source, how, epoch);
    assert!(gate.unacked() <= 1, "I4: more out than max_unacked");
    lease
}

#[test]
fn loom_ack_nack_and_recv() {
    // One handle out of at most one (ordered). Another thread acks it (without the
    // gate's lock) or nacks it while this one blocks in `recv` at the limit: a nacked
    // event comes back exactly once, as attempt 2 and before the next event; an acked
    // one never; `recv` returns (no lost wake-up) and the limit holds.
    for nacks in [false, true] {
        loom::model(move || {
            let gate = Arc::new(Gate::<Delivery>::new(1, 1));
            let source = Arc::new(ModelSource::new(&[1, 2]));
            let Lease::Item(first) = take(&gate, &source, Take::NoWait) else {
                panic!("the first event is queued");
            };
            assert_eq!(first, (1, 1));
            assert!(
                matches!(take(&gate, &source, Take::NoWait), Lease::Empty),
                "at the limit"
            );
            let settler = {
                let (gate, source) = (gate.clone(), source.clone());
                thread::spawn(move || {
                    if nacks {
                        assert!(nack(&gate, &source, first));
                    } else {
                        gate.release();
                    }
                })
            };
            let Some(next) = handed(take(&gate, &source, Take::Until(None))) else {
                panic!("recv returned without a delivery");
            };
            assert_eq!(gate.unacked(), 1);
            settler.join().unwrap();
            gate.release();
            let expected = if nacks { (1, 2) } else { (2, 1) };
            assert_eq!(next, expected);
            let rest: Vec<Delivery> = std::iter::from_fn(|| {
                let d = handed(take(&gate, &source, Take::NoWait))?;
                gate.release();
                Some(d)
            })
            .collect();
            assert_eq!(rest, if nacks { vec![(2, 1)] } else { vec![] });
        });
    }
}

#[test]
fn loom_ack_two_receivers_at_the_limit_an_ack_without_the_lock_wakes_the_other() {
    // One receiver shared by two threads, at most one handle out, two events. Each
    // thread takes one (blocking) and acks it without the gate's lock: whichever waits
    // for room is woken by the other's ack (no lost wake-up), the limit holds, and
    // each event is handed out once.
    loom::model(|| {
        let gate = Arc::new(Gate::<Delivery>::new(1, 1));
        let source = Arc::new(ModelSource::new(&[1, 2]));
        let receive = |gate: Arc<Gate<Delivery>>, source: Arc<ModelSource>| {
            let Some(delivery) = handed(take(&gate, &source, Take::Until(None))) else {
                panic!("recv returned without a delivery");
            };
            gate.release();
            delivery
        };
        let other = {
            let (gate, source) = (gate.clone(), source.clone());
            thread::spawn(move || receive(gate, source))
        };
        let mine = receive(gate.clone(), source.clone());
        let mut both = [mine, other.join().unwrap()];
        both.sort_unstable();
        assert_eq!(both, [(1, 1), (2, 1)]);
        assert_eq!(gate.unacked(), 0);
    });
}

/// Unordered, room for two: takes event 1, and spawns a thread that nacks it
/// (returning what `nack` returned).
fn first_event_taken_then_nacked() -> (Arc<Gate<Delivery>>, Arc<ModelSource>, thread::JoinHandle<bool>) {
    let gate = Arc::new(Gate::<Delivery>::new(2, 2));
    let source = Arc::new(ModelSource::new(&[1]));
    let Lease::Item(first) = gate.take(&*source, Take::NoWait, epoch) else {
        panic!("the first event is queued");
    };
    let nacker = {
        let (gate, source) = (gate.clone(), source.clone());
        thread::spawn(move || nack(&gate, &source, first))
    };
    (gate, source, nacker)
}

#[test]
fn loom_ack_a_nack_wakes_a_receiver_waiting_for_events() {
    // Unordered, room for two: this thread holds event 1 and blocks waiting for a new
    // event; only the other thread's nack of event 1 can wake it (by the marker).
    loom::model(|| {
        let (gate, source, nacker) = first_event_taken_then_nacked();
        let Lease::Retry(again) = gate.take(&*source, Take::Until(None), epoch) else {
            panic!("recv returned without a delivery");
        };
        assert_eq!(again, (1, 2));
        assert!(nacker.join().unwrap());
    });
}

/// Receives (blocking) and acks until `Closed`; returns what was received.
fn receive_until_closed(gate: &Gate<Delivery>, source: &ModelSource) -> Vec<Delivery> {
    let mut received = Vec::new();
    loop {
        match gate.take(source, Take::Until(None), epoch) {
            Lease::Item(delivery) | Lease::Retry(delivery) => {
                received.push(delivery);
                gate.release();
            }
            Lease::Closed => return received,
            Lease::Empty => panic!("no deadline, yet Empty"),
        }
    }
}

#[test]
fn loom_ack_a_nack_a_publish_and_a_shutdown_lose_nothing() {
    // As above, while a third thread publishes event 2 and then shuts down (the end,
    // then the close, as the bus does). Every event is received or, for a nack after
    // the end (or a retry the end took), counted as dropped: none is lost, none comes
    // twice, and `Closed` comes last.
    loom::model(|| {
        let (gate, source, nacker) = first_event_taken_then_nacked();
        let shutdown = {
            let (gate, source) = (gate.clone(), source.clone());
            thread::spawn(move || {
                source.push(2);
                let dropped = gate.end(&*source, End::Shutdown).len();
                source.close();
                dropped
            })
        };
        let received = receive_until_closed(&gate, &source);
        let nacked_before_the_end = nacker.join().unwrap();
        let dropped_by_the_end = shutdown.join().unwrap();
        let redelivered = usize::from(received.contains(&(1, 2)));
        assert!(received.contains(&(2, 1)), "{received:?}");
        assert_eq!(received.len(), 1 + redelivered, "{received:?}");
        assert_eq!(
            redelivered + dropped_by_the_end,
            usize::from(nacked_before_the_end),
            "event 1 is redelivered, or dropped by the end or by its nack, exactly once"
        );
        assert_eq!(gate.unacked(), 0);
    });
}

#[test]
fn loom_ack_two_receivers_waiting_for_events_both_see_the_close() {
    // One receiver shared by two threads, both blocking on an empty source with room
    // to spare, while a third shuts down as the bus does: the end (which queues a
    // marker for a waiting thread), a last event published meanwhile, then the close
    // (which queues none while that marker is still queued). There is one marker at a
    // time: whichever thread consumes it, with the event or without, must not leave
    // the other asleep. The event is received once, and both threads return `Closed`.
    loom::model(|| {
        let gate = Arc::new(Gate::<Delivery>::new(2, 1));
        let source = Arc::new(ModelSource::new(&[]));
        let other = {
            let (gate, source) = (gate.clone(), source.clone());
            thread::spawn(move || receive_until_closed(&gate, &source))
        };
        let shutdown = {
            let (gate, source) = (gate.clone(), source.clone());
            thread::spawn(move || {
                assert!(gate.end(&*source, End::Shutdown).is_empty());
                source.push(1);
                source.close();
            })
        };
        let mut received = receive_until_closed(&gate, &source);
        received.extend(other.join().unwrap());
        shutdown.join().unwrap();
        assert_eq!(received, [(1, 1)]);
    });
}

/// A topic reduced to the join-at-a-cut protocol (`roster`): the commit lock guards
/// the next `seq`, the history and the `Cut`; a member is a queue of the `seq`s
/// queued for it.
struct CutTopic {
    roster: Roster<Arc<Mutex<Vec<u64>>>>,
    /// `(next seq, history of every seq, the cut)`.
    commit: Mutex<(u64, Vec<u64>, Cut)>,
}

impl CutTopic {
    fn new() -> Self {
        CutTopic {
            roster: Roster::new(),
            commit: Mutex::new((0, Vec::new(), Cut::default())),
        }
    }

    /// Steps 1 and 3 of a publish: read the roster, then commit under the lock,
    /// starting again if a member joined at a cut meanwhile.
    fn publish(&self) {
        loop {
            let (members, ticket) = self.roster.read();
            thread::yield_now();
            let mut commit = self.commit.lock().unwrap();
            if !commit.2.admits(ticket) {
                continue;
            }
            let seq = commit.0;
            commit.0 += 1;
            commit.1.push(seq);
            for member in members.iter() {
                member.lock().unwrap().push(seq);
            }
            return;
        }
    }

    /// `TopicCore::join_at`: the history from `from`, then the roster at a cut, in one
    /// hold of the commit lock.
    fn join_at(&self, from: u64) -> Arc<Mutex<Vec<u64>>> {
        let member = Arc::new(Mutex::new(Vec::new()));
        let mut commit = self.commit.lock().unwrap();
        let (_, history, cut) = &mut *commit;
        self.roster.add_at_cut(member.clone(), cut, |_| false);
        member
            .lock()
            .unwrap()
            .extend(history.iter().copied().filter(|&seq| seq >= from));
        drop(commit);
        member
    }
}

impl CutTopic {
    /// `TopicCore::join_at` with a filter: the roster at a cut and the history in one
    /// hold of the lock, the history screened with no lock held (live events may be
    /// queued meanwhile), then, under the lock again, the history put ahead of them.
    fn join_at_screened(&self, from: u64) -> Arc<Mutex<Vec<u64>>> {
        let member = Arc::new(Mutex::new(Vec::new()));
        let history: Vec<u64> = {
            let mut commit = self.commit.lock().unwrap();
            let (_, history, cut) = &mut *commit;
            self.roster.add_at_cut(member.clone(), cut, |_| false);
            history.iter().copied().filter(|&seq| seq >= from).collect()
        };
        thread::yield_now();
        let _commit = self.commit.lock().unwrap();
        let mut queue = member.lock().unwrap();
        let live = std::mem::take(&mut *queue);
        queue.extend(history);
        queue.extend(live);
        drop(queue);
        member
    }
}

/// Two publishers publish one event each while this thread joins with `join`; returns
/// what the member got.
fn join_while_two_publish(join: impl FnOnce(&CutTopic) -> Arc<Mutex<Vec<u64>>>) -> Vec<u64> {
    let topic = Arc::new(CutTopic::new());
    let publishers: Vec<_> = (0..2)
        .map(|_| {
            let topic = topic.clone();
            thread::spawn(move || topic.publish())
        })
        .collect();
    let member = join(&topic);
    for publisher in publishers {
        publisher.join().unwrap();
    }
    let seen = member.lock().unwrap().clone();
    seen
}

#[test]
fn loom_joining_at_a_cut_with_a_filter_keeps_the_history_first() {
    // K6 with a filter: live events queued while the history is screened end up
    // behind it, and nothing is missed or doubled.
    loom::model(|| {
        let seen = join_while_two_publish(|topic| topic.join_at_screened(0));
        assert_eq!(seen, [0, 1]);
    });
}

#[test]
fn loom_joining_at_a_cut_gets_every_offset_once() {
    // K6 (H4): a member joins at offset 0 while two publishers run; whatever the
    // interleaving it ends with every seq exactly once, in order: the history up to
    // the cut, then the live ones (none twice, none missed by a publish that read the
    // roster before the join).
    loom::model(|| {
        let seen = join_while_two_publish(|topic| topic.join_at(0));
        assert_eq!(seen, [0, 1]);
    });
}

/// A consumer group reduced to the protocol of `wake_one`: one shared queue, and
/// members with their own schedule state whose runner pops from it.
struct ModelGroup {
    queue: Mutex<VecDeque<u32>>,
    handled: Mutex<Vec<u32>>,
    members: crate::wake_one::Members,
}

/// What a model member's runner does with its group.
trait ModelWork: Send + Sync + 'static {
    /// Handles the next event for the member in `seat`; `false` once there is none.
    fn handle_next(&self, seat: u64) -> bool;
}

/// A group member reduced to its schedule: a runner that handles events from its
/// group while it is active, under its run lock, and a probe that counts runners.
struct ModelMember<G> {
    group: Arc<G>,
    seat: crate::affinity::SeatId,
    state: ScheduleState,
    active: crate::sync::AtomicBool,
    /// The run lock: a leave waits for a running batch.
    run: Mutex<()>,
    runners: AtomicUsize,
}

impl<G: ModelWork> ModelMember<G> {
    fn new(group: &Arc<G>, seat: u64) -> std::sync::Arc<Self> {
        std::sync::Arc::new(ModelMember {
            group: group.clone(),
            seat,
            state: ScheduleState::new(),
            active: crate::sync::AtomicBool::new(true),
            run: Mutex::new(()),
            runners: AtomicUsize::new(0),
        })
    }

    /// Unsubscribe's steps 1 and 2: clear `active`, and wait for a running batch.
    fn stop(&self) -> loom::sync::MutexGuard<'_, ()> {
        self.active.store(false, Ordering::SeqCst);
        self.run.lock().unwrap()
    }
}

impl<G: ModelWork> crate::wake_one::Member for ModelMember<G> {
    fn is_active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    fn notify(&self) -> bool {
        self.state.notify()
    }

    /// The submitting thread plays the executor and runs the member itself.
    fn submit(self: std::sync::Arc<Self>) {
        loop {
            self.state.begin_run();
            assert_eq!(
                self.runners.fetch_add(1, Ordering::SeqCst),
                0,
                "two runners on one member"
            );
            {
                let _run = self.run.lock().unwrap();
                // As `Subscriber::run_batch`: `active` is checked before every event.
                while self.is_active() && self.group.handle_next(self.seat) {}
            }
            self.runners.fetch_sub(1, Ordering::SeqCst);
            if self.state.try_release() {
                return;
            }
        }
    }
}

impl ModelWork for ModelGroup {
    fn handle_next(&self, _seat: u64) -> bool {
        let next = self.queue.lock().unwrap().pop_front();
        next.map(|item| self.handled.lock().unwrap().push(item)).is_some()
    }
}

impl ModelGroup {
    fn new() -> Arc<Self> {
        Arc::new(ModelGroup {
            queue: Mutex::new(VecDeque::new()),
            handled: Mutex::new(Vec::new()),
            members: crate::wake_one::Members::new(),
        })
    }

    fn join(group: &Arc<Self>) -> std::sync::Arc<ModelMember<Self>> {
        let member = ModelMember::new(group, group.members.len() as u64);
        group.members.add(member.seat, member.clone());
        member
    }

    /// A publish: push, then wake one member (the group's `notify` is always `true`).
    fn publish(&self, item: u32) {
        self.queue.lock().unwrap().push_back(item);
        self.members.wake();
    }

    /// Unsubscribe's steps for a member: clear `active`, wait for its batch, leave the
    /// list, and wake another if events are queued (`Group::leave`).
    fn leave(&self, member: &ModelMember<Self>) {
        let run = member.stop();
        self.members.remove(member.seat);
        drop(run);
        if !self.queue.lock().unwrap().is_empty() {
            self.members.wake();
        }
    }

    fn assert_each_handled_once(&self, items: &[u32]) {
        let mut handled = self.handled.lock().unwrap().clone();
        handled.sort_unstable();
        assert_eq!(handled, items, "an event was lost or handled twice");
        assert!(self.queue.lock().unwrap().is_empty(), "an event stayed queued");
        // The members hold the group and the group lists them (as `Group`'s retire).
        self.members.clear();
    }
}

#[test]
fn loom_group_every_event_is_handled_by_one_member() {
    // Two publishers race; each wake finds an idle member or leaves a busy one
    // notified. Every event is handled once, and no member runs twice at once.
    loom::model(|| {
        let group = ModelGroup::new();
        let _a = ModelGroup::join(&group);
        let _b = ModelGroup::join(&group);
        let publishers: Vec<_> = [1, 2]
            .into_iter()
            .map(|item| {
                let group = group.clone();
                thread::spawn(move || group.publish(item))
            })
            .collect();
        for publisher in publishers {
            publisher.join().unwrap();
        }
        group.assert_each_handled_once(&[1, 2]);
    });
}

#[test]
fn loom_group_a_member_leaving_strands_no_event() {
    // A publish races a member's leave: whether the wake picked the leaver (which
    // then stops before popping) or not, the event is handled once by someone.
    loom::model(|| {
        let group = ModelGroup::new();
        let a = ModelGroup::join(&group);
        let _b = ModelGroup::join(&group);
        let publisher = {
            let group = group.clone();
            thread::spawn(move || group.publish(1))
        };
        group.leave(&a);
        publisher.join().unwrap();
        group.assert_each_handled_once(&[1]);
    });
}

/// An event of the key-affinity model: its key and `seq`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct KeyedItem(Option<&'static str>, u64);

impl crate::affinity::Keyed for KeyedItem {
    fn partition_key(&self) -> Option<&str> {
        self.0
    }

    fn seq(&self) -> u64 {
        self.1
    }
}

/// A consumer group with key affinity reduced to its protocol (`affinity`, `group`):
/// the intake, the affinity under its lock, and members whose runner routes, takes,
/// handles and finishes, waking the owners it made work for.
struct KeyedGroup {
    /// The intake and the next `seq` (a publish pushes under the commit lock).
    intake: Mutex<(VecDeque<KeyedItem>, u64)>,
    affinity: Mutex<crate::affinity::Affinity<KeyedItem>>,
    members: crate::wake_one::Members,
    handled: Mutex<Vec<(u64, KeyedItem)>>,
    /// Keys being handled now: never two events of one key at once.
    in_progress: Mutex<Vec<&'static str>>,
    /// The lanes of one subscriber (`lanes`): one seat owns every key, and whoever
    /// makes a key ready wakes any idle lane.
    lanes: bool,
}

impl ModelWork for KeyedGroup {
    fn handle_next(&self, seat: u64) -> bool {
        // `GroupSeat::next_keyed`: route everything, take, then wake.
        let owner_seat = if self.lanes { 0 } else { seat };
        let mut wake = Vec::new();
        let next = {
            let mut affinity = self.affinity.lock().unwrap();
            while let Some(item) = self.intake.lock().unwrap().0.pop_front() {
                wake.extend(affinity.route(item).filter(|&o| self.lanes || o != seat));
            }
            affinity.take(owner_seat)
        };
        for owner in wake {
            if self.lanes {
                self.members.wake();
            } else {
                let _ = self.members.wake_seat(owner);
            }
        }
        let Some(item) = next else {
            return false;
        };
        if let Some(key) = item.0 {
            let mut in_progress = self.in_progress.lock().unwrap();
            assert!(!in_progress.contains(&key), "two events of {key} at once");
            in_progress.push(key);
        }
        self.handled.lock().unwrap().push((seat, item));
        // `GroupSeat::finished`.
        if let Some(key) = item.0 {
            self.in_progress.lock().unwrap().retain(|&k| k != key);
            let owner = self.affinity.lock().unwrap().finish(crate::affinity::key_hash(key));
            if let Some(owner) = owner.filter(|&o| o != owner_seat) {
                let _ = self.members.wake_seat(owner);
            }
        }
        true
    }
}

impl KeyedGroup {
    fn new() -> Arc<Self> {
        Self::with(false)
    }

    fn with(lanes: bool) -> Arc<Self> {
        Arc::new(KeyedGroup {
            intake: Mutex::new((VecDeque::new(), 0)),
            affinity: Mutex::new(crate::affinity::Affinity::new()),
            members: crate::wake_one::Members::new(),
            handled: Mutex::new(Vec::new()),
            in_progress: Mutex::new(Vec::new()),
            lanes,
        })
    }

    /// `group::lanes`: one seat in the affinity, every lane listed.
    fn lanes(n: u64) -> (Arc<Self>, Vec<std::sync::Arc<ModelMember<Self>>>) {
        let group = Self::with(true);
        group.affinity.lock().unwrap().join(0);
        let lanes = (0..n)
            .map(|seat| {
                let lane = ModelMember::new(&group, seat);
                group.members.add(seat, lane.clone());
                lane
            })
            .collect();
        (group, lanes)
    }

    /// `group::join`: listed first, then given partitions.
    fn join(group: &Arc<Self>, seat: u64) -> std::sync::Arc<ModelMember<Self>> {
        let member = ModelMember::new(group, seat);
        group.members.add(seat, member.clone());
        group.affinity.lock().unwrap().join(seat);
        member
    }

    /// A key that `seat` owns, from a few candidates.
    fn key_of(&self, seat: u64) -> &'static str {
        let affinity = self.affinity.lock().unwrap();
        ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
            .into_iter()
            .find(|k| affinity.owner(crate::affinity::key_hash(k)) == Some(seat))
            .expect("a key for each of two members")
    }

    /// A publish: push, then wake one member (`wake_one`), `first` if it is active
    /// (the walk may pick any active member: whoever routes wakes the owner).
    fn publish(&self, key: Option<&'static str>, first: Option<u64>) {
        {
            let mut intake = self.intake.lock().unwrap();
            let seq = intake.1;
            intake.1 += 1;
            intake.0.push_back(KeyedItem(key, seq));
        }
        if !first.is_some_and(|seat| self.members.wake_seat(seat)) {
            self.members.wake();
        }
    }

    /// `Group::leave` under the leaver's run lock: off the list and the assignment,
    /// then wake the new owners, and someone if events are queued or keyless.
    fn leave(&self, member: &ModelMember<Self>) {
        let run = member.stop();
        self.members.remove(member.seat);
        let (moved, queued) = {
            let mut affinity = self.affinity.lock().unwrap();
            let moved = affinity.leave(member.seat);
            (moved, affinity.has_keyless())
        };
        drop(run);
        for seat in moved {
            let _ = self.members.wake_seat(seat);
        }
        if queued || !self.intake.lock().unwrap().0.is_empty() {
            self.members.wake();
        }
    }

    /// Each event handled once; each key's events in `seq` order; nothing left.
    fn assert_handled_in_key_order(&self, published: u64) {
        let handled = self.handled.lock().unwrap().clone();
        let mut seqs: Vec<u64> = handled.iter().map(|(_, item)| item.1).collect();
        seqs.sort_unstable();
        assert_eq!(
            seqs,
            (0..published).collect::<Vec<_>>(),
            "an event was lost or handled twice"
        );
        for (i, (_, a)) in handled.iter().enumerate() {
            for (_, b) in &handled[i + 1..] {
                assert!(a.0.is_none() || a.0 != b.0 || a.1 < b.1, "{a:?} after {b:?}");
            }
        }
        assert_eq!(self.affinity.lock().unwrap().len(), 0, "an event stayed in a line");
        self.members.clear();
    }
}

#[test]
fn loom_affinity_each_key_in_order_one_at_a_time() {
    // Two publishers race on the key of member 0 and on member 1's, and wake only
    // member 0: it routes member 1's key and wakes member 1 (busy or idle). Each key's
    // events run one at a time, in order.
    loom::model(|| {
        let group = KeyedGroup::new();
        let _a = KeyedGroup::join(&group, 0);
        let _b = KeyedGroup::join(&group, 1);
        let (ka, kb) = (group.key_of(0), group.key_of(1));
        let publishers: Vec<_> = [[Some(ka), Some(kb)], [Some(ka), None]]
            .into_iter()
            .map(|keys| {
                let group = group.clone();
                thread::spawn(move || keys.into_iter().for_each(|k| group.publish(k, Some(0))))
            })
            .collect();
        for publisher in publishers {
            publisher.join().unwrap();
        }
        group.assert_handled_in_key_order(4);
    });
}

#[test]
fn loom_affinity_an_owner_leaving_strands_nothing() {
    // Publishes of member 0's key, which wake member 0 only, race member 0's leave:
    // the key moves to member 1, which is woken by the route or by the leave.
    loom::model(|| {
        let group = KeyedGroup::new();
        let a = KeyedGroup::join(&group, 0);
        let _b = KeyedGroup::join(&group, 1);
        let ka = group.key_of(0);
        let publisher = {
            let group = group.clone();
            thread::spawn(move || {
                group.publish(Some(ka), Some(0));
                group.publish(Some(ka), Some(0));
            })
        };
        group.leave(&a);
        publisher.join().unwrap();
        group.assert_handled_in_key_order(2);
    });
}

#[test]
fn loom_affinity_a_join_moves_a_busy_key_without_reordering_it() {
    // Member 1 joins while member 0 handles a key that the join moves to member 1:
    // member 1 takes the key's next event only once member 0 finished, woken by that
    // finish, by its join or by the route.
    let moving = {
        let mut probe = crate::affinity::Affinity::<KeyedItem>::new();
        probe.join(0);
        probe.join(1);
        ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"]
            .into_iter()
            .find(|k| probe.owner(crate::affinity::key_hash(k)) == Some(1))
            .unwrap()
    };
    loom::model(move || {
        let group = KeyedGroup::new();
        let _a = KeyedGroup::join(&group, 0);
        let publisher = {
            let group = group.clone();
            thread::spawn(move || group.publish(Some(moving), Some(0)))
        };
        let _b = KeyedGroup::join(&group, 1);
        // `Group::joined`: wake whoever has work now.
        let ready: Vec<u64> = {
            let affinity = group.affinity.lock().unwrap();
            [0, 1].into_iter().filter(|&s| affinity.has_work(s)).collect()
        };
        for seat in ready {
            let _ = group.members.wake_seat(seat);
        }
        // Member 1 routes the key's second event, maybe while member 0 still handles
        // the first: then only member 0's finish can wake it.
        group.publish(Some(moving), Some(1));
        publisher.join().unwrap();
        group.assert_handled_in_key_order(2);
    });
}

#[test]
fn loom_lanes_run_each_key_in_order_and_strand_nothing() {
    // Two publishers race on two keys and a keyless event over two lanes: any lane
    // takes any key, never two of one key at once, each key in order, none left.
    loom::model(|| {
        let (group, _lanes) = KeyedGroup::lanes(2);
        let publishers: Vec<_> = [[Some("a"), Some("b")], [Some("a"), None]]
            .into_iter()
            .map(|keys| {
                let group = group.clone();
                thread::spawn(move || keys.into_iter().for_each(|k| group.publish(k, None)))
            })
            .collect();
        for publisher in publishers {
            publisher.join().unwrap();
        }
        group.assert_handled_in_key_order(4);
    });
}

/// A group of ack receivers reduced to its protocol (`group`, G5): the group's queue
/// and each member's bell under one lock, so that a member waits on both at once (the
/// real one selects on two channels); the real `SourceFlags` of the queue and of each
/// bell; and the `dissolved` lock that a give-back and the close of the queue take.
struct AckGroupModel {
    queues: Mutex<AckGroupQueues>,
    ready: loom::sync::Condvar,
    queue_flags: SourceFlags,
    bells: [SourceFlags; 2],
    dissolved: Mutex<()>,
}

#[derive(Default)]
struct AckGroupQueues {
    queue: VecDeque<Delivery>,
    /// Whether each member's bell holds its wake marker.
    rung: [bool; 2],
}

/// A member's source, as `GroupSeat`'s is: events from the queue, its marker and the
/// close from its bell.
struct ModelSeat(Arc<AckGroupModel>, usize);

impl Source<Delivery> for ModelSeat {
    fn pop(&self) -> Option<Delivery> {
        let (woke, popped) = {
            let mut queues = self.0.queues.lock().unwrap();
            let woke = std::mem::take(&mut queues.rung[self.1]);
            if woke {
                self.0.bells[self.1].lower_wake();
            }
            (woke, queues.queue.pop_front())
        };
        // As the bell's `Mailbox::pop_held`: the close's marker is passed on.
        if woke && self.0.bells[self.1].is_closed() {
            self.wake();
        }
        popped
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn len(&self) -> usize {
        self.0.queues.lock().unwrap().queue.len()
    }

    fn is_closed(&self) -> bool {
        self.0.bells[self.1].is_closed()
    }

    fn wait(&self, _deadline: Option<std::time::Instant>) -> bool {
        let mut queues = self.0.queues.lock().unwrap();
        while queues.queue.is_empty() && !queues.rung[self.1] {
            queues = self.0.ready.wait(queues).unwrap();
        }
        true
    }

    fn wake(&self) {
        if self.0.bells[self.1].raise_wake() {
            self.0.queues.lock().unwrap().rung[self.1] = true;
            self.0.ready.notify_all();
        }
    }
}

impl AckGroupModel {
    fn new(events: &[u32]) -> Arc<Self> {
        Arc::new(AckGroupModel {
            queues: Mutex::new(AckGroupQueues {
                queue: events.iter().map(|&e| (e, 1)).collect(),
                rung: [false; 2],
            }),
            ready: loom::sync::Condvar::new(),
            queue_flags: SourceFlags::new(),
            bells: [SourceFlags::new(), SourceFlags::new()],
            dissolved: Mutex::new(()),
        })
    }

    /// `GroupSeat::hand_over`: `false` (dropped) once the queue is closed.
    fn give_back(&self, delivery: Delivery) -> bool {
        let _dissolved = self.dissolved.lock().unwrap();
        if self.queue_flags.is_closed() {
            return false;
        }
        self.queues.lock().unwrap().queue.push_back(delivery);
        self.ready.notify_all();
        true
    }
}

/// Shutdown: `Group::close_queue`, then the member's bell (`GroupSeat::close`).
fn close_ack_group(group: &Arc<AckGroupModel>, member: usize) {
    {
        let _dissolved = group.dissolved.lock().unwrap();
        group.queue_flags.close();
    }
    if group.bells[member].close() {
        ModelSeat(group.clone(), member).wake();
    }
}

#[test]
fn loom_ack_group_a_leavers_nack_reaches_a_member_or_is_dropped_never_stranded() {
    // Member 0 holds event 1 and leaves; its nack after leaving gives the event back,
    // racing with the shutdown (the queue's close, then member 1's bell). Member 1
    // receives until `Closed`: it gets event 2, and event 1 (attempt 2) unless the give-back
    // saw the close and dropped it; it never waits through the close, and nothing is
    // left in the queue after its `Closed` (G5).
    loom::model(|| {
        let group = AckGroupModel::new(&[1, 2]);
        let leaver = Gate::<Delivery>::new(1, 1);
        let first = handed(leaver.take(&ModelSeat(group.clone(), 0), Take::NoWait, epoch));
        assert_eq!(first, Some((1, 1)));
        let nacker = {
            let group = group.clone();
            thread::spawn(move || {
                let seat = ModelSeat(group.clone(), 0);
                assert!(leaver.end(&seat, End::Unsubscribed).is_empty());
                leaver.settle(&seat, |state| assert!(state.ended.is_some()));
                group.give_back((1, 2))
            })
        };
        let shutdown = {
            let group = group.clone();
            thread::spawn(move || close_ack_group(&group, 1))
        };
        let stayer = Gate::<Delivery>::new(2, 2);
        let seat = ModelSeat(group.clone(), 1);
        let mut received = Vec::new();
        loop {
            match stayer.take(&seat, Take::Until(None), epoch) {
                Lease::Item(delivery) | Lease::Retry(delivery) => {
                    received.push(delivery);
                    stayer.settle(&seat, |_| ());
                }
                Lease::Closed => break,
                Lease::Empty => panic!("no deadline, yet Empty"),
            }
        }
        let given_back = nacker.join().unwrap();
        shutdown.join().unwrap();
        assert!(seat.is_empty(), "G5: an event was given back after the member's Closed");
        let expected = if given_back { vec![(2, 1), (1, 2)] } else { vec![(2, 1)] };
        assert_eq!(received, expected);
    });
}

/// A lossless ack receiver's window on its topic's ring, as `broadcast::Seat`'s
/// `Source` impl is: the wake marker is a flag that the ring's sleep checks under the
/// ring's lock, which `wake` takes to notify.
struct RingSource {
    ring: Ring<Delivery>,
    cursor: Cursor,
    woken: loom::sync::atomic::AtomicBool,
}

impl Source<Delivery> for RingSource {
    fn pop(&self) -> Option<Delivery> {
        self.woken.store(false, Ordering::SeqCst);
        match self.ring.try_read(&self.cursor) {
            Read::Item { value, .. } => Some(value),
            Read::Lagged(_) | Read::Empty | Read::Closed => None,
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn len(&self) -> usize {
        (self.ring.head() - self.cursor.next()) as usize
    }

    fn is_closed(&self) -> bool {
        self.cursor.is_closed()
    }

    fn wait(&self, deadline: Option<std::time::Instant>) -> bool {
        let woken = || self.woken.load(Ordering::SeqCst);
        self.ring.wait_readable(&self.cursor, deadline, woken)
    }

    fn wake(&self) {
        if !self.woken.swap(true, Ordering::SeqCst) {
            self.ring.wake_readers();
        }
    }
}

#[test]
fn loom_ack_on_the_ring_a_nack_then_a_publish_wake_the_receiver() {
    // Unordered, room for two, on a ring: this thread holds event 1 and blocks in
    // `recv` while another nacks it: only the marker can wake it, and it gets event 1
    // as a retry. Then it blocks again while a publisher writes event 2: it gets that.
    loom::model(|| {
        let source = Arc::new(RingSource {
            ring: Ring::new(2),
            cursor: Cursor::new(0, 2, true),
            woken: loom::sync::atomic::AtomicBool::new(false),
        });
        assert!(source.ring.write((1, 1), 1).is_none(), "a fresh slot held nothing");
        let gate = Arc::new(Gate::<Delivery>::new(2, 2));
        let Lease::Item(first) = gate.take(&*source, Take::NoWait, epoch) else {
            panic!("event 1 is on the ring");
        };
        let nacker = {
            let (gate, source) = (gate.clone(), source.clone());
            thread::spawn(move || {
                gate.settle(&*source, |state| state.retries.push(epoch(), (first.0, first.1 + 1)));
            })
        };
        let Lease::Retry(again) = gate.take(&*source, Take::Until(None), epoch) else {
            panic!("recv returned without the retry");
        };
        assert_eq!(again, (1, 2));
        nacker.join().unwrap();
        let publisher = {
            let source = source.clone();
            thread::spawn(move || assert!(source.ring.write((2, 1), 1).is_none(), "a fresh slot held nothing"))
        };
        let Lease::Item(next) = gate.take(&*source, Take::Until(None), epoch) else {
            panic!("recv returned without event 2");
        };
        assert_eq!(next, (2, 1));
        publisher.join().unwrap();
    });
}
