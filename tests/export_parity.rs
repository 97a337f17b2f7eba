//! Trainer → NNEF export → runtime engine (tract): the exported f32 graph computes what
//! burn computes, and model files protect their integrity.

// The trainer's test helpers (temp folders).
#[path = "../trainer/tests/common/mod.rs"]
mod common;

use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Distribution, Tensor};
use image::RgbImage;
use vessel_runtime::engine::Engine;
use vessel_runtime::model_file::{ModelFile, ModelMetadata, Precision};
use vessel_trainer::backend::training_device;
use vessel_trainer::eval::Predictor;
use vessel_trainer::export::{fold_operating_point, model_metadata, nnef_f32};
use vessel_trainer::loss::LossConfig;
use vessel_trainer::model::{SaUnetConfig, SaUnetV2};

/// A model whose every parameter (GroupNorm affine included) has moved off its
/// initialisation: a few large Adam steps on random data.
fn perturbed_model() -> SaUnetV2 {
    let device = training_device();
    device.seed(11);
    let mut model = SaUnetV2::new(&SaUnetConfig::default(), &device);
    let mut optim = AdamConfig::new().init();
    for _ in 0..3 {
        let x = Tensor::<4>::random([1, 3, 32, 32], Distribution::Default, &device);
        let y = Tensor::<4>::random([1, 1, 32, 32], Distribution::Bernoulli(0.2), &device);
        let loss = LossConfig::default().loss(model.forward(x), y);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(0.05, model, grads);
    }
    model
}

fn image(w: u32, h: u32, seed: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        let v = x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503) ^ seed.wrapping_mul(97);
        image::Rgb([(v % 251) as u8, (v / 7 % 253) as u8, (v / 13 % 241) as u8])
    })
}

fn metadata(input: u32) -> ModelMetadata {
    model_metadata(
        &SaUnetConfig::default(),
        input,
        0.5,
        "synthetic".into(),
        0,
        Precision::F32,
    )
}

#[test]
fn exported_f32_graph_matches_burn_to_1e_4() {
    let model = perturbed_model();
    let dir = common::temp_dir("parity");
    let path = dir.join("model.nnef.tgz");
    ModelFile::write(&path, nnef_f32(&model.clone().valid()), metadata(64)).unwrap();

    // Same canvas for both: a 64×64 network input holding a 60×45 image.
    let burn = Predictor::new(model.clone(), 64);
    let mut engine = Engine::load(&path, None).unwrap();
    assert_eq!(engine.input_size(), (64, 64));
    for seed in 0..2 {
        let img = image(60, 45, seed);
        let expected = burn.predict(&img);
        let mut got = vec![0.0; 60 * 45];
        engine.infer(&img, &mut got).unwrap();
        let max_diff = expected
            .iter()
            .zip(&got)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        eprintln!("max |burn - tract| = {max_diff:e}");
        assert!(max_diff <= 1e-4, "max |burn - tract| = {max_diff}");
        // Not a trivially constant output.
        let spread = got.iter().copied().fold(f32::NEG_INFINITY, f32::max)
            - got.iter().copied().fold(f32::INFINITY, f32::min);
        assert!(spread > 1e-3, "output spread {spread}");
    }
    // Another size: re-planned, still the same numbers (non-square input).
    engine.set_input_size(96, 72).unwrap();
    let img = image(90, 70, 5);
    let mut got = vec![0.0; 90 * 70];
    engine.infer(&img, &mut got).unwrap();
    // Burn's predictor uses a square canvas by default; compare on the same placement.
    let expected = burn.predict_on(&img, 96, 72);
    let max_diff = expected
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(max_diff <= 1e-4, "96x72: max diff {max_diff}");
}

