//! The one clock every frame and sensor sample is stamped from.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds on CLOCK_MONOTONIC: never jumps, shared by every source in the process.
pub fn monotonic_us() -> i64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => ts.tv_sec() * 1_000_000 + ts.tv_nsec() / 1_000,
        // CLOCK_MONOTONIC exists on every Linux; if it ever failed, fall back to a clock
        // that still only moves forward within this process.
        Err(_) => fallback_us(),
    }
}

fn fallback_us() -> i64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    let start = START.get_or_init(Instant::now);
    i64::try_from(start.elapsed().as_micros()).unwrap_or(i64::MAX)
}

/// Microseconds since the Unix epoch (wall clock; may jump).
pub fn unix_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// RFC 3339 UTC with milliseconds for a Unix time in µs.
pub fn rfc3339_ms(unix_us: i64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_micros(u64::try_from(unix_us).unwrap_or(0));
    humantime::format_rfc3339_millis(t).to_string()
}

/// Paces a real-time source like a camera's sensor clock: ticks stay on a fixed
/// schedule (a tick that is a little late does not shift the ones after it); a source
/// more than a whole period behind skips the ticks it missed instead of bursting.
#[derive(Debug)]
pub struct Pacer {
    period_us: i64,
    next_due_us: Option<i64>,
}

impl Pacer {
    pub fn new(rate_hz: f64) -> Self {
        Pacer {
            period_us: ((1_000_000.0 / rate_hz).round() as i64).max(1),
            next_due_us: None,
        }
    }

    pub fn period_us(&self) -> i64 {
        self.period_us
    }

    pub fn wait(&mut self) {
        let now = monotonic_us();
        let due = *self.next_due_us.get_or_insert(now);
        if due > now {
            std::thread::sleep(std::time::Duration::from_micros((due - now).unsigned_abs()));
        }
        let mut next = due + self.period_us;
        if now > next {
            next = now + self.period_us;
        }
        self.next_due_us = Some(next);
    }
}
