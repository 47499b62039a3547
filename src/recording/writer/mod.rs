//! [`ChunkedWriter`]: one encoder thread and one `.mkv.part` per stream, chunks rotated on
//! a shared timeline, finished chunks merged (and appended to the final file) by a
//! background finalizer.
//!
//! Timeline: the first frame to reach any encoder thread sets the origin. Chunk `k`
//! covers media time `[k·L, (k+1)·L)` from that origin, so the origin of each chunk
//! advances by exactly `chunk_length` and a frame's chunk follows from its timestamp
//! alone (a frame exactly on a boundary opens the new chunk). PTS inside a chunk are µs
//! from the chunk's start.
//!
//! Rotation: the first frame of a later chunk is encoded as a forced keyframe by an
//! encoder kept for the whole recording (libx264, V4L2 M2M and data streams), or by a
//! fresh encoder after the old one was flushed (any other codec); see `Track`. A
//! stream's part closes when the packet that starts the next chunk comes out of its
//! encoder.
//!
//! Rotation barrier: each stream publishes `closed_before`, the first chunk it has not
//! finished. When every live stream has passed chunk `k` the last one to arrive hands
//! the chunk to the finalizer and bumps the generation. Unlike the reference, nobody
//! waits at the barrier (the merge is not theirs to do), and a stream that fell silent
//! (nothing queued or received for `rotation_grace`) and has not finished a chunk
//! `rotation_grace` after the first stream passed it is closed without it, so a silent
//! camera cannot hold up the others.
//!
//! Map: this file holds the lifecycle (`new` → `start` → `stop`) and the encoder
//! threads' loop; `queue` the producer's side ([`Frame`], [`StreamSender`], counters);
//! `barrier` the rotation barrier as a pure state machine; `track` one stream's
//! encoder state machine.

mod barrier;
mod queue;
mod track;

pub use queue::{Frame, StreamSender, StreamStats};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

use crossbeam_channel::{bounded, unbounded, Receiver, RecvTimeoutError, Sender};
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::durable;
use super::encoder::StreamEncoder;
use super::error::{Error, Result};
use super::events::{ErrorCallback, StartChunkCallback};
use super::faults::InjectedFaults;
use super::finalizer::{self, ChunkJob, FinalOutput, FinalizeReport};
use super::media::MuxerSettings;
use super::merge::DeclaredTrack;
use super::part::{lock, ClosedPart, PartSyncer};
use super::pressure::Pressure;
use super::spool;
use super::stream_config::{
    validate_stream_name, DataStreamConfig, StreamConfig, VideoStreamConfig,
};
use crate::thread::{self, ExitSink, Heartbeat, Joined, ThreadExit};
use barrier::Barrier;
use queue::{Counters, Limits};
use track::Track;

/// Tuning of a [`ChunkedWriter`]; `Default` gives the reference's values.
#[derive(Clone)]
pub struct WriterOptions {
    pub chunk_length: Duration,
    pub max_encoder_queue_size: usize,
    /// Bytes of frames one stream's queue may hold.
    pub max_queue_bytes: usize,
    /// Capture-to-durable budget of every frame: a frame that waited too long in its
    /// queue to make it is shed (see `queue`). `None`: frames wait as long as the queue
    /// holds them (the reference's behaviour; frames from any time domain).
    pub max_latency: Option<Duration>,
    /// Media a recording may be handed at once when it starts: frames captured before
    /// it was running (`grabd run` holds those since the press edge while the
    /// double-press window decides). Each stream's queue takes them on top of its
    /// usual bound, and their wait under `max_latency` counts from when they arrive.
    pub held_at_start: Duration,
    /// How long after the first stream reached a boundary a silent or stuck stream is
    /// closed without it.
    pub rotation_grace: Duration,
    /// How often the syncer looks for part files that grew (and fsyncs those).
    pub sync_interval: Duration,
    pub muxer: MuxerSettings,
    pub start_chunk_callback: Option<StartChunkCallback>,
    pub on_error: Option<ErrorCallback>,
    /// Grow this final file chunk by chunk in the background; `stop` then finishes it.
    pub final_output: Option<FinalOutput>,
    pub stop_deadlines: StopDeadlines,
    /// Tests only: faults to inject (none by default).
    pub faults: InjectedFaults,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            chunk_length: Duration::from_secs(60),
            max_encoder_queue_size: 200,
            max_queue_bytes: 64 << 20,
            max_latency: None,
            held_at_start: Duration::ZERO,
            rotation_grace: Duration::from_secs(2),
            sync_interval: Duration::from_millis(50),
            muxer: MuxerSettings::default(),
            start_chunk_callback: None,
            on_error: None,
            final_output: None,
            stop_deadlines: StopDeadlines::default(),
            faults: InjectedFaults::default(),
        }
    }
}

