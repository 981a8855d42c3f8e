//! Promise 1: accepted means accounted. Every `Err` hands the event back; for every
//! subscriber `delivered + failed + dropped + queued == accepted` at quiet points.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::checker::{EventKey, History};
use common::{with_deadline, Probe, Token, FIVE_SECONDS};
use crier::{Bus, Dispatch, Envelope, Overflow, PublishError};

struct Ev {
    key: EventKey,
    _token: Token,
}

#[test]
fn fan_out_delivers_each_event_once_to_every_subscriber() {
    for subscribers in [1, 2, 16] {
        let bus = Bus::new();
        let history = Arc::new(History::new());
        let probe = Probe::default();
        let mut subs = Vec::new();
        for i in 0..subscribers {
            let name = format!("s{i}");
            let (h, n) = (history.clone(), name.clone());
            let sub = bus
                .subscriber::<Ev>()
                .name(&name)
                .subscribe(move |env: &Envelope<Ev>| h.delivered(&n, env.key))
                .unwrap();
            history.opened(&name, true);
            subs.push((name, sub));
        }
        for n in 0..2_000 {
            let key = EventKey { publisher: 0, n };
            history.publish(key, || {
                bus.publish(Ev {
                    key,
                    _token: probe.token(),
                })
                .map_err(drop)
            });
        }
        bus.wait_idle(FIVE_SECONDS).unwrap();
        for (name, sub) in &subs {
            let stats = sub.stats();
            assert_eq!(stats.delivered, 2_000, "{name}");
            history.final_stats(name, stats);
        }
        let report = history.check();
        report.assert_clean();
        assert_eq!(report.deliveries, 2_000 * subscribers);
        drop(subs);
        drop(bus);
        assert_eq!(probe.live(), 0, "every payload is dropped exactly once");
    }
}

#[test]
fn every_refused_publish_hands_the_event_back() {
    let probe = Probe::default();
    let bus = Bus::new();
    let full = bus
        .subscriber::<Token>()
        .capacity(1)
        .overflow(Overflow::Reject)
        .receiver()
        .unwrap();
    bus.publish(probe.token()).unwrap();
    assert_eq!(probe.live(), 1);

    let refused = bus.publish(probe.token()).unwrap_err();
    assert!(matches!(refused, PublishError::Full(_)));
    assert_eq!(probe.live(), 2, "the refused event is alive, in the error");
    let token = refused.into_event();
    drop(token);
    assert_eq!(probe.live(), 1);

    bus.shutdown(FIVE_SECONDS).unwrap();
    let closed = bus.publish(probe.token()).unwrap_err();
    assert!(matches!(closed, PublishError::Closed(_)));
    drop(closed);
    assert_eq!(probe.live(), 1, "only the accepted event, queued in the receiver");
    drop(full);
    assert_eq!(probe.live(), 0);
}

#[test]
fn timeout_hands_the_event_back() {
    let bus = Bus::new();
    let _full = bus.subscriber::<String>().capacity(1).receiver().unwrap();
    bus.publish("first".to_owned()).unwrap();
    let err = bus
        .publish_timeout("second".to_owned(), std::time::Duration::from_millis(20))
        .unwrap_err();
    assert!(matches!(err, PublishError::Timeout(_)));
    assert_eq!(err.into_event(), "second");
    let err = bus.try_publish("third".to_owned()).unwrap_err();
    assert!(matches!(err, PublishError::Full(_)));
    assert_eq!(err.event(), "third");
}

#[test]
fn unrouted_events_are_counted() {
    let bus = Bus::new();
    let receipt = bus.publish(7_u64).unwrap();
    assert_eq!(receipt.subscribers, 0);
    let filtered = bus.subscriber::<u64>().filter(|n| *n > 100).receiver().unwrap();
    bus.publish(8_u64).unwrap();
    bus.publish(800_u64).unwrap();
    let stats = bus.stats();
    let topic = stats.topic(std::any::type_name::<u64>()).unwrap();
    assert_eq!((topic.published, topic.unrouted), (3, 2));
    assert_eq!(filtered.stats().accepted, 1, "a filtered-out event is not accepted");
}

#[test]
fn identity_balances_for_every_policy_and_dispatch() {
    let bus = Bus::builder().workers(2).build().unwrap();
    let mut subs = Vec::new();
    for (i, overflow) in [
        Overflow::Block,
        Overflow::DropNewest,
        Overflow::DropOldest,
        Overflow::BlockTimeout(std::time::Duration::from_millis(1)),
    ]
    .into_iter()
    .enumerate()
    {
        for dispatch in [Dispatch::Pool, Dispatch::Thread, Dispatch::Inline] {
            let sub = bus
                .subscriber::<u32>()
                .name(format!("{overflow:?}-{dispatch:?}"))
                .capacity(8)
                .overflow(overflow)
                .dispatch(dispatch)
                .subscribe(move |env: &Envelope<u32>| -> Result<(), String> {
                    if **env % 7 == i as u32 {
                        return Err("every seventh fails".into());
                    }
                    Ok(())
                })
                .unwrap();
            subs.push(sub);
        }
    }
    let slow = bus
        .subscriber::<u32>()
        .capacity(8)
        .overflow(Overflow::DropOldest)
        .receiver()
        .unwrap();
    for n in 0..3_000_u32 {
        bus.publish(n).unwrap();
    }
    bus.wait_idle(FIVE_SECONDS).unwrap();
    for stats in bus.stats().subscribers {
        assert!(stats.is_balanced(), "{stats:?}");
        assert_eq!(stats.accepted, 3_000, "{}", stats.name);
        assert!(
            stats.failed > 0 || stats.consumer == crier::Consumer::Receiver,
            "{}",
            stats.name
        );
    }
    let lagged = slow.stats();
    assert_eq!(lagged.queued, 8);
    assert_eq!(lagged.dropped.oldest, 3_000 - 8);
}

