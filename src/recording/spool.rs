//! Every name grabd gives a file or folder of a recording, and the locks on them. Names
//! are built and parsed here and nowhere else, so that recovery can tell what is grabd's
//! (and may be finished or deleted) from anything else that shares the card.
//!
//! ```text
//! <spool>/<recording id>/            recording folder (id: 2026-11-25T07-56-21.123Z[-N])
//!     .grabd-recording               marker: grabd created this folder
//!     session.json                   what recovery needs to write the manifest
//!     <chunk>.<stream>.mkv.part      one stream's part of a chunk, while it grows
//!     <chunk>.mkv                    a merged chunk (chunk: 00000, 00001... or the
//!                                    start-chunk callback's id)
//!     <any of the above>.tmp         a durable write that never completed
//! <output>/<recording id>.mkv        the final file, and <recording id>.json its manifest
//! ```
//!
//! A folder is a recording's only if its name is a recording id *and* it holds the
//! marker; inside one, only the names above are grabd's.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::durable;
use super::error::{Error, Result};

/// The marker file inside every recording folder grabd created.
pub const MARKER_FILE: &str = ".grabd-recording";
/// The session file inside a recording folder.
pub const SESSION_FILE: &str = "session.json";
const MARKER_TEXT: &[u8] = b"a grabd recording in progress; grabd recover finishes it\n";
const CHUNK_SUFFIX: &str = ".mkv";
const PART_SUFFIX: &str = ".mkv.part";
const TMP_SUFFIX: &str = ".tmp";
/// How many ids after the first choice are tried (taken ones, lost races) before
/// giving up.
const MAX_ID_ATTEMPTS: i64 = 1000;
/// The shape of a recording id; `d` is a digit.
const ID_SHAPE: &[u8] = b"dddd-dd-ddTdd-dd-dd.dddZ";

/// The recording id for wall-clock time `unix_us`: RFC 3339 UTC to the millisecond with
/// the colons left out (FAT/exFAT cards).
pub fn recording_id(unix_us: i64) -> String {
    crate::clock::rfc3339_ms(unix_us).replace(':', "-")
}

/// The wall-clock millisecond of a name that starts with a recording id (a recording
/// folder, `<id>.mkv`, `<id>.json`...).
fn id_millis(name: &str) -> Option<i64> {
    let head = name.get(..ID_SHAPE.len())?;
    if !is_recording_id(head) {
        return None;
    }
    // Back to RFC 3339: the time's dashes were colons.
    let mut rfc3339 = head.to_owned();
    rfc3339.replace_range(13..14, ":");
    rfc3339.replace_range(16..17, ":");
    let t = humantime::parse_rfc3339(&rfc3339).ok()?;
    let since_epoch = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(since_epoch.as_millis()).ok()
}

/// The latest recording id's millisecond among the names in `dir`.
fn latest_id_millis(dir: &Path) -> Option<i64> {
    let entries = std::fs::read_dir(dir).ok()?;
    entries
        .filter_map(|e| e.ok()?.file_name().to_str().and_then(id_millis))
        .max()
}

