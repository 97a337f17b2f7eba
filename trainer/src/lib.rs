//! Training, evaluation and inspection of SA-UNetv2 for retinal vessel segmentation.
//!
//! Flow: [`data`] loads a dataset → [`augment`] places samples on the network canvas through
//! the runtime's shared preprocessing and augments them → [`model`] (burn) → [`loss`] →
//! [`train`] (Adam, plateau LR, early stopping, atomic [`checkpoint`]s, [`plot`]) and
//! [`eval`] (the runtime's shared metrics).

pub mod augment;
pub mod average;
pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod eval;
pub mod export;
pub mod import;
pub mod loss;
pub mod model;
pub mod plot;
pub mod summary;
pub mod train;
