//! Pull receivers with acks (promise 3): an `AckReceiver` hands out deliveries that are
//! acked, nacked (redelivered after the backoff with the next attempt number, then
//! dead-lettered) or dropped (a nack), at most `max_unacked` at once, and every event
//! stays accounted for (`unacked` joins the identity).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{with_deadline, FIVE_SECONDS};
use crier::testing::ManualClock;
use crier::{
    AckError, AckReceiver, Backoff, Bus, DeadLetter, DedupWindow, Envelope, Nack, Overflow, RecvError, Retry,
    SubscribeError, SubscriberStats, TryRecvError,
};

const SECOND: Duration = Duration::from_secs(1);

fn assert_balanced(stats: &SubscriberStats) {
    assert!(stats.is_balanced(), "identity broken: {stats:#?}");
}

/// A bus on a manual clock and an ack receiver of `u32` with a fixed 1 s backoff.
fn setup(retry: Retry, max_unacked: usize) -> (Bus, ManualClock, AckReceiver<u32>) {
    let clock = ManualClock::new();
    let bus = Bus::builder().clock(clock.clone()).build().unwrap();
    let rx = bus
        .subscriber::<u32>()
        .name("worker")
        .at_least_once(retry.backoff(Backoff::fixed(SECOND)))
        .max_unacked(max_unacked)
        .ack_receiver()
        .unwrap();
    (bus, clock, rx)
}

fn publish_all(bus: &Bus, events: impl IntoIterator<Item = u32>) {
    for n in events {
        bus.publish(n).unwrap();
    }
}

#[test]
fn an_acked_delivery_is_delivered_once_and_never_comes_back() {
    let (bus, clock, rx) = setup(Retry::ordered(), 8);
    publish_all(&bus, [1, 2]);
    let first = rx.try_recv().unwrap();
    assert_eq!((**first, first.attempt(), first.is_redelivery()), (1, 1, false));
    assert_eq!(rx.stats().unacked, 1);
    assert_balanced(&rx.stats());
    first.ack();
    rx.try_recv().unwrap().ack();
    clock.advance(SECOND * 60);
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    let stats = rx.stats();
    assert_eq!(
        (stats.accepted, stats.delivered, stats.retried, stats.unacked),
        (2, 2, 0, 0)
    );
    assert_balanced(&stats);
}

#[test]
fn a_nacked_delivery_comes_back_after_its_backoff_with_the_next_attempt_number() {
    let (bus, clock, rx) = setup(Retry::ordered().max_attempts(3), 8);
    bus.publish(7_u32).unwrap();
    assert_eq!(rx.try_recv().unwrap().nack(), Ok(Nack::Retry { attempt: 2 }));
    let stats = rx.stats();
    assert_eq!((stats.retried, stats.retrying, stats.unacked), (1, 1, 0));
    assert_balanced(&stats);
    clock.advance(Duration::from_millis(999));
    assert!(
        matches!(rx.try_recv(), Err(TryRecvError::Empty)),
        "not due before its backoff"
    );
    clock.advance(Duration::from_millis(1));
    let again = rx.try_recv().unwrap();
    assert_eq!((**again, again.attempt(), again.is_redelivery()), (7, 2, true));
    again.ack();
    let stats = rx.stats();
    assert_eq!((stats.delivered, stats.retried, stats.retrying), (1, 1, 0));
    assert_balanced(&stats);
}

#[test]
fn a_redelivery_carries_the_original_event_id_and_metadata() {
    let (bus, clock, rx) = setup(Retry::ordered(), 8);
    let receipt = bus.message(5_u32).idempotency_key("job-5").publish().unwrap();
    let first = rx.try_recv().unwrap();
    assert_eq!(first.id(), receipt.id);
    drop(first);
    clock.advance(SECOND);
    let again = rx.try_recv().unwrap();
    assert_eq!(
        (again.id(), again.seq(), again.idempotency_key()),
        (receipt.id, receipt.seq, Some("job-5"))
    );
    again.ack();
}

