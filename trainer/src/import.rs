//! Import: an f32 model written by `vessel-train export` read back into a checkpoint, so a
//! shipped model can start a run (`train --init-from`), or be evaluated and exported again,
//! when the checkpoints of the run that made it are gone.
//!
//! The exporter is the one definition of how parameters become NNEF tensors (split convs,
//! transposed convs as four phase convs, …), and the import does not restate it. It exports
//! a *probe*: the same architecture with every parameter element set to its own index + 1
//! (exact in f32 below 2²⁴). Each value of each probe tensor says which parameter element
//! the exporter wrote at that position (0: none), so the model file's value at the same
//! position is that element's value. The probe's `graph.nnef` must equal the file's, which
//! checks the architecture; every element must be found, and an element written more than
//! once (a transposed conv's bias goes to each of its phases) must read the same each time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vessel_runtime::model_file::{ModelFile, ModelFileError, ModelMetadata, Precision};
use vessel_runtime::preprocess::Normalization;

use crate::average::{numbered_parameters, with_parameters, Parameters};
use crate::export::{nnef_f32, operating_point_shift, parse_dat_f32, shift_head_bias, NnefEntries};
use crate::model::{SaUnetConfig, SaUnetV2};
use crate::train::{Patience, TrainOptions, TrainState};

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Model(#[from] ModelFileError),
    #[error("{path}: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    #[error("{path}: {entry}: {reason}")]
    Tensor {
        path: PathBuf,
        entry: String,
        reason: String,
    },
    #[error("{0} already exists: choose another --out (nothing was written)")]
    Exists(PathBuf),
    #[error(transparent)]
    Checkpoint(#[from] crate::checkpoint::CheckpointError),
}

/// What an import read.
pub struct Imported {
    pub model: SaUnetV2,
    pub state: TrainState,
}

/// Reads the f32 model file at `path` back into weights and a training state.
pub fn import_model(path: &Path) -> Result<Imported, ImportError> {
    let file = ModelFile::read(path)?;
    let meta = &file.metadata;
    let unsupported = |reason: String| ImportError::Unsupported {
        path: path.to_path_buf(),
        reason,
    };
    if meta.precision != Precision::F32 {
        return Err(unsupported(format!(
            "an {} model: its weights are quantised; import the f32 export of the same checkpoint",
            meta.precision
        )));
    }
    if meta.architecture != "SA-UNetv2" || meta.normalization != Normalization::UnitRange {
        return Err(unsupported(format!(
            "architecture '{}' with {:?} input: this build trains SA-UNetv2 on unit-range input",
            meta.architecture, meta.normalization
        )));
    }
    let [side, other] = meta.input_size;
    if side != other {
        return Err(unsupported(format!(
            "input {side}x{other}: the trainer's canvas is square"
        )));
    }
    let probe = probe_of(&file)?;
    let values = read_parameters(&file, &probe)?;
    let mut model = with_parameters(probe.model, values);
    if let Some(point) = meta.operating_point {
        // The export subtracted the shift from the head's bias; add it back, so the
        // checkpoint's threshold means what it meant in training.
        model = shift_head_bias(model, operating_point_shift(point, meta.threshold)).ok_or_else(
            || unsupported("the operating point is folded into a head without bias".into()),
        )?;
    }
    Ok(Imported {
        model,
        state: state_of(path, meta, probe.config),
    })
}

/// Imports the model file at `model` and writes it as the checkpoint `out` (which must not
/// exist): weights and training state, no optimiser state (a start for `--init-from`, not a
/// run to `--resume`).
pub fn import_to_checkpoint(model: &Path, out: &Path) -> Result<TrainState, ImportError> {
    if out.exists() {
        return Err(ImportError::Exists(out.to_path_buf()));
    }
    let imported = import_model(model)?;
    crate::checkpoint::save(out, &imported.state, imported.model, None)?;
    Ok(imported.state)
}

/// The probe for a model file: a model of the architecture the file's tensors describe
/// whose parameter elements hold their own index + 1, its export, and its parameters'
/// shapes.
struct Probe {
    config: SaUnetConfig,
    model: SaUnetV2,
    entries: NnefEntries,
    shapes: Vec<Vec<usize>>,
}

impl Probe {
    fn new(config: SaUnetConfig) -> Self {
        let model = SaUnetV2::new(&config, &crate::backend::inference_device());
        let indexed = numbered_parameters(&model, |k| k as f32);
        let shapes = indexed.iter().map(|(shape, _)| shape.clone()).collect();
        let model = with_parameters(model, indexed);
        let entries = nnef_f32(&model);
        Self {
            config,
            model,
            entries,
            shapes,
        }
    }
}

/// The probe whose graph text is the file's: input channels and base width from the first
/// conv, the attention kernel from the bottleneck's, the group count searched. Training-only
/// settings (DropBlock) are the defaults.
fn probe_of(file: &ModelFile) -> Result<Probe, ImportError> {
    let conv_shape = |entry: &str| -> Result<[usize; 4], ImportError> {
        let shape = read_dat(file, entry)?.0;
        shape
            .try_into()
            .map_err(|_| tensor_error(file, entry, "not a 4-d conv weight"))
    };
    let [width, channels, _, _] = conv_shape("enc1_first_conv_weight.dat")?;
    let [_, _, kernel, _] = conv_shape("bottleneck_sa_weight.dat")?;
    if width == 0 || channels == 0 || kernel == 0 {
        return Err(tensor_error(
            file,
            "enc1_first_conv_weight.dat",
            "a conv weight with an empty dimension",
        ));
    }
    let base = SaUnetConfig {
        in_channels: channels,
        base_width: width,
        attention_kernel: kernel,
        ..SaUnetConfig::default()
    };
    let graph = file.entries.get("graph.nnef");
    // The default group count first; then any other that divides every level's width.
    let candidates = std::iter::once(base.groups).chain((1..=width).filter(|&g| g != base.groups));
    for groups in candidates.filter(|&g| width % g == 0) {
        let probe = Probe::new(SaUnetConfig {
            groups,
            ..base.clone()
        });
        if probe.entries.get("graph.nnef") == graph {
            return Ok(probe);
        }
    }
    Err(ImportError::Unsupported {
        path: file.path.clone(),
        reason: format!(
            "its graph is not one this build exports for SA-UNetv2 of base width {width} \
             (exported by another version, or edited)"
        ),
    })
}

/// Every parameter (shape, values) of the probe's model, in visiting order, read from `file`
/// at the positions the probe marks.
fn read_parameters(file: &ModelFile, probe: &Probe) -> Result<Parameters, ImportError> {
    let mut found: BTreeMap<usize, f32> = BTreeMap::new();
    for (entry, probe_bytes) in probe.entries.iter().filter(|(n, _)| n.ends_with(".dat")) {
        let (probe_shape, marks) =
            parse_dat_f32(probe_bytes).expect("the exporter writes f32 .dat");
        let (shape, values) = read_dat(file, entry)?;
        if shape != probe_shape {
            return Err(tensor_error(
                file,
                entry,
                &format!("shape {shape:?}, the architecture needs {probe_shape:?}"),
            ));
        }
        for (&mark, &value) in marks.iter().zip(&values) {
            if mark == 0.0 {
                continue;
            }
            let index = mark as usize - 1;
            if let Some(before) = found.insert(index, value) {
                if before.to_bits() != value.to_bits() {
                    return Err(tensor_error(
                        file,
                        entry,
                        "a weight written more than once holds different values",
                    ));
                }
            }
        }
    }
    // The marks are 1..=needed, so finding `needed` of them is finding all.
    let needed: usize = probe
        .shapes
        .iter()
        .map(|s| s.iter().product::<usize>())
        .sum();
    if found.len() != needed {
        return Err(ImportError::Unsupported {
            path: file.path.clone(),
            reason: format!(
                "holds {} of the architecture's {needed} weights",
                found.len()
            ),
        });
    }
    let mut values = found.into_values();
    Ok(probe
        .shapes
        .iter()
        .map(|shape| {
            let n = shape.iter().product();
            (shape.clone(), values.by_ref().take(n).collect())
        })
        .collect())
}

/// The f32 tensor `entry` of `file`: shape and values.
fn read_dat(file: &ModelFile, entry: &str) -> Result<(Vec<usize>, Vec<f32>), ImportError> {
    let bytes = file
        .entries
        .get(entry)
        .ok_or_else(|| tensor_error(file, entry, "missing"))?;
    parse_dat_f32(bytes).map_err(|reason| tensor_error(file, entry, &reason))
}

fn tensor_error(file: &ModelFile, entry: &str, reason: &str) -> ImportError {
    ImportError::Tensor {
        path: file.path.clone(),
        entry: entry.to_string(),
        reason: reason.to_string(),
    }
}

/// The training state of an imported model: the reference recipe at the file's input size
/// and threshold, its training-data line as the dataset, its epochs as done.
fn state_of(path: &Path, meta: &ModelMetadata, config: SaUnetConfig) -> TrainState {
    let mut options = TrainOptions::reference(meta.trained_on.clone(), meta.input_size[0]);
    options.threshold = meta.threshold;
    options.model = config;
    TrainState {
        learning_rate: options.learning_rate,
        options,
        epochs_done: meta.epochs,
        steps_done: 0,
        patience: Patience::new(),
        history: Vec::new(),
        finished: true,
        averaged_from: Vec::new(),
        // The file's own lineage goes along, so an export of this checkpoint keeps it.
        imported_from: Some(
            std::iter::once(format!("{} ({})", path.display(), meta.content_hash))
                .chain(meta.lineage.iter().cloned())
                .collect::<Vec<_>>()
                .join("; "),
        ),
    }
}
