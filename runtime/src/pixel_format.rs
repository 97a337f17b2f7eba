//! Pixel-format conversions between what cameras deliver, what the model sees (RGB888) and
//! what displays take (RGB565, XRGB8888 and other packed layouts read from the device).
//!
//! All functions write into caller-owned buffers: the live path allocates nothing per frame.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PixelFormatError {
    #[error(
        "{format} frame of {width}x{height} (stride {stride}) needs {needed} bytes, got {got}"
    )]
    ShortFrame {
        format: &'static str,
        width: u32,
        height: u32,
        stride: usize,
        needed: usize,
        got: usize,
    },
    #[error("output buffer holds {got} bytes, {needed} needed")]
    ShortOutput { needed: usize, got: usize },
}

fn clamp_u8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

/// One BT.601 limited-range YCbCr sample to RGB (what YUYV webcams and `vivid` produce).
/// Fixed-point with 8 fractional bits: identical on every architecture.
pub fn ycbcr_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    let c = 298 * (i32::from(y) - 16);
    let d = i32::from(cb) - 128;
    let e = i32::from(cr) - 128;
    [
        clamp_u8((c + 409 * e + 128) >> 8),
        clamp_u8((c - 100 * d - 208 * e + 128) >> 8),
        clamp_u8((c + 516 * d + 128) >> 8),
    ]
}

fn check_frame(
    format: &'static str,
    data: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    bytes_per_pixel: usize,
) -> Result<(), PixelFormatError> {
    let row = width as usize * bytes_per_pixel;
    let needed = if height == 0 {
        0
    } else {
        stride.max(row) * (height as usize - 1) + row
    };
    if data.len() < needed || stride < row {
        return Err(PixelFormatError::ShortFrame {
            format,
            width,
            height,
            stride,
            needed,
            got: data.len(),
        });
    }
    Ok(())
}

fn check_output(out: &[u8], width: u32, height: u32) -> Result<(), PixelFormatError> {
    let needed = width as usize * height as usize * 3;
    if out.len() < needed {
        return Err(PixelFormatError::ShortOutput {
            needed,
            got: out.len(),
        });
    }
    Ok(())
}

/// Packed YUYV 4:2:2 (Y0 Cb Y1 Cr per two pixels) to RGB888.
pub fn yuyv_to_rgb(
    data: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    out: &mut [u8],
) -> Result<(), PixelFormatError> {
    check_frame("YUYV", data, width, height, stride, 2)?;
    check_output(out, width, height)?;
    let w = width as usize;
    for y in 0..height as usize {
        let src = &data[y * stride..y * stride + w * 2];
        let dst = &mut out[y * w * 3..(y + 1) * w * 3];
        for (x, pair) in src.chunks_exact(4).enumerate() {
            let (y0, cb, y1, cr) = (pair[0], pair[1], pair[2], pair[3]);
            dst[x * 6..x * 6 + 3].copy_from_slice(&ycbcr_to_rgb(y0, cb, cr));
            dst[x * 6 + 3..x * 6 + 6].copy_from_slice(&ycbcr_to_rgb(y1, cb, cr));
        }
        if w % 2 == 1 {
            // An odd last pixel shares the chroma of the pair it would have started.
            let i = (w - 1) * 2;
            let (y0, cb, cr) = (
                src[i],
                src[i + 1],
                data.get(y * stride + i + 3).copied().unwrap_or(128),
            );
            dst[(w - 1) * 3..w * 3].copy_from_slice(&ycbcr_to_rgb(y0, cb, cr));
        }
    }
    Ok(())
}

/// Packed RGB888 rows with a stride (V4L2 `RGB3`) to tightly packed RGB888.
pub fn rgb24_to_rgb(
    data: &[u8],
    width: u32,
    height: u32,
    stride: usize,
    out: &mut [u8],
) -> Result<(), PixelFormatError> {
    check_frame("RGB3", data, width, height, stride, 3)?;
    check_output(out, width, height)?;
    let row = width as usize * 3;
    for y in 0..height as usize {
        out[y * row..(y + 1) * row].copy_from_slice(&data[y * stride..y * stride + row]);
    }
    Ok(())
}

/// RGB888 to RGB565 (5 bits red, 6 green, 5 blue; red in the high bits).
pub fn rgb_to_rgb565([r, g, b]: [u8; 3]) -> u16 {
    (u16::from(r >> 3) << 11) | (u16::from(g >> 2) << 5) | u16::from(b >> 3)
}

/// RGB565 back to RGB888, replicating the high bits into the low ones (so white stays 255).
pub fn rgb565_to_rgb(v: u16) -> [u8; 3] {
    let r = ((v >> 11) & 0x1f) as u8;
    let g = ((v >> 5) & 0x3f) as u8;
    let b = (v & 0x1f) as u8;
    [
        (r << 3) | (r >> 2),
        (g << 2) | (g >> 4),
        (b << 3) | (b >> 2),
    ]
}

