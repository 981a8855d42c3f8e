//! Promise 3: at-most-once never invokes twice; at-least-once retries with backoff on
//! the bus clock up to an attempt limit, then dead-letters, and every event stays
//! accounted for. (RELIABILITY-PLAN scenarios B4 to B8.)

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::{with_deadline, FIVE_SECONDS};
use crier::testing::ManualClock;
use crier::{
    Backoff, Bus, DeadLetter, Delivery, Dispatch, DropReason, Envelope, Overflow, Retry, SubscribeError,
    SubscriberStats,
};

const MS: fn(u64) -> Duration = Duration::from_millis;

/// A log of `(event, attempt, clock time)` per invocation.
type Calls = Arc<Mutex<Vec<(u32, u32, SystemTime)>>>;

fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap()
}

fn assert_balanced(stats: &SubscriberStats) {
    assert!(stats.is_balanced(), "identity broken: {stats:#?}");
}

/// A handler that logs each call and fails event `n` while `fails(n, attempt)`.
fn flaky(
    clock: &ManualClock,
    calls: &Calls,
    fails: impl Fn(u32, u32) -> bool + Send + 'static,
) -> impl FnMut(&Envelope<u32>) -> Result<(), String> + Send + 'static {
    let clock = clock.clone();
    let calls = calls.clone();
    move |env| {
        calls
            .lock()
            .unwrap()
            .push((**env, env.attempt(), crier::Clock::now(&clock)));
        if fails(**env, env.attempt()) {
            Err(format!("attempt {} of {} failed", env.attempt(), **env))
        } else {
            Ok(())
        }
    }
}

/// B4: retried until `max_attempts`, with the exact backoff gaps, then one dead letter.
#[test]
fn a_failing_event_is_retried_with_backoff_then_dead_lettered_once() {
    let clock = ManualClock::new();
    let bus = Bus::builder().inline().clock(clock.clone()).build().unwrap();
    let letters = Arc::new(Mutex::new(Vec::new()));
    let log = letters.clone();
    let _dlq = bus
        .subscribe(move |dl: &Envelope<DeadLetter<u32>>| log.lock().unwrap().push((*dl).clone()))
        .unwrap();
    let calls = Calls::default();
    let retry = Retry::ordered()
        .max_attempts(5)
        .backoff(Backoff::exponential(MS(10), Duration::from_secs(1)));
    let sub = bus
        .subscriber::<u32>()
        .name("payments")
        .at_least_once(retry)
        .subscribe(flaky(&clock, &calls, |_, _| true))
        .unwrap();
    let receipt = bus.publish(7_u32).unwrap();
    // Step the clock 1 ms at a time: each retry must run exactly when it is due.
    for _ in 0..1000 {
        clock.advance(MS(1));
    }
    let calls = calls.lock().unwrap().clone();
    let attempts: Vec<u32> = calls.iter().map(|c| c.1).collect();
    assert_eq!(attempts, [1, 2, 3, 4, 5]);
    let times: Vec<Duration> = calls.iter().map(|c| since_epoch(c.2)).collect();
    assert_eq!(
        times,
        [MS(0), MS(10), MS(30), MS(70), MS(150)],
        "gaps must be 10/20/40/80 ms"
    );

    let letters = letters.lock().unwrap();
    assert_eq!(letters.len(), 1);
    let dl = &letters[0];
    assert_eq!((**dl.envelope(), dl.attempts(), dl.subscriber()), (7, 5, "payments"));
    assert_eq!(dl.error(), "attempt 5 of 7 failed");
    assert_eq!(dl.envelope().id(), receipt.id);
    let stats = sub.stats();
    assert_eq!(
        (stats.delivered, stats.failed, stats.retried, stats.dead_lettered),
        (0, 0, 4, 1)
    );
    assert_eq!(
        (stats.retrying, stats.dead_letters_kept),
        (0, 0),
        "routed dead letters are not kept"
    );
    assert_eq!(stats.last_error.as_deref(), Some("attempt 5 of 7 failed"));
    assert_balanced(&stats);
}

