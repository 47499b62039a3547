//! The producer's side of a stream: [`Frame`]s go into a bounded queue through a
//! [`StreamSender`] that never blocks, and every frame's fate is counted in
//! [`Counters`], reported as [`StreamStats`].
//!
//! A queue is bounded three ways ([`Limits`]): by frames (`max_encoder_queue_size`), by
//! bytes (`max_queue_bytes`), and with a `max_latency` by time. A frame that waited so
//! long that it can no longer become durable within `max_latency` is shed when its
//! encoder thread takes it, so that a recorder that cannot keep up (a busy or simply
//! too slow board) loses frames, never the loss bound of a power cut; and a video
//! queue holds no more frames than are captured in that time. Under a budget the
//! frames shed are the oldest: a full queue drops its oldest frame for a new one, and
//! a video stream that is shedding skips to its newest frame. Each stream warns once
//! when it first drops a frame for overload; the counts go to the manifest.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::WriterOptions;
use crate::recording::error::{Error, Result};
use crate::recording::part::lock;
use crate::recording::pressure::Pressure;
use crate::recording::stream_config::StreamConfig;

/// One frame of a video stream (packed raw pixels) or one record of a data stream,
/// stamped in µs on the process's monotonic clock ([`crate::clock::monotonic_us`]).
#[derive(Debug, Clone)]
pub struct Frame {
    pub timestamp_us: i64,
    pub data: Arc<[u8]>,
}

impl Frame {
    pub fn new(timestamp_us: i64, data: impl Into<Arc<[u8]>>) -> Self {
        Frame {
            timestamp_us,
            data: data.into(),
        }
    }
}

/// What a frame still needs after its queue, within `max_latency`, besides the part's
/// cluster (`cluster_time_limit` of media) and the syncer's interval: encoding, the
/// write, the fsync, and the gap to the packet that closes the cluster. Generous: on a
/// busy board each of them takes several times what it takes on an idle one.
pub const AFTER_QUEUE_ALLOWANCE: Duration = Duration::from_millis(400);

/// A stream that shed a frame this recently counts as shedding: it ends each cluster as
/// soon as it holds a packet (`Track::end_overdue_cluster`), and a video stream skips
/// to its newest frame ([`Counters::take`]). One that kept up for this long goes back
/// to the muxer's clusters and to taking every frame in turn.
pub(super) const SHEDDING_FOR: Duration = Duration::from_secs(2);

/// How far one stream's queue may fill.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    max_frames: usize,
    max_bytes: usize,
    /// How long a frame may have waited since capture when its encoder takes it.
    max_wait_us: Option<i64>,
    /// `held_at_start`: media handed over at once when the recording starts.
    held_us: i64,
}

impl Limits {
    pub fn new(options: &WriterOptions) -> Result<Self> {
        if options.max_encoder_queue_size == 0 {
            return Err(Error::InvalidConfig(
                "max_encoder_queue_size must be at least 1".into(),
            ));
        }
        if options.max_queue_bytes == 0 {
            return Err(Error::InvalidConfig(
                "max_queue_bytes must be at least 1".into(),
            ));
        }
        let max_wait_us = options
            .max_latency
            .map(|latency| {
                let after = Duration::from_millis(options.muxer.cluster_time_limit_ms.into())
                    + options.sync_interval
                    + AFTER_QUEUE_ALLOWANCE;
                latency
                    .checked_sub(after)
                    .filter(|wait| !wait.is_zero())
                    .map(|wait| i64::try_from(wait.as_micros()).unwrap_or(i64::MAX))
                    .ok_or_else(|| {
                        Error::InvalidConfig(format!(
                            "max_latency {latency:?} leaves a frame no time in its queue: it must \
                             exceed cluster_time_limit + sync_interval + {AFTER_QUEUE_ALLOWANCE:?} \
                             = {after:?}"
                        ))
                    })
            })
            .transpose()?;
        Ok(Limits {
            max_frames: options.max_encoder_queue_size,
            max_bytes: options.max_queue_bytes,
            max_wait_us,
            held_us: i64::try_from(options.held_at_start.as_micros()).unwrap_or(i64::MAX),
        })
    }

