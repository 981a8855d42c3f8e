//! `Scenario`: one event flow tested in given/when/then form (see `testing`).
//!
//! An observe-all [`Recorder`] sees every event on the bus. `when` publishes the flow's
//! first event and waits until the bus is idle; the flow is then that event and every
//! event it caused, directly or through others (by causation id, which handlers'
//! publishes inherit). What each subscriber did in the flow is read from its counters
//! before and after `when`, which is exact as long as nothing but the flow runs then,
//! as in a test.

use std::any::type_name;
use std::collections::HashSet;
use std::fmt::{Debug, Write};
use std::time::Duration;

use crate::bus::Bus;
use crate::envelope::EventId;
use crate::error::SubscribeError;
use crate::observe::AnyEnvelope;
use crate::recorder::Recorder;
use crate::stats::{BusStats, SubscriberStats};

/// How long `given` and `when` wait for the bus to become idle.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// A test of one event flow: given some events, when one is published, then these
/// events were published in its flow and these subscribers succeeded or
/// dead-lettered.
///
/// Each step panics with what was expected and what happened, so a test reads as a
/// chain of steps. "In its flow" follows causation: the `when` event and every event a
/// handler published because of it, directly or through other events. The subscribers'
/// outcomes come from their counters before and after `when` (exact while the flow is
/// all that runs, as in a test).
///
/// # Example
///
/// ```
/// use crier::{testing::Scenario, Bus, Envelope};
///
/// #[derive(Debug, PartialEq)]
/// struct Paid(u32);
/// #[derive(Debug, PartialEq)]
/// struct Shipped(u32);
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = Bus::new();
/// let (b1, b2) = (bus.clone(), bus.clone());
/// let _payment = bus.subscriber::<u32>().name("payment").subscribe(move |order: &Envelope<u32>| {
///     b1.publish(Paid(**order)).unwrap();
/// })?;
/// let _shipping = bus.subscriber::<Paid>().name("shipping").subscribe(move |paid: &Envelope<Paid>| {
///     b2.publish(Shipped(paid.0)).unwrap();
/// })?;
/// Scenario::new(&bus)?
///     .given(6_u32)
///     .when(7_u32)
///     .then_events(&[Paid(7)])
///     .then_events(&[Shipped(7)])
///     .then_succeeded("payment")
///     .then_succeeded("shipping");
/// # Ok(()) }
/// ```
pub struct Scenario {
    bus: Bus,
    everything: Recorder<AnyEnvelope>,
    /// The `when` event, and the counters from just before it.
    root: Option<(EventId, BusStats)>,
}

impl Scenario {
    /// Starts observing every event on `bus`.
    ///
    /// # Errors
    ///
    /// [`SubscribeError::Closed`] once the bus is shut down.
    pub fn new(bus: &Bus) -> Result<Self, SubscribeError> {
        Ok(Scenario {
            bus: bus.clone(),
            everything: Recorder::with(bus.observer())?,
            root: None,
        })
    }

