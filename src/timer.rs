//! The bus's timer: wakes a subscriber when one of its retries comes due on the bus's
//! clock.
//!
//! # Design
//!
//! Entries are (due time on the bus clock, subscriber to wake) in a min-heap under one
//! mutex. A subscriber arms one entry per retry it schedules. An entry whose retry was
//! taken early (a runner that was running anyway saw it due) wakes the subscriber for
//! nothing, which is harmless: it finds nothing due and goes idle again. So the heap
//! holds at most one entry per retry scheduled, each popped when due.
//!
//! Time passes in one of two ways (see [`Clock::on_move`]):
//! - **A clock that moves by itself.** A thread (`crier-timer`, started by the first
//!   at-least-once subscriber) pops the due entries, wakes them, and sleeps until the
//!   earliest remaining one, in real time, at most [`MAX_SLEEP`] at a time so that a
//!   wall clock that jumps is noticed. `arm` notifies it when an entry becomes the
//!   earliest.
//! - **A clock moved by hand.** No thread. Each move rings the alarm, which pops and
//!   wakes on the moving thread. `arm` wakes at once an entry that is already due, so a
//!   move that came between a runner reading the time and arming is not missed.
//!
//! Waking runs outside the heap's lock, since it may run inline handlers: subscribers
//! woken here are submitted as after a publish, and this thread's inline queue is
//! drained right after.
//!
//! [`Clock::on_move`]: crate::Clock::on_move

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use crate::clock::{Alarm, Clock};
use crate::dispatch;
use crate::sync::{Condvar, Mutex};

/// The longest the timer thread sleeps without looking at the clock again.
const MAX_SLEEP: Duration = Duration::from_secs(1);

/// What the timer wakes: a subscriber with a retry due.
pub(crate) trait Wake: Send + Sync {
    fn wake(self: Arc<Self>);
}

struct Entry {
    due: SystemTime,
    /// Arming order, so that entries due at once wake in the order they were armed.
    order: u64,
    target: Weak<dyn Wake>,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    /// Reversed: `BinaryHeap` is a max-heap, and the earliest entry must come first.
    fn cmp(&self, other: &Self) -> CmpOrdering {
        (other.due, other.order).cmp(&(self.due, self.order))
    }
}

#[derive(Default)]
struct State {
    heap: BinaryHeap<Entry>,
    armed: u64,
    thread_started: bool,
    stopped: bool,
}

pub(crate) struct TimerShared {
    state: Mutex<State>,
    /// Wakes the timer thread: a new earliest entry, or stop.
    changed: Condvar,
    clock: Arc<dyn Clock>,
    /// The clock moves only by hand (and rings the alarm); no thread runs.
    manual: bool,
}

/// One bus's timer.
pub(crate) struct Timer {
    shared: Arc<TimerShared>,
}

impl Timer {
    pub(crate) fn new(clock: Arc<dyn Clock>) -> Timer {
        let shared = Arc::new_cyclic(|weak| {
            let manual = clock.on_move(Alarm { timer: weak.clone() });
            TimerShared {
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
                clock,
                manual,
            }
        });
        Timer { shared }
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.shared.clock.now()
    }

    /// `true` for a clock moved by hand: see the module docs.
    pub(crate) fn is_manual(&self) -> bool {
        self.shared.manual
    }

    /// Wakes `target` once the clock reaches `due`.
    pub(crate) fn arm(&self, due: SystemTime, target: Weak<dyn Wake>) {
        let shared = &self.shared;
        if shared.manual && due <= shared.clock.now() {
            // The caller is the target's runner: the wake only makes it look again
            // before it goes idle, so nothing is submitted and nothing runs here.
            if let Some(target) = target.upgrade() {
                target.wake();
            }
            return;
        }
        let mut state = shared.state.lock();
        let order = state.armed;
        state.armed += 1;
        let earliest = state.heap.peek().map_or(true, |first| due < first.due);
        state.heap.push(Entry { due, order, target });
        drop(state);
        if earliest && !shared.manual {
            shared.changed.notify_all();
        }
    }

    /// `true` once, for the caller that must start the timer thread (none for a clock
    /// moved by hand). If the start fails, call [`thread_failed`](Self::thread_failed).
    pub(crate) fn claim_thread(&self) -> bool {
        let mut state = self.shared.state.lock();
        let claim = !self.shared.manual && !state.thread_started && !state.stopped;
        state.thread_started |= claim;
        claim
    }

    pub(crate) fn thread_failed(&self) {
        self.shared.state.lock().thread_started = false;
    }

    /// The timer thread's body, until [`stop`](Self::stop).
    pub(crate) fn serve(&self) -> impl FnOnce() + Send + 'static {
        let shared = self.shared.clone();
        move || shared.serve()
    }

    /// Stops the timer thread and forgets every entry (shutdown).
    pub(crate) fn stop(&self) {
        let mut state = self.shared.state.lock();
        state.stopped = true;
        state.heap.clear();
        drop(state);
        self.shared.changed.notify_all();
    }
}

impl TimerShared {
    /// Pops the entries due now; `Err` with the earliest remaining due time otherwise.
    fn take_due(&self, state: &mut State) -> Result<Vec<Weak<dyn Wake>>, Option<SystemTime>> {
        let now = self.clock.now();
        let mut due = Vec::new();
        while state.heap.peek().is_some_and(|first| first.due <= now) {
            if let Some(entry) = state.heap.pop() {
                due.push(entry.target);
            }
        }
        if due.is_empty() {
            Err(state.heap.peek().map(|first| first.due))
        } else {
            Ok(due)
        }
    }

    /// What a ringing alarm does: wake what is due, on this thread.
    pub(crate) fn fire_due(&self) {
        let due = {
            let mut state = self.state.lock();
            if state.stopped {
                return;
            }
            self.take_due(&mut state)
        };
        if let Ok(due) = due {
            wake_all(due);
        }
    }

    fn serve(&self) {
        let mut state = self.state.lock();
        while !state.stopped {
            match self.take_due(&mut state) {
                Ok(due) => {
                    drop(state);
                    wake_all(due);
                    state = self.state.lock();
                }
                Err(None) => state = self.changed.wait(state),
                Err(Some(earliest)) => {
                    let wait = earliest
                        .duration_since(self.clock.now())
                        .unwrap_or(Duration::ZERO)
                        .min(MAX_SLEEP);
                    state = self.changed.wait_timeout(state, wait);
                }
            }
        }
    }
}

fn wake_all(due: Vec<Weak<dyn Wake>>) {
    for target in due {
        if let Some(target) = target.upgrade() {
            target.wake();
        }
    }
    // Inline subscribers woken above were queued on this thread.
    dispatch::inline_frame(|| {});
}
