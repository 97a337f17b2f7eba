//! The device's own hardware: board profiles, the camera (V4L2), the hand-off of frames to
//! inference, and the operator's controls (shutter, status LED).

pub mod board;
#[cfg(target_os = "linux")]
pub mod capture;
#[cfg(unix)]
pub mod controls;
pub mod frame_exchange;
