//! The storage guard: refuse to start on storage that cannot take a recording, and
//! stop a recording cleanly while there is still room to finish it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::config::{Batching, SourceSpec, StreamSpec};
use crate::recording::{durable, media, StreamConfig};
use crate::sensors::{encode_batch, ImuSample, SyntheticImu};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("{dir} is on a read-only file system")]
    ReadOnly { dir: String },
    #[error("{dir} is full ({free_mb} MiB free, at least {need_mb} MiB needed)")]
    Full {
        dir: String,
        free_mb: u64,
        need_mb: u64,
    },
    #[error("{dir}: {reason}")]
    Unusable { dir: String, reason: String },
}

/// Free bytes for an unprivileged writer on the file system holding `dir`, or that
/// will hold it: a folder not made yet (a fresh card before its first recording) has
/// the free space of its nearest existing ancestor.
pub fn free_bytes(dir: &Path) -> Result<u64, StorageError> {
    let base = nearest_existing(dir)?;
    let stat = nix::sys::statvfs::statvfs(base).map_err(|e| StorageError::Unusable {
        dir: dir.display().to_string(),
        reason: e.desc().to_owned(),
    })?;
    // The statvfs field types are narrower on 32-bit boards (armv7).
    #[allow(clippy::useless_conversion)]
    let free = u64::from(stat.blocks_available()) * u64::from(stat.fragment_size());
    Ok(free)
}

/// The free bytes of the fuller of the spool's and the output's file systems.
pub fn free_bytes_of_both(spool: &Path, output: &Path) -> Result<u64, StorageError> {
    Ok(free_bytes(spool)?.min(free_bytes(output)?))
}

/// [`free_bytes_of_both`] while recording: both folders exist then (the preflight made
/// them), so one that vanished (removed by hand, its card unmounted) is an error, not
/// the free space of the folder above it.
pub fn free_bytes_while_recording(spool: &Path, output: &Path) -> Result<u64, StorageError> {
    for dir in [spool, output] {
        if !dir.is_dir() {
            return Err(StorageError::Unusable {
                dir: dir.display().to_string(),
                reason: "the folder is gone".into(),
            });
        }
    }
    free_bytes_of_both(spool, output)
}

/// Make the output folder again if it vanished while recording (removed by hand), so
/// that the recording can still be finished into it, but only on the spool's own file
/// system: a folder whose card was unmounted must not reappear on the root file system.
pub fn restore_output(spool: &Path, output: &Path) {
    use std::os::unix::fs::MetadataExt;
    if output.is_dir() {
        return;
    }
    let device = |p: &Path| std::fs::metadata(p).ok().map(|m| m.dev());
    let parent = match output.parent() {
        Some(p) if p.as_os_str().is_empty() => Path::new("."),
        Some(p) => p,
        None => return,
    };
    if device(parent).is_none() || device(parent) != device(spool) {
        return;
    }
    match durable::create_dir_all(output) {
        Ok(()) => tracing::warn!(
            dir = %output.display(),
            "the output folder vanished while recording; made it again to finish into it"
        ),
        Err(e) => {
            tracing::error!(dir = %output.display(), error = %e, "cannot make the output folder again")
        }
    }
}

/// Check that each of `dirs` can take a recording (`min_free` free, writable), then
/// create the missing ones and prove a durable write in each. Nothing is created until
/// every check that needs no folder has passed, and a refusal after that removes what
/// was created. Returns the folders created (for [`remove_created`]).
pub fn preflight(dirs: &[&Path], min_free: u64) -> Result<Vec<PathBuf>, StorageError> {
    for dir in dirs {
        check_room(dir, min_free)?;
    }
    let mut created = Vec::new();
    let result = dirs.iter().try_for_each(|dir| {
        create_missing(dir, &mut created)?;
        probe_write(dir, min_free)
    });
    match result {
        Ok(()) => Ok(created),
        Err(e) => {
            remove_created(&created);
            Err(e)
        }
    }
}

/// Remove folders [`preflight`] created, if they are still empty (newest first).
pub fn remove_created(created: &[PathBuf]) {
    for dir in created.iter().rev() {
        if std::fs::remove_dir(dir).is_ok() {
            let _ = durable::sync_dir(dir.parent().unwrap_or(Path::new(".")));
        }
    }
}

