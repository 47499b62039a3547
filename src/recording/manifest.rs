//! The JSON manifest written beside each final MKV, and the session file kept in the
//! spool while a recording is in progress (what recovery needs to write the manifest of
//! a recording that was cut off).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::durable;
use super::error::{Error, Result};
use super::merge::{FileFacts, TrackFacts};
use super::probe::{block_sha256_file, inspect, FileSummary, CHECKSUM_BLOCK_BYTES};
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
    /// How far the wall clock stepped during the recording (µs; set at stop when over a
    /// second): `stopped_unix_us` follows the monotonic clock instead.
    #[serde(default)]
    pub clock_step_us: Option<i64>,
    /// Bookmarks, in media µs, written as they are made (a power cut keeps them).
    #[serde(default)]
    pub marks_us: Vec<i64>,
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
    /// Seconds the wall clock stepped during the recording (NTP arriving on a board
    /// without an RTC), or null: `started_at`, `stopped_at` and `duration_s` follow the
    /// monotonic clock from the start either way.
    #[serde(default)]
    pub clock_stepped_s: Option<f64>,
    /// Bookmarks (a double press while recording, `grabd ctl mark`), in media seconds;
    /// the file holds each as a chapter.
    #[serde(default)]
    pub marks_s: Vec<f64>,
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
    /// Of those, frames that could not be encoded as they were (wrong size, empty).
    #[serde(default)]
    pub dropped_invalid: Option<u64>,
    /// Of those, frames shed because they could no longer become durable within
    /// `max_latency` (the recorder could not keep up).
    #[serde(default)]
    pub dropped_overload: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestFile {
    pub name: String,
    pub size_bytes: u64,
    /// The file's checksum: SHA-256 of each block of this many bytes, in order (the last
    /// block shorter). `split -b 1048576 --filter=sha256sum FILE` prints the same.
    pub sha256_block_bytes: u64,
    pub sha256_blocks: Vec<String>,
}

