//! `grabd record`: start the configured sources, feed the recording, stop on duration,
//! signal, full storage or a failed stream, and finish the final file.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};

use super::sources::{self, Reopen, Sources};
use super::storage::{self, SpaceGuard, StorageError};
use crate::capture::FrameSource;
use crate::config::{Batching, Config, SourceLossPolicy};
use crate::recording::{self, ErrorCallback, Finished, Frame, Recording, StreamStats};
use crate::sensors::{encode_batch, Imu, ImuSample};
use crate::thread::{self, ExitSink, ThreadExit};

/// Where a source thread hands its frames: a recording's stream, or the service's tap
/// that feeds whichever recording is running.
pub type FrameSink = Arc<dyn Fn(Frame) + Send + Sync>;

/// Where the sample times in an IMU payload count from.
#[derive(Clone)]
pub(crate) enum ImuTimeline {
    /// The recording's origin, known once its first frame is processed: packets wait
    /// for it (`grabd record`, one recording per run of the sources).
    Recording(Arc<OnceLock<i64>>),
    /// CLOCK_MONOTONIC itself (`grabd run`: the sources outlive recordings, and each
    /// stream's tap puts the times on its recording's timeline).
    Monotonic,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Recording(#[from] recording::Error),
    /// A camera or IMU could not be opened or set up; the message names the device.
    #[error("{0}")]
    Source(String),
    /// Finishing failed after the recording had stopped for a failure: the first
    /// failure is the one that explains it (the later one often follows from it, e.g.
    /// a file system remounted read-only after an I/O error).
    #[error("{why}; then finishing failed: {cause}")]
    FinishAfterFailure {
        why: String,
        cause: recording::Error,
    },
}

/// Why a recording ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    Duration,
    Signal,
    /// Free space fell to the reserve needed to finish.
    StorageFull,
    /// A source or encoder failed; the name says which.
    Failed(String),
}

#[derive(Debug)]
pub struct Outcome {
    pub finished: Option<Finished>,
    pub reason: StopReason,
    pub stats: Vec<StreamStats>,
    pub errors: Vec<String>,
}

/// How often the session loop looks at the stop conditions.
const POLL: Duration = Duration::from_millis(50);
const SOURCE_JOIN_DEADLINE: Duration = Duration::from_secs(5);

/// Record until `duration` passes or `stop` is set, then finish.
pub fn record(
    config: &Config,
    spool: &Path,
    output: &Path,
    duration: Option<Duration>,
    stop: &AtomicBool,
) -> Result<Outcome, RuntimeError> {
    let mut streams = config.stream_configs();
    let mut guard = SpaceGuard::new(
        config.min_free_bytes,
        config.writer.chunk_length,
        storage::expected_media_rate(&config.streams),
    );
    // Cameras and IMUs are opened before any file or folder exists: one that is
    // missing or refuses its settings fails the start with a message naming it. What
    // they negotiated (size, timestamps) goes into the stream configs, hence the manifest.
    let opened = sources::open(config, &mut streams).map_err(RuntimeError::Source)?;
    storage::check_not_marked_full(output)?;
    let created = storage::preflight(&[spool, output], guard.reserve())?;

    let failure: Arc<Mutex<Option<String>>> = Arc::default();
    let mut options = config.writer.clone();
    options.on_error = Some(keep_first_failure(&failure));
    let recording = match Recording::start(spool, output, streams, options) {
        Ok(recording) => recording,
        Err(e) => {
            // A refusal leaves nothing behind, not even the folders made for it.
            storage::remove_created(&created);
            return Err(e.into());
        }
    };
    let sources_stop = Arc::new(AtomicBool::new(false));
    let sink_for = |name: &str| -> Option<FrameSink> {
        let sender = recording.sender(name)?;
        Some(Arc::new(move |frame| {
            sender.push(frame);
        }))
    };
    let origin: Arc<OnceLock<i64>> = Arc::default();
    let sources = start_sources(
        config,
        opened,
        &sink_for,
        &sources_stop,
        &failure,
        &ImuTimeline::Recording(Arc::clone(&origin)),
    );

    let started = Instant::now();
    let mut last_space_check = Instant::now() - Duration::from_secs(1);
    let reason = loop {
        if stop.load(Ordering::Acquire) {
            break StopReason::Signal;
        }
        if origin.get().is_none() {
            if let Some(o) = recording.writer().origin() {
                let _ = origin.set(o.monotonic_us);
            }
        }
        if duration.is_some_and(|d| started.elapsed() >= d) {
            break StopReason::Duration;
        }
        if let Some(why) = failure.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            break StopReason::Failed(why);
        }
        if last_space_check.elapsed() >= Duration::from_millis(500) {
            last_space_check = Instant::now();
            match storage::free_bytes_while_recording(spool, output) {
                Ok(free) if guard.must_stop(free) => {
                    tracing::warn!(
                        free_mb = free >> 20,
                        reserve_mb = guard.reserve() >> 20,
                        "storage nearly full; stopping while there is room to finish"
                    );
                    break StopReason::StorageFull;
                }
                Ok(_) => {}
                // Storage that cannot even be asked (its folder removed, the card gone)
                // is a failure of the recording: stop and finish what can be finished.
                Err(e) => break StopReason::Failed(format!("checking free space: {e}")),
            }
        }
        std::thread::sleep(POLL);
    };
    tracing::info!(?reason, "stopping");
    sources_stop.store(true, Ordering::Release);
    join_sources(sources);
    storage::restore_output(spool, output);
    let stopped = recording.stop().map_err(|cause| match &reason {
        StopReason::Failed(why) => RuntimeError::FinishAfterFailure {
            why: why.clone(),
            cause,
        },
        _ => RuntimeError::Recording(cause),
    })?;
    if reason == StopReason::StorageFull {
        // What finishing freed (the chunks) must not invite the next recording to
        // fill the card again: ask for that much more than is free now.
        let freed_by_finishing = guard.reserve().saturating_sub(config.min_free_bytes);
        let marked = storage::free_bytes_of_both(spool, output)
            .and_then(|free| storage::mark_full(output, free + freed_by_finishing.max(8 << 20)));
        if let Err(e) = marked {
            // The recording itself is finished; only the next start's guard is weaker.
            tracing::warn!(error = %e, "could not mark the output folder full");
        }
    }
    warn_about_drops(&stopped.stats);
    Ok(Outcome {
        finished: stopped.finished,
        reason,
        stats: stopped.stats,
        errors: stopped.errors,
    })
}

