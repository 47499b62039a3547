//! Test doubles: a button driven by a channel, outputs that log every change.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{unbounded, Receiver, RecvTimeoutError, Sender};

use super::{Button, ButtonEdge, GpioError, Output};

/// A button whose edges come from the [`Sender`] [`FakeButton::new`] returns; when the
/// sender is dropped, `wait` fails (a device that went away).
pub struct FakeButton {
    edges: Receiver<ButtonEdge>,
}

impl FakeButton {
    pub fn new() -> (Self, Sender<ButtonEdge>) {
        let (tx, rx) = unbounded();
        (FakeButton { edges: rx }, tx)
    }
}

impl Button for FakeButton {
    fn wait(&mut self, timeout: Duration) -> Result<Option<ButtonEdge>, GpioError> {
        match self.edges.recv_timeout(timeout) {
            Ok(edge) => Ok(Some(edge)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(GpioError::Failed {
                line: "fake".into(),
                reason: "unplugged".into(),
            }),
        }
    }

    fn describe(&self) -> String {
        "fake button".into()
    }
}

/// Every change of a [`FakeOutput`]: (monotonic µs, on).
pub type FakeOutputLog = Arc<Mutex<Vec<(i64, bool)>>>;

pub struct FakeOutput {
    name: String,
    log: FakeOutputLog,
}

impl FakeOutput {
    pub fn new(name: &str) -> (Self, FakeOutputLog) {
        let log = FakeOutputLog::default();
        (
            FakeOutput {
                name: name.to_owned(),
                log: Arc::clone(&log),
            },
            log,
        )
    }
}

impl Output for FakeOutput {
    fn set(&mut self, on: bool) -> Result<(), GpioError> {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((crate::clock::monotonic_us(), on));
        Ok(())
    }

    fn describe(&self) -> String {
        format!("fake {}", self.name)
    }
}
