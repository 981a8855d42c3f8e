//! `SubscriberBuilder<E>`: the options of a subscriber or receiver.

use std::fmt;
use std::hash::Hash;

use crate::ack_receiver::{AckReceiver, AckShared};
use crate::broadcast::{self, RingReceiver, Seat};
use crate::dead_letter::DeadLetterStore;
use crate::dedup::DedupWindow;
use crate::delivery::{Delivery, Retry};
use crate::envelope::Envelope;
use crate::error::{BoxError, HandlerError, SubscribeError};
use crate::group::{GroupSeat, Sharing};
use crate::history::Offset;
use crate::lanes::{Concurrent, Lanes};
use crate::mailbox::Mailbox;
use crate::pattern::Pattern;
use crate::policy::{Dispatch, Overflow};
use crate::reach::On;
use crate::receiver::Receiver;
use crate::registry::{check_syntax, Syntax, TopicName};
use crate::stats::{Consumer, SubscriberId};
use crate::subscriber::{ErrorHook, Filter, Handler, KeyOf, Parts, Subscriber};
use crate::subscription::{Control, Registration, Subscription};
use crate::sync::Arc;
use crate::topic::Topic;

/// What a handler may return: `()`, or `Result<(), E>` for any error that converts into
/// [`BoxError`]. An `Err` counts as a failed delivery, like a panic.
pub trait HandlerResult {
    /// Converts into the bus's view of the outcome.
    fn into_result(self) -> Result<(), BoxError>;
}

impl HandlerResult for () {
    fn into_result(self) -> Result<(), BoxError> {
        Ok(())
    }
}

impl<Er: Into<BoxError>> HandlerResult for Result<(), Er> {
    fn into_result(self) -> Result<(), BoxError> {
        self.map_err(Into::into)
    }
}

/// The options of one subscriber or receiver. Made by
/// [`Bus::subscriber`](crate::Bus::subscriber) and [`Topic::subscriber`]; every option
/// not set takes the bus's default (see [`BusBuilder`](crate::BusBuilder)).
///
/// # Example
///
/// ```
/// use crier::{Bus, Dispatch, Envelope, Overflow};
///
/// struct Click { x: i32 }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = Bus::new();
/// let sub = bus
///     .subscriber::<Click>()
///     .name("right-half")
///     .filter(|click| click.x > 0)
///     .capacity(64)
///     .overflow(Overflow::DropOldest)
///     .dispatch(Dispatch::Thread)
///     .on_error(|e| eprintln!("{e}"))
///     .subscribe(|env: &Envelope<Click>| -> Result<(), std::io::Error> {
///         println!("click at {}", env.x);
///         Ok(())
///     })?;
/// bus.publish(Click { x: -1 })?; // filtered out
/// bus.publish(Click { x: 5 })?;
/// bus.wait_idle(std::time::Duration::from_secs(5))?;
/// assert_eq!(sub.stats().delivered, 1);
/// # Ok(()) }
/// ```
#[must_use = "a subscriber exists only after `subscribe` or `receiver`"]
pub struct SubscriberBuilder<E> {
    topic: Topic<E>,
    name: Option<String>,
    filter: Option<Filter<E>>,
    /// `None`: the bus default; `Some(None)`: unbounded.
    capacity: Option<Option<usize>>,
    overflow: Option<Overflow>,
    dispatch: Option<Dispatch>,
    error_hook: Option<ErrorHook>,
    delivery: Delivery,
    dedup: Option<DedupWindow>,
    dedup_key: Option<KeyOf<E>>,
    max_unacked: Option<usize>,
    start_at: Offset,
    pattern: Option<String>,
    group: Option<String>,
    key_affinity: bool,
    priority: i32,
}

