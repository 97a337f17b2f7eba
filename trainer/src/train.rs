//! The training loop: Adam, reduce-LR-on-plateau, early stopping, best checkpoint by the
//! validation score, a checkpoint every epoch (atomic) and `--resume` from it, a progress
//! bar, a per-epoch CSV and a PNG of the curves.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use burn::module::Module;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use vessel_runtime::metrics::Scores;
use vessel_runtime::preprocess::Placement;

use crate::augment::{random_crop, Augment, Example};
use crate::checkpoint;
use crate::data::Sample;
use crate::loss::LossConfig;
use crate::model::{SaUnetConfig, SaUnetV2};

/// Which validation score picks the best checkpoint and drives plateau / early stopping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Selection {
    F1,
    Mcc,
    /// The lowest validation loss (the authors' rule for the plateau and early stop).
    Loss,
}

impl Selection {
    /// The score to maximise.
    fn of(self, s: &Scores, loss: f64) -> f64 {
        match self {
            Selection::F1 => s.f1,
            Selection::Mcc => s.mcc,
            Selection::Loss => -loss,
        }
    }
}

/// Everything that defines a run; saved in every checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainOptions {
    pub dataset: String,
    pub input_size: u32,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
    pub plateau_patience: usize,
    pub plateau_factor: f64,
    pub min_learning_rate: f64,
    pub early_stop_patience: usize,
    pub selection: Selection,
    pub threshold: f32,
    pub loss: LossConfig,
    pub augment: Augment,
    pub model: SaUnetConfig,
    /// Checkpoint whose weights started this run (fine-tuning), instead of a random init.
    #[serde(default)]
    pub init_from: Option<PathBuf>,
    /// What `init_from` held when the run started: its dataset and epochs.
    #[serde(default)]
    pub init_origin: Option<String>,
    /// Train on random `crop`×`crop` windows of the augmented canvas instead of the whole
    /// canvas: (input / crop)² windows an image an epoch (about the same pixels as the
    /// whole), in as many more, smaller steps. Validation stays on whole images.
    #[serde(default)]
    pub crop: Option<u32>,
    /// Training draws an epoch (each an augmented image, or a crop of one): the training
    /// set is visited over and over, each visit augmented afresh, as the authors' offline
    /// copies do. None: each image (or crop) once.
    #[serde(default)]
    pub epoch_draws: Option<usize>,
}

impl TrainOptions {
    /// The paper's recipe for a dataset, at an input size.
    pub fn reference(dataset: String, input_size: u32) -> Self {
        Self {
            dataset,
            input_size,
            epochs: 150,
            batch_size: 2,
            learning_rate: 1e-3,
            seed: 42,
            plateau_patience: 10,
            plateau_factor: 0.5,
            min_learning_rate: 1e-6,
            early_stop_patience: 20,
            selection: Selection::F1,
            threshold: 0.5,
            loss: LossConfig::default(),
            augment: Augment::default(),
            model: SaUnetConfig::default(),
            init_from: None,
            init_origin: None,
            crop: None,
            epoch_draws: None,
        }
    }

    /// Training windows per image and epoch: 1 without `crop`.
    pub fn crops_per_image(&self) -> usize {
        match self.crop {
            None => 1,
            Some(c) => ((self.input_size as f64 / c as f64).powi(2).round() as usize).max(1),
        }
    }

    /// Checks what the command line cannot: sizes the network can take.
    pub fn check(&self) -> Result<()> {
        if self.batch_size == 0 {
            bail!("--batch-size must be at least 1");
        }
        if self.epoch_draws == Some(0) {
            bail!("--epoch-images must be at least 1");
        }
        if let Some(c) = self.crop {
            if c == 0 || c % 8 != 0 || c > self.input_size {
                bail!(
                    "--crop must be a multiple of 8 (the network pools three times) and at most \
                     the input size {}, got {c}",
                    self.input_size
                );
            }
        }
        Ok(())
    }
}

/// One row of the metrics CSV.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    pub val_f1: f64,
    pub val_mcc: f64,
    pub val_auc: f64,
    pub learning_rate: f64,
    pub seconds: f64,
}

