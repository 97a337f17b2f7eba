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

/// The system allocator, with [`large_blocks::TAIL_PAD`] readable bytes after every block
/// from [`large_blocks::LARGE_BLOCK`] up, for programs that run tract without
/// [`CountingAllocator`] (the trainer's export and evaluation): glibc maps such blocks on
/// their own, and one can end at the last byte of its mapping, where tract's AMX int8
/// kernel, which reads a little past its buffers, faults. Costs 4 KiB a large block.
pub struct PaddedSystem;

/// The layout `PaddedSystem` asks the system for.
fn padded(size: usize, align: usize) -> Layout {
    let size = if size >= large_blocks::LARGE_BLOCK {
        size + large_blocks::TAIL_PAD
    } else {
        size
    };
    // SAFETY: `size` grew by at most a page from a valid layout's size with this alignment.
    unsafe { Layout::from_size_align_unchecked(size, align) }
}

unsafe impl GlobalAlloc for PaddedSystem {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: a valid, non-zero layout, only larger.
        unsafe { System.alloc(padded(layout.size(), layout.align())) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(padded(layout.size(), layout.align())) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the block was allocated with the same padded layout.
        unsafe { System.dealloc(ptr, padded(layout.size(), layout.align())) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = padded(layout.size(), layout.align());
        let new = padded(new_size, layout.align());
        // SAFETY: the block was allocated with `old`; `new` keeps the alignment.
        unsafe { System.realloc(ptr, old, new.size()) }
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

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// Readable bytes from `addr` to the end of the run of readable mappings holding it.
    fn readable_after(addr: usize) -> usize {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let mut ranges: Vec<(usize, usize)> = maps
            .lines()
            .filter(|l| {
                l.split_whitespace()
                    .nth(1)
                    .is_some_and(|p| p.starts_with('r'))
            })
            .filter_map(|l| {
                let (a, b) = l.split_whitespace().next()?.split_once('-')?;
                Some((
                    usize::from_str_radix(a, 16).ok()?,
                    usize::from_str_radix(b, 16).ok()?,
                ))
            })
            .collect();
        ranges.sort();
        let mut end = addr;
        for (start, stop) in ranges {
            if start <= end && end < stop {
                end = stop;
            }
        }
        end - addr
    }

    #[test]
    fn padded_blocks_have_readable_bytes_past_their_end() {
        let page = 4096;
        // Sizes that glibc serves from a mapping of their own, some ending within a few
        // bytes of it (one page short of 24 bytes leaves 8 there); small ones from its heap.
        let sizes = [
            64 * page - 24,
            64 * page - 16,
            64 * page,
            300 * page + 100,
            1000,
            100_000,
        ];
        for &size in &sizes {
            for align in [16, 64, 4096] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: a valid non-zero layout; the block is written within its size
                // and freed with the same layout.
                unsafe {
                    let p = PaddedSystem.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0);
                    p.write_bytes(7, size);
                    let spare = readable_after(p as usize + size);
                    if size >= large_blocks::LARGE_BLOCK {
                        assert!(spare >= large_blocks::TAIL_PAD, "{size}/{align}: {spare}");
                    }
                    // Grown past the threshold and back: contents kept, padding kept.
                    let big = 70 * page - 24;
                    let q = PaddedSystem.realloc(p, layout, big);
                    assert!(!q.is_null());
                    assert!(std::slice::from_raw_parts(q, size.min(big))
                        .iter()
                        .all(|&b| b == 7));
                    assert!(readable_after(q as usize + big) >= large_blocks::TAIL_PAD);
                    let big_layout = Layout::from_size_align(big, align).unwrap();
                    let r = PaddedSystem.realloc(q, big_layout, 1000);
                    assert!(!r.is_null());
                    assert!(std::slice::from_raw_parts(r, 1000.min(size))
                        .iter()
                        .all(|&b| b == 7));
                    PaddedSystem.dealloc(r, Layout::from_size_align(1000, align).unwrap());
                }
            }
        }
    }
}