/// The dead letter is caused by the failed event and shares its correlation.
#[test]
fn a_dead_letter_carries_the_failed_event_as_its_cause() {
    let bus = Bus::builder().inline().build().unwrap();
    let seen = Arc::new(Mutex::new(None));
    let log = seen.clone();
    let _dlq = bus
        .subscribe(move |dl: &Envelope<DeadLetter<u32>>| {
            *log.lock().unwrap() = Some((dl.causation_id(), dl.correlation_id(), dl.attempt()));
        })
        .unwrap();
    let _sub = bus
        .subscriber::<u32>()
        .at_least_once(Retry::unordered().max_attempts(1))
        .subscribe(|_: &Envelope<u32>| -> Result<(), &'static str> { Err("no") })
        .unwrap();
    let receipt = bus.publish(1_u32).unwrap();
    assert_eq!(*seen.lock().unwrap(), Some((Some(receipt.id), receipt.id, 1)));
}

/// B5 and B8: a panic is a failed attempt; the handler sees the attempt number and
/// whether it is a redelivery. On the pool, `wait_idle` under a manual clock returns
/// while the retry is not due, and waits for it once it is.
#[test]
fn a_panicking_attempt_is_retried_and_the_handler_sees_the_attempt_number() {
    let clock = ManualClock::new();
    let bus = Bus::builder().workers(2).clock(clock.clone()).build().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let sub = bus
        .subscriber::<u32>()
        .at_least_once(Retry::ordered().backoff(Backoff::fixed(MS(100))))
        .subscribe(move |env: &Envelope<u32>| {
            log.lock().unwrap().push((env.attempt(), env.is_redelivery()));
            assert!(env.attempt() >= 3, "boom on attempt {}", env.attempt());
        })
        .unwrap();
    bus.publish(1_u32).unwrap();
    for expected in [1, 2] {
        bus.wait_idle(FIVE_SECONDS).unwrap();
        let stats = sub.stats();
        assert_eq!((stats.retried, stats.retrying, stats.delivered), (expected, 1, 0));
        assert_balanced(&stats);
        clock.advance(MS(99));
        bus.wait_idle(FIVE_SECONDS).unwrap();
        assert_eq!(sub.stats().retried, expected, "not due yet after 99 ms");
        clock.advance(MS(1));
    }
    bus.wait_idle(FIVE_SECONDS).unwrap();
    assert_eq!(*seen.lock().unwrap(), [(1, false), (2, true), (3, true)]);
    let stats = sub.stats();
    assert_eq!(
        (stats.delivered, stats.failed, stats.retried, stats.dead_lettered),
        (1, 0, 2, 0)
    );
    assert_eq!(stats.last_error.as_deref(), Some("panicked: boom on attempt 2"));
    assert_balanced(&stats);
    assert_eq!(sub.dead_letters::<u32>().unwrap().len(), 0);
}

/// B6, ordered: a poison event holds the subscriber's later events until it is
/// dead-lettered; successes stay in publish order; another subscriber is not delayed.
#[test]
fn an_ordered_subscriber_holds_the_line_behind_a_poison_event() {
    let clock = ManualClock::new();
    let bus = Bus::builder().workers(2).clock(clock.clone()).build().unwrap();
    let calls = Calls::default();
    let retry = Retry::ordered().max_attempts(4).backoff(Backoff::fixed(MS(50)));
    let sub = bus
        .subscriber::<u32>()
        .at_least_once(retry)
        .subscribe(flaky(&clock, &calls, |n, _| n == 10))
        .unwrap();
    let other = Arc::new(Mutex::new(Vec::new()));
    let log = other.clone();
    let _other = bus
        .subscribe(move |env: &Envelope<u32>| log.lock().unwrap().push(**env))
        .unwrap();
    for n in 0..100_u32 {
        bus.publish(n).unwrap();
    }
    bus.wait_idle(FIVE_SECONDS).unwrap();
    assert_eq!(other.lock().unwrap().len(), 100, "the other subscriber is not held up");
    let stats = sub.stats();
    assert_eq!((stats.delivered, stats.retrying, stats.queued), (10, 1, 89));
    assert_balanced(&stats);
    for _ in 0..3 {
        clock.advance(MS(50));
        bus.wait_idle(FIVE_SECONDS).unwrap();
    }
    let stats = sub.stats();
    assert_eq!(
        (stats.delivered, stats.dead_lettered, stats.retrying, stats.queued),
        (99, 1, 0, 0)
    );
    assert_balanced(&stats);
    let successes: Vec<u32> = calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.0 != 10)
        .map(|c| c.0)
        .collect();
    assert_eq!(successes, (0..100).filter(|&n| n != 10).collect::<Vec<_>>());
    // Nobody subscribes to `DeadLetter<u32>`: the subscriber keeps it.
    let kept = sub.dead_letters::<u32>().unwrap();
    assert_eq!(
        kept.iter().map(|d| (**d.envelope(), d.attempts())).collect::<Vec<_>>(),
        [(10, 4)]
    );
}

