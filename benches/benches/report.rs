//! The ratio report: every scenario of the suite (B1–B9), crier against its peers in
//! rotating rounds, printed as one table.
//!
//! ```text
//! cargo bench -p crier-benches --bench report             # the full run, ~2 minutes
//! cargo bench -p crier-benches --bench report -- --quick  # a smoke run, ~10 seconds
//! cargo bench -p crier-benches --bench report -- B1 B3    # only these scenarios
//! ```
//!
//! Ratios are crier's cost divided by the peer's (time per event, or latency): below
//! 1.00 crier is faster. Each is the median of the per-round ratios, with min–max.

use std::time::Duration;

use crier_benches::cpu::process_time;
use crier_benches::rounds::{rotate, Spread};
use crier_benches::{group, inline, latency, memory, pull, push, request, scale, Contender};

#[global_allocator]
static ALLOC: crier_benches::alloc::Counting = crier_benches::alloc::Counting;

struct Settings {
    rounds: usize,
    pull_events: u64,
    push_events: u64,
    inline_events: u64,
    latency_samples: u64,
    scale_events: u64,
}

const FULL: Settings = Settings {
    rounds: 9,
    pull_events: 500_000,
    push_events: 200_000,
    inline_events: 1_000_000,
    latency_samples: 5_000,
    scale_events: 200_000,
};

const QUICK: Settings = Settings {
    rounds: 3,
    pull_events: 50_000,
    push_events: 20_000,
    inline_events: 100_000,
    latency_samples: 500,
    scale_events: 20_000,
};

fn ns_per_event(elapsed: Duration, events: u64) -> f64 {
    elapsed.as_nanos() as f64 / events as f64
}

/// Runs crier and its peers; returns each one's ns per event, per round.
fn compare(settings: &Settings, events: u64, crier: Contender, peers: &[Contender]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let (crier, peers) = compare_cpu(settings, events, crier, peers);
    (crier.wall, peers.into_iter().map(|peer| peer.wall).collect())
}

/// A contender's cost per event in each round: on the clock (its measured part), and
/// in the process's CPU time (its whole run, set-up and tear-down included).
struct Costs {
    wall: Vec<f64>,
    cpu: Vec<f64>,
}

/// [`compare`], with each run's CPU time too.
fn compare_cpu(settings: &Settings, events: u64, crier: Contender, peers: &[Contender]) -> (Costs, Vec<Costs>) {
    let contenders: Vec<Contender> = std::iter::once(crier).chain(peers.iter().copied()).collect();
    let mut runs = rotate(settings.rounds, contenders.len(), |k| {
        let cpu = process_time();
        let wall = (contenders[k].run)(events);
        (ns_per_event(wall, events), ns_per_event(process_time() - cpu, events))
    });
    let mut costs = runs.drain(..).map(|rounds| {
        let (wall, cpu) = rounds.into_iter().unzip();
        Costs { wall, cpu }
    });
    let crier = costs.next().expect("crier ran");
    (crier, costs.collect())
}

/// The at-least-once rows of B1–B3: the variant's cost over at-most-once's, on the
/// clock (against the target) and in CPU time; then, for information, that cost in
/// two parts: at-least-once alone (no keys, no windows) over at-most-once, and the
/// variant over at-least-once alone (what the keys and the dedup windows add).
fn at_least_once_rows(with_dedup: &Costs, alone: &Costs, at_most_once: &Costs) {
    row(
        "at-least-once + dedup vs at-most-once",
        Spread::of_ratios(&with_dedup.wall, &at_most_once.wall),
        Some(1.5),
    );
    row(
        "  the same in CPU time",
        Spread::of_ratios(&with_dedup.cpu, &at_most_once.cpu),
        None,
    );
    row(
        "  at-least-once alone vs at-most-once",
        Spread::of_ratios(&alone.wall, &at_most_once.wall),
        None,
    );
    row(
        "  dedup on top: + dedup vs alone",
        Spread::of_ratios(&with_dedup.wall, &alone.wall),
        None,
    );
}

