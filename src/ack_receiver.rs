//! `AckReceiver<E>` and `AckHandle<E>`: an at-least-once pull subscription whose
//! deliveries are acked, on the gate of `ack`.

use std::fmt;
use std::ops::Deref;
use std::time::{Duration, Instant};

use crate::ack::{End, Gate, Lease, Source, Take};
use crate::dead_letter::{DeadLetter, DeadLetterStore};
use crate::delivery::{Retry, RetryOrder};
use crate::envelope::Envelope;
use crate::error::{AckError, BoxError, Failure, RecvError, RecvTimeoutError, TryRecvError};
use crate::inbox::Inbox;
use crate::mailbox::Mailbox;
use crate::policy::DropReason;
use crate::receiver::take_lag;
use crate::registry::TopicName;
use crate::retries::Retries;
use crate::stats::{Counters, SubscriberId, SubscriberStats};
use crate::subscriber::{KeyStamp, Screened, Subscriber};
use crate::subscription::{Control, Registration};
use crate::sync::{Arc, Weak};
use crate::timer::Wake;
use crate::trace::{AfterFailure, TraceOutcome};

/// An at-least-once pull subscription: every event it hands out is an [`AckHandle`]
/// that must be acked, or it comes back.
///
/// Made by [`SubscriberBuilder::ack_receiver`](crate::SubscriberBuilder::ack_receiver)
/// after [`at_least_once`](crate::SubscriberBuilder::at_least_once). The caller
/// processes each delivery and settles it:
/// - [`ack`](AckHandle::ack): done; counted as `delivered`, and its idempotency key
///   remembered by a [dedup window](crate::SubscriberBuilder::dedup).
/// - [`nack`](AckHandle::nack), [`nack_with`](AckHandle::nack_with), or dropping the
///   handle: failed. The event comes back after the [`Retry`]'s backoff with
///   [`attempt`](Envelope::attempt) one higher, and after the last attempt it becomes a
///   [`DeadLetter`], as for a push subscriber.
///
/// At most [`max_unacked`](crate::SubscriberBuilder::max_unacked) handles are out at
/// once (by default the capacity), like a broker's prefetch: `recv` waits for one to
/// be settled, from any thread (handles are `Send`), and `try_recv` returns
/// [`TryRecvError::Empty`]. Under [`Retry::ordered`] a nacked event holds the line:
/// nothing newer is handed out until it is acked or dead-lettered; under
/// [`Retry::unordered`] newer events overtake it, until `capacity` events wait for a
/// retry. So memory stays bounded: at most `capacity` events queued, `max_unacked` out,
/// and `max_unacked` (ordered) or `capacity + max_unacked` (unordered) waiting for a
/// retry.
///
/// # Settling after the end
///
/// Handles may outlive their receiver or the bus. An ack still counts the event
/// delivered. A nack cannot redeliver any more (unless the receiver was in a group
/// that still has members, see below): the event is counted as dropped
/// ([`DropReason::Unsubscribed`](crate::DropReason::Unsubscribed) once the receiver is
/// dropped, [`DropReason::Shutdown`](crate::DropReason::Shutdown) once the bus is shut
/// down) and the nack returns [`AckError`] saying which. At shutdown, retries still
/// waiting are dropped the same way and reported in
/// [`ShutdownReport::awaiting_retry`](crate::ShutdownReport::awaiting_retry); events
/// already queued can still be received, as with a [`Receiver`](crate::Receiver).
///
/// # In a consumer group
///
/// With [`group`](crate::SubscriberBuilder::group), ack receivers share one stream:
/// each takes the group's next event through its own limit and retries. One that is
/// dropped gives its waiting retries to the group, and its handles' nacks (and drops)
/// after that too: another member takes the event at once, as its next attempt. An
/// ack after the drop still counts. Once the last member is gone, a nack returns
/// [`AckError::Unsubscribed`].
///
/// ```
/// use crier::{Bus, Nack, Retry};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = Bus::new();
/// let picker = || bus.subscriber::<u32>().group("pickers").at_least_once(Retry::ordered()).ack_receiver();
/// let (first, second) = (picker()?, picker()?);
/// bus.publish(7_u32)?;
/// let job = first.recv()?;
/// drop(first); // leaves the group, holding the job
/// assert_eq!(job.nack()?, Nack::Retry { attempt: 2 });
/// let again = second.try_recv()?; // at once: the backoff was the leaver's
/// assert_eq!((**again, again.attempt()), (7, 2));
/// again.ack();
/// # Ok(()) }
/// ```
///
/// # Accounting
///
/// The subscriber's stats count handles out as `unacked`, so the identity of promise 1
/// reads `delivered + dead_lettered + deduplicated + dropped + queued + retrying +
/// unacked == accepted`. Like a receiver's queue, none of this is in flight for
/// [`Bus::wait_idle`](crate::Bus::wait_idle): the caller drives it, so `wait_idle`
/// waits for neither the handles nor the retries. Retries come due on the bus
/// [`Clock`](crate::Clock); with a [`ManualClock`](crate::testing::ManualClock) a test
/// advances it and the next `recv` hands the retry out.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use crier::{testing::ManualClock, Backoff, Bus, Nack, Retry};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let clock = ManualClock::new();
/// let bus = Bus::builder().clock(clock.clone()).build()?;
/// let jobs = bus
///     .subscriber::<String>()
///     .at_least_once(Retry::ordered().max_attempts(3).backoff(Backoff::fixed(Duration::from_secs(5))))
///     .max_unacked(8)
///     .ack_receiver()?;
/// bus.publish("resize photo.jpg".to_owned())?;
///
/// let job = jobs.recv()?;
/// assert_eq!(job.attempt(), 1);
/// assert_eq!(job.nack()?, Nack::Retry { attempt: 2 }); // say the disk was full
/// assert!(jobs.try_recv().is_err());                   // back in 5 s, not before
/// clock.advance(Duration::from_secs(5));
/// let job = jobs.recv()?;
/// assert_eq!((job.as_str(), job.attempt()), ("resize photo.jpg", 2));
/// job.ack();
/// let stats = jobs.stats();
/// assert_eq!((stats.delivered, stats.retried, stats.unacked), (1, 1, 0));
/// # Ok(()) }
/// ```
pub struct AckReceiver<E: Send + Sync + 'static> {
    shared: Arc<dyn AckPort<E>>,
}