/// B6, unordered: later events overtake the poison event while it waits.
#[test]
fn an_unordered_subscriber_lets_later_events_overtake_a_retrying_one() {
    let clock = ManualClock::new();
    let bus = Bus::builder().workers(2).clock(clock.clone()).build().unwrap();
    let calls = Calls::default();
    let retry = Retry::unordered().max_attempts(2).backoff(Backoff::fixed(MS(50)));
    let sub = bus
        .subscriber::<u32>()
        .at_least_once(retry)
        .subscribe(flaky(&clock, &calls, |n, attempt| n == 10 && attempt == 1))
        .unwrap();
    for n in 0..100_u32 {
        bus.publish(n).unwrap();
    }
    bus.wait_idle(FIVE_SECONDS).unwrap();
    let stats = sub.stats();
    assert_eq!((stats.delivered, stats.retrying, stats.queued), (99, 1, 0));
    clock.advance(MS(50));
    bus.wait_idle(FIVE_SECONDS).unwrap();
    let stats = sub.stats();
    assert_eq!((stats.delivered, stats.retried, stats.retrying), (100, 1, 0));
    assert_balanced(&stats);
    let last = calls.lock().unwrap().last().map(|c| (c.0, c.1));
    assert_eq!(last, Some((10, 2)), "the retry ran after every later event");
}

/// An unordered subscriber's waiting retries are bounded by its capacity; beyond that
/// it takes no new event, so the mailbox's overflow policy pushes back.
#[test]
fn unordered_retries_waiting_at_once_are_bounded_by_the_capacity() {
    let clock = ManualClock::new();
    let bus = Bus::builder().inline().clock(clock.clone()).build().unwrap();
    let calls = Calls::default();
    let sub = bus
        .subscriber::<u32>()
        .capacity(4)
        .overflow(Overflow::Reject)
        .at_least_once(Retry::unordered().max_attempts(2).backoff(Backoff::fixed(MS(10))))
        .subscribe(flaky(&clock, &calls, |_, attempt| attempt == 1))
        .unwrap();
    let mut accepted = 0_u32;
    while bus.try_publish(accepted).is_ok() {
        accepted += 1;
        assert!(accepted < 100, "the subscriber never pushed back");
    }
    let stats = sub.stats();
    assert_eq!((accepted, stats.retrying, stats.queued), (8, 4, 4));
    assert_balanced(&stats);
    clock.advance(MS(10));
    let stats = sub.stats();
    assert_eq!(
        (stats.retrying, stats.queued),
        (4, 0),
        "the queued ones ran, then failed once"
    );
    clock.advance(MS(10));
    let stats = sub.stats();
    assert_eq!((stats.delivered, stats.retried, stats.retrying), (8, 8, 0));
    assert_balanced(&stats);
}

/// Under a clock that moves by itself, `wait_idle` waits for a retry to run.
#[test]
fn wait_idle_waits_for_retries_under_the_system_clock() {
    with_deadline(Duration::from_secs(30), || {
        let bus = Bus::builder().workers(2).build().unwrap();
        let sub = bus
            .subscriber::<u32>()
            .at_least_once(Retry::ordered().backoff(Backoff::fixed(MS(20))))
            .subscribe(|env: &Envelope<u32>| -> Result<(), &'static str> {
                if env.attempt() == 1 {
                    Err("first try fails")
                } else {
                    Ok(())
                }
            })
            .unwrap();
        for n in 0..3_u32 {
            bus.publish(n).unwrap();
        }
        bus.wait_idle(FIVE_SECONDS).unwrap();
        let stats = sub.stats();
        assert_eq!((stats.delivered, stats.retried, stats.retrying), (3, 3, 0));
        assert_balanced(&stats);
    });
}

