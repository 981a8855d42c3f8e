//! Who runs push subscribers: executors (the shared pool, or a subscriber's own
//! thread), the per-thread inline queue, and the bookkeeping of the bus's threads.
//!
//! Executors and the inline queue run [`Runnable`]s: a subscriber whose
//! [`ScheduleState`](crate::schedule::ScheduleState) was just set, which drains its
//! mailbox and says whether it must run again.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::thread::JoinHandle;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use crate::context;
use crate::dedup::KeyHasher;
use crate::in_flight::InFlight;
use crate::observe::Watchers;
use crate::sync::{Arc, Mutex};
use crate::timer::Timer;

/// The most events a pool worker handles for one subscriber before it lets the next
/// subscriber run: fairness across subscribers without a context switch per event.
pub(crate) const POOL_BUDGET: usize = 64;

pub(crate) enum Step {
    /// The mailbox was seen empty and released.
    Idle,
    /// The budget ran out with events left; run again later.
    Yield,
}

pub(crate) trait Runnable: Send + Sync {
    fn run(&self, budget: usize) -> Step;
}

enum Job {
    Run(Arc<dyn Runnable>),
    Stop,
}

/// A run queue served by one or more threads. Cloning shares the queue.
#[derive(Clone)]
pub(crate) struct Executor {
    tx: Sender<Job>,
    rx: Receiver<Job>,
    threads: usize,
}

impl Executor {
    /// Starts `threads` threads named `{name}-{i}` on a new run queue.
    pub(crate) fn start(name: &str, threads: usize, registry: &Threads) -> io::Result<Executor> {
        let (tx, rx) = crossbeam_channel::unbounded();
        let executor = Executor { tx, rx, threads };
        for i in 0..threads {
            let worker = executor.clone();
            registry.spawn(format!("{name}-{i}"), move || worker.serve())?;
        }
        Ok(executor)
    }

    pub(crate) fn submit(&self, runnable: Arc<dyn Runnable>) {
        // Cannot fail: `self.rx` keeps the queue connected.
        let _ = self.tx.send(Job::Run(runnable));
    }

    /// Asks every thread to exit once it reaches this point of the queue.
    pub(crate) fn stop(&self) {
        for _ in 0..self.threads {
            let _ = self.tx.send(Job::Stop);
        }
    }

    /// Drops queued jobs (after the threads stopped), releasing the runnables they hold.
    pub(crate) fn clear(&self) {
        while self.rx.try_recv().is_ok() {}
    }

    fn serve(self) {
        // Idle threads block in `recv`: no spinning.
        while let Ok(job) = self.rx.recv() {
            match job {
                Job::Run(runnable) => {
                    if let Step::Yield = runnable.run(POOL_BUDGET) {
                        self.submit(runnable);
                    }
                }
                Job::Stop => break,
            }
        }
    }
}

/// The bus's threads: counted while alive, so shutdown can wait for them with a deadline.
pub(crate) struct Threads {
    /// Threads started and not yet at their end; each thread holds a clone.
    live: Arc<InFlight>,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl Threads {
    pub(crate) fn new() -> Self {
        Threads {
            live: Arc::new(InFlight::new()),
            handles: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn spawn(&self, name: String, body: impl FnOnce() + Send + 'static) -> io::Result<()> {
        /// Counts the thread out however `body` ends.
        struct Alive(Arc<InFlight>);
        impl Drop for Alive {
            fn drop(&mut self) {
                self.0.finish(1);
            }
        }

        self.live.add(1);
        let alive = Alive(Arc::clone(&self.live));
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            context::mark_bus_thread();
            let _alive = alive;
            body();
        });
        match spawned {
            Ok(handle) => {
                let mut handles = self.handles.lock();
                // Threads of subscribers that left are done: dropping a finished
                // thread's handle frees it, so churn does not grow this list.
                handles.retain(|h| !h.is_finished());
                handles.push(handle);
                Ok(())
            }
            // The closure, and with it `alive`, was dropped: the count is already back.
            Err(e) => Err(e),
        }
    }

    /// Waits until every thread has finished its work, then joins them. Returns how many
    /// are still running at the deadline (those are left detached).
    pub(crate) fn join(&self, deadline: Option<Instant>) -> usize {
        if !self.live.wait_zero(deadline) {
            return self.live.get();
        }
        let handles = std::mem::take(&mut *self.handles.lock());
        for handle in handles {
            let _ = handle.join();
        }
        0
    }
}

/// The inline run queue of one thread: subscribers with [`Dispatch::Inline`] that have
/// events, in the order they got them. Running one event per turn and re-queueing at
/// the back makes dispatch breadth-first: every handler of an event runs before any
/// event that one of them published.
///
/// [`Dispatch::Inline`]: crate::Dispatch::Inline
#[derive(Default)]
struct InlineQueue {
    ready: VecDeque<Arc<dyn Runnable>>,
    /// `true` while a frame of this thread is draining `ready`; nested publishes only
    /// append to it.
    draining: bool,
}

thread_local! {
    static INLINE: RefCell<InlineQueue> = RefCell::new(InlineQueue::default());
}

pub(crate) fn schedule_inline(runnable: Arc<dyn Runnable>) {
    INLINE.with(|q| q.borrow_mut().ready.push_back(runnable));
}

/// `true` while a frame of this thread runs inline handlers.
pub(crate) fn inline_running() -> bool {
    INLINE.try_with(|q| q.borrow().draining).unwrap_or(true)
}

/// Runs one subscriber's turn on this thread, re-queueing it if it has more.
pub(crate) fn run_inline<R: Runnable + 'static>(runnable: &Arc<R>) {
    if let Step::Yield = runnable.run(1) {
        schedule_inline(runnable.clone());
    }
}

