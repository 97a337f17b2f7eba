//! Retinal vessel segmentation for GPU-less devices.
//!
//! The library holds what the trainer and the device must do identically, so that what is
//! measured in training is exactly what the device does:
//! - [`image_io`]: decoding fundus images and binary label/FOV masks (by content, not name);
//! - [`preprocess`]: padding to the network's size, normalisation, cropping back;
//! - [`fov`]: deriving a field-of-view mask from an image when a dataset ships none;
//! - [`metrics`]: the field's segmentation metrics (confusion counts, F1, MCC, AUC …);
//! - [`tta`]: test-time augmentation (flipped copies, averaged probabilities).
//!
//! A camera frame's path through the device program, module by module:
//! [`device::capture`] → [`preprocess`] → [`engine`] → [`postprocess`] → [`display`]
//! (and saved results through [`atomic_file`]).
//!
//! Without default features (as the trainer uses it) it carries no device-only dependency.

pub mod fov;
pub mod image_io;
pub mod large_blocks;
pub mod metrics;
pub mod preprocess;

pub use image_io::{BinaryMask, ImageError};
pub mod alloc_count;
pub mod atomic_file;
#[cfg(feature = "engine")]
pub mod bench;
#[cfg(feature = "device")]
pub mod device;
#[cfg(feature = "device")]
pub mod display;
#[cfg(feature = "engine")]
pub mod engine;
pub mod model_file;
pub mod pixel_format;
pub mod postprocess;
pub mod system_info;
pub mod tta;