/// One delivery of an [`AckReceiver`], to be settled once: [`ack`](Self::ack),
/// [`nack`](Self::nack) or [`nack_with`](Self::nack_with) (each takes the handle, so
/// settling twice does not compile). Dropping it unsettled is a nack.
///
/// It dereferences to the [`Envelope`], whose [`attempt`](Envelope::attempt) is 1 for
/// the first delivery and counts up with each redelivery. It is `Send`: it may be
/// settled on another thread than the one that received it.
///
/// Keep the handle while the work runs: `**rx.recv()?` reads the event and drops the
/// handle at once, which nacks it. Settling twice is a compile error:
///
/// ```compile_fail,E0382
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let bus = crier::Bus::new();
/// # let rx = bus.subscriber::<u32>().at_least_once(crier::Retry::ordered()).ack_receiver()?;
/// # bus.publish(1_u32)?;
/// let job = rx.recv()?;
/// job.ack();
/// job.ack(); // error[E0382]: use of moved value: `job`
/// # Ok(()) }
/// ```
#[must_use = "dropping an AckHandle nacks it: the event comes back after the backoff"]
pub struct AckHandle<E: Send + Sync + 'static> {
    env: Envelope<E>,
    /// The idempotency key to remember on ack, with a dedup window.
    key: Option<KeyStamp>,
    /// Set by the method that settles it, so that the drop does not settle it again.
    settled: bool,
    shared: Arc<dyn AckPort<E>>,
}

/// What a successful [`nack`](AckHandle::nack) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Nack {
    /// The event comes back after the backoff, as this attempt.
    Retry {
        /// The attempt number it will carry (1 is the first delivery).
        attempt: u32,
    },
    /// That was its last attempt: it is now a [`DeadLetter`].
    DeadLettered,
}

/// What an ack receiver and its handles share (and what the bus keeps as its
/// control): the subscriber, on a mailbox of its own or a seat in a group of ack
/// receivers (`I`), and its gate.
pub(crate) struct AckShared<E: Send + Sync + 'static, I = Mailbox<Envelope<E>>> {
    registration: Arc<Registration<E, I>>,
    gate: Gate<Envelope<E>>,
    retry: Retry,
    /// The timer's target for this receiver's retries.
    me: Weak<Self>,
}

