//! `Subscriber<E>`: one subscriber's mailbox, handler and counters, and how a runner
//! drains it.
//!
//! # Unsubscribe is final (promise 6)
//!
//! The handler lives inside `run`, a mutex that doubles as the run lock: a runner
//! holds it while it handles a batch and checks `active` before every event. To
//! unsubscribe:
//! 1. clear `active`;
//! 2. lock `run` (waits for a running batch, unless the caller is that handler);
//! 3. take the subscriber off its topic (`Inbox::leave`). A mailbox subscriber leaves
//!    the topic's snapshot, then passes the topic's commit lock once: a publish that
//!    read the old snapshot commits either before (its event is queued, step 5 counts
//!    it) or after (it sees `active` clear under the lock and skips the subscriber). A
//!    ring subscriber leaves the ring under the commit lock, which records the last
//!    position written for it. Leaving under the run lock matters for the ring: the
//!    runner checks `active` and reads under that lock, so it never reads a position
//!    written after it left (one that was not written for it);
//! 4. take the closure out, so it never runs again and its captures are freed;
//! 5. still under the run lock, discard what is queued (and a handed-off event, below),
//!    counted as [`DropReason::Unsubscribed`]; a runner that sees `active` clear does
//!    the same under the same lock, so the counters are settled when unsubscribe
//!    returns.
//!
//! # At-least-once
//!
//! A failed attempt of an at-least-once subscriber goes into `RunState::retries` (see
//! `retries` for the protocol and how waiting retries count in flight) or, once its
//! attempts run out, becomes a dead letter. Dead letters are published after the run
//! lock is released, on the runner's thread, as if the failed event's handler had
//! published them (so they carry it as causation and never wait for mailbox space),
//! and before the batch's deliveries are finished in flight, so `wait_idle` covers
//! their delivery too. An at-least-once subscriber takes a hand-off only while no
//! retry is waiting (checked under the run lock): a handed event is not in the
//! mailbox, so it could neither wait behind a retry nor be lent out of `in_flight`.
//! Retries are only added by the runner, and the publish that was handed the event is
//! that runner, so none can appear before the handed event runs.
//!
//! # Hand-off (inline subscribers)
//!
//! A publish that claims an idle inline subscriber (see `schedule`) puts its event in
//! `RunState::handed` instead of the mailbox, under the commit lock, and then runs the
//! subscriber itself: no queue push and pop, no trip through the inline run queue. The
//! handed event lives under the run lock, so a runner takes it before anything queued
//! (nothing queued is older), and retiring discards it like a queued one.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant, SystemTime};

use crate::bus::BusShared;
use crate::context;
use crate::dead_letter::{DeadLetter, DeadLetterStore};
use crate::dedup::{DedupWindow, KeyHash, KeyHasher};
use crate::delivery::{Delivery, Retry, RetryOrder};
use crate::dispatch::{self, Executor, Runnable, Runtime, Step};
use crate::envelope::Envelope;
use crate::error::{BoxError, Failure, HandlerError};
use crate::inbox::{Inbox, Next};
use crate::key_table::{SharedKeys, Window};
use crate::mailbox::Mailbox;
use crate::message::Draft;
use crate::policy::{Dispatch, DropReason, Overflow};
use crate::retries::Retries;
use crate::schedule::ScheduleState;
use crate::stamp::Stamp;
use crate::stats::{Consumer, Counters, SubscriberId, SubscriberStats};
use crate::sync::{Arc, AtomicBool, AtomicU64, Mutex, Ordering, Weak};
use crate::timer::Wake;
use crate::topic::Wait;
use crate::trace::{self, AfterFailure, TraceOutcome};
use crate::wake_one::{Member, Members};

pub(crate) type Handler<E> = Box<dyn FnMut(&Envelope<E>) -> Result<(), BoxError> + Send>;
pub(crate) type Filter<E> = Box<dyn Fn(&E) -> bool + Send + Sync>;
pub(crate) type ErrorHook = std::sync::Arc<dyn Fn(&HandlerError) + Send + Sync>;

/// What a successful attempt was.
enum Attempt {
    /// The handler ran and succeeded; the key to remember, with a window.
    Handled(Option<KeyStamp>),
    /// Its key already succeeded within the dedup window: skipped.
    Duplicate,
}

/// An idempotency key and the publish time of the event that carries it (its stamp in
/// the window once it succeeds).
pub(crate) type KeyStamp = (KeyHash, Stamp);

/// What a dedup window says about an event, before its attempt.
pub(crate) enum Screened {
    /// Not seen: attempt it, and remember the key (if any) once it succeeds.
    Fresh(Option<KeyStamp>),
    /// Its key already succeeded within the window: skip it.
    Duplicate,
}

/// Derives a subscriber's idempotency key, hashed by its window.
pub(crate) type KeyOf<E> = Box<dyn Fn(&Envelope<E>, &KeyHasher) -> Option<KeyHash> + Send + Sync>;

/// What a filter said about an event.
pub(crate) enum Admission {
    Yes,
    No,
    /// The filter panicked: the event is accounted as accepted and failed.
    FilterPanicked(Failure),
}

