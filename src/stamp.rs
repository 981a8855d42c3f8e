//! Publish times as the bus keeps them: integers, so a dedup window compares them in
//! one instruction.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A publish time as the bus keeps it: nanoseconds since the Unix epoch, saturating at
/// the ends of `i64` (the years 1677 and 2262). Converted from the clock's `SystemTime`
/// once per publish (about 80 instructions), so a dedup window compares two integers
/// per look-up, and an envelope keeps 8 bytes instead of 16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Stamp(pub(crate) i64);

impl Stamp {
    /// An expiry past the end of the range: never reached.
    pub(crate) const NEVER: Stamp = Stamp(i64::MAX);

    pub(crate) fn of(time: SystemTime) -> Stamp {
        match time.duration_since(UNIX_EPOCH) {
            Ok(after) => Stamp(nanos(after)),
            Err(before) => Stamp(-nanos(before.duration())),
        }
    }

    /// The time it stands for.
    pub(crate) fn time(self) -> SystemTime {
        match u64::try_from(self.0) {
            Ok(after) => UNIX_EPOCH + Duration::from_nanos(after),
            Err(_) => UNIX_EPOCH - Duration::from_nanos(self.0.unsigned_abs()),
        }
    }

    /// Whether this expiry has come by `now`: [`NEVER`](Self::NEVER) never comes.
    pub(crate) fn has_come(self, now: Stamp) -> bool {
        self <= now && self != Stamp::NEVER
    }

    /// `self` plus `nanos` (not negative), [`NEVER`](Self::NEVER) past the end.
    pub(crate) fn plus(self, nanos: i64) -> Stamp {
        Stamp(self.0.saturating_add(nanos))
    }
}

/// A duration in nanoseconds, `i64::MAX` past the range (so a stamp plus it is
/// `Stamp::NEVER`).
pub(crate) fn nanos(age: Duration) -> i64 {
    i64::try_from(age.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_count_nanoseconds_from_the_epoch_and_saturate() {
        let at = |nanos| Stamp::of(UNIX_EPOCH + Duration::from_nanos(nanos));
        assert_eq!(at(1_500), Stamp(1_500));
        assert_eq!(Stamp::of(UNIX_EPOCH - Duration::from_secs(1)), Stamp(-1_000_000_000));
        assert_eq!(at(u64::MAX), Stamp::NEVER, "past 2262");
        assert_eq!(Stamp(5).plus(nanos(Duration::MAX)), Stamp::NEVER);
        assert_eq!(Stamp(5).plus(nanos(Duration::from_nanos(10))), Stamp(15));
    }

    #[test]
    fn an_expiry_comes_at_its_instant_and_never_comes_at_the_end_of_time() {
        assert!(!Stamp(10).has_come(Stamp(9)));
        assert!(Stamp(10).has_come(Stamp(10)));
        assert!(!Stamp::NEVER.has_come(Stamp::NEVER));
    }

    #[test]
    fn a_stamp_stands_for_its_time_to_the_nanosecond() {
        for time in [
            UNIX_EPOCH + Duration::new(1_795_000_000, 123_456_789),
            UNIX_EPOCH - Duration::new(86_400, 1),
            UNIX_EPOCH,
        ] {
            assert_eq!(Stamp::of(time).time(), time);
        }
        let far = UNIX_EPOCH + Duration::from_secs(400 * 365 * 86_400);
        assert_eq!(
            Stamp::of(far).time(),
            UNIX_EPOCH + Duration::from_nanos(i64::MAX as u64),
            "clamped"
        );
    }
}
