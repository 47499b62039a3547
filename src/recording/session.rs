//! [`Recording`]: one press-to-press recording, from its spool folder to the finished
//! `<output>/<id>.mkv` and manifest. Wraps a [`ChunkedWriter`] whose finalizer grows
//! the final file in the background, and ends through the same procedure as recovery.

use std::path::{Path, PathBuf};

use super::durable;
use super::error::{Error, Result};
use super::finalizer::{FinalOutput, Marks};
use super::manifest::{Session, SessionStream};
use super::media::TAG_RECORDING_ID;
use super::recovery::{finish_recording_dir, Finished};
use super::spool::{self, RecordingLock, SpoolLock};
use super::stream_config::StreamConfig;
use super::writer::{ChunkedWriter, Origin, StreamSender, StreamStats, WriterOptions};

/// A recording in progress.
pub struct Recording {
    id: String,
    dir: PathBuf,
    spool: PathBuf,
    output: PathBuf,
    writer: ChunkedWriter,
    session: Session,
    /// Shared with the finalizer, which writes them as the final file's chapters.
    marks: Marks,
    _lock: RecordingLock,
}

/// What a stopped recording left.
#[derive(Debug)]
pub struct Stopped {
    /// The final file and its manifest; `None` when no frame was recorded.
    pub finished: Option<Finished>,
    pub stats: Vec<StreamStats>,
    /// Problems on the way that did not prevent a final file (e.g. a chunk salvaged).
    pub errors: Vec<String>,
    pub chunks: u64,
}

impl Recording {
    /// Create the spool folder (with a unique id) and start writing.
    pub fn start(
        spool: &Path,
        output: &Path,
        streams: Vec<(String, StreamConfig)>,
        options: WriterOptions,
    ) -> Result<Self> {
        let recording = Self::prepare(spool, output, streams, options)?;
        recording.log_started();
        Ok(recording)
    }

    /// [`Recording::start`] without its log line: a recording made ready before it is
    /// known to be wanted (`grabd run` prepares one at a press's first edge, while the
    /// double-press window decides). Call [`Recording::log_started`] when it is used,
    /// or [`Recording::stop`] to drop it: without a frame it leaves nothing behind.
    pub fn prepare(
        spool: &Path,
        output: &Path,
        streams: Vec<(String, StreamConfig)>,
        mut options: WriterOptions,
    ) -> Result<Self> {
        durable::create_dir_all(spool)?;
        durable::create_dir_all(output)?;
        // Create and claim the folder under the spool lock, so that a concurrent
        // recovery never takes it for a cut-off recording.
        let (id, dir, lock) = {
            let _spool = SpoolLock::acquire(spool, false)?;
            let (id, dir) = spool::create_recording_dir(spool, output)?;
            let lock = RecordingLock::try_acquire(&dir)?.ok_or_else(|| {
                Error::Storage(format!("{} is locked by another recorder", dir.display()))
            })?;
            (id, dir, lock)
        };
        let session = Session {
            recording_id: id.clone(),
            streams: streams
                .iter()
                .map(|(name, config)| SessionStream {
                    name: name.clone(),
                    config: config.clone(),
                })
                .collect(),
            software_version: env!("CARGO_PKG_VERSION").to_owned(),
            stopped_unix_us: None,
            clock_step_us: None,
            marks_us: Vec::new(),
            stats: Vec::new(),
        };
        let marks = Marks::default();
        let result = (|| {
            session.write(&dir)?;
            options.final_output = Some(FinalOutput {
                path: spool::final_mkv_path(output, &id),
                global_tags: vec![(TAG_RECORDING_ID.to_owned(), id.clone())],
                marks: marks.clone(),
            });
            let mut writer = ChunkedWriter::with_streams(&id, &dir, streams, options)?;
            writer.start()?;
            Ok(writer)
        })();
        let writer = match result {
            Ok(writer) => writer,
            Err(e) => {
                // Nothing was recorded: leave no trace.
                let _spool = SpoolLock::acquire(spool, false);
                let _ = spool::remove_recording_dir(&dir);
                return Err(e);
            }
        };
        Ok(Recording {
            id,
            dir,
            spool: spool.to_owned(),
            output: output.to_owned(),
            writer,
            session,
            marks,
            _lock: lock,
        })
    }

