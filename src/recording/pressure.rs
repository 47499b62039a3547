//! How far behind their capture the encoders are, so that the work that may wait (the
//! finalizer's merges and appends) waits while the work that may not (encoding frames
//! within the latency budget) is short of CPU.
//!
//! Thread priorities alone do not give the encoders that CPU: a nice level orders the
//! threads of one CPU's run queue, but a finalizer alone on another CPU runs at full
//! speed, and under a CPU quota (a cgroup's `cpu.max`, systemd's `CPUQuota=`) every CPU
//! it uses is taken from the encoders' share. Measured on the QEMU rig, grabd capped at
//! 25 % of a guest CPU: the finalizer took a third of grabd's CPU while single frames
//! waited 1.5-2.6 s for their encoders. So the finalizer asks [`Pressure::is_behind`]
//! between packets and pauses while any encoder is late.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

/// No frame pending on a stream.
const IDLE: i64 = i64::MAX;

/// How long the encoders still count as behind after the last sign of it (a frame taken
/// late, shed, or refused by a full queue): a finalizer that resumed the moment the
/// encoders caught up would take their CPU again at once.
pub const BEHIND_HOLD: Duration = Duration::from_millis(500);

/// How often a paused finalizer looks again.
const PAUSE_STEP: Duration = Duration::from_millis(20);

/// The encoders' lag behind capture, shared by the encoder threads (which report it)
/// and the finalizer (which waits it out).
#[derive(Debug)]
pub struct Pressure {
    /// A frame waiting (queued or being encoded) for longer than this makes the
    /// encoders behind; `None`: never (no latency budget, nothing to protect).
    late_after_us: Option<i64>,
    /// Per stream, the capture time (monotonic µs) of its oldest frame not yet encoded,
    /// or [`IDLE`].
    pending_since_us: Vec<AtomicI64>,
    /// Monotonic µs until which the encoders count as behind.
    behind_until_us: AtomicI64,
    /// Set once the encoders are done (stop): nothing is behind any more.
    released: AtomicBool,
}

impl Pressure {
    /// For `streams` streams, behind when a frame has waited more than `late_after`.
    pub fn new(streams: usize, late_after: Option<Duration>) -> Self {
        Pressure {
            late_after_us: late_after.map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX)),
            pending_since_us: (0..streams).map(|_| AtomicI64::new(IDLE)).collect(),
            behind_until_us: AtomicI64::new(i64::MIN),
            released: AtomicBool::new(false),
        }
    }

    /// A frame captured at `captured_us` was queued on `stream`: it is the stream's
    /// oldest pending frame if the stream had none.
    pub fn queued(&self, stream: usize, captured_us: i64) {
        if let Some(slot) = self.pending_since_us.get(stream) {
            let _ = slot.compare_exchange(IDLE, captured_us, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// `stream`'s encoder took the frame captured at `captured_us`, `now_us`.
    pub fn taken(&self, stream: usize, captured_us: i64, now_us: i64) {
        if let Some(slot) = self.pending_since_us.get(stream) {
            slot.store(captured_us, Ordering::Relaxed);
        }
        if self.late(captured_us, now_us) {
            self.overloaded(now_us);
        }
    }

    /// `stream`'s encoder is done with its frame; `queue_empty`: nothing else waits.
    pub fn done(&self, stream: usize, queue_empty: bool) {
        if queue_empty {
            if let Some(slot) = self.pending_since_us.get(stream) {
                slot.store(IDLE, Ordering::Relaxed);
            }
        }
    }

    /// A frame was shed or refused for overload at `now_us`.
    pub fn overloaded(&self, now_us: i64) {
        if self.late_after_us.is_some() {
            let until = now_us.saturating_add(i64::try_from(BEHIND_HOLD.as_micros()).unwrap_or(0));
            self.behind_until_us.fetch_max(until, Ordering::Relaxed);
        }
    }

    /// The encoders are done (the writer stops): nobody is behind any more.
    pub fn release(&self) {
        self.released.store(true, Ordering::Release);
    }

    /// Whether any encoder is behind at `now_us`: a frame of some stream has waited
    /// too long, or one did less than [`BEHIND_HOLD`] ago.
    pub fn is_behind(&self, now_us: i64) -> bool {
        if self.late_after_us.is_none() || self.released.load(Ordering::Acquire) {
            return false;
        }
        if now_us < self.behind_until_us.load(Ordering::Relaxed) {
            return true;
        }
        let late = self
            .pending_since_us
            .iter()
            .any(|slot| self.late(slot.load(Ordering::Relaxed), now_us));
        if late {
            self.overloaded(now_us);
        }
        late
    }

    /// Sleep while the encoders are behind; returns how long that was.
    pub fn wait_while_behind(&self) -> Duration {
        let mut waited = Duration::ZERO;
        while self.is_behind(crate::clock::monotonic_us()) {
            std::thread::sleep(PAUSE_STEP);
            waited += PAUSE_STEP;
        }
        waited
    }

    fn late(&self, captured_us: i64, now_us: i64) -> bool {
        match self.late_after_us {
            Some(limit) => captured_us != IDLE && now_us.saturating_sub(captured_us) > limit,
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1000;

    fn pressure() -> Pressure {
        Pressure::new(2, Some(Duration::from_millis(100)))
    }

    #[test]
    fn a_frame_waiting_past_the_limit_makes_the_encoders_behind() {
        let p = pressure();
        p.queued(1, 1000 * MS);
        assert!(!p.is_behind(1050 * MS), "50 ms is not late");
        assert!(p.is_behind(1101 * MS), "a queued frame 101 ms old is late");
        // Taken and encoded, nothing else queued: behind only for the hold.
        p.taken(1, 1000 * MS, 1101 * MS);
        p.done(1, true);
        assert!(p.is_behind(1101 * MS + 499 * MS));
        assert!(!p.is_behind(1101 * MS + 501 * MS));
    }

    #[test]
    fn a_frame_being_encoded_for_too_long_makes_the_encoders_behind() {
        let p = pressure();
        p.taken(0, 1000 * MS, 1010 * MS);
        assert!(!p.is_behind(1090 * MS));
        assert!(
            p.is_behind(1200 * MS),
            "an encode still running 200 ms after capture"
        );
    }

    #[test]
    fn a_queue_left_non_empty_keeps_the_oldest_frame_pending() {
        let p = pressure();
        p.taken(0, 1000 * MS, 1000 * MS);
        p.queued(0, 1040 * MS);
        // More was queued: the encoder's frame stays the stream's oldest until the next
        // take, which replaces it.
        p.done(0, false);
        assert!(p.is_behind(1150 * MS));
    }

    #[test]
    fn shedding_holds_the_encoders_behind() {
        let p = pressure();
        p.overloaded(5000 * MS);
        assert!(p.is_behind(5400 * MS));
        assert!(!p.is_behind(5600 * MS));
    }

    #[test]
    fn without_a_budget_or_once_released_nothing_is_behind() {
        let p = Pressure::new(1, None);
        p.queued(0, 0);
        p.overloaded(0);
        assert!(!p.is_behind(10_000 * MS));
        let p = pressure();
        p.queued(0, 0);
        p.release();
        assert!(!p.is_behind(10_000 * MS));
    }
}
