//! Finishing recordings: the normal end of a recording and boot-time recovery of one
//! that was cut off are the same procedure, run on a recording's spool folder:
//!
//! Only folders grabd created (see [`spool`]) are claimed, and only files whose names
//! grabd makes are deleted; anything else is left in place with one warning.
//!
//! 1. delete stale `*.tmp` (never complete: only `persist` gives a file its name);
//! 2. salvage the `.mkv.part` files of every unmerged chunk into `NNNNN.mkv` (a cut-off
//!    Matroska file is readable up to its last complete cluster), merge parts a chunk
//!    lacks into it, then drop exactly the parts the chunk lists as held;
//! 3. concatenate the chunks into `<output>/<id>.mkv`, unless that already exists
//!    (it is renamed into place only once complete);
//! 4. read the final file back into its manifest, then remove the spool folder.
//!
//! Each step's result is durable before the step that deletes its inputs, so a power
//! cut during recovery itself leaves something the next recovery finishes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::durable;
use super::error::Result;
use super::manifest::{read_manifest, write_manifest, Manifest, Session};
use super::media::{self, MuxerSettings};
use super::merge::{
    merge_recording_chunks, merge_stream_files, parts_in_chunk, FileFacts, ReadMode,
};
use super::spool::{
    self, list_dir, manifest_path, RecordingLock, SpoolFile, SpoolLock, SESSION_FILE,
};

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
    /// Entries of the spool that grabd did not make (left in place, one warning).
    pub foreign: Vec<PathBuf>,
}

