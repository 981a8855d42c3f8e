//! The choices a subscriber makes: what a full mailbox does, and who runs the handler.

use std::time::Duration;

/// What a publish does when a subscriber's bounded mailbox is full.
///
/// The policy is per subscriber: one slow subscriber never changes what another one
/// gets. Every event a policy drops is counted for that subscriber under a
/// [`DropReason`], so `delivered + failed + dropped == accepted` always balances.
///
/// Whatever the policy, a publish made *from inside a handler* never waits for space:
/// where the policy would block, it returns [`PublishError::Full`] with the event
/// instead, because the handler may be holding the very worker that would make room.
///
/// [`PublishError::Full`]: crate::PublishError::Full
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub enum Overflow {
    /// The publisher waits for space (the default). `publish` waits as long as it takes,
    /// `publish_timeout` until its deadline (then `Err(Timeout(event))`), and
    /// `try_publish` does not wait (`Err(Full(event))`). Nothing is lost.
    Block,
    /// The publisher waits up to this long for space, then the event is dropped for
    /// this subscriber only ([`DropReason::BlockTimeout`]) and the publish goes on.
    BlockTimeout(Duration),
    /// The new event is dropped for this subscriber ([`DropReason::Newest`]).
    DropNewest,
    /// The oldest queued event is dropped to make room ([`DropReason::Oldest`]). A
    /// [`Receiver`](crate::Receiver) is told how many it missed
    /// ([`RecvError::Lagged`](crate::RecvError::Lagged)).
    DropOldest,
    /// The whole publish fails with `Err(Full(event))`: no subscriber receives the
    /// event and the caller gets it back.
    Reject,
}

/// Where a push subscriber's handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub enum Dispatch {
    /// On the bus's shared worker pool (the default). A subscriber's events run one at a
    /// time, in order, on whichever worker picks its mailbox up; two workers never run
    /// one subscriber at once. A worker handles at most 64 events of one subscriber
    /// before it moves to the next, so no subscriber starves the others.
    Pool,
    /// On a thread of the subscriber's own, for handlers that block for long.
    Thread,
    /// On the publishing thread, before `publish` returns: deterministic, for tests and
    /// for cheap handlers. Breadth-first per thread: an event published by an inline
    /// handler is delivered after the handlers of the current event have run. If two
    /// threads publish to one inline subscriber at once, the thread already running it
    /// runs the other's event too, so the subscriber stays serial.
    Inline,
}

/// Why an accepted event was dropped for a subscriber instead of being handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub enum DropReason {
    /// The mailbox was full under [`Overflow::DropNewest`].
    Newest,
    /// Evicted from a full mailbox under [`Overflow::DropOldest`].
    Oldest,
    /// No space came in time under [`Overflow::BlockTimeout`].
    BlockTimeout,
    /// Still queued when the subscriber was unsubscribed.
    Unsubscribed,
    /// Still queued when `shutdown` ran out of time, or at `abort`.
    Shutdown,
}

impl DropReason {
    pub(crate) fn index(self) -> usize {
        match self {
            DropReason::Newest => 0,
            DropReason::Oldest => 1,
            DropReason::BlockTimeout => 2,
            DropReason::Unsubscribed => 3,
            DropReason::Shutdown => 4,
        }
    }
}
