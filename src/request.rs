//! Request-reply: [`Bus::request`] and responders ([`Bus::respond`],
//! [`SubscriberBuilder::respond`]).
//!
//! # Design
//!
//! - **Where requests travel.** A request type `Q` has a topic of its own for requests,
//!   named `"{Q} (request)"`, apart from `Q`'s default topic: plain subscribers of `Q`
//!   never see requests, and responders never see plain events. Replies of type `R`
//!   travel on `"{R} (reply)"`. Both are ordinary topics (counted in the stats, seen by
//!   observers, drained and closed by shutdown) that no user topic can meet: a topic
//!   name has no space (see `registry`).
//! - **One answers.** The responders of `Q` are the members of one consumer group,
//!   [`RESPONDERS`], on the request topic: each request goes to exactly one free
//!   responder, and a slow or stuck responder holds no request but its own (see `group`).
//! - **The way back.** A request carries in its metadata (`Metadata::reply_to`) the
//!   sending half of a one-slot channel; the requester waits on the receiving half. The
//!   sender lives in the request's `Arc`, so when the last copy of a request drops
//!   without an answer (dropped by the overflow policy of the responders' queue, queued
//!   when the last responder left, abandoned by shutdown) the channel disconnects and the
//!   requester learns it at once rather than at its timeout.
//! - **The reply** is published on the reply topic from inside the responder's handler,
//!   so, like any event a handler publishes, it takes the request's id as causation and
//!   its correlation id. The publish hands the sealed envelope to the requester
//!   (`Draft::requester`); that counts as its route, so a reply whose requester gave up
//!   is counted as unrouted.
//! - **Failure.** A responder's failed attempt that is its last (at-most-once: its only
//!   one) puts the failure's text in the slot; an at-least-once responder's earlier
//!   failures are retried as for any subscriber. The wrapper catches a panic only to
//!   report it, then resumes it, so the subscriber counts it like any panic.
//! - **Types.** A request type has one reply type per bus, fixed by its first
//!   responder ([`ReplyTypes`]): a responder or a request with another reply type is a
//!   typed error, never a request nobody can answer.
//! - **No leak.** The requester holds the only receiver. Giving up (timeout) drops it, so
//!   a late reply finds the channel closed, and the request's memory goes with its last
//!   envelope, as for any event.
//!
//! Lock order: none of its own. A request takes the topic's locks through `publish`; the
//! reply-type map's shard lock is never held while another lock is taken.

use std::any::{Any, TypeId};
use std::convert::Infallible;
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use dashmap::DashMap;

use crate::bus::Bus;
use crate::context;
use crate::envelope::Envelope;
use crate::error::{BoxError, PublishError, RequestError, SubscribeError};
use crate::message::Draft;
use crate::registry::Exchange;
use crate::subscribe::SubscriberBuilder;
use crate::subscriber::panic_message;
use crate::subscription::Subscription;
use crate::topic::{Topic, TopicCore, Wait};

/// The name of the group the responders of a request type form.
pub(crate) const RESPONDERS: &str = "responders";

/// What a requester receives: the reply, or the text of the responder's failure.
pub(crate) type Answer<R> = Result<Envelope<R>, String>;

/// Where a reply of type `R` goes.
pub(crate) type Requester<R> = crossbeam_channel::Sender<Answer<R>>;

/// A request's [`Requester`], its reply type erased (the envelope is typed by `Q`).
pub(crate) type ReplyTo = std::sync::Arc<dyn Any + Send + Sync>;