/// A folder whose name libavformat cannot take ([`media::check_utf8_path`]).
fn check_utf8(dir: &Path) -> Result<(), StorageError> {
    match dir.to_str() {
        Some(_) => Ok(()),
        None => Err(StorageError::Unusable {
            dir: dir.display().to_string(),
            reason: media::NOT_UTF8.into(),
        }),
    }
}

/// `dir` itself, or its nearest ancestor that exists: the folder whose file system
/// will hold `dir` once it is made.
fn nearest_existing(dir: &Path) -> Result<&Path, StorageError> {
    let mut base = dir;
    loop {
        match std::fs::metadata(base) {
            Ok(m) if m.is_dir() => return Ok(base),
            Ok(_) => {
                return Err(StorageError::Unusable {
                    dir: dir.display().to_string(),
                    reason: format!("{} is not a folder", base.display()),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                base = match base.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                };
            }
            Err(e) => {
                return Err(StorageError::Unusable {
                    dir: dir.display().to_string(),
                    reason: format!("{}: {e}", base.display()),
                })
            }
        }
    }
}

/// What can be known of `dir` without creating it: the file system that will hold it
/// (the nearest existing ancestor) is writable and has `min_free`.
fn check_room(dir: &Path, min_free: u64) -> Result<(), StorageError> {
    check_utf8(dir)?;
    let name = dir.display().to_string();
    let base = nearest_existing(dir)?;
    let stat = nix::sys::statvfs::statvfs(base).map_err(|e| StorageError::Unusable {
        dir: name.clone(),
        reason: e.desc().to_owned(),
    })?;
    if stat.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY) {
        return Err(StorageError::ReadOnly { dir: name });
    }
    let free = free_bytes(base)?;
    if free < min_free {
        return Err(StorageError::Full {
            dir: name,
            free_mb: free >> 20,
            need_mb: min_free >> 20,
        });
    }
    if let Err(e) = nix::unistd::access(base, nix::unistd::AccessFlags::W_OK) {
        return Err(StorageError::Unusable {
            dir: name,
            reason: format!("{}: {}", base.display(), e.desc()),
        });
    }
    Ok(())
}

fn classify(dir: &Path, min_free: u64, e: crate::recording::Error) -> StorageError {
    let dir = dir.display().to_string();
    match e.raw_os_error() {
        Some(code) if code == nix::errno::Errno::EROFS as i32 => StorageError::ReadOnly { dir },
        Some(code) if code == nix::errno::Errno::ENOSPC as i32 => StorageError::Full {
            dir,
            free_mb: 0,
            need_mb: min_free >> 20,
        },
        _ => StorageError::Unusable {
            dir,
            reason: e.to_string(),
        },
    }
}

/// Create `dir` and its missing parents, noting each one created (outermost first).
fn create_missing(dir: &Path, created: &mut Vec<PathBuf>) -> Result<(), StorageError> {
    // A relative path ends in "" (the working folder), which exists.
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .collect();
    for d in missing.into_iter().rev() {
        durable::create_dir_all(d).map_err(|e| classify(dir, 0, e))?;
        created.push(d.to_owned());
    }
    Ok(())
}

/// A durable write in `dir`, and `min_free` still there.
fn probe_write(dir: &Path, min_free: u64) -> Result<(), StorageError> {
    // Unique per process: two recorders may check the same folder at once.
    let probe = dir.join(format!(".grabd-write-test-{}", std::process::id()));
    durable::write_file(&probe, b"grabd").map_err(|e| classify(dir, min_free, e))?;
    durable::remove_file(&probe).map_err(|e| classify(dir, min_free, e))?;
    let free = free_bytes(dir)?;
    if free < min_free {
        return Err(StorageError::Full {
            dir: dir.display().to_string(),
            free_mb: free >> 20,
            need_mb: min_free >> 20,
        });
    }
    Ok(())
}

/// Left in the output folder when a recording stopped because storage ran low. Ending
/// a recording frees its chunks again, so without it the next start would see room
/// and fill the card to the same point; with it, recording resumes only once someone
/// has freed space. Holds the free bytes needed to start again.
const FULL_MARKER: &str = ".grabd-storage-full";

/// Remember that `dir` ran full: starting again needs `need` bytes free.
pub fn mark_full(dir: &Path, need: u64) -> Result<(), StorageError> {
    durable::write_file(&dir.join(FULL_MARKER), need.to_string().as_bytes()).map_err(|e| {
        StorageError::Unusable {
            dir: dir.display().to_string(),
            reason: e.to_string(),
        }
    })
}

