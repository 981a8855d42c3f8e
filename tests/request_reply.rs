//! Request-reply: every reply reaches its own requester, one responder answers each
//! request, and every way a request can end without a reply is a typed error that
//! comes at once, not at the timeout.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{on_threads, with_deadline, Probe, Token};
use crier::{
    Backoff, Bus, Dispatch, Envelope, EventId, Overflow, PublishError, RequestError, Retry, SubscribeError,
    Subscription,
};

const WAIT: Duration = Duration::from_secs(10);
/// A timeout that no test here may reach: a request that ends sooner ended for its own
/// reason.
const NEVER: Duration = Duration::from_secs(600);

#[derive(Debug, PartialEq)]
struct Square(u64);
#[derive(Debug, PartialEq)]
struct Squared(u64);

fn squarer(bus: &Bus) -> Subscription {
    bus.respond(|q: &Envelope<Square>| Squared(q.0 * q.0)).unwrap()
}

/// Spins (yielding) until `cond` holds; fails after `WAIT`. For states that only the
/// stats show, such as "queued"; never a sleep standing in for one.
fn until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        thread::yield_now();
    }
}

/// Asks for the square of `n` on a thread of its own.
fn ask_in_background(bus: &Bus, n: u64) -> thread::JoinHandle<Result<Envelope<Squared>, RequestError<Square>>> {
    let bus = bus.clone();
    thread::spawn(move || bus.request::<Square, Squared>(Square(n), NEVER))
}

fn until_queued(bus: &Bus, requests: u64) {
    until(&format!("{requests} request(s) are queued"), || {
        bus.stats().group("responders").unwrap().queued == requests
    });
}

/// A responder on a thread of its own that says when it starts on a request and then
/// waits for a permit; the permits' sender is returned.
fn gated_responder(
    bus: &Bus,
    capacity: usize,
    overflow: Overflow,
) -> (Subscription, mpsc::Receiver<u64>, mpsc::Sender<()>) {
    let (started_tx, started) = mpsc::channel();
    let (permits, gate) = mpsc::channel::<()>();
    let (started_tx, gate) = (Mutex::new(started_tx), Mutex::new(gate));
    let sub = bus
        .subscriber::<Square>()
        .name("gated")
        .dispatch(Dispatch::Thread)
        .capacity(capacity)
        .overflow(overflow)
        .respond(move |q: &Envelope<Square>| {
            started_tx.lock().unwrap().send(q.0).unwrap();
            let _ = gate.lock().unwrap().recv();
            Squared(q.0 * q.0)
        })
        .unwrap();
    (sub, started, permits)
}

#[test]
fn a_reply_carries_the_request_as_its_cause() {
    let bus = Bus::new();
    let seen = Arc::new(Mutex::new(None));
    let log = seen.clone();
    let _responder = bus
        .respond(move |q: &Envelope<Square>| {
            *log.lock().unwrap() = Some((q.id(), q.correlation_id(), q.topic().to_owned()));
            Squared(q.0 * q.0)
        })
        .unwrap();
    let reply = bus.request::<Square, Squared>(Square(12), WAIT).unwrap();
    assert_eq!(*reply, Squared(144));
    let (request_id, correlation, topic) = seen.lock().unwrap().clone().unwrap();
    assert_eq!(reply.causation_id(), Some(request_id));
    assert_eq!(reply.correlation_id(), correlation);
    assert_eq!(correlation, request_id, "a root request correlates with itself");
    assert_eq!(topic, format!("{} (request)", std::any::type_name::<Square>()));
    assert_eq!(reply.topic(), format!("{} (reply)", std::any::type_name::<Squared>()));

    bus.wait_idle(WAIT).unwrap();
    let stats = bus.stats();
    let requests = stats.topic(&topic).unwrap();
    let replies = stats.topic(reply.topic()).unwrap();
    assert_eq!((requests.published, requests.unrouted), (1, 0));
    assert_eq!(
        (replies.published, replies.unrouted),
        (1, 0),
        "the requester is the reply's route"
    );
    let group = stats.group("responders").unwrap();
    assert_eq!((group.members, group.accepted, group.handed_out), (1, 1, 1));
    assert!(group.is_balanced());
    assert!(stats.subscribers.iter().all(|s| s.is_balanced()));
}