/// An inbox an ack receiver's gate can take from: its own mailbox, a ring seat, or a
/// seat in a group of ack receivers.
pub(crate) trait AckInbox<E>: Inbox<E> + Source<Envelope<E>> {}

impl<E, I: Inbox<E> + Source<Envelope<E>>> AckInbox<E> for I {}

/// What [`AckReceiver`] and [`AckHandle`] call, whatever the inbox.
pub(crate) trait AckPort<E: Send + Sync + 'static>: Control {
    /// A delivery to hand out, with the idempotency key to remember on its ack.
    fn take(&self, how: Take) -> Result<(Envelope<E>, Option<KeyStamp>), Missed>;
    fn ack(&self, env: &Envelope<E>, key: Option<KeyStamp>);
    fn nack(&self, env: Envelope<E>, failure: Failure) -> Result<Nack, AckError>;
    fn unacked(&self) -> usize;
    /// Events queued for it (a group member: the group's queue).
    fn queued(&self) -> usize;
    fn topic(&self) -> &TopicName;
    fn dead_letters(&self) -> Option<&DeadLetterStore<E>>;
}

/// Why a take handed nothing out.
pub(crate) enum Missed {
    Lagged(u64),
    Empty,
    Closed,
}

impl<E, I> AckShared<E, I>
where
    E: Send + Sync + 'static,
    I: AckInbox<E>,
{
    pub(crate) fn new(
        registration: Arc<Registration<E, I>>,
        retry: Retry,
        max_unacked: usize,
        capacity: usize,
    ) -> Arc<Self> {
        let hold_at = match retry.order() {
            RetryOrder::Ordered => 1,
            RetryOrder::Unordered => capacity,
        };
        Arc::new_cyclic(|me| AckShared {
            registration,
            gate: Gate::new(max_unacked, hold_at),
            retry,
            me: me.clone(),
        })
    }

    fn sub(&self) -> &Subscriber<E, I> {
        &self.registration.sub
    }

    /// Unsubscribe or shutdown: the retries still waiting are given back to the group
    /// (a member that leaves) or dropped, counted.
    fn end(&self, end: End) {
        let sub = self.sub();
        let retries = self.gate.end(&sub.inbox, end);
        let reason = match end {
            End::Unsubscribed => DropReason::Unsubscribed,
            End::Shutdown => DropReason::Shutdown,
        };
        sub.give_up_retries(retries, reason);
    }
}

