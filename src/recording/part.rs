//! Single-stream `.mkv.part` files and the background thread that keeps them durable.
//!
//! A part is created when its stream's first packet of the chunk exists (hardware H.264
//! encoders emit SPS/PPS only then), gets one track named after the stream, and global
//! tags that let recovery place it on the recording's timeline without the writer's
//! memory. While it grows, and once more when it is closed, the [`PartSyncer`] fsyncs it
//! off the capture and encoder threads, so a power cut loses at most about one Matroska
//! cluster plus one sync poll. The muxer holds a cluster in memory until it spans
//! `cluster_time_limit` of media; under a latency budget the encoder thread also ends a
//! cluster whose oldest packet was captured too long ago ([`PartWriter::end_cluster`]),
//! since a stream that sheds frames or runs slowly takes far longer than that in real
//! time to fill one.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use ffmpeg_next::{self as ffmpeg, format, Dictionary, Rational};

use super::durable;
use super::encoder::{StreamEncoder, TrackSpec};
use super::error::{Error, Result};
use super::events::ErrorCallback;
use super::faults::InjectedFaults;
use super::media::{create_mkv, write_mkv_header, MuxerSettings};
use crate::thread;

/// A part file being written by one encoder thread.
pub struct PartWriter {
    path: PathBuf,
    stream_name: String,
    track_tags: BTreeMap<String, String>,
    global_tags: Vec<(String, String)>,
    settings: MuxerSettings,
    syncer: Option<Arc<PartSyncer>>,
    open: Option<OpenPart>,
    packets: u64,
}

struct OpenPart {
    octx: format::context::Output,
    in_time_base: Rational,
    out_time_base: Rational,
    /// Capture time (monotonic µs) of the oldest packet in the muxer's open cluster:
    /// nothing of it is in the file yet.
    buffered_since_us: Option<i64>,
}

/// Add stream `stream_name`'s track to `octx`, as every file grabd writes names it: the
/// stream name as title, the user's `track_tags`, and grabd's stream tag.
pub(crate) fn add_stream_track(
    octx: &mut format::context::Output,
    stream_name: &str,
    track_tags: &BTreeMap<String, String>,
    spec: &TrackSpec,
) -> Result<()> {
    let mut stream = super::media::add_track(octx, spec.parameters.clone(), spec.time_base)?;
    let mut meta = Dictionary::new();
    meta.set("title", stream_name);
    for (k, v) in track_tags {
        meta.set(k, v);
    }
    // Set last: the user's tags (a TITLE) must not change which stream this is.
    meta.set(super::media::TAG_STREAM, stream_name);
    stream.set_metadata(meta);
    Ok(())
}

/// A finished part: its path and how many packets it holds.
#[derive(Debug, Clone)]
pub struct ClosedPart {
    pub stream: String,
    pub path: PathBuf,
    pub packets: u64,
}