/// An `on_error` callback that keeps the first stream failure in `failure` (the
/// session loop stops the recording on it); later ones are left out.
pub(crate) fn keep_first_failure(failure: &Arc<Mutex<Option<String>>>) -> ErrorCallback {
    let failed = Arc::clone(failure);
    Arc::new(move |stream: &str| {
        failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(|| format!("stream {stream} failed"));
    })
}

impl Outcome {
    /// Why this recording failed, if it did: a source or stream failed, or a stream
    /// could encode none of its frames (a camera that sends frames of the wrong size).
    /// A failed recording exits non-zero even when it finished a file.
    pub fn failure(&self) -> Option<String> {
        if let StopReason::Failed(why) = &self.reason {
            return Some(why.clone());
        }
        self.stats
            .iter()
            .find(|s| s.frames_encoded == 0 && s.dropped_invalid > 0)
            .map(|s| {
                format!(
                    "stream {} could encode none of its {} frames (wrong size or empty)",
                    s.name, s.dropped_invalid
                )
            })
    }
}

/// One warning line per stream that lost frames, with how many and what share: an
/// overloaded recorder must not pass in silence (the manifest has the details).
fn warn_about_drops(stats: &[StreamStats]) {
    for s in stats {
        let dropped = s.frames_dropped();
        if dropped == 0 {
            continue;
        }
        let offered = dropped + s.frames_encoded;
        let percent = 100.0 * dropped as f64 / offered as f64;
        tracing::warn!(
            "stream {} dropped {dropped} of {offered} frames ({percent:.1} %)",
            s.name
        );
    }
}

pub(crate) type SourceThread = thread::Handle<()>;

