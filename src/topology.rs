//! What is wired to what: topics, subscribers and the causation links seen at run
//! time, for [`Bus::topology`](crate::Bus::topology), rendered as Mermaid or DOT.
//!
//! # Design
//!
//! The topics, subscribers and groups come from a stats snapshot. The causation links
//! are counted as they happen: when a handler publishes, the topic's seal (which
//! already reads the handler's delivery from the thread's context) adds one to the
//! link from that subscriber to its own topic. A link is found by a sharded map lookup
//! keyed by two integers, so a publish from a handler pays a read lock and an atomic
//! add, and a publish from outside pays nothing. At most [`MAX_LINKS`] links are kept
//! (one per subscriber and topic it published on); publishes on further links are
//! counted, not linked.

use std::collections::HashSet;
use std::fmt::{self, Write};
use std::hash::{BuildHasherDefault, Hasher};

use dashmap::DashMap;

use crate::delivery::Delivery;
use crate::pattern::Pattern;
use crate::policy::Overflow;
use crate::registry::TopicName;
use crate::stats::{BusStats, Consumer, GroupStats, SubscriberId, SubscriberStats, TopicStats};
use crate::sync::{AtomicU64, Ordering};

/// Links kept; see the module docs.
const MAX_LINKS: usize = 10_000;

/// Topics a rendering shows; [`Topology::page`] shows the others.
pub(crate) const RENDERED_TOPICS: usize = 100;

/// The causation links a bus has seen, counted.
#[derive(Default)]
pub(crate) struct Causation {
    /// By the publishing subscriber and the topic's id prefix.
    links: DashMap<(SubscriberId, u64), Link, BuildHasherDefault<PairHasher>>,
    unrecorded: AtomicU64,
}

struct Link {
    topic: TopicName,
    count: AtomicU64,
}

impl Causation {
    /// A handler of `by` published on `topic` (whose ids start with `prefix`).
    pub(crate) fn record(&self, by: SubscriberId, prefix: u64, topic: &TopicName) {
        if let Some(link) = self.links.get(&(by, prefix)) {
            link.count.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if self.links.len() >= MAX_LINKS {
            self.unrecorded.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let link = self.links.entry((by, prefix)).or_insert_with(|| Link {
            topic: topic.clone(),
            count: AtomicU64::new(0),
        });
        link.count.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> (Vec<CausationLink>, u64) {
        let mut links: Vec<CausationLink> = self
            .links
            .iter()
            .map(|entry| CausationLink {
                subscriber: entry.key().0,
                topic: entry.value().topic.to_string(),
                count: entry.value().count.load(Ordering::Relaxed),
            })
            .collect();
        links.sort_by(|a, b| (a.subscriber, &a.topic).cmp(&(b.subscriber, &b.topic)));
        (links, self.unrecorded.load(Ordering::Relaxed))
    }
}

/// FxHash's step for the links' integer keys: nobody outside the bus chooses them.
#[derive(Default)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }
}

/// A subscriber's handler published on a topic, `count` times so far.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct CausationLink {
    /// The subscriber whose handler published (it may have left since).
    pub subscriber: SubscriberId,
    /// The topic it published on.
    pub topic: String,
    /// How many events it published there.
    pub count: u64,
}

/// The shape of a bus: its topics, its subscribers with their policies, its groups and
/// patterns, and the causation links seen so far (which subscriber's handler published
/// on which topic, how often). See [`Bus::topology`](crate::Bus::topology).
///
/// [`to_mermaid`](Self::to_mermaid) and [`to_dot`](Self::to_dot) render it as text
/// for Mermaid or Graphviz, at most 100 topics at a time: a larger bus is rendered
/// page by page with [`page`](Self::page).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct Topology {
    /// Every topic, sorted by name.
    pub topics: Vec<TopicStats>,
    /// Every live subscriber and receiver (a pattern subscriber's `topic` is its
    /// pattern).
    pub subscribers: Vec<SubscriberStats>,
    /// Every consumer group.
    pub groups: Vec<GroupStats>,
    /// The causation links seen.
    pub links: Vec<CausationLink>,
    /// Publishes from handlers on links beyond the 10,000 the bus keeps.
    pub links_unrecorded: u64,
}

/// A node of a rendering: a shown topic (by its place among them) or a subscriber.
enum Node {
    Topic(usize),
    Subscriber(SubscriberId),
}

impl Topology {
    pub(crate) fn new(stats: BusStats, causation: &Causation) -> Topology {
        let (links, links_unrecorded) = causation.snapshot();
        Topology {
            topics: stats.topics,
            subscribers: stats.subscribers,
            groups: stats.groups,
            links,
            links_unrecorded,
        }
    }

