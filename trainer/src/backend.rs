//! Which burn backend runs training. CPU: Flex (chosen by measurement, see README), or the
//! deprecated NdArray for comparison; GPU: CUDA with `--features cuda`. The model code is
//! the same for all of them: burn dispatches on the device. When several backend features
//! are enabled, CUDA wins over Flex, Flex over NdArray.

use burn::tensor::Device;

#[cfg(not(any(feature = "cuda", feature = "flex", feature = "ndarray")))]
compile_error!("enable one backend feature: flex (default), ndarray or cuda");

/// The device inference runs on (no autodiff).
#[cfg(feature = "cuda")]
pub fn inference_device() -> Device {
    Device::cuda(0)
}

#[cfg(all(feature = "flex", not(feature = "cuda")))]
pub fn inference_device() -> Device {
    Device::flex()
}

#[cfg(all(feature = "ndarray", not(any(feature = "cuda", feature = "flex"))))]
#[allow(deprecated)]
pub fn inference_device() -> Device {
    Device::ndarray()
}

/// The device training runs on: the inference device with autodiff.
pub fn training_device() -> Device {
    inference_device().autodiff()
}

/// Name of the compiled-in backend, for logs and benchmark output.
pub fn name() -> &'static str {
    if cfg!(feature = "cuda") {
        "cuda"
    } else if cfg!(feature = "flex") {
        "flex"
    } else {
        "ndarray"
    }
}
