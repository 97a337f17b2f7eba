//! Drawing what the device shows: a [`Screen`] (an RGB888 back buffer that
//! `embedded-graphics` draws on) composed from the live overlay and a status line, then
//! presented on a sink — a Linux framebuffer, an SPI TFT panel, or a PNG file.

use std::convert::Infallible;
use std::path::PathBuf;

use embedded_graphics::mono_font::ascii::{FONT_10X20, FONT_6X10};
use embedded_graphics::mono_font::MonoTextStyle;
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Baseline, Text};
use sha2::{Digest, Sha256};
use thiserror::Error;

#[cfg(target_os = "linux")]
pub mod framebuffer;
pub mod png_sink;
#[cfg(target_os = "linux")]
pub mod spi_tft;

#[derive(Debug, Error)]
pub enum DisplayError {
    #[error("{path}: {problem}")]
    Device { path: PathBuf, problem: String },
    #[error("{what}: {problem}")]
    Io { what: String, problem: String },
}

/// Something that shows a finished [`Screen`].
pub trait DisplaySink {
    /// Pixel size the screen must be composed at.
    fn size(&self) -> (u32, u32);
    fn present(&mut self, screen: &Screen) -> Result<(), DisplayError>;
    /// One line for logs and `vessel info`.
    fn describe(&self) -> String;
    /// What a viewer of this sink sees for `screen`, as RGB888 (lossy sinks round colours):
    /// the test compares it with the picture read back from the device.
    fn shown_rgb(&self, screen: &Screen, out: &mut Vec<u8>) {
        out.clear();
        out.extend_from_slice(screen.rgb());
    }
}

/// The composition buffer: tightly packed RGB888, allocated once.
pub struct Screen {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

pub const BACKGROUND: Rgb888 = Rgb888::new(0, 0, 0);
pub const STATUS_TEXT: Rgb888 = Rgb888::new(255, 255, 255);
pub const ALERT_TEXT: Rgb888 = Rgb888::new(255, 80, 64);

impl Screen {
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            rgb: vec![0; width as usize * height as usize * 3],
        }
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    pub fn rgb(&self) -> &[u8] {
        &self.rgb
    }

    /// SHA-256 of the RGB888 content (what the screen should show).
    pub fn sha256(&self) -> String {
        hex_sha256(&self.rgb)
    }

    /// Height of the status band at the bottom (one line of text).
    pub fn status_band(&self) -> u32 {
        let (_, h) = status_font(self.width);
        (h + 4).min(self.height / 4)
    }

    /// Draws `image` (RGB888, `w`×`h`) scaled to fit above the status band, centred, with
    /// nearest-neighbour sampling. Everything else is cleared.
    pub fn draw_picture(&mut self, image: &[u8], w: u32, h: u32) {
        self.rgb.fill(0);
        let area_h = self.height - self.status_band();
        if w == 0 || h == 0 || area_h == 0 {
            return;
        }
        // Largest scale that fits, keeping the aspect ratio.
        let (dw, dh) = if u64::from(self.width) * u64::from(h) <= u64::from(area_h) * u64::from(w) {
            (
                self.width,
                (u64::from(self.width) * u64::from(h) / u64::from(w)) as u32,
            )
        } else {
            (
                (u64::from(area_h) * u64::from(w) / u64::from(h)) as u32,
                area_h,
            )
        };
        let (x0, y0) = ((self.width - dw) / 2, (area_h - dh) / 2);
        let stride = self.width as usize * 3;
        for dy in 0..dh {
            let sy = (u64::from(dy) * u64::from(h) / u64::from(dh.max(1))) as usize;
            let row = &image[sy * w as usize * 3..(sy + 1) * w as usize * 3];
            let start = (y0 + dy) as usize * stride + x0 as usize * 3;
            let dst = &mut self.rgb[start..start + dw as usize * 3];
            for dx in 0..dw as usize {
                let sx = (dx as u64 * u64::from(w) / u64::from(dw)) as usize;
                dst[dx * 3..dx * 3 + 3].copy_from_slice(&row[sx * 3..sx * 3 + 3]);
            }
        }
    }

    /// Writes one line of status text into the band at the bottom (cleared first).
    pub fn draw_status(&mut self, text: &str, colour: Rgb888) {
        let band = self.status_band();
        let top = (self.height - band) as i32;
        let _ = Rectangle::new(Point::new(0, top), Size::new(self.width, band))
            .into_styled(PrimitiveStyle::with_fill(BACKGROUND))
            .draw(self);
        let (font, _) = status_font(self.width);
        let style = MonoTextStyle::new(font, colour);
        let _ = Text::with_baseline(text, Point::new(2, top + 2), style, Baseline::Top).draw(self);
    }
}

fn status_font(
    width: u32,
) -> (
    &'static embedded_graphics::mono_font::MonoFont<'static>,
    u32,
) {
    if width >= 480 {
        (&FONT_10X20, 20)
    } else {
        (&FONT_6X10, 10)
    }
}

