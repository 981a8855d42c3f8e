//! `Bus`: the handle users hold, its builder, and the bus's lifecycle.

use std::fmt;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::builder::{BusBuilder, Config};
use crate::clock::Clock;
use crate::context;
use crate::dispatch::{Executor, Runtime, Threads};
use crate::envelope::Envelope;
use crate::error::{PublishError, ShutdownError, SubscribeError, TopicError, WaitIdleError};
use crate::message::{Draft, Message};
use crate::observe::AnyEnvelope;
use crate::pattern::Pattern;
use crate::reach::Reach;
use crate::receiver::Receiver;
use crate::registry::{Exchange, Registry};
use crate::request::ReplyTypes;
use crate::shutdown::ShutdownReport;
use crate::stats::{BusStats, Consumer, SubscriberId};
use crate::subscribe::{HandlerResult, SubscriberBuilder};
use crate::subscriber::Subscriber;
use crate::subscription::{Control, Subscription};
use crate::sync::{Arc, Mutex, Ordering};
use crate::timer::Timer;
use crate::topic::{Receipt, Topic, TopicCore, Wait};
use crate::topology::Topology;
use crate::trace::{ExplainError, Explanation, TraceStats};
use crate::EventId;

/// How long shutdown waits for threads to exit once it stopped waiting for handlers.
const THREAD_EXIT_GRACE: Duration = Duration::from_millis(100);

/// Everything one bus owns. Subscribers hold only `runtime`, so there is no cycle.
pub(crate) struct BusShared {
    pub(crate) config: Config,
    pub(crate) runtime: Arc<Runtime>,
    clock: std::sync::Arc<dyn Clock>,
    registry: Registry,
    /// Every registered subscriber and receiver, for stats and shutdown.
    subscribers: DashMap<SubscriberId, Arc<dyn Control>>,
    /// Started with the first pool subscriber.
    pool: Mutex<Option<Executor>>,
    threads: Threads,
    /// The report of the first shutdown; later calls return it.
    lifecycle: Mutex<Option<ShutdownReport>>,
    /// Each request type's reply type (see `request`).
    pub(crate) reply_types: ReplyTypes,
}

impl BusShared {
    pub(crate) fn pool(&self) -> Result<Executor, SubscribeError> {
        let mut pool = self.pool.lock();
        if let Some(pool) = pool.as_ref() {
            return Ok(pool.clone());
        }
        let started =
            Executor::start("crier-worker", self.config.workers, &self.threads).map_err(SubscribeError::Spawn)?;
        *pool = Some(started.clone());
        Ok(started)
    }

    /// Starts the retry timer's thread, unless it runs or the clock is moved by hand.
    pub(crate) fn start_timer(&self) -> Result<(), SubscribeError> {
        let timer = &self.runtime.timer;
        if !timer.claim_thread() {
            return Ok(());
        }
        let spawned = self.threads.spawn("crier-timer".into(), timer.serve());
        spawned.map_err(|e| {
            timer.thread_failed();
            SubscribeError::Spawn(e)
        })
    }

    pub(crate) fn own_thread(&self, name: &str) -> Result<Executor, SubscribeError> {
        Executor::start(&format!("crier-{name}"), 1, &self.threads).map_err(SubscribeError::Spawn)
    }

    pub(crate) fn remember(&self, control: Arc<dyn Control>) {
        self.subscribers.insert(control.id(), control);
    }

    pub(crate) fn forget(&self, id: SubscriberId) {
        self.subscribers.remove(&id);
    }

