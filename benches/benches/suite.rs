//! The criterion suite: B1–B5 and B7 with crier and each peer side by side, for the plots in
//! `target/criterion/report/index.html`. `cargo bench -p crier-benches --bench suite`.
//!
//! Every contender's workload runs a fixed number of events per iteration, so
//! criterion's throughput is events per second. The ratio table comes from the
//! `report` bench, which rotates contenders round by round.

use std::time::Duration;

use crier_benches::{inline, latency, pull, push, scale, Contender};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

fn group(c: &mut Criterion, name: &str, events: u64, contenders: &[Contender]) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(events));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for contender in contenders {
        group.bench_function(contender.name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| (contender.run)(events)).sum())
        });
    }
    group.finish();
}

fn b1_pull(c: &mut Criterion) {
    let contenders: Vec<Contender> = [pull::CRIER, pull::CRIER_AT_LEAST_ONCE, pull::CRIER_AT_LEAST_ONCE_ALONE]
        .into_iter()
        .chain(pull::PEERS)
        .collect();
    group(c, "B1 pull fan-out 1-4", 100_000, &contenders);
}

fn b2_push(c: &mut Criterion) {
    let contenders: Vec<Contender> = [push::CRIER, push::CRIER_AT_LEAST_ONCE, push::CRIER_AT_LEAST_ONCE_ALONE]
        .into_iter()
        .chain(push::PEERS)
        .collect();
    group(c, "B2 push fan-out 1-4", 100_000, &contenders);
}

fn b3_inline(c: &mut Criterion) {
    let one = Contender {
        name: "crier, 1 handler",
        run: inline::crier_one_handler,
    };
    let contenders: Vec<Contender> = [
        inline::CRIER,
        one,
        inline::CRIER_AT_LEAST_ONCE,
        inline::CRIER_AT_LEAST_ONCE_ALONE,
    ]
    .into_iter()
    .chain(inline::PEERS)
    .collect();
    group(c, "B3 inline 1-8", 100_000, &contenders);
}

/// Criterion times batches, not single hand-offs: this is the mean latency; the
/// percentiles are in the report.
fn b4_latency(c: &mut Criterion) {
    let mut group = c.benchmark_group("B4 latency publish-to-handler (mean)");
    group.sample_size(10);
    // The sum of the latencies of `iters` hand-offs: criterion divides by `iters`.
    let total = |latencies: Vec<u64>| Duration::from_nanos(latencies.iter().sum());
    group.bench_function("crier", |b| b.iter_custom(|iters| total(latency::crier(iters))));
    group.bench_function("raw crossbeam", |b| {
        b.iter_custom(|iters| total(latency::crossbeam(iters)))
    });
    group.finish();
}

fn b5_scale(c: &mut Criterion) {
    let mut group = c.benchmark_group("B5 and B7 publish cost by bus size");
    let events = 100_000;
    group.throughput(Throughput::Elements(events));
    group.sample_size(10);
    for shape in std::iter::once(scale::BASELINE)
        .chain(scale::SHAPES)
        .chain(scale::PATTERNS)
    {
        for route in [scale::Route::ByType, scale::Route::ByName] {
            let id = BenchmarkId::new(
                format!("{route:?}"),
                format!(
                    "{} topics, {} others, {} patterns",
                    shape.topics, shape.others, shape.patterns
                ),
            );
            group.bench_function(id, |b| {
                b.iter_custom(|iters| (0..iters).map(|_| scale::publish(shape, route, events)).sum())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, b1_pull, b2_push, b3_inline, b4_latency, b5_scale);
criterion_main!(benches);
