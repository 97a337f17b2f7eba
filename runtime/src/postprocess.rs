//! After inference: the vessel overlay drawn over the image, vessel density inside the field
//! of view, and image-quality flags. Buffers are the caller's: the live path reuses them.

use image::RgbImage;
use serde::Serialize;

/// The colour vessels are tinted with, and how strongly (of 256).
pub const VESSEL_TINT: [u8; 3] = [0, 255, 96];
pub const TINT_ALPHA: u32 = 160;

/// Writes `image` with vessel pixels (`mask != 0`) blended towards [`VESSEL_TINT`] into
/// `out` (same size; RGB888, row-major).
pub fn draw_overlay(image: &[u8], mask: &[u8], out: &mut [u8]) {
    for ((src, &m), dst) in image.chunks_exact(3).zip(mask).zip(out.chunks_exact_mut(3)) {
        if m == 0 {
            dst.copy_from_slice(src);
        } else {
            for c in 0..3 {
                let v =
                    u32::from(src[c]) * (256 - TINT_ALPHA) + u32::from(VESSEL_TINT[c]) * TINT_ALPHA;
                dst[c] = ((v + 128) >> 8) as u8;
            }
        }
    }
}

/// The overlay as a new image (batch mode).
pub fn overlay_image(image: &RgbImage, mask: &[u8]) -> RgbImage {
    let mut out = RgbImage::new(image.width(), image.height());
    draw_overlay(image.as_raw(), mask, &mut out);
    out
}

/// Fraction of field-of-view pixels that are vessel (0 when the FOV is empty).
pub fn vessel_density(mask: &[u8], fov: &[u8]) -> f64 {
    let (mut inside, mut vessel) = (0u64, 0u64);
    for (&m, &f) in mask.iter().zip(fov) {
        if f != 0 {
            inside += 1;
            vessel += u64::from(m != 0);
        }
    }
    if inside == 0 {
        0.0
    } else {
        vessel as f64 / inside as f64
    }
}

/// A fast field-of-view estimate for live frames: Otsu on the red channel only, into a reused
/// buffer (no morphology, no allocation). Saved reports use [`crate::fov::derive_fov_mask`].
pub fn quick_fov_into(rgb: &[u8], out: &mut [u8]) {
    let mut hist = [0u64; 256];
    for px in rgb.chunks_exact(3) {
        hist[px[0] as usize] += 1;
    }
    let t = crate::fov::otsu_from_histogram(&hist);
    for (px, o) in rgb.chunks_exact(3).zip(out.iter_mut()) {
        *o = u8::from(px[0] > t);
    }
}

/// Image-quality measurements inside the field of view, and the flags they raise.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Quality {
    /// Fraction of the image inside the field of view.
    pub fov_fraction: f64,
    /// Mean green level inside the FOV (0–255): exposure.
    pub mean_green: f64,
    /// Standard deviation of green inside the FOV: contrast.
    pub green_contrast: f64,
    /// Mean absolute Laplacian of green inside the FOV: sharpness.
    pub sharpness: f64,
    /// Human-readable problems; empty when none.
    pub flags: Vec<&'static str>,
}

/// Thresholds are heuristics chosen on DRIVE/STARE (all of whose images pass) and on
/// deliberately degraded copies; they flag, they never block.
pub fn assess_quality(image: &RgbImage, fov: &[u8]) -> Quality {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let px = image.as_raw();
    let green = |x: usize, y: usize| f64::from(px[(y * w + x) * 3 + 1]);
    let (mut n, mut sum, mut sum2, mut lap, mut lap_n) = (0u64, 0.0, 0.0, 0.0, 0u64);
    for y in 0..h {
        for x in 0..w {
            if fov[y * w + x] == 0 {
                continue;
            }
            let g = green(x, y);
            n += 1;
            sum += g;
            sum2 += g * g;
            if x > 0 && y > 0 && x + 1 < w && y + 1 < h {
                let l =
                    4.0 * g - green(x - 1, y) - green(x + 1, y) - green(x, y - 1) - green(x, y + 1);
                lap += l.abs();
                lap_n += 1;
            }
        }
    }
    let fov_fraction = n as f64 / (w * h).max(1) as f64;
    let mean = if n > 0 { sum / n as f64 } else { 0.0 };
    let contrast = if n > 0 {
        (sum2 / n as f64 - mean * mean).max(0.0).sqrt()
    } else {
        0.0
    };
    let sharpness = if lap_n > 0 { lap / lap_n as f64 } else { 0.0 };
    let mut flags = Vec::new();
    if fov_fraction < 0.2 {
        flags.push("small or missing field of view");
    }
    if n > 0 && mean < 20.0 {
        flags.push("underexposed");
    }
    if n > 0 && mean > 200.0 {
        flags.push("overexposed");
    }
    if n > 0 && contrast < 6.0 {
        flags.push("low contrast");
    }
    if n > 0 && sharpness < 1.0 {
        flags.push("blurred");
    }
    Quality {
        fov_fraction,
        mean_green: mean,
        green_contrast: contrast,
        sharpness,
        flags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_blends_only_vessel_pixels() {
        let image = [100, 50, 200, 10, 20, 30];
        let mut out = [0u8; 6];
        draw_overlay(&image, &[0, 1], &mut out);
        assert_eq!(&out[..3], &[100, 50, 200]);
        // (10·96 + 0·160 + 128) >> 8 = 4; (20·96 + 255·160 + 128) >> 8 = 167; (30·96 + 96·160 + 128) >> 8 = 71
        assert_eq!(&out[3..], &[4, 167, 71]);
    }

    #[test]
    fn density_counts_inside_the_fov_only() {
        assert_eq!(vessel_density(&[1, 1, 0, 1], &[1, 1, 1, 0]), 2.0 / 3.0);
        assert_eq!(vessel_density(&[1, 1], &[0, 0]), 0.0);
    }

    #[test]
    fn quality_flags_a_dark_flat_image() {
        let img = RgbImage::from_pixel(16, 16, image::Rgb([5, 5, 5]));
        let q = assess_quality(&img, &[1; 256]);
        assert!(q.flags.contains(&"underexposed"));
        assert!(q.flags.contains(&"low contrast"));
        assert!(q.flags.contains(&"blurred"));
        let q = assess_quality(&img, &[0; 256]);
        assert_eq!(q.flags, vec!["small or missing field of view"]);
    }

    #[test]
    fn quick_fov_separates_a_bright_disc() {
        let img = RgbImage::from_fn(20, 20, |x, y| {
            let d = (x as i32 - 10).pow(2) + (y as i32 - 10).pow(2);
            if d < 49 {
                image::Rgb([180, 80, 40])
            } else {
                image::Rgb([3, 2, 1])
            }
        });
        let mut fov = vec![0u8; 400];
        quick_fov_into(img.as_raw(), &mut fov);
        assert_eq!(fov[10 * 20 + 10], 1);
        assert_eq!(fov[0], 0);
    }
}
