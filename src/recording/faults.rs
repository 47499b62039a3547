//! Fault injection, for tests only: make an encoder thread panic, hang or run slowly, a
//! part's close fail, the finalizer panic or stall, or the part syncer's fsync stall, at a
//! chosen point. Every fault is off by default and grabd itself never sets one; tests
//! do, through [`WriterOptions::faults`](super::WriterOptions::faults). It exists so
//! the failure paths are tested on the real threads rather than on a copy of them.

use std::time::Duration;

/// Which faults to inject; streams are named by their config name.
#[derive(Debug, Clone, Default)]
pub struct InjectedFaults {
    /// This stream's encoder thread panics after encoding this many frames.
    pub panic_encoder: Option<(String, u64)>,
    /// Encoding this stream's frame after this many fails, as a codec error would.
    pub fail_encoder: Option<(String, u64)>,
    /// This stream's encoder thread stops for this long after encoding this many
    /// frames (a hung encoder).
    pub hang_encoder: Option<(String, u64, Duration)>,
    /// Every close of this stream's parts fails (after the data, before the trailer).
    pub fail_part_close: Option<String>,
    /// The finalizer panics when it gets its first chunk.
    pub panic_finalizer: bool,
    /// The finalizer stalls this long before each chunk.
    pub stall_finalizer: Option<Duration>,
    /// The part syncer's first fsync pass stalls this long.
    pub stall_sync: Option<Duration>,
    /// Every frame of this stream takes this much longer to encode: a board too slow
    /// for the stream.
    pub slow_encoder: Option<(String, Duration)>,
}

impl InjectedFaults {
    /// Called by an encoder thread after each encoded frame.
    pub(crate) fn after_frame(&self, stream: &str, encoded: u64) {
        if let Some((name, after)) = &self.panic_encoder {
            if name == stream && encoded == *after {
                panic!("injected fault: the encoder of {stream} panics after {after} frames");
            }
        }
        if let Some((name, after, pause)) = &self.hang_encoder {
            if name == stream && encoded == *after {
                tracing::warn!(stream, "injected fault: the encoder hangs for {pause:?}");
                std::thread::sleep(*pause);
            }
        }
    }

    /// Called by an encoder thread before it encodes a frame.
    pub(crate) fn before_encode(&self, stream: &str) {
        if let Some((name, extra)) = &self.slow_encoder {
            if name == stream {
                std::thread::sleep(*extra);
            }
        }
    }

    /// Whether encoding `stream`'s next frame, after `encoded` of them, must fail.
    pub(crate) fn fails_encode(&self, stream: &str, encoded: u64) -> bool {
        self.fail_encoder
            .as_ref()
            .is_some_and(|(name, after)| name == stream && encoded == *after)
    }

    pub(crate) fn fails_close(&self, stream: &str) -> bool {
        self.fail_part_close.as_deref() == Some(stream)
    }

    /// Called by the finalizer before each chunk.
    pub(crate) fn before_chunk(&self) {
        if self.panic_finalizer {
            panic!("injected fault: the finalizer panics");
        }
        if let Some(pause) = self.stall_finalizer {
            std::thread::sleep(pause);
        }
    }
}
