//! `vessel segment PATH...`: batch segmentation of files and folders. Each image gets a mask,
//! an overlay and a JSON report; the run gets `summary.json` and a self-contained
//! `summary.html`. A file that fails is reported and skipped; the rest of the batch goes on.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use image::imageops::FilterType;
use image::RgbImage;
use serde::Serialize;
use vessel_runtime::atomic_file::write_atomic;
use vessel_runtime::engine::Engine;
use vessel_runtime::image_io::load_rgb;
use vessel_runtime::preprocess::threshold_into;
use vessel_runtime::tta::Tta;

use crate::report::{analyse, base64, html_escape, save_outputs, ImageReport, ModelInfo, Timings};

/// Extensions picked up when a folder is given (a file named explicitly is always tried).
const IMAGE_EXTENSIONS: [&str; 10] = [
    "png", "jpg", "jpeg", "tif", "tiff", "ppm", "pgm", "pnm", "gif", "bmp",
];

pub struct SegmentOptions {
    pub out_dir: PathBuf,
    /// Images with a longer side are scaled down to it before inference (the mask is
    /// scaled back up), bounding memory and time on camera-sized photographs.
    pub max_side: u32,
    /// Test-time augmentation: the copies of each image whose probabilities are averaged.
    pub tta: Tta,
}

#[derive(Serialize)]
struct Failure {
    source: String,
    error: String,
}

#[derive(Serialize)]
struct Summary {
    model: ModelInfo,
    /// Test-time augmentation (inference_ms covers all its runs).
    tta: Tta,
    images: usize,
    succeeded: usize,
    failed: usize,
    mean_vessel_density_fov: Option<f64>,
    mean_total_ms: Option<f64>,
    reports: Vec<ImageReport>,
    failures: Vec<Failure>,
}

/// Expands files and folders (sorted, non-recursive) into the list of images to process.
pub fn collect_inputs(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<(PathBuf, String)>) {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        if path.is_dir() {
            match std::fs::read_dir(path) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| {
                            p.is_file()
                                && p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                                    IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str())
                                })
                        })
                        .collect();
                    found.sort();
                    if found.is_empty() {
                        problems.push((path.clone(), "folder holds no images".to_string()));
                    }
                    files.extend(found);
                }
                Err(e) => problems.push((path.clone(), format!("cannot read folder: {e}"))),
            }
        } else if path.exists() {
            files.push(path.clone());
        } else {
            problems.push((path.clone(), "no such file or folder".to_string()));
        }
    }
    (files, problems)
}

/// A file stem not used yet in this run (`01_test`, then `01_test-2`, …).
fn unique_stem(path: &Path, used: &mut HashSet<String>) -> String {
    let base = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let mut stem = base.clone();
    let mut n = 2;
    while !used.insert(stem.clone()) {
        stem = format!("{base}-{n}");
        n += 1;
    }
    stem
}

fn segment_one(
    engine: &mut Engine,
    model: &ModelInfo,
    path: &Path,
    stem: &str,
    opts: &SegmentOptions,
) -> Result<(ImageReport, String)> {
    let t0 = Instant::now();
    let image = load_rgb(path)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    let (w, h) = image.dimensions();
    let longest = w.max(h);
    let scale = if longest > opts.max_side {
        f64::from(opts.max_side) / f64::from(longest)
    } else {
        1.0
    };
    let input: std::borrow::Cow<RgbImage> = if scale < 1.0 {
        let (sw, sh) = (
            ((f64::from(w) * scale).round() as u32).max(1),
            ((f64::from(h) * scale).round() as u32).max(1),
        );
        std::borrow::Cow::Owned(image::imageops::resize(
            &image,
            sw,
            sh,
            FilterType::Triangle,
        ))
    } else {
        std::borrow::Cow::Borrowed(&image)
    };
    let t1 = Instant::now();
    let probabilities = opts
        .tta
        .predict(&input, |copy| engine.segment(copy))
        .with_context(|| format!("{}: inference failed", path.display()))?;
    let inference_ms = t1.elapsed().as_secs_f64() * 1e3;
    let t2 = Instant::now();
    let mut mask = vec![0u8; probabilities.len()];
    threshold_into(&probabilities, engine.metadata.threshold, &mut mask);
    if scale < 1.0 {
        // Back to the original resolution (nearest neighbour keeps the mask binary).
        let small =
            image::GrayImage::from_raw(input.width(), input.height(), mask).expect("mask size");
        mask = image::imageops::resize(&small, w, h, FilterType::Nearest).into_raw();
    }
    let analysis = analyse(&image, &mask);
    let postprocess_ms = t2.elapsed().as_secs_f64() * 1e3;
    let (nw, nh) = engine.input_size();
    let report = save_outputs(&opts.out_dir, stem, &analysis, None, |outputs| {
        ImageReport {
            source: path.display().to_string(),
            width: w,
            height: h,
            network_input: format!("{nw}x{nh}"),
            scale,
            model: model.clone(),
            timings: Timings {
                load_ms,
                inference_ms,
                postprocess_ms,
                total_ms: t0.elapsed().as_secs_f64() * 1e3,
            },
            vessel_density_fov: analysis.density,
            quality: analysis.quality.clone(),
            outputs,
        }
    })?;
    Ok((report, thumbnail(&analysis.overlay)))
}

