//! The bus against a sequential reference model (a proptest state machine).
//!
//! Random sequences of: subscribe (receivers with every overflow policy and small
//! capacities; handlers inline or on the pool, failing on some values), publish,
//! try_publish, receive, unsubscribe, wait_idle and shutdown. After every step the
//! outcome of the call, the topic's counters and every subscriber's counters must equal
//! the model's, and the accounting identity must hold for every subscriber whose
//! counters are settled (all but pool handlers between a publish and the next
//! wait_idle, whose in-progress event is in no counter yet).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crier::{
    Bus, Dispatch, Overflow, PublishError, Receiver, SubscribeError, SubscriberStats, Subscription, TryRecvError,
};
use proptest::prelude::*;

/// Handlers fail (return `Err`) on multiples of this.
const FAILS_ON: u32 = 5;

/// Long enough for any step of a small model; reaching it is a failure, not a timing.
const PATIENCE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
enum Op {
    Receiver { overflow: Overflow, capacity: usize },
    Handler(Dispatch),
    Publish(u32),
    TryPublish(u32),
    Recv(usize),
    Unsubscribe(usize),
    UnsubscribeHandler(usize),
    WaitIdle,
    Shutdown,
}

fn op() -> impl Strategy<Value = Op> {
    let overflow = prop_oneof![
        Just(Overflow::Block),
        Just(Overflow::Reject),
        Just(Overflow::DropNewest),
        Just(Overflow::DropOldest),
    ];
    let dispatch = prop_oneof![Just(Dispatch::Inline), Just(Dispatch::Pool)];
    prop_oneof![
        2 => (overflow, 1..4_usize).prop_map(|(overflow, capacity)| Op::Receiver { overflow, capacity }),
        1 => dispatch.prop_map(Op::Handler),
        5 => (0..50_u32).prop_map(Op::Publish),
        3 => (0..50_u32).prop_map(Op::TryPublish),
        5 => (0..6_usize).prop_map(Op::Recv),
        1 => (0..6_usize).prop_map(Op::Unsubscribe),
        1 => (0..3_usize).prop_map(Op::UnsubscribeHandler),
        1 => Just(Op::WaitIdle),
        // Rare: everything after it runs against a closed bus.
        1 => prop::bool::weighted(0.2).prop_map(|now| if now { Op::Shutdown } else { Op::WaitIdle }),
    ]
}

/// What one receiver should hold and have counted.
#[derive(Debug, Default)]
struct ModelReceiver {
    overflow: Option<Overflow>,
    capacity: usize,
    queue: VecDeque<(u64, u32)>,
    lag: u64,
    accepted: u64,
    delivered: u64,
    newest: u64,
    oldest: u64,
}

impl ModelReceiver {
    fn is_full(&self) -> bool {
        self.queue.len() >= self.capacity
    }

    /// What a full mailbox does to a publish that may (`Block`) or may not wait.
    fn refusal(&self) -> Option<Outcome> {
        match self.overflow {
            Some(Overflow::Block) if self.is_full() => Some(Outcome::TimedOut),
            Some(Overflow::Reject) if self.is_full() => Some(Outcome::Full),
            _ => None,
        }
    }
}

/// What one handler should have seen: every value accepted for it, in order.
#[derive(Debug)]
struct ModelHandler {
    dispatch: Dispatch,
    seen: Vec<u32>,
}

impl ModelHandler {
    fn failed(&self) -> u64 {
        self.seen.iter().filter(|v| *v % FAILS_ON == 0).count() as u64
    }
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Accepted { seq: u64, subscribers: usize },
    Full,
    TimedOut,
    Closed,
    Event(u64, u32),
    Lagged(u64),
    Empty,
    Gone,
}

#[derive(Default)]
struct Model {
    receivers: Vec<ModelReceiver>,
    handlers: Vec<ModelHandler>,
    next_seq: u64,
    unrouted: u64,
    refused: u64,
    closed: bool,
}

