//! Exported model files: an NNEF model (`graph.nnef`, optional `graph.quant`, `*.dat`
//! tensors) plus `vessel.json`, the metadata the runtime needs and a user wants to see —
//! as a `.nnef.tgz` archive or a directory. The exporter writes them and the engine reads
//! them through this one module, so both agree on the format and the content hash.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::preprocess::Normalization;

/// Name of the metadata entry in a model archive or directory.
pub const METADATA_FILE: &str = "vessel.json";
/// The metadata format this build reads and writes.
pub const FORMAT: &str = "vessel-nnef/1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    F32,
    Int8,
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
        })
    }
}

/// Test-set metrics recorded with a model (mean over images, threshold as in the metadata).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedMetrics {
    pub dataset: String,
    pub images: usize,
    pub f1_fov: f64,
    pub f1_whole: f64,
    pub mcc_fov: f64,
    pub auc_fov: Option<f64>,
}

/// What a model file says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelMetadata {
    /// Always [`FORMAT`].
    pub format: String,
    pub architecture: String,
    pub parameters: usize,
    pub precision: Precision,
    /// Input channels (RGB: 3).
    pub input_channels: usize,
    /// The input size the model was trained at, `[width, height]`; the default network size.
    pub input_size: [u32; 2],
    /// Network input sides must be multiples of this.
    pub size_multiple: u32,
    pub normalization: Normalization,
    /// Probability threshold for the binary mask.
    pub threshold: f32,
    /// Set when the head's bias was shifted at export by −logit(operating point): the mask at
    /// `threshold` (0.5) on this model is the mask at this threshold on the network as
    /// trained. Chosen on held-out training images (`vessel-train eval --sweep`), never on
    /// test images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operating_point: Option<f32>,
    /// Training dataset and protocol: one short sentence (every run prints it).
    pub trained_on: String,
    /// Where the weights came from, one step a line, oldest last: the checkpoint a run was
    /// fine-tuned from, the model file a checkpoint was imported from, the checkpoints
    /// averaged (empty for a run from a random initialisation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lineage: Vec<String>,
    pub epochs: usize,
    /// How activations were calibrated (int8 only).
    pub calibration: Option<String>,
    pub test_metrics: Option<RecordedMetrics>,
    /// The same test images with flip test-time augmentation (`--tta flips`), where it
    /// was measured at export.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_metrics_tta_flips: Option<RecordedMetrics>,
    /// `sha256:` of the model's content (every entry but this metadata).
    pub content_hash: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    #[error("{path}: cannot read model: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a model file: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: model metadata ({METADATA_FILE}) unreadable: {reason}")]
    Metadata { path: PathBuf, reason: String },
    #[error("{path}: content hash mismatch (file corrupted or edited): metadata says {expected}, content is {actual}")]
    Hash {
        path: PathBuf,
        expected: String,
        actual: String,
    },
}

/// A model file's entries (name → bytes) and its metadata, verified.
#[derive(Debug)]
pub struct ModelFile {
    pub path: PathBuf,
    pub metadata: ModelMetadata,
    /// Every entry but the metadata, by name.
    pub entries: BTreeMap<String, Vec<u8>>,
}