/// RGB888 to XRGB8888 (the unused top byte left 0).
pub fn rgb_to_xrgb8888([r, g, b]: [u8; 3]) -> u32 {
    (u32::from(r) << 16) | (u32::from(g) << 8) | u32::from(b)
}

/// One colour channel's place in a packed pixel (a Linux framebuffer `fb_bitfield`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelField {
    pub offset: u32,
    pub length: u32,
}

/// A packed pixel layout, as a framebuffer reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackedLayout {
    pub bits_per_pixel: u32,
    pub red: ChannelField,
    pub green: ChannelField,
    pub blue: ChannelField,
}

impl PackedLayout {
    pub const RGB565: PackedLayout = PackedLayout {
        bits_per_pixel: 16,
        red: ChannelField {
            offset: 11,
            length: 5,
        },
        green: ChannelField {
            offset: 5,
            length: 6,
        },
        blue: ChannelField {
            offset: 0,
            length: 5,
        },
    };
    pub const XRGB8888: PackedLayout = PackedLayout {
        bits_per_pixel: 32,
        red: ChannelField {
            offset: 16,
            length: 8,
        },
        green: ChannelField {
            offset: 8,
            length: 8,
        },
        blue: ChannelField {
            offset: 0,
            length: 8,
        },
    };

    pub fn bytes_per_pixel(&self) -> usize {
        self.bits_per_pixel as usize / 8
    }

    /// Whether this layout can be written: 16, 24 or 32 bits, channels of 1–8 bits inside it.
    pub fn is_supported(&self) -> bool {
        matches!(self.bits_per_pixel, 16 | 24 | 32)
            && [self.red, self.green, self.blue]
                .iter()
                .all(|c| (1..=8).contains(&c.length) && c.offset + c.length <= self.bits_per_pixel)
    }

    /// Packs one RGB888 pixel (keeps each channel's high bits).
    pub fn pack(&self, [r, g, b]: [u8; 3]) -> u32 {
        let put = |v: u8, f: ChannelField| (u32::from(v) >> (8 - f.length)) << f.offset;
        put(r, self.red) | put(g, self.green) | put(b, self.blue)
    }

    /// Unpacks one pixel to RGB888 (replicating high bits into the low ones).
    pub fn unpack(&self, v: u32) -> [u8; 3] {
        let get = |f: ChannelField| {
            let x = (v >> f.offset) & ((1 << f.length) - 1);
            let mut out = x << (8 - f.length);
            let mut filled = f.length;
            while filled < 8 {
                out |= out >> filled;
                filled *= 2;
            }
            out as u8
        };
        [get(self.red), get(self.green), get(self.blue)]
    }

    /// Writes RGB888 pixels into little-endian packed pixels (`out` holds
    /// `rgb.len() / 3 * bytes_per_pixel()` bytes).
    pub fn pack_row(&self, rgb: &[u8], out: &mut [u8]) {
        let bpp = self.bytes_per_pixel();
        for (px, dst) in rgb.chunks_exact(3).zip(out.chunks_exact_mut(bpp)) {
            let v = self.pack([px[0], px[1], px[2]]).to_le_bytes();
            dst.copy_from_slice(&v[..bpp]);
        }
    }
}