/// Runs the batch; returns how many inputs failed (the summary is written either way).
pub fn run(
    engine: &mut Engine,
    model_path: &Path,
    paths: &[PathBuf],
    opts: &SegmentOptions,
) -> Result<usize> {
    std::fs::create_dir_all(&opts.out_dir)
        .with_context(|| format!("cannot create output folder {}", opts.out_dir.display()))?;
    let model = ModelInfo::new(model_path, &engine.metadata);
    let (files, problems) = collect_inputs(paths);
    let mut failures: Vec<Failure> = problems
        .into_iter()
        .map(|(p, e)| {
            eprintln!("skipped {}: {e}", p.display());
            Failure {
                source: p.display().to_string(),
                error: e,
            }
        })
        .collect();
    let mut reports = Vec::new();
    // Overlay thumbnails for the HTML summary, in the order of `reports`.
    let mut thumbnails = Vec::new();
    let mut used = HashSet::new();
    let total = files.len();
    for (i, path) in files.iter().enumerate() {
        let stem = unique_stem(path, &mut used);
        match segment_one(engine, &model, path, &stem, opts) {
            Ok((r, thumb)) => {
                let flags = if r.quality.flags.is_empty() {
                    "none".to_string()
                } else {
                    r.quality.flags.join(", ")
                };
                println!(
                    "[{}/{total}] {}: {:.0} ms, vessel density {:.1}% of the FOV, quality flags: {flags}",
                    i + 1,
                    path.display(),
                    r.timings.total_ms,
                    100.0 * r.vessel_density_fov
                );
                reports.push(r);
                thumbnails.push(thumb);
            }
            Err(e) => {
                eprintln!("[{}/{total}] skipped: {e:#}", i + 1);
                failures.push(Failure {
                    source: path.display().to_string(),
                    error: format!("{e:#}"),
                });
            }
        }
    }
    let mean = |f: &dyn Fn(&ImageReport) -> f64| {
        (!reports.is_empty()).then(|| reports.iter().map(f).sum::<f64>() / reports.len() as f64)
    };
    let summary = Summary {
        model,
        tta: opts.tta,
        images: reports.len() + failures.len(),
        succeeded: reports.len(),
        failed: failures.len(),
        mean_vessel_density_fov: mean(&|r| r.vessel_density_fov),
        mean_total_ms: mean(&|r| r.timings.total_ms),
        reports,
        failures,
    };
    let json_path = opts.out_dir.join("summary.json");
    write_atomic(&json_path, &serde_json::to_vec_pretty(&summary)?)
        .with_context(|| format!("saving {}", json_path.display()))?;
    let html_path = opts.out_dir.join("summary.html");
    write_atomic(&html_path, summary_html(&summary, &thumbnails).as_bytes())
        .with_context(|| format!("saving {}", html_path.display()))?;
    println!(
        "{} of {} images segmented; results in {} (summary.html, summary.json)",
        summary.succeeded,
        summary.images,
        opts.out_dir.display()
    );
    Ok(summary.failed)
}

/// A thumbnail of an overlay as a `data:` URI (empty if it cannot be encoded).
fn thumbnail(overlay: &RgbImage) -> String {
    let thumb = image::DynamicImage::ImageRgb8(overlay.clone())
        .thumbnail(240, 240)
        .to_rgb8();
    let mut png = Vec::new();
    if thumb
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .is_err()
    {
        return String::new();
    }
    format!("data:image/png;base64,{}", base64(&png))
}

fn summary_html(s: &Summary, thumbnails: &[String]) -> String {
    let mut rows = String::new();
    for (r, thumb) in s.reports.iter().zip(thumbnails) {
        let flags = if r.quality.flags.is_empty() {
            "—".to_string()
        } else {
            html_escape(&r.quality.flags.join(", "))
        };
        rows.push_str(&format!(
            "<tr><td><a href=\"{overlay}\"><img src=\"{thumb}\" alt=\"overlay of {name}\"></a></td>\
             <td>{name}<br><small>{w}×{h}</small></td><td>{density:.1}%</td><td>{flags}</td>\
             <td>{ms:.0} ms</td><td><a href=\"{mask}\">mask</a> · <a href=\"{json}\">report</a></td></tr>\n",
            overlay = html_escape(&r.outputs.overlay),
            thumb = thumb,
            name = html_escape(&r.source),
            w = r.width,
            h = r.height,
            density = 100.0 * r.vessel_density_fov,
            ms = r.timings.total_ms,
            mask = html_escape(&r.outputs.mask),
            json = html_escape(&r.outputs.report),
        ));
    }
    let mut failed = String::new();
    for f in &s.failures {
        failed.push_str(&format!(
            "<li><b>{}</b>: {}</li>\n",
            html_escape(&f.source),
            html_escape(&f.error)
        ));
    }
    let failed = if failed.is_empty() {
        String::new()
    } else {
        format!(
            "<h2>Skipped ({})</h2><ul class=\"bad\">{failed}</ul>",
            s.failures.len()
        )
    };
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Vessel segmentation summary</title>\n\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:middle}}img{{display:block}}\
         .bad{{color:#a00}}</style></head><body>\n\
         <h1>Vessel segmentation</h1>\n<p>{ok} of {n} images segmented with <code>{model}</code> \
         ({precision}, trained on {trained}, content {hash}).</p>\n\
         <table><tr><th>overlay</th><th>image</th><th>vessel density (FOV)</th><th>quality flags</th>\
         <th>time</th><th>files</th></tr>\n{rows}</table>\n{failed}</body></html>\n",
        ok = s.succeeded,
        n = s.images,
        model = html_escape(&s.model.path),
        precision = s.model.precision,
        trained = html_escape(&s.model.trained_on),
        hash = html_escape(&s.model.content_hash),
    )
}
