//! `vessel bench`: the latency and memory benchmark people run on their boards.
//!
//! Warm-up, then N timed runs of the whole frame path (preprocess → tract → crop) on one
//! image; p50/p95 latency, fps, peak RSS, peak live memory (counting allocator), allocations
//! per frame — in total and in our own code, which must be zero — and the machine it ran on.

use std::time::Instant;

use image::RgbImage;
use serde::Serialize;

use crate::engine::{Engine, EngineError};
use crate::system_info::{page_faults, peak_rss_mb, process_cpu_seconds, SystemInfo};
use crate::{alloc_count, large_blocks};

#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub content_hash: String,
    pub precision: String,
    pub threads: usize,
    /// Network input, `WIDTHxHEIGHT`.
    pub input: String,
    pub warmup: usize,
    pub runs: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    /// Median CPU time of a frame (all threads): the cost of a frame whatever else runs.
    pub cpu_p50_ms: Option<f64>,
    pub mean_ms: f64,
    pub fps: f64,
    pub peak_rss_mb: Option<f64>,
    /// Most memory live at once while running (weights, plan, tract's buffers, ours).
    pub model_peak_mb: Option<f64>,
    /// Allocations per frame, all code (tract's included).
    pub allocations_per_frame: Option<f64>,
    /// Allocations per frame in our own code (preprocessing and output); should be 0.
    pub our_allocations_per_frame: Option<f64>,
    /// Page faults per frame (memory mapped afresh; see `large_blocks`).
    pub page_faults_per_frame: Option<f64>,
    /// The frame arena the last run was replayed from (0 without one: low-memory mode, or
    /// not Linux) and how many of tract's blocks it served.
    pub arena_mb: f64,
    pub arena_blocks: usize,
    /// Peak live memory of the last run minus that of the first timed run (growth).
    pub peak_growth_mb: Option<f64>,
    pub system: SystemInfo,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("the model needs {needed_mb:.1} MB of working memory at {input}, over the {budget_mb:.1} MB budget")]
    OverBudget {
        needed_mb: f64,
        budget_mb: f64,
        input: String,
    },
}

/// Bytes in the MB (MiB) every report of this crate uses.
pub fn mb(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Percentile of sorted values (nearest rank).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Measures the engine's peak working memory over one frame (after one warm-up frame) and
/// refuses when it is over `budget_mb`. Needs the counting allocator; without it the check
/// cannot be made and passes with `None`.
pub fn check_memory_budget(
    engine: &mut Engine,
    image: &RgbImage,
    probabilities: &mut [f32],
    budget_mb: Option<f64>,
) -> Result<Option<f64>, BenchError> {
    if !alloc_count::is_installed() {
        return Ok(None);
    }
    engine.infer(image, probabilities)?;
    alloc_count::reset_peak();
    engine.infer(image, probabilities)?;
    let needed_mb = mb(alloc_count::stats().peak_bytes);
    if let Some(budget_mb) = budget_mb.filter(|b| needed_mb > *b) {
        let (w, h) = engine.input_size();
        return Err(BenchError::OverBudget {
            needed_mb,
            budget_mb,
            input: format!("{w}x{h}"),
        });
    }
    Ok(Some(needed_mb))
}

pub fn run(
    engine: &mut Engine,
    model: &str,
    image: &RgbImage,
    threads: usize,
    warmup: usize,
    runs: usize,
    mut progress: impl FnMut(usize),
) -> Result<BenchReport, BenchError> {
    let (w, h) = image.dimensions();
    let mut probabilities = vec![0.0f32; (w * h) as usize];
    for _ in 0..warmup {
        engine.infer(image, &mut probabilities)?;
    }
    let counting = alloc_count::is_installed();
    let (mut times, mut total_allocs, mut our_allocs) = (Vec::with_capacity(runs), 0, 0);
    let mut cpu_times = Vec::with_capacity(runs);
    let (mut first_peak, mut last_peak) = (0, 0);
    let faults_before = page_faults();
    for i in 0..runs {
        alloc_count::reset_peak();
        let a0 = alloc_count::stats().allocations;
        let t = Instant::now();
        let cpu0 = process_cpu_seconds();
        let placement = engine.load_input(image)?;
        let a1 = alloc_count::stats().allocations;
        engine.run()?;
        let a2 = alloc_count::stats().allocations;
        engine.read_output(&placement, &mut probabilities)?;
        let elapsed = t.elapsed().as_secs_f64() * 1000.0;
        if let (Some(c0), Some(c1)) = (cpu0, process_cpu_seconds()) {
            cpu_times.push((c1 - c0) * 1000.0);
        }
        let a3 = alloc_count::stats().allocations;
        times.push(elapsed);
        total_allocs += a3 - a0;
        our_allocs += (a1 - a0) + (a3 - a2);
        let peak = alloc_count::stats().peak_bytes;
        if i == 0 {
            first_peak = peak;
        }
        last_peak = peak;
        progress(i + 1);
    }
    let faults = faults_before
        .zip(page_faults())
        .map(|(a, b)| b.saturating_sub(a));
    let arena = large_blocks::usage();
    let mean = times.iter().sum::<f64>() / runs.max(1) as f64;
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let per_frame = |n: usize| counting.then(|| n as f64 / runs.max(1) as f64);
    let (nw, nh) = engine.input_size();
    Ok(BenchReport {
        model: model.to_string(),
        content_hash: engine.metadata.content_hash.clone(),
        precision: engine.metadata.precision.to_string(),
        threads,
        input: format!("{nw}x{nh}"),
        warmup,
        runs,
        p50_ms: percentile(&sorted, 50.0),
        p95_ms: percentile(&sorted, 95.0),
        cpu_p50_ms: (cpu_times.len() == runs).then(|| {
            cpu_times.sort_by(f64::total_cmp);
            percentile(&cpu_times, 50.0)
        }),
        mean_ms: mean,
        fps: 1000.0 / mean,
        peak_rss_mb: peak_rss_mb(),
        model_peak_mb: counting.then(|| mb(alloc_count::stats().peak_bytes.max(first_peak))),
        allocations_per_frame: per_frame(total_allocs),
        our_allocations_per_frame: per_frame(our_allocs),
        page_faults_per_frame: faults.map(|f| f as f64 / runs.max(1) as f64),
        arena_mb: mb(arena.arena_bytes),
        arena_blocks: arena.arena_blocks,
        peak_growth_mb: counting.then(|| mb(last_peak) - mb(first_peak)),
        system: SystemInfo::read(),
    })
}

/// A synthetic fundus-like test image (a bright disc with darker lines) for benchmarks
/// when no image is given.
pub fn synthetic_fundus(width: u32, height: u32) -> RgbImage {
    let (cx, cy) = (width as f32 / 2.0, height as f32 / 2.0);
    let r = cx.min(cy) * 0.95;
    RgbImage::from_fn(width, height, |x, y| {
        let (dx, dy) = (x as f32 - cx, y as f32 - cy);
        if dx * dx + dy * dy > r * r {
            return image::Rgb([0, 0, 0]);
        }
        let vessel = ((dx * 0.05).sin() * 20.0 - dy).abs() < 2.0
            || ((dy * 0.07).cos() * 30.0 - dx).abs() < 2.5;
        if vessel {
            image::Rgb([150, 50, 20])
        } else {
            image::Rgb([200, 100, 45])
        }
    })
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 5.0);
        assert_eq!(percentile(&v, 95.0), 10.0);
        assert_eq!(percentile(&[3.0], 95.0), 3.0);
    }
}
