//! The producer's side of a stream: [`Frame`]s go into a bounded queue through a
//! [`StreamSender`] that never blocks, and every frame's fate is counted in
//! [`Counters`], reported as [`StreamStats`].

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Sender, TrySendError};

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

/// What happened to one stream's frames so far, shared by its producer and its encoder
/// thread.
#[derive(Default)]
pub(super) struct Counters {
    pub accepted: AtomicU64,
    pub encoded: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_late: AtomicU64,
    pub dropped_failed: AtomicU64,
    pub dropped_invalid: AtomicU64,
    pub failed: AtomicBool,
}

impl Counters {
    pub fn stats(&self, name: &str) -> StreamStats {
        StreamStats {
            name: name.to_owned(),
            frames_encoded: self.encoded.load(Ordering::Relaxed),
            dropped_queue_full: self.dropped_queue_full.load(Ordering::Relaxed),
            dropped_late: self.dropped_late.load(Ordering::Relaxed),
            dropped_failed: self.dropped_failed.load(Ordering::Relaxed),
            dropped_invalid: self.dropped_invalid.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// What happened to one stream's frames.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StreamStats {
    pub name: String,
    /// Frames handed to the encoder (the file's own count is read back separately).
    pub frames_encoded: u64,
    /// Frames refused because the stream's queue was full or its encoder had failed
    /// (the producer never waits).
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
    pub failed: bool,
}

impl StreamStats {
    pub fn frames_dropped(&self) -> u64 {
        self.dropped_queue_full + self.dropped_late + self.dropped_failed + self.dropped_invalid
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
    /// Queue a frame; `false` (and a counted drop) when the queue is full or the
    /// stream's encoder is gone.
    pub fn push(&self, frame: Frame) -> bool {
        self.earliest_pushed_us
            .fetch_min(frame.timestamp_us, Ordering::Relaxed);
        match self.tx.try_send(frame) {
            Ok(()) => {
                self.counters.accepted.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters
                    .dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Frames waiting in the queue.
    pub fn queued(&self) -> usize {
        self.tx.len()
    }
}