/// Whether `name` has the shape of a [`recording_id`] (`YYYY-MM-DDTHH-MM-SS.mmmZ`, or
/// with the `-N` suffix earlier versions gave a second id within one millisecond).
pub fn is_recording_id(name: &str) -> bool {
    let bytes = name.as_bytes();
    if bytes.len() < ID_SHAPE.len() {
        return false;
    }
    let (head, tail) = bytes.split_at(ID_SHAPE.len());
    let head_ok = head.iter().zip(ID_SHAPE).all(|(&c, &s)| match s {
        b'd' => c.is_ascii_digit(),
        _ => c == s,
    });
    let tail_ok = match tail {
        [] => true,
        [b'-', digits @ ..] => !digits.is_empty() && digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    head_ok && tail_ok
}

/// Create a recording folder with a fresh id under `spool` (an id whose final file is
/// not in `output` yet either) and mark it as grabd's. Creating the folder is the claim
/// on the id. Call it under a shared [`SpoolLock`], so that recovery never sees the
/// folder before its marker.
///
/// The id is the wall-clock millisecond, but never earlier than 1 ms after the latest
/// id in the spool or the output: a board without an RTC steps its clock back when NTP
/// arrives, and ids must stay unique and sort in the order recordings were made.
pub fn create_recording_dir(spool: &Path, output: &Path) -> Result<(String, PathBuf)> {
    create_recording_dir_at(spool, output, crate::clock::unix_us())
}

fn create_recording_dir_at(spool: &Path, output: &Path, now_us: i64) -> Result<(String, PathBuf)> {
    let after_latest = latest_id_millis(spool)
        .max(latest_id_millis(output))
        .map_or(i64::MIN, |ms| ms + 1);
    let first = (now_us / 1000).max(after_latest);
    for ms in first..first + MAX_ID_ATTEMPTS {
        let id = recording_id(ms * 1000);
        if final_mkv_path(output, &id).exists() {
            continue;
        }
        let dir = spool.join(&id);
        match std::fs::create_dir(&dir) {
            Ok(()) => {
                durable::sync_dir(spool)?;
                write_marker(&dir)?;
                return Ok((id, dir));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io("create directory", &dir, e)),
        }
    }
    Err(Error::Storage(format!(
        "no free recording id under {}",
        spool.display()
    )))
}

/// Create the marker in a new recording folder. Its existence is what counts, not its
/// text, so it is created in place (no temporary name a power cut could leave behind
/// instead of it), then synced with its folder.
fn write_marker(dir: &Path) -> Result<()> {
    use std::io::Write;
    let path = dir.join(MARKER_FILE);
    let mut file = File::create(&path).map_err(|e| Error::io("create", &path, e))?;
    file.write_all(MARKER_TEXT)
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io("write", &path, e))?;
    durable::sync_dir(dir)
}

/// Whether `dir` is a recording folder grabd created: a recording id holding the marker.
pub fn is_recording_dir(dir: &Path) -> bool {
    dir.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(is_recording_id)
        && dir.join(MARKER_FILE).is_file()
}

/// The id of recording folder `dir` (its name).
pub fn recording_id_of(dir: &Path) -> Result<String> {
    dir.file_name()
        .and_then(|n| n.to_str())
        .filter(|n| is_recording_id(n))
        .map(str::to_owned)
        .ok_or_else(|| Error::BadFile {
            path: dir.to_owned(),
            reason: "not a grabd recording folder".into(),
        })
}

/// The final file of recording `id` in `output`.
pub fn final_mkv_path(output: &Path, id: &str) -> PathBuf {
    output.join(format!("{id}{CHUNK_SUFFIX}"))
}

/// The manifest beside a final file.
pub fn manifest_path(mkv: &Path) -> PathBuf {
    mkv.with_extension("json")
}

/// The id of the `n`-th chunk when no start-chunk callback names chunks.
pub fn sequential_chunk_id(n: u64) -> String {
    format!("{n:05}")
}

/// Whether `name` can be part of a file name: 1-64 characters of A-Z a-z 0-9 _ - (no
/// dot, so that part names parse back unambiguously). Chunk ids and stream names are.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The merged file of chunk `chunk` in recording folder `dir`.
pub fn chunk_path(dir: &Path, chunk: &str) -> PathBuf {
    dir.join(format!("{chunk}{CHUNK_SUFFIX}"))
}

/// Stream `stream`'s part of chunk `chunk` in recording folder `dir`.
pub fn part_path(dir: &Path, chunk: &str, stream: &str) -> PathBuf {
    dir.join(part_name(chunk, stream))
}

/// The file name of stream `stream`'s part of chunk `chunk`.
pub fn part_name(chunk: &str, stream: &str) -> String {
    format!("{chunk}.{stream}{PART_SUFFIX}")
}

/// What a file in a recording folder is, by its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpoolFile {
    Marker,
    Session,
    Chunk {
        chunk: String,
    },
    Part {
        chunk: String,
        stream: String,
    },
    /// An unfinished durable write of a file grabd makes.
    Tmp(Box<SpoolFile>),
}

