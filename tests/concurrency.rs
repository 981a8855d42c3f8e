//! Keyed parallelism for one subscriber: `concurrency(n)` runs up to n handlers at
//! once, one event of a key at a time in `seq` order, and is one subscriber to its
//! user (stats, guard, dead letters).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use common::with_deadline;
use crier::testing::ManualClock;
use crier::{Backoff, Bus, Dispatch, Envelope, Overflow, Retry, SubscribeError};

const WAIT: Duration = Duration::from_secs(10);

/// Per key: the events handled, and whether one runs now.
type KeyLog = Arc<Mutex<HashMap<String, (Vec<u32>, bool)>>>;

/// Handlers running now, and the most ever at once.
#[derive(Default)]
struct Running {
    now: AtomicUsize,
    most: AtomicUsize,
}

impl Running {
    fn enter(&self) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

#[test]
fn n_handlers_run_at_once_on_the_pool_and_on_threads_of_their_own() {
    for dispatch in [Dispatch::Pool, Dispatch::Thread] {
        with_deadline(Duration::from_secs(60), move || {
            let bus = Bus::builder().workers(4).build().unwrap();
            // Each of the first 4 events waits for the other 3: only 4 handlers
            // running at once get past the barrier.
            let barrier = Arc::new(Barrier::new(4));
            let running = Arc::new(Running::default());
            let (gate, probe) = (barrier.clone(), running.clone());
            let sub = bus
                .subscriber::<u32>()
                .dispatch(dispatch)
                .concurrency(4)
                .subscribe(move |env: &Envelope<u32>| {
                    probe.enter();
                    if **env < 4 {
                        gate.wait();
                    }
                    probe.leave();
                })
                .unwrap();
            for n in 0..100_u32 {
                bus.publish(n).unwrap();
            }
            bus.wait_idle(WAIT).unwrap();
            assert_eq!(
                running.most.load(Ordering::SeqCst),
                4,
                "{dispatch:?}: never more than 4"
            );
            let stats = sub.stats();
            assert_eq!((stats.concurrency, stats.accepted, stats.delivered), (4, 100, 100));
            assert!(stats.is_balanced(), "{stats:?}");
        });
    }
}

#[test]
fn each_keys_events_run_one_at_a_time_in_order() {
    with_deadline(Duration::from_secs(60), || {
        let bus = Bus::builder().workers(4).build().unwrap();
        let keys = KeyLog::default();
        let probe = keys.clone();
        let sub = bus
            .subscriber::<u32>()
            .concurrency(4)
            .subscribe(move |env: &Envelope<u32>| {
                let key = env.key().unwrap().to_owned();
                {
                    let mut keys = probe.lock().unwrap();
                    let (_, running) = keys.entry(key.clone()).or_default();
                    assert!(!*running, "two events of {key} at once");
                    *running = true;
                }
                std::thread::yield_now();
                let mut keys = probe.lock().unwrap();
                let (seen, running) = keys.get_mut(&key).unwrap();
                seen.push(**env);
                *running = false;
            })
            .unwrap();
        for n in 0..200_u32 {
            for k in 0..16 {
                bus.message(n).key(format!("key-{k}")).publish().unwrap();
            }
        }
        bus.wait_idle(WAIT).unwrap();
        let keys = keys.lock().unwrap();
        assert_eq!(keys.len(), 16);
        for (key, (seen, _)) in keys.iter() {
            assert_eq!(*seen, (0..200).collect::<Vec<_>>(), "{key} in order");
        }
        // One subscriber to the bus: one entry, no group.
        let stats = bus.stats();
        assert_eq!((stats.subscribers.len(), stats.groups.len()), (1, 0));
        assert_eq!(stats.subscribers[0], sub.stats());
        assert_eq!(stats.subscribers[0].id, sub.id());
        assert!(sub.stats().is_balanced());
    });
}

#[test]
fn a_retry_holds_back_its_key_and_dead_letters_name_the_subscriber() {
    let clock = ManualClock::new();
    let bus = Bus::builder().clock(clock.clone()).workers(3).build().unwrap();
    let done = Arc::new(Mutex::new(Vec::new()));
    let log = done.clone();
    let sub = bus
        .subscriber::<u32>()
        .name("payments")
        .at_least_once(
            Retry::unordered()
                .max_attempts(2)
                .backoff(Backoff::fixed(Duration::from_secs(1))),
        )
        .concurrency(3)
        .subscribe(move |env: &Envelope<u32>| -> Result<(), String> {
            let key = env.key().unwrap_or("-").to_owned();
            match (key.as_str(), **env) {
                ("poison", _) => Err("always".into()),
                ("flaky", 0) if env.attempt() == 1 => Err("once".into()),
                _ => {
                    log.lock().unwrap().push((key, **env, env.attempt()));
                    Ok(())
                }
            }
        })
        .unwrap();
    for (key, n) in [("flaky", 0_u32), ("flaky", 1), ("poison", 0), ("calm", 0), ("calm", 1)] {
        bus.message(n).key(key).publish().unwrap();
    }
    // Idle under the manual clock: the retries wait, and "flaky" 1 waits behind one.
    bus.wait_idle(WAIT).unwrap();
    let calm: Vec<_> = done
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _, _)| k == "calm")
        .cloned()
        .collect();
    assert_eq!(calm, [("calm".to_owned(), 0, 1), ("calm".to_owned(), 1, 1)]);
    assert!(done.lock().unwrap().iter().all(|(k, _, _)| k == "calm"));
    assert_eq!(sub.stats().retrying, 2);

    clock.advance(Duration::from_secs(1));
    bus.wait_idle(WAIT).unwrap();
    let flaky: Vec<_> = done
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _, _)| k == "flaky")
        .cloned()
        .collect();
    assert_eq!(flaky, [("flaky".to_owned(), 0, 2), ("flaky".to_owned(), 1, 1)]);
    let stats = sub.stats();
    assert_eq!(
        (stats.accepted, stats.delivered, stats.retried, stats.dead_lettered),
        (5, 4, 2, 1),
        "{stats:?}"
    );
    assert!(stats.is_balanced(), "{stats:?}");
    // Nobody listens to dead letters: the subscriber's one store keeps it, and it
    // names the subscriber, whichever lane ran it.
    let dead = sub.dead_letters::<u32>().unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!((dead[0].subscriber(), dead[0].subscriber_id()), ("payments", sub.id()));
    assert_eq!(stats.dead_letters_kept, 1);
}

