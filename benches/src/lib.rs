//! The workloads of crier's benchmark suite, one function per contender, shared by the
//! criterion benches (`benches/suite.rs`, plots) and the ratio report
//! (`benches/report.rs`, one table). See `BENCHMARKS.md` at the repository root.
//!
//! Every workload takes an event count, sets itself up, and returns the time its
//! measured part took; set-up and tear-down (spawning a bus's pool, shutting it down)
//! are outside the timer for every contender alike.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub mod alloc;
pub mod cpu;
pub mod rounds;

/// The 64-byte event every scenario publishes.
#[derive(Clone, Copy, Debug)]
pub struct Payload(pub [u8; 64]);

impl Payload {
    pub fn new(n: u64) -> Payload {
        Payload([n as u8; 64])
    }
}

/// One way to run a scenario's workload.
#[derive(Clone, Copy)]
pub struct Contender {
    pub name: &'static str,
    pub run: fn(u64) -> Duration,
}

/// Mailbox capacity for every lossless contender that has one.
pub const CAPACITY: usize = 1024;

/// The dedup window of the at-least-once variants: 10,000 keys for a minute, so a run
/// of distinct keys keeps it full and evicting, as in a long-running service.
/// `CRIER_BENCH_WINDOW=n` sets another number of keys, to see what the window's
/// memory costs (BENCHMARKS.md).
pub fn dedup_window() -> crier::DedupWindow {
    let keys = std::env::var("CRIER_BENCH_WINDOW").ok().and_then(|n| n.parse().ok());
    crier::DedupWindow::new(keys.unwrap_or(10_000), Duration::from_secs(60))
}

/// The delivery a scenario's crier contender asks for.
#[derive(Clone, Copy)]
enum Delivery {
    AtMostOnce,
    /// Ordered retries; no idempotency keys, no dedup window.
    AtLeastOnce,
    /// At-least-once (ordered retries), a dedup window per subscriber, every event keyed.
    Deduplicated,
}

/// A subscriber's options for `delivery`.
fn options(builder: crier::SubscriberBuilder<Payload>, delivery: Delivery) -> crier::SubscriberBuilder<Payload> {
    match delivery {
        Delivery::AtMostOnce => builder,
        Delivery::AtLeastOnce => builder.at_least_once(crier::Retry::ordered()),
        Delivery::Deduplicated => builder.at_least_once(crier::Retry::ordered()).dedup(dedup_window()),
    }
}

/// Publishes event `n`; with dedup, with `n` as its idempotency key (an integer key:
/// formatted in the event, with no allocation; `n.to_string()` costs about 4% more on
/// B1's clock, BENCHMARKS.md).
fn publish(bus: &crier::Bus, n: u64, delivery: Delivery) -> Result<crier::Receipt, crier::PublishError<Payload>> {
    match delivery {
        Delivery::Deduplicated => bus.message(Payload::new(n)).idempotency_key(n).publish(),
        Delivery::AtMostOnce | Delivery::AtLeastOnce => bus.publish(Payload::new(n)),
    }
}

/// Spawns one thread per receiver, each taking `events` items with `recv`.
fn drain_on_threads<R: Send + 'static>(receivers: Vec<R>, events: u64, recv: fn(&mut R) -> u8) -> Vec<JoinHandle<u64>> {
    receivers
        .into_iter()
        .map(|mut rx| std::thread::spawn(move || (0..events).map(|_| u64::from(recv(&mut rx))).sum()))
        .collect()
}

fn join(readers: Vec<JoinHandle<u64>>) {
    for reader in readers {
        black_box(reader.join().expect("reader thread"));
    }
}

/// B1: pull fan-out, 1 publisher -> 4 receivers, lossless; every receiver drains all.
pub mod pull {
    use super::*;

    pub const RECEIVERS: usize = 4;

    pub const CRIER: Contender = Contender {
        name: "crier",
        run: crier,
    };
    pub const PEERS: [Contender; 4] = [
        Contender {
            name: "crossbeam floor",
            run: crossbeam,
        },
        Contender {
            name: "tokio::sync::broadcast",
            run: tokio_broadcast,
        },
        Contender {
            name: "bus",
            run: bus_crate,
        },
        Contender {
            name: "async-broadcast",
            run: async_broadcast,
        },
    ];

    pub fn crier(events: u64) -> Duration {
        let bus = crier::Bus::builder().capacity(CAPACITY).build().expect("valid options");
        let receivers: Vec<_> = (0..RECEIVERS)
            .map(|_| bus.receiver::<Payload>().expect("bus is open"))
            .collect();
        let start = Instant::now();
        let readers = drain_on_threads(receivers, events, |rx| rx.recv().expect("lossless").0[0]);
        for n in 0..events {
            bus.publish(Payload::new(n)).expect("lossless");
        }
        join(readers);
        start.elapsed()
    }

