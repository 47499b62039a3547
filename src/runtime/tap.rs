//! A stream's tap: the service's sources run for the whole process, and each pushes
//! its frames into a tap, which passes them to the running recording, if any.
//!
//! A press is known to be a single press only once its double-press window passed,
//! but the recording must start (or end) at the press edge: while a press is pending
//! the tap holds back the frames captured after it, and passes them on (or drops them)
//! once its meaning is known. Held frames are capped at `hold_cap_us` of media.
//!
//! Idle, the tap keeps the last `hold_cap_us` of frames too: on a busy board the press
//! edge reaches the main loop, or a `ctl start` its recording, well after the frames
//! that followed it (by over 200 ms seen under QEMU), and the recording must still get
//! them. It is the memory a pending press takes anyway.
//!
//! An IMU's tap also puts the sample times in each packet (CLOCK_MONOTONIC) on the
//! recording's timeline, so its packets wait until the recording's origin is known.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::clock::monotonic_us;
use crate::recording::{Frame, StreamSender};

/// Rewrites a packet's payload for an origin (µs, CLOCK_MONOTONIC); `None` when the
/// payload is not the kind it rewrites.
pub type Rebase = fn(&[u8], i64) -> Option<Vec<u8>>;

pub struct Tap {
    state: Mutex<TapState>,
    rebase: Option<Rebase>,
    /// With no video stream, this tap's first packet is the recording's origin.
    sets_origin: bool,
    /// Monotonic µs of the last frame the source pushed (the source is alive).
    last_frame_us: AtomicI64,
    /// Monotonic µs of the last frame the recording accepted (its encoder is alive).
    last_accepted_us: AtomicI64,
}

struct TapState {
    ring: VecDeque<Frame>,
    target: Option<Target>,
    hold_from_us: Option<i64>,
    hold_cap_us: i64,
}

struct Target {
    sender: StreamSender,
    /// The recording's origin on CLOCK_MONOTONIC, once known.
    origin: Arc<OnceLock<i64>>,
    start_us: i64,
    end_us: Option<i64>,
    first_us: Option<i64>,
}

impl Tap {
    pub fn new(hold_cap_us: i64) -> Self {
        Tap {
            rebase: None,
            sets_origin: false,
            state: Mutex::new(TapState {
                ring: VecDeque::new(),
                target: None,
                hold_from_us: None,
                hold_cap_us,
            }),
            last_frame_us: AtomicI64::new(monotonic_us()),
            last_accepted_us: AtomicI64::new(monotonic_us()),
        }
    }

