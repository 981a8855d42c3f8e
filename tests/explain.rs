//! Delivery traces and `Bus::explain`: each outcome is recorded where it happens, the
//! caused events form the tree, the store stays bounded, and the errors say why.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crier::testing::Recorder;
use crier::{
    AfterFailure, Backoff, BuildError, Bus, DedupWindow, DropReason, Envelope, ExplainError, Overflow, RecvError,
    Retry, Subscription, TraceOutcome,
};

#[derive(Debug)]
struct Paid(u32);

#[derive(Debug, PartialEq)]
struct Shipped(u32);

const IDLE: Duration = Duration::from_secs(10);

/// Orders (`u32`) are paid, then shipped; the fraud check fails order 13 twice, and
/// with two attempts dead-letters it.
fn shop(bus: &Bus) -> Vec<Subscription> {
    let (payer, shipper) = (bus.clone(), bus.clone());
    vec![
        bus.subscriber::<u32>()
            .name("payment")
            .subscribe(move |order: &Envelope<u32>| {
                payer.publish(Paid(**order)).unwrap();
            })
            .unwrap(),
        bus.subscriber::<Paid>()
            .name("shipping")
            .subscribe(move |paid: &Envelope<Paid>| {
                shipper.publish(Shipped(paid.0)).unwrap();
            })
            .unwrap(),
        bus.subscriber::<u32>()
            .name("fraud")
            .at_least_once(
                Retry::ordered()
                    .max_attempts(2)
                    .backoff(Backoff::fixed(Duration::from_millis(1))),
            )
            .subscribe(|order: &Envelope<u32>| -> Result<(), String> {
                match **order {
                    13 => Err("card reported stolen".into()),
                    _ => Ok(()),
                }
            })
            .unwrap(),
    ]
}

#[test]
fn an_event_is_explained_with_every_attempt_and_everything_it_caused() {
    let bus = Bus::builder().trace(1_000).build().unwrap();
    let _shop = shop(&bus);
    let shipped = Recorder::<Shipped>::new(&bus).unwrap();
    bus.publish(12_u32).unwrap();
    let receipt = bus.publish(13_u32).unwrap();
    shipped.assert_count(2);
    assert!(shipped.events().iter().any(|e| **e == Shipped(13)));

    let explained = bus.explain(receipt.id).unwrap();
    assert_eq!((explained.topic.as_str(), explained.seq), ("u32", 1));
    assert_eq!(explained.caused_by, None);
    let payment: Vec<_> = explained.steps_of("payment").collect();
    assert!(
        matches!(payment[..], [TraceOutcome::Handled { attempt: 1, .. }]),
        "{payment:?}"
    );
    let fraud: Vec<_> = explained.steps_of("fraud").collect();
    match &fraud[..] {
        [TraceOutcome::Failed {
            attempt: 1,
            took: Some(_),
            error: first,
            then: AfterFailure::Retry { after },
        }, TraceOutcome::Failed {
            attempt: 2,
            error: second,
            then: AfterFailure::DeadLettered,
            ..
        }] => {
            assert_eq!(
                (first.as_str(), second.as_str()),
                ("card reported stolen", "card reported stolen")
            );
            assert_eq!(*after, Duration::from_millis(1));
        }
        other => panic!("fraud's steps: {other:?}"),
    }
    assert_eq!(explained.steps.len(), 3, "nothing else happened to it");

    // Caused: Paid(13) (which caused Shipped(13)) and the dead letter, in publish order.
    let caused: Vec<&str> = explained.caused.iter().map(|e| e.type_name).collect();
    assert_eq!(caused.len(), 2, "{explained}");
    assert!(caused[0].ends_with("Paid"), "{caused:?}");
    assert!(caused[1].contains("DeadLetter<u32>"), "{caused:?}");
    let paid = &explained.caused[0];
    assert_eq!(paid.caused_by, Some(receipt.id));
    assert_eq!(paid.correlation_id, receipt.id);
    assert!(matches!(
        paid.steps_of("shipping").collect::<Vec<_>>()[..],
        [TraceOutcome::Handled { .. }]
    ));
    assert!(paid.caused[0].type_name.ends_with("Shipped"));
    assert!(paid.caused[0].caused.is_empty());

    // Order 12 caused only its own Paid and Shipped.
    let twelve = bus
        .explain(crier::EventId::from_u128(receipt.id.as_u128() - 1))
        .unwrap();
    assert_eq!(twelve.caused.len(), 1);
    assert!(matches!(
        twelve.steps_of("fraud").collect::<Vec<_>>()[..],
        [TraceOutcome::Handled { .. }]
    ));
}