    /// The same workload on ack receivers, at-least-once with a dedup window each, every
    /// event published with an idempotency key and acked once read (compared with
    /// [`crier`]).
    pub const CRIER_AT_LEAST_ONCE: Contender = Contender {
        name: "crier at-least-once + dedup",
        run: crier_at_least_once,
    };

    pub fn crier_at_least_once(events: u64) -> Duration {
        acked(Delivery::Deduplicated, events)
    }

    /// [`CRIER_AT_LEAST_ONCE`] without keys or dedup windows: what the acks cost alone.
    pub const CRIER_AT_LEAST_ONCE_ALONE: Contender = Contender {
        name: "crier at-least-once alone",
        run: crier_at_least_once_alone,
    };

    pub fn crier_at_least_once_alone(events: u64) -> Duration {
        acked(Delivery::AtLeastOnce, events)
    }

    fn acked(delivery: Delivery, events: u64) -> Duration {
        let bus = crier::Bus::builder().capacity(CAPACITY).build().expect("valid options");
        let receivers: Vec<_> = (0..RECEIVERS)
            .map(|_| options(bus.subscriber(), delivery).ack_receiver().expect("bus is open"))
            .collect();
        let start = Instant::now();
        let readers = drain_on_threads(receivers, events, |rx| {
            let delivery = rx.recv().expect("lossless");
            let byte = delivery.0[0];
            delivery.ack();
            byte
        });
        for n in 0..events {
            publish(&bus, n, delivery).expect("lossless");
        }
        join(readers);
        start.elapsed()
    }

    /// The floor: one bounded crossbeam channel of `Arc<Payload>` per receiver.
    pub fn crossbeam(events: u64) -> Duration {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..RECEIVERS)
            .map(|_| crossbeam_channel::bounded::<Arc<Payload>>(CAPACITY))
            .unzip();
        let start = Instant::now();
        let readers = drain_on_threads(rxs, events, |rx| rx.recv().expect("connected").0[0]);
        for n in 0..events {
            let event = Arc::new(Payload::new(n));
            for tx in &txs {
                tx.send(event.clone()).expect("connected");
            }
        }
        join(readers);
        start.elapsed()
    }

    /// Capacity rounded up to hold every event: `broadcast` never blocks a sender, it
    /// makes slow receivers lag, and this scenario is lossless.
    pub fn tokio_broadcast(events: u64) -> Duration {
        let capacity = usize::try_from(events).expect("fits").next_power_of_two().max(2);
        let (tx, _) = tokio::sync::broadcast::channel::<Arc<Payload>>(capacity);
        let rxs: Vec<_> = (0..RECEIVERS).map(|_| tx.subscribe()).collect();
        let start = Instant::now();
        let readers = drain_on_threads(rxs, events, |rx| rx.blocking_recv().expect("never lags").0[0]);
        for n in 0..events {
            tx.send(Arc::new(Payload::new(n))).expect("receivers alive");
        }
        join(readers);
        start.elapsed()
    }

    pub fn bus_crate(events: u64) -> Duration {
        let mut tx = bus::Bus::<Arc<Payload>>::new(CAPACITY);
        let rxs: Vec<_> = (0..RECEIVERS).map(|_| tx.add_rx()).collect();
        let start = Instant::now();
        let readers = drain_on_threads(rxs, events, |rx| rx.recv().expect("connected").0[0]);
        for n in 0..events {
            tx.broadcast(Arc::new(Payload::new(n)));
        }
        join(readers);
        start.elapsed()
    }

    pub fn async_broadcast(events: u64) -> Duration {
        let (tx, rx) = async_broadcast::broadcast::<Arc<Payload>>(CAPACITY);
        let mut rxs: Vec<_> = (1..RECEIVERS).map(|_| rx.clone()).collect();
        rxs.push(rx);
        let start = Instant::now();
        let readers = drain_on_threads(rxs, events, |rx| rx.recv_blocking().expect("connected").0[0]);
        for n in 0..events {
            tx.broadcast_blocking(Arc::new(Payload::new(n)))
                .expect("receivers alive");
        }
        join(readers);
        start.elapsed()
    }
}

/// B2: push fan-out, 1 publisher -> 4 subscribers that each add to their own counter.
pub mod push {
    use super::*;

    pub const SUBSCRIBERS: usize = 4;

