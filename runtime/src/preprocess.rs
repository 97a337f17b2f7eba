//! The one preprocessing path shared by training, evaluation and the device.
//!
//! An RGB image is placed, centred, on a zero (black) canvas whose sides are what the network
//! takes (multiples of 8 for SA-UNetv2's three 2× poolings), normalised to `[0, 1]` and laid
//! out planar (CHW). Network outputs are cropped back with the same [`Placement`], so every
//! output pixel corresponds to exactly one input pixel.

use image::RgbImage;
use serde::{Deserialize, Serialize};

/// Sides of the network input must be multiples of this (three 2× poolings).
pub const SIZE_MULTIPLE: u32 = 8;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PreprocessError {
    #[error("image {width}x{height} does not fit the network input {net_width}x{net_height}")]
    TooLarge {
        width: u32,
        height: u32,
        net_width: u32,
        net_height: u32,
    },
    #[error("network input {net_width}x{net_height}: sides must be non-zero multiples of {SIZE_MULTIPLE}")]
    BadNetworkSize { net_width: u32, net_height: u32 },
    #[error("buffer holds {got} values, {want} needed")]
    BufferSize { got: usize, want: usize },
}

/// How pixel values are mapped to network inputs. Recorded in model metadata.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    /// `value / 255`, per channel, RGB order.
    #[default]
    UnitRange,
}

impl Normalization {
    #[inline]
    pub fn apply(self, value: u8) -> f32 {
        match self {
            Normalization::UnitRange => f32::from(value) / 255.0,
        }
    }
}

/// Where an image of `width`×`height` sits inside a network input of
/// `net_width`×`net_height`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub width: u32,
    pub height: u32,
    pub net_width: u32,
    pub net_height: u32,
    pub left: u32,
    pub top: u32,
}

/// Rounds `side` up to the next multiple of [`SIZE_MULTIPLE`].
pub fn round_up_to_multiple(side: u32) -> u32 {
    side.div_ceil(SIZE_MULTIPLE).max(1) * SIZE_MULTIPLE
}

impl Placement {
    /// The smallest network input that holds the image (sides rounded up to multiples of 8).
    pub fn smallest_for(width: u32, height: u32) -> Self {
        Self::centred(
            width,
            height,
            round_up_to_multiple(width),
            round_up_to_multiple(height),
        )
    }

    /// The image centred in a network input of a fixed size.
    pub fn in_network(
        width: u32,
        height: u32,
        net_width: u32,
        net_height: u32,
    ) -> Result<Self, PreprocessError> {
        if net_width == 0
            || net_height == 0
            || !net_width.is_multiple_of(SIZE_MULTIPLE)
            || !net_height.is_multiple_of(SIZE_MULTIPLE)
        {
            return Err(PreprocessError::BadNetworkSize {
                net_width,
                net_height,
            });
        }
        if width > net_width || height > net_height {
            return Err(PreprocessError::TooLarge {
                width,
                height,
                net_width,
                net_height,
            });
        }
        Ok(Self::centred(width, height, net_width, net_height))
    }

    fn centred(width: u32, height: u32, net_width: u32, net_height: u32) -> Self {
        Self {
            width,
            height,
            net_width,
            net_height,
            left: (net_width - width) / 2,
            top: (net_height - height) / 2,
        }
    }

    /// Values in one network plane.
    pub fn net_plane_len(&self) -> usize {
        self.net_width as usize * self.net_height as usize
    }

    /// Values in one image plane.
    pub fn image_plane_len(&self) -> usize {
        self.width as usize * self.height as usize
    }

    /// Writes `image` as a normalised planar `[3, net_height, net_width]` tensor into `out`,
    /// zero outside the image. `out` is reused across calls: no allocation.
    pub fn write_input(
        &self,
        image: &RgbImage,
        normalization: Normalization,
        out: &mut [f32],
    ) -> Result<(), PreprocessError> {
        let plane = self.net_plane_len();
        check_len(out.len(), 3 * plane)?;
        debug_assert_eq!(image.dimensions(), (self.width, self.height));
        out.fill(0.0);
        let raw = image.as_raw();
        let (w, nw) = (self.width as usize, self.net_width as usize);
        for y in 0..self.height as usize {
            let row_in = &raw[y * w * 3..(y + 1) * w * 3];
            let row_out = (y + self.top as usize) * nw + self.left as usize;
            for (x, px) in row_in.chunks_exact(3).enumerate() {
                for c in 0..3 {
                    out[c * plane + row_out + x] = normalization.apply(px[c]);
                }
            }
        }
        Ok(())
    }