#[test]
fn dropping_an_unsettled_handle_is_a_nack() {
    let (bus, clock, rx) = setup(Retry::ordered(), 8);
    bus.publish(3_u32).unwrap();
    drop(rx.try_recv().unwrap());
    let stats = rx.stats();
    assert_eq!((stats.retried, stats.retrying, stats.unacked), (1, 1, 0));
    assert_eq!(stats.last_error.as_deref(), Some("dropped without an ack"));
    assert_balanced(&stats);
    clock.advance(SECOND);
    let again = rx.try_recv().unwrap();
    assert_eq!(again.attempt(), 2);
    again.ack();
}

#[test]
fn a_handle_dropped_by_a_panicking_thread_is_a_nack_that_says_so() {
    let (bus, clock, rx) = setup(Retry::ordered(), 8);
    bus.publish(4_u32).unwrap();
    let handle = rx.try_recv().unwrap();
    let worker = std::thread::spawn(move || {
        let _held = handle;
        panic!("worker crashed mid-job");
    });
    assert!(worker.join().is_err());
    let stats = rx.stats();
    assert_eq!((stats.retrying, stats.unacked), (1, 0));
    let error = stats.last_error.unwrap();
    assert!(error.contains("panicking thread"), "{error}");
    clock.advance(SECOND);
    assert_eq!(rx.try_recv().unwrap().attempt(), 2);
}

#[test]
fn the_last_attempt_is_dead_lettered_to_subscribers_or_kept() {
    // Nobody subscribes to dead letters: kept in the receiver's store.
    let (bus, clock, rx) = setup(Retry::ordered().max_attempts(2), 8);
    bus.publish(9_u32).unwrap();
    assert_eq!(
        rx.try_recv().unwrap().nack_with("disk full"),
        Ok(Nack::Retry { attempt: 2 })
    );
    clock.advance(SECOND);
    assert_eq!(
        rx.try_recv().unwrap().nack_with("disk still full"),
        Ok(Nack::DeadLettered)
    );
    clock.advance(SECOND * 60);
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    let stats = rx.stats();
    assert_eq!((stats.retried, stats.dead_lettered, stats.dead_letters_kept), (1, 1, 1));
    assert_balanced(&stats);
    let kept = rx.take_dead_letters();
    assert_eq!(
        (**kept[0].envelope(), kept[0].attempts(), kept[0].error()),
        (9, 2, "disk still full")
    );
    assert_eq!(kept[0].subscriber(), "worker");
    assert!(rx.dead_letters().is_empty());

    // With a dead-letter subscriber: published to it, carrying the failed event as
    // causation.
    let (bus, _clock, rx) = setup(Retry::ordered().max_attempts(1), 8);
    let letters = Arc::new(Mutex::new(Vec::new()));
    let log = letters.clone();
    let _dlq = bus
        .subscriber::<DeadLetter<u32>>()
        .dispatch(crier::Dispatch::Inline)
        .subscribe(move |dl: &Envelope<DeadLetter<u32>>| {
            log.lock()
                .unwrap()
                .push((**dl.envelope(), dl.causation_id(), dl.envelope().id()))
        })
        .unwrap();
    bus.publish(10_u32).unwrap();
    assert_eq!(rx.try_recv().unwrap().nack(), Ok(Nack::DeadLettered));
    let letters = letters.lock().unwrap();
    assert_eq!(letters.len(), 1);
    let (event, causation, id) = letters[0];
    assert_eq!((event, causation), (10, Some(id)));
    assert!(rx.dead_letters().is_empty());
}