/// Each request type's reply type, fixed by its first responder for the bus's lifetime.
#[derive(Default)]
pub(crate) struct ReplyTypes(DashMap<TypeId, (TypeId, &'static str)>);

impl ReplyTypes {
    /// Fixes `R` as `Q`'s reply type if `Q` has none; `Err` with the fixed type's name
    /// if it is another.
    fn fix<Q: 'static, R: 'static>(&self) -> Result<(), &'static str> {
        let fixed = *self
            .0
            .entry(TypeId::of::<Q>())
            .or_insert((TypeId::of::<R>(), std::any::type_name::<R>()));
        check::<R>(fixed)
    }

    /// `Ok(false)` if `Q` has no reply type yet; `Err` with the fixed type's name if it
    /// is not `R`.
    fn is_fixed_to<Q: 'static, R: 'static>(&self) -> Result<bool, &'static str> {
        let fixed = self.0.get(&TypeId::of::<Q>()).map(|entry| *entry.value());
        fixed.map_or(Ok(false), |fixed| check::<R>(fixed).map(|()| true))
    }
}

fn check<R: 'static>((id, name): (TypeId, &'static str)) -> Result<(), &'static str> {
    if id == TypeId::of::<R>() {
        Ok(())
    } else {
        Err(name)
    }
}

impl Bus {
    /// Registers a responder for requests of type `Q` with the bus's default options;
    /// see [`SubscriberBuilder::respond`].
    ///
    /// # Errors
    ///
    /// As [`SubscriberBuilder::respond`].
    pub fn respond<Q, R, F>(&self, responder: F) -> Result<Subscription, SubscribeError>
    where
        Q: Send + Sync + 'static,
        R: Send + Sync + 'static,
        F: FnMut(&Envelope<Q>) -> R + Send + 'static,
    {
        self.subscriber::<Q>().respond(responder)
    }

    /// Registers a responder that may fail; see [`SubscriberBuilder::try_respond`].
    ///
    /// # Errors
    ///
    /// As [`SubscriberBuilder::respond`].
    pub fn try_respond<Q, R, Er, F>(&self, responder: F) -> Result<Subscription, SubscribeError>
    where
        Q: Send + Sync + 'static,
        R: Send + Sync + 'static,
        Er: Into<BoxError>,
        F: FnMut(&Envelope<Q>) -> Result<R, Er> + Send + 'static,
    {
        self.subscriber::<Q>().try_respond(responder)
    }

