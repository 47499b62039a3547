//! LED and beep patterns on a thread of their own: the button and capture never wait
//! for a pattern (the reference's busy-wait beeps stalled both).

use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};

use super::Output;
use crate::runtime::state::Beeps;
use crate::thread::{Handle, Heartbeat};

/// What the LEDs show (the reference's patterns).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    Off,
    /// Green blinking 0.5 s / 0.5 s while recovering.
    Booting,
    /// Green steady.
    Idle,
    /// Red 1 s on / 1 s off.
    Recording,
    /// Both blinking 0.2 s / 0.2 s.
    Error,
}

impl Pattern {
    /// (green, red) at `elapsed` since the pattern began, and how long that lasts.
    pub fn leds(self, elapsed: Duration) -> ((bool, bool), Option<Duration>) {
        let blink = |half: Duration| {
            let n = elapsed.as_micros() / half.as_micros();
            let on = n % 2 == 0;
            let next = half * (n as u32 + 1) - elapsed;
            (on, Some(next))
        };
        match self {
            Pattern::Off => ((false, false), None),
            Pattern::Idle => ((true, false), None),
            Pattern::Booting => {
                let (on, next) = blink(Duration::from_millis(500));
                ((on, false), next)
            }
            Pattern::Recording => {
                let (on, next) = blink(Duration::from_secs(1));
                ((false, on), next)
            }
            Pattern::Error => {
                let (on, next) = blink(Duration::from_millis(200));
                ((on, on), next)
            }
        }
    }
}

/// Tone lengths of a beep pattern (100 ms gaps between them): start 1, stop 2,
/// failure 5 (100 ms each); mark one short; status one long (free space fine) or three
/// long (low).
pub fn beep_pattern(beeps: Beeps) -> &'static [u64] {
    match beeps {
        Beeps::Start => &[100],
        Beeps::Stop => &[100, 100],
        Beeps::Failure => &[100, 100, 100, 100, 100],
        Beeps::Mark => &[50],
        Beeps::StatusOk => &[400],
        Beeps::StatusLow => &[400, 400, 400],
    }
}

const BEEP_GAP: Duration = Duration::from_millis(100);

enum Message {
    Pattern(Pattern),
    Beep(Beeps),
}

/// Owns the LEDs and the buzzer; dropping it turns them off and ends the thread.
pub struct Indicator {
    tx: Option<Sender<Message>>,
    handle: Option<Handle<()>>,
}

/// The outputs the indicator drives; any may be missing (a warning at start-up).
pub struct Outputs {
    pub green: Option<Box<dyn Output>>,
    pub red: Option<Box<dyn Output>>,
    pub buzzer: Option<Box<dyn Output>>,
}

impl Indicator {
    pub fn start(outputs: Outputs) -> std::io::Result<Self> {
        let (tx, rx) = bounded(64);
        let handle =
            crate::thread::spawn("indicator", "", None, move |beat| run(outputs, &rx, beat))?;
        Ok(Indicator {
            tx: Some(tx),
            handle: Some(handle),
        })
    }

    pub fn show(&self, pattern: Pattern) {
        self.send(Message::Pattern(pattern));
    }

    pub fn beep(&self, beeps: Beeps) {
        self.send(Message::Beep(beeps));
    }

    fn send(&self, message: Message) {
        if let Some(tx) = &self.tx {
            // Never block the caller: a full queue drops the pattern.
            if tx.try_send(message).is_err() {
                tracing::warn!("indicator queue full; a pattern was dropped");
            }
        }
    }

    pub fn heartbeat(&self) -> Option<Heartbeat> {
        self.handle.as_ref().map(Handle::heartbeat)
    }
}

impl Drop for Indicator {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(handle) = self.handle.take() {
            let _ = handle.join_within(Duration::from_secs(2));
        }
    }
}

/// One output and the last value written (written again only when it changes).
struct Driven {
    output: Box<dyn Output>,
    on: Option<bool>,
    warned: bool,
}

impl Driven {
    fn set(&mut self, on: bool) {
        if self.on == Some(on) {
            return;
        }
        match self.output.set(on) {
            Ok(()) => self.on = Some(on),
            Err(e) if !self.warned => {
                self.warned = true;
                tracing::warn!(error = %e, "indicator output failed");
            }
            Err(_) => {}
        }
    }
}

