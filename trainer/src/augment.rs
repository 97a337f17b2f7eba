//! Training examples: a sample placed on the network canvas through the shared
//! preprocessing, then seeded on-the-fly augmentation (rotation, flips, colour jitter, the
//! SA-UNet authors' PIL-style enhancements, Gaussian noise). The same seed, epoch and
//! sample always give the same example, so a
//! resumed run sees exactly what an uninterrupted one would.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Normal};
use vessel_runtime::preprocess::{Normalization, Placement, PreprocessError};

use crate::data::Sample;

/// A sample on the network canvas (`size`×`size`), before augmentation.
#[derive(Clone, Debug)]
pub struct Example {
    pub size: usize,
    /// Planar RGB `[3, size, size]`, normalised.
    pub input: Vec<f32>,
    /// Vessel label `[size, size]`, 0 or 1.
    pub label: Vec<f32>,
    /// 1 where the canvas holds image pixels, 0 in the padding.
    pub inside: Vec<f32>,
}

impl Example {
    pub fn from_sample(sample: &Sample, size: u32) -> Result<Self, PreprocessError> {
        let (w, h) = sample.image.dimensions();
        let placement = Placement::in_network(w, h, size, size)?;
        let plane = placement.net_plane_len();
        let mut input = vec![0.0; 3 * plane];
        placement.write_input(&sample.image, Normalization::UnitRange, &mut input)?;
        let label_plane: Vec<f32> = sample.label.data.iter().map(|&v| f32::from(v)).collect();
        let mut label = vec![0.0; plane];
        placement.place_plane(&label_plane, 0.0, &mut label)?;
        let mut inside = vec![0.0; plane];
        placement.place_plane(&vec![1.0; placement.image_plane_len()], 0.0, &mut inside)?;
        Ok(Self {
            size: size as usize,
            input,
            label,
            inside,
        })
    }
}

/// Augmentation strengths. `Augment::none()` passes examples through unchanged.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Augment {
    /// Rotation angle drawn uniformly from ±this many degrees.
    pub rotation_degrees: f32,
    /// Horizontal, vertical and diagonal (transpose) flips, each with probability ½.
    pub flips: bool,
    /// Brightness, contrast and saturation factors drawn from 1 ± this.
    pub color_jitter: f32,
    /// Gaussian noise with a standard deviation drawn from [0, this] (in [0, 1] units).
    pub noise_std: f32,
    /// Probability that an example gets the SA-UNet authors' colour copy: PIL's
    /// `ImageEnhance` saturation, brightness, contrast and sharpness in turn, with factors
    /// drawn from their ranges (`AUTHORS_ENHANCE`), after the jitter above and before the
    /// noise. Factors are drawn continuously (the authors draw tenths) and no rounding to
    /// 8 bits happens between the steps.
    #[serde(default)]
    pub authors_colour: f32,
}

/// The factor ranges of the authors' colour copies (their `keras_dataAug.py`), in the order
/// they are applied: saturation, brightness, contrast, sharpness.
pub const AUTHORS_ENHANCE: [(Enhance, f32, f32); 4] = [
    (Enhance::Saturation, 0.0, 3.0),
    (Enhance::Brightness, 1.0, 2.0),
    (Enhance::Contrast, 1.0, 2.0),
    (Enhance::Sharpness, 0.0, 3.0),
];

/// One of PIL's `ImageEnhance` operations: the image blended with a degenerate version of
/// itself, `degenerate + factor · (image − degenerate)`, clipped to [0, 1].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enhance {
    /// Degenerate: the image's grey (ITU-R 601 luma).
    Saturation,
    /// Degenerate: black.
    Brightness,
    /// Degenerate: the mean grey of the image.
    Contrast,
    /// Degenerate: the image through PIL's 3×3 smoothing kernel (borders kept).
    Sharpness,
}

impl Default for Augment {
    fn default() -> Self {
        Self {
            rotation_degrees: 180.0,
            flips: true,
            color_jitter: 0.15,
            noise_std: 0.03,
            authors_colour: 0.0,
        }
    }
}

impl Augment {
    pub fn none() -> Self {
        Self {
            rotation_degrees: 0.0,
            flips: false,
            color_jitter: 0.0,
            noise_std: 0.0,
            authors_colour: 0.0,
        }
    }