    /// Sends `query` to one responder of `Q` and waits at most `timeout` for its reply.
    ///
    /// The reply is an [`Envelope<R>`] whose `causation_id` is the request's id and
    /// whose `correlation_id` is the request's (a request published by a handler
    /// inherits that handler's, as any publish does). The timeout bounds the whole call:
    /// waiting for room in the responders' queue, and for the reply. The call blocks its
    /// thread; from inside a handler it holds that handler's worker, so a pool whose
    /// every worker waits on a request whose responder runs on the same pool waits until
    /// the timeouts (give such responders [`Dispatch::Thread`](crate::Dispatch::Thread)).
    ///
    /// # Errors
    ///
    /// [`RequestError::NoResponder`] if no responder of `Q` is registered,
    /// [`RequestError::ReplyTypeMismatch`] if they reply with another type than `R`,
    /// [`RequestError::NotSent`] if the request could not be published (no room in
    /// time, or the bus is shut down): these three hand the query back.
    /// [`RequestError::Timeout`], [`RequestError::Failed`] if the responder returned
    /// `Err` or panicked, [`RequestError::Unanswered`] if the request was dropped
    /// unanswered, [`RequestError::Shutdown`] if the bus shut down first.
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use crier::{Bus, Envelope, RequestError};
    ///
    /// struct GetPrice { sku: u32 }
    /// struct Price { cents: u64 }
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::new();
    /// let none = bus.request::<GetPrice, Price>(GetPrice { sku: 7 }, Duration::from_secs(1));
    /// assert!(matches!(none, Err(RequestError::NoResponder(GetPrice { sku: 7 }))));
    ///
    /// let _pricing = bus.respond(|q: &Envelope<GetPrice>| Price { cents: u64::from(q.sku) * 100 })?;
    /// let price = bus.request::<GetPrice, Price>(GetPrice { sku: 7 }, Duration::from_secs(5))?;
    /// assert_eq!(price.cents, 700);
    /// assert!(price.causation_id().is_some(), "the request's id");
    /// # Ok(()) }
    /// ```
    pub fn request<Q, R>(&self, query: Q, timeout: Duration) -> Result<Envelope<R>, RequestError<Q>>
    where
        Q: Send + Sync + 'static,
        R: Send + Sync + 'static,
    {
        let deadline = Instant::now().checked_add(timeout);
        let bus = self.shared();
        let requests = bus.exchange_topic::<Q>(Exchange::Requests);
        if requests.refuses(context::in_handler()) {
            // Before the responders are looked for: shutdown takes them off.
            return Err(RequestError::NotSent(PublishError::Closed(query)));
        }
        match bus.reply_types.is_fixed_to::<Q, R>() {
            Ok(true) => {}
            Ok(false) => return Err(RequestError::NoResponder(query)),
            Err(existing) => {
                return Err(RequestError::ReplyTypeMismatch {
                    query,
                    existing,
                    requested: std::any::type_name::<R>(),
                })
            }
        }
        if !requests.has_members(RESPONDERS) {
            return Err(RequestError::NoResponder(query));
        }
        let (requester, answer) = crossbeam_channel::bounded::<Answer<R>>(1);
        let mut draft = Draft::new(query);
        draft.reply_to = Some(std::sync::Arc::new(requester));
        requests
            .publish(draft, Wait::Until(deadline))
            .map_err(RequestError::NotSent)?;
        let answer = match deadline {
            Some(deadline) => answer.recv_deadline(deadline),
            None => answer.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match answer {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(failure)) => Err(RequestError::Failed(failure)),
            Err(RecvTimeoutError::Timeout) => Err(RequestError::Timeout(timeout)),
            Err(RecvTimeoutError::Disconnected) if bus.runtime.is_closed() => Err(RequestError::Shutdown),
            Err(RecvTimeoutError::Disconnected) => Err(RequestError::Unanswered),
        }
    }
}