impl<E, I> AckPort<E> for AckShared<E, I>
where
    E: Send + Sync + 'static,
    I: AckInbox<E>,
{
    fn take(&self, how: Take) -> Result<(Envelope<E>, Option<KeyStamp>), Missed> {
        let sub = self.sub();
        if let Some(lagged) = take_lag(&sub.counters) {
            return Err(Missed::Lagged(lagged));
        }
        loop {
            let env = match self.gate.take(&sub.inbox, how, || sub.runtime.timer.now()) {
                Lease::Item(env) => env,
                Lease::Retry(env) => {
                    Counters::sub(&sub.counters.retrying, 1);
                    env
                }
                Lease::Empty => return Err(Missed::Empty),
                Lease::Closed => return Err(Missed::Closed),
            };
            match sub.screen_hand_out(&env) {
                Ok(Screened::Fresh(key)) => {
                    sub.trace(&env, || TraceOutcome::Received { attempt: env.attempt() });
                    return Ok((env, key));
                }
                Ok(Screened::Duplicate) => {
                    sub.trace(&env, || TraceOutcome::Deduplicated { attempt: env.attempt() });
                    Counters::add(&sub.counters.deduplicated, 1);
                    self.gate.release();
                }
                // A panicking key function fails the attempt, as for a push subscriber.
                Err(failure) => {
                    let _ = self.nack(env, failure);
                }
            }
        }
    }

    fn ack(&self, env: &Envelope<E>, key: Option<KeyStamp>) {
        let sub = self.sub();
        sub.trace(env, || TraceOutcome::Acked { attempt: env.attempt() });
        // Remembered before the settle, so a duplicate taken after it is skipped.
        if let Some(key) = key {
            sub.remember_acked(key);
        }
        // Counted before the release: the stats may count it twice for a moment (as
        // delivered and unacked), never not at all.
        Counters::add(&sub.counters.delivered, 1);
        self.gate.release();
    }

    fn nack(&self, env: Envelope<E>, failure: Failure) -> Result<Nack, AckError> {
        let sub = self.sub();
        // The error hook is user code: called before the gate's lock is taken.
        let error_text = sub.note_failure(&env, failure);
        let next = env.attempt().saturating_add(1);
        // The retry of a group member that left: its group takes it (see below).
        let mut orphaned = Retries::new();
        let settled = self.gate.settle(&sub.inbox, |state| {
            let retries = match state.ended {
                None => &mut state.retries,
                Some(End::Unsubscribed) if sub.inbox.shares() => &mut orphaned,
                Some(end) => {
                    let (reason, error) = match end {
                        End::Unsubscribed => (DropReason::Unsubscribed, AckError::Unsubscribed),
                        End::Shutdown => (DropReason::Shutdown, AckError::Closed),
                    };
                    sub.counters.drop_n(reason, 1);
                    sub.trace(&env, || TraceOutcome::Failed {
                        attempt: env.attempt(),
                        took: None,
                        error: crate::trace::clip(&error_text),
                        then: AfterFailure::Dropped(reason),
                    });
                    return Err((env, error));
                }
            };
            Ok(sub.schedule_retry(&self.retry, env, error_text, None, retries))
        });
        match settled {
            Ok(Ok(_)) if !orphaned.is_empty() => {
                // Given to the group at once, outside the gate's lock: the backoff was
                // this member's, which is gone. Dropped if the group is gone too.
                match sub.give_up_retries(orphaned.take_all(), DropReason::Unsubscribed) {
                    (0, _) => Ok(Nack::Retry { attempt: next }),
                    (_, DropReason::Shutdown) => Err(AckError::Closed),
                    _ => Err(AckError::Unsubscribed),
                }
            }
            Ok(Ok(due)) => {
                if let Some(due) = due {
                    let me: Weak<dyn Wake> = self.me.clone();
                    sub.runtime.timer.arm(due, me);
                }
                Ok(Nack::Retry { attempt: next })
            }
            Ok(Err(letter)) => {
                sub.send_dead_letters(vec![letter]);
                Ok(Nack::DeadLettered)
            }
            // The event drops here, outside the gate's lock.
            Err((_env, error)) => Err(error),
        }
    }

    fn unacked(&self) -> usize {
        self.gate.unacked()
    }

    fn queued(&self) -> usize {
        Source::len(&self.sub().inbox)
    }

    fn topic(&self) -> &TopicName {
        &self.sub().topic
    }

    fn dead_letters(&self) -> Option<&DeadLetterStore<E>> {
        self.sub().dead_letter_store()
    }
}

impl<E, I> Control for AckShared<E, I>
where
    E: Send + Sync + 'static,
    I: AckInbox<E>,
{
    fn id(&self) -> SubscriberId {
        self.registration.id()
    }

    fn stats(&self) -> SubscriberStats {
        let mut stats = self.registration.stats();
        stats.unacked = self.gate.unacked() as u64;
        stats
    }

    fn unsubscribe(&self) -> SubscriberStats {
        self.end(End::Unsubscribed);
        self.registration.unsubscribe();
        self.stats()
    }

    fn wake_publishers(&self) {
        self.registration.wake_publishers();
    }

    fn retire(&self, grace: Duration) -> bool {
        self.end(End::Shutdown);
        self.registration.retire(grace)
    }

    fn close_input(&self) {
        self.registration.close_input();
    }

    fn abandoned_retries(&self) -> u64 {
        self.registration.abandoned_retries()
    }

    fn dead_letter_store(&self) -> Option<&dyn std::any::Any> {
        self.registration.dead_letter_store()
    }
}

/// The timer's wake: a retry came due.
impl<E, I> Wake for AckShared<E, I>
where
    E: Send + Sync + 'static,
    I: AckInbox<E>,
{
    fn wake(self: std::sync::Arc<Self>) {
        self.gate.wake(&self.registration.sub.inbox);
    }
}

