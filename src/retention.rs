//! `Retention`: how much history a topic keeps (see `history` for the store).

use std::time::Duration;

/// How much of its history a topic keeps, set with
/// [`Topic::set_retention`](crate::Topic::set_retention): the last `n` events, the
/// events younger than an age, or both (whichever bound is hit first lets an event
/// go), optionally *compacted* to the latest event per partition key.
///
/// - [`Retention::last(n)`](Retention::last): at most `n` events; the oldest leaves
///   when the `n + 1`-th arrives.
/// - [`Retention::within(age)`](Retention::within): every event published less than
///   `age` ago on the bus [`Clock`](crate::Clock), however many. That is a bound on
///   time, not on memory: a burst is kept whole. Add [`max_events`](Retention::max_events)
///   to bound it.
/// - [`.max_age(age)`](Retention::max_age) and [`.max_events(n)`](Retention::max_events)
///   add the other bound.
/// - [`.compacted()`](Retention::compacted): an event with a partition key
///   ([`Message::key`](crate::Message::key)) replaces the older one with the same key,
///   like Kafka's log compaction: the history becomes "the current state per key".
///   Events without a key are kept as they come (each is its own entry), and all are
///   subject to the count and age bounds.
///
/// Ages run from [`Envelope::published_at`](crate::Envelope::published_at) and are
/// checked from the oldest event: an event leaves once it is `max_age` old and so is
/// every event before it. On a clock that never goes back, that is exactly at
/// `max_age`.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use crier::Retention;
///
/// // The last 10,000 events, none older than an hour.
/// let audit = Retention::last(10_000).max_age(Duration::from_secs(3_600));
/// assert_eq!(audit.events(), Some(10_000));
/// // The latest price per symbol, at most 5,000 symbols.
/// let prices = Retention::last(5_000).compacted();
/// assert!(prices.is_compacted());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Retention {
    events: Option<usize>,
    max_age: Option<Duration>,
    compacted: bool,
}

impl Retention {
    /// At most the last `n` events (`n` above zero).
    pub fn last(n: usize) -> Retention {
        Retention {
            events: Some(n),
            max_age: None,
            compacted: false,
        }
    }

    /// The events published less than `age` ago, with no bound on their number (see
    /// the type's docs); `age` above zero.
    pub fn within(age: Duration) -> Retention {
        Retention {
            events: None,
            max_age: Some(age),
            compacted: false,
        }
    }

    /// Also lets events go once they are `age` old.
    #[must_use]
    pub fn max_age(self, age: Duration) -> Retention {
        Retention {
            max_age: Some(age),
            ..self
        }
    }

    /// Also keeps at most `n` events.
    #[must_use]
    pub fn max_events(self, n: usize) -> Retention {
        Retention {
            events: Some(n),
            ..self
        }
    }

    /// Keeps only the latest event per partition key (events without a key are all
    /// kept).
    #[must_use]
    pub fn compacted(self) -> Retention {
        Retention {
            compacted: true,
            ..self
        }
    }

    /// The most events kept, if bounded by count.
    pub fn events(&self) -> Option<usize> {
        self.events
    }

    /// The age at which events leave, if bounded by age.
    pub fn age(&self) -> Option<Duration> {
        self.max_age
    }

    /// Whether only the latest event per key is kept.
    pub fn is_compacted(&self) -> bool {
        self.compacted
    }

    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if self.events == Some(0) {
            return Err("a retention must keep at least 1 event (to keep none, call clear_retention)");
        }
        if self.max_age.is_some_and(|age| age.is_zero()) {
            return Err("a retention must keep events longer than zero");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_bounds_are_refused() {
        assert!(Retention::last(0).check().is_err());
        assert!(Retention::within(Duration::ZERO).check().is_err());
        assert!(Retention::last(5).max_age(Duration::ZERO).check().is_err());
        assert!(Retention::within(Duration::from_secs(1)).max_events(0).check().is_err());
        assert!(Retention::last(1)
            .max_age(Duration::from_nanos(1))
            .compacted()
            .check()
            .is_ok());
    }
}