/// With nobody subscribed to dead letters, the store keeps the newest and counts what
/// it evicts (B7, scaled down); the caller can take them and publish them again.
#[test]
fn unrouted_dead_letters_are_kept_in_a_bounded_store_and_can_be_republished() {
    let bus = Bus::builder().inline().build().unwrap();
    let healed = Arc::new(Mutex::new(false));
    let ok = healed.clone();
    let sub = bus
        .subscriber::<u32>()
        .at_least_once(Retry::ordered().max_attempts(1).dead_letter_capacity(10))
        .subscribe(move |_: &Envelope<u32>| -> Result<(), &'static str> {
            if *ok.lock().unwrap() {
                Ok(())
            } else {
                Err("down")
            }
        })
        .unwrap();
    for n in 0..100_u32 {
        bus.publish(n).unwrap();
    }
    let stats = sub.stats();
    assert_eq!(
        (stats.dead_lettered, stats.dead_letters_kept, stats.dead_letters_evicted),
        (100, 10, 90)
    );
    assert_balanced(&stats);
    assert!(sub.dead_letters::<u64>().is_none(), "wrong type");
    let kept = sub.take_dead_letters::<u32>().unwrap();
    assert_eq!(
        kept.iter().map(|d| **d.envelope()).collect::<Vec<_>>(),
        (90..100).collect::<Vec<_>>()
    );
    assert_eq!(sub.stats().dead_letters_kept, 0);
    *healed.lock().unwrap() = true;
    for letter in kept {
        bus.publish(letter.into_event().unwrap()).unwrap();
    }
    let stats = sub.stats();
    assert_eq!((stats.accepted, stats.delivered), (110, 10));
    assert_balanced(&stats);
}