impl std::fmt::Debug for WriterOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterOptions")
            .field("chunk_length", &self.chunk_length)
            .field("max_encoder_queue_size", &self.max_encoder_queue_size)
            .field("max_queue_bytes", &self.max_queue_bytes)
            .field("max_latency", &self.max_latency)
            .field("held_at_start", &self.held_at_start)
            .field("rotation_grace", &self.rotation_grace)
            .field("sync_interval", &self.sync_interval)
            .field("muxer", &self.muxer)
            .field("final_output", &self.final_output)
            .field("stop_deadlines", &self.stop_deadlines)
            .field("faults", &self.faults)
            .finish_non_exhaustive()
    }
}

/// The media-time origin of a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// Monotonic µs of the first frame.
    pub monotonic_us: i64,
    /// Wall-clock µs since the Unix epoch at that moment.
    pub unix_us: i64,
}

struct StreamSlot {
    name: String,
    config: StreamConfig,
    /// Opened with the writer (which checks the config that way) and handed to the
    /// stream's thread at start.
    encoder: Option<StreamEncoder>,
    tx: Sender<Frame>,
    rx: Option<Receiver<Frame>>,
    counters: Arc<Counters>,
}

/// Everything the encoder threads share.
struct Shared {
    name: String,
    dir: PathBuf,
    chunk_length_us: i64,
    grace: Duration,
    muxer: MuxerSettings,
    /// Under a latency budget, how long after its oldest packet's capture a cluster is
    /// ended in real time: `cluster_time_limit` plus [`CLUSTER_HOLD_SLACK`].
    cluster_hold_us: Option<i64>,
    origin: OnceLock<Origin>,
    /// The earliest timestamp pushed on any stream so far: the origin is fixed from it
    /// when the first frame is processed, so a stream whose first frame is processed a
    /// little later than another's does not find it "before the origin".
    earliest_pushed_us: Arc<AtomicI64>,
    barrier: Mutex<Barrier>,
    jobs: Mutex<Option<Sender<ChunkJob>>>,
    stopping: AtomicBool,
    /// Disconnected at stop (its sender dropped), which wakes every waiting encoder
    /// thread at once; nothing is ever sent on it.
    stop_signal: Receiver<()>,
    stop_sender: Mutex<Option<Sender<()>>>,
    start_chunk_callback: Option<StartChunkCallback>,
    on_error: Option<ErrorCallback>,
    /// Threads running `on_error`, joined at stop.
    callbacks: Mutex<Vec<thread::Handle<()>>>,
    faults: InjectedFaults,
    syncer: Arc<PartSyncer>,
    /// How far behind capture the encoders are; the finalizer waits while they are.
    pressure: Arc<Pressure>,
}

impl Shared {
    fn origin_for(&self, ts_us: i64) -> Origin {
        *self.origin.get_or_init(|| {
            let ts_us = ts_us.min(self.earliest_pushed_us.load(Ordering::Relaxed));
            let now_mono = crate::clock::monotonic_us();
            let now_unix = crate::clock::unix_us();
            // Frames stamped on the monotonic clock map to wall time exactly; frames from
            // another time domain (tests) start "now".
            let age = now_mono - ts_us;
            let unix_us = if (0..3_600_000_000).contains(&age) {
                now_unix - age
            } else {
                now_unix
            };
            Origin {
                monotonic_us: ts_us,
                unix_us,
            }
        })
    }

    fn chunk_start_us(&self, index: u64) -> i64 {
        i64::try_from(index).unwrap_or(i64::MAX / 2) * self.chunk_length_us
    }

