//! Camera capture over V4L2 (`v4l`): format negotiation (YUYV, MJPEG or RGB3), conversion
//! to RGB888, and the centre crop/scale to the model's input.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::Duration;

use image::ImageDecoder;
use thiserror::Error;
use v4l::buffer::Type;
use v4l::format::Description;
use v4l::io::mmap::Stream;
use v4l::io::traits::CaptureStream;
use v4l::video::Capture;
use v4l::{Device, Format, FourCC};

use super::board::CameraFormat;
use crate::pixel_format::{crop_scale_rgb, rgb24_to_rgb, yuyv_to_rgb, PixelFormatError};

#[derive(Debug, Error)]
pub enum CaptureError {
    #[error("{path}: {problem}")]
    Device { path: PathBuf, problem: String },
    #[error("{path}: bad frame: {source}")]
    Frame {
        path: PathBuf,
        source: PixelFormatError,
    },
    #[error("{path}: MJPEG frame does not decode: {problem}")]
    Mjpeg { path: PathBuf, problem: String },
}

/// What was agreed with the camera.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NegotiatedFormat {
    pub fourcc: String,
    pub width: u32,
    pub height: u32,
    pub stride: usize,
}

impl std::fmt::Display for NegotiatedFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}x{}", self.fourcc, self.width, self.height)
    }
}

/// Formats we convert, in the order `auto` prefers them (YUYV needs no decoder).
const SUPPORTED: [(CameraFormat, &[u8; 4]); 3] = [
    (CameraFormat::Yuyv, b"YUYV"),
    (CameraFormat::Mjpg, b"MJPG"),
    (CameraFormat::Rgb3, b"RGB3"),
];

pub struct Camera {
    path: PathBuf,
    // Declared before `device` so the stream (and its buffers) is released first.
    stream: Stream<'static>,
    _device: Device,
    pub format: NegotiatedFormat,
    pub card: String,
    /// The camera-resolution RGB888 frame, reused.
    rgb: Vec<u8>,
}

