//! Groups of ack receivers: each event to one member, acked once; a member that leaves
//! gives its waiting retries and its un-acked handles back to the group; the close
//! wakes every member; typed errors for what a member cannot be.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::checker::{EventKey, History};
use common::with_deadline;
use crier::testing::ManualClock;
use crier::{AckError, AckReceiver, Backoff, Bus, DropReason, Nack, Retry, SubscribeError, TraceOutcome, TryRecvError};

const WAIT: Duration = Duration::from_secs(10);

fn member(bus: &Bus, retry: Retry) -> AckReceiver<u32> {
    bus.subscriber::<u32>()
        .group("pickers")
        .at_least_once(retry)
        .ack_receiver()
        .unwrap()
}

/// Two members whose retries wait a minute on a manual clock that never moves, after
/// `events` events were published.
fn two_members_on_a_still_clock(retry: Retry, events: u32) -> (Bus, AckReceiver<u32>, AckReceiver<u32>) {
    let bus = Bus::builder().clock(ManualClock::new()).build().unwrap();
    let slow = retry.backoff(Backoff::fixed(Duration::from_secs(60)));
    let (a, b) = (member(&bus, slow), member(&bus, slow));
    for n in 0..events {
        bus.publish(n).unwrap();
    }
    (bus, a, b)
}

/// Takes what `rx` can hand out now, the handles kept.
fn take_now(rx: &AckReceiver<u32>) -> Vec<crier::AckHandle<u32>> {
    rx.try_iter().collect()
}

fn events(handles: &[crier::AckHandle<u32>]) -> Vec<(u32, u32)> {
    handles.iter().map(|h| (***h, h.attempt())).collect()
}

#[test]
fn members_share_the_stream_each_event_is_acked_once_and_the_close_wakes_them_all() {
    with_deadline(Duration::from_secs(60), || {
        let bus = Bus::new();
        let acked = Arc::new(AtomicU64::new(0));
        let members: Vec<_> = (0..3).map(|_| member(&bus, Retry::unordered())).collect();
        // Each member receives on a thread of its own until the close. Every 5th event
        // is nacked once: it comes back (attempt 2), to be acked then.
        let threads: Vec<_> = members
            .into_iter()
            .map(|rx| {
                let acked = acked.clone();
                std::thread::spawn(move || {
                    let mut mine = Vec::new();
                    for job in rx.iter() {
                        if **job % 5 == 0 && job.attempt() == 1 {
                            assert_eq!(job.nack().unwrap(), Nack::Retry { attempt: 2 });
                            continue;
                        }
                        mine.push(**job);
                        job.ack();
                        acked.fetch_add(1, Ordering::SeqCst);
                    }
                    (mine, rx.stats())
                })
            })
            .collect();
        for n in 0_u32..300 {
            bus.publish(n).unwrap();
        }
        // Receivers are driven by their owners: wait_idle does not wait for them.
        while acked.load(Ordering::SeqCst) < 300 {
            std::thread::yield_now();
        }
        // All three now block in recv on the group's queue: the close must wake each.
        let report = bus.shutdown(WAIT).unwrap();
        assert_eq!((report.pending, report.in_receivers, report.awaiting_retry), (0, 0, 0));
        let mut all = Vec::new();
        for thread in threads {
            let (mine, stats) = thread.join().unwrap();
            assert_eq!(stats.delivered, mine.len() as u64, "{stats:?}");
            assert!(stats.is_balanced(), "{stats:?}");
            all.extend(mine);
        }
        all.sort_unstable();
        assert_eq!(
            all,
            (0..300).collect::<Vec<_>>(),
            "each event acked once, by one member"
        );
        let group = report.stats.group("pickers").unwrap();
        assert!(group.receivers && group.is_balanced(), "{group:?}");
        assert_eq!((group.accepted, group.handed_out, group.handed_back), (300, 300, 0));
    });
}

