//! The clock the bus reads publish times from.

use std::time::SystemTime;

/// A source of wall-clock time for envelope timestamps.
///
/// The bus asks its clock for the time of every publish ([`Envelope::published_at`]).
/// The default is [`SystemClock`]; tests pass [`ManualClock`] to
/// [`BusBuilder::clock`] so that timestamps are known in advance.
///
/// Waits the caller asks for in real time (`publish_timeout`, `wait_idle`, `shutdown`)
/// use the OS's monotonic clock, never this one.
///
/// [`Envelope::published_at`]: crate::Envelope::published_at
/// [`ManualClock`]: crate::testing::ManualClock
/// [`BusBuilder::clock`]: crate::BusBuilder::clock
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;
}

/// The operating system's wall clock ([`SystemTime::now`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}
