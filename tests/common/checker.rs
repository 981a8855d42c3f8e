//! A Jepsen-style checker for the bus (RELIABILITY-PLAN.md, section 3).
//!
//! Publishers log every call with a ticket from one logical clock taken before and
//! after it; subscribers log every delivery; subscription windows are logged in the
//! same clock. The checker then classifies every anomaly: lost, unexpected (including
//! a delivery of a refused publish), duplicated, non-monotonic per publisher, late
//! (after unsubscribe returned), and accounting that does not balance. Every count
//! must come out at zero.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use crier::{GroupStats, SubscriberStats};
use parking_lot::Mutex;

/// What a test event carries so the checker can identify it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventKey {
    pub publisher: u32,
    pub n: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Refused,
}

#[derive(Debug, Clone, Copy)]
struct Publish {
    key: EventKey,
    start: u64,
    end: u64,
    outcome: Outcome,
}

#[derive(Debug, Clone, Default)]
struct Window {
    /// Ticket taken after subscribe returned.
    opened: u64,
    /// Ticket taken before unsubscribe was called (`None`: never).
    closing: Option<u64>,
    /// Ticket taken after unsubscribe returned.
    closed: Option<u64>,
    /// The subscriber cannot lose events (policy `Block` and not aborted).
    lossless: bool,
    /// A consumer group: its members run in parallel, so no order is checked.
    group: bool,
}

#[derive(Debug, Clone, Copy)]
struct Delivery {
    key: EventKey,
    ticket: u64,
}

/// The shared log of one test run.
#[derive(Default)]
pub struct History {
    clock: AtomicU64,
    publishes: Mutex<Vec<Publish>>,
    windows: Mutex<BTreeMap<String, Window>>,
    deliveries: Mutex<HashMap<String, Vec<Delivery>>>,
    finals: Mutex<BTreeMap<String, Finals>>,
}

/// The final counters of a subscriber, or of a group and every member it ever had.
#[derive(Debug, Clone)]
enum Finals {
    Subscriber(Box<SubscriberStats>),
    Group(GroupStats, Vec<SubscriberStats>),
}

impl Finals {
    fn teardown(&self) -> u64 {
        let dropped = |s: &SubscriberStats| s.dropped.unsubscribed + s.dropped.shutdown;
        match self {
            Finals::Subscriber(stats) => dropped(stats),
            Finals::Group(group, members) => {
                group.dropped.unsubscribed + group.dropped.shutdown + members.iter().map(dropped).sum::<u64>()
            }
        }
    }

    /// `None` when balanced and the handled count matches the `logged` deliveries.
    fn imbalance(&self, logged: usize) -> Option<String> {
        let handled = |s: &SubscriberStats| s.delivered + s.failed;
        match self {
            Finals::Subscriber(stats) => (!stats.is_balanced() || handled(stats) != logged as u64).then(|| {
                format!(
                    "accepted {} delivered {} failed {} dropped {} queued {}, {logged} deliveries logged",
                    stats.accepted,
                    stats.delivered,
                    stats.failed,
                    stats.dropped.total(),
                    stats.queued,
                )
            }),
            Finals::Group(group, members) => {
                let taken: u64 = members.iter().map(|s| s.accepted).sum();
                let handled: u64 = members.iter().map(handled).sum();
                let balanced = group.is_balanced() && members.iter().all(SubscriberStats::is_balanced);
                (!balanced || taken != group.handed_out || handled != logged as u64).then(|| {
                    format!("group {group:?}; members took {taken}, handled {handled}; {logged} deliveries logged")
                })
            }
        }
    }
}

impl History {
    pub fn new() -> Self {
        History::default()
    }

    pub fn tick(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::SeqCst)
    }

    /// Publishes through `publish` and logs the call.
    pub fn publish<R>(&self, key: EventKey, publish: impl FnOnce() -> Result<R, ()>) {
        let start = self.tick();
        let outcome = if publish().is_ok() {
            Outcome::Accepted
        } else {
            Outcome::Refused
        };
        let end = self.tick();
        self.publishes.lock().push(Publish {
            key,
            start,
            end,
            outcome,
        });
    }

    pub fn opened(&self, subscriber: &str, lossless: bool) {
        let opened = self.tick();
        self.windows.lock().insert(
            subscriber.to_owned(),
            Window {
                opened,
                lossless,
                ..Window::default()
            },
        );
    }

    /// A consumer group opened: log every member's deliveries under `group`, and end
    /// with [`final_group`](Self::final_group).
    pub fn opened_group(&self, group: &str) {
        let opened = self.tick();
        self.windows.lock().insert(
            group.to_owned(),
            Window {
                opened,
                lossless: true,
                group: true,
                ..Window::default()
            },
        );
    }

    /// A group's final counters, with those of every member it had (live ones and
    /// those that left).
    pub fn final_group(&self, group: &str, stats: GroupStats, members: Vec<SubscriberStats>) {
        self.finals
            .lock()
            .insert(group.to_owned(), Finals::Group(stats, members));
    }

    /// Call just before unsubscribing.
    pub fn closing(&self, subscriber: &str) {
        let t = self.tick();
        if let Some(w) = self.windows.lock().get_mut(subscriber) {
            w.closing = Some(t);
        }
    }

    /// Call just after unsubscribe returned, with its final counters.
    pub fn closed(&self, subscriber: &str, stats: SubscriberStats) {
        let t = self.tick();
        if let Some(w) = self.windows.lock().get_mut(subscriber) {
            w.closed = Some(t);
        }
        self.finals
            .lock()
            .insert(subscriber.to_owned(), Finals::Subscriber(Box::new(stats)));
    }

    /// Records the final counters of a subscriber that stays subscribed.
    pub fn final_stats(&self, subscriber: &str, stats: SubscriberStats) {
        self.finals
            .lock()
            .insert(subscriber.to_owned(), Finals::Subscriber(Box::new(stats)));
    }

    /// Call from the handler.
    pub fn delivered(&self, subscriber: &str, key: EventKey) {
        let ticket = self.tick();
        self.deliveries
            .lock()
            .entry(subscriber.to_owned())
            .or_default()
            .push(Delivery { key, ticket });
    }

    pub fn check(&self) -> Report {
        let publishes = self.publishes.lock().clone();
        let windows = self.windows.lock().clone();
        let deliveries = self.deliveries.lock().clone();
        let finals = self.finals.lock().clone();
        check(&publishes, &windows, &deliveries, &finals)
    }
}