    /// The id of chunk `index`, creating its pending entry on first use.
    fn chunk_id(&self, index: u64) -> String {
        let origin_unix = self.origin.get().map_or(0, |o| o.unix_us);
        let started_at = || {
            let start_us = origin_unix + self.chunk_start_us(index);
            UNIX_EPOCH + Duration::from_micros(u64::try_from(start_us).unwrap_or(0))
        };
        lock(&self.barrier).chunk_id(index, Instant::now(), |sequence| {
            match &self.start_chunk_callback {
                Some(callback) => {
                    let id = callback(&self.name, started_at(), "mkv");
                    if spool::is_plain_name(&id) {
                        id
                    } else {
                        tracing::error!(
                            id,
                            "the start-chunk callback's id cannot name a file; numbering the chunk"
                        );
                        spool::sequential_chunk_id(sequence)
                    }
                }
                None => spool::sequential_chunk_id(sequence),
            }
        })
    }

    /// Stream `stream` has finished every chunk before `closed_before`, handing over the
    /// part it closed (if any). Dispatches every chunk all streams passed.
    fn advance(&self, stream: usize, closed_before: u64, closed: Option<(u64, ClosedPart)>) {
        let mut barrier = lock(&self.barrier);
        let advanced = barrier.advance(stream, closed_before, closed, Instant::now());
        if let Some(part) = advanced.orphan {
            tracing::error!(
                part = %part.path.display(),
                "a part arrived for a chunk already handed to the finalizer; left for recovery"
            );
        }
        // Sent under the barrier's lock, so the finalizer gets the chunks in order.
        for job in advanced.complete {
            match lock(&self.jobs).as_ref() {
                Some(jobs) => {
                    if let Err(job) = jobs.send(job) {
                        tracing::error!(chunk = %job.0.id, "finalizer gone; chunk parts left for recovery");
                    }
                }
                None => {
                    tracing::error!(chunk = %job.id, "writer stopped; chunk parts left for recovery")
                }
            }
        }
    }

    /// If a chunk this stream has not finished was passed by another stream more than
    /// the grace period ago, the index to close through (exclusive).
    fn overdue(&self, stream: usize) -> Option<u64> {
        lock(&self.barrier).overdue(stream, Instant::now())
    }

    fn generation(&self) -> u64 {
        lock(&self.barrier).generation()
    }
}

/// A media time in µs as Matroska stores it: whole milliseconds, rounded as libav
/// rescales (to nearest, halves away from zero). Chunks start on whole milliseconds, so
/// this holds for the chunk-relative times in parts too.
fn container_ms(media_us: i64) -> i64 {
    let ms = media_us.div_euclid(1000);
    if media_us.rem_euclid(1000) >= 500 {
        ms + 1
    } else {
        ms
    }
}

/// How long an idle encoder thread waits for a frame before it looks at the barrier
/// again (a silent stream is closed `rotation_grace` after the rotation deadline, so a
/// look this much later is harmless) unless its open cluster is due sooner; a stop
/// wakes it at once. Every wake-up costs: on the QEMU rig's slow guest 50 of them a
/// second (at 20 ms) took the IMU's encoder thread ~32 ms of CPU a second, an eighth
/// of what grabd had there.
const IDLE_WAIT: Duration = Duration::from_millis(250);

/// How long an encoder thread waits for a frame: [`IDLE_WAIT`], or until its open
/// cluster is due (`cluster_due_us`, monotonic µs) if that is sooner.
fn frame_wait(now_us: i64, cluster_due_us: Option<i64>) -> Duration {
    match cluster_due_us {
        Some(due_us) => {
            let until_due = u64::try_from(due_us.saturating_sub(now_us)).unwrap_or(0);
            Duration::from_micros(until_due).min(IDLE_WAIT)
        }
        None => IDLE_WAIT,
    }
}

/// Past `cluster_time_limit` of real time since its oldest packet's capture, a cluster
/// is ended by the encoder thread. Normally the muxer ends it first (its frames arrive
/// in about real time); a stream that sheds frames, runs at a low rate or lags behind
/// its capture would otherwise keep its newest frames in memory well past the budget.
const CLUSTER_HOLD_SLACK: Duration = Duration::from_millis(100);

/// How long `stop` waits for each kind of thread.
#[derive(Debug, Clone, Copy)]
pub struct StopDeadlines {
    /// For every encoder thread to drain its queue and close its part.
    pub encoders: Duration,
    /// For the finalizer to finish the last chunk and the final file.
    pub finalizer: Duration,
    /// For the part syncer's last pass (one fsync per open part).
    pub syncer: Duration,
}

impl Default for StopDeadlines {
    fn default() -> Self {
        StopDeadlines {
            encoders: Duration::from_secs(30),
            finalizer: Duration::from_secs(600),
            syncer: Duration::from_secs(30),
        }
    }
}

