//! End-to-end training behaviour on a tiny synthetic dataset: gradients flow (the model
//! overfits), checkpoints resume to the same next step, runs are never overwritten.

mod common;

use vessel_trainer::augment::Augment;
use vessel_trainer::checkpoint;
use vessel_trainer::data::{Dataset, Split};
use vessel_trainer::eval::{evaluate, Predictor};
use vessel_trainer::model::SaUnetV2;
use vessel_trainer::train::{self, TrainOptions, TrainRequest, TrainState};

/// burn's backend RNG (DropBlock, initialisation) is process-global: tests in this binary
/// that train take turns, or their random draws would interleave.
static BACKEND_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    BACKEND_RNG
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

use common::tiny_options;

/// The head conv's weights stored in a checkpoint.
fn head_weights(ckpt: &std::path::Path) -> Vec<f32> {
    let device = vessel_trainer::backend::inference_device();
    let c = checkpoint::load::<TrainState>(ckpt).unwrap();
    c.load_model(SaUnetV2::new(&c.state.options.model, &device))
        .unwrap()
        .head
        .weight
        .val()
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap()
}

fn tiny_samples(name: &str) -> Vec<vessel_trainer::data::Sample> {
    let dir = common::temp_dir(name);
    common::write_generic_dataset(&dir, 4, 32);
    Dataset::Generic { dir }.load(Split::Train).unwrap()
}

#[test]
fn tiny_model_overfits_a_tiny_dataset() {
    let _rng = rng_lock();
    let samples = tiny_samples("overfit-data");
    let out = common::temp_dir("overfit-run");
    let state = train::run(common::new_run(tiny_options(60), &samples, &samples, &out)).unwrap();
    let h = &state.history;
    let best_f1 = common::assert_overfits(h);
    assert!(best_f1 > h[0].val_f1 + 0.2);
    // Run folder contents.
    for f in ["last.ckpt", "best.ckpt", "metrics.csv", "curves.png"] {
        assert!(out.join(f).is_file(), "{f} written");
    }
    let csv = std::fs::read_to_string(out.join("metrics.csv")).unwrap();
    assert_eq!(csv.lines().count(), h.len() + 1);
    assert!(image::open(out.join("curves.png")).is_ok());

    // The best checkpoint evaluates to the recorded best validation F1.
    let (predictor, saved) = Predictor::from_checkpoint(&out.join("best.ckpt")).unwrap();
    assert_eq!(
        saved.patience.best_epoch,
        h.iter().position(|r| r.val_f1 == best_f1).unwrap() + 1
    );
    let bar = indicatif::ProgressBar::hidden();
    let report = evaluate(
        &mut predictor.as_fn(),
        &samples,
        "synthetic",
        0.5,
        vessel_runtime::tta::Tta::None,
        &[0.25, 0.5, 0.75],
        None,
        &bar,
    )
    .unwrap();
    // The sweep scores the same probabilities: at the report's threshold it is the report.
    assert_eq!(report.sweep.len(), 3);
    let at_half = &report.sweep[1];
    assert_eq!(at_half.threshold, 0.5);
    assert!((at_half.fov.f1 - report.fov.mean.f1).abs() < 1e-12);
    assert!((at_half.whole.mcc - report.whole.mean.mcc).abs() < 1e-12);
    // A higher threshold predicts fewer vessels: sensitivity never rises.
    assert!(report.sweep[0].fov.sensitivity >= at_half.fov.sensitivity);
    assert!(at_half.fov.sensitivity >= report.sweep[2].fov.sensitivity);
    assert!(
        (report.fov.mean.f1 - best_f1).abs() < 1e-6,
        "{} vs {best_f1}",
        report.fov.mean.f1
    );
    // Report JSON layout the issue asks for.
    let json = serde_json::to_value(&report).unwrap();
    for region in ["fov", "whole"] {
        for key in [
            "f1",
            "mcc",
            "jaccard",
            "auc",
            "accuracy",
            "sensitivity",
            "specificity",
        ] {
            assert!(json[region][key].is_number(), "{region}.{key}");
        }
        assert_eq!(json[region]["per_image"].as_array().unwrap().len(), 4);
        assert_eq!(json[region]["per_image"][0]["name"], "s0");
    }
}