impl SpoolFile {
    /// Parse a file name; `None` for anything grabd does not make.
    pub fn parse(name: &str) -> Option<SpoolFile> {
        if let Some(of) = name.strip_suffix(TMP_SUFFIX) {
            return match SpoolFile::parse(of)? {
                SpoolFile::Tmp(_) => None,
                file => Some(SpoolFile::Tmp(Box::new(file))),
            };
        }
        if name == MARKER_FILE {
            return Some(SpoolFile::Marker);
        }
        if name == SESSION_FILE {
            return Some(SpoolFile::Session);
        }
        if let Some(stem) = name.strip_suffix(PART_SUFFIX) {
            let (chunk, stream) = stem.split_once('.')?;
            return (is_plain_name(chunk) && is_plain_name(stream)).then(|| SpoolFile::Part {
                chunk: chunk.to_owned(),
                stream: stream.to_owned(),
            });
        }
        let chunk = name.strip_suffix(CHUNK_SUFFIX)?;
        is_plain_name(chunk).then(|| SpoolFile::Chunk {
            chunk: chunk.to_owned(),
        })
    }

    /// Parse the file name of `path`.
    pub fn of(path: &Path) -> Option<SpoolFile> {
        path.file_name()
            .and_then(|n| n.to_str())
            .and_then(SpoolFile::parse)
    }
}

/// The temporary names of recording `id`'s final file and manifest in `output`.
pub fn final_tmp_paths(output: &Path, id: &str) -> [PathBuf; 2] {
    let mkv = final_mkv_path(output, id);
    [
        durable::tmp_path(&mkv),
        durable::tmp_path(&manifest_path(&mkv)),
    ]
}

/// The entries of `dir`, sorted by name.
pub fn list_dir(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io("list", dir, e))? {
        paths.push(entry.map_err(|e| Error::io("list", dir, e))?.path());
    }
    paths.sort();
    Ok(paths)
}

