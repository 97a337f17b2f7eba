//! Checkpoints: one file holding the training state (JSON), the model's weights and the
//! optimiser's state (burnpack). Written atomically — temp file, fsync, rename — so a run
//! killed at any moment leaves the previous checkpoint intact.
//!
//! Layout: `VESSELCK` magic, u32 format version, then three u64-length-prefixed sections
//! (state JSON, model burnpack, optimiser burnpack — empty when absent), little-endian.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use serde::{de::DeserializeOwned, Serialize};

const MAGIC: &[u8; 8] = b"VESSELCK";
const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// An atomic write that failed (the message names the file).
    #[error("{0}")]
    Write(std::io::Error),
}

fn invalid(path: &Path, reason: impl Into<String>) -> CheckpointError {
    CheckpointError::Invalid {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` atomically (a reader sees the old file or the new, never half).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    vessel_runtime::atomic_file::write_atomic(path, bytes).map_err(CheckpointError::Write)
}

/// Saves state, model and (optionally) optimiser to `path`, atomically.
pub fn save<S: Serialize, M: Module>(
    path: &Path,
    state: &S,
    model: M,
    optimizer: Option<&ModuleOptimizer>,
) -> Result<(), CheckpointError> {
    let state = serde_json::to_vec_pretty(state).map_err(|e| invalid(path, e.to_string()))?;
    let model = model
        .into_record()
        .into_bytes()
        .map_err(|e| invalid(path, format!("serialising the model: {e}")))?;
    let optim = match optimizer {
        Some(o) => o
            .into_bytes()
            .map_err(|e| invalid(path, format!("serialising the optimiser: {e}")))?
            .to_vec(),
        None => Vec::new(),
    };
    let mut out = Vec::with_capacity(state.len() + model.len() + optim.len() + 40);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    for section in [&state[..], &model[..], &optim[..]] {
        out.extend_from_slice(&(section.len() as u64).to_le_bytes());
        out.extend_from_slice(section);
    }
    write_atomic(path, &out)
}

/// A checkpoint read back: the state, and the raw model / optimiser sections.
pub struct Loaded<S> {
    pub path: PathBuf,
    pub state: S,
    model: Vec<u8>,
    optim: Vec<u8>,
}

pub fn load<S: DeserializeOwned>(path: &Path) -> Result<Loaded<S>, CheckpointError> {
    let bytes = std::fs::read(path).map_err(io(path))?;
    if bytes.len() < 12 || &bytes[..8] != MAGIC {
        return Err(invalid(path, "not a vessel-train checkpoint (bad magic)"));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(invalid(
            path,
            format!("checkpoint format version {version}, this build reads {VERSION}"),
        ));
    }
    let mut rest = &bytes[12..];
    let mut sections = Vec::new();
    for name in ["state", "model", "optimiser"] {
        if rest.len() < 8 {
            return Err(invalid(
                path,
                format!("truncated before the {name} section"),
            ));
        }
        let len = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes")) as usize;
        rest = &rest[8..];
        if rest.len() < len {
            return Err(invalid(
                path,
                format!("truncated {name} section ({} of {len} bytes)", rest.len()),
            ));
        }
        sections.push(rest[..len].to_vec());
        rest = &rest[len..];
    }
    let optim = sections.pop().expect("three sections");
    let model = sections.pop().expect("three sections");
    let state = serde_json::from_slice(&sections[0])
        .map_err(|e| invalid(path, format!("unreadable training state: {e}")))?;
    Ok(Loaded {
        path: path.to_path_buf(),
        state,
        model,
        optim,
    })
}

impl<S> Loaded<S> {
    /// Applies the saved weights to `model` (which must have the saved architecture).
    pub fn load_model<M: Module>(&self, model: M) -> Result<M, CheckpointError> {
        let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(self.model.clone()))
            .map_err(|e| invalid(&self.path, format!("unreadable model weights: {e}")))?;
        model
            .try_load_record(record)
            .map_err(|e| invalid(&self.path, format!("weights do not fit the model: {e}")))
    }

    /// Applies the saved optimiser state, if the checkpoint has one.
    pub fn load_optimizer(
        &self,
        optimizer: ModuleOptimizer,
    ) -> Result<ModuleOptimizer, CheckpointError> {
        if self.optim.is_empty() {
            return Err(invalid(
                &self.path,
                "has no optimiser state (cannot resume)",
            ));
        }
        optimizer
            .from_bytes(Bytes::from_bytes_vec(self.optim.clone()))
            .map_err(|e| invalid(&self.path, format!("unreadable optimiser state: {e}")))
    }
}