    pub const CRIER: Contender = Contender {
        name: "crier",
        run: crier,
    };
    pub const PEERS: [Contender; 1] = [Contender {
        name: "thread per subscriber",
        run: thread_per_subscriber,
    }];

    fn counters() -> Vec<Arc<AtomicU64>> {
        (0..SUBSCRIBERS).map(|_| Arc::new(AtomicU64::new(0))).collect()
    }

    fn handle(counter: &AtomicU64, event: &Payload) {
        counter.fetch_add(u64::from(event.0[0]), Ordering::Relaxed);
    }

    /// Pool subscribers (the default dispatch, a pool sized to the cores).
    pub fn crier(events: u64) -> Duration {
        crier_with(Delivery::AtMostOnce, events)
    }

    /// The same workload at-least-once with a dedup window per subscriber, every
    /// event published with an idempotency key: what the reliability costs when
    /// nothing fails (compared with [`crier`], not with a peer).
    pub const CRIER_AT_LEAST_ONCE: Contender = Contender {
        name: "crier at-least-once + dedup",
        run: crier_at_least_once,
    };

    pub fn crier_at_least_once(events: u64) -> Duration {
        crier_with(Delivery::Deduplicated, events)
    }

    /// [`CRIER_AT_LEAST_ONCE`] without keys or dedup windows: what the retries' book-keeping
    /// costs alone.
    pub const CRIER_AT_LEAST_ONCE_ALONE: Contender = Contender {
        name: "crier at-least-once alone",
        run: crier_at_least_once_alone,
    };

    pub fn crier_at_least_once_alone(events: u64) -> Duration {
        crier_with(Delivery::AtLeastOnce, events)
    }

    fn crier_with(delivery: Delivery, events: u64) -> Duration {
        let bus = crier::Bus::builder().capacity(CAPACITY).build().expect("valid options");
        let counters = counters();
        let subscriptions: Vec<_> = counters
            .iter()
            .map(|counter| {
                let counter = counter.clone();
                options(bus.subscriber(), delivery)
                    .subscribe(move |env: &crier::Envelope<Payload>| handle(&counter, env))
                    .expect("bus is open")
            })
            .collect();
        let start = Instant::now();
        for n in 0..events {
            publish(&bus, n, delivery).expect("lossless");
        }
        bus.wait_idle(Duration::from_secs(600)).expect("drains");
        let elapsed = start.elapsed();
        drop(subscriptions);
        black_box(counters);
        elapsed
    }

    /// Hand-rolled: a bounded crossbeam channel and a thread per subscriber.
    pub fn thread_per_subscriber(events: u64) -> Duration {
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..SUBSCRIBERS)
            .map(|_| crossbeam_channel::bounded::<Arc<Payload>>(CAPACITY))
            .unzip();
        let counters = counters();
        let threads: Vec<_> = rxs
            .into_iter()
            .zip(counters.iter().cloned())
            .map(|(rx, counter)| {
                std::thread::spawn(move || {
                    for event in rx {
                        handle(&counter, &event);
                    }
                })
            })
            .collect();
        let start = Instant::now();
        for n in 0..events {
            let event = Arc::new(Payload::new(n));
            for tx in &txs {
                tx.send(event.clone()).expect("connected");
            }
        }
        drop(txs);
        for thread in threads {
            thread.join().expect("subscriber thread");
        }
        let elapsed = start.elapsed();
        black_box(counters);
        elapsed
    }
}

/// B3: inline dispatch, 1 event -> 8 handlers on the publishing thread.
pub mod inline {
    use super::*;

    pub const HANDLERS: usize = 8;

    pub const CRIER: Contender = Contender {
        name: "crier",
        run: crier,
    };
    pub const PEERS: [Contender; 1] = [Contender {
        name: "closure loop floor",
        run: closure_loop,
    }];

    fn crier_with(handlers: usize, delivery: Delivery, events: u64) -> Duration {
        crier_on(crier::Bus::builder().inline(), handlers, delivery, events)
    }

    fn crier_on(builder: crier::BusBuilder, handlers: usize, delivery: Delivery, events: u64) -> Duration {
        let bus = builder.build().expect("valid options");
        let subscriptions: Vec<_> = (0..handlers)
            .map(|_| {
                options(bus.subscriber(), delivery)
                    .subscribe(|env: &crier::Envelope<Payload>| {
                        black_box(env.0[0]);
                    })
                    .expect("bus is open")
            })
            .collect();
        let start = Instant::now();
        for n in 0..events {
            publish(&bus, n, delivery).expect("inline never fills");
        }
        let elapsed = start.elapsed();
        drop(subscriptions);
        elapsed
    }