impl<Q: Send + Sync + 'static> SubscriberBuilder<Q> {
    /// Registers `responder` to answer [`Bus::request`]s of type `Q` with a reply of type
    /// `R`, and returns the guard that keeps it registered.
    ///
    /// The responders of a type form one group, `"responders"`, on the topic of its
    /// requests, `"{Q} (request)"` (see [`group`](Self::group)): each request goes to
    /// exactly one free responder. Requests are not published on `Q`'s default topic,
    /// so `Q`'s plain subscribers do not see them, and responders do not see plain
    /// events. Options apply as for any group member: capacity and overflow are the
    /// group's queue's, and a responder runs on the pool (even on a bus whose default
    /// is inline) unless it asks for [`Dispatch::Thread`](crate::Dispatch::Thread).
    /// A panic is the responder's failure, reported to the requester as
    /// [`RequestError::Failed`]; an [`at_least_once`](Self::at_least_once) responder
    /// reports only its last attempt's failure, and retries before it.
    ///
    /// # Errors
    ///
    /// [`SubscribeError::InvalidResponder`] for options a responder cannot have: a
    /// named topic or a pattern, a group, a filter, a dedup window, a `start_at`,
    /// inline dispatch. [`SubscribeError::ReplyTypeMismatch`] if `Q` already has
    /// responders replying with another type (a request type has one reply type per
    /// bus, fixed by its first responder). Otherwise as
    /// [`subscribe`](Self::subscribe) and [`group`](Self::group).
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use crier::{Bus, Dispatch, Envelope};
    ///
    /// struct Stock { sku: u32 }
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::new();
    /// let _warehouse = bus
    ///     .subscriber::<Stock>()
    ///     .name("warehouse")
    ///     .dispatch(Dispatch::Thread)
    ///     .respond(|q: &Envelope<Stock>| if q.sku == 1 { 12_u32 } else { 0 })?;
    /// let units = bus.request::<Stock, u32>(Stock { sku: 1 }, Duration::from_secs(5))?;
    /// assert_eq!(*units, 12);
    /// # Ok(()) }
    /// ```
    pub fn respond<R, F>(self, mut responder: F) -> Result<Subscription, SubscribeError>
    where
        R: Send + Sync + 'static,
        F: FnMut(&Envelope<Q>) -> R + Send + 'static,
    {
        self.try_respond(move |q: &Envelope<Q>| Ok::<R, Infallible>(responder(q)))
    }

    /// As [`respond`](Self::respond), for a responder that may fail: its `Err` is the
    /// requester's [`RequestError::Failed`] (with the error's text) and counts as a
    /// failed delivery.
    ///
    /// # Errors
    ///
    /// As [`respond`](Self::respond).
    ///
    /// # Example
    ///
    /// ```
    /// use std::time::Duration;
    /// use crier::{Bus, Envelope, RequestError};
    ///
    /// struct Divide(u32, u32);
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::new();
    /// let _math = bus.subscriber::<Divide>().try_respond(|q: &Envelope<Divide>| {
    ///     q.0.checked_div(q.1).ok_or("division by zero")
    /// })?;
    /// let ok = bus.request::<Divide, u32>(Divide(9, 3), Duration::from_secs(5))?;
    /// assert_eq!(*ok, 3);
    /// let err = bus.request::<Divide, u32>(Divide(1, 0), Duration::from_secs(5));
    /// assert!(matches!(err, Err(RequestError::Failed(text)) if text == "division by zero"));
    /// # Ok(()) }
    /// ```
    pub fn try_respond<R, Er, F>(self, mut responder: F) -> Result<Subscription, SubscribeError>
    where
        R: Send + Sync + 'static,
        Er: Into<BoxError>,
        F: FnMut(&Envelope<Q>) -> Result<R, Er> + Send + 'static,
    {
        let bus = self.bus().clone();
        let requests = Topic {
            core: bus.exchange_topic::<Q>(Exchange::Requests),
            bus: bus.clone(),
        };
        let (builder, last_attempt) = self.into_responder(requests)?;
        bus.reply_types
            .fix::<Q, R>()
            .map_err(|existing| SubscribeError::ReplyTypeMismatch {
                request: std::any::type_name::<Q>(),
                existing,
                requested: std::any::type_name::<R>(),
            })?;
        let replies = bus.exchange_topic::<R>(Exchange::Replies);
        builder.subscribe(move |request: &Envelope<Q>| -> Result<(), BoxError> {
            let outcome = panic::catch_unwind(AssertUnwindSafe(|| responder(request)));
            let last = last_attempt.is_some_and(|last| request.attempt() >= last);
            let requester = request.reply_to::<R>();
            match outcome {
                Ok(Ok(reply)) => {
                    answer(&replies, reply, requester);
                    Ok(())
                }
                Ok(Err(error)) => {
                    let error = error.into();
                    if last {
                        fail(requester, error.to_string());
                    }
                    Err(error)
                }
                Err(panic) => {
                    if last {
                        fail(requester, panic_message(&*panic));
                    }
                    panic::resume_unwind(panic)
                }
            }
        })
    }
}

/// Publishes `reply` on the reply topic, handed to `requester` if it waits. A refused
/// reply (the bus shutting down) leaves the requester to learn it from its request.
fn answer<R: Send + Sync + 'static>(replies: &TopicCore<R>, reply: R, requester: Option<&Requester<R>>) {
    let mut draft = Draft::new(reply);
    draft.requester = requester.cloned();
    let _refused = replies.publish(draft, Wait::Never);
}

fn fail<R>(requester: Option<&Requester<R>>, failure: String) {
    if let Some(requester) = requester {
        // Full: it has its answer. Disconnected: it gave up.
        let _ = requester.try_send(Err(failure));
    }
}