/// Chunked multi-stream Matroska writer. See the module docs for the protocol.
pub struct ChunkedWriter {
    shared: Arc<Shared>,
    streams: Vec<StreamSlot>,
    options: WriterOptions,
    /// (stream index, stream name, encoder thread)
    threads: Vec<(usize, String, thread::Handle<()>)>,
    finalizer: Option<thread::Handle<FinalizeReport>>,
    started: bool,
    stopped: bool,
}

/// What `stop` returns.
#[derive(Debug, Default)]
pub struct WriterReport {
    pub origin: Option<Origin>,
    pub streams: Vec<StreamStats>,
    pub finalize: FinalizeReport,
    pub chunks_rotated: u64,
    /// Threads still running when their stop deadline passed (hung encoder, stalled
    /// finalizer or fsync). They may still write into the spool folder, so it must be
    /// left to recovery at the next start.
    pub left_running: Vec<String>,
}

impl ChunkedWriter {
    /// Validate every config and prepare the queues; nothing runs until [`start`].
    ///
    /// [`start`]: ChunkedWriter::start
    pub fn new(
        name: &str,
        output_directory: &Path,
        stream_configs: Vec<(String, VideoStreamConfig)>,
        sensor_stream_configs: Vec<(String, DataStreamConfig)>,
        options: WriterOptions,
    ) -> Result<Self> {
        let mut configs: Vec<(String, StreamConfig)> = stream_configs
            .into_iter()
            .map(|(n, c)| (n, StreamConfig::Video(c)))
            .collect();
        configs.extend(
            sensor_stream_configs
                .into_iter()
                .map(|(n, c)| (n, StreamConfig::Data(c))),
        );
        Self::with_streams(name, output_directory, configs, options)
    }