#[test]
fn an_operating_point_moves_the_decision_and_keeps_the_ranking() {
    let model = perturbed_model().valid();
    let burn = Predictor::new(model.clone(), 64);
    let img = image(60, 45, 3);
    let raw = burn.predict(&img);
    // The network's own upper-quartile probability: a quarter of the pixels above it.
    let mut sorted = raw.clone();
    sorted.sort_by(f32::total_cmp);
    let point = sorted[sorted.len() * 3 / 4].clamp(0.01, 0.99);

    let folded = fold_operating_point(model, point, 0.5).unwrap();
    let dir = common::temp_dir("operating-point");
    let path = dir.join("model.nnef.tgz");
    let mut meta = metadata(64);
    meta.operating_point = Some(point);
    ModelFile::write(&path, nnef_f32(&folded), meta).unwrap();
    let mut engine = Engine::load(&path, None).unwrap();
    assert_eq!(engine.metadata.operating_point, Some(point));
    let mut got = vec![0.0; 60 * 45];
    engine.infer(&img, &mut got).unwrap();
    let logit = |p: f32| (p / (1.0 - p)).ln();
    let mut decided_apart = 0;
    for (&p, &q) in raw.iter().zip(&got) {
        // logit(q) = logit(p) − logit(point), to the parity tolerance in logits.
        if p > 1e-4 && p < 1.0 - 1e-4 {
            let want = logit(p) - logit(point);
            assert!(
                (logit(q) - want).abs() < 1e-2,
                "p {p} q {q}: logit {} vs {want}",
                logit(q)
            );
        }
        if (q >= 0.5) != (p >= point) {
            decided_apart += 1;
        }
    }
    // Ties at the boundary aside, the new mask at 0.5 is the old mask at the point.
    assert!(
        decided_apart <= 2,
        "{decided_apart} pixels decided differently"
    );
    let moved = raw
        .iter()
        .zip(&got)
        .filter(|(&p, &q)| (p >= 0.5) != (q >= 0.5))
        .count();
    eprintln!(
        "operating point {point}: {moved} of {} pixels changed at 0.5",
        raw.len()
    );
    assert!(moved > 0, "the mask at 0.5 moved");
    for bad in [0.0, 1.0, -0.2, f32::NAN] {
        let err = fold_operating_point(perturbed_model().valid(), bad, 0.5).unwrap_err();
        assert!(err.to_string().contains("--operating-point"), "{err}");
    }
}

#[test]
fn model_files_are_checked_before_use() {
    let model = perturbed_model().valid();
    let dir = common::temp_dir("integrity");
    let archive = dir.join("m.nnef.tgz");
    let written = ModelFile::write(&archive, nnef_f32(&model), metadata(32)).unwrap();
    assert!(written.content_hash.starts_with("sha256:"));
    let read = ModelFile::read(&archive).unwrap();
    assert_eq!(read.metadata, written);

    // Directory form, same content hash.
    let folder = dir.join("m-dir");
    let as_dir = ModelFile::write(&folder, nnef_f32(&model), metadata(32)).unwrap();
    assert_eq!(as_dir.content_hash, written.content_hash);
    assert!(Engine::load(&folder, Some((32, 32))).is_ok());

    let err = |p: &std::path::Path| Engine::load(p, None).err().expect("must fail").to_string();
    // A flipped byte in a tensor: the hash catches it.
    let tensor = folder.join("head_weight.dat");
    let mut bytes = std::fs::read(&tensor).unwrap();
    *bytes.last_mut().unwrap() ^= 0x40;
    std::fs::write(&tensor, bytes).unwrap();
    let e = err(&folder);
    assert!(e.contains("m-dir") && e.contains("hash"), "{e}");

    // Truncated archive.
    let bytes = std::fs::read(&archive).unwrap();
    let cut = dir.join("cut.nnef.tgz");
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let e = err(&cut);
    assert!(e.contains("cut.nnef.tgz"), "{e}");

    // Metadata missing or unreadable.
    std::fs::remove_file(folder.join("vessel.json")).unwrap();
    let e = err(&folder);
    assert!(e.contains("vessel.json") && e.contains("missing"), "{e}");
    std::fs::write(folder.join("vessel.json"), b"{\"format\": 7}").unwrap();
    let e = err(&folder);
    assert!(e.contains("vessel.json"), "{e}");

    // Not a model at all, and a missing path.
    let junk = dir.join("junk.nnef.tgz");
    std::fs::write(&junk, b"hello").unwrap();
    assert!(err(&junk).contains("junk.nnef.tgz"));
    assert!(err(&dir.join("absent.nnef.tgz")).contains("absent.nnef.tgz"));
}