    pub fn crier(events: u64) -> Duration {
        crier_with(HANDLERS, Delivery::AtMostOnce, events)
    }

    /// As [`crier`], at-least-once with a dedup window per handler and an idempotency
    /// key per event (compared with [`crier`]).
    pub const CRIER_AT_LEAST_ONCE: Contender = Contender {
        name: "crier at-least-once + dedup",
        run: crier_at_least_once,
    };

    pub fn crier_at_least_once(events: u64) -> Duration {
        crier_with(HANDLERS, Delivery::Deduplicated, events)
    }

    /// [`CRIER_AT_LEAST_ONCE`] without keys or dedup windows: what the retries' book-keeping
    /// costs alone.
    pub const CRIER_AT_LEAST_ONCE_ALONE: Contender = Contender {
        name: "crier at-least-once alone",
        run: crier_at_least_once_alone,
    };

    pub fn crier_at_least_once_alone(events: u64) -> Duration {
        crier_with(HANDLERS, Delivery::AtLeastOnce, events)
    }

    /// As [`crier`], on a bus that keeps delivery traces of its last 10,000 events:
    /// what `BusBuilder::trace` costs.
    pub const CRIER_TRACED: Contender = Contender {
        name: "crier traced",
        run: crier_traced,
    };

    pub fn crier_traced(events: u64) -> Duration {
        crier_on(
            crier::Bus::builder().inline().trace(10_000),
            HANDLERS,
            Delivery::AtMostOnce,
            events,
        )
    }

    /// One inline handler: with [`crier`] it separates the fixed cost per event from
    /// the cost per handler call (see [`split_costs`]).
    pub fn crier_one_handler(events: u64) -> Duration {
        crier_with(1, Delivery::AtMostOnce, events)
    }

    /// The floor: a `Vec<Box<dyn Fn(&E)>>` called in a loop.
    pub fn closure_loop(events: u64) -> Duration {
        type Handler = Box<dyn Fn(&Payload)>;
        let handlers: Vec<Handler> = (0..HANDLERS)
            .map(|_| {
                Box::new(|event: &Payload| {
                    black_box(event.0[0]);
                }) as Handler
            })
            .collect();
        let handlers = black_box(handlers);
        let start = Instant::now();
        for n in 0..events {
            let event = Payload::new(n);
            for handler in &handlers {
                handler(&event);
            }
        }
        start.elapsed()
    }

    /// Per-event fixed cost and per-handler cost in ns, from the time per event with
    /// one handler and with [`HANDLERS`]: a straight line through both points.
    pub fn split_costs(one_handler_ns: f64, all_handlers_ns: f64) -> (f64, f64) {
        let per_handler = (all_handlers_ns - one_handler_ns) / (HANDLERS - 1) as f64;
        (one_handler_ns - per_handler, per_handler)
    }
}

/// B4: latency from `publish` to the handler's first instruction, one subscriber,
/// events spaced out so the consumer is asleep when each arrives.
pub mod latency {
    use super::*;
    use samples::Samples;

    /// 64 bytes, like every payload: the send time and padding.
    #[derive(Clone, Copy, Debug)]
    pub struct Stamped {
        sent: Instant,
        _pad: [u8; 48],
    }

    /// Time the consumer gets to fall asleep between two events.
    const GAP: Duration = Duration::from_micros(50);

    /// Publishes `samples` stamped events one at a time through `send`, waiting each
    /// time until the consumer saw it and then for [`GAP`]; returns the latencies in ns.
    fn measure(samples: u64, send: impl Fn(Stamped), seen: &Samples) -> Vec<u64> {
        for i in 0..samples {
            send(Stamped {
                sent: Instant::now(),
                _pad: [0; 48],
            });
            seen.wait_for(i + 1);
            let idle = Instant::now();
            while idle.elapsed() < GAP {
                std::hint::spin_loop();
            }
        }
        seen.take()
    }

    /// Latencies through a pool subscriber, in ns.
    pub fn crier(samples: u64) -> Vec<u64> {
        let bus = crier::Bus::builder().capacity(CAPACITY).build().expect("valid options");
        let seen = Samples::new(samples);
        let record = seen.clone();
        let subscription = bus
            .subscribe(move |env: &crier::Envelope<Stamped>| record.push(env.sent.elapsed()))
            .expect("bus is open");
        let latencies = measure(
            samples,
            |s| {
                bus.publish(s).expect("lossless");
            },
            &seen,
        );
        drop(subscription);
        latencies
    }

