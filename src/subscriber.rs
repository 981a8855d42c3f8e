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
//! # Hand-off (inline subscribers)
//!
//! A publish that claims an idle inline subscriber (see `schedule`) puts its event in
//! `RunState::handed` instead of the mailbox, under the commit lock, and then runs the
//! subscriber itself: no queue push and pop, no trip through the inline run queue. The
//! handed event lives under the run lock, so a runner takes it before anything queued
//! (nothing queued is older), and retiring discards it like a queued one.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use crate::context::{self, Delivery};
use crate::dispatch::{self, Executor, Runnable, Runtime, Step};
use crate::envelope::Envelope;
use crate::error::{BoxError, Failure, HandlerError};
use crate::inbox::{Inbox, Next};
use crate::mailbox::Mailbox;
use crate::policy::{Dispatch, DropReason, Overflow};
use crate::schedule::ScheduleState;
use crate::stats::{Consumer, Counters, SubscriberId, SubscriberStats};
use crate::sync::{Arc, AtomicBool, Mutex, Ordering};

pub(crate) type Handler<E> = Box<dyn FnMut(&Envelope<E>) -> Result<(), BoxError> + Send>;
pub(crate) type Filter<E> = Box<dyn Fn(&E) -> bool + Send + Sync>;
pub(crate) type ErrorHook = std::sync::Arc<dyn Fn(&HandlerError) + Send + Sync>;

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
    pub(crate) name: std::sync::Arc<str>,
    pub(crate) topic: crate::registry::TopicName,
    pub(crate) overflow: Overflow,
    pub(crate) consumer: Consumer,
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
}

/// What the run lock guards.
struct RunState<E> {
    /// `None` for receivers and once retired.
    handler: Option<Handler<E>>,
    /// An event a publish handed off to this idle subscriber (see the module docs).
    handed: Option<Envelope<E>>,
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
}

