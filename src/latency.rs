//! Handler latency per subscriber: a small fixed-size histogram of sampled handler
//! durations, read as the p50 and p99 of [`SubscriberStats`](crate::SubscriberStats).
//!
//! # Design
//!
//! - **Sampling.** One invocation in [`SAMPLE_EVERY`] is timed, the first included:
//!   two clock reads cost tens of nanoseconds, as much as a cheap handler, so timing
//!   every call would double what a fan-out to inline handlers costs (measured in
//!   `BENCHMARKS.md`). Invocations are counted under the subscriber's run lock, so the
//!   count is a plain load and store.
//! - **Buckets.** Four per power of two of nanoseconds, so a reported value (its
//!   bucket's upper bound) is at most a quarter above the true one; from 0 up to 2^40
//!   ns (about 18 minutes), longer durations counted in the last bucket. 160 counters,
//!   allocated at the first sample: a subscriber that never ran a handler (a receiver)
//!   pays nothing.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::sync::{AtomicU64, Ordering};

/// One invocation in this many is timed.
pub(crate) const SAMPLE_EVERY: u64 = 16;

/// The longest duration with buckets of its own: 2^40 ns.
const MAX_OCTAVE: u32 = 40;

/// 4 buckets for 0..4 ns, then 4 per octave from 2^2 to 2^40.
const BUCKETS: usize = (4 + (MAX_OCTAVE - 1) * 4) as usize;

/// The latency of a subscriber's handler, from a sample of its invocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Latency {
    /// Invocations timed: one in 16 (the first included).
    pub samples: u64,
    /// The median of the samples (`None` before the first), rounded up to its
    /// histogram bucket: at most a quarter above the true value.
    pub p50: Option<Duration>,
    /// The 99th percentile, rounded up the same way.
    pub p99: Option<Duration>,
}

pub(crate) struct Histogram {
    /// Invocations so far (only under the run lock).
    invocations: AtomicU64,
    buckets: OnceLock<Box<[AtomicU64]>>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            invocations: AtomicU64::new(0),
            buckets: OnceLock::new(),
        }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Histogram").field(&self.latency()).finish()
    }
}

impl Histogram {
    /// Called once per invocation, under the run lock: when to start the clock, if
    /// this one is sampled.
    pub(crate) fn start(&self) -> Option<Instant> {
        let n = self.invocations.load(Ordering::Relaxed);
        self.invocations.store(n + 1, Ordering::Relaxed);
        (n % SAMPLE_EVERY == 0).then(Instant::now)
    }

    /// Records a sampled invocation that began at `start`.
    pub(crate) fn record(&self, start: Instant) {
        let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let buckets = self
            .buckets
            .get_or_init(|| (0..BUCKETS).map(|_| AtomicU64::new(0)).collect());
        buckets[bucket(nanos)].fetch_add(1, Ordering::Relaxed);
    }

    /// Adds this histogram's counts into `into` (`BUCKETS` long), to merge the lanes of
    /// one subscriber.
    pub(crate) fn add_to(&self, into: &mut Vec<u64>) {
        into.resize(BUCKETS, 0);
        if let Some(buckets) = self.buckets.get() {
            for (sum, count) in into.iter_mut().zip(buckets.iter()) {
                *sum += count.load(Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn latency(&self) -> Latency {
        let mut counts = Vec::new();
        self.add_to(&mut counts);
        latency(&counts)
    }
}

/// The p50 and p99 of bucket `counts` (see [`Histogram::add_to`]).
pub(crate) fn latency(counts: &[u64]) -> Latency {
    let samples: u64 = counts.iter().sum();
    let quantile = |q: f64| {
        // The smallest bucket at or past rank ceil(q * samples), counting from 1.
        let rank = ((q * samples as f64).ceil() as u64).max(1);
        let mut seen = 0;
        counts.iter().enumerate().find_map(|(b, &count)| {
            seen += count;
            (seen >= rank).then(|| Duration::from_nanos(upper_bound(b)))
        })
    };
    Latency {
        samples,
        p50: quantile(0.50),
        p99: quantile(0.99),
    }
}

fn bucket(nanos: u64) -> usize {
    if nanos < 4 {
        return nanos as usize;
    }
    let octave = 63 - nanos.leading_zeros();
    if octave > MAX_OCTAVE {
        return BUCKETS - 1;
    }
    let sub = (nanos >> (octave - 2)) & 3;
    (4 + (octave - 2) * 4) as usize + sub as usize
}

/// The largest duration in bucket `b`, in nanoseconds.
fn upper_bound(b: usize) -> u64 {
    if b < 4 {
        return b as u64;
    }
    let octave = (b as u32 - 4) / 4 + 2;
    let sub = (b as u64 - 4) % 4;
    ((4 + sub + 1) << (octave - 2)) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_duration_falls_in_a_bucket_whose_bound_is_at_most_a_quarter_above_it() {
        let mut previous = 0;
        for nanos in (0..5_000).chain([1 << 20, (1 << 40) - 1, 1 << 40, u64::MAX]) {
            let b = bucket(nanos);
            assert!(b < BUCKETS);
            assert!(b >= previous, "buckets follow durations");
            previous = b;
            if nanos < 1 << 41 {
                let bound = upper_bound(b);
                assert!(bound >= nanos, "{nanos} in bucket {b} bounded by {bound}");
                assert!(bound <= nanos + nanos / 4 + 1, "{nanos}: bound {bound} too far above");
                assert!(
                    b == 0 || upper_bound(b - 1) < nanos,
                    "{nanos} belongs to an earlier bucket"
                );
            }
        }
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_come_from_the_cumulative_counts() {
        let mut counts = vec![0; BUCKETS];
        assert_eq!(latency(&counts), Latency::default());
        // 98 fast samples (100 ns) and 2 slow ones (1 ms).
        counts[bucket(100)] = 98;
        counts[bucket(1_000_000)] = 2;
        let l = latency(&counts);
        assert_eq!(l.samples, 100);
        assert_eq!(l.p50, Some(Duration::from_nanos(upper_bound(bucket(100)))));
        assert_eq!(l.p99, Some(Duration::from_nanos(upper_bound(bucket(1_000_000)))));
        assert!(l.p99.unwrap() >= Duration::from_millis(1) && l.p99.unwrap() <= Duration::from_micros(1250));
    }

    #[test]
    fn one_invocation_in_sample_every_is_timed_the_first_included() {
        let h = Histogram::default();
        let timed = (0..SAMPLE_EVERY * 3).filter(|_| h.start().is_some()).count();
        assert_eq!(timed, 3);
        assert!(
            h.buckets.get().is_none(),
            "nothing allocated before a sample is recorded"
        );
        h.record(Instant::now());
        assert_eq!(h.latency().samples, 1);
    }
}
