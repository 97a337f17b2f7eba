//! Turning command-line flags and board profiles into a running engine, camera and display.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use vessel_runtime::bench;
use vessel_runtime::device::board::{BoardProfile, CameraFormat, DisplayKind};
use vessel_runtime::display::png_sink::PngSink;
use vessel_runtime::display::{DisplayChoice, DisplaySink, Headless};
use vessel_runtime::engine::Engine;
use vessel_runtime::model_file::{ModelFile, Precision};
use vessel_runtime::system_info::SystemInfo;

use crate::{missing_model_hint, DEFAULT_MODEL};

/// Board profiles live in `boards/` (or `$VESSEL_BOARDS_DIR`).
pub fn boards_dir() -> PathBuf {
    std::env::var_os("VESSEL_BOARDS_DIR").map_or_else(|| PathBuf::from("boards"), PathBuf::from)
}

pub fn load_board(name: &str) -> Result<BoardProfile> {
    let board = BoardProfile::find(name, &boards_dir())?;
    eprintln!("board: {} ({})", board.name, board.source.display());
    if board.model.low_memory {
        low_memory_mode(&format!("{} model.low_memory", board.source.display()));
    }
    Ok(board)
}

/// Switches the allocator to returning large blocks at once (see `alloc_count`).
pub fn low_memory_mode(why: &str) {
    if vessel_runtime::alloc_count::release_large_blocks_eagerly() {
        eprintln!("low-memory mode ({why}): freed activations go back to the system at once");
    } else {
        eprintln!("low-memory mode ({why}) is not available with this C library; ignored");
    }
}

fn default_board_name() -> &'static str {
    if cfg!(target_arch = "x86_64") {
        "x86-dev"
    } else {
        "generic-arm64"
    }
}

/// The profile's thread count, or 1 with a note when this build has no thread pool (the
/// profile describes the board; the build may be the single-threaded default).
pub fn profile_threads(board: &BoardProfile) -> usize {
    if board.model.threads > 1 && !cfg!(feature = "multithread") {
        eprintln!(
            "note: {} asks for {} threads; this build is single-threaded (build with \
             `--features multithread` to use them): running on 1",
            board.source.display(),
            board.model.threads
        );
        return 1;
    }
    board.model.threads
}

pub fn choose_model(model: Option<PathBuf>, board: Option<&BoardProfile>) -> PathBuf {
    model
        .or_else(|| board.map(|b| b.model.path.clone()))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_MODEL))
}

/// Loads the model at `size` (its own when `None`), sets threads, and measures its working
/// memory against the budget before any real work starts.
pub fn start_engine(
    model: &Path,
    size: Option<(u32, u32)>,
    threads: usize,
    budget_mb: Option<f64>,
) -> Result<Engine> {
    if !model.exists() {
        anyhow::bail!(missing_model_hint(model));
    }
    Engine::set_threads(threads)?;
    let mut engine = Engine::load(model, size)?;
    let (w, h) = engine.input_size();
    let probe = bench::synthetic_fundus(w, h);
    let mut probabilities = vec![0.0; (w * h) as usize];
    let needed = bench::check_memory_budget(&mut engine, &probe, &mut probabilities, budget_mb)
        .with_context(|| format!("{}: refusing to start", model.display()))?;
    eprintln!(
        "model {} ({}, trained on {}), network {w}x{h}, {threads} thread(s){}",
        model.display(),
        engine.metadata.precision,
        engine.metadata.trained_on,
        match (needed, budget_mb) {
            (Some(n), Some(b)) => format!(", working memory {n:.1} MB of {b:.0} MB budget"),
            (Some(n), None) => format!(", working memory {n:.1} MB"),
            _ => String::new(),
        }
    );
    if engine.metadata.precision == Precision::Int8 && SystemInfo::read().int8_is_slow() {
        let faster = crate::other_precision(model)
            .map(|f32_model| format!("--model {}", f32_model.display()))
            .unwrap_or_else(|_| "this model's f32 export".into());
        eprintln!(
            "note: this x86 CPU has no VNNI or AMX, so tract's int8 runs many times slower here \
             than f32 (docs/performance.md); {faster} is faster on it"
        );
    }
    Ok(engine)
}