impl<E: Send + Sync + 'static> AckReceiver<E> {
    pub(crate) fn new(shared: Arc<dyn AckPort<E>>) -> Self {
        AckReceiver { shared }
    }

    fn take(&self, how: Take) -> Result<AckHandle<E>, Missed> {
        let (env, key) = self.shared.take(how)?;
        Ok(AckHandle {
            env,
            key,
            settled: false,
            shared: self.shared.clone(),
        })
    }

    /// Blocks until a delivery can be handed out: a retry that is due, or the next
    /// event, with fewer than `max_unacked` handles out.
    ///
    /// # Errors
    ///
    /// [`RecvError::Lagged`] if events were evicted since the last call
    /// ([`Overflow::DropOldest`](crate::Overflow::DropOldest));
    /// [`RecvError::Closed`] once the bus is shut down and nothing is left.
    pub fn recv(&self) -> Result<AckHandle<E>, RecvError> {
        match self.take(Take::Until(None)) {
            Ok(handle) => Ok(handle),
            Err(Missed::Lagged(n)) => Err(RecvError::Lagged(n)),
            Err(Missed::Empty | Missed::Closed) => Err(RecvError::Closed),
        }
    }

    /// A delivery if one can be handed out now.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] if nothing is queued or due, or if `max_unacked`
    /// handles are out ([`unacked`](Self::unacked) tells); otherwise as
    /// [`recv`](Self::recv).
    pub fn try_recv(&self) -> Result<AckHandle<E>, TryRecvError> {
        match self.take(Take::NoWait) {
            Ok(handle) => Ok(handle),
            Err(Missed::Lagged(n)) => Err(TryRecvError::Lagged(n)),
            Err(Missed::Empty) => Err(TryRecvError::Empty),
            Err(Missed::Closed) => Err(TryRecvError::Closed),
        }
    }

    /// Blocks until a delivery can be handed out or `timeout` passes.
    ///
    /// # Errors
    ///
    /// [`RecvTimeoutError::Timeout`] if none could be in time, otherwise as
    /// [`recv`](Self::recv).
    pub fn recv_timeout(&self, timeout: Duration) -> Result<AckHandle<E>, RecvTimeoutError> {
        match self.take(Take::Until(Instant::now().checked_add(timeout))) {
            Ok(handle) => Ok(handle),
            Err(Missed::Lagged(n)) => Err(RecvTimeoutError::Lagged(n)),
            Err(Missed::Empty) => Err(RecvTimeoutError::Timeout),
            Err(Missed::Closed) => Err(RecvTimeoutError::Closed),
        }
    }

    /// A blocking iterator that ends when the bus shuts down and nothing is left. It
    /// skips lag notices (the counts stay in the stats).
    pub fn iter(&self) -> AckIter<'_, E> {
        AckIter { receiver: self }
    }

    /// A non-blocking iterator over the deliveries that can be handed out now.
    pub fn try_iter(&self) -> AckTryIter<'_, E> {
        AckTryIter { receiver: self }
    }

    /// Handles out now: received, and not yet acked, nacked or dropped.
    pub fn unacked(&self) -> usize {
        self.shared.unacked()
    }

    /// Events queued now (retries waiting are in the stats' `retrying`).
    pub fn len(&self) -> usize {
        self.shared.queued()
    }

    /// `true` when no event is queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The receiver's subscriber id.
    pub fn id(&self) -> SubscriberId {
        self.shared.id()
    }

    /// A snapshot of the receiver's counters, `unacked` included.
    pub fn stats(&self) -> SubscriberStats {
        self.shared.stats()
    }

    /// Unsubscribes, as dropping the receiver does, and returns its counters at that
    /// moment: what was still queued and the retries still waiting are counted as
    /// dropped ([`DropReason::Unsubscribed`](crate::DropReason::Unsubscribed)), or in a
    /// consumer group given to the group (`handed_over`). Handles still out are
    /// `unacked` there; they can still be settled (see "Settling after the end"), and
    /// what they do then is not in these counters.
    ///
    /// ```
    /// use crier::{Bus, Retry};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::new();
    /// let jobs = bus.subscriber::<u32>().at_least_once(Retry::ordered()).ack_receiver()?;
    /// for job in 1..=3_u32 {
    ///     bus.publish(job)?;
    /// }
    /// jobs.recv()?.ack();
    /// let held = jobs.recv()?;
    /// let last = jobs.unsubscribe();
    /// assert_eq!((last.delivered, last.unacked, last.dropped.unsubscribed), (1, 1, 1));
    /// assert!(last.is_balanced());
    /// held.ack(); // still counts, after the snapshot
    /// # Ok(()) }
    /// ```
    pub fn unsubscribe(self) -> SubscriberStats {
        // The drop that follows finds it unsubscribed and does nothing more.
        self.shared.unsubscribe()
    }

    /// A copy of the dead letters this receiver keeps because they reached nobody,
    /// oldest first (see [`Subscription::dead_letters`](crate::Subscription::dead_letters)).
    pub fn dead_letters(&self) -> Vec<DeadLetter<E>> {
        self.shared
            .dead_letters()
            .map(|store| store.snapshot())
            .unwrap_or_default()
    }

    /// Like [`dead_letters`](Self::dead_letters), but empties the store.
    pub fn take_dead_letters(&self) -> Vec<DeadLetter<E>> {
        self.shared.dead_letters().map(|store| store.take()).unwrap_or_default()
    }
}