    /// Like [`new`](ChunkedWriter::new), with video and data streams in one ordered list.
    pub fn with_streams(
        name: &str,
        output_directory: &Path,
        configs: Vec<(String, StreamConfig)>,
        options: WriterOptions,
    ) -> Result<Self> {
        if configs.is_empty() {
            return Err(Error::InvalidConfig("no streams to record".into()));
        }
        let chunk_length_us = i64::try_from(options.chunk_length.as_micros()).unwrap_or(i64::MAX);
        if chunk_length_us < 100_000 || chunk_length_us % 1000 != 0 {
            return Err(Error::InvalidConfig(format!(
                "chunk length {:?} must be at least 0.1 s and a whole number of milliseconds",
                options.chunk_length
            )));
        }
        let limits = Limits::new(&options)?;
        for (i, (stream_name, _)) in configs.iter().enumerate() {
            validate_stream_name(stream_name)?;
            if configs[..i].iter().any(|(n, _)| n == stream_name) {
                return Err(Error::InvalidConfig(format!(
                    "stream {stream_name:?} appears twice"
                )));
            }
        }
        let encoders = open_encoders(&configs, output_directory);
        let pressure = Arc::new(Pressure::new(configs.len(), limits.late_after()));
        let mut streams: Vec<StreamSlot> = Vec::new();
        for (index, ((stream_name, config), encoder)) in
            configs.into_iter().zip(encoders).enumerate()
        {
            let encoder = encoder?;
            let (tx, rx) = bounded(limits.capacity(&config));
            let counters = Arc::new(Counters::new(
                &stream_name,
                limits,
                &config,
                &rx,
                index,
                Arc::clone(&pressure),
            ));
            streams.push(StreamSlot {
                name: stream_name,
                config,
                encoder: Some(encoder),
                tx,
                rx: Some(rx),
                counters,
            });
        }
        durable::create_dir_all(output_directory)?;
        let (stop_sender, stop_signal) = bounded(0);
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            dir: output_directory.to_owned(),
            chunk_length_us,
            grace: options.rotation_grace,
            muxer: options.muxer,
            cluster_hold_us: options.max_latency.map(|_| {
                i64::from(options.muxer.cluster_time_limit_ms) * 1000
                    + CLUSTER_HOLD_SLACK.as_micros() as i64
            }),
            origin: OnceLock::new(),
            earliest_pushed_us: Arc::new(AtomicI64::new(i64::MAX)),
            barrier: Mutex::new(Barrier::new(
                streams.len(),
                chunk_length_us,
                options.rotation_grace,
            )),
            jobs: Mutex::new(None),
            stopping: AtomicBool::new(false),
            stop_signal,
            stop_sender: Mutex::new(Some(stop_sender)),
            start_chunk_callback: options.start_chunk_callback.clone(),
            on_error: options.on_error.clone(),
            callbacks: Mutex::new(Vec::new()),
            faults: options.faults.clone(),
            syncer: PartSyncer::start(
                options.sync_interval,
                options.on_error.clone().map(|callback| {
                    Arc::new(move |what: &str| callback(&format!("part-sync ({what})")))
                        as ErrorCallback
                }),
                &options.faults,
            ),
            pressure,
        });
        Ok(ChunkedWriter {
            shared,
            streams,
            options,
            threads: Vec::new(),
            finalizer: None,
            started: false,
            stopped: false,
        })
    }

    /// The queue of a stream (the reference's `get_encoder_queue`).
    pub fn sender(&self, stream_name: &str) -> Option<StreamSender> {
        self.streams
            .iter()
            .find(|s| s.name == stream_name)
            .map(|s| StreamSender {
                tx: s.tx.clone(),
                counters: Arc::clone(&s.counters),
                earliest_pushed_us: Arc::clone(&self.shared.earliest_pushed_us),
            })
    }

    pub fn is_data_stream(&self, stream_name: &str) -> bool {
        self.streams
            .iter()
            .any(|s| s.name == stream_name && matches!(s.config, StreamConfig::Data(_)))
    }

    /// The origin, once the first frame has been processed.
    pub fn origin(&self) -> Option<Origin> {
        self.shared.origin.get().copied()
    }

    /// Chunks completed and handed to the finalizer so far.
    pub fn generation(&self) -> u64 {
        self.shared.generation()
    }

    /// Start the finalizer and one encoder thread per stream. The first chunk is created
    /// only when the first frame arrives, so the origin is in the frames' time domain.
    pub fn start(&mut self) -> Result<()> {
        if self.started {
            return Ok(());
        }
        let (jobs_tx, jobs_rx) = unbounded();
        *lock(&self.shared.jobs) = Some(jobs_tx);
        // The final file's tracks, declared from the configs (and the encoders opened
        // for them), so a stream that never sends still has its track.
        let expected: Vec<DeclaredTrack> = self
            .streams
            .iter()
            .map(|s| DeclaredTrack {
                name: s.name.clone(),
                track_tags: s.config.track_tags(),
                spec: s
                    .encoder
                    .as_ref()
                    .and_then(StreamEncoder::track_spec_before_packets),
            })
            .collect();
        let dir = self.shared.dir.clone();
        let final_output = self.options.final_output.clone();
        let muxer = self.options.muxer;
        let on_error = self.options.on_error.clone();
        let faults = self.options.faults.clone();
        let pacing = finalizer::Pacing {
            pressure: Arc::clone(&self.shared.pressure),
            chunk_length: self.options.chunk_length,
        };
        // A panicking finalizer is a failed finalizer: the recording stops and its
        // chunks and parts stay for the finish at stop.
        let finalizer_failed = self
            .options
            .on_error
            .clone()
            .map(|callback| Arc::new(move |_: ThreadExit| callback("finalizer")) as ExitSink);
        let finalizer = thread::spawn("finalize", "", finalizer_failed, move |_| {
            finalizer::run(
                &dir,
                jobs_rx,
                final_output,
                &expected,
                muxer,
                on_error,
                &faults,
                &pacing,
            )
        })
        .map_err(|e| Error::io("spawn finalizer thread", &self.shared.dir, e))?;
        self.finalizer = Some(finalizer);

        for (index, slot) in self.streams.iter_mut().enumerate() {
            let Some(rx) = slot.rx.take() else { continue };
            let shared = Arc::clone(&self.shared);
            let name = slot.name.clone();
            let config = slot.config.clone();
            let encoder = slot.encoder.take();
            let counters = Arc::clone(&slot.counters);
            let panicked = {
                let (shared, name, counters) =
                    (Arc::clone(&shared), name.clone(), Arc::clone(&counters));
                // A panic the encoder thread did not catch itself (while closing up):
                // the stream leaves the barrier and is reported like any failure.
                Arc::new(move |_: ThreadExit| {
                    shared.advance(index, barrier::ENDED, None);
                    report_failure(&shared, &name, &counters, None);
                }) as ExitSink
            };
            let handle = thread::spawn("enc", &slot.name, Some(panicked), move |heartbeat| {
                if matches!(config, StreamConfig::Video(_)) {
                    // Encoding video is the work that sheds when the board is short of
                    // CPU; the sources and the data streams keep theirs.
                    thread::lower_priority(thread::ENCODER_NICE);
                }
                stream_thread(
                    &shared, index, &name, &config, encoder, rx, &counters, heartbeat,
                );
            })
            .map_err(|e| Error::io("spawn encoder thread", &self.shared.dir, e))?;
            self.threads.push((index, slot.name.clone(), handle));
        }
        self.started = true;
        Ok(())
    }

    /// Drain every queue, close the last chunk, let the finalizer merge it and finish
    /// the final file, and report. Idempotent.
    pub fn stop(&mut self) -> Result<WriterReport> {
        if self.stopped {
            return Ok(WriterReport::default());
        }
        self.stopped = true;
        self.shared.stopping.store(true, Ordering::Release);
        lock(&self.shared.stop_sender).take();
        let deadlines = self.options.stop_deadlines;
        let mut left_running = Vec::new();
        let deadline = Instant::now() + deadlines.encoders;
        for (index, name, handle) in self.threads.drain(..) {
            let thread = handle.name().to_owned();
            match handle.join_until(deadline) {
                // A panic took the stream out of the barrier and was reported by then.
                Joined::Done(()) | Joined::Panicked(_) => {}
                Joined::TimedOut => {
                    // A hung encoder must not hang the recorder: finish the chunks
                    // without it. Its open part stays on disk for recovery.
                    tracing::error!(stream = %name, "encoder thread did not stop in time; finishing without it");
                    self.shared.advance(index, barrier::ENDED, None);
                    left_running.push(thread);
                }
            }
        }
        // No encoder runs any more (or one is left hung): the finalizer need not wait for
        // them. Every chunk has been dispatched; closing the job queue ends the finalizer.
        self.shared.pressure.release();
        lock(&self.shared.jobs).take();
        let mut finalize = FinalizeReport::default();
        if let Some(handle) = self.finalizer.take() {
            match handle.join_within(deadlines.finalizer) {
                Joined::Done(report) => finalize = report,
                Joined::Panicked(message) => finalize
                    .errors
                    .push(format!("finalizer thread panicked: {message}")),
                Joined::TimedOut => {
                    finalize
                        .errors
                        .push("finalizer did not finish in time".into());
                    left_running.push("finalize".into());
                }
            }
        }
        for handle in lock(&self.shared.callbacks).drain(..) {
            let thread = handle.name().to_owned();
            if handle.join_within(deadlines.encoders) == Joined::TimedOut {
                left_running.push(thread);
            }
        }
        if !self.shared.syncer.shutdown(deadlines.syncer) {
            left_running.push("part-sync".into());
        }
        Ok(WriterReport {
            origin: self.origin(),
            streams: self.stats(),
            finalize,
            chunks_rotated: self.shared.generation(),
            left_running,
        })
    }

    /// Each running thread's name and heartbeat, for a watchdog.
    pub fn heartbeats(&self) -> Vec<(String, Heartbeat)> {
        self.threads
            .iter()
            .map(|(_, _, h)| (h.name().to_owned(), h.heartbeat()))
            .chain(
                self.finalizer
                    .iter()
                    .map(|h| (h.name().to_owned(), h.heartbeat())),
            )
            .collect()
    }

    /// Current per-stream counters.
    pub fn stats(&self) -> Vec<StreamStats> {
        self.streams.iter().map(|s| s.counters.stats()).collect()
    }
}