impl Model {
    /// `may_wait`: `publish` (a full `Block` receiver times out) or `try_publish`
    /// (it is `Full`). The first full receiver in subscription order decides.
    fn publish(&mut self, value: u32, may_wait: bool) -> Outcome {
        let refusal = if self.closed {
            Some(Outcome::Closed)
        } else {
            self.receivers.iter().find_map(ModelReceiver::refusal).map(|r| match r {
                Outcome::TimedOut if !may_wait => Outcome::Full,
                other => other,
            })
        };
        if let Some(refusal) = refusal {
            self.refused += 1;
            return refusal;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        for r in &mut self.receivers {
            r.accepted += 1;
            match r.overflow {
                Some(Overflow::DropNewest) if r.is_full() => r.newest += 1,
                Some(Overflow::DropOldest) if r.is_full() => {
                    r.queue.pop_front();
                    r.queue.push_back((seq, value));
                    r.oldest += 1;
                    r.lag += 1;
                }
                _ => r.queue.push_back((seq, value)),
            }
        }
        for h in &mut self.handlers {
            h.seen.push(value);
        }
        let subscribers = self.receivers.len() + self.handlers.len();
        if subscribers == 0 {
            self.unrouted += 1;
        }
        Outcome::Accepted { seq, subscribers }
    }

    fn recv(&mut self, i: usize) -> Outcome {
        let closed = self.closed;
        let Some(r) = self.receivers.get_mut(i) else {
            return Outcome::Gone;
        };
        if r.lag > 0 {
            return Outcome::Lagged(std::mem::take(&mut r.lag));
        }
        match r.queue.pop_front() {
            Some((seq, value)) => {
                r.delivered += 1;
                Outcome::Event(seq, value)
            }
            None if closed => Outcome::Closed,
            None => Outcome::Empty,
        }
    }
}

/// A real handler subscriber and what it saw.
struct RealHandler {
    subscription: Subscription,
    seen: Arc<Mutex<Vec<u32>>>,
}

fn subscribe_handler(bus: &Bus, dispatch: Dispatch) -> Result<RealHandler, SubscribeError> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let subscription = bus.subscriber::<u32>().dispatch(dispatch).subscribe(move |env| {
        log.lock().unwrap().push(**env);
        if **env % FAILS_ON == 0 {
            Err("a multiple of FAILS_ON")
        } else {
            Ok(())
        }
    })?;
    Ok(RealHandler { subscription, seen })
}

fn publish_outcome(result: Result<crier::Receipt, PublishError<u32>>, value: u32) -> Result<Outcome, TestCaseError> {
    Ok(match result {
        Ok(receipt) => Outcome::Accepted {
            seq: receipt.seq,
            subscribers: receipt.subscribers,
        },
        Err(error) => {
            let outcome = match &error {
                PublishError::Full(_) => Outcome::Full,
                PublishError::Timeout(_) => Outcome::TimedOut,
                PublishError::Closed(_) => Outcome::Closed,
                other => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
            };
            prop_assert_eq!(error.into_event(), value, "the refused event comes back");
            outcome
        }
    })
}