    /// How long a frame may wait before the encoders count as behind and the finalizer
    /// pauses for them ([`Pressure`]): a third of the wait that sheds it, so the
    /// finalizer gives way well before frames are lost. `None` without a latency budget.
    pub fn late_after(&self) -> Option<Duration> {
        self.max_wait_us
            .map(|us| Duration::from_micros(u64::try_from(us / 3).unwrap_or(0)))
    }

    /// Frames the queue of a stream holds: `max_encoder_queue_size`, and for a video
    /// stream under a latency budget no more than it captures while a frame may wait
    /// (plus what it is handed at the start: those frames were in memory already).
    pub fn capacity(&self, config: &StreamConfig) -> usize {
        match (config, self.max_wait_us) {
            (StreamConfig::Video(v), Some(wait_us)) => {
                let media_us = wait_us.saturating_add(self.held_us);
                let frames = (v.fps * media_us as f64 / 1e6).ceil() as usize + 1;
                frames.clamp(1, self.max_frames)
            }
            _ => self.max_frames,
        }
    }
}

/// What happened to one stream's frames so far, shared by its producer and its encoder
/// thread.
pub(super) struct Counters {
    pub accepted: AtomicU64,
    pub encoded: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_late: AtomicU64,
    pub dropped_failed: AtomicU64,
    pub dropped_invalid: AtomicU64,
    pub dropped_overload: AtomicU64,
    pub failed: AtomicBool,
    /// Monotonic µs of the first frame the queue accepted (`i64::MIN` before it): the
    /// frames handed over at the start were held until then (see `held_at_start`).
    first_accepted_at_us: AtomicI64,
    name: String,
    limits: Limits,
    queued_bytes: AtomicUsize,
    overload_reported: AtomicBool,
    /// Monotonic µs of the last frame shed (`i64::MIN`: none yet).
    last_shed_at_us: AtomicI64,
    /// A video frame is superseded by the next one (it shows the scene later); a data
    /// record is not (each holds samples no other has).
    superseded_when_shedding: bool,
    /// Under a latency budget, the queue's receiving end, so that a full queue drops
    /// its oldest frame for the new one: of its frames the oldest is the nearest to
    /// being shed, and refusing the newest left a stream that stalled (its queue full)
    /// with only frames too old to keep when it came back. Taken when the encoder
    /// thread is done, which closes the queue.
    oldest: Mutex<Option<Receiver<Frame>>>,
    /// This stream's index in `pressure`.
    stream: usize,
    pressure: Arc<Pressure>,
}

impl Counters {
    pub fn new(
        name: &str,
        limits: Limits,
        config: &StreamConfig,
        queue: &Receiver<Frame>,
        stream: usize,
        pressure: Arc<Pressure>,
    ) -> Self {
        Counters {
            accepted: AtomicU64::new(0),
            encoded: AtomicU64::new(0),
            dropped_queue_full: AtomicU64::new(0),
            dropped_late: AtomicU64::new(0),
            dropped_failed: AtomicU64::new(0),
            dropped_invalid: AtomicU64::new(0),
            dropped_overload: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            first_accepted_at_us: AtomicI64::new(i64::MIN),
            name: name.to_owned(),
            limits,
            queued_bytes: AtomicUsize::new(0),
            overload_reported: AtomicBool::new(false),
            last_shed_at_us: AtomicI64::new(i64::MIN),
            superseded_when_shedding: matches!(config, StreamConfig::Video(_)),
            oldest: Mutex::new(limits.max_wait_us.map(|_| queue.clone())),
            stream,
            pressure,
        }
    }