/// Remove a finished recording folder: every file grabd made in it (the marker last, so
/// a cut-off removal is still a recording folder), then the folder once it is empty.
/// Anything else is left in place with the folder, with one warning. Returns the names
/// left.
pub fn remove_recording_dir(dir: &Path) -> Result<Vec<String>> {
    let mut foreign = Vec::new();
    let mut marker = None;
    let entries = match list_dir(dir) {
        Ok(entries) => entries,
        Err(_) if !dir.exists() => return Ok(foreign),
        Err(e) => return Err(e),
    };
    let mut removed_any = false;
    for path in entries {
        match SpoolFile::of(&path) {
            Some(SpoolFile::Marker) => marker = Some(path),
            Some(_) if path.is_file() => {
                std::fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
                removed_any = true;
            }
            _ => foreign.push(
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
        }
    }
    if removed_any {
        durable::sync_dir(dir)?;
    }
    if !foreign.is_empty() {
        tracing::warn!(dir = %dir.display(), files = ?foreign, "left files grabd did not make in a finished recording folder");
        return Ok(foreign);
    }
    if let Some(marker) = marker {
        durable::remove_file(&marker)?;
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => durable::sync_dir(parent_of(dir))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove directory", dir, e)),
    }
    Ok(foreign)
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
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
        let file = File::open(spool).map_err(|e| Error::io("open", spool, e))?;
        let mode = if exclusive {
            nix::fcntl::FlockArg::LockExclusive
        } else {
            nix::fcntl::FlockArg::LockShared
        };
        nix::fcntl::Flock::lock(file, mode)
            .map(|lock| SpoolLock { _lock: lock })
            .map_err(|(_, e)| Error::io("lock", spool, e.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recording_ids_parse_back() {
        let id = recording_id(1_764_575_781_123_000);
        assert!(is_recording_id(&id), "{id}");
        assert_eq!(id_millis(&id), Some(1_764_575_781_123));
        assert_eq!(id_millis(&format!("{id}.mkv")), Some(1_764_575_781_123));
        assert!(
            is_recording_id(&format!("{id}-12")),
            "earlier versions' suffix"
        );
        for name in [
            "photos",
            "lost+found",
            "out",
            "2026-11-25T07-56-21.123Z-",
            "2026-11-25T07-56-21.123Zx",
            "2026-11-25T07-56-21.123",
            "2026-11-25T07:56:21.123Z",
        ] {
            assert!(!is_recording_id(name), "{name}");
        }
    }

    #[test]
    fn file_names_parse_back() {
        let dir = Path::new("/s/r");
        let part = part_path(dir, "00003", "rgb");
        assert_eq!(
            SpoolFile::of(&part),
            Some(SpoolFile::Part {
                chunk: "00003".into(),
                stream: "rgb".into()
            })
        );
        let chunk = chunk_path(dir, &sequential_chunk_id(3));
        assert_eq!(
            SpoolFile::of(&chunk),
            Some(SpoolFile::Chunk {
                chunk: "00003".into()
            })
        );
        assert_eq!(
            SpoolFile::of(&durable::tmp_path(&chunk)),
            Some(SpoolFile::Tmp(Box::new(SpoolFile::Chunk {
                chunk: "00003".into()
            })))
        );
        assert_eq!(SpoolFile::parse(SESSION_FILE), Some(SpoolFile::Session));
        assert_eq!(SpoolFile::parse(MARKER_FILE), Some(SpoolFile::Marker));
        for name in [
            "a.jpg",
            "notes.txt",
            "x.tmp",
            "00001.mkv.tmp.tmp",
            "a.b.c.mkv.part",
            ".mkv",
            "a.b.mkv",
            ".lock",
        ] {
            assert_eq!(SpoolFile::parse(name), None, "{name}");
        }
    }

    /// Issue 13 item 9: a clock stepped back (NTP on a board without an RTC) or two
    /// recordings within one millisecond still give ids that are unique and sort in the
    /// order the recordings were made, folders and final files alike.
    #[test]
    fn ids_increase_across_clock_steps_and_collisions() {
        let tmp = tempfile::tempdir().unwrap();
        let (spool, output) = (tmp.path().join("spool"), tmp.path().join("out"));
        std::fs::create_dir_all(&spool).unwrap();
        std::fs::create_dir_all(&output).unwrap();
        let noon = 1_764_590_400_000_000;
        let hour = 3_600_000_000;
        let (first, _) = create_recording_dir_at(&spool, &output, noon).unwrap();
        let (same_ms, _) = create_recording_dir_at(&spool, &output, noon).unwrap();
        // The first two are finished: only their final files are left.
        for id in [&first, &same_ms] {
            std::fs::remove_dir_all(spool.join(id)).unwrap();
            std::fs::write(final_mkv_path(&output, id), b"x").unwrap();
        }
        let (stepped_back, _) = create_recording_dir_at(&spool, &output, noon - hour).unwrap();
        let (later, _) = create_recording_dir_at(&spool, &output, noon + hour).unwrap();
        let ids = [first, same_ms, stepped_back, later];
        let mut names: Vec<String> = ids.iter().map(|id| format!("{id}.mkv")).collect();
        let made = names.clone();
        names.sort();
        assert_eq!(names, made, "final files sort in the order they were made");
        let mut sorted = ids.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, ids, "ids are unique and sort in order");
        assert_eq!(
            id_millis(&ids[3]),
            Some((noon + hour) / 1000),
            "a sane clock is kept"
        );
    }

    #[test]
    fn removing_a_recording_dir_keeps_foreign_files_and_the_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let (_, dir) = create_recording_dir(tmp.path(), tmp.path()).unwrap();
        std::fs::write(dir.join("00000.mkv"), b"x").unwrap();
        std::fs::write(dir.join("notes.txt"), b"mine").unwrap();
        assert_eq!(remove_recording_dir(&dir).unwrap(), ["notes.txt"]);
        assert!(is_recording_dir(&dir), "the marker stays with the folder");
        assert!(!dir.join("00000.mkv").exists());
        std::fs::remove_file(dir.join("notes.txt")).unwrap();
        assert!(remove_recording_dir(&dir).unwrap().is_empty());
        assert!(!dir.exists());
    }
}