/// Centre-crops the largest square-of-the-target-aspect region of an RGB888 frame and scales
/// it (nearest neighbour, fixed point) into `out` (`out_w × out_h × 3`): how a camera frame is
/// fitted to the model's input without distorting the fundus disc.
pub fn crop_scale_rgb(src: &[u8], src_w: u32, src_h: u32, out: &mut [u8], out_w: u32, out_h: u32) {
    // Largest centred window of the output's aspect ratio.
    let (sw, sh) = (u64::from(src_w), u64::from(src_h));
    let (ow, oh) = (u64::from(out_w), u64::from(out_h));
    let (win_w, win_h) = if sw * oh > sh * ow {
        (sh * ow / oh, sh)
    } else {
        (sw, sw * oh / ow)
    };
    let (x0, y0) = ((sw - win_w) / 2, (sh - win_h) / 2);
    for oy in 0..oh {
        let sy = (y0 + (oy * win_h + win_h / 2) / oh).min(sh - 1) as usize;
        let row = &src[sy * src_w as usize * 3..(sy + 1) * src_w as usize * 3];
        let dst =
            &mut out[oy as usize * out_w as usize * 3..(oy as usize + 1) * out_w as usize * 3];
        for ox in 0..ow {
            let sx = (x0 + (ox * win_w + win_w / 2) / ow).min(sw - 1) as usize;
            dst[ox as usize * 3..ox as usize * 3 + 3].copy_from_slice(&row[sx * 3..sx * 3 + 3]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bt601_reference_colours() {
        // Limited-range black, white and full-intensity colour bars (BT.601 values).
        assert_eq!(ycbcr_to_rgb(16, 128, 128), [0, 0, 0]);
        assert_eq!(ycbcr_to_rgb(235, 128, 128), [255, 255, 255]);
        assert_eq!(ycbcr_to_rgb(81, 90, 240), [255, 0, 0]);
        assert_eq!(ycbcr_to_rgb(145, 54, 34), [0, 255, 1]); // 0.83 in floating point
        assert_eq!(ycbcr_to_rgb(41, 240, 110), [0, 0, 255]);
        assert_eq!(ycbcr_to_rgb(126, 128, 128), [128, 128, 128]);
    }

    #[test]
    fn yuyv_frame_with_stride() {
        // 2x2 pixels, stride 6 (2 bytes of padding per row).
        let data = [
            235, 128, 16, 128, 9, 9, //
            81, 90, 81, 240, 9, 9,
        ];
        let mut out = [0u8; 12];
        yuyv_to_rgb(&data, 2, 2, 6, &mut out).unwrap();
        assert_eq!(&out[0..6], &[255, 255, 255, 0, 0, 0]);
        assert_eq!(&out[6..12], &[255, 0, 0, 255, 0, 0]);
    }

    #[test]
    fn short_frames_are_errors_not_panics() {
        let mut out = [0u8; 12];
        let err = yuyv_to_rgb(&[0; 7], 2, 2, 4, &mut out).unwrap_err();
        assert!(matches!(
            err,
            PixelFormatError::ShortFrame {
                needed: 8,
                got: 7,
                ..
            }
        ));
        let err = rgb24_to_rgb(&[0; 12], 2, 2, 6, &mut [0; 4]).unwrap_err();
        assert!(matches!(
            err,
            PixelFormatError::ShortOutput { needed: 12, got: 4 }
        ));
    }

    #[test]
    fn rgb565_known_values() {
        assert_eq!(rgb_to_rgb565([255, 0, 0]), 0xF800);
        assert_eq!(rgb_to_rgb565([0, 255, 0]), 0x07E0);
        assert_eq!(rgb_to_rgb565([0, 0, 255]), 0x001F);
        assert_eq!(rgb_to_rgb565([255, 255, 255]), 0xFFFF);
        assert_eq!(rgb_to_rgb565([0x12, 0x34, 0x56]), 0x11AA);
        assert_eq!(rgb565_to_rgb(0xFFFF), [255, 255, 255]);
        assert_eq!(rgb565_to_rgb(0x11AA), [0x10, 0x34, 0x52]);
        assert_eq!(PackedLayout::RGB565.pack([0x12, 0x34, 0x56]), 0x11AA);
        assert_eq!(PackedLayout::RGB565.unpack(0x11AA), [0x10, 0x34, 0x52]);
    }

    #[test]
    fn xrgb8888_known_values() {
        assert_eq!(rgb_to_xrgb8888([0x12, 0x34, 0x56]), 0x0012_3456);
        let l = PackedLayout::XRGB8888;
        assert_eq!(l.pack([0x12, 0x34, 0x56]), 0x0012_3456);
        assert_eq!(l.unpack(0xFF12_3456), [0x12, 0x34, 0x56]);
        let mut out = [0u8; 8];
        l.pack_row(&[1, 2, 3, 4, 5, 6], &mut out);
        assert_eq!(out, [3, 2, 1, 0, 6, 5, 4, 0]); // B G R X in memory (little-endian)
                                                   // BGR-ordered 32-bit framebuffers exist too: the layout follows the device's fields.
        let bgr = PackedLayout {
            red: ChannelField {
                offset: 0,
                length: 8,
            },
            blue: ChannelField {
                offset: 16,
                length: 8,
            },
            ..l
        };
        assert_eq!(bgr.pack([0x12, 0x34, 0x56]), 0x0056_3412);
        assert!(bgr.is_supported());
        assert!(!PackedLayout {
            bits_per_pixel: 8,
            ..l
        }
        .is_supported());
    }

    #[test]
    fn centre_crop_keeps_the_middle() {
        // 4x2 source, columns coloured by x: a 2x2 output takes the middle two columns.
        let mut src = Vec::new();
        for _y in 0..2 {
            for x in 0..4u8 {
                src.extend_from_slice(&[x, x, x]);
            }
        }
        let mut out = [0u8; 12];
        crop_scale_rgb(&src, 4, 2, &mut out, 2, 2);
        assert_eq!(out, [1, 1, 1, 2, 2, 2, 1, 1, 1, 2, 2, 2]);
    }
}
