//! The models shipped in `models/`: each loads, matches the content hash recorded in it and
//! in the model card, and reproduces its recorded DRIVE test F1 (to 1e-3) when run by the
//! runtime's engine on `../shared/data`. The int8 model's masks agree with the f32 model's
//! on at least 98% of FOV pixels of every DRIVE test image.

#[path = "../trainer/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use vessel_runtime::engine::Engine;
use vessel_runtime::model_file::{ModelFile, Precision};
use vessel_trainer::data::{Dataset, Split};
use vessel_trainer::eval::evaluate;

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

#[test]
fn shipped_drive_models_reproduce_their_recorded_scores() {
    let data = common::shared_data_dir();
    assert!(
        data.join("DRIVE").is_dir(),
        "DRIVE not found under {} (set VESSEL_DATA_DIR)",
        data.display()
    );
    let samples = Dataset::Drive {
        root: data.join("DRIVE"),
    }
    .load(Split::Test)
    .unwrap();
    assert_eq!(samples.len(), 20);
    let card = std::fs::read_to_string(models_dir().join("README.md")).expect("models/README.md");

    let mut masks: Vec<Vec<Vec<u8>>> = Vec::new();
    for (name, precision) in [
        ("drive-f32", Precision::F32),
        ("drive-int8", Precision::Int8),
    ] {
        let path = models_dir().join(format!("{name}.nnef.tgz"));
        // Reading verifies the content against the hash in the metadata.
        let file = ModelFile::read(&path).unwrap_or_else(|e| panic!("{e}"));
        let meta = &file.metadata;
        assert_eq!(meta.precision, precision, "{name}");
        assert!(
            card.contains(&meta.content_hash),
            "models/README.md does not record {name}'s hash {}",
            meta.content_hash
        );
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size < 2 * 1024 * 1024, "{name} is {size} bytes");
        let recorded = meta.test_metrics.clone().expect("recorded test metrics");
        assert!(
            recorded.dataset.starts_with("DRIVE"),
            "{}",
            recorded.dataset
        );

        let mut engine = Engine::load(&path, None).unwrap();
        let threshold = meta.threshold;
        let mut probabilities = Vec::new();
        let report = evaluate(
            &mut |img: &image::RgbImage| {
                let p = engine.segment(img)?;
                probabilities.push(
                    p.iter()
                        .map(|&v| u8::from(v >= threshold))
                        .collect::<Vec<u8>>(),
                );
                Ok(p)
            },
            &samples,
            "DRIVE",
            threshold,
            None,
            &ProgressBar::hidden(),
        )
        .unwrap();
        assert!(
            (report.fov.mean.f1 - recorded.f1_fov).abs() < 1e-3,
            "{name}: F1 inside FOV {} vs recorded {}",
            report.fov.mean.f1,
            recorded.f1_fov
        );
        assert!(
            (report.whole.mean.f1 - recorded.f1_whole).abs() < 1e-3,
            "{name}: F1 whole image {} vs recorded {}",
            report.whole.mean.f1,
            recorded.f1_whole
        );
        masks.push(probabilities);
    }

    // int8 vs f32: the share of FOV pixels where the two masks agree, per image.
    for (i, sample) in samples.iter().enumerate() {
        let fov = &sample.fov.data;
        let (mut inside, mut same) = (0u64, 0u64);
        for ((&a, &b), &f) in masks[0][i].iter().zip(&masks[1][i]).zip(fov) {
            if f != 0 {
                inside += 1;
                same += u64::from(a == b);
            }
        }
        let agreement = same as f64 / inside as f64;
        assert!(
            agreement >= 0.98,
            "{}: int8 and f32 masks agree on {:.2}% of FOV pixels",
            sample.name,
            100.0 * agreement
        );
    }
}