/// Start one thread per opened source, each pushing into `sink_for(stream)`; a source
/// that fails sets `failure`.
pub(crate) fn start_sources(
    config: &Config,
    mut opened: Sources,
    sink_for: &dyn Fn(&str) -> Option<FrameSink>,
    stop: &Arc<AtomicBool>,
    failure: &Arc<Mutex<Option<String>>>,
    timeline: &ImuTimeline,
) -> Vec<SourceThread> {
    // Frame ticks for IMU streams batched per frame of a video stream.
    let mut ticks: Vec<(String, Sender<i64>, Receiver<i64>)> = Vec::new();
    for spec in &config.streams {
        if let Some(Batching::PerFrameOf(video)) = spec.source.batching() {
            let (tx, rx) = bounded(256);
            ticks.push((video.clone(), tx, rx));
        }
    }
    // With no video stream, the IMU's own first packet fixes the recording's origin.
    let imu_sets_origin = !config
        .streams
        .iter()
        .any(|s| matches!(s.config, recording::StreamConfig::Video(_)));
    let policy = config.on_source_loss;
    let mut threads = Vec::new();
    for spec in &config.streams {
        let Some(sender) = sink_for(&spec.name) else {
            continue;
        };
        let name = spec.name.clone();
        let stop = Arc::clone(stop);
        let source_failure = Arc::clone(failure);
        let body: Box<dyn FnOnce() -> Result<(), String> + Send> = match opened.take(&spec.name) {
            Some(sources::Opened::Camera(source, reopen)) => {
                let my_ticks: Vec<Sender<i64>> = ticks
                    .iter()
                    .filter(|(video, _, _)| *video == spec.name)
                    .map(|(_, tx, _)| tx.clone())
                    .collect();
                Box::new(move || run_video(source, reopen, policy, &sender, &my_ticks, &stop))
            }
            Some(sources::Opened::Imu(imu, reopen)) => {
                let batching = spec.source.batching().cloned();
                let tick_rx = match &batching {
                    Some(Batching::PerFrameOf(video)) => ticks
                        .iter()
                        .find(|(v, _, _)| v == video)
                        .map(|(_, _, rx)| rx.clone()),
                    _ => None,
                };
                let period_us = match batching {
                    Some(Batching::Rate(hz)) => ((1e6 / hz) as i64).max(1),
                    _ => 0,
                };
                let imu_loop = ImuLoop {
                    sender,
                    ticks: tick_rx,
                    period_us,
                    timeline: timeline.clone(),
                    sets_origin: imu_sets_origin,
                };
                Box::new(move || imu_loop.run(imu, reopen, policy, &stop))
            }
            None => continue,
        };
        let thread_name = name.clone();
        // A panicking source is a failed source: the recording stops.
        let panicked = {
            let failure = Arc::clone(failure);
            let name = name.clone();
            Arc::new(move |exit: ThreadExit| {
                let ThreadExit::Panicked { message, .. } = exit;
                failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert_with(|| format!("source {name} panicked: {message}"));
            }) as ExitSink
        };
        let spawned = thread::spawn("src", &name, Some(panicked), move |_| {
            if let Err(e) = body() {
                tracing::error!(source = %thread_name, error = %e, "source stopped delivering");
                source_failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert_with(|| format!("source {thread_name}: {e}"));
            }
        });
        match spawned {
            Ok(handle) => threads.push(handle),
            Err(e) => {
                failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert_with(|| format!("cannot start source {name}: {e}"));
            }
        }
    }
    threads
}

/// Join the source threads; one that does not stop in time is reported and left (a
/// source only pushes into a queue, which the writer stops taking from).
pub(crate) fn join_sources(threads: Vec<SourceThread>) {
    let deadline = Instant::now() + SOURCE_JOIN_DEADLINE;
    for handle in threads {
        let _ = handle.join_until(deadline);
    }
}

/// Capture loop of one camera. Never fsyncs, never blocks on the writer. A lost camera
/// ends the stream under [`SourceLossPolicy::Stop`]; under `Continue` it is reopened
/// (every [`sources::REOPEN_INTERVAL`]) and rejoins the recording.
fn run_video(
    mut source: Box<dyn FrameSource>,
    mut reopen: Reopen<Box<dyn FrameSource>>,
    policy: SourceLossPolicy,
    sender: &FrameSink,
    ticks: &[Sender<i64>],
    stop: &AtomicBool,
) -> Result<(), String> {
    while !stop.load(Ordering::Acquire) {
        let frame = match source.next_frame() {
            Ok(frame) => frame,
            Err(e) if policy == SourceLossPolicy::Continue => {
                tracing::error!(source = %source.describe(), error = %e, "camera lost; recording goes on without it");
                drop(source);
                match sources::reopen_until(&mut reopen, stop) {
                    Some(back) => {
                        tracing::info!(source = %back.describe(), "camera back; it rejoins the recording");
                        source = back;
                        continue;
                    }
                    None => return Ok(()),
                }
            }
            Err(e) => return Err(e.to_string()),
        };
        for tick in ticks {
            let _ = tick.try_send(frame.timestamp_us);
        }
        sender(frame);
    }
    Ok(())
}

/// IMU loop: read samples at the IMU's rate and emit one packet per frame tick (stamped
/// with the frame's time, holding the samples up to it) or per `period_us`. Sample
/// times in the payload are on the recording's timeline, so with
/// [`ImuTimeline::Recording`] packets wait until the recording's origin is known (the
/// first frame; or the first packet, with no video).
struct ImuLoop {
    sender: FrameSink,
    ticks: Option<Receiver<i64>>,
    period_us: i64,
    timeline: ImuTimeline,
    sets_origin: bool,
}