impl Drop for ChunkedWriter {
    fn drop(&mut self) {
        if self.started && !self.stopped {
            if let Err(e) = self.stop() {
                tracing::error!(error = %e, "stopping the writer on drop failed");
            }
        } else if !self.started {
            self.shared
                .syncer
                .shutdown(self.options.stop_deadlines.syncer);
        }
    }
}

/// Open every stream's encoder, side by side (a codec's initialisation can take tens of
/// milliseconds): this is also the check of each config that only the codec can make.
/// Each opens on a thread named like the stream's encoder thread, whose name and (for
/// video, [`thread::ENCODER_NICE`]) priority the codec's own worker threads inherit.
fn open_encoders(configs: &[(String, StreamConfig)], dir: &Path) -> Vec<Result<StreamEncoder>> {
    let opening: Vec<_> = configs
        .iter()
        .map(|(name, config)| {
            let config = config.clone();
            thread::spawn("enc", name, None, move |_| {
                if matches!(config, StreamConfig::Video(_)) {
                    // The codec's worker threads start here and inherit this priority.
                    thread::lower_priority(thread::ENCODER_NICE);
                }
                StreamEncoder::new(&config)
            })
        })
        .collect();
    let deadline = Instant::now() + OPEN_ENCODER_DEADLINE;
    opening
        .into_iter()
        .zip(configs)
        .map(|(spawned, (name, _))| match spawned {
            Ok(handle) => match handle.join_until(deadline) {
                Joined::Done(opened) => opened,
                Joined::Panicked(message) => Err(Error::InvalidConfig(format!(
                    "opening the encoder of {name} panicked: {message}"
                ))),
                Joined::TimedOut => Err(Error::InvalidConfig(format!(
                    "opening the encoder of {name} took more than {OPEN_ENCODER_DEADLINE:?}"
                ))),
            },
            Err(e) => Err(Error::io("spawn a thread to open an encoder", dir, e)),
        })
        .collect()
}