    fn make_topic<E: Send + Sync + 'static>(
        &self,
    ) -> impl FnOnce(crate::registry::TopicName, u64) -> TopicCore<E> + '_ {
        move |name, prefix| TopicCore::new(name, prefix, self.clock.clone(), self.runtime.clone())
    }

    pub(crate) fn default_topic<E: Send + Sync + 'static>(&self) -> Arc<TopicCore<E>> {
        let topic = self.registry.default_topic(self.make_topic());
        self.runtime.watchers.note(&topic);
        topic
    }

    /// Puts a pattern subscriber on the named topics its pattern matches, now and as
    /// they are made (see `reach`).
    pub(crate) fn reach<E: Send + Sync + 'static>(&self, pattern: Pattern, sub: Arc<Subscriber<E>>) -> Arc<Reach<E>> {
        let (patterns, id) = self.registry.patterns();
        let reach = Arc::new(Reach::new(id, pattern, sub, patterns));
        self.registry.watch(&reach.pattern, id, reach.clone());
        reach
    }

    /// The topic of `E`'s requests or replies (see `request`).
    pub(crate) fn exchange_topic<E: Send + Sync + 'static>(&self, exchange: Exchange) -> Arc<TopicCore<E>> {
        self.registry.exchange_topic(exchange, self.make_topic())
    }

    fn named_topic<E: Send + Sync + 'static>(&self, name: &str) -> Result<Arc<TopicCore<E>>, TopicError> {
        self.registry.named_topic(name, self.make_topic())
    }

    fn controls(&self) -> Vec<Arc<dyn Control>> {
        let mut all: Vec<_> = self.subscribers.iter().map(|e| e.value().clone()).collect();
        all.sort_by_key(|c| c.id());
        all
    }

    pub(crate) fn stats(&self) -> BusStats {
        let mut topics: Vec<_> = self.registry.all().iter().map(|t| t.stats()).collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        let mut subscribers = Vec::new();
        let mut groups = Vec::new();
        for control in self.controls() {
            match control.group() {
                Some(group) => groups.push(group),
                None => subscribers.push(control.stats()),
            }
        }
        BusStats {
            topics,
            subscribers,
            groups,
            in_flight: self.runtime.in_flight.get(),
        }
    }

    /// The shutdown sequence; `deadline` bounds the drain, `abort` skips it.
    fn shutdown(&self, deadline: Option<Instant>, abort: bool) -> ShutdownReport {
        let mut lifecycle = self.lifecycle.lock();
        if let Some(report) = lifecycle.as_ref() {
            return report.clone();
        }

        // 1. Closing: publishes from outside the bus and subscribes are refused from
        //    now on; blocked publishers are woken to learn it. Handlers may still
        //    publish, so the flows of accepted events run to their end.
        self.runtime.closed.store(true, Ordering::SeqCst);
        let subscribers = self.controls();
        for sub in &subscribers {
            sub.wake_publishers();
        }

        // 2. Drain what was accepted, including what handlers publish meanwhile.
        //    Under a clock moved by hand, retries that are not due are not in flight
        //    (see `retries`): only the test could make them due, so they are not drained.
        //    An ack receiver's retries wait for its owner, not for the drain.
        let push_retrying = |s: &Arc<dyn Control>| {
            let stats = s.stats();
            stats.consumer != Consumer::Receiver && stats.retrying > 0
        };
        let drained = !abort && self.runtime.in_flight.wait_zero(deadline) && !subscribers.iter().any(push_retrying);

        // 3. Closed: every publish is refused. Closing a topic passes its commit lock,
        //    so no publish is half-way through a commit after this.
        self.runtime.sealed.store(true, Ordering::SeqCst);
        for topic in self.registry.all() {
            topic.close();
        }

        // 4. Out of time (or aborting): runners discard what they have not started.
        if !drained {
            self.runtime.aborted.store(true, Ordering::SeqCst);
        }

        // 5. Retire every handler, discarding what is left: none starts after this. The
        //    retries still waiting are reported as such.
        self.runtime.timer.stop();
        let grace_until = Instant::now() + THREAD_EXIT_GRACE;
        let handlers_running = subscribers
            .iter()
            .filter(|s| !s.retire(grace_until.saturating_duration_since(Instant::now())))
            .count();

        // 6. Stop the threads, and tell receivers that nothing more comes.
        let pool = self.pool.lock().clone();
        if let Some(pool) = &pool {
            pool.stop();
        }
        for sub in &subscribers {
            sub.close_input();
        }
        let join_until = if drained {
            deadline
        } else {
            Some(Instant::now() + THREAD_EXIT_GRACE)
        };
        let threads_running = self.threads.join(join_until);

        // 7. Report, then let go of handlers' captures (which may hold `Bus` handles).
        let stats = self.stats();
        let report = ShutdownReport {
            in_receivers: ShutdownReport::receivers_backlog(&stats),
            pending: ShutdownReport::abandoned(&stats),
            awaiting_retry: subscribers.iter().map(|s| s.abandoned_retries()).sum(),
            stats,
            drained,
            handlers_running,
            threads_running,
        };
        self.registry.clear_patterns();
        for topic in self.registry.all() {
            topic.clear_subscribers();
        }
        self.subscribers.clear();
        if let (Some(pool), 0) = (&pool, threads_running) {
            pool.clear();
        }
        *lifecycle = Some(report.clone());
        report
    }
}

