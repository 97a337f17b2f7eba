//! int8 export: a trained (tiny) model, calibrated and quantised, loads in tract and its
//! masks agree with the f32 export's.

use std::path::PathBuf;

use image::{GrayImage, Luma, Rgb, RgbImage};
use indicatif::ProgressBar;
use vessel_runtime::engine::Engine;
use vessel_runtime::model_file::{ModelFile, Precision};
use vessel_trainer::augment::Augment;
use vessel_trainer::data::{Dataset, Split};
use vessel_trainer::eval::Predictor;
use vessel_trainer::export::{self, Calibration, Int8Request};
use vessel_trainer::model::SaUnetConfig;
use vessel_trainer::train::{self, TrainOptions, TrainRequest};

fn temp_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Noisy reddish images with darker line "vessels", in the generic layout.
fn write_dataset(dir: &std::path::Path, count: u32, size: u32) {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    std::fs::create_dir_all(dir.join("labels")).unwrap();
    for seed in 0..count {
        let mut label = GrayImage::new(size, size);
        let img = RgbImage::from_fn(size, size, |x, y| {
            let vessel = (x + seed) % 7 == 0 || (y + 2 * seed) % 9 == 0 || x == y;
            let noise = ((x * 7919 + y * 104_729 + seed * 1_299_709) % 25) as i32 - 12;
            let shade = |v: i32| (v + noise).clamp(0, 255) as u8;
            if vessel {
                label.put_pixel(x, y, Luma([255]));
                Rgb([shade(180), shade(88), shade(50)])
            } else {
                Rgb([shade(196), shade(108), shade(58)])
            }
        });
        img.save(dir.join(format!("images/s{seed}.png"))).unwrap();
        label.save(dir.join(format!("labels/s{seed}.png"))).unwrap();
    }
}

#[test]
fn int8_masks_agree_with_f32() {
    let data = temp_dir("int8-data");
    write_dataset(&data, 4, 32);
    let samples = Dataset::Generic { dir: data }.load(Split::Train).unwrap();
    let run = temp_dir("int8-run");
    let mut options = TrainOptions::reference("synthetic".into(), 32);
    options.epochs = 40;
    options.learning_rate = 2e-3;
    options.augment = Augment::none();
    options.model = SaUnetConfig {
        base_width: 8,
        dropblock_rate: 0.0,
        ..SaUnetConfig::default()
    };
    train::run(TrainRequest {
        options,
        train: &samples,
        validation: &samples,
        out: run.clone(),
        resume: false,
        progress: false,
    })
    .unwrap();
    let ckpt = run.join("best.ckpt");
    let bar = ProgressBar::hidden();
    let f32_path = run.join("f32.nnef.tgz");
    export::export_checkpoint(&ckpt, &f32_path, None, None, &bar).unwrap();
    for method in [Calibration::MinMax, Calibration::Percentile] {
        let int8_path = run.join(format!("int8-{method:?}.nnef.tgz"));
        let request = Int8Request {
            method,
            dataset: "synthetic".into(),
            samples: &samples,
        };
        let out = export::export_checkpoint(&ckpt, &int8_path, Some(request), None, &bar).unwrap();
        assert_eq!(out.metadata.precision, Precision::Int8);
        assert!(out
            .metadata
            .calibration
            .as_deref()
            .unwrap()
            .contains("4 images"));
        let meta = ModelFile::read(&int8_path).unwrap().metadata;
        assert_eq!(meta.precision, Precision::Int8);

        let mut f32_engine = Engine::load(&f32_path, None).unwrap();
        let mut int8_engine = Engine::load(&int8_path, None).unwrap();
        let (mut agree, mut total, mut max_diff) = (0usize, 0usize, 0f32);
        for s in &samples {
            let a = f32_engine.segment(&s.image).unwrap();
            let b = int8_engine.segment(&s.image).unwrap();
            for (p, q) in a.iter().zip(&b) {
                agree += usize::from((*p >= 0.5) == (*q >= 0.5));
                total += 1;
                max_diff = max_diff.max((p - q).abs());
            }
        }
        let agreement = agree as f64 / total as f64;
        eprintln!("{method:?}: mask agreement {agreement:.4}, max |Δp| {max_diff:.4}");
        assert!(
            agreement >= 0.98,
            "{method:?}: int8 agrees with f32 on {agreement}"
        );
        assert!(
            max_diff > 0.0,
            "int8 must actually differ from f32 somewhere"
        );
    }
    // The f32 export itself still matches burn.
    let (predictor, _) = Predictor::from_checkpoint(&ckpt).unwrap();
    let mut f32_engine = Engine::load(&f32_path, None).unwrap();
    let a = predictor.predict(&samples[0].image);
    let b = f32_engine.segment(&samples[0].image).unwrap();
    assert!(a.iter().zip(&b).all(|(p, q)| (p - q).abs() <= 1e-4));
}
