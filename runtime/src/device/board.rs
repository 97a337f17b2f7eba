//! Board profiles (`boards/*.toml`): what a device has and how the program should use it.
//! Validated at start; every error names the file, the key and what is allowed.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::model_file::Precision;

#[derive(Debug, Error)]
pub enum BoardError {
    #[error("{path}: cannot read board profile: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: key `{key}`: {problem}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        problem: String,
    },
    #[error("no board profile named '{name}' in {dir} (available: {available})")]
    Unknown {
        name: String,
        dir: PathBuf,
        available: String,
    },
}

/// Pixel formats a profile may ask the camera for (`auto` picks the first the camera offers
/// in the order YUYV, MJPG, RGB3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum CameraFormat {
    #[serde(rename = "auto")]
    Auto,
    #[serde(rename = "YUYV")]
    Yuyv,
    #[serde(rename = "MJPG")]
    Mjpg,
    #[serde(rename = "RGB3")]
    Rgb3,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraProfile {
    pub device: PathBuf,
    pub format: CameraFormat,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelProfile {
    /// Model file; relative paths are from the working directory.
    pub path: PathBuf,
    pub precision: Precision,
    /// Square network input side (multiple of 8).
    pub input: u32,
    pub threads: usize,
    pub memory_budget_mb: f64,
    /// Give freed activations back at once, no frame arena (`vessel --low-memory`): RSS
    /// follows live memory between frames too, for more time a frame (page faults; figures
    /// in docs/performance.md).
    #[serde(default)]
    pub low_memory: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DisplayKind {
    None,
    Framebuffer,
    SpiTft,
    Png,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TftController {
    St7789,
    Ili9341,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DisplayProfile {
    pub kind: DisplayKind,
    /// Framebuffer device (`framebuffer`) or output file (`png`).
    pub device: Option<PathBuf>,
    /// Panel geometry (`spi-tft`, `png`); a framebuffer reports its own.
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub controller: Option<TftController>,
    pub spi_bus: Option<u8>,
    pub spi_chip_select: Option<u8>,
    pub spi_hz: Option<u32>,
    pub dc_pin: Option<u8>,
    pub reset_pin: Option<u8>,
    pub backlight_pin: Option<u8>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinsProfile {
    /// BCM number of the shutter button (pulled up; pressed = low).
    pub shutter: Option<u8>,
    /// BCM number of the status LED.
    pub led: Option<u8>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoardProfile {
    pub name: String,
    pub camera: CameraProfile,
    pub model: ModelProfile,
    pub display: DisplayProfile,
    #[serde(default)]
    pub pins: PinsProfile,
    /// Where this profile came from (not in the file).
    #[serde(skip)]
    pub source: PathBuf,
}

impl BoardProfile {
    /// Reads and validates a profile file.
    pub fn load(path: &Path) -> Result<Self, BoardError> {
        let text = std::fs::read_to_string(path).map_err(|source| BoardError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Finds `NAME` as `DIR/NAME.toml`, or loads `NAME` itself when it is a path.
    pub fn find(name: &str, dir: &Path) -> Result<Self, BoardError> {
        let as_path = Path::new(name);
        if as_path.extension().is_some_and(|e| e == "toml") || as_path.components().count() > 1 {
            return Self::load(as_path);
        }
        let path = dir.join(format!("{name}.toml"));
        if path.exists() {
            return Self::load(&path);
        }
        Err(BoardError::Unknown {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            available: available_profiles(dir).join(", "),
        })
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, BoardError> {
        let mut profile: BoardProfile = toml::from_str(text).map_err(|e| BoardError::Parse {
            path: path.to_path_buf(),
            // toml's message names the key, its line and the allowed values.
            message: e.to_string().trim_end().replace('\n', "\n  "),
        })?;
        profile.source = path.to_path_buf();
        profile.validate()?;
        Ok(profile)
    }

    fn invalid(&self, key: &'static str, problem: impl Into<String>) -> BoardError {
        BoardError::Invalid {
            path: self.source.clone(),
            key,
            problem: problem.into(),
        }
    }

    fn validate(&self) -> Result<(), BoardError> {
        let m = &self.model;
        if m.input == 0 || !m.input.is_multiple_of(8) || m.input > 4096 {
            return Err(self.invalid(
                "model.input",
                format!("{} is not allowed: a multiple of 8 from 8 to 4096", m.input),
            ));
        }
        if !(1..=64).contains(&m.threads) {
            return Err(self.invalid(
                "model.threads",
                format!("{} is not allowed: 1 to 64", m.threads),
            ));
        }
        if !(m.memory_budget_mb.is_finite() && m.memory_budget_mb >= 16.0) {
            return Err(self.invalid(
                "model.memory_budget_mb",
                format!("{} is not allowed: at least 16 (MB)", m.memory_budget_mb),
            ));
        }
        let c = &self.camera;
        if !(16..=8192).contains(&c.width) || !(16..=8192).contains(&c.height) {
            return Err(self.invalid(
                "camera.width/height",
                format!("{}x{} is not allowed: 16 to 8192 each", c.width, c.height),
            ));
        }
        let d = &self.display;
        match d.kind {
            DisplayKind::SpiTft => {
                for (key, missing) in [
                    ("display.controller", d.controller.is_none()),
                    ("display.width", d.width.is_none()),
                    ("display.height", d.height.is_none()),
                    ("display.dc_pin", d.dc_pin.is_none()),
                ] {
                    if missing {
                        return Err(self.invalid(key, "required when display.kind = \"spi-tft\""));
                    }
                }
                if let Some(bus) = d.spi_bus {
                    if bus > 6 {
                        return Err(self
                            .invalid("display.spi_bus", format!("{bus} is not allowed: 0 to 6")));
                    }
                }
                if let Some(cs) = d.spi_chip_select {
                    if cs > 2 {
                        return Err(self.invalid(
                            "display.spi_chip_select",
                            format!("{cs} is not allowed: 0 to 2"),
                        ));
                    }
                }
            }
            DisplayKind::Png if d.device.is_none() => {
                return Err(self.invalid(
                    "display.device",
                    "required when display.kind = \"png\" (the PNG file to write)",
                ));
            }
            _ => {}
        }
        for (key, side) in [("display.width", d.width), ("display.height", d.height)] {
            if let Some(s) = side {
                if !(32..=8192).contains(&s) {
                    return Err(self.invalid(key, format!("{s} is not allowed: 32 to 8192")));
                }
            }
        }
        for (key, pin) in [
            ("pins.shutter", self.pins.shutter),
            ("pins.led", self.pins.led),
            ("display.dc_pin", d.dc_pin),
            ("display.reset_pin", d.reset_pin),
            ("display.backlight_pin", d.backlight_pin),
        ] {
            if let Some(p) = pin {
                if p > 27 {
                    return Err(self.invalid(
                        key,
                        format!("{p} is not allowed: a BCM GPIO number 0 to 27"),
                    ));
                }
            }
        }
        let pins: Vec<u8> = [
            self.pins.shutter,
            self.pins.led,
            d.dc_pin,
            d.reset_pin,
            d.backlight_pin,
        ]
        .into_iter()
        .flatten()
        .collect();
        for (i, p) in pins.iter().enumerate() {
            if pins[..i].contains(p) {
                return Err(self.invalid("pins", format!("GPIO {p} is used twice")));
            }
        }
        Ok(())
    }
}

/// Profile names (file stems) in `dir`, sorted.
pub fn available_profiles(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let p = e.path();
            (p.extension()? == "toml").then(|| p.file_stem()?.to_str().map(str::to_string))?
        })
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "test board"
[camera]
device = "/dev/video0"
format = "YUYV"
width = 640
height = 480
[model]
path = "models/drive-int8.nnef.tgz"
precision = "int8"
input = 592
threads = 4
memory_budget_mb = 256
[display]
kind = "framebuffer"
device = "/dev/fb0"
[pins]
shutter = 17
led = 27
"#;

    fn parse(text: &str) -> Result<BoardProfile, BoardError> {
        BoardProfile::parse(text, Path::new("boards/test.toml"))
    }

    #[test]
    fn a_good_profile_loads() {
        let p = parse(GOOD).unwrap();
        assert_eq!(p.model.precision, Precision::Int8);
        assert_eq!(p.camera.format, CameraFormat::Yuyv);
        assert_eq!(p.display.kind, DisplayKind::Framebuffer);
        assert_eq!(p.pins.shutter, Some(17));
    }

    #[test]
    fn errors_name_file_key_and_allowed_values() {
        let e = parse(&GOOD.replace("\"YUYV\"", "\"H264\""))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("boards/test.toml"), "{e}");
        assert!(
            e.contains("H264") && e.contains("YUYV") && e.contains("MJPG"),
            "{e}"
        );
        assert!(e.contains("format"), "{e}");

        let e = parse(&GOOD.replace("input = 592", "input = 590"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`model.input`") && e.contains("multiple of 8"),
            "{e}"
        );

        let e = parse(&GOOD.replace("precision = \"int8\"", "precision = \"fp16\""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("fp16") && e.contains("int8") && e.contains("f32"),
            "{e}"
        );

        let e = parse(&GOOD.replace("led = 27", "led = 17"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("GPIO 17 is used twice"), "{e}");

        let e = parse(&GOOD.replace("kind = \"framebuffer\"", "kind = \"spi-tft\""))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`display.controller`") && e.contains("spi-tft"),
            "{e}"
        );

        let e = parse(&GOOD.replace("threads = 4", "threads = 4\ncores = 2"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cores"), "{e}");

        let e = parse(&GOOD.replace("[pins]\nshutter = 17", "[pins]\nshutter = 40"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`pins.shutter`") && e.contains("0 to 27"), "{e}");
    }

    #[test]
    fn shipped_profiles_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../boards");
        let names = available_profiles(&dir);
        for want in ["pi4", "pi5", "pi-zero-2w", "generic-arm64", "x86-dev"] {
            assert!(
                names.iter().any(|n| n == want),
                "boards/{want}.toml missing: {names:?}"
            );
        }
        for name in names {
            BoardProfile::find(&name, &dir).unwrap_or_else(|e| panic!("{e}"));
        }
        let e = BoardProfile::find("pi3", &dir).unwrap_err().to_string();
        assert!(e.contains("pi3") && e.contains("pi4"), "{e}");
    }
}