/// How long opening the encoders may take (a V4L2 M2M device that does not answer).
const OPEN_ENCODER_DEADLINE: Duration = Duration::from_secs(30);

/// Body of an encoder thread: never dies silently. A failure or a panic is logged and
/// counted, the part so far goes to its chunk, the stream leaves the barrier, and
/// `on_error` is told once, from its own thread.
#[allow(clippy::too_many_arguments)]
fn stream_thread(
    shared: &Shared,
    index: usize,
    name: &str,
    config: &StreamConfig,
    encoder: Option<StreamEncoder>,
    rx: Receiver<Frame>,
    counters: &Counters,
    heartbeat: &Heartbeat,
) {
    let mut track = Track::new(shared, index, name, config, encoder);
    // The thread handle would catch a panic too, but only here is the track still at
    // hand, whose part must go to its chunk rather than be orphaned.
    let result = catch_unwind(AssertUnwindSafe(|| {
        stream_loop(&mut track, &rx, counters, heartbeat)
    }));
    let result = match result {
        Ok(result) => {
            if let Err(e) = track.finish(result.is_ok()) {
                tracing::error!(stream = name, error = %e, "closing the last part failed");
                // The barrier must not wait for this stream whatever failed.
                shared.advance(index, barrier::ENDED, None);
            }
            result.map_err(|e| e.to_string())
        }
        Err(panic) => {
            let message = thread::panic_message(panic);
            tracing::error!(stream = name, panic = %message, "encoder thread panicked");
            // A panic unwinds Rust code only, so libav's state is whole between two of
            // its calls: the encoder can still be flushed and the part finished. Only if
            // that panics too is the part handed over as it is (readable up to its last
            // complete cluster; the chunk's merge salvages it).
            let finished = catch_unwind(AssertUnwindSafe(|| track.finish(false)));
            if !matches!(finished, Ok(Ok(()))) {
                track.abandon();
            }
            Err(format!("panicked: {message}"))
        }
    };
    // Later frames are refused (and counted), not queued for nobody.
    counters.close_queue();
    // Whatever it held is encoded, in its part, or counted as dropped.
    shared.pressure.done(index, true);
    if let Err(e) = result {
        tracing::error!(stream = name, error = %e, "encoder thread failed");
        report_failure(shared, name, counters, Some(rx));
    }
}

/// Stream `name` failed: count what was queued behind the failure, close its queue so
/// later pushes are refused (and counted) before anyone is told, and run `on_error` on
/// its own thread. Only the first report of a stream counts.
fn report_failure(shared: &Shared, name: &str, counters: &Counters, rx: Option<Receiver<Frame>>) {
    if counters.failed.swap(true, Ordering::AcqRel) {
        return;
    }
    if let Some(rx) = rx {
        let orphaned = rx.try_iter().count() as u64;
        counters
            .dropped_failed
            .fetch_add(orphaned, Ordering::Relaxed);
    }
    let Some(callback) = shared.on_error.clone() else {
        return;
    };
    let stream = name.to_owned();
    match thread::spawn("on-error", name, None, move |_| callback(&stream)) {
        Ok(handle) => lock(&shared.callbacks).push(handle),
        Err(e) => tracing::error!(error = %e, "could not run on_error"),
    }
}