/// A row: the ratio, the target (crier/peer at most this), and whether it is met.
fn row(label: &str, ratio: Spread, target: Option<f64>) {
    let verdict = match target {
        Some(t) if ratio.median <= t => format!("≤ {t:.2}  met"),
        Some(t) => format!("≤ {t:.2}  MISSED"),
        None => "—".to_owned(),
    };
    println!("  {label:<42} {:<22} {verdict}", ratio.to_string());
}

fn b1(settings: &Settings) {
    println!(
        "\nB1  pull fan-out: 1 publisher → {} receivers, {} events, lossless",
        pull::RECEIVERS,
        settings.pull_events
    );
    let contenders: Vec<Contender> = pull::PEERS
        .into_iter()
        .chain([pull::CRIER_AT_LEAST_ONCE, pull::CRIER_AT_LEAST_ONCE_ALONE])
        .collect();
    let (crier_costs, peers) = compare_cpu(settings, settings.pull_events, pull::CRIER, &contenders);
    let crier = &crier_costs.wall;
    // Targets: 0.9× the floor's speed; ahead of tokio and async-broadcast; level with bus.
    let targets = [1.0 / 0.9, 1.0, 1.0, 1.0];
    for ((peer, times), target) in pull::PEERS.iter().zip(&peers).zip(targets) {
        row(
            &format!("vs {}", peer.name),
            Spread::of_ratios(crier, &times.wall),
            Some(target),
        );
    }
    let (at_least_once, alone) = (&peers[pull::PEERS.len()], &peers[pull::PEERS.len() + 1]);
    at_least_once_rows(at_least_once, alone, &crier_costs);
    println!("  crier: {} ns per event", Spread::of(crier).show(0));
    println!(
        "  crier at-least-once + dedup (ack receivers): {} ns per event",
        Spread::of(&at_least_once.wall).show(0)
    );
    println!(
        "  crier at-least-once alone (ack receivers): {} ns per event",
        Spread::of(&alone.wall).show(0)
    );
}

fn b2(settings: &Settings) {
    println!(
        "\nB2  push fan-out: 1 publisher → {} pool subscribers, {} events",
        push::SUBSCRIBERS,
        settings.push_events
    );
    let contenders = [
        push::PEERS[0],
        push::CRIER_AT_LEAST_ONCE,
        push::CRIER_AT_LEAST_ONCE_ALONE,
    ];
    let (crier, peers) = compare_cpu(settings, settings.push_events, push::CRIER, &contenders);
    row(
        &format!("vs {}", push::PEERS[0].name),
        Spread::of_ratios(&crier.wall, &peers[0].wall),
        Some(1.0),
    );
    at_least_once_rows(&peers[1], &peers[2], &crier);
    println!("  crier: {} ns per event", Spread::of(&crier.wall).show(0));
    println!(
        "  crier at-least-once + dedup: {} ns per event",
        Spread::of(&peers[1].wall).show(0)
    );
    println!(
        "  crier at-least-once alone: {} ns per event",
        Spread::of(&peers[2].wall).show(0)
    );
}

fn b3(settings: &Settings) {
    println!(
        "\nB3  inline dispatch: 1 event → {} handlers on the publishing thread, {} events",
        inline::HANDLERS,
        settings.inline_events
    );
    let one = Contender {
        name: "crier, 1 handler",
        run: inline::crier_one_handler,
    };
    let peers = [
        inline::PEERS[0],
        one,
        inline::CRIER_AT_LEAST_ONCE,
        inline::CRIER_AT_LEAST_ONCE_ALONE,
    ];
    let (crier_costs, peers) = compare_cpu(settings, settings.inline_events, inline::CRIER, &peers);
    let crier = &crier_costs.wall;
    let (floor, one, at_least_once, alone) = (&peers[0].wall, &peers[1].wall, &peers[2], &peers[3]);
    row("vs closure loop floor", Spread::of_ratios(crier, floor), Some(3.0));
    at_least_once_rows(at_least_once, alone, &crier_costs);
    let (fixed, per_handler): (Vec<f64>, Vec<f64>) = one
        .iter()
        .zip(crier)
        .map(|(&one, &all)| inline::split_costs(one, all))
        .unzip();
    let floor_per_handler: Vec<f64> = floor.iter().map(|t| t / inline::HANDLERS as f64).collect();
    println!("  crier: {} ns per event", Spread::of(crier).show(0));
    println!(
        "  crier at-least-once + dedup: {} ns per event",
        Spread::of(&at_least_once.wall).show(0)
    );
    println!(
        "  crier at-least-once alone: {} ns per event",
        Spread::of(&alone.wall).show(0)
    );
    println!(
        "  crier fixed cost per event:        {} ns   target ≤ 60",
        Spread::of(&fixed).show(0)
    );
    println!(
        "  crier cost per handler call:       {} ns",
        Spread::of(&per_handler).show(1)
    );
    println!(
        "  floor cost per handler call:       {} ns",
        Spread::of(&floor_per_handler).show(1)
    );
}