impl<E: Send + Sync + 'static> SubscriberBuilder<E> {
    pub(crate) fn new(topic: Topic<E>) -> Self {
        SubscriberBuilder {
            topic,
            name: None,
            filter: None,
            capacity: None,
            overflow: None,
            dispatch: None,
            error_hook: None,
            delivery: Delivery::AtMostOnce,
            dedup: None,
            dedup_key: None,
            max_unacked: None,
            start_at: Offset::Latest,
            pattern: None,
            group: None,
            key_affinity: false,
            priority: 0,
        }
    }

    /// A name for stats and error reports (default `subscriber-{id}`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Only events for which `filter` is true reach this subscriber. The filter runs on
    /// the publishing thread, so keep it cheap; an event it rejects is not counted for
    /// this subscriber at all. A filter that panics counts as a failed delivery.
    pub fn filter(mut self, filter: impl Fn(&E) -> bool + Send + Sync + 'static) -> Self {
        self.filter = Some(Box::new(filter));
        self
    }

    /// A bounded mailbox of `capacity` events (0 is refused by `subscribe`).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = Some(Some(capacity));
        self
    }

    /// An unbounded mailbox: never full, so the overflow policy never applies, and
    /// memory grows with the backlog. Watch `queued` and `high_water` in the stats.
    pub fn unbounded(mut self) -> Self {
        self.capacity = Some(None);
        self
    }

    /// What a full mailbox does.
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = Some(overflow);
        self
    }

    /// Where the handler runs (ignored by [`receiver`](Self::receiver)).
    pub fn dispatch(mut self, dispatch: Dispatch) -> Self {
        self.dispatch = Some(dispatch);
        self
    }

    /// Called after every failed invocation (an `Err` or a panic), on the thread that
    /// ran the handler. Without a hook, failures are counted and the last one is kept in
    /// the stats; the bus never prints anything itself. A panicking hook is contained.
    pub fn on_error(mut self, hook: impl Fn(&HandlerError) + Send + Sync + 'static) -> Self {
        self.error_hook = Some(std::sync::Arc::new(hook));
        self
    }

    /// At-least-once delivery: a failed event is retried as `retry` says, then
    /// dead-lettered. See [`Delivery`] and the crate docs' "Delivery guarantees".
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use crier::{testing::ManualClock, Backoff, Bus, Envelope, Retry};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let clock = ManualClock::new();
    /// let bus = Bus::builder().inline().clock(clock.clone()).build()?;
    /// let sub = bus
    ///     .subscriber::<u32>()
    ///     .at_least_once(Retry::ordered().backoff(Backoff::fixed(Duration::from_secs(1))))
    ///     .subscribe(|env: &Envelope<u32>| -> Result<(), String> {
    ///         if env.attempt() < 3 { Err(format!("attempt {} failed", env.attempt())) } else { Ok(()) }
    ///     })?;
    /// bus.publish(7_u32)?;                   // attempt 1 fails
    /// assert_eq!(sub.stats().retrying, 1);
    /// clock.advance(Duration::from_secs(1)); // attempt 2 runs here, and fails
    /// clock.advance(Duration::from_secs(1)); // attempt 3 succeeds
    /// let stats = sub.stats();
    /// assert_eq!((stats.delivered, stats.retried, stats.retrying), (1, 2, 0));
    /// # Ok(()) }
    /// ```
    pub fn at_least_once(mut self, retry: Retry) -> Self {
        self.delivery = Delivery::AtLeastOnce(retry);
        self
    }

    /// Skips an event whose idempotency key already succeeded for this subscriber within
    /// `window`, counting it as `deduplicated` (see [`DedupWindow`] for the bounds).
    /// The key is the envelope's [`idempotency_key`](Envelope::idempotency_key), or
    /// what [`dedup_by`](Self::dedup_by) derives; an event without one is never skipped.
    ///
    /// # Exactly-once effect, and its bounds
    ///
    /// With at-least-once delivery and a window, a handler's *effect* happens once per
    /// key: a duplicate publish, or a redelivery after the key succeeded, is skipped. It
    /// holds only (1) within the window's age and count (an older or evicted key runs
    /// again), (2) within this subscriber and this process (nothing is persisted), and
    /// (3) for effects that complete when the handler returns `Ok`: a handler that
    /// fails *after* its side effect is retried, and the effect repeats, as with every
    /// broker. Make such effects idempotent themselves, or key them.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use crier::{Bus, DedupWindow, Envelope};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::builder().inline().build()?;
    /// let sub = bus
    ///     .subscriber::<u32>()
    ///     .dedup(DedupWindow::new(10_000, Duration::from_secs(300)))
    ///     .subscribe(|_: &Envelope<u32>| {})?;
    /// bus.message(10_u32).idempotency_key("charge-42").publish()?;
    /// bus.message(10_u32).idempotency_key("charge-42").publish()?; // the same charge
    /// let stats = sub.stats();
    /// assert_eq!((stats.delivered, stats.deduplicated), (1, 1));
    /// # Ok(()) }
    /// ```
    pub fn dedup(mut self, window: DedupWindow) -> Self {
        self.dedup = Some(window);
        self
    }

    /// Derives each event's idempotency key instead of reading the envelope's (needs
    /// [`dedup`](Self::dedup) to take effect). `None`: the event is never skipped. A
    /// key function that panics fails the attempt, like the handler.
    pub fn dedup_by<K: Hash>(mut self, key: impl Fn(&Envelope<E>) -> Option<K> + Send + Sync + 'static) -> Self {
        self.dedup_key = Some(Box::new(move |env, hasher| key(env).map(|k| hasher.hash(&k))));
        self
    }

    /// How many deliveries an [`AckReceiver`] hands out before one is settled (default:
    /// its capacity; 0 is refused by `ack_receiver`). Like RabbitMQ's prefetch or
    /// NATS's `MaxAckPending`, it bounds the work in progress. Only for
    /// [`ack_receiver`](Self::ack_receiver): `subscribe` and `receiver` refuse it.
    pub fn max_unacked(mut self, max_unacked: usize) -> Self {
        self.max_unacked = Some(max_unacked);
        self
    }

    /// Sets the delivery policy ([`Delivery::AtMostOnce`] by default).
    pub fn delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = delivery;
        self
    }

    /// Starts at `from` in the topic's history (see
    /// [`Topic::set_retention`](crate::Topic::set_retention)) instead of at the next
    /// event ([`Offset::Latest`], the default): the subscriber gets the events kept from
    /// `from` on, then the live ones, with no gap and no event twice, however many
    /// publishers are running (promise 9). Works for push subscribers, receivers and ack
    /// receivers alike.
    ///
    /// Replayed events go through the subscriber like live ones: they count as
    /// accepted, its delivery policy, dedup window and error hook apply, and a push
    /// subscriber's count in flight includes them (so [`Bus::wait_idle`](crate::Bus::wait_idle)
    /// waits for the replay). They are queued at once, as if published again into this
    /// subscriber alone, except that a replay never waits and is never refused: under
    /// [`Overflow::DropOldest`] and [`Overflow::DropNewest`] the mailbox keeps at most
    /// its capacity, dropping (and counting) as those policies do; under
    /// [`Overflow::Block`], [`Overflow::BlockTimeout`] and [`Overflow::Reject`] the
    /// replay is queued whole, beyond the capacity (one reference per event: the
    /// history holds the events already), and until the subscriber has worked its
    /// mailbox back under its capacity, live publishes meet a full mailbox and the
    /// policy decides, as for any slow subscriber. Give a subscriber that replays a long
    /// history a capacity at least its size to leave publishers unaffected. An inline
    /// subscriber handles its replay on the subscribing thread, before `subscribe`
    /// returns.
    ///
    /// Its [`filter`](Self::filter) screens replayed events too, on the subscribing
    /// thread, with no lock held; live events published meanwhile are queued behind
    /// the replay. A subscriber that starts in the history keeps a mailbox of its own
    /// (never the topic's broadcast ring).
    ///
    /// # Errors
    ///
    /// At `subscribe`, `receiver` or `ack_receiver`: [`SubscribeError::Replay`] if the
    /// history cannot be read from `from` ([`ReplayError`](crate::ReplayError):
    /// evicted, or not yet published).
    ///
    /// # Example
    ///
    /// ```
    /// use crier::{Bus, Offset, Retention};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::new();
    /// let orders = bus.topic::<u32>();
    /// orders.set_retention(Retention::last(1_000))?;
    /// orders.publish(1)?;
    /// orders.publish(2)?;
    ///
    /// // A late subscriber sees what already happened, then what happens next.
    /// let rx = orders.subscriber().start_at(Offset::Earliest).receiver()?;
    /// orders.publish(3)?;
    /// let seen: Vec<u32> = rx.try_iter().map(|env| *env).collect();
    /// assert_eq!(seen, [1, 2, 3]);
    /// # Ok(()) }
    /// ```
    pub fn start_at(mut self, from: Offset) -> Self {
        self.start_at = from;
        self
    }

    /// Subscribes to every named topic of event type `E` whose name matches `pattern`,
    /// instead of the builder's topic, including topics made after this subscriber.
    ///
    /// Names are dot-separated tokens. In a pattern, `*` matches exactly one token and
    /// `>`, only as the last token, matches one or more: `orders.*.created` matches
    /// `orders.eu.created`; `orders.>` matches `orders.eu` and `orders.eu.created`, not
    /// `orders` (the NATS rules). A topic of another event type is never matched, and
    /// neither is a default topic (named after its type, see [`Bus::topic`](crate::Bus::topic)).
    ///
    /// It is one subscriber whatever the number of topics: one mailbox, one handler,
    /// one set of counters (its stats show the pattern as the topic), and events from
    /// one publishing thread arrive in the order they were published, across topics.
    /// [`Envelope::topic`] says which topic an event came from. Matching happens when a
    /// topic is made or the subscriber subscribes, never per publish: publishing costs
    /// the same with 1 or 10,000 patterns registered (benchmark B7 in `BENCHMARKS.md`).
    /// A pattern subscriber keeps a mailbox of its own (never a topic's broadcast
    /// ring), and cannot [`start_at`](Self::start_at) an offset (offsets are per topic).
    ///
    /// # Errors
    ///
    /// At `subscribe`, `receiver` or `ack_receiver`: [`SubscribeError::InvalidPattern`]
    /// for an empty token, `>` before the end, a wildcard inside a token (`eu*`),
    /// whitespace or a control character, or more than 255 bytes;
    /// [`SubscribeError::InvalidPolicy`] with `start_at`.
    ///
    /// # Example
    ///
    /// ```
    /// use crier::{Bus, Envelope};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::builder().inline().build()?;
    /// let created = bus.subscriber::<u32>().pattern("orders.*.created").receiver()?;
    /// bus.topic_named::<u32>("orders.eu.created")?.publish(1)?;
    /// bus.topic_named::<u32>("orders.us.created")?.publish(2)?; // made after the subscriber
    /// bus.topic_named::<u32>("orders.eu.paid")?.publish(3)?;    // does not match
    /// let seen: Vec<(String, u32)> = created.try_iter().map(|env| (env.topic().to_owned(), *env)).collect();
    /// assert_eq!(seen, [("orders.eu.created".to_owned(), 1), ("orders.us.created".to_owned(), 2)]);
    /// # Ok(()) }
    /// ```
    pub fn pattern(mut self, pattern: impl Into<String>) -> Self {
        self.pattern = Some(pattern.into());
        self
    }

    /// Joins the consumer group `name` on this topic: the group's members share one
    /// stream, and each event goes to exactly one member (competing consumers, like a
    /// RabbitMQ queue with several consumers or a NATS queue group). The first member
    /// makes the group; the last one to leave ends it.
    ///
    /// - **One queue.** The group has one queue on the topic, with this member's
    ///   [`capacity`](Self::capacity) and [`overflow`](Self::overflow) (every member
    ///   must give the same). A publish queues each event there once; a member takes
    ///   the next one when it is free, so a slow or stuck member never holds back work
    ///   the others could do. The queue's counters are in
    ///   [`BusStats::groups`](crate::BusStats::groups); a member's `accepted` counts
    ///   what it took.
    /// - **Joining and leaving.** A member that joins takes its share from then on. A
    ///   member that leaves loses nothing: queued events are the group's and the
    ///   others take them; its events waiting for a retry (at-least-once) go back to
    ///   the queue with their attempt count, and are counted in its `handed_over`.
    ///   The last member to leave ends the group: it takes what is still queued and
    ///   drops it, counted in its own stats as
    ///   [`DropReason::Unsubscribed`](crate::DropReason::Unsubscribed), as any
    ///   subscriber that leaves does.
    /// - **Failures** follow each member's own [`Delivery`]: at-most-once, a failed
    ///   event is counted as failed by the member that took it; at-least-once, that
    ///   member retries it (an ordered retry holds only that member, the others go on)
    ///   and dead-letters it when its attempts run out. A member that fails every
    ///   event takes its turn like the others and never starves them.
    /// - **Order.** Members run in parallel, so events are handled in no particular
    ///   order across the group; each member sees the events it takes in `seq` order.
    ///
    /// Members are push subscribers on the pool or a thread of their own, without a
    /// filter, on one topic, from the latest offset. For per-key order across the
    /// group, see [`key_affinity`](Self::key_affinity).
    ///
    /// **Receivers** form groups too ([`receiver`](Self::receiver) after `group`):
    /// each `recv` takes the group's next event, so each event goes to one receiver;
    /// a receiver that is dropped leaves the rest to the others. As for any receiver,
    /// what the group queues is not in flight for
    /// [`Bus::wait_idle`](crate::Bus::wait_idle), and at shutdown it stays for the
    /// receivers, every one of which learns the close (even when several block in
    /// `recv` at once). Under `DropOldest` the group counts its evictions
    /// ([`GroupStats::dropped`](crate::GroupStats)); its receivers see no `Lagged`.
    ///
    /// **Ack receivers** too ([`ack_receiver`](Self::ack_receiver) after `group`),
    /// each with its own [`max_unacked`](Self::max_unacked) handles out and its own
    /// retries. An [`AckReceiver`] that is dropped gives the group its retries that
    /// were waiting, and each handle it gave out is still good: an ack counts the event
    /// delivered, a nack (or dropping the handle) gives the event to the group, where
    /// another member takes it at once as its next attempt (the backoff was the
    /// leaver's). Once the last member is gone, such a nack returns
    /// [`AckError::Unsubscribed`](crate::AckError) and the event is dropped, counted.
    ///
    /// A group is all push members, all receivers or all ack receivers. A
    /// [`dedup`](Self::dedup) window is each member's own: a duplicate that another
    /// member takes is not skipped (dedup on the topic, at publish, covers the group).
    ///
    /// # Errors
    ///
    /// From [`subscribe`](Self::subscribe), [`receiver`](Self::receiver) and
    /// [`ack_receiver`](Self::ack_receiver): [`SubscribeError::InvalidGroup`] for a
    /// name that is not a valid topic name, or for a member with inline dispatch, a
    /// filter, a pattern, a `start_at`, a capacity or overflow other than the group's,
    /// or of another kind (push subscriber, receiver, ack receiver) than the group's
    /// members.
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use crier::{Bus, Envelope};
    ///
    /// struct Resize { file: u32 }
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::new();
    /// let done = Arc::new(AtomicU32::new(0));
    /// let workers: Vec<_> = (0..3)
    ///     .map(|w| {
    ///         let done = done.clone();
    ///         bus.subscriber::<Resize>()
    ///             .name(format!("worker-{w}"))
    ///             .group("resizers")
    ///             .subscribe(move |_: &Envelope<Resize>| {
    ///                 done.fetch_add(1, Ordering::Relaxed);
    ///             })
    ///     })
    ///     .collect::<Result<_, _>>()?;
    /// for file in 0..100 {
    ///     bus.publish(Resize { file })?;
    /// }
    /// bus.wait_idle(Duration::from_secs(5))?;
    /// assert_eq!(done.load(Ordering::Relaxed), 100, "each file once, by one worker");
    /// let stats = bus.stats();
    /// let group = stats.group("resizers").unwrap();
    /// assert_eq!((group.members, group.accepted, group.handed_out), (3, 100, 100));
    /// # drop(workers);
    /// # Ok(()) }
    /// ```
    pub fn group(mut self, name: impl Into<String>) -> Self {
        self.group = Some(name.into());
        self
    }

    /// Makes a [`group`](Self::group) share its events by partition key
    /// ([`Message::key`](crate::Message::key)): events with the same key go to the same
    /// member while the members stay the same, and each key's events are handled one at
    /// a time, in `seq` order, across the whole group (Kafka's partitions, Axon's
    /// sequencing policy). Every member of the group must ask for it, or none.
    ///
    /// - **Assignment.** Keys hash to 64 partitions (a fixed hash: the same key lands
    ///   in the same partition in every run), and the partitions are shared out among
    ///   the members, no member more than one over another. A member that joins takes
    ///   partitions from those that have most; a leaving member's go to those that
    ///   have fewest; no other partition moves. A group of more than 64 members leaves
    ///   the extra ones only keyless events.
    /// - **Order across changes.** A key's next event is not taken, by any member, until
    ///   the member that took its previous one is done with it (handled, failed for
    ///   good, dead-lettered, or given back when that member leaves). So when a key
    ///   moves to another member, per-key order still holds.
    /// - **Retries.** An event waiting for its retry holds back the later events of its
    ///   key, even under [`RetryOrder::Unordered`](crate::RetryOrder::Unordered) (events
    ///   of other keys overtake it), so at-least-once members keep per-key order too.
    /// - **Keyless events** go to any free member, in no particular order.
    /// - **Capacity** bounds the group's events whether or not a member's key holds
    ///   them back, and the counters and the group's identity are those of any group.
    ///
    /// # Errors
    ///
    /// From [`subscribe`](Self::subscribe): [`SubscribeError::InvalidPolicy`] without
    /// a group (and from a receiver); [`SubscribeError::InvalidGroup`] with
    /// [`Overflow::DropOldest`] (the oldest event may be the one its key's member is
    /// about to take: evicting it would reorder the key) or when the group's other
    /// members differ.
    ///
    /// # Example
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use std::sync::{Arc, Mutex};
    /// use std::time::Duration;
    /// use crier::{Bus, Envelope};
    ///
    /// struct Deposit { account: String, cents: u64 }
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::new();
    /// // Which member handled each account's deposits, in order.
    /// let seen = Arc::new(Mutex::new(HashMap::<String, Vec<(u32, u64)>>::new()));
    /// let members: Vec<_> = (0..3)
    ///     .map(|m| {
    ///         let seen = seen.clone();
    ///         bus.subscriber::<Deposit>()
    ///             .group("ledger")
    ///             .key_affinity()
    ///             .subscribe(move |d: &Envelope<Deposit>| {
    ///                 let mut seen = seen.lock().unwrap();
    ///                 seen.entry(d.account.clone()).or_default().push((m, d.cents));
    ///             })
    ///     })
    ///     .collect::<Result<_, _>>()?;
    /// for cents in 1..=50 {
    ///     for account in ["alice", "bob", "carol"] {
    ///         let deposit = Deposit { account: account.to_owned(), cents };
    ///         bus.message(deposit).key(account).publish()?;
    ///     }
    /// }
    /// bus.wait_idle(Duration::from_secs(5))?;
    /// for (account, deposits) in seen.lock().unwrap().iter() {
    ///     let cents: Vec<u64> = deposits.iter().map(|&(_, c)| c).collect();
    ///     assert_eq!(cents, (1..=50).collect::<Vec<_>>(), "{account}'s deposits in order");
    ///     assert!(deposits.iter().all(|&(m, _)| m == deposits[0].0), "{account} on one member");
    /// }
    /// # drop(members);
    /// # Ok(()) }
    /// ```
    pub fn key_affinity(mut self) -> Self {
        self.key_affinity = true;
        self
    }

    /// Lets this subscriber's handler run up to `n` times at once (default 1: one
    /// event at a time), keeping the order of each partition key
    /// ([`Message::key`](crate::Message::key)): a key's events run one at a time, in
    /// `seq` order, and different keys run in parallel; events without a key run in
    /// any order. The handler must then be `Fn + Sync`: call this last, and subscribe
    /// with [`Concurrent::subscribe`].
    ///
    /// - **One subscriber.** It has one id, one guard, one entry in the stats
    ///   ([`SubscriberStats::concurrency`](crate::SubscriberStats::concurrency) is
    ///   `n`), one capacity and overflow policy, and one store of dead letters. Under
    ///   the hood it is `n` lanes sharing one queue (see [`group`](Self::group) with
    ///   [`key_affinity`](Self::key_affinity)), except that any free lane takes any
    ///   key.
    /// - **Where it runs.** On the pool (`n` workers at most, if the pool has them; an
    ///   inline bus's default runs it there too) or on `n` threads of its own
    ///   ([`Dispatch::Thread`]).
    /// - **Retries.** At-least-once, an event waiting for its retry holds back its key
    ///   only (whatever the [`RetryOrder`](crate::RetryOrder)); the other keys go on.
    ///
    /// # Errors
    ///
    /// From [`Concurrent::subscribe`]: [`SubscribeError::InvalidPolicy`] for
    /// `concurrency(0)`, and with `n > 1` for [`Dispatch::Inline`], a group, key
    /// affinity, [`Overflow::DropOldest`] (it could evict a key's next event), or a
    /// pattern, `start_at` or dedup window (not supported with concurrency yet). A
    /// [`filter`](Self::filter) works as for any subscriber.
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::{Arc, Mutex};
    /// use std::time::Duration;
    /// use crier::{Bus, Envelope};
    ///
    /// struct Resize { album: String, photo: u32 }
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::builder().workers(4).build()?;
    /// let log = Arc::new(Mutex::new(Vec::new()));
    /// let sink = log.clone();
    /// let resizer = bus.subscriber::<Resize>().concurrency(4).subscribe(move |r: &Envelope<Resize>| {
    ///     // Up to 4 at once; one album's photos one at a time, in order.
    ///     sink.lock().unwrap().push((r.album.clone(), r.photo));
    /// })?;
    /// for photo in 0..25 {
    ///     for album in ["beach", "city", "forest", "snow"] {
    ///         bus.message(Resize { album: album.to_owned(), photo }).key(album).publish()?;
    ///     }
    /// }
    /// bus.wait_idle(Duration::from_secs(5))?;
    /// let log = log.lock().unwrap();
    /// for album in ["beach", "city", "forest", "snow"] {
    ///     let photos: Vec<u32> = log.iter().filter(|(a, _)| a == album).map(|&(_, p)| p).collect();
    ///     assert_eq!(photos, (0..25).collect::<Vec<_>>());
    /// }
    /// let stats = resizer.stats();
    /// assert_eq!((stats.concurrency, stats.accepted, stats.delivered), (4, 100, 100));
    /// # Ok(()) }
    /// ```
    pub fn concurrency(self, n: usize) -> Concurrent<E> {
        Concurrent { builder: self, n }
    }

    /// Registers `handler` on `n` lanes (see `concurrency` and `lanes`).
    pub(crate) fn subscribe_lanes<F, R>(mut self, n: usize, handler: F) -> Result<Subscription, SubscribeError>
    where
        F: Fn(&Envelope<E>) -> R + Send + Sync + 'static,
        R: HandlerResult,
    {
        if n == 1 {
            return self.subscribe(move |env: &Envelope<E>| handler(env));
        }
        self.check_lanes(n)?;
        let bus = self.topic.bus.clone();
        // An inline bus's default would run every lane on its publisher: the pool.
        let dispatch = match self.dispatch.unwrap_or(bus.config.dispatch) {
            Dispatch::Inline => Dispatch::Pool,
            dispatch => dispatch,
        };
        let id = SubscriberId::next();
        let name = self.name.take().unwrap_or_else(|| format!("subscriber-{}", id.0));
        self.name = Some(name.clone());
        let store = match self.delivery {
            Delivery::AtMostOnce => None,
            Delivery::AtLeastOnce(retry) => Some(std::sync::Arc::new(DeadLetterStore::new(retry.dead_letters_kept()))),
        };
        let handler = std::sync::Arc::new(handler);
        let mut lanes = Vec::with_capacity(n);
        let mut capacity = None;
        for _ in 0..n {
            let handler = handler.clone();
            let lane: Handler<E> = Box::new(move |env| handler(env).into_result());
            let (mut parts, shared) = self.shared_parts(Consumer::Handler(dispatch), Some(lane))?;
            parts.dead_letter_store = store.clone();
            parts.public_id = Some(id);
            lanes.push(parts);
            capacity = shared;
        }
        let topic = self.topic;
        let (group, lanes) = crate::group::lanes(&topic.core, &name, lanes, capacity, self.filter);
        let lanes = lanes
            .into_iter()
            .map(|lane| registration(On::Topic(topic.core.clone()), &topic, lane))
            .collect();
        let control = remember(
            &topic,
            Arc::new(Lanes {
                id,
                group,
                lanes,
                bus: Arc::downgrade(&bus),
            }),
        )?;
        control.group.joined();
        Ok(Subscription::new(control))
    }

    /// Checks what a subscriber with `concurrency(n)`, `n > 1`, cannot have.
    fn check_lanes(&self, n: usize) -> Result<(), SubscribeError> {
        let refuse = |reason| Err(SubscribeError::InvalidPolicy { reason });
        if n == 0 {
            return refuse("concurrency must be at least 1");
        }
        if self.dispatch == Some(Dispatch::Inline) {
            return refuse("concurrency(n) runs handlers in parallel: on the pool or threads of their own, not inline");
        }
        if self.group.is_some() || self.key_affinity {
            return refuse("a subscriber with concurrency(n) is a group of n lanes of its own: leave group(..) and key_affinity() out");
        }
        if self.overflow.unwrap_or(self.topic.bus.config.overflow) == Overflow::DropOldest {
            return refuse("concurrency(n) keeps each key's order: DropOldest could evict the event a key runs next (use DropNewest, Reject, Block or BlockTimeout)");
        }
        if self.pattern.is_some() || self.start_at != Offset::Latest {
            return refuse("concurrency(n) does not support a pattern or start_at yet");
        }
        if self.dedup.is_some() || self.dedup_key.is_some() {
            return refuse("concurrency(n) does not support a dedup window yet");
        }
        self.refuse_max_unacked()
    }

    /// Where this subscriber stands among the subscribers of its topic (default 0):
    /// for each event, inline subscribers run in order of priority, highest first, and
    /// in the order they subscribed where priorities are equal.
    ///
    /// The order is the one in which the publish hands the event out, so it is what a
    /// thread running inline handlers observes (breadth-first still holds: an event
    /// published by a handler runs after every subscriber of the current event, each
    /// event in its own priority order). An inline subscriber that another thread is
    /// running at that moment takes the event when that thread gets to it. For pool and
    /// own-thread subscribers, which run in parallel, it only orders whom the publish
    /// wakes first: no handler order follows from it.
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use crier::{Bus, Envelope};
    ///
    /// struct Deposit(u64);
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::builder().inline().build()?;
    /// let order = Arc::new(Mutex::new(Vec::new()));
    /// let (log, audit) = (order.clone(), order.clone());
    /// let _notify = bus.subscribe(move |_: &Envelope<Deposit>| log.lock().unwrap().push("notify"))?;
    /// let _ledger = bus
    ///     .subscriber::<Deposit>()
    ///     .priority(10)
    ///     .subscribe(move |_: &Envelope<Deposit>| audit.lock().unwrap().push("ledger"))?;
    /// bus.publish(Deposit(100))?;
    /// assert_eq!(*order.lock().unwrap(), ["ledger", "notify"]);
    /// # Ok(()) }
    /// ```
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Registers `handler` and returns the guard that keeps it registered.
    ///
    /// # Errors
    ///
    /// [`SubscribeError::ZeroCapacity`] for `capacity(0)`,
    /// [`SubscribeError::InvalidPolicy`] for a [`Retry`] that cannot work,
    /// [`SubscribeError::Closed`] once the bus is shut down, [`SubscribeError::Spawn`]
    /// if a [`Dispatch::Thread`] thread (or the retry timer's thread) could not start.
    pub fn subscribe<F, R>(mut self, mut handler: F) -> Result<Subscription, SubscribeError>
    where
        F: FnMut(&Envelope<E>) -> R + Send + 'static,
        R: HandlerResult,
    {
        self.refuse_max_unacked()?;
        let dispatch = self.dispatch.unwrap_or(self.topic.bus.config.dispatch);
        let handler: Handler<E> = Box::new(move |env| handler(env).into_result());
        let control = match self.group.take() {
            Some(group) => self.register_member(group, dispatch, handler)?,
            None => {
                self.refuse_key_affinity()?;
                self.register(Consumer::Handler(dispatch), handler)?
            }
        };
        Ok(Subscription::new(control))
    }

    /// Creates a pull [`Receiver`] with these options.
    ///
    /// # Errors
    ///
    /// [`SubscribeError::ZeroCapacity`] for `capacity(0)`, [`SubscribeError::Closed`]
    /// once the bus is shut down. [`SubscribeError::InvalidPolicy`] for
    /// [`at_least_once`](Self::at_least_once), [`dedup`](Self::dedup) or
    /// [`max_unacked`](Self::max_unacked): a receiver's caller handles each event
    /// itself, so the bus never sees it fail or succeed. Use
    /// [`ack_receiver`](Self::ack_receiver) for those. With a [`group`](Self::group),
    /// [`SubscribeError::InvalidGroup`] as for a push member (see there), and for
    /// [`key_affinity`](Self::key_affinity).
    pub fn receiver(mut self) -> Result<Receiver<E>, SubscribeError> {
        if let Delivery::AtLeastOnce(_) = self.delivery {
            return Err(SubscribeError::InvalidPolicy {
                reason: "a receiver cannot be at-least-once (the bus never sees it fail): use ack_receiver",
            });
        }
        if self.dedup.is_some() {
            return Err(SubscribeError::InvalidPolicy {
                reason: "a receiver cannot have a dedup window (the bus never sees it succeed): use ack_receiver",
            });
        }
        self.refuse_max_unacked()?;
        if let Some(group) = self.group.take() {
            return self.group_receiver(group);
        }
        self.refuse_key_affinity()?;
        let pattern = self.checked_pattern()?;
        let bus = &self.topic.bus;
        let capacity = self.capacity.unwrap_or(Some(bus.config.capacity));
        let overflow = self.overflow.unwrap_or(bus.config.overflow);
        let filtered = self.filter.is_some();
        let live = self.start_at == Offset::Latest && pattern.is_none();
        if let Some(capacity) = capacity.filter(|&c| live && broadcast::fits(c, overflow, filtered)) {
            self.check_open(Some(capacity))?;
            let core = &self.topic.core;
            if let Some(seat) = core.join_ring(capacity, overflow, bus.config.capacity) {
                let receiver = RingReceiver::new(self.name, seat, core.clone(), Arc::downgrade(bus));
                return Ok(Receiver::from_ring(remember(&self.topic, Arc::new(receiver))?));
            }
        }
        let topic = self.topic.clone();
        let start_at = self.start_at;
        let (parts, capacity) = self.parts(Consumer::Receiver, None)?;
        Ok(Receiver::from_mailbox(register_mailbox(
            &topic, parts, capacity, start_at, pattern,
        )?))
    }

    /// Creates an [`AckReceiver`]: a pull subscription whose deliveries are acked,
    /// nacked (retried after the backoff, then dead-lettered) or dropped (a nack), with
    /// at most [`max_unacked`](Self::max_unacked) out at once. Needs
    /// [`at_least_once`](Self::at_least_once); a [`dedup`](Self::dedup) window skips
    /// events whose key was acked. See [`AckReceiver`] for an example. With a
    /// [`group`](Self::group), it joins a group of ack receivers (see there).
    ///
    /// # Errors
    ///
    /// [`SubscribeError::InvalidPolicy`] without `at_least_once`, for a [`Retry`] or
    /// [`DedupWindow`] that cannot work, or for `max_unacked(0)`;
    /// [`SubscribeError::ZeroCapacity`] for `capacity(0)`; [`SubscribeError::Closed`]
    /// once the bus is shut down; [`SubscribeError::Spawn`] if the retry timer's thread
    /// could not start; with a group, [`SubscribeError::InvalidGroup`] as for a push
    /// member (see [`group`](Self::group)), and for [`key_affinity`](Self::key_affinity).
    pub fn ack_receiver(mut self) -> Result<AckReceiver<E>, SubscribeError> {
        let Delivery::AtLeastOnce(retry) = self.delivery else {
            return Err(SubscribeError::InvalidPolicy {
                reason: "an ack receiver is at-least-once: call at_least_once(retry) first",
            });
        };
        if self.max_unacked == Some(0) {
            return Err(SubscribeError::InvalidPolicy {
                reason: "max_unacked must be at least 1",
            });
        }
        if let Some(group) = self.group.take() {
            return self.group_ack_receiver(group, retry);
        }
        self.refuse_key_affinity()?;
        let pattern = self.checked_pattern()?;
        let max_unacked = self.max_unacked;
        let topic = self.topic.clone();
        let start_at = self.start_at;
        let (parts, capacity) = self.parts(Consumer::Receiver, None)?;
        let bound = capacity.unwrap_or(topic.bus.config.capacity);
        let max_unacked = max_unacked.unwrap_or(bound);
        // A lossless one reads the topic's ring, as a receiver does (see `broadcast`).
        let lossless = parts.overflow != Overflow::DropOldest;
        let parts = match join_ring(&topic, parts, capacity, start_at, &pattern, lossless) {
            Ok(ring) => {
                let shared = AckShared::new(ring, retry, max_unacked, bound);
                return Ok(AckReceiver::new(remember(&topic, shared)?));
            }
            Err(parts) => parts,
        };
        let sub = Subscriber::new(parts, Mailbox::new(capacity));
        let on = place(&topic, &sub, start_at, pattern)?;
        let shared = AckShared::new(registration(on, &topic, sub), retry, max_unacked, bound);
        Ok(AckReceiver::new(remember(&topic, shared)?))
    }

    /// The pattern, checked, if the subscriber has one.
    fn checked_pattern(&self) -> Result<Option<Pattern>, SubscribeError> {
        let Some(text) = &self.pattern else {
            return Ok(None);
        };
        let pattern = Pattern::parse(text).map_err(|reason| SubscribeError::InvalidPattern {
            pattern: text.clone(),
            reason,
        })?;
        if self.start_at != Offset::Latest {
            return Err(SubscribeError::InvalidPolicy {
                reason: "a pattern subscriber cannot start_at an offset (offsets are per topic)",
            });
        }
        Ok(Some(pattern))
    }

    /// A receiver that joins the consumer group `group` (see [`group`](Self::group)).
    fn group_receiver(self, group: String) -> Result<Receiver<E>, SubscribeError> {
        let topic = self.topic.clone();
        let (parts, capacity) = self.receiver_member_parts(&group)?;
        let member = join_group(&topic, &group, parts, capacity, Sharing::AnyMember)?;
        Ok(Receiver::from_group(remember(&topic, member)?))
    }

    /// An ack receiver that joins the consumer group `group` (see
    /// [`group`](Self::group)): its own gate over the group's queue.
    fn group_ack_receiver(self, group: String, retry: Retry) -> Result<AckReceiver<E>, SubscribeError> {
        let topic = self.topic.clone();
        let max_unacked = self.max_unacked;
        let (parts, capacity) = self.receiver_member_parts(&group)?;
        let bound = capacity.unwrap_or(topic.bus.config.capacity);
        let member = join_group(&topic, &group, parts, capacity, Sharing::AnyMember)?;
        let shared = AckShared::new(member, retry, max_unacked.unwrap_or(bound), bound);
        Ok(AckReceiver::new(remember(&topic, shared)?))
    }

    /// A receiver member's parts, once checked (see [`group`](Self::group)).
    fn receiver_member_parts(self, group: &str) -> Result<(Parts<E>, Option<usize>), SubscribeError> {
        // Receivers have no dispatch: the pool stands for "not inline".
        self.check_member(group, Dispatch::Pool)?;
        if self.key_affinity {
            return Err(SubscribeError::InvalidGroup {
                group: group.to_owned(),
                reason: "key affinity needs push members: a receiver takes whatever is next when its owner asks",
            });
        }
        self.parts(Consumer::Receiver, None)
    }

    fn refuse_key_affinity(&self) -> Result<(), SubscribeError> {
        if self.key_affinity {
            return Err(SubscribeError::InvalidPolicy {
                reason: "key_affinity shares a group's events by key: it needs group(..)",
            });
        }
        Ok(())
    }

    /// Checks what a group member cannot have (see [`group`](Self::group)).
    fn check_member(&self, group: &str, dispatch: Dispatch) -> Result<(), SubscribeError> {
        let refuse = |reason| {
            Err(SubscribeError::InvalidGroup {
                group: group.to_owned(),
                reason,
            })
        };
        if let Err(reason) = check_syntax(group, Syntax::Name) {
            return refuse(reason);
        }
        if dispatch == Dispatch::Inline {
            return refuse(
                "a member runs on the pool or a thread of its own: inline, every event would run on its publisher",
            );
        }
        if self.filter.is_some() {
            return refuse("a member cannot have a filter: the group's queue takes every event of its topic");
        }
        if self.pattern.is_some() {
            return refuse("a group listens to one topic, not a pattern");
        }
        if self.start_at != Offset::Latest {
            return refuse("a member cannot start_at an offset: the group takes events from the latest");
        }
        if self.key_affinity && self.overflow.unwrap_or(self.topic.bus.config.overflow) == Overflow::DropOldest {
            return refuse("key affinity keeps each key's order: DropOldest could evict the event a key's member takes next (use DropNewest, Reject, Block or BlockTimeout)");
        }
        Ok(())
    }

    /// Registers a push subscriber as a member of `group` (see `group`).
    fn register_member(
        self,
        group: String,
        dispatch: Dispatch,
        handler: Handler<E>,
    ) -> Result<Arc<dyn Control>, SubscribeError> {
        self.check_member(&group, dispatch)?;
        let topic = self.topic.clone();
        let keyed = self.key_affinity;
        let (parts, capacity) = self.parts(Consumer::Handler(dispatch), Some(handler))?;
        let sharing = if keyed { Sharing::ByKey } else { Sharing::AnyMember };
        let member = remember(&topic, join_group(&topic, &group, parts, capacity, sharing)?)?;
        member.sub.inbox.group().joined();
        Ok(member)
    }

    /// The bus these options are for.
    pub(crate) fn bus(&self) -> &Arc<crate::bus::BusShared> {
        &self.topic.bus
    }

    /// These options as a responder's (see `request`): checked, moved to `requests` (the
    /// request topic of `E`), in the responders' group, on the pool unless they ask for
    /// a thread. Also returns the attempt whose failure is final (`None`: unlimited).
    pub(crate) fn into_responder(mut self, requests: Topic<E>) -> Result<(Self, Option<u32>), SubscribeError> {
        let refuse = |reason| Err(SubscribeError::InvalidResponder { reason });
        if !matches!(self.topic.core.name, TopicName::Type(_)) || self.pattern.is_some() {
            return refuse("requests of a type travel on a topic of their own: respond from bus.subscriber::<Q>(), with no topic name or pattern");
        }
        if self.group.is_some() || self.key_affinity {
            return refuse("the responders of a type are one group already: leave group(..) and key_affinity() out");
        }
        if self.filter.is_some() {
            return refuse("a responder answers every request: it cannot have a filter");
        }
        if self.dedup.is_some() {
            return refuse(
                "a responder answers every request: a dedup window would leave repeated requests unanswered",
            );
        }
        if self.start_at != Offset::Latest {
            return refuse("a responder answers requests from now on: it cannot start_at an offset");
        }
        if self.dispatch == Some(Dispatch::Inline) {
            return refuse(
                "a responder runs on the pool or a thread of its own: one free responder takes each request",
            );
        }
        self.refuse_max_unacked()?;
        let last_attempt = match &self.delivery {
            Delivery::AtMostOnce => Some(1),
            Delivery::AtLeastOnce(retry) => retry.attempts_limit(),
        };
        self.dispatch = Some(self.dispatch.unwrap_or(Dispatch::Pool));
        self.topic = requests;
        self.group = Some(crate::request::RESPONDERS.to_owned());
        Ok((self, last_attempt))
    }

    fn refuse_max_unacked(&self) -> Result<(), SubscribeError> {
        match self.max_unacked {
            Some(_) => Err(SubscribeError::InvalidPolicy {
                reason: "max_unacked applies to ack receivers only (ack_receiver)",
            }),
            None => Ok(()),
        }
    }

    fn check_open(&self, capacity: Option<usize>) -> Result<(), SubscribeError> {
        if capacity == Some(0) {
            return Err(SubscribeError::ZeroCapacity);
        }
        if self.topic.bus.runtime.is_closed() {
            return Err(SubscribeError::Closed);
        }
        if self.start_at != Offset::Latest {
            // Before any thread starts; `join` checks again under the topic's lock.
            self.topic.core.check_start(self.start_at)?;
        }
        Ok(())
    }

    /// The subscriber's parts and capacity, once the options are checked and its
    /// executor is running.
    fn parts(
        self,
        consumer: Consumer,
        handler: Option<Handler<E>>,
    ) -> Result<(Parts<E>, Option<usize>), SubscribeError> {
        let (mut parts, capacity) = self.shared_parts(consumer, handler)?;
        parts.filter = self.filter;
        parts.dedup_key = self.dedup_key;
        Ok((parts, capacity))
    }

    /// [`parts`](Self::parts) without what cannot be shared (a filter, a key
    /// function), so that the lanes of one subscriber each get theirs.
    fn shared_parts(
        &self,
        consumer: Consumer,
        handler: Option<Handler<E>>,
    ) -> Result<(Parts<E>, Option<usize>), SubscribeError> {
        let bus = &self.topic.bus;
        let capacity = self.capacity.unwrap_or(Some(bus.config.capacity));
        self.check_open(capacity)?;
        if let Delivery::AtLeastOnce(retry) = &self.delivery {
            retry
                .check()
                .map_err(|reason| SubscribeError::InvalidPolicy { reason })?;
            bus.start_timer()?;
        }
        if let Some(window) = &self.dedup {
            window
                .check()
                .map_err(|reason| SubscribeError::InvalidPolicy { reason })?;
        }
        let executor = match consumer {
            Consumer::Handler(Dispatch::Pool) => Some(bus.pool()?),
            Consumer::Handler(Dispatch::Thread) => {
                let name = self.name.as_deref().unwrap_or("subscriber");
                Some(bus.own_thread(name)?)
            }
            Consumer::Handler(_) | Consumer::Receiver => None,
        };
        let parts = Parts {
            name: self.name.clone(),
            topic: match &self.pattern {
                Some(pattern) => TopicName::Named(pattern.as_str().into()),
                None => self.topic.core.name.clone(),
            },
            overflow: self.overflow.unwrap_or(bus.config.overflow),
            consumer,
            executor,
            filter: None,
            handler,
            error_hook: self.error_hook.clone().or_else(|| bus.config.error_hook.clone()),
            runtime: bus.runtime.clone(),
            delivery: self.delivery,
            retry_limit: capacity.unwrap_or(bus.config.capacity),
            bus: Arc::downgrade(bus),
            dedup: self.dedup,
            // Inline subscribers of one topic share a table of keys (see `key_table`).
            key_table: match (&self.pattern, consumer) {
                (None, Consumer::Handler(Dispatch::Inline)) => Some(self.topic.core.keys.clone()),
                _ => None,
            },
            dedup_key: None,
            members: None,
            priority: self.priority,
            dead_letter_store: None,
            public_id: None,
        };
        Ok((parts, capacity))
    }

    /// Registers a push subscriber: on the topic's broadcast ring where its options
    /// allow (on the pool or a thread of its own, and as `broadcast::fits` says),
    /// otherwise with a mailbox of its own.
    fn register(self, consumer: Consumer, handler: Handler<E>) -> Result<Arc<dyn Control>, SubscribeError> {
        let pattern = self.checked_pattern()?;
        let topic = self.topic.clone();
        let start_at = self.start_at;
        let (parts, capacity) = self.parts(consumer, Some(handler))?;
        let runs_apart = parts.executor.is_some();
        let parts = match join_ring(&topic, parts, capacity, start_at, &pattern, runs_apart) {
            Ok(ring) => return Ok(remember(&topic, ring)?),
            Err(parts) => parts,
        };
        Ok(register_mailbox(&topic, parts, capacity, start_at, pattern)?)
    }
}

