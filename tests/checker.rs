//! Tests for the tests: the accounting checker must find each anomaly in a hand-built
//! history that has exactly that anomaly, and nothing in a clean one.

mod common;

use common::checker::{EventKey, History};
use crier::SubscriberStats;

fn key(publisher: u32, n: u64) -> EventKey {
    EventKey { publisher, n }
}

fn stats_for(accepted: u64, delivered: u64) -> SubscriberStats {
    // Built through a real bus, since the type is non-exhaustive.
    let bus = crier::Bus::builder().inline().build().unwrap();
    let sub = bus.subscriber::<u8>().unbounded().receiver().unwrap();
    for _ in 0..accepted {
        bus.publish(0_u8).unwrap();
    }
    for _ in 0..delivered {
        sub.try_recv().unwrap();
    }
    sub.stats()
}

fn history(accepted: &[EventKey], delivered: &[EventKey]) -> History {
    let h = History::new();
    h.opened("s", true);
    for &k in accepted {
        h.publish(k, || Ok::<(), ()>(()));
    }
    for &k in delivered {
        h.delivered("s", k);
    }
    h
}

#[test]
fn clean_history_is_clean() {
    let h = history(&[key(0, 0), key(0, 1)], &[key(0, 0), key(0, 1)]);
    h.final_stats("s", stats_for(2, 2));
    h.check().assert_clean();
}

#[test]
fn finds_lost_event() {
    let h = history(&[key(0, 0), key(0, 1)], &[key(0, 0)]);
    assert_eq!(h.check().lost, vec![("s".to_owned(), key(0, 1))]);
}

#[test]
fn finds_unexpected_and_refused_delivery() {
    let h = history(&[key(0, 0)], &[key(0, 0), key(9, 9)]);
    h.publish(key(0, 1), || Err::<(), ()>(()));
    h.delivered("s", key(0, 1));
    let unexpected: Vec<_> = h.check().unexpected.into_iter().map(|(_, k)| k).collect();
    assert_eq!(unexpected, vec![key(9, 9), key(0, 1)]);
}

#[test]
fn finds_duplicate_and_reordering() {
    let h = history(&[key(0, 0), key(0, 1)], &[key(0, 1), key(0, 0), key(0, 0)]);
    let report = h.check();
    assert_eq!(report.duplicated.len(), 1);
    assert_eq!(report.nonmonotonic.len(), 2);
}

#[test]
fn finds_late_delivery() {
    let h = history(&[key(0, 0)], &[]);
    h.closing("s");
    h.closed("s", stats_for(1, 1));
    h.delivered("s", key(0, 0));
    assert_eq!(h.check().late.len(), 1);
}

#[test]
fn finds_unbalanced_counters() {
    let h = history(&[key(0, 0)], &[key(0, 0)]);
    h.final_stats("s", stats_for(3, 2)); // 2 delivered by the stats, 1 logged
    assert_eq!(h.check().unbalanced.len(), 1);
    let h = history(&[key(0, 0)], &[key(0, 0)]);
    assert_eq!(h.check().unbalanced.len(), 1, "missing final counters must be reported");
}

#[test]
fn events_at_window_edges_are_not_counted_lost() {
    let h = History::new();
    h.publish(key(0, 0), || Ok::<(), ()>(())); // before the window
    h.opened("s", true);
    h.closing("s");
    h.publish(key(0, 1), || Ok::<(), ()>(())); // after it closed
    h.final_stats("s", stats_for(0, 0));
    h.check().assert_clean();
}

#[test]
fn queued_events_dropped_at_unsubscribe_are_not_lost_but_gaps_are() {
    // Events 1 and 2 were still queued at unsubscribe: dropped and counted, allowed.
    let h = history(&[key(0, 0), key(0, 1), key(0, 2)], &[key(0, 0)]);
    h.closing("s");
    h.closed("s", stats_with_unsubscribed_drops(3, 1, 2));
    h.check().assert_clean();

    // Event 1 is missing but 2 was delivered after it: a skip, not a tail drop.
    let h = history(&[key(0, 0), key(0, 1), key(0, 2)], &[key(0, 0), key(0, 2)]);
    h.closing("s");
    h.closed("s", stats_with_unsubscribed_drops(3, 2, 1));
    assert_eq!(h.check().lost, vec![("s".to_owned(), key(0, 1))]);

    // More missing than were dropped: lost.
    let h = history(&[key(0, 0), key(0, 1), key(0, 2)], &[key(0, 0)]);
    h.closing("s");
    h.closed("s", stats_with_unsubscribed_drops(2, 1, 1));
    assert_eq!(h.check().lost.len(), 2);
}

/// Counters of a subscriber that accepted `accepted`, delivered `delivered` and had
/// the rest dropped at unsubscribe. (`SubscriberStats` cannot be built by hand: take a
/// real receiver's and move its backlog to the unsubscribed count.)
fn stats_with_unsubscribed_drops(accepted: u64, delivered: u64, dropped: u64) -> SubscriberStats {
    let mut stats = stats_for(accepted, delivered);
    assert_eq!(stats.queued, dropped);
    stats.dropped.unsubscribed = stats.queued;
    stats.queued = 0;
    stats
}
