//! Field-of-view (FOV) masks derived from the image itself, for datasets (STARE) and camera
//! frames that come without one.
//!
//! A fundus photograph is a bright disc on a dark background. The red channel separates the
//! two best (vessels are dark in green, not in red), so: Otsu threshold of the red channel,
//! a morphological closing and opening (bridge dark vessels, drop speckle), the largest connected region, holes filled.

use image::RgbImage;

use crate::BinaryMask;

/// Derives the field-of-view mask of a fundus image.
pub fn derive_fov_mask(image: &RgbImage) -> BinaryMask {
    let (w, h) = image.dimensions();
    let red: Vec<u8> = image.pixels().map(|p| p[0]).collect();
    let threshold = otsu_threshold(&red);
    let mut mask: Vec<u8> = red.iter().map(|&r| u8::from(r > threshold)).collect();
    // Closing bridges thin dark lines (vessels) across the disc; opening drops speckle.
    mask = erode(&dilate(&mask, w, h, 2), w, h, 2);
    mask = dilate(&erode(&mask, w, h, 2), w, h, 2);
    keep_largest_component(&mut mask, w, h);
    fill_holes(&mut mask, w, h);
    BinaryMask::new(w, h, mask)
}

/// Otsu's threshold: the grey level that maximises the between-class variance.
fn otsu_threshold(values: &[u8]) -> u8 {
    let mut hist = [0u64; 256];
    for &v in values {
        hist[v as usize] += 1;
    }
    otsu_from_histogram(&hist)
}

/// Otsu's threshold of a 256-bin histogram.
pub(crate) fn otsu_from_histogram(hist: &[u64; 256]) -> u8 {
    let total: f64 = hist.iter().map(|&c| c as f64).sum();
    let sum_all: f64 = hist
        .iter()
        .enumerate()
        .map(|(i, &c)| i as f64 * c as f64)
        .sum();
    let (mut weight_bg, mut sum_bg) = (0.0, 0.0);
    let (mut best, mut best_var) = (0u8, -1.0);
    for (t, &count) in hist.iter().enumerate() {
        weight_bg += count as f64;
        if weight_bg == 0.0 {
            continue;
        }
        let weight_fg = total - weight_bg;
        if weight_fg == 0.0 {
            break;
        }
        sum_bg += t as f64 * count as f64;
        let mean_bg = sum_bg / weight_bg;
        let mean_fg = (sum_all - sum_bg) / weight_fg;
        let between = weight_bg * weight_fg * (mean_bg - mean_fg).powi(2);
        if between > best_var {
            best_var = between;
            best = t as u8;
        }
    }
    best
}

/// Square-window min (erosion) or max (dilation) of a 0/1 mask, separably. The window is
/// clamped at the image edge, so a disc cut off by the frame (STARE) keeps its edge rows.
fn square_filter(mask: &[u8], w: u32, h: u32, radius: i64, erode: bool) -> Vec<u8> {
    let (w, h) = (w as i64, h as i64);
    let pass = |src: &[u8], horizontal: bool| -> Vec<u8> {
        let mut out = vec![0u8; src.len()];
        for y in 0..h {
            for x in 0..w {
                let mut v = erode;
                for d in -radius..=radius {
                    let (xx, yy) = if horizontal {
                        ((x + d).clamp(0, w - 1), y)
                    } else {
                        (x, (y + d).clamp(0, h - 1))
                    };
                    let s = src[(yy * w + xx) as usize] != 0;
                    if erode {
                        v &= s;
                    } else {
                        v |= s;
                    }
                }
                out[(y * w + x) as usize] = u8::from(v);
            }
        }
        out
    };
    pass(&pass(mask, true), false)
}

fn erode(mask: &[u8], w: u32, h: u32, radius: i64) -> Vec<u8> {
    square_filter(mask, w, h, radius, true)
}

fn dilate(mask: &[u8], w: u32, h: u32, radius: i64) -> Vec<u8> {
    square_filter(mask, w, h, radius, false)
}