/// A failing dead-letter subscriber never produces a dead letter of a dead letter.
#[test]
fn a_failing_dead_letter_handler_makes_no_dead_letter_of_a_dead_letter() {
    let bus = Bus::builder().inline().build().unwrap();
    let failing = |_: &Envelope<u32>| -> Result<(), &'static str> { Err("always") };
    let sub = bus
        .subscriber::<u32>()
        .at_least_once(Retry::ordered().max_attempts(1))
        .subscribe(failing)
        .unwrap();
    // An at-least-once dead-letter subscriber that always fails, and an at-most-once one.
    let dl_retrying = bus
        .subscriber::<DeadLetter<u32>>()
        .at_least_once(Retry::ordered().max_attempts(2).backoff(Backoff::fixed(Duration::ZERO)))
        .subscribe(|_: &Envelope<DeadLetter<u32>>| -> Result<(), &'static str> { Err("dlq down") })
        .unwrap();
    let dl_plain = bus
        .subscribe(|_: &Envelope<DeadLetter<u32>>| -> Result<(), &'static str> { Err("dlq down") })
        .unwrap();
    bus.publish(1_u32).unwrap();
    assert_eq!(sub.stats().dead_lettered, 1);
    assert_eq!(
        sub.stats().dead_letters_kept,
        0,
        "it reached the dead-letter subscribers"
    );
    let stats = dl_retrying.stats();
    assert_eq!((stats.retried, stats.dead_lettered, stats.dead_letters_kept), (1, 1, 1));
    assert_eq!(dl_plain.stats().failed, 1);
    let nested = std::any::type_name::<DeadLetter<DeadLetter<u32>>>();
    assert!(
        bus.stats().topic(nested).is_none(),
        "no topic of dead letters of dead letters"
    );
    for s in bus.stats().subscribers {
        assert_balanced(&s);
    }
}

/// A zero backoff retries at once; unlimited attempts are allowed by explicit choice.
#[test]
fn a_zero_backoff_retries_at_once_and_unlimited_attempts_run_until_success() {
    let bus = Bus::builder().inline().build().unwrap();
    let sub = bus
        .subscriber::<u32>()
        .at_least_once(
            Retry::ordered()
                .unlimited_attempts()
                .backoff(Backoff::fixed(Duration::ZERO)),
        )
        .subscribe(|env: &Envelope<u32>| -> Result<(), String> {
            if env.attempt() < 50 {
                Err(format!("{}", env.attempt()))
            } else {
                Ok(())
            }
        })
        .unwrap();
    bus.publish(1_u32).unwrap();
    let stats = sub.stats();
    assert_eq!((stats.delivered, stats.retried, stats.retrying), (1, 49, 0));
    assert_balanced(&stats);
}

/// Jitter is deterministic: two runs of the same scenario see the same delays, each
/// within the jitter's share of the nominal delay.
#[test]
fn jitter_is_the_same_every_run_under_a_manual_clock() {
    let run = || {
        let clock = ManualClock::new();
        let bus = Bus::builder().inline().clock(clock.clone()).build().unwrap();
        let calls = Calls::default();
        let backoff = Backoff::fixed(MS(1000)).jitter(50);
        let _sub = bus
            .subscriber::<u32>()
            .name("jittery")
            .at_least_once(Retry::unordered().max_attempts(2).backoff(backoff))
            .subscribe(flaky(&clock, &calls, |_, attempt| attempt == 1))
            .unwrap();
        for n in 0..20_u32 {
            bus.publish(n).unwrap();
        }
        for _ in 0..1000 {
            clock.advance(MS(1));
        }
        let calls = calls.lock().unwrap();
        let mut delays: Vec<(u32, Duration)> = calls
            .iter()
            .filter(|c| c.1 == 2)
            .map(|c| (c.0, since_epoch(c.2)))
            .collect();
        delays.sort();
        delays
    };
    let first = run();
    assert_eq!(first.len(), 20);
    assert!(first.iter().all(|(_, d)| (MS(500)..=MS(1000)).contains(d)), "{first:?}");
    let distinct: std::collections::BTreeSet<_> = first.iter().map(|(_, d)| *d).collect();
    assert!(distinct.len() > 5, "jitter spreads the retries: {first:?}");
    assert_eq!(first, run());
}

/// Each failed attempt reaches the error hook with its attempt number.
#[test]
fn the_error_hook_hears_every_failed_attempt() {
    let bus = Bus::builder().inline().build().unwrap();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let log = heard.clone();
    let _sub = bus
        .subscriber::<u32>()
        .at_least_once(Retry::ordered().max_attempts(3).backoff(Backoff::fixed(Duration::ZERO)))
        .on_error(move |e| log.lock().unwrap().push(e.attempt()))
        .subscribe(|_: &Envelope<u32>| -> Result<(), &'static str> { Err("x") })
        .unwrap();
    bus.publish(1_u32).unwrap();
    assert_eq!(*heard.lock().unwrap(), [1, 2, 3]);
}

/// Unsubscribing drops the waiting retries, counted; the handler never runs again.
#[test]
fn unsubscribe_drops_waiting_retries_and_counts_them() {
    let clock = ManualClock::new();
    let bus = Bus::builder().workers(1).clock(clock.clone()).build().unwrap();
    let calls = Calls::default();
    let sub = bus
        .subscriber::<u32>()
        .at_least_once(Retry::unordered().backoff(Backoff::fixed(MS(10))))
        .subscribe(flaky(&clock, &calls, |_, _| true))
        .unwrap();
    for n in 0..5_u32 {
        bus.publish(n).unwrap();
    }
    bus.wait_idle(FIVE_SECONDS).unwrap();
    let stats = sub.unsubscribe();
    assert_eq!((stats.retrying, stats.dropped.get(DropReason::Unsubscribed)), (0, 5));
    assert_balanced(&stats);
    clock.advance(MS(10));
    bus.wait_idle(FIVE_SECONDS).unwrap();
    assert_eq!(calls.lock().unwrap().len(), 5, "no attempt after unsubscribe");
    assert_eq!(bus.stats().in_flight, 0);
}

/// Shutdown reports retries it could not wait for, instead of dropping them silently.
#[test]
fn shutdown_reports_events_still_waiting_for_a_retry() {
    let clock = ManualClock::new();
    let bus = Bus::builder().workers(1).clock(clock.clone()).build().unwrap();
    let calls = Calls::default();
    let sub = bus
        .subscriber::<u32>()
        .at_least_once(Retry::ordered().backoff(Backoff::fixed(MS(10))))
        .subscribe(flaky(&clock, &calls, |n, _| n == 0))
        .unwrap();
    for n in 0..3_u32 {
        bus.publish(n).unwrap();
    }
    let report = bus.shutdown(FIVE_SECONDS).unwrap();
    assert!(!report.drained, "a retry was still waiting");
    assert_eq!((report.awaiting_retry, report.pending), (1, 3));
    let stats = report.stats.subscriber(&sub.stats().name).unwrap().clone();
    assert_eq!((stats.dropped.shutdown, stats.retrying), (3, 0));
    assert_balanced(&stats);
    assert!(report.to_string().contains("awaiting retry 1"), "{report}");
}

/// Under the system clock, the drain waits for a retry that comes due in time.
#[test]
fn shutdown_drains_retries_that_come_due_before_its_deadline() {
    with_deadline(Duration::from_secs(30), || {
        let bus = Bus::builder().workers(1).build().unwrap();
        let _sub = bus
            .subscriber::<u32>()
            .at_least_once(Retry::ordered().backoff(Backoff::fixed(MS(20))))
            .subscribe(|env: &Envelope<u32>| -> Result<(), &'static str> {
                if env.attempt() == 1 {
                    Err("once")
                } else {
                    Ok(())
                }
            })
            .unwrap();
        bus.publish(1_u32).unwrap();
        let report = bus.shutdown(FIVE_SECONDS).unwrap();
        assert!(report.drained);
        assert_eq!((report.delivered(), report.awaiting_retry, report.pending), (1, 0, 0));
    });
}

/// Every dispatch mode (and the broadcast ring, which default pool subscribers read)
/// retries the same way.
#[test]
fn every_dispatch_mode_retries_the_same_way() {
    for dispatch in [Dispatch::Pool, Dispatch::Thread, Dispatch::Inline] {
        let clock = ManualClock::new();
        let bus = Bus::builder().workers(2).clock(clock.clone()).build().unwrap();
        let calls = Calls::default();
        let sub = bus
            .subscriber::<u32>()
            .dispatch(dispatch)
            .at_least_once(Retry::ordered().max_attempts(3).backoff(Backoff::fixed(MS(5))))
            .subscribe(flaky(&clock, &calls, |n, attempt| n % 3 == 0 && attempt < 3))
            .unwrap();
        for n in 0..30_u32 {
            bus.publish(n).unwrap();
        }
        for _ in 0..30 {
            bus.wait_idle(FIVE_SECONDS).unwrap();
            clock.advance(MS(5));
        }
        bus.wait_idle(FIVE_SECONDS).unwrap();
        let stats = sub.stats();
        assert_eq!(
            (stats.delivered, stats.retried, stats.dead_lettered),
            (30, 20, 0),
            "{dispatch:?}"
        );
        assert_balanced(&stats);
        let order: Vec<u32> = calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.0 % 3 != 0 || c.1 == 3)
            .map(|c| c.0)
            .collect();
        assert_eq!(order, (0..30).collect::<Vec<_>>(), "{dispatch:?}: successes in order");
    }
}

/// Bad policies are typed errors at subscribe time.
#[test]
fn impossible_policies_are_refused_with_a_reason() {
    let bus = Bus::new();
    let refuse = |retry: Retry| {
        let err = bus
            .subscriber::<u32>()
            .at_least_once(retry)
            .subscribe(|_: &Envelope<u32>| {})
            .unwrap_err();
        assert!(matches!(err, SubscribeError::InvalidPolicy { .. }), "{err:?}");
        err.to_string()
    };
    assert!(refuse(Retry::ordered().max_attempts(0)).contains("max_attempts"));
    assert!(refuse(Retry::ordered().dead_letter_capacity(0)).contains("dead_letter_capacity"));
    assert!(refuse(Retry::ordered().backoff(Backoff::fixed(MS(1)).jitter(101))).contains("jitter"));
    let err = bus
        .subscriber::<u32>()
        .at_least_once(Retry::ordered())
        .receiver()
        .unwrap_err();
    assert!(matches!(err, SubscribeError::InvalidPolicy { .. }));
    // At-most-once is the default, and says so in the stats.
    let sub = bus.subscribe(|_: &Envelope<u32>| {}).unwrap();
    assert_eq!(sub.stats().delivery, Delivery::AtMostOnce);
}

/// Under a manual clock, events held behind an ordered retry do not hold `wait_idle`
/// up, and `DropOldest` evictions of held events stay exactly accounted.
#[test]
fn held_events_evicted_by_drop_oldest_stay_accounted_under_a_manual_clock() {
    for dispatch in [Dispatch::Inline, Dispatch::Pool] {
        let clock = ManualClock::new();
        let bus = Bus::builder().workers(1).clock(clock.clone()).build().unwrap();
        let calls = Calls::default();
        let sub = bus
            .subscriber::<u32>()
            .dispatch(dispatch)
            .capacity(5)
            .overflow(Overflow::DropOldest)
            .at_least_once(Retry::ordered().max_attempts(2).backoff(Backoff::fixed(MS(10))))
            .subscribe(flaky(&clock, &calls, |n, attempt| n == 0 && attempt == 1))
            .unwrap();
        for n in 0..50_u32 {
            bus.publish(n).unwrap();
            if n % 7 == 0 {
                bus.wait_idle(FIVE_SECONDS).unwrap();
                assert_eq!(bus.stats().in_flight, 0, "{dispatch:?}: held events are not in flight");
            }
        }
        bus.wait_idle(FIVE_SECONDS).unwrap();
        let stats = sub.stats();
        assert_eq!(
            (stats.retrying, stats.queued, stats.dropped.oldest),
            (1, 5, 44),
            "{dispatch:?}"
        );
        assert_balanced(&stats);
        clock.advance(MS(10));
        bus.wait_idle(FIVE_SECONDS).unwrap();
        let stats = sub.stats();
        assert_eq!(
            (stats.delivered, stats.queued, stats.dropped.oldest),
            (6, 0, 44),
            "{dispatch:?}"
        );
        assert_balanced(&stats);
        let order: Vec<u32> = calls.lock().unwrap().iter().map(|c| c.0).collect();
        assert_eq!(order, [0, 0, 45, 46, 47, 48, 49], "{dispatch:?}");
        assert_eq!(bus.stats().in_flight, 0);
    }
}

/// More retries come due at one clock move than a runner handles in one batch: the
/// runner yields between batches, and `wait_idle` must not see the bus idle then.
#[test]
fn wait_idle_covers_more_due_retries_than_one_batch_holds() {
    // Several rounds: the gap between batches is short.
    for dispatch in [Dispatch::Pool, Dispatch::Thread].repeat(10) {
        let clock = ManualClock::new();
        let bus = Bus::builder().clock(clock.clone()).build().unwrap();
        let sub = bus
            .subscriber::<u32>()
            .dispatch(dispatch)
            .at_least_once(Retry::unordered().max_attempts(2).backoff(Backoff::fixed(MS(1_000))))
            .subscribe(|_: &Envelope<u32>| -> Result<(), String> { Err("down".into()) })
            .unwrap();
        for n in 0_u32..500 {
            bus.publish(n).unwrap();
        }
        bus.wait_idle(FIVE_SECONDS).unwrap();
        assert_eq!(sub.stats().retrying, 500);
        clock.advance(MS(1_000));
        bus.wait_idle(FIVE_SECONDS).unwrap();
        let stats = sub.stats();
        assert_eq!(
            (stats.dead_lettered, stats.retrying),
            (500, 0),
            "{dispatch:?}: {stats:?}"
        );
        assert_balanced(&stats);
    }
}
