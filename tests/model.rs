//! The bus against a reference model: random sequences of subscribe (receivers with
//! every overflow policy and small capacities), publish, receive and unsubscribe, on an
//! inline bus. After every step the outcome of the call and every receiver's counters
//! must equal the model's.

use std::collections::VecDeque;

use crier::{Bus, Overflow, PublishError, Receiver, TryRecvError};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Subscribe { overflow: Overflow, capacity: usize },
    Publish(u32),
    Recv(usize),
    Unsubscribe(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let overflow = prop_oneof![
        Just(Overflow::Block),
        Just(Overflow::Reject),
        Just(Overflow::DropNewest),
        Just(Overflow::DropOldest),
    ];
    prop_oneof![
        1 => (overflow, 1..4_usize).prop_map(|(overflow, capacity)| Op::Subscribe { overflow, capacity }),
        5 => any::<u32>().prop_map(Op::Publish),
        4 => (0..6_usize).prop_map(Op::Recv),
        1 => (0..6_usize).prop_map(Op::Unsubscribe),
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
}

#[derive(Debug, PartialEq)]
enum Outcome {
    Accepted(u64),
    Full,
    Event(u64, u32),
    Lagged(u64),
    Empty,
    Gone,
}

struct Model {
    receivers: Vec<ModelReceiver>,
    next_seq: u64,
}

impl Model {
    fn publish(&mut self, value: u32) -> Outcome {
        // Refused as a whole if a Block or Reject receiver is full (try_publish).
        let refuses = |r: &ModelReceiver| matches!(r.overflow, Some(Overflow::Block | Overflow::Reject)) && r.is_full();
        if self.receivers.iter().any(refuses) {
            return Outcome::Full;
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
        Outcome::Accepted(seq)
    }

    fn recv(&mut self, i: usize) -> Outcome {
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
            None => Outcome::Empty,
        }
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let bus = Bus::builder().inline().build().unwrap();
    let mut real: Vec<Receiver<u32>> = Vec::new();
    let mut model = Model {
        receivers: Vec::new(),
        next_seq: 0,
    };
    for op in ops {
        let (got, want) = match op {
            Op::Subscribe { overflow, capacity } => {
                real.push(
                    bus.subscriber::<u32>()
                        .capacity(capacity)
                        .overflow(overflow)
                        .receiver()
                        .unwrap(),
                );
                model.receivers.push(ModelReceiver {
                    overflow: Some(overflow),
                    capacity,
                    ..ModelReceiver::default()
                });
                continue;
            }
            Op::Publish(value) => {
                let got = match bus.try_publish(value) {
                    Ok(receipt) => Outcome::Accepted(receipt.seq),
                    Err(PublishError::Full(v)) => {
                        prop_assert_eq!(v, value, "the refused event comes back");
                        Outcome::Full
                    }
                    Err(other) => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
                };
                (got, model.publish(value))
            }
            Op::Recv(i) => {
                let got = match real.get(i).map(|r| r.try_recv()) {
                    None => Outcome::Gone,
                    Some(Ok(env)) => Outcome::Event(env.seq(), *env),
                    Some(Err(TryRecvError::Lagged(n))) => Outcome::Lagged(n),
                    Some(Err(TryRecvError::Empty)) => Outcome::Empty,
                    Some(Err(other)) => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
                };
                (got, model.recv(i))
            }
            Op::Unsubscribe(i) => {
                if i < real.len() {
                    let rx = real.remove(i);
                    let m = model.receivers.remove(i);
                    let stats = rx.stats();
                    drop(rx);
                    prop_assert_eq!(stats.queued, m.queue.len() as u64);
                }
                continue;
            }
        };
        prop_assert_eq!(got, want);
        for (rx, m) in real.iter().zip(&model.receivers) {
            let s = rx.stats();
            prop_assert_eq!(
                (s.accepted, s.delivered, s.dropped.newest, s.dropped.oldest, s.queued),
                (m.accepted, m.delivered, m.newest, m.oldest, m.queue.len() as u64)
            );
            prop_assert!(s.is_balanced());
        }
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
