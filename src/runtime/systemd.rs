//! systemd integration through sd-notify: READY=1 after boot recovery, STATUS= lines,
//! WATCHDOG=1 only while every thread reports, STOPPING=1. Without NOTIFY_SOCKET (not
//! run by systemd) every call is a no-op.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

pub struct Notifier {
    /// systemd's WatchdogSec, when set.
    watchdog: Option<Duration>,
    last_ping: Option<Instant>,
    withheld: Option<String>,
}

impl Notifier {
    pub fn from_env() -> Self {
        let watchdog = sd_notify::watchdog_enabled();
        if let Some(interval) = watchdog {
            tracing::info!(
                interval_ms = interval.as_millis() as u64,
                "systemd watchdog on"
            );
        }
        Notifier {
            watchdog,
            last_ping: None,
            withheld: None,
        }
    }

    fn send(&self, state: &[NotifyState]) {
        if let Err(e) = sd_notify::notify(state) {
            tracing::warn!(error = %e, "sd_notify failed");
        }
    }

    pub fn ready(&self) {
        self.send(&[NotifyState::Ready]);
    }

    pub fn status(&self, line: &str) {
        self.send(&[NotifyState::Status(line)]);
    }

    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }

    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Ping at half the interval (systemd's advice).
    pub fn ping(&mut self) {
        let Some(interval) = self.watchdog else {
            return;
        };
        if let Some(thread) = self.withheld.take() {
            tracing::info!(thread = %thread, "reporting again; watchdog pings resume");
        }
        if self.last_ping.map_or(true, |t| t.elapsed() >= interval / 2) {
            self.last_ping = Some(Instant::now());
            self.send(&[NotifyState::Watchdog]);
        }
    }

    /// A thread stopped reporting: no ping, so systemd restarts the service.
    pub fn withhold(&mut self, thread: &str) {
        if self.withheld.as_deref() != Some(thread) {
            tracing::error!(
                thread,
                "thread stopped reporting; withholding watchdog pings"
            );
            self.withheld = Some(thread.to_owned());
        }
    }
}

/// Whether logs should go to the journal: its socket exists.
pub fn journal_available() -> bool {
    std::path::Path::new("/run/systemd/journal/socket").exists()
}