    /// The topics `start..start + len` (in name order), the subscribers that hear
    /// them, and the links between those: to render a large bus one page at a time.
    pub fn page(&self, start: usize, len: usize) -> Topology {
        let end = start.saturating_add(len).min(self.topics.len());
        let topics = self.topics[start.min(end)..end].to_vec();
        let subscribers: Vec<SubscriberStats> = self
            .subscribers
            .iter()
            .filter(|s| {
                let hears = hearing(s);
                topics.iter().any(|t| hears(&t.name))
            })
            .cloned()
            .collect();
        let links = self
            .links
            .iter()
            .filter(|l| subscribers.iter().any(|s| s.id == l.subscriber) || topics.iter().any(|t| t.name == l.topic))
            .cloned()
            .collect();
        Topology {
            groups: self
                .groups
                .iter()
                .filter(|g| topics.iter().any(|t| t.name == g.topic))
                .cloned()
                .collect(),
            topics,
            subscribers,
            links,
            links_unrecorded: self.links_unrecorded,
        }
    }

    /// The topology as a Mermaid flowchart: topics as boxes, subscribers as rounded
    /// nodes labelled with their policies, an arrow from each topic to each subscriber
    /// that hears it, and a dotted arrow, labelled with its count, from a subscriber
    /// to each topic its handler published on. At most 100 topics; see
    /// [`page`](Self::page).
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        self.render(&mut out, &Mermaid).expect("writing to a String");
        out
    }

    /// The topology as a Graphviz DOT digraph, drawn as [`to_mermaid`](Self::to_mermaid)
    /// draws it. At most 100 topics; see [`page`](Self::page).
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph crier {\n  rankdir=LR;\n");
        self.render(&mut out, &Dot).expect("writing to a String");
        out.push_str("}\n");
        out
    }

    fn render(&self, out: &mut String, style: &dyn Style) -> fmt::Result {
        let shown = &self.topics[..self.topics.len().min(RENDERED_TOPICS)];
        if shown.len() < self.topics.len() {
            style.comment(
                out,
                &format!(
                    "{} of {} topics shown; Topology::page renders the others",
                    shown.len(),
                    self.topics.len()
                ),
            )?;
        }
        for (i, topic) in shown.iter().enumerate() {
            style.node(out, &Node::Topic(i), Shape::Topic, &topic_label(topic))?;
        }
        // Subscribers with a node already: a bus may have thousands.
        let mut drawn = HashSet::new();
        for sub in &self.subscribers {
            let hears = hearing(sub);
            let heard: Vec<usize> = (0..shown.len()).filter(|&i| hears(&shown[i].name)).collect();
            if heard.is_empty() {
                continue;
            }
            drawn.insert(sub.id);
            style.node(
                out,
                &Node::Subscriber(sub.id),
                Shape::Subscriber,
                &subscriber_label(sub),
            )?;
            for i in heard {
                style.edge(out, &Node::Topic(i), &Node::Subscriber(sub.id), None)?;
            }
        }
        for link in &self.links {
            let Some(to) = shown.iter().position(|t| t.name == link.topic) else {
                continue;
            };
            if drawn.insert(link.subscriber) {
                // It left, or hears no topic shown: a node of its own, named by id.
                let label = match self.subscribers.iter().find(|s| s.id == link.subscriber) {
                    Some(sub) => subscriber_label(sub),
                    None => format!("subscriber {} (gone)", link.subscriber.0),
                };
                style.node(out, &Node::Subscriber(link.subscriber), Shape::Subscriber, &label)?;
            }
            let label = format!("caused {}", link.count);
            style.edge(out, &Node::Subscriber(link.subscriber), &Node::Topic(to), Some(&label))?;
        }
        if self.links_unrecorded > 0 {
            style.comment(
                out,
                &format!("{} publishes on links beyond the 10,000 kept", self.links_unrecorded),
            )?;
        }
        Ok(())
    }
}

/// Which topic names `sub` hears: its own topic's, or a pattern's matches (parsed once,
/// not per topic).
fn hearing(sub: &SubscriberStats) -> impl Fn(&str) -> bool + '_ {
    let pattern = match is_topic_name(&sub.topic) {
        true => None,
        false => Pattern::parse(&sub.topic).ok(),
    };
    move |name| sub.topic == name || pattern.as_ref().is_some_and(|p| p.matches(name))
}

/// A pattern holds a wildcard token; a topic name never does.
fn is_topic_name(text: &str) -> bool {
    !text.split('.').any(|token| token == "*" || token == ">")
}

fn topic_label(topic: &TopicStats) -> String {
    let mut label = topic.name.clone();
    if topic.event_type != topic.name {
        let _ = write!(label, "\n{}", topic.event_type);
    }
    if topic.history_len > 0 {
        let _ = write!(label, "\nhistory: {} kept", topic.history_len);
    }
    label
}

