//! The errors, one small enum per operation. Publish errors hand the event back.

use std::fmt;
use std::time::Duration;

/// The error type a handler may return: anything that converts into a boxed error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a publish was refused. Every variant hands the event back
/// ([`into_event`](PublishError::into_event)): a refused event was delivered to nobody.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum PublishError<E> {
    /// A subscriber's mailbox is full and its policy is [`Overflow::Reject`], or it is
    /// [`Overflow::Block`] and the call may not wait (`try_publish`, or a publish from
    /// inside a handler).
    ///
    /// [`Overflow::Reject`]: crate::Overflow::Reject
    /// [`Overflow::Block`]: crate::Overflow::Block
    #[error("a subscriber's mailbox is full")]
    Full(E),
    /// `publish_timeout` waited its whole timeout for mailbox space.
    #[error("timed out waiting for mailbox space")]
    Timeout(E),
    /// The bus is shut down or shutting down.
    #[error("the bus is shut down")]
    Closed(E),
}

impl<E> PublishError<E> {
    /// Takes the event back.
    pub fn into_event(self) -> E {
        match self {
            PublishError::Full(e) | PublishError::Timeout(e) | PublishError::Closed(e) => e,
        }
    }

    /// The event that was not published.
    pub fn event(&self) -> &E {
        match self {
            PublishError::Full(e) | PublishError::Timeout(e) | PublishError::Closed(e) => e,
        }
    }
}

impl<E> fmt::Debug for PublishError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PublishError::Full(_) => f.write_str("Full(..)"),
            PublishError::Timeout(_) => f.write_str("Timeout(..)"),
            PublishError::Closed(_) => f.write_str("Closed(..)"),
        }
    }
}

/// Why [`Bus::request`](crate::Bus::request) got no reply. The variants that come
/// before the request was sent hand the query back ([`into_query`](Self::into_query)).
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum RequestError<Q> {
    /// Nobody responds to requests of this type.
    #[error("no responder for requests of type `{}`", std::any::type_name::<Q>())]
    NoResponder(Q),
    /// The responders of this request type reply with another type than the one asked
    /// for.
    #[error("responders of `{}` reply with `{existing}`, not `{requested}`", std::any::type_name::<Q>())]
    ReplyTypeMismatch {
        /// The query, not sent.
        query: Q,
        /// The reply type of the responders.
        existing: &'static str,
        /// The reply type asked for.
        requested: &'static str,
    },
    /// The request could not be sent: the responders' queue had no room in time, or
    /// the bus is shut down.
    #[error("the request could not be sent: {0}")]
    NotSent(PublishError<Q>),
    /// No reply came within the timeout. The request may still be handled; its reply
    /// then finds nobody waiting and is counted as unrouted on the reply topic.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The responder failed: it returned `Err` or panicked (an at-least-once responder:
    /// on its last attempt). The text is the error's or the panic's.
    #[error("the responder failed: {0}")]
    Failed(String),
    /// The request was dropped before any responder answered: by the overflow policy of
    /// the responders' queue, or because the last responder left with it queued.
    #[error("the request was dropped unanswered")]
    Unanswered,
    /// The bus shut down before the request was answered.
    #[error("the bus shut down before the request was answered")]
    Shutdown,
}

impl<Q> RequestError<Q> {
    /// The query, if the request was never sent.
    pub fn into_query(self) -> Option<Q> {
        match self {
            RequestError::NoResponder(query) | RequestError::ReplyTypeMismatch { query, .. } => Some(query),
            RequestError::NotSent(error) => Some(error.into_event()),
            RequestError::Timeout(_) | RequestError::Failed(_) | RequestError::Unanswered | RequestError::Shutdown => {
                None
            }
        }
    }
}

impl<Q> fmt::Debug for RequestError<Q> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::NoResponder(_) => f.write_str("NoResponder(..)"),
            RequestError::ReplyTypeMismatch {
                existing, requested, ..
            } => f
                .debug_struct("ReplyTypeMismatch")
                .field("existing", existing)
                .field("requested", requested)
                .finish_non_exhaustive(),
            RequestError::NotSent(error) => f.debug_tuple("NotSent").field(error).finish(),
            RequestError::Timeout(timeout) => f.debug_tuple("Timeout").field(timeout).finish(),
            RequestError::Failed(error) => f.debug_tuple("Failed").field(error).finish(),
            RequestError::Unanswered => f.write_str("Unanswered"),
            RequestError::Shutdown => f.write_str("Shutdown"),
        }
    }
}

