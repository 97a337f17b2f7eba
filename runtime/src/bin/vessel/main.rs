//! `vessel`: the device program. `segment` (files and folders), `camera` (live screening),
//! `bench` and `profile` (latency and memory on this board), `info`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use vessel_runtime::alloc_count::CountingAllocator;
use vessel_runtime::bench;
use vessel_runtime::engine::Engine;
use vessel_runtime::image_io::load_rgb;
use vessel_runtime::tta::Tta;

#[cfg(target_os = "linux")]
mod live;
mod report;
mod segment;
mod setup;

// Counts allocations and live memory: the memory budget and the benchmark depend on it.
#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// The shipped default model (DRIVE-trained, int8).
pub(crate) const DEFAULT_MODEL: &str = "models/drive-int8.nnef.tgz";

#[derive(Parser)]
#[command(
    name = "vessel",
    version,
    about = "Retinal vessel segmentation on GPU-less devices"
)]
struct Cli {
    /// Return freed activation memory to the system at once and keep no frame arena: RSS
    /// follows live memory between frames too (the peak is the same), for more time a frame
    /// (page faults; docs/performance.md).
    #[arg(long, global = true)]
    low_memory: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Segment fundus images (files and/or folders): mask, overlay and JSON report for each,
    /// plus summary.json and summary.html for the run.
    Segment {
        /// Image files (PNG, JPEG, TIFF, PPM/PGM, GIF, BMP) or folders of them.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Model file [default: the board profile's, else models/drive-int8.nnef.tgz].
        #[arg(long)]
        model: Option<PathBuf>,
        /// Board profile (name in boards/ or a .toml path): model, threads, memory budget.
        #[arg(long)]
        board: Option<String>,
        /// Output folder.
        #[arg(long, short, default_value = "vessel-out")]
        out: PathBuf,
        /// Images with a longer side are scaled down to this before inference.
        #[arg(long, default_value_t = 1024)]
        max_side: u32,
        /// Test-time augmentation: `flips` averages the image and its three flips (4 runs
        /// an image; see docs/performance.md for its gain and cost).
        #[arg(long, default_value_t = Tta::None)]
        tta: Tta,
        #[arg(long)]
        threads: Option<usize>,
        /// Refuse to run when the model's working memory exceeds this many MB.
        #[arg(long)]
        memory_budget: Option<f64>,
    },
    /// Live screening from a V4L2 camera: overlay and status on the display, shutter saves.
    Camera(setup::CameraArgs),
    /// Latency and memory benchmark: warm-up, then N runs of the whole frame path.
    Bench {
        #[arg(long, default_value = DEFAULT_MODEL)]
        model: PathBuf,
        /// Network input, `N` (square) or `WxH` (multiples of 8) [default: the model's].
        #[arg(long)]
        size: Option<String>,
        /// Benchmark on this image instead of a synthetic fundus of the input size.
        #[arg(long)]
        image: Option<PathBuf>,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        #[arg(long, default_value_t = 10)]
        runs: usize,
        /// Refuse to run when the model's working memory exceeds this many MB.
        #[arg(long)]
        memory_budget: Option<f64>,
        /// Also benchmark the model's other precision (the file with `int8` and `f32`
        /// swapped in its name), back to back, to see which is faster on this board.
        #[arg(long)]
        compare: bool,
        /// Also write the results as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Where the time and the memory go: per-op-type totals (each node's median over
    /// --runs frames, after a warm-up frame, served from the frame arena like any frame),
    /// and the nodes where live memory peaks.
    Profile {
        #[arg(long, default_value = DEFAULT_MODEL)]
        model: PathBuf,
        /// Network input, `N` or `WxH` [default: the model's].
        #[arg(long)]
        size: Option<String>,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// How many of the highest-memory nodes to list.
        #[arg(long, default_value_t = 8)]
        top_memory: usize,
        /// Profiled runs (after one warm-up run); each node's time is its median over them.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
        runs: u32,
    },
    /// Show a model's metadata, the board profile, the camera's formats and the display.
    Info {
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        board: Option<String>,
        #[arg(long)]
        device: Option<PathBuf>,
        #[arg(long)]
        display: Option<String>,
    },
}

fn main() {
    // Restore the default SIGPIPE action (Rust ignores it): a closed pipe ends the program
    // quietly instead of making `println!` panic.
    #[cfg(unix)]
    // SAFETY: called once at start-up, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    if let Err(e) = run(Cli::parse()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn parse_size(s: &str) -> Result<(u32, u32)> {
    let parse = |t: &str| {
        t.trim()
            .parse::<u32>()
            .with_context(|| format!("--size '{s}': '{t}' is not a number"))
    };
    let (w, h) = match s.split_once(['x', 'X']) {
        Some((w, h)) => (parse(w)?, parse(h)?),
        None => {
            let n = parse(s)?;
            (n, n)
        }
    };
    if w == 0 || h == 0 || w % 8 != 0 || h % 8 != 0 {
        anyhow::bail!("--size '{s}': sides must be non-zero multiples of 8");
    }
    Ok((w, h))
}

pub(crate) fn missing_model_hint(model: &std::path::Path) -> String {
    format!(
        "{}: no such model (export one with `vessel-train export --checkpoint CKPT --out {}`)",
        model.display(),
        model.display()
    )
}

fn run(cli: Cli) -> Result<()> {
    if cli.low_memory {
        setup::low_memory_mode("--low-memory");
    }
    match cli.command {
        Command::Profile {
            model,
            size,
            threads,
            top_memory,
            runs,
        } => {
            if !model.exists() {
                anyhow::bail!(missing_model_hint(&model));
            }
            Engine::set_threads(threads)?;
            let size = size.as_deref().map(parse_size).transpose()?;
            let mut engine = Engine::load(&model, size)?;
            let (w, h) = engine.input_size();
            let img = bench::synthetic_fundus(w, h);
            engine.load_input(&img)?;
            engine.run()?;
            // Per node, the median of its times over the runs (one run on a shared machine
            // moves by tens of percent); the memory figures are the same every run.
            let mut nodes = Vec::new();
            let mut times: Vec<Vec<f64>> = Vec::new();
            for _ in 0..runs {
                engine.load_input(&img)?;
                nodes = engine.profile_run()?;
                times.resize(nodes.len(), Vec::new());
                for (t, n) in times.iter_mut().zip(&nodes) {
                    t.push(n.seconds);
                }
            }
            for (n, t) in nodes.iter_mut().zip(&mut times) {
                t.sort_by(f64::total_cmp);
                n.seconds = t[t.len() / 2];
            }
            let arena = vessel_runtime::large_blocks::usage();
            let total: f64 = nodes.iter().map(|n| n.seconds).sum();
            let mut by_op: std::collections::BTreeMap<&str, (f64, usize)> = Default::default();
            for n in &nodes {
                let e = by_op.entry(n.op.as_str()).or_default();
                e.0 += n.seconds;
                e.1 += 1;
            }
            let mut rows: Vec<_> = by_op.into_iter().collect();
            rows.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
            println!(
                "{} ({}), {w}x{h}, {threads} thread(s): {:.1} ms in {} nodes (medians of {runs} runs)",
                model.display(),
                engine.metadata.precision,
                total * 1000.0,
                nodes.len()
            );
            // Whether the profiled run was served like a frame is (see `profile_run`).
            println!(
                "tensors: {} blocks from the frame arena ({:.1} MB){}",
                arena.arena_blocks,
                bench::mb(arena.arena_bytes),
                if arena.arena_blocks == 0 {
                    " — none: timings include page faults of fresh memory"
                } else {
                    ""
                }
            );
            println!("{:<28} {:>6} {:>10} {:>6}", "op", "nodes", "ms", "share");
            for (op, (secs, n)) in rows {
                println!(
                    "{op:<28} {n:>6} {:>10.1} {:>5.1}%",
                    secs * 1000.0,
                    100.0 * secs / total
                );
            }
            // Where the live-memory peak happens: the nodes with the highest peaks.
            let mb = bench::mb;
            let mut by_peak: Vec<&vessel_runtime::engine::NodeProfile> = nodes.iter().collect();
            by_peak.sort_by_key(|n| std::cmp::Reverse(n.peak_bytes));
            println!(
                "\nlive memory: highest per-node peaks (MB live before the node -> most while it ran)"
            );
            for n in by_peak.iter().take(top_memory) {
                println!(
                    "{:>8.1} -> {:>6.1}  {:<24} {}",
                    mb(n.live_before),
                    mb(n.peak_bytes),
                    n.op,
                    n.name
                );
            }
        }
        Command::Info {
            model,
            board,
            device,
            display,
        } => setup::info(model, board, device, display)?,
        Command::Segment {
            paths,
            model,
            board,
            out,
            max_side,
            tta,
            threads,
            memory_budget,
        } => {
            anyhow::ensure!(max_side >= 8, "--max-side must be at least 8");
            let board = board.as_deref().map(setup::load_board).transpose()?;
            let model = setup::choose_model(model, board.as_ref());
            let mut engine = setup::start_engine(
                &model,
                None,
                threads
                    .or(board.as_ref().map(setup::profile_threads))
                    .unwrap_or(1),
                memory_budget.or(board.as_ref().map(|b| b.model.memory_budget_mb)),
            )?;
            let failed = segment::run(
                &mut engine,
                &model,
                &paths,
                &segment::SegmentOptions {
                    out_dir: out,
                    max_side,
                    tta,
                },
            )?;
            if failed > 0 {
                eprintln!("{failed} input(s) skipped (see summary.json)");
                std::process::exit(2);
            }
        }
        Command::Camera(args) => setup::camera(args)?,
        Command::Bench {
            model,
            size,
            image,
            threads,
            warmup,
            runs,
            memory_budget,
            compare,
            json,
        } => {
            if runs == 0 {
                anyhow::bail!("--runs must be at least 1");
            }
            let size = size.as_deref().map(parse_size).transpose()?;
            Engine::set_threads(threads)?;
            let mut models = vec![model.clone()];
            if compare {
                models.push(other_precision(&model)?);
            }
            let mut reports = Vec::new();
            for model in &models {
                reports.push(bench_one(
                    model,
                    size,
                    image.as_deref(),
                    threads,
                    warmup,
                    runs,
                    memory_budget,
                )?);
            }
            if let [a, b] = reports.as_slice() {
                let faster = if a.p50_ms <= b.p50_ms { a } else { b };
                println!(
                    "faster here: {} ({} p50 {:.1} ms vs {} p50 {:.1} ms)",
                    faster.precision, a.precision, a.p50_ms, b.precision, b.p50_ms
                );
            }
            if let Some(path) = json {
                let value = match reports.as_slice() {
                    [one] => serde_json::to_value(one)?,
                    all => serde_json::to_value(all)?,
                };
                std::fs::write(&path, serde_json::to_vec_pretty(&value)?)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    Ok(())
}

/// `models/drive-int8.nnef.tgz` ↔ `models/drive-f32.nnef.tgz`.
pub(crate) fn other_precision(model: &std::path::Path) -> Result<PathBuf> {
    let name = model
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let other = if name.contains("int8") {
        name.replacen("int8", "f32", 1)
    } else if name.contains("f32") {
        name.replacen("f32", "int8", 1)
    } else {
        anyhow::bail!(
            "--compare: {} has neither `int8` nor `f32` in its name",
            model.display()
        );
    };
    let other = model.with_file_name(other);
    if !other.exists() {
        anyhow::bail!(
            "--compare: {} not found (the other precision of {})",
            other.display(),
            model.display()
        );
    }
    Ok(other)
}

fn bench_one(
    model: &std::path::Path,
    size: Option<(u32, u32)>,
    image: Option<&std::path::Path>,
    threads: usize,
    warmup: usize,
    runs: usize,
    memory_budget: Option<f64>,
) -> Result<bench::BenchReport> {
    if !model.exists() {
        anyhow::bail!(missing_model_hint(model));
    }
    let mut engine = Engine::load(model, size)?;
    if let Some(rss) = vessel_runtime::system_info::peak_rss_mb() {
        eprintln!("peak RSS after loading and planning: {rss:.1} MB");
    }
    let (w, h) = engine.input_size();
    let img = match image {
        Some(path) => load_rgb(path)?,
        None => bench::synthetic_fundus(w, h),
    };
    engine
        .placement(img.width(), img.height())
        .with_context(|| {
            format!(
                "image {}x{} vs network {w}x{h}: pass a larger --size",
                img.width(),
                img.height()
            )
        })?;
    let mut probabilities = vec![0.0; (img.width() * img.height()) as usize];
    if let Some(needed) =
        bench::check_memory_budget(&mut engine, &img, &mut probabilities, memory_budget)?
    {
        eprintln!(
            "working memory {needed:.1} MB{}",
            memory_budget.map_or(String::new(), |b| format!(" (budget {b:.0} MB)"))
        );
    }
    eprintln!(
        "{} ({}), {w}x{h}, {threads} thread(s): {warmup} warm-up + {runs} runs",
        model.display(),
        engine.metadata.precision
    );
    let report = bench::run(
        &mut engine,
        &model.display().to_string(),
        &img,
        threads,
        warmup,
        runs,
        |i| {
            eprint!("\rrun {i}/{runs}");
        },
    )?;
    eprintln!();
    let opt = |v: Option<f64>, unit: &str| v.map_or("n/a".into(), |v| format!("{v:.1}{unit}"));
    println!(
        "p50 {:.1} ms  p95 {:.1} ms  CPU p50 {}  {:.2} fps  peak RSS {}  model peak {}  allocations/frame {} (ours {})  page faults/frame {}  arena {:.1} MB ({} blocks)",
        report.p50_ms,
        report.p95_ms,
        opt(report.cpu_p50_ms, " ms"),
        report.fps,
        opt(report.peak_rss_mb, " MB"),
        opt(report.model_peak_mb, " MB"),
        opt(report.allocations_per_frame, ""),
        opt(report.our_allocations_per_frame, ""),
        opt(report.page_faults_per_frame.map(f64::round), ""),
        report.arena_mb,
        report.arena_blocks,
    );
    let s = &report.system;
    println!(
        "{} | {} [{}{}] | {} cores | {} | {}",
        s.board.as_deref().unwrap_or("unknown board"),
        s.cpu.as_deref().unwrap_or("unknown CPU"),
        s.cpu_features.join(" "),
        s.tract_cpu_isa
            .as_deref()
            .map_or(String::new(), |isa| format!("; TRACT_CPU_ISA {isa}")),
        s.cores,
        opt(s.temperature_c, " °C"),
        opt(s.clock_mhz, " MHz")
    );
    Ok(report)
}