#[test]
fn a_member_that_leaves_holding_unacked_deliveries_gives_them_to_the_group() {
    let bus = Bus::new();
    let leaver = member(&bus, Retry::ordered());
    let stayer = member(&bus, Retry::ordered());
    for n in 0_u32..6 {
        bus.publish(n).unwrap();
    }
    let mut held = leaver.try_iter().take(3).collect::<Vec<_>>().into_iter();
    let leaver_id = leaver.id();
    drop(leaver);
    // An ack after leaving still counts; a nack, or dropping the handle, gives the
    // event to the group at once, with its next attempt number.
    held.next().unwrap().ack();
    assert_eq!(held.next().unwrap().nack(), Ok(Nack::Retry { attempt: 2 }));
    drop(held.next().unwrap());
    let rest = take_now(&stayer);
    assert_eq!(events(&rest), [(3, 1), (4, 1), (5, 1), (1, 2), (2, 2)]);
    rest.into_iter().for_each(crier::AckHandle::ack);

    let stats = bus.stats();
    let group = stats.group("pickers").unwrap();
    assert_eq!((group.accepted, group.handed_out, group.handed_back), (6, 8, 2));
    assert!(group.is_balanced(), "{group:?}");
    let stayer_stats = stayer.stats();
    assert_eq!((stayer_stats.accepted, stayer_stats.delivered), (5, 5));
    assert!(stayer_stats.is_balanced(), "{stayer_stats:?}");
    assert!(
        stats.subscribers.iter().all(|s| s.id != leaver_id),
        "the leaver is gone"
    );
}

#[test]
fn a_leaving_members_waiting_retries_go_to_the_group_without_waiting_for_the_clock() {
    let (bus, leaver, stayer) = two_members_on_a_still_clock(Retry::ordered(), 2);
    let first = leaver.try_recv().unwrap();
    assert_eq!(first.nack(), Ok(Nack::Retry { attempt: 2 }));
    // Ordered: the retry holds the leaver's line, so event 1 waits in the group's queue.
    assert!(matches!(leaver.try_recv(), Err(TryRecvError::Empty)));
    assert_eq!(leaver.stats().retrying, 1);
    let left = {
        drop(leaver);
        bus.stats().group("pickers").unwrap().handed_back
    };
    assert_eq!(left, 1, "the waiting retry is given back");
    let handles = take_now(&stayer);
    assert_eq!(events(&handles), [(1, 1), (0, 2)], "the clock never moved");
    handles.into_iter().for_each(crier::AckHandle::ack);
    let stats = stayer.stats();
    assert_eq!((stats.accepted, stats.delivered, stats.retrying), (2, 2, 0));
    assert!(bus.stats().group("pickers").unwrap().is_balanced());
}

#[test]
fn once_the_last_member_left_a_nack_drops_the_event_and_says_so() {
    let bus = Bus::new();
    let only = member(&bus, Retry::ordered());
    for n in 0_u32..3 {
        bus.publish(n).unwrap();
    }
    let mut held = only.try_iter().take(2).collect::<Vec<_>>().into_iter();
    let id = only.id();
    let stats = only.stats();
    assert_eq!((stats.accepted, stats.unacked), (2, 2));
    drop(only);
    // The group dissolved: event 2, still queued, was dropped with it.
    assert!(bus.stats().group("pickers").is_none());
    assert_eq!(held.next().unwrap().nack(), Err(AckError::Unsubscribed));
    held.next().unwrap().ack();
    // A later member makes a new group and sees none of it.
    let next = member(&bus, Retry::ordered());
    assert!(matches!(next.try_recv(), Err(TryRecvError::Empty)));
    assert_ne!(next.id(), id);
}

#[test]
fn shutdown_reports_waiting_retries_and_a_later_nack_is_refused() {
    with_deadline(Duration::from_secs(60), || {
        let (bus, a, b) = two_members_on_a_still_clock(Retry::unordered(), 4);
        let waiting = a.try_recv().unwrap();
        assert_eq!(waiting.nack(), Ok(Nack::Retry { attempt: 2 }));
        let held = b.try_recv().unwrap();
        let report = bus.shutdown(WAIT).unwrap();
        assert_eq!(report.awaiting_retry, 1, "{report}");
        assert_eq!(report.in_receivers, 3, "events 2 and 3 queued, event 1 out: {report}");
        assert_eq!(held.nack(), Err(AckError::Closed));
        // What is queued can still be received; then both learn the close.
        let rest: Vec<u32> = a
            .iter()
            .chain(b.iter())
            .map(|job| {
                let n = **job;
                job.ack();
                n
            })
            .collect();
        assert_eq!(rest, [2, 3]);
        assert!(matches!(a.try_recv(), Err(TryRecvError::Closed)));
        assert!(matches!(b.try_recv(), Err(TryRecvError::Closed)));
        for stats in [a.stats(), b.stats()] {
            assert!(stats.is_balanced(), "{stats:?}");
        }
    });
}

