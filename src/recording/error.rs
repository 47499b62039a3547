//! The recording core's one error type.

use std::path::PathBuf;

/// Everything that can go wrong while configuring, writing, merging or recovering a recording.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A stream or writer configuration that cannot work; caught before the first frame.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// One setting of a stream config cannot work; `field` is its name in the config.
    #[error("invalid configuration: {field}: {message}")]
    InvalidSetting {
        field: &'static str,
        message: String,
    },
    /// A file-system operation failed; the path says where.
    // The cause is part of the one-line message and deliberately not a `#[source]`,
    // so that printing the error chain does not repeat it.
    #[error("{op} {path}: {cause}")]
    Io {
        op: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    /// libavcodec / libavformat refused something; the context says what and where.
    #[error("{context}: {cause}")]
    Media {
        context: String,
        cause: ffmpeg_next::Error,
    },
    /// A file that should hold a recording does not look like one.
    #[error("{path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    /// The storage cannot take the recording (full, read-only).
    #[error("storage: {0}")]
    Storage(String),
    /// Threads were still writing into the spool folder at the stop deadline, so it is
    /// not finished now (two writers must never touch one file) but at the next start.
    #[error("{threads} still running at the stop deadline; {dir} is left for recovery at the next start")]
    LeftForRecovery { threads: String, dir: PathBuf },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, cause: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            cause,
        }
    }

    pub(crate) fn media(context: impl Into<String>, cause: ffmpeg_next::Error) -> Self {
        Error::Media {
            context: context.into(),
            cause,
        }
    }

    /// This configuration error, as one about the setting `field`.
    pub fn for_field(self, field: &'static str) -> Self {
        match self {
            Error::InvalidConfig(message) => Error::InvalidSetting { field, message },
            other => other,
        }
    }

    /// The underlying OS error number, when there is one (ENOSPC, EROFS, EIO...).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Io { cause, .. } => cause.raw_os_error(),
            Error::Media {
                cause: ffmpeg_next::Error::Other { errno },
                ..
            } => Some(*errno),
            _ => None,
        }
    }
}