/// `Q` is where its events wait: a mailbox of its own (the default), or a seat on the
/// topic's broadcast ring (see `inbox`).
pub(crate) struct Subscriber<E, Q = Mailbox<Envelope<E>>> {
    pub(crate) id: SubscriberId,
    /// The id its user knows it by: `id`, or for a lane its subscriber's (see `lanes`).
    public_id: SubscriberId,
    pub(crate) name: std::sync::Arc<str>,
    pub(crate) topic: crate::registry::TopicName,
    pub(crate) overflow: Overflow,
    pub(crate) consumer: Consumer,
    /// Where it stands in its topics' rosters: higher first (see `roster`).
    pub(crate) priority: i32,
    /// The pool or the subscriber's own thread; `None` for inline and pull.
    pub(crate) executor: Option<Executor>,
    filter: Option<Filter<E>>,
    pub(crate) inbox: Q,
    schedule: ScheduleState,
    /// The run lock (see the module docs).
    run: Mutex<RunState<E>>,
    /// Cleared once, by unsubscribe or shutdown.
    active: AtomicBool,
    pub(crate) counters: Counters,
    error_hook: Option<ErrorHook>,
    pub(crate) runtime: Arc<Runtime>,
    delivery: Delivery,
    /// Unordered retries waiting at once before the runner stops taking new events.
    retry_limit: usize,
    /// Set by a timer wake under a clock moved by hand (see `retries`).
    wake_token: AtomicBool,
    /// Queued deliveries held behind a waiting retry and lent out of `in_flight`
    /// (clock moved by hand; see `retries`). Changed under the run lock only.
    lent: AtomicU64,
    /// `DropOldest` evictions whose delivery the runner has yet to settle (ditto).
    evicted: AtomicU64,
    /// `Some` for at-least-once subscribers.
    dead_letters: Option<DeadLetters<E>>,
    /// `.dedup_by`: the key of an event; `None`: the envelope's idempotency key.
    dedup_key: Option<KeyOf<E>>,
    /// `Some` for a group's queue (see `group`): a push wakes one of these members
    /// instead of running this subscriber, which has no handler.
    members: Option<std::sync::Arc<Members>>,
    /// For arming the timer from `&self`.
    me: Weak<Self>,
}

/// Publishes a dead letter on `DeadLetter<E>`'s default topic; `true` if it reached a
/// subscriber. Boxed, so that a subscriber of `E` never names the code of a subscriber
/// of `DeadLetter<E>` (whose own sink would name `DeadLetter<DeadLetter<E>>`, and so on
/// without end).
pub(crate) type DeadLetterSink<E> = Box<dyn Fn(Draft<DeadLetter<E>>) -> bool + Send + Sync>;

/// Makes the sink of subscribers of `E` on `bus`.
pub(crate) fn dead_letter_sink<E: Send + Sync + 'static>(bus: Weak<BusShared>) -> DeadLetterSink<E> {
    Box::new(move |draft| {
        let Some(bus) = bus.upgrade() else {
            return false;
        };
        let published = bus.default_topic::<DeadLetter<E>>().publish(draft, Wait::Never);
        matches!(published, Ok(receipt) if receipt.subscribers > 0)
    })
}

/// Where an at-least-once subscriber's dead letters go.
struct DeadLetters<E> {
    sink: DeadLetterSink<E>,
    /// Keeps those that reached nobody (one store for all the lanes of a subscriber
    /// with `concurrency`).
    store: std::sync::Arc<DeadLetterStore<E>>,
}

/// What the run lock guards.
struct RunState<E> {
    /// `None` for receivers and once retired.
    handler: Option<Handler<E>>,
    /// An event a publish handed off to this idle subscriber (see the module docs).
    handed: Option<Envelope<E>>,
    /// At-least-once: failed events waiting for their next attempt.
    retries: Retries<Envelope<E>>,
    /// With a dedup window: the keys that succeeded recently.
    seen: Option<Window>,
}

pub(crate) struct Parts<E> {
    pub(crate) name: Option<String>,
    pub(crate) topic: crate::registry::TopicName,
    pub(crate) overflow: Overflow,
    pub(crate) consumer: Consumer,
    pub(crate) executor: Option<Executor>,
    pub(crate) filter: Option<Filter<E>>,
    pub(crate) handler: Option<Handler<E>>,
    pub(crate) error_hook: Option<ErrorHook>,
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) delivery: Delivery,
    pub(crate) retry_limit: usize,
    /// For dead letters.
    pub(crate) bus: Weak<BusShared>,
    pub(crate) dedup: Option<DedupWindow>,
    /// Its topic's table, if its window may be kept there (see `key_table`).
    pub(crate) key_table: Option<SharedKeys>,
    pub(crate) dedup_key: Option<KeyOf<E>>,
    pub(crate) members: Option<std::sync::Arc<Members>>,
    pub(crate) priority: i32,
    /// A store shared with other lanes of the same subscriber; `None`: its own.
    pub(crate) dead_letter_store: Option<std::sync::Arc<DeadLetterStore<E>>>,
    /// The id its dead letters name: its subscriber's, for a lane; `None`: its own.
    pub(crate) public_id: Option<SubscriberId>,
}

