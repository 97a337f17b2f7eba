//! The frame arena and the block recycler under the counting allocator, as the `vessel`
//! binary installs them: frames that repeat are replayed from the arena without mapping
//! anything, frames that change fall back without two live blocks ever sharing memory, and
//! the mapped total stays bounded by the live peak. Every block is filled with its own id
//! and checked when it is freed, so any overlap is caught.
//!
//! One test: the allocator's state is process-wide, and the steps depend on each other.

use std::collections::HashMap;

use vessel_runtime::alloc_count::CountingAllocator;
use vessel_runtime::large_blocks::{self, Frame, KEEP_SLACK, LARGE_BLOCK};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// One step of a frame: take block `id` of `bytes`, or free it.
#[derive(Clone, Copy, Debug)]
enum Step {
    Take(usize, usize),
    Free(usize),
}

/// Blocks alive across steps (and frames), each filled with its id.
#[derive(Default)]
struct Blocks(HashMap<usize, Vec<u64>>);

impl Blocks {
    fn run(&mut self, steps: &[Step]) {
        for &step in steps {
            match step {
                Step::Take(id, bytes) => {
                    let block = vec![id as u64; bytes / 8];
                    assert!(self.0.insert(id, block).is_none(), "block {id} taken twice");
                }
                Step::Free(id) => self.free(id),
            }
        }
    }

    fn free(&mut self, id: usize) {
        let block = self
            .0
            .remove(&id)
            .expect("freeing a block that is not alive");
        if let Some(at) = block.iter().position(|&word| word != id as u64) {
            panic!("block {id} was overwritten at word {at} while alive");
        }
    }
}

/// A U-Net-like frame: maps taken down a ladder of sizes, skips held until the way back up.
fn unet_frame(scale: usize) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut id = 0;
    let mut skips = Vec::new();
    let mut x = None;
    for level in 0..4 {
        let bytes = (scale * LARGE_BLOCK * 16) >> (2 * level);
        for _ in 0..3 {
            steps.push(Step::Take(id, bytes.max(LARGE_BLOCK)));
            if let Some(prev) = x.replace(id) {
                steps.push(Step::Free(prev));
            }
            id += 1;
        }
        skips.push(x.take().unwrap());
    }
    for (level, skip) in skips.into_iter().enumerate().rev() {
        let bytes = ((scale * LARGE_BLOCK * 16) >> (2 * level)).max(LARGE_BLOCK);
        steps.push(Step::Take(id, bytes + 4096 * level));
        steps.push(Step::Free(skip));
        if let Some(prev) = x.replace(id) {
            steps.push(Step::Free(prev));
        }
        id += 1;
    }
    steps.push(Step::Free(x.unwrap()));
    steps
}

fn takes(steps: &[Step]) -> usize {
    steps.iter().filter(|s| matches!(s, Step::Take(..))).count()
}

fn peak_bytes(steps: &[Step]) -> usize {
    let (mut live, mut peak, mut sizes) = (0usize, 0usize, HashMap::new());
    for &s in steps {
        match s {
            Step::Take(id, b) => {
                let b = b.div_ceil(4096) * 4096;
                sizes.insert(id, b);
                live += b;
                peak = peak.max(live);
            }
            Step::Free(id) => live -= sizes[&id],
        }
    }
    peak
}

fn frame(blocks: &mut Blocks, steps: &[Step]) {
    let _frame = Frame::begin();
    blocks.run(steps);
}

#[test]
fn frames_replay_from_the_arena_and_changes_never_share_memory() {
    if !cfg!(target_os = "linux") {
        return; // the system allocator serves everything elsewhere
    }
    let mut blocks = Blocks::default();
    let unet = unet_frame(4);
    let peak = peak_bytes(&unet);

    // First frame recorded, the arena planned at its end; then replayed with no new mapping.
    frame(&mut blocks, &unet);
    let planned = large_blocks::usage();
    assert!(planned.arena_bytes >= peak, "{planned:?} vs peak {peak}");
    assert!(
        planned.arena_bytes <= peak + peak / 4,
        "arena {} for a live peak of {peak}",
        planned.arena_bytes
    );
    for _ in 0..3 {
        frame(&mut blocks, &unet);
    }
    let replayed = large_blocks::usage();
    assert_eq!(replayed.arena_blocks, takes(&unet));
    assert_eq!(replayed.fresh_mapped_bytes, planned.fresh_mapped_bytes);
    assert_eq!(replayed.arena_bytes, planned.arena_bytes);

    // A different frame (another input size): the plan breaks at its first block, the frame
    // runs on mapped blocks, the next one is recorded, and the one after replays.
    let bigger = unet_frame(5);
    for _ in 0..3 {
        frame(&mut blocks, &bigger);
    }
    let usage = large_blocks::usage();
    assert_eq!(usage.arena_blocks, takes(&bigger));
    assert!(usage.arena_bytes >= peak_bytes(&bigger));

    // Same sizes, other lifetimes: recorded one after another (all at one place), replayed
    // all alive at once, so the recorded places overlap live blocks and the overlap check
    // must send them elsewhere; then recorded and replayed that way.
    let sizes: Vec<usize> = (0..12).map(|i| LARGE_BLOCK * (1 + i % 5)).collect();
    let one_by_one: Vec<Step> = (0..12)
        .flat_map(|id| [Step::Take(id, sizes[id]), Step::Free(id)])
        .collect();
    let all_at_once: Vec<Step> = (0..12)
        .map(|id| Step::Take(id, sizes[id]))
        .chain((0..12).rev().map(Step::Free))
        .collect();
    for steps in [
        &one_by_one,
        &one_by_one,
        &all_at_once,
        &all_at_once,
        &all_at_once,
    ] {
        frame(&mut blocks, steps);
    }
    assert_eq!(large_blocks::usage().arena_blocks, 12);
    frame(&mut blocks, &one_by_one);

    // A block that outlives its frame and is freed early in the next one (in the recorded
    // frame it was alive to the end, in replay its place is taken until it goes).
    let survivor = unet
        .iter()
        .rev()
        .find_map(|s| match s {
            Step::Free(id) => Some(*id),
            _ => None,
        })
        .unwrap();
    let held: Vec<Step> = unet
        .iter()
        .copied()
        .filter(|s| !matches!(s, Step::Free(id) if *id == survivor))
        .collect();
    let mut previous = None;
    for f in 1..=5 {
        let base = f * 1000;
        let mut steps: Vec<Step> = held
            .iter()
            .map(|&s| match s {
                Step::Take(id, b) => Step::Take(id + base, b),
                Step::Free(id) => Step::Free(id + base),
            })
            .collect();
        if let Some(p) = previous {
            steps.insert(3, Step::Free(p));
        }
        frame(&mut blocks, &steps);
        previous = Some(survivor + base);
    }
    blocks.free(previous.unwrap());
    assert!(blocks.0.is_empty());

    // Bounded: everything mapped is within the live peak plus the slack.
    let usage = large_blocks::usage();
    assert!(
        usage.mapped_bytes <= usage.peak_live_bytes + KEEP_SLACK,
        "{usage:?}"
    );

    // Low-memory mode: no arena, nothing kept; frames still run intact.
    large_blocks::set_keep(false);
    frame(&mut blocks, &unet);
    frame(&mut blocks, &unet);
    let usage = large_blocks::usage();
    assert_eq!((usage.arena_bytes, usage.kept_bytes), (0, 0), "{usage:?}");
}