#[test]
fn resume_continues_exactly_where_the_run_stopped() {
    let _rng = rng_lock();
    let samples = tiny_samples("resume-data");
    let (train_set, val_set) = samples.split_at(3);
    let mut opts = tiny_options(3);
    // Augmentation and DropBlock on: their randomness must be reproduced on resume too.
    opts.augment = Augment::default();
    opts.model.dropblock_rate = 0.15;
    opts.model.dropblock_size = 3;
    let request = |epochs: usize, out: &std::path::Path, resume: bool| TrainRequest {
        resume,
        ..common::new_run(
            TrainOptions {
                epochs,
                ..opts.clone()
            },
            train_set,
            val_set,
            out,
        )
    };
    let straight = common::temp_dir("resume-straight");
    let full = train::run(request(3, &straight, false)).unwrap();

    let stopped = common::temp_dir("resume-stopped");
    let first = train::run(request(1, &stopped, false)).unwrap();
    assert_eq!(first.epochs_done, 1);
    let resumed = train::run(request(3, &stopped, true)).unwrap();
    assert_eq!(resumed.epochs_done, 3);
    assert_eq!(resumed.steps_done, full.steps_done);
    for (a, b) in full.history.iter().zip(&resumed.history) {
        assert!(
            (a.train_loss - b.train_loss).abs() < 1e-6,
            "{} vs {}",
            a.train_loss,
            b.train_loss
        );
        assert!((a.val_loss - b.val_loss).abs() < 1e-6);
    }
    // Same weights at the end.
    let (wa, wb) = (
        head_weights(&straight.join("last.ckpt")),
        head_weights(&stopped.join("last.ckpt")),
    );
    for (a, b) in wa.iter().zip(&wb) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }
}

#[test]
fn a_resumed_run_can_continue_at_a_new_learning_rate() {
    let _rng = rng_lock();
    let samples = tiny_samples("resume-lr-data");
    let out = common::temp_dir("resume-lr-run");
    let req = |epochs, resume, rate| TrainRequest {
        resume,
        resume_learning_rate: rate,
        ..common::new_run(tiny_options(epochs), &samples[..3], &samples[3..], &out)
    };
    let first = train::run(req(1, false, None)).unwrap();
    assert_eq!(first.learning_rate, tiny_options(1).learning_rate);
    let before = head_weights(&out.join("last.ckpt"));

    let err = train::run(req(2, true, Some(-1.0)))
        .unwrap_err()
        .to_string();
    assert!(err.contains("learning rate"), "{err}");
    assert_eq!(head_weights(&out.join("last.ckpt")), before);

    // Rate 0 from epoch 2: recorded in the history, and the weights stop moving.
    let resumed = train::run(req(2, true, Some(0.0))).unwrap();
    assert_eq!(resumed.epochs_done, 2);
    assert_eq!(resumed.history[1].learning_rate, 0.0);
    assert_eq!(resumed.learning_rate, 0.0);
    assert_eq!(head_weights(&out.join("last.ckpt")), before);
}

#[test]
fn a_new_learning_rate_reopens_a_run_that_early_stopping_ended() {
    let _rng = rng_lock();
    let samples = tiny_samples("reopen-data");
    let out = common::temp_dir("reopen-run");
    let req = |epochs, resume, rate| {
        let mut options = tiny_options(epochs);
        options.early_stop_patience = 1;
        TrainRequest {
            resume,
            resume_learning_rate: rate,
            ..common::new_run(options, &samples[..3], &samples[3..], &out)
        }
    };
    train::run(req(1, false, None)).unwrap();
    // At rate 0 the score cannot improve, so one epoch of patience ends the run.
    let stopped = train::run(req(4, true, Some(0.0))).unwrap();
    assert!(stopped.finished);
    assert_eq!(stopped.epochs_done, 2);
    // Resuming at the same rate keeps it stopped; a new rate trains again.
    assert_eq!(train::run(req(4, true, Some(0.0))).unwrap().epochs_done, 2);
    let reopened = train::run(req(3, true, Some(1e-4))).unwrap();
    assert_eq!(reopened.epochs_done, 3);
    assert_eq!(reopened.history[2].learning_rate, 1e-4);
}