impl<E: Send + Sync + 'static, Q: Inbox<E>> Subscriber<E, Q> {
    pub(crate) fn new(parts: Parts<E>, inbox: Q) -> Arc<Self> {
        Arc::new_cyclic(|me| Subscriber::with_self(parts, inbox, me.clone()))
    }

    fn with_self(parts: Parts<E>, inbox: Q, me: Weak<Self>) -> Self {
        let id = SubscriberId::next();
        let name = parts.name.unwrap_or_else(|| format!("subscriber-{}", id.0));
        let dead_letters = match parts.delivery {
            Delivery::AtMostOnce => None,
            Delivery::AtLeastOnce(retry) => Some(DeadLetters {
                sink: dead_letter_sink(parts.bus),
                store: parts
                    .dead_letter_store
                    .unwrap_or_else(|| std::sync::Arc::new(DeadLetterStore::new(retry.dead_letters_kept()))),
            }),
        };
        Subscriber {
            id,
            public_id: parts.public_id.unwrap_or(id),
            name: name.into(),
            topic: parts.topic,
            overflow: parts.overflow,
            consumer: parts.consumer,
            priority: parts.priority,
            executor: parts.executor,
            filter: parts.filter,
            inbox,
            schedule: ScheduleState::new(),
            run: Mutex::new(RunState {
                handler: parts.handler,
                handed: None,
                retries: Retries::new(),
                seen: parts.dedup.map(|window| Window::new(window, parts.key_table.as_ref())),
            }),
            active: AtomicBool::new(true),
            counters: Counters::default(),
            error_hook: parts.error_hook,
            runtime: parts.runtime,
            delivery: parts.delivery,
            retry_limit: parts.retry_limit,
            wake_token: AtomicBool::new(false),
            lent: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            dead_letters,
            dedup_key: parts.dedup_key,
            members: parts.members,
            me,
        }
    }

    fn retry(&self) -> Option<&Retry> {
        match &self.delivery {
            Delivery::AtMostOnce => None,
            Delivery::AtLeastOnce(retry) => Some(retry),
        }
    }

    /// The store of dead letters that reached nobody (at-least-once only).
    pub(crate) fn dead_letter_store(&self) -> Option<&DeadLetterStore<E>> {
        self.dead_letters.as_ref().map(|d| &*d.store)
    }

    pub(crate) fn is_active(&self) -> bool {
        self.active.load(Ordering::SeqCst)
    }

    /// Clears `active`; `true` for the one caller that did.
    pub(crate) fn deactivate(&self) -> bool {
        self.active.swap(false, Ordering::SeqCst)
    }

    pub(crate) fn is_push(&self) -> bool {
        matches!(self.consumer, Consumer::Handler(_))
    }

    pub(crate) fn is_inline(&self) -> bool {
        self.consumer == Consumer::Handler(Dispatch::Inline)
    }

    pub(crate) fn has_filter(&self) -> bool {
        self.filter.is_some()
    }

    /// Runs the filter, containing a panic.
    pub(crate) fn admits(&self, event: &E) -> Admission {
        let Some(filter) = &self.filter else {
            return Admission::Yes;
        };
        match catch_unwind(AssertUnwindSafe(|| filter(event))) {
            Ok(true) => Admission::Yes,
            Ok(false) => Admission::No,
            Err(panic) => Admission::FilterPanicked(Failure::Panic(format!("in filter: {}", panic_message(&*panic)))),
        }
    }

    /// Counts an accepted event that a panicking filter could not place. Called under
    /// the commit lock, so it only counts: the hook runs later, in `report_failure`.
    pub(crate) fn count_filter_failure(&self, failure: &Failure) {
        Counters::add_exclusive(&self.counters.accepted, 1);
        self.record_failure(failure.to_string());
    }

    /// Counts an accepted event its overflow policy dropped.
    pub(crate) fn dropped_on_arrival(&self, env: &Envelope<E>, reason: DropReason) {
        Counters::add_exclusive(&self.counters.accepted, 1);
        self.counters.drop_n(reason, 1);
        self.trace(env, || TraceOutcome::Dropped(reason));
    }

    /// Hand-off, under the commit lock: take ownership of an idle subscriber.
    pub(crate) fn claim(&self) -> bool {
        self.schedule.claim()
    }

    /// After a push, under the commit lock: `true` when the caller must
    /// [`submit`](Self::submit) the subscriber to its runner once the lock is released.
    pub(crate) fn notify(&self) -> bool {
        if self.members.is_some() {
            // A group's queue never runs: every push wakes a member (receivers are not
            // woken: they block on the queue).
            return self.is_push();
        }
        self.is_push() && self.schedule.notify()
    }

    /// Hands the subscriber to its executor or to this thread's inline queue; for a
    /// group's queue, wakes one member.
    pub(crate) fn submit(self: &Arc<Self>) {
        if let Some(members) = &self.members {
            members.wake();
            return;
        }
        match (self.consumer, &self.executor) {
            (Consumer::Handler(Dispatch::Inline), _) | (_, None) => dispatch::schedule_inline(self.clone()),
            (_, Some(executor)) => executor.submit(self.clone()),
        }
    }

    /// Drops everything queued, `handed` and the waiting retries, counted under
    /// `reason` (what a ring seat had lagged past counts as `Oldest`). Call with the
    /// run lock held (passing what it guards), or from the runner's own thread (see
    /// `retire`).
    fn discard(&self, handed: Option<Envelope<E>>, retries: Vec<Envelope<E>>, reason: DropReason) {
        let mut unread = |env: Envelope<E>| self.trace(&env, || TraceOutcome::Dropped(reason));
        let traced = trace::wanted(self.runtime.traces.as_ref());
        let (mut n, lagged) = self.inbox.discard(traced.then_some(&mut unread as &mut dyn FnMut(_)));
        if let Some(env) = handed {
            self.inbox.release_handed();
            self.trace(&env, || TraceOutcome::Dropped(reason));
            drop(env);
            n += 1;
        }
        let (waiting, _) = self.give_up_retries(retries, reason);
        self.counters.drop_n(reason, n);
        self.counters.drop_n(DropReason::Oldest, lagged);
        if self.is_push() {
            self.settle_evictions();
            let lent = self.lent.swap(0, Ordering::Relaxed);
            debug_assert!(lent <= n + lagged, "lent {lent} of {n} + {lagged} unread");
            let mut settled = (n + lagged).saturating_sub(lent);
            if self.runtime.retries_hold_idle {
                settled += waiting;
            }
            settled += u64::from(self.wake_token.swap(false, Ordering::SeqCst));
            self.runtime.in_flight.finish(settled as usize);
        }
    }

    /// Leaving for `reason` with `retries` still waiting: a group member gives them
    /// back to its group (still in flight, for a push group), the rest are dropped,
    /// all counted. Returns how many were dropped, and for which reason (`reason`,
    /// unless the group was closing: see `Inbox::hand_over`).
    pub(crate) fn give_up_retries(&self, retries: Vec<Envelope<E>>, reason: DropReason) -> (u64, DropReason) {
        let total = retries.len() as u64;
        let (dropped, reason) = self.inbox.hand_over(retries, reason);
        for env in &dropped {
            self.trace(env, || TraceOutcome::Dropped(reason));
        }
        let dropped = dropped.len() as u64;
        Counters::add(&self.counters.handed_over, total - dropped);
        self.counters.drop_n(reason, dropped);
        Counters::sub(&self.counters.retrying, total);
        if reason == DropReason::Shutdown {
            Counters::add(&self.counters.abandoned_retries, dropped);
        }
        (dropped, reason)
    }

    /// Steps 2 to 5 of unsubscribe (`leave` is step 3), and shutdown's end: under the
    /// run lock, takes the handler out and discards the inbox, counted under `reason`.
    /// Doing this under the lock makes it and a runner that retires on its own take
    /// turns, so the counters are settled when either returns.
    ///
    /// Waits for a running batch up to `wait` (`None`: as long as it takes) and returns
    /// `false` if the batch outlasted it (then `leave` has not run); that runner retires
    /// when it sees the flags. From inside the subscriber's own handler it does not
    /// wait: it discards, and the runner drops the handler once the current invocation
    /// returns.
    pub(crate) fn retire(&self, reason: DropReason, wait: Option<Duration>, leave: impl FnOnce()) -> bool {
        if context::current().is_some_and(|d| d.subscriber == self.id) {
            // Nothing is handed off while the handler runs: a hand-off needs an idle
            // subscriber, and a runner takes `handed` before it invokes. The runner is
            // this thread, so it reads nothing more until this returns.
            leave();
            self.discard(None, Vec::new(), reason);
            return true;
        }
        let guard = match wait {
            None => Some(self.run.lock()),
            Some(wait) => self.run.try_lock_for(wait),
        };
        let Some(mut state) = guard else {
            return false;
        };
        leave();
        let handler = state.handler.take();
        let retries = state.retries.take_all();
        self.discard(state.handed.take(), retries, reason);
        drop(state);
        // The closure drops outside the lock: its captures may call into the bus.
        drop(handler);
        true
    }

    /// Handles one event: context, panic containment, counters, error hook, and under
    /// at-least-once a retry or a dead letter (pushed on `dead`). Returns `true` when the
    /// event is settled (it leaves `in_flight` after the batch).
    fn invoke(
        &self,
        handler: &mut Handler<E>,
        env: Envelope<E>,
        retries: &mut Retries<Envelope<E>>,
        seen: &mut Option<Window>,
        dead: &mut Vec<DeadLetter<E>>,
    ) -> bool {
        let _scope = context::enter(context::Delivery {
            event: env.id(),
            correlation: env.correlation_id(),
            subscriber: self.id,
            public: self.public_id,
        });
        #[cfg(feature = "tracing")]
        let _span = crate::telemetry::delivery_span(&env, &self.name);
        // The key function is user code too: a panic in it is a failed attempt.
        let attempt = || -> Result<Attempt, BoxError> {
            let Some(seen) = seen.as_mut() else {
                return handler(&env).map(|()| Attempt::Handled(None));
            };
            match self.screen(&env, seen) {
                Screened::Duplicate => Ok(Attempt::Duplicate),
                Screened::Fresh(key) => handler(&env).map(|()| Attempt::Handled(key)),
            }
        };
        let timed = self.counters.latency.start();
        let traced = trace::wanted(self.runtime.traces.as_ref()).then(Instant::now);
        let outcome = catch_unwind(AssertUnwindSafe(attempt));
        let took = traced.map(|start| start.elapsed());
        if let Some(start) = timed.filter(|_| !matches!(outcome, Ok(Ok(Attempt::Duplicate)))) {
            self.counters.latency.record(start);
        }
        let attempt = env.attempt();
        let failure = match outcome {
            // `invoke` runs under the run lock.
            Ok(Ok(Attempt::Handled(key))) => {
                Counters::add_exclusive(&self.counters.delivered, 1);
                self.trace(&env, || TraceOutcome::Handled {
                    attempt,
                    took: took.unwrap_or_default(),
                });
                if let (Some(key), Some(seen)) = (key, seen.as_mut()) {
                    self.remember(seen, key);
                }
                self.inbox.finished(&env);
                return true;
            }
            Ok(Ok(Attempt::Duplicate)) => {
                Counters::add(&self.counters.deduplicated, 1);
                self.trace(&env, || TraceOutcome::Deduplicated { attempt });
                self.inbox.finished(&env);
                return true;
            }
            Ok(Err(error)) => Failure::Error(error),
            Err(panic) => Failure::Panic(panic_message(&*panic)),
        };
        let text = self.note_failure(&env, failure);
        let Some(retry) = self.retry() else {
            Counters::add(&self.counters.failed, 1);
            self.trace(&env, || TraceOutcome::Failed {
                attempt,
                took,
                error: trace::clip(&text),
                then: AfterFailure::Nothing,
            });
            self.inbox.finished(&env);
            // `env` (maybe the last reference to the event) drops inside the scope, so
            // an event's `Drop` that calls into the bus counts as handler code.
            drop(env);
            return true;
        };
        // What its key holds back is lent with it (see `Inbox::parked`).
        let parked = self.lends().then(|| env.clone());
        match self.schedule_retry(retry, env, text, took, retries) {
            Err(letter) => {
                self.inbox.finished(&letter.envelope);
                dead.push(letter);
                true
            }
            Ok(due) => {
                if let Some(env) = parked {
                    self.inbox.parked(&env);
                }
                if let Some(due) = due {
                    let me: Weak<dyn Wake> = self.me.clone();
                    self.runtime.timer.arm(due, me);
                }
                // A waiting retry stays in flight only under a clock that moves by
                // itself.
                !self.runtime.retries_hold_idle
            }
        }
    }

    /// Checks an event's idempotency key against the dedup window, at the start of an
    /// attempt.
    fn screen(&self, env: &Envelope<E>, seen: &mut Window) -> Screened {
        let key = match &self.dedup_key {
            Some(key_of) => key_of(env, &self.runtime.key_hasher),
            None => env.key_hash(&self.runtime.key_hasher),
        };
        // Event time (see `dedup`): no clock read per delivery.
        let published = env.stamp();
        if key.is_some_and(|key| seen.contains(key, published)) {
            return Screened::Duplicate;
        }
        Screened::Fresh(key.map(|key| (key, published)))
    }

    /// Remembers the key of an attempt that succeeded (only then: a failed attempt's
    /// retry must run), stamped with its event's publish time.
    fn remember(&self, seen: &mut Window, (key, published): KeyStamp) {
        seen.insert(key, published);
        self.counters.dedup_keys.store(seen.len() as u64, Ordering::Relaxed);
        self.counters.dedup_evicted.store(seen.evicted(), Ordering::Relaxed);
    }

    /// An ack receiver's hand-out: [`screen`](Self::screen) under the run lock (which
    /// guards the window), containing a panic of the key function.
    pub(crate) fn screen_hand_out(&self, env: &Envelope<E>) -> Result<Screened, Failure> {
        let mut state = self.run.lock();
        let Some(seen) = state.seen.as_mut() else {
            return Ok(Screened::Fresh(None));
        };
        catch_unwind(AssertUnwindSafe(|| self.screen(env, seen)))
            .map_err(|panic| Failure::Panic(format!("in dedup_by: {}", panic_message(&*panic))))
    }

    /// An ack receiver's ack: remembers the key screened at hand-out.
    pub(crate) fn remember_acked(&self, key: KeyStamp) {
        if let Some(seen) = self.run.lock().seen.as_mut() {
            self.remember(seen, key);
        }
    }

    /// Records a step of `env`'s delivery, if the bus keeps traces (see `trace`).
    pub(crate) fn trace(&self, env: &Envelope<E>, outcome: impl FnOnce() -> TraceOutcome) {
        trace::record(self.runtime.traces.as_ref(), env, self.public_id, &self.name, outcome);
    }

    /// Records a failed attempt: the last error, then the error hook. Returns its text.
    pub(crate) fn note_failure(&self, env: &Envelope<E>, failure: Failure) -> String {
        let text = failure.to_string();
        *self.counters.last_error.lock() = Some(text.clone());
        self.report_failure(env, failure);
        text
    }

    /// At-least-once, after attempt `env.attempt()` failed with `error`: puts the next
    /// attempt in `retries`, counted, and returns its due time if the timer must be
    /// armed for it (the caller arms it, holding no lock the wake takes). Once the
    /// attempts run out: a dead letter, counted, for the caller to send.
    pub(crate) fn schedule_retry(
        &self,
        retry: &Retry,
        env: Envelope<E>,
        error: String,
        took: Option<Duration>,
        retries: &mut Retries<Envelope<E>>,
    ) -> Result<Option<SystemTime>, DeadLetter<E>> {
        let next = env.attempt().saturating_add(1);
        let failed = |then| TraceOutcome::Failed {
            attempt: env.attempt(),
            took,
            error: trace::clip(&error),
            then,
        };
        if !retry.allows(next) || env.attempt() == u32::MAX {
            Counters::add(&self.counters.dead_lettered, 1);
            self.trace(&env, || failed(AfterFailure::DeadLettered));
            return Err(DeadLetter {
                envelope: env,
                subscriber: self.name.clone(),
                subscriber_id: self.public_id,
                error,
            });
        }
        let delay = retry
            .backoff_schedule()
            .delay_jittered(env.attempt(), self.jitter_seed(&env));
        self.trace(&env, || failed(AfterFailure::Retry { after: delay }));
        let now = self.runtime.timer.now();
        let due = due_after(now, delay);
        retries.push(due, env.with_attempt(next));
        Counters::add(&self.counters.retried, 1);
        Counters::add(&self.counters.retrying, 1);
        Ok((due > now).then_some(due))
    }

    /// Spreads retries of different events apart, the same way every run.
    fn jitter_seed(&self, env: &Envelope<E>) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (env.topic(), env.seq(), &*self.name).hash(&mut hasher);
        hasher.finish()
    }

    /// Publishes dead letters on `DeadLetter<E>`'s topic, keeping in the store those
    /// that reach nobody. After the run lock is released: subscribers of dead letters
    /// may run right here (inline).
    pub(crate) fn send_dead_letters(&self, dead: Vec<DeadLetter<E>>) {
        let Some(sink) = &self.dead_letters else {
            return;
        };
        for letter in dead {
            // As if the failed event's handler published it: causation, correlation,
            // and never waiting for mailbox space.
            let _scope = context::enter(context::Delivery {
                event: letter.envelope.id(),
                correlation: letter.envelope.correlation_id(),
                subscriber: self.id,
                public: self.public_id,
            });
            // No dead letter of a dead letter.
            if letter.envelope.is_dead_letter() {
                sink.store.keep(letter);
                continue;
            }
            let mut draft = Draft::new(letter.clone());
            draft.dead_letter = true;
            if !(sink.sink)(draft) {
                sink.store.keep(letter);
            }
        }
    }

    fn record_failure(&self, text: String) {
        Counters::add(&self.counters.failed, 1);
        *self.counters.last_error.lock() = Some(text);
    }

    /// Calls the error hook, if any. Never with a bus lock held: it is user code.
    pub(crate) fn report_failure(&self, env: &Envelope<E>, failure: Failure) {
        if let Some(hook) = &self.error_hook {
            let error = HandlerError {
                subscriber: self.name.clone(),
                topic: self.topic.clone(),
                event_id: env.id(),
                attempt: env.attempt(),
                failure,
            };
            // A panicking hook must not take the worker down; there is nobody left to
            // tell, so the panic is contained and dropped.
            let _ = catch_unwind(AssertUnwindSafe(|| hook(&error)));
        }
    }

    /// Handles up to `*budget` events under the run lock. Returns `true` if the mailbox
    /// was seen empty (or retired), `false` if the budget ran out first.
    fn run_batch(&self, budget: &mut usize) -> bool {
        let mut guard = self.run.lock();
        let state = &mut *guard;
        // A wake token (see `retries`) is settled with this batch. Only subscribers
        // that lend ever get one: no atomic write on the at-most-once path.
        let mut settled = usize::from(self.lends() && self.wake_token.swap(false, Ordering::SeqCst));
        let mut dead = Vec::new();
        let retire = loop {
            let stop = if self.runtime.is_aborted() {
                Some(DropReason::Shutdown)
            } else if !self.is_active() {
                Some(DropReason::Unsubscribed)
            } else {
                None
            };
            let handler = match (stop, state.handler.as_mut()) {
                (None, Some(handler)) => handler,
                (reason, _) => break Some(reason.unwrap_or(DropReason::Unsubscribed)),
            };
            if *budget == 0 {
                break None;
            }
            let env = match self.next_event(&mut state.handed, &mut state.retries) {
                Next::Event(env) => env,
                Next::Lagged(n) => {
                    // Accepted, in flight, and passed over: settled here.
                    self.counters.drop_n(DropReason::Oldest, n);
                    self.runtime.in_flight.finish(n as usize);
                    continue;
                }
                Next::Empty => break None,
            };
            *budget -= 1;
            settled += usize::from(self.invoke(handler, env, &mut state.retries, &mut state.seen, &mut dead));
        };
        // Retiring discards under the lock (see `retire`).
        let retired = retire.map(|reason| {
            let retries = state.retries.take_all();
            self.discard(state.handed.take(), retries, reason);
            state.handler.take()
        });
        // Out of budget with nothing left counts as seen empty: a hand-off (budget 1)
        // then releases at once instead of a second trip through the run queue. The
        // look comes after `begin_run`, so a push it misses sets `NOTIFIED`; a retry
        // that comes due later is woken by the timer.
        let empty = match &retired {
            Some(_) => true,
            None => *budget > 0 || (self.inbox.is_empty() && state.retries.is_empty()),
        };
        // Out of budget with retries left (a clock moved by hand can make many due at
        // once, and they are not in flight until taken): a wake token stays in flight
        // until the runner is back, or `wait_idle` could see the bus idle in between.
        if !empty && self.lends() && !state.retries.is_empty() {
            self.runtime.in_flight.add(1);
            if self.wake_token.swap(true, Ordering::SeqCst) {
                settled += 1;
            }
        }
        drop(guard);
        // Checked here: a call with an empty batch cost about 50 instructions.
        if !dead.is_empty() {
            self.send_dead_letters(dead);
        }
        self.runtime.in_flight.finish(settled);
        // The closure drops outside the lock: its captures may call into the bus.
        drop(retired);
        empty
    }

    /// Whether held deliveries are lent out of `in_flight` (see `retries`): an ack
    /// receiver's are not in flight at all.
    fn lends(&self) -> bool {
        self.is_push() && self.retry().is_some() && !self.runtime.retries_hold_idle
    }

    /// Lends what is queued behind a waiting retry out of `in_flight` (run lock held).
    fn lend_held(&self) {
        if !self.lends() {
            return;
        }
        self.settle_evictions();
        let unread = self.inbox.unread();
        let lent = self.lent.load(Ordering::Relaxed);
        if unread > lent {
            self.lent.store(unread, Ordering::Relaxed);
            self.runtime.in_flight.finish((unread - lent) as usize);
        }
    }

    /// No longer held: counts the lent deliveries in flight again (run lock held).
    fn reclaim_lent(&self) {
        self.settle_evictions();
        let lent = self.lent.swap(0, Ordering::Relaxed);
        self.runtime.in_flight.add(lent as usize);
    }

    /// Settles deferred evictions: the oldest events go, lent ones first (run lock
    /// held; see `retries`).
    fn settle_evictions(&self) {
        if self.evicted.load(Ordering::Relaxed) == 0 {
            return;
        }
        let evicted = self.evicted.swap(0, Ordering::AcqRel);
        let lent = self.lent.load(Ordering::Relaxed);
        let from_lent = evicted.min(lent);
        self.lent.store(lent - from_lent, Ordering::Relaxed);
        self.runtime.in_flight.finish((evicted - from_lent) as usize);
    }

    /// The next event to handle: a retry that is due, then (unless waiting retries hold
    /// the line, see `retries`) a handed-off event, then the inbox.
    fn next_event(&self, handed: &mut Option<Envelope<E>>, retries: &mut Retries<Envelope<E>>) -> Next<E> {
        if !retries.is_empty() {
            if let Some(env) = retries.take_due(self.runtime.timer.now()) {
                Counters::sub(&self.counters.retrying, 1);
                if !self.runtime.retries_hold_idle {
                    self.runtime.in_flight.add(1);
                    self.inbox.unparked(&env);
                }
                return Next::Event(env);
            }
            let held = match self.retry().map(Retry::order) {
                Some(RetryOrder::Ordered) if !self.inbox.orders_by_key() => true,
                _ => retries.len() >= self.retry_limit,
            };
            if held {
                self.lend_held();
                return Next::Empty;
            }
        }
        if self.lends() {
            self.reclaim_lent();
        }
        // A handed-off event is older than anything queued.
        match handed.take() {
            Some(env) => {
                self.inbox.release_handed();
                Next::Event(env)
            }
            None => self.inbox.next(),
        }
    }

    pub(crate) fn stats(&self) -> SubscriberStats {
        self.purge_dedup_window();
        let c = &self.counters;
        let mut stats = SubscriberStats::zero(
            self.id,
            self.name.to_string(),
            self.topic.to_string(),
            self.consumer,
            self.overflow,
        );
        stats.delivery = self.delivery;
        stats.priority = self.priority;
        stats.accepted = c.accepted.load(Ordering::Relaxed);
        stats.delivered = c.delivered.load(Ordering::Relaxed);
        stats.failed = c.failed.load(Ordering::Relaxed);
        stats.retried = c.retried.load(Ordering::Relaxed);
        stats.dead_lettered = c.dead_lettered.load(Ordering::Relaxed);
        stats.retrying = c.retrying.load(Ordering::Relaxed);
        stats.deduplicated = c.deduplicated.load(Ordering::Relaxed);
        stats.dedup_keys = c.dedup_keys.load(Ordering::Relaxed);
        stats.dedup_evicted = c.dedup_evicted.load(Ordering::Relaxed);
        if let Some(store) = self.dead_letter_store() {
            stats.dead_letters_kept = store.len() as u64;
            stats.dead_letters_evicted = store.evicted();
        }
        stats.dropped = c.dropped();
        stats.refused = c.refused.load(Ordering::Relaxed);
        stats.handed_over = c.handed_over.load(Ordering::Relaxed);
        stats.last_error = c.last_error.lock().clone();
        stats.latency = c.latency.latency();
        self.inbox.fill(&mut stats);
        stats
    }

    /// Forgets the keys that aged out of the dedup window, so an idle subscriber's
    /// window shrinks back after a burst when its stats are read. Only if the run lock
    /// is free: stats never wait for a running handler (which purges on its own).
    fn purge_dedup_window(&self) {
        let Some(mut state) = self.run.try_lock() else {
            return;
        };
        if let Some(seen) = state.seen.as_mut() {
            seen.purge(Stamp::of(self.runtime.timer.now()));
            self.counters.dedup_keys.store(seen.len() as u64, Ordering::Relaxed);
        }
    }
}

