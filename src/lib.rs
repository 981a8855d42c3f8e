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
//!   the caller. [`Subscription`], [`Receiver`] and [`AckReceiver`] unsubscribe when
//!   dropped, or by their `unsubscribe`, which returns the final counters.
//!
//! # Promises
//!
//! ## Accepted means accounted
//!
//! `publish` returns `Ok` once the event is queued for every matching subscriber, or
//! accounted for by that subscriber's overflow policy. Every `Err` hands the event back
//! ([`PublishError::into_event`]). For every subscriber, whenever nothing is running:
//! `delivered + failed + dead_lettered + deduplicated + dropped + queued + retrying +
//! unacked + handed_over == accepted` ([`SubscriberStats::is_balanced`];
//! `dead_lettered`, `deduplicated`, `retrying`, `unacked` and `handed_over` stay zero
//! unless the subscriber is at-least-once, an [`AckReceiver`] or a group member).
//! An event that matches no subscriber is counted as unrouted on its topic. Beside the
//! counts, each push subscriber reports how long its handler takes
//! ([`SubscriberStats::latency`]: the p50 and p99 of one invocation in 16), and
//! `bus.stats()` prints all of it as a table.
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
//! subscriber on two workers at once. Across topics no order is promised. Under
//! at-least-once, retries keep this order or not, as the subscriber chose (below).
//! Among the subscribers of one event, inline ones run in order of priority, highest
//! first, then in the order they subscribed ([`SubscriberBuilder::priority`]).
//!
//! ## Panics are contained
//!
//! A handler that panics or returns `Err` is a failed attempt: counted, its text kept
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
//! ## Delivery guarantees
//!
//! Each subscriber picks what a failed handler (an `Err` or a panic) means:
//!
//! | policy | can it duplicate? | can it lose? | cost |
//! |---|---|---|---|
//! | [`Delivery::AtMostOnce`] (default) | never: each event is handled at most once | a failure is final, counted as `failed` | none |
//! | [`Delivery::AtLeastOnce`] | yes: an attempt that failed after a side effect is retried | no: after the last attempt the event becomes a [`DeadLetter`], counted and kept | while handlers succeed, nothing measurable for push subscribers (B2, B3: 0.9–1.0× at-most-once), about 1.2× for ack receivers, which also settle each event (B1). A dedup window adds a look-up and an insert per delivery, and a key to each event (10,000-key windows): B2 about 1.1× (1.6× in instructions), B3 1.4–1.5× (inline handlers share their topic's key table), B1 1.5–1.7× (a window per ack receiver). A failure costs one timer entry (see `BENCHMARKS.md`) |
//!
//! Under at-least-once ([`SubscriberBuilder::at_least_once`]), a failed event is
//! retried after a [`Backoff`] measured on the bus [`Clock`] (fixed, or exponential
//! with a cap, with optional deterministic jitter), up to `max_attempts` (5 by
//! default; unlimited only by [`Retry::unlimited_attempts`]). The handler sees
//! [`Envelope::attempt`]. The order is chosen explicitly: [`Retry::ordered`] holds the
//! subscriber's later events until the failing one succeeds or is dead-lettered;
//! [`Retry::unordered`] lets them overtake it (at most `capacity` events wait for a
//! retry at once; then the subscriber takes no new event until one settles).
//!
//! When the attempts run out, a [`DeadLetter<E>`](DeadLetter) (the envelope, the
//! subscriber's name, the attempts, the last error's text) is published on the bus;
//! subscribe to it like any event. If it reaches nobody, the subscriber keeps it in a
//! bounded store (1024 by default, oldest evicted and counted) that
//! [`Subscription::dead_letters`] reads and [`Subscription::take_dead_letters`]
//! empties, to publish again. A failing dead-letter subscriber never makes a dead
//! letter of a dead letter.
//!
//! Overflow policies and unsubscribe still drop events under either policy, and count
//! them: delivery policies are about the handler failing, not about a full mailbox.
//!
//! A pull subscription can be at-least-once too: [`SubscriberBuilder::ack_receiver`]
//! makes an [`AckReceiver`] whose deliveries are [`AckHandle`]s. The caller
//! [`ack`](AckHandle::ack)s each one it processed; a [`nack`](AckHandle::nack), or
//! dropping the handle, brings the event back after the backoff as the next attempt,
//! then dead-letters it, as above. At most
//! [`max_unacked`](SubscriberBuilder::max_unacked) handles are out at once, like a
//! broker's prefetch.
//!
//! ```
//! use std::time::Duration;
//! use crier::{testing::ManualClock, Backoff, Bus, DeadLetter, Envelope, Retry};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let clock = ManualClock::new();
//! let bus = Bus::builder().clock(clock.clone()).build()?;
//! let payments = bus
//!     .subscriber::<u32>()
//!     .name("payments")
//!     .at_least_once(Retry::ordered().max_attempts(3).backoff(Backoff::fixed(Duration::from_secs(1))))
//!     .subscribe(|order: &Envelope<u32>| -> Result<(), String> {
//!         if **order == 13 { Err("card declined".into()) } else { Ok(()) }
//!     })?;
//! bus.publish(12_u32)?;
//! bus.publish(13_u32)?;
//! bus.publish(14_u32)?; // held behind 13: the retries are ordered
//! bus.wait_idle(Duration::from_secs(5))?; // does not wait for the manual clock
//! assert_eq!((payments.stats().delivered, payments.stats().retrying), (1, 1));
//! clock.advance(Duration::from_secs(1));
//! bus.wait_idle(Duration::from_secs(5))?;
//! clock.advance(Duration::from_secs(1));
//! bus.wait_idle(Duration::from_secs(5))?;
//! let stats = payments.stats();
//! assert_eq!((stats.delivered, stats.retried, stats.dead_lettered), (2, 2, 1));
//! let kept: Vec<DeadLetter<u32>> = payments.dead_letters().unwrap_or_default();
//! assert_eq!((**kept[0].envelope(), kept[0].attempts(), kept[0].error()), (13, 3, "card declined"));
//! # Ok(()) }
//! ```
//!
//! ## Idempotency
//!
//! An event may carry an idempotency key (`bus.message(e).idempotency_key(k)`, text or
//! an integer: [`IdempotencyKey`]), or a subscriber may derive one
//! ([`SubscriberBuilder::dedup_by`]). A subscriber with a [`DedupWindow`]
//! ([`SubscriberBuilder::dedup`]) skips an event whose key already
//! *succeeded* for it and counts it as `deduplicated`. The window is bounded by count
//! and by age, whichever is hit first, and keeps a fixed-size hash per key, so its
//! memory stays flat however many keys pass. Ages run in event time, from the publish
//! of the event that succeeded to the publish of the one screened (see
//! [`DedupWindow`]).
//!
//! A topic can deduplicate at the source instead ([`Topic::set_dedup_window`], like
//! NATS JetStream's `Nats-Msg-Id`): a publish whose key the topic accepted within its
//! window returns `Ok` with [`Receipt::duplicate`] set and the original `seq`, and
//! delivers nothing, to any subscriber. The key is recorded only when a publish is
//! accepted, so a publish refused with `Err` can be retried; of publishes racing with
//! one key, exactly one is accepted.
//!
//! *Exactly-once effect* here means: with at-least-once delivery and a window, a key's
//! handler completes successfully once, as long as (1) duplicates arrive while the key
//! is in the window (younger than its age bound, among its last `capacity` keys),
//! (2) within one subscriber of one process (nothing is persisted), and (3) the effect
//! is done when the handler returns `Ok`. A handler that fails after its side effect is
//! retried and repeats it, as with any broker; outside the window a duplicate runs
//! again. Both are documented false negatives, never silent losses. A topic's window
//! gives the same bounds one step earlier: a repeated publish inside it is never
//! delivered to anyone, and a repeat outside it is a new event.
//!
//! ```
//! use std::time::Duration;
//! use crier::{Bus, DedupWindow, Envelope, Retry};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = Bus::builder().inline().build()?;
//! let charges = bus.topic::<u64>();
//! charges.set_dedup_window(DedupWindow::new(10_000, Duration::from_secs(120)))?;
//! let ledger = charges
//!     .subscriber()
//!     .at_least_once(Retry::ordered())
//!     .dedup(DedupWindow::new(10_000, Duration::from_secs(3600)))
//!     .subscribe(|_: &Envelope<u64>| {})?;
//! let first = charges.message(500).idempotency_key("order-7").publish()?;
//! let again = charges.message(500).idempotency_key("order-7").publish()?;
//! assert!(again.duplicate && again.seq == first.seq); // stopped at the topic
//! assert_eq!(ledger.stats().delivered, 1);
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
//! A topic's history is off by default, and bounded by its [`Retention`] once set:
//! by count, or by age alone when the user chooses so (see below).
//!
//! # History and replay
//!
//! A topic can keep its history: [`Topic::set_retention`] with a [`Retention`] keeps
//! the last `n` events, the events younger than an age, or both, optionally
//! *compacted* to the latest event per partition key (a "current state" topic, like
//! Kafka's log compaction). Every event kept keeps its offset (its `seq`) and all its
//! metadata. Without a retention a topic keeps nothing and pays nothing.
//!
//! Reading it: [`Topic::history`] (a snapshot of all of it), [`Topic::history_from`]
//! an [`Offset`] (`Earliest`, `Latest`, `At(seq)`, `Since(time)`),
//! [`Topic::history_range`] by offsets, [`Topic::history_between`] by times,
//! [`Topic::oldest_offset`] and
//! [`Topic::next_offset`], and [`Topic::replay`], which folds the history into a
//! closure and returns the offset to continue from: rebuild a projection, save it with
//! that offset, and later apply only what came after.
//!
//! A subscriber, receiver or ack receiver can start in the history:
//! [`SubscriberBuilder::start_at`] an [`Offset`] gives it the events kept from there,
//! then the live ones, with no gap and no event twice at the hand-off, however many
//! publishers are running (the history up to a cut and the subscription are taken in
//! one hold of the topic's lock, and a publish that read the subscribers before that
//! matches again; loom model `loom_joining_at_a_cut_gets_every_offset_once`). Its
//! delivery policy, dedup window and overflow policy apply to replayed events as to
//! live ones.
//!
//! With the `serde` feature, a history is exported as JSON Lines (one event per line,
//! with its offset, id, time and metadata) and imported into another bus, all or
//! nothing, keeping offsets and ids; `examples/event_sourcing.rs` rebuilds an account
//! service's balances from its history, resumes a projection from a snapshot, and
//! restores the history after a restart.
//!
//! Reading never starts silently somewhere else. An offset whose event was let go (or
//! was published before the retention was set) is [`ReplayError::Evicted`] with the
//! oldest offset still available; an offset not yet published is
//! [`ReplayError::Future`]; reading since a time fails the same way if an event
//! published at or after it was let go. A snapshot is taken in one hold of the topic's
//! lock, so it is gap-free and holds no event twice, however many publishers run; the
//! closure of a replay runs with no lock held.
//!
//! ```
//! use crier::{Bus, Offset, Retention};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = Bus::new();
//! let visits = bus.topic::<&str>();
//! visits.set_retention(Retention::last(10_000))?;
//! for page in ["/", "/pricing", "/"] {
//!     visits.publish(page)?;
//! }
//! let mut home = 0;
//! let next = visits.replay(Offset::Earliest, |env| home += usize::from(**env == "/"))?;
//! assert_eq!((home, next), (2, 3));
//!
//! // A receiver that starts where the fold ended gets only what came after.
//! let rx = visits.subscriber().start_at(Offset::At(next)).receiver()?;
//! visits.publish("/docs")?;
//! assert_eq!(*rx.recv()?, "/docs");
//! # Ok(()) }
//! ```
//!
//! # Topics and patterns
//!
//! A named topic's name is dot-separated tokens (`orders.eu.created`). A subscriber
//! can listen to every named topic of its event type whose name matches a pattern,
//! NATS style: `*` is exactly one token, `>` (last only) one or more
//! ([`SubscriberBuilder::pattern`]). Topics made after it subscribed are matched too.
//! It stays one subscriber, with one mailbox and one set of counters, so one
//! publisher's events reach it in order across topics, and [`Envelope::topic`] says
//! where each came from. A topic is matched against the patterns when it is made (a
//! token trie, not a scan), and a pattern against the topics when it subscribes:
//! publishing costs the same with 10,000 patterns registered as with none.
//!
//! ```
//! use crier::{Bus, Envelope};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = Bus::builder().inline().build()?;
//! let audit = bus.subscriber::<String>().pattern("orders.>").receiver()?;
//! bus.topic_named::<String>("orders.eu.created")?.publish("order 1".into())?;
//! bus.topic_named::<String>("orders.us.paid")?.publish("order 2".into())?;
//! bus.topic_named::<String>("billing.eu")?.publish("invoice 1".into())?;
//! let topics: Vec<String> = audit.try_iter().map(|env| env.topic().to_owned()).collect();
//! assert_eq!(topics, ["orders.eu.created", "orders.us.paid"]);
//! # Ok(()) }
//! ```
//!
//! # Consumer groups
//!
//! Subscribers that join one group ([`SubscriberBuilder::group`]) share one stream:
//! each event goes to exactly one member, whichever is free (competing consumers, like
//! a RabbitMQ queue with several consumers or a NATS queue group). The group is one
//! queue on its topic, with its own capacity and overflow policy, counted in
//! [`BusStats::groups`] ([`GroupStats`]); members take from it and are counted like
//! any subscriber. A member that joins takes its share from then on. A member that
//! leaves loses nothing: queued events are the group's, and its events waiting for a
//! retry go back to the queue, attempt count kept. A member that fails or stalls never
//! holds back the others. Members run in parallel, so a group promises no order across
//! its events. Receivers form groups the same way: each `recv` takes the group's next
//! event. So do [`AckReceiver`]s, each with its own limit of handles out; one that
//! leaves gives the group its waiting retries, and each handle it gave out that is
//! nacked or dropped afterwards. `examples/work_queue.rs` stops a worker half-way
//! through a queue of uploads, and every file is still processed exactly once.
//!
//! With [key affinity](SubscriberBuilder::key_affinity), a group shares its events
//! by partition key instead ([`Message::key`]; Kafka's partitions): a key's events go
//! to one member while the members stay the same, and are handled one at a time in
//! `seq` order across the group, also while members come and go and while an event
//! waits for its retry (other keys overtake it).
//!
//! # Keyed parallelism
//!
//! One subscriber can run its handler up to `n` times at once with
//! [`concurrency(n)`](SubscriberBuilder::concurrency) (the handler is then `Fn +
//! Sync`): events of different partition keys run in parallel, each key's events one
//! at a time in `seq` order, keyless events in any order. It stays one subscriber: one
//! id, one guard, one entry in the stats, one dead-letter store.
//!
//! ```
//! use std::time::Duration;
//! use crier::{Bus, Envelope};
//!
//! struct Charge { account: String, cents: u64 }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = Bus::new();
//! let charges = bus.subscriber::<Charge>().concurrency(4).subscribe(|c: &Envelope<Charge>| {
//!     // Runs on up to 4 threads; one account's charges one at a time, in order.
//!     let _ = (&c.account, c.cents);
//! })?;
//! for cents in [100, 250, 75] {
//!     bus.message(Charge { account: "acme".into(), cents }).key("acme").publish()?;
//! }
//! bus.wait_idle(Duration::from_secs(5))?;
//! assert_eq!(charges.stats().delivered, 3);
//! # Ok(()) }
//! ```
//!
//! ```
//! use std::time::Duration;
//! use crier::{Bus, Envelope};
//!
//! struct Upload { id: u32 }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = Bus::new();
//! let worker = || bus.subscriber::<Upload>().group("thumbnailers").subscribe(|_: &Envelope<Upload>| {});
//! let (first, second) = (worker()?, worker()?);
//! for id in 0..10 {
//!     bus.publish(Upload { id })?;
//! }
//! bus.wait_idle(Duration::from_secs(5))?;
//! assert_eq!(first.stats().delivered + second.stats().delivered, 10);
//! # Ok(()) }
//! ```
//!
//! # Request-reply
//!
//! [`Bus::respond`] registers a responder for a request type `Q`, a handler that
//! returns the reply `R` ([`Bus::try_respond`]: or an error); [`Bus::request`] sends a
//! `Q` and waits, at most its timeout, for the [`Envelope<R>`] of the reply, whose
//! `causation_id` is the request's id. Requests travel on a topic of their own
//! (`"{Q} (request)"`), so `Q`'s plain subscribers never see them; replies on
//! `"{R} (reply)"`. The responders of a type form one consumer group: each request is
//! answered by exactly one of them, whichever is free. Every way a request can end
//! without a reply is a [`RequestError`]: no responder, a responder that failed (`Err`
//! or panic), a timeout, a request dropped unanswered (the responders' queue full under
//! a dropping policy, or the last responder gone), shutdown. Those that happen before
//! the request is sent hand the query back; those after it come as soon as they are
//! known, not at the timeout. A request type has one reply type per bus, fixed by its
//! first responder. A request blocks its thread: one made from a pool handler holds a
//! worker while it waits, so give a responder that such handlers ask
//! [`Dispatch::Thread`] ([`SubscriberBuilder::respond`] takes every option a group
//! member can have).
//!
//! ```
//! use std::time::Duration;
//! use crier::{Bus, Envelope, RequestError};
//!
//! struct Quote { sku: u32, qty: u32 }
//! struct Price { cents: u64 }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = Bus::new();
//! let _pricing = bus.try_respond(|q: &Envelope<Quote>| match q.sku {
//!     7 => Ok(Price { cents: 250 * u64::from(q.qty) }),
//!     _ => Err(format!("unknown sku {}", q.sku)),
//! })?;
//! let price = bus.request::<Quote, Price>(Quote { sku: 7, qty: 4 }, Duration::from_secs(5))?;
//! assert_eq!(price.cents, 1_000);
//! let unknown = bus.request::<Quote, Price>(Quote { sku: 8, qty: 1 }, Duration::from_secs(5));
//! assert!(matches!(unknown, Err(RequestError::Failed(why)) if why == "unknown sku 8"));
//! # Ok(()) }
//! ```
//!
//! # Observing the whole bus
//!
//! [`Bus::observe_all`] sees every event accepted on every topic, whatever its type, as
//! an [`AnyEnvelope`] (type name, topic, metadata, and the event to downcast): for
//! audit logs, analytics and debugging. An observer is a subscriber like any other
//! ([`Bus::observer`] gives it every option), sees an event before whatever its inline
//! handlers publish, and does not route an event. An event that reached no subscriber
//! is counted on its topic as `unrouted`, and announced as an [`Unrouted`] notice to
//! whoever subscribes to those. While nobody observes, a publish checks one atomic
//! for all this (measured: 50 more instructions per event, of about 6,300 with 8 inline
//! handlers). `examples/audit.rs` shows a pattern audit log, observe-all analytics and
//! unrouted notices together.
//!
//! # Testing your event flows
//!
//! Build the bus with [`BusBuilder::inline`] and every handler has run when `publish`
//! returns; or keep the pool and call [`Bus::wait_idle`], which counts deliveries
//! (including those of events that handlers publish) instead of waiting for silence.
//! [`testing::ManualClock`] fixes the time envelopes are stamped with and drives retry
//! backoff: advancing it runs the retries that came due, and `wait_idle` never waits for
//! one that only the test can make due.
//!
//! [`testing::Recorder`] keeps every event of a type (or of a named topic, or a
//! pattern) published after it was made. Its assertions wait until the bus is idle and
//! then fail with what was expected and what was recorded; its waits end on the events
//! or when the bus shuts down, never on a quiet spell:
//!
//! ```
//! use crier::{testing::Recorder, Bus, Envelope};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = Bus::new();
//! let receipts = Recorder::<String>::new(&bus)?;
//! let mailer = bus.clone();
//! let _checkout = bus.subscribe(move |cents: &Envelope<u64>| {
//!     mailer.publish(format!("receipt for {} cents", **cents)).unwrap();
//! })?;
//! bus.publish(1250_u64)?;
//! receipts.assert_events(&["receipt for 1250 cents".to_owned()]);
//! Recorder::<u32>::new(&bus)?.assert_none();
//! # Ok(()) }
//! ```
//!
//! [`testing::Scenario`] tests one flow in given/when/then form: the events its first
//! event caused (following causation ids), and what each subscriber did with them. An
//! order flow with a payment and a fraud check that dead-letters a stolen card:
//!
//! ```
//! use std::time::Duration;
//! use crier::{testing::Scenario, Backoff, Bus, Envelope, Retry};
//!
//! #[derive(Debug, PartialEq)]
//! struct Paid(u32);
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = Bus::new();
//! let payer = bus.clone();
//! let _payment = bus.subscriber::<u32>().name("payment").subscribe(move |order: &Envelope<u32>| {
//!     payer.publish(Paid(**order)).unwrap();
//! })?;
//! let _fraud = bus.subscriber::<u32>().name("fraud")
//!     .at_least_once(Retry::ordered().max_attempts(2).backoff(Backoff::fixed(Duration::from_millis(1))))
//!     .subscribe(|order: &Envelope<u32>| if **order == 13 { Err("stolen card") } else { Ok(()) })?;
//!
//! Scenario::new(&bus)?
//!     .when(7_u32)
//!     .then_events(&[Paid(7)])
//!     .then_succeeded("payment")
//!     .then_succeeded("fraud");
//! Scenario::new(&bus)?.when(13_u32).then_dead_lettered("fraud");
//! # Ok(()) }
//! ```
//!
//! # What happened to this event?
//!
//! A bus built with [`BusBuilder::trace`] keeps delivery traces of its last events
//! (bounded, oldest evicted and counted; off by default, see its cost there).
//! [`Bus::explain`] then says which subscribers an event reached, each attempt's
//! outcome and duration, whether it was dropped (and why), deduplicated or
//! dead-lettered, and which events it caused, printed as a tree:
//!
//! ```text
//! event b4135e9d000000000000000000000001 (u32) on "u32", seq 1
//! ├─ payment: handled attempt 1 in 12.514µs
//! ├─ fraud-check: attempt 1 failed in 9.688µs: card reported stolen; retry in 5ms
//! ├─ fraud-check: attempt 2 failed in 3.947µs: card reported stolen; retry in 10ms
//! ├─ fraud-check: attempt 3 failed in 6.101µs: card reported stolen; dead-lettered
//! ├─ caused event b4135e9d000000010000000000000001 (explain::Paid) on "explain::Paid", seq 1
//! │  └─ shipping: handled attempt 1 in 12.874µs
//! └─ caused event b4135e9d000000020000000000000000 (crier::dead_letter::DeadLetter<u32>) on "…", seq 0
//!    └─ alerts: handled attempt 1 in 25.087µs
//! ```
//!
//! [`Bus::topology`] describes the wiring: topics, subscribers with their policies,
//! groups, patterns, and the causation links seen at run time (which subscriber's
//! handler published on which topic, how often; counted with or without traces). It
//! renders as Mermaid ([`Topology::to_mermaid`]) or Graphviz DOT ([`Topology::to_dot`]),
//! 100 topics per page. `examples/explain.rs` shows both.
//!
//! # Features
//!
//! - `serde`: `Serialize` for [`BusStats`], [`ShutdownReport`], [`Topology`] and the
//!   types in them; a topic's history exported as JSON Lines and imported back (`Topic::export`,
//!   `Topic::import`, `Bus::import`, with an upcaster for old event versions:
//!   `import_with`), which adds `serde_json` to the dependencies.
//! - `tracing`: each handler invocation runs in a `crier.delivery` span (fields
//!   `event`, `topic`, `subscriber`, `attempt`, `correlation`), so whatever the handler
//!   logs is tied to its delivery; each delivery step is an event with target `crier`:
//!   a failure (with what comes next) or a drop at `WARN`, a dead letter at `ERROR`,
//!   handled, received, acked and deduplicated at `DEBUG`. Without the feature none of
//!   this is compiled. With it and no `tracing` subscriber interested, each hook costs
//!   `tracing`'s callsite check (measured: +6.6% instructions with 8 trivial inline
//!   handlers, see BENCHMARKS.md). Drops on arrival are emitted under their topic's lock:
//!   a `tracing` subscriber must not publish on the bus from its callbacks.