/// A member left before the shutdown, and its handle was nacked after it: the group
/// would take the event back, but shutdown closed its queue. The event drops for the
/// shutdown, and the nack says the bus is shut down, not that the receiver left (the
/// group still existed).
#[test]
fn a_handle_nacked_after_the_shutdown_by_a_member_that_left_drops_for_the_shutdown() {
    let bus = Bus::builder().trace(100).build().unwrap();
    let leaver = bus
        .subscriber::<u32>()
        .name("leaver")
        .group("pickers")
        .at_least_once(Retry::ordered())
        .ack_receiver()
        .unwrap();
    let _stayer = member(&bus, Retry::ordered());
    bus.publish(7_u32).unwrap();
    let held = leaver.try_recv().unwrap();
    let id = held.id();
    drop(leaver);
    bus.shutdown(WAIT).unwrap();
    assert_eq!(held.nack(), Err(AckError::Closed));
    let explained = bus.explain(id).unwrap();
    let dropped: Vec<_> = explained
        .steps_of("leaver")
        .filter_map(|step| match step {
            TraceOutcome::Dropped(reason) => Some(*reason),
            _ => None,
        })
        .collect();
    assert_eq!(dropped, [DropReason::Shutdown], "{explained}");
}

#[test]
fn what_an_ack_member_cannot_be_is_a_typed_error() {
    let bus = Bus::new();
    let invalid = |result: Result<AckReceiver<u32>, SubscribeError>| match result {
        Err(SubscribeError::InvalidGroup { reason, .. }) => reason,
        other => panic!("expected InvalidGroup, got {other:?}"),
    };
    let ack = || bus.subscriber::<u32>().group("g").at_least_once(Retry::ordered());
    let reason = invalid(ack().key_affinity().ack_receiver());
    assert!(reason.contains("key affinity"), "{reason}");
    let reason = invalid(ack().filter(|n| *n > 1).ack_receiver());
    assert!(reason.contains("filter"), "{reason}");
    let _first = ack().capacity(8).ack_receiver().unwrap();
    let reason = invalid(ack().capacity(16).ack_receiver());
    assert!(reason.contains("capacity"), "{reason}");
    // A group is all push members, all receivers or all ack receivers.
    match bus.subscriber::<u32>().group("g").capacity(8).receiver() {
        Err(SubscribeError::InvalidGroup { reason, .. }) => assert!(reason.contains("ack receivers"), "{reason}"),
        other => panic!("expected InvalidGroup, got {other:?}"),
    }
    let _plain = bus.subscriber::<u32>().group("p").receiver().unwrap();
    let reason = invalid(
        bus.subscriber::<u32>()
            .group("p")
            .at_least_once(Retry::ordered())
            .ack_receiver(),
    );
    assert!(reason.contains("ack receivers"), "{reason}");
    // The per-receiver checks still come first.
    assert!(matches!(
        bus.subscriber::<u32>().group("g").ack_receiver(),
        Err(SubscribeError::InvalidPolicy { .. })
    ));
    assert!(matches!(
        ack().capacity(8).max_unacked(0).ack_receiver(),
        Err(SubscribeError::InvalidPolicy { .. })
    ));
    assert_eq!(bus.stats().group("g").unwrap().members, 1);
}

