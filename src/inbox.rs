//! `Inbox`: where a subscriber's events wait for whoever consumes them. Either a
//! mailbox of its own, which every publish pushes into, or a seat on its topic's
//! broadcast ring, which a publish writes once for every seat (see `broadcast`).
//!
//! A subscriber is generic over its inbox: the runner, unsubscribe and the stats are
//! the same code for both, and only what differs lives here.

use crate::broadcast::Seat;
use crate::envelope::Envelope;
use crate::mailbox::Mailbox;
use crate::policy::DropReason;
use crate::receiver::Take;
use crate::ring::Read;
use crate::stats::SubscriberStats;
use crate::subscriber::Subscriber;
use crate::topic::TopicCore;

/// What a runner found in its inbox.
pub(crate) enum Next<E> {
    Event(Envelope<E>),
    /// This many of the oldest events were passed over (`DropOldest` on a ring seat).
    Lagged(u64),
    Empty,
}

pub(crate) trait Inbox<E>: Send + Sync + Sized + 'static {
    /// The oldest event not yet taken.
    fn next(&self) -> Next<E>;

    fn is_empty(&self) -> bool;

    /// Deliveries not yet taken: queued events, and for a ring seat the positions it
    /// lagged past (each counts in `in_flight` until a runner settles it).
    fn unread(&self) -> u64;

    /// A runner took a handed-off event (see `subscriber`): frees the place it held.
    fn release_handed(&self);

    /// Drops everything not yet taken; returns `(queued, lagged past)`.
    fn discard(&self, seen: Option<&mut dyn FnMut(Envelope<E>)>) -> (u64, u64);

    /// A taken event is done with for good: handled, skipped as a duplicate, failed
    /// with no retry, or dead-lettered (a group with key affinity frees its key, see
    /// `affinity`).
    fn finished(&self, _env: &Envelope<E>) {}

    /// A taken event waits for its retry, out of `in_flight` (a clock moved by hand,
    /// see `retries`): what a group with key affinity holds back behind it leaves
    /// `in_flight` too (see `affinity`).
    fn parked(&self, _env: &Envelope<E>) {}

    /// A `parked` event's retry is taken: what it held back is in flight again.
    fn unparked(&self, _env: &Envelope<E>) {}

    /// Whether retries hold back only the failed event's key (a group with key
    /// affinity), not everything after it, whatever the retry order.
    fn orders_by_key(&self) -> bool {
        false
    }

    /// Whether [`hand_over`](Self::hand_over) may give events to others (a group's
    /// member): an ack receiver's handle nacked after it left is then given too.
    fn shares(&self) -> bool {
        false
    }

    /// Leaving for `reason`: gives events that waited for a retry to whoever else can
    /// take them (a group member's group, see `group`); returns those nobody can, to
    /// be dropped, and the reason they drop for (`reason`, unless whoever would have
    /// taken them is closing: then `Shutdown`).
    fn hand_over(&self, waiting: Vec<Envelope<E>>, reason: DropReason) -> (Vec<Envelope<E>>, DropReason) {
        (waiting, reason)
    }

    /// Unsubscribe: takes `sub` off `topic`. Once this returns, no publish adds to
    /// the inbox any more (a publish that had already chosen it has committed).
    fn leave(sub: &Subscriber<E, Self>, topic: &TopicCore<E>);

    /// Wakes publishers waiting for room here, so they look again.
    fn wake_publishers(&self);

    /// No more events come: wakes a receiver blocked on this inbox.
    fn close(&self);

    /// Fills the stats this inbox knows: capacity, queued, high water, and for a
    /// ring seat the counts that follow from its positions.
    fn fill(&self, stats: &mut SubscriberStats);
}

impl<E: Send + Sync + 'static> Inbox<E> for Mailbox<Envelope<E>> {
    fn next(&self) -> Next<E> {
        self.pop().map_or(Next::Empty, Next::Event)
    }

    fn is_empty(&self) -> bool {
        Mailbox::is_empty(self)
    }

    fn unread(&self) -> u64 {
        self.len() as u64
    }

    fn release_handed(&self) {
        self.slots().release(1);
    }

    fn discard(&self, mut seen: Option<&mut dyn FnMut(Envelope<E>)>) -> (u64, u64) {
        let mut n = 0;
        while let Some(env) = self.pop() {
            if let Some(seen) = seen.as_mut() {
                seen(env);
            }
            n += 1;
        }
        (n, 0)
    }

    fn leave(sub: &Subscriber<E, Self>, topic: &TopicCore<E>) {
        // Steps 2 and 3 of `subscriber`'s unsubscribe.
        topic.remove(sub);
        topic.commit_barrier();
    }

    fn wake_publishers(&self) {
        self.slots().wake_all();
    }

    fn close(&self) {
        Mailbox::close(self);
    }

    fn fill(&self, stats: &mut SubscriberStats) {
        stats.capacity = self.capacity();
        stats.queued = self.len() as u64;
        stats.high_water = self.high_water() as u64;
    }
}

impl<E: Send + Sync + 'static> Inbox<E> for Seat<E> {
    fn next(&self) -> Next<E> {
        match self.read(Take::NoWait) {
            Read::Item { value, .. } => Next::Event(value),
            Read::Lagged(n) => Next::Lagged(n),
            Read::Empty | Read::Closed => Next::Empty,
        }
    }

    fn is_empty(&self) -> bool {
        Seat::unread(self) == (0, 0)
    }

    fn unread(&self) -> u64 {
        let (queued, lagged) = Seat::unread(self);
        queued + lagged
    }

    fn release_handed(&self) {
        // Never called: only inline subscribers are handed events, and they keep a
        // mailbox.
    }

    fn discard(&self, seen: Option<&mut dyn FnMut(Envelope<E>)>) -> (u64, u64) {
        self.skip_unread(seen)
    }

    fn leave(sub: &Subscriber<E, Self>, topic: &TopicCore<E>) {
        topic.leave_ring(&sub.inbox.reader);
    }

    fn wake_publishers(&self) {
        self.ring.wake_writers();
    }

    fn close(&self) {
        self.ring.close(&self.reader.cursor);
    }

    fn fill(&self, stats: &mut SubscriberStats) {
        Seat::fill(self, stats);
    }
}