    /// Places a per-pixel image plane (label, mask) into a network-sized plane, `fill` outside.
    pub fn place_plane<T: Copy>(
        &self,
        plane: &[T],
        fill: T,
        out: &mut [T],
    ) -> Result<(), PreprocessError> {
        check_len(plane.len(), self.image_plane_len())?;
        check_len(out.len(), self.net_plane_len())?;
        out.fill(fill);
        let (w, nw) = (self.width as usize, self.net_width as usize);
        for y in 0..self.height as usize {
            let start = (y + self.top as usize) * nw + self.left as usize;
            out[start..start + w].copy_from_slice(&plane[y * w..(y + 1) * w]);
        }
        Ok(())
    }

    /// Crops a network-sized output plane back to the image's own size.
    pub fn crop_plane<T: Copy>(
        &self,
        net_plane: &[T],
        out: &mut [T],
    ) -> Result<(), PreprocessError> {
        check_len(net_plane.len(), self.net_plane_len())?;
        check_len(out.len(), self.image_plane_len())?;
        let (w, nw) = (self.width as usize, self.net_width as usize);
        for y in 0..self.height as usize {
            let start = (y + self.top as usize) * nw + self.left as usize;
            out[y * w..(y + 1) * w].copy_from_slice(&net_plane[start..start + w]);
        }
        Ok(())
    }
}

fn check_len(got: usize, want: usize) -> Result<(), PreprocessError> {
    if got == want {
        Ok(())
    } else {
        Err(PreprocessError::BufferSize { got, want })
    }
}

/// Thresholds probabilities into a 0/1 mask (`p >= threshold`), into a reused buffer.
pub fn threshold_into(probabilities: &[f32], threshold: f32, out: &mut [u8]) {
    for (o, &p) in out.iter_mut().zip(probabilities) {
        *o = u8::from(p >= threshold);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drive_and_stare_sizes_round_up_to_the_papers_inputs() {
        // DRIVE 565x584 and STARE 700x605 become 568x584 and 704x608 at the smallest;
        // the paper's 592x592 holds DRIVE centred.
        assert_eq!(round_up_to_multiple(565), 568);
        assert_eq!(round_up_to_multiple(605), 608);
        let p = Placement::in_network(565, 584, 592, 592).unwrap();
        assert_eq!((p.left, p.top), (13, 4));
        assert!(matches!(
            Placement::in_network(700, 605, 592, 592),
            Err(PreprocessError::TooLarge { .. })
        ));
        assert!(matches!(
            Placement::in_network(10, 10, 20, 16),
            Err(PreprocessError::BadNetworkSize { .. })
        ));
    }

    #[test]
    fn pad_then_crop_restores_every_pixel() {
        let img = RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8 * 10, y as u8 * 50, 255]));
        let p = Placement::smallest_for(5, 3);
        assert_eq!((p.net_width, p.net_height, p.left, p.top), (8, 8, 1, 2));
        let mut input = vec![9.0; 3 * 64];
        p.write_input(&img, Normalization::UnitRange, &mut input)
            .unwrap();
        // Padding is zero, the blue plane inside is 1.
        assert_eq!(input[0], 0.0);
        assert_eq!(input[2 * 64 + 2 * 8 + 1], 1.0);
        for c in 0..3 {
            let mut back = vec![0.0; 15];
            p.crop_plane(&input[c * 64..(c + 1) * 64], &mut back)
                .unwrap();
            for (i, v) in back.iter().enumerate() {
                let (x, y) = (i as u32 % 5, i as u32 / 5);
                let want = f32::from(img.get_pixel(x, y)[c]) / 255.0;
                assert_eq!(*v, want);
            }
        }
        let label: Vec<u8> = (0..15).collect();
        let mut net = vec![0u8; 64];
        p.place_plane(&label, 0, &mut net).unwrap();
        let mut back = vec![0u8; 15];
        p.crop_plane(&net, &mut back).unwrap();
        assert_eq!(back, label);
    }

    #[test]
    fn wrong_buffer_sizes_are_errors_not_panics() {
        let p = Placement::smallest_for(5, 3);
        let img = RgbImage::new(5, 3);
        assert_eq!(
            p.write_input(&img, Normalization::UnitRange, &mut [0.0; 10]),
            Err(PreprocessError::BufferSize { got: 10, want: 192 })
        );
        assert!(p.crop_plane(&[0.0f32; 64], &mut [0.0; 14]).is_err());
    }
}