#![cfg_attr(loom, allow(dead_code, unused_imports))]

mod ack;
#[cfg(not(loom))]
mod ack_receiver;
mod affinity;
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
mod dedup;
#[cfg(not(loom))]
mod delivery;
#[cfg(not(loom))]
mod dispatch;
#[cfg(not(loom))]
mod envelope;
#[cfg(not(loom))]
mod error;
#[cfg(all(not(loom), feature = "serde"))]
mod export;
#[cfg(not(loom))]
mod group;
#[cfg(not(loom))]
mod history;
#[cfg(not(loom))]
mod in_flight;
#[cfg(not(loom))]
mod inbox;
mod key_index;
#[cfg(not(loom))]
mod key_table;
#[cfg(not(loom))]
mod lanes;
#[cfg(not(loom))]
mod latency;
#[cfg(not(loom))]
mod mailbox;
#[cfg(not(loom))]
mod message;
#[cfg(not(loom))]
mod observe;
#[cfg(not(loom))]
mod pattern;
#[cfg(not(loom))]
mod pattern_trie;
#[cfg(not(loom))]
mod policy;
#[cfg(not(loom))]
mod reach;
#[cfg(not(loom))]
mod receiver;
#[cfg(not(loom))]
mod recorder;
#[cfg(not(loom))]
mod registry;
#[cfg(not(loom))]
mod request;
#[cfg(not(loom))]
mod retention;
mod retries;
mod ring;
mod roster;
#[cfg(not(loom))]
mod scenario;
mod schedule;
mod seen;
#[cfg(not(loom))]
mod shutdown;
mod siphash;
mod slots;
mod stamp;
#[cfg(not(loom))]
mod stats;
#[cfg(not(loom))]
mod subscribe;
#[cfg(not(loom))]
mod subscriber;
#[cfg(not(loom))]
mod subscription;
mod sync;
#[cfg(all(not(loom), feature = "tracing"))]
mod telemetry;
#[cfg(not(loom))]
pub mod testing;
#[cfg(not(loom))]
mod timer;
#[cfg(not(loom))]
mod topic;
#[cfg(not(loom))]
mod topic_history;
#[cfg(not(loom))]
mod topology;
#[cfg(not(loom))]
mod trace;
mod wake_one;