#[test]
fn at_most_max_unacked_handles_are_out_and_recv_waits_for_a_settle() {
    let (bus, _clock, rx) = setup(Retry::unordered(), 2);
    publish_all(&bus, 1..=3);
    let a = rx.try_recv().unwrap();
    let b = rx.try_recv().unwrap();
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)), "at the limit");
    assert_eq!((rx.unacked(), rx.len()), (2, 1));
    assert_eq!(rx.stats().unacked, 2);
    assert_balanced(&rx.stats());

    // `recv` at the limit returns only after another thread settles a handle.
    let acked = Arc::new(AtomicBool::new(false));
    let settler = {
        let acked = acked.clone();
        std::thread::spawn(move || {
            acked.store(true, Ordering::SeqCst);
            a.ack();
        })
    };
    let rx = Arc::new(rx);
    let third = with_deadline(FIVE_SECONDS, {
        let rx = rx.clone();
        move || rx.recv().unwrap()
    });
    assert!(
        acked.load(Ordering::SeqCst),
        "recv returned before anything was settled"
    );
    assert_eq!(**third, 3);
    settler.join().unwrap();
    assert_eq!(rx.unacked(), 2);
    b.ack();
    third.ack();
    let stats = rx.stats();
    assert_eq!((stats.delivered, stats.unacked, stats.retried), (3, 0, 0));
}

#[test]
fn ordered_retries_hold_the_line_and_unordered_ones_let_newer_events_overtake() {
    let (bus, clock, rx) = setup(Retry::ordered(), 8);
    publish_all(&bus, [1, 2]);
    rx.try_recv().unwrap().nack().unwrap();
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)), "2 is held behind 1");
    assert_eq!(rx.len(), 1);
    clock.advance(SECOND);
    let retry = rx.try_recv().unwrap();
    assert_eq!((**retry, retry.attempt()), (1, 2));
    retry.ack();
    assert_eq!(**rx.try_recv().unwrap(), 2);

    let (bus, clock, rx) = setup(Retry::unordered(), 8);
    publish_all(&bus, [1, 2]);
    rx.try_recv().unwrap().nack().unwrap();
    let overtaking = rx.try_recv().unwrap();
    assert_eq!((**overtaking, overtaking.attempt()), (2, 1));
    overtaking.ack();
    clock.advance(SECOND);
    assert_eq!(rx.try_recv().unwrap().attempt(), 2);
}

#[test]
fn unordered_retries_waiting_are_bounded_by_the_capacity() {
    let clock = ManualClock::new();
    let bus = Bus::builder().clock(clock.clone()).build().unwrap();
    let rx = bus
        .subscriber::<u32>()
        .capacity(2)
        .at_least_once(Retry::unordered().backoff(Backoff::fixed(SECOND)))
        .ack_receiver()
        .unwrap();
    publish_all(&bus, [1, 2]);
    rx.try_recv().unwrap().nack().unwrap();
    rx.try_recv().unwrap().nack().unwrap();
    bus.publish(3_u32).unwrap();
    assert!(
        matches!(rx.try_recv(), Err(TryRecvError::Empty)),
        "two retries wait: no new event until one settles"
    );
    assert_eq!(rx.stats().retrying, 2);
    clock.advance(SECOND);
    let got: Vec<(u32, u32)> = rx.try_iter().map(|h| (**h, h.attempt())).collect();
    assert_eq!(got[..2], [(1, 2), (2, 2)]);
}

#[test]
fn a_dedup_window_skips_events_whose_key_was_acked_but_not_those_only_nacked() {
    let clock = ManualClock::new();
    let bus = Bus::builder().clock(clock.clone()).build().unwrap();
    let rx = bus
        .subscriber::<u32>()
        .at_least_once(Retry::ordered().backoff(Backoff::fixed(SECOND)))
        .dedup(DedupWindow::new(100, SECOND * 60))
        .ack_receiver()
        .unwrap();
    bus.message(1_u32).idempotency_key("charge-1").publish().unwrap();
    rx.try_recv().unwrap().nack().unwrap();
    clock.advance(SECOND);
    let retry = rx.try_recv().unwrap();
    assert_eq!(retry.attempt(), 2, "a nacked key is not remembered");
    retry.ack();
    bus.message(1_u32).idempotency_key("charge-1").publish().unwrap();
    bus.message(2_u32).idempotency_key("charge-2").publish().unwrap();
    let next = rx.try_recv().unwrap();
    assert_eq!(**next, 2, "the repeated charge-1 was skipped");
    next.ack();
    let stats = rx.stats();
    assert_eq!(
        (stats.accepted, stats.delivered, stats.deduplicated, stats.dedup_keys),
        (3, 2, 1, 2)
    );
    assert_balanced(&stats);
}

