//! A file-processing queue: every uploaded file is processed exactly once, by one of a
//! group of workers, and a worker stopped half-way loses nothing.
//!
//! - three workers join the consumer group `thumbnailers`: each `FileUploaded` goes to
//!   one of them, whichever is free;
//! - worker 2 is stopped once it has done a few files; the files still queued are the
//!   group's, so the other two finish them;
//! - the group's stats and each worker's add up to the uploads.
//!
//! `cargo run --example work_queue`

use std::collections::HashMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crier::{Bus, Envelope};

struct FileUploaded {
    id: u32,
    bytes: Vec<u8>,
}

/// Which worker made each file's thumbnail.
type Done = Arc<Mutex<HashMap<u32, Vec<usize>>>>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::new();
    let done: Done = Arc::default();
    let (progress, worker_2_progress) = mpsc::channel();

    let mut workers = Vec::new();
    for worker in 1..=3 {
        let done = done.clone();
        let progress = progress.clone();
        let sub = bus
            .subscriber::<FileUploaded>()
            .name(format!("worker-{worker}"))
            .group("thumbnailers")
            .subscribe(move |file: &Envelope<FileUploaded>| {
                // The "thumbnail": a checksum of the file, standing in for real work.
                let checksum = file
                    .bytes
                    .iter()
                    .fold(0_u32, |sum, b| sum.rotate_left(5) ^ u32::from(*b));
                std::hint::black_box(checksum);
                done.lock().unwrap().entry(file.id).or_default().push(worker);
                if worker == 2 {
                    let _ = progress.send(());
                }
            })?;
        workers.push(Some(sub));
    }

    let uploads = 2_000;
    for id in 0..uploads {
        bus.publish(FileUploaded {
            id,
            bytes: vec![(id % 251) as u8; 4_096],
        })?;
    }

    // Stop worker 2 once it has done 10 files (or when it has no more to do).
    for _ in 0..10 {
        if worker_2_progress.recv_timeout(Duration::from_secs(5)).is_err() {
            break;
        }
    }
    let stopped = workers[1].take().expect("worker 2 runs").unsubscribe();
    println!(
        "worker-2 stopped after {} files (dropped {}, handed over {})",
        stopped.delivered,
        stopped.dropped.total(),
        stopped.handed_over
    );

    bus.wait_idle(Duration::from_secs(10))?;

    let done = done.lock().unwrap();
    let twice = done.values().filter(|by| by.len() > 1).count();
    println!("{} of {uploads} files processed, {twice} processed twice", done.len());
    assert_eq!(done.len(), uploads as usize, "no file lost");
    assert_eq!(twice, 0, "no file processed twice");

    let mut per_worker: HashMap<usize, usize> = HashMap::new();
    for by in done.values() {
        *per_worker.entry(by[0]).or_default() += 1;
    }
    let mut per_worker: Vec<_> = per_worker.into_iter().collect();
    per_worker.sort_unstable();
    for (worker, files) in per_worker {
        println!("worker-{worker}: {files} files");
    }

    let stats = bus.stats();
    let group = stats.group("thumbnailers").expect("the group runs");
    assert!(group.is_balanced() && stats.subscribers.iter().all(|s| s.is_balanced()));
    println!();
    println!("{stats}");
    Ok(())
}