    /// Publishes `event` on its type's topic before the flow (the state the flow
    /// starts from), and waits until the bus is idle.
    ///
    /// # Panics
    ///
    /// If the publish fails, or the bus does not become idle within 10 seconds.
    #[track_caller]
    pub fn given<E: Send + Sync + 'static>(self, event: E) -> Self {
        self.publish(event, "given");
        self
    }

    /// Publishes `event`, the flow's first, and waits until the bus is idle: the flow
    /// has run to its end.
    ///
    /// # Panics
    ///
    /// As [`given`](Self::given).
    #[track_caller]
    pub fn when<E: Send + Sync + 'static>(mut self, event: E) -> Self {
        let before = self.bus.stats();
        let id = self.publish(event, "when");
        self.root = Some((id, before));
        self
    }

    /// The flow's events: the `when` event first, and each other after its cause (the
    /// events one handler published, in the order it published them).
    ///
    /// # Panics
    ///
    /// Before [`when`](Self::when).
    #[track_caller]
    pub fn flow(&self) -> Vec<AnyEnvelope> {
        let Some((root, _)) = &self.root else {
            panic!("the scenario has no flow yet: call when(event) first");
        };
        // The events' own envelopes (the outer ones are the observations').
        let everything: Vec<AnyEnvelope> = self.everything.events().iter().map(|env| (**env).clone()).collect();
        let mut members = HashSet::from([*root]);
        let mut flow: Vec<AnyEnvelope> = everything.iter().filter(|env| env.id() == *root).cloned().collect();
        // Each event joins after its cause. One may be observed before its cause (they
        // are published on different threads): look again until nothing more joins.
        loop {
            let before = flow.len();
            for env in &everything {
                let caused = env.causation_id().is_some_and(|c| members.contains(&c));
                if caused && members.insert(env.id()) {
                    flow.push(env.clone());
                }
            }
            if flow.len() == before {
                return flow;
            }
        }
    }

    /// Asserts that the flow published exactly `expected` events of type `R`, in this
    /// order (the `when` event counts if it is an `R`).
    ///
    /// # Panics
    ///
    /// If they differ: the message shows the expected events and the whole flow.
    #[track_caller]
    pub fn then_events<R: PartialEq + Debug + Send + Sync + 'static>(self, expected: &[R]) -> Self {
        let flow = self.flow();
        let published: Vec<&R> = flow.iter().filter_map(AnyEnvelope::downcast_ref::<R>).collect();
        if !published.iter().copied().eq(expected.iter()) {
            panic!(
                "expected the flow to publish these {} {} events:\n{expected:#?}\nit published {}; the whole flow:{}",
                expected.len(),
                type_name::<R>(),
                published.len(),
                listing(&flow),
            );
        }
        self
    }

    /// Asserts that the flow published no event of type `R`.
    ///
    /// # Panics
    ///
    /// If it did: the message shows the whole flow.
    #[track_caller]
    pub fn then_none<R: PartialEq + Debug + Send + Sync + 'static>(self) -> Self {
        self.then_events::<R>(&[])
    }

    /// Asserts that the subscriber named `name` handled events of the flow and every
    /// one of them succeeded (possibly after retries): its `delivered` count grew, and
    /// its `failed` and `dead_lettered` counts did not.
    ///
    /// # Panics
    ///
    /// If not, or if no subscriber (or more than one) has that name now: the message
    /// shows how its counters moved.
    #[track_caller]
    pub fn then_succeeded(self, name: &str) -> Self {
        let (before, after) = self.counters(name);
        let moved = |f: fn(&SubscriberStats) -> u64| delta(before.as_ref(), &after, f);
        let ok = moved(|s| s.delivered) > 0 && moved(|s| s.failed) == 0 && moved(|s| s.dead_lettered) == 0;
        if !ok {
            panic!(
                "expected `{name}` to succeed in the flow; {}",
                movement(name, before.as_ref(), &after)
            );
        }
        self
    }

    /// Asserts that the subscriber named `name` dead-lettered an event of the flow: its
    /// `dead_lettered` count grew.
    ///
    /// # Panics
    ///
    /// As [`then_succeeded`](Self::then_succeeded).
    #[track_caller]
    pub fn then_dead_lettered(self, name: &str) -> Self {
        let (before, after) = self.counters(name);
        if delta(before.as_ref(), &after, |s| s.dead_lettered) == 0 {
            panic!(
                "expected `{name}` to dead-letter an event of the flow; {}",
                movement(name, before.as_ref(), &after)
            );
        }
        self
    }

    /// The counters of `name` before `when` (`None` if it subscribed since) and now.
    #[track_caller]
    fn counters(&self, name: &str) -> (Option<SubscriberStats>, SubscriberStats) {
        let Some((_, before)) = &self.root else {
            panic!("the scenario has no flow yet: call when(event) first");
        };
        let now = self.bus.stats();
        let Some(after) = now.subscriber(name) else {
            let names: Vec<&str> = now.subscribers.iter().map(|s| s.name.as_str()).collect();
            panic!("no single subscriber is named `{name}` (the subscribers: {names:?})");
        };
        (before.subscriber(name).cloned(), after.clone())
    }

    #[track_caller]
    fn publish<E: Send + Sync + 'static>(&self, event: E, step: &str) -> EventId {
        let receipt = match self.bus.publish(event) {
            Ok(receipt) => receipt,
            Err(error) => panic!("{step}: publishing a {} failed: {error}", type_name::<E>()),
        };
        if let Err(error) = self.bus.wait_idle(IDLE_TIMEOUT) {
            panic!("{step}: {error}");
        }
        receipt.id
    }
}

/// How much the counter `f` grew since `before` (`None`: it subscribed since).
fn delta(before: Option<&SubscriberStats>, after: &SubscriberStats, f: fn(&SubscriberStats) -> u64) -> u64 {
    f(after).saturating_sub(before.map_or(0, f))
}

/// One line per event of the flow: its type, topic and cause.
fn listing(flow: &[AnyEnvelope]) -> String {
    let mut out = String::new();
    for (i, env) in flow.iter().enumerate() {
        let _ = write!(out, "\n  #{i} {} on {}", env.type_name(), env.topic());
        if let Some(cause) = env.causation_id() {
            let _ = write!(out, ", caused by {cause:?}");
        }
    }
    out
}

/// How a subscriber's outcome counters moved, for a panic message.
fn movement(name: &str, before: Option<&SubscriberStats>, after: &SubscriberStats) -> String {
    let moved = |f: fn(&SubscriberStats) -> u64| delta(before, after, f);
    format!(
        "its counters moved by: delivered +{}, failed +{}, dead-lettered +{}, retried +{} (`{name}`{})",
        moved(|s| s.delivered),
        moved(|s| s.failed),
        moved(|s| s.dead_lettered),
        moved(|s| s.retried),
        if before.is_none() {
            " subscribed during the flow"
        } else {
            ""
        },
    )
}

impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario")
            .field("observed", &self.everything.len())
            .field("when", &self.root.as_ref().map(|(id, _)| *id))
            .finish()
    }
}
