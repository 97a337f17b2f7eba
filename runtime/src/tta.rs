//! Test-time augmentation: the network run on flipped copies of an image, each map flipped
//! back and the probabilities averaged. It multiplies the inference cost by the number of
//! copies, so the live camera loop runs without it (it has no option for it).

use image::{imageops, RgbImage};

/// Which copies of an image are segmented and averaged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tta {
    /// The image as it is (the paper's protocol).
    #[default]
    None,
    /// The image, its horizontal and vertical flips, and both.
    Flips,
}

/// A flip of a row-major `width`×`height` plane or image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flip {
    Identity,
    Horizontal,
    Vertical,
    Both,
}

impl Flip {
    /// Each flip is its own inverse.
    fn index(self, width: usize, height: usize, x: usize, y: usize) -> usize {
        let (sx, sy) = match self {
            Flip::Identity => (x, y),
            Flip::Horizontal => (width - 1 - x, y),
            Flip::Vertical => (x, height - 1 - y),
            Flip::Both => (width - 1 - x, height - 1 - y),
        };
        sy * width + sx
    }

    pub fn image(self, image: &RgbImage) -> RgbImage {
        match self {
            Flip::Identity => image.clone(),
            Flip::Horizontal => imageops::flip_horizontal(image),
            Flip::Vertical => imageops::flip_vertical(image),
            Flip::Both => imageops::rotate180(image),
        }
    }

    /// Adds this flip of `plane` to `sum` (both `width`×`height`).
    fn add_flipped(self, plane: &[f32], width: usize, height: usize, sum: &mut [f32]) {
        for y in 0..height {
            for x in 0..width {
                sum[y * width + x] += plane[self.index(width, height, x, y)];
            }
        }
    }
}

impl std::str::FromStr for Tta {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Tta::None),
            "flips" => Ok(Tta::Flips),
            other => Err(format!(
                "unknown test-time augmentation {other:?}: use none or flips"
            )),
        }
    }
}

impl std::fmt::Display for Tta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tta::None => "none",
            Tta::Flips => "flips",
        })
    }
}

impl Tta {
    /// The flips this mode segments.
    pub fn flips(self) -> &'static [Flip] {
        match self {
            Tta::None => &[Flip::Identity],
            Tta::Flips => &[Flip::Identity, Flip::Horizontal, Flip::Vertical, Flip::Both],
        }
    }

    /// Network runs per image.
    pub fn runs(self) -> usize {
        self.flips().len()
    }

    /// Vessel probabilities of `image` (row-major, its own size): `predict`'s on each copy,
    /// flipped back and averaged. With [`Tta::None`], `predict`'s own output.
    pub fn predict<E>(
        self,
        image: &RgbImage,
        mut predict: impl FnMut(&RgbImage) -> Result<Vec<f32>, E>,
    ) -> Result<Vec<f32>, E> {
        if self == Tta::None {
            return predict(image);
        }
        let (w, h) = (image.width() as usize, image.height() as usize);
        let mut sum = vec![0.0f32; w * h];
        for &flip in self.flips() {
            let probs = predict(&flip.image(image))?;
            assert_eq!(
                probs.len(),
                w * h,
                "a prediction covers the image it was given"
            );
            flip.add_flipped(&probs, w, h, &mut sum);
        }
        let n = self.runs() as f32;
        sum.iter_mut().for_each(|p| *p /= n);
        Ok(sum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> RgbImage {
        RgbImage::from_fn(5, 3, |x, y| image::Rgb([(x * 40) as u8, (y * 90) as u8, 7]))
    }

    /// A "network" that reads each pixel's red and green: its output follows the image.
    fn pixelwise(image: &RgbImage) -> Result<Vec<f32>, ()> {
        Ok(image
            .pixels()
            .map(|p| f32::from(p[0]) + 1000.0 * f32::from(p[1]))
            .collect())
    }

    #[test]
    fn flips_of_a_pixelwise_model_average_to_its_own_output() {
        let img = image();
        let plain = Tta::None.predict(&img, pixelwise).unwrap();
        let flipped = Tta::Flips.predict(&img, pixelwise).unwrap();
        assert_eq!(plain, flipped);
    }

    #[test]
    fn flips_average_a_position_dependent_model() {
        // A model that answers its input's x coordinate: each copy's map, flipped back, is
        // x for identity and vertical, (w − 1 − x) for horizontal and both: the mean is
        // (w − 1) / 2 everywhere.
        let img = image();
        let mut calls = 0;
        let probs = Tta::Flips
            .predict(&img, |im: &RgbImage| {
                calls += 1;
                Ok::<_, ()>(
                    (0..im.height())
                        .flat_map(|_| 0..im.width())
                        .map(|x| x as f32)
                        .collect(),
                )
            })
            .unwrap();
        assert_eq!(calls, 4);
        assert!(probs.iter().all(|&p| p == 2.0), "{probs:?}");
    }

    #[test]
    fn names_parse_back() {
        for t in [Tta::None, Tta::Flips] {
            assert_eq!(t.to_string().parse::<Tta>(), Ok(t));
        }
        assert!("rotations"
            .parse::<Tta>()
            .unwrap_err()
            .contains("none or flips"));
    }

    #[test]
    fn each_flip_is_its_own_inverse() {
        let img = image();
        for flip in Tta::Flips.flips() {
            assert_eq!(flip.image(&flip.image(&img)), img, "{flip:?}");
        }
        let h = Flip::Horizontal.image(&img);
        assert_eq!(h.get_pixel(0, 1), img.get_pixel(4, 1));
    }
}
