//! Runs one contender of one scenario, for a profiler:
//!
//! ```text
//! cargo build -p crier-benches --release --example profile
//! perf record -g target/release/examples/profile pull crier 500000
//! valgrind --tool=callgrind target/release/examples/profile inline crier 100000
//! valgrind --tool=callgrind target/release/examples/profile inline "crier at" 100000
//! valgrind --tool=callgrind target/release/examples/profile inline "crier at-least-once alone" 100000
//! valgrind --tool=callgrind target/release/examples/profile inline "crier traced" 100000
//! ```

use crier_benches::{inline, pull, push, Contender};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (scenario, name) = match &args[..] {
        [scenario, name, ..] => (scenario.as_str(), name.as_str()),
        _ => {
            eprintln!("usage: profile <pull|push|inline> <contender> [events]");
            std::process::exit(2);
        }
    };
    let events: u64 = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(200_000);
    let contenders: Vec<Contender> = match scenario {
        "pull" => [pull::CRIER, pull::CRIER_AT_LEAST_ONCE, pull::CRIER_AT_LEAST_ONCE_ALONE]
            .into_iter()
            .chain(pull::PEERS)
            .collect(),
        "push" => [push::CRIER, push::CRIER_AT_LEAST_ONCE, push::CRIER_AT_LEAST_ONCE_ALONE]
            .into_iter()
            .chain(push::PEERS)
            .collect(),
        "inline" => [
            inline::CRIER,
            inline::CRIER_AT_LEAST_ONCE,
            inline::CRIER_AT_LEAST_ONCE_ALONE,
            inline::CRIER_TRACED,
        ]
        .into_iter()
        .chain(inline::PEERS)
        .collect(),
        other => {
            eprintln!("unknown scenario {other}");
            std::process::exit(2);
        }
    };
    let Some(contender) = contenders.iter().find(|c| c.name.starts_with(name)) else {
        let names: Vec<_> = contenders.iter().map(|c| c.name).collect();
        eprintln!("no contender {name}; one of {names:?}");
        std::process::exit(2);
    };
    let elapsed = (contender.run)(events);
    println!(
        "{} {}: {:.0} ns per event",
        scenario,
        contender.name,
        elapsed.as_nanos() as f64 / events as f64
    );
}