fn b4(settings: &Settings) {
    println!(
        "\nB4  latency publish → handler start, 1 subscriber, {} spaced events per round",
        settings.latency_samples
    );
    let runs = rotate(settings.rounds, 2, |k| match k {
        0 => latency::crier(settings.latency_samples),
        _ => latency::crossbeam(settings.latency_samples),
    });
    for (label, q, target) in [("p50", 0.50, None), ("p99", 0.99, Some(1.5)), ("p99.9", 0.999, None)] {
        let at = |runs: &[Vec<u64>]| -> Vec<f64> { runs.iter().map(|r| latency::quantile(r, q) as f64).collect() };
        let (crier, raw) = (at(&runs[0]), at(&runs[1]));
        row(
            &format!("{label} vs raw crossbeam hand-off"),
            Spread::of_ratios(&crier, &raw),
            target,
        );
        println!(
            "    {label}: crier {} ns, raw {} ns",
            Spread::of(&crier).show(0),
            Spread::of(&raw).show(0)
        );
    }
}

fn b5(settings: &Settings) {
    println!(
        "\nB5  scale: publish to a topic with 1 inline subscriber, {} events",
        settings.scale_events
    );
    publish_costs(
        settings,
        &scale::SHAPES,
        "1 topic, no other subscribers",
        1.2,
        |shape| format!("{} topics, {} receivers elsewhere", shape.topics, shape.others),
    );
}

fn b7(settings: &Settings) {
    println!(
        "\nB7  wildcards: publish to a topic with 1 inline subscriber, {} events, patterns registered elsewhere",
        settings.scale_events
    );
    publish_costs(settings, &scale::PATTERNS, "no patterns", 1.5, |shape| {
        format!("{} patterns", shape.patterns)
    });
}

/// B5 and B7: each shape's publish cost over the baseline's, by type and by name.
fn publish_costs(
    settings: &Settings,
    shapes: &[scale::Shape],
    baseline_label: &str,
    target: f64,
    label: impl Fn(&scale::Shape) -> String,
) {
    for route in [scale::Route::ByType, scale::Route::ByName] {
        let all: Vec<scale::Shape> = std::iter::once(scale::BASELINE).chain(shapes.iter().copied()).collect();
        let mut times = rotate(settings.rounds, all.len(), |k| {
            ns_per_event(
                scale::publish(all[k], route, settings.scale_events),
                settings.scale_events,
            )
        });
        let baseline = times.remove(0);
        println!(
            "  {route:?}: baseline ({baseline_label}) {} ns per event",
            Spread::of(&baseline).show(0)
        );
        for (shape, times) in shapes.iter().zip(&times) {
            row(&label(shape), Spread::of_ratios(times, &baseline), Some(target));
        }
    }
}

