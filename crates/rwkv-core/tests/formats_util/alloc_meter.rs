//! A counting global allocator for test binaries that bound what a reader may allocate:
//! include it with `#[path = "formats_util/alloc_meter.rs"] mod alloc_meter;` (it installs
//! itself as the binary's allocator) and wrap reads in [`held_during`].

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

// Net heap bytes allocated by each thread (the test harness runs tests on several threads) and
// their high-water mark. Signed: a thread may free blocks another allocated.
thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
}

struct CountingAlloc;

fn grew(n: usize) {
    let _ = LIVE.try_with(|live| {
        live.set(live.get().wrapping_add(n as isize));
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(live.get())));
    });
}

fn shrank(n: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().wrapping_sub(n as isize)));
}

unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            shrank(layout.size());
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// Runs `f` and returns its result with the most heap bytes this thread held at once beyond
/// what it held before (what `f` returns still counts: it is held at the end).
pub fn held_during<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(before));
    let out = f();
    let held = PEAK.with(Cell::get).wrapping_sub(before).max(0) as usize;
    (out, held)
}
