//! Tools for testing code that uses crier.
//!
//! The bus itself is the main test tool: build it with [`BusBuilder::inline`] for
//! handlers that run before `publish` returns, or keep the pool and call
//! [`Bus::wait_idle`] before asserting. No sleeps are needed either way.
//!
//! [`BusBuilder::inline`]: crate::BusBuilder::inline
//! [`Bus::wait_idle`]: crate::Bus::wait_idle

use std::time::{Duration, SystemTime};

use crate::clock::Clock;
use crate::sync::{Arc, Mutex};

/// A clock that moves only when the test moves it.
///
/// Clones share one time. Starts at the Unix epoch unless built with
/// [`ManualClock::at`].
///
/// # Example
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use crier::{testing::ManualClock, Bus, Envelope};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let clock = ManualClock::new();
/// let bus = Bus::builder().clock(clock.clone()).build()?;
/// let rx = bus.receiver::<&str>()?;
/// clock.advance(Duration::from_secs(90));
/// bus.publish("tick")?;
/// assert_eq!(rx.recv()?.published_at(), SystemTime::UNIX_EPOCH + Duration::from_secs(90));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<SystemTime>>,
}

impl ManualClock {
    /// A clock at the Unix epoch.
    pub fn new() -> Self {
        ManualClock::at(SystemTime::UNIX_EPOCH)
    }

    /// A clock at `time`.
    pub fn at(time: SystemTime) -> Self {
        ManualClock {
            now: Arc::new(Mutex::new(time)),
        }
    }

    /// Moves the clock forward by `by`.
    ///
    /// # Panics
    ///
    /// If the time would overflow `SystemTime`.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock();
        *now += by;
    }

    /// Sets the clock to `time` (it may go backwards, as a wall clock can).
    pub fn set(&self, time: SystemTime) {
        *self.now.lock() = time;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.lock()
    }
}