/// Reduce-on-plateau and early-stopping bookkeeping over a score to maximise.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Patience {
    /// −∞ before the first epoch (written as `null`: JSON has no infinities).
    #[serde(with = "score_or_null")]
    pub best: f64,
    pub best_epoch: usize,
    /// Epochs since the best, for the LR plateau (reset when the LR is cut).
    pub plateau_wait: usize,
    /// Epochs since the best, for early stopping.
    pub stop_wait: usize,
}

/// A score that may be −∞, as JSON: `null` for −∞.
mod score_or_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(score: &f64, s: S) -> Result<S::Ok, S::Error> {
        if score.is_finite() {
            s.serialize_some(score)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NEG_INFINITY))
    }
}

/// What one epoch's score means for the run.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    pub improved: bool,
    pub cut_learning_rate: bool,
    pub stop: bool,
}

impl Patience {
    pub(crate) fn new() -> Self {
        Self {
            best: f64::NEG_INFINITY,
            best_epoch: 0,
            plateau_wait: 0,
            stop_wait: 0,
        }
    }

    pub fn update(&mut self, epoch: usize, score: f64, plateau: usize, stop: usize) -> Verdict {
        let improved = score > self.best;
        if improved {
            self.best = score;
            self.best_epoch = epoch;
            self.plateau_wait = 0;
            self.stop_wait = 0;
        } else {
            self.plateau_wait += 1;
            self.stop_wait += 1;
        }
        let cut = !improved && self.plateau_wait >= plateau;
        if cut {
            self.plateau_wait = 0;
        }
        Verdict {
            improved,
            cut_learning_rate: cut,
            stop: self.stop_wait >= stop,
        }
    }
}

/// The training state saved in checkpoints.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrainState {
    pub options: TrainOptions,
    pub epochs_done: usize,
    pub steps_done: usize,
    pub learning_rate: f64,
    pub patience: Patience,
    pub history: Vec<EpochRecord>,
    /// Set when early stopping ended the run.
    pub finished: bool,
    /// For a checkpoint made by `vessel-train average`: the checkpoints whose weights it is
    /// the mean of ("PATH (epoch N)"); empty for a run's own checkpoints.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub averaged_from: Vec<String>,
    /// For a checkpoint made by `vessel-train import`: the model file it was read from
    /// ("PATH (sha256:…)"); its history is not in the file, so `history` is empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imported_from: Option<String>,
}

impl TrainState {
    /// What a run's weights were trained on, for runs that start from them: "DATASET (N epochs)".
    pub fn origin(&self) -> String {
        let imported = self
            .imported_from
            .as_ref()
            .map(|file| format!(", imported from {file}"))
            .unwrap_or_default();
        match self.averaged_weights() {
            None => format!(
                "{} ({} epochs{imported})",
                self.options.dataset, self.epochs_done
            ),
            Some(mean) => format!("{} ({mean}{imported})", self.options.dataset),
        }
    }

    /// "the mean of the weights of A, B…" for a checkpoint made by `vessel-train average`.
    pub fn averaged_weights(&self) -> Option<String> {
        (!self.averaged_from.is_empty()).then(|| {
            format!(
                "the mean of the weights of {}",
                self.averaged_from.join(", ")
            )
        })
    }
}

/// Where a run keeps its files.
pub struct RunDir {
    pub dir: PathBuf,
}

impl RunDir {
    pub fn last(&self) -> PathBuf {
        self.dir.join("last.ckpt")
    }
    pub fn best(&self) -> PathBuf {
        self.dir.join("best.ckpt")
    }
    pub fn csv(&self) -> PathBuf {
        self.dir.join("metrics.csv")
    }
    pub fn plot(&self) -> PathBuf {
        self.dir.join("curves.png")
    }
}

/// Holds `train.lock` in a run folder while a process trains it, so two processes never
/// write the same checkpoints. A lock left by a process that no longer runs is taken over.
struct RunLock {
    path: PathBuf,
}