/// Every anomaly found, by kind. `is_clean` when all are empty.
#[derive(Debug, Default)]
pub struct Report {
    pub lost: Vec<(String, EventKey)>,
    pub unexpected: Vec<(String, EventKey)>,
    pub duplicated: Vec<(String, EventKey)>,
    pub nonmonotonic: Vec<(String, EventKey)>,
    pub late: Vec<(String, EventKey)>,
    pub unbalanced: Vec<String>,
    pub deliveries: usize,
}

impl Report {
    pub fn is_clean(&self) -> bool {
        self.lost.is_empty()
            && self.unexpected.is_empty()
            && self.duplicated.is_empty()
            && self.nonmonotonic.is_empty()
            && self.late.is_empty()
            && self.unbalanced.is_empty()
    }

    #[track_caller]
    pub fn assert_clean(&self) {
        assert!(self.is_clean(), "the checker found anomalies:\n{self}");
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let first = |v: &[(String, EventKey)]| v.iter().take(5).map(|(s, k)| format!("{s}:{k:?}")).collect::<Vec<_>>();
        writeln!(f, "lost {} {:?}", self.lost.len(), first(&self.lost))?;
        writeln!(f, "unexpected {} {:?}", self.unexpected.len(), first(&self.unexpected))?;
        writeln!(f, "duplicated {} {:?}", self.duplicated.len(), first(&self.duplicated))?;
        writeln!(
            f,
            "nonmonotonic {} {:?}",
            self.nonmonotonic.len(),
            first(&self.nonmonotonic)
        )?;
        writeln!(f, "late {} {:?}", self.late.len(), first(&self.late))?;
        writeln!(f, "unbalanced {:?}", self.unbalanced)?;
        write!(f, "({} deliveries checked)", self.deliveries)
    }
}

fn check(
    publishes: &[Publish],
    windows: &BTreeMap<String, Window>,
    deliveries: &HashMap<String, Vec<Delivery>>,
    finals: &BTreeMap<String, Finals>,
) -> Report {
    let mut report = Report::default();
    let outcome: HashMap<EventKey, Outcome> = publishes.iter().map(|p| (p.key, p.outcome)).collect();
    let empty = Vec::new();
    for (name, window) in windows {
        let got = deliveries.get(name).unwrap_or(&empty);
        report.deliveries += got.len();
        let mut seen = HashSet::new();
        let mut last: HashMap<u32, u64> = HashMap::new();
        for d in got {
            if outcome.get(&d.key) != Some(&Outcome::Accepted) {
                report.unexpected.push((name.clone(), d.key));
            }
            if !seen.insert(d.key) {
                report.duplicated.push((name.clone(), d.key));
            }
            if let Some(&prev) = last.get(&d.key.publisher) {
                if d.key.n <= prev && !window.group {
                    report.nonmonotonic.push((name.clone(), d.key));
                }
            }
            let newest = last.get(&d.key.publisher).map_or(d.key.n, |&n| n.max(d.key.n));
            last.insert(d.key.publisher, newest);
            if window.closed.is_some_and(|closed| d.ticket > closed) {
                report.late.push((name.clone(), d.key));
            }
        }
        if window.lossless {
            // Events still queued when the subscriber left are dropped and counted
            // (promise 6), so a lossless subscriber may miss up to that many, and only
            // the newest of each publisher: a queue drops its tail, never a middle.
            let teardown = finals.get(name).map_or(0, Finals::teardown);
            let missing: Vec<EventKey> = publishes
                .iter()
                .filter(|p| p.outcome == Outcome::Accepted)
                .filter(|p| p.start > window.opened && window.closing.map_or(true, |c| p.end < c))
                .map(|p| p.key)
                .filter(|key| !seen.contains(key))
                .collect();
            let skipped = |key: &EventKey| last.get(&key.publisher).is_some_and(|&n| n > key.n);
            if missing.len() as u64 > teardown {
                report.lost.extend(missing.iter().map(|&key| (name.clone(), key)));
            } else {
                report
                    .lost
                    .extend(missing.iter().filter(|k| skipped(k)).map(|&key| (name.clone(), key)));
            }
        }
        match finals.get(name).map(|f| f.imbalance(got.len())) {
            Some(None) => {}
            Some(Some(imbalance)) => report.unbalanced.push(format!("{name}: {imbalance}")),
            None => report.unbalanced.push(format!("{name}: no final counters recorded")),
        }
    }
    report
}
