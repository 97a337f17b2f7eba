//! How much memory one frame of the exported graph needs in tract, counted by the allocator
//! (so independent of the machine's speed): the upsampling writes no nine-tap column buffer
//! and the decoder no concatenated tensor, which keeps a frame's working memory under four
//! full-resolution feature maps (at 256²: f32 3.5, int8 3.8). Written as deconv + concat,
//! the f32 graph needed 4.3.
//! And the frame arena (`large_blocks`) under the real graphs: from the third frame on,
//! every activation comes from the arena, nothing is mapped afresh, and the probabilities are
//! bit-identical to those of the first frame, which ran on freshly mapped blocks.
//! One test in this binary, so nothing else allocates while it measures.

// The trainer's test helpers: synthetic data, temp folders, the tiny recipe.
#[path = "../trainer/tests/common/mod.rs"]
mod common;

use indicatif::ProgressBar;
use vessel_runtime::alloc_count::{self, CountingAllocator};
use vessel_runtime::engine::Engine;
use vessel_runtime::large_blocks::{self, KEEP_SLACK};
use vessel_runtime::tta::Tta;
use vessel_trainer::data::{Dataset, Split};
use vessel_trainer::export::{self, Calibration, Int8Request, Int8Scope};
use vessel_trainer::model::SaUnetConfig;
use vessel_trainer::train;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const SIDE: u32 = 256;

/// Bytes allocated during one frame beyond what was live before it (after a frame that may
/// fill lazily built caches).
fn frame_working_bytes(engine: &mut Engine) -> usize {
    let image = vessel_runtime::bench::synthetic_fundus(SIDE, SIDE);
    let mut probabilities = vec![0.0; (SIDE * SIDE) as usize];
    engine.infer(&image, &mut probabilities).unwrap();
    let placement = engine.load_input(&image).unwrap();
    alloc_count::reset_peak();
    let before = alloc_count::stats().live_bytes;
    engine.run().unwrap();
    let peak = alloc_count::stats().peak_bytes;
    engine.read_output(&placement, &mut probabilities).unwrap();
    peak - before
}

/// Runs five frames on a freshly loaded engine (the first is recorded); checks the arena
/// replays the others exactly.
fn check_arena_replay(name: &str, engine: &mut Engine) {
    let image = vessel_runtime::bench::synthetic_fundus(SIDE, SIDE);
    let mut first = vec![0.0; (SIDE * SIDE) as usize];
    engine.infer(&image, &mut first).unwrap();
    let mut again = vec![0.0; first.len()];
    let mut fresh_after = Vec::new();
    for _ in 0..4 {
        engine.infer(&image, &mut again).unwrap();
        assert!(
            first
                .iter()
                .zip(&again)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{name}: a replayed frame's probabilities differ from the first frame's"
        );
        fresh_after.push(large_blocks::usage().fresh_mapped_bytes);
    }
    let usage = large_blocks::usage();
    eprintln!("{name}: {usage:?}");
    if cfg!(target_os = "linux") {
        assert!(usage.arena_blocks > 10, "{name}: {usage:?}");
        assert_eq!(
            fresh_after[1], fresh_after[3],
            "{name}: frames still map memory"
        );
        assert!(
            usage.mapped_bytes <= usage.peak_live_bytes + KEEP_SLACK,
            "{name}: {usage:?}"
        );
    }
}

#[test]
fn a_frame_needs_fewer_than_four_full_resolution_feature_maps() {
    // A full-width model, one epoch on synthetic images: only its shapes matter here.
    let data = common::temp_dir("graph-memory-data");
    common::write_generic_dataset(&data, 2, 32);
    let samples = Dataset::Generic { dir: data }.load(Split::Train).unwrap();
    let mut options = common::tiny_options(1);
    options.model = SaUnetConfig {
        dropblock_rate: 0.0,
        ..SaUnetConfig::default()
    };
    let base_width = options.model.base_width;
    let run = common::temp_dir("graph-memory-run");
    train::run(common::new_run(options, &samples, &samples, &run)).unwrap();
    let ckpt = run.join("last.ckpt");
    let bar = ProgressBar::hidden();
    let f32_path = run.join("f32.nnef.tgz");
    export::export_checkpoint(&ckpt, &f32_path, None, None, None, Tta::None, &bar).unwrap();
    let int8_path = run.join("int8.nnef.tgz");
    let request = Int8Request {
        method: Calibration::Percentile,
        scope: Int8Scope::BelowFullResolution,
        dataset: "synthetic".into(),
        samples: &samples,
    };
    export::export_checkpoint(
        &ckpt,
        &int8_path,
        Some(request),
        None,
        None,
        Tta::None,
        &bar,
    )
    .unwrap();

    // One full-resolution feature map: base width × side² f32.
    let map = base_width * (SIDE * SIDE) as usize * 4;
    for (name, path) in [("f32", &f32_path), ("int8", &int8_path)] {
        let mut engine = Engine::load(path, Some((SIDE, SIDE))).unwrap();
        check_arena_replay(name, &mut engine);
        let working = frame_working_bytes(&mut engine);
        let maps = working as f64 / map as f64;
        eprintln!("{name}: {working} bytes a frame = {maps:.2} full-resolution maps");
        assert!(maps < 4.0, "{name}: {maps:.2} full-resolution maps");
    }
}
