//! The `tracing` feature: a span around each handler invocation, and an event for each
//! step of a delivery (the same steps delivery traces record, see `trace`).
//!
//! Compiled only with the feature, so without it nothing is left on any path. With it
//! and no `tracing` subscriber interested, each hook costs `tracing`'s callsite check.
//!
//! Events are emitted where the step happens, and a drop on arrival happens under its
//! topic's commit lock: a `tracing` subscriber must not publish on the same bus from
//! its callbacks (none of the usual ones, which write or export, does).

use tracing::Level;

use crate::envelope::Envelope;
use crate::trace::{AfterFailure, TraceOutcome};

/// The span of one handler invocation: `crier.delivery`, with the event id, topic,
/// subscriber, attempt and correlation id.
pub(crate) fn delivery_span<E>(env: &Envelope<E>, subscriber: &str) -> tracing::span::EnteredSpan {
    tracing::info_span!(
        target: "crier",
        "crier.delivery",
        event = %env.id(),
        topic = env.topic(),
        subscriber,
        attempt = env.attempt(),
        correlation = %env.correlation_id(),
    )
    .entered()
}

/// Whether any step's event would be recorded: the most verbose level they use.
pub(crate) fn wants_steps() -> bool {
    tracing::enabled!(target: "crier", Level::DEBUG)
}

/// One step of `env`'s delivery to `subscriber`: failures and drops at `WARN` (a dead
/// letter at `ERROR`), the rest at `DEBUG`.
pub(crate) fn step<E>(env: &Envelope<E>, subscriber: &str, outcome: &TraceOutcome) {
    let event = env.id();
    let topic = env.topic();
    match outcome {
        TraceOutcome::Failed {
            attempt,
            error,
            then: AfterFailure::DeadLettered,
            ..
        } => {
            tracing::error!(target: "crier", %event, topic, subscriber, attempt, error = error.as_str(), "dead-lettered")
        }
        TraceOutcome::Failed {
            attempt,
            error,
            then: AfterFailure::Retry { after },
            ..
        } => {
            tracing::warn!(target: "crier", %event, topic, subscriber, attempt, error = error.as_str(), retry_in = ?after, "handler failed; retry scheduled")
        }
        TraceOutcome::Failed {
            attempt, error, then, ..
        } => {
            tracing::warn!(target: "crier", %event, topic, subscriber, attempt, error = error.as_str(), then = ?then, "handler failed")
        }
        TraceOutcome::Dropped(reason) => {
            tracing::warn!(target: "crier", %event, topic, subscriber, reason = ?reason, "event dropped")
        }
        TraceOutcome::Handled { attempt, took } => {
            tracing::debug!(target: "crier", %event, topic, subscriber, attempt, took = ?took, "handled")
        }
        TraceOutcome::Received { attempt } => {
            tracing::debug!(target: "crier", %event, topic, subscriber, attempt, "received")
        }
        TraceOutcome::Acked { attempt } => {
            tracing::debug!(target: "crier", %event, topic, subscriber, attempt, "acked")
        }
        TraceOutcome::Deduplicated { attempt } => {
            tracing::debug!(target: "crier", %event, topic, subscriber, attempt, "deduplicated")
        }
    }
}
