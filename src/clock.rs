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

/// Paces a real-time source like a camera's sensor clock: ticks lie on a fixed grid
/// of one period, and each is stamped with its grid time. A source that wakes late (a
/// stall, CPU starvation, a slow source) takes the latest grid point it has reached and
/// counts the ones it missed: ticks are never made up in a burst, so two ticks are
/// always a whole number of periods apart.
#[derive(Debug)]
pub struct Pacer {
    schedule: Schedule,
}

impl Pacer {
    pub fn new(rate_hz: f64) -> Self {
        Pacer {
            schedule: Schedule::new(rate_hz),
        }
    }

    pub fn period_us(&self) -> i64 {
        self.schedule.period_us
    }

    /// Ticks missed so far (never delivered).
    pub fn skipped(&self) -> u64 {
        self.schedule.skipped
    }

    /// Sleep until the next tick; returns its time (monotonic µs), the moment the
    /// "sensor" captured, to stamp the frame with.
    pub fn wait(&mut self) -> i64 {
        let due = self.schedule.due(monotonic_us());
        let now = monotonic_us();
        if due > now {
            std::thread::sleep(std::time::Duration::from_micros((due - now).unsigned_abs()));
        }
        // The clock is read again after the sleep: a stall inside it must count as late.
        self.schedule.fire(monotonic_us())
    }
}

/// The pure part of [`Pacer`]: the grid, and what waking late does.
#[derive(Debug)]
struct Schedule {
    period_us: i64,
    next_due_us: Option<i64>,
    skipped: u64,
}

impl Schedule {
    fn new(rate_hz: f64) -> Self {
        Schedule {
            period_us: ((1_000_000.0 / rate_hz).round() as i64).max(1),
            next_due_us: None,
            skipped: 0,
        }
    }

    /// When the next tick is due, asked at `now` (the first tick is due at once).
    fn due(&mut self, now_us: i64) -> i64 {
        *self.next_due_us.get_or_insert(now_us)
    }

    /// Woken at `now` for the next tick: returns the tick's time, the latest grid point
    /// reached, and plans the one after it.
    fn fire(&mut self, now_us: i64) -> i64 {
        let due = self.due(now_us);
        let missed = (now_us - due).max(0) / self.period_us;
        self.skipped += missed.unsigned_abs();
        let tick = due + missed * self.period_us;
        self.next_due_us = Some(tick + self.period_us);
        tick
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_a_little_late_keep_the_grid() {
        let mut s = Schedule::new(25.0);
        assert_eq!(s.due(1_000), 1_000);
        assert_eq!(s.fire(1_000), 1_000);
        assert_eq!(s.due(1_500), 41_000);
        // Woken 30 ms late: still that tick, and the next one stays on the grid.
        assert_eq!(s.fire(71_000), 41_000);
        assert_eq!(s.due(71_100), 81_000);
        assert_eq!(s.skipped, 0);
    }

    /// Regression test: the old pacer read the clock before sleeping, so after a stall
    /// inside the sleep (SIGSTOP, CPU starvation) the next tick fired at once, and the
    /// frames were stamped after the fact: two frames under 1 ms apart.
    #[test]
    fn a_stall_skips_ticks_instead_of_bursting() {
        let mut s = Schedule::new(25.0);
        s.due(0);
        s.fire(0);
        assert_eq!(s.due(10), 40_000);
        // Stopped for 5 s inside the sleep.
        let woke = 40_000 + 5_000_100;
        assert_eq!(s.fire(woke), 5_040_000);
        assert_eq!(s.skipped, 125);
        // The next tick is due a whole period later, not at once.
        assert_eq!(s.due(woke + 50), 5_080_000);
        assert_eq!(s.fire(5_080_000), 5_080_000);
    }

    #[test]
    fn ticks_are_whole_periods_apart_however_late() {
        let mut s = Schedule::new(100.0);
        let mut ticks = Vec::new();
        let mut now = 0;
        for i in 0..200 {
            // Woken late by a varying amount, up to three periods.
            now = now.max(s.due(now)) + (i * 7_919) % 30_000;
            ticks.push(s.fire(now));
        }
        for w in ticks.windows(2) {
            let gap = w[1] - w[0];
            assert!(gap >= 10_000 && gap % 10_000 == 0, "{ticks:?}");
        }
    }

    #[test]
    fn the_pacer_stamps_its_ticks() {
        let mut p = Pacer::new(500.0);
        let t: Vec<i64> = (0..4).map(|_| p.wait()).collect();
        assert!(t.windows(2).all(|w| w[1] - w[0] >= 2_000), "{t:?}");
        assert!(t[3] <= monotonic_us());
    }
}
