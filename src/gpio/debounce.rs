//! Software debounce, for a chip whose driver refused the kernel's.

/// Reports the first edge that changes the button's state at once (stamped with that
/// edge's time), then ignores edges for `period_us`; when the period is over the line
/// is read again and a change that the ignored edges made is reported then.
#[derive(Debug, Clone)]
pub struct Debouncer {
    period_us: i64,
    pressed: bool,
    quiet_until_us: Option<i64>,
}

impl Debouncer {
    pub fn new(period_us: i64, pressed: bool) -> Self {
        Debouncer {
            period_us,
            pressed,
            quiet_until_us: None,
        }
    }

    /// A raw edge; `Some(pressed)` when it changes the debounced state.
    pub fn edge(&mut self, pressed: bool, at_us: i64) -> Option<bool> {
        if self.quiet_until_us.is_some() || pressed == self.pressed {
            return None;
        }
        self.pressed = pressed;
        self.quiet_until_us = Some(at_us + self.period_us);
        Some(pressed)
    }

    /// When the line must be read again ([`Debouncer::settle`]).
    pub fn settle_deadline_us(&self) -> Option<i64> {
        self.quiet_until_us
    }

    /// The line's level at or after the deadline; `Some(pressed)` when the bounces
    /// left it other than last reported.
    pub fn settle(&mut self, pressed: bool, now_us: i64) -> Option<bool> {
        match self.quiet_until_us {
            Some(until) if now_us >= until => {
                self.quiet_until_us = None;
                if pressed != self.pressed {
                    self.pressed = pressed;
                    self.quiet_until_us = Some(now_us + self.period_us);
                    return Some(pressed);
                }
                None
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_bouncing_edges_count_once() {
        let mut d = Debouncer::new(10_000, false);
        let edges = [
            (true, 0),
            (false, 500),
            (true, 1000),
            (false, 1500),
            (true, 2000),
            (false, 2500),
            (true, 3000),
        ];
        let reported: Vec<bool> = edges.iter().filter_map(|&(p, t)| d.edge(p, t)).collect();
        assert_eq!(reported, [true]);
        assert_eq!(d.settle_deadline_us(), Some(10_000));
        assert_eq!(d.settle(true, 9_999), None, "too early");
        assert_eq!(d.settle(true, 10_000), None, "still pressed: nothing new");
        assert_eq!(d.edge(false, 80_000), Some(false));
    }

    #[test]
    fn a_release_hidden_in_the_bounces_is_reported_at_settle() {
        let mut d = Debouncer::new(10_000, false);
        assert_eq!(d.edge(true, 0), Some(true));
        assert_eq!(d.edge(false, 3_000), None);
        assert_eq!(d.settle(false, 10_000), Some(false));
        assert_eq!(d.settle_deadline_us(), Some(20_000));
    }
}
