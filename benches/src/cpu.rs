//! The process's CPU time, beside the clock: on a machine with fewer cores than
//! threads, a workload's wall time mixes its work with its scheduling (a contender
//! that waits more can cost more CPU and no more time), so the report prints both.

use std::time::Duration;

/// CPU time used by every thread of the process so far, those that exited included
/// (`CLOCK_PROCESS_CPUTIME_ID`, nanosecond resolution; `getrusage` and
/// `/proc/self/stat` count in scheduler ticks, too coarse for one run).
pub fn process_time() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `now` is a valid `timespec` for the call to write; the clock id is a
    // constant every Linux and macOS libc defines.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) };
    assert_eq!(status, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID) failed");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_on_another_thread_counts() {
        let before = process_time();
        let spun = std::thread::spawn(|| {
            let start = process_time();
            let mut x = 0_u64;
            // Spin until this process has used 20 ms more CPU: counted however the
            // thread is scheduled, and never timed against the clock.
            while process_time() - start < Duration::from_millis(20) {
                x = std::hint::black_box(x.wrapping_add(1));
            }
            x
        });
        assert!(spun.join().expect("spinner") > 0);
        assert!(process_time() - before >= Duration::from_millis(20));
    }
}
