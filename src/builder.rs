//! `BusBuilder`: the options of a bus, and the defaults its subscribers inherit.

use std::fmt;
use std::time::Duration;

use crate::bus::Bus;
use crate::clock::{Clock, SystemClock};
use crate::error::{BuildError, HandlerError};
use crate::policy::{Dispatch, Overflow};
use crate::subscriber::ErrorHook;

/// The options a built bus keeps: its subscribers' defaults and its own settings.
pub(crate) struct Config {
    pub(crate) workers: usize,
    pub(crate) capacity: usize,
    pub(crate) overflow: Overflow,
    pub(crate) dispatch: Dispatch,
    pub(crate) drop_timeout: Duration,
    pub(crate) error_hook: Option<ErrorHook>,
    /// Events the delivery traces keep, if on.
    pub(crate) trace: Option<usize>,
}

/// Options for a [`Bus`]. Every subscriber option here is a default that
/// [`SubscriberBuilder`](crate::SubscriberBuilder) can override per subscriber.
///
/// | option | default |
/// |---|---|
/// | [`workers`](Self::workers) | the number of CPUs, started with the first pool subscriber |
/// | [`capacity`](Self::capacity) | 1024 events per mailbox |
/// | [`overflow`](Self::overflow) | [`Overflow::Block`] |
/// | [`dispatch`](Self::dispatch) | [`Dispatch::Pool`] |
/// | [`clock`](Self::clock) | [`SystemClock`] |
/// | [`drop_timeout`](Self::drop_timeout) | 5 s |
/// | [`trace`](Self::trace) | off |
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use crier::{Bus, Overflow};
///
/// # fn main() -> Result<(), crier::BuildError> {
/// let bus = Bus::builder()
///     .workers(4)
///     .capacity(256)
///     .overflow(Overflow::DropOldest)
///     .drop_timeout(Duration::from_secs(1))
///     .build()?;
/// # drop(bus); Ok(()) }
/// ```
#[must_use = "a bus exists only after `build`"]
pub struct BusBuilder {
    workers: usize,
    capacity: usize,
    overflow: Overflow,
    dispatch: Dispatch,
    clock: std::sync::Arc<dyn Clock>,
    drop_timeout: Duration,
    error_hook: Option<ErrorHook>,
    trace: Option<usize>,
}

impl Default for BusBuilder {
    fn default() -> Self {
        BusBuilder {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            capacity: 1024,
            overflow: Overflow::Block,
            dispatch: Dispatch::Pool,
            clock: std::sync::Arc::new(SystemClock),
            drop_timeout: Duration::from_secs(5),
            error_hook: None,
            trace: None,
        }
    }
}

impl BusBuilder {
    /// Threads in the shared worker pool (at least 1).
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// The default mailbox capacity (at least 1).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// The default overflow policy.
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// The default dispatch mode.
    pub fn dispatch(mut self, dispatch: Dispatch) -> Self {
        self.dispatch = dispatch;
        self
    }

    /// Shorthand for `dispatch(Dispatch::Inline)`: handlers run on the publishing
    /// thread before `publish` returns, for deterministic tests.
    pub fn inline(self) -> Self {
        self.dispatch(Dispatch::Inline)
    }

    /// The clock envelopes are stamped with.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = std::sync::Arc::new(clock);
        self
    }

    /// How long dropping the last [`Bus`] handle waits for accepted events.
    pub fn drop_timeout(mut self, timeout: Duration) -> Self {
        self.drop_timeout = timeout;
        self
    }

    /// The error hook of subscribers that set none; see
    /// [`SubscriberBuilder::on_error`](crate::SubscriberBuilder::on_error).
    pub fn on_error(mut self, hook: impl Fn(&HandlerError) + Send + Sync + 'static) -> Self {
        self.error_hook = Some(std::sync::Arc::new(hook));
        self
    }

    /// Keeps delivery traces of the last `events` published events, for
    /// [`Bus::explain`](crate::Bus::explain): which subscribers each reached, each
    /// attempt's outcome and duration, drops and their reasons, dedup skips, dead
    /// letters, and the events it caused. Off by default.
    ///
    /// # Cost
    ///
    /// Every publish and every delivery step takes one bus-wide lock to record itself,
    /// and every handler invocation reads the clock twice: use it in tests, in
    /// development, or on a bus whose rate that lock can carry (BENCHMARKS.md gives the
    /// measured cost). Memory is bounded: each event keeps at most 64 steps and each
    /// error's text at most 256 bytes. Measured with 4 subscribers, one failing every
    /// event with a 200-byte error: 1.1 KB per event kept, 1.4 KB at the peak; budget
    /// 1.5 KB per event of `events` for a few subscribers. The oldest event is evicted
    /// for each new one once `events` are kept
    /// ([`Bus::trace_stats`](crate::Bus::trace_stats) counts them).
    ///
    /// Every step is traced where it happens, including what a subscriber still held
    /// when it left or the bus shut down, and a filter that panicked; except the
    /// events a `DropOldest` receiver on the topic's ring was overtaken by, which the
    /// ring overwrites before anyone sees them (counted in its stats as `dropped`).
    ///
    /// # Example
    ///
    /// ```
    /// use crier::Bus;
    ///
    /// struct Signup(&'static str);
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::builder().inline().trace(10_000).build()?;
    /// let _welcome = bus.subscriber::<Signup>().name("welcome-mail").subscribe(|_: &crier::Envelope<Signup>| {})?;
    /// let receipt = bus.publish(Signup("ada"))?;
    /// let explained = bus.explain(receipt.id)?;
    /// assert_eq!(explained.steps[0].subscriber, "welcome-mail");
    /// println!("{explained}");
    /// # Ok(()) }
    /// ```
    pub fn trace(mut self, events: usize) -> Self {
        self.trace = Some(events);
        self
    }

    /// Builds the bus. No thread starts until a subscriber needs one.
    ///
    /// # Errors
    ///
    /// [`BuildError::ZeroWorkers`] for `workers(0)`, [`BuildError::ZeroCapacity`] for
    /// `capacity(0)`, [`BuildError::ZeroTraceCapacity`] for `trace(0)`.
    pub fn build(self) -> Result<Bus, BuildError> {
        if self.workers == 0 {
            return Err(BuildError::ZeroWorkers);
        }
        if self.capacity == 0 {
            return Err(BuildError::ZeroCapacity);
        }
        if self.trace == Some(0) {
            return Err(BuildError::ZeroTraceCapacity);
        }
        Ok(self.assemble())
    }

    pub(crate) fn assemble(self) -> Bus {
        let config = Config {
            workers: self.workers,
            capacity: self.capacity,
            overflow: self.overflow,
            dispatch: self.dispatch,
            drop_timeout: self.drop_timeout,
            error_hook: self.error_hook,
            trace: self.trace,
        };
        Bus::from_parts(config, self.clock)
    }
}

impl fmt::Debug for BusBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusBuilder")
            .field("workers", &self.workers)
            .field("capacity", &self.capacity)
            .field("overflow", &self.overflow)
            .field("dispatch", &self.dispatch)
            .field("drop_timeout", &self.drop_timeout)
            .field("trace", &self.trace)
            .finish()
    }
}
