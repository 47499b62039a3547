//! Running a recording session: sources into the recording core, the storage guard,
//! and when to stop (duration, signal, full card, failed stream).

pub mod process;
pub mod recorder;
pub mod storage;

pub use recorder::{record, Outcome, RuntimeError, StopReason};