    /// Latencies through a raw crossbeam channel and a thread blocked in `recv`, in ns.
    pub fn crossbeam(samples: u64) -> Vec<u64> {
        let (tx, rx) = crossbeam_channel::bounded::<Stamped>(CAPACITY);
        let seen = Samples::new(samples);
        let record = seen.clone();
        let consumer = std::thread::spawn(move || {
            for stamped in rx {
                record.push(stamped.sent.elapsed());
            }
        });
        let latencies = measure(samples, |s| tx.send(s).expect("connected"), &seen);
        drop(tx);
        consumer.join().expect("consumer thread");
        latencies
    }

    /// The `q`-quantile (0..=1) of sorted latencies.
    pub fn quantile(sorted: &[u64], q: f64) -> u64 {
        let index = ((sorted.len() - 1) as f64 * q).round() as usize;
        sorted[index]
    }

    /// A shared, preallocated list of latencies that the publisher can wait on.
    mod samples {
        use super::*;
        use std::sync::Mutex;

        #[derive(Clone)]
        pub struct Samples(Arc<Shared>);

        struct Shared {
            latencies: Mutex<Vec<u64>>,
            /// How many latencies `latencies` holds: the publisher spins on it.
            seen: AtomicU64,
        }

        impl Samples {
            pub fn new(capacity: u64) -> Samples {
                let list = Vec::with_capacity(usize::try_from(capacity).expect("fits"));
                Samples(Arc::new(Shared {
                    latencies: Mutex::new(list),
                    seen: AtomicU64::new(0),
                }))
            }

            pub fn push(&self, latency: Duration) {
                let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
                self.0.latencies.lock().expect("not poisoned").push(ns);
                self.0.seen.fetch_add(1, Ordering::Release);
            }

            /// Spins until `n` samples arrived: the publisher's core is idle anyway.
            pub fn wait_for(&self, n: u64) {
                while self.0.seen.load(Ordering::Acquire) < n {
                    std::hint::spin_loop();
                }
            }

            pub fn take(&self) -> Vec<u64> {
                let mut list = std::mem::take(&mut *self.0.latencies.lock().expect("not poisoned"));
                list.sort_unstable();
                list
            }
        }
    }
}

/// B5 and B7: the cost of `publish` as the bus grows around the topic it publishes to.
pub mod scale {
    use super::*;

    /// What surrounds the published topic.
    #[derive(Clone, Copy, Debug)]
    pub struct Shape {
        /// Topics registered, the published one included (named topics of the type).
        pub topics: usize,
        /// Receivers subscribed to another topic.
        pub others: usize,
        /// Pattern receivers that match no topic published to (B7).
        pub patterns: usize,
    }

    const fn shape(topics: usize, others: usize, patterns: usize) -> Shape {
        Shape {
            topics,
            others,
            patterns,
        }
    }

    pub const BASELINE: Shape = shape(1, 0, 0);
    /// B5's shapes.
    pub const SHAPES: [Shape; 5] = [
        shape(100, 0, 0),
        shape(10_000, 0, 0),
        shape(1, 1, 0),
        shape(1, 64, 0),
        shape(1, 1_024, 0),
    ];
    /// B7's shapes: wildcard patterns registered.
    pub const PATTERNS: [Shape; 2] = [shape(1, 0, 1_000), shape(1, 0, 10_000)];

    /// The `i`th of B7's patterns: three kinds, none matching `target`.
    fn pattern(i: usize) -> String {
        match i % 3 {
            0 => format!("region{i}.*"),
            1 => format!("region{i}.>"),
            _ => format!("*.shop{i}"),
        }
    }

    /// How the event finds its topic.
    #[derive(Clone, Copy, Debug)]
    pub enum Route {
        /// `bus.publish(e)`: the type's default topic.
        ByType,
        /// `bus.topic_named(name)?.publish(e)`: a lookup by name each time.
        ByName,
    }

