//! `vessel camera`: live screening. A capture thread fills the frame exchange; this loop
//! takes the newest frame → preprocess → infer → postprocess → draw, and saves on shutter.
//! Buffers are allocated once before the first frame.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use image::RgbImage;
use vessel_runtime::device::board::CameraFormat;
use vessel_runtime::device::capture::Camera;
use vessel_runtime::device::controls::{stop_requested, LedState, Shutter, StatusLed};
use vessel_runtime::device::frame_exchange::FrameExchange;
use vessel_runtime::display::{hex_sha256, DisplaySink, Screen, ALERT_TEXT, STATUS_TEXT};
use vessel_runtime::engine::Engine;
use vessel_runtime::postprocess::{draw_overlay, quick_fov_into, vessel_density};
use vessel_runtime::preprocess::threshold_into;

use crate::report::{analyse, save_outputs, ImageReport, ModelInfo, Timings};

pub struct LiveOptions {
    pub device: PathBuf,
    pub format: CameraFormat,
    pub width: u32,
    pub height: u32,
    /// Stop after this many processed frames (none: until SIGINT/SIGTERM).
    pub frames: Option<u64>,
    pub save_dir: PathBuf,
    pub shutter_pin: Option<u8>,
    pub led_pin: Option<u8>,
    pub keyboard: bool,
    /// Scripted shutter: save the frame with this number (1-based), as a press would.
    pub shutter_at: Option<u64>,
    /// Print a line per drawn frame with the SHA-256 of what the display shows.
    pub report_screen: bool,
}

#[derive(Debug, Clone)]
enum CameraStatus {
    Connecting,
    Streaming,
    Lost(String),
}

