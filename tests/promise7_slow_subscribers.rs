//! Promise 7: a full mailbox affects only its subscriber, as its overflow policy says;
//! drops are counted exactly; a receiver learns how many it missed.

mod common;

use std::time::Duration;

use common::{with_deadline, FIVE_SECONDS};
use crier::{Bus, Envelope, Overflow, PublishError, RecvError, TryRecvError};

#[test]
fn drop_newest_drops_for_the_full_subscriber_only() {
    let bus = Bus::new();
    let stalled = bus
        .subscriber::<u32>()
        .capacity(4)
        .overflow(Overflow::DropNewest)
        .receiver()
        .unwrap();
    let fast = bus.subscribe(|_: &Envelope<u32>| {}).unwrap();
    for n in 0..1_000_u32 {
        bus.publish(n).unwrap();
    }
    bus.wait_idle(FIVE_SECONDS).unwrap();
    let got: Vec<u32> = stalled.try_iter().map(|e| *e).collect();
    assert_eq!(got, vec![0, 1, 2, 3], "the first four, then the rest were dropped");
    let stats = stalled.stats();
    assert_eq!((stats.dropped.newest, stats.delivered, stats.high_water), (996, 4, 4));
    assert!(stats.is_balanced());
    assert_eq!(fast.stats().delivered, 1_000);
}

#[test]
fn drop_oldest_reports_exact_lag_like_tokio() {
    // tokio: capacity 4, send 1-4, read 1, send 5-8 => Lagged(3), then 5, 6, 7, 8.
    let bus = Bus::new();
    let rx = bus
        .subscriber::<u32>()
        .capacity(4)
        .overflow(Overflow::DropOldest)
        .receiver()
        .unwrap();
    for n in 1..=4_u32 {
        bus.publish(n).unwrap();
    }
    assert_eq!(*rx.recv().unwrap(), 1);
    for n in 5..=8_u32 {
        bus.publish(n).unwrap();
    }
    assert_eq!(rx.recv().unwrap_err(), RecvError::Lagged(3));
    let rest: Vec<u32> = (0..4).map(|_| *rx.recv().unwrap()).collect();
    assert_eq!(rest, vec![5, 6, 7, 8]);
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);

    // tokio: capacity 2, send 10, 20, 30 => Lagged(1), then 20, 30.
    let rx = bus
        .subscriber::<u64>()
        .capacity(2)
        .overflow(Overflow::DropOldest)
        .receiver()
        .unwrap();
    for n in [10_u64, 20, 30] {
        bus.publish(n).unwrap();
    }
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Lagged(1));
    assert_eq!(*rx.try_recv().unwrap(), 20);
    assert_eq!(*rx.try_recv().unwrap(), 30);
    let stats = rx.stats();
    assert_eq!((stats.dropped.oldest, stats.delivered), (1, 2));
}

#[test]
fn lag_is_per_receiver() {
    let bus = Bus::new();
    let small = bus
        .subscriber::<u8>()
        .capacity(1)
        .overflow(Overflow::DropOldest)
        .receiver()
        .unwrap();
    let big = bus
        .subscriber::<u8>()
        .capacity(8)
        .overflow(Overflow::DropOldest)
        .receiver()
        .unwrap();
    for n in 0..3_u8 {
        bus.publish(n).unwrap();
    }
    assert_eq!(small.recv().unwrap_err(), RecvError::Lagged(2));
    assert_eq!(*big.recv().unwrap(), 0);
}

#[test]
fn reject_refuses_the_whole_publish() {
    let bus = Bus::new();
    let strict = bus
        .subscriber::<u8>()
        .capacity(1)
        .overflow(Overflow::Reject)
        .receiver()
        .unwrap();
    let other = bus.receiver::<u8>().unwrap();
    bus.publish(1_u8).unwrap();
    assert!(matches!(bus.publish(2_u8), Err(PublishError::Full(2))));
    assert_eq!(
        other.try_iter().map(|e| *e).collect::<Vec<_>>(),
        vec![1],
        "nobody got the refused event"
    );
    let stats = strict.stats();
    assert_eq!((stats.accepted, stats.refused), (1, 1));
}

#[test]
fn block_waits_for_space_then_delivers() {
    with_deadline(Duration::from_secs(30), || {
        let bus = Bus::new();
        let rx = bus.subscriber::<u32>().capacity(1).receiver().unwrap();
        bus.publish(0_u32).unwrap();
        let publisher = {
            let bus = bus.clone();
            std::thread::spawn(move || bus.publish(1_u32).map(|r| r.seq))
        };
        // The publisher is blocked until a slot frees; receiving frees it.
        assert_eq!(*rx.recv().unwrap(), 0);
        assert_eq!(publisher.join().unwrap().unwrap(), 1);
        assert_eq!(*rx.recv().unwrap(), 1);
    });
}