#[test]
fn seq_is_gap_free_and_refused_publishes_take_no_number() {
    let bus = Bus::new();
    let rx = bus
        .subscriber::<u8>()
        .capacity(2)
        .overflow(Overflow::Reject)
        .receiver()
        .unwrap();
    assert_eq!(bus.publish(0_u8).unwrap().seq, 0);
    assert_eq!(bus.publish(1_u8).unwrap().seq, 1);
    assert!(bus.publish(2_u8).is_err());
    assert_eq!(rx.recv().unwrap().seq(), 0);
    assert_eq!(bus.publish(3_u8).unwrap().seq, 2, "the refused publish took no seq");
    let seqs: Vec<_> = rx.try_iter().map(|e| (e.seq(), *e)).collect();
    assert_eq!(seqs, vec![(1, 1), (2, 3)]);
}

#[test]
fn event_ids_are_unique_across_topics() {
    let bus = Bus::new();
    let a = bus.topic_named::<u8>("a").unwrap();
    let b = bus.topic_named::<u8>("b").unwrap();
    let mut ids = std::collections::HashSet::new();
    for _ in 0..100 {
        assert!(ids.insert(a.publish(1).unwrap().id));
        assert!(ids.insert(b.publish(1).unwrap().id));
        assert!(ids.insert(bus.publish(1_u8).unwrap().id));
    }
}

#[test]
fn threads_sharing_a_receiver_get_each_event_once() {
    const EVENTS: u64 = 20_000;
    let bus = Bus::builder().capacity(16).build().unwrap();
    let rx = Arc::new(bus.receiver::<u64>().unwrap());
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let rx = rx.clone();
            std::thread::spawn(move || rx.iter().map(|e| *e).collect::<Vec<u64>>())
        })
        .collect();
    let got = with_deadline(Duration::from_secs(30), move || {
        for n in 0..EVENTS {
            bus.publish(n).unwrap();
        }
        bus.shutdown(FIVE_SECONDS).unwrap();
        readers.into_iter().map(|r| r.join().unwrap()).collect::<Vec<_>>()
    });
    for mine in &got {
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "each reader sees topic order");
    }
    let mut all: Vec<u64> = got.concat();
    all.sort_unstable();
    assert_eq!(all, (0..EVENTS).collect::<Vec<_>>(), "every event exactly once");
    let stats = rx.stats();
    assert_eq!((stats.accepted, stats.delivered), (EVENTS, EVENTS));
}

#[test]
fn subscribers_of_every_kind_on_one_topic_each_get_every_event() {
    // Unfiltered pool and thread subscribers and receivers share the topic's ring; a
    // filtered one, an inline one and one larger than the ring keep mailboxes.
    with_deadline(Duration::from_secs(60), || {
        let bus = Bus::builder().capacity(64).build().unwrap();
        let subs = vec![
            bus.subscriber::<u32>().subscribe(|_: &Envelope<u32>| {}).unwrap(),
            bus.subscriber::<u32>()
                .dispatch(Dispatch::Thread)
                .subscribe(|_: &Envelope<u32>| {})
                .unwrap(),
            bus.subscriber::<u32>()
                .filter(|_| true)
                .subscribe(|_: &Envelope<u32>| {})
                .unwrap(),
            bus.subscriber::<u32>()
                .dispatch(Dispatch::Inline)
                .subscribe(|_: &Envelope<u32>| {})
                .unwrap(),
            bus.subscriber::<u32>()
                .capacity(5_000)
                .subscribe(|_: &Envelope<u32>| {})
                .unwrap(),
        ];
        let rx = bus.receiver::<u32>().unwrap();
        let reader = std::thread::spawn(move || {
            let got: Vec<u32> = (0..2_000).map(|_| *rx.recv().unwrap()).collect();
            (got, rx)
        });
        for n in 0..2_000_u32 {
            assert_eq!(bus.publish(n).unwrap().subscribers, 6);
        }
        let (got, rx) = reader.join().unwrap();
        assert_eq!(got, (0..2_000).collect::<Vec<_>>());
        assert!(rx.stats().is_balanced());
        bus.wait_idle(FIVE_SECONDS).unwrap();
        for sub in &subs {
            let stats = sub.stats();
            assert_eq!((stats.accepted, stats.delivered), (2_000, 2_000), "{stats:?}");
            assert!(stats.is_balanced(), "{stats:?}");
        }
        let topic = bus.stats();
        assert_eq!(topic.topic(std::any::type_name::<u32>()).unwrap().subscribers, 6);
    });
}
