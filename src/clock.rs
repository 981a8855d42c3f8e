//! The clock the bus reads time from: publish times, retry backoff.

use std::fmt;
use std::time::SystemTime;

use crate::timer::TimerShared;

/// A source of time for the bus: envelope timestamps and retry backoff.
///
/// The bus asks its clock for the time of every publish ([`Envelope::published_at`])
/// and for when a failed event is due for its retry. The default is [`SystemClock`];
/// tests pass [`ManualClock`] to [`BusBuilder::clock`] so that time moves only when
/// the test moves it.
///
/// Waits the caller asks for in real time (`publish_timeout`, `wait_idle`, `shutdown`)
/// use the OS's monotonic clock, never this one.
///
/// # Clocks that move by themselves, and clocks that are moved
///
/// A clock whose time passes by itself (the default, `on_move` returning `false`):
/// the bus runs a timer thread that sleeps in real time until the next retry is due.
///
/// A clock that moves only when told (like [`ManualClock`]) returns `true` from
/// [`on_move`](Self::on_move) and rings every [`Alarm`] it was given after each move.
/// The bus then runs no timer thread: a move makes the due retries run (inline ones on
/// the thread that moved the clock, before the move returns), and
/// [`Bus::wait_idle`](crate::Bus::wait_idle) does not wait for retries that are not
/// due yet, since nothing but the test can make them due.
///
/// [`Envelope::published_at`]: crate::Envelope::published_at
/// [`ManualClock`]: crate::testing::ManualClock
/// [`BusBuilder::clock`]: crate::BusBuilder::clock
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> SystemTime;

    /// Called once by each bus built with this clock. Return `true` to promise that
    /// time on this clock moves only by calls that then [`ring`](Alarm::ring) `alarm`;
    /// the default returns `false` (time passes by itself) and drops it.
    fn on_move(&self, alarm: Alarm) -> bool {
        drop(alarm);
        false
    }
}

/// The bus's side of a clock that is moved by hand: [`ring`](Self::ring) it after every
/// move. See [`Clock::on_move`].
#[derive(Clone)]
pub struct Alarm {
    pub(crate) timer: std::sync::Weak<TimerShared>,
}

impl Alarm {
    /// Tells the bus its clock moved: retries that are now due run. Inline subscribers'
    /// retries run on this thread before `ring` returns.
    pub fn ring(&self) {
        if let Some(timer) = self.timer.upgrade() {
            timer.fire_due();
        }
    }

    /// `false` once its bus is gone: the clock may forget it.
    pub fn is_live(&self) -> bool {
        self.timer.strong_count() > 0
    }
}

impl fmt::Debug for Alarm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Alarm").field("live", &self.is_live()).finish()
    }
}

/// The operating system's wall clock ([`SystemTime::now`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}
