//! The engine's frame loop under a counting allocator: no allocation in our code per frame,
//! and no growth of peak memory over 1000 frames. One test in this binary, so nothing else
//! allocates while it measures.

// The trainer's test helpers (temp folders).
#[path = "../trainer/tests/common/mod.rs"]
mod common;

use burn::module::Module;
use vessel_runtime::alloc_count::{self, CountingAllocator};
use vessel_runtime::engine::Engine;
use vessel_runtime::model_file::{ModelFile, Precision};
use vessel_trainer::backend::inference_device;
use vessel_trainer::export::{model_metadata, nnef_f32};
use vessel_trainer::model::{SaUnetConfig, SaUnetV2};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

#[test]
fn thousand_frames_without_our_allocations_or_growth() {
    let dir = common::temp_dir("engine-memory");
    let path = dir.join("m.nnef.tgz");
    let model = SaUnetV2::new(&SaUnetConfig::default(), &inference_device()).valid();
    let meta = model_metadata(
        &SaUnetConfig::default(),
        32,
        0.5,
        "synthetic".into(),
        0,
        Precision::F32,
    );
    ModelFile::write(&path, nnef_f32(&model), meta).unwrap();
    drop(model);

    let mut engine = Engine::load(&path, Some((32, 32))).unwrap();
    let image = vessel_runtime::bench::synthetic_fundus(30, 27);
    let mut probabilities = vec![0.0; 30 * 27];
    engine.infer(&image, &mut probabilities).unwrap();

    let mut ours = 0;
    // Preallocated: the measurement itself must not allocate inside the loop.
    let mut peaks = Vec::with_capacity(1000);
    for _ in 0..1000 {
        alloc_count::reset_peak();
        let a0 = alloc_count::stats().allocations;
        let placement = engine.load_input(&image).unwrap();
        let a1 = alloc_count::stats().allocations;
        engine.run().unwrap();
        let a2 = alloc_count::stats().allocations;
        engine.read_output(&placement, &mut probabilities).unwrap();
        let a3 = alloc_count::stats().allocations;
        ours += (a1 - a0) + (a3 - a2);
        assert!(a2 > a1, "the counter sees tract's allocations");
        peaks.push(alloc_count::stats().peak_bytes);
    }
    eprintln!(
        "peaks: {:?}",
        [0, 1, 9, 10, 50, 100, 300, 500, 700, 999].map(|i| peaks[i])
    );
    assert_eq!(ours, 0, "allocations in our frame code");
    let first = peaks[..10].iter().max().unwrap();
    let last = peaks[990..].iter().max().unwrap();
    assert!(
        last <= first,
        "peak live memory grew from {first} to {last} bytes"
    );
    assert!(probabilities.iter().all(|p| (0.0..=1.0).contains(p)));
}
