//! A counting global allocator: how many allocations happen and how much memory is live at
//! peak. The `vessel` binary installs it (`#[global_allocator]`) to check the memory budget
//! and report allocations per frame; the counters cost two atomic adds per allocation.
//! Large blocks go to the [`large_blocks`] recycler (which keeps RSS near the live peak),
//! the rest to the system allocator.

use crate::large_blocks;
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
        // SAFETY: forwarded unchanged to the recycler or the system allocator.
        let p = unsafe {
            if large_blocks::handles(layout.size(), layout.align()) {
                large_blocks::allocate(layout.size(), false)
            } else {
                System.alloc(layout)
            }
        };
        if !p.is_null() {
            ALLOCATIONS.fetch_add(1, Relaxed);
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged to the recycler or the system allocator.
        let p = unsafe {
            if large_blocks::handles(layout.size(), layout.align()) {
                large_blocks::allocate(layout.size(), true)
            } else {
                System.alloc_zeroed(layout)
            }
        };
        if !p.is_null() {
            ALLOCATIONS.fetch_add(1, Relaxed);
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: returned to whoever allocated it (`handles` depends on the layout alone).
        unsafe {
            if large_blocks::handles(layout.size(), layout.align()) {
                large_blocks::free(ptr, layout.size())
            } else {
                System.dealloc(ptr, layout)
            }
        };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let large = |size| large_blocks::handles(size, layout.align());
        if large(layout.size()) || large(new_size) {
            // Across owners (or between recycled blocks): a new block, the bytes, the old freed.
            // SAFETY: the caller guarantees a valid non-zero `new_size` for this alignment.
            let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
            // SAFETY: as `alloc`; both blocks are valid for the bytes copied.
            unsafe {
                let p = self.alloc(new_layout);
                if !p.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                return p;
            }
        }
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

/// Low-memory mode: freed large blocks are unmapped at once instead of kept, and no frame
/// arena is planned ([`large_blocks`]), so RSS follows live memory from moment to moment
/// rather than staying at its peak — at the cost of a page fault per 4 KiB of every block,
/// every frame. Returns false where large blocks are the system allocator's (not Linux).
pub fn release_large_blocks_eagerly() -> bool {
    large_blocks::set_keep(false);
    large_blocks::handles(large_blocks::LARGE_BLOCK, 1)
}
