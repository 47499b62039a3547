//! `grabd inspect`: a finished recording read back and shown to a person.
//!
//! - [`read`] → [`Inspection`]: streams with their timing ([`timing`]: usual interval,
//!   jitter, [`Gap`]s), IMU samples (decoded with [`crate::sensors::decode_batch`]),
//!   marks (the file's chapters), each camera's calibration (its track tag) and `grabd verify`'s [`Verdict`](crate::recording::manifest::Verdict),
//!   all from the file through libavformat, never from the writer's counters. It
//!   serialises as the JSON of `--json`; [`Inspection::table`] is the text.
//! - [`draw`]: the picture of `--png` (layout in `picture`), with thumbnails decoded
//!   at chosen times (`thumbnails`).

mod picture;
mod report;
mod thumbnails;
mod timing;

use std::path::PathBuf;

pub use picture::{draw, JITTER, MARGIN, STRIP, TRACE, WIDTH};
pub use report::{read, ImuReport, Inspection, StreamReport};
pub use timing::{timing, Gap, Timing};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The recording could not be read (libav's or the file system's reason).
    #[error(transparent)]
    Read(#[from] crate::recording::Error),
    /// The picture could not be drawn or encoded.
    #[error("draw {path}: {reason}")]
    Draw { path: PathBuf, reason: String },
}
