//! A global allocator that counts live bytes and their peak, for the memory scenario
//! (B6) and the heap bounds of `tests/memory_bounds.rs`.
//!
//! Install it in a binary with
//! `#[global_allocator] static ALLOC: crier_benches::alloc::Counting = crier_benches::alloc::Counting;`.
//! Counting costs one relaxed atomic add per allocation and per free, plus a relaxed
//! load per allocation for the peak, for every contender alike.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

fn grew(by: isize) {
    let live = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    if live > PEAK.load(Ordering::Relaxed) {
        PEAK.fetch_max(live, Ordering::Relaxed);
    }
}

/// The system allocator, counting.
pub struct Counting;

// SAFETY: every call forwards to `System` with the caller's arguments unchanged; the
// counter has no effect on the memory returned.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size() as isize);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        grew(layout.size() as isize);
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // Counted as a new block, then the old one freed: if the block moves, both are
        // live for a moment, and a peak must not miss that.
        grew(new_size as isize);
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

/// Bytes allocated and not yet freed, by every thread, since the program started.
/// Meaningful only where [`Counting`] is the global allocator.
pub fn live_bytes() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Runs `body` and returns the most bytes that were live at once while it ran, beyond
/// those live when it started. Allocations by other threads count too: measure one
/// thing at a time.
pub fn peak_growth(body: impl FnOnce()) -> isize {
    let before = live_bytes();
    PEAK.store(before, Ordering::Relaxed);
    body();
    PEAK.load(Ordering::Relaxed) - before
}
