//! int8 export: a trained (tiny) model, calibrated and quantised, loads in tract and its
//! masks agree with the f32 export's.

// The trainer's test helpers: synthetic data, temp folders, the tiny recipe.
#[path = "../trainer/tests/common/mod.rs"]
mod common;

use indicatif::ProgressBar;
use vessel_runtime::engine::Engine;
use vessel_runtime::model_file::{ModelFile, Precision};
use vessel_runtime::tta::Tta;
use vessel_trainer::data::{Dataset, Split};
use vessel_trainer::eval::Predictor;
use vessel_trainer::export::{self, Calibration, Int8Request, Int8Scope};
use vessel_trainer::train;

// tract's AMX int8 kernel reads past its buffers: large blocks get readable bytes after them.
#[global_allocator]
static ALLOCATOR: vessel_runtime::alloc_count::PaddedSystem =
    vessel_runtime::alloc_count::PaddedSystem;

#[test]
fn int8_masks_agree_with_f32() {
    let data = common::temp_dir("int8-data");
    common::write_generic_dataset(&data, 4, 32);
    let samples = Dataset::Generic { dir: data }.load(Split::Train).unwrap();
    let run = common::temp_dir("int8-run");
    train::run(common::new_run(
        common::tiny_options(40),
        &samples,
        &samples,
        &run,
    ))
    .unwrap();
    let ckpt = run.join("best.ckpt");
    let bar = ProgressBar::hidden();
    let f32_path = run.join("f32.nnef.tgz");
    export::export_checkpoint(&ckpt, &f32_path, None, None, None, Tta::None, &bar).unwrap();
    // Fourteen 3×3 convs; the first conv of each of the three decoder blocks is written as
    // two (one per concatenated input), so 17 int8 convs in all, 12 below full resolution.
    for (method, scope, quantised_convs) in [
        (Calibration::MinMax, Int8Scope::All, 17),
        (Calibration::Percentile, Int8Scope::All, 17),
        (Calibration::Percentile, Int8Scope::BelowFullResolution, 12),
    ] {
        let int8_path = run.join(format!("int8-{method:?}-{scope:?}.nnef.tgz"));
        let request = Int8Request {
            method,
            scope,
            dataset: "synthetic".into(),
            samples: &samples,
        };
        let out = export::export_checkpoint(
            &ckpt,
            &int8_path,
            Some(request),
            None,
            None,
            Tta::None,
            &bar,
        )
        .unwrap();
        assert_eq!(out.metadata.precision, Precision::Int8);
        assert!(out
            .metadata
            .calibration
            .as_deref()
            .unwrap()
            .contains("4 images"));
        let file = ModelFile::read(&int8_path).unwrap();
        assert_eq!(file.metadata.precision, Precision::Int8);
        // One int8 input cast per quantised conv (input): the scope decides how many.
        let graph = String::from_utf8(file.entries["graph.nnef"].clone()).unwrap();
        assert_eq!(
            graph.matches("to = 'i8'").count(),
            quantised_convs,
            "{scope:?}"
        );

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
        eprintln!("{method:?} {scope:?}: mask agreement {agreement:.4}, max |Δp| {max_diff:.4}");
        assert!(
            agreement >= 0.98,
            "{method:?} {scope:?}: int8 agrees with f32 on {agreement}"
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