fn device_err(path: &Path, problem: impl Into<String>) -> CaptureError {
    CaptureError::Device {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

/// Opens a V4L2 device and reads what it is and which pixel formats it offers.
fn probe(path: &Path) -> Result<(Device, String, Vec<Description>), CaptureError> {
    let device =
        Device::with_path(path).map_err(|e| device_err(path, format!("cannot open: {e}")))?;
    let caps = device
        .query_caps()
        .map_err(|e| device_err(path, format!("not a V4L2 device: {e}")))?;
    let formats = device
        .enum_formats()
        .map_err(|e| device_err(path, format!("cannot list formats: {e}")))?;
    Ok((device, caps.card, formats))
}

/// The pixel formats a camera offers (for `vessel info`).
pub fn offered_formats(path: &Path) -> Result<(String, Vec<String>), CaptureError> {
    let (_, card, formats) = probe(path)?;
    Ok((
        card,
        formats
            .iter()
            .map(|f| format!("{} ({})", f.fourcc, f.description))
            .collect(),
    ))
}

impl Camera {
    /// Opens the camera, negotiates a format we can convert and starts streaming.
    pub fn open(
        path: &Path,
        want: CameraFormat,
        width: u32,
        height: u32,
    ) -> Result<Self, CaptureError> {
        let (device, card, formats) = probe(path)?;
        let offered: Vec<FourCC> = formats.into_iter().map(|d| d.fourcc).collect();
        let choice = SUPPORTED
            .iter()
            .filter(|(kind, _)| want == CameraFormat::Auto || *kind == want)
            .map(|(_, code)| FourCC::new(code))
            .find(|code| offered.contains(code));
        let offered_list = offered
            .iter()
            .map(|f| f.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let Some(fourcc) = choice else {
            return Err(device_err(
                path,
                format!("camera offers none of the formats asked for ({want:?}); it offers: {offered_list}"),
            ));
        };
        let set = device
            .set_format(&Format::new(width, height, fourcc))
            .map_err(|e| device_err(path, format!("cannot set {fourcc} {width}x{height}: {e}")))?;
        if set.fourcc != fourcc {
            return Err(device_err(
                path,
                format!(
                    "asked for {fourcc}, the driver chose {} (offers: {offered_list})",
                    set.fourcc
                ),
            ));
        }
        if set.width == 0 || set.height == 0 {
            return Err(device_err(path, "driver reported an empty frame size"));
        }
        let mut stream = Stream::with_buffers(&device, Type::VideoCapture, 4)
            .map_err(|e| device_err(path, format!("cannot start streaming: {e}")))?;
        // A camera that stops delivering (unplugged, hung) must not block forever.
        stream.set_timeout(Duration::from_secs(3));
        let bytes_per_pixel = match &fourcc.repr {
            b"YUYV" => 2,
            b"RGB3" => 3,
            _ => 0,
        };
        let stride = if set.stride > 0 {
            set.stride as usize
        } else {
            set.width as usize * bytes_per_pixel
        };
        Ok(Self {
            path: path.to_path_buf(),
            stream,
            _device: device,
            format: NegotiatedFormat {
                fourcc: fourcc.to_string(),
                width: set.width,
                height: set.height,
                stride,
            },
            card,
            rgb: vec![0; set.width as usize * set.height as usize * 3],
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for the next frame and writes it, centre-cropped and scaled, into `out`
    /// (`out_w`×`out_h` RGB888). Returns the driver's sequence number.
    pub fn next_frame_into(
        &mut self,
        out: &mut [u8],
        out_w: u32,
        out_h: u32,
    ) -> Result<u32, CaptureError> {
        let (data, meta) = self
            .stream
            .next()
            .map_err(|e| device_err(&self.path, format!("capture failed: {e}")))?;
        let used = (meta.bytesused as usize).min(data.len());
        let data = if used > 0 { &data[..used] } else { data };
        let f = &self.format;
        let frame_err = |source| CaptureError::Frame {
            path: self.path.clone(),
            source,
        };
        match f.fourcc.as_str() {
            "YUYV" => {
                yuyv_to_rgb(data, f.width, f.height, f.stride, &mut self.rgb).map_err(frame_err)?
            }
            "RGB3" => {
                rgb24_to_rgb(data, f.width, f.height, f.stride, &mut self.rgb).map_err(frame_err)?
            }
            _ => decode_mjpeg(data, f.width, f.height, &mut self.rgb).map_err(|problem| {
                CaptureError::Mjpeg {
                    path: self.path.clone(),
                    problem,
                }
            })?,
        }
        crop_scale_rgb(&self.rgb, f.width, f.height, out, out_w, out_h);
        Ok(meta.sequence)
    }
}

/// Decodes one MJPEG frame into `out` (the decoder allocates its own working memory).
fn decode_mjpeg(data: &[u8], width: u32, height: u32, out: &mut [u8]) -> Result<(), String> {
    let decoder =
        image::codecs::jpeg::JpegDecoder::new(Cursor::new(data)).map_err(|e| e.to_string())?;
    let (w, h) = decoder.dimensions();
    if (w, h) != (width, height) || decoder.color_type() != image::ColorType::Rgb8 {
        return Err(format!(
            "frame is {w}x{h} {:?}, expected {width}x{height} RGB",
            decoder.color_type()
        ));
    }
    decoder
        .read_image(&mut out[..(w * h * 3) as usize])
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mjpeg_frames_decode_into_the_reused_buffer() {
        let img = image::RgbImage::from_fn(16, 8, |x, _| image::Rgb([(x * 16) as u8, 128, 64]));
        let mut jpeg = Vec::new();
        img.write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
            .unwrap();
        let mut out = vec![0u8; 16 * 8 * 3];
        decode_mjpeg(&jpeg, 16, 8, &mut out).unwrap();
        // Lossy: close to the source colours, not equal.
        let diff = out
            .iter()
            .zip(img.as_raw())
            .map(|(a, b)| (i32::from(*a) - i32::from(*b)).abs())
            .max();
        assert!(diff.unwrap() < 24, "{diff:?}");
        let e = decode_mjpeg(&jpeg, 32, 8, &mut vec![0u8; 32 * 8 * 3]).unwrap_err();
        assert!(e.contains("16x8") && e.contains("32x8"), "{e}");
        assert!(decode_mjpeg(&jpeg[..40], 16, 8, &mut out).is_err());
    }
}
