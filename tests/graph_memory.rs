//! How much memory one frame of the exported graph needs in tract, counted by the allocator
//! (so independent of the machine's speed): the upsampling writes no nine-tap column buffer
//! and the decoder no concatenated tensor, which keeps a frame's working memory under four
//! full-resolution feature maps (at 256²: f32 3.5, int8 3.8). Written as deconv + concat,
//! the f32 graph needed 4.3.
//! One test in this binary, so nothing else allocates while it measures.

// The trainer's test helpers: synthetic data, temp folders, the tiny recipe.
#[path = "../trainer/tests/common/mod.rs"]
mod common;

use indicatif::ProgressBar;
use vessel_runtime::alloc_count::{self, CountingAllocator};
use vessel_runtime::engine::Engine;
use vessel_trainer::data::{Dataset, Split};
use vessel_trainer::export::{self, Calibration, Int8Request, Int8Scope};
use vessel_trainer::model::SaUnetConfig;
use vessel_trainer::train;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

const SIDE: u32 = 256;

/// Bytes allocated during one frame beyond what was live before it (the second frame: the
/// first may fill lazily built caches).
fn frame_working_bytes(path: &std::path::Path) -> usize {
    let mut engine = Engine::load(path, Some((SIDE, SIDE))).unwrap();
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
    export::export_checkpoint(&ckpt, &f32_path, None, None, &bar).unwrap();
    let int8_path = run.join("int8.nnef.tgz");
    let request = Int8Request {
        method: Calibration::Percentile,
        scope: Int8Scope::BelowFullResolution,
        dataset: "synthetic".into(),
        samples: &samples,
    };
    export::export_checkpoint(&ckpt, &int8_path, Some(request), None, &bar).unwrap();

    // One full-resolution feature map: base width × side² f32.
    let map = base_width * (SIDE * SIDE) as usize * 4;
    for (name, path) in [("f32", &f32_path), ("int8", &int8_path)] {
        let working = frame_working_bytes(path);
        let maps = working as f64 / map as f64;
        eprintln!("{name}: {working} bytes a frame = {maps:.2} full-resolution maps");
        assert!(maps < 4.0, "{name}: {maps:.2} full-resolution maps");
    }
}
