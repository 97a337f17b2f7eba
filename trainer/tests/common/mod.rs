//! Helpers shared by the trainer's integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use image::{GrayImage, Luma, Rgb, RgbImage};
use vessel_trainer::augment::Augment;
use vessel_trainer::data::Sample;
use vessel_trainer::model::SaUnetConfig;
use vessel_trainer::train::{TrainOptions, TrainRequest};

/// A fresh, empty folder under the target directory, unique to `name`.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A synthetic fundus-like image: a reddish background with pixel noise and slightly darker
/// "vessels" along a few lines that depend on `seed`, and its label. The contrast is low
/// enough that an untrained network does not separate them.
pub fn synthetic_pair(size: u32, seed: u32) -> (RgbImage, GrayImage) {
    let mut label = GrayImage::new(size, size);
    let img = RgbImage::from_fn(size, size, |x, y| {
        let vessel = (x + seed).is_multiple_of(7) || (y + 2 * seed).is_multiple_of(9) || x == y;
        // Deterministic pixel noise in [-12, 12].
        let noise = ((x * 7919 + y * 104_729 + seed * 1_299_709) % 25) as i32 - 12;
        let shade = |v: i32| (v + noise).clamp(0, 255) as u8;
        if vessel {
            label.put_pixel(x, y, Luma([255]));
            Rgb([shade(180), shade(88), shade(50)])
        } else {
            Rgb([shade(196), shade(108), shade(58)])
        }
    });
    (img, label)
}

/// Writes `count` synthetic samples in the generic layout (images/, labels/) under `dir`.
pub fn write_generic_dataset(dir: &Path, count: u32, size: u32) {
    std::fs::create_dir_all(dir.join("images")).unwrap();
    std::fs::create_dir_all(dir.join("labels")).unwrap();
    for i in 0..count {
        let (img, label) = synthetic_pair(size, i);
        img.save(dir.join(format!("images/s{i}.png"))).unwrap();
        label.save(dir.join(format!("labels/s{i}.png"))).unwrap();
    }
}

/// `../shared/data` beside the project root, or `$VESSEL_DATA_DIR`.
pub fn shared_data_dir() -> PathBuf {
    std::env::var_os("VESSEL_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
}

/// A small, fast, deterministic recipe for the synthetic 32×32 data: narrow model (base
/// width 8), no DropBlock, no augmentation.
pub fn tiny_options(epochs: usize) -> TrainOptions {
    let mut o = TrainOptions::reference("synthetic".into(), 32);
    o.epochs = epochs;
    o.batch_size = 2;
    o.learning_rate = 2e-3;
    o.augment = Augment::none();
    o.model = SaUnetConfig {
        base_width: 8,
        dropblock_rate: 0.0,
        ..SaUnetConfig::default()
    };
    o
}

/// A quiet (no progress bar) request for a new run in `out`. Tests that resume set
/// `resume` (and `resume_learning_rate`) on it with struct update syntax.
pub fn new_run<'a>(
    options: TrainOptions,
    train: &'a [Sample],
    validation: &'a [Sample],
    out: &Path,
) -> TrainRequest<'a> {
    TrainRequest {
        options,
        train,
        validation,
        out: out.to_path_buf(),
        resume: false,
        resume_learning_rate: None,
        progress: false,
    }
}

/// A checkpoint's training state and its model's parameters (visiting order).
pub fn checkpoint_weights(
    ckpt: &Path,
) -> (
    vessel_trainer::train::TrainState,
    vessel_trainer::average::Parameters,
) {
    let device = vessel_trainer::backend::inference_device();
    let c = vessel_trainer::checkpoint::load::<vessel_trainer::train::TrainState>(ckpt).unwrap();
    let model = c
        .load_model(vessel_trainer::model::SaUnetV2::new(
            &c.state.options.model,
            &device,
        ))
        .unwrap();
    (c.state, vessel_trainer::average::parameters(&model))
}

/// The tiny model learned its tiny data: the training loss at least halved and the best
/// validation F1 passed 0.9. Returns that best F1.
pub fn assert_overfits(history: &[vessel_trainer::train::EpochRecord]) -> f64 {
    let (first, last) = (&history[0], history.last().expect("at least one epoch"));
    assert!(
        last.train_loss < first.train_loss * 0.5,
        "loss fell from {} to {}",
        first.train_loss,
        last.train_loss
    );
    let best_f1 = history.iter().map(|r| r.val_f1).fold(0.0, f64::max);
    assert!(
        best_f1 > 0.9,
        "F1 rose only to {best_f1} (first {})",
        first.val_f1
    );
    best_f1
}
