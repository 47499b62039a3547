//! The background finalizer: merges each finished chunk's parts into `NNNNN.mkv` and,
//! when a final output is configured, appends the chunk to the growing final file, so
//! that stopping leaves only the last chunk to do. Runs on its own thread; encoder
//! threads never wait for it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;

use super::durable;
use super::error::Result;
use super::events::ErrorCallback;
use super::faults::InjectedFaults;
use super::media::MuxerSettings;
use super::merge::{
    merge_recording_chunks, merge_stream_files_paced, ConcatWriter, DeclaredTrack, MergeSummary,
    ReadMode,
};
use super::part::ClosedPart;
use super::pressure::Pressure;

/// How far the finalizer's backlog may grow while it waits for the encoders: past it the
/// finalizer works on whatever the encoders' state, so that a board that stays short of
/// CPU still has at most this much media to merge at stop (stop stays bounded), at the
/// price of frames its merges then cost.
pub const MAX_DEFERRED_MEDIA: Duration = Duration::from_secs(300);

/// When the finalizer works: it yields to encoders that are behind their capture (see
/// [`Pressure`]), between chunks and between the packets it copies, while its backlog
/// of chunks spans less than [`MAX_DEFERRED_MEDIA`].
pub struct Pacing {
    pub pressure: Arc<Pressure>,
    /// Media time each chunk covers.
    pub chunk_length: Duration,
}

/// The pause point the finalizer's loops call: waits while the encoders are behind and
/// the backlog (`chunks_waiting` more chunks) is small enough, adding up the time.
struct Pause<'a> {
    pacing: &'a Pacing,
    jobs: &'a Receiver<ChunkJob>,
    waited: std::cell::Cell<Duration>,
}

impl Pause<'_> {
    fn point(&self) {
        let backlog = self
            .pacing
            .chunk_length
            .saturating_mul(u32::try_from(self.jobs.len()).unwrap_or(u32::MAX));
        if backlog < MAX_DEFERRED_MEDIA {
            let waited = self.pacing.pressure.wait_while_behind();
            self.waited.set(self.waited.get() + waited);
        }
    }
}

/// A chunk whose parts are all closed.
#[derive(Debug)]
pub struct ChunkJob {
    pub id: String,
    /// µs of media time from the recording's origin.
    pub start_us: i64,
    pub parts: Vec<ClosedPart>,
}

/// Where the recording's single final file goes, and its global tags.
#[derive(Debug, Clone)]
pub struct FinalOutput {
    pub path: PathBuf,
    pub global_tags: Vec<(String, String)>,
    /// Bookmarks made while recording, written as chapters when the file is finished.
    pub marks: Marks,
}

/// A recording's bookmarks in media µs, shared by the recording (which adds them) and
/// the finalizer (which writes them as chapters at the end).
#[derive(Debug, Clone, Default)]
pub struct Marks(std::sync::Arc<std::sync::Mutex<Vec<i64>>>);

impl Marks {
    pub fn push(&self, media_us: i64) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(media_us);
    }

    /// The marks so far, in time order.
    pub fn snapshot(&self) -> Vec<i64> {
        let mut marks = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        marks.sort_unstable();
        marks
    }
}

/// A merged chunk on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct ChunkInfo {
    pub id: String,
    pub path: PathBuf,
    pub start_us: i64,
    pub summary: MergeSummary,
}

#[derive(Debug, Default)]
pub struct FinalizeReport {
    pub chunks: Vec<ChunkInfo>,
    /// The finished final file, when one was configured and anything was recorded.
    pub final_output: Option<(PathBuf, MergeSummary)>,
    pub errors: Vec<String>,
    /// How long the finalizer waited for encoders that were behind their capture.
    pub waited_for_encoders: Duration,
}

/// Run until the job channel closes; then finish the final file, which has a track for
/// each of the configured `streams`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    dir: &Path,
    jobs: Receiver<ChunkJob>,
    final_output: Option<FinalOutput>,
    streams: &[DeclaredTrack],
    muxer: MuxerSettings,
    on_error: Option<ErrorCallback>,
    faults: &InjectedFaults,
    pacing: &Pacing,
) -> FinalizeReport {
    crate::thread::lower_priority(crate::thread::FINALIZER_NICE);
    let mut report = FinalizeReport::default();
    let pause = Pause {
        pacing,
        jobs: &jobs,
        waited: Default::default(),
    };
    let point = || pause.point();
    let mut growing = Growing::default();
    // A final file must hold every chunk: after a failed merge it is left to the
    // recording's finish (recovery) procedure, which salvages the parts first.
    let mut chunk_failed = false;
    for job in &jobs {
        faults.before_chunk();
        point();
        match finalize_chunk(dir, &job, streams, muxer, &point) {
            Ok(Some(chunk)) => {
                if let Some(output) = &final_output {
                    if let Err(e) = growing.add(output, &chunk, streams, muxer, &point) {
                        tracing::warn!(error = %e, "appending to the final file failed; it will be rebuilt from the chunks at stop");
                        growing.abandon();
                    }
                }
                report.chunks.push(chunk);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(chunk = %job.id, error = %e, "chunk merge failed; parts kept for recovery");
                report.errors.push(format!("chunk {}: {e}", job.id));
                // No final file will be made from this run: stop growing one.
                chunk_failed = true;
                growing.abandon();
                if let Some(callback) = &on_error {
                    callback("finalizer");
                }
            }
        }
    }
    report.waited_for_encoders = pause.waited.get();
    if !report.waited_for_encoders.is_zero() {
        tracing::info!(
            waited_ms = report.waited_for_encoders.as_millis() as u64,
            "the finalizer waited for encoders that were behind their capture"
        );
    }
    if chunk_failed {
        return report;
    }
    if let Some(output) = &final_output {
        match growing.finish(dir, output, streams, muxer) {
            Ok(Some(summary)) => report.final_output = Some((output.path.clone(), summary)),
            Ok(None) => {}
            Err(e) => report.errors.push(format!("final file: {e}")),
        }
    }
    report
}

