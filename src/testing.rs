//! Tools for testing code that uses crier.
//!
//! The bus itself is the main test tool: build it with [`BusBuilder::inline`] for
//! handlers that run before `publish` returns, or keep the pool and call
//! [`Bus::wait_idle`] before asserting. No sleeps are needed either way.
//!
//! [`Recorder`] keeps the events a flow publishes and asserts about them once the bus
//! is idle; [`ManualClock`] moves time for retries, dedup windows and retention.
//!
//! [`BusBuilder::inline`]: crate::BusBuilder::inline
//! [`Bus::wait_idle`]: crate::Bus::wait_idle

use std::time::{Duration, SystemTime};

#[cfg(not(loom))]
pub use crate::recorder::Recorder;
#[cfg(not(loom))]
pub use crate::scenario::Scenario;

use crate::clock::{Alarm, Clock};
use crate::sync::{Arc, Mutex};

/// A clock that moves only when the test moves it.
///
/// Clones share one time. Starts at the Unix epoch unless built with
/// [`ManualClock::at`].
///
/// Every bus built with it is told when it moves ([`Clock::on_move`]): retries whose
/// backoff has passed become due at once, and an inline subscriber's retry runs inside
/// [`advance`](Self::advance) or [`set`](Self::set), before it returns. A pool
/// subscriber's retry is queued then; [`Bus::wait_idle`](crate::Bus::wait_idle) waits
/// for it. Retries not yet due do not hold `wait_idle` up: only the test can make them
/// due.
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
    state: Arc<Mutex<State>>,
}

#[derive(Debug)]
struct State {
    now: SystemTime,
    /// The buses that use this clock.
    alarms: Vec<Alarm>,
}

impl ManualClock {
    /// A clock at the Unix epoch.
    pub fn new() -> Self {
        ManualClock::at(SystemTime::UNIX_EPOCH)
    }

    /// A clock at `time`.
    pub fn at(time: SystemTime) -> Self {
        ManualClock {
            state: Arc::new(Mutex::new(State {
                now: time,
                alarms: Vec::new(),
            })),
        }
    }

    /// Moves the clock forward by `by`.
    ///
    /// # Panics
    ///
    /// If the time would overflow `SystemTime`.
    pub fn advance(&self, by: Duration) {
        let mut state = self.state.lock();
        state.now += by;
        self.ring(state);
    }

    /// Sets the clock to `time` (it may go backwards, as a wall clock can).
    pub fn set(&self, time: SystemTime) {
        let mut state = self.state.lock();
        state.now = time;
        self.ring(state);
    }

    /// Rings every live bus's alarm, outside the lock: ringing runs handlers, which may
    /// read the clock.
    fn ring(&self, mut state: crate::sync::MutexGuard<'_, State>) {
        state.alarms.retain(Alarm::is_live);
        let alarms = state.alarms.clone();
        drop(state);
        for alarm in alarms {
            alarm.ring();
        }
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        self.state.lock().now
    }

    fn on_move(&self, alarm: Alarm) -> bool {
        let mut state = self.state.lock();
        state.alarms.retain(Alarm::is_live);
        state.alarms.push(alarm);
        true
    }
}