impl RunLock {
    fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join("train.lock");
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    write!(f, "{}", std::process::id())
                        .with_context(|| format!("writing {}", path.display()))?;
                    return Ok(Self { path });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let pid = std::fs::read_to_string(&path).unwrap_or_default();
                    let pid = pid.trim();
                    let alive = !pid.is_empty() && Path::new("/proc").join(pid).exists();
                    if alive {
                        bail!(
                            "{} is being trained by process {pid}; stop it first (or remove {} if that is not a training process)",
                            dir.display(),
                            path.display()
                        );
                    }
                    // Stale: its process is gone.
                    std::fs::remove_file(&path)
                        .with_context(|| format!("removing stale {}", path.display()))?;
                }
                Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
            }
        }
        bail!("cannot take the lock {}", path.display())
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

pub struct TrainRequest<'a> {
    pub options: TrainOptions,
    pub train: &'a [Sample],
    pub validation: &'a [Sample],
    pub out: PathBuf,
    pub resume: bool,
    /// On resume, continue at this learning rate instead of the saved one (a manual cut).
    /// A new rate is a new phase of the run: the plateau and early-stopping counts restart,
    /// and a run that early stopping ended trains again. New runs use `options`.
    pub resume_learning_rate: Option<f64>,
    /// Show a progress bar (off in tests).
    pub progress: bool,
}

