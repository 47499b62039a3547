//! Camera sources. Every source hands out packed raw frames stamped on the process's
//! monotonic clock ([`crate::clock::monotonic_us`]); the recording core takes them from
//! there.
//!
//! - [`FrameSource`]: the trait every camera implements.
//! - [`SyntheticVideo`]: moving test patterns without hardware.
//! - [`V4l2Camera`]: V4L2 cameras (`v4l2.rs`).
//! - [`choose_h264`]: the H.264 encoder ladder, probing V4L2 M2M encoders (`m2m.rs`).

mod m2m;
pub mod synthetic;
mod v4l2;

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

pub use m2m::{
    apply_h264_choice, choose_h264, choose_h264_here, enum_formats, rejection, scan as m2m_scan,
    H264Choice, M2mCandidate, HARDWARE_H264, SOFTWARE_H264,
};
pub use synthetic::{SyntheticPattern, SyntheticVideo};
pub use v4l2::{
    check_negotiated, query_camera, resolve_device, CameraInfo, CaptureFormat, TimestampSource,
    V4l2Camera, V4l2Config,
};