#[test]
fn block_timeout_drops_for_that_subscriber_after_waiting() {
    let bus = Bus::new();
    let patient = bus
        .subscriber::<u32>()
        .capacity(1)
        .overflow(Overflow::BlockTimeout(Duration::from_millis(10)))
        .receiver()
        .unwrap();
    let other = bus.receiver::<u32>().unwrap();
    bus.publish(0_u32).unwrap();
    let receipt = bus.publish(1_u32).unwrap();
    assert_eq!(receipt.subscribers, 2, "accepted by both, then dropped by the full one");
    let stats = patient.stats();
    assert_eq!((stats.dropped.block_timeout, stats.queued), (1, 1));
    assert_eq!(other.try_iter().count(), 2);
    // A publish that may not wait drops at once instead.
    bus.try_publish(2_u32).unwrap();
    assert_eq!(patient.stats().dropped.block_timeout, 2);
}

#[test]
fn unbounded_mailboxes_never_drop_and_record_their_peak() {
    let bus = Bus::new();
    let rx = bus
        .subscriber::<u32>()
        .unbounded()
        .overflow(Overflow::Reject)
        .receiver()
        .unwrap();
    for n in 0..5_000_u32 {
        bus.publish(n).unwrap();
    }
    let stats = rx.stats();
    assert_eq!((stats.capacity, stats.queued, stats.high_water), (None, 5_000, 5_000));
}

#[test]
fn a_stalled_block_subscriber_does_not_stop_drop_policy_subscribers_of_other_topics() {
    with_deadline(Duration::from_secs(30), || {
        let bus = Bus::new();
        let _stalled = bus.subscriber::<u8>().capacity(1).receiver().unwrap();
        bus.publish(0_u8).unwrap(); // now full: u8 publishers would block
        let fast = bus.subscribe(|_: &Envelope<u16>| {}).unwrap();
        for n in 0..10_000_u16 {
            bus.publish(n).unwrap();
        }
        bus.wait_idle(FIVE_SECONDS).unwrap();
        assert_eq!(fast.stats().delivered, 10_000);
    });
}

#[test]
fn receivers_of_one_topic_each_keep_their_own_bound() {
    // Receivers with different capacities and policies share the topic's ring; each is
    // still bounded, and lags or blocks, by its own options.
    let bus = Bus::builder().capacity(64).build().unwrap();
    let small = bus.subscriber::<u32>().capacity(3).receiver().unwrap();
    let lossy = bus
        .subscriber::<u32>()
        .capacity(2)
        .overflow(Overflow::DropOldest)
        .receiver()
        .unwrap();
    let large = bus.subscriber::<u32>().capacity(50).receiver().unwrap();
    for n in 0..3_u32 {
        bus.try_publish(n).unwrap();
    }
    assert!(
        matches!(bus.try_publish(3_u32), Err(PublishError::Full(3))),
        "the receiver of capacity 3 is full"
    );
    assert_eq!((small.len(), lossy.len(), large.len()), (3, 2, 3));
    assert_eq!(*small.recv().unwrap(), 0);
    bus.try_publish(3_u32).unwrap();
    assert!(matches!(lossy.recv(), Err(RecvError::Lagged(2))));
    let lossy_got: Vec<u32> = lossy.try_iter().map(|e| *e).collect();
    let large_got: Vec<u32> = large.try_iter().map(|e| *e).collect();
    assert_eq!((lossy_got, large_got), (vec![2, 3], vec![0, 1, 2, 3]));
    for rx in [&small, &lossy, &large] {
        let stats = rx.stats();
        assert!(stats.is_balanced(), "{stats:?}");
        assert_eq!(stats.accepted, 4);
    }
    assert_eq!(small.stats().refused, 1);
    assert_eq!(lossy.stats().dropped.oldest, 2);
}