pub fn hex_sha256(bytes: &[u8]) -> String {
    crate::model_file::to_hex(&Sha256::digest(bytes))
}

impl OriginDimensions for Screen {
    fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

impl DrawTarget for Screen {
    type Color = Rgb888;
    type Error = Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Self::Error>
    where
        I: IntoIterator<Item = Pixel<Self::Color>>,
    {
        for Pixel(p, c) in pixels {
            if p.x >= 0 && p.y >= 0 && (p.x as u32) < self.width && (p.y as u32) < self.height {
                let i = (p.y as usize * self.width as usize + p.x as usize) * 3;
                self.rgb[i..i + 3].copy_from_slice(&[c.r(), c.g(), c.b()]);
            }
        }
        Ok(())
    }
}

/// No screen: frames are processed and saved, nothing is drawn.
pub struct Headless {
    pub reason: String,
}

impl DisplaySink for Headless {
    fn size(&self) -> (u32, u32) {
        (320, 240)
    }
    fn present(&mut self, _screen: &Screen) -> Result<(), DisplayError> {
        Ok(())
    }
    fn describe(&self) -> String {
        format!("none (headless: {})", self.reason)
    }
}

/// Where to draw, as given on the command line or in a board profile.
#[derive(Debug, Clone, PartialEq)]
pub enum DisplayChoice {
    None,
    Framebuffer(PathBuf),
    SpiTft,
    Png {
        path: PathBuf,
        width: u32,
        height: u32,
    },
}

impl DisplayChoice {
    /// `none`, `fb` / `fb:/dev/fbN`, `spi`, `png:PATH` or `png:PATH:WxH`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (kind, rest) = s.split_once(':').unwrap_or((s, ""));
        match kind {
            "none" => Ok(Self::None),
            "fb" | "framebuffer" => Ok(Self::Framebuffer(PathBuf::from(if rest.is_empty() {
                "/dev/fb0"
            } else {
                rest
            }))),
            "spi" | "spi-tft" => Ok(Self::SpiTft),
            "png" if !rest.is_empty() => {
                let (path, size) = match rest.rsplit_once(':') {
                    Some((p, sz)) if sz.contains('x') => (p, Some(sz)),
                    _ => (rest, None),
                };
                let (width, height) = match size {
                    None => (800, 480),
                    Some(sz) => {
                        let (w, h) = sz.split_once('x').unwrap_or((sz, ""));
                        match (w.parse::<u32>(), h.parse::<u32>()) {
                            (Ok(w), Ok(h))
                                if (32..=8192).contains(&w) && (32..=8192).contains(&h) =>
                            {
                                (w, h)
                            }
                            _ => {
                                return Err(format!(
                                    "--display '{s}': size '{sz}' must be WxH, 32 to 8192 each"
                                ))
                            }
                        }
                    }
                };
                Ok(Self::Png {
                    path: PathBuf::from(path),
                    width,
                    height,
                })
            }
            _ => Err(format!(
                "--display '{s}': expected none, fb[:/dev/fbN], spi, or png:PATH[:WxH]"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_choices_parse() {
        assert_eq!(
            DisplayChoice::parse("fb").unwrap(),
            DisplayChoice::Framebuffer("/dev/fb0".into())
        );
        assert_eq!(
            DisplayChoice::parse("fb:/dev/fb1").unwrap(),
            DisplayChoice::Framebuffer("/dev/fb1".into())
        );
        assert_eq!(
            DisplayChoice::parse("png:out/s.png:320x240").unwrap(),
            DisplayChoice::Png {
                path: "out/s.png".into(),
                width: 320,
                height: 240
            }
        );
        assert!(DisplayChoice::parse("hdmi")
            .unwrap_err()
            .contains("expected none"));
        assert!(DisplayChoice::parse("png:a.png:9x9").is_err());
    }

    #[test]
    fn picture_is_fitted_and_centred() {
        let mut s = Screen::new(40, 30);
        let band = s.status_band();
        assert_eq!(band, 7); // 10 px font capped at a quarter of the height
                             // A 2x2 picture of four colours fills a 23x23 square centred in the 40x23 area.
        let img = [255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255];
        s.draw_picture(&img, 2, 2);
        let px = |x: usize, y: usize| &s.rgb()[(y * 40 + x) * 3..(y * 40 + x) * 3 + 3];
        assert_eq!(px(0, 0), &[0, 0, 0]);
        assert_eq!(px(8, 0), &[255, 0, 0]);
        assert_eq!(px(30, 0), &[0, 255, 0]);
        assert_eq!(px(8, 22), &[0, 0, 255]);
        assert_eq!(px(30, 22), &[255, 255, 255]);
        assert_eq!(px(32, 10), &[0, 0, 0]);
    }
}
