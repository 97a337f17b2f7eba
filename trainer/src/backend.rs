//! Which burn backend runs training. CPU: LibTorch (`--features tch`, the fastest here, see
//! docs/performance.md), Flex (the default build: pure Rust, no native library), or the
//! deprecated NdArray for comparison; GPU: CUDA with `--features cuda`. The model code is
//! the same for all of them: burn dispatches on the device, so one binary can hold several
//! and `--backend` picks one at run time. Without `--backend`, the first compiled in of
//! CUDA, LibTorch, Flex, NdArray runs.

use std::fmt;
use std::sync::OnceLock;

use burn::tensor::Device;

#[cfg(not(any(
    feature = "cuda",
    feature = "tch",
    feature = "flex",
    feature = "ndarray"
)))]
compile_error!("enable one backend feature: flex (default), tch, ndarray or cuda");

/// A burn backend this trainer can be built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Cuda,
    #[value(name = "tch")]
    #[serde(rename = "tch")]
    LibTorch,
    Flex,
    Ndarray,
}

impl Backend {
    /// Every backend, in order of preference.
    pub const ALL: [Backend; 4] = [
        Backend::Cuda,
        Backend::LibTorch,
        Backend::Flex,
        Backend::Ndarray,
    ];

    /// Whether this build holds the backend.
    pub fn compiled(self) -> bool {
        match self {
            Backend::Cuda => cfg!(feature = "cuda"),
            Backend::LibTorch => cfg!(feature = "tch"),
            Backend::Flex => cfg!(feature = "flex"),
            Backend::Ndarray => cfg!(feature = "ndarray"),
        }
    }

    /// The backends this build holds, preferred first.
    pub fn available() -> Vec<Backend> {
        Self::ALL.into_iter().filter(|b| b.compiled()).collect()
    }

    /// The name `--backend` takes and logs print, and the cargo feature that compiles it in.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Cuda => "cuda",
            Backend::LibTorch => "tch",
            Backend::Flex => "flex",
            Backend::Ndarray => "ndarray",
        }
    }

    fn device(self) -> Device {
        match self {
            #[cfg(feature = "cuda")]
            Backend::Cuda => Device::cuda(0),
            #[cfg(feature = "tch")]
            #[allow(deprecated)]
            // burn-tch is deprecated upstream, and still the fastest CPU route
            Backend::LibTorch => Device::libtorch(),
            #[cfg(feature = "flex")]
            Backend::Flex => Device::flex(),
            #[cfg(feature = "ndarray")]
            #[allow(deprecated)]
            Backend::Ndarray => Device::ndarray(),
            #[allow(unreachable_patterns)]
            other => unreachable!("{other} is not compiled in: select() refuses it"),
        }
    }

    /// Worker threads the backend's CPU kernels use (None on a GPU).
    pub fn threads(self) -> Option<usize> {
        match self {
            Backend::Cuda => None,
            #[cfg(feature = "tch")]
            Backend::LibTorch => usize::try_from(tch::get_num_threads()).ok(),
            _ => Some(rayon::current_num_threads()),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `--backend` named a backend this binary was built without.
#[derive(Debug, thiserror::Error)]
#[error(
    "backend {wanted} is not in this build (it has: {available}); rebuild with `--features {wanted}`{hint}"
)]
pub struct NotCompiled {
    wanted: Backend,
    available: String,
    hint: &'static str,
}

static SELECTED: OnceLock<Backend> = OnceLock::new();

/// Refuses a backend this binary was built without.
fn check_compiled(backend: Backend) -> Result<(), NotCompiled> {
    if backend.compiled() {
        return Ok(());
    }
    Err(NotCompiled {
        wanted: backend,
        available: Backend::available()
            .iter()
            .map(|b| b.name())
            .collect::<Vec<_>>()
            .join(", "),
        hint: if backend == Backend::LibTorch {
            " through scripts/libtorch.sh (README, \"Fast training\")"
        } else {
            ""
        },
    })
}

/// Chooses the backend for this process, before any tensor is made. Later calls, and a
/// first call after a device was already handed out, keep the first choice.
pub fn select(backend: Backend) -> Result<Backend, NotCompiled> {
    check_compiled(backend)?;
    Ok(*SELECTED.get_or_init(|| backend))
}

/// The backend this process runs: the one selected, else the preferred compiled one.
pub fn current() -> Backend {
    *SELECTED.get_or_init(|| Backend::available()[0])
}

/// The device inference runs on (no autodiff).
pub fn inference_device() -> Device {
    current().device()
}

/// The device a given backend runs inference on, whatever this process selected: for
/// comparing backends inside one process (benchmarks, agreement tests).
pub fn device_of(backend: Backend) -> Result<Device, NotCompiled> {
    check_compiled(backend)?;
    Ok(backend.device())
}

/// The device training runs on: the inference device with autodiff.
pub fn training_device() -> Device {
    inference_device().autodiff()
}

/// Name of the backend this process runs, for logs and benchmark output.
pub fn name() -> &'static str {
    current().name()
}

/// Caps the CPU backends' worker threads (Flex's rayon pool, LibTorch's intra-op pool),
/// before any tensor is made.
pub fn set_threads(threads: usize) -> Result<(), rayon::ThreadPoolBuildError> {
    #[cfg(feature = "tch")]
    tch::set_num_threads(i32::try_from(threads).unwrap_or(i32::MAX));
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
}

/// Makes the C allocator keep freed memory for reuse instead of returning it to the system.
/// A training step allocates and frees many feature maps of tens of MB; glibc serves those
/// with fresh mappings by default, so every step pays page faults on all of them (the
/// LibTorch backend spent much of its time there: docs/performance.md). The process then
/// holds its peak memory until it exits, which a trainer can afford.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocation parameters; it is safe to call at
    // any time, before or after allocations.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