fn b8(settings: &Settings) {
    println!(
        "\nB8  work queue: 1 publisher → a group of {} pool members, 256 rounds of mixing per event, {} events",
        group::MEMBERS,
        settings.push_events
    );
    let peers = [group::PEERS[0], group::ONE_SUBSCRIBER, group::KEYED, group::CONCURRENT];
    let (crier, peers) = compare(settings, settings.push_events, group::CRIER, &peers);
    row(
        &format!("vs {}", group::PEERS[0].name),
        Spread::of_ratios(&crier, &peers[0]),
        None,
    );
    row("group of 4 vs 1 subscriber", Spread::of_ratios(&crier, &peers[1]), None);
    row(
        &format!("key affinity ({} keys) vs plain group", group::KEYS),
        Spread::of_ratios(&peers[2], &crier),
        None,
    );
    println!("  crier, group of 4: {} ns per event", Spread::of(&crier).show(0));
    println!("  crier, 1 subscriber: {} ns per event", Spread::of(&peers[1]).show(0));
    row(
        &format!("concurrency(4) ({} keys) vs plain group", group::KEYS),
        Spread::of_ratios(&peers[3], &crier),
        None,
    );
    println!(
        "  crier, group of 4 with key affinity: {} ns per event",
        Spread::of(&peers[2]).show(0)
    );
    println!(
        "  crier, concurrency(4): {} ns per event",
        Spread::of(&peers[3]).show(0)
    );
}

fn b9(settings: &Settings) {
    let events = settings.latency_samples * 4;
    println!("\nB9  request-reply: 1 requester → 1 responder, one request at a time, {events} requests");
    let (crier, peers) = compare(
        settings,
        events,
        request::CRIER,
        &[request::PEERS[0], request::CRIER_THREAD],
    );
    row(
        "pool responder vs crossbeam",
        Spread::of_ratios(&crier, &peers[0]),
        None,
    );
    row(
        "own-thread responder vs crossbeam",
        Spread::of_ratios(&peers[1], &peers[0]),
        None,
    );
    println!(
        "  crier, pool responder: {} ns per round trip",
        Spread::of(&crier).show(0)
    );
    println!(
        "  crier, own-thread responder: {} ns per round trip",
        Spread::of(&peers[1]).show(0)
    );
    println!(
        "  {}: {} ns per round trip",
        request::PEERS[0].name,
        Spread::of(&peers[0]).show(0)
    );
}

fn b6() {
    println!("\nB6  memory (counting allocator)");
    let (handler, receiver) = memory::per_idle_subscriber();
    println!("  bytes per idle pool subscriber:    {handler:.0}   target < 2048");
    println!("  bytes per idle receiver:           {receiver:.0}   target < 2048");
    for queue in [memory::Queue::Ring, memory::Queue::Mailbox] {
        for receivers in [1, 4] {
            let (per_event, per_receiver) = memory::per_queued_event(receivers, queue);
            println!(
                "  bytes per queued event beyond the payload, {queue:?}, {receivers} receiver(s): {per_event:.1} ({per_receiver:.1} per receiver)"
            );
        }
    }
    let own = memory::history_own_bytes_per_event();
    println!("  bytes a topic's history adds per event, the events alive anyway: {own:.1}   target <= 64");
    let plain = memory::per_retained_event(false);
    println!("  bytes per event kept in a topic's history beyond the payload, its envelope included: {plain:.1}");
    let compacted = memory::per_retained_event(true);
    println!("  the same, compacted, a 16-byte key per event (key included): {compacted:.1}");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only: Vec<&str> = args.iter().filter(|a| a.starts_with('B')).map(String::as_str).collect();
    let wanted = |id: &str| only.is_empty() || only.contains(&id);
    let settings = if quick { &QUICK } else { &FULL };
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "crier benchmark report: {cores} cores, {} rotating rounds",
        settings.rounds
    );
    println!("ratio = crier's cost ÷ the peer's (below 1.00: crier is faster); median (min–max)");
    type Scenario = (&'static str, fn(&Settings));
    let scenarios: [Scenario; 9] = [
        ("B1", b1),
        ("B2", b2),
        ("B3", b3),
        ("B4", b4),
        ("B5", b5),
        ("B6", |_| b6()),
        ("B7", b7),
        ("B8", b8),
        ("B9", b9),
    ];
    for (id, run) in scenarios {
        if wanted(id) {
            run(settings);
        }
    }
}
