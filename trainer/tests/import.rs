//! `vessel-train import`: an exported f32 model read back into a checkpoint holds the
//! weights that were exported (the operating point unfolded), starts a run with
//! `--init-from`, and refused inputs name the file and write nothing.

mod common;

use std::path::{Path, PathBuf};

use vessel_runtime::model_file::{ModelFile, Precision};
use vessel_trainer::average::{numbered_parameters, parameters, with_parameters};
use vessel_trainer::checkpoint;
use vessel_trainer::data::{Dataset, Split};
use vessel_trainer::export::{
    dat_f32, fold_operating_point, model_metadata, nnef_f32, NnefEntries,
};
use vessel_trainer::import::{import_to_checkpoint, ImportError};
use vessel_trainer::model::{SaUnetConfig, SaUnetV2};
use vessel_trainer::train::{self, TrainState};

/// Base width 8 and 4 groups (not the default 8), so the import must find the group count.
fn config() -> SaUnetConfig {
    SaUnetConfig {
        base_width: 8,
        groups: 4,
        ..SaUnetConfig::default()
    }
}

/// A model whose every parameter element has its own value (GroupNorm's γ and β included,
/// which initialise to constants), so a misplaced weight shows.
fn distinct_model() -> SaUnetV2 {
    let device = vessel_trainer::backend::inference_device();
    let model = SaUnetV2::new(&config(), &device);
    let values = numbered_parameters(&model, |k| {
        (k.wrapping_mul(2_654_435_761) % 20_011) as f32 / 10_000.0 - 1.0
    });
    with_parameters(model, values)
}

/// Exports `model` at operating point 0.7 into `dir`, as `vessel-train export` would.
fn export(model: &SaUnetV2, dir: &Path, name: &str) -> PathBuf {
    let folded = fold_operating_point(model.clone(), 0.7, 0.5).unwrap();
    let mut metadata = model_metadata(&config(), 64, 0.5, "synthetic".into(), 12, Precision::F32);
    metadata.operating_point = Some(0.7);
    let path = dir.join(name);
    ModelFile::write(&path, nnef_f32(&folded), metadata).unwrap();
    path
}

#[test]
fn import_restores_the_exported_weights_and_starts_a_run() {
    let dir = common::temp_dir("import");
    let model = distinct_model();
    let file = export(&model, &dir, "model.nnef.tgz");
    let ckpt = dir.join("imported.ckpt");
    let state = import_to_checkpoint(&file, &ckpt).unwrap();

    let (saved, imported) = common::checkpoint_weights(&ckpt);
    let original = parameters(&model);
    assert_eq!(imported.len(), original.len());
    // The head's bias (the last parameter) went through the fold and back: f32 rounding.
    let last = original.len() - 1;
    for (i, ((shape_a, a), (shape_b, b))) in original.iter().zip(&imported).enumerate() {
        assert_eq!(shape_a, shape_b, "parameter {i}");
        for (x, y) in a.iter().zip(b) {
            if i == last {
                assert!((x - y).abs() < 1e-6, "head bias {x} vs {y}");
            } else {
                assert_eq!(x.to_bits(), y.to_bits(), "parameter {i}: {x} vs {y}");
            }
        }
    }
    assert_eq!(saved.options.model, config());
    assert_eq!(
        (
            saved.options.input_size,
            saved.options.threshold,
            saved.epochs_done
        ),
        (64, 0.5, 12)
    );
    assert!(checkpoint::load::<TrainState>(&ckpt)
        .unwrap()
        .load_optimizer(burn::optim::AdamConfig::new().init())
        .is_err());
    let origin = state.origin();
    assert!(
        origin.contains("synthetic (12 epochs, imported from") && origin.contains("model.nnef.tgz"),
        "{origin}"
    );

    // It starts a run (the run's own DropBlock settings may differ), which records it.
    let data = dir.join("data");
    common::write_generic_dataset(&data, 2, 32);
    let samples = Dataset::Generic { dir: data }.load(Split::Train).unwrap();
    let mut options = common::tiny_options(1);
    options.model = SaUnetConfig {
        dropblock_rate: 0.0,
        ..config()
    };
    options.init_from = Some(ckpt.clone());
    let out = dir.join("run");
    train::run(common::new_run(options, &samples, &samples, &out)).unwrap();
    let run = checkpoint::load::<TrainState>(&out.join("last.ckpt")).unwrap();
    let recorded = run.state.options.init_origin.unwrap();
    assert!(recorded.contains("imported from"), "{recorded}");
}

#[test]
fn refused_models_name_the_file_and_write_nothing() {
    let dir = common::temp_dir("import-refused");
    let model = distinct_model();
    let good = export(&model, &dir, "good.nnef.tgz");
    let out = dir.join("out.ckpt");
    let message = |r: Result<TrainState, ImportError>| r.expect_err("refused").to_string();
    let rewrite =
        |name: &str,
         edit: &dyn Fn(&mut NnefEntries, &mut vessel_runtime::model_file::ModelMetadata)| {
            let file = ModelFile::read(&good).unwrap();
            let (mut entries, mut metadata) = (file.entries, file.metadata);
            edit(&mut entries, &mut metadata);
            let path = dir.join(name);
            ModelFile::write(&path, entries, metadata).unwrap();
            path
        };

    let int8 = rewrite("int8.nnef.tgz", &|_, m| m.precision = Precision::Int8);
    let err = message(import_to_checkpoint(&int8, &out));
    assert!(
        err.contains("int8.nnef.tgz") && err.contains("quantised"),
        "{err}"
    );

    // A tensor of another shape than the graph declares.
    let reshaped = rewrite("reshaped.nnef.tgz", &|e, _| {
        e.insert(
            "enc2_first_conv_weight.dat".into(),
            dat_f32(&[2, 2], &[0.0; 4]),
        );
    });
    let err = message(import_to_checkpoint(&reshaped, &out));
    assert!(
        err.contains("reshaped.nnef.tgz")
            && err.contains("enc2_first_conv_weight.dat")
            && err.contains("shape"),
        "{err}"
    );

    let missing = rewrite("missing.nnef.tgz", &|e, _| {
        e.remove("head_weight.dat");
    });
    let err = message(import_to_checkpoint(&missing, &out));
    assert!(
        err.contains("head_weight.dat") && err.contains("missing"),
        "{err}"
    );

    // A graph this build does not write (an extra op).
    let edited = rewrite("edited.nnef.tgz", &|e, _| {
        let graph = String::from_utf8(e["graph.nnef"].clone()).unwrap();
        let graph = graph.replace("output = sigmoid(", "output = tanh(");
        e.insert("graph.nnef".into(), graph.into_bytes());
    });
    let err = message(import_to_checkpoint(&edited, &out));
    assert!(
        err.contains("edited.nnef.tgz") && err.contains("graph"),
        "{err}"
    );

    // Content that fails its recorded hash.
    let corrupt = dir.join("corrupt.nnef.tgz");
    let mut bytes = std::fs::read(&good).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&corrupt, bytes).unwrap();
    let err = message(import_to_checkpoint(&corrupt, &out));
    assert!(err.contains("corrupt.nnef.tgz"), "{err}");
    assert!(!out.exists(), "nothing written by refused imports");

    // An existing file is never overwritten.
    std::fs::write(&out, b"keep me").unwrap();
    let err = message(import_to_checkpoint(&good, &out));
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
}
