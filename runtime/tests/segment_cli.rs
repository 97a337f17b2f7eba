//! `vessel segment` end to end on the shipped default model: a batch with a corrupt file in
//! the middle completes, reports the bad file, and writes every result of the good ones.

use std::path::{Path, PathBuf};
use std::process::Command;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vessel-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// A small synthetic fundus (bright disc, darker branching lines).
fn fundus(path: &Path, w: u32, h: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let (dx, dy) = (x as f32 - w as f32 / 2.0, y as f32 - h as f32 / 2.0);
        let inside = dx * dx + dy * dy < (w.min(h) as f32 / 2.2).powi(2);
        let vessel = (x + y) % 23 < 2 || (x as i32 - 2 * y as i32).rem_euclid(31) < 2;
        match (inside, vessel) {
            (false, _) => image::Rgb([2, 1, 1]),
            (true, true) => image::Rgb([150, 40, 20]),
            (true, false) => image::Rgb([200, 100, 50]),
        }
    });
    img.save(path).unwrap();
}

#[test]
fn batch_skips_a_corrupt_file_and_finishes_the_rest() {
    let dir = temp_dir("batch");
    let inputs = dir.join("in");
    std::fs::create_dir_all(&inputs).unwrap();
    fundus(&inputs.join("a.png"), 96, 80);
    std::fs::write(inputs.join("b.png"), b"\x89PNG\r\n\x1a\nthis is not a PNG").unwrap();
    fundus(&inputs.join("c.jpg"), 72, 64);
    let out = dir.join("out");
    let status = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .current_dir(repo())
        .args(["segment", "--out"])
        .arg(&out)
        .arg(&inputs)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&status.stderr);
    let stdout = String::from_utf8_lossy(&status.stdout);
    // Exit status 2: some inputs were skipped, the batch itself completed.
    assert_eq!(status.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("b.png") && stderr.contains("skipped"),
        "{stderr}"
    );
    for name in [
        "a.mask.png",
        "a.overlay.png",
        "a.json",
        "c.mask.png",
        "c.overlay.png",
        "c.json",
        "summary.json",
        "summary.html",
    ] {
        assert!(out.join(name).is_file(), "{name} missing");
    }
    assert!(!out.join("b.json").exists());
    // No temporary files are left behind.
    for e in std::fs::read_dir(&out).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(!name.ends_with(".tmp"), "{name} left behind");
    }
    let mask = image::open(out.join("a.mask.png")).unwrap().to_luma8();
    assert_eq!(
        mask.dimensions(),
        (96, 80),
        "mask at the original resolution"
    );
    assert!(mask.pixels().all(|p| p[0] == 0 || p[0] == 255));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["succeeded"], 2);
    assert_eq!(summary["failed"], 1);
    assert!(summary["failures"][0]["source"]
        .as_str()
        .unwrap()
        .ends_with("b.png"));
    assert_eq!(summary["model"]["precision"], "int8");
    // The report says which operating point the mask stands for, as the model file does.
    let shipped =
        vessel_runtime::model_file::ModelFile::read(&repo().join("models/drive-int8.nnef.tgz"))
            .unwrap();
    assert_eq!(
        summary["model"]["operating_point"]
            .as_f64()
            .map(|v| v as f32),
        shipped.metadata.operating_point
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("a.json")).unwrap()).unwrap();
    let density = report["vessel_density_fov"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&density));
    assert_eq!(report["outputs"]["overlay"], "a.overlay.png");
    let html = std::fs::read_to_string(out.join("summary.html")).unwrap();
    assert_eq!(
        html.matches("data:image/png;base64,").count(),
        2,
        "one thumbnail per good image"
    );
    assert!(html.contains("b.png"), "the skipped file is listed");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn missing_model_and_bad_arguments_are_clear_errors() {
    let dir = temp_dir("badargs");
    let img = dir.join("x.png");
    fundus(&img, 32, 32);
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_vessel"))
            .current_dir(repo())
            .args(args)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (code, err) = run(&[
        "segment",
        "--model",
        "models/nope.nnef.tgz",
        img.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("models/nope.nnef.tgz: no such model"), "{err}");
    let (code, err) = run(&["segment", "--board", "pi3", img.to_str().unwrap()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("pi3") && err.contains("pi4"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn profile_reports_time_per_op_and_the_memory_peak() {
    // The shipped default model at a small size: quick, and a real graph.
    let out = Command::new(env!("CARGO_BIN_EXE_vessel"))
        .current_dir(repo())
        .args(["profile", "--size", "64", "--top-memory", "3"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("64x64"), "{stdout}");
    // The profiled run is served from the frame arena, as a frame is (after the warm-up
    // run recorded it): its 16-channel 64×64 maps are large blocks.
    let arena_blocks: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("tensors: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no arena line: {stdout}"));
    assert!(arena_blocks > 0, "{stdout}");
    let memory: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("live memory"))
        .skip(1)
        .collect();
    assert_eq!(memory.len(), 3, "{stdout}");
    // `BEFORE -> PEAK  OP NAME`, highest peak first, and a peak is never below what was live.
    let peaks: Vec<(f64, f64)> = memory
        .iter()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f[1], "->", "{l}");
            (f[0].parse().unwrap(), f[2].parse().unwrap())
        })
        .collect();
    assert!(
        peaks.iter().all(|(before, peak)| peak >= before),
        "{stdout}"
    );
    assert!(peaks.windows(2).all(|w| w[0].1 >= w[1].1), "{stdout}");
    // A 64×64 run holds several 16-channel 64×64 f32 maps at once (256 KiB each).
    assert!(peaks[0].1 > 0.5, "{stdout}");
}