    /// A tap that rewrites each payload with `rebase` for the recording's origin.
    pub fn rebasing(hold_cap_us: i64, rebase: Rebase, sets_origin: bool) -> Self {
        Tap {
            rebase: Some(rebase),
            sets_origin,
            ..Tap::new(hold_cap_us)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TapState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// From a source thread. Never blocks on the recording (the sender drops when its
    /// queue is full).
    pub fn push(&self, frame: Frame) {
        let now = monotonic_us();
        self.last_frame_us.store(now, Ordering::Relaxed);
        let mut st = self.lock();
        st.ring.push_back(frame);
        if st.flush(self.rebase, self.sets_origin) {
            self.last_accepted_us.store(now, Ordering::Relaxed);
        }
        st.trim(now);
    }

    /// Start feeding `sender` with frames from `start_us` on; `origin` is the
    /// recording's, set once its first frame is processed.
    pub fn attach(&self, sender: StreamSender, start_us: i64, origin: Arc<OnceLock<i64>>) {
        let mut st = self.lock();
        st.target = Some(Target {
            sender,
            origin,
            start_us,
            end_us: None,
            first_us: None,
        });
        self.last_accepted_us
            .store(monotonic_us(), Ordering::Relaxed);
        st.flush(self.rebase, self.sets_origin);
    }

    /// Pass on the frames up to `end_us`, then stop feeding the recording.
    pub fn detach(&self, end_us: i64) {
        let mut st = self.lock();
        if let Some(target) = &mut st.target {
            target.end_us = Some(end_us);
        }
        st.flush(self.rebase, self.sets_origin);
        st.target = None;
    }

    pub fn set_hold(&self, hold_from_us: Option<i64>) {
        let mut st = self.lock();
        if st.hold_from_us != hold_from_us {
            st.hold_from_us = hold_from_us;
            if st.flush(self.rebase, self.sets_origin) {
                self.last_accepted_us
                    .store(monotonic_us(), Ordering::Relaxed);
            }
        }
    }

    /// Time of the first frame passed to the current recording.
    pub fn first_frame_us(&self) -> Option<i64> {
        self.lock().target.as_ref().and_then(|t| t.first_us)
    }

    pub fn last_frame_us(&self) -> i64 {
        self.last_frame_us.load(Ordering::Relaxed)
    }

    /// While recording: when the recording last took a frame (a stuck encoder stops
    /// taking them).
    pub fn last_accepted_us(&self) -> Option<i64> {
        let recording = self.lock().target.is_some();
        recording.then(|| self.last_accepted_us.load(Ordering::Relaxed))
    }
}

impl TapState {
    /// Pass on what may go; `true` when the recording accepted a frame.
    fn flush(&mut self, rebase: Option<Rebase>, sets_origin: bool) -> bool {
        let Some(target) = &mut self.target else {
            return false;
        };
        let mut accepted = false;
        while let Some(frame) = self.ring.front() {
            let t = frame.timestamp_us;
            if t < target.start_us {
                self.ring.pop_front();
                continue;
            }
            if target.end_us.is_some_and(|end| t > end)
                || self.hold_from_us.is_some_and(|hold| t > hold)
            {
                break;
            }
            let origin = match (rebase, target.origin.get()) {
                (None, _) => None,
                (Some(_), Some(&origin)) => Some(origin),
                (Some(_), None) if sets_origin => Some(*target.origin.get_or_init(|| t)),
                // Held until the recording's first frame fixes the origin.
                (Some(_), None) => break,
            };
            let Some(mut frame) = self.ring.pop_front() else {
                break;
            };
            if let (Some(rebase), Some(origin)) = (rebase, origin) {
                if let Some(data) = rebase(&frame.data, origin) {
                    frame = Frame::new(t, data);
                }
            }
            target.first_us.get_or_insert(t);
            accepted |= target.sender.push(frame);
        }
        accepted
    }

    fn trim(&mut self, now_us: i64) {
        let holding = self.target.is_some() || self.hold_from_us.is_some();
        let Some(newest) = self.ring.back().map(|f| f.timestamp_us) else {
            return;
        };
        let keep_from = if holding {
            newest - self.hold_cap_us
        } else {
            now_us.min(newest) - self.hold_cap_us
        };
        let keep_from = match self.hold_from_us {
            // Frames before a pending press are never needed: the press either starts a
            // recording there or ends one there.
            Some(hold) if self.target.is_none() => keep_from.max(hold),
            _ => keep_from,
        };
        while self
            .ring
            .front()
            .is_some_and(|f| f.timestamp_us < keep_from)
        {
            self.ring.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A press (or `ctl start`) that reaches the main loop 0.7 s after its edge, as on
    /// a busy board: idle, the tap still has the frames from the edge on.
    #[test]
    fn idle_the_last_hold_cap_of_frames_is_kept_for_a_late_press() {
        let tap = Tap::new(1_500_000);
        let now = monotonic_us();
        for i in 0..50 {
            tap.push(Frame::new(now - 2_000_000 + i * 40_000, vec![0u8; 4]));
        }
        let oldest = tap.lock().ring.front().map(|f| f.timestamp_us);
        let edge = now - 700_000;
        assert!(
            oldest.is_some_and(|t| t <= edge),
            "oldest frame kept {:?} µs before now, the press edge was 700 ms ago",
            oldest.map(|t| now - t)
        );
        let newest = now - 2_000_000 + 49 * 40_000;
        assert!(
            oldest.is_some_and(|t| t >= newest - 1_500_000),
            "more than the hold cap kept"
        );
    }
}
