//! Large blocks (tract's activation tensors): a frame arena planned from a recorded frame,
//! and mapped blocks recycled outside it.
//!
//! tract allocates every op's output afresh and frees it after its last use, so one frame
//! takes and frees many times the model's live memory in a hundred-odd large blocks. Left to
//! glibc, those blocks live in a heap that fragments: the process's RSS ends near twice the
//! model's live memory. Mapping each block on its own and unmapping it at once
//! (`--low-memory`) keeps RSS at the live memory but costs a page fault per 4 KiB each time
//! (the figures: docs/performance.md).
//!
//! A frame's blocks come in the same order with the same sizes every frame (the plan is
//! fixed once the input size is), so the engine marks each frame ([`Frame`]) and:
//! - the first frame is **recorded**: each block's size and when it was taken and freed;
//! - at its end the blocks are **planned** into one arena, each at an offset no block alive
//!   at the same time overlaps (lowest offset that fits, the best of three orders; for
//!   SA-UNetv2 close to the most ever live at once), and the arena is mapped;
//! - later frames **replay**: the k-th block is the arena at the k-th offset — no system
//!   call, no page fault. A block whose size differs from the record, or whose place is
//!   still taken (checked every time), falls back to the mapped blocks below and the next
//!   frame is recorded again, so a changed graph costs one frame, never a wrong answer.
//!
//! Outside the arena (loading, a frame being recorded, fallbacks) a freed block is kept and
//! the next request reuses one, the closest in size, shrunk or grown to fit with `mremap`;
//! all mapped memory together never exceeds the most ever live at once plus [`KEEP_SLACK`]
//! (the smallest kept blocks are unmapped first). Low-memory mode keeps nothing and plans no
//! arena. Linux only (`mremap`); elsewhere [`handles`] is false and the system allocator
//! serves everything.

/// Blocks from this size up are ours; smaller ones stay with the system allocator, whose
/// heap serves them well. glibc maps blocks from 128 KiB up on their own, with as little as
/// no byte to spare at the end (see `TAIL_PAD`), so none of those is left to it.
pub const LARGE_BLOCK: usize = 128 * 1024;

/// Readable bytes kept after every large block: some matrix kernels (AMX tile loads in
/// tract's int8 one) read a little past a buffer, which inside a heap is harmless but off
/// the end of a mapping is a crash (found as a SIGSEGV in `avx512amx_mmm_i32_16x16`).
pub const TAIL_PAD: usize = 4096;

/// How far the mapped total may exceed the live peak before kept blocks are unmapped.
pub const KEEP_SLACK: usize = 4 * 1024 * 1024;

/// Whether a block of this layout is served here. The answer depends on the layout alone,
/// so a block is always freed by whoever allocated it.
#[inline]
pub fn handles(size: usize, align: usize) -> bool {
    cfg!(target_os = "linux") && size >= LARGE_BLOCK && align <= 4096
}

/// What the recycler holds now, for reports and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes mapped: the arena, live blocks outside it and kept ones.
    pub mapped_bytes: usize,
    /// The frame arena's size (0 while there is no plan).
    pub arena_bytes: usize,
    /// Blocks the last replayed frame took from the arena.
    pub arena_blocks: usize,
    /// Bytes kept for reuse (included in `mapped_bytes`).
    pub kept_bytes: usize,
    /// The most bytes live in large blocks at once.
    pub peak_live_bytes: usize,
    /// Fresh mappings and mappings grown: what costs page faults.
    pub fresh_mapped_bytes: usize,
}

/// Marks one frame of the engine (from before tract runs to after it returns), so that its
/// blocks can be recorded and replayed. Frames do not nest.
pub struct Frame(());

impl Frame {
    pub fn begin() -> Frame {
        frame_begin();
        Frame(())
    }
}

impl Drop for Frame {
    fn drop(&mut self) {
        frame_end();
    }
}

#[cfg(target_os = "linux")]
pub use linux::{allocate, free, set_keep, usage};
#[cfg(target_os = "linux")]
use linux::{frame_begin, frame_end};