#[test]
fn a_panicking_dedup_key_function_fails_the_attempt() {
    let clock = ManualClock::new();
    let bus = Bus::builder().clock(clock.clone()).build().unwrap();
    let rx = bus
        .subscriber::<u32>()
        .at_least_once(Retry::ordered().max_attempts(2).backoff(Backoff::fixed(SECOND)))
        .dedup(DedupWindow::new(100, SECOND * 60))
        .dedup_by(|env: &Envelope<u32>| -> Option<u32> {
            assert!(**env != 13, "no key for 13");
            Some(**env)
        })
        .ack_receiver()
        .unwrap();
    publish_all(&bus, [13, 14]);
    assert!(
        matches!(rx.try_recv(), Err(TryRecvError::Empty)),
        "13 failed and holds the line"
    );
    clock.advance(SECOND);
    let next = rx.try_recv().unwrap();
    assert_eq!(**next, 14, "13 failed twice and was dead-lettered");
    let stats = rx.stats();
    assert_eq!((stats.retried, stats.dead_lettered, stats.unacked), (1, 1, 1));
    assert!(stats.last_error.unwrap().contains("no key for 13"));
    assert_eq!(rx.dead_letters()[0].attempts(), 2);
}

#[test]
fn nacks_after_the_receiver_is_dropped_or_the_bus_shut_down_are_errors_and_counted() {
    let (bus, _clock, rx) = setup(Retry::ordered(), 8);
    publish_all(&bus, [1, 2]);
    let (a, b) = (rx.try_recv().unwrap(), rx.try_recv().unwrap());
    drop(rx);
    assert_eq!(a.nack(), Err(AckError::Unsubscribed));
    b.ack(); // still counts; nothing to redeliver to
    assert!(bus.stats().subscribers.is_empty());

    let (bus, _clock, rx) = setup(Retry::ordered(), 8);
    publish_all(&bus, [1, 2, 3]);
    let (a, b) = (rx.try_recv().unwrap(), rx.try_recv().unwrap());
    let report = bus.shutdown(FIVE_SECONDS).unwrap();
    assert_eq!(report.in_receivers, 3, "one queued, two out: {report}");
    assert_eq!(a.nack(), Err(AckError::Closed));
    b.ack();
    // The queued event can still be received, then the receiver is closed.
    let last = rx.recv().unwrap();
    assert_eq!(**last, 3);
    assert!(matches!(rx.recv(), Err(RecvError::Closed)));
    assert_eq!(rx.stats().unacked, 1);
    last.ack();
    let stats = rx.stats();
    assert_eq!((stats.delivered, stats.dropped.shutdown, stats.unacked), (2, 1, 0));
    assert_balanced(&stats);
}

#[test]
fn shutdown_reports_retries_waiting_in_an_ack_receiver_and_drops_them_counted() {
    let (bus, _clock, rx) = setup(Retry::ordered(), 8);
    publish_all(&bus, [1, 2]);
    rx.try_recv().unwrap().nack().unwrap();
    let report = bus.shutdown(FIVE_SECONDS).unwrap();
    assert_eq!((report.awaiting_retry, report.pending), (1, 1), "{report}");
    assert!(
        report.drained,
        "a receiver's retries do not hold up the drain: {report}"
    );
    let stats = rx.stats();
    assert_eq!((stats.retrying, stats.dropped.shutdown), (0, 1));
    assert_balanced(&stats);
    // What was queued behind the retry is still the owner's.
    assert_eq!(**rx.recv().unwrap(), 2);
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Closed)));
    assert!(rx.iter().next().is_none());
}

#[test]
fn wait_idle_does_not_wait_for_an_ack_receivers_handles_or_retries() {
    let bus = Bus::new();
    let rx = bus
        .subscriber::<u32>()
        .at_least_once(Retry::ordered().backoff(Backoff::fixed(Duration::from_secs(3600))))
        .ack_receiver()
        .unwrap();
    publish_all(&bus, [1, 2]);
    let held = rx.try_recv().unwrap();
    bus.wait_idle(FIVE_SECONDS).unwrap();
    held.nack().unwrap();
    bus.wait_idle(FIVE_SECONDS).unwrap();
    assert_eq!(rx.stats().retrying, 1);
}