/// Merge a chunk's parts durably, then remove the parts the merge consumed (only those:
/// a part it could not read stays for recovery).
fn finalize_chunk(
    dir: &Path,
    job: &ChunkJob,
    streams: &[DeclaredTrack],
    muxer: MuxerSettings,
    pause: &dyn Fn(),
) -> Result<Option<ChunkInfo>> {
    // Tracks in the configured order, whatever order the streams arrived in.
    let mut parts: Vec<&ClosedPart> = job.parts.iter().collect();
    parts.sort_by_key(|p| streams.iter().position(|s| s.name == p.stream));
    let parts: Vec<PathBuf> = parts.into_iter().map(|p| p.path.clone()).collect();
    let path = super::spool::chunk_path(dir, &job.id);
    let merged = match merge_stream_files_paced(&parts, &path, ReadMode::Strict, muxer, pause) {
        Ok(merged) => merged,
        Err(e) => {
            // A part cut short by a failed encoder is still readable up to its last cluster.
            tracing::warn!(chunk = %job.id, error = %e, "strict merge failed; salvaging");
            merge_stream_files_paced(&parts, &path, ReadMode::Salvage, muxer, pause)?
        }
    };
    for part in &merged.consumed {
        durable::remove_file(part)?;
    }
    Ok(merged.summary.map(|summary| ChunkInfo {
        id: job.id.clone(),
        path,
        start_us: job.start_us,
        summary,
    }))
}

/// The final file as it grows. It opens with the first chunk, declaring every configured
/// stream's track (empty while the stream sends nothing). Only a stream whose codec
/// parameters come with its first packet (an encoder with in-band headers) and that no
/// chunk held yet keeps it closed; chunks before it opens wait in `waiting`.
#[derive(Default)]
struct Growing {
    writer: Option<ConcatWriter>,
    waiting: Vec<PathBuf>,
    /// The streams the waiting chunks hold.
    seen: Vec<String>,
    /// An append failed: rebuild from the chunk files at the end instead.
    broken: bool,
}

impl Growing {
    /// Stop growing the file (its temp file goes); chunks are still kept.
    fn abandon(&mut self) {
        self.broken = true;
        self.writer = None;
    }

    fn add(
        &mut self,
        output: &FinalOutput,
        chunk: &ChunkInfo,
        streams: &[DeclaredTrack],
        muxer: MuxerSettings,
        pause: &dyn Fn(),
    ) -> Result<()> {
        if self.broken {
            return Ok(());
        }
        self.waiting.push(chunk.path.clone());
        if self.writer.is_none() {
            self.seen
                .extend(chunk.summary.packets.iter().map(|(n, _)| n.clone()));
            let declarable = streams
                .iter()
                .all(|s| s.spec.is_some() || self.seen.contains(&s.name));
            if !declarable {
                return Ok(());
            }
            self.writer = Some(ConcatWriter::create(
                &output.path,
                &self.waiting,
                streams,
                &output.global_tags,
                muxer,
            )?);
        }
        if let Some(writer) = self.writer.as_mut() {
            for path in self.waiting.drain(..) {
                writer.append_paced(&path, ReadMode::Strict, pause)?;
            }
            writer.sync()?;
        }
        Ok(())
    }

    fn finish(
        mut self,
        dir: &Path,
        output: &FinalOutput,
        streams: &[DeclaredTrack],
        muxer: MuxerSettings,
    ) -> Result<Option<MergeSummary>> {
        if let Some(mut writer) = self.writer.take() {
            let appended = self
                .waiting
                .drain(..)
                .try_for_each(|path| writer.append(&path, ReadMode::Strict));
            match appended.and_then(|()| writer.finish(&output.marks.snapshot())) {
                Ok(summary) => return Ok(Some(summary)),
                Err(e) => {
                    tracing::warn!(error = %e, "finishing the grown final file failed; rebuilding it from the chunks")
                }
            }
        }
        // Never opened (a stream's parameters never came) or broken: build it from the
        // chunks.
        merge_recording_chunks(
            dir,
            &output.path,
            streams,
            &output.global_tags,
            &output.marks.snapshot(),
            muxer,
            ReadMode::Strict,
        )
    }
}