impl PartWriter {
    pub fn new(
        path: PathBuf,
        stream_name: &str,
        track_tags: &BTreeMap<String, String>,
        global_tags: Vec<(String, String)>,
        settings: MuxerSettings,
        syncer: Option<Arc<PartSyncer>>,
    ) -> Self {
        PartWriter {
            path,
            stream_name: stream_name.to_owned(),
            track_tags: track_tags.clone(),
            global_tags,
            settings,
            syncer,
            open: None,
            packets: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Mux packets whose timestamps are in the encoder's time base, of frames captured
    /// at `captured_us` (monotonic µs) or later. The file and its header are created
    /// with the first packet.
    pub fn write(
        &mut self,
        encoder: &StreamEncoder,
        packets: impl IntoIterator<Item = ffmpeg::Packet>,
        captured_us: i64,
    ) -> Result<()> {
        for mut packet in packets {
            if self.open.is_none() {
                self.open = Some(self.create(encoder)?);
                if let Some(syncer) = &self.syncer {
                    syncer.register(&self.path);
                }
            }
            let Some(open) = self.open.as_mut() else {
                unreachable!("opened above")
            };
            packet.rescale_ts(open.in_time_base, open.out_time_base);
            packet.set_stream(0);
            packet.set_position(-1);
            let before = written_bytes(&mut open.octx);
            packet
                .write(&mut open.octx)
                .map_err(|e| Error::media(format!("write {}", self.path.display()), e))?;
            self.packets += 1;
            if written_bytes(&mut open.octx) != before {
                // The muxer wrote out its cluster: this packet opened the next one.
                open.buffered_since_us = Some(captured_us);
            } else {
                open.buffered_since_us.get_or_insert(captured_us);
            }
        }
        Ok(())
    }

    /// End the open cluster, so that it reaches the file (and the syncer), when its
    /// oldest packet was captured at or before `captured_by_us` (monotonic µs).
    pub fn end_cluster(&mut self, captured_by_us: i64) -> Result<()> {
        let Some(open) = self.open.as_mut() else {
            return Ok(());
        };
        if open.buffered_since_us.map_or(true, |t| t > captured_by_us) {
            return Ok(());
        }
        // SAFETY: the context is open with its header written; a NULL packet asks a
        // muxer that allows flushing (Matroska ends its cluster) to write out what it
        // buffers, and libavformat then flushes the I/O context (flush_packets).
        let ret =
            unsafe { ffmpeg::ffi::av_write_frame(open.octx.as_mut_ptr(), std::ptr::null_mut()) };
        if ret < 0 {
            return Err(Error::media(
                format!("end a cluster of {}", self.path.display()),
                ffmpeg::Error::from(ret),
            ));
        }
        open.buffered_since_us = None;
        Ok(())
    }

    /// Capture time (monotonic µs) of the oldest packet the open cluster holds, if it
    /// holds any: what [`PartWriter::end_cluster`] compares against.
    pub fn buffered_since_us(&self) -> Option<i64> {
        self.open.as_ref().and_then(|open| open.buffered_since_us)
    }

    fn create(&self, encoder: &StreamEncoder) -> Result<OpenPart> {
        let spec = encoder.track_spec()?;
        let mut octx = create_mkv(&self.path)?;
        let mut tags = Dictionary::new();
        for (k, v) in &self.global_tags {
            tags.set(k, v);
        }
        octx.set_metadata(tags);
        add_stream_track(&mut octx, &self.stream_name, &self.track_tags, &spec)?;
        write_mkv_header(&mut octx, &self.path, self.settings.intermediate())?;
        let out_time_base = octx
            .stream(0)
            .map(|s| s.time_base())
            .unwrap_or(Rational(1, 1000));
        Ok(OpenPart {
            octx,
            in_time_base: spec.time_base,
            out_time_base,
            buffered_since_us: None,
        })
    }

    /// Finish the file (Matroska trailer) and hand it to the syncer for its last fsync
    /// (never on this thread). The part is `None` when no packet was ever written (no
    /// file exists). When the trailer fails the part is still returned, beside the
    /// error: its clusters are on disk, and whoever holds it decides its fate.
    pub fn close(mut self) -> (Option<ClosedPart>, Result<()>) {
        let Some(mut open) = self.open.take() else {
            return (None, Ok(()));
        };
        let trailer = open.octx.write_trailer();
        drop(open);
        if let Some(syncer) = &self.syncer {
            syncer.release(&self.path);
        }
        let result =
            trailer.map_err(|e| Error::media(format!("finish {}", self.path.display()), e));
        (Some(self.closed()), result)
    }

    /// Stop writing without a trailer (the muxer is not to be trusted, e.g. after a
    /// panic): the file keeps what reached it, readable up to its last whole cluster.
    pub fn abandon(mut self) -> Option<ClosedPart> {
        self.open.take()?;
        if let Some(syncer) = &self.syncer {
            syncer.release(&self.path);
        }
        Some(self.closed())
    }

    fn closed(&self) -> ClosedPart {
        ClosedPart {
            stream: self.stream_name.clone(),
            path: self.path.clone(),
            packets: self.packets,
        }
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        // A part dropped without close() (encoder failure) keeps what it holds on disk
        // for the finalizer or recovery, synced one last time.
        if self.open.take().is_some() {
            if let Some(syncer) = &self.syncer {
                syncer.release(&self.path);
            }
        }
    }
}

/// Bytes the muxer has handed to its I/O context so far (buffered or written).
fn written_bytes(octx: &mut format::context::Output) -> i64 {
    // SAFETY: an open output context has a valid `pb`; seeking 0 bytes from the current
    // position only reports that position (avio_tell).
    unsafe { ffmpeg::ffi::avio_seek((*octx.as_mut_ptr()).pb, 0, nix::libc::SEEK_CUR) }
}

/// Keeps part files durable while they grow. Every `interval` (50 ms by default) it
/// looks at each open part's size and fsyncs the ones that grew, so a cluster is on
/// the card within about one interval plus one fsync of being written, not one fixed
/// period later. A part's directory is synced once when the part appears, and a part
/// that is closed gets one last fsync at once (its trailer, and the data written since
/// the last pass): the merged chunk that replaces it may be seconds away when the
/// finalizer is busy.
pub struct PartSyncer {
    state: Mutex<SyncState>,
    wake: Condvar,
    stop: AtomicBool,
    thread: Mutex<Option<thread::Handle<()>>>,
    on_error: Option<ErrorCallback>,
    /// Tests only ([`InjectedFaults::stall_sync`]).
    stall_first_sync: Option<Duration>,
}

#[derive(Default)]
struct SyncState {
    files: HashMap<PathBuf, Tracked>,
    dirs_to_sync: Vec<PathBuf>,
    failed: bool,
}

#[derive(Default)]
struct Tracked {
    file: Option<File>,
    synced_len: u64,
    /// Closed by its writer: sync once more, then forget.
    released: bool,
}

impl PartSyncer {
    /// Start the sync thread. `on_error` hears about the first failed fsync (with the
    /// path), so the recording can stop instead of writing data that will not last.
    pub fn start(
        interval: Duration,
        on_error: Option<ErrorCallback>,
        faults: &InjectedFaults,
    ) -> Arc<Self> {
        let syncer = Arc::new(PartSyncer {
            stall_first_sync: faults.stall_sync,
            state: Mutex::new(SyncState::default()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            thread: Mutex::new(None),
            on_error,
        });
        let worker = Arc::clone(&syncer);
        // A panicking syncer is a failed syncer: parts are no longer kept durable.
        let panicked = syncer.on_error.clone().map(|callback| {
            Arc::new(move |_: thread::ThreadExit| callback("panicked")) as thread::ExitSink
        });
        let handle = thread::spawn("part-sync", "", panicked, move |heartbeat| {
            worker.run(interval, heartbeat)
        })
        .ok();
        if handle.is_none() {
            tracing::error!("could not start the part sync thread; parts are not synced");
        }
        *lock(&syncer.thread) = handle;
        syncer
    }

    fn register(&self, path: &Path) {
        let mut state = lock(&self.state);
        state.files.insert(path.to_owned(), Tracked::default());
        if let Some(dir) = path.parent() {
            state.dirs_to_sync.push(dir.to_owned());
        }
        self.wake.notify_all();
    }

    /// The writer is done with `path`: one last fsync, then it is no longer watched.
    fn release(&self, path: &Path) {
        if let Some(tracked) = lock(&self.state).files.get_mut(path) {
            tracked.released = true;
        }
        self.wake.notify_all();
    }

    fn run(&self, interval: Duration, heartbeat: &thread::Heartbeat) {
        let mut stall = self.stall_first_sync;
        loop {
            heartbeat.beat();
            let mut state = lock(&self.state);
            let nothing_released = !state.files.values().any(|t| t.released);
            if nothing_released && state.dirs_to_sync.is_empty() {
                state = match self.wake.wait_timeout(state, interval) {
                    Ok((guard, _)) => guard,
                    Err(poisoned) => poisoned.into_inner().0,
                };
            }
            let stopping = self.stop.load(Ordering::Acquire);
            // Pick what to sync under the lock, fsync without it: an fsync can stall
            // for seconds while encoder threads register and release parts.
            let mut dirs = std::mem::take(&mut state.dirs_to_sync);
            dirs.dedup();
            let mut due = Vec::new();
            for (path, tracked) in state.files.iter_mut() {
                if tracked.file.is_none() {
                    tracked.file = File::open(path).ok();
                }
                let Some(file) = tracked.file.as_ref() else {
                    continue;
                };
                let len = file.metadata().map(|m| m.len()).unwrap_or(0);
                if len != tracked.synced_len {
                    if let Ok(clone) = file.try_clone() {
                        due.push((path.clone(), clone, len));
                    }
                }
            }
            let released: Vec<PathBuf> = state
                .files
                .iter()
                .filter(|(_, t)| t.released)
                .map(|(p, _)| p.clone())
                .collect();
            drop(state);

            let mut errors = Vec::new();
            for dir in dirs {
                if let Err(e) = durable::sync_dir(&dir) {
                    errors.push(e.to_string());
                }
            }
            if !due.is_empty() {
                if let Some(pause) = stall.take() {
                    tracing::warn!("injected fault: an fsync stalls for {pause:?}");
                    std::thread::sleep(pause);
                }
            }
            let mut synced = Vec::new();
            for (path, file, len) in due {
                match file.sync_data() {
                    Ok(()) => synced.push((path, len)),
                    Err(e) => errors.push(format!("fsync {}: {e}", path.display())),
                }
            }

            let mut state = lock(&self.state);
            for (path, len) in synced {
                if let Some(tracked) = state.files.get_mut(&path) {
                    tracked.synced_len = len;
                }
            }
            // A released part was synced in this pass (it was released before the pass
            // looked at it), so it can go.
            for path in released {
                state.files.remove(&path);
            }
            let first_failure = !errors.is_empty() && !state.failed;
            state.failed |= !errors.is_empty();
            drop(state);
            for e in &errors {
                tracing::error!(error = %e, "part sync failed");
            }
            if first_failure {
                if let Some(callback) = &self.on_error {
                    callback(&errors[0]);
                }
            }
            if stopping {
                return;
            }
        }
    }

    /// Sync what is pending one last time and stop the thread, waiting at most
    /// `deadline` (an fsync can stall for long on a failing card). `false` when the
    /// thread was still running then (it is reported and left running).
    pub fn shutdown(&self, deadline: Duration) -> bool {
        self.stop.store(true, Ordering::Release);
        self.wake.notify_all();
        match lock(&self.thread).take() {
            Some(handle) => handle.join_within(deadline) != thread::Joined::TimedOut,
            None => true,
        }
    }
}

/// Lock a mutex, carrying on with the data if another thread panicked while holding it
/// (the state here stays consistent at every await point).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
