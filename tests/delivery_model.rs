//! Property test of at-least-once delivery against a reference model: for random
//! failure patterns, every event succeeds exactly once or is dead-lettered exactly
//! once, with the attempts the model predicts, and ordered subscribers succeed in
//! publish order.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::FIVE_SECONDS;
use crier::testing::ManualClock;
use crier::{Backoff, Bus, DeadLetter, Dispatch, Envelope, Retry};
use proptest::prelude::*;

#[derive(Debug, Clone)]
struct Case {
    /// How many times each event fails before it succeeds.
    failures: Vec<u32>,
    max_attempts: u32,
    ordered: bool,
    dispatch: Dispatch,
    backoff_ms: u64,
}

fn cases() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(0_u32..=6, 1..40),
        1_u32..=5,
        any::<bool>(),
        prop_oneof![Just(Dispatch::Inline), Just(Dispatch::Pool)],
        0_u64..=3,
    )
        .prop_map(|(failures, max_attempts, ordered, dispatch, backoff_ms)| Case {
            failures,
            max_attempts,
            ordered,
            dispatch,
            backoff_ms,
        })
}

/// What a run saw: every invocation `(event, attempt)` in order, the dead letters
/// `(event, attempts)`, and the subscriber's final counters.
struct Seen {
    calls: Vec<(u32, u32)>,
    letters: Vec<(u32, u32)>,
    stats: crier::SubscriberStats,
}

fn run(case: &Case) -> Seen {
    let clock = ManualClock::new();
    let bus = Bus::builder().workers(2).clock(clock.clone()).build().unwrap();
    let letters = Arc::new(Mutex::new(Vec::new()));
    let log = letters.clone();
    let _dlq = bus
        .subscriber::<DeadLetter<u32>>()
        .dispatch(case.dispatch)
        .subscribe(move |dl: &Envelope<DeadLetter<u32>>| log.lock().unwrap().push((**dl.envelope(), dl.attempts())))
        .unwrap();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let log = calls.clone();
    let failures = case.failures.clone();
    let retry = if case.ordered {
        Retry::ordered()
    } else {
        Retry::unordered()
    };
    let retry = retry.max_attempts(case.max_attempts).backoff(Backoff::exponential(
        Duration::from_millis(case.backoff_ms),
        Duration::from_millis(5),
    ));
    let sub = bus
        .subscriber::<u32>()
        .dispatch(case.dispatch)
        .at_least_once(retry)
        .subscribe(move |env: &Envelope<u32>| -> Result<(), String> {
            log.lock().unwrap().push((**env, env.attempt()));
            if env.attempt() <= failures[**env as usize] {
                Err(format!("planned failure {}", env.attempt()))
            } else {
                Ok(())
            }
        })
        .unwrap();
    for n in 0..case.failures.len() as u32 {
        bus.publish(n).unwrap();
    }
    // Drive the clock until nothing waits for a retry.
    for _ in 0..10_000 {
        bus.wait_idle(FIVE_SECONDS).unwrap();
        let stats = sub.stats();
        if stats.retrying == 0 && stats.queued == 0 {
            break;
        }
        clock.advance(Duration::from_millis(1));
    }
    bus.wait_idle(FIVE_SECONDS).unwrap();
    let stats = sub.stats();
    let calls = calls.lock().unwrap().clone();
    let letters = letters.lock().unwrap().clone();
    Seen { calls, letters, stats }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn at_least_once_matches_the_model(case in cases()) {
        let Seen { calls, letters, stats } = run(&case);
        let max = case.max_attempts;
        // The model: event i runs min(f_i + 1, max) times; it succeeds if f_i < max,
        // and is dead-lettered once, after `max` attempts, otherwise.
        let mut per_event: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for &(event, attempt) in &calls {
            per_event.entry(event).or_default().push(attempt);
        }
        let mut expected_letters = Vec::new();
        let mut retried = 0;
        for (i, &f) in case.failures.iter().enumerate() {
            let runs = (f + 1).min(max);
            let attempts = per_event.get(&(i as u32)).cloned().unwrap_or_default();
            prop_assert_eq!(&attempts, &(1..=runs).collect::<Vec<_>>(), "event {} attempts", i);
            retried += u64::from(runs - 1);
            if f >= max {
                expected_letters.push((i as u32, max));
            }
        }
        let mut letters = letters;
        letters.sort();
        prop_assert_eq!(&letters, &expected_letters);
        let successes: Vec<u32> = calls
            .iter()
            .filter(|&&(event, attempt)| attempt > case.failures[event as usize])
            .map(|&(event, _)| event)
            .collect();
        let expected: Vec<u32> = (0..case.failures.len() as u32).filter(|&i| case.failures[i as usize] < max).collect();
        if case.ordered {
            prop_assert_eq!(&successes, &expected, "ordered successes come in publish order");
        } else {
            let mut sorted = successes.clone();
            sorted.sort_unstable();
            prop_assert_eq!(&sorted, &expected);
        }
        prop_assert_eq!(stats.delivered, expected.len() as u64);
        prop_assert_eq!(stats.dead_lettered, expected_letters.len() as u64);
        prop_assert_eq!(stats.retried, retried);
        prop_assert_eq!(stats.failed, 0);
        prop_assert!(stats.is_balanced(), "{:?}", stats);
    }
}