    /// The RNG for one sample in one epoch: independent of the order samples are visited.
    pub fn rng(seed: u64, epoch: usize, sample: usize) -> StdRng {
        let mixed = seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add((epoch as u64) << 32 | sample as u64);
        StdRng::seed_from_u64(mixed)
    }

    /// Returns the augmented (input, label) of `ex`.
    pub fn apply(&self, ex: &Example, rng: &mut StdRng) -> (Vec<f32>, Vec<f32>) {
        let mut input = ex.input.clone();
        self.jitter_colours(ex, &mut input, rng);
        let transform = self.draw_transform(ex.size, rng);
        match transform {
            None => (input, ex.label.clone()),
            Some(m) => resample(ex.size, &input, &ex.label, m),
        }
    }

    fn jitter_colours(&self, ex: &Example, input: &mut [f32], rng: &mut StdRng) {
        let plane = ex.size * ex.size;
        let j = self.color_jitter;
        if j > 0.0 {
            let brightness = rng.random_range(1.0 - j..=1.0 + j);
            let contrast = rng.random_range(1.0 - j..=1.0 + j);
            let saturation = rng.random_range(1.0 - j..=1.0 + j);
            let mean_grey = mean_grey(input, plane, &ex.inside);
            for i in (0..plane).filter(|&i| ex.inside[i] > 0.0) {
                let g = grey(input, plane, i);
                for c in 0..3 {
                    let v = &mut input[c * plane + i];
                    let saturated = g + (*v - g) * saturation;
                    let contrasted = mean_grey + (saturated - mean_grey) * contrast;
                    *v = contrasted * brightness;
                }
            }
        }
        // Before the noise, as the authors enhance clean images. Drawn only when enabled, so
        // runs without it keep their random streams.
        if self.authors_colour > 0.0 && rng.random_bool(f64::from(self.authors_colour.min(1.0))) {
            for (op, low, high) in AUTHORS_ENHANCE {
                let factor = rng.random_range(low..=high);
                enhance(op, factor, ex.size, &ex.inside, input);
            }
        }
        if self.noise_std > 0.0 {
            let std = rng.random_range(0.0..=self.noise_std);
            if let Ok(normal) = Normal::new(0.0f32, std) {
                for i in (0..plane).filter(|&i| ex.inside[i] > 0.0) {
                    for c in 0..3 {
                        input[c * plane + i] += normal.sample(rng);
                    }
                }
            }
        }
        if j > 0.0 || self.noise_std > 0.0 {
            for v in input.iter_mut() {
                *v = v.clamp(0.0, 1.0);
            }
        }
    }

    /// The output→source coordinate map (a 2×2 matrix about the canvas centre), or `None`
    /// for the identity.
    fn draw_transform(&self, _size: usize, rng: &mut StdRng) -> Option<[[f32; 2]; 2]> {
        let mut m = [[1.0f32, 0.0], [0.0, 1.0]];
        if self.flips {
            if rng.random_bool(0.5) {
                m = mul(m, [[-1.0, 0.0], [0.0, 1.0]]);
            }
            if rng.random_bool(0.5) {
                m = mul(m, [[1.0, 0.0], [0.0, -1.0]]);
            }
            if rng.random_bool(0.5) {
                m = mul(m, [[0.0, 1.0], [1.0, 0.0]]);
            }
        }
        if self.rotation_degrees > 0.0 {
            let r = self.rotation_degrees;
            let t = rng.random_range(-r..=r).to_radians();
            m = mul(m, [[t.cos(), -t.sin()], [t.sin(), t.cos()]]);
        }
        (m != [[1.0, 0.0], [0.0, 1.0]]).then_some(m)
    }
}

/// A `crop`×`crop` window of an augmented `size`×`size` canvas (planar RGB input and its
/// label), at a position drawn uniformly from `rng`.
pub fn random_crop(
    size: usize,
    input: &[f32],
    label: &[f32],
    crop: usize,
    rng: &mut StdRng,
) -> (Vec<f32>, Vec<f32>) {
    let x0 = rng.random_range(0..=size - crop);
    let y0 = rng.random_range(0..=size - crop);
    let plane = size * size;
    let window = |src: &[f32]| -> Vec<f32> {
        (y0..y0 + crop)
            .flat_map(|y| &src[y * size + x0..y * size + x0 + crop])
            .copied()
            .collect()
    };
    let cropped_input = (0..3)
        .flat_map(|c| window(&input[c * plane..(c + 1) * plane]))
        .collect();
    (cropped_input, window(label))
}

