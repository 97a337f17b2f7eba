//! `vessel-train average`: the mean of several checkpoints' weights, written as a checkpoint
//! that evaluates and exports like any other, and refused inputs that leave nothing behind.

mod common;

use std::path::{Path, PathBuf};

use vessel_trainer::average::{average_checkpoints, Parameters};
use vessel_trainer::checkpoint;
use vessel_trainer::data::{Dataset, Split};
use vessel_trainer::model::SaUnetV2;
use vessel_trainer::train::{self, TrainState};

fn weights(ckpt: &Path) -> Parameters {
    common::checkpoint_weights(ckpt).1
}

/// Two one-epoch runs of the tiny recipe from different seeds: different weights.
fn two_runs(dir: &Path) -> [PathBuf; 2] {
    let data = dir.join("data");
    common::write_generic_dataset(&data, 4, 32);
    let samples = Dataset::Generic { dir: data }.load(Split::Train).unwrap();
    [1u64, 2].map(|seed| {
        let out = dir.join(format!("run{seed}"));
        let mut options = common::tiny_options(1);
        options.seed = seed;
        train::run(common::new_run(options, &samples, &samples, &out)).unwrap();
        out.join("last.ckpt")
    })
}

#[test]
fn the_average_is_the_mean_of_the_weights_and_names_its_sources() {
    let dir = common::temp_dir("average");
    let [a, b] = two_runs(&dir);
    let out = dir.join("mean.ckpt");
    let state = average_checkpoints(&[a.clone(), b.clone()], &out).unwrap();

    let (wa, wb, mean) = (weights(&a), weights(&b), weights(&out));
    assert_eq!(mean.len(), wa.len());
    let mut largest_gap = 0.0f32;
    for ((pa, pb), pm) in wa.iter().zip(&wb).zip(&mean) {
        assert_eq!(pm.0, pa.0, "shapes kept");
        for ((x, y), m) in pa.1.iter().zip(&pb.1).zip(&pm.1) {
            assert!((m - (x + y) / 2.0).abs() <= 1e-6, "{m} vs {x}, {y}");
            largest_gap = largest_gap.max((x - y).abs());
        }
    }
    assert!(
        largest_gap > 1e-3,
        "the two runs must differ for this test to mean anything"
    );

    // The record names both sources; the state is the last input's otherwise.
    assert_eq!(state.averaged_from.len(), 2);
    assert!(state.averaged_from[0].contains("run1") && state.averaged_from[1].contains("run2"));
    let saved = checkpoint::load::<TrainState>(&out).unwrap();
    assert_eq!(saved.state.averaged_from, state.averaged_from);
    assert!(
        saved.state.origin().contains("mean of the weights"),
        "{}",
        saved.state.origin()
    );
    // Its export says what the weights are.
    let exported = dir.join("mean.nnef");
    let outcome = vessel_trainer::export::export_checkpoint(
        &out,
        &exported,
        None,
        None,
        None,
        vessel_runtime::tta::Tta::None,
        &indicatif::ProgressBar::hidden(),
    )
    .unwrap();
    // trained_on stays one short sentence; where the weights came from is the lineage.
    assert_eq!(outcome.metadata.trained_on, saved.state.options.dataset);
    let lineage = outcome.metadata.lineage.join("\n");
    assert!(
        lineage.contains("the mean of") && lineage.contains("run2"),
        "{lineage}"
    );
    // No optimiser state: it is a model to evaluate or export, not a run to resume.
    let optimiser = burn::optim::AdamConfig::new().init();
    let err = saved
        .load_optimizer(optimiser)
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("cannot resume"), "{err}");
}

#[test]
fn refused_inputs_name_the_file_and_write_nothing() {
    let dir = common::temp_dir("average-refused");
    let [a, b] = two_runs(&dir);
    let out = dir.join("mean.ckpt");
    let message = |r: anyhow::Result<TrainState>| format!("{:#}", r.expect_err("refused"));

    let err = message(average_checkpoints(std::slice::from_ref(&a), &out));
    assert!(err.contains("at least two"), "{err}");

    let junk = dir.join("junk.ckpt");
    std::fs::write(&junk, b"not a checkpoint").unwrap();
    let err = message(average_checkpoints(&[a.clone(), junk], &out));
    assert!(err.contains("junk.ckpt"), "{err}");

    // Another architecture (base width 16 instead of 8).
    let narrow = dir.join("narrow.ckpt");
    let loaded = checkpoint::load::<TrainState>(&a).unwrap();
    let mut state = loaded.state.clone();
    state.options.model.base_width = 16;
    let device = vessel_trainer::backend::inference_device();
    checkpoint::save(
        &narrow,
        &state,
        SaUnetV2::new(&state.options.model, &device),
        None,
    )
    .unwrap();
    let err = message(average_checkpoints(&[a.clone(), narrow], &out));
    assert!(
        err.contains("narrow.ckpt") && err.contains("differs"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written by refused averages");

    // An existing file is never overwritten (here: one of the inputs).
    let before = std::fs::read(&b).unwrap();
    let err = message(average_checkpoints(&[a.clone(), b.clone()], &b));
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read(&b).unwrap(), before);
}
