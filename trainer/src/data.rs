//! Datasets in their original layouts (DRIVE, STARE) and a generic one for a user's own data.
//! Every file problem is an error that names the file; nothing is skipped silently.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use image::RgbImage;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use vessel_runtime::fov::derive_fov_mask;
use vessel_runtime::image_io::{load_binary_mask, load_rgb};
use vessel_runtime::{BinaryMask, ImageError};

/// Environment variable naming the folder that holds `DRIVE/` and `STARE/`.
pub const DATA_DIR_ENV: &str = "VESSEL_DATA_DIR";
/// Where the datasets are found when neither a flag nor the environment names a folder:
/// `../shared/data` beside the project root.
pub const DEFAULT_DATA_DIR: &str = "../shared/data";

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("{path}: {what} not found")]
    Missing { path: PathBuf, what: String },
    #[error("{path}: cannot list folder: {source}")]
    List {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no images found")]
    Empty { path: PathBuf },
    #[error("{path}: label has no matching image in {images}")]
    Orphan { path: PathBuf, images: PathBuf },
    #[error("{0}")]
    Protocol(String),
}

/// One fundus image with its ground truth.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Short id (`01`, `im0001`, a file stem).
    pub name: String,
    pub image_path: PathBuf,
    pub image: RgbImage,
    /// Vessel ground truth (first observer).
    pub label: BinaryMask,
    /// Field of view: the dataset's own mask, or one derived from the image.
    pub fov: BinaryMask,
    pub fov_derived: bool,
    /// A second human observer's labels, where the dataset has them.
    pub second_observer: Option<BinaryMask>,
}

/// How STARE's 20 images are split (it has no official split).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StareProtocol {
    /// Test on image `index` (0-based, in id order), train on the other 19.
    LeaveOneOut { index: usize },
    /// `folds` contiguous folds in id order; test on fold `fold`, train on the rest.
    KFold { folds: usize, fold: usize },
}

impl fmt::Display for StareProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StareProtocol::LeaveOneOut { index } => write!(f, "loo:{index}"),
            StareProtocol::KFold { folds, fold } => write!(f, "kfold:{folds}:{fold}"),
        }
    }
}

impl std::str::FromStr for StareProtocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let num = |t: &str| {
            t.parse::<usize>()
                .map_err(|_| format!("'{t}' in '{s}' is not a whole number"))
        };
        match parts.as_slice() {
            ["loo", i] => Ok(StareProtocol::LeaveOneOut { index: num(i)? }),
            ["kfold", k, i] => {
                let (folds, fold) = (num(k)?, num(i)?);
                if folds < 2 || fold >= folds {
                    return Err(format!("'{s}': need 2 or more folds and fold < folds"));
                }
                Ok(StareProtocol::KFold { folds, fold })
            }
            _ => Err(format!(
                "'{s}': expected loo:INDEX (leave one out) or kfold:FOLDS:FOLD (e.g. kfold:5:0)"
            )),
        }
    }
}

impl StareProtocol {
    /// Indices (into the id-ordered image list of `n`) of the test images.
    pub fn test_indices(&self, n: usize) -> Result<Vec<usize>, DataError> {
        match *self {
            StareProtocol::LeaveOneOut { index } if index < n => Ok(vec![index]),
            StareProtocol::LeaveOneOut { index } => Err(DataError::Protocol(format!(
                "leave-one-out index {index} is out of range: STARE has {n} images"
            ))),
            StareProtocol::KFold { folds, fold } if folds <= n => {
                // Contiguous folds whose sizes differ by at most one.
                let start = fold * n / folds;
                let end = (fold + 1) * n / folds;
                Ok((start..end).collect())
            }
            StareProtocol::KFold { folds, .. } => Err(DataError::Protocol(format!(
                "{folds} folds over {n} images leaves empty folds"
            ))),
        }
    }
}