/// Applies a PIL-style enhancement to the image pixels (`inside` > 0) of a planar RGB
/// `size`×`size` canvas in [0, 1]; the padding stays as it is.
pub fn enhance(op: Enhance, factor: f32, size: usize, inside: &[f32], input: &mut [f32]) {
    let plane = size * size;
    let blend = |degenerate: f32, v: f32| (degenerate + factor * (v - degenerate)).clamp(0.0, 1.0);
    let pixels = || (0..plane).filter(|&i| inside[i] > 0.0);
    match op {
        Enhance::Saturation => {
            for i in pixels() {
                let g = grey(input, plane, i);
                for c in 0..3 {
                    input[c * plane + i] = blend(g, input[c * plane + i]);
                }
            }
        }
        Enhance::Brightness | Enhance::Contrast => {
            let degenerate = if op == Enhance::Brightness {
                0.0
            } else {
                mean_grey(input, plane, inside)
            };
            for i in pixels() {
                for c in 0..3 {
                    input[c * plane + i] = blend(degenerate, input[c * plane + i]);
                }
            }
        }
        Enhance::Sharpness => {
            // PIL's SMOOTH kernel: 5 at the centre, 1 around, over 13; the outermost ring
            // of the image keeps its pixels (PIL leaves the border unfiltered), as does any
            // pixel whose neighbourhood reaches the padding.
            let source = input.to_vec();
            for i in pixels() {
                let (x, y) = (i % size, i / size);
                if x == 0 || y == 0 || x + 1 == size || y + 1 == size {
                    continue;
                }
                let neighbours = [
                    i - size - 1,
                    i - size,
                    i - size + 1,
                    i - 1,
                    i + 1,
                    i + size - 1,
                    i + size,
                    i + size + 1,
                ];
                if neighbours.iter().any(|&n| inside[n] <= 0.0) {
                    continue;
                }
                for c in 0..3 {
                    let p = &source[c * plane..(c + 1) * plane];
                    let smooth =
                        (5.0 * p[i] + neighbours.iter().map(|&n| p[n]).sum::<f32>()) / 13.0;
                    input[c * plane + i] = blend(smooth, p[i]);
                }
            }
        }
    }
}

/// The mean grey of the image pixels (`inside` > 0, a 0/1 mask) of a planar RGB canvas.
fn mean_grey(input: &[f32], plane: usize, inside: &[f32]) -> f32 {
    let count = inside.iter().sum::<f32>().max(1.0);
    (0..plane)
        .filter(|&i| inside[i] > 0.0)
        .map(|i| grey(input, plane, i))
        .sum::<f32>()
        / count
}

fn grey(input: &[f32], plane: usize, i: usize) -> f32 {
    0.299 * input[i] + 0.587 * input[plane + i] + 0.114 * input[2 * plane + i]
}

fn mul(a: [[f32; 2]; 2], b: [[f32; 2]; 2]) -> [[f32; 2]; 2] {
    [
        [
            a[0][0] * b[0][0] + a[0][1] * b[1][0],
            a[0][0] * b[0][1] + a[0][1] * b[1][1],
        ],
        [
            a[1][0] * b[0][0] + a[1][1] * b[1][0],
            a[1][0] * b[0][1] + a[1][1] * b[1][1],
        ],
    ]
}

