//! The recording core's one error type.

use std::path::PathBuf;

/// Everything that can go wrong while configuring, writing, merging or recovering a recording.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A stream or writer configuration that cannot work; caught before the first frame.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A file-system operation failed; the path says where.
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// libavcodec / libavformat refused something; the context says what and where.
    #[error("{context}: {source}")]
    Media {
        context: String,
        #[source]
        source: ffmpeg_next::Error,
    },
    /// A file that should hold a recording does not look like one.
    #[error("{path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    /// An encoder thread died; the writer goes on with the other streams.
    #[error("stream {stream} failed: {reason}")]
    StreamFailed { stream: String, reason: String },
    /// The storage cannot take the recording (full, read-only).
    #[error("storage: {0}")]
    Storage(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn media(context: impl Into<String>, source: ffmpeg_next::Error) -> Self {
        Error::Media {
            context: context.into(),
            source,
        }
    }

    /// The underlying OS error number, when there is one (ENOSPC, EROFS, EIO...).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { source, .. } => source.raw_os_error(),
            Error::Media {
                source: ffmpeg_next::Error::Other { errno },
                ..
            } => Some(*errno),
            _ => None,
        }
    }
}