/// The bus a service builds once at start-up: a cheap, cloneable handle.
///
/// `Bus` is `Clone + Send + Sync`; clones share one bus. See the [crate docs](crate)
/// for a tour.
///
/// # Dropping the last handle
///
/// When the last `Bus` handle is dropped, the bus shuts down gracefully: it refuses new
/// publishes, waits up to [`BusBuilder::drop_timeout`] (default 5 s) for every accepted
/// event to be handled, drops and counts what is left, and joins its threads. If the
/// last handle is dropped on one of the bus's own threads (inside a handler), the same
/// runs on a short-lived helper thread instead, so nothing waits for itself.
///
/// A handler that captures a `Bus` clone keeps the bus alive, so then dropping the
/// other handles does not shut it down; capture a [`WeakBus`] from
/// [`downgrade`](Bus::downgrade) instead, or call [`shutdown`](Bus::shutdown), which
/// also frees every handler's captures.
#[derive(Clone)]
pub struct Bus {
    handle: std::sync::Arc<Handle>,
}

/// Shuts the bus down when the last `Bus` handle goes.
struct Handle {
    shared: Arc<BusShared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let shared = self.shared.clone();
        let deadline = Instant::now().checked_add(shared.config.drop_timeout);
        if context::on_bus() {
            let spawned = std::thread::Builder::new()
                .name("crier-shutdown".into())
                .spawn(move || drop(shared.shutdown(deadline, false)));
            if spawned.is_err() {
                // No thread to wait on: stop without waiting for ourselves.
                drop(self.shared.shutdown(Some(Instant::now()), true));
            }
        } else {
            drop(shared.shutdown(deadline, false));
        }
    }
}

/// A handle that does not keep the bus alive; see [`Bus::downgrade`].
#[derive(Clone)]
pub struct WeakBus {
    handle: std::sync::Weak<Handle>,
}

impl WeakBus {
    /// The bus, if a [`Bus`] handle still exists.
    pub fn upgrade(&self) -> Option<Bus> {
        self.handle.upgrade().map(|handle| Bus { handle })
    }
}

impl fmt::Debug for WeakBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakBus")
            .field("alive", &(self.handle.strong_count() > 0))
            .finish()
    }
}

impl Default for Bus {
    fn default() -> Self {
        Bus::new()
    }
}

impl Bus {
    /// A bus with the default options (see [`BusBuilder`]).
    pub fn new() -> Bus {
        BusBuilder::default().assemble()
    }

    pub(crate) fn from_parts(config: Config, clock: std::sync::Arc<dyn Clock>) -> Bus {
        let shared = BusShared {
            runtime: Arc::new(Runtime::new(Timer::new(clock.clone()), config.trace)),
            config,
            clock,
            registry: Registry::new(),
            subscribers: DashMap::new(),
            pool: Mutex::new(None),
            threads: Threads::new(),
            lifecycle: Mutex::new(None),
            reply_types: ReplyTypes::default(),
        };
        Bus {
            handle: std::sync::Arc::new(Handle {
                shared: Arc::new(shared),
            }),
        }
    }

