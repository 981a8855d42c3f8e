//! What the current thread is doing for the bus: which delivery it is running (so that
//! a publish from a handler inherits causation and correlation and never waits on a
//! full mailbox), and whether it is one of the bus's own threads.

use std::cell::Cell;

use crate::{EventId, SubscriberId};

/// The delivery a handler on this thread is running.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Delivery {
    pub(crate) event: EventId,
    pub(crate) correlation: EventId,
    pub(crate) subscriber: SubscriberId,
    /// The id its user knows the subscriber by: a lane's is its subscriber's (see
    /// `lanes`). Causation links name this one.
    pub(crate) public: SubscriberId,
}

thread_local! {
    static CURRENT: Cell<Option<Delivery>> = const { Cell::new(None) };
    static BUS_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// The delivery running on this thread, if any. `None` during thread-local destruction.
pub(crate) fn current() -> Option<Delivery> {
    CURRENT.try_with(Cell::get).ok().flatten()
}

pub(crate) fn in_handler() -> bool {
    current().is_some()
}

/// `true` inside a handler or on a worker or subscriber thread of any bus: where a call
/// that waits for the bus (idle, shutdown) could end up waiting for itself.
pub(crate) fn on_bus() -> bool {
    in_handler() || BUS_THREAD.try_with(Cell::get).unwrap_or(false)
}

pub(crate) fn mark_bus_thread() {
    BUS_THREAD.with(|b| b.set(true));
}

/// Marks a handler invocation; restores the outer one (inline dispatch nests) on drop.
pub(crate) struct Scope(Option<Delivery>);

pub(crate) fn enter(delivery: Delivery) -> Scope {
    Scope(CURRENT.with(|c| c.replace(Some(delivery))))
}

impl Drop for Scope {
    fn drop(&mut self) {
        let outer = self.0.take();
        let _ = CURRENT.try_with(|c| c.set(outer));
    }
}