impl ImuLoop {
    fn run(
        self,
        mut imu: Box<dyn Imu>,
        mut reopen: Reopen<Box<dyn Imu>>,
        policy: SourceLossPolicy,
        stop: &AtomicBool,
    ) -> Result<(), String> {
        let mut pending: Vec<ImuSample> = Vec::new();
        let mut next_batch_us: Option<i64> = None;
        while !stop.load(Ordering::Acquire) {
            let sample = match imu.read() {
                Ok(sample) => sample,
                Err(e) if policy == SourceLossPolicy::Continue => {
                    tracing::error!(source = %imu.describe(), error = %e, "IMU lost; recording goes on without it");
                    drop(imu);
                    match sources::reopen_until(&mut reopen, stop) {
                        Some(back) => {
                            tracing::info!(source = %back.describe(), "IMU back; it rejoins the recording");
                            imu = back;
                            // No packets for the frames it missed: they would have
                            // no samples, and arrive late in a burst.
                            if let Some(rx) = &self.ticks {
                                while rx.try_recv().is_ok() {}
                            }
                            continue;
                        }
                        None => return Ok(()),
                    }
                }
                Err(e) => return Err(e.to_string()),
            };
            pending.push(sample);
            match &self.ticks {
                Some(rx) => {
                    let Some(origin) = self.origin(None) else {
                        continue; // ticks wait in their channel
                    };
                    while let Ok(at) = rx.try_recv() {
                        self.emit(at, origin, &mut pending);
                    }
                }
                None => {
                    let due = *next_batch_us.get_or_insert(sample.t_us + self.period_us);
                    if sample.t_us >= due {
                        let Some(origin) = self.origin(Some(sample.t_us)) else {
                            continue;
                        };
                        self.emit(sample.t_us, origin, &mut pending);
                        // The next batch boundary after this sample: after a stall the
                        // batches it missed are not made up in a burst.
                        let missed = (sample.t_us - due) / self.period_us;
                        next_batch_us = Some(due + (missed + 1) * self.period_us);
                    }
                }
            }
        }
        Ok(())
    }

    /// The zero of the payload's sample times, once known. `first_packet_us`: the time
    /// of the packet about to be made, which is the origin when this IMU sets it.
    fn origin(&self, first_packet_us: Option<i64>) -> Option<i64> {
        match &self.timeline {
            ImuTimeline::Monotonic => Some(0),
            ImuTimeline::Recording(origin) => match (origin.get(), first_packet_us) {
                (Some(&origin), _) => Some(origin),
                (None, Some(t)) if self.sets_origin => Some(*origin.get_or_init(|| t)),
                (None, _) => None,
            },
        }
    }

    /// One packet at `at` with the samples up to it.
    fn emit(&self, at: i64, origin: i64, pending: &mut Vec<ImuSample>) {
        let split = pending.partition_point(|s| s.t_us <= at);
        let batch: Vec<ImuSample> = pending.drain(..split).collect();
        (self.sender)(Frame::new(at, encode_batch(&batch, origin)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(reason: StopReason, stats: Vec<StreamStats>) -> Outcome {
        Outcome {
            finished: None,
            reason,
            stats,
            errors: Vec::new(),
        }
    }

    fn stream(name: &str, encoded: u64, invalid: u64) -> StreamStats {
        StreamStats {
            name: name.into(),
            frames_encoded: encoded,
            dropped_invalid: invalid,
            ..Default::default()
        }
    }

    /// Issue 13 item 3: a stream that failed, or that could encode none of its frames,
    /// is a failed recording (the CLI exits 2), with the stream named.
    #[test]
    fn a_failed_or_wholly_refused_stream_fails_the_recording() {
        let failed = outcome(StopReason::Failed("stream rgb failed".into()), vec![]);
        assert_eq!(failed.failure().as_deref(), Some("stream rgb failed"));

        let refused = outcome(
            StopReason::Duration,
            vec![stream("rgb", 0, 27), stream("imu", 50, 0)],
        );
        let why = refused.failure().expect("a failure");
        assert!(why.contains("stream rgb") && why.contains("27"), "{why}");

        // Some bad frames among good ones are counted drops, not a failure; nor is a
        // recording stopped before any frame came.
        let fine = outcome(
            StopReason::Signal,
            vec![stream("rgb", 40, 2), stream("imu", 0, 0)],
        );
        assert_eq!(fine.failure(), None);
    }
}