#[test]
fn under_the_system_clock_the_timer_wakes_a_blocked_recv_when_a_retry_is_due() {
    // Ordered: the receiver waits on the held line (the condvar); unordered: on the
    // empty mailbox. In both the retry's due time, and only it, releases `recv`.
    for retry in [Retry::ordered(), Retry::unordered()] {
        let bus = Bus::new();
        let rx = bus
            .subscriber::<u32>()
            .at_least_once(retry.backoff(Backoff::fixed(Duration::from_millis(20))))
            .ack_receiver()
            .unwrap();
        publish_all(&bus, [1, 2]);
        let first = rx.recv().unwrap();
        if retry.order() == crier::RetryOrder::Unordered {
            rx.recv().unwrap().ack();
        }
        first.nack().unwrap();
        let again = with_deadline(FIVE_SECONDS, move || {
            let handle = rx.recv().unwrap();
            let got = (**handle, handle.attempt());
            handle.ack();
            (got, rx)
        });
        assert_eq!(again.0, (1, 2));
        let rx = again.1;
        if retry.order() == crier::RetryOrder::Ordered {
            assert_eq!(**rx.recv().unwrap(), 2);
        }
    }
}

#[test]
fn a_blocked_recv_returns_closed_at_shutdown() {
    let bus = Bus::new();
    let rx = bus
        .subscriber::<u32>()
        .at_least_once(Retry::ordered())
        .ack_receiver()
        .unwrap();
    let waiter = std::thread::spawn(move || rx.recv().map(|h| **h));
    // Whether the waiter blocks before or after the shutdown, it ends with Closed.
    bus.shutdown(FIVE_SECONDS).unwrap();
    assert_eq!(
        with_deadline(FIVE_SECONDS, move || waiter.join().unwrap()),
        Err(RecvError::Closed)
    );
}

#[test]
fn recv_timeout_times_out_at_the_limit_and_when_nothing_comes() {
    let (bus, _clock, rx) = setup(Retry::ordered(), 1);
    assert!(matches!(
        rx.recv_timeout(Duration::from_millis(10)),
        Err(crier::RecvTimeoutError::Timeout)
    ));
    publish_all(&bus, [1, 2]);
    let held = rx.recv_timeout(FIVE_SECONDS).unwrap();
    assert!(matches!(
        rx.recv_timeout(Duration::from_millis(10)),
        Err(crier::RecvTimeoutError::Timeout)
    ));
    held.ack();
    assert_eq!(**rx.recv_timeout(FIVE_SECONDS).unwrap(), 2);
}

#[test]
fn drop_oldest_overflow_reports_lag_then_the_oldest_event_left() {
    let clock = ManualClock::new();
    let bus = Bus::builder().clock(clock).build().unwrap();
    let rx = bus
        .subscriber::<u32>()
        .capacity(2)
        .overflow(Overflow::DropOldest)
        .at_least_once(Retry::ordered())
        .ack_receiver()
        .unwrap();
    publish_all(&bus, 1..=5);
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Lagged(3))));
    assert_eq!(**rx.try_recv().unwrap(), 4);
    let stats = rx.stats();
    assert_eq!(stats.dropped.oldest, 3);
    assert_balanced(&stats);
}

