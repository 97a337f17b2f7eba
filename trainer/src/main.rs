//! `vessel-train`: train, evaluate and inspect SA-UNetv2.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use vessel_runtime::tta::Tta;
use vessel_trainer::backend::{self, Backend};
use vessel_trainer::data::{self, Dataset, Split, StareProtocol};
use vessel_trainer::eval::{self, Predictor};
use vessel_trainer::model::{SaUnetConfig, SaUnetV2};
use vessel_trainer::train::{self, Selection, TrainOptions, TrainRequest};
use vessel_trainer::{bench, checkpoint, summary};

// Large blocks get readable bytes past their end: tract's AMX int8 kernel over-reads, and
// export and eval run int8 models (see `PaddedSystem`).
#[global_allocator]
static ALLOCATOR: vessel_runtime::alloc_count::PaddedSystem =
    vessel_runtime::alloc_count::PaddedSystem;

#[derive(Parser)]
#[command(
    name = "vessel-train",
    version,
    about = "Train and evaluate SA-UNetv2 retinal vessel segmentation"
)]
struct Cli {
    /// Burn backend [default: the first in this build of cuda, tch, flex, ndarray].
    #[arg(long, global = true, value_enum)]
    backend: Option<Backend>,
    /// CPU worker threads of the backend [default: one per core].
    #[arg(long, global = true)]
    threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct DataArgs {
    /// `drive`, `stare`, or a folder in the generic layout (images/, labels/, optional masks/).
    #[arg(long, default_value = "drive")]
    dataset: String,
    /// Folder holding DRIVE/ and STARE/ [default: $VESSEL_DATA_DIR, else ../shared/data]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// STARE split: loo:INDEX (leave one out) or kfold:FOLDS:FOLD.
    #[arg(long, default_value = "kfold:5:0")]
    stare_protocol: StareProtocol,
}

impl DataArgs {
    fn dataset(&self) -> Dataset {
        Dataset::parse(
            &self.dataset,
            &data::resolve_data_dir(self.data_dir.as_deref()),
            self.stare_protocol,
        )
    }
}

#[derive(Subcommand)]
enum Command {
    /// Train on a dataset's training split (a few images held out for validation).
    Train {
        #[command(flatten)]
        data: DataArgs,
        /// Run folder: checkpoints (last.ckpt, best.ckpt), metrics.csv, curves.png.
        #[arg(long, default_value = "runs/drive")]
        out: PathBuf,
        /// Continue the run in --out from its last checkpoint.
        #[arg(long, conflicts_with = "resume_or_new")]
        resume: bool,
        /// Continue the run in --out if it has one, else start it.
        #[arg(long)]
        resume_or_new: bool,
        #[arg(long, default_value_t = 150)]
        epochs: usize,
        #[arg(long, default_value_t = 2)]
        batch_size: usize,
        /// Learning rate [default: 1e-3]. With --resume: the run continues at this rate from
        /// its next epoch (a manual cut; the plateau and early-stopping counts restart); without
        /// it, a resumed run keeps its own rate.
        #[arg(long)]
        lr: Option<f64>,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Training images held out for validation.
        #[arg(long, default_value_t = 2)]
        val_images: usize,
        /// Square network input side (multiple of 8) [default: 592 for DRIVE, else fitted].
        #[arg(long)]
        input_size: Option<u32>,
        /// Weight of the BCE term; the MCC term gets 1 − this.
        #[arg(long, default_value_t = 0.5)]
        bce_weight: f64,
        /// Weight of the vessel class inside BCE.
        #[arg(long, default_value_t = 1.0)]
        vessel_weight: f64,
        #[arg(long, value_enum, default_value_t = Selection::F1)]
        select: Selection,
        #[arg(long, default_value_t = 10)]
        plateau_patience: usize,
        #[arg(long, default_value_t = 20)]
        early_stop_patience: usize,
        /// Train without augmentation.
        #[arg(long)]
        no_augment: bool,
        /// Start from this checkpoint's weights (fine-tuning, e.g. STARE from a DRIVE run)
        /// instead of a random initialisation; a fresh optimiser and learning rate.
        #[arg(long, conflicts_with = "resume")]
        init_from: Option<PathBuf>,
        /// Train on random N×N windows (multiple of 8) of each augmented image, (input/N)²
        /// of them an image an epoch, in that many more, smaller steps; validation stays on
        /// whole images. Kept by --resume.
        #[arg(long, conflicts_with = "resume")]
        crop: Option<u32>,
        /// Augmented draws an epoch: the training images are visited over and over, each
        /// visit augmented afresh (the authors train on about 240 offline copies of DRIVE's
        /// images an epoch) [default: each training image once]. Kept by --resume.
        #[arg(long, conflicts_with = "resume")]
        epoch_images: Option<usize>,
        /// Probability (0-1) that a training image gets the authors' colour copy: PIL-style
        /// saturation ×0-3, brightness ×1-2, contrast ×1-2, sharpness ×0-3 [default: 0].
        #[arg(long, conflicts_with = "resume")]
        authors_colour: Option<f32>,
    },
    /// Evaluate a checkpoint, or an exported model as the runtime runs it, on a test split.
    Eval {
        #[command(flatten)]
        data: DataArgs,
        /// A training checkpoint (burn).
        #[arg(long, required_unless_present = "model", conflicts_with = "model")]
        checkpoint: Option<PathBuf>,
        /// An exported model (.nnef.tgz or folder), run by the runtime's tract engine.
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long, default_value_t = 0.5)]
        threshold: f32,
        /// Write the full report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Save probability maps and binary masks as PNGs into this folder.
        #[arg(long)]
        save_predictions: Option<PathBuf>,
        /// Evaluate the training split instead of the test split.
        #[arg(long)]
        train_split: bool,
        /// Only these images of the split (names, comma-separated: e.g. `--train-split
        /// --images 27,37`, a DRIVE run's validation images).
        #[arg(long, value_delimiter = ',')]
        images: Vec<String>,
        /// Also score the same probabilities at thresholds FROM:TO:STEP (means), to choose
        /// an operating point on held-out images (`export --operating-point`).
        #[arg(long)]
        sweep: Option<String>,
        /// Test-time augmentation: `flips` averages the probabilities of the image and its
        /// horizontal, vertical and double flips (4 runs an image).
        #[arg(long, default_value_t = Tta::None)]
        tta: Tta,
    },
    /// Export a checkpoint as an NNEF model for the runtime (f32).
    Export {
        #[arg(long)]
        checkpoint: PathBuf,
        /// Output: `NAME.nnef.tgz` (archive) or a folder.
        #[arg(long)]
        out: PathBuf,
        /// Evaluate the exported file on this dataset's test split and record the metrics
        /// in its metadata (e.g. `drive`).
        #[arg(long)]
        test_dataset: Option<String>,
        /// Quantise to int8 (calibrated on --calibration's training split).
        #[arg(long, requires = "calibration")]
        int8: bool,
        /// Dataset whose training images calibrate int8 activation ranges (e.g. `drive`).
        #[arg(long)]
        calibration: Option<String>,
        #[arg(long, value_enum, default_value_t = vessel_trainer::export::Calibration::MinMax)]
        calibration_method: vessel_trainer::export::Calibration,
        /// Which 3×3 convs become int8. The default keeps the four full-resolution ones in
        /// f32: faster on x86 than `all`, in less memory (docs/export.md).
        #[arg(long, value_enum, default_value_t = vessel_trainer::export::Int8Scope::BelowFullResolution)]
        int8_scope: vessel_trainer::export::Int8Scope,
        /// Fold an operating point into the head's bias: the model's masks (at its threshold,
        /// 0.5) become the network's masks at this threshold. Choose it on held-out training
        /// images with `eval --sweep`, never on the test set.
        #[arg(long)]
        operating_point: Option<f32>,
        /// With --test-dataset: also score with this test-time augmentation (`flips`:
        /// the image and its three flips, probabilities averaged) and record both.
        #[arg(long, default_value_t = Tta::None, requires = "test_dataset")]
        tta: Tta,
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long, default_value = "kfold:5:0")]
        stare_protocol: StareProtocol,
    },
    /// Average the weights of several checkpoints of one run (e.g. its last epochs) into one
    /// checkpoint, to evaluate and export like any other.
    Average {
        /// The checkpoints (at least two, one architecture).
        #[arg(required = true, num_args = 2..)]
        checkpoints: Vec<PathBuf>,
        /// The averaged checkpoint to write (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Read an f32 model file written by `export` (a shipped model, say) back into a
    /// checkpoint: weights, with the operating point unfolded, and no optimiser state. A
    /// start for `train --init-from` when the run's own checkpoints are gone; it evaluates
    /// and exports like any checkpoint.
    Import {
        /// The f32 model file (`.nnef.tgz` archive or directory).
        #[arg(long)]
        model: PathBuf,
        /// The checkpoint to write (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the model's per-layer parameter table and total.
    Summary,
    /// Measure training throughput (seconds per image-step, peak memory).
    Bench {
        /// Measure every backend of this build in turn, in this one run (a ratio that holds
        /// on a noisy machine), instead of the one --backend selects.
        #[arg(long, conflicts_with = "backend")]
        all_backends: bool,
        #[arg(long, default_value_t = 592)]
        size: u32,
        #[arg(long, default_value_t = 1)]
        batch_size: usize,
        #[arg(long, default_value_t = 1)]
        warmup: usize,
        #[arg(long, default_value_t = 3)]
        steps: usize,
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn load(dataset: &Dataset, split: Split) -> Result<Vec<data::Sample>> {
    let spinner =
        ProgressBar::new_spinner().with_message(format!("loading {}", dataset.describe()));
    let samples = dataset
        .load(split)
        .with_context(|| format!("loading {}", dataset.describe()));
    spinner.finish_and_clear();
    samples
}

fn run(cli: Cli) -> Result<()> {
    backend::keep_freed_memory();
    if let Some(threads) = cli.threads {
        if threads == 0 {
            anyhow::bail!("--threads must be at least 1");
        }
        backend::set_threads(threads).context("setting --threads")?;
    }
    if let Some(choice) = cli.backend {
        backend::select(choice)?;
    }
    match cli.command {
        Command::Average { checkpoints, out } => {
            let state = vessel_trainer::average::average_checkpoints(&checkpoints, &out)?;
            println!(
                "wrote {}: the mean of {}",
                out.display(),
                state.averaged_from.join(", ")
            );
        }
        Command::Import { model, out } => {
            let state = vessel_trainer::import::import_to_checkpoint(&model, &out)?;
            println!(
                "wrote {}: {}, input {}, threshold {}",
                out.display(),
                state.origin(),
                state.options.input_size,
                state.options.threshold
            );
        }
        Command::Summary => {
            let device = backend::inference_device();
            let model = SaUnetV2::new(&SaUnetConfig::default(), &device);
            print!(
                "{}",
                summary::format_table(&summary::parameter_rows(&model))
            );
        }
        Command::Train {
            data,
            out,
            resume,
            resume_or_new,
            epochs,
            batch_size,
            lr,
            seed,
            val_images,
            input_size,
            bce_weight,
            vessel_weight,
            select,
            plateau_patience,
            early_stop_patience,
            no_augment,
            init_from,
            crop,
            epoch_images,
            authors_colour,
        } => {
            if !(0.0..=1.0).contains(&bce_weight) {
                anyhow::bail!("--bce-weight must be between 0 and 1, got {bce_weight}");
            }
            let resume = resume || (resume_or_new && out.join("last.ckpt").exists());
            let dataset = data.dataset();
            let samples = load(&dataset, Split::Train)?;
            let input_size = input_size.unwrap_or_else(|| dataset.default_input_size(&samples));
            let mut options = TrainOptions::reference(dataset.describe(), input_size);
            options.epochs = epochs;
            options.batch_size = batch_size;
            options.learning_rate = lr.unwrap_or(options.learning_rate);
            options.seed = seed;
            options.loss.bce_weight = bce_weight;
            options.loss.mcc_weight = 1.0 - bce_weight;
            options.loss.vessel_weight = vessel_weight;
            options.selection = select;
            options.plateau_patience = plateau_patience;
            options.early_stop_patience = early_stop_patience;
            if no_augment {
                options.augment = vessel_trainer::augment::Augment::none();
            }
            if let Some(p) = authors_colour {
                if !(0.0..=1.0).contains(&p) {
                    anyhow::bail!("--authors-colour is a probability between 0 and 1, got {p}");
                }
                if no_augment {
                    anyhow::bail!("--authors-colour is augmentation: drop --no-augment");
                }
                options.augment.authors_colour = p;
            }
            options.init_from = init_from;
            options.crop = crop;
            options.epoch_draws = epoch_images;
            // On resume the held-out split must be the one the run started with.
            let seed_for_split = if resume {
                checkpoint::load::<train::TrainState>(&out.join("last.ckpt"))
                    .map(|c| c.state.options.seed)
                    .unwrap_or(seed)
            } else {
                seed
            };
            let (train_set, val_set) = data::split_validation(samples, val_images, seed_for_split)?;
            println!(
                "training on {}: {} images, {} held out for validation ({}), input {input_size}x{input_size}, backend {}",
                dataset.describe(),
                train_set.len(),
                val_set.len(),
                val_set.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", "),
                backend::name()
            );
            let state = train::run(TrainRequest {
                options,
                train: &train_set,
                validation: &val_set,
                out: out.clone(),
                resume,
                resume_learning_rate: if resume { lr } else { None },
                progress: true,
            })?;
            if state.finished {
                println!(
                    "early stopping ended this run at epoch {}",
                    state.epochs_done
                );
            }
            println!(
                "done: {} epochs, best validation {:?} {:.4} at epoch {} -> {}",
                state.epochs_done,
                state.options.selection,
                // Loss is kept negated, as a score to maximise.
                if state.options.selection == Selection::Loss {
                    -state.patience.best
                } else {
                    state.patience.best
                },
                state.patience.best_epoch,
                out.join("best.ckpt").display()
            );
        }
        Command::Export {
            checkpoint,
            out,
            test_dataset,
            int8,
            calibration,
            calibration_method,
            int8_scope,
            operating_point,
            tta,
            data_dir,
            stare_protocol,
        } => {
            // A named dataset's split with its description (calibration: train; test: test).
            let load_split = |name: &str, split| -> Result<_> {
                let root = data::resolve_data_dir(data_dir.as_deref());
                let d = Dataset::parse(name, &root, stare_protocol);
                Ok((d.describe(), load(&d, split)?))
            };
            let calibration_set = match (&calibration, int8) {
                (Some(name), true) => Some(load_split(name, Split::Train)?),
                _ => None,
            };
            let test = test_dataset
                .as_deref()
                .map(|name| load_split(name, Split::Test))
                .transpose()?;
            let bar = ProgressBar::new(test.as_ref().map_or(0, |t| t.1.len() as u64));
            bar.set_style(
                ProgressStyle::with_template("evaluating export [{bar:30}] {pos}/{len} {msg}")
                    .expect("template"),
            );
            let outcome = vessel_trainer::export::export_checkpoint(
                &checkpoint,
                &out,
                calibration_set.as_ref().map(|(name, samples)| {
                    vessel_trainer::export::Int8Request {
                        method: calibration_method,
                        scope: int8_scope,
                        dataset: name.clone(),
                        samples,
                    }
                }),
                operating_point,
                test.as_ref().map(|(name, s)| (name.as_str(), s.as_slice())),
                tta,
                &bar,
            )?;
            bar.finish_and_clear();
            let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
            println!(
                "exported {} ({}, {} parameters, input {}x{}, {} bytes)\ncontent {}",
                out.display(),
                outcome.metadata.precision,
                outcome.metadata.parameters,
                outcome.metadata.input_size[0],
                outcome.metadata.input_size[1],
                size,
                outcome.metadata.content_hash
            );
            for report in &outcome.reports {
                print!("{}", eval::format_report(report));
            }
        }
        Command::Eval {
            data,
            checkpoint,
            model,
            threshold,
            json,
            save_predictions,
            train_split,
            images,
            sweep,
            tta,
        } => {
            let sweep = sweep
                .as_deref()
                .map(eval::parse_sweep)
                .transpose()?
                .unwrap_or_default();
            // The model first: a bad model file fails before any data is read.
            let mut engine = match &model {
                Some(path) => Some(vessel_runtime::engine::Engine::load(path, None)?),
                None => None,
            };
            let burn = match (&engine, &checkpoint) {
                (None, Some(path)) => Some(Predictor::from_checkpoint(path)?),
                _ => None,
            };
            let dataset = data.dataset();
            let split = if train_split {
                Split::Train
            } else {
                Split::Test
            };
            let samples = data::select_images(load(&dataset, split)?, &images)
                .with_context(|| format!("--images on {}", dataset.describe()))?;
            let bar = ProgressBar::new(samples.len() as u64);
            bar.set_style(
                ProgressStyle::with_template("evaluating [{bar:30}] {pos}/{len} {msg}")
                    .expect("template"),
            );
            let mut predict: Box<eval::PredictFn<'_>> = match (&mut engine, &burn) {
                (Some(engine), _) => {
                    let m = &engine.metadata;
                    println!(
                        "model {} ({}, trained on {}, {} epochs, {})",
                        model.as_ref().expect("engine implies --model").display(),
                        m.precision,
                        m.trained_on,
                        m.epochs,
                        m.content_hash
                    );
                    Box::new(eval::engine_predict(engine))
                }
                (None, Some((predictor, state))) => {
                    println!(
                        "checkpoint {} (trained on {}, {} epochs)",
                        checkpoint
                            .as_ref()
                            .expect("burn implies --checkpoint")
                            .display(),
                        state.options.dataset,
                        state.epochs_done
                    );
                    Box::new(predictor.as_fn())
                }
                (None, None) => unreachable!("clap requires --checkpoint or --model"),
            };
            let mut report = eval::evaluate(
                &mut *predict,
                &samples,
                &dataset.describe(),
                threshold,
                tta,
                &sweep,
                save_predictions.as_deref(),
                &bar,
            )?;
            drop(predict);
            report.source = checkpoint.clone().or(model.clone());
            bar.finish_and_clear();
            print!("{}", eval::format_report(&report));
            if let Some(path) = json {
                let text = serde_json::to_vec_pretty(&report)?;
                checkpoint::write_atomic(&path, &text)?;
                println!("report written to {}", path.display());
            }
        }
        Command::Bench {
            all_backends,
            size,
            batch_size,
            warmup,
            steps,
            json,
        } => {
            if size % 8 != 0 || size == 0 {
                anyhow::bail!("--size must be a non-zero multiple of 8, got {size}");
            }
            if batch_size == 0 || steps == 0 {
                anyhow::bail!("--batch-size and --steps must be at least 1");
            }
            let backends = if all_backends {
                Backend::available()
            } else {
                vec![backend::current()]
            };
            let mut results = Vec::new();
            for b in backends {
                eprintln!("measuring {b}: {warmup} warm-up + {steps} timed steps at {size}x{size}");
                let result = bench::run(b, size, batch_size, warmup, steps)?;
                println!(
                    "backend {} ({} threads): {:.2} s per {size}x{size} image-step (batch {batch_size}, {steps} steps, best step {:.2} s), peak RSS so far {} MB",
                    result.backend,
                    result.threads.map_or("GPU".into(), |t| t.to_string()),
                    result.seconds_per_image_step,
                    result.seconds_per_step_min,
                    result.peak_rss_mb.map_or("?".into(), |m| format!("{m:.0}"))
                );
                results.push(result);
            }
            if let Some(flex) = results.iter().find(|r| r.backend == Backend::Flex) {
                for r in results.iter().filter(|r| r.backend != Backend::Flex) {
                    println!(
                        "{} / flex: {:.2}x the time per image-step",
                        r.backend,
                        r.seconds_per_image_step / flex.seconds_per_image_step
                    );
                }
            }
            if let Some(path) = json {
                let text = if all_backends {
                    serde_json::to_vec_pretty(&results)?
                } else {
                    serde_json::to_vec_pretty(&results[0])?
                };
                checkpoint::write_atomic(&path, &text)?;
            }
        }
    }
    Ok(())
}
