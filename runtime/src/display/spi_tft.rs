//! SPI TFT panels on a Raspberry Pi (ST7789 / ILI9341 class) through `rppal`: the screen is
//! converted to big-endian RGB565 in a reused buffer and streamed to the panel's RAM.

use std::thread::sleep;
use std::time::Duration;

use rppal::gpio::{Gpio, OutputPin};
use rppal::spi::{Bus, Mode, SlaveSelect, Spi};

use super::{DisplayError, DisplaySink, Screen};
use crate::device::board::{DisplayProfile, TftController};
use crate::pixel_format::{rgb565_to_rgb, rgb_to_rgb565};

// MIPI DCS commands shared by both controllers.
const SWRESET: u8 = 0x01;
const SLPOUT: u8 = 0x11;
const INVON: u8 = 0x21;
const DISPON: u8 = 0x29;
const CASET: u8 = 0x2A;
const RASET: u8 = 0x2B;
const RAMWR: u8 = 0x2C;
const MADCTL: u8 = 0x36;
const COLMOD: u8 = 0x3A;
/// spidev's default transfer limit.
const SPI_CHUNK: usize = 4096;

pub struct SpiTft {
    spi: Spi,
    dc: OutputPin,
    _reset: Option<OutputPin>,
    _backlight: Option<OutputPin>,
    controller: TftController,
    width: u32,
    height: u32,
    frame: Vec<u8>,
}

fn device_err(what: &str, e: impl std::fmt::Display) -> DisplayError {
    DisplayError::Io {
        what: format!("SPI TFT {what}"),
        problem: e.to_string(),
    }
}

impl SpiTft {
    /// Opens the panel described by a board profile (validated: controller, size, dc pin).
    pub fn open(p: &DisplayProfile) -> Result<Self, DisplayError> {
        let missing = |key: &str| device_err(key, "missing from the board profile");
        let controller = p.controller.ok_or_else(|| missing("display.controller"))?;
        let (width, height) = (
            p.width.ok_or_else(|| missing("display.width"))?,
            p.height.ok_or_else(|| missing("display.height"))?,
        );
        let bus = match p.spi_bus.unwrap_or(0) {
            0 => Bus::Spi0,
            1 => Bus::Spi1,
            2 => Bus::Spi2,
            3 => Bus::Spi3,
            4 => Bus::Spi4,
            5 => Bus::Spi5,
            _ => Bus::Spi6,
        };
        let cs = match p.spi_chip_select.unwrap_or(0) {
            0 => SlaveSelect::Ss0,
            1 => SlaveSelect::Ss1,
            _ => SlaveSelect::Ss2,
        };
        let spi = Spi::new(bus, cs, p.spi_hz.unwrap_or(32_000_000), Mode::Mode0).map_err(|e| {
            device_err(
                &format!("spidev {bus} CS{}", p.spi_chip_select.unwrap_or(0)),
                e,
            )
        })?;
        let gpio = Gpio::new().map_err(|e| device_err("GPIO", e))?;
        let out = |pin: u8| -> Result<OutputPin, DisplayError> {
            Ok(gpio
                .get(pin)
                .map_err(|e| device_err(&format!("GPIO {pin}"), e))?
                .into_output())
        };
        let dc = out(p.dc_pin.ok_or_else(|| missing("display.dc_pin"))?)?;
        let mut reset = p.reset_pin.map(out).transpose()?;
        let backlight = match p.backlight_pin {
            Some(pin) => {
                let mut b = out(pin)?;
                b.set_high();
                Some(b)
            }
            None => None,
        };
        if let Some(r) = reset.as_mut() {
            r.set_low();
            sleep(Duration::from_millis(10));
            r.set_high();
            sleep(Duration::from_millis(120));
        }
        let mut tft = Self {
            spi,
            dc,
            _reset: reset,
            _backlight: backlight,
            controller,
            width,
            height,
            frame: vec![0; width as usize * height as usize * 2],
        };
        tft.init()?;
        Ok(tft)
    }

    fn command(&mut self, cmd: u8, data: &[u8]) -> Result<(), DisplayError> {
        self.dc.set_low();
        self.spi.write(&[cmd]).map_err(|e| device_err("write", e))?;
        if !data.is_empty() {
            self.dc.set_high();
            for chunk in data.chunks(SPI_CHUNK) {
                self.spi.write(chunk).map_err(|e| device_err("write", e))?;
            }
        }
        Ok(())
    }

    fn init(&mut self) -> Result<(), DisplayError> {
        self.command(SWRESET, &[])?;
        sleep(Duration::from_millis(150));
        self.command(SLPOUT, &[])?;
        sleep(Duration::from_millis(120));
        self.command(COLMOD, &[0x55])?; // 16 bits per pixel
                                        // Row/column order: ILI9341 modules are usually wired BGR.
        let madctl = match self.controller {
            TftController::St7789 => 0x00,
            TftController::Ili9341 => 0x08,
        };
        self.command(MADCTL, &[madctl])?;
        if self.controller == TftController::St7789 {
            self.command(INVON, &[])?; // ST7789 panels are built inverted
        }
        self.command(DISPON, &[])?;
        Ok(())
    }
}

impl DisplaySink for SpiTft {
    fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    fn present(&mut self, screen: &Screen) -> Result<(), DisplayError> {
        for (px, out) in screen
            .rgb()
            .chunks_exact(3)
            .zip(self.frame.chunks_exact_mut(2))
        {
            out.copy_from_slice(&rgb_to_rgb565([px[0], px[1], px[2]]).to_be_bytes());
        }
        let (x1, y1) = ((self.width - 1) as u16, (self.height - 1) as u16);
        self.command(CASET, &[0, 0, (x1 >> 8) as u8, x1 as u8])?;
        self.command(RASET, &[0, 0, (y1 >> 8) as u8, y1 as u8])?;
        let frame = std::mem::take(&mut self.frame);
        let result = self.command(RAMWR, &frame);
        self.frame = frame;
        result
    }

    fn describe(&self) -> String {
        format!(
            "SPI TFT {:?} {}x{} RGB565",
            self.controller, self.width, self.height
        )
    }

    fn shown_rgb(&self, screen: &Screen, out: &mut Vec<u8>) {
        out.clear();
        for px in screen.rgb().chunks_exact(3) {
            out.extend_from_slice(&rgb565_to_rgb(rgb_to_rgb565([px[0], px[1], px[2]])));
        }
    }
}