fn run(outputs: Outputs, rx: &Receiver<Message>, beat: &Heartbeat) {
    let drive = |o: Option<Box<dyn Output>>| {
        o.map(|output| Driven {
            output,
            on: None,
            warned: false,
        })
    };
    let (mut green, mut red, mut buzzer) = (
        drive(outputs.green),
        drive(outputs.red),
        drive(outputs.buzzer),
    );
    let mut pattern = (Pattern::Off, Instant::now());
    // Buzzer changes still to come: (when, on).
    let mut tones: std::collections::VecDeque<(Instant, bool)> = Default::default();
    loop {
        beat.beat();
        let now = Instant::now();
        let ((g, r), led_next) = pattern.0.leds(now - pattern.1);
        if let Some(o) = &mut green {
            o.set(g);
        }
        if let Some(o) = &mut red {
            o.set(r);
        }
        while tones.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((at, on)) = tones.pop_front() {
                if let Some(o) = &mut buzzer {
                    o.set(on);
                }
                if on {
                    // Woken late (a loaded CPU): the tone still lasts its full length,
                    // so move the rest of the pattern by the delay.
                    let late = Instant::now() - at;
                    for (t, _) in tones.iter_mut() {
                        *t += late;
                    }
                }
            }
        }
        let mut wait = led_next
            .unwrap_or(Duration::from_secs(1))
            .min(Duration::from_secs(1));
        if let Some((at, _)) = tones.front() {
            wait = wait.min(at.saturating_duration_since(now));
        }
        match rx.recv_timeout(wait) {
            Ok(Message::Pattern(p)) => {
                if p != pattern.0 {
                    pattern = (p, Instant::now());
                }
            }
            Ok(Message::Beep(beeps)) => {
                // After what is already queued, so patterns never overlap.
                let mut at = tones.back().map_or(Instant::now(), |(t, _)| *t + BEEP_GAP);
                for &ms in beep_pattern(beeps) {
                    tones.push_back((at, true));
                    at += Duration::from_millis(ms);
                    tones.push_back((at, false));
                    at += BEEP_GAP;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    for o in [&mut green, &mut red, &mut buzzer].into_iter().flatten() {
        o.set(false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpio::FakeOutput;

    #[test]
    fn led_patterns_follow_the_reference() {
        let ms = Duration::from_millis;
        assert_eq!(Pattern::Idle.leds(ms(5_000)), ((true, false), None));
        assert_eq!(
            Pattern::Recording.leds(ms(0)),
            ((false, true), Some(ms(1000)))
        );
        assert_eq!(
            Pattern::Recording.leds(ms(1500)),
            ((false, false), Some(ms(500)))
        );
        assert_eq!(
            Pattern::Error.leds(ms(250)),
            ((false, false), Some(ms(150)))
        );
        assert_eq!(Pattern::Error.leds(ms(400)), ((true, true), Some(ms(200))));
        assert_eq!(Pattern::Off.leds(ms(7)), ((false, false), None));
    }

    #[test]
    fn beeps_play_in_order_and_the_caller_never_waits() {
        let (green, green_log) = FakeOutput::new("green");
        let (buzzer, buzzer_log) = FakeOutput::new("buzzer");
        let indicator = Indicator::start(Outputs {
            green: Some(Box::new(green)),
            red: None,
            buzzer: Some(Box::new(buzzer)),
        })
        .unwrap();
        let t = Instant::now();
        indicator.show(Pattern::Idle);
        indicator.beep(Beeps::Stop);
        indicator.beep(Beeps::Failure);
        assert!(t.elapsed() < Duration::from_millis(50), "show/beep blocked");
        std::thread::sleep(Duration::from_millis(1_600));
        drop(indicator);
        let buzz = buzzer_log.lock().unwrap().clone();
        let pulses: Vec<i64> = buzz
            .windows(2)
            .filter(|w| w[0].1 && !w[1].1)
            .map(|w| (w[1].0 - w[0].0) / 1000)
            .collect();
        assert_eq!(pulses.len(), 7, "{buzz:?}");
        assert!(pulses.iter().all(|&ms| ms >= 99), "{pulses:?}");
        let green = green_log.lock().unwrap().clone();
        assert_eq!(
            green.iter().map(|&(_, on)| on).collect::<Vec<_>>(),
            [false, true, false]
        );
    }
}
