//! `ScheduleState`: hands a serial subscriber's mailbox to at most one runner at a time,
//! and never leaves a non-empty mailbox unscheduled.
//!
//! # Algorithm
//!
//! One byte with two bits, in the spirit of tokio's task state:
//! - `SCHEDULED`: an executor owns the mailbox (it is in a run queue or running). Only
//!   the thread that sets it from clear submits the mailbox, and only the owner clears it.
//! - `NOTIFIED`: something was pushed since the owner last looked.
//!
//! Producer, after pushing an item into the mailbox's queue:
//! 1. `prev = fetch_or(SCHEDULED | NOTIFIED)`; if `prev` lacked `SCHEDULED`, submit the
//!    mailbox to its executor (`notify` returns `true`).
//!
//! Owner (an executor that took the mailbox from its run queue):
//! 1. `begin_run`: store `SCHEDULED` (clears `NOTIFIED`).
//! 2. Pop and handle items until the queue is seen empty or the budget runs out. Out of
//!    budget: keep `SCHEDULED` and put the mailbox back at the end of the run queue.
//! 3. `try_release`: CAS `SCHEDULED -> 0`. If it fails, `NOTIFIED` was set after step 1:
//!    go back to step 1.
//!
//! # Invariants
//!
//! - At most one runner: the mailbox is submitted only on the `0 -> SCHEDULED` edge, and
//!   the bit is cleared only by the owner after it stops running.
//! - No lost wake-up: a push that the owner's last pop missed is followed by a `fetch_or`.
//!   All RMWs on one atomic are totally ordered. If the `fetch_or` comes before the CAS,
//!   the CAS fails and the owner runs again. Its Acquire failure load synchronises with
//!   the producer's Release, so the push is visible. If it comes after, it reads 0 and
//!   the producer submits the mailbox itself.
//!
//!
//! # Hand-off (inline subscribers)
//!
//! An inline publish may skip the mailbox and run its event itself, when the
//! subscriber is idle. Every push and every `notify` of a subscriber happen under its
//! topic's commit lock, in one hold, so while a producer holds that lock:
//!
//! - **idle implies empty**: if the state is `0`, the queue is empty. The last owner
//!   released (CAS `SCHEDULED -> 0`) after it saw the queue empty, with no `NOTIFIED`
//!   since its `begin_run`; a later push would have set `NOTIFIED` (failing the CAS) or,
//!   coming after the release, found the state `0` and submitted a new owner.
//!
//! Producer, under the commit lock: `claim` = CAS `0 -> SCHEDULED`. On success it owns
//! the subscriber as if it had been submitted, and nothing is queued ahead of its event,
//! so running the event outside the queue keeps the topic's order; later pushes only set
//! `NOTIFIED`. After running it, the producer ends as an owner does (`try_release`, and
//! on failure runs the queue). On failure it pushes and notifies as above.
//!
//! Both facts, and idle-implies-empty, are checked exhaustively by the loom models in
//! `src/loom_tests.rs`.

use crate::sync::{AtomicU8, Ordering};

const SCHEDULED: u8 = 0b01;
const NOTIFIED: u8 = 0b10;

/// On a cache line of its own: publishers write it for every event, while the
/// runner reads the subscriber's other fields for every event.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct ScheduleState(AtomicU8);

impl ScheduleState {
    pub(crate) fn new() -> Self {
        ScheduleState(AtomicU8::new(0))
    }

    /// Producer step 1. Returns `true` when the caller must submit the mailbox.
    pub(crate) fn notify(&self) -> bool {
        // AcqRel: Release publishes the push to the owner; Acquire orders this after the
        // previous owner's release of the mailbox.
        self.0.fetch_or(SCHEDULED | NOTIFIED, Ordering::AcqRel) & SCHEDULED == 0
    }

    /// Hand-off: take an idle subscriber's ownership directly. Call only with the
    /// topic's commit lock held, where every push and `notify` happen too.
    pub(crate) fn claim(&self) -> bool {
        // Acquire: see everything the previous owner did before its release.
        self.0
            .compare_exchange(0, SCHEDULED, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Owner step 1.
    pub(crate) fn begin_run(&self) {
        // Acquire: see every push whose NOTIFIED we are about to clear.
        self.0.swap(SCHEDULED, Ordering::AcqRel);
    }

    /// Owner step 3. `true`: released, the owner must stop. `false`: run again.
    pub(crate) fn try_release(&self) -> bool {
        // Release on success: the next owner sees what this one did. Acquire on failure:
        // see the push that set NOTIFIED.
        self.0
            .compare_exchange(SCHEDULED, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}