#[test]
fn an_existing_run_is_never_overwritten() {
    let _rng = rng_lock();
    let samples = tiny_samples("overwrite-data");
    let out = common::temp_dir("overwrite-run");
    let req = |resume| TrainRequest {
        resume,
        ..common::new_run(tiny_options(1), &samples[..2], &samples[2..], &out)
    };
    train::run(req(false)).unwrap();
    assert!(
        !out.join("train.lock").exists(),
        "the lock is released after a run"
    );
    let before = std::fs::read(out.join("last.ckpt")).unwrap();
    let err = train::run(req(false)).unwrap_err().to_string();
    assert!(err.contains("--resume"), "{err}");
    assert_eq!(std::fs::read(out.join("last.ckpt")).unwrap(), before);

    // A live process holding the folder (this one): refused, even with --resume.
    std::fs::write(out.join("train.lock"), std::process::id().to_string()).unwrap();
    let err = train::run(req(true)).unwrap_err().to_string();
    assert!(err.contains("being trained by process"), "{err}");
    // A stale lock (no such process) is taken over.
    std::fs::write(out.join("train.lock"), "999999999").unwrap();
    let resumed = train::run(TrainRequest {
        options: TrainOptions {
            epochs: 2,
            ..tiny_options(2)
        },
        ..req(true)
    })
    .unwrap();
    assert_eq!(resumed.epochs_done, 2);
}

