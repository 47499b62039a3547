//! The recording core: stream configs, encoders, the chunked writer, merge/concat,
//! durable file operations, manifests and recovery. It knows nothing of GPIO or V4L2:
//! frames arrive as [`Frame`]s through [`StreamSender`]s.
//!
//! Map of the main types:
//! - [`VideoStreamConfig`] / [`DataStreamConfig`]: what each track holds.
//! - [`VideoStreamEncoder`] / [`DataStreamEncoder`]: frames in, packets out.
//! - [`ChunkedWriter`]: per-stream encoder threads writing `.mkv.part` files, rotation
//!   barrier with deadline, background [`finalizer`] merging chunks
//!   ([`merge_stream_files`]) and growing the final file ([`ConcatWriter`]).
//! - [`Calibration`]: a camera's intrinsics, distortion, camera→IMU extrinsic, depth
//!   unit and mounting, stored as a track tag.
//! - [`Recording`]: a whole recording from spool folder to final MKV + [`Manifest`].
//! - [`recovery`]: finishing recordings cut off by a power cut.
//! - [`spool`]: every file name, marker and lock of a recording.
//! - [`durable`]: the only way files that must survive are written.
//! - [`probe`]: reading files back to check every claim.
//! - `libav_log`: libav's own reason for a refusal, caught into grabd's one error line.

pub mod calibration;
mod decode_times;
pub mod durable;
pub mod encoder;
mod error;
pub mod events;
mod faults;
pub mod finalizer;
mod in_band_headers;
mod libav_log;
pub mod manifest;
pub mod media;
pub mod merge;
pub mod part;
pub mod pressure;
pub mod probe;
pub mod recovery;
pub mod session;
pub mod spool;
pub mod stream_config;
mod writer;

pub use calibration::{file_calibrations, Calibration, DistortionModel, Flip};
pub use encoder::{DataStreamEncoder, VideoStreamEncoder};
pub use error::{Error, Result};
pub use events::{ErrorCallback, StartChunkCallback};
pub use faults::InjectedFaults;
pub use finalizer::{FinalOutput, Marks};
pub use manifest::Manifest;
pub use media::MuxerSettings;
pub use merge::{merge_recording_chunks, merge_stream_files, ConcatWriter, ReadMode};
pub use recovery::{finish_recording_dir, recover_spool, Finished, RecoveryReport};
pub use session::{Recording, Stopped};
pub use stream_config::{DataStreamConfig, StreamConfig, VideoStreamConfig};
pub use writer::{
    ChunkedWriter, Frame, Origin, StopDeadlines, StreamSender, StreamStats, WriterOptions,
    WriterReport,
};
