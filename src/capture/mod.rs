//! Camera sources. Every source hands out packed raw frames stamped on the process's
//! monotonic clock ([`crate::clock::monotonic_us`]); the recording core takes them from
//! there. Hardware (V4L2) sources implement the same trait.

pub mod synthetic;

use crate::recording::Frame;

/// Why a source stopped delivering.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("capture source {source_name}: {reason}")]
    Failed { source_name: String, reason: String },
}

/// A source of video frames. `next_frame` blocks until the next frame is captured.
pub trait FrameSource: Send {
    fn next_frame(&mut self) -> Result<Frame, CaptureError>;
    fn describe(&self) -> String;
}

pub use synthetic::{SyntheticPattern, SyntheticVideo};