/// The error loading `path` as a training checkpoint gives (the test fails if it loads).
fn load_error(path: &std::path::Path) -> String {
    match checkpoint::load::<TrainState>(path) {
        Ok(_) => panic!("{} loaded as a checkpoint", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn broken_checkpoints_are_named_errors() {
    let _rng = rng_lock();
    let dir = common::temp_dir("broken-ckpt");
    let garbage = dir.join("garbage.ckpt");
    std::fs::write(&garbage, b"not a checkpoint at all").unwrap();
    let err = load_error(&garbage);
    assert!(
        err.contains("garbage.ckpt") && err.contains("magic"),
        "{err}"
    );

    // A real checkpoint cut short.
    let samples = tiny_samples("broken-ckpt-data");
    let out = dir.join("run");
    train::run(common::new_run(
        tiny_options(1),
        &samples[..2],
        &samples[2..],
        &out,
    ))
    .unwrap();
    let bytes = std::fs::read(out.join("last.ckpt")).unwrap();
    let cut = dir.join("cut.ckpt");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_error(&cut);
    assert!(
        err.contains("cut.ckpt") && err.contains("truncated"),
        "{err}"
    );
    let missing = dir.join("missing.ckpt");
    let err = Predictor::from_checkpoint(&missing)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("missing.ckpt"), "{err}");
}

#[test]
fn fine_tuning_starts_from_the_given_weights() {
    let _rng = rng_lock();
    let samples = tiny_samples("init-from-data");
    let run = |options: TrainOptions, out: &std::path::Path| {
        train::run(common::new_run(options, &samples[..3], &samples[3..], out))
    };
    let source = common::temp_dir("init-from-source");
    run(tiny_options(2), &source).unwrap();
    // Learning rate 0: one epoch leaves the weights as they came in, so the new run's
    // checkpoint holds exactly the source's weights (a random start would not).
    let tuned = common::temp_dir("init-from-tuned");
    let mut options = tiny_options(1);
    options.learning_rate = 0.0;
    options.seed = 7;
    options.init_from = Some(source.join("last.ckpt"));
    let state = run(options.clone(), &tuned).unwrap();
    assert_eq!(state.epochs_done, 1, "a fresh run: its own epoch count");
    assert_eq!(
        state.options.init_from.as_deref(),
        Some(source.join("last.ckpt").as_path())
    );
    assert_eq!(
        state.options.init_origin.as_deref(),
        Some("synthetic (2 epochs)")
    );
    assert_eq!(
        head_weights(&source.join("last.ckpt")),
        head_weights(&tuned.join("last.ckpt"))
    );

    // A checkpoint of another architecture is refused by name.
    options.model.base_width += 8;
    let err = run(options, &common::temp_dir("init-from-mismatch")).unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("--init-from") && err.contains("differs"),
        "{err}"
    );
}

#[test]
fn crop_training_takes_more_smaller_steps_learns_and_rejects_bad_sizes() {
    let _rng = rng_lock();
    let samples = tiny_samples("crop-data");
    let (train_set, val_set) = samples.split_at(3);
    let mut opts = tiny_options(40);
    opts.crop = Some(16);
    // The step counts below are for the whole run: no early stop.
    opts.early_stop_patience = 1000;
    assert_eq!(opts.crops_per_image(), 4);
    let out = common::temp_dir("crop-run");
    let state = train::run(common::new_run(opts.clone(), train_set, val_set, &out)).unwrap();
    // 3 images × 4 windows, batch 2: 6 steps an epoch.
    assert_eq!(state.steps_done, 40 * 6);
    let h = &state.history;
    assert!(
        h.last().unwrap().train_loss < h[0].train_loss * 0.6,
        "loss fell from {} to {}",
        h[0].train_loss,
        h.last().unwrap().train_loss
    );
    // Validated on whole images: the best beats the first epoch clearly.
    let best_f1 = h.iter().map(|r| r.val_f1).fold(0.0, f64::max);
    assert!(
        best_f1 > h[0].val_f1 + 0.2,
        "F1 {} -> {best_f1}",
        h[0].val_f1
    );
    // The crop is part of the run: a resumed run keeps training on crops.
    let resumed = train::run(TrainRequest {
        resume: true,
        ..common::new_run(tiny_options(41), train_set, val_set, &out)
    })
    .unwrap();
    assert_eq!(resumed.options.crop, Some(16));
    assert_eq!(resumed.steps_done, 41 * 6);

    for bad in [0, 12, 40] {
        let mut o = tiny_options(1);
        o.crop = Some(bad);
        let err = train::run(common::new_run(
            o,
            train_set,
            val_set,
            &common::temp_dir(&format!("crop-bad-{bad}")),
        ))
        .unwrap_err();
        assert!(format!("{err:#}").contains("--crop"), "{err:#}");
    }
}

#[test]
fn epoch_images_visits_the_training_set_repeatedly_and_survives_resume() {
    let _rng = rng_lock();
    let samples = tiny_samples("draws-data");
    let (train_set, val_set) = samples.split_at(3);
    let mut opts = tiny_options(2);
    opts.epoch_draws = Some(10);
    opts.augment = Augment {
        authors_colour: 0.5,
        ..Augment::default()
    };
    let out = common::temp_dir("draws-run");
    let state = train::run(common::new_run(opts, train_set, val_set, &out)).unwrap();
    // 10 draws from 3 images, batch 2: 5 steps an epoch.
    assert_eq!(state.steps_done, 2 * 5);
    let resumed = train::run(TrainRequest {
        resume: true,
        ..common::new_run(tiny_options(3), train_set, val_set, &out)
    })
    .unwrap();
    assert_eq!(resumed.options.epoch_draws, Some(10));
    assert_eq!(resumed.options.augment.authors_colour, 0.5);
    assert_eq!(resumed.steps_done, 3 * 5);

    let mut bad = tiny_options(1);
    bad.epoch_draws = Some(0);
    let err = train::run(common::new_run(
        bad,
        train_set,
        val_set,
        &common::temp_dir("draws-bad"),
    ))
    .unwrap_err();
    assert!(format!("{err:#}").contains("--epoch-images"), "{err:#}");
}
