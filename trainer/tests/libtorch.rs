//! The LibTorch backend (`--features tch`; scripts/test.sh runs this whenever
//! scripts/libtorch.sh has set libtorch up): it computes what Flex computes, trains, and
//! benchmarks beside Flex in one process.
#![cfg(all(feature = "tch", feature = "flex"))]

mod common;

use burn::module::Module;
use burn::tensor::{Distribution, Tensor};
use vessel_trainer::backend::{self, device_of, Backend};
use vessel_trainer::data::{Dataset, Split};
use vessel_trainer::model::{SaUnetConfig, SaUnetV2};
use vessel_trainer::train;

/// burn's backend RNGs are process-global: the tests that draw from them take turns.
static BACKEND_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    BACKEND_RNG
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn values(t: Tensor<4>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

#[test]
fn libtorch_forward_pass_agrees_with_flex() {
    let _rng = rng_lock();
    let flex = device_of(Backend::Flex).unwrap();
    let tch = device_of(Backend::LibTorch).unwrap();
    flex.seed(5);
    let model = SaUnetV2::new(&SaUnetConfig::default(), &flex).valid();
    let x = Tensor::<4>::random([1, 3, 64, 48], Distribution::Default, &flex);
    let on_flex = values(model.probabilities(x.clone()));
    let on_tch = values(model.to_device(&tch).probabilities(x.to_device(&tch)));
    assert_eq!(on_flex.len(), 64 * 48);
    let worst = on_flex
        .iter()
        .zip(&on_tch)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-4, "largest probability difference {worst}");
    // Not a vacuous agreement: the map is not constant.
    let (lo, hi) = on_flex
        .iter()
        .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    assert!(hi - lo > 1e-3, "probabilities {lo}..{hi}");
}

#[test]
fn libtorch_trains_the_tiny_model_until_it_overfits() {
    let _rng = rng_lock();
    backend::select(Backend::LibTorch).unwrap();
    assert_eq!(backend::current(), Backend::LibTorch);
    let dir = common::temp_dir("tch-overfit-data");
    common::write_generic_dataset(&dir, 4, 32);
    let samples = Dataset::Generic { dir }.load(Split::Train).unwrap();
    let out = common::temp_dir("tch-overfit-run");
    let state = train::run(common::new_run(
        common::tiny_options(60),
        &samples,
        &samples,
        &out,
    ))
    .unwrap();
    common::assert_overfits(&state.history);
}

#[test]
fn bench_measures_both_backends_and_their_threads() {
    let _rng = rng_lock();
    for b in [Backend::LibTorch, Backend::Flex] {
        let r = vessel_trainer::bench::run(b, 16, 1, 0, 1).unwrap();
        assert_eq!(r.backend, b);
        assert!(r.threads.is_some_and(|t| t >= 1), "{b}: {:?}", r.threads);
        assert!(r.seconds_per_image_step > 0.0);
    }
}