/// What only a subscriber with a mailbox of its own does: publishes push into it, and
/// may hand an inline one its event directly.
impl<E: Send + Sync + 'static> Subscriber<E> {
    /// Pushes into a reserved slot (or, for `DropOldest`, evicting). The caller holds
    /// the topic's commit lock and has added the push to `in_flight`.
    pub(crate) fn enqueue(&self, env: Envelope<E>, evicting: bool) {
        Counters::add_exclusive(&self.counters.accepted, 1);
        if !evicting {
            self.inbox.push_reserved(env);
            return;
        }
        if let Some(evicted) = self.inbox.push_evicting(env) {
            self.counters.drop_n(DropReason::Oldest, 1);
            self.trace(&evicted, || TraceOutcome::Dropped(DropReason::Oldest));
            if self.lends() {
                // Maybe a lent delivery: the runner settles it (see `retries`).
                self.evicted.fetch_add(1, Ordering::AcqRel);
            } else if self.is_push() {
                self.runtime.in_flight.finish(1);
            } else {
                Counters::add(&self.counters.unreported_lag, 1);
            }
            drop(evicted);
        }
    }

    /// Queues a replayed event (see `TopicCore::join_at`) as a publish would, except
    /// that it never waits and is never refused: under `DropOldest` and `DropNewest`
    /// the mailbox keeps at most its capacity, dropping as those policies do; under the
    /// others the event is queued beyond the capacity. The caller holds the commit
    /// lock and has added a push subscriber's replay to `in_flight`.
    pub(crate) fn replay(&self, env: Envelope<E>) {
        match self.overflow {
            Overflow::DropOldest => self.enqueue(env, true),
            Overflow::DropNewest => {
                if self.inbox.slots().try_reserve() {
                    self.enqueue(env, false);
                } else {
                    self.dropped_on_arrival(&env, DropReason::Newest);
                    if self.is_push() {
                        self.runtime.in_flight.finish(1);
                    }
                }
            }
            Overflow::Block | Overflow::BlockTimeout(_) | Overflow::Reject => {
                Counters::add_exclusive(&self.counters.accepted, 1);
                self.inbox.push_over(env);
            }
        }
    }

    /// Hand-off, step 3 of a publish (the caller holds the commit lock and has claimed
    /// the schedule): parks the event under the run lock for the caller to run. Gives
    /// it back if the run lock is busy (a retire in progress) or a retry is waiting
    /// (see "At-least-once" above); the caller queues it.
    pub(crate) fn hand_off(&self, env: Envelope<E>) -> Result<(), Envelope<E>> {
        let Some(mut state) = self.run.try_lock() else {
            return Err(env);
        };
        if !state.retries.is_empty() {
            return Err(env);
        }
        Counters::add_exclusive(&self.counters.accepted, 1);
        state.handed = Some(env);
        Ok(())
    }
}