impl<E: Send + Sync + 'static> Drop for AckReceiver<E> {
    fn drop(&mut self) {
        self.shared.unsubscribe();
    }
}

impl<E: Send + Sync + 'static> fmt::Debug for AckReceiver<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AckReceiver")
            .field("id", &self.id())
            .field("topic", self.shared.topic())
            .field("queued", &self.len())
            .field("unacked", &self.unacked())
            .finish()
    }
}

impl<E: Send + Sync + 'static> AckHandle<E> {
    /// The event was processed: counts it `delivered` (and remembers its idempotency
    /// key, with a dedup window). After the receiver was dropped or the bus shut down,
    /// it still counts.
    pub fn ack(mut self) {
        self.settled = true;
        self.shared.ack(&self.env, self.key);
    }

    /// The event failed: it comes back after the backoff, or becomes a dead letter if
    /// this was its last attempt. The error hook and the dead letter say "nacked".
    ///
    /// # Errors
    ///
    /// [`AckError::Unsubscribed`] or [`AckError::Closed`] if it cannot come back any
    /// more; it is then counted as dropped.
    pub fn nack(self) -> Result<Nack, AckError> {
        self.nack_with("nacked")
    }

    /// Like [`nack`](Self::nack), with the error the error hook and a dead letter
    /// report.
    ///
    /// # Errors
    ///
    /// As [`nack`](Self::nack).
    pub fn nack_with(mut self, error: impl Into<BoxError>) -> Result<Nack, AckError> {
        self.settled = true;
        // A retry or a dead letter takes its own reference to the event.
        self.shared.nack(self.env.clone(), Failure::Error(error.into()))
    }

    /// The envelope.
    pub fn envelope(&self) -> &Envelope<E> {
        self
    }
}

impl<E: Send + Sync + 'static> Deref for AckHandle<E> {
    type Target = Envelope<E>;

    fn deref(&self) -> &Envelope<E> {
        &self.env
    }
}

impl<E: Send + Sync + 'static> Drop for AckHandle<E> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        let failure = if std::thread::panicking() {
            Failure::Panic("dropped without an ack by a panicking thread".to_owned())
        } else {
            Failure::Error("dropped without an ack".into())
        };
        // After the end the event is counted as dropped; nobody is left to tell.
        let _ = self.shared.nack(self.env.clone(), failure);
    }
}

impl<E: Send + Sync + fmt::Debug + 'static> fmt::Debug for AckHandle<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AckHandle").field("envelope", &**self).finish()
    }
}

/// See [`AckReceiver::iter`].
#[derive(Debug)]
pub struct AckIter<'a, E: Send + Sync + 'static> {
    receiver: &'a AckReceiver<E>,
}

impl<E: Send + Sync + 'static> Iterator for AckIter<'_, E> {
    type Item = AckHandle<E>;

    fn next(&mut self) -> Option<AckHandle<E>> {
        loop {
            match self.receiver.recv() {
                Ok(handle) => return Some(handle),
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    }
}

/// See [`AckReceiver::try_iter`].
#[derive(Debug)]
pub struct AckTryIter<'a, E: Send + Sync + 'static> {
    receiver: &'a AckReceiver<E>,
}

impl<E: Send + Sync + 'static> Iterator for AckTryIter<'_, E> {
    type Item = AckHandle<E>;

    fn next(&mut self) -> Option<AckHandle<E>> {
        loop {
            match self.receiver.try_recv() {
                Ok(handle) => return Some(handle),
                Err(TryRecvError::Lagged(_)) => continue,
                Err(TryRecvError::Empty | TryRecvError::Closed) => return None,
            }
        }
    }
}
