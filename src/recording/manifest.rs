//! The JSON manifest written beside each final MKV, and the session file kept in the
//! spool while a recording is in progress (what recovery needs to write the manifest of
//! a recording that was cut off).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::durable;
use super::error::{Error, Result};
use super::probe::{inspect, sha256_file};
use super::stream_config::StreamConfig;
use super::writer::StreamStats;

pub use super::spool::{manifest_path, SESSION_FILE};

/// Written durably into the recording's spool folder at start and again at stop.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub recording_id: String,
    pub streams: Vec<SessionStream>,
    pub software_version: String,
    /// Set at stop (wall clock µs); absent when the recording was cut off.
    #[serde(default)]
    pub stopped_unix_us: Option<i64>,
    #[serde(default)]
    pub stats: Vec<StreamStats>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionStream {
    pub name: String,
    pub config: StreamConfig,
}

impl Session {
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::BadFile {
            path: dir.join(SESSION_FILE),
            reason: e.to_string(),
        })?;
        durable::write_file(&dir.join(SESSION_FILE), &json)
    }

    pub fn read(dir: &Path) -> Result<Session> {
        let path = dir.join(SESSION_FILE);
        let bytes = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::BadFile {
            path,
            reason: e.to_string(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub recording_id: String,
    /// RFC 3339 UTC of media time 0.
    pub started_at: String,
    pub stopped_at: String,
    /// Wall clock µs since the Unix epoch of media time 0 (exact; `started_at` is ms).
    pub origin_unix_us: i64,
    pub duration_s: f64,
    pub streams: Vec<ManifestStream>,
    pub file: ManifestFile,
    pub recovered: bool,
    pub software_version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestStream {
    pub name: String,
    pub kind: String,
    /// The stream's configuration (absent if the session file was lost).
    pub config: Option<serde_json::Value>,
    /// Packets of this track in the final file, read back from it.
    pub frames_written: u64,
    /// Frames the writer had to drop (unknown after a power cut).
    pub frames_dropped: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub name: String,
    pub size_bytes: u64,
    pub sha256: String,
}

/// Read the final file back and write its manifest durably beside it.
pub fn write_manifest(
    mkv: &Path,
    session: Option<&Session>,
    recording_id: &str,
    recovered: bool,
) -> Result<Manifest> {
    let summary = inspect(mkv, false, None)?;
    let size_bytes = std::fs::metadata(mkv)
        .map_err(|e| Error::io("stat", mkv, e))?
        .len();
    let origin_unix_us = summary.origin_unix_us.unwrap_or(0);
    let duration_us = summary
        .tracks
        .iter()
        .filter_map(|t| t.last_pts_us)
        .max()
        .unwrap_or(0);
    let stopped_unix_us = session
        .and_then(|s| s.stopped_unix_us)
        .unwrap_or(origin_unix_us + duration_us);
    let streams = summary
        .tracks
        .iter()
        .map(|track| {
            let configured = session.and_then(|s| s.streams.iter().find(|c| c.name == track.name));
            let stats = session.and_then(|s| s.stats.iter().find(|c| c.name == track.name));
            ManifestStream {
                name: track.name.clone(),
                kind: configured.map_or_else(|| track.kind.clone(), |c| c.config.kind().to_owned()),
                config: configured.and_then(|c| serde_json::to_value(&c.config).ok()),
                frames_written: track.packets,
                frames_dropped: stats.map(StreamStats::frames_dropped),
            }
        })
        .collect();
    let manifest = Manifest {
        recording_id: recording_id.to_owned(),
        started_at: crate::clock::rfc3339_ms(origin_unix_us),
        stopped_at: crate::clock::rfc3339_ms(stopped_unix_us),
        origin_unix_us,
        // Whole milliseconds: that is the file's resolution.
        duration_s: (duration_us / 1000) as f64 / 1000.0,
        streams,
        file: ManifestFile {
            name: mkv
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            size_bytes,
            sha256: sha256_file(mkv)?,
        },
        recovered,
        software_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::BadFile {
        path: manifest_path(mkv),
        reason: e.to_string(),
    })?;
    durable::write_file(&manifest_path(mkv), &json)?;
    Ok(manifest)
}

/// Read a manifest.
pub fn read_manifest(path: &Path) -> Result<Manifest> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::BadFile {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}