/// The counters a handler must have once nothing of it is in flight.
fn check_settled_handler(stats: &SubscriberStats, model: &ModelHandler) -> Result<(), TestCaseError> {
    prop_assert!(stats.is_balanced(), "identity: {stats:?}");
    prop_assert_eq!(stats.accepted, model.seen.len() as u64);
    prop_assert_eq!(stats.failed + stats.delivered + stats.dropped.total(), stats.accepted);
    Ok(())
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let bus = Bus::builder().workers(2).build().unwrap();
    let mut receivers: Vec<Receiver<u32>> = Vec::new();
    let mut handlers: Vec<RealHandler> = Vec::new();
    let mut model = Model::default();
    for op in ops {
        let mut settled = false;
        match op {
            Op::Receiver { overflow, capacity } => {
                let made = bus.subscriber::<u32>().capacity(capacity).overflow(overflow).receiver();
                if model.closed {
                    prop_assert!(matches!(made, Err(SubscribeError::Closed)));
                    continue;
                }
                receivers.push(made.unwrap());
                model.receivers.push(ModelReceiver {
                    overflow: Some(overflow),
                    capacity,
                    ..ModelReceiver::default()
                });
            }
            Op::Handler(dispatch) => {
                let made = subscribe_handler(&bus, dispatch);
                if model.closed {
                    prop_assert!(matches!(made, Err(SubscribeError::Closed)));
                    continue;
                }
                handlers.push(made.unwrap());
                model.handlers.push(ModelHandler {
                    dispatch,
                    seen: Vec::new(),
                });
            }
            Op::Publish(value) => {
                // Waits only where a `Block` receiver is full, and nobody drains it
                // meanwhile: the timeout is the outcome, not a guess at timing.
                let got = publish_outcome(bus.publish_timeout(value, Duration::from_millis(1)), value)?;
                prop_assert_eq!(got, model.publish(value, true));
            }
            Op::TryPublish(value) => {
                let got = publish_outcome(bus.try_publish(value), value)?;
                prop_assert_eq!(got, model.publish(value, false));
            }
            Op::Recv(i) => {
                let got = match receivers.get(i).map(|r| r.try_recv()) {
                    None => Outcome::Gone,
                    Some(Ok(env)) => Outcome::Event(env.seq(), *env),
                    Some(Err(TryRecvError::Lagged(n))) => Outcome::Lagged(n),
                    Some(Err(TryRecvError::Empty)) => Outcome::Empty,
                    Some(Err(TryRecvError::Closed)) => Outcome::Closed,
                    Some(Err(other)) => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
                };
                prop_assert_eq!(got, model.recv(i));
            }
            Op::Unsubscribe(i) => {
                if i < receivers.len() {
                    let rx = receivers.remove(i);
                    let m = model.receivers.remove(i);
                    let stats = rx.stats();
                    drop(rx);
                    prop_assert_eq!(stats.queued, m.queue.len() as u64);
                }
            }
            Op::UnsubscribeHandler(i) => {
                if i < handlers.len() {
                    let real = handlers.remove(i);
                    let m = model.handlers.remove(i);
                    let stats = real.subscription.unsubscribe();
                    // A pool handler may not have reached every event: the rest were
                    // dropped as unsubscribed, and the identity still balances exactly.
                    check_settled_handler(&stats, &m)?;
                    let seen = real.seen.lock().unwrap().clone();
                    prop_assert_eq!(&seen[..], &m.seen[..seen.len()], "a prefix, in order");
                    prop_assert_eq!(stats.delivered + stats.failed, seen.len() as u64);
                }
            }
            Op::WaitIdle => {
                prop_assert_eq!(bus.wait_idle(PATIENCE), Ok(()));
                settled = true;
            }
            Op::Shutdown => {
                let report = bus.shutdown(PATIENCE).unwrap();
                prop_assert_eq!(report.pending, 0, "a graceful shutdown drains handlers");
                model.closed = true;
                settled = true;
            }
        }
        check_all(&bus, &receivers, &handlers, &model, settled)?;
    }
    Ok(())
}

/// The counters of every subscriber and of the topic against the model.
fn check_all(
    bus: &Bus,
    receivers: &[Receiver<u32>],
    handlers: &[RealHandler],
    model: &Model,
    settled: bool,
) -> Result<(), TestCaseError> {
    for (rx, m) in receivers.iter().zip(&model.receivers) {
        let s = rx.stats();
        prop_assert_eq!(
            (s.accepted, s.delivered, s.dropped.newest, s.dropped.oldest, s.queued),
            (m.accepted, m.delivered, m.newest, m.oldest, m.queue.len() as u64)
        );
        prop_assert!(s.is_balanced(), "identity: {s:?}");
    }
    for (real, m) in handlers.iter().zip(&model.handlers) {
        let s = real.subscription.stats();
        prop_assert_eq!(s.accepted, m.seen.len() as u64);
        if settled || m.dispatch == Dispatch::Inline {
            check_settled_handler(&s, m)?;
            prop_assert_eq!((s.failed, s.dropped.total()), (m.failed(), 0));
            prop_assert_eq!(&*real.seen.lock().unwrap(), &m.seen);
        }
    }
    if let Some(topic) = bus.stats().topic(std::any::type_name::<u32>()) {
        prop_assert_eq!(
            (topic.published, topic.unrouted, topic.refused),
            (model.next_seq, model.unrouted, model.refused)
        );
    } else {
        prop_assert_eq!(model.next_seq + model.refused, 0, "no topic, no publish");
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn the_bus_matches_the_model(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops)?;
    }
}
