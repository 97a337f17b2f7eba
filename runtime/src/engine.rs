//! The inference engine: an exported NNEF model run by tract.
//!
//! The model is fixed to one network input size (symbols `H8`, `W8` of the exported graph),
//! optimised once, and then run frame after frame: RGB image → shared preprocessing → tract
//! → probabilities cropped back to the image's own resolution. The input tensor is owned
//! here and reused (tract gets a reference-counted handle, not a copy), so a frame costs no
//! allocation in our code; tract allocates its own intermediate tensors.

use std::path::Path;
use std::sync::Arc;

use image::RgbImage;
use tract_core::internal::*;
use tract_nnef::prelude::Framework;

use crate::model_file::{ModelFile, ModelFileError, ModelMetadata};
use crate::preprocess::{Placement, PreprocessError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    File(#[from] ModelFileError),
    #[error("{path}: tract cannot load the model: {reason}")]
    Load { path: String, reason: String },
    #[error("{path}: cannot prepare the model for {width}x{height}: {reason}")]
    Plan {
        path: String,
        width: u32,
        height: u32,
        reason: String,
    },
    #[error("inference failed: {0}")]
    Run(String),
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
}

/// A loaded model, fixed to a network input size and ready to run.
pub struct Engine {
    pub metadata: ModelMetadata,
    path: String,
    /// The decluttered model with symbolic sides, kept to re-plan for another size.
    symbolic: TypedModel,
    plan: Arc<TypedSimplePlan>,
    state: TypedSimpleState,
    net_width: u32,
    net_height: u32,
    input: Arc<Tensor>,
    output: Option<TValue>,
}

fn load_err(path: &str) -> impl Fn(TractError) -> EngineError + '_ {
    move |e| EngineError::Load {
        path: path.to_string(),
        reason: format!("{e:#}"),
    }
}

/// Parses an NNEF model (uncompressed tar in memory) into a decluttered, symbolic model.
fn load_symbolic(tar: &[u8], name: &str) -> Result<TypedModel, EngineError> {
    let nnef = tract_nnef::nnef();
    let proto = nnef
        .proto_model_for_read(&mut &*tar)
        .map_err(load_err(name))?;
    nnef.model_for_proto_model(&proto)
        .and_then(|m| m.into_decluttered())
        .map_err(load_err(name))
}

/// The f32 contents of the reused input tensor, for refilling in place. Fails if tract
/// still holds a handle on it (the previous run's outputs must be dropped first).
fn input_slice(
    input: &mut Arc<Tensor>,
) -> Result<tract_core::internal::PlainViewMut<'_>, EngineError> {
    let tensor =
        Arc::get_mut(input).ok_or_else(|| EngineError::Run("input tensor still shared".into()))?;
    tensor
        .try_as_plain_ram_mut()
        .map_err(|e| EngineError::Run(format!("{e:#}")))
}

/// One node of a profiled run.
#[derive(Clone, Debug)]
pub struct NodeProfile {
    /// tract's op name (e.g. `Conv`, `OptMatMul`, `Silu`).
    pub op: String,
    /// The node's name in the optimised graph (derived from the NNEF identifiers).
    pub name: String,
    pub seconds: f64,
    /// Bytes live when the node started (0 without the counting allocator).
    pub live_before: usize,
    /// Most bytes live while it ran.
    pub peak_bytes: usize,
}

/// Runs an NNEF model held in memory and returns all its outputs: what int8 calibration
/// needs (the exporter's calibration graph outputs every quantised conv's input).
pub struct NnefRunner {
    state: TypedSimpleState,
    input: Arc<Tensor>,
}

impl NnefRunner {
    /// `entries`: NNEF entries by name (`graph.nnef`, `*.dat`), sized `width`×`height`.
    pub fn new(
        entries: &std::collections::BTreeMap<String, Vec<u8>>,
        width: u32,
        height: u32,
    ) -> Result<Self, EngineError> {
        let tar = crate::model_file::tar_in_memory(entries);
        let symbolic = load_symbolic(&tar, "<calibration graph>")?;
        let (_plan, state, input) = Engine::plan(&symbolic, "<calibration graph>", width, height)?;
        Ok(Self { state, input })
    }