/// What a group's queue needs from its members (see `wake_one`).
impl<E: Send + Sync + 'static, Q: Inbox<E>> Member for Subscriber<E, Q> {
    fn is_active(&self) -> bool {
        Subscriber::is_active(self)
    }

    fn notify(&self) -> bool {
        Subscriber::notify(self)
    }

    fn submit(self: std::sync::Arc<Self>) {
        Subscriber::submit(&self);
    }
}

/// The timer's wake (see `retries`): as a publish would, plus the wake token under a
/// clock moved by hand.
impl<E: Send + Sync + 'static, Q: Inbox<E>> Wake for Subscriber<E, Q> {
    fn wake(self: std::sync::Arc<Self>) {
        if !self.is_active() {
            return;
        }
        if !self.runtime.retries_hold_idle {
            // Counted before the token is visible, so the runner never finishes it first.
            self.runtime.in_flight.add(1);
            if self.wake_token.swap(true, Ordering::SeqCst) {
                self.runtime.in_flight.finish(1);
            }
            // Retired meanwhile: nobody may clear the token any more but us.
            if !self.is_active() && self.wake_token.swap(false, Ordering::SeqCst) {
                self.runtime.in_flight.finish(1);
                return;
            }
        }
        if self.notify() {
            self.submit();
        }
    }
}

