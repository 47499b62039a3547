//! Running a recording session: sources into the recording core, the storage guard,
//! and when to stop (duration, signal, full card, failed stream); [`state`] is the
//! service's pure state machine (button gestures, states, effects).

pub mod process;
pub mod recorder;
pub mod state;
pub mod storage;

pub use recorder::{record, Outcome, RuntimeError, StopReason};
