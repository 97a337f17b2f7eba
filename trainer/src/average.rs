//! Weight averaging: the mean of several checkpoints' weights, written as one checkpoint.
//!
//! Checkpoints late in one run lie close together, and the mean of their weights is often a
//! better model than any of them (stochastic weight averaging). SA-UNetv2 normalises with
//! GroupNorm, which has no running statistics, so the averaged weights need no recalibration.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Tensor, TensorData};

use crate::checkpoint;
use crate::model::SaUnetV2;
use crate::train::TrainState;

/// Collects every float parameter, in the module's visiting order.
#[derive(Default)]
struct Collect {
    tensors: Vec<(Vec<usize>, Vec<f32>)>,
}

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.tensors.push(crate::export::values(param));
    }
}

/// Replaces every float parameter, in visiting order, with the next of `tensors`.
struct Replace {
    tensors: std::vec::IntoIter<(Vec<usize>, Vec<f32>)>,
}

impl ModuleMapper for Replace {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (shape, data) = self.tensors.next().expect("one tensor per parameter");
        param.map(|t| {
            let device = t.device();
            Tensor::from_data(TensorData::new(data, shape), &device)
        })
    }
}

/// A model's float parameters: (shape, values) each, in the module's visiting order.
pub type Parameters = Vec<(Vec<usize>, Vec<f32>)>;

/// Every float parameter of `model` (shape, values), in its visiting order.
pub fn parameters(model: &SaUnetV2) -> Parameters {
    let mut collect = Collect::default();
    model.visit(&mut collect);
    collect.tensors
}

/// `model`'s parameter shapes (visiting order) with element k, counted from 1 across all of
/// them, set to `value(k)`: a model whose every weight is told apart by its position.
pub fn numbered_parameters(model: &SaUnetV2, mut value: impl FnMut(u32) -> f32) -> Parameters {
    let mut k = 0u32;
    parameters(model)
        .into_iter()
        .map(|(shape, values)| {
            let numbered = values
                .iter()
                .map(|_| {
                    k += 1;
                    value(k)
                })
                .collect();
            (shape, numbered)
        })
        .collect()
}

/// `model` with its float parameters replaced, in visiting order, by `tensors` (shape,
/// values) — the inverse of [`parameters`].
pub fn with_parameters(model: SaUnetV2, tensors: Parameters) -> SaUnetV2 {
    model.map(&mut Replace {
        tensors: tensors.into_iter(),
    })
}

/// The element-wise mean of the weights in `inputs` (at least two checkpoints of one
/// architecture), written to `out` as a checkpoint without optimiser state (it can be
/// evaluated, exported or used by `--init-from`, not resumed). Its training state is the
/// last input's, with `averaged_from` naming every input. Refuses to overwrite a file.
pub fn average_checkpoints(inputs: &[PathBuf], out: &Path) -> Result<TrainState> {
    if inputs.len() < 2 {
        bail!(
            "averaging needs at least two checkpoints, got {}",
            inputs.len()
        );
    }
    if out.exists() {
        bail!(
            "{} already exists: choose another --out (nothing was written)",
            out.display()
        );
    }
    let device = crate::backend::inference_device();
    let mut sum: Vec<(Vec<usize>, Vec<f64>)> = Vec::new();
    let mut state: Option<TrainState> = None;
    let mut sources = Vec::new();
    for path in inputs {
        let loaded = checkpoint::load::<TrainState>(path)?;
        let (config, size) = (&loaded.state.options.model, loaded.state.options.input_size);
        // Every earlier input matched the first, so the previous one stands for it.
        if let Some(previous) = &state {
            let (first_config, first_size) = (&previous.options.model, previous.options.input_size);
            if first_config != config || first_size != size {
                bail!(
                    "{}: its model ({config:?}, input {size}) differs from {}'s ({first_config:?}, input {first_size})",
                    path.display(),
                    inputs[0].display()
                );
            }
        }
        let params = parameters(&loaded.load_model(SaUnetV2::new(config, &device))?);
        if sum.is_empty() {
            sum = params
                .iter()
                .map(|(shape, data)| (shape.clone(), vec![0.0; data.len()]))
                .collect();
        }
        for ((_, acc), (_, data)) in sum.iter_mut().zip(params) {
            for (a, v) in acc.iter_mut().zip(data) {
                *a += f64::from(v);
            }
        }
        sources.push(format!(
            "{} (epoch {})",
            path.display(),
            loaded.state.epochs_done
        ));
        state = Some(loaded.state);
    }
    let n = inputs.len() as f64;
    let mean = sum
        .into_iter()
        .map(|(shape, acc)| (shape, acc.into_iter().map(|a| (a / n) as f32).collect()))
        .collect::<Vec<_>>();
    let mut state = state.expect("at least two inputs");
    state.averaged_from = sources;
    let model = with_parameters(SaUnetV2::new(&state.options.model, &device), mean);
    checkpoint::save(out, &state, model, None)
        .with_context(|| format!("writing the averaged checkpoint {}", out.display()))?;
    Ok(state)
}