/// Opens the chosen display; a missing device means headless with a message, not a failure.
pub fn open_display(choice: &DisplayChoice, board: Option<&BoardProfile>) -> Box<dyn DisplaySink> {
    match choice {
        DisplayChoice::None => Box::new(Headless {
            reason: "no display asked for".into(),
        }),
        DisplayChoice::Png {
            path,
            width,
            height,
        } => Box::new(PngSink::new(path.clone(), *width, *height)),
        #[cfg(target_os = "linux")]
        DisplayChoice::Framebuffer(path) => {
            match vessel_runtime::display::framebuffer::Framebuffer::open(path) {
                Ok(fb) => Box::new(fb),
                Err(e) => {
                    eprintln!("no display: {e}; running headless");
                    Box::new(Headless {
                        reason: e.to_string(),
                    })
                }
            }
        }
        #[cfg(target_os = "linux")]
        DisplayChoice::SpiTft => {
            let opened = board
                .context("--display spi needs a board profile with the panel's settings")
                .and_then(|b| Ok(vessel_runtime::display::spi_tft::SpiTft::open(&b.display)?));
            match opened {
                Ok(tft) => Box::new(tft),
                Err(e) => {
                    eprintln!("no display: {e:#}; running headless");
                    Box::new(Headless {
                        reason: format!("{e:#}"),
                    })
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        other => Box::new(Headless {
            reason: format!("{other:?} needs Linux"),
        }),
    }
}

/// The display a board profile names.
pub fn board_display(board: &BoardProfile) -> DisplayChoice {
    let d = &board.display;
    match d.kind {
        DisplayKind::None => DisplayChoice::None,
        DisplayKind::Framebuffer => DisplayChoice::Framebuffer(
            d.device
                .clone()
                .unwrap_or_else(|| PathBuf::from("/dev/fb0")),
        ),
        DisplayKind::SpiTft => DisplayChoice::SpiTft,
        DisplayKind::Png => DisplayChoice::Png {
            path: d
                .device
                .clone()
                .unwrap_or_else(|| PathBuf::from("vessel-out/screen.png")),
            width: d.width.unwrap_or(800),
            height: d.height.unwrap_or(480),
        },
    }
}

fn parse_format(s: &str) -> Result<CameraFormat> {
    Ok(match s.to_ascii_uppercase().as_str() {
        "AUTO" => CameraFormat::Auto,
        "YUYV" => CameraFormat::Yuyv,
        "MJPG" | "MJPEG" => CameraFormat::Mjpg,
        "RGB3" | "RGB" => CameraFormat::Rgb3,
        _ => anyhow::bail!("--format '{s}': expected auto, YUYV, MJPG or RGB3"),
    })
}

#[derive(clap::Args)]
pub struct CameraArgs {
    /// Board profile (name in boards/ or a .toml path) [default: x86-dev on x86_64,
    /// generic-arm64 elsewhere].
    #[arg(long)]
    pub board: Option<String>,
    /// Camera device [default: the profile's].
    #[arg(long)]
    pub device: Option<PathBuf>,
    /// Pixel format to ask for: auto, YUYV, MJPG or RGB3 [default: the profile's].
    #[arg(long)]
    pub format: Option<String>,
    /// none, fb[:/dev/fbN], spi, or png:PATH[:WxH] [default: the profile's].
    #[arg(long)]
    pub display: Option<String>,
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Square network input side [default: the profile's].
    #[arg(long)]
    pub size: Option<u32>,
    #[arg(long)]
    pub threads: Option<usize>,
    #[arg(long)]
    pub memory_budget: Option<f64>,
    /// Stop after this many frames [default: run until Ctrl-C / SIGTERM].
    #[arg(long)]
    pub frames: Option<u64>,
    /// Where the shutter saves frame, mask, overlay and report.
    #[arg(long, default_value = "captures")]
    pub save_dir: PathBuf,
    /// Save frame number N as if the shutter were pressed (scripted runs, tests).
    #[arg(long)]
    pub shutter_at: Option<u64>,
    /// Do not read Enter from the terminal as the shutter.
    #[arg(long)]
    pub no_keyboard: bool,
    /// Print a line per frame with the SHA-256 of what the display shows.
    #[arg(long)]
    pub report_screen: bool,
}

#[cfg(target_os = "linux")]
pub fn camera(a: CameraArgs) -> Result<()> {
    vessel_runtime::device::controls::install_signal_handlers();
    let board = load_board(a.board.as_deref().unwrap_or(default_board_name()))?;
    let model = choose_model(a.model, Some(&board));
    let side = a.size.unwrap_or(board.model.input);
    anyhow::ensure!(
        side > 0 && side.is_multiple_of(8),
        "--size {side}: must be a non-zero multiple of 8"
    );
    let file_precision = ModelFile::read(&model).map(|f| f.metadata.precision).ok();
    if let Some(p) = file_precision.filter(|p| *p != board.model.precision) {
        eprintln!(
            "note: {} is {p}, the board profile runs {}",
            model.display(),
            board.model.precision
        );
    }
    let mut engine = start_engine(
        &model,
        Some((side, side)),
        a.threads.unwrap_or_else(|| profile_threads(&board)),
        Some(a.memory_budget.unwrap_or(board.model.memory_budget_mb)),
    )?;
    let choice = match a.display.as_deref() {
        Some(s) => DisplayChoice::parse(s).map_err(anyhow::Error::msg)?,
        None => board_display(&board),
    };
    let mut sink = open_display(&choice, Some(&board));
    let format = match a.format.as_deref() {
        Some(f) => parse_format(f)?,
        None => board.camera.format,
    };
    crate::live::run(
        &mut engine,
        &model,
        sink.as_mut(),
        crate::live::LiveOptions {
            device: a.device.unwrap_or(board.camera.device.clone()),
            format,
            width: board.camera.width,
            height: board.camera.height,
            frames: a.frames,
            save_dir: a.save_dir,
            shutter_pin: board.pins.shutter,
            led_pin: board.pins.led,
            keyboard: !a.no_keyboard,
            shutter_at: a.shutter_at,
            report_screen: a.report_screen,
        },
    )
}

#[cfg(not(target_os = "linux"))]
pub fn camera(_: CameraArgs) -> Result<()> {
    anyhow::bail!("`vessel camera` needs Linux (V4L2)")
}

pub fn info(
    model: Option<PathBuf>,
    board: Option<String>,
    device: Option<PathBuf>,
    display: Option<String>,
) -> Result<()> {
    let board = board.as_deref().map(load_board).transpose()?;
    let model = choose_model(model, board.as_ref());
    println!("model {}", model.display());
    match ModelFile::read(&model) {
        Ok(file) => println!("{}", serde_json::to_string_pretty(&file.metadata)?),
        Err(_) if !model.exists() => println!("  {}", missing_model_hint(&model)),
        Err(e) => println!("  unusable: {e}"),
    }
    match &board {
        Some(b) => println!(
            "board {} ({}): camera {} {:?} {}x{}, model {} input {} {} thread(s) budget {} MB, display {:?}",
            b.name,
            b.source.display(),
            b.camera.device.display(),
            b.camera.format,
            b.camera.width,
            b.camera.height,
            b.model.precision,
            b.model.input,
            b.model.threads,
            b.model.memory_budget_mb,
            b.display.kind
        ),
        None => println!(
            "board: none given (--board NAME; available in {}: {})",
            boards_dir().display(),
            vessel_runtime::device::board::available_profiles(&boards_dir()).join(", ")
        ),
    }
    #[cfg(target_os = "linux")]
    {
        let cam = device
            .or(board.as_ref().map(|b| b.camera.device.clone()))
            .unwrap_or_else(|| PathBuf::from("/dev/video0"));
        match vessel_runtime::device::capture::offered_formats(&cam) {
            Ok((card, formats)) => println!(
                "camera {} \"{card}\": {}",
                cam.display(),
                formats.join(", ")
            ),
            Err(e) => println!("camera: {e}"),
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = device;
    let choice = match display.as_deref() {
        Some(s) => DisplayChoice::parse(s).map_err(anyhow::Error::msg)?,
        None => board
            .as_ref()
            .map(board_display)
            .unwrap_or_else(|| DisplayChoice::Framebuffer("/dev/fb0".into())),
    };
    println!(
        "display: {}",
        open_display(&choice, board.as_ref()).describe()
    );
    println!(
        "machine\n{}",
        serde_json::to_string_pretty(&SystemInfo::read())?
    );
    Ok(())
}
