//! `Recorder<E>`: a subscriber that keeps every envelope it sees, for tests to wait on
//! and assert about (see `testing`).
//!
//! It is an inline subscriber with an unbounded mailbox, so it records each event on
//! the publishing thread before `publish` returns and never drops one. Its handler
//! owns an [`Ending`] guard: the bus drops the handler when the recorder leaves, at
//! shutdown or unsubscribe, and the guard's drop marks the log ended and wakes its
//! waiters. So a wait ends on an event, on the end, or on its deadline, never on a
//! quiet spell.

use std::fmt::{self, Debug, Write};
use std::time::{Duration, Instant};

use crate::bus::BusShared;
use crate::context;
use crate::envelope::Envelope;
use crate::error::{RecordError, SubscribeError};
use crate::policy::Dispatch;
use crate::subscribe::SubscriberBuilder;
use crate::subscription::Subscription;
use crate::sync::{Arc, Condvar, Mutex, Weak};

/// How long the assertions wait for the bus to become idle, unless told otherwise.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Keeps every event it receives, in the order it received them, for a test to wait
/// for and assert about.
///
/// It records every event published on its topic (or pattern) after it was made, on
/// the publishing thread, before `publish` returns (an inline subscriber with an
/// unbounded mailbox: it never drops one). The assertions first wait until the bus is
/// idle ([`Bus::wait_idle`](crate::Bus::wait_idle)), so "no event" means none after
/// every handler ran, not none after a sleep; they panic with what was expected and
/// what was seen. The waits ([`wait_for`](Self::wait_for),
/// [`wait_until`](Self::wait_until)) end as soon as the events are there, or with an
/// error once the bus shuts down.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use crier::{testing::Recorder, Bus, Envelope};
///
/// #[derive(Debug, Clone, PartialEq)]
/// struct Shipped(u32);
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = Bus::new();
/// let shipped = Recorder::<Shipped>::new(&bus)?;
/// let bus2 = bus.clone();
/// let _warehouse = bus.subscribe(move |order: &Envelope<u32>| {
///     if **order % 2 == 0 {
///         bus2.publish(Shipped(**order)).unwrap();
///     }
/// })?;
/// for order in 1_u32..=4 {
///     bus.publish(order)?;
/// }
/// shipped.assert_events(&[Shipped(2), Shipped(4)]);
/// assert_eq!(shipped.wait_for(2, Duration::from_secs(1))?.len(), 2);
/// # Ok(()) }
/// ```
pub struct Recorder<E: Send + Sync + 'static> {
    log: Arc<Log<E>>,
    /// `None` once [`stop`](Self::stop)ped.
    subscription: Option<Subscription>,
    bus: Weak<BusShared>,
    idle_timeout: Duration,
}

struct Log<E> {
    state: Mutex<LogState<E>>,
    /// Notified by each event and by the end.
    changed: Condvar,
}

struct LogState<E> {
    events: Vec<Envelope<E>>,
    /// The recorder left (shutdown or unsubscribe): nothing more will come.
    ended: bool,
}

/// Owned by the recorder's handler; its drop ends the log (see the module docs).
struct Ending<E>(Arc<Log<E>>);

impl<E> Drop for Ending<E> {
    fn drop(&mut self) {
        self.0.state.lock().ended = true;
        self.0.changed.notify_all();
    }
}

impl<E: Send + Sync + 'static> Recorder<E> {
    /// Records the events of `E`'s own topic (the one [`Bus::publish`](crate::Bus::publish)
    /// publishes on).
    ///
    /// # Errors
    ///
    /// As [`SubscriberBuilder::subscribe`]: [`SubscribeError::Closed`] once the bus is
    /// shut down.
    pub fn new(bus: &crate::Bus) -> Result<Self, SubscribeError> {
        Recorder::with(bus.subscriber::<E>())
    }

    /// Records what `builder` subscribes to: a named topic, a pattern, with a filter or
    /// a name. It is made inline and unbounded whatever the builder says (see the type's
    /// docs).
    ///
    /// # Errors
    ///
    /// As [`SubscriberBuilder::subscribe`]; options that an inline subscriber cannot
    /// have (a group, `concurrency`) are refused there.
    pub fn with(builder: SubscriberBuilder<E>) -> Result<Self, SubscribeError> {
        let bus = Arc::downgrade(builder.bus());
        let log = Arc::new(Log {
            state: Mutex::new(LogState {
                events: Vec::new(),
                ended: false,
            }),
            changed: Condvar::new(),
        });
        let ending = Ending(log.clone());
        let subscription = builder
            .dispatch(Dispatch::Inline)
            .unbounded()
            .subscribe(move |env: &Envelope<E>| {
                let log = &ending.0;
                log.state.lock().events.push(env.clone());
                log.changed.notify_all();
            })?;
        Ok(Recorder {
            log,
            subscription: Some(subscription),
            bus,
            idle_timeout: IDLE_TIMEOUT,
        })
    }

    /// How long the assertions wait for the bus to become idle (10 seconds unless set).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// A copy of the events recorded so far, oldest first.
    pub fn events(&self) -> Vec<Envelope<E>> {
        self.log.state.lock().events.clone()
    }

    /// How many events were recorded so far.
    pub fn len(&self) -> usize {
        self.log.state.lock().events.len()
    }

    /// `true` while nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets what was recorded so far; recording goes on.
    pub fn clear(&self) {
        self.log.state.lock().events.clear();
    }

    /// Waits until at least `n` events were recorded, and returns them all.
    ///
    /// # Errors
    ///
    /// [`RecordError::Timeout`] if fewer came within `timeout`, [`RecordError::Ended`]
    /// if the bus shut down (or the recorder was unsubscribed) first; both say how many
    /// came.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Result<Vec<Envelope<E>>, RecordError> {
        self.wait_until(|events| events.len() >= n, timeout)
    }

    /// Waits until `done` holds for the events recorded so far (it is called again
    /// after each new one), and returns them. `done` runs under the recorder's lock: it
    /// must not publish what the recorder records.
    ///
    /// # Errors
    ///
    /// As [`wait_for`](Self::wait_for).
    pub fn wait_until(
        &self,
        mut done: impl FnMut(&[Envelope<E>]) -> bool,
        timeout: Duration,
    ) -> Result<Vec<Envelope<E>>, RecordError> {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.log.state.lock();
        loop {
            if done(&state.events) {
                return Ok(state.events.clone());
            }
            let seen = state.events.len();
            if state.ended {
                return Err(RecordError::Ended { seen });
            }
            state = match self.log.changed.wait_deadline(state, deadline) {
                Some(state) => state,
                None => return Err(RecordError::Timeout { seen, timeout }),
            };
        }
    }

    /// Unsubscribes: nothing more is recorded. What was recorded stays readable.
    pub fn stop(&mut self) {
        if let Some(subscription) = self.subscription.take() {
            subscription.unsubscribe();
        }
    }

    /// Waits until the bus is idle, so that every handler that could publish to the
    /// recorder has run; panics (naming what is still in flight) if it does not become
    /// idle within the idle timeout.
    #[track_caller]
    fn after_idle(&self) -> Vec<Envelope<E>> {
        if let Some(bus) = self.bus.upgrade() {
            if !context::on_bus()
                && !bus
                    .runtime
                    .in_flight
                    .wait_zero(Instant::now().checked_add(self.idle_timeout))
            {
                panic!(
                    "the bus did not become idle within {:?}: {} deliveries still queued or running{}",
                    self.idle_timeout,
                    bus.runtime.in_flight.get(),
                    busy_subscribers(&bus),
                );
            }
        }
        self.events()
    }
}

