//! End-to-end tests across the crates live in this package's `[[test]]` targets.