fn capture_thread(
    exchange: Arc<FrameExchange>,
    status: Arc<Mutex<CameraStatus>>,
    stop: Arc<AtomicBool>,
    opts: (PathBuf, CameraFormat, u32, u32),
    side: u32,
) {
    let (device, format, width, height) = opts;
    let set = |s: CameraStatus| *status.lock().unwrap_or_else(|p| p.into_inner()) = s;
    let mut camera: Option<Camera> = None;
    while !stop.load(Ordering::SeqCst) {
        let Some(cam) = camera.as_mut() else {
            match Camera::open(&device, format, width, height) {
                Ok(c) => {
                    eprintln!("camera {} \"{}\": {}", device.display(), c.card, c.format);
                    set(CameraStatus::Streaming);
                    camera = Some(c);
                }
                Err(e) => {
                    set(CameraStatus::Lost(e.to_string()));
                    std::thread::sleep(Duration::from_millis(500));
                }
            }
            continue;
        };
        let slot = exchange.slot_to_fill();
        let result = {
            let mut s = exchange.slot(slot);
            cam.next_frame_into(&mut s.rgb, side, side).map(|seq| {
                s.sequence = seq;
                s.captured_at = Instant::now();
            })
        };
        match result {
            Ok(()) => exchange.publish(slot),
            Err(e) => {
                exchange.release(slot);
                eprintln!("camera lost: {e}; reopening when it returns");
                set(CameraStatus::Lost(e.to_string()));
                // v4l panics when stopping a stream fails with anything but ENODEV: a camera
                // that failed that way must not take the capture thread down with it.
                if let Some(dead) = camera.take() {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(dead)));
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
}

pub fn run(
    engine: &mut Engine,
    model_path: &Path,
    sink: &mut dyn DisplaySink,
    opts: LiveOptions,
) -> Result<()> {
    let (side, side_h) = engine.input_size();
    anyhow::ensure!(
        side == side_h,
        "live mode needs a square network input, got {side}x{side_h}"
    );
    let n = (side * side) as usize;
    let model = ModelInfo::new(model_path, &engine.metadata);
    let precision = engine.metadata.precision.to_string();
    let threshold = engine.metadata.threshold;

    // Everything the loop touches, allocated once.
    let exchange = Arc::new(FrameExchange::new(side, side));
    let mut probabilities = vec![0.0f32; n];
    let mut mask = vec![0u8; n];
    let mut overlay = vec![0u8; n * 3];
    let mut fov = vec![0u8; n];
    let (sw, sh) = sink.size();
    let mut screen = Screen::new(sw, sh);
    let mut shown = Vec::with_capacity((sw * sh * 3) as usize);
    let mut status_line = heapless::String::<160>::new();

    let mut shutter = Shutter::open(opts.shutter_pin, opts.keyboard);
    let mut led = StatusLed::open(opts.led_pin);
    eprintln!(
        "display: {}; shutter: {}; saving to {}",
        sink.describe(),
        shutter.sources.join(", "),
        opts.save_dir.display()
    );

    let status = Arc::new(Mutex::new(CameraStatus::Connecting));
    let stop = Arc::new(AtomicBool::new(false));
    let capture = {
        let (exchange, status, stop) = (exchange.clone(), status.clone(), stop.clone());
        let cam = (opts.device.clone(), opts.format, opts.width, opts.height);
        std::thread::Builder::new()
            .name("capture".into())
            .spawn(move || capture_thread(exchange, status, stop, cam, side))
            .context("cannot start the capture thread")?
    };

    let mut frames = 0u64;
    let mut last_done: Option<Instant> = None;
    let mut last_alert: Option<Instant> = None;
    let mut pending_shutter = false;
    let result: Result<()> = (|| {
        while !stop_requested() && opts.frames.is_none_or(|limit| frames < limit) {
            pending_shutter |= shutter.pressed();
            let Some(slot) = exchange.take_newest(Duration::from_millis(200)) else {
                let current = status.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let alert = match current {
                    CameraStatus::Lost(e) => Some(format!("camera lost: {e} - waiting")),
                    CameraStatus::Connecting => {
                        Some(format!("connecting to {}", opts.device.display()))
                    }
                    CameraStatus::Streaming => None,
                };
                if let Some(text) = alert {
                    if last_alert.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        led.show(LedState::Error);
                        screen.draw_status(&text, ALERT_TEXT);
                        sink.present(&screen)?;
                        last_alert = Some(Instant::now());
                    }
                }
                continue;
            };
            led.show(LedState::Busy);
            let frame = exchange.slot(slot);
            let t0 = Instant::now();
            engine.infer(&frame.rgb, &mut probabilities)?;
            let inference_ms = t0.elapsed().as_secs_f64() * 1e3;
            threshold_into(&probabilities, threshold, &mut mask);
            draw_overlay(frame.rgb.as_raw(), &mask, &mut overlay);
            quick_fov_into(frame.rgb.as_raw(), &mut fov);
            let density = vessel_density(&mask, &fov);
            frames += 1;
            if pending_shutter || opts.shutter_at == Some(frames) {
                pending_shutter = false;
                let saved = save_capture(
                    &opts.save_dir,
                    frames,
                    &frame.rgb,
                    &mask,
                    &model,
                    inference_ms,
                    side,
                );
                match saved {
                    Ok(r) => eprintln!(
                        "saved frame {frames}: {}",
                        opts.save_dir.join(&r.outputs.report).display()
                    ),
                    // A full or read-only card must not stop screening: say so on screen.
                    Err(e) => eprintln!("could not save frame {frames}: {e:#}"),
                }
            }
            let latency_ms = frame.captured_at.elapsed().as_secs_f64() * 1e3;
            let sequence = frame.sequence;
            drop(frame);
            exchange.release(slot);

            let now = Instant::now();
            let fps =
                last_done.map_or(0.0, |t| 1.0 / now.duration_since(t).as_secs_f64().max(1e-6));
            last_done = Some(now);
            screen.draw_picture(&overlay, side, side);
            status_line.clear();
            let _ = write!(
                status_line,
                "{latency_ms:.0} ms  {fps:.1} fps  vessels {:.1}%  {precision}",
                100.0 * density
            );
            screen.draw_status(&status_line, STATUS_TEXT);
            sink.present(&screen)?;
            led.show(LedState::Ready);
            if opts.report_screen {
                sink.shown_rgb(&screen, &mut shown);
                println!(
                    "frame {frames} seq {sequence} latency_ms {latency_ms:.0} density {density:.4} screen {sw}x{sh} sha256 {}",
                    hex_sha256(&shown)
                );
            }
        }
        Ok(())
    })();
    stop.store(true, Ordering::SeqCst);
    let _ = capture.join();
    result?;
    eprintln!(
        "{frames} frames processed, {} stale frames skipped",
        exchange.dropped()
    );
    Ok(())
}

fn save_capture(
    dir: &Path,
    frame_no: u64,
    frame: &RgbImage,
    mask: &[u8],
    model: &ModelInfo,
    inference_ms: f64,
    side: u32,
) -> Result<ImageReport> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let stem = format!("capture-{unix}-{frame_no:05}");
    let t = Instant::now();
    let analysis = analyse(frame, mask);
    let postprocess_ms = t.elapsed().as_secs_f64() * 1e3;
    save_outputs(dir, &stem, &analysis, Some(frame), |outputs| ImageReport {
        source: format!("camera frame {frame_no}"),
        width: side,
        height: side,
        network_input: format!("{side}x{side}"),
        scale: 1.0,
        model: model.clone(),
        timings: Timings {
            load_ms: 0.0,
            inference_ms,
            postprocess_ms,
            total_ms: inference_ms + postprocess_ms,
        },
        vessel_density_fov: analysis.density,
        quality: analysis.quality.clone(),
        outputs,
    })
}