#[test]
fn concurrent_requesters_each_get_their_own_reply() {
    with_deadline(Duration::from_secs(60), || {
        let bus = Bus::new();
        let handled = Arc::new(AtomicU32::new(0));
        let _responders: Vec<Subscription> = (0..3)
            .map(|i| {
                let handled = handled.clone();
                bus.subscriber::<Square>()
                    .name(format!("responder-{i}"))
                    .dispatch(if i == 0 { Dispatch::Thread } else { Dispatch::Pool })
                    .respond(move |q: &Envelope<Square>| {
                        handled.fetch_add(1, Ordering::Relaxed);
                        Squared(q.0 * q.0)
                    })
                    .unwrap()
            })
            .collect();
        const REQUESTERS: usize = 4;
        const EACH: u64 = 250;
        let requester_bus = bus.clone();
        on_threads(REQUESTERS, move |t| {
            for n in 0..EACH {
                let q = (t as u64) * 1_000_000 + n;
                let reply = requester_bus.request::<Square, Squared>(Square(q), WAIT).unwrap();
                assert_eq!(reply.0, q * q, "requester {t} got another's reply");
            }
        });
        let total = REQUESTERS as u64 * EACH;
        assert_eq!(
            u64::from(handled.load(Ordering::Relaxed)),
            total,
            "each request answered once"
        );
        bus.wait_idle(WAIT).unwrap();
        let stats = bus.stats();
        let group = stats.group("responders").unwrap();
        assert_eq!((group.members, group.accepted, group.handed_out), (3, total, total));
        let delivered: u64 = stats.subscribers.iter().map(|s| s.delivered).sum();
        assert_eq!(delivered, total);
        assert!(stats.subscribers.iter().all(|s| s.is_balanced()));
    });
}

