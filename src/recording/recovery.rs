//! Finishing recordings: the normal end of a recording and boot-time recovery of one
//! that was cut off are the same procedure, run on a recording's spool folder:
//!
//! 1. delete stale `*.tmp` (never complete: only `persist` gives a file its name);
//! 2. salvage the `.mkv.part` files of every unmerged chunk into `NNNNN.mkv` (a cut-off
//!    Matroska file is readable up to its last complete cluster), then drop the parts;
//! 3. concatenate the chunks into `<output>/<id>.mkv`, unless that already exists
//!    (it is renamed into place only once complete);
//! 4. read the final file back into its manifest, then remove the spool folder.
//!
//! Each step's result is durable before the step that deletes its inputs, so a power
//! cut during recovery itself leaves something the next recovery finishes.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use super::durable;
use super::error::{Error, Result};
use super::manifest::{
    manifest_path, read_manifest, write_manifest, Manifest, Session, SESSION_FILE,
};
use super::media::MuxerSettings;
use super::merge::{merge_recording_chunks, merge_stream_files, ReadMode};

/// A recording finished by [`finish_recording_dir`].
#[derive(Debug, Clone)]
pub struct Finished {
    pub mkv: PathBuf,
    pub manifest: Manifest,
}

/// What [`recover_spool`] did.
#[derive(Debug, Default)]
pub struct RecoveryReport {
    pub recovered: Vec<Finished>,
    /// Recording folders that could not be finished, with why (left in place).
    pub failed: Vec<(PathBuf, String)>,
    /// Folders skipped because a live recorder holds them.
    pub busy: Vec<PathBuf>,
}

/// An exclusive claim on a recording folder, held by its recorder for its lifetime so
/// that a concurrent `grabd recover` leaves it alone. Released when dropped.
pub struct RecordingLock {
    _lock: nix::fcntl::Flock<File>,
}

impl RecordingLock {
    /// Take the lock without waiting; `Ok(None)` when someone else holds it.
    pub fn try_acquire(dir: &Path) -> Result<Option<Self>> {
        // The folder itself is locked: no lock file to create in (or leave behind in) a
        // folder that may be being removed.
        let file = File::open(dir).map_err(|e| Error::io("open", dir, e))?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(Some(RecordingLock { _lock: lock })),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
            Err((_, e)) => Err(Error::io("lock", dir, e.into())),
        }
    }
}

/// The spool's own lock. Recovery holds it exclusively while it picks the folders it
/// will finish; a recorder holds it shared while it creates and claims its folder and
/// while it removes it. So recovery never sees a folder that exists but is not yet
/// claimed, nor one half removed.
pub struct SpoolLock {
    _lock: nix::fcntl::Flock<File>,
}

impl SpoolLock {
    /// Wait for the lock (exclusive for recovery, shared for recorders). The lock is a
    /// flock on the spool folder itself.
    pub fn acquire(spool: &Path, exclusive: bool) -> Result<Self> {
        let path = spool;
        let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
        let mode = if exclusive {
            nix::fcntl::FlockArg::LockExclusive
        } else {
            nix::fcntl::FlockArg::LockShared
        };
        nix::fcntl::Flock::lock(file, mode)
            .map(|lock| SpoolLock { _lock: lock })
            .map_err(|(_, e)| Error::io("lock", path, e.into()))
    }
}

/// Remove every `*.tmp` directly in `dir`.
fn remove_stale_tmp(dir: &Path) -> Result<()> {
    for path in list_dir(dir)? {
        if path.extension().is_some_and(|e| e == "tmp") {
            tracing::info!(path = %path.display(), "removing stale temporary file");
            durable::remove_file(&path)?;
        }
    }
    Ok(())
}

fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
        paths.push(entry.map_err(|e| Error::io("list", dir, e))?.path());
    }
    paths.sort();
    Ok(paths)
}

/// Finish every cut-off recording under `spool` into `output`.
pub fn recover_spool(spool: &Path, output: &Path, muxer: MuxerSettings) -> Result<RecoveryReport> {
    let mut report = RecoveryReport::default();
    if !spool.is_dir() {
        return Ok(report);
    }
    durable::create_dir_all(output)?;
    // Claim the folders no recorder holds, under the spool lock; finish them after it.
    let mut claimed = Vec::new();
    {
        let _spool = SpoolLock::acquire(spool, true)?;
        for dir in list_dir(spool)?.into_iter().filter(|p| p.is_dir()) {
            match RecordingLock::try_acquire(&dir) {
                Ok(Some(lock)) => claimed.push((dir, lock)),
                Ok(None) => {
                    tracing::info!(dir = %dir.display(), "recording in progress; not recovering it");
                    report.busy.push(dir);
                }
                Err(e) => {
                    tracing::error!(dir = %dir.display(), error = %e, "cannot claim recording folder; left in place");
                    report.failed.push((dir, e.to_string()));
                }
            }
        }
    }
    for (dir, _lock) in claimed {
        match finish_recording_dir(&dir, output, true, muxer) {
            Ok(Some(finished)) => {
                tracing::info!(mkv = %finished.mkv.display(), "recovered recording");
                report.recovered.push(finished);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "could not recover recording; left in place");
                report.failed.push((dir, e.to_string()));
            }
        }
    }
    Ok(report)
}