/// A subscriber made of `parts` on `topic`'s broadcast ring, if the caller allows it
/// (its own conditions) and its options do (from the latest offset, no pattern, and as
/// `broadcast::fits` says); otherwise `parts` back, for a mailbox.
// The large `Err` is the subscriber's own parts, handed back once per subscribe.
#[allow(clippy::result_large_err)]
fn join_ring<E: Send + Sync + 'static>(
    topic: &Topic<E>,
    parts: Parts<E>,
    capacity: Option<usize>,
    start_at: Offset,
    pattern: &Option<Pattern>,
    caller_allows: bool,
) -> Result<Arc<Registration<E, Seat<E>>>, Parts<E>> {
    let fits = |c: usize| broadcast::fits(c, parts.overflow, parts.filter.is_some());
    let Some(capacity) =
        capacity.filter(|&c| caller_allows && start_at == Offset::Latest && pattern.is_none() && fits(c))
    else {
        return Err(parts);
    };
    let sub = topic
        .core
        .join_ring_subscriber(parts, capacity, topic.bus.config.capacity)?;
    Ok(registration(On::Topic(topic.core.clone()), topic, sub))
}

/// Registers a subscriber with a mailbox of its own.
fn register_mailbox<E: Send + Sync + 'static>(
    topic: &Topic<E>,
    parts: Parts<E>,
    capacity: Option<usize>,
    start_at: Offset,
    pattern: Option<Pattern>,
) -> Result<Arc<Registration<E>>, SubscribeError> {
    let sub = Subscriber::new(parts, Mailbox::new(capacity));
    let on = place(topic, &sub, start_at, pattern)?;
    remember(topic, registration(on, topic, sub))
}

