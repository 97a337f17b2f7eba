//! Data loading: broken files are errors that name the file; the real datasets load with
//! their quirks handled.

mod common;

use vessel_runtime::metrics::Confusion;
use vessel_trainer::data::{split_validation, Dataset, Split, StareProtocol};

fn generic(name: &str) -> std::path::PathBuf {
    let dir = common::temp_dir(name);
    common::write_generic_dataset(&dir, 3, 16);
    dir
}

fn load_err(dir: &std::path::Path) -> String {
    Dataset::Generic {
        dir: dir.to_path_buf(),
    }
    .load(Split::Train)
    .expect_err("loading must fail")
    .to_string()
}

#[test]
fn generic_layout_loads_and_derives_fov_without_masks() {
    let dir = generic("generic-ok");
    let samples = Dataset::Generic { dir }.load(Split::Train).unwrap();
    assert_eq!(samples.len(), 3);
    assert!(samples.iter().all(|s| s.fov_derived && s.label.count() > 0));
}

#[test]
fn image_without_label_names_the_image() {
    let dir = generic("generic-nolabel");
    std::fs::remove_file(dir.join("labels/s1.png")).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("s1.png") && err.contains("label"), "{err}");
}

#[test]
fn label_without_image_names_the_label() {
    let dir = generic("generic-orphan");
    std::fs::copy(dir.join("labels/s0.png"), dir.join("labels/extra.png")).unwrap();
    let err = load_err(&dir);
    assert!(err.contains("extra.png"), "{err}");
}

#[test]
fn corrupt_image_names_the_file() {
    let dir = generic("generic-corrupt");
    std::fs::write(
        dir.join("images/s2.png"),
        b"\x89PNG\r\n\x1a\nthis is not really a png",
    )
    .unwrap();
    let err = load_err(&dir);
    assert!(err.contains("s2.png") && err.contains("decode"), "{err}");
    // Unknown format entirely.
    std::fs::write(dir.join("images/s2.png"), b"plain text").unwrap();
    let err = load_err(&dir);
    assert!(err.contains("s2.png"), "{err}");
}

#[test]
fn label_of_the_wrong_size_names_the_label() {
    let dir = generic("generic-size");
    image::GrayImage::new(15, 16)
        .save(dir.join("labels/s0.png"))
        .unwrap();
    let err = load_err(&dir);
    assert!(
        err.contains("labels/s0.png") && err.contains("15x16") && err.contains("16x16"),
        "{err}"
    );
}

#[test]
fn missing_dataset_folder_names_the_path() {
    let dir = common::temp_dir("no-such-dataset");
    let err = Dataset::Drive {
        root: dir.join("DRIVE"),
    }
    .load(Split::Test)
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("DRIVE") && err.contains("not found"), "{err}");
    let err = load_err(&dir.join("nothing-here"));
    assert!(err.contains("nothing-here"), "{err}");
}

#[test]
fn validation_split_is_seeded_and_disjoint() {
    let dir = common::temp_dir("split");
    common::write_generic_dataset(&dir, 6, 8);
    let samples = Dataset::Generic { dir }.load(Split::Train).unwrap();
    let (a_train, a_val) = split_validation(samples.clone(), 2, 1).unwrap();
    let (b_train, b_val) = split_validation(samples.clone(), 2, 1).unwrap();
    let names =
        |v: &[vessel_trainer::data::Sample]| v.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a_val), names(&b_val));
    assert_eq!(names(&a_train), names(&b_train));
    assert_eq!(a_train.len(), 4);
    assert!(a_val.iter().all(|v| !names(&a_train).contains(&v.name)));
    assert!(split_validation(samples, 6, 1).is_err());
}

/// The real datasets: their layouts and quirks. They live beside the project (CI has them);
/// the tests that read them are ignored by a plain `cargo test` and fail here without them.
fn real_data() -> std::path::PathBuf {
    let dir = common::shared_data_dir();
    assert!(
        dir.join("DRIVE").is_dir() && dir.join("STARE").is_dir(),
        "no DRIVE/STARE under {} (set VESSEL_DATA_DIR)",
        dir.display()
    );
    dir
}

#[test]
#[ignore = "needs the DRIVE/STARE datasets in ../shared/data or $VESSEL_DATA_DIR (scripts/test.sh runs it)"]
fn drive_loads_with_masks_and_second_observer() {
    let root = real_data();
    let d = Dataset::parse("drive", &root, StareProtocol::KFold { folds: 5, fold: 0 });
    let train = d.load(Split::Train).unwrap();
    let test = d.load(Split::Test).unwrap();
    assert_eq!((train.len(), test.len()), (20, 20));
    assert_eq!(train[0].name, "21");
    assert_eq!(test[0].name, "01");
    for s in train.iter().chain(&test) {
        assert_eq!(s.image.dimensions(), (565, 584));
        assert!(!s.fov_derived);
        // Vessels are roughly 8–15% of the FOV.
        let share = s.label.count() as f64 / s.fov.count() as f64;
        assert!((0.05..0.2).contains(&share), "{}: {share}", s.name);
    }
    assert!(test.iter().all(|s| s.second_observer.is_some()));
    assert!(train.iter().all(|s| s.second_observer.is_none()));
}

#[test]
#[ignore = "needs the DRIVE/STARE datasets in ../shared/data or $VESSEL_DATA_DIR (scripts/test.sh runs it)"]
fn derived_fov_matches_drives_own_masks() {
    let root = real_data();
    let test = Dataset::Drive {
        root: root.join("DRIVE"),
    }
    .load(Split::Test)
    .unwrap();
    for s in &test {
        let derived = vessel_runtime::fov::derive_fov_mask(&s.image);
        let c = Confusion::from_binary(&derived.data, &s.fov.data, None);
        assert!(c.jaccard() > 0.97, "{}: FOV IoU {}", s.name, c.jaccard());
    }
}

#[test]
#[ignore = "needs the DRIVE/STARE datasets in ../shared/data or $VESSEL_DATA_DIR (scripts/test.sh runs it)"]
fn stare_loads_both_label_endings_and_splits_by_protocol() {
    let root = real_data();
    let all: Vec<_> = (0..5)
        .flat_map(|fold| {
            Dataset::parse("stare", &root, StareProtocol::KFold { folds: 5, fold })
                .load(Split::Test)
                .unwrap()
        })
        .collect();
    assert_eq!(all.len(), 20);
    let fold0 = Dataset::parse("stare", &root, StareProtocol::KFold { folds: 5, fold: 0 });
    let (train, test) = (
        fold0.load(Split::Train).unwrap(),
        fold0.load(Split::Test).unwrap(),
    );
    assert_eq!((train.len(), test.len()), (16, 4));
    assert_eq!(
        test.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["im0001", "im0002", "im0003", "im0004"]
    );
    for s in &all {
        assert_eq!(s.image.dimensions(), (700, 605));
        assert!(s.fov_derived);
        let fov_share = s.fov.count() as f64 / (700.0 * 605.0);
        assert!(
            (0.5..0.95).contains(&fov_share),
            "{}: FOV {fov_share}",
            s.name
        );
        assert!(s.second_observer.is_some(), "{}: labels-vk", s.name);
        let share = s.label.count() as f64 / s.fov.count() as f64;
        assert!((0.03..0.25).contains(&share), "{}: {share}", s.name);
    }
    let loo = Dataset::parse("stare", &root, StareProtocol::LeaveOneOut { index: 19 });
    assert_eq!(loo.load(Split::Test).unwrap()[0].name, "im0324");
    assert_eq!(loo.load(Split::Train).unwrap().len(), 19);
}