#[test]
fn requests_and_plain_events_of_one_type_do_not_meet() {
    let bus = Bus::builder().inline().build().unwrap();
    let plain = Arc::new(AtomicU32::new(0));
    let counter = plain.clone();
    let _plain = bus
        .subscribe(move |_: &Envelope<Square>| {
            counter.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
    let answered = Arc::new(AtomicU32::new(0));
    let counter = answered.clone();
    let _responder = bus
        .respond(move |q: &Envelope<Square>| {
            counter.fetch_add(1, Ordering::Relaxed);
            Squared(q.0)
        })
        .unwrap();
    for n in 0..5 {
        bus.request::<Square, Squared>(Square(n), WAIT).unwrap();
    }
    for n in 0..3 {
        bus.publish(Square(n)).unwrap();
    }
    bus.wait_idle(WAIT).unwrap();
    assert_eq!(plain.load(Ordering::Relaxed), 3, "plain subscribers see no request");
    assert_eq!(answered.load(Ordering::Relaxed), 5, "responders see no plain event");
}

#[test]
fn a_request_nobody_answers_is_handed_back() {
    let bus = Bus::new();
    let none = bus.request::<Square, Squared>(Square(3), NEVER);
    assert!(matches!(none, Err(RequestError::NoResponder(Square(3)))), "{none:?}");

    let responder = squarer(&bus);
    assert_eq!(bus.request::<Square, Squared>(Square(3), WAIT).unwrap().0, 9);
    drop(responder);
    let gone = bus.request::<Square, Squared>(Square(4), NEVER);
    let Err(error) = gone else {
        panic!("answered with no responder")
    };
    assert_eq!(
        error.to_string(),
        format!(
            "no responder for requests of type `{}`",
            std::any::type_name::<Square>()
        )
    );
    assert_eq!(error.into_query(), Some(Square(4)));
}

#[test]
fn a_request_type_has_one_reply_type() {
    let bus = Bus::new();
    let _responder = squarer(&bus);
    let other = bus.respond(|q: &Envelope<Square>| q.0.to_string());
    let Err(SubscribeError::ReplyTypeMismatch {
        existing, requested, ..
    }) = other
    else {
        panic!("a second reply type was accepted: {other:?}")
    };
    assert_eq!(
        (existing, requested),
        (std::any::type_name::<Squared>(), "alloc::string::String")
    );

    let asked = bus.request::<Square, String>(Square(2), NEVER);
    let Err(error) = asked else {
        panic!("a request for the wrong reply type was answered")
    };
    assert_eq!(
        error.to_string(),
        format!(
            "responders of `{}` reply with `{}`, not `alloc::string::String`",
            std::any::type_name::<Square>(),
            std::any::type_name::<Squared>()
        )
    );
    assert!(matches!(
        error,
        RequestError::ReplyTypeMismatch { query: Square(2), .. }
    ));
}

#[test]
fn a_failing_responder_is_the_requesters_typed_error() {
    let bus = Bus::new();
    let _failing = bus
        .try_respond(|q: &Envelope<Square>| -> Result<Squared, String> {
            match q.0 {
                0 => Err("zero is not allowed".into()),
                1 => panic!("one makes me panic"),
                n => Ok(Squared(n * n)),
            }
        })
        .unwrap();
    let err = bus.request::<Square, Squared>(Square(0), NEVER);
    assert!(
        matches!(&err, Err(RequestError::Failed(text)) if text == "zero is not allowed"),
        "{err:?}"
    );
    let panicked = bus.request::<Square, Squared>(Square(1), NEVER);
    assert!(
        matches!(&panicked, Err(RequestError::Failed(text)) if text == "one makes me panic"),
        "{panicked:?}"
    );
    assert_eq!(
        bus.request::<Square, Squared>(Square(5), WAIT).unwrap().0,
        25,
        "it goes on"
    );

    bus.wait_idle(WAIT).unwrap();
    let stats = bus.stats();
    let member = stats
        .subscribers
        .iter()
        .find(|s| s.group.as_deref() == Some("responders"))
        .unwrap();
    assert_eq!(
        (member.failed, member.delivered),
        (2, 1),
        "counted like any handler's failures"
    );
    assert!(member.is_balanced());
}

#[test]
fn an_at_least_once_responder_retries_and_reports_only_its_last_failure() {
    let bus = Bus::new();
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let log = attempts.clone();
    let _flaky = bus
        .subscriber::<Square>()
        .at_least_once(Retry::ordered().max_attempts(3).backoff(Backoff::fixed(Duration::ZERO)))
        .try_respond(move |q: &Envelope<Square>| -> Result<Squared, String> {
            log.lock().unwrap().push((q.0, q.attempt()));
            // 2 succeeds on its third attempt; 7 never does.
            if q.0 == 2 && q.attempt() == 3 {
                Ok(Squared(4))
            } else {
                Err(format!("attempt {} failed", q.attempt()))
            }
        })
        .unwrap();
    let reply = bus.request::<Square, Squared>(Square(2), NEVER).unwrap();
    assert_eq!(*reply, Squared(4));
    let poison = bus.request::<Square, Squared>(Square(7), NEVER);
    assert!(
        matches!(&poison, Err(RequestError::Failed(text)) if text == "attempt 3 failed"),
        "{poison:?}"
    );

    bus.wait_idle(WAIT).unwrap();
    assert_eq!(
        *attempts.lock().unwrap(),
        vec![(2, 1), (2, 2), (2, 3), (7, 1), (7, 2), (7, 3)]
    );
    let stats = bus.stats();
    let member = stats
        .subscribers
        .iter()
        .find(|s| s.group.as_deref() == Some("responders"))
        .unwrap();
    assert_eq!((member.delivered, member.dead_lettered, member.retried), (1, 1, 4));
}

#[test]
fn a_request_that_times_out_leaks_nothing_and_its_late_reply_is_unrouted() {
    with_deadline(Duration::from_secs(60), || {
        struct Slow(#[allow(dead_code)] Token);
        let bus = Bus::new();
        let (started_tx, started) = mpsc::channel();
        let (permits, gate) = mpsc::channel::<()>();
        let (started_tx, gate) = (Mutex::new(started_tx), Mutex::new(gate));
        let _slow = bus
            .subscriber::<Slow>()
            .dispatch(Dispatch::Thread)
            .respond(move |_: &Envelope<Slow>| {
                started_tx.lock().unwrap().send(()).unwrap();
                let _ = gate.lock().unwrap().recv();
                7_u8
            })
            .unwrap();
        let probe = Probe::default();
        let timeout = Duration::from_millis(20);
        let late = bus.request::<Slow, u8>(Slow(probe.token()), timeout);
        assert!(
            matches!(late, Err(RequestError::Timeout(t)) if t == timeout),
            "{late:?}"
        );
        started.recv().unwrap();
        permits.send(()).unwrap();
        bus.wait_idle(WAIT).unwrap();
        assert_eq!(probe.live(), 0, "the request is freed once handled");
        let stats = bus.stats();
        let replies = stats
            .topic(&format!("{} (reply)", std::any::type_name::<u8>()))
            .unwrap();
        assert_eq!(
            (replies.published, replies.unrouted),
            (1, 1),
            "nobody waited for the late reply"
        );
    });
}

#[test]
fn a_request_dropped_by_the_responders_overflow_is_unanswered_at_once() {
    with_deadline(Duration::from_secs(60), || {
        let bus = Bus::new();
        let (_responder, started, permits) = gated_responder(&bus, 1, Overflow::DropNewest);
        let first = ask_in_background(&bus, 1);
        assert_eq!(started.recv().unwrap(), 1, "the responder holds the first request");
        let second = ask_in_background(&bus, 2);
        until_queued(&bus, 1);
        // The queue is full: DropNewest drops the third, and its requester hears it now.
        let third = bus.request::<Square, Squared>(Square(3), NEVER);
        assert!(matches!(third, Err(RequestError::Unanswered)), "{third:?}");

        drop(permits);
        assert_eq!(first.join().unwrap().unwrap().0, 1);
        assert_eq!(second.join().unwrap().unwrap().0, 4);
        bus.wait_idle(WAIT).unwrap();
        let group = bus.stats().group("responders").unwrap().clone();
        assert_eq!((group.accepted, group.dropped.newest), (3, 1));
        assert!(group.is_balanced());
    });
}

#[test]
fn a_request_queued_when_the_last_responder_leaves_is_unanswered_at_once() {
    with_deadline(Duration::from_secs(60), || {
        let bus = Bus::new();
        // The only responder unsubscribes itself while it answers the first request,
        // so it is known to leave with the second one queued.
        let (started_tx, started) = mpsc::channel();
        let (permits, gate) = mpsc::channel::<()>();
        let (started_tx, gate) = (Mutex::new(started_tx), Mutex::new(gate));
        let itself: Arc<Mutex<Option<Subscription>>> = Arc::default();
        let slot = itself.clone();
        let responder = bus
            .subscriber::<Square>()
            .dispatch(Dispatch::Thread)
            .respond(move |q: &Envelope<Square>| {
                started_tx.lock().unwrap().send(q.0).unwrap();
                let _ = gate.lock().unwrap().recv();
                drop(slot.lock().unwrap().take());
                Squared(q.0 * q.0)
            })
            .unwrap();
        *itself.lock().unwrap() = Some(responder);
        let first = ask_in_background(&bus, 1);
        assert_eq!(started.recv().unwrap(), 1);
        let queued = ask_in_background(&bus, 2);
        until_queued(&bus, 1);
        permits.send(()).unwrap();
        assert_eq!(first.join().unwrap().unwrap().0, 1, "it answers the one it holds");
        let left = queued.join().unwrap();
        assert!(matches!(left, Err(RequestError::Unanswered)), "{left:?}");
        assert!(started.try_recv().is_err(), "the queued request never started");
    });
}

#[test]
fn shutdown_ends_waiting_requests_and_refuses_new_ones() {
    with_deadline(Duration::from_secs(60), || {
        let bus = Bus::new();
        let (_responder, started, permits) = gated_responder(&bus, 8, Overflow::Block);
        let first = ask_in_background(&bus, 1);
        started.recv().unwrap();
        let queued = ask_in_background(&bus, 2);
        until_queued(&bus, 1);
        // Abort drops what is queued; the responder still holds the first request.
        let report = bus.abort().unwrap();
        assert_eq!(report.dropped().shutdown, 1);
        let ended = queued.join().unwrap();
        assert!(matches!(ended, Err(RequestError::Shutdown)), "{ended:?}");

        let after = bus.request::<Square, Squared>(Square(3), NEVER);
        assert!(
            matches!(after, Err(RequestError::NotSent(PublishError::Closed(Square(3))))),
            "{after:?}"
        );

        // The running one ends either way: its reply, if the bus still took it, or the
        // shutdown; never a hang.
        drop(permits);
        match first.join().unwrap() {
            Ok(reply) => assert_eq!(reply.0, 1),
            Err(error) => assert!(matches!(error, RequestError::Shutdown), "{error:?}"),
        }
    });
}

#[test]
fn a_handler_may_request_and_a_responder_may_ask_another() {
    struct Total(u64);
    with_deadline(Duration::from_secs(60), || {
        let bus = Bus::new();
        let _squarer = squarer(&bus);
        // A responder that asks another responder: the chain shares one correlation.
        let weak = bus.downgrade();
        let _total = bus
            .subscriber::<Total>()
            .dispatch(Dispatch::Thread)
            .try_respond(move |q: &Envelope<Total>| -> Result<u64, String> {
                let bus = weak.upgrade().ok_or("no bus")?;
                let squared = bus
                    .request::<Square, Squared>(Square(q.0), WAIT)
                    .map_err(|e| e.to_string())?;
                assert_eq!(squared.correlation_id(), q.correlation_id());
                assert_eq!(squared.causation_id().map(|_| ()), Some(()));
                Ok(squared.0 + 1)
            })
            .unwrap();
        let seen: Arc<Mutex<Vec<(u64, EventId)>>> = Arc::default();
        let log = seen.clone();
        let weak = bus.downgrade();
        let _asker = bus
            .subscribe(move |env: &Envelope<u64>| {
                let bus = weak.upgrade().unwrap();
                let total = bus.request::<Total, u64>(Total(*env.event()), WAIT).unwrap();
                log.lock().unwrap().push((*total, total.correlation_id()));
            })
            .unwrap();
        let receipt = bus.publish(6_u64).unwrap();
        bus.wait_idle(WAIT).unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            vec![(37, receipt.id)],
            "one flow, correlated with its root"
        );
    });
}

#[test]
fn what_a_responder_cannot_be_is_a_typed_error() {
    let bus = Bus::new();
    let cases: Vec<(&str, Result<Subscription, SubscribeError>)> = vec![
        (
            "a named topic",
            bus.topic_named::<Square>("squares")
                .unwrap()
                .subscriber()
                .respond(|q: &Envelope<Square>| Squared(q.0)),
        ),
        (
            "a pattern",
            bus.subscriber::<Square>()
                .pattern("squares.>")
                .respond(|q: &Envelope<Square>| Squared(q.0)),
        ),
        (
            "a group",
            bus.subscriber::<Square>()
                .group("mine")
                .respond(|q: &Envelope<Square>| Squared(q.0)),
        ),
        (
            "a filter",
            bus.subscriber::<Square>()
                .filter(|q| q.0 > 1)
                .respond(|q: &Envelope<Square>| Squared(q.0)),
        ),
        (
            "a dedup window",
            bus.subscriber::<Square>()
                .at_least_once(Retry::ordered())
                .dedup(crier::DedupWindow::new(8, Duration::from_secs(1)))
                .respond(|q: &Envelope<Square>| Squared(q.0)),
        ),
        (
            "a start offset",
            bus.subscriber::<Square>()
                .start_at(crier::Offset::Earliest)
                .respond(|q: &Envelope<Square>| Squared(q.0)),
        ),
        (
            "inline dispatch",
            bus.subscriber::<Square>()
                .dispatch(Dispatch::Inline)
                .respond(|q: &Envelope<Square>| Squared(q.0)),
        ),
    ];
    for (what, result) in cases {
        match result {
            Err(e @ SubscribeError::InvalidResponder { .. }) => {
                assert!(e.to_string().starts_with("invalid responder: "), "{what}: {e}");
            }
            other => panic!("{what}: expected InvalidResponder, got {other:?}"),
        }
    }
    let none = bus.request::<Square, Squared>(Square(1), NEVER);
    assert!(
        matches!(none, Err(RequestError::NoResponder(_))),
        "a refused responder leaves nothing behind"
    );
    assert_eq!(bus.stats().subscribers.len(), 0);
}

#[test]
fn on_an_inline_bus_a_responder_runs_on_the_pool() {
    let bus = Bus::builder().inline().build().unwrap();
    let _responder = squarer(&bus);
    assert_eq!(bus.request::<Square, Squared>(Square(9), WAIT).unwrap().0, 81);
    let stats = bus.stats();
    assert_eq!(stats.subscribers[0].consumer, crier::Consumer::Handler(Dispatch::Pool));
}

#[test]
fn observers_see_requests_and_replies() {
    let bus = Bus::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let _audit = bus
        .observe_all(move |env: &crier::AnyEnvelope| log.lock().unwrap().push(env.topic().to_owned()))
        .unwrap();
    let _responder = squarer(&bus);
    bus.request::<Square, Squared>(Square(2), WAIT).unwrap();
    bus.wait_idle(WAIT).unwrap();
    let mut topics = seen.lock().unwrap().clone();
    topics.sort();
    assert_eq!(
        topics,
        vec![
            format!("{} (request)", std::any::type_name::<Square>()),
            format!("{} (reply)", std::any::type_name::<Squared>()),
        ]
    );
}
