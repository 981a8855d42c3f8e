//! `Bus::topology`: what it lists, the causation links it counts, how it renders as
//! Mermaid and DOT, and that a bus of thousands of topics renders page by page.

use std::time::Duration;

use crier::{Bus, Envelope, Overflow, Retry, Subscription};

#[derive(Debug)]
struct Paid(u32);

#[derive(Debug)]
struct Shipped;

const IDLE: Duration = Duration::from_secs(10);

/// Orders are paid (by `payment`), paid orders shipped (by a group of two shippers),
/// and an audit receiver hears every `orders.*` topic.
fn shop(bus: &Bus) -> Vec<Subscription> {
    let payer = bus.clone();
    let mut subs = vec![bus
        .subscriber::<u32>()
        .name("payment")
        .at_least_once(Retry::ordered().max_attempts(3))
        .subscribe(move |order: &Envelope<u32>| payer.publish(Paid(**order)).map(|_| ()))
        .unwrap()];
    for n in 0..2 {
        let shipper = bus.clone();
        subs.push(
            bus.subscriber::<Paid>()
                .name(format!("shipper-{n}"))
                .group("shipping")
                .subscribe(move |paid: &Envelope<Paid>| {
                    // Order 0 ships twice: two links' worth from one event.
                    let parcels = if paid.0 == 0 { 2 } else { 1 };
                    for _ in 0..parcels {
                        shipper.publish(Shipped).unwrap();
                    }
                })
                .unwrap(),
        );
    }
    subs
}

#[test]
fn the_topology_lists_the_wiring_and_counts_the_links_seen() {
    let bus = Bus::new();
    let _shop = shop(&bus);
    let _audit = bus
        .subscriber::<u32>()
        .name("audit")
        .pattern("orders.*")
        .overflow(Overflow::DropOldest)
        .capacity(64)
        .receiver()
        .unwrap();
    bus.topic_named::<u32>("orders.eu").unwrap().publish(1).unwrap();
    bus.topic_named::<u32>("orders.us").unwrap().publish(2).unwrap();
    for order in 0..3_u32 {
        bus.publish(order).unwrap();
    }
    bus.wait_idle(IDLE).unwrap();

    let topology = bus.topology();
    let names: Vec<&str> = topology.topics.iter().map(|t| t.name.as_str()).collect();
    for topic in ["u32", "orders.eu", "orders.us", "topology::Paid", "topology::Shipped"] {
        assert!(names.contains(&topic), "{topic} in {names:?}");
    }
    let payment = bus.stats().subscriber("payment").unwrap().id;
    let links: Vec<(String, u64)> = topology
        .links
        .iter()
        .filter(|l| l.subscriber == payment)
        .map(|l| (l.topic.clone(), l.count))
        .collect();
    assert_eq!(links, [("topology::Paid".to_owned(), 3)]);
    // The shippers share the paid orders; together they shipped 4 parcels.
    let shipped: u64 = topology
        .links
        .iter()
        .filter(|l| l.topic == "topology::Shipped")
        .map(|l| l.count)
        .sum();
    assert_eq!(shipped, 4);

    let mermaid = topology.to_mermaid();
    assert!(mermaid.starts_with("flowchart LR\n"), "{mermaid}");
    let t = |name: &str| format!("t{}", names.iter().position(|n| *n == name).unwrap());
    let s = |name: &str| format!("s{}", &bus.stats().subscriber(name).unwrap().id.to_string()[1..]);
    let lines: Vec<&str> = mermaid.lines().collect();
    let has = |line: String| assert!(lines.contains(&line.as_str()), "no `{line}` in\n{mermaid}");
    has(format!("  {}[\"u32\"]", t("u32")));
    has(format!(
        "  {}(\"payment<br/>pool handler, at-least-once, 3 attempts<br/>Block 1024\")",
        s("payment")
    ));
    has(format!("  {} --> {}", t("u32"), s("payment")));
    has(format!("  {} -.->|caused 3| {}", s("payment"), t("topology::Paid")));
    has(format!(
        "  {}(\"audit<br/>receiver, at-most-once<br/>DropOldest 64\")",
        s("audit")
    ));
    // The pattern hears both orders topics, and not the default one.
    has(format!("  {} --> {}", t("orders.eu"), s("audit")));
    has(format!("  {} --> {}", t("orders.us"), s("audit")));
    assert!(!lines.contains(&format!("  {} --> {}", t("u32"), s("audit")).as_str()));
    assert!(mermaid.contains("<br/>group shipping\")"), "{mermaid}");

    let dot = topology.to_dot();
    assert!(
        dot.starts_with("digraph crier {\n  rankdir=LR;\n") && dot.ends_with("}\n"),
        "{dot}"
    );
    assert!(
        dot.contains(&format!(
            "  {} -> {} [style=dashed, label=\"caused 3\"];",
            s("payment"),
            t("topology::Paid")
        )),
        "{dot}"
    );
    assert!(
        dot.contains(&format!("  {} [shape=box, label=\"u32\"];", t("u32"))),
        "{dot}"
    );
}

