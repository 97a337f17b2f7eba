//! A counting global allocator: how many allocations happen and how much memory is live at
//! peak. The `vessel` binary installs it (`#[global_allocator]`) to check the memory budget
//! and report allocations per frame; the counters cost two atomic adds per allocation.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

pub struct CountingAllocator;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Relaxed) + bytes;
    PEAK.fetch_max(live, Relaxed);
}

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            ALLOCATIONS.fetch_add(1, Relaxed);
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            ALLOCATIONS.fetch_add(1, Relaxed);
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            ALLOCATIONS.fetch_add(1, Relaxed);
            LIVE.fetch_sub(layout.size(), Relaxed);
            grew(new_size);
        }
        p
    }
}

/// A snapshot of the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocStats {
    /// Allocations (and reallocations) so far.
    pub allocations: usize,
    /// Bytes live now.
    pub live_bytes: usize,
    /// Most bytes live at once since the last [`reset_peak`].
    pub peak_bytes: usize,
}

pub fn stats() -> AllocStats {
    AllocStats {
        allocations: ALLOCATIONS.load(Relaxed),
        live_bytes: LIVE.load(Relaxed),
        peak_bytes: PEAK.load(Relaxed),
    }
}

/// Starts a new peak measurement from what is live now.
pub fn reset_peak() {
    PEAK.store(LIVE.load(Relaxed), Relaxed);
}

/// True when the counting allocator is the process's global allocator (it has counted
/// something).
pub fn is_installed() -> bool {
    let before = ALLOCATIONS.load(Relaxed);
    let probe = std::hint::black_box(Box::new(0u64));
    drop(probe);
    ALLOCATIONS.load(Relaxed) > before
}

/// Low-memory mode: large blocks (≥ 128 KiB: tract's activation tensors) are mapped and
/// unmapped on their own instead of carved from the heap, so freed activations go back to
/// the system at once and the process's RSS follows its live memory. glibc otherwise raises
/// that threshold as big blocks are freed and keeps them in a fragmented heap. Measured at
/// 592×592 on x86_64 with the shipped DRIVE models: f32 peak RSS 158–162 → 96 MB, int8
/// 156–201 → 110 MB, for about 113,000 more page faults per frame (10–15% of a frame's time
/// on a quiet host, more on a busy one).
/// Returns false where the C library has no such setting (non-glibc).
pub fn release_large_blocks_eagerly() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes allocator parameters; called before heavy allocation.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) == 1
                && libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024) == 1
        }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