/// A topic could not be opened or configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The name is already bound to another event type.
    #[error("topic `{topic}` carries `{existing}`, not `{requested}`")]
    TypeMismatch {
        /// The topic name.
        topic: String,
        /// The type the name is bound to.
        existing: &'static str,
        /// The type that was asked for.
        requested: &'static str,
    },
    /// The name is not a valid topic name.
    #[error("invalid topic name `{name}`: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A topic setting that cannot work, such as a
    /// [`DedupWindow`](crate::DedupWindow) of capacity 0.
    #[error("invalid setting for topic `{topic}`: {reason}")]
    InvalidConfig {
        /// The topic name.
        topic: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A topic's history cannot be read from the offset asked for (see
/// [`Topic::history_from`](crate::Topic::history_from)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// Events from that offset on were let go by the retention, or were published
    /// before it was set (a topic with no retention keeps nothing). Reading from
    /// `Offset::At(oldest)` or [`Offset::Earliest`](crate::Offset::Earliest) works; the
    /// events in between are gone.
    #[error("{requested} is no longer in the history: the oldest offset available is {oldest}")]
    Evicted {
        /// The offset asked for.
        requested: crate::Offset,
        /// The oldest offset that can still be read from.
        oldest: u64,
    },
    /// The offset is past the next one: that event has not been published.
    #[error("offset {requested} has not been published: the next offset is {next}")]
    Future {
        /// The offset asked for.
        requested: u64,
        /// The `seq` the next accepted publish will get.
        next: u64,
    },
}

/// Exporting a topic's history failed ([`Topic::export`](crate::Topic::export),
/// feature `serde`).
#[cfg(feature = "serde")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The writer failed.
    #[error("writing the export: {0}")]
    Io(#[source] std::io::Error),
    /// An event did not serialize to JSON.
    #[error("the event at offset {seq} does not serialize: {source}")]
    Event {
        /// Its offset.
        seq: u64,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// Importing a history failed, and nothing was imported ([`Topic::import`](crate::Topic::import),
/// feature `serde`).
#[cfg(feature = "serde")]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// A line cannot be imported: not UTF-8, not JSON, a missing or mistyped field, an
    /// unknown format, another topic than the first line's, an offset not above the
    /// previous line's, an id whose low half is not its offset, an event that does not deserialize, an
    /// upcaster's refusal, or longer than [`MAX_IMPORT_LINE`](crate::MAX_IMPORT_LINE).
    #[error("line {line}: {reason}")]
    Line {
        /// The line, counting from 1.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// The import's first offset does not follow the topic's history: below its next
    /// offset, or above it while the history holds events.
    #[error("line {line}: offset {seq} does not follow the topic's history, whose next offset is {next}")]
    Offsets {
        /// The line of the first event.
        line: u64,
        /// Its offset.
        seq: u64,
        /// The topic's next offset.
        next: u64,
    },
    /// The topic keeps no history to import into.
    #[error("topic `{topic}` keeps no history: set a retention before importing")]
    NoHistory {
        /// The topic.
        topic: String,
    },
    /// The topic named in the lines cannot carry this event type on this bus.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// Reading failed.
    #[error("reading the import: {0}")]
    Io(#[source] std::io::Error),
}

/// A subscriber or receiver could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// The topic could not be opened.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// A mailbox of capacity 0 could never hold an event; use at least 1.
    #[error("mailbox capacity must be at least 1")]
    ZeroCapacity,
    /// A delivery policy that cannot work (0 attempts, an empty dead-letter store,
    /// jitter over 100 %), or one this kind of subscriber cannot have.
    #[error("invalid delivery policy: {reason}")]
    InvalidPolicy {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The pattern of [`SubscriberBuilder::pattern`](crate::SubscriberBuilder::pattern)
    /// is not valid.
    #[error("invalid pattern `{pattern}`: {reason}")]
    InvalidPattern {
        /// The rejected pattern.
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The group name of [`SubscriberBuilder::group`](crate::SubscriberBuilder::group)
    /// is not valid (the rules of topic names), or the group cannot take this member.
    #[error("invalid group `{group}`: {reason}")]
    InvalidGroup {
        /// The group's name.
        group: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// A responder ([`SubscriberBuilder::respond`](crate::SubscriberBuilder::respond))
    /// was given an option a responder cannot have.
    #[error("invalid responder: {reason}")]
    InvalidResponder {
        /// What is wrong.
        reason: &'static str,
    },
    /// A request type's responders reply with one type: the first responder of
    /// `request` fixed `existing`, and this one replies with `requested`.
    #[error("responders of `{request}` reply with `{existing}`, not `{requested}`")]
    ReplyTypeMismatch {
        /// The request type.
        request: &'static str,
        /// The reply type its first responder fixed.
        existing: &'static str,
        /// This responder's reply type.
        requested: &'static str,
    },
    /// The subscriber cannot start at the offset it asked for
    /// ([`SubscriberBuilder::start_at`](crate::SubscriberBuilder::start_at)).
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The bus is shut down.
    #[error("the bus is shut down")]
    Closed,
    /// A thread could not be started: the subscriber's own
    /// ([`Dispatch::Thread`](crate::Dispatch::Thread)), or the worker pool, which starts
    /// with the first pool subscriber.
    #[error("could not start a thread")]
    Spawn(#[source] std::io::Error),
}

/// A bus could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A pool of 0 workers could never run a pool subscriber; use at least 1.
    #[error("the worker pool needs at least 1 thread")]
    ZeroWorkers,
    /// A default mailbox capacity of 0 could never hold an event; use at least 1.
    #[error("mailbox capacity must be at least 1")]
    ZeroCapacity,
    /// A trace store of 0 events could never explain one; use at least 1, or leave
    /// traces off.
    #[error("delivery traces must keep at least 1 event")]
    ZeroTraceCapacity,
}

/// A [`Receiver::recv`](crate::Receiver::recv) that returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// The receiver's mailbox overflowed under `DropOldest` and this many events were
    /// dropped since the last call; the next call returns the oldest event still queued.
    #[error("the receiver lagged behind and missed {0} events")]
    Lagged(u64),
    /// The bus shut down (or the topic closed) and every queued event was received.
    #[error("the bus is shut down and the receiver is empty")]
    Closed,
}

/// A [`nack`](crate::AckHandle::nack) that could not send its event back: the event
/// is counted as dropped, for the reason the variant names. (An ack never fails: it
/// counts the event delivered even then.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AckError {
    /// The [`AckReceiver`](crate::AckReceiver) was dropped (in a consumer group: and
    /// every other member too): counted as
    /// [`DropReason::Unsubscribed`](crate::DropReason::Unsubscribed).
    #[error("the ack receiver was dropped: the event cannot be redelivered")]
    Unsubscribed,
    /// The bus is shut down: counted as
    /// [`DropReason::Shutdown`](crate::DropReason::Shutdown).
    #[error("the bus is shut down: the event cannot be redelivered")]
    Closed,
}

/// A [`Receiver::try_recv`](crate::Receiver::try_recv) that returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryRecvError {
    /// No event is queued now.
    #[error("no event is queued")]
    Empty,
    /// See [`RecvError::Lagged`].
    #[error("the receiver lagged behind and missed {0} events")]
    Lagged(u64),
    /// See [`RecvError::Closed`].
    #[error("the bus is shut down and the receiver is empty")]
    Closed,
}

/// A [`Receiver::recv_timeout`](crate::Receiver::recv_timeout) that returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvTimeoutError {
    /// No event came within the timeout.
    #[error("no event came in time")]
    Timeout,
    /// See [`RecvError::Lagged`].
    #[error("the receiver lagged behind and missed {0} events")]
    Lagged(u64),
    /// See [`RecvError::Closed`].
    #[error("the bus is shut down and the receiver is empty")]
    Closed,
}

/// [`Bus::wait_idle`](crate::Bus::wait_idle) gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WaitIdleError {
    /// Deliveries were still queued or running when the timeout passed.
    #[error("{in_flight} deliveries still queued or running after {timeout:?}")]
    Timeout {
        /// Deliveries queued or running at the deadline.
        in_flight: usize,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// Called from inside a handler, which is itself in flight: the wait could never end.
    #[error("wait_idle called from inside a handler")]
    InsideHandler,
}

/// A [`Recorder`](crate::testing::Recorder)'s wait ended without what it waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The timeout passed first.
    #[error("still waiting after {timeout:?}, with {seen} events recorded")]
    Timeout {
        /// Events recorded at the deadline.
        seen: usize,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// The bus shut down, or the recorder was stopped, first: nothing more will come.
    #[error("the recorder stopped (the bus shut down, or it was stopped) with {seen} events recorded")]
    Ended {
        /// Events recorded in all.
        seen: usize,
    },
}

/// [`Bus::shutdown`](crate::Bus::shutdown) or [`Bus::abort`](crate::Bus::abort) could
/// not run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShutdownError {
    /// Called from inside a handler, which would have to wait for itself. Nothing was
    /// changed; call it from outside the bus, or drop the last `Bus` handle.
    #[error("shutdown called from inside a handler")]
    InsideHandler,
}

