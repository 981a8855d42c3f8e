//! Property test: an `AckReceiver` under random publishes, receives, acks, nacks, drops
//! and clock moves behaves exactly like a small reference model of the ack protocol
//! (which delivery comes next, with which attempt number; retries after the backoff;
//! dead letters after the last attempt; at most `max_unacked` out; ordered retries hold
//! the line, unordered ones until `capacity` wait), and its counters balance after
//! every step; then `unsubscribe` returns the final counters (what was queued and the
//! waiting retries dropped, the handles still out `unacked`), after which a nack is
//! refused and an ack still settles. Both kinds: a lossless one reads its topic's broadcast ring (`Reject`:
//! a publish into a full one is refused), the other a mailbox of its own
//! (`DropNewest`).

use std::collections::VecDeque;
use std::time::Duration;

use crier::testing::ManualClock;
use crier::{AckError, AckHandle, Backoff, Bus, Overflow, Retry, SubscriberStats};
use proptest::prelude::*;

const BACKOFF: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
enum Op {
    Publish,
    TryRecv,
    Ack(usize),
    Nack(usize),
    Drop(usize),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Publish),
        4 => Just(Op::TryRecv),
        2 => any::<usize>().prop_map(Op::Ack),
        2 => any::<usize>().prop_map(Op::Nack),
        1 => any::<usize>().prop_map(Op::Drop),
        2 => (0_u64..1500).prop_map(Op::Advance),
    ]
}

#[derive(Debug, Clone, Copy)]
struct Config {
    ordered: bool,
    max_unacked: usize,
    max_attempts: u32,
    capacity: usize,
    /// `Reject`, on the ring; otherwise `DropNewest`, on a mailbox.
    on_ring: bool,
}

fn config() -> impl Strategy<Value = Config> {
    (any::<bool>(), 1_usize..=3, 1_u32..=3, 2_usize..=4, any::<bool>()).prop_map(
        |(ordered, max_unacked, max_attempts, capacity, on_ring)| Config {
            ordered,
            max_unacked,
            max_attempts,
            capacity,
            on_ring,
        },
    )
}

/// (event, attempt)
type Delivery = (u32, u32);

/// The reference model.
#[derive(Default)]
struct Model {
    queue: VecDeque<Delivery>,
    /// (due, failure order, delivery with its next attempt)
    retries: Vec<(Duration, u64, Delivery)>,
    failures: u64,
    out: Vec<Delivery>,
    now: Duration,
    accepted: u64,
    delivered: u64,
    retried: u64,
    dead_lettered: u64,
    dropped_newest: u64,
    dropped_unsubscribed: u64,
    refused: u64,
}

impl Model {
    /// Whether the publish is accepted.
    fn publish(&mut self, config: &Config, event: u32) -> bool {
        if self.queue.len() == config.capacity {
            if config.on_ring {
                self.refused += 1;
                return false;
            }
            self.dropped_newest += 1;
        } else {
            self.queue.push_back((event, 1));
        }
        self.accepted += 1;
        true
    }

    fn try_recv(&mut self, config: &Config) -> Option<Delivery> {
        if self.out.len() == config.max_unacked {
            return None;
        }
        let due = (0..self.retries.len())
            .filter(|&i| self.retries[i].0 <= self.now)
            .min_by_key(|&i| (self.retries[i].0, self.retries[i].1));
        let next = if let Some(i) = due {
            Some(self.retries.remove(i).2)
        } else {
            let hold_at = if config.ordered { 1 } else { config.capacity };
            if self.retries.len() >= hold_at {
                None
            } else {
                self.queue.pop_front()
            }
        };
        self.out.extend(next);
        next
    }

    fn ack(&mut self, i: usize) {
        self.out.remove(i);
        self.delivered += 1;
    }