impl<E: Send + Sync + Debug + 'static> Recorder<E> {
    /// Asserts that exactly `n` events were recorded, once the bus is idle.
    ///
    /// # Panics
    ///
    /// If the count differs (the message lists what was recorded), or the bus does not
    /// become idle within the idle timeout.
    #[track_caller]
    pub fn assert_count(&self, n: usize) {
        let events = self.after_idle();
        if events.len() != n {
            panic!(
                "expected {n} {} events, recorded {}:{}",
                type_name::<E>(),
                events.len(),
                listing(&events)
            );
        }
    }

    /// Asserts that no event was recorded, once the bus is idle.
    ///
    /// # Panics
    ///
    /// As [`assert_count`](Self::assert_count).
    #[track_caller]
    pub fn assert_none(&self) {
        self.assert_count(0);
    }

    /// Asserts that the events recorded are `expected`, in this order and no others,
    /// once the bus is idle.
    ///
    /// # Panics
    ///
    /// If they differ (the message shows both lists and the first difference), or the
    /// bus does not become idle within the idle timeout.
    #[track_caller]
    pub fn assert_events(&self, expected: &[E])
    where
        E: PartialEq,
    {
        let events = self.after_idle();
        let differ = events.len() != expected.len() || events.iter().zip(expected).any(|(env, e)| **env != *e);
        if differ {
            let first = events
                .iter()
                .zip(expected)
                .position(|(env, e)| **env != *e)
                .unwrap_or_else(|| events.len().min(expected.len()));
            panic!(
                "expected these {} {} events:\n{expected:#?}\nrecorded {} (the first difference at #{first}):{}",
                expected.len(),
                type_name::<E>(),
                events.len(),
                listing(&events),
            );
        }
    }

    /// Asserts that some recorded event matches `predicate`, once the bus is idle;
    /// returns the first that does.
    ///
    /// # Panics
    ///
    /// If none does (the message lists what was recorded), or the bus does not become
    /// idle within the idle timeout.
    #[track_caller]
    pub fn assert_any(&self, predicate: impl Fn(&Envelope<E>) -> bool) -> Envelope<E> {
        let events = self.after_idle();
        match events.iter().find(|env| predicate(env)) {
            Some(env) => env.clone(),
            None => panic!(
                "expected a {} event matching the predicate, none of {} did:{}",
                type_name::<E>(),
                events.len(),
                listing(&events)
            ),
        }
    }
}

fn type_name<E>() -> &'static str {
    std::any::type_name::<E>()
}

/// One line per envelope: its place, `seq`, topic and event.
fn listing<E: Debug>(events: &[Envelope<E>]) -> String {
    if events.is_empty() {
        return " none".to_owned();
    }
    let mut out = String::new();
    for (i, env) in events.iter().enumerate() {
        let _ = write!(out, "\n  #{i} seq {} on {}: {:?}", env.seq(), env.topic(), **env);
    }
    out
}

/// The subscribers with deliveries queued or waiting for a retry, for a panic message.
fn busy_subscribers(bus: &BusShared) -> String {
    let stats = bus.stats();
    let busy: Vec<String> = stats
        .subscribers
        .iter()
        .filter(|s| s.queued > 0 || s.retrying > 0)
        .map(|s| format!("{} ({} queued, {} retrying)", s.name, s.queued, s.retrying))
        .collect();
    match busy.is_empty() {
        true => String::new(),
        false => format!("; busy: {}", busy.join(", ")),
    }
}

impl<E: Send + Sync + 'static> fmt::Debug for Recorder<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.log.state.lock();
        f.debug_struct("Recorder")
            .field("event", &type_name::<E>())
            .field("recorded", &state.events.len())
            .field("ended", &state.ended)
            .finish()
    }
}