    /// Options for a new bus.
    pub fn builder() -> BusBuilder {
        BusBuilder::default()
    }

    pub(crate) fn shared(&self) -> &Arc<BusShared> {
        &self.handle.shared
    }

    /// The default topic of event type `E` (named after the type).
    pub fn topic<E: Send + Sync + 'static>(&self) -> Topic<E> {
        Topic {
            core: self.shared().default_topic(),
            bus: self.shared().clone(),
        }
    }

    /// The topic named `name`, carrying events of type `E`.
    ///
    /// A name is dot-separated tokens (`orders.eu.created`): no empty token, no
    /// whitespace or control character, no wildcard (`*`, `>`), at most 255 bytes. The
    /// first call binds the name to `E` for the bus's lifetime.
    ///
    /// # Errors
    ///
    /// [`TopicError::InvalidName`] for a bad name, [`TopicError::TypeMismatch`] if the
    /// name is bound to another type.
    ///
    /// # Example
    ///
    /// ```
    /// use crier::{Bus, TopicError};
    ///
    /// let bus = Bus::new();
    /// assert!(bus.topic_named::<String>("orders.eu").is_ok());
    /// assert!(matches!(bus.topic_named::<u64>("orders.eu"), Err(TopicError::TypeMismatch { .. })));
    /// assert!(matches!(bus.topic_named::<String>("orders..eu"), Err(TopicError::InvalidName { .. })));
    /// ```
    pub fn topic_named<E: Send + Sync + 'static>(&self, name: &str) -> Result<Topic<E>, TopicError> {
        Ok(Topic {
            core: self.shared().named_topic(name)?,
            bus: self.shared().clone(),
        })
    }

    /// Publishes on `E`'s default topic; see [`Topic::publish`].
    ///
    /// # Errors
    ///
    /// As [`Topic::publish`]; the event is handed back.
    pub fn publish<E: Send + Sync + 'static>(&self, event: E) -> Result<Receipt, PublishError<E>> {
        self.shared()
            .default_topic()
            .publish(Draft::new(event), Wait::Until(None))
    }

    /// Publishes without waiting; see [`Topic::try_publish`].
    ///
    /// # Errors
    ///
    /// As [`Topic::try_publish`]; the event is handed back.
    pub fn try_publish<E: Send + Sync + 'static>(&self, event: E) -> Result<Receipt, PublishError<E>> {
        self.shared().default_topic().publish(Draft::new(event), Wait::Never)
    }

    /// Publishes, waiting at most `timeout` for space; see [`Topic::publish_timeout`].
    ///
    /// # Errors
    ///
    /// As [`Topic::publish_timeout`]; the event is handed back.
    pub fn publish_timeout<E: Send + Sync + 'static>(
        &self,
        event: E,
        timeout: Duration,
    ) -> Result<Receipt, PublishError<E>> {
        self.shared()
            .default_topic()
            .publish(Draft::new(event), Wait::timeout(timeout))
    }

    /// Starts a publish with metadata on `E`'s default topic; see [`Message`].
    pub fn message<E: Send + Sync + 'static>(&self, event: E) -> Message<E> {
        Message::new(self.shared().default_topic(), event)
    }

    /// Subscribes a handler to `E`'s default topic with the bus's default options.
    ///
    /// The handler takes `&Envelope<E>` and returns `()` or `Result<(), impl Into<BoxError>>`.
    ///
    /// # Errors
    ///
    /// See [`SubscriberBuilder::subscribe`].
    pub fn subscribe<E, F, R>(&self, handler: F) -> Result<Subscription, SubscribeError>
    where
        E: Send + Sync + 'static,
        F: FnMut(&Envelope<E>) -> R + Send + 'static,
        R: HandlerResult,
    {
        self.topic().subscribe(handler)
    }

    /// Starts a subscriber on `E`'s default topic with options.
    pub fn subscriber<E: Send + Sync + 'static>(&self) -> SubscriberBuilder<E> {
        self.topic().subscriber()
    }

    /// Observes every event accepted on every topic of the bus, whatever its type, with
    /// the bus's default options: for audit logs, analytics and debugging. The handler
    /// gets each event as an [`AnyEnvelope`] (its type name, topic, metadata, and the
    /// event to downcast).
    ///
    /// An observer is a subscriber of its own topic (the default topic of
    /// `AnyEnvelope`), so [`observer`](Self::observer) gives it every option a
    /// subscriber has, and its stats, unsubscribe and shutdown behave as a
    /// subscriber's. It sees an event after it is accepted and before the event's
    /// inline handlers run, so before anything they publish. Its overflow policy
    /// applies to every publisher on the bus: an observer with [`Overflow::Block`](crate::Overflow::Block)
    /// that falls behind slows every publisher; use `DropOldest` or `DropNewest` (and
    /// watch its `dropped` count) where that must not happen. An observer does not
    /// route an event: an event only observers saw still counts as unrouted on its
    /// topic (see [`Unrouted`](crate::Unrouted)).
    ///
    /// # Errors
    ///
    /// See [`SubscriberBuilder::subscribe`].
    ///
    /// # Example
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use crier::{AnyEnvelope, Bus};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::builder().inline().build()?;
    /// let log = Arc::new(Mutex::new(Vec::new()));
    /// let seen = log.clone();
    /// let _audit = bus.observe_all(move |env: &AnyEnvelope| {
    ///     seen.lock().unwrap().push(format!("{} on {}", env.type_name(), env.topic()));
    /// })?;
    /// bus.publish(7_u32)?;
    /// bus.topic_named::<String>("orders.eu")?.publish("order 1".into())?;
    /// assert_eq!(*log.lock().unwrap(), ["u32 on u32", "alloc::string::String on orders.eu"]);
    /// # Ok(()) }
    /// ```
    pub fn observe_all<F, R>(&self, mut handler: F) -> Result<Subscription, SubscribeError>
    where
        F: FnMut(&AnyEnvelope) -> R + Send + 'static,
        R: HandlerResult,
    {
        self.observer()
            .subscribe(move |env: &Envelope<AnyEnvelope>| handler(env))
    }

    /// Starts an observer of every event on the bus with options (see
    /// [`observe_all`](Self::observe_all)): its handler or receiver gets
    /// `Envelope<AnyEnvelope>`, which dereferences to the [`AnyEnvelope`]. The outer
    /// envelope's own metadata are the observation's; the event's are the
    /// `AnyEnvelope`'s.
    pub fn observer(&self) -> SubscriberBuilder<AnyEnvelope> {
        self.subscriber()
    }

    /// A pull receiver on `E`'s default topic with the bus's default options.
    ///
    /// # Errors
    ///
    /// See [`SubscriberBuilder::receiver`].
    pub fn receiver<E: Send + Sync + 'static>(&self) -> Result<Receiver<E>, SubscribeError> {
        self.topic().receiver()
    }

    /// Blocks until no push delivery is queued or running anywhere on the bus,
    /// including deliveries of events that handlers publish meanwhile.
    ///
    /// It counts deliveries, it does not watch for silence: it returns as soon as the
    /// last handler of the last event returns. Events waiting in a [`Receiver`] are not
    /// in flight (they wait for their owner).
    ///
    /// # Retries
    ///
    /// With a clock that moves by itself (the default [`SystemClock`](crate::SystemClock)),
    /// an event waiting for an at-least-once retry is in flight: this waits for the
    /// retry, so at most the remaining backoff. With a clock moved by hand
    /// ([`ManualClock`](crate::testing::ManualClock)), only the test can make a retry
    /// due, so this does *not* wait for retries that are not due, nor for the events an
    /// [`Ordered`](crate::RetryOrder::Ordered) subscriber holds behind one: it returns,
    /// and the subscriber's stats report them (`retrying`, `queued`). Advancing the
    /// clock makes them due; the next `wait_idle` waits for them.
    ///
    /// # Errors
    ///
    /// [`WaitIdleError::Timeout`] with the number still in flight, or
    /// [`WaitIdleError::InsideHandler`] when called from a handler (which is itself in
    /// flight).
    pub fn wait_idle(&self, timeout: Duration) -> Result<(), WaitIdleError> {
        if context::on_bus() {
            return Err(WaitIdleError::InsideHandler);
        }
        let in_flight = &self.shared().runtime.in_flight;
        if in_flight.wait_zero(Instant::now().checked_add(timeout)) {
            Ok(())
        } else {
            Err(WaitIdleError::Timeout {
                in_flight: in_flight.get(),
                timeout,
            })
        }
    }

    /// A snapshot of every topic's and subscriber's counters.
    pub fn stats(&self) -> BusStats {
        self.shared().stats()
    }

    /// What happened to the event `id`, from the delivery traces
    /// ([`BusBuilder::trace`](crate::BusBuilder::trace)): which subscribers it reached,
    /// each attempt's outcome and duration, whether it was dropped (and why),
    /// deduplicated or dead-lettered, and the events it caused. Prints as a tree.
    ///
    /// A step appears once it happened: call it after
    /// [`wait_idle`](Self::wait_idle) for the whole story.
    ///
    /// # Errors
    ///
    /// [`ExplainError::NotTracing`] if the bus keeps no traces,
    /// [`ExplainError::Evicted`] if the event was traced but newer ones pushed it out,
    /// [`ExplainError::Unknown`] if no such event was traced on this bus.
    ///
    /// # Example
    ///
    /// ```
    /// use crier::{Bus, Retry, TraceOutcome};
    ///
    /// struct Payment(u32);
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::builder().inline().trace(1_000).build()?;
    /// let _charge = bus
    ///     .subscriber::<Payment>()
    ///     .name("charge")
    ///     .at_least_once(Retry::ordered().max_attempts(2))
    ///     .subscribe(|_: &crier::Envelope<Payment>| Err::<(), _>("card declined"))?;
    /// let receipt = bus.publish(Payment(12))?;
    /// bus.wait_idle(std::time::Duration::from_secs(5))?;
    ///
    /// let explained = bus.explain(receipt.id)?;
    /// let attempts: Vec<_> = explained.steps_of("charge").collect();
    /// assert!(matches!(attempts[0], TraceOutcome::Failed { attempt: 1, .. }));
    /// assert!(matches!(attempts[1], TraceOutcome::Failed { attempt: 2, .. }));
    /// assert_eq!(explained.caused.len(), 1, "the dead letter");
    /// println!("{explained}");
    /// # Ok(()) }
    /// ```
    pub fn explain(&self, id: EventId) -> Result<Explanation, ExplainError> {
        match &self.shared().runtime.traces {
            Some(traces) => traces.explain(id),
            None => Err(ExplainError::NotTracing),
        }
    }

    /// The bus's shape: topics, subscribers with their policies, groups, patterns,
    /// and the causation links seen so far (which subscriber's handler published on
    /// which topic, and how often; counted whether or not traces are on). Renders as
    /// Mermaid ([`Topology::to_mermaid`]) or Graphviz DOT ([`Topology::to_dot`]).
    ///
    /// # Example
    ///
    /// ```
    /// use crier::{Bus, Envelope};
    ///
    /// struct Order(u32);
    /// struct Invoice(u32);
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::builder().inline().build()?;
    /// let publisher = bus.clone();
    /// let _billing = bus
    ///     .subscriber::<Order>()
    ///     .name("billing")
    ///     .subscribe(move |order: &Envelope<Order>| publisher.publish(Invoice(order.0)).map(|_| ()))?;
    /// let _mail = bus.subscriber::<Invoice>().name("mail").subscribe(|_: &Envelope<Invoice>| {})?;
    /// bus.publish(Order(1))?;
    ///
    /// let mermaid = bus.topology().to_mermaid();
    /// assert!(mermaid.contains("caused 1"));
    /// println!("{mermaid}");
    /// # Ok(()) }
    /// ```
    pub fn topology(&self) -> Topology {
        Topology::new(self.stats(), &self.shared().runtime.causation)
    }

    /// How full the trace store is, or `None` if the bus keeps no traces.
    pub fn trace_stats(&self) -> Option<TraceStats> {
        self.shared().runtime.traces.as_ref().map(crate::trace::Traces::stats)
    }

    /// Stops the bus gracefully and reports what happened to every accepted event.
    ///
    /// 1. Publishes from outside the bus and subscribes are refused from now on
    ///    (`Closed`); publishers blocked on a full mailbox get their event back.
    ///    Handlers may still publish: the flows of accepted events run to their end.
    /// 2. Waits up to `timeout` until every accepted push delivery is handled,
    ///    including those of events that handlers publish meanwhile.
    /// 3. From here every publish is refused, handlers' too.
    /// 4. If time ran out, drops what is still queued (counted as
    ///    [`DropReason::Shutdown`](crate::DropReason::Shutdown) and reported as `pending`).
    /// 5. Stops and joins the bus's threads, and frees every handler.
    ///
    /// Receivers keep what is queued in them; `recv` returns it, then `Closed`. Calling
    /// it again returns the first report.
    ///
    /// # Errors
    ///
    /// [`ShutdownError::InsideHandler`] when called from a handler or a bus thread.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use crier::{Bus, Envelope, PublishError};
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::new();
    /// let _sub = bus.subscribe(|_: &Envelope<u8>| {})?;
    /// for n in 0..100_u8 {
    ///     bus.publish(n)?;
    /// }
    /// let report = bus.shutdown(Duration::from_secs(5))?;
    /// assert!(report.drained);
    /// assert_eq!(report.delivered(), 100);
    /// assert!(matches!(bus.publish(1_u8), Err(PublishError::Closed(1))));
    /// # Ok(()) }
    /// ```
    pub fn shutdown(&self, timeout: Duration) -> Result<ShutdownReport, ShutdownError> {
        self.stop(Instant::now().checked_add(timeout), false)
    }

    /// Stops the bus at once: like [`shutdown`](Self::shutdown) without step 2. Every
    /// queued push delivery is dropped and counted
    /// ([`DropReason::Shutdown`](crate::DropReason::Shutdown)); handlers running now
    /// finish their current event and start no other.
    ///
    /// # Errors
    ///
    /// [`ShutdownError::InsideHandler`] when called from a handler or a bus thread.
    pub fn abort(&self) -> Result<ShutdownReport, ShutdownError> {
        self.stop(Some(Instant::now()), true)
    }

    fn stop(&self, deadline: Option<Instant>, abort: bool) -> Result<ShutdownReport, ShutdownError> {
        if context::on_bus() {
            return Err(ShutdownError::InsideHandler);
        }
        Ok(self.shared().shutdown(deadline, abort))
    }

    /// `true` once `shutdown` or `abort` has started.
    pub fn is_closed(&self) -> bool {
        self.shared().runtime.is_closed()
    }

    /// A handle that does not keep the bus alive, for handlers to capture.
    pub fn downgrade(&self) -> WeakBus {
        WeakBus {
            handle: std::sync::Arc::downgrade(&self.handle),
        }
    }
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = self.shared();
        f.debug_struct("Bus")
            .field("workers", &shared.config.workers)
            .field("closed", &shared.runtime.is_closed())
            .field("in_flight", &shared.runtime.in_flight.get())
            .finish()
    }
}