/// Refuse to start while `dir` is marked full and no space has been freed since.
pub fn check_not_marked_full(dir: &Path) -> Result<(), StorageError> {
    let marker = dir.join(FULL_MARKER);
    let Ok(text) = std::fs::read_to_string(&marker) else {
        return Ok(());
    };
    let need: u64 = text.trim().parse().unwrap_or(0);
    let free = free_bytes(dir)?;
    if free < need {
        return Err(StorageError::Full {
            dir: dir.display().to_string(),
            free_mb: free >> 20,
            need_mb: need.div_ceil(1 << 20),
        });
    }
    durable::remove_file(&marker).map_err(|e| StorageError::Unusable {
        dir: dir.display().to_string(),
        reason: e.to_string(),
    })
}

/// Watches free space during a recording. The reserve it keeps is `min_free` plus what
/// finishing takes. The consumption rate counts parts, merged chunks and the growing
/// final file (about twice the media rate); finishing merges the last chunk and appends
/// it (about one chunk's worth of that rate), and the recording goes on for up to a
/// check interval plus the stop itself before that: so `rate × (1.5 × chunk + 2 s)`.
///
/// The rate is the larger of an estimate from the stream configs (known before the
/// first frame) and the measured one. Starting needs the same reserve as going on, so
/// a card on which a recording stopped for space refuses the next one at once.
pub struct SpaceGuard {
    min_free: u64,
    chunk_length: Duration,
    last: Option<(Instant, u64)>,
    /// Consumption estimated from the configs, bytes per second.
    expected_rate: f64,
    /// Consumption measured, bytes per second (peak-held, slowly decaying).
    measured_rate: f64,
}

/// Media bytes per second a stream set is expected to write: the bit rate of lossy
/// video (plus container overhead), a third of the raw size for lossless video, and
/// for a data stream its samples at their real rate in the format they are stored in.
pub fn expected_media_rate(streams: &[StreamSpec]) -> f64 {
    streams
        .iter()
        .map(|spec| match (&spec.config, &spec.source) {
            (StreamConfig::Video(v), _) if v.bitrate > 0 => v.bitrate as f64 / 8.0 * 1.2,
            (StreamConfig::Video(v), _) => {
                let raw = v.input_frame_size().unwrap_or(0) as f64 * v.fps;
                raw / 3.0
            }
            (StreamConfig::Data(_), SourceSpec::SyntheticImu { rate_hz, batching }) => {
                let packets_per_s = match batching {
                    Batching::Rate(hz) => *hz,
                    Batching::PerFrameOf(video) => streams
                        .iter()
                        .find_map(|s| match &s.config {
                            StreamConfig::Video(v) if &s.name == video => Some(v.fps),
                            _ => None,
                        })
                        .unwrap_or(100.0),
                };
                rate_hz * imu_bytes_per_sample() + packets_per_s * PACKET_OVERHEAD
            }
            // A data stream of unknown rate: a generous guess; the guard's measured
            // rate takes over once recording.
            (StreamConfig::Data(_), _) => 20_000.0,
        })
        .sum()
}

/// Matroska's bytes around each packet (block header, cues, cluster share), generously.
const PACKET_OVERHEAD: f64 = 32.0;

/// What one IMU sample takes in a stored batch, measured on the real format.
fn imu_bytes_per_sample() -> f64 {
    const N: usize = 64;
    let mut imu = SyntheticImu::new(100.0);
    let samples: Vec<ImuSample> = (0..N)
        .map(|i| imu.sample_at(1_700_000_000_000_000 + i as i64 * 10_000))
        .collect();
    // Sample times an hour into the recording (their width in the payload).
    let origin = 1_700_000_000_000_000 - 3_600_000_000;
    encode_batch(&samples, origin).len() as f64 / N as f64
}

impl SpaceGuard {
    pub fn new(min_free: u64, chunk_length: Duration, expected_media_rate: f64) -> Self {
        SpaceGuard {
            min_free,
            chunk_length,
            last: None,
            expected_rate: 2.0 * expected_media_rate,
            measured_rate: 0.0,
        }
    }

