//! A counting global allocator. Counting is per thread and off unless a thread turns it on,
//! so the server's threads (in the same process) are never counted, and the cost for
//! everything else is one thread-local read per allocation.
//!
//! With `sites` on, the first allocations on a counting thread also record a backtrace
//! (for `--alloc-sites`, which names the code that allocates).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};

pub struct Counting;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
    static SITES: Cell<bool> = const { Cell::new(false) };
    static IN_TRACE: Cell<bool> = const { Cell::new(false) };
    static TRACES: RefCell<Vec<(usize, String)>> = const { RefCell::new(Vec::new()) };
}

#[inline]
fn count(size: usize) {
    // `try_with`: the allocator also runs while thread locals are being torn down.
    let _ = ON.try_with(|on| {
        if on.get() {
            ALLOCS.with(|a| a.set(a.get() + 1));
            BYTES.with(|b| b.set(b.get() + size as u64));
            if SITES.with(Cell::get) {
                trace(size);
            }
        }
    });
}

#[cold]
fn trace(size: usize) {
    if IN_TRACE.with(Cell::get) {
        return;
    }
    IN_TRACE.with(|t| t.set(true));
    let bt = std::backtrace::Backtrace::force_capture().to_string();
    TRACES.with(|t| t.borrow_mut().push((size, bt)));
    IN_TRACE.with(|t| t.set(false));
}

// SAFETY: forwards every call to `System` unchanged; only counts on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A realloc counts as one allocation of the new size.
        count(new_size);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Counts allocations made by this thread while `f` runs: `(allocations, bytes)`.
pub fn measure<R>(f: impl FnOnce() -> R) -> (u64, u64, R) {
    let (a0, b0) = (ALLOCS.with(Cell::get), BYTES.with(Cell::get));
    ON.with(|on| on.set(true));
    let r = f();
    ON.with(|on| on.set(false));
    (ALLOCS.with(Cell::get) - a0, BYTES.with(Cell::get) - b0, r)
}

/// Runs `f` with counting and backtraces on; returns `(size, backtrace)` per allocation.
pub fn sites(f: impl FnOnce()) -> Vec<(usize, String)> {
    TRACES.with(|t| t.borrow_mut().clear());
    SITES.with(|s| s.set(true));
    let _ = measure(f);
    SITES.with(|s| s.set(false));
    TRACES.with(|t| std::mem::take(&mut *t.borrow_mut()))
}