/// Runs `first`, then this thread's inline queue to empty, as the thread's outermost
/// inline frame: publishes nested in either only append to the queue. If an outer
/// frame is already running, this runs `first` and returns, and that frame drains the
/// queue. (`first` runs hand-offs, which publishes make only where [`inline_running`]
/// is false, so in a nested frame it finds none; it may publish, which queues.)
pub(crate) fn inline_frame(first: impl FnOnce()) {
    let start = INLINE.with(|q| {
        let mut q = q.borrow_mut();
        !std::mem::replace(&mut q.draining, true)
    });
    if !start {
        first();
        return;
    }
    /// Resets `draining` even if a runnable unwinds.
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            let _ = INLINE.try_with(|q| q.borrow_mut().draining = false);
        }
    }
    let _reset = Reset;
    first();
    loop {
        // The borrow ends before the handler runs: a handler may schedule more.
        let Some(next) = INLINE.with(|q| q.borrow_mut().ready.pop_front()) else {
            break;
        };
        if let Step::Yield = next.run(1) {
            schedule_inline(next);
        }
    }
}

/// What every subscriber of one bus shares with it.
pub(crate) struct Runtime {
    /// Push deliveries queued or running.
    pub(crate) in_flight: InFlight,
    /// Set once by `shutdown`/`abort`: no new subscribe, and no publish from outside a
    /// handler, is accepted.
    pub(crate) closed: crate::sync::AtomicBool,
    /// Set once, after `closed`, when every topic is closed to every publish.
    pub(crate) sealed: crate::sync::AtomicBool,
    /// Set once when queued events must be discarded instead of handled.
    pub(crate) aborted: crate::sync::AtomicBool,
    /// Wakes subscribers when their retries come due.
    pub(crate) timer: Timer,
    /// Whether events waiting for a retry count in `in_flight` (a clock that moves by
    /// itself); see `retries`.
    pub(crate) retries_hold_idle: bool,
    /// Hashes idempotency keys for every dedup window of the bus.
    pub(crate) key_hasher: KeyHasher,
    /// The topics of observers and of unrouted notices (see `observe`).
    pub(crate) watchers: Watchers,
    /// Delivery traces, if the bus keeps them (see `trace`).
    pub(crate) traces: Option<crate::trace::Traces>,
    /// The causation links seen (see `topology`).
    pub(crate) causation: crate::topology::Causation,
}

impl Runtime {
    pub(crate) fn new(timer: Timer, traces: Option<usize>) -> Self {
        Runtime {
            traces: traces.map(crate::trace::Traces::new),
            causation: crate::topology::Causation::default(),
            in_flight: InFlight::new(),
            closed: crate::sync::AtomicBool::new(false),
            sealed: crate::sync::AtomicBool::new(false),
            aborted: crate::sync::AtomicBool::new(false),
            watchers: Watchers::default(),
            retries_hold_idle: !timer.is_manual(),
            timer,
            key_hasher: KeyHasher::new(),
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(crate::sync::Ordering::SeqCst)
    }

    pub(crate) fn is_sealed(&self) -> bool {
        self.sealed.load(crate::sync::Ordering::SeqCst)
    }

    pub(crate) fn is_aborted(&self) -> bool {
        self.aborted.load(crate::sync::Ordering::Acquire)
    }
}