    /// The free space under which recording must stop (and may not start).
    pub fn reserve(&self) -> u64 {
        let rate = self.expected_rate.max(self.measured_rate);
        self.min_free + (rate * (1.5 * self.chunk_length.as_secs_f64() + 2.0)) as u64
    }

    /// Record a free-space reading; `true` when the recording must stop now.
    pub fn must_stop(&mut self, free: u64) -> bool {
        let now = Instant::now();
        if let Some((then, before)) = self.last {
            let dt = now.duration_since(then).as_secs_f64();
            if dt > 0.0 {
                let used = before.saturating_sub(free) as f64 / dt;
                // Peak-hold with slow decay: a burst (a chunk merge) must not be averaged away.
                self.measured_rate = used.max(0.95 * self.measured_rate);
            }
        }
        self.last = Some((now, free));
        free < self.reserve()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_keeps_room_for_the_last_chunk() {
        let mut g = SpaceGuard::new(10, Duration::from_secs(2), 0.0);
        assert!(!g.must_stop(1_000_000));
        std::thread::sleep(Duration::from_millis(50));
        // Consuming fast: the reserve grows with the rate.
        let stop = g.must_stop(900_000);
        assert!(g.reserve() > 10);
        assert_eq!(stop, 900_000 < g.reserve());
        assert!(g.must_stop(5));
    }

    #[test]
    fn starting_needs_the_reserve_that_stops_a_recording() {
        let streams = crate::config::Config::default_synthetic().unwrap().streams;
        let rate = expected_media_rate(&streams);
        // rgb 4 Mb/s (0.6 MB/s with overhead) + FFV1 640x400x2x25 at a third of raw
        // (4.27 MB/s) + IMU (100 Hz of ~150-byte samples: 0.015 MB/s).
        assert!((4.8e6..5.0e6).contains(&rate), "{rate}");
        let mut g = SpaceGuard::new(1 << 20, Duration::from_secs(1), rate);
        let start_need = g.reserve();
        assert!(start_need > (1 << 20) + (10 << 20), "{start_need}");
        // Whenever a recording stops for space, a new start with the same need fails.
        assert!(g.must_stop(start_need - 1));
        assert!(!g.must_stop(u64::MAX / 2));
    }

    /// Regression test: every data stream counted as 20 kB/s, whatever its rate.
    #[test]
    fn data_streams_are_estimated_from_their_real_rate() {
        let config = crate::config::Config::from_toml(
            "[[stream]]\nname = \"imu\"\nkind = \"data\"\nrate_hz = 10000\nbatch_hz = 50\n",
            "t.toml",
        )
        .unwrap();
        let rate = expected_media_rate(&config.streams);
        // About 100 bytes of JSON per sample (IMU payload version 3).
        assert!((0.8e6..2.0e6).contains(&rate), "{rate}");
        let measured = {
            let mut imu = SyntheticImu::new(10_000.0);
            let batch: Vec<ImuSample> = (0..200).map(|i| imu.sample_at(i * 100)).collect();
            encode_batch(&batch, 0).len() as f64 * 50.0
        };
        assert!(rate >= measured, "{rate} < {measured}");
    }

    #[test]
    fn a_folder_marked_full_refuses_until_space_is_freed() {
        let dir = tempfile::tempdir().unwrap();
        check_not_marked_full(dir.path()).unwrap();
        mark_full(dir.path(), u64::MAX).unwrap();
        let err = check_not_marked_full(dir.path()).unwrap_err();
        assert!(err.to_string().contains("full"), "{err}");
        mark_full(dir.path(), 1).unwrap();
        check_not_marked_full(dir.path()).unwrap();
        assert!(!dir.path().join(FULL_MARKER).exists());
    }

    #[test]
    fn preflight_refuses_too_little_space() {
        let dir = tempfile::tempdir().unwrap();
        let err = preflight(&[dir.path()], u64::MAX).unwrap_err();
        assert!(err.to_string().contains("full"), "{err}");
        preflight(&[dir.path()], 0).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        // A refusal creates no folder; a folder made for nothing is removed again.
        let deep = dir.path().join("a/b");
        assert!(preflight(&[&deep], u64::MAX).is_err());
        assert!(!dir.path().join("a").exists());
        let created = preflight(&[&deep], 0).unwrap();
        assert_eq!(created, [dir.path().join("a"), deep.clone()]);
        remove_created(&created);
        assert!(!dir.path().join("a").exists());
    }
}
