//! The `vessel-train` command line, end to end: train → eval → JSON report, and clear
//! errors (never a panic) on bad input.

mod common;

use std::process::Command;

fn vessel_train() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vessel-train"))
}

/// `vessel-train train` on a generic dataset, one image held out, with extra arguments.
fn train(data: &std::path::Path, out: &std::path::Path, extra: &[&str]) -> std::process::Output {
    vessel_train()
        .args(["train", "--val-images", "1", "--dataset"])
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn train_then_eval_writes_checkpoints_and_a_json_report() {
    let data = common::temp_dir("cli-data");
    common::write_generic_dataset(&data, 4, 32);
    let out = common::temp_dir("cli-run").join("run");
    let status = train(&data, &out, &["--epochs", "2", "--input-size", "32"]);
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(stdout.contains("epoch   2/2"), "{stdout}");
    assert!(stdout.contains("3 images, 1 held out"), "{stdout}");

    // Again without --resume: refused, nothing overwritten.
    let before = std::fs::read(out.join("best.ckpt")).unwrap();
    let again = train(&data, &out, &["--epochs", "2", "--input-size", "32"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
    assert_eq!(std::fs::read(out.join("best.ckpt")).unwrap(), before);

    // --resume-or-new on an existing run resumes it: a longer run continues from epoch 3.
    let resumed = train(&data, &out, &["--epochs", "3", "--resume-or-new"]);
    let stdout = String::from_utf8_lossy(&resumed.stdout);
    assert!(
        resumed.status.success(),
        "{}",
        String::from_utf8_lossy(&resumed.stderr)
    );
    assert!(
        stdout.contains("epoch   3/3") && !stdout.contains("epoch   1/3"),
        "{stdout}"
    );

    // `eval` of the run's best checkpoint with extra arguments: its stdout and JSON report.
    let json = out.join("report.json");
    let eval_best = |extra: &[&str]| -> (String, serde_json::Value) {
        let eval = vessel_train()
            .args(["eval", "--dataset"])
            .arg(&data)
            .arg("--checkpoint")
            .arg(out.join("best.ckpt"))
            .arg("--json")
            .arg(&json)
            .args(extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&eval.stderr);
        assert!(eval.status.success(), "{stderr}");
        let report = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
        (String::from_utf8_lossy(&eval.stdout).to_string(), report)
    };
    let preds = out.join("predictions");
    let (stdout, report) = eval_best(&["--save-predictions", preds.to_str().unwrap()]);
    assert!(
        stdout.contains("inside FOV") && stdout.contains("whole image") && stdout.contains("mean"),
        "{stdout}"
    );
    assert_eq!(report["whole"]["per_image"].as_array().unwrap().len(), 4);
    assert!(report["fov"]["f1"].as_f64().unwrap() >= 0.0);
    let mask = image::open(preds.join("s0_mask.png")).unwrap().to_luma8();
    assert_eq!(mask.dimensions(), (32, 32));
    assert!(mask.pixels().all(|p| p[0] == 0 || p[0] == 255));
    assert!(preds.join("s0_prob.png").is_file());

    // Choosing an operating point: a sweep on named images, then an export that folds it in.
    let (stdout, report) = eval_best(&[
        "--train-split",
        "--images",
        "s1,s3",
        "--sweep",
        "0.3:0.7:0.2",
    ]);
    assert!(stdout.contains("threshold sweep"), "{stdout}");
    let names: Vec<&str> = report["fov"]["per_image"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["s1", "s3"]);
    let thresholds: Vec<f64> = report["sweep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["threshold"].as_f64().unwrap())
        .collect();
    assert_eq!(thresholds.len(), 3, "{thresholds:?}");
    assert!((thresholds[1] - 0.5).abs() < 1e-6);

    let model = out.join("op.nnef.tgz");
    let export = |point: &str| {
        vessel_train()
            .args(["export", "--checkpoint"])
            .arg(out.join("best.ckpt"))
            .arg("--out")
            .arg(&model)
            .args(["--operating-point", point])
            .output()
            .unwrap()
    };
    let bad = export("1.5");
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("--operating-point") && !err.contains("panicked"),
        "{err}"
    );
    assert!(!model.exists(), "nothing written for a refused export");
    let good = export("0.6");
    assert!(
        good.status.success(),
        "{}",
        String::from_utf8_lossy(&good.stderr)
    );
    let meta = vessel_runtime::model_file::ModelFile::read(&model)
        .unwrap()
        .metadata;
    assert_eq!(meta.operating_point, Some(0.6));
    assert_eq!(meta.threshold, 0.5);

    // A crop the network cannot take is refused before training starts.
    let cropped = train(
        &data,
        &common::temp_dir("cli-crop").join("run"),
        &["--crop", "12"],
    );
    assert_eq!(cropped.status.code(), Some(1));
    let err = String::from_utf8_lossy(&cropped.stderr);
    assert!(err.contains("--crop") && err.contains("12"), "{err}");
}

#[test]
fn bad_input_is_a_clear_error_not_a_panic() {
    let dir = common::temp_dir("cli-bad");
    let run = |args: &[&str]| {
        let o = vessel_train().args(args).output().unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).to_string(),
        )
    };
    let missing = dir.join("nope");
    let (code, err) = run(&[
        "train",
        "--dataset",
        missing.to_str().unwrap(),
        "--out",
        dir.join("r").to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("nope") && !err.contains("panicked"), "{err}");

    let ckpt = dir.join("junk.ckpt");
    std::fs::write(&ckpt, b"junk").unwrap();
    let (code, err) = run(&["eval", "--checkpoint", ckpt.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("junk.ckpt") && !err.contains("panicked"),
        "{err}"
    );

    let (code, err) = run(&[
        "import",
        "--model",
        ckpt.to_str().unwrap(),
        "--out",
        dir.join("imported.ckpt").to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("junk.ckpt") && !err.contains("panicked"),
        "{err}"
    );
    assert!(!dir.join("imported.ckpt").exists());

    let (code, err) = run(&["bench", "--size", "30"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("multiple of 8"), "{err}");
}
