//! What `vessel` writes about each segmented image (batch or shutter): the mask, the overlay
//! and a JSON report, all written atomically.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use image::{GrayImage, RgbImage};
use serde::Serialize;
use vessel_runtime::atomic_file::{save_png_atomic, write_atomic};
use vessel_runtime::fov::derive_fov_mask;
use vessel_runtime::model_file::ModelMetadata;
use vessel_runtime::postprocess::{assess_quality, overlay_image, vessel_density, Quality};

#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub path: String,
    pub precision: String,
    pub content_hash: String,
    pub trained_on: String,
    pub threshold: f32,
    /// The trained network's threshold the mask corresponds to, when the model carries one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operating_point: Option<f32>,
}

impl ModelInfo {
    pub fn new(path: &Path, meta: &ModelMetadata) -> Self {
        Self {
            path: path.display().to_string(),
            precision: meta.precision.to_string(),
            content_hash: meta.content_hash.clone(),
            trained_on: meta.trained_on.clone(),
            threshold: meta.threshold,
            operating_point: meta.operating_point,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Timings {
    pub load_ms: f64,
    pub inference_ms: f64,
    pub postprocess_ms: f64,
    pub total_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outputs {
    pub mask: String,
    pub overlay: String,
    pub report: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frame: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageReport {
    pub source: String,
    pub width: u32,
    pub height: u32,
    /// Network input the image ran at, `WxH`.
    pub network_input: String,
    /// The image was scaled by this factor before inference (1 = not scaled).
    pub scale: f64,
    pub model: ModelInfo,
    pub timings: Timings,
    /// Vessel pixels / field-of-view pixels.
    pub vessel_density_fov: f64,
    pub quality: Quality,
    pub outputs: Outputs,
}

/// The analysis of one image: FOV, density and quality from the full FOV derivation.
pub struct Analysis {
    pub overlay: RgbImage,
    pub mask: GrayImage,
    pub density: f64,
    pub quality: Quality,
}

pub fn analyse(image: &RgbImage, mask01: &[u8]) -> Analysis {
    let fov = derive_fov_mask(image);
    let quality = assess_quality(image, &fov.data);
    Analysis {
        overlay: overlay_image(image, mask01),
        mask: GrayImage::from_fn(image.width(), image.height(), |x, y| {
            image::Luma([mask01[(y * image.width() + x) as usize] * 255])
        }),
        density: vessel_density(mask01, &fov.data),
        quality,
    }
}

/// Writes `{stem}.mask.png`, `{stem}.overlay.png` (and `{stem}.frame.png` when given), then
/// `{stem}.json` last, so a report on disk always has its images beside it.
pub fn save_outputs(
    dir: &Path,
    stem: &str,
    analysis: &Analysis,
    frame: Option<&RgbImage>,
    report: impl FnOnce(Outputs) -> ImageReport,
) -> Result<ImageReport> {
    let path = |suffix: &str| dir.join(format!("{stem}.{suffix}"));
    let name = |p: &PathBuf| {
        p.file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    };
    let (mask, overlay, json) = (path("mask.png"), path("overlay.png"), path("json"));
    save_png_atomic(&mask, &analysis.mask).with_context(|| format!("saving {}", mask.display()))?;
    save_png_atomic(&overlay, &analysis.overlay)
        .with_context(|| format!("saving {}", overlay.display()))?;
    let frame_name = match frame {
        Some(f) => {
            let p = path("frame.png");
            save_png_atomic(&p, f).with_context(|| format!("saving {}", p.display()))?;
            Some(name(&p))
        }
        None => None,
    };
    let report = report(Outputs {
        mask: name(&mask),
        overlay: name(&overlay),
        report: name(&json),
        frame: frame_name,
    });
    write_atomic(&json, &serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("saving {}", json.display()))?;
    Ok(report)
}

/// Standard base64 (RFC 4648, padded): thumbnails inlined into the HTML summary.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Escapes text for HTML.
pub fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, coded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), coded);
        }
    }
}