#[test]
fn handles_are_settled_on_other_threads_and_the_error_hook_hears_nacks() {
    let clock = ManualClock::new();
    let bus = Bus::builder().clock(clock.clone()).build().unwrap();
    let heard = Arc::new(Mutex::new(Vec::new()));
    let log = heard.clone();
    let rx = bus
        .subscriber::<u32>()
        .at_least_once(Retry::unordered().backoff(Backoff::fixed(SECOND)))
        .on_error(move |e| log.lock().unwrap().push((e.attempt(), e.to_string())))
        .ack_receiver()
        .unwrap();
    publish_all(&bus, 0..100);
    let handles: Vec<_> = rx.try_iter().collect();
    assert_eq!(handles.len(), 100);
    let workers: Vec<_> = handles
        .into_iter()
        .map(|h| {
            std::thread::spawn(move || {
                let job = **h;
                if job % 10 == 0 {
                    h.nack_with(format!("job {job} failed")).unwrap();
                } else {
                    h.ack();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let stats = rx.stats();
    assert_eq!((stats.delivered, stats.retrying, stats.unacked), (90, 10, 0));
    assert_balanced(&stats);
    let heard = heard.lock().unwrap();
    assert_eq!(heard.len(), 10);
    assert!(heard
        .iter()
        .all(|(attempt, text)| *attempt == 1 && text.contains("failed")));
}

#[test]
fn bad_options_are_refused_with_a_reason() {
    let bus = Bus::new();
    let invalid = |r: Result<(), SubscribeError>| match r {
        Err(SubscribeError::InvalidPolicy { reason }) => reason,
        other => panic!("expected InvalidPolicy, got {other:?}"),
    };
    let reason = invalid(bus.subscriber::<u32>().ack_receiver().map(drop));
    assert!(reason.contains("at_least_once"), "{reason}");
    let reason = invalid(
        bus.subscriber::<u32>()
            .at_least_once(Retry::ordered())
            .max_unacked(0)
            .ack_receiver()
            .map(drop),
    );
    assert!(reason.contains("max_unacked"), "{reason}");
    let reason = invalid(bus.subscriber::<u32>().max_unacked(4).receiver().map(drop));
    assert!(reason.contains("ack receivers only"), "{reason}");
    let reason = invalid(
        bus.subscriber::<u32>()
            .max_unacked(4)
            .subscribe(|_: &Envelope<u32>| {})
            .map(drop),
    );
    assert!(reason.contains("ack receivers only"), "{reason}");
    let reason = invalid(
        bus.subscriber::<u32>()
            .at_least_once(Retry::ordered())
            .receiver()
            .map(drop),
    );
    assert!(reason.contains("ack_receiver"), "{reason}");
    let reason = invalid(
        bus.subscriber::<u32>()
            .at_least_once(Retry::ordered().max_attempts(0))
            .ack_receiver()
            .map(drop),
    );
    assert!(reason.contains("max_attempts"), "{reason}");
    assert!(matches!(
        bus.subscriber::<u32>()
            .at_least_once(Retry::ordered())
            .capacity(0)
            .ack_receiver(),
        Err(SubscribeError::ZeroCapacity)
    ));
    bus.shutdown(FIVE_SECONDS).unwrap();
    assert!(matches!(
        bus.subscriber::<u32>().at_least_once(Retry::ordered()).ack_receiver(),
        Err(SubscribeError::Closed)
    ));
}

#[test]
fn a_failing_dead_letter_ack_receiver_never_makes_a_dead_letter_of_a_dead_letter() {
    let bus = Bus::new();
    let dead_letters = bus
        .subscriber::<DeadLetter<u32>>()
        .at_least_once(Retry::ordered().max_attempts(1))
        .ack_receiver()
        .unwrap();
    let jobs = bus
        .subscriber::<u32>()
        .at_least_once(Retry::ordered().max_attempts(1))
        .ack_receiver()
        .unwrap();
    bus.publish(1_u32).unwrap();
    assert_eq!(jobs.try_recv().unwrap().nack(), Ok(Nack::DeadLettered));
    let letter = dead_letters.try_recv().unwrap();
    assert_eq!(**letter.envelope().envelope(), 1);
    assert_eq!(letter.nack_with("archive down"), Ok(Nack::DeadLettered));
    let kept = dead_letters.dead_letters();
    assert_eq!((kept.len(), kept[0].error()), (1, "archive down"));
    let nested = std::any::type_name::<DeadLetter<DeadLetter<u32>>>();
    assert!(
        bus.stats().topic(nested).is_none(),
        "no topic of dead letters of dead letters"
    );
}