/// Puts a subscriber with a mailbox on its topic, from now on or from `start_at` in
/// the history; or, with a pattern, on every topic the pattern matches (see `reach`).
fn place<E: Send + Sync + 'static>(
    topic: &Topic<E>,
    sub: &Arc<Subscriber<E>>,
    start_at: Offset,
    pattern: Option<Pattern>,
) -> Result<On<E>, SubscribeError> {
    if let Some(pattern) = pattern {
        return Ok(On::Pattern(topic.bus.reach(pattern, sub.clone())));
    }
    match start_at {
        Offset::Latest => topic.core.add(sub.clone()),
        from => topic.core.join_at(sub, from)?,
    }
    Ok(On::Topic(topic.core.clone()))
}

fn registration<E, Q>(on: On<E>, topic: &Topic<E>, sub: Arc<Subscriber<E, Q>>) -> Arc<Registration<E, Q>> {
    Arc::new(Registration {
        sub,
        on,
        bus: Arc::downgrade(&topic.bus),
    })
}

/// Adds a member made of `parts` to the group `group` on `topic` (making the group if
/// it has none, which it registers with the bus). The caller registers the member.
fn join_group<E: Send + Sync + 'static>(
    topic: &Topic<E>,
    group: &str,
    parts: Parts<E>,
    capacity: Option<usize>,
    sharing: Sharing,
) -> Result<Arc<Registration<E, GroupSeat<E>>>, SubscribeError> {
    let (member, made) = crate::group::join(&topic.core, group, parts, capacity, sharing).map_err(|reason| {
        SubscribeError::InvalidGroup {
            group: group.to_owned(),
            reason,
        }
    })?;
    if let Some(made) = made {
        topic.bus.remember(made);
    }
    Ok(registration(On::Topic(topic.core.clone()), topic, member))
}

/// Tells the bus about a subscriber that is already on its topic.
fn remember<E, C: Control + 'static>(topic: &Topic<E>, control: Arc<C>) -> Result<Arc<C>, SubscribeError> {
    let bus = &topic.bus;
    bus.remember(control.clone());
    // A shutdown that started meanwhile may have missed this subscriber.
    if bus.runtime.is_closed() {
        control.unsubscribe();
        return Err(SubscribeError::Closed);
    }
    Ok(control)
}

impl<E> fmt::Debug for SubscriberBuilder<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriberBuilder")
            .field("topic", &self.topic.core.name)
            .field("name", &self.name)
            .field("filter", &self.filter.is_some())
            .field("capacity", &self.capacity)
            .field("overflow", &self.overflow)
            .field("dispatch", &self.dispatch)
            .field("delivery", &self.delivery)
            .field("max_unacked", &self.max_unacked)
            .field("start_at", &self.start_at)
            .field("pattern", &self.pattern)
            .field("group", &self.group)
            .field("key_affinity", &self.key_affinity)
            .field("priority", &self.priority)
            .finish()
    }
}
