//! Decoding images and binary masks. Formats are recognised by content, not by file name
//! (STARE ships P5 grey label files with `.ppm` endings, for example).

use std::path::{Path, PathBuf};

use image::{GrayImage, ImageReader, RgbImage};

/// An image or mask that could not be used, always naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{path}: cannot open: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot decode image: {source}")]
    Decode {
        path: PathBuf,
        source: image::ImageError,
    },
    #[error("{path}: image is empty (0 pixels)")]
    Empty { path: PathBuf },
    #[error("{path}: size {got_w}x{got_h} does not match {what} size {want_w}x{want_h}")]
    SizeMismatch {
        path: PathBuf,
        what: &'static str,
        got_w: u32,
        got_h: u32,
        want_w: u32,
        want_h: u32,
    },
}

fn decode(path: &Path) -> Result<image::DynamicImage, ImageError> {
    let reader = ImageReader::open(path)
        .map_err(|source| ImageError::Open {
            path: path.to_path_buf(),
            source,
        })?
        .with_guessed_format()
        .map_err(|source| ImageError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    let img = reader.decode().map_err(|source| ImageError::Decode {
        path: path.to_path_buf(),
        source,
    })?;
    if img.width() == 0 || img.height() == 0 {
        return Err(ImageError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(img)
}

/// Reads a colour image (any supported format, grey images are expanded) as 8-bit RGB.
pub fn load_rgb(path: &Path) -> Result<RgbImage, ImageError> {
    Ok(decode(path)?.to_rgb8())
}

/// A binary image (vessel label or field-of-view mask): one byte per pixel, 0 or 1, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BinaryMask {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl BinaryMask {
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Self {
        assert_eq!(data.len(), (width * height) as usize, "mask size");
        Self {
            width,
            height,
            data,
        }
    }

    /// Every pixel set: the mask for "whole image" metrics.
    pub fn full(width: u32, height: u32) -> Self {
        Self::new(width, height, vec![1; (width * height) as usize])
    }

    /// Number of set pixels.
    pub fn count(&self) -> usize {
        self.data.iter().filter(|&&v| v != 0).count()
    }

    /// Grey image with 0 / 255 values, for saving.
    pub fn to_gray_image(&self) -> GrayImage {
        GrayImage::from_fn(self.width, self.height, |x, y| {
            image::Luma([self.data[(y * self.width + x) as usize] * 255])
        })
    }

    /// Returns an error naming `path` unless the mask is `width`×`height`.
    pub fn check_size(
        &self,
        path: &Path,
        what: &'static str,
        width: u32,
        height: u32,
    ) -> Result<(), ImageError> {
        if self.width == width && self.height == height {
            Ok(())
        } else {
            Err(ImageError::SizeMismatch {
                path: path.to_path_buf(),
                what,
                got_w: self.width,
                got_h: self.height,
                want_w: width,
                want_h: height,
            })
        }
    }
}

/// Reads a binary mask (GIF, PGM/PPM, PNG, TIFF …): a pixel is set where its grey value is
/// above half range. Colour files are converted to grey first.
pub fn load_binary_mask(path: &Path) -> Result<BinaryMask, ImageError> {
    let grey = decode(path)?.to_luma8();
    let (width, height) = grey.dimensions();
    let data = grey
        .into_raw()
        .into_iter()
        .map(|v| u8::from(v > 127))
        .collect();
    Ok(BinaryMask::new(width, height, data))
}