/// Resamples a square canvas through `m` (output → source, about the centre): bilinear for
/// the image, bilinear then ≥ ½ for the label; zero outside the source.
fn resample(size: usize, input: &[f32], label: &[f32], m: [[f32; 2]; 2]) -> (Vec<f32>, Vec<f32>) {
    let plane = size * size;
    let c = (size as f32 - 1.0) / 2.0;
    let mut out_input = vec![0.0; 3 * plane];
    let mut out_label = vec![0.0; plane];
    for y in 0..size {
        for x in 0..size {
            let (dx, dy) = (x as f32 - c, y as f32 - c);
            let sx = m[0][0] * dx + m[0][1] * dy + c;
            let sy = m[1][0] * dx + m[1][1] * dy + c;
            let Some(taps) = bilinear_taps(size, sx, sy) else {
                continue;
            };
            let o = y * size + x;
            let sample = |src: &[f32]| taps.iter().map(|&(i, w)| src[i] * w).sum::<f32>();
            for ch in 0..3 {
                out_input[ch * plane + o] = sample(&input[ch * plane..(ch + 1) * plane]);
            }
            out_label[o] = f32::from(sample(label) >= 0.5);
        }
    }
    (out_input, out_label)
}

/// The four (index, weight) taps of a bilinear sample, or `None` outside the canvas.
/// Samples within half a pixel of an integer position snap to it, so flips are exact.
fn bilinear_taps(size: usize, sx: f32, sy: f32) -> Option<[(usize, f32); 4]> {
    let max = (size - 1) as f32;
    if !(-0.5..=max + 0.5).contains(&sx) || !(-0.5..=max + 0.5).contains(&sy) {
        return None;
    }
    let (sx, sy) = (sx.clamp(0.0, max), sy.clamp(0.0, max));
    let snap = |v: f32| {
        if (v - v.round()).abs() < 1e-4 {
            v.round()
        } else {
            v
        }
    };
    let (sx, sy) = (snap(sx), snap(sy));
    let (x0, y0) = (sx.floor() as usize, sy.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(size - 1), (y0 + 1).min(size - 1));
    let (fx, fy) = (sx - x0 as f32, sy - y0 as f32);
    Some([
        (y0 * size + x0, (1.0 - fx) * (1.0 - fy)),
        (y0 * size + x1, fx * (1.0 - fy)),
        (y1 * size + x0, (1.0 - fx) * fy),
        (y1 * size + x1, fx * fy),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> Example {
        let size = 8;
        let plane = size * size;
        let input: Vec<f32> = (0..3 * plane).map(|i| (i % 97) as f32 / 97.0).collect();
        let label: Vec<f32> = (0..plane).map(|i| f32::from(i % 5 == 0)).collect();
        Example {
            size,
            input,
            label,
            inside: vec![1.0; plane],
        }
    }

    #[test]
    fn no_augmentation_is_identity() {
        let ex = example();
        let (i, l) = Augment::none().apply(&ex, &mut Augment::rng(1, 0, 0));
        assert_eq!(i, ex.input);
        assert_eq!(l, ex.label);
    }

    #[test]
    fn flips_move_pixels_exactly_and_keep_labels_binary() {
        let ex = example();
        let flip_h = [[-1.0, 0.0], [0.0, 1.0]];
        let (i, l) = resample(8, &ex.input, &ex.label, flip_h);
        for y in 0..8 {
            for x in 0..8 {
                assert_eq!(l[y * 8 + x], ex.label[y * 8 + 7 - x]);
                assert_eq!(i[64 + y * 8 + x], ex.input[64 + y * 8 + 7 - x]);
            }
        }
        let transpose = [[0.0, 1.0], [1.0, 0.0]];
        let (_, l) = resample(8, &ex.input, &ex.label, transpose);
        assert_eq!(l[8], ex.label[1]);
    }

    #[test]
    fn crops_are_windows_of_the_canvas_at_drawn_positions() {
        let ex = example();
        let mut corners = std::collections::HashSet::new();
        for sample in 0..40 {
            let (i, l) = random_crop(8, &ex.input, &ex.label, 3, &mut Augment::rng(7, 0, sample));
            assert_eq!((i.len(), l.len()), (27, 9));
            // Find the window's origin from its first pixel's channel-0 value, then check
            // every pixel of every plane against the canvas there.
            let origin = (0..=5)
                .flat_map(|y| (0..=5).map(move |x| (x, y)))
                .find(|&(x, y)| {
                    (0..3).all(|c| {
                        (0..3).all(|dy| {
                            (0..3).all(|dx| {
                                i[c * 9 + dy * 3 + dx] == ex.input[c * 64 + (y + dy) * 8 + x + dx]
                                    && l[dy * 3 + dx] == ex.label[(y + dy) * 8 + x + dx]
                            })
                        })
                    })
                });
            corners.insert(origin.expect("the crop is a window of the canvas"));
        }
        assert!(corners.len() > 10, "crop positions vary: {corners:?}");
        // A crop of the whole canvas is the canvas.
        let (i, l) = random_crop(8, &ex.input, &ex.label, 8, &mut Augment::rng(7, 0, 0));
        assert_eq!((i, l), (ex.input.clone(), ex.label.clone()));
    }

    #[test]
    fn enhancements_follow_pil() {
        let ex = example();
        let plane = 64;
        let run = |op, factor| {
            let mut input = ex.input.clone();
            enhance(op, factor, 8, &ex.inside, &mut input);
            input
        };
        // Factor 1 is the identity for every operation.
        for (op, _, _) in AUTHORS_ENHANCE {
            let same = run(op, 1.0);
            assert!(
                same.iter()
                    .zip(&ex.input)
                    .all(|(a, b)| (a - b).abs() < 1e-6),
                "{op:?} at 1"
            );
        }
        // Saturation 0 is the grey image: three equal channels, the luma of the original.
        let grey_image = run(Enhance::Saturation, 0.0);
        for i in 0..plane {
            let g = grey(&ex.input, plane, i);
            for c in 0..3 {
                assert!((grey_image[c * plane + i] - g).abs() < 1e-6);
            }
        }
        // Brightness 2 doubles, clipped at 1.
        let bright = run(Enhance::Brightness, 2.0);
        for (b, v) in bright.iter().zip(&ex.input) {
            assert_eq!(*b, (2.0 * v).min(1.0));
        }
        // Contrast 0 is the mean grey everywhere.
        let flat = run(Enhance::Contrast, 0.0);
        let mean = (0..plane).map(|i| grey(&ex.input, plane, i)).sum::<f32>() / plane as f32;
        assert!(flat.iter().all(|v| (v - mean).abs() < 1e-5));
        // Sharpness 0 is PIL's smoothing inside, the border kept; a flat image is unchanged
        // at any factor.
        let smooth = run(Enhance::Sharpness, 0.0);
        let i = 3 * 8 + 4;
        let n = [i - 9, i - 8, i - 7, i - 1, i + 1, i + 7, i + 8, i + 9];
        let expect = (5.0 * ex.input[i] + n.iter().map(|&k| ex.input[k]).sum::<f32>()) / 13.0;
        assert!((smooth[i] - expect).abs() < 1e-6);
        assert_eq!(smooth[0], ex.input[0]);
        let mut constant = vec![0.25; 3 * plane];
        enhance(Enhance::Sharpness, 3.0, 8, &ex.inside, &mut constant);
        assert!(constant.iter().all(|v| (v - 0.25).abs() < 1e-6));
        // The padding is never touched.
        let mut inside = ex.inside.clone();
        inside[10] = 0.0;
        let mut input = ex.input.clone();
        enhance(Enhance::Brightness, 2.0, 8, &inside, &mut input);
        assert_eq!(input[10], ex.input[10]);
    }

    #[test]
    fn authors_colour_changes_some_examples_and_stays_in_range() {
        let ex = example();
        let plain = Augment {
            rotation_degrees: 0.0,
            flips: false,
            color_jitter: 0.0,
            noise_std: 0.0,
            authors_colour: 0.5,
        };
        let changed = (0..40)
            .filter(|&k| {
                let (i, l) = plain.apply(&ex, &mut Augment::rng(3, 0, k));
                assert!(i.iter().all(|v| (0.0..=1.0).contains(v)));
                assert_eq!(l, ex.label);
                i != ex.input
            })
            .count();
        assert!(
            (8..=32).contains(&changed),
            "about half changed: {changed} of 40"
        );
    }

    #[test]
    fn augmentation_is_seeded() {
        let ex = example();
        let aug = Augment::default();
        let a = aug.apply(&ex, &mut Augment::rng(7, 3, 2));
        let b = aug.apply(&ex, &mut Augment::rng(7, 3, 2));
        let c = aug.apply(&ex, &mut Augment::rng(7, 4, 2));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.1.iter().all(|&v| v == 0.0 || v == 1.0));
        assert!(a.0.iter().all(|v| (0.0..=1.0).contains(v)));
    }
}
