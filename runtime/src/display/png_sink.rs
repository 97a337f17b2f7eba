//! Headless runs and tests: each presented screen is written to a PNG file (atomically).

use std::path::PathBuf;

use super::{DisplayError, DisplaySink, Screen};

pub struct PngSink {
    path: PathBuf,
    width: u32,
    height: u32,
}

impl PngSink {
    pub fn new(path: PathBuf, width: u32, height: u32) -> Self {
        Self {
            path,
            width,
            height,
        }
    }
}

impl DisplaySink for PngSink {
    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn present(&mut self, screen: &Screen) -> Result<(), DisplayError> {
        let io = |e: std::io::Error| DisplayError::Io {
            what: self.path.display().to_string(),
            problem: e.to_string(),
        };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let img = image::RgbImage::from_raw(screen.width(), screen.height(), screen.rgb().to_vec())
            .expect("screen buffer matches its size");
        crate::atomic_file::save_png_atomic(&self.path, &img).map_err(io)
    }

    fn describe(&self) -> String {
        format!(
            "PNG file {} ({}x{})",
            self.path.display(),
            self.width,
            self.height
        )
    }
}