/// The tree as printed, with durations (which vary) replaced by `T` and ids by `ID`.
fn shape(tree: &str) -> String {
    tree.lines()
        .map(|line| {
            line.split(' ')
                .map(|word| {
                    let bare = word.trim_end_matches([':', ';']);
                    let punctuation = &word[bare.len()..];
                    let number = bare.trim_end_matches(char::is_alphabetic).trim_end_matches('µ');
                    let unit = &bare[number.len()..];
                    if ["ns", "µs", "ms", "s"].contains(&unit) && number.parse::<f64>().is_ok() {
                        format!("T{punctuation}")
                    } else if bare.len() == 32 && bare.chars().all(|c| c.is_ascii_hexdigit()) {
                        format!("ID{punctuation}")
                    } else {
                        word.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_explanation_prints_as_a_tree() {
    // Inline: the steps happen in one order every run.
    let bus = Bus::builder().inline().trace(100).build().unwrap();
    let _shop = shop(&bus);
    let receipt = bus.publish(13_u32).unwrap();
    bus.wait_idle(IDLE).unwrap();
    let tree = bus.explain(receipt.id).unwrap().to_string();
    let expected = "\
event ID (u32) on \"u32\", seq 0
├─ payment: handled attempt 1 in T
├─ fraud: attempt 1 failed in T: card reported stolen; retry in T
├─ fraud: attempt 2 failed in T: card reported stolen; dead-lettered
├─ caused event ID (explain::Paid) on \"explain::Paid\", seq 0
│  ├─ shipping: handled attempt 1 in T
│  └─ caused event ID (explain::Shipped) on \"explain::Shipped\", seq 0
│     └─ no subscriber has taken it yet
└─ caused event ID (crier::dead_letter::DeadLetter<u32>) on \"crier::dead_letter::DeadLetter<u32>\", seq 0
   └─ no subscriber has taken it yet";
    assert_eq!(shape(&tree), expected, "printed:\n{tree}");
}

#[test]
fn drops_and_their_reasons_are_explained() {
    let bus = Bus::builder().trace(100).build().unwrap();
    let newest = bus
        .subscriber::<u32>()
        .name("newest")
        .capacity(1)
        .overflow(Overflow::DropNewest)
        .receiver()
        .unwrap();
    // A filter gives a receiver a mailbox of its own: `DropOldest` then evicts.
    let oldest = bus
        .subscriber::<u32>()
        .name("oldest")
        .capacity(1)
        .overflow(Overflow::DropOldest)
        .filter(|_: &u32| true)
        .receiver()
        .unwrap();
    let first = bus.publish(1_u32).unwrap();
    let second = bus.publish(2_u32).unwrap();

    let steps = |id| bus.explain(id).unwrap().steps;
    let first_steps = steps(first.id);
    assert_eq!(first_steps.len(), 1, "{first_steps:?}");
    assert_eq!(first_steps[0].subscriber, "oldest");
    assert_eq!(first_steps[0].outcome, TraceOutcome::Dropped(DropReason::Oldest));
    let second_steps = steps(second.id);
    assert_eq!(second_steps.len(), 1, "{second_steps:?}");
    assert_eq!(second_steps[0].subscriber, "newest");
    assert_eq!(second_steps[0].outcome, TraceOutcome::Dropped(DropReason::Newest));

    assert_eq!(*newest.recv().unwrap(), 1);
    assert_eq!(oldest.recv().unwrap_err(), RecvError::Lagged(1));
    assert_eq!(*oldest.recv().unwrap(), 2);
    let received = steps(first.id).pop().unwrap();
    assert_eq!(
        (received.subscriber.as_str(), received.outcome),
        ("newest", TraceOutcome::Received { attempt: 1 })
    );
    assert!(bus
        .explain(first.id)
        .unwrap()
        .to_string()
        .contains("oldest: dropped (Oldest)"));
}

#[test]
fn an_ack_receivers_hand_outs_nacks_and_acks_are_explained() {
    let bus = Bus::builder().trace(100).build().unwrap();
    let rx = bus
        .subscriber::<u32>()
        .name("worker")
        .at_least_once(Retry::ordered().backoff(Backoff::fixed(Duration::ZERO)))
        .ack_receiver()
        .unwrap();
    let receipt = bus.publish(5_u32).unwrap();
    rx.recv().unwrap().nack_with("not yet").unwrap();
    rx.recv().unwrap().ack();
    let steps: Vec<_> = bus.explain(receipt.id).unwrap().steps_of("worker").cloned().collect();
    assert_eq!(
        steps,
        [
            TraceOutcome::Received { attempt: 1 },
            TraceOutcome::Failed {
                attempt: 1,
                took: None,
                error: "not yet".into(),
                then: AfterFailure::Retry { after: Duration::ZERO },
            },
            TraceOutcome::Received { attempt: 2 },
            TraceOutcome::Acked { attempt: 2 },
        ]
    );
}

#[test]
fn a_dedup_skip_is_explained() {
    let bus = Bus::builder().inline().trace(100).build().unwrap();
    let _sub = bus
        .subscriber::<u32>()
        .name("once")
        .at_least_once(Retry::ordered())
        .dedup(DedupWindow::new(10, Duration::from_secs(60)))
        .subscribe(|_: &Envelope<u32>| {})
        .unwrap();
    bus.message(1_u32).idempotency_key("k").publish().unwrap();
    let again = bus.message(1_u32).idempotency_key("k").publish().unwrap();
    let steps: Vec<_> = bus.explain(again.id).unwrap().steps_of("once").cloned().collect();
    assert_eq!(steps, [TraceOutcome::Deduplicated { attempt: 1 }]);
}

#[test]
fn the_store_is_bounded_and_says_what_it_let_go() {
    let bus = Bus::builder().inline().trace(100).build().unwrap();
    let _sub = bus
        .subscriber::<u32>()
        .name("s")
        .subscribe(|_: &Envelope<u32>| {})
        .unwrap();
    let ids: Vec<_> = (0..10_000_u32).map(|n| bus.publish(n).unwrap().id).collect();
    let stats = bus.trace_stats().unwrap();
    assert_eq!((stats.capacity, stats.kept, stats.evicted), (100, 100, 9_900));
    assert_eq!(bus.explain(ids[0]), Err(ExplainError::Evicted(ids[0])));
    assert_eq!(bus.explain(ids[9_899]), Err(ExplainError::Evicted(ids[9_899])));
    assert!(bus.explain(ids[9_900]).is_ok());

    // An id from another bus was never traced here.
    let other = Bus::builder().trace(1).build().unwrap();
    let foreign = other.publish(0_u32).unwrap().id;
    assert_eq!(bus.explain(foreign), Err(ExplainError::Unknown(foreign)));
}

#[test]
fn explain_without_traces_and_a_zero_capacity_are_clear_errors() {
    let bus = Bus::new();
    let id = bus.publish(1_u32).unwrap().id;
    let error = bus.explain(id).unwrap_err();
    assert_eq!(error, ExplainError::NotTracing);
    assert!(error.to_string().contains("BusBuilder::trace"), "{error}");
    assert_eq!(bus.trace_stats(), None);
    assert!(matches!(
        Bus::builder().trace(0).build(),
        Err(BuildError::ZeroTraceCapacity)
    ));
}

#[test]
fn a_long_error_is_kept_cut() {
    let bus = Bus::builder().inline().trace(10).build().unwrap();
    let _sub = bus
        .subscriber::<u32>()
        .name("verbose")
        .subscribe(|_: &Envelope<u32>| Err::<(), _>("x".repeat(10_000)))
        .unwrap();
    let id = bus.publish(1_u32).unwrap().id;
    match &bus.explain(id).unwrap().steps[0].outcome {
        TraceOutcome::Failed {
            error,
            then: AfterFailure::Nothing,
            ..
        } => assert!(error.len() < 300 && error.starts_with("xxx"), "{} bytes", error.len()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn what_a_subscriber_held_when_it_left_is_explained_as_dropped() {
    let bus = Bus::builder().trace(100).build().unwrap();
    // On the topic's ring, and with a mailbox of its own (a filter gives it one).
    let on_ring = bus.subscriber::<u32>().name("ring").receiver().unwrap();
    let in_mailbox = bus
        .subscriber::<u32>()
        .name("mailbox")
        .filter(|_: &u32| true)
        .receiver()
        .unwrap();
    let ids: Vec<_> = (0..3_u32).map(|n| bus.publish(n).unwrap().id).collect();
    assert_eq!(*on_ring.recv().unwrap(), 0);
    drop(on_ring);
    drop(in_mailbox);

    let dropped = |name| {
        ids.iter()
            .map(|id| {
                bus.explain(*id)
                    .unwrap()
                    .steps_of(name)
                    .any(|s| *s == TraceOutcome::Dropped(DropReason::Unsubscribed))
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(dropped("ring"), [false, true, true], "event 0 was received");
    assert_eq!(dropped("mailbox"), [true, true, true]);
}

#[test]
fn what_shutdown_let_go_is_explained_as_dropped() {
    // One worker, held by `blocker`: `waiting`'s events stay queued until shutdown.
    let bus = Bus::builder().workers(1).trace(100).build().unwrap();
    let (started_tx, started) = std::sync::mpsc::channel();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let released = std::sync::Mutex::new(released);
    let _blocker = bus
        .subscriber::<Paid>()
        .name("blocker")
        .subscribe(move |_: &Envelope<Paid>| {
            started_tx.send(()).unwrap();
            let _ = released.lock().unwrap().recv();
        })
        .unwrap();
    let _waiting = bus
        .subscriber::<u32>()
        .name("waiting")
        .subscribe(|_: &Envelope<u32>| {})
        .unwrap();
    bus.publish(Paid(0)).unwrap();
    started.recv().unwrap();
    let ids: Vec<_> = (0..3_u32).map(|n| bus.publish(n).unwrap().id).collect();

    let stopper = bus.clone();
    let shutdown = std::thread::spawn(move || stopper.shutdown(Duration::from_millis(50)).unwrap());
    // Shutdown waits its 50 ms, then drops what is queued; only then is the worker let go.
    while !bus
        .stats()
        .subscriber("waiting")
        .is_some_and(|s| s.dropped.shutdown == 3)
    {
        std::thread::yield_now();
    }
    release.send(()).unwrap();
    let report = shutdown.join().unwrap();
    assert_eq!(report.pending, 3, "{report:?}");
    for id in ids {
        let steps: Vec<_> = bus.explain(id).unwrap().steps_of("waiting").cloned().collect();
        assert_eq!(steps, [TraceOutcome::Dropped(DropReason::Shutdown)]);
    }
}

#[test]
fn a_filter_that_panics_is_explained_as_a_failure() {
    let bus = Bus::builder().inline().trace(10).build().unwrap();
    let _picky = bus
        .subscriber::<u32>()
        .name("picky")
        .filter(|n: &u32| if *n == 13 { panic!("unlucky") } else { true })
        .subscribe(|_: &Envelope<u32>| {})
        .unwrap();
    let id = bus.publish(13_u32).unwrap().id;
    match &bus.explain(id).unwrap().steps_of("picky").collect::<Vec<_>>()[..] {
        [TraceOutcome::Failed {
            attempt: 1,
            took: None,
            error,
            then: AfterFailure::Nothing,
        }] => assert!(error.contains("unlucky"), "{error}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn concurrent_publishers_and_workers_lose_no_step() {
    common::with_deadline(Duration::from_secs(60), || {
        let bus = Bus::builder().workers(2).trace(10_000).build().unwrap();
        let subs: Vec<_> = (0..3)
            .map(|n| {
                bus.subscriber::<u32>()
                    .name(format!("s{n}"))
                    .subscribe(|_: &Envelope<u32>| {})
                    .unwrap()
            })
            .collect();
        let ids = Arc::new(Mutex::new(Vec::new()));
        let (publisher, sink) = (bus.clone(), ids.clone());
        common::on_threads(4, move |t| {
            for n in 0..500 {
                let id = publisher.publish((t * 1000 + n) as u32).unwrap().id;
                sink.lock().unwrap().push(id);
            }
        });
        bus.wait_idle(IDLE).unwrap();
        let ids = ids.lock().unwrap();
        assert_eq!(ids.len(), 2_000);
        for id in ids.iter() {
            let explained = bus.explain(*id).unwrap();
            let mut handled: Vec<&str> = explained
                .steps
                .iter()
                .filter(|s| matches!(s.outcome, TraceOutcome::Handled { attempt: 1, .. }))
                .map(|s| s.subscriber.as_str())
                .collect();
            handled.sort_unstable();
            assert_eq!(handled, ["s0", "s1", "s2"], "{explained}");
            assert_eq!(explained.steps.len(), 3, "{explained}");
        }
        drop(subs);
    });
}