fn subscriber_label(sub: &SubscriberStats) -> String {
    let consumer = match sub.consumer {
        Consumer::Handler(dispatch) => format!("{dispatch:?} handler").to_lowercase(),
        Consumer::Receiver => "receiver".to_owned(),
    };
    let delivery = match sub.delivery {
        Delivery::AtMostOnce => "at-most-once".to_owned(),
        Delivery::AtLeastOnce(retry) => match retry.attempts_limit() {
            Some(n) => format!("at-least-once, {n} attempts"),
            None => "at-least-once, unlimited attempts".to_owned(),
        },
    };
    let overflow = match sub.overflow {
        Overflow::BlockTimeout(timeout) => format!("BlockTimeout {timeout:?}"),
        other => format!("{other:?}"),
    };
    let mut label = format!("{}\n{consumer}, {delivery}\n{overflow}", sub.name);
    if let Some(capacity) = sub.capacity {
        let _ = write!(label, " {capacity}");
    }
    if let Some(group) = &sub.group {
        let _ = write!(label, "\ngroup {group}");
    }
    label
}

#[derive(Clone, Copy)]
enum Shape {
    Topic,
    Subscriber,
}

/// A text format's syntax for nodes, edges and comments.
trait Style {
    fn node(&self, out: &mut String, node: &Node, shape: Shape, label: &str) -> fmt::Result;
    fn edge(&self, out: &mut String, from: &Node, to: &Node, label: Option<&str>) -> fmt::Result;
    fn comment(&self, out: &mut String, text: &str) -> fmt::Result;
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Topic(i) => write!(f, "t{i}"),
            Node::Subscriber(id) => write!(f, "s{}", id.0),
        }
    }
}

struct Mermaid;

impl Mermaid {
    /// A quoted Mermaid label: entity codes for what would end or break it.
    fn quote(label: &str) -> String {
        let mut out = String::with_capacity(label.len() + 2);
        out.push('"');
        for c in label.chars() {
            match c {
                '"' => out.push_str("#quot;"),
                '<' => out.push_str("#lt;"),
                '>' => out.push_str("#gt;"),
                '#' => out.push_str("#35;"),
                '\n' => out.push_str("<br/>"),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }
}

impl Style for Mermaid {
    fn node(&self, out: &mut String, node: &Node, shape: Shape, label: &str) -> fmt::Result {
        let label = Mermaid::quote(label);
        match shape {
            Shape::Topic => writeln!(out, "  {node}[{label}]"),
            Shape::Subscriber => writeln!(out, "  {node}({label})"),
        }
    }

    fn edge(&self, out: &mut String, from: &Node, to: &Node, label: Option<&str>) -> fmt::Result {
        match label {
            None => writeln!(out, "  {from} --> {to}"),
            // Edge labels are the bus's own ("caused 12"): no quoting needed, which
            // every Mermaid version reads.
            Some(label) => writeln!(out, "  {from} -.->|{label}| {to}"),
        }
    }

    fn comment(&self, out: &mut String, text: &str) -> fmt::Result {
        writeln!(out, "  %% {}", text.replace('\n', " "))
    }
}

struct Dot;

impl Dot {
    /// A quoted DOT string.
    fn quote(label: &str) -> String {
        let mut out = String::with_capacity(label.len() + 2);
        out.push('"');
        for c in label.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }
}

impl Style for Dot {
    fn node(&self, out: &mut String, node: &Node, shape: Shape, label: &str) -> fmt::Result {
        let shape = match shape {
            Shape::Topic => "box",
            Shape::Subscriber => "ellipse",
        };
        writeln!(out, "  {node} [shape={shape}, label={}];", Dot::quote(label))
    }

    fn edge(&self, out: &mut String, from: &Node, to: &Node, label: Option<&str>) -> fmt::Result {
        match label {
            None => writeln!(out, "  {from} -> {to};"),
            Some(label) => writeln!(out, "  {from} -> {to} [style=dashed, label={}];", Dot::quote(label)),
        }
    }

    fn comment(&self, out: &mut String, text: &str) -> fmt::Result {
        writeln!(out, "  // {}", text.replace('\n', " "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_quoted_for_each_format() {
        assert_eq!(Mermaid::quote("a\"<b>#\nc"), "\"a#quot;#lt;b#gt;#35;<br/>c\"");
        assert_eq!(Dot::quote("a\"\\\nb"), "\"a\\\"\\\\\\nb\"");
    }

    #[test]
    fn links_are_counted_per_subscriber_and_topic_and_bounded() {
        let causation = Causation::default();
        let topic = TopicName::Type("t");
        causation.record(SubscriberId(1), 7, &topic);
        causation.record(SubscriberId(1), 7, &topic);
        causation.record(SubscriberId(2), 7, &topic);
        let (links, unrecorded) = causation.snapshot();
        let counts: Vec<_> = links.iter().map(|l| (l.subscriber.0, l.count)).collect();
        assert_eq!(counts, [(1, 2), (2, 1)]);
        assert_eq!(unrecorded, 0);
        for n in 0..MAX_LINKS as u64 {
            causation.record(SubscriberId(100 + n), 7, &topic);
        }
        assert_eq!(causation.snapshot().0.len(), MAX_LINKS);
        assert_eq!(causation.snapshot().1, 2, "the two that found no room");
    }
}