/// Write the manifest of the final file `mkv` durably beside it. `known` is what its
/// writer knows of it (packets, block checksums), so that nothing is read again at stop;
/// without it (or when it is not about this very file) the file is read back.
pub fn write_manifest(
    mkv: &Path,
    session: Option<&Session>,
    recording_id: &str,
    recovered: bool,
    known: Option<&FileFacts>,
) -> Result<Manifest> {
    let size_bytes = std::fs::metadata(mkv)
        .map_err(|e| Error::io("stat", mkv, e))?
        .len();
    let summary = match known.filter(|f| f.size_bytes == size_bytes) {
        Some(facts) => facts.clone(),
        None => read_facts(mkv)?,
    };
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
                dropped_invalid: stats.map(|s| s.dropped_invalid),
                dropped_overload: stats.map(|s| s.dropped_overload),
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
        clock_stepped_s: session
            .and_then(|s| s.clock_step_us)
            .map(|us| (us / 1000) as f64 / 1000.0),
        marks_s: session.map_or_else(Vec::new, |s| {
            s.marks_us.iter().map(|&us| us as f64 / 1e6).collect()
        }),
        streams,
        file: ManifestFile {
            name: mkv
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            size_bytes,
            sha256_block_bytes: CHECKSUM_BLOCK_BYTES,
            sha256_blocks: summary.block_sha256,
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

/// Read a finished file back into what its writer would have known of it.
pub fn read_facts(mkv: &Path) -> Result<FileFacts> {
    let summary = inspect(mkv, false, None)?;
    Ok(FileFacts {
        size_bytes: std::fs::metadata(mkv)
            .map_err(|e| Error::io("stat", mkv, e))?
            .len(),
        block_sha256: block_sha256_file(mkv)?,
        origin_unix_us: summary.origin_unix_us,
        tracks: summary
            .tracks
            .into_iter()
            .map(|t| TrackFacts {
                name: t.name,
                kind: t.kind,
                packets: t.packets,
                last_pts_us: t.last_pts_us,
            })
            .collect(),
    })
}

/// Read a manifest.
pub fn read_manifest(path: &Path) -> Result<Manifest> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("read", path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::BadFile {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// What `grabd verify` says of a file: every packet read and decoded, and the manifest
/// beside it checked against what was read.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub ok: bool,
    /// Why not, one reason per entry (empty when `ok`).
    pub why: Vec<String>,
    pub decode_errors: u64,
    pub manifest_ok: bool,
    pub truncated: bool,
    /// The file as read back.
    #[serde(skip)]
    pub summary: FileSummary,
}

/// Read and decode all of `mkv` and check its manifest. Packet PTS per track (µs) are
/// also collected when `pts_out` is given (see [`inspect`]).
pub fn verdict(mkv: &Path, pts_out: Option<&mut Vec<Vec<i64>>>) -> Result<Verdict> {
    let summary = inspect(mkv, true, pts_out)?;
    let manifest_problems = manifest_problems(mkv, &summary);
    let mut why = manifest_problems.clone();
    if summary.decode_errors() > 0 {
        why.push(format!("{} frames do not decode", summary.decode_errors()));
    }
    if summary.truncated {
        why.push("the file is cut short".to_owned());
    }
    Ok(Verdict {
        ok: why.is_empty(),
        why,
        decode_errors: summary.decode_errors(),
        manifest_ok: manifest_problems.is_empty(),
        truncated: summary.truncated,
        summary,
    })
}

/// Why the manifest beside `mkv` does not describe it (nothing when it does): missing,
/// unreadable, size, checksum block by block, or per-stream frame counts against the
/// file as read back (`summary`).
pub fn manifest_problems(mkv: &Path, summary: &FileSummary) -> Vec<String> {
    let path = manifest_path(mkv);
    if !path.exists() {
        return vec![format!("manifest missing: {}", path.display())];
    }
    let manifest = match read_manifest(&path) {
        Ok(manifest) => manifest,
        Err(e) => return vec![format!("manifest unreadable: {e}")],
    };
    let mut problems = Vec::new();
    let size = std::fs::metadata(mkv).map(|m| m.len()).unwrap_or(0);
    if size != manifest.file.size_bytes {
        problems.push(format!(
            "size differs: the file has {size} bytes, the manifest says {}",
            manifest.file.size_bytes
        ));
    }
    match block_sha256_file(mkv) {
        Ok(blocks) if manifest.file.sha256_block_bytes == CHECKSUM_BLOCK_BYTES => {
            let changed: Vec<String> = blocks
                .iter()
                .zip(&manifest.file.sha256_blocks)
                .enumerate()
                .filter(|(_, (a, b))| a != b)
                .map(|(k, _)| k.to_string())
                .collect();
            if !changed.is_empty() || blocks.len() != manifest.file.sha256_blocks.len() {
                problems.push(format!(
                    "sha256 mismatch: {} of {} blocks of {CHECKSUM_BLOCK_BYTES} bytes differ (blocks {})",
                    changed.len(),
                    manifest.file.sha256_blocks.len(),
                    changed.join(",")
                ));
            }
        }
        Ok(_) => problems.push(format!(
            "sha256 mismatch: the manifest's blocks are {} bytes, grabd checks {CHECKSUM_BLOCK_BYTES}",
            manifest.file.sha256_block_bytes
        )),
        Err(e) => problems.push(format!("checksum not computed: {e}")),
    }
    for stream in &manifest.streams {
        let in_file = summary.track(&stream.name).map_or(0, |t| t.packets);
        if in_file != stream.frames_written {
            problems.push(format!(
                "frames in file != frames in manifest: {} has {in_file}, the manifest says {}",
                stream.name, stream.frames_written
            ));
        }
    }
    for track in &summary.tracks {
        if !manifest.streams.iter().any(|s| s.name == track.name) {
            problems.push(format!(
                "frames in file != frames in manifest: {} is not in the manifest",
                track.name
            ));
        }
    }
    problems
}