impl<E: Send + Sync + 'static, Q: Inbox<E>> Runnable for Subscriber<E, Q> {
    fn run(&self, budget: usize) -> Step {
        let mut budget = budget;
        loop {
            self.schedule.begin_run();
            let empty = self.run_batch(&mut budget);
            if !empty {
                return Step::Yield;
            }
            if self.schedule.try_release() {
                return Step::Idle;
            }
            if budget == 0 {
                return Step::Yield;
            }
        }
    }
}

/// `now + delay`, or the latest time that can be represented if that overflows (a
/// huge backoff, or a manual clock set near the end of time): never a panic.
fn due_after(now: std::time::SystemTime, delay: std::time::Duration) -> std::time::SystemTime {
    let mut delay = delay;
    loop {
        match now.checked_add(delay) {
            Some(due) => return due,
            None => delay /= 2,
        }
    }
}

/// The text of a panic payload.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::due_after;
    use std::time::{Duration, SystemTime};

    #[test]
    fn a_due_time_that_overflows_saturates_instead_of_panicking() {
        let epoch = SystemTime::UNIX_EPOCH;
        assert_eq!(due_after(epoch, Duration::from_secs(5)), epoch + Duration::from_secs(5));
        let far = due_after(epoch, Duration::MAX);
        assert!(far > epoch + Duration::from_secs(1 << 40));
        assert!(due_after(far, Duration::MAX) >= far);
    }
}