    pub fn stats(&self) -> StreamStats {
        StreamStats {
            name: self.name.clone(),
            frames_encoded: self.encoded.load(Ordering::Relaxed),
            dropped_queue_full: self.dropped_queue_full.load(Ordering::Relaxed),
            dropped_late: self.dropped_late.load(Ordering::Relaxed),
            dropped_failed: self.dropped_failed.load(Ordering::Relaxed),
            dropped_invalid: self.dropped_invalid.load(Ordering::Relaxed),
            dropped_overload: self.dropped_overload.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }

    /// The encoder thread took `frame` from the queue, `newer_queued` when more frames
    /// wait behind it: `false` when it is shed, because it waited too long to become
    /// durable within the latency budget, or because this is a video stream that is
    /// shedding and a newer frame supersedes it. A stream that cannot keep up keeps
    /// about one frame per encoding time either way, but the newest frame is durable
    /// soonest: taking the oldest one still within the wait made every kept frame as
    /// old as that wait when its encoding began.
    pub fn take(&self, frame: &Frame, newer_queued: bool) -> bool {
        self.queued_bytes
            .fetch_sub(frame.data.len(), Ordering::Relaxed);
        let Some(max_wait_us) = self.limits.max_wait_us else {
            return true;
        };
        // Time a frame spent held back before the recording ran (up to held_at_start)
        // is not waiting for its encoder: it could not have been durable by then.
        let first_accepted = self.first_accepted_at_us.load(Ordering::Relaxed);
        let held_us = first_accepted
            .saturating_sub(frame.timestamp_us)
            .clamp(0, self.limits.held_us);
        let now_us = crate::clock::monotonic_us();
        self.pressure
            .taken(self.stream, frame.timestamp_us + held_us, now_us);
        let waited_us = now_us - frame.timestamp_us - held_us;
        let superseded = newer_queued && self.superseded_when_shedding && self.shedding_at(now_us);
        if waited_us <= max_wait_us && !superseded {
            return true;
        }
        self.count_shed(now_us, || {
            format!("a frame waited {} ms for its encoder", waited_us / 1000)
        });
        false
    }

    /// The encoder thread is done with the queue: later frames are refused.
    pub fn close_queue(&self) {
        lock(&self.oldest).take();
    }

    /// A full queue makes room: its oldest frame is shed (counted, and reported once).
    /// `false` when there is none to shed (no budget, queue closed or already empty).
    fn shed_oldest(&self) -> bool {
        let Some(oldest) = lock(&self.oldest).as_ref().and_then(|q| q.try_recv().ok()) else {
            return false;
        };
        self.queued_bytes
            .fetch_sub(oldest.data.len(), Ordering::Relaxed);
        self.count_shed(crate::clock::monotonic_us(), || "its queue is full".into());
        true
    }

    /// A frame was shed at `now_us` for overload: counted, the stream is shedding, the
    /// encoders are behind, and the first shed is reported (`what` happened).
    fn count_shed(&self, now_us: i64, what: impl FnOnce() -> String) {
        self.last_shed_at_us.store(now_us, Ordering::Relaxed);
        self.pressure.overloaded(now_us);
        self.dropped_overload.fetch_add(1, Ordering::Relaxed);
        self.report_overload(what);
    }

    /// Whether this stream shed a frame less than [`SHEDDING_FOR`] before `now_us`.
    pub fn shedding_at(&self, now_us: i64) -> bool {
        let last = self.last_shed_at_us.load(Ordering::Relaxed);
        last != i64::MIN
            && now_us.saturating_sub(last) < i64::try_from(SHEDDING_FOR.as_micros()).unwrap_or(0)
    }

    /// Warn once per stream, at its first drop for overload.
    fn report_overload(&self, what: impl FnOnce() -> String) {
        if !self.overload_reported.swap(true, Ordering::Relaxed) {
            let what = what();
            tracing::warn!(
                stream = %self.name,
                "{what}: the recorder cannot keep up with this stream and drops frames to keep \
                 the loss bound (counted in the manifest; no further warning)"
            );
        }
    }
}

/// What happened to one stream's frames.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamStats {
    pub name: String,
    /// Frames handed to the encoder (the file's own count is read back separately).
    pub frames_encoded: u64,
    /// Frames refused because the stream's queue was full (by frames or bytes) or its
    /// encoder had failed (the producer never waits). Under a latency budget a full
    /// queue sheds its oldest frame instead (`dropped_overload`).
    pub dropped_queue_full: u64,
    /// Frames older than the chunk their stream had already closed, or not after the
    /// stream's previous frame at the file's resolution (whole milliseconds: a burst
    /// after a stall).
    pub dropped_late: u64,
    /// Frames still queued when the stream's encoder failed.
    #[serde(default)]
    pub dropped_failed: u64,
    /// Frames that cannot be encoded as they are (a video frame of the wrong size, an
    /// empty data record); the stream goes on.
    #[serde(default)]
    pub dropped_invalid: u64,
    /// Frames shed because they could no longer become durable within `max_latency`.
    #[serde(default)]
    pub dropped_overload: u64,
    pub failed: bool,
}