#[cfg(loom)]
mod in_flight;
#[cfg(all(test, loom))]
mod loom_tests;

#[cfg(not(loom))]
pub use crate::{
    ack_receiver::{AckHandle, AckIter, AckReceiver, AckTryIter, Nack},
    builder::BusBuilder,
    bus::{Bus, WeakBus},
    clock::{Alarm, Clock, SystemClock},
    dead_letter::DeadLetter,
    dedup::{DedupWindow, IdempotencyKey},
    delivery::{Backoff, Delivery, Retry, RetryOrder, DEFAULT_DEAD_LETTER_CAPACITY, DEFAULT_MAX_ATTEMPTS},
    envelope::{Envelope, EventId, Headers},
    error::{
        AckError, BoxError, BuildError, Failure, HandlerError, PublishError, RecordError, RecvError, RecvTimeoutError,
        ReplayError, RequestError, ShutdownError, SubscribeError, TopicError, TryRecvError, WaitIdleError,
    },
    history::{History, Offset},
    lanes::Concurrent,
    latency::Latency,
    message::Message,
    observe::{AnyEnvelope, Unrouted},
    policy::{Dispatch, DropReason, Overflow},
    receiver::{Iter, Receiver, TryIter},
    retention::Retention,
    shutdown::ShutdownReport,
    stats::{BusStats, Consumer, DropCounts, GroupStats, SubscriberId, SubscriberStats, TopicStats},
    subscribe::{HandlerResult, SubscriberBuilder},
    subscription::Subscription,
    topic::{Receipt, Topic},
    topology::{CausationLink, Topology},
    trace::{AfterFailure, ExplainError, Explanation, TraceOutcome, TraceStats, TraceStep},
};

#[cfg(all(not(loom), feature = "serde"))]
pub use crate::{
    error::{ExportError, ImportError},
    export::MAX_IMPORT_LINE,
};