#[test]
fn a_receiver_larger_than_the_topic_ring_gets_everything() {
    // The topic's ring is sized by its first receiver; a later, larger one keeps a
    // mailbox of its own, and nothing about it changes for its user.
    let bus = Bus::builder().capacity(32).build().unwrap();
    let first = bus.receiver::<u32>().unwrap();
    let larger = bus.subscriber::<u32>().capacity(5_000).receiver().unwrap();
    for n in 0..2_000_u32 {
        bus.try_publish(n).unwrap_or_else(|_| {
            // `first` holds 32: drain it to make room.
            while first.try_recv().is_ok() {}
            bus.try_publish(n).unwrap()
        });
    }
    let got: Vec<u32> = larger.try_iter().map(|e| *e).collect();
    assert_eq!(got, (0..2_000).collect::<Vec<_>>());
    assert!(larger.stats().is_balanced());
    assert_eq!(larger.stats().high_water, 2_000);
}

#[test]
fn a_blocked_publisher_wakes_when_a_reader_makes_room() {
    let bus = Bus::new();
    let rx = bus.subscriber::<u32>().capacity(1).receiver().unwrap();
    bus.publish(0_u32).unwrap();
    let publisher = {
        let bus = bus.clone();
        std::thread::spawn(move || {
            for n in 1..=100_u32 {
                bus.publish(n).unwrap();
            }
        })
    };
    let got = with_deadline(FIVE_SECONDS, move || {
        let got: Vec<u32> = (0..=100).map(|_| *rx.recv().unwrap()).collect();
        publisher.join().unwrap();
        got
    });
    assert_eq!(got, (0..=100).collect::<Vec<_>>());
}

/// A pool subscriber whose handler holds its first event until `gate` opens.
fn gated_subscriber(
    bus: &Bus,
    capacity: usize,
    overflow: Overflow,
) -> (
    crier::Subscription,
    crossbeam_channel::Receiver<()>,
    crossbeam_channel::Sender<()>,
    crossbeam_channel::Receiver<u64>,
) {
    let (gate_tx, gate_rx) = crossbeam_channel::bounded::<()>(0);
    let (started_tx, started_rx) = crossbeam_channel::bounded(1);
    let (seen_tx, seen_rx) = crossbeam_channel::unbounded();
    let sub = bus
        .subscriber::<u32>()
        .capacity(capacity)
        .overflow(overflow)
        .subscribe(move |env: &Envelope<u32>| {
            if env.seq() == 0 {
                started_tx.send(()).unwrap();
                gate_rx.recv().unwrap();
            }
            seen_tx.send(env.seq()).unwrap();
        })
        .unwrap();
    (sub, started_rx, gate_tx, seen_rx)
}

#[test]
fn a_drop_oldest_push_subscriber_skips_to_the_newest_and_counts_the_rest() {
    with_deadline(Duration::from_secs(30), || {
        let bus = Bus::new();
        let (sub, started, gate, seen) = gated_subscriber(&bus, 4, Overflow::DropOldest);
        bus.publish(0_u32).unwrap();
        started.recv().unwrap();
        for n in 1..100_u32 {
            bus.publish(n).unwrap();
        }
        gate.send(()).unwrap();
        bus.wait_idle(FIVE_SECONDS).unwrap();
        let seen: Vec<u64> = seen.try_iter().collect();
        assert_eq!(seen, vec![0, 96, 97, 98, 99], "the one running, then the newest four");
        let stats = sub.stats();
        assert_eq!((stats.accepted, stats.delivered, stats.dropped.oldest), (100, 5, 95));
        assert_eq!(stats.queued, 0);
        assert!(stats.is_balanced(), "{stats:?}");
    });
}

#[test]
fn a_full_block_push_subscriber_refuses_try_publish_and_wakes_a_blocked_publish() {
    with_deadline(Duration::from_secs(30), || {
        let bus = Bus::new();
        let (sub, started, gate, seen) = gated_subscriber(&bus, 2, Overflow::Block);
        bus.publish(0_u32).unwrap();
        started.recv().unwrap();
        // The event being handled no longer takes room: two more fit.
        bus.publish(1_u32).unwrap();
        bus.publish(2_u32).unwrap();
        assert!(matches!(bus.try_publish(3_u32), Err(PublishError::Full(3))));
        let stats = sub.stats();
        assert_eq!((stats.queued, stats.refused), (2, 1), "{stats:?}");
        let publisher = {
            let bus = bus.clone();
            std::thread::spawn(move || bus.publish(4_u32).map(|r| r.seq))
        };
        gate.send(()).unwrap();
        assert_eq!(publisher.join().unwrap().unwrap(), 3, "the refused publish took no seq");
        bus.wait_idle(FIVE_SECONDS).unwrap();
        assert_eq!(seen.try_iter().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
        let stats = sub.stats();
        assert_eq!((stats.accepted, stats.delivered, stats.refused), (4, 4, 1));
        assert!(stats.is_balanced(), "{stats:?}");
    });
}