impl StreamStats {
    pub fn frames_dropped(&self) -> u64 {
        self.dropped_queue_full
            + self.dropped_late
            + self.dropped_failed
            + self.dropped_invalid
            + self.dropped_overload
    }
}

/// The producer's handle on one stream's queue. `push` never blocks.
#[derive(Clone)]
pub struct StreamSender {
    pub(super) tx: Sender<Frame>,
    pub(super) counters: Arc<Counters>,
    pub(super) earliest_pushed_us: Arc<AtomicI64>,
}

impl StreamSender {
    /// Queue a frame; `false` (and a counted drop) when the queue is full, by frames or
    /// by bytes, or the stream's encoder is gone.
    pub fn push(&self, mut frame: Frame) -> bool {
        self.earliest_pushed_us
            .fetch_min(frame.timestamp_us, Ordering::Relaxed);
        let counters = &self.counters;
        let timestamp_us = frame.timestamp_us;
        let result = loop {
            match self.try_queue(frame) {
                // Each turn sheds a frame, so the queue empties at worst, and an empty
                // queue takes any frame.
                Err(TrySendError::Full(back)) if counters.shed_oldest() => frame = back,
                result => break result,
            }
        };
        match result {
            Ok(()) => {
                counters.accepted.fetch_add(1, Ordering::Relaxed);
                counters.pressure.queued(counters.stream, timestamp_us);
                // Read the clock only for the first frame, not on every push.
                if counters.first_accepted_at_us.load(Ordering::Relaxed) == i64::MIN {
                    let _ = counters.first_accepted_at_us.compare_exchange(
                        i64::MIN,
                        crate::clock::monotonic_us(),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                }
                true
            }
            Err(e) => {
                counters.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
                if let TrySendError::Full(_) = e {
                    counters.pressure.overloaded(crate::clock::monotonic_us());
                    counters.report_overload(|| "its queue is full".into());
                }
                false
            }
        }
    }

    /// Queue `frame` if it fits, by frames and by bytes.
    fn try_queue(&self, frame: Frame) -> std::result::Result<(), TrySendError<Frame>> {
        let counters = &self.counters;
        let len = frame.data.len();
        let queued = counters.queued_bytes.fetch_add(len, Ordering::Relaxed);
        // One frame larger than the whole budget still gets through an empty queue.
        let result = if queued > 0 && queued + len > counters.limits.max_bytes {
            Err(TrySendError::Full(frame))
        } else {
            self.tx.try_send(frame)
        };
        if result.is_err() {
            counters.queued_bytes.fetch_sub(len, Ordering::Relaxed);
        }
        result
    }

    /// Frames waiting in the queue.
    pub fn queued(&self) -> usize {
        self.tx.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::VideoStreamConfig;

    fn options(max_latency_ms: Option<u64>) -> WriterOptions {
        WriterOptions {
            max_latency: max_latency_ms.map(Duration::from_millis),
            max_queue_bytes: 1000,
            ..WriterOptions::default()
        }
    }

    fn sender(
        limits: Limits,
        config: &StreamConfig,
        capacity: usize,
    ) -> (StreamSender, crossbeam_channel::Receiver<Frame>) {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let sender = StreamSender {
            tx,
            counters: Arc::new(Counters::new(
                "s",
                limits,
                config,
                &rx,
                0,
                Arc::new(Pressure::new(1, limits.late_after())),
            )),
            earliest_pushed_us: Arc::new(AtomicI64::new(i64::MAX)),
        };
        (sender, rx)
    }

    fn video() -> StreamConfig {
        StreamConfig::Video(VideoStreamConfig::new(64, 48, 25.0).unwrap())
    }

    #[test]
    fn a_video_queue_holds_what_is_captured_while_a_frame_may_wait() {
        // 1000 ms - 250 ms cluster - 50 ms sync - 400 ms: 300 ms, 8 frames at 25 fps.
        let limits = Limits::new(&options(Some(1000))).unwrap();
        let video = StreamConfig::Video(VideoStreamConfig::new(64, 48, 25.0).unwrap());
        assert_eq!(limits.capacity(&video), 9);
        let data = StreamConfig::Data(Default::default());
        assert_eq!(limits.capacity(&data), 200);
        // Without a budget: the configured frame count.
        let unbounded = Limits::new(&options(None)).unwrap();
        assert_eq!(unbounded.capacity(&video), 200);
    }

    #[test]
    fn a_budget_smaller_than_the_steps_after_the_queue_is_refused() {
        let err = Limits::new(&options(Some(700))).unwrap_err().to_string();
        assert!(err.contains("max_latency") && err.contains("700"), "{err}");
    }

    /// Regression test: with 200 frames of queue, frames waited seconds for a busy
    /// encoder, and none of them was durable.
    #[test]
    fn frames_too_old_to_become_durable_in_time_are_shed_and_counted() {
        let limits = Limits::new(&options(Some(1000))).unwrap();
        let (sender, rx) = sender(limits, &video(), 10);
        let now = crate::clock::monotonic_us();
        assert!(sender.push(Frame::new(now - 2_000_000, vec![1; 10])));
        assert!(sender.push(Frame::new(now - 1_000, vec![2; 10])));
        let counters = &sender.counters;
        let old = rx.recv().unwrap();
        assert!(!counters.take(&old, true), "a frame 2 s old was kept");
        let fresh = rx.recv().unwrap();
        assert!(counters.take(&fresh, false));
        let stats = counters.stats();
        assert_eq!((stats.dropped_overload, stats.frames_dropped()), (1, 1));
        assert_eq!(counters.queued_bytes.load(Ordering::Relaxed), 0);
    }

    /// `grabd run` hands a recording the frames it held since the press edge: they
    /// fit the queue, and the time they were held (up to `held_at_start`) is not
    /// counted as waiting; a frame older than that still is.
    #[test]
    fn frames_held_before_the_start_are_neither_refused_nor_shed() {
        let held = WriterOptions {
            held_at_start: Duration::from_millis(1000),
            ..options(Some(1000))
        };
        let limits = Limits::new(&held).unwrap();
        let video = StreamConfig::Video(VideoStreamConfig::new(64, 48, 25.0).unwrap());
        // 300 ms of waiting + 1 s held, at 25 fps.
        assert_eq!(limits.capacity(&video), 34);
        let (sender, rx) = sender(limits, &video, 10);
        let now = crate::clock::monotonic_us();
        assert!(sender.push(Frame::new(now - 800_000, vec![1; 10])));
        assert!(sender.push(Frame::new(now - 2_000_000, vec![2; 10])));
        let counters = &sender.counters;
        assert!(
            counters.take(&rx.recv().unwrap(), true),
            "held 0.8 s, then taken at once"
        );
        assert!(
            !counters.take(&rx.recv().unwrap(), false),
            "2 s old: 1 s past the hold"
        );
    }

    /// Regression test: on the QEMU rig's slow guest a video stream that shed kept
    /// taking its oldest frame still within the wait, so every frame it kept was
    /// already ~300 ms old when its encoding began, and power cuts lost up to 1.5 s.
    #[test]
    fn a_shedding_video_stream_skips_to_its_newest_frame_and_a_data_stream_does_not() {
        let limits = Limits::new(&options(Some(1000))).unwrap();
        let now = crate::clock::monotonic_us();
        let video = StreamConfig::Video(VideoStreamConfig::new(64, 48, 25.0).unwrap());
        let data = StreamConfig::Data(Default::default());
        for (config, newer_shed) in [(video, true), (data, false)] {
            let (sender, rx) = sender(limits, &config, 10);
            let counters = &sender.counters;
            // Before any shedding a frame with a newer one behind it is kept: a short
            // spike is caught up frame by frame.
            assert!(sender.push(Frame::new(now - 100_000, vec![1; 10])));
            assert!(sender.push(Frame::new(now - 60_000, vec![1; 10])));
            assert!(counters.take(&rx.recv().unwrap(), !rx.is_empty()));
            assert!(counters.take(&rx.recv().unwrap(), !rx.is_empty()));
            // Once it sheds, a video frame that a newer one supersedes is shed too.
            assert!(sender.push(Frame::new(now - 2_000_000, vec![1; 10])));
            assert!(sender.push(Frame::new(now - 40_000, vec![2; 10])));
            assert!(sender.push(Frame::new(now - 1_000, vec![3; 10])));
            assert!(!counters.take(&rx.recv().unwrap(), !rx.is_empty()));
            assert_eq!(
                counters.take(&rx.recv().unwrap(), !rx.is_empty()),
                !newer_shed,
                "{config:?}"
            );
            assert!(counters.take(&rx.recv().unwrap(), !rx.is_empty()));
            let dropped = if newer_shed { 2 } else { 1 };
            assert_eq!(counters.stats().dropped_overload, dropped);
            assert_eq!(counters.queued_bytes.load(Ordering::Relaxed), 0);
        }
    }

    /// Regression test: on the QEMU rig's slow guest the rgb encoder stalled at the
    /// start, its queue filled, and the newest frames were refused while the old ones
    /// queued were shed as too late: no frame of the next second was kept.
    #[test]
    fn under_a_budget_a_full_queue_drops_its_oldest_frame_for_the_new_one() {
        let limits = Limits::new(&options(Some(1000))).unwrap();
        let (sender, rx) = sender(limits, &video(), 2);
        let now = crate::clock::monotonic_us();
        for (i, t) in [now - 80_000, now - 40_000, now].into_iter().enumerate() {
            assert!(sender.push(Frame::new(t, vec![i as u8; 10])), "frame {i}");
        }
        let stats = sender.counters.stats();
        assert_eq!((stats.dropped_overload, stats.dropped_queue_full), (1, 0));
        assert_eq!(rx.recv().unwrap().data[0], 1, "the oldest frame went");
        assert_eq!(rx.recv().unwrap().data[0], 2);
        // By bytes (1000): 600 + 600 does not fit; the older 600 goes.
        assert!(sender.push(Frame::new(now + 1, vec![3; 600])));
        assert!(sender.push(Frame::new(now + 2, vec![4; 600])));
        assert_eq!(rx.try_iter().map(|f| f.data[0]).collect::<Vec<_>>(), [4]);
        assert_eq!(sender.counters.stats().dropped_overload, 2);
        // Once the encoder thread is done with the queue, a frame is refused.
        sender.counters.close_queue();
        drop(rx);
        assert!(!sender.push(Frame::new(now + 3, vec![5; 10])));
        assert_eq!(sender.counters.stats().dropped_queue_full, 1);
    }

    #[test]
    fn a_queue_is_bounded_by_bytes() {
        let limits = Limits::new(&options(None)).unwrap();
        let (sender, rx) = sender(limits, &video(), 100);
        assert!(sender.push(Frame::new(0, vec![0; 600])));
        // 600 + 600 > 1000 bytes: refused and counted, the producer never waits.
        assert!(!sender.push(Frame::new(1, vec![0; 600])));
        assert_eq!(sender.counters.stats().dropped_queue_full, 1);
        assert!(sender.counters.take(&rx.recv().unwrap(), false));
        // An empty queue takes a frame however large.
        assert!(sender.push(Frame::new(2, vec![0; 5000])));
    }
}