    /// Runs on a planar `[3, H, W]` input; returns every output, flattened.
    pub fn run(&mut self, input: &[f32]) -> Result<Vec<Vec<f32>>, EngineError> {
        let run_err = |e: TractError| EngineError::Run(format!("{e:#}"));
        {
            let mut plain = input_slice(&mut self.input)?;
            let data = plain.as_slice_mut::<f32>().map_err(run_err)?;
            if data.len() != input.len() {
                return Err(PreprocessError::BufferSize {
                    got: input.len(),
                    want: data.len(),
                }
                .into());
            }
            data.copy_from_slice(input);
        }
        let outputs = self
            .state
            .run(tvec!(TValue::from_const(self.input.clone())))
            .map_err(run_err)?;
        outputs
            .iter()
            .map(|o| {
                let plain = o.try_as_plain_ram().map_err(run_err)?;
                Ok(plain.as_slice::<f32>().map_err(run_err)?.to_vec())
            })
            .collect()
    }
}

impl Engine {
    /// Loads a model file and prepares it for a `width`×`height` network input (the model's
    /// own training size when `None`).
    pub fn load(path: &Path, size: Option<(u32, u32)>) -> Result<Self, EngineError> {
        let file = ModelFile::read(path)?;
        let name = path.display().to_string();
        let symbolic = load_symbolic(&file.nnef_tar(), &name)?;
        let [w, h] = file.metadata.input_size;
        let (width, height) = size.unwrap_or((w, h));
        let (plan, state, input) = Self::plan(&symbolic, &name, width, height)?;
        Ok(Self {
            metadata: file.metadata,
            path: name,
            symbolic,
            plan,
            state,
            net_width: width,
            net_height: height,
            input,
            output: None,
        })
    }

    #[allow(clippy::type_complexity)]
    fn plan(
        symbolic: &TypedModel,
        path: &str,
        width: u32,
        height: u32,
    ) -> Result<(Arc<TypedSimplePlan>, TypedSimpleState, Arc<Tensor>), EngineError> {
        let plan_err = |reason: String| EngineError::Plan {
            path: path.to_string(),
            width,
            height,
            reason,
        };
        Placement::in_network(width, height, width, height)?;
        let mut values = std::collections::HashMap::new();
        // The exported graph's sides are 8·H8 × 8·W8 (see the trainer's export).
        let multiple = crate::preprocess::SIZE_MULTIPLE;
        values.insert(
            symbolic.symbols.sym("H8"),
            TDim::Val((height / multiple) as i64),
        );
        values.insert(
            symbolic.symbols.sym("W8"),
            TDim::Val((width / multiple) as i64),
        );
        let plan = symbolic
            .set_symbols(&values)
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(|e| plan_err(format!("{e:#}")))?;
        let state = plan.spawn().map_err(|e| plan_err(format!("{e:#}")))?;
        let input = Arc::new(
            Tensor::zero::<f32>(&[1, 3, height as usize, width as usize])
                .map_err(|e| plan_err(format!("{e:#}")))?,
        );
        Ok((plan, state, input))
    }

    /// The network input size, `(width, height)`.
    pub fn input_size(&self) -> (u32, u32) {
        (self.net_width, self.net_height)
    }

    /// Re-plans the engine for another network input size (no-op when unchanged).
    pub fn set_input_size(&mut self, width: u32, height: u32) -> Result<(), EngineError> {
        if (width, height) != (self.net_width, self.net_height) {
            let (plan, state, input) = Self::plan(&self.symbolic, &self.path, width, height)?;
            (self.plan, self.state, self.input) = (plan, state, input);
            self.output = None;
            (self.net_width, self.net_height) = (width, height);
        }
        Ok(())
    }

    /// Where an image of `width`×`height` goes in the network input, or an error if it
    /// does not fit.
    pub fn placement(&self, width: u32, height: u32) -> Result<Placement, EngineError> {
        Ok(Placement::in_network(
            width,
            height,
            self.net_width,
            self.net_height,
        )?)
    }

    /// Runs the model on `image` and writes vessel probabilities at the image's resolution
    /// (row-major) into `probabilities`, which must hold `width × height` values.
    pub fn infer(
        &mut self,
        image: &RgbImage,
        probabilities: &mut [f32],
    ) -> Result<Placement, EngineError> {
        let placement = self.load_input(image)?;
        self.run()?;
        self.read_output(&placement, probabilities)?;
        Ok(placement)
    }

    /// Stage 1 of [`infer`](Self::infer): preprocesses `image` into the engine's own input
    /// tensor (no allocation).
    pub fn load_input(&mut self, image: &RgbImage) -> Result<Placement, EngineError> {
        let (w, h) = image.dimensions();
        let placement = self.placement(w, h)?;
        // The previous frame's output is dropped first so that tract holds no handle on
        // the input and it is ours to refill.
        self.output = None;
        let run_err = |e: TractError| EngineError::Run(format!("{e:#}"));
        let mut plain = input_slice(&mut self.input)?;
        let data = plain.as_slice_mut::<f32>().map_err(run_err)?;
        placement.write_input(image, self.metadata.normalization, data)?;
        Ok(placement)
    }