/// Trains and returns the final state. Best and last checkpoints, CSV and plot are in `out`.
pub fn run(req: TrainRequest<'_>) -> Result<TrainState> {
    // Before anything is created: a refused run leaves no folder behind. (A resumed run
    // takes its options from its checkpoint, checked when it started.)
    req.options.check()?;
    let run_dir = RunDir {
        dir: req.out.clone(),
    };
    std::fs::create_dir_all(&run_dir.dir)
        .with_context(|| format!("creating run folder {}", run_dir.dir.display()))?;
    let _lock = RunLock::acquire(&run_dir.dir)?;
    let device = crate::backend::training_device();

    let (mut model, mut optimizer, mut state) = if req.resume {
        let loaded = checkpoint::load::<TrainState>(&run_dir.last()).with_context(|| {
            format!(
                "cannot resume: no usable checkpoint in {}",
                run_dir.dir.display()
            )
        })?;
        let model = loaded.load_model(SaUnetV2::new(&loaded.state.options.model, &device))?;
        let optimizer = loaded.load_optimizer(AdamConfig::new().init())?;
        let mut state = loaded.state;
        // Only the length of the run may change on resume (to train further). A run that
        // stopped early stays stopped, unless it is given a new learning rate.
        state.options.epochs = req.options.epochs;
        if let Some(rate) = req.resume_learning_rate {
            if !(rate.is_finite() && rate >= 0.0) {
                bail!("the learning rate must be a finite number ≥ 0, got {rate}");
            }
            if rate != state.learning_rate {
                println!(
                    "learning rate {:.1e} -> {rate:.1e} from epoch {}",
                    state.learning_rate,
                    state.epochs_done + 1
                );
                state.learning_rate = rate;
                state.patience.plateau_wait = 0;
                state.patience.stop_wait = 0;
                state.finished = false;
            }
        }
        (model, optimizer, state)
    } else {
        if run_dir.last().exists() {
            bail!(
                "{} already holds a run: pass --resume to continue it, or choose another --out",
                run_dir.dir.display()
            );
        }
        device.seed(req.options.seed);
        let model = SaUnetV2::new(&req.options.model, &device);
        let mut options = req.options.clone();
        let model = match &req.options.init_from {
            None => model,
            Some(path) => {
                let (model, origin) = init_weights(model, path, &req.options.model)?;
                options.init_origin = Some(origin);
                model
            }
        };
        let state = TrainState {
            learning_rate: req.options.learning_rate,
            options,
            epochs_done: 0,
            steps_done: 0,
            patience: Patience::new(),
            history: Vec::new(),
            finished: false,
            averaged_from: Vec::new(),
            imported_from: None,
        };
        (model, AdamConfig::new().init(), state)
    };
    let opts = state.options.clone();

    let prepare = |samples: &[Sample]| -> Result<Vec<Example>> {
        samples
            .iter()
            .map(|s| {
                Example::from_sample(s, opts.input_size)
                    .with_context(|| format!("{}: preparing for training", s.image_path.display()))
            })
            .collect()
    };
    let train_examples = prepare(req.train)?;
    let val_examples = prepare(req.validation)?;
    // A unit is one training window: image `unit / crops_per_image`. A draw is one visit
    // of a unit in an epoch, augmented by its own RNG: draw `d` of epoch `e` is unit
    // `(d + e · draws) % units`, so when draws are not a multiple of the units the extra
    // visits move round the units from epoch to epoch.
    let crops_per_image = opts.crops_per_image();
    let units = train_examples.len() * crops_per_image;
    let draws = opts.epoch_draws.unwrap_or(units);
    let steps_per_epoch = draws.div_ceil(opts.batch_size);
    if let Some(c) = opts.crop {
        println!("training on {c}x{c} crops, {crops_per_image} an image an epoch: {steps_per_epoch} steps an epoch");
    }
    if draws != units {
        println!(
            "{draws} augmented draws an epoch from {} training images: {steps_per_epoch} steps an epoch",
            train_examples.len()
        );
    }

    let bar = if req.progress {
        let total = (opts.epochs * steps_per_epoch) as u64;
        let bar =
            ProgressBar::new(total).with_position((state.epochs_done * steps_per_epoch) as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} steps  ETA {eta_precise}  {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.reset_eta();
        bar
    } else {
        ProgressBar::hidden()
    };

    // Without a terminal (a run in the background, its output in a log) the bar draws
    // nothing: a plain line every minute says where the epoch is.
    let plain_progress = req.progress && !std::io::stderr().is_terminal();
    let mut last_line = Instant::now();
    while state.epochs_done < opts.epochs && !state.finished {
        let epoch = state.epochs_done;
        let started = Instant::now();
        let mut order: Vec<usize> = (0..draws).collect();
        // The shuffle's own stream: a sample index past any draw's, inside the 32 bits
        // `Augment::rng` mixes with the epoch (usize::MAX there dropped the epoch out, and
        // every epoch had the same batches).
        order.shuffle(&mut Augment::rng(opts.seed, epoch, u32::MAX as usize));
        let mut loss_sum = 0.0;
        for (step, batch) in (1u32..).zip(order.chunks(opts.batch_size)) {
            // DropBlock draws from the backend RNG: seed it per step for reproducible resumes.
            device.seed(opts.seed.wrapping_add(state.steps_done as u64 * 7919));
            let (inputs, labels) =
                make_batch(&train_examples, units, draws, batch, &opts, epoch, &device);
            let logits = model.forward(inputs);
            let loss = opts.loss.loss(logits, labels);
            let loss_value = scalar(&loss);
            if !loss_value.is_finite() {
                bail!(
                    "loss became {loss_value} at epoch {} step {}",
                    epoch + 1,
                    state.steps_done + 1
                );
            }
            loss_sum += loss_value * batch.len() as f64;
            let grads = GradientsParams::from_grads(loss.backward(), &model);
            model = optimizer.step(state.learning_rate, model, grads);
            state.steps_done += 1;
            bar.inc(1);
            if plain_progress && last_line.elapsed().as_secs() >= 60 {
                last_line = Instant::now();
                eprintln!(
                    "epoch {}/{}  step {step}/{steps_per_epoch}  loss {loss_value:.4}  {:.1} s a step",
                    epoch + 1,
                    opts.epochs,
                    started.elapsed().as_secs_f64() / f64::from(step)
                );
            }
            bar.set_message(format!(
                "epoch {}/{}  loss {loss_value:.4}  lr {:.1e}",
                epoch + 1,
                opts.epochs,
                state.learning_rate
            ));
        }
        let train_loss = loss_sum / draws as f64;
        let (val_loss, val_scores) = validate(&model.valid(), &val_examples, req.validation, &opts);
        let score = opts.selection.of(&val_scores, val_loss);
        let verdict = state.patience.update(
            epoch + 1,
            score,
            opts.plateau_patience,
            opts.early_stop_patience,
        );
        let record = EpochRecord {
            epoch: epoch + 1,
            train_loss,
            val_loss,
            val_f1: val_scores.f1,
            val_mcc: val_scores.mcc,
            val_auc: val_scores.auc.unwrap_or(f64::NAN),
            learning_rate: state.learning_rate,
            seconds: started.elapsed().as_secs_f64(),
        };
        state.history.push(record.clone());
        state.epochs_done += 1;
        if verdict.cut_learning_rate {
            state.learning_rate =
                (state.learning_rate * opts.plateau_factor).max(opts.min_learning_rate);
        }
        if verdict.stop {
            state.finished = true;
        }
        // Best first, then last: a kill between the two loses at most this epoch.
        if verdict.improved {
            checkpoint::save(&run_dir.best(), &state, model.clone(), None)?;
        }
        checkpoint::save(&run_dir.last(), &state, model.clone(), Some(&optimizer))?;
        write_csv(&run_dir.csv(), &state.history)?;
        crate::plot::training_curves(&state.history, &run_dir.plot())?;
        bar.suspend(|| {
            println!(
                "epoch {:>3}/{}  train loss {:.4}  val loss {:.4}  val F1 {:.4}  MCC {:.4}  AUC {:.4}  lr {:.1e}  {:.0}s{}{}",
                record.epoch,
                opts.epochs,
                record.train_loss,
                record.val_loss,
                record.val_f1,
                record.val_mcc,
                record.val_auc,
                record.learning_rate,
                record.seconds,
                if verdict.improved { "  *best" } else { "" },
                if verdict.stop { "  (early stop)" } else { "" },
            )
        });
    }
    bar.finish_and_clear();
    Ok(state)
}

/// Starts a run from another run's weights (optimiser state and history are not taken);
/// also returns what they were trained on, for the record.
fn init_weights(model: SaUnetV2, path: &Path, config: &SaUnetConfig) -> Result<(SaUnetV2, String)> {
    let loaded = checkpoint::load::<TrainState>(path)
        .with_context(|| format!("--init-from {}", path.display()))?;
    // DropBlock settings may differ: this run regularises as it is told.
    if !loaded.state.options.model.same_weights(config) {
        bail!(
            "--init-from {}: its model ({:?}) differs from this run's ({:?})",
            path.display(),
            loaded.state.options.model,
            config
        );
    }
    let origin = loaded.state.origin();
    Ok((loaded.load_model(model)?, origin))
}

fn scalar(t: &Tensor<1>) -> f64 {
    t.to_data()
        .convert::<f32>()
        .as_slice::<f32>()
        .map(|s| s[0] as f64)
        .unwrap_or(f64::NAN)
}

/// Stacks augmented training windows (whole canvases, or crops of them) into `[B, 3, S, S]`
/// inputs and `[B, 1, S, S]` labels. Each draw is unit `(draw + epoch · draws_per_epoch) %
/// units` and augments from its own RNG (seed, epoch, draw).
fn make_batch(
    examples: &[Example],
    units: usize,
    draws_per_epoch: usize,
    draws: &[usize],
    opts: &TrainOptions,
    epoch: usize,
    device: &Device,
) -> (Tensor<4>, Tensor<4>) {
    let canvas = examples[0].size;
    let size = opts.crop.map_or(canvas, |c| c as usize);
    let mut inputs = Vec::with_capacity(draws.len() * 3 * size * size);
    let mut labels = Vec::with_capacity(draws.len() * size * size);
    let per_image = opts.crops_per_image();
    for &draw in draws {
        let example = &examples[draw_unit(draw, epoch, draws_per_epoch, units) / per_image];
        let mut rng = Augment::rng(opts.seed, epoch, draw);
        let (x, y) = opts.augment.apply(example, &mut rng);
        let (x, y) = match opts.crop {
            None => (x, y),
            Some(_) => random_crop(canvas, &x, &y, size, &mut rng),
        };
        inputs.extend_from_slice(&x);
        labels.extend_from_slice(&y);
    }
    let b = draws.len();
    (
        Tensor::from_data(TensorData::new(inputs, [b, 3, size, size]), device),
        Tensor::from_data(TensorData::new(labels, [b, 1, size, size]), device),
    )
}

/// The unit (training window) draw `draw` of epoch `epoch` visits: draws walk the units in
/// turn, continuing where the previous epoch stopped, so every unit gets as many visits as
/// any other over the run, give or take one.
fn draw_unit(draw: usize, epoch: usize, draws_per_epoch: usize, units: usize) -> usize {
    (draw + epoch * draws_per_epoch) % units
}

/// Validation loss and mean scores (inside the FOV, at the threshold) of an inference model.
fn validate(
    model: &SaUnetV2,
    examples: &[Example],
    samples: &[Sample],
    opts: &TrainOptions,
) -> (f64, Scores) {
    let device = crate::backend::inference_device();
    let mut loss_sum = 0.0;
    let mut scores = Vec::new();
    for (ex, sample) in examples.iter().zip(samples) {
        let x = Tensor::from_data(
            TensorData::new(ex.input.clone(), [1, 3, ex.size, ex.size]),
            &device,
        );
        let y = Tensor::from_data(
            TensorData::new(ex.label.clone(), [1, 1, ex.size, ex.size]),
            &device,
        );
        let logits = model.forward(x);
        loss_sum += scalar(&opts.loss.loss(logits.clone(), y));
        let net_probs = probabilities_of(logits);
        let (w, h) = sample.image.dimensions();
        let placement = Placement::in_network(w, h, opts.input_size, opts.input_size)
            .expect("validated when the example was prepared");
        let mut probs = vec![0.0; placement.image_plane_len()];
        placement
            .crop_plane(&net_probs, &mut probs)
            .expect("sizes from placement");
        scores.push(Scores::of_probabilities(
            &probs,
            &sample.label.data,
            Some(&sample.fov.data),
            opts.threshold,
        ));
    }
    (
        loss_sum / examples.len().max(1) as f64,
        Scores::mean(&scores),
    )
}

/// Sigmoid of `[1, 1, H, W]` logits, as a flat plane.
pub fn probabilities_of(logits: Tensor<4>) -> Vec<f32> {
    burn::tensor::activation::sigmoid(logits)
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 data")
}

/// Rewrites the per-epoch CSV (atomically) from the history.
fn write_csv(path: &Path, history: &[EpochRecord]) -> Result<()> {
    let mut out = Vec::new();
    writeln!(
        out,
        "epoch,train_loss,val_loss,val_f1,val_mcc,val_auc,learning_rate,seconds"
    )?;
    for r in history {
        writeln!(
            out,
            "{},{:.6},{:.6},{:.6},{:.6},{:.6},{:e},{:.1}",
            r.epoch,
            r.train_loss,
            r.val_loss,
            r.val_f1,
            r.val_mcc,
            r.val_auc,
            r.learning_rate,
            r.seconds
        )?;
    }
    checkpoint::write_atomic(path, &out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_visit_every_unit_evenly_over_epochs() {
        // DRIVE's authors' volume: 240 draws an epoch from 18 images.
        let (draws, units) = (240, 18);
        let mut visits = vec![0usize; units];
        for epoch in 0..9 {
            let mut this_epoch = vec![0usize; units];
            for d in 0..draws {
                this_epoch[draw_unit(d, epoch, draws, units)] += 1;
            }
            // Within an epoch: 13 or 14 visits each.
            assert!(
                this_epoch.iter().all(|&v| v == 13 || v == 14),
                "{this_epoch:?}"
            );
            visits
                .iter_mut()
                .zip(&this_epoch)
                .for_each(|(v, e)| *v += e);
        }
        // 9 epochs are 2160 draws, 120 a unit exactly: the extra visits went round.
        assert!(visits.iter().all(|&v| v == 120), "{visits:?}");
        // Fewer draws than units: the epochs take turns, none is left out.
        let seen: std::collections::HashSet<usize> = (0..6)
            .flat_map(|epoch| (0..3).map(move |d| draw_unit(d, epoch, 3, units)))
            .collect();
        assert_eq!(seen.len(), units);
    }

    #[test]
    fn plateau_cuts_and_early_stop() {
        let mut p = Patience::new();
        assert!(p.update(1, 0.5, 2, 3).improved);
        assert_eq!(
            p.update(2, 0.4, 2, 3),
            Verdict {
                improved: false,
                cut_learning_rate: false,
                stop: false
            }
        );
        assert_eq!(
            p.update(3, 0.5, 2, 3),
            Verdict {
                improved: false,
                cut_learning_rate: true,
                stop: false
            }
        );
        assert_eq!(
            p.update(4, 0.45, 2, 3),
            Verdict {
                improved: false,
                cut_learning_rate: false,
                stop: true
            }
        );
        assert!(p.update(5, 0.6, 2, 3).improved);
        assert_eq!((p.best, p.best_epoch, p.stop_wait), (0.6, 5, 0));
    }
}