#[test]
fn a_subscriber_that_left_keeps_its_links_as_a_node_of_its_own() {
    let bus = Bus::builder().inline().build().unwrap();
    let publisher = bus.clone();
    let relay = bus
        .subscriber::<u32>()
        .name("relay")
        .subscribe(move |n: &Envelope<u32>| publisher.publish(Paid(**n)).map(|_| ()))
        .unwrap();
    let id = bus.stats().subscriber("relay").unwrap().id;
    bus.publish(1_u32).unwrap();
    relay.unsubscribe();
    let mermaid = bus.topology().to_mermaid();
    let number = &id.to_string()[1..];
    assert!(
        mermaid.contains(&format!("(\"subscriber {number} (gone)\")")),
        "{mermaid}"
    );
    assert!(mermaid.contains("-.->|caused 1|"), "{mermaid}");
}

#[test]
fn thousands_of_topics_render_a_page_at_a_time() {
    let bus = Bus::new();
    for n in 0..3_000 {
        bus.topic_named::<u32>(&format!("t.{n:04}")).unwrap();
    }
    let topology = bus.topology();
    assert_eq!(topology.topics.len(), 3_000);
    let mermaid = topology.to_mermaid();
    let nodes = mermaid.lines().filter(|l| l.contains("[\"t.")).count();
    assert_eq!(nodes, 100);
    assert!(
        mermaid.contains("%% 100 of 3000 topics shown; Topology::page renders the others"),
        "{}",
        &mermaid[..200]
    );
    assert!(mermaid.len() < 10_000, "{} bytes", mermaid.len());

    let page = topology.page(2_950, 100);
    assert_eq!(page.topics.len(), 50);
    assert_eq!(page.topics[0].name, "t.2950");
    let dot = page.to_dot();
    assert!(
        dot.contains("label=\"t.2999\\nu32\"") && !dot.contains("t.0000"),
        "{dot}"
    );
    assert!(topology.page(5_000, 10).topics.is_empty());
}

#[test]
fn a_keyed_parallel_subscribers_links_are_its_own_not_its_lanes() {
    let bus = Bus::builder().workers(2).build().unwrap();
    let publisher = bus.clone();
    let _fan = bus
        .subscriber::<u32>()
        .name("fan")
        .concurrency(2)
        .subscribe(move |n: &Envelope<u32>| publisher.publish(Paid(**n)).map(|_| ()))
        .unwrap();
    for n in 0..10_u32 {
        bus.message(n).key(n.to_string()).publish().unwrap();
    }
    bus.wait_idle(IDLE).unwrap();
    let fan = bus.stats().subscriber("fan").unwrap().id;
    let links: Vec<_> = bus.topology().links.iter().map(|l| (l.subscriber, l.count)).collect();
    assert_eq!(links, [(fan, 10)]);
}
