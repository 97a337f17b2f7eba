//! The Linux framebuffer (`/dev/fbN`): geometry and pixel layout are read from the device
//! (`FBIOGET_VSCREENINFO` / `FBIOGET_FSCREENINFO`), never assumed. 16-bit RGB565, 24-bit
//! and 32-bit XRGB8888 (or their BGR orders) are written.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::{DisplayError, DisplaySink, Screen};
use crate::pixel_format::{ChannelField, PackedLayout};

const FBIOGET_VSCREENINFO: libc::c_ulong = 0x4600;
const FBIOGET_FSCREENINFO: libc::c_ulong = 0x4602;

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct FbBitfield {
    offset: u32,
    length: u32,
    msb_right: u32,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct FbVarScreeninfo {
    xres: u32,
    yres: u32,
    xres_virtual: u32,
    yres_virtual: u32,
    xoffset: u32,
    yoffset: u32,
    bits_per_pixel: u32,
    grayscale: u32,
    red: FbBitfield,
    green: FbBitfield,
    blue: FbBitfield,
    transp: FbBitfield,
    nonstd: u32,
    activate: u32,
    height: u32,
    width: u32,
    accel_flags: u32,
    pixclock: u32,
    left_margin: u32,
    right_margin: u32,
    upper_margin: u32,
    lower_margin: u32,
    hsync_len: u32,
    vsync_len: u32,
    sync: u32,
    vmode: u32,
    rotate: u32,
    colorspace: u32,
    reserved: [u32; 4],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct FbFixScreeninfo {
    id: [u8; 16],
    smem_start: libc::c_ulong,
    smem_len: u32,
    type_: u32,
    type_aux: u32,
    visual: u32,
    xpanstep: u16,
    ypanstep: u16,
    ywrapstep: u16,
    line_length: u32,
    mmio_start: libc::c_ulong,
    mmio_len: u32,
    accel: u32,
    capabilities: u16,
    reserved: [u16; 2],
}

/// An open framebuffer and a reused buffer of one whole frame in its pixel layout.
pub struct Framebuffer {
    path: PathBuf,
    file: File,
    name: String,
    width: u32,
    height: u32,
    line_length: usize,
    /// Byte offset of the visible area (panning).
    origin: u64,
    layout: PackedLayout,
    frame: Vec<u8>,
}

impl Framebuffer {
    pub fn open(path: &Path) -> Result<Self, DisplayError> {
        let err = |problem: String| DisplayError::Device {
            path: path.to_path_buf(),
            problem,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| err(format!("cannot open framebuffer: {e}")))?;
        let mut var = FbVarScreeninfo::default();
        // SAFETY: the ioctls fill structs laid out as the kernel's (repr(C), same field types).
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), FBIOGET_VSCREENINFO as _, &mut var) };
        if rc != 0 {
            return Err(err(format!(
                "not a framebuffer (FBIOGET_VSCREENINFO: {})",
                std::io::Error::last_os_error()
            )));
        }
        // SAFETY: as above; zeroed is a valid value of this plain-integer struct.
        let mut fix: FbFixScreeninfo = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), FBIOGET_FSCREENINFO as _, &mut fix) };
        if rc != 0 {
            return Err(err(format!(
                "FBIOGET_FSCREENINFO: {}",
                std::io::Error::last_os_error()
            )));
        }
        let field = |f: FbBitfield| ChannelField {
            offset: f.offset,
            length: f.length,
        };
        let layout = PackedLayout {
            bits_per_pixel: var.bits_per_pixel,
            red: field(var.red),
            green: field(var.green),
            blue: field(var.blue),
        };
        if !layout.is_supported() || var.grayscale != 0 {
            return Err(err(format!(
                "unsupported pixel format: {} bits per pixel, red {}+{}, green {}+{}, blue {}+{} \
                 (supported: 16-bit RGB565, 24-bit, 32-bit XRGB8888 and their BGR orders)",
                var.bits_per_pixel,
                var.red.offset,
                var.red.length,
                var.green.offset,
                var.green.length,
                var.blue.offset,
                var.blue.length
            )));
        }
        let line_length = fix.line_length as usize;
        if var.xres == 0
            || var.yres == 0
            || line_length < var.xres as usize * layout.bytes_per_pixel()
        {
            return Err(err(format!(
                "implausible geometry {}x{} with {} bytes per line",
                var.xres, var.yres, line_length
            )));
        }
        let name_len = fix.id.iter().position(|&b| b == 0).unwrap_or(16);
        let origin = u64::from(var.yoffset) * line_length as u64
            + u64::from(var.xoffset) * layout.bytes_per_pixel() as u64;
        Ok(Self {
            path: path.to_path_buf(),
            file,
            name: String::from_utf8_lossy(&fix.id[..name_len]).into_owned(),
            width: var.xres,
            height: var.yres,
            line_length,
            origin,
            layout,
            frame: vec![0; line_length * var.yres as usize],
        })
    }

    pub fn layout(&self) -> PackedLayout {
        self.layout
    }
}

impl DisplaySink for Framebuffer {
    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn present(&mut self, screen: &Screen) -> Result<(), DisplayError> {
        let w = self.width.min(screen.width()) as usize;
        let rows = self.height.min(screen.height()) as usize;
        let bpp = self.layout.bytes_per_pixel();
        for y in 0..rows {
            let src = &screen.rgb()[y * screen.width() as usize * 3..][..w * 3];
            let dst = &mut self.frame[y * self.line_length..][..w * bpp];
            self.layout.pack_row(src, dst);
        }
        self.file
            .write_all_at(&self.frame, self.origin)
            .map_err(|e| DisplayError::Device {
                path: self.path.clone(),
                problem: format!("write failed: {e}"),
            })
    }

    fn describe(&self) -> String {
        format!(
            "framebuffer {} \"{}\" {}x{} {} bpp (R{}+{} G{}+{} B{}+{})",
            self.path.display(),
            self.name,
            self.width,
            self.height,
            self.layout.bits_per_pixel,
            self.layout.red.offset,
            self.layout.red.length,
            self.layout.green.offset,
            self.layout.green.length,
            self.layout.blue.offset,
            self.layout.blue.length
        )
    }

    fn shown_rgb(&self, screen: &Screen, out: &mut Vec<u8>) {
        out.clear();
        for px in screen.rgb().chunks_exact(3) {
            out.extend_from_slice(&self.layout.unpack(self.layout.pack([px[0], px[1], px[2]])));
        }
    }
}
