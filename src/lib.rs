//! An embeddable, in-process, typed event bus.
//!
//! A service builds one [`Bus`] at start-up, subscribes handlers, and publishes typed
//! events that return at once. Each subscriber has its own bounded mailbox and picks
//! where its handler runs and what a full mailbox does.
//! Every event is accounted for, and tests wait for the bus to go idle instead of
//! sleeping.
//!
//! # Hello world
//!
//! ```
//! use std::time::Duration;
//! use crier::{Bus, Envelope};
//!
//! struct OrderPlaced { id: u64, total_cents: u64 }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let bus = Bus::new();
//!     let _email = bus.subscribe(|order: &Envelope<OrderPlaced>| {
//!         println!("mail the receipt for order {} ({} cents)", order.id, order.total_cents);
//!     })?;
//!     bus.publish(OrderPlaced { id: 1, total_cents: 2_500 })?;
//!     bus.wait_idle(Duration::from_secs(5))?;
//!     println!("{}", bus.stats());
//!     Ok(())
//! }
//! ```
//!
//! # Concepts
//!
//! - **Events** are any `E: Send + Sync + 'static`; no `Clone` needed. Each publish
//!   puts the event and its metadata in one `Arc` shared by every subscriber, and
//!   handlers see it as an [`Envelope<E>`] (id, topic, `seq`, time, key, headers,
//!   correlation and causation ids, attempt).
//! - **Topics.** Each event type has a default topic ([`Bus::topic`]); named topics
//!   ([`Bus::topic_named`], `"orders.eu"`) carry separate streams of one type. A
//!   [`Topic<E>`] handle publishes without a registry lookup. The type picks the
//!   topic, so mind inference: `bus.publish(1)` publishes an `i32`, which a `u32`
//!   subscriber never sees (the event is counted as unrouted on the `i32` topic).
//!   A typed `Topic<E>` handle rules that mistake out.
//! - **Subscribers** are push handlers ([`Bus::subscribe`], or [`Bus::subscriber`] for
//!   options) run on the worker pool, on a thread of their own, or inline on the
//!   publishing thread ([`Dispatch`]); **receivers** ([`Bus::receiver`]) are pulled by
//!   the caller. [`Subscription`] and [`Receiver`] unsubscribe when dropped.
//!
//! # Promises
//!
//! ## Accepted means accounted
//!
//! `publish` returns `Ok` once the event is queued for every matching subscriber, or
//! accounted for by that subscriber's overflow policy. Every `Err` hands the event back
//! ([`PublishError::into_event`]). For every subscriber, whenever nothing is running:
//! `delivered + failed + dropped + queued == accepted` ([`SubscriberStats::is_balanced`]).
//! An event that matches no subscriber is counted as unrouted on its topic.
//!
//! ```
//! use std::time::Duration;
//! use crier::{Bus, Envelope, Overflow};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = Bus::new();
//! let slow = bus.subscriber::<u32>().capacity(1).overflow(Overflow::DropNewest).receiver()?;
//! let fine = bus.subscribe(|_: &Envelope<u32>| {})?;
//! for n in 0..10_u32 {
//!     bus.publish(n)?;
//! }
//! bus.wait_idle(Duration::from_secs(5))?;
//! let stats = bus.stats();
//! for sub in &stats.subscribers {
//!     assert!(sub.is_balanced());
//!     assert_eq!(sub.accepted, 10);
//! }
//! assert_eq!(slow.stats().dropped.newest, 9);
//! assert_eq!(fine.stats().delivered, 10);
//! # Ok(()) }
//! ```
//!
//! ## Ordering
//!
//! One subscriber runs one event at a time, and sees a topic's events in `seq` order,
//! which is publish order for each publishing thread. The pool never runs one
//! subscriber on two workers at once. Across topics no order is promised.
//!
//! ## Panics are contained
//!
//! A handler that panics or returns `Err` is a failed delivery: counted, its text kept
//! as the subscriber's `last_error`, and passed to the error hook
//! ([`SubscriberBuilder::on_error`]). The worker and every other subscriber go on. The
//! bus holds no lock of its own while user code runs, except the subscriber's own run
//! lock, which only unsubscribe waits for.
//!
//! ```
//! use crier::{Bus, Envelope};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = Bus::builder().inline().build()?;
//! let bad = bus.subscribe(|_: &Envelope<u8>| -> Result<(), String> { Err("no stock".into()) })?;
//! let good = bus.subscribe(|_: &Envelope<u8>| {})?;
//! bus.publish(1_u8)?;
//! assert_eq!(bad.stats().failed, 1);
//! assert_eq!(bad.stats().last_error.as_deref(), Some("no stock"));
//! assert_eq!(good.stats().delivered, 1);
//! # Ok(()) }
//! ```
//!
//! ## Re-entrancy
//!
//! A handler may publish, subscribe and unsubscribe. An event it publishes gets the
//! handled event's id as `causation_id` and inherits its `correlation_id`. Inline
//! dispatch is breadth-first per thread. A publish from a handler never waits for
//! mailbox space: where the policy would block, it returns [`PublishError::Full`] with
//! the event, and the refusal is counted on the full subscriber (`refused`).
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use crier::{Bus, Envelope};
//!
//! struct Ping(u32);
//! struct Pong(u32);
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = Bus::builder().inline().build()?;
//! let weak = bus.downgrade();
//! let _ping = bus.subscribe(move |ping: &Envelope<Ping>| {
//!     if let Some(bus) = weak.upgrade() {
//!         let _ = bus.publish(Pong(ping.0));
//!     }
//! })?;
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let log = seen.clone();
//! let _pong = bus.subscribe(move |pong: &Envelope<Pong>| {
//!     log.lock().unwrap().push((pong.0, pong.causation_id()));
//! })?;
//! let ping = bus.publish(Ping(7))?;
//! assert_eq!(*seen.lock().unwrap(), vec![(7, Some(ping.id))]);
//! # Ok(()) }
//! ```
//!
//! ## Unsubscribe is final
//!
//! Once dropping a [`Subscription`] (or [`Subscription::unsubscribe`]) returns, its
//! handler never runs again; the call waits for an invocation running on another
//! thread, and from inside the handler itself it does not wait. A subscriber added
//! while an event is being published does not get that event.
//!
//! ## Slow subscribers are isolated
//!
//! A full mailbox affects only its subscriber, as its [`Overflow`] policy says:
//! `Block` (the default) makes the publisher wait, `BlockTimeout` waits then drops,
//! `DropNewest` and `DropOldest` drop and count, `Reject` refuses the whole publish. A
//! [`Receiver`] that lost events to `DropOldest` is told how many
//! ([`RecvError::Lagged`]).
//!
//! ## Shutdown loses nothing silently
//!
//! [`Bus::shutdown`] refuses new publishes (`Err(Closed(event))`), drains what was
//! accepted (handlers may still publish while it drains, so every flow that was started
//! runs to its end), joins the threads and returns a [`ShutdownReport`]; [`Bus::abort`] drops the
//! backlog at once and counts it. Dropping the last `Bus` handle shuts down gracefully
//! (see [`Bus`]).
//!
//! ## Bounded memory
//!
//! Every mailbox is bounded (1024 events by default) unless a subscriber asks for
//! [`SubscriberBuilder::unbounded`]; its depth and high-water mark are in the stats.
//!
//! A mailbox is not always a queue of its own. Subscribers and receivers with no
//! filter, a bounded capacity and [`Overflow::Block`], [`Overflow::Reject`] or
//! [`Overflow::DropOldest`] (the defaults), running on the pool or a thread of their
//! own or pulling through a [`Receiver`], share their topic's *broadcast ring*: a
//! publish writes an event there once, however many of them there are, and each reads
//! it through a cursor of its own, still bounded by its own capacity and policy.
//! Inline subscribers, and those with other options, keep a lock-free queue of their
//! own (a crossbeam channel). Both kinds behave the same; [`Receiver`]'s docs give the
//! ring's memory bound.
//!
//! # Testing
//!
//! Build the bus with [`BusBuilder::inline`] and every handler has run when `publish`
//! returns; or keep the pool and call [`Bus::wait_idle`], which counts deliveries
//! (including those of events that handlers publish) instead of waiting for silence.
//! [`testing::ManualClock`] fixes the time envelopes are stamped with.
//!
//! # Features
//!
//! - `serde`: `Serialize` for [`BusStats`], [`ShutdownReport`] and the types in them.