    /// Time for `events` publishes to a topic with one inline subscriber.
    pub fn publish(shape: Shape, route: Route, events: u64) -> Duration {
        let bus = crier::Bus::builder().inline().build().expect("valid options");
        let topics: Vec<_> = (1..shape.topics)
            .map(|i| bus.topic_named::<Payload>(&format!("filler.{i}")).expect("valid name"))
            .collect();
        let other = bus.topic_named::<Payload>("other").expect("valid name");
        let others: Vec<_> = (0..shape.others)
            .map(|_| other.receiver().expect("bus is open"))
            .collect();
        let patterns: Vec<_> = (0..shape.patterns)
            .map(|i| {
                let builder = bus.subscriber::<Payload>().pattern(pattern(i)).capacity(16);
                builder.receiver().expect("valid pattern")
            })
            .collect();
        let target = bus.topic_named::<Payload>("target").expect("valid name");
        let sink = |env: &crier::Envelope<Payload>| {
            black_box(env.0[0]);
        };
        let _typed = bus.subscribe(sink).expect("bus is open");
        let _named = target.subscribe(sink).expect("bus is open");
        let start = Instant::now();
        for n in 0..events {
            let _receipt = match route {
                Route::ByType => bus.publish(Payload::new(n)).expect("inline never fills"),
                Route::ByName => bus
                    .topic_named::<Payload>("target")
                    .expect("exists")
                    .publish(Payload::new(n))
                    .expect("inline never fills"),
            };
        }
        let elapsed = start.elapsed();
        black_box((topics, others, patterns));
        elapsed
    }
}

/// B6: memory, read from the counting allocator ([`alloc::Counting`]), which the
/// binary calling these must install as its global allocator.
pub mod memory {
    use super::*;
    use crate::alloc::live_bytes;

    const SUBSCRIBERS: usize = 1_000;
    const QUEUED: u64 = 10_000;

    /// Bytes per idle subscriber: a pool handler and a pull receiver.
    pub fn per_idle_subscriber() -> (f64, f64) {
        let bus = crier::Bus::new();
        let topic = bus.topic::<Payload>();
        let before = live_bytes();
        let handlers: Vec<_> = (0..SUBSCRIBERS)
            .map(|_| topic.subscribe(|_: &crier::Envelope<Payload>| ()).expect("bus is open"))
            .collect();
        let per_handler = (live_bytes() - before) as f64 / SUBSCRIBERS as f64;
        drop(handlers);
        let before = live_bytes();
        let receivers: Vec<_> = (0..SUBSCRIBERS)
            .map(|_| topic.receiver().expect("bus is open"))
            .collect();
        let per_receiver = (live_bytes() - before) as f64 / SUBSCRIBERS as f64;
        drop(receivers);
        (per_handler, per_receiver)
    }

    /// Where the queued events of `per_queued_event` wait.
    #[derive(Debug, Clone, Copy)]
    pub enum Queue {
        /// Bounded `Block` receivers: the topic's broadcast ring, shared.
        Ring,
        /// Unbounded receivers: a mailbox each.
        Mailbox,
    }

    /// Bytes per queued event, beyond its 64-byte payload, with `receivers` receivers
    /// that each hold every event: per event, and per event per receiver.
    pub fn per_queued_event(receivers: usize, queue: Queue) -> (f64, f64) {
        let bus = crier::Bus::new();
        let held: Vec<_> = (0..receivers)
            .map(|_| {
                let builder = bus.subscriber::<Payload>();
                let builder = match queue {
                    Queue::Ring => builder.capacity(QUEUED as usize + 1),
                    Queue::Mailbox => builder.unbounded(),
                };
                builder.receiver().expect("bus is open")
            })
            .collect();
        // Warm up: the first publish creates the topic and per-thread state.
        bus.publish(Payload::new(0)).expect("room for every event");
        let before = live_bytes();
        for n in 0..QUEUED {
            bus.publish(Payload::new(n)).expect("room for every event");
        }
        let per_event = (live_bytes() - before) as f64 / QUEUED as f64;
        drop(held);
        let overhead = per_event - std::mem::size_of::<Payload>() as f64;
        (overhead, overhead / receivers as f64)
    }

    /// Bytes per event a topic's history keeps, beyond its 64-byte payload, with no
    /// subscriber: the event's metadata (kept alive by the history) and the history's
    /// slot, measured as what clearing a full history of 10,000 events gives back.
    /// `compacted`: every event has a distinct 16-byte partition key, so compaction
    /// keeps them all and pays for its index of keys (the key's bytes included).
    pub fn per_retained_event(compacted: bool) -> f64 {
        let bus = crier::Bus::new();
        let topic = bus.topic::<Payload>();
        let retention = crier::Retention::last(QUEUED as usize);
        let retention = if compacted { retention.compacted() } else { retention };
        topic.set_retention(retention).expect("a valid retention");
        for n in 0..QUEUED {
            let message = topic.message(Payload::new(n));
            let message = if compacted {
                message.key(format!("{n:016}"))
            } else {
                message
            };
            message.publish().expect("no subscriber refuses");
        }
        let full = live_bytes();
        topic.clear_retention();
        let per_event = (full - live_bytes()) as f64 / QUEUED as f64;
        per_event - std::mem::size_of::<Payload>() as f64
    }