fn stream_loop(
    track: &mut Track,
    rx: &Receiver<Frame>,
    counters: &Counters,
    heartbeat: &Heartbeat,
) -> Result<()> {
    let shared = track.shared;
    // The millisecond of the last frame encoded (see `container_ms`).
    let mut last_ms: Option<i64> = None;
    let mut warned_invalid = false;
    let mut last_frame_at: Option<Instant> = None;
    // Once stopping, only the frames queued at that moment are still taken.
    let mut left_at_stop: Option<usize> = None;
    // A frame was taken in the last turn: the encoders' pressure hears it is done.
    let mut took = false;
    loop {
        heartbeat.beat();
        if std::mem::take(&mut took) {
            shared.pressure.done(track.stream, rx.is_empty());
        }
        let cluster_due_us =
            track.end_overdue_cluster(counters.shedding_at(crate::clock::monotonic_us()))?;
        // Only a silent stream (nothing queued, nothing received for the grace period)
        // is closed without reaching the boundary: one that is merely behind (a backlog,
        // a slow or deep encoder) will get there and must not lose its frames.
        let silent = rx.is_empty() && last_frame_at.map_or(true, |t| t.elapsed() >= shared.grace);
        if let Some(through) = silent.then(|| shared.overdue(track.stream)).flatten() {
            tracing::warn!(
                stream = track.name,
                chunk = through - 1,
                "stream missed the rotation deadline; closing its part"
            );
            track.close_silent(through)?;
        }
        if left_at_stop.is_none() && shared.stopping.load(Ordering::Acquire) {
            left_at_stop = Some(rx.len());
        }
        if let Some(left) = left_at_stop.as_mut() {
            if *left == 0 {
                return Ok(());
            }
            *left -= 1;
        }
        let wait = frame_wait(crate::clock::monotonic_us(), cluster_due_us);
        let received = if left_at_stop.is_some() {
            // What is left was queued before the stop: it is there to take.
            rx.recv_timeout(wait)
        } else {
            crossbeam_channel::select! {
                recv(rx) -> frame => frame.map_err(|_| RecvTimeoutError::Disconnected),
                // Stopping: the next turn counts what is left.
                recv(shared.stop_signal) -> _ => continue,
                default(wait) => Err(RecvTimeoutError::Timeout),
            }
        };
        let frame = match received {
            Ok(frame) => frame,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        };
        took = true;
        if !counters.take(&frame, !rx.is_empty()) {
            continue;
        }
        last_frame_at = Some(Instant::now());
        if !track.accepts(&frame.data) {
            counters.dropped_invalid.fetch_add(1, Ordering::Relaxed);
            if !std::mem::replace(&mut warned_invalid, true) {
                tracing::warn!(
                    stream = track.name,
                    bytes = frame.data.len(),
                    "dropping a frame that cannot be encoded (wrong size or empty); later ones are counted"
                );
            }
            continue;
        }
        let origin = shared.origin_for(frame.timestamp_us);
        let media_us = frame.timestamp_us - origin.monotonic_us;
        // Timestamps must move forward within a stream as the file stores them: a frame
        // that would repeat or precede the previous one's millisecond is late.
        let media_ms = container_ms(media_us);
        let chunk = (media_us >= 0 && last_ms.map_or(true, |last| media_ms > last))
            .then(|| track.chunk_of(media_us))
            .filter(|&c| c >= track.closed_before);
        let Some(chunk) = chunk else {
            counters.dropped_late.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        last_ms = Some(media_ms);
        if shared
            .faults
            .fails_encode(track.name, counters.encoded.load(Ordering::Relaxed))
        {
            return Err(Error::media(
                format!("encode a frame of {} (injected fault)", track.name),
                ffmpeg_next::Error::InvalidData,
            ));
        }
        shared.faults.before_encode(track.name);
        track.encode(chunk, media_us, &frame.data)?;
        let encoded = counters.encoded.fetch_add(1, Ordering::Relaxed) + 1;
        shared.faults.after_frame(track.name, encoded);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_encoder_waits_until_its_open_cluster_is_due() {
        let now = 10_000_000;
        assert_eq!(frame_wait(now, None), IDLE_WAIT);
        assert_eq!(
            frame_wait(now, Some(now + 40_000)),
            Duration::from_millis(40)
        );
        assert_eq!(frame_wait(now, Some(now - 1)), Duration::ZERO, "overdue");
        assert_eq!(frame_wait(now, Some(now + 10_000_000)), IDLE_WAIT);
    }
}