/// Labels 4-connected regions of pixels equal to `value`; returns a label per pixel
/// (0 = not `value`) and each region's size (index = label - 1).
fn label_regions(mask: &[u8], w: u32, h: u32, value: u8) -> (Vec<u32>, Vec<usize>) {
    let (w, h) = (w as usize, h as usize);
    let mut labels = vec![0u32; mask.len()];
    let mut sizes = Vec::new();
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if mask[start] != value || labels[start] != 0 {
            continue;
        }
        let label = sizes.len() as u32 + 1;
        let mut size = 0;
        labels[start] = label;
        stack.push(start);
        while let Some(i) = stack.pop() {
            size += 1;
            let (x, y) = (i % w, i / w);
            let mut visit = |j: usize| {
                if mask[j] == value && labels[j] == 0 {
                    labels[j] = label;
                    stack.push(j);
                }
            };
            if x > 0 {
                visit(i - 1);
            }
            if x + 1 < w {
                visit(i + 1);
            }
            if y > 0 {
                visit(i - w);
            }
            if y + 1 < h {
                visit(i + w);
            }
        }
        sizes.push(size);
    }
    (labels, sizes)
}

fn keep_largest_component(mask: &mut [u8], w: u32, h: u32) {
    let (labels, sizes) = label_regions(mask, w, h, 1);
    let Some(largest) = (0..sizes.len()).max_by_key(|&i| sizes[i]) else {
        return;
    };
    for (m, &l) in mask.iter_mut().zip(&labels) {
        *m = u8::from(l == largest as u32 + 1);
    }
}

/// Background regions that do not touch the border are holes in the disc: fill them.
fn fill_holes(mask: &mut [u8], w: u32, h: u32) {
    let (labels, sizes) = label_regions(mask, w, h, 0);
    let mut touches_border = vec![false; sizes.len()];
    let (wu, hu) = (w as usize, h as usize);
    for (i, &l) in labels.iter().enumerate() {
        let (x, y) = (i % wu, i / wu);
        if l != 0 && (x == 0 || y == 0 || x + 1 == wu || y + 1 == hu) {
            touches_border[l as usize - 1] = true;
        }
    }
    for (m, &l) in mask.iter_mut().zip(&labels) {
        if l != 0 && !touches_border[l as usize - 1] {
            *m = 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_disc_with_dark_vessels_and_noise() {
        // A bright disc of radius 40 in a 100x100 frame, dark "vessels" inside it (which
        // must not punch holes), and an isolated bright speck outside (which must go).
        let img = RgbImage::from_fn(100, 100, |x, y| {
            let (dx, dy) = (x as f64 - 50.0, y as f64 - 50.0);
            let inside = dx * dx + dy * dy <= 40.0 * 40.0;
            if (x, y) == (3, 3) {
                image::Rgb([250, 250, 250])
            } else if inside && (x == 50 || y == 60) {
                image::Rgb([30, 10, 5])
            } else if inside {
                image::Rgb([180, 90, 40])
            } else {
                image::Rgb([5, 2, 1])
            }
        });
        let fov = derive_fov_mask(&img);
        assert_eq!(fov.data[3 * 100 + 3], 0, "speck removed");
        assert_eq!(
            fov.data[60 * 100 + 50],
            1,
            "dark vessel inside the disc is filled"
        );
        assert_eq!(fov.data[0], 0);
        let disc = (0..100 * 100)
            .filter(|i| {
                let (dx, dy) = ((i % 100) as f64 - 50.0, (i / 100) as f64 - 50.0);
                dx * dx + dy * dy <= 40.0 * 40.0
            })
            .count();
        let diff = (fov.count() as i64 - disc as i64).abs();
        assert!(
            diff < disc as i64 / 50,
            "area {} vs disc {}",
            fov.count(),
            disc
        );
    }

    #[test]
    fn otsu_splits_two_levels() {
        let mut v = vec![10u8; 100];
        v.extend(vec![200u8; 100]);
        let t = otsu_threshold(&v);
        assert!((10..200).contains(&t));
    }
}
