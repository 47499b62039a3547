//! Single-stream `.mkv.part` files and the background thread that keeps them durable.
//!
//! A part is created when its stream's first packet of the chunk exists (hardware H.264
//! encoders emit SPS/PPS only then), gets one track named after the stream, and global
//! tags that let recovery place it on the recording's timeline without the writer's
//! memory. While it is open the [`PartSyncer`] fsyncs it about every `interval`, off the
//! capture and encoder threads, so a power cut loses at most about one interval plus one
//! Matroska cluster.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ffmpeg_next::{self as ffmpeg, format, Dictionary, Rational};

use super::durable;
use super::encoder::StreamEncoder;
use super::error::{Error, Result};
use super::media::{create_mkv, write_mkv_header, MuxerSettings};

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

    /// Mux packets whose timestamps are in the encoder's time base. The file and its
    /// header are created with the first packet.
    pub fn write(&mut self, encoder: &StreamEncoder, packets: Vec<ffmpeg::Packet>) -> Result<()> {
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
            packet
                .write(&mut open.octx)
                .map_err(|e| Error::media(format!("write {}", self.path.display()), e))?;
            self.packets += 1;
        }
        Ok(())
    }

    fn create(&self, encoder: &StreamEncoder) -> Result<OpenPart> {
        let spec = encoder.track_spec();
        let mut octx = create_mkv(&self.path)?;
        let mut tags = Dictionary::new();
        for (k, v) in &self.global_tags {
            tags.set(k, v);
        }
        octx.set_metadata(tags);
        {
            let mut stream = octx
                .add_stream(ffmpeg::encoder::find(ffmpeg::codec::Id::None))
                .map_err(|e| Error::media("add stream", e))?;
            stream.set_parameters(spec.parameters);
            stream.set_time_base(spec.time_base);
            let mut meta = Dictionary::new();
            meta.set("title", &self.stream_name);
            for (k, v) in &self.track_tags {
                meta.set(k, v);
            }
            stream.set_metadata(meta);
            // SAFETY: the stream was just created and its codecpar is valid.
            unsafe { (*(*stream.as_mut_ptr()).codecpar).codec_tag = 0 };
        }
        write_mkv_header(&mut octx, &self.path, self.settings.intermediate())?;
        let out_time_base = octx
            .stream(0)
            .map(|s| s.time_base())
            .unwrap_or(Rational(1, 1000));
        Ok(OpenPart {
            octx,
            in_time_base: spec.time_base,
            out_time_base,
        })
    }

    /// Finish the file (Matroska trailer). No fsync here: the finalizer makes the merged
    /// chunk durable, and until then the syncer's last pass bounds the loss. Returns
    /// `None` when no packet was ever written (no file exists).
    pub fn close(mut self) -> Result<Option<ClosedPart>> {
        let Some(mut open) = self.open.take() else {
            return Ok(None);
        };
        if let Some(syncer) = &self.syncer {
            syncer.unregister(&self.path);
        }
        open.octx
            .write_trailer()
            .map_err(|e| Error::media(format!("finish {}", self.path.display()), e))?;
        drop(open);
        Ok(Some(ClosedPart {
            stream: self.stream_name.clone(),
            path: self.path.clone(),
            packets: self.packets,
        }))
    }
}

impl Drop for PartWriter {
    fn drop(&mut self) {
        // A part dropped without close() (encoder failure) keeps what it holds on disk
        // for the finalizer or recovery; only the syncer registration goes.
        if self.open.is_some() {
            if let Some(syncer) = &self.syncer {
                syncer.unregister(&self.path);
            }
        }
    }
}

/// fsyncs every open part file (and its directory, once) about every `interval`.
pub struct PartSyncer {
    state: Mutex<SyncState>,
    wake: Condvar,
    stop: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Default)]
struct SyncState {
    files: HashMap<PathBuf, Option<File>>,
    dirs_to_sync: Vec<PathBuf>,
    passes: u64,
}

impl PartSyncer {
    pub fn start(interval: Duration) -> Arc<Self> {
        let syncer = Arc::new(PartSyncer {
            state: Mutex::new(SyncState::default()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            thread: Mutex::new(None),
        });
        let worker = Arc::clone(&syncer);
        let handle = std::thread::Builder::new()
            .name("part-sync".into())
            .spawn(move || worker.run(interval))
            .ok();
        if handle.is_none() {
            tracing::error!(
                "could not start the part sync thread; parts are synced only when closed"
            );
        }
        *lock(&syncer.thread) = handle;
        syncer
    }

    fn register(&self, path: &Path) {
        let mut state = lock(&self.state);
        state.files.insert(path.to_owned(), None);
        if let Some(dir) = path.parent() {
            state.dirs_to_sync.push(dir.to_owned());
        }
    }

    fn unregister(&self, path: &Path) {
        lock(&self.state).files.remove(path);
    }

    /// Completed sync passes (for tests and benchmarks).
    pub fn passes(&self) -> u64 {
        lock(&self.state).passes
    }

    fn run(&self, interval: Duration) {
        loop {
            let mut state = lock(&self.state);
            state = match self.wake.wait_timeout(state, interval) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            // Take what to sync, then fsync without holding the lock: an fsync can
            // stall for seconds and encoder threads register/unregister meanwhile.
            let dirs = std::mem::take(&mut state.dirs_to_sync);
            for (path, file) in state.files.iter_mut() {
                if file.is_none() {
                    *file = File::open(path).ok();
                }
            }
            let files: Vec<(PathBuf, File)> = state
                .files
                .iter()
                .filter_map(|(p, f)| Some((p.clone(), f.as_ref()?.try_clone().ok()?)))
                .collect();
            drop(state);
            let mut dirs = dirs;
            dirs.dedup();
            for dir in dirs {
                if let Err(e) = durable::sync_dir(&dir) {
                    tracing::warn!(error = %e, "syncing a part directory failed");
                }
            }
            for (path, file) in files {
                if let Err(e) = file.sync_data() {
                    tracing::warn!(path = %path.display(), error = %e, "fsync of a part failed");
                }
            }
            lock(&self.state).passes += 1;
        }
    }

    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake.notify_all();
        if let Some(handle) = lock(&self.thread).take() {
            let _ = handle.join();
        }
    }
}

/// Lock a mutex, carrying on with the data if another thread panicked while holding it
/// (the state here stays consistent at every await point).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
