//! Overlay drawing through the display path into the PNG sink, compared with a reference
//! image (`tests/data/screen_reference.png`, looked at and committed; regenerate it with
//! `VESSEL_BLESS=1` only when the drawing is meant to change).

use std::path::Path;

use vessel_runtime::display::png_sink::PngSink;
use vessel_runtime::display::{DisplaySink, Screen, STATUS_TEXT};
use vessel_runtime::postprocess::{draw_overlay, TINT_ALPHA, VESSEL_TINT};

/// A 64×48 "frame": horizontal gradient; the mask marks a diagonal band and a vertical line.
fn frame_and_mask() -> (Vec<u8>, Vec<u8>) {
    let (w, h) = (64usize, 48usize);
    let mut rgb = Vec::with_capacity(w * h * 3);
    let mut mask = Vec::with_capacity(w * h);
    for y in 0..h {
        for x in 0..w {
            rgb.extend_from_slice(&[(x * 4) as u8, 80, (y * 5) as u8]);
            mask.push(u8::from((x as i32 - y as i32).abs() < 3 || x == 40));
        }
    }
    (rgb, mask)
}

#[test]
fn overlay_and_status_reach_the_png_sink_as_in_the_reference() {
    let (rgb, mask) = frame_and_mask();
    let mut overlay = vec![0u8; rgb.len()];
    draw_overlay(&rgb, &mask, &mut overlay);
    // Independently of the reference: a vessel pixel is the blend, others are untouched.
    let blend = |v: u8, t: u8| {
        ((u32::from(v) * (256 - TINT_ALPHA) + u32::from(t) * TINT_ALPHA + 128) >> 8) as u8
    };
    let at = |x: usize, y: usize| (y * 64 + x) * 3;
    assert_eq!(
        &overlay[at(10, 10)..at(10, 10) + 3],
        &[
            blend(40, VESSEL_TINT[0]),
            blend(80, VESSEL_TINT[1]),
            blend(50, VESSEL_TINT[2])
        ]
    );
    assert_eq!(
        &overlay[at(20, 5)..at(20, 5) + 3],
        &rgb[at(20, 5)..at(20, 5) + 3]
    );

    let dir = std::env::temp_dir().join(format!("vessel-display-{}", std::process::id()));
    let path = dir.join("screen.png");
    let mut sink = PngSink::new(path.clone(), 160, 120);
    let (w, h) = sink.size();
    let mut screen = Screen::new(w, h);
    screen.draw_picture(&overlay, 64, 48);
    screen.draw_status("812 ms  1.2 fps  vessels 11.8%  int8", STATUS_TEXT);
    sink.present(&screen).unwrap();
    let drawn = image::open(&path).unwrap().to_rgb8();
    assert_eq!(
        drawn.as_raw(),
        screen.rgb(),
        "the PNG holds exactly the composed screen"
    );

    let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/screen_reference.png");
    if std::env::var_os("VESSEL_BLESS").is_some() {
        std::fs::copy(&path, &reference).unwrap();
    }
    let want = image::open(&reference)
        .unwrap_or_else(|e| panic!("{}: {e}", reference.display()))
        .to_rgb8();
    assert_eq!(want.dimensions(), drawn.dimensions());
    let differing = want
        .pixels()
        .zip(drawn.pixels())
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(
        differing,
        0,
        "{differing} pixels differ from {}",
        reference.display()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_png_sink_reports_an_unwritable_path() {
    let mut sink = PngSink::new("/proc/vessel-cannot-write/screen.png".into(), 32, 32);
    let e = sink.present(&Screen::new(32, 32)).unwrap_err().to_string();
    assert!(e.contains("/proc/vessel-cannot-write"), "{e}");
}