/// Whether a manifest belongs to this very file (name and size; the manifest is written
/// only after its file is durable, and a rebuilt file gets a new manifest).
fn describes(manifest: &Manifest, mkv: &Path) -> bool {
    let size = std::fs::metadata(mkv).map(|m| m.len()).ok();
    mkv.file_name()
        .is_some_and(|n| n.to_string_lossy() == manifest.file.name)
        && size == Some(manifest.file.size_bytes)
}

/// Sort key of a part file `<chunk>.<stream>.mkv.part`: its stream's configured rank.
fn part_stream_rank(part: &Path, order: &[String]) -> usize {
    let name = part
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stream = name
        .strip_suffix(".mkv.part")
        .and_then(|stem| stem.split_once('.'))
        .map(|(_, stream)| stream.to_owned())
        .unwrap_or_default();
    order
        .iter()
        .position(|s| *s == stream)
        .unwrap_or(usize::MAX)
}

/// The id of a recording is the name of its spool folder.
fn recording_id(dir: &Path) -> Result<String> {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::BadFile {
            path: dir.to_owned(),
            reason: "not a recording folder".into(),
        })
}

/// Run the procedure in the module docs on one recording folder. `Ok(None)` when it
/// held no frame (then nothing is left: no file, no manifest, no folder).
pub fn finish_recording_dir(
    dir: &Path,
    output: &Path,
    recovered: bool,
    muxer: MuxerSettings,
) -> Result<Option<Finished>> {
    let id = recording_id(dir)?;
    let session = Session::read(dir).ok();
    if session.is_none() && dir.join(SESSION_FILE).exists() {
        tracing::warn!(dir = %dir.display(), "session file unreadable; manifest will lack configs");
    }
    remove_stale_tmp(dir)?;

    // Chunk id → its parts. Part names are `<chunk id>.<stream>.mkv.part`.
    let mut parts: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for path in list_dir(dir)? {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(stem) = name.strip_suffix(".mkv.part") {
            let chunk_id = stem.split('.').next().unwrap_or(stem).to_owned();
            parts.entry(chunk_id).or_default().push(path);
        }
    }
    // Parts left behind mean data that may be in no final file yet (a cut-off chunk,
    // or a chunk whose merge failed): the final file is then (re)built from the chunks.
    let had_parts = !parts.is_empty();
    let stream_order: Vec<String> = session
        .iter()
        .flat_map(|s| s.streams.iter().map(|c| c.name.clone()))
        .collect();
    for (chunk_id, mut chunk_parts) in parts {
        let chunk = dir.join(format!("{chunk_id}.mkv"));
        if !chunk.exists() {
            chunk_parts.sort_by_key(|p| part_stream_rank(p, &stream_order));
            merge_stream_files(&chunk_parts, &chunk, ReadMode::Salvage, muxer)?;
        }
        for part in &chunk_parts {
            durable::remove_file(part)?;
        }
    }

    let mkv = output.join(format!("{id}.mkv"));
    let manifest_file = manifest_path(&mkv);
    if had_parts || !mkv.exists() {
        durable::remove_file(&durable::tmp_path(&mkv))?;
        let tags = vec![(super::media::TAG_RECORDING_ID.to_owned(), id.clone())];
        if merge_recording_chunks(dir, &mkv, &tags, muxer, ReadMode::Salvage)?.is_none() {
            tracing::info!(dir = %dir.display(), "recording holds no frame; removing it");
            durable::remove_dir_all(dir)?;
            return Ok(None);
        }
    } else if let Some(manifest) = read_manifest(&manifest_file)
        .ok()
        .filter(|m| describes(m, &mkv))
    {
        // Finished before the cut: only the spool folder's removal was interrupted.
        durable::remove_dir_all(dir)?;
        return Ok(Some(Finished { mkv, manifest }));
    }
    let manifest = write_manifest(&mkv, session.as_ref(), &id, recovered)?;
    durable::remove_dir_all(dir)?;
    Ok(Some(Finished { mkv, manifest }))
}