/// Remove every stale temporary file grabd made directly in `dir`.
fn remove_stale_tmp(dir: &Path) -> Result<()> {
    for path in list_dir(dir)? {
        if matches!(SpoolFile::of(&path), Some(SpoolFile::Tmp(_))) {
            tracing::info!(path = %path.display(), "removing stale temporary file");
            durable::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Finish every cut-off recording under `spool` into `output`.
pub fn recover_spool(spool: &Path, output: &Path, muxer: MuxerSettings) -> Result<RecoveryReport> {
    let mut report = RecoveryReport::default();
    if !spool.is_dir() {
        return Ok(report);
    }
    media::check_utf8_path(spool)?;
    media::check_utf8_path(output)?;
    durable::create_dir_all(output)?;
    // Claim the folders no recorder holds, under the spool lock; finish them after it.
    let mut claimed = Vec::new();
    {
        let _spool = SpoolLock::acquire(spool, true)?;
        for dir in list_dir(spool)? {
            if !spool::is_recording_dir(&dir) {
                if !remove_unmarked_empty_recording_dir(&dir)? {
                    report.foreign.push(dir);
                }
                continue;
            }
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
    if !report.foreign.is_empty() {
        let names: Vec<String> = report
            .foreign
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        tracing::warn!(spool = %spool.display(), entries = ?names, "left entries grabd did not make in the spool");
    }
    for (dir, _lock) in claimed {
        match finish_recording_dir(&dir, output, true, muxer, None) {
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

/// A folder named like a recording but without the marker is what a power cut between
/// creating a recording folder and writing its marker leaves; it is removed only when
/// empty (then nothing in it can be anyone's). Returns whether it was removed.
fn remove_unmarked_empty_recording_dir(dir: &Path) -> Result<bool> {
    let id_named = dir
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(spool::is_recording_id);
    if !id_named || !dir.is_dir() || std::fs::remove_dir(dir).is_err() {
        return Ok(false);
    }
    durable::sync_dir(dir.parent().unwrap_or(Path::new(".")))?;
    Ok(true)
}

/// Whether a manifest belongs to this very file (name and size; the manifest is written
/// only after its file is durable, and a rebuilt file gets a new manifest).
fn describes(manifest: &Manifest, mkv: &Path) -> bool {
    let size = std::fs::metadata(mkv).map(|m| m.len()).ok();
    mkv.file_name()
        .is_some_and(|n| n.to_string_lossy() == manifest.file.name)
        && size == Some(manifest.file.size_bytes)
}

/// Sort key of a part: its stream's configured rank.
fn part_stream_rank(part: &Path, order: &[String]) -> usize {
    match SpoolFile::of(part) {
        Some(SpoolFile::Part { stream, .. }) => order
            .iter()
            .position(|s| *s == stream)
            .unwrap_or(usize::MAX),
        _ => usize::MAX,
    }
}

/// Run the procedure in the module docs on one recording folder. `Ok(None)` when it
/// held no frame (then nothing is left: no file, no manifest, no folder).
///
/// `known` is what the recorder knows of a final file it finished (see
/// [`write_manifest`]); recovery passes `None`.
pub fn finish_recording_dir(
    dir: &Path,
    output: &Path,
    recovered: bool,
    muxer: MuxerSettings,
    known: Option<&FileFacts>,
) -> Result<Option<Finished>> {
    let mut known = known.cloned();
    let id = spool::recording_id_of(dir)?;
    let session = Session::read(dir).ok();
    if session.is_none() && dir.join(SESSION_FILE).exists() {
        tracing::warn!(dir = %dir.display(), "session file unreadable; manifest will lack configs");
    }
    remove_stale_tmp(dir)?;

    // Chunk id → its parts.
    let mut parts: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for path in list_dir(dir)? {
        if let Some(SpoolFile::Part { chunk, .. }) = SpoolFile::of(&path) {
            parts.entry(chunk).or_default().push(path);
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
        chunk_parts.sort_by_key(|p| part_stream_rank(p, &stream_order));
        let chunk = spool::chunk_path(dir, &chunk_id);
        let mut inputs = Vec::new();
        if chunk.exists() {
            // Parts the chunk holds go; any it lacks (a part that missed its chunk) are
            // merged into it.
            let held = parts_in_chunk(&chunk)?;
            let (in_chunk, missing): (Vec<PathBuf>, Vec<PathBuf>) =
                chunk_parts.into_iter().partition(|p| {
                    p.file_name()
                        .is_some_and(|n| held.iter().any(|h| n == h.as_str()))
                });
            for part in &in_chunk {
                durable::remove_file(part)?;
            }
            if missing.is_empty() {
                continue;
            }
            tracing::warn!(chunk = %chunk.display(), parts = ?missing, "merging parts the chunk lacks into it");
            inputs.push(chunk.clone());
            chunk_parts = missing;
        }
        inputs.extend(chunk_parts);
        let merged = merge_stream_files(&inputs, &chunk, ReadMode::Salvage, muxer)?;
        for part in &merged.consumed {
            durable::remove_file(part)?;
        }
    }

    let mkv = spool::final_mkv_path(output, &id);
    let manifest_file = manifest_path(&mkv);
    for tmp in spool::final_tmp_paths(output, &id) {
        durable::remove_file(&tmp)?;
    }
    if had_parts || !mkv.exists() {
        let tags = vec![(super::media::TAG_RECORDING_ID.to_owned(), id.clone())];
        let marks_us = session.as_ref().map_or(&[][..], |s| &s.marks_us[..]);
        match merge_recording_chunks(dir, &mkv, &[], &tags, marks_us, muxer, ReadMode::Salvage)? {
            Some(summary) => known = summary.file,
            None => {
                tracing::info!(dir = %dir.display(), "recording holds no frame; removing it");
                spool::remove_recording_dir(dir)?;
                return Ok(None);
            }
        }
    } else if let Some(manifest) = read_manifest(&manifest_file)
        .ok()
        .filter(|m| describes(m, &mkv))
    {
        // Finished before the cut: only the spool folder's removal was interrupted.
        spool::remove_recording_dir(dir)?;
        return Ok(Some(Finished { mkv, manifest }));
    }
    let manifest = write_manifest(&mkv, session.as_ref(), &id, recovered, known.as_ref())?;
    spool::remove_recording_dir(dir)?;
    Ok(Some(Finished { mkv, manifest }))
}
