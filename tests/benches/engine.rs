//! `cargo bench -p vessel-e2e`: the engine's whole frame path (preprocess → tract → crop) on
//! an exported SA-UNetv2 (random weights: speed does not depend on them), f32, int8 below
//! full resolution (what ships) and int8 throughout, at the paper's DRIVE size. Timing goals live here and in `vessel bench`, never in tests.

use std::path::PathBuf;

use burn::module::Module;
use criterion::{criterion_group, criterion_main, Criterion};
use vessel_runtime::bench::synthetic_fundus;
use vessel_runtime::engine::Engine;
use vessel_runtime::model_file::{ModelFile, Precision};
use vessel_trainer::backend::inference_device;
use vessel_trainer::export::{model_metadata, nnef_f32, nnef_int8, ActivationRange, Int8Scope};
use vessel_trainer::model::{SaUnetConfig, SaUnetV2};

const SIZE: u32 = 592;

fn models() -> Vec<(String, PathBuf)> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-models");
    std::fs::create_dir_all(&dir).unwrap();
    let model = SaUnetV2::new(&SaUnetConfig::default(), &inference_device()).valid();
    // Generous fixed ranges stand in for calibration: speed does not depend on them.
    let ranges = vec![
        ActivationRange {
            min: -4.0,
            max: 4.0
        };
        14
    ];
    let mut out = Vec::new();
    for (name, precision, entries) in [
        ("f32", Precision::F32, nnef_f32(&model)),
        (
            "int8",
            Precision::Int8,
            nnef_int8(&model, &ranges, Int8Scope::BelowFullResolution),
        ),
        (
            "int8-all-convs",
            Precision::Int8,
            nnef_int8(&model, &ranges, Int8Scope::All),
        ),
    ] {
        let path = dir.join(format!("sa-unet-{name}.nnef.tgz"));
        let meta = model_metadata(
            &SaUnetConfig::default(),
            SIZE,
            0.5,
            "random".into(),
            0,
            precision,
        );
        ModelFile::write(&path, entries, meta).unwrap();
        out.push((name.to_string(), path));
    }
    out
}

fn frame_path(c: &mut Criterion) {
    let image = synthetic_fundus(565, 584);
    let mut probabilities = vec![0.0; 565 * 584];
    let mut group = c.benchmark_group("segment_592x592_1thread");
    group.sample_size(10);
    for (name, path) in models() {
        let mut engine = Engine::load(&path, Some((SIZE, SIZE))).unwrap();
        group.bench_function(name, |b| {
            b.iter(|| engine.infer(&image, &mut probabilities).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, frame_path);
criterion_main!(benches);