#![cfg_attr(loom, allow(dead_code, unused_imports))]

#[cfg(not(loom))]
mod broadcast;
#[cfg(not(loom))]
mod builder;
#[cfg(not(loom))]
mod bus;
#[cfg(not(loom))]
mod clock;
#[cfg(not(loom))]
mod context;
mod count;
#[cfg(not(loom))]
mod dead_letter;
#[cfg(not(loom))]
mod delivery;
#[cfg(not(loom))]
mod dispatch;
#[cfg(not(loom))]
mod envelope;
#[cfg(not(loom))]
mod error;
#[cfg(not(loom))]
mod in_flight;
#[cfg(not(loom))]
mod inbox;
#[cfg(not(loom))]
mod mailbox;
#[cfg(not(loom))]
mod message;
#[cfg(not(loom))]
mod policy;
#[cfg(not(loom))]
mod receiver;
#[cfg(not(loom))]
mod registry;
#[cfg(not(loom))]
mod retries;
mod ring;
mod schedule;
#[cfg(not(loom))]
mod shutdown;
mod slots;
#[cfg(not(loom))]
mod stats;
#[cfg(not(loom))]
mod subscribe;
#[cfg(not(loom))]
mod subscriber;
#[cfg(not(loom))]
mod subscription;
mod sync;
#[cfg(not(loom))]
pub mod testing;
#[cfg(not(loom))]
mod timer;
#[cfg(not(loom))]
mod topic;

#[cfg(loom)]
mod in_flight;
#[cfg(all(test, loom))]
mod loom_tests;

#[cfg(not(loom))]
pub use crate::{
    builder::BusBuilder,
    bus::{Bus, WeakBus},
    clock::{Alarm, Clock, SystemClock},
    dead_letter::DeadLetter,
    delivery::{Backoff, Delivery, Retry, RetryOrder, DEFAULT_DEAD_LETTER_CAPACITY, DEFAULT_MAX_ATTEMPTS},
    envelope::{Envelope, EventId, Headers},
    error::{
        BoxError, BuildError, Failure, HandlerError, PublishError, RecvError, RecvTimeoutError, ShutdownError,
        SubscribeError, TopicError, TryRecvError, WaitIdleError,
    },
    message::Message,
    policy::{Dispatch, DropReason, Overflow},
    receiver::{Iter, Receiver, TryIter},
    shutdown::ShutdownReport,
    stats::{BusStats, Consumer, DropCounts, SubscriberId, SubscriberStats, TopicStats},
    subscribe::{HandlerResult, SubscriberBuilder},
    subscription::Subscription,
    topic::{Receipt, Topic},
};