/// `sha256:HEX` over the entries in name order (name, length, bytes), metadata excluded.
pub fn content_hash(entries: &BTreeMap<String, Vec<u8>>) -> String {
    let mut h = Sha256::new();
    for (name, bytes) in entries.iter().filter(|(n, _)| *n != METADATA_FILE) {
        h.update(name.as_bytes());
        h.update([0]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    format!("sha256:{}", to_hex(&h.finalize()))
}

/// Lower-case hexadecimal of a digest.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// True for paths written as archives (`.tgz`, `.tar.gz`, `.tar`), false for directories.
pub fn is_archive_path(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".tgz") || name.ends_with(".tar.gz") || name.ends_with(".tar")
}

impl ModelFile {
    /// Writes a model (archive or directory, by the path's ending) atomically: a temp file
    /// or folder renamed into place. Fills in the metadata's content hash.
    pub fn write(
        path: &Path,
        entries: BTreeMap<String, Vec<u8>>,
        mut metadata: ModelMetadata,
    ) -> Result<ModelMetadata, ModelFileError> {
        let io = |source| ModelFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        metadata.format = FORMAT.to_string();
        metadata.content_hash = content_hash(&entries);
        let meta_json = serde_json::to_vec_pretty(&metadata).expect("metadata serialises");
        let tmp = path.with_file_name(format!(
            ".{}.tmp",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("model")
        ));
        if is_archive_path(path) {
            let file = std::fs::File::create(&tmp).map_err(io)?;
            let gz = path.extension().is_some_and(|e| e != "tar");
            let sink: Box<dyn std::io::Write> = if gz {
                Box::new(flate2::write::GzEncoder::new(
                    file,
                    flate2::Compression::best(),
                ))
            } else {
                Box::new(file)
            };
            let mut tar = tar::Builder::new(sink);
            for (name, bytes) in std::iter::once((METADATA_FILE, &meta_json))
                .chain(entries.iter().map(|(n, b)| (n.as_str(), b)))
            {
                let mut header = tar::Header::new_gnu();
                header.set_size(bytes.len() as u64);
                header.set_mode(0o644);
                header.set_mtime(0);
                header.set_cksum();
                tar.append_data(&mut header, name, bytes.as_slice())
                    .map_err(io)?;
            }
            let mut sink = tar.into_inner().map_err(io)?;
            sink.flush().map_err(io)?;
            drop(sink);
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io)?;
            std::fs::rename(&tmp, path).map_err(io)?;
        } else {
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::create_dir_all(&tmp).map_err(io)?;
            std::fs::write(tmp.join(METADATA_FILE), &meta_json).map_err(io)?;
            for (name, bytes) in &entries {
                std::fs::write(tmp.join(name), bytes).map_err(io)?;
            }
            if path.exists() {
                std::fs::remove_dir_all(path).map_err(io)?;
            }
            std::fs::rename(&tmp, path).map_err(io)?;
        }
        Ok(metadata)
    }

    /// Reads a model archive or directory, checks its metadata and content hash.
    pub fn read(path: &Path) -> Result<Self, ModelFileError> {
        let io = |source| ModelFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut entries = BTreeMap::new();
        if path.is_dir() {
            for entry in std::fs::read_dir(path).map_err(io)? {
                let entry = entry.map_err(io)?;
                let name = entry.file_name().to_string_lossy().to_string();
                if entry.path().is_file() && !name.starts_with('.') {
                    entries.insert(name, std::fs::read(entry.path()).map_err(io)?);
                }
            }
        } else {
            let bytes = std::fs::read(path).map_err(io)?;
            entries = untar(&bytes).map_err(|reason| ModelFileError::Format {
                path: path.to_path_buf(),
                reason,
            })?;
        }
        let meta_bytes = entries
            .remove(METADATA_FILE)
            .ok_or_else(|| ModelFileError::Metadata {
                path: path.to_path_buf(),
                reason: "missing (was this model exported by vessel-train?)".into(),
            })?;
        let metadata: ModelMetadata =
            serde_json::from_slice(&meta_bytes).map_err(|e| ModelFileError::Metadata {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        if metadata.format != FORMAT {
            return Err(ModelFileError::Metadata {
                path: path.to_path_buf(),
                reason: format!("format '{}', this build reads '{FORMAT}'", metadata.format),
            });
        }
        if !entries.contains_key("graph.nnef") {
            return Err(ModelFileError::Format {
                path: path.to_path_buf(),
                reason: "no graph.nnef".into(),
            });
        }
        let actual = content_hash(&entries);
        if actual != metadata.content_hash {
            return Err(ModelFileError::Hash {
                path: path.to_path_buf(),
                expected: metadata.content_hash.clone(),
                actual,
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            metadata,
            entries,
        })
    }

    /// The NNEF entries as an uncompressed tar, the form tract reads from memory.
    pub fn nnef_tar(&self) -> Vec<u8> {
        tar_in_memory(&self.entries)
    }
}

fn untar(bytes: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let reader: Box<dyn Read + '_> = if bytes.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(bytes))
    } else {
        Box::new(bytes)
    };
    let mut archive = tar::Archive::new(reader);
    let mut entries = BTreeMap::new();
    for entry in archive
        .entries()
        .map_err(|e| format!("not a tar archive: {e}"))?
    {
        let mut entry = entry.map_err(|e| format!("damaged archive: {e}"))?;
        let name = entry
            .path()
            .map_err(|e| format!("bad entry name: {e}"))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mut data = Vec::new();
        entry
            .read_to_end(&mut data)
            .map_err(|e| format!("damaged archive entry {name}: {e}"))?;
        entries.insert(name, data);
    }
    if entries.is_empty() {
        return Err("empty or not a tar archive".into());
    }
    Ok(entries)
}

/// Entries as an uncompressed tar in memory.
pub fn tar_in_memory(entries: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, bytes) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, bytes.as_slice())
            .expect("writing to memory");
    }
    tar.into_inner().expect("writing to memory")
}
