//! Running a recording session: sources into the recording core, the storage guard,
//! and when to stop (duration, signal, full card, failed stream); [`state`] is the
//! service's pure state machine (button gestures, states, effects); [`service`] is
//! `grabd run` around it, with [`control`] (the control socket and `grabd ctl`) and
//! [`systemd`] (readiness, status, watchdog); [`sources`] opens the configured cameras
//! and IMUs (and again after a loss); [`probe`] is `grabd probe`.

pub mod control;
pub mod probe;
pub mod process;
pub mod recorder;
pub mod service;
pub mod sources;
pub mod state;
pub mod storage;
pub mod systemd;
mod tap;

pub use recorder::{record, Outcome, RuntimeError, StopReason};
