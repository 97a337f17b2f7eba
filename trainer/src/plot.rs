//! A PNG of the training curves: losses on the left, validation F1 / MCC / AUC on the right.
//! Drawn directly with `image` (a plotting stack would dwarf the rest of the trainer); the
//! labels use a built-in 3×5 pixel font.

use std::path::Path;

use anyhow::{Context, Result};
use image::{Rgb, RgbImage};

use crate::train::EpochRecord;

const W: u32 = 960;
const H: u32 = 400;
const MARGIN: i64 = 40;
const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const AXIS: Rgb<u8> = Rgb([60, 60, 60]);
const GRID: Rgb<u8> = Rgb([225, 225, 225]);
const BLUE: Rgb<u8> = Rgb([31, 119, 180]);
const ORANGE: Rgb<u8> = Rgb([255, 127, 14]);
const GREEN: Rgb<u8> = Rgb([44, 160, 44]);
const RED: Rgb<u8> = Rgb([214, 39, 40]);
const PURPLE: Rgb<u8> = Rgb([148, 103, 189]);

struct Series<'a> {
    label: &'a str,
    colour: Rgb<u8>,
    values: Vec<f64>,
}

/// Writes the curves of `history` to `path` (atomically).
pub fn training_curves(history: &[EpochRecord], path: &Path) -> Result<()> {
    let mut img = RgbImage::from_pixel(W, H, WHITE);
    let pick = |f: fn(&EpochRecord) -> f64| history.iter().map(f).collect::<Vec<_>>();
    panel(
        &mut img,
        0,
        "LOSS",
        &[
            Series {
                label: "TRAIN",
                colour: BLUE,
                values: pick(|r| r.train_loss),
            },
            Series {
                label: "VAL",
                colour: ORANGE,
                values: pick(|r| r.val_loss),
            },
        ],
    );
    panel(
        &mut img,
        W as i64 / 2,
        "VAL",
        &[
            Series {
                label: "F1",
                colour: GREEN,
                values: pick(|r| r.val_f1),
            },
            Series {
                label: "MCC",
                colour: RED,
                values: pick(|r| r.val_mcc),
            },
            Series {
                label: "AUC",
                colour: PURPLE,
                values: pick(|r| r.val_auc),
            },
        ],
    );
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .context("encoding the training-curves PNG")?;
    crate::checkpoint::write_atomic(path, &png)?;
    Ok(())
}

fn panel(img: &mut RgbImage, x0: i64, title: &str, series: &[Series<'_>]) {
    let (left, right) = (x0 + MARGIN + 20, x0 + W as i64 / 2 - 16);
    let (top, bottom) = (MARGIN, H as i64 - MARGIN);
    let finite = || {
        series
            .iter()
            .flat_map(|s| s.values.iter().copied())
            .filter(|v| v.is_finite())
    };
    let (mut lo, mut hi) = finite().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    if hi - lo < 1e-9 {
        (lo, hi) = (lo - 0.5, hi + 0.5);
    }
    let n = series
        .iter()
        .map(|s| s.values.len())
        .max()
        .unwrap_or(0)
        .max(2);
    let px = |i: usize| left + (right - left) * i as i64 / (n as i64 - 1);
    let py = |v: f64| bottom - ((v - lo) / (hi - lo) * (bottom - top) as f64).round() as i64;
    for k in 0..=4 {
        let v = lo + (hi - lo) * k as f64 / 4.0;
        line(img, left, py(v), right, py(v), GRID);
        text(img, x0 + 4, py(v) - 2, &format!("{v:.3}"), AXIS);
    }
    line(img, left, top, left, bottom, AXIS);
    line(img, left, bottom, right, bottom, AXIS);
    text(img, left, top - 24, title, AXIS);
    text(img, (left + right) / 2 - 20, bottom + 14, "EPOCH", AXIS);
    text(img, left - 2, bottom + 6, "1", AXIS);
    text(img, right - 8, bottom + 6, &n.to_string(), AXIS);
    let mut legend_x = left + 60;
    for s in series {
        for w in s.values.windows(2).enumerate() {
            let (i, pair) = w;
            if pair[0].is_finite() && pair[1].is_finite() {
                line(img, px(i), py(pair[0]), px(i + 1), py(pair[1]), s.colour);
            }
        }
        if s.values.len() == 1 && s.values[0].is_finite() {
            line(
                img,
                px(0) - 2,
                py(s.values[0]),
                px(0) + 2,
                py(s.values[0]),
                s.colour,
            );
        }
        line(img, legend_x, top - 20, legend_x + 12, top - 20, s.colour);
        text(img, legend_x + 16, top - 22, s.label, s.colour);
        legend_x += 16 + 8 * s.label.len() as i64 + 16;
    }
}

fn put(img: &mut RgbImage, x: i64, y: i64, c: Rgb<u8>) {
    if x >= 0 && y >= 0 && x < img.width() as i64 && y < img.height() as i64 {
        img.put_pixel(x as u32, y as u32, c);
    }
}

/// Bresenham line, 2 px thick.
fn line(img: &mut RgbImage, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb<u8>) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let (mut x, mut y, mut err) = (x0, y0, dx + dy);
    loop {
        put(img, x, y, c);
        put(img, x, y + 1, c);
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

/// 3×5 glyphs, rows top to bottom, 3 bits a row (MSB left).
fn glyph(ch: char) -> [u8; 5] {
    match ch {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        '.' => [0, 0, 0, 0, 2],
        '-' => [0, 0, 7, 0, 0],
        'A' => [2, 5, 7, 5, 5],
        'C' => [7, 4, 4, 4, 7],
        'E' => [7, 4, 6, 4, 7],
        'F' => [7, 4, 6, 4, 4],
        'H' => [5, 5, 7, 5, 5],
        'I' => [7, 2, 2, 2, 7],
        'L' => [4, 4, 4, 4, 7],
        'M' => [5, 7, 7, 5, 5],
        'N' => [6, 5, 5, 5, 5],
        'O' => [7, 5, 5, 5, 7],
        'P' => [7, 5, 7, 4, 4],
        'R' => [6, 5, 6, 5, 5],
        'S' => [7, 4, 7, 1, 7],
        'T' => [7, 2, 2, 2, 2],
        'U' => [5, 5, 5, 5, 7],
        'V' => [5, 5, 5, 5, 2],
        _ => [0; 5],
    }
}

/// Text at 2× scale (6×10 px glyphs, 8 px advance).
fn text(img: &mut RgbImage, x: i64, y: i64, s: &str, c: Rgb<u8>) {
    for (k, ch) in s.chars().enumerate() {
        let g = glyph(ch);
        for (row, bits) in g.iter().enumerate() {
            for col in 0..3 {
                if bits & (4 >> col) != 0 {
                    for (ox, oy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                        put(
                            img,
                            x + k as i64 * 8 + col * 2 + ox,
                            y + row as i64 * 2 + oy,
                            c,
                        );
                    }
                }
            }
        }
    }
}