impl<E: Send + Sync + 'static, Q: Inbox<E>> Subscriber<E, Q> {
    pub(crate) fn new(parts: Parts<E>, inbox: Q) -> Self {
        let id = SubscriberId::next();
        let name = parts.name.unwrap_or_else(|| format!("subscriber-{}", id.0));
        Subscriber {
            id,
            name: name.into(),
            topic: parts.topic,
            overflow: parts.overflow,
            consumer: parts.consumer,
            executor: parts.executor,
            filter: parts.filter,
            inbox,
            schedule: ScheduleState::new(),
            run: Mutex::new(RunState {
                handler: parts.handler,
                handed: None,
            }),
            active: AtomicBool::new(true),
            counters: Counters::default(),
            error_hook: parts.error_hook,
            runtime: parts.runtime,
        }
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
    pub(crate) fn dropped_on_arrival(&self, reason: DropReason) {
        Counters::add_exclusive(&self.counters.accepted, 1);
        self.counters.drop_n(reason, 1);
    }

    /// Hand-off, under the commit lock: take ownership of an idle subscriber.
    pub(crate) fn claim(&self) -> bool {
        self.schedule.claim()
    }

    /// After a push, under the commit lock: `true` when the caller must
    /// [`submit`](Self::submit) the subscriber to its runner once the lock is released.
    pub(crate) fn notify(&self) -> bool {
        self.is_push() && self.schedule.notify()
    }

    /// Hands the subscriber to its executor or to this thread's inline queue.
    pub(crate) fn submit(self: &Arc<Self>) {
        match (self.consumer, &self.executor) {
            (Consumer::Handler(Dispatch::Inline), _) | (_, None) => dispatch::schedule_inline(self.clone()),
            (_, Some(executor)) => executor.submit(self.clone()),
        }
    }

    /// Drops everything queued, and `handed`, counted under `reason` (what a ring seat
    /// had lagged past counts as `Oldest`). Call with the run lock held (passing what
    /// it guards), or from the runner's own thread (see `retire`).
    fn discard(&self, handed: Option<Envelope<E>>, reason: DropReason) {
        let (mut n, lagged) = self.inbox.discard();
        if let Some(env) = handed {
            self.inbox.release_handed();
            drop(env);
            n += 1;
        }
        self.counters.drop_n(reason, n);
        self.counters.drop_n(DropReason::Oldest, lagged);
        if self.is_push() {
            self.runtime.in_flight.finish((n + lagged) as usize);
        }
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
            self.discard(None, reason);
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
        self.discard(state.handed.take(), reason);
        drop(state);
        // The closure drops outside the lock: its captures may call into the bus.
        drop(handler);
        true
    }

    /// Handles one event: context, panic containment, counters, error hook.
    fn invoke(&self, handler: &mut Handler<E>, env: Envelope<E>) {
        let _scope = context::enter(Delivery {
            event: env.id(),
            correlation: env.correlation_id(),
            subscriber: self.id,
        });
        match catch_unwind(AssertUnwindSafe(|| handler(&env))) {
            // `invoke` runs under the run lock.
            Ok(Ok(())) => Counters::add_exclusive(&self.counters.delivered, 1),
            Ok(Err(error)) => self.fail(&env, Failure::Error(error)),
            Err(panic) => self.fail(&env, Failure::Panic(panic_message(&*panic))),
        }
        // `env` (maybe the last reference to the event) drops inside the scope, so an
        // event's `Drop` that calls into the bus counts as handler code.
        drop(env);
    }

    fn fail(&self, env: &Envelope<E>, failure: Failure) {
        self.record_failure(failure.to_string());
        self.report_failure(env, failure);
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
        let mut handled = 0;
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
            // A handed-off event is older than anything queued.
            let env = match state.handed.take() {
                Some(env) => {
                    self.inbox.release_handed();
                    env
                }
                None => match self.inbox.next() {
                    Next::Event(env) => env,
                    Next::Lagged(n) => {
                        // Accepted, in flight, and passed over: settled here.
                        self.counters.drop_n(DropReason::Oldest, n);
                        self.runtime.in_flight.finish(n as usize);
                        continue;
                    }
                    Next::Empty => break None,
                },
            };
            *budget -= 1;
            handled += 1;
            self.invoke(handler, env);
        };
        // Retiring discards under the lock (see `retire`).
        let retired = retire.map(|reason| {
            self.discard(state.handed.take(), reason);
            state.handler.take()
        });
        // Out of budget with nothing left counts as seen empty: a hand-off (budget 1)
        // then releases at once instead of a second trip through the run queue. The
        // look comes after `begin_run`, so a push it misses sets `NOTIFIED`.
        let empty = match &retired {
            Some(_) => true,
            None => *budget > 0 || self.inbox.is_empty(),
        };
        drop(guard);
        self.runtime.in_flight.finish(handled);
        // The closure drops outside the lock: its captures may call into the bus.
        drop(retired);
        empty
    }

    pub(crate) fn stats(&self) -> SubscriberStats {
        let c = &self.counters;
        let mut stats = SubscriberStats {
            id: self.id,
            name: self.name.to_string(),
            topic: self.topic.to_string(),
            consumer: self.consumer,
            overflow: self.overflow,
            capacity: None,
            accepted: c.accepted.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            dropped: c.dropped(),
            refused: c.refused.load(Ordering::Relaxed),
            queued: 0,
            high_water: 0,
            last_error: c.last_error.lock().clone(),
        };
        self.inbox.fill(&mut stats);
        stats
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
            if self.is_push() {
                self.runtime.in_flight.finish(1);
            } else {
                Counters::add(&self.counters.unreported_lag, 1);
            }
            drop(evicted);
        }
    }

    /// Hand-off, step 3 of a publish (the caller holds the commit lock and has claimed
    /// the schedule): parks the event under the run lock for the caller to run. Gives
    /// it back if the run lock is busy (a retire in progress); the caller queues it.
    pub(crate) fn hand_off(&self, env: Envelope<E>) -> Result<(), Envelope<E>> {
        let Some(mut state) = self.run.try_lock() else {
            return Err(env);
        };
        Counters::add_exclusive(&self.counters.accepted, 1);
        state.handed = Some(env);
        Ok(())
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