#[cfg(not(target_os = "linux"))]
mod other {
    use super::Usage;
    pub unsafe fn allocate(_size: usize, _zeroed: bool) -> *mut u8 {
        std::ptr::null_mut()
    }
    pub unsafe fn free(_ptr: *mut u8, _size: usize) {}
    pub fn set_keep(_keep: bool) {}
    pub fn usage() -> Usage {
        Usage::default()
    }
    pub fn frame_begin() {}
    pub fn frame_end() {}
}
#[cfg(not(target_os = "linux"))]
pub use other::{allocate, free, set_keep, usage};
#[cfg(not(target_os = "linux"))]
use other::{frame_begin, frame_end};

#[cfg(target_os = "linux")]
mod linux {
    use super::{Usage, KEEP_SLACK, TAIL_PAD};
    use std::cell::UnsafeCell;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// Kept blocks at most; more are unmapped when freed.
    const KEPT_SLOTS: usize = 64;
    /// Blocks a recorded frame may take (more: no plan, the frame runs on mapped blocks).
    const MAX_RECORDS: usize = 512;
    /// Blocks alive at once in a recorded or replayed frame.
    const MAX_LIVE: usize = 128;
    /// "Not freed within the frame": the block outlives it (the engine's output).
    const NEVER: u32 = u32::MAX;

    #[derive(Clone, Copy)]
    struct Kept {
        ptr: usize,
        bytes: usize,
    }

    /// One block of a recorded frame: its size, the events that took and freed it, and its
    /// place in the arena once planned.
    #[derive(Clone, Copy)]
    struct Record {
        bytes: usize,
        born: u32,
        died: u32,
        offset: usize,
    }

    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Mode {
        /// Outside a frame, or a frame neither recorded nor replayed.
        Off,
        Record,
        Replay,
    }

    struct State {
        kept: [Kept; KEPT_SLOTS],
        kept_count: usize,
        mapped_bytes: usize,
        live_bytes: usize,
        peak_live_bytes: usize,
        fresh_mapped_bytes: usize,
        /// Off in low-memory mode: freed blocks are unmapped at once, no arena.
        keep: bool,

        mode: Mode,
        /// Allocation and free events so far in the frame being recorded.
        events: u32,
        records: [Record; MAX_RECORDS],
        record_count: usize,
        /// The recorded frame's live blocks: (address, record index).
        recorded_live: [(usize, usize); MAX_LIVE],
        recorded_live_count: usize,
        record_failed: bool,

        /// The planned arena: its mapping, the plan's length, and whether it still holds.
        arena: usize,
        arena_bytes: usize,
        plan_len: usize,
        plan_valid: bool,
        /// Blocks taken in the frame being replayed.
        replayed: usize,
        last_replayed: usize,
        /// Arena blocks alive now: (offset, bytes).
        arena_live: [(usize, usize); MAX_LIVE],
        arena_live_count: usize,
    }

    /// A spin lock: the allocator cannot allocate, and blocks are taken and returned a few
    /// hundred times a frame, so contention is negligible.
    struct Locked {
        busy: AtomicBool,
        state: UnsafeCell<State>,
    }

    // SAFETY: `state` is only touched while `busy` is held (see `with`).
    unsafe impl Sync for Locked {}

    const NO_BLOCK: Kept = Kept { ptr: 0, bytes: 0 };
    const NO_RECORD: Record = Record {
        bytes: 0,
        born: 0,
        died: NEVER,
        offset: 0,
    };
    static STATE: Locked = Locked {
        busy: AtomicBool::new(false),
        state: UnsafeCell::new(State {
            kept: [NO_BLOCK; KEPT_SLOTS],
            kept_count: 0,
            mapped_bytes: 0,
            live_bytes: 0,
            peak_live_bytes: 0,
            fresh_mapped_bytes: 0,
            keep: true,
            mode: Mode::Off,
            events: 0,
            records: [NO_RECORD; MAX_RECORDS],
            record_count: 0,
            recorded_live: [(0, 0); MAX_LIVE],
            recorded_live_count: 0,
            record_failed: false,
            arena: 0,
            arena_bytes: 0,
            plan_len: 0,
            plan_valid: false,
            replayed: 0,
            last_replayed: 0,
            arena_live: [(0, 0); MAX_LIVE],
            arena_live_count: 0,
        }),
    };
    static PAGE: AtomicUsize = AtomicUsize::new(0);

    fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
        while STATE
            .busy
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
        // SAFETY: the lock is held until the store below.
        let r = f(unsafe { &mut *STATE.state.get() });
        STATE.busy.store(false, Ordering::Release);
        r
    }

    fn page() -> usize {
        match PAGE.load(Ordering::Relaxed) {
            0 => {
                // SAFETY: sysconf has no preconditions.
                let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
                let p = if p > 0 { p as usize } else { 4096 };
                PAGE.store(p, Ordering::Relaxed);
                p
            }
            p => p,
        }
    }

    /// A block's size in whole pages, with at least [`TAIL_PAD`] bytes after its end.
    fn mapped_size(size: usize) -> usize {
        let p = page();
        (size + TAIL_PAD).div_ceil(p) * p
    }

    /// First-fit placement in the given order: each block at the lowest offset that no block
    /// placed before it and alive at the same time overlaps. Returns the arena's size.
    fn place(records: &[Record], order: &[u16], offsets: &mut [usize]) -> usize {
        let overlaps_in_time = |a: &Record, b: &Record| a.born < b.died && b.born < a.died;
        let mut arena_bytes = 0;
        for (placed_count, &i) in order.iter().enumerate() {
            let block = &records[i as usize];
            let placed = &order[..placed_count];
            let clashes = |offset: usize| {
                placed.iter().any(|&j| {
                    let (other, at) = (&records[j as usize], offsets[j as usize]);
                    overlaps_in_time(block, other)
                        && offset < at + other.bytes
                        && at < offset + block.bytes
                })
            };
            // The lowest free offset is 0 or the end of a block alive at the same time.
            let offset = std::iter::once(0)
                .chain(placed.iter().filter_map(|&j| {
                    let other = &records[j as usize];
                    overlaps_in_time(block, other).then_some(offsets[j as usize] + other.bytes)
                }))
                .filter(|&o| !clashes(o))
                .min()
                .unwrap_or(0);
            offsets[i as usize] = offset;
            arena_bytes = arena_bytes.max(offset + block.bytes);
        }
        arena_bytes
    }

    pub fn set_keep(keep: bool) {
        with(|s| {
            s.keep = keep;
            if !keep {
                s.unmap_all_kept();
                s.plan_valid = false;
                s.release_arena_if_unused();
            }
        });
    }

    pub fn usage() -> Usage {
        with(|s| Usage {
            mapped_bytes: s.mapped_bytes,
            arena_bytes: s.arena_bytes,
            arena_blocks: s.last_replayed,
            kept_bytes: s.kept[..s.kept_count].iter().map(|k| k.bytes).sum(),
            peak_live_bytes: s.peak_live_bytes,
            fresh_mapped_bytes: s.fresh_mapped_bytes,
        })
    }

    pub fn frame_begin() {
        with(|s| {
            s.replayed = 0;
            s.mode = if !s.keep {
                Mode::Off
            } else if s.plan_valid {
                Mode::Replay
            } else {
                s.events = 0;
                s.record_count = 0;
                s.recorded_live_count = 0;
                s.record_failed = false;
                Mode::Record
            };
        })
    }

    pub fn frame_end() {
        with(|s| {
            match s.mode {
                Mode::Record if !s.record_failed && s.record_count > 0 => s.make_plan(),
                Mode::Replay => {
                    // The frame ran from the arena: kept blocks would only hold memory.
                    s.last_replayed = s.replayed;
                    s.unmap_all_kept();
                }
                _ => {}
            }
            s.mode = Mode::Off;
        })
    }

    /// # Safety
    /// As `GlobalAlloc::alloc` for a layout that [`super::handles`].
    pub unsafe fn allocate(size: usize, zeroed: bool) -> *mut u8 {
        let bytes = mapped_size(size);
        with(|s| {
            let ptr = match s.take_from_arena(bytes) {
                Some(ptr) => {
                    if zeroed {
                        // SAFETY: `bytes` bytes of the arena, reserved for this block.
                        unsafe { std::ptr::write_bytes(ptr, 0, bytes) };
                    }
                    ptr
                }
                None => {
                    let ptr = s.reuse(bytes, zeroed).unwrap_or_else(|| s.map_fresh(bytes));
                    if !ptr.is_null() {
                        s.record_taken(ptr as usize, bytes);
                        s.trim();
                    }
                    ptr
                }
            };
            if !ptr.is_null() {
                s.live_bytes += bytes;
                s.peak_live_bytes = s.peak_live_bytes.max(s.live_bytes);
            }
            ptr
        })
    }

    /// # Safety
    /// As `GlobalAlloc::dealloc`, for a block from [`allocate`] of this size.
    pub unsafe fn free(ptr: *mut u8, size: usize) {
        let bytes = mapped_size(size);
        let addr = ptr as usize;
        with(|s| {
            s.live_bytes -= bytes;
            if s.arena != 0 && addr >= s.arena && addr < s.arena + s.arena_bytes {
                let offset = addr - s.arena;
                let live = &s.arena_live[..s.arena_live_count];
                if let Some(i) = live.iter().position(|&(o, _)| o == offset) {
                    s.arena_live_count -= 1;
                    s.arena_live.swap(i, s.arena_live_count);
                }
                if !s.plan_valid {
                    s.release_arena_if_unused();
                }
                return;
            }
            s.record_freed(addr);
            if s.keep && s.kept_count < KEPT_SLOTS {
                s.kept[s.kept_count] = Kept { ptr: addr, bytes };
                s.kept_count += 1;
                s.trim();
            } else {
                // SAFETY: a mapping of exactly `bytes` made here and no longer used.
                unsafe { libc::munmap(ptr.cast(), bytes) };
                s.mapped_bytes -= bytes;
            }
        })
    }

    impl State {
        /// The next block of a replayed frame, if it is the recorded size and its place is
        /// free; otherwise the plan no longer holds and the next frame is recorded again.
        fn take_from_arena(&mut self, bytes: usize) -> Option<*mut u8> {
            if self.mode != Mode::Replay {
                return None;
            }
            let k = self.replayed;
            self.replayed += 1;
            let fits = k < self.plan_len && self.records[k].bytes == bytes && {
                let offset = self.records[k].offset;
                self.arena_live_count < MAX_LIVE
                    && self.arena_live[..self.arena_live_count]
                        .iter()
                        .all(|&(o, b)| o + b <= offset || offset + bytes <= o)
            };
            if !fits {
                self.plan_valid = false;
                self.mode = Mode::Off;
                return None;
            }
            let offset = self.records[k].offset;
            self.arena_live[self.arena_live_count] = (offset, bytes);
            self.arena_live_count += 1;
            Some((self.arena + offset) as *mut u8)
        }

        fn record_taken(&mut self, addr: usize, bytes: usize) {
            if self.mode != Mode::Record || self.record_failed {
                return;
            }
            if self.record_count == MAX_RECORDS || self.recorded_live_count == MAX_LIVE {
                self.record_failed = true;
                return;
            }
            self.records[self.record_count] = Record {
                bytes,
                born: self.events,
                died: NEVER,
                offset: 0,
            };
            self.recorded_live[self.recorded_live_count] = (addr, self.record_count);
            self.recorded_live_count += 1;
            self.record_count += 1;
            self.events += 1;
        }

        fn record_freed(&mut self, addr: usize) {
            if self.mode != Mode::Record || self.record_failed {
                return;
            }
            let live = &self.recorded_live[..self.recorded_live_count];
            if let Some(i) = live.iter().position(|&(a, _)| a == addr) {
                let k = live[i].1;
                self.records[k].died = self.events;
                self.events += 1;
                self.recorded_live_count -= 1;
                self.recorded_live.swap(i, self.recorded_live_count);
            }
        }

        /// Places the recorded blocks in one arena, each at the lowest offset that no block
        /// alive at the same time overlaps, trying three orders (longest-lived first, largest
        /// first, largest lifetime × size first) and keeping the smallest arena; then maps it.
        /// No single order wins on every graph (docs/performance.md has SA-UNetv2's figures).
        /// Blocks that outlived the frame are taken as
        /// alive to its end; replay checks their places are free.
        fn make_plan(&mut self) {
            if self.arena_live_count > 0 {
                return; // the old arena is still in use: plan again next frame
            }
            let n = self.record_count;
            let records = &self.records[..n];
            let lifetime = |r: &Record| r.died.min(self.events) as u64 - r.born as u64;
            let keys: [&dyn Fn(&Record) -> u64; 3] =
                [&|r| lifetime(r), &|r| r.bytes as u64, &|r| {
                    lifetime(r) * r.bytes as u64
                }];
            let mut best = [0usize; MAX_RECORDS];
            let mut arena_bytes = usize::MAX;
            for key in keys {
                let mut order = [0u16; MAX_RECORDS];
                for (i, o) in order[..n].iter_mut().enumerate() {
                    *o = i as u16;
                }
                order[..n].sort_by_key(|&i| std::cmp::Reverse(key(&records[i as usize])));
                let mut offsets = [0usize; MAX_RECORDS];
                let bytes = place(records, &order[..n], &mut offsets);
                if bytes < arena_bytes {
                    arena_bytes = bytes;
                    best = offsets;
                }
            }
            for (r, &offset) in self.records[..n].iter_mut().zip(&best) {
                r.offset = offset;
            }
            self.release_arena_if_unused();
            // The arena replaces the kept blocks the recorded frame ran on.
            self.unmap_all_kept();
            let arena = self.map_fresh(arena_bytes);
            if arena.is_null() {
                return;
            }
            self.arena = arena as usize;
            self.arena_bytes = arena_bytes;
            self.plan_len = n;
            self.plan_valid = true;
        }

        fn release_arena_if_unused(&mut self) {
            if self.arena != 0 && self.arena_live_count == 0 {
                // SAFETY: the arena mapping, with no block in it alive.
                unsafe { libc::munmap(self.arena as *mut libc::c_void, self.arena_bytes) };
                self.mapped_bytes -= self.arena_bytes;
                self.arena = 0;
                self.arena_bytes = 0;
                self.plan_valid = false;
            }
        }

        /// A kept block resized to `bytes`: the smallest that is big enough, else the biggest.
        fn reuse(&mut self, bytes: usize, zeroed: bool) -> Option<*mut u8> {
            let kept = &self.kept[..self.kept_count];
            let fits = (0..kept.len())
                .filter(|&i| kept[i].bytes >= bytes)
                .min_by_key(|&i| kept[i].bytes);
            let i = fits.or_else(|| (0..kept.len()).max_by_key(|&i| kept[i].bytes))?;
            let Kept { ptr, bytes: had } = self.take_kept(i);
            let ptr = if had == bytes {
                ptr as *mut u8
            } else {
                // SAFETY: resizing our own unused mapping; it may move (its contents are junk).
                let moved = unsafe {
                    libc::mremap(ptr as *mut libc::c_void, had, bytes, libc::MREMAP_MAYMOVE)
                };
                if moved == libc::MAP_FAILED {
                    // SAFETY: the mapping is still ours and unused.
                    unsafe { libc::munmap(ptr as *mut libc::c_void, had) };
                    self.mapped_bytes -= had;
                    return None;
                }
                self.mapped_bytes = self.mapped_bytes - had + bytes;
                self.fresh_mapped_bytes += bytes.saturating_sub(had);
                moved.cast()
            };
            if zeroed {
                // SAFETY: `bytes` writable bytes, ours.
                unsafe { std::ptr::write_bytes(ptr, 0, had.min(bytes)) };
            }
            Some(ptr)
        }

        fn map_fresh(&mut self, bytes: usize) -> *mut u8 {
            // SAFETY: an anonymous private mapping; fresh pages read as zero.
            let ptr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    bytes,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if ptr == libc::MAP_FAILED {
                return std::ptr::null_mut();
            }
            self.mapped_bytes += bytes;
            self.fresh_mapped_bytes += bytes;
            ptr.cast()
        }

        fn take_kept(&mut self, i: usize) -> Kept {
            self.kept_count -= 1;
            self.kept.swap(i, self.kept_count);
            std::mem::replace(&mut self.kept[self.kept_count], NO_BLOCK)
        }

        fn unmap_all_kept(&mut self) {
            while self.kept_count > 0 {
                self.unmap_kept(self.kept_count - 1);
            }
        }

        fn unmap_kept(&mut self, i: usize) {
            let k = self.take_kept(i);
            // SAFETY: a kept mapping of exactly `k.bytes`, unused.
            unsafe { libc::munmap(k.ptr as *mut libc::c_void, k.bytes) };
            self.mapped_bytes -= k.bytes;
        }

        /// Unmaps the smallest kept blocks while the mapped total is over the live peak plus
        /// the slack (small blocks are the cheapest to map again).
        fn trim(&mut self) {
            let limit = self.peak_live_bytes + KEEP_SLACK;
            while self.mapped_bytes > limit && self.kept_count > 0 {
                let kept = &self.kept[..self.kept_count];
                let smallest = (0..kept.len()).min_by_key(|&i| kept[i].bytes).unwrap_or(0);
                self.unmap_kept(smallest);
            }
        }
    }
}
