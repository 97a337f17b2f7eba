//! The shipped int8 model against the shipped f32 model on DRIVE test images: the binary
//! masks agree on at least 98% of field-of-view pixels. Runtime-only (no trainer), so it also
//! runs in the aarch64 build under qemu-aarch64-static, where tract uses other int8 kernels.

use std::path::{Path, PathBuf};

use vessel_runtime::engine::Engine;
use vessel_runtime::image_io::{load_binary_mask, load_rgb};
use vessel_runtime::preprocess::threshold_into;

// tract's AMX int8 kernel reads past its buffers: large blocks get readable bytes after them.
#[global_allocator]
static ALLOCATOR: vessel_runtime::alloc_count::PaddedSystem =
    vessel_runtime::alloc_count::PaddedSystem;

fn data_dir() -> PathBuf {
    std::env::var_os("VESSEL_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
}

#[test]
#[ignore = "needs the DRIVE/STARE datasets in ../shared/data or $VESSEL_DATA_DIR (scripts/test.sh runs it)"]
fn int8_masks_agree_with_f32_inside_the_fov() {
    let test = data_dir().join("DRIVE/test");
    assert!(
        test.is_dir(),
        "{} not found (set VESSEL_DATA_DIR)",
        test.display()
    );
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let mut f32_engine = Engine::load(&models.join("drive-f32.nnef.tgz"), None).unwrap();
    let mut int8_engine = Engine::load(&models.join("drive-int8.nnef.tgz"), None).unwrap();
    let threshold = f32_engine.metadata.threshold;
    // Three images (one inside the emulated aarch64 VM, where a 592×592 pair takes ~4 min:
    // `VESSEL_INT8_AGREEMENT_IDS=01`); the x86 e2e test covers all twenty.
    let ids = std::env::var("VESSEL_INT8_AGREEMENT_IDS").unwrap_or_else(|_| "01,08,15".into());
    for id in ids.split(',').map(str::trim) {
        let image = load_rgb(&test.join(format!("images/{id}_test.tif"))).unwrap();
        let fov = load_binary_mask(&test.join(format!("mask/{id}_test_mask.gif"))).unwrap();
        let n = fov.data.len();
        let (mut a, mut b) = (vec![0u8; n], vec![0u8; n]);
        threshold_into(&f32_engine.segment(&image).unwrap(), threshold, &mut a);
        threshold_into(&int8_engine.segment(&image).unwrap(), threshold, &mut b);
        let (mut inside, mut same) = (0u64, 0u64);
        for ((&x, &y), &f) in a.iter().zip(&b).zip(&fov.data) {
            if f != 0 {
                inside += 1;
                same += u64::from(x == y);
            }
        }
        let agreement = same as f64 / inside as f64;
        eprintln!(
            "{id}: int8 and f32 agree on {:.3}% of FOV pixels",
            100.0 * agreement
        );
        assert!(agreement >= 0.98, "{id}: {:.2}%", 100.0 * agreement);
    }
}
