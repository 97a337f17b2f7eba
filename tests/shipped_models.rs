//! The models shipped in `models/`: each loads, matches the content hash recorded in it and
//! in the model card, and reproduces its recorded test F1 (to 1e-3) when run by the
//! runtime's engine on `../shared/data` — DRIVE's test set for the DRIVE models, the STARE
//! fold they were tested on for the STARE models. Each int8 model's masks agree with its f32
//! twin's on at least 98% of FOV pixels of every test image.

#[path = "../trainer/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use vessel_runtime::engine::Engine;
use vessel_runtime::model_file::{content_hash, ModelFile, Precision};
use vessel_trainer::data::{Dataset, Split, StareProtocol};
use vessel_trainer::eval::evaluate;
use vessel_trainer::export::{fold_operating_point, nnef_f32};
use vessel_trainer::import::import_model;

// tract's AMX int8 kernel reads past its buffers: large blocks get readable bytes after them.
#[global_allocator]
static ALLOCATOR: vessel_runtime::alloc_count::PaddedSystem =
    vessel_runtime::alloc_count::PaddedSystem;

fn models_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn data_dir(dataset: &str) -> PathBuf {
    let data = common::shared_data_dir();
    assert!(
        data.join(dataset).is_dir(),
        "{dataset} not found under {} (set VESSEL_DATA_DIR)",
        data.display()
    );
    data
}

#[test]
#[ignore = "needs the DRIVE/STARE datasets in ../shared/data or $VESSEL_DATA_DIR (scripts/test.sh runs it)"]
fn shipped_drive_models_reproduce_their_recorded_scores() {
    let data = data_dir("DRIVE");
    let dataset = Dataset::Drive {
        root: data.join("DRIVE"),
    };
    check_model_pair("drive", &dataset, 20);
}

#[test]
#[ignore = "needs the DRIVE/STARE datasets in ../shared/data or $VESSEL_DATA_DIR (scripts/test.sh runs it)"]
fn shipped_stare_models_reproduce_their_recorded_scores() {
    let data = data_dir("STARE");
    // The fold the STARE models were held out from (their card and metadata name it).
    let protocol: StareProtocol = "kfold:5:0".parse().unwrap();
    let dataset = Dataset::Stare {
        root: data.join("STARE"),
        protocol,
    };
    check_model_pair("stare", &dataset, 4);
}

/// Each shipped f32 model read back into weights (`vessel-train import`) and exported again
/// at its operating point is the same model, bit for bit: a run that starts from a shipped
/// model (`train --init-from` an imported checkpoint) starts from exactly what ships.
#[test]
fn shipped_f32_models_import_and_export_again_unchanged() {
    for prefix in ["drive", "stare"] {
        let path = models_dir().join(format!("{prefix}-f32.nnef.tgz"));
        let meta = ModelFile::read(&path)
            .unwrap_or_else(|e| panic!("{e}"))
            .metadata;
        let mut model = import_model(&path).unwrap_or_else(|e| panic!("{e}")).model;
        if let Some(point) = meta.operating_point {
            model = fold_operating_point(model, point, meta.threshold).unwrap();
        }
        assert_eq!(
            content_hash(&nnef_f32(&model)),
            meta.content_hash,
            "{prefix}-f32 exported again"
        );
    }
}

/// `models/{prefix}-f32` and `-int8`: hash, size, recorded scores on `dataset`'s test
/// split, and int8/f32 mask agreement inside the FOV.
fn check_model_pair(prefix: &str, dataset: &Dataset, test_images: usize) {
    let samples = dataset.load(Split::Test).unwrap();
    assert_eq!(samples.len(), test_images);
    let card = std::fs::read_to_string(models_dir().join("README.md")).expect("models/README.md");

    let mut masks: Vec<Vec<Vec<u8>>> = Vec::new();
    for (precision, suffix) in [(Precision::F32, "f32"), (Precision::Int8, "int8")] {
        let name = format!("{prefix}-{suffix}");
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
        assert_eq!(recorded.dataset, dataset.describe(), "{name}");
        assert_eq!(recorded.images, test_images, "{name}");

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
            &dataset.describe(),
            threshold,
            vessel_runtime::tta::Tta::None,
            &[],
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