    fn nack(&mut self, config: &Config, i: usize) {
        let (event, attempt) = self.out.remove(i);
        if attempt + 1 > config.max_attempts {
            self.dead_lettered += 1;
        } else {
            self.retries
                .push((self.now + BACKOFF, self.failures, (event, attempt + 1)));
            self.failures += 1;
            self.retried += 1;
        }
    }

    /// What is queued and what waits for a retry is dropped; handles out stay out.
    fn unsubscribe(&mut self) {
        self.dropped_unsubscribed += (self.queue.len() + self.retries.len()) as u64;
        self.queue.clear();
        self.retries.clear();
    }

    fn check(&self, stats: &SubscriberStats) {
        assert!(stats.is_balanced(), "identity broken: {stats:#?}");
        let actual = (
            stats.accepted,
            stats.delivered,
            stats.retried,
            stats.dead_lettered,
            stats.retrying,
            stats.unacked,
            stats.queued,
            stats.dropped.newest,
            stats.dropped.unsubscribed,
            stats.refused,
        );
        let expected = (
            self.accepted,
            self.delivered,
            self.retried,
            self.dead_lettered,
            self.retries.len() as u64,
            self.out.len() as u64,
            self.queue.len() as u64,
            self.dropped_newest,
            self.dropped_unsubscribed,
            self.refused,
        );
        assert_eq!(
            actual, expected,
            "(accepted, delivered, retried, dead_lettered, retrying, unacked, queued, dropped newest, dropped unsubscribed, refused)"
        );
    }
}

fn run(config: Config, ops: Vec<Op>) {
    let clock = ManualClock::new();
    let bus = Bus::builder().clock(clock.clone()).build().unwrap();
    let retry = if config.ordered {
        Retry::ordered()
    } else {
        Retry::unordered()
    };
    let rx = bus
        .subscriber::<u32>()
        .capacity(config.capacity)
        .overflow(if config.on_ring {
            Overflow::Reject
        } else {
            Overflow::DropNewest
        })
        .at_least_once(retry.max_attempts(config.max_attempts).backoff(Backoff::fixed(BACKOFF)))
        .max_unacked(config.max_unacked)
        .ack_receiver()
        .unwrap();
    let mut model = Model::default();
    let mut handles: Vec<AckHandle<u32>> = Vec::new();
    let mut next_event = 0_u32;
    for op in ops {
        match op {
            Op::Publish => {
                let accepted = bus.publish(next_event).is_ok();
                assert_eq!(accepted, model.publish(&config, next_event), "publish");
                next_event += 1;
            }
            Op::TryRecv => {
                let got = rx.try_recv().ok();
                let seen = got.as_ref().map(|h| (***h, h.attempt()));
                assert_eq!(seen, model.try_recv(&config), "try_recv");
                handles.extend(got);
            }
            Op::Ack(_) | Op::Nack(_) | Op::Drop(_) if handles.is_empty() => {}
            Op::Ack(i) => {
                let i = i % handles.len();
                handles.remove(i).ack();
                model.ack(i);
            }
            Op::Nack(i) => {
                let i = i % handles.len();
                handles.remove(i).nack().unwrap();
                model.nack(&config, i);
            }
            Op::Drop(i) => {
                let i = i % handles.len();
                drop(handles.remove(i));
                model.nack(&config, i);
            }
            Op::Advance(ms) => {
                clock.advance(Duration::from_millis(ms));
                model.now += Duration::from_millis(ms);
            }
        }
        model.check(&rx.stats());
    }
    model.unsubscribe();
    model.check(&rx.unsubscribe());
    // After the end, a nack cannot redeliver; an ack still settles (no error to see).
    for (i, handle) in handles.into_iter().enumerate() {
        match i % 2 {
            0 => assert_eq!(handle.nack(), Err(AckError::Unsubscribed)),
            _ => handle.ack(),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn an_ack_receiver_behaves_like_the_model(config in config(), ops in prop::collection::vec(op(), 1..80)) {
        run(config, ops);
    }
}