/// Which dataset, where.
#[derive(Clone, Debug)]
pub enum Dataset {
    /// `ROOT/DRIVE` in its original layout.
    Drive { root: PathBuf },
    /// `ROOT/STARE` in its original layout, with a split protocol.
    Stare {
        root: PathBuf,
        protocol: StareProtocol,
    },
    /// A folder with `images/`, `labels/` and optionally `masks/` (same file stems).
    Generic { dir: PathBuf },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    Train,
    Test,
}

impl Dataset {
    /// Parses `drive`, `stare` or a folder path (generic layout).
    pub fn parse(name: &str, data_dir: &Path, protocol: StareProtocol) -> Self {
        match name.to_ascii_lowercase().as_str() {
            "drive" => Dataset::Drive {
                root: data_dir.join("DRIVE"),
            },
            "stare" => Dataset::Stare {
                root: data_dir.join("STARE"),
                protocol,
            },
            _ => Dataset::Generic {
                dir: PathBuf::from(name),
            },
        }
    }

    /// A short, human-readable description including the split protocol.
    pub fn describe(&self) -> String {
        match self {
            Dataset::Drive { .. } => "DRIVE (official 20 train / 20 test)".into(),
            Dataset::Stare { protocol, .. } => format!("STARE ({protocol}, labels-ah)"),
            Dataset::Generic { dir } => format!("generic layout at {}", dir.display()),
        }
    }

    /// The paper's input size for this dataset: the smallest square multiple of 8 at least
    /// as large as the images (DRIVE 592 in the paper, STARE 704).
    pub fn default_input_size(&self, samples: &[Sample]) -> u32 {
        match self {
            Dataset::Drive { .. } => 592,
            _ => {
                let side = samples
                    .iter()
                    .map(|s| s.image.width().max(s.image.height()))
                    .max()
                    .unwrap_or(8);
                vessel_runtime::preprocess::round_up_to_multiple(side)
            }
        }
    }

    pub fn load(&self, split: Split) -> Result<Vec<Sample>, DataError> {
        match self {
            Dataset::Drive { root } => load_drive(root, split),
            Dataset::Stare { root, protocol } => {
                let all = load_stare(root)?;
                let test = protocol.test_indices(all.len())?;
                Ok(all
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| test.contains(i) == (split == Split::Test))
                    .map(|(_, s)| s)
                    .collect())
            }
            Dataset::Generic { dir } => load_generic(dir),
        }
    }
}

/// The data folder: the flag if given, else `$VESSEL_DATA_DIR`, else `../shared/data`.
pub fn resolve_data_dir(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os(DATA_DIR_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
}

fn require_dir(path: &Path, what: &str) -> Result<(), DataError> {
    if path.is_dir() {
        Ok(())
    } else {
        Err(DataError::Missing {
            path: path.to_path_buf(),
            what: what.to_string(),
        })
    }
}

fn require_file(path: PathBuf, what: &str) -> Result<PathBuf, DataError> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(DataError::Missing {
            path,
            what: what.to_string(),
        })
    }
}