/// How a handler invocation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum Failure {
    /// The handler returned `Err`.
    Error(BoxError),
    /// The handler panicked; the panic message, if it was a string.
    Panic(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Error(e) => write!(f, "{e}"),
            Failure::Panic(msg) => write!(f, "panicked: {msg}"),
        }
    }
}

/// What an error hook is told about a failed handler invocation.
#[derive(Debug)]
pub struct HandlerError {
    pub(crate) subscriber: std::sync::Arc<str>,
    pub(crate) topic: crate::registry::TopicName,
    pub(crate) event_id: crate::EventId,
    pub(crate) attempt: u32,
    pub(crate) failure: Failure,
}

impl HandlerError {
    /// The subscriber's name.
    pub fn subscriber(&self) -> &str {
        &self.subscriber
    }

    /// The topic the event was published on.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The event that failed.
    pub fn event_id(&self) -> crate::EventId {
        self.event_id
    }

    /// The delivery attempt that failed, starting at 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// What went wrong.
    pub fn failure(&self) -> &Failure {
        &self.failure
    }

    /// `true` if the handler panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.failure, Failure::Panic(_))
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "subscriber `{}` failed on event {} of topic `{}` (attempt {}): {}",
            self.subscriber, self.event_id, self.topic, self.attempt, self.failure
        )
    }
}

impl std::error::Error for HandlerError {}