    /// Bytes per event that keeping a history adds when the events are alive anyway
    /// (an unbounded receiver holds all 10,000): the history's own slots, measured as
    /// what `clear_retention()` gives back while the receiver still holds the events.
    pub fn history_own_bytes_per_event() -> f64 {
        let bus = crier::Bus::new();
        let topic = bus.topic::<Payload>();
        let holder = topic.subscriber().unbounded().receiver().expect("bus is open");
        topic
            .set_retention(crier::Retention::last(QUEUED as usize))
            .expect("a valid retention");
        for n in 0..QUEUED {
            topic.publish(Payload::new(n)).expect("no subscriber refuses");
        }
        let full = live_bytes();
        topic.clear_retention();
        let per_event = (full - live_bytes()) as f64 / QUEUED as f64;
        drop(holder);
        per_event
    }
}

/// B8: a work queue. 1 publisher → a consumer group of 4 pool members; each event
/// costs its handler a few hundred ns of work, so spreading it over the cores pays. Against one subscriber doing all the work (what a group buys), and against a
/// hand-rolled queue: a bounded crossbeam channel drained by 4 threads.
pub mod group {
    use super::*;

    pub const MEMBERS: usize = 4;

    pub const CRIER: Contender = Contender {
        name: "crier, group of 4",
        run: crier,
    };
    pub const ONE_SUBSCRIBER: Contender = Contender {
        name: "crier, 1 subscriber",
        run: crier_one_subscriber,
    };
    pub const KEYED: Contender = Contender {
        name: "crier, group of 4 with key affinity",
        run: crier_keyed,
    };
    pub const CONCURRENT: Contender = Contender {
        name: "crier, 1 subscriber with concurrency(4)",
        run: crier_concurrent,
    };

    /// The partition keys of the keyed variant.
    pub const KEYS: usize = 64;
    pub const PEERS: [Contender; 1] = [Contender {
        name: "crossbeam channel, 4 threads",
        run: crossbeam_workers,
    }];

    /// The work of one event: a few hundred rounds of mixing, into the worker's own sum.
    fn work(sum: &AtomicU64, event: &Payload) {
        let mut h = u64::from(event.0[0]);
        for _ in 0..256 {
            h = h.rotate_left(5) ^ h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
        sum.fetch_add(black_box(h) & 1, Ordering::Relaxed);
    }

    /// What consumes the events.
    #[derive(Clone, Copy)]
    enum Shape {
        OneSubscriber,
        Group,
        /// A group with key affinity; events keyed.
        KeyedGroup,
        /// One subscriber with `concurrency(MEMBERS)`; events keyed.
        Concurrent,
    }

    pub fn crier(events: u64) -> Duration {
        crier_with(Shape::Group, events)
    }

    pub fn crier_one_subscriber(events: u64) -> Duration {
        crier_with(Shape::OneSubscriber, events)
    }

    /// The group with key affinity, each event keyed by one of `KEYS` keys in turn (the
    /// publish pays for the key's `String`, as a user's would).
    pub fn crier_keyed(events: u64) -> Duration {
        crier_with(Shape::KeyedGroup, events)
    }

    /// One subscriber with `concurrency(MEMBERS)`, keyed as `crier_keyed`.
    pub fn crier_concurrent(events: u64) -> Duration {
        crier_with(Shape::Concurrent, events)
    }

    fn crier_with(shape: Shape, events: u64) -> Duration {
        let bus = crier::Bus::builder().capacity(CAPACITY).build().expect("valid options");
        let subscribers = match shape {
            Shape::Group | Shape::KeyedGroup => MEMBERS,
            Shape::OneSubscriber | Shape::Concurrent => 1,
        };
        let sums: Vec<_> = (0..subscribers).map(|_| Arc::new(AtomicU64::new(0))).collect();
        let subscriptions: Vec<_> = sums
            .iter()
            .map(|sum| {
                let sum = sum.clone();
                let handler = move |env: &crier::Envelope<Payload>| work(&sum, env);
                let builder = bus.subscriber::<Payload>();
                match shape {
                    Shape::OneSubscriber => builder.subscribe(handler),
                    Shape::Group => builder.group("workers").subscribe(handler),
                    Shape::KeyedGroup => builder.group("workers").key_affinity().subscribe(handler),
                    Shape::Concurrent => builder.concurrency(MEMBERS).subscribe(handler),
                }
                .expect("bus is open")
            })
            .collect();
        let keyed = matches!(shape, Shape::KeyedGroup | Shape::Concurrent);
        let keys: Vec<String> = (0..KEYS).map(|k| format!("key-{k}")).collect();
        let start = Instant::now();
        for n in 0..events {
            if keyed {
                let key = keys[n as usize % KEYS].clone();
                bus.message(Payload::new(n)).key(key).publish().expect("lossless");
            } else {
                bus.publish(Payload::new(n)).expect("lossless");
            }
        }
        bus.wait_idle(Duration::from_secs(600)).expect("drains");
        let elapsed = start.elapsed();
        drop(subscriptions);
        black_box(sums);
        elapsed
    }

    pub fn crossbeam_workers(events: u64) -> Duration {
        let (tx, rx) = crossbeam_channel::bounded::<Payload>(CAPACITY);
        let sums: Vec<_> = (0..MEMBERS).map(|_| Arc::new(AtomicU64::new(0))).collect();
        let threads: Vec<JoinHandle<()>> = sums
            .iter()
            .map(|sum| {
                let (rx, sum) = (rx.clone(), sum.clone());
                std::thread::spawn(move || {
                    for event in rx {
                        work(&sum, &event);
                    }
                })
            })
            .collect();
        let start = Instant::now();
        for n in 0..events {
            tx.send(Payload::new(n)).expect("connected");
        }
        drop(tx);
        for thread in threads {
            thread.join().expect("worker thread");
        }
        let elapsed = start.elapsed();
        black_box(sums);
        elapsed
    }
}

/// B9: request-reply, one requester asking one responder, one request at a time.
pub mod request {
    use super::*;