/// Files of a folder (not sub-folders, not hidden files), sorted by name.
fn list_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let entries = std::fs::read_dir(dir).map_err(|source| DataError::List {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| DataError::List {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if path.is_file() && !hidden {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Loads an image, its label and FOV (derived when `fov_path` is `None`), checking sizes.
fn load_sample(
    name: String,
    image_path: PathBuf,
    label_path: &Path,
    fov_path: Option<&Path>,
    second_path: Option<&Path>,
) -> Result<Sample, DataError> {
    let image = load_rgb(&image_path)?;
    let (w, h) = image.dimensions();
    let label = load_binary_mask(label_path)?;
    label.check_size(label_path, "its image's", w, h)?;
    let (fov, fov_derived) = match fov_path {
        Some(p) => {
            let m = load_binary_mask(p)?;
            m.check_size(p, "its image's", w, h)?;
            (m, false)
        }
        None => (derive_fov_mask(&image), true),
    };
    let second_observer = match second_path {
        Some(p) => {
            let m = load_binary_mask(p)?;
            m.check_size(p, "its image's", w, h)?;
            Some(m)
        }
        None => None,
    };
    Ok(Sample {
        name,
        image_path,
        image,
        label,
        fov,
        fov_derived,
        second_observer,
    })
}

fn load_drive(root: &Path, split: Split) -> Result<Vec<Sample>, DataError> {
    let (folder, suffix) = match split {
        Split::Train => ("training", "training"),
        Split::Test => ("test", "test"),
    };
    let dir = root.join(folder);
    require_dir(&dir.join("images"), "DRIVE images folder")?;
    let mut samples = Vec::new();
    for image_path in list_files(&dir.join("images"))? {
        let stem = file_stem(&image_path);
        let Some(id) = stem.strip_suffix(&format!("_{suffix}")) else {
            return Err(DataError::Protocol(format!(
                "{}: not a DRIVE image name (expected NN_{suffix}.tif)",
                image_path.display()
            )));
        };
        let label = require_file(
            dir.join("1st_manual").join(format!("{id}_manual1.gif")),
            "first-observer label",
        )?;
        let fov = require_file(
            dir.join("mask").join(format!("{id}_{suffix}_mask.gif")),
            "FOV mask",
        )?;
        let second = dir.join("2nd_manual").join(format!("{id}_manual2.gif"));
        let second = second.is_file().then_some(second);
        samples.push(load_sample(
            id.to_string(),
            image_path,
            &label,
            Some(&fov),
            second.as_deref(),
        )?);
    }
    non_empty(samples, &dir.join("images"))
}

/// Finds `DIR/STEM.{ppm,pgm}` (STARE label files come with either ending).
fn find_pnm(dir: &Path, stem: &str) -> Option<PathBuf> {
    ["ppm", "pgm", "PPM", "PGM"]
        .iter()
        .map(|ext| dir.join(format!("{stem}.{ext}")))
        .find(|p| p.is_file())
}

fn load_stare(root: &Path) -> Result<Vec<Sample>, DataError> {
    require_dir(&root.join("images"), "STARE images folder")?;
    let mut samples = Vec::new();
    for image_path in list_files(&root.join("images"))? {
        let id = file_stem(&image_path);
        let label = find_pnm(&root.join("labels-ah"), &format!("{id}.ah")).ok_or_else(|| {
            DataError::Missing {
                path: root.join("labels-ah").join(format!("{id}.ah.ppm")),
                what: format!("label (.ppm or .pgm) for {}", image_path.display()),
            }
        })?;
        let second = find_pnm(&root.join("labels-vk"), &format!("{id}.vk"));
        samples.push(load_sample(
            id,
            image_path,
            &label,
            None,
            second.as_deref(),
        )?);
    }
    non_empty(samples, &root.join("images"))
}

fn load_generic(dir: &Path) -> Result<Vec<Sample>, DataError> {
    let images_dir = dir.join("images");
    let labels_dir = dir.join("labels");
    let masks_dir = dir.join("masks");
    require_dir(
        &images_dir,
        "images/ folder (generic layout: images/, labels/, masks/)",
    )?;
    require_dir(
        &labels_dir,
        "labels/ folder (generic layout: images/, labels/, masks/)",
    )?;
    let by_stem = |files: Vec<PathBuf>| -> BTreeMap<String, PathBuf> {
        files.into_iter().map(|p| (file_stem(&p), p)).collect()
    };
    let images = by_stem(list_files(&images_dir)?);
    let mut labels = by_stem(list_files(&labels_dir)?);
    let mut masks = if masks_dir.is_dir() {
        by_stem(list_files(&masks_dir)?)
    } else {
        BTreeMap::new()
    };
    let mut samples = Vec::new();
    for (stem, image_path) in images {
        let label = labels.remove(&stem).ok_or_else(|| DataError::Missing {
            path: labels_dir.join(format!("{stem}.*")),
            what: format!("label for {}", image_path.display()),
        })?;
        let mask = masks.remove(&stem);
        samples.push(load_sample(
            stem,
            image_path,
            &label,
            mask.as_deref(),
            None,
        )?);
    }
    if let Some((_, path)) = labels.into_iter().next().or(masks.into_iter().next()) {
        return Err(DataError::Orphan {
            path,
            images: images_dir,
        });
    }
    non_empty(samples, &images_dir)
}

fn non_empty(samples: Vec<Sample>, dir: &Path) -> Result<Vec<Sample>, DataError> {
    if samples.is_empty() {
        Err(DataError::Empty {
            path: dir.to_path_buf(),
        })
    } else {
        Ok(samples)
    }
}

fn file_stem(path: &Path) -> String {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    // STARE label stems keep their inner dot (`im0001.ah`): strip only the last extension.
    match name.rsplit_once('.') {
        Some((stem, _)) => stem.to_string(),
        None => name.to_string(),
    }
}

/// The samples named in `names`, in the split's order; all of them when `names` is empty.
/// A name the split does not have is an error that lists the names it has.
pub fn select_images(samples: Vec<Sample>, names: &[String]) -> Result<Vec<Sample>, DataError> {
    if names.is_empty() {
        return Ok(samples);
    }
    if let Some(missing) = names
        .iter()
        .find(|n| !samples.iter().any(|s| &s.name == *n))
    {
        return Err(DataError::Protocol(format!(
            "no image named `{missing}` (this split has {})",
            samples
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(samples
        .into_iter()
        .filter(|s| names.contains(&s.name))
        .collect())
}

/// Holds `count` samples out of `samples` for validation, chosen by a seeded shuffle.
/// Returns (train, validation).
pub fn split_validation(
    mut samples: Vec<Sample>,
    count: usize,
    seed: u64,
) -> Result<(Vec<Sample>, Vec<Sample>), DataError> {
    if count >= samples.len() {
        return Err(DataError::Protocol(format!(
            "cannot hold out {count} validation images from {} training images",
            samples.len()
        )));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed_0fa1);
    samples.shuffle(&mut rng);
    let val = samples.split_off(samples.len() - count);
    Ok((samples, val))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_selected_by_name_in_split_order() {
        let sample = |name: &str| Sample {
            name: name.into(),
            image_path: PathBuf::from(format!("{name}.png")),
            image: RgbImage::new(1, 1),
            label: BinaryMask::new(1, 1, vec![0]),
            fov: BinaryMask::new(1, 1, vec![1]),
            fov_derived: false,
            second_observer: None,
        };
        let split = || vec![sample("21"), sample("27"), sample("37")];
        let names = |v: Vec<Sample>| v.into_iter().map(|s| s.name).collect::<Vec<_>>();
        assert_eq!(
            names(select_images(split(), &[]).unwrap()),
            ["21", "27", "37"]
        );
        let wanted = ["37".to_string(), "27".to_string()];
        assert_eq!(
            names(select_images(split(), &wanted).unwrap()),
            ["27", "37"]
        );
        let err = select_images(split(), &["99".to_string()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("`99`") && err.contains("21, 27, 37"), "{err}");
    }

    #[test]
    fn stare_protocols() {
        let p: StareProtocol = "kfold:5:1".parse().unwrap();
        assert_eq!(p.test_indices(20).unwrap(), vec![4, 5, 6, 7]);
        let p: StareProtocol = "loo:19".parse().unwrap();
        assert_eq!(p.test_indices(20).unwrap(), vec![19]);
        assert!("loo:20"
            .parse::<StareProtocol>()
            .unwrap()
            .test_indices(20)
            .is_err());
        assert!("kfold:5:5".parse::<StareProtocol>().is_err());
        assert!("tenfold".parse::<StareProtocol>().is_err());
        // Every image is tested exactly once over the folds.
        let mut all: Vec<usize> = (0..5)
            .flat_map(|f| {
                StareProtocol::KFold { folds: 5, fold: f }
                    .test_indices(20)
                    .unwrap()
            })
            .collect();
        all.sort();
        assert_eq!(all, (0..20).collect::<Vec<_>>());
    }

    #[test]
    fn stems_keep_inner_dots() {
        assert_eq!(file_stem(Path::new("a/im0001.ah.pgm")), "im0001.ah");
        assert_eq!(file_stem(Path::new("21_training.tif")), "21_training");
    }
}