#[test]
fn unsubscribe_and_shutdown_account_for_everything() {
    with_deadline(Duration::from_secs(60), || {
        // Unsubscribe while both lanes hold an event and 8 wait: the lanes stop, what
        // waits is dropped and counted, and nothing runs after unsubscribe returns.
        let bus = Bus::builder().workers(2).build().unwrap();
        let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let ran = Arc::new(AtomicUsize::new(0));
        let (gate, count) = (open.clone(), ran.clone());
        let sub = bus
            .subscriber::<u32>()
            .concurrency(2)
            .subscribe(move |_: &Envelope<u32>| {
                while !gate.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
                count.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        for n in 0..10_u32 {
            bus.message(n).key(format!("{}", n % 5)).publish().unwrap();
        }
        while bus.stats().subscribers[0].queued > 8 {
            std::thread::yield_now();
        }
        let unsubscribing = std::thread::spawn(move || sub.unsubscribe());
        open.store(true, Ordering::SeqCst);
        let stats = unsubscribing.join().unwrap();
        let ran_then = ran.load(Ordering::SeqCst);
        assert_eq!(stats.delivered as usize, ran_then);
        assert!(ran_then >= 2, "the two running handlers finished");
        assert_eq!(stats.delivered + stats.dropped.unsubscribed, 10, "{stats:?}");
        assert!(stats.is_balanced(), "{stats:?}");
        assert!(bus.stats().subscribers.is_empty());
        bus.wait_idle(WAIT).unwrap();
        assert_eq!(ran.load(Ordering::SeqCst), ran_then, "nothing ran after unsubscribe");

        // Shutdown drains it.
        let bus = Bus::builder().workers(2).build().unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let count = ran.clone();
        let _sub = bus
            .subscriber::<u32>()
            .concurrency(3)
            .subscribe(move |_: &Envelope<u32>| {
                count.fetch_add(1, Ordering::SeqCst);
            })
            .unwrap();
        for n in 0..300_u32 {
            bus.message(n).key(format!("{}", n % 7)).publish().unwrap();
        }
        let report = bus.shutdown(WAIT).unwrap();
        assert!(report.drained);
        assert_eq!((report.delivered(), report.pending), (300, 0));
        assert_eq!(ran.load(Ordering::SeqCst), 300);
        assert!(report.stats.subscribers[0].is_balanced());
    });
}

#[test]
fn a_filter_screens_at_publish_and_its_panics_are_counted_and_reported() {
    let reported = Arc::new(AtomicUsize::new(0));
    let hook = reported.clone();
    let bus = Bus::builder()
        .on_error(move |_| {
            hook.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let handled = Arc::new(Mutex::new(Vec::new()));
    let log = handled.clone();
    let sub = bus
        .subscriber::<u32>()
        .filter(|n| {
            assert!(*n != 13, "unlucky");
            n % 2 == 0
        })
        .concurrency(3)
        .subscribe(move |env: &Envelope<u32>| log.lock().unwrap().push(**env))
        .unwrap();
    for n in 0..20_u32 {
        bus.publish(n).unwrap();
    }
    bus.wait_idle(WAIT).unwrap();
    let mut handled = handled.lock().unwrap().clone();
    handled.sort_unstable();
    assert_eq!(handled, (0..20).filter(|n| n % 2 == 0).collect::<Vec<_>>());
    let stats = sub.stats();
    // 10 even ones, and 13, whose filter panicked: accepted and failed.
    assert_eq!(
        (stats.accepted, stats.delivered, stats.failed),
        (11, 10, 1),
        "{stats:?}"
    );
    assert!(stats.is_balanced(), "{stats:?}");
    assert_eq!(reported.load(Ordering::SeqCst), 1, "the panic reached the error hook");
}

#[test]
fn concurrency_one_is_the_serial_subscriber_and_bad_options_are_typed_errors() {
    let bus = Bus::new();
    let serial = bus
        .subscriber::<u32>()
        .concurrency(1)
        .subscribe(|_: &Envelope<u32>| {})
        .unwrap();
    assert_eq!(serial.stats().concurrency, 1);
    let handler = |_: &Envelope<u32>| {};
    let refused = |result: Result<crier::Subscription, SubscribeError>| match result {
        Err(SubscribeError::InvalidPolicy { reason }) => reason,
        other => panic!("expected InvalidPolicy, got {other:?}"),
    };
    let sub = || bus.subscriber::<u32>();
    assert!(refused(sub().concurrency(0).subscribe(handler)).contains("at least 1"));
    assert!(refused(sub().dispatch(Dispatch::Inline).concurrency(2).subscribe(handler)).contains("inline"));
    assert!(refused(sub().group("g").concurrency(2).subscribe(handler)).contains("group"));
    assert!(refused(sub().overflow(Overflow::DropOldest).concurrency(2).subscribe(handler)).contains("DropOldest"));
    assert!(refused(sub().pattern("orders.>").concurrency(2).subscribe(handler)).contains("pattern"));
    assert!(refused(
        sub()
            .at_least_once(Retry::ordered())
            .dedup(crier::DedupWindow::new(16, Duration::from_secs(1)))
            .concurrency(2)
            .subscribe(handler)
    )
    .contains("dedup"));
    // On an inline bus, the lanes run on the pool.
    let inline = Bus::builder().inline().build().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let count = ran.clone();
    let _sub = inline
        .subscriber::<u32>()
        .concurrency(2)
        .subscribe(move |_: &Envelope<u32>| {
            count.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    inline.publish(1_u32).unwrap();
    inline.wait_idle(WAIT).unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert_eq!(bus.stats().subscribers.len(), 1, "nothing left behind by the refusals");
}