    /// Say that the recording started (what `grabd run` and the rig watch for).
    pub fn log_started(&self) {
        tracing::info!(id = %self.id, dir = %self.dir.display(), "recording started");
    }

    /// Bookmark the moment `at_monotonic_us` (a double press, `grabd ctl mark`): a
    /// chapter in the final file and an entry of the manifest's `marks_s`. It is made
    /// durable at once in the session file, so a power cut keeps it. Returns its media
    /// time in µs (0 before the first frame).
    pub fn mark(&mut self, at_monotonic_us: i64) -> Result<i64> {
        let media_us = self
            .writer
            .origin()
            .map_or(0, |o| (at_monotonic_us - o.monotonic_us).max(0));
        self.marks.push(media_us);
        self.session.marks_us = self.marks.snapshot();
        self.session.write(&self.dir)?;
        Ok(media_us)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn spool_dir(&self) -> &Path {
        &self.dir
    }

    pub fn sender(&self, stream: &str) -> Option<StreamSender> {
        self.writer.sender(stream)
    }

    pub fn writer(&self) -> &ChunkedWriter {
        &self.writer
    }

    /// Stop writing and finish the final file and manifest. The spool folder goes only
    /// once both are durable; if finishing fails it stays for recovery.
    pub fn stop(mut self) -> Result<Stopped> {
        let (stopped_unix_us, clock_step_us) = stop_time(self.writer.origin());
        if let Some(step) = clock_step_us {
            tracing::warn!(
                step_s = step as f64 / 1e6,
                "the wall clock stepped during the recording; times follow the monotonic clock"
            );
        }
        let report = self.writer.stop()?;
        for e in &report.finalize.errors {
            tracing::warn!(error = %e, "while finishing the recording");
        }
        self.session.stopped_unix_us = Some(stopped_unix_us);
        self.session.clock_step_us = clock_step_us;
        self.session.stats = report.streams.clone();
        self.session.write(&self.dir)?;
        if !report.left_running.is_empty() {
            // Keep the folder claimed until the process exits, so that no recovery in
            // this process finishes it under a thread that still writes there.
            std::mem::forget(self._lock);
            return Err(Error::LeftForRecovery {
                threads: report.left_running.join(", "),
                dir: self.dir,
            });
        }
        let finished = {
            // Removing the folder happens under the spool lock (see SpoolLock).
            let _spool = SpoolLock::acquire(&self.spool, false)?;
            let known = report
                .finalize
                .final_output
                .as_ref()
                .and_then(|(_, summary)| summary.file.as_ref());
            finish_recording_dir(&self.dir, &self.output, false, Default::default(), known)?
        };
        Ok(Stopped {
            finished,
            stats: report.streams,
            errors: report.finalize.errors,
            chunks: report.chunks_rotated,
        })
    }
}

/// A wall-clock step smaller than this is the clock being slewed, not stepped.
const CLOCK_STEP_US: i64 = 1_000_000;

/// The wall-clock time of stopping now, as the recording's start plus the time the
/// monotonic clock says has passed (so a clock stepped back by NTP never makes a
/// recording stop before it started), and how far the wall clock stepped meanwhile
/// when that is over [`CLOCK_STEP_US`].
fn stop_time(origin: Option<Origin>) -> (i64, Option<i64>) {
    let now_unix = crate::clock::unix_us();
    let Some(origin) = origin else {
        return (now_unix, None);
    };
    let by_monotonic = origin.unix_us + (crate::clock::monotonic_us() - origin.monotonic_us);
    let step = now_unix - by_monotonic;
    (by_monotonic, (step.abs() > CLOCK_STEP_US).then_some(step))
}