    /// The reply: the first byte of the query, squared.
    pub struct Reply(pub u64);

    fn answer(query: &Payload) -> Reply {
        let n = u64::from(query.0[0]);
        Reply(n * n)
    }

    pub const CRIER: Contender = Contender {
        name: "crier, pool responder",
        run: crier_pool,
    };
    pub const CRIER_THREAD: Contender = Contender {
        name: "crier, own-thread responder",
        run: crier_thread,
    };
    pub const PEERS: [Contender; 1] = [Contender {
        name: "crossbeam: a request channel, a bounded(1) reply channel per request",
        run: crossbeam,
    }];

    pub fn crier_pool(requests: u64) -> Duration {
        crier_with(crier::Dispatch::Pool, requests)
    }

    pub fn crier_thread(requests: u64) -> Duration {
        crier_with(crier::Dispatch::Thread, requests)
    }

    fn crier_with(dispatch: crier::Dispatch, requests: u64) -> Duration {
        let bus = crier::Bus::builder().capacity(CAPACITY).build().expect("valid options");
        let responder = bus
            .subscriber::<Payload>()
            .dispatch(dispatch)
            .respond(|q: &crier::Envelope<Payload>| answer(q))
            .expect("bus is open");
        let start = Instant::now();
        let mut sum = 0;
        for n in 0..requests {
            let reply = bus
                .request::<Payload, Reply>(Payload::new(n), Duration::from_secs(60))
                .expect("answered");
            sum += reply.0;
        }
        let elapsed = start.elapsed();
        black_box(sum);
        drop(responder);
        elapsed
    }

    pub fn crossbeam(requests: u64) -> Duration {
        type Request = (Payload, crossbeam_channel::Sender<Reply>);
        let (tx, rx) = crossbeam_channel::bounded::<Request>(CAPACITY);
        let responder = std::thread::spawn(move || {
            for (query, reply) in rx {
                let _ = reply.send(answer(&query));
            }
        });
        let start = Instant::now();
        let mut sum = 0;
        for n in 0..requests {
            let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
            tx.send((Payload::new(n), reply_tx)).expect("connected");
            sum += reply_rx.recv_timeout(Duration::from_secs(60)).expect("answered").0;
        }
        let elapsed = start.elapsed();
        black_box(sum);
        drop(tx);
        responder.join().expect("responder thread");
        elapsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every crier workload of B1–B3 runs to its end on a few events: each publish is
    /// accepted, each B1 receiver takes every event (it waits for each, so a lost one
    /// hangs the test), and each B2 run drains (`wait_idle`).
    #[test]
    fn the_crier_workloads_of_b1_to_b3_run_to_their_end() {
        let workloads = [
            pull::CRIER,
            pull::CRIER_AT_LEAST_ONCE,
            pull::CRIER_AT_LEAST_ONCE_ALONE,
            push::CRIER,
            push::CRIER_AT_LEAST_ONCE,
            push::CRIER_AT_LEAST_ONCE_ALONE,
            inline::CRIER,
            inline::CRIER_AT_LEAST_ONCE,
            inline::CRIER_AT_LEAST_ONCE_ALONE,
        ];
        for workload in workloads {
            (workload.run)(3_000);
        }
    }
}