    /// Stage 2: runs tract on the loaded input (tract allocates its intermediate tensors).
    pub fn run(&mut self) -> Result<(), EngineError> {
        // The last frame's output goes before this frame starts, so each frame's blocks are
        // its own and the frame arena can be replayed (`large_blocks`).
        self.output = None;
        let frame = crate::large_blocks::Frame::begin();
        let mut outputs = self
            .state
            .run(tvec!(TValue::from_const(self.input.clone())))
            .map_err(|e| EngineError::Run(format!("{e:#}")))?;
        drop(frame);
        self.output = outputs.pop();
        Ok(())
    }

    /// Stage 3: crops the network output back to the image (no allocation).
    pub fn read_output(
        &self,
        placement: &Placement,
        probabilities: &mut [f32],
    ) -> Result<(), EngineError> {
        let output = self
            .output
            .as_ref()
            .ok_or_else(|| EngineError::Run("no output: run the model first".into()))?;
        let run_err = |e: TractError| EngineError::Run(format!("{e:#}"));
        let plain = output.try_as_plain_ram().map_err(run_err)?;
        placement.crop_plane(plain.as_slice::<f32>().map_err(run_err)?, probabilities)?;
        Ok(())
    }

    /// Convenience: probabilities of an image of any size, re-planning the network size to
    /// the smallest that holds it when the current one does not (allocates the result).
    pub fn segment(&mut self, image: &RgbImage) -> Result<Vec<f32>, EngineError> {
        let (w, h) = image.dimensions();
        if self.placement(w, h).is_err() {
            let p = Placement::smallest_for(w, h);
            self.set_input_size(p.net_width, p.net_height)?;
        }
        let mut probs = vec![0.0; (w * h) as usize];
        self.infer(image, &mut probs)?;
        Ok(probs)
    }

    /// Sets how many threads tract's matrix products use, process-wide (1 = no thread
    /// pool). More than one needs the `multithread` feature.
    pub fn set_threads(threads: usize) -> Result<(), EngineError> {
        #[cfg(feature = "multithread")]
        {
            use tract_linalg::multithread::{set_default_executor, Executor};
            set_default_executor(if threads > 1 {
                Executor::multithread(threads)
            } else {
                Executor::SingleThread
            });
            Ok(())
        }
        #[cfg(not(feature = "multithread"))]
        match threads {
            1 => Ok(()),
            n => Err(EngineError::Run(format!(
                "{n} threads requested, but this build is single-threaded (enable the `multithread` feature)"
            ))),
        }
    }

    /// Runs the loaded input once, timing every node, in execution order. With the
    /// counting allocator installed (the `vessel` binary) each node also gets the bytes
    /// live before it and the most live while it ran, so the run's memory peak can be
    /// traced to a node. The run is a frame like [`run`](Self::run)'s: after one plain run
    /// its tensors come from the frame arena, so ops that write fresh tensors are timed as
    /// a frame runs them, without the page faults of newly mapped memory.
    pub fn profile_run(&mut self) -> Result<Vec<NodeProfile>, EngineError> {
        // Room for every node up front, so the record list never grows mid-run (each
        // record's two names are small blocks, below the arena's size).
        let mut nodes = Vec::with_capacity(self.state.model().nodes().len());
        self.output = None;
        let frame = crate::large_blocks::Frame::begin();
        let outputs = self
            .state
            .run_plan_with_eval(
                tvec!(TValue::from_const(self.input.clone())),
                |ctx, state, node, inputs| {
                    let live_before = crate::alloc_count::stats().live_bytes;
                    crate::alloc_count::reset_peak();
                    let t = std::time::Instant::now();
                    let r = tract_core::plan::eval(ctx, state, node, inputs);
                    let seconds = t.elapsed().as_secs_f64();
                    let peak_bytes = crate::alloc_count::stats().peak_bytes;
                    nodes.push(NodeProfile {
                        op: node.op().name().to_string(),
                        name: node.name.clone(),
                        seconds,
                        live_before,
                        peak_bytes,
                    });
                    r
                },
            )
            .map_err(|e| EngineError::Run(format!("{e:#}")))?;
        drop(frame);
        self.output = outputs.into_iter().next();
        Ok(nodes)
    }
}
