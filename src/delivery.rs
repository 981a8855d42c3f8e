//! Delivery policies: what a subscriber does when its handler fails.

use std::time::Duration;

/// How a subscriber treats a failed handler invocation (an `Err` or a panic).
///
/// | policy | can it duplicate? | can it lose? | cost when nothing fails |
/// |---|---|---|---|
/// | [`AtMostOnce`](Self::AtMostOnce) (default) | never | a failed event is counted as `failed` and not retried | none |
/// | [`AtLeastOnce`](Self::AtLeastOnce) | yes: a handler that fails after a side effect sees the event again | no: after the last attempt the event becomes a [`DeadLetter`](crate::DeadLetter), counted and kept | one branch per event |
///
/// Overflow and unsubscribe still drop events under any policy, and count them (see
/// [`Overflow`](crate::Overflow)): a delivery policy is about failures of the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub enum Delivery {
    /// Each event is handled at most once: a failure is final.
    #[default]
    AtMostOnce,
    /// A failed event is retried after a backoff until it succeeds or its attempts run
    /// out; then it is dead-lettered.
    AtLeastOnce(Retry),
}

/// While one event waits for a retry, may later events overtake it?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub enum RetryOrder {
    /// No: the subscriber holds its later events until the failing one succeeds or is
    /// dead-lettered, so successes come in publish order. One poison event delays the
    /// rest by at most its whole backoff.
    Ordered,
    /// Yes: later events run while a failed one waits. Successes may then come out of
    /// publish order.
    Unordered,
}

/// The at-least-once settings of one subscriber: attempt limit, backoff, order, and the
/// size of its dead-letter store.
///
/// There is no `Default`: the order is always chosen explicitly
/// ([`Retry::ordered`] or [`Retry::unordered`]). The rest defaults to 5 attempts,
/// [`Backoff::exponential`] from 10 ms doubling up to 1 s, and a store of 1024 dead
/// letters.
///
/// Bad values (0 attempts, a store of 0, jitter over 100 %) are refused by `subscribe`
/// with [`SubscribeError::InvalidPolicy`](crate::SubscribeError::InvalidPolicy).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use crier::{Backoff, Retry};
///
/// let retry = Retry::ordered()
///     .max_attempts(3)
///     .backoff(Backoff::exponential(Duration::from_millis(50), Duration::from_secs(5)).jitter(20));
/// assert_eq!(retry.attempts_limit(), Some(3));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Retry {
    order: RetryOrder,
    /// `None`: unlimited.
    max_attempts: Option<u32>,
    backoff: Backoff,
    dead_letter_capacity: usize,
}

/// The default number of attempts (RabbitMQ uses 20, SQS lets you choose 1–1000; 5
/// keeps a poison event's cost small).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 5;

/// The default number of dead letters a subscriber keeps when nobody subscribes to them.
pub const DEFAULT_DEAD_LETTER_CAPACITY: usize = 1024;

impl Retry {
    /// Retries hold the line: see [`RetryOrder::Ordered`].
    pub fn ordered() -> Retry {
        Retry::new(RetryOrder::Ordered)
    }

    /// Later events overtake a retrying one: see [`RetryOrder::Unordered`].
    pub fn unordered() -> Retry {
        Retry::new(RetryOrder::Unordered)
    }

    fn new(order: RetryOrder) -> Retry {
        Retry {
            order,
            max_attempts: Some(DEFAULT_MAX_ATTEMPTS),
            backoff: Backoff::exponential(Duration::from_millis(10), Duration::from_secs(1)),
            dead_letter_capacity: DEFAULT_DEAD_LETTER_CAPACITY,
        }
    }

    /// At most `attempts` invocations per event, the first included (default 5). 0 is
    /// refused by `subscribe`; 1 means no retry, only a dead letter.
    pub fn max_attempts(mut self, attempts: u32) -> Retry {
        self.max_attempts = Some(attempts);
        self
    }

    /// Retries for ever. A poison event then never leaves: under
    /// [`RetryOrder::Ordered`] it blocks the subscriber for good. Only by explicit
    /// choice.
    pub fn unlimited_attempts(mut self) -> Retry {
        self.max_attempts = None;
        self
    }

    /// How long to wait before each retry.
    pub fn backoff(mut self, backoff: Backoff) -> Retry {
        self.backoff = backoff;
        self
    }

    /// How many dead letters this subscriber keeps when nobody subscribes to
    /// [`DeadLetter<E>`](crate::DeadLetter) (default 1024). When full, the oldest is
    /// evicted and counted (`dead_letters_evicted`).
    pub fn dead_letter_capacity(mut self, capacity: usize) -> Retry {
        self.dead_letter_capacity = capacity;
        self
    }

    /// The order chosen.
    pub fn order(&self) -> RetryOrder {
        self.order
    }

    /// The attempt limit; `None`: unlimited.
    pub fn attempts_limit(&self) -> Option<u32> {
        self.max_attempts
    }

    /// The backoff schedule.
    pub fn backoff_schedule(&self) -> Backoff {
        self.backoff
    }

    /// The size of the dead-letter store.
    pub fn dead_letters_kept(&self) -> usize {
        self.dead_letter_capacity
    }

    /// Why these settings cannot work, if they cannot.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        if self.max_attempts == Some(0) {
            return Err("max_attempts must be at least 1 (use AtMostOnce for no retry at all)");
        }
        if self.dead_letter_capacity == 0 {
            return Err("dead_letter_capacity must be at least 1");
        }
        if self.backoff.jitter_percent > 100 {
            return Err("backoff jitter is a percentage of the delay: at most 100");
        }
        Ok(())
    }

    /// Whether attempt `attempt` (1-based) may run.
    pub(crate) fn allows(&self, attempt: u32) -> bool {
        self.max_attempts.map_or(true, |max| attempt <= max)
    }
}