/// The checker over a group of ack receivers while members come and go and 4 threads
/// publish: each member acks what it takes, nacks every 7th event's first attempt, and
/// leaves holding two un-acked handles, nacked or dropped after it left. Every event
/// is acked exactly once across the group, none is lost, every counter balances.
#[test]
fn ack_groups_under_the_checker_as_members_leave_holding_deliveries() {
    with_deadline(Duration::from_secs(120), || {
        const PUBLISHERS: u32 = 4;
        const EACH: u64 = 2_000;
        let bus = Bus::new();
        let history = Arc::new(History::new());
        history.opened_group("pickers");
        let acked = Arc::new(AtomicU64::new(0));
        let join = {
            let bus = bus.clone();
            move || {
                bus.subscriber::<EventKey>()
                    .group("pickers")
                    .unbounded()
                    .max_unacked(4)
                    .at_least_once(Retry::unordered().backoff(Backoff::fixed(Duration::from_millis(1))))
                    .ack_receiver()
                    .unwrap()
            }
        };
        let ack = {
            let (history, acked) = (history.clone(), acked.clone());
            move |job: crier::AckHandle<EventKey>| {
                history.delivered("pickers", **job);
                job.ack();
                acked.fetch_add(1, Ordering::SeqCst);
            }
        };
        let settle = {
            let ack = ack.clone();
            move |job: crier::AckHandle<EventKey>| {
                if job.n % 7 == 0 && job.attempt() == 1 {
                    job.nack().unwrap();
                } else {
                    ack(job);
                }
            }
        };
        let anchor = join();
        let churn = {
            let (join, settle) = (join.clone(), settle.clone());
            let ack = ack.clone();
            std::thread::spawn(move || {
                (0..40_u32)
                    .map(|round| {
                        let member = join();
                        for _ in 0..20 {
                            match member.recv_timeout(Duration::from_millis(2)) {
                                Ok(job) => settle(job),
                                Err(_) => break,
                            }
                        }
                        let mut held: Vec<_> = member.try_iter().take(2).collect();
                        // Stable until the drop: only a recv moves anything, and this
                        // thread holds every handle.
                        let mut stats = member.stats();
                        drop(member);
                        // After leaving: the first acked, nacked or dropped (a nack),
                        // the second dropped. What is not acked goes to the group, as
                        // did the retries that waited.
                        let mut given = stats.retrying + held.len() as u64;
                        if let Some(first) = held.pop() {
                            match round % 3 {
                                0 => {
                                    ack(first);
                                    given -= 1;
                                    stats.delivered += 1;
                                }
                                1 => {
                                    let attempt = first.attempt() + 1;
                                    assert_eq!(first.nack(), Ok(Nack::Retry { attempt }));
                                }
                                _ => drop(first),
                            }
                        }
                        drop(held);
                        stats.handed_over += given;
                        stats.retrying = 0;
                        stats.unacked = 0;
                        stats
                    })
                    .collect::<Vec<_>>()
            })
        };
        let publishers = {
            let (bus, history) = (bus.clone(), history.clone());
            std::thread::spawn(move || {
                common::on_threads(PUBLISHERS as usize, move |p| {
                    for n in 0..EACH {
                        let key = EventKey { publisher: p as u32, n };
                        history.publish(key, || bus.publish(key).map_err(|_| ()));
                    }
                })
            })
        };
        publishers.join().unwrap();
        let mut members = churn.join().unwrap();
        // The anchor takes the rest: everything comes to it in the end.
        let total = u64::from(PUBLISHERS) * EACH;
        while acked.load(Ordering::SeqCst) < total {
            if let Ok(job) = anchor.recv_timeout(Duration::from_millis(10)) {
                settle(job);
            }
        }
        let stats = bus.stats();
        let group = stats.group("pickers").unwrap().clone();
        assert_eq!(group.accepted, total);
        assert!(group.handed_back > 0, "members left holding deliveries: {group:?}");
        let report = bus.shutdown(WAIT).unwrap();
        members.extend(
            report
                .stats
                .subscribers
                .iter()
                .filter(|s| s.group.as_deref() == Some("pickers"))
                .cloned(),
        );
        assert_eq!(members.len(), 41);
        history.final_group("pickers", group, members);
        history.check().assert_clean();
    });
}

#[test]
fn the_last_member_counts_its_waiting_retry_once_as_it_leaves() {
    let bus = Bus::builder().clock(ManualClock::new()).build().unwrap();
    let only = member(&bus, Retry::ordered().backoff(Backoff::fixed(Duration::from_secs(60))));
    for n in 0_u32..3 {
        bus.publish(n).unwrap();
    }
    let first = only.try_recv().unwrap();
    assert_eq!(first.nack(), Ok(Nack::Retry { attempt: 2 }));
    let held = only.try_recv();
    assert!(
        matches!(held, Err(TryRecvError::Empty)),
        "ordered: the retry holds the line"
    );
    let before = only.stats();
    assert_eq!((before.accepted, before.retried, before.retrying), (1, 1, 1));
    // Leaving dissolves the group: the retry is dropped where it waits, not given to
    // the group and taken back (which counted event 0 as accepted twice), and the
    // group's queue (events 1 and 2) is dropped as this member's.
    let last = only.unsubscribe();
    assert!(last.is_balanced(), "{last:?}");
    let counts = (last.accepted, last.retried, last.handed_over, last.dropped.unsubscribed);
    assert_eq!(counts, (3, 1, 0, 3), "{last:?}");
    assert_eq!((last.retrying, last.queued, last.unacked), (0, 0, 0));
}
