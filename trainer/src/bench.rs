//! Training throughput: seconds per image-step (forward + backward + Adam update) at a given
//! input size, and the process's peak memory. Used to pick the CPU backend by measurement.

use std::time::Instant;

use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Distribution, Tensor};
use serde::Serialize;

use crate::backend::Backend;
use crate::loss::LossConfig;
use crate::model::{SaUnetConfig, SaUnetV2};

#[derive(Debug, Serialize)]
pub struct TrainBench {
    pub backend: Backend,
    /// The backend's CPU worker threads (None on a GPU).
    pub threads: Option<usize>,
    pub input: u32,
    pub batch_size: usize,
    pub steps: usize,
    pub seconds_per_image_step: f64,
    pub seconds_per_step_min: f64,
    pub peak_rss_mb: Option<f64>,
}

use vessel_runtime::system_info::peak_rss_mb;

/// Times `steps` training steps on `backend` after `warmup` untimed ones.
pub fn run(
    backend: Backend,
    size: u32,
    batch_size: usize,
    warmup: usize,
    steps: usize,
) -> Result<TrainBench, crate::backend::NotCompiled> {
    let device = crate::backend::device_of(backend)?.autodiff();
    device.seed(0);
    let mut model = SaUnetV2::new(&SaUnetConfig::default(), &device);
    let mut optimizer = AdamConfig::new().init();
    let loss_cfg = LossConfig::default();
    let s = size as usize;
    let x = Tensor::<4>::random([batch_size, 3, s, s], Distribution::Default, &device);
    let y = Tensor::<4>::random(
        [batch_size, 1, s, s],
        Distribution::Bernoulli(0.12),
        &device,
    );
    let mut times = Vec::new();
    for i in 0..warmup + steps {
        let t = Instant::now();
        let loss = loss_cfg.loss(model.forward(x.clone()), y.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(1e-3, model, grads);
        // Reading a parameter back waits for the (possibly asynchronous) backend.
        let _ = model.head.weight.val().into_data();
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
    Ok(TrainBench {
        backend,
        threads: backend.threads(),
        input: size,
        batch_size,
        steps,
        seconds_per_image_step: mean / batch_size as f64,
        seconds_per_step_min: times.iter().copied().fold(f64::INFINITY, f64::min),
        peak_rss_mb: peak_rss_mb(),
    })
}