/// How long a subscriber waits before retrying a failed event, measured on the bus's
/// [`Clock`](crate::Clock).
///
/// The delay after failed attempt `n` (1-based) is `initial` for [`fixed`](Self::fixed),
/// and `initial × 2^(n-1)`, at most `cap`, for [`exponential`](Self::exponential).
/// With [`jitter`](Self::jitter) each delay is then shortened by up to that percentage.
/// The jitter is a pure function of the event (topic and `seq`), the subscriber's name
/// and the attempt, so it spreads the retries of different events apart while a test
/// with a [`ManualClock`](crate::testing::ManualClock) sees the same delays every run.
///
/// A zero delay retries at once (still in turn: other subscribers' events run in
/// between). A `cap` below `initial` makes every delay `cap`.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use crier::Backoff;
///
/// let ms = Duration::from_millis;
/// let b = Backoff::exponential(ms(10), ms(50));
/// let delays: Vec<_> = (1..=5).map(|n| b.delay(n)).collect();
/// assert_eq!(delays, [ms(10), ms(20), ms(40), ms(50), ms(50)]);
/// assert_eq!(Backoff::fixed(ms(7)).delay(9), ms(7));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Backoff {
    initial: Duration,
    cap: Duration,
    exponential: bool,
    jitter_percent: u8,
}

impl Backoff {
    /// The same delay before every retry.
    pub fn fixed(delay: Duration) -> Backoff {
        Backoff {
            initial: delay,
            cap: delay,
            exponential: false,
            jitter_percent: 0,
        }
    }

    /// `initial`, doubling after every failed attempt, never above `cap`.
    pub fn exponential(initial: Duration, cap: Duration) -> Backoff {
        Backoff {
            initial,
            cap,
            exponential: true,
            jitter_percent: 0,
        }
    }

    /// Shortens each delay by a deterministic pseudo-random 0 to `percent` % (at most
    /// 100; more is refused by `subscribe`).
    pub fn jitter(mut self, percent: u8) -> Backoff {
        self.jitter_percent = percent;
        self
    }

    /// The delay after failed attempt `attempt` (1-based), before jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let delay = if self.exponential {
            let doublings = attempt.saturating_sub(1).min(63);
            self.initial
                .checked_mul(1_u32.checked_shl(doublings).unwrap_or(u32::MAX))
                .unwrap_or(Duration::MAX)
        } else {
            self.initial
        };
        delay.min(self.cap)
    }

    /// The delay after failed attempt `attempt`, with jitter drawn from `seed`.
    pub(crate) fn delay_jittered(&self, attempt: u32, seed: u64) -> Duration {
        let delay = self.delay(attempt);
        if self.jitter_percent == 0 {
            return delay;
        }
        // `mix` spreads the seed over 64 bits; its low bits pick a share of the jitter
        // range in 1/1000 steps.
        let share = mix(seed ^ u64::from(attempt)) % 1001;
        let cut = delay.as_nanos() * u128::from(self.jitter_percent) * u128::from(share) / 100_000;
        delay.saturating_sub(Duration::from_nanos(u64::try_from(cut).unwrap_or(u64::MAX)))
    }
}

/// SplitMix64's finaliser: a cheap, well-spread hash of one word.
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn exponential_backoff_doubles_up_to_its_cap_and_never_overflows() {
        let b = Backoff::exponential(MS(10), Duration::from_secs(1));
        assert_eq!(
            (1..=8).map(|n| b.delay(n)).collect::<Vec<_>>(),
            [MS(10), MS(20), MS(40), MS(80), MS(160), MS(320), MS(640), MS(1000)]
        );
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
        let huge = Backoff::exponential(Duration::MAX, Duration::MAX);
        assert_eq!(huge.delay(40), Duration::MAX);
    }

    #[test]
    fn a_cap_below_the_initial_delay_wins() {
        assert_eq!(Backoff::exponential(MS(100), MS(30)).delay(1), MS(30));
    }

    #[test]
    fn jitter_stays_within_its_percentage_and_is_a_function_of_its_seed() {
        let b = Backoff::fixed(MS(1000)).jitter(20);
        let delays: Vec<_> = (0..1000_u64).map(|seed| b.delay_jittered(1, seed)).collect();
        assert!(delays.iter().all(|d| (MS(800)..=MS(1000)).contains(d)));
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(
            distinct.len() > 100,
            "jitter should spread delays, got {}",
            distinct.len()
        );
        assert_eq!(b.delay_jittered(3, 42), b.delay_jittered(3, 42));
        assert_eq!(Backoff::fixed(MS(5)).delay_jittered(1, 7), MS(5));
        assert!(Backoff::fixed(MS(5)).jitter(100).delay_jittered(1, 7) <= MS(5));
    }

    #[test]
    fn bad_settings_are_named() {
        assert!(Retry::ordered().max_attempts(0).check().is_err());
        assert!(Retry::ordered().dead_letter_capacity(0).check().is_err());
        assert!(Retry::ordered()
            .backoff(Backoff::fixed(MS(1)).jitter(101))
            .check()
            .is_err());
        assert!(Retry::unordered().unlimited_attempts().check().is_ok());
        assert!(Retry::ordered().max_attempts(1).check().is_ok());
    }

    #[test]
    fn the_attempt_limit_counts_the_first_attempt() {
        let r = Retry::ordered().max_attempts(3);
        assert!(r.allows(3));
        assert!(!r.allows(4));
        assert!(Retry::ordered().unlimited_attempts().allows(u32::MAX));
    }
}
