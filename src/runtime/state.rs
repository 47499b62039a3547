//! The service's state machine, pure: button edges, control commands and what the
//! service reports go in (each stamped with a monotonic time in µs); effects for the
//! service to carry out come out. No clock of its own, no I/O: tests drive it with
//! made-up times.
//!
//! Two layers:
//! - [`Gestures`] turns button edges into gestures: a single press, a double press
//!   (the second press within `double_press` of the first), a long press (held for
//!   `long_press`, fired while still held).
//! - [`Machine`] maps each gesture to its configured [`Action`] for the current state
//!   and runs the action through the [`TRANSITIONS`] table.
//!
//! A press is only a single press once its double-press window has passed, so the
//! service holds back the frames captured since the press edge ([`Machine::hold_from_us`])
//! and the recording starts (or ends) at that edge, not when the window closed.

/// What the service is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Recovering cut-off recordings and opening devices.
    Booting,
    Idle,
    Recording,
    /// A device is missing or failing; retried every [`RETRY_US`].
    Error,
    ShuttingDown,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Booting => "booting",
            State::Idle => "idle",
            State::Recording => "recording",
            State::Error => "error",
            State::ShuttingDown => "shutting down",
        }
    }
}

/// What a gesture does; configurable per gesture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Start recording in idle, stop while recording.
    Toggle,
    /// A bookmark in the current recording at the press time.
    Mark,
    /// Beeps that tell whether free space is fine or low.
    Status,
    /// Finish the recording, then power off through the configured command.
    Shutdown,
    None,
}

/// Gesture timings and actions (the `[device]` config section's gesture part).
#[derive(Debug, Clone, PartialEq)]
pub struct GestureConfig {
    /// The second press must come within this long of the first (µs).
    pub double_press_us: i64,
    /// Held this long (µs), a press is a long press.
    pub long_press_us: i64,
    pub press: Action,
    pub double_press_idle: Action,
    pub double_press_recording: Action,
    pub long_press: Action,
}

impl Default for GestureConfig {
    fn default() -> Self {
        GestureConfig {
            double_press_us: 500_000,
            long_press_us: 5_000_000,
            press: Action::Toggle,
            double_press_idle: Action::Status,
            double_press_recording: Action::Mark,
            long_press: Action::Shutdown,
        }
    }
}

/// A recognised gesture, stamped with the (first) press's down edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gesture {
    Single { at_us: i64 },
    Double { at_us: i64 },
    Long { at_us: i64 },
}

/// Button edges in, gestures out.
#[derive(Debug, Default, Clone)]
pub struct Gestures {
    /// Down edge of the press being held, if any.
    held_since: Option<i64>,
    /// Down edge of a press that may still become a double press.
    pending: Option<i64>,
    /// The held press already counted (as a long press or as a double's second press):
    /// its release does nothing.
    consumed: bool,
}

impl Gestures {
    /// A debounced edge. Repeated edges of the same direction are ignored (an event
    /// lost in the kernel's queue must not invent a press).
    pub fn edge(&mut self, pressed: bool, at_us: i64, config: &GestureConfig) -> Option<Gesture> {
        match (pressed, self.held_since) {
            (true, None) => {
                self.held_since = Some(at_us);
                match self.pending {
                    Some(first) if at_us - first <= config.double_press_us => {
                        self.pending = None;
                        self.consumed = true;
                        Some(Gesture::Double { at_us: first })
                    }
                    earlier => {
                        // A press whose window passed before any tick came is a
                        // single press still owed.
                        self.consumed = false;
                        self.pending = Some(at_us);
                        earlier.map(|first| Gesture::Single { at_us: first })
                    }
                }
            }
            (false, Some(_)) => {
                self.held_since = None;
                self.consumed = false;
                self.tick(at_us, config)
            }
            _ => None,
        }
    }

    /// Time passed: a long press fires while held, a single press once its window
    /// passed and the button is up.
    pub fn tick(&mut self, now_us: i64, config: &GestureConfig) -> Option<Gesture> {
        if let Some(down) = self.held_since {
            if !self.consumed && now_us - down >= config.long_press_us {
                self.consumed = true;
                self.pending = None;
                return Some(Gesture::Long { at_us: down });
            }
            return None;
        }
        match self.pending {
            Some(first) if now_us - first > config.double_press_us => {
                self.pending = None;
                Some(Gesture::Single { at_us: first })
            }
            _ => None,
        }
    }

    /// The down edge of a press whose meaning is not known yet.
    pub fn undecided_since(&self) -> Option<i64> {
        match (self.pending, self.held_since) {
            (Some(first), _) => Some(first),
            (None, Some(down)) if !self.consumed => Some(down),
            _ => None,
        }
    }

    /// When [`Gestures::tick`] may next produce a gesture.
    pub fn next_deadline_us(&self, config: &GestureConfig) -> Option<i64> {
        match (self.held_since, self.pending) {
            (Some(down), _) if !self.consumed => Some(down + config.long_press_us),
            (Some(_), _) => None,
            (None, Some(first)) => Some(first + config.double_press_us + 1),
            (None, None) => None,
        }
    }
}

/// Beep patterns (the reference's: start 1, stop 2, failure 5; 100 ms each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beeps {
    Start,
    Stop,
    Failure,
    Mark,
    StatusOk,
    StatusLow,
}

/// What the service must do. Times are monotonic µs (the frames' clock).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Start a recording whose first frame is the first one at or after `from_us`;
    /// report [`Event::Started`] or [`Event::StartFailed`].
    Start {
        from_us: i64,
    },
    /// End the recording with the last frame at or before `at_us`; finish it in the
    /// background.
    Stop {
        at_us: i64,
    },
    Mark {
        at_us: i64,
    },
    /// Tell free space by beeps.
    Status,
    Beep(Beeps),
    /// Try to open the failed devices again; report [`Event::DevicesOk`] or
    /// [`Event::DeviceFailed`].
    RetryDevices,
    /// Wait for finishing recordings, run the shutdown command, exit.
    PowerOff,
    /// Wait for finishing recordings, exit.
    Exit,
}

/// A control command (`grabd ctl ...`): acts at once, no gesture window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Same as a single press.
    Press,
    Start,
    Stop,
    Mark,
    Status,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    RecoveryDone,
    Edge {
        pressed: bool,
        at_us: i64,
    },
    Tick {
        now_us: i64,
    },
    Command {
        command: Command,
        at_us: i64,
    },
    /// The started recording took its first frame.
    Started,
    StartFailed,
    /// The recording stopped by itself (storage full, a stream failed).
    RecordingEnded,
    DeviceFailed {
        at_us: i64,
    },
    DevicesOk,
    /// SIGTERM.
    Terminate {
        at_us: i64,
    },
}

/// The inputs of the transition table: an [`Event`] or an [`Action`] with its time
/// taken off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    RecoveryDone,
    Toggle,
    Start,
    Stop,
    Mark,
    Status,
    Shutdown,
    Started,
    StartFailed,
    RecordingEnded,
    DeviceFailed,
    RetryDue,
    DevicesOk,
    Terminate,
}

/// An effect in the table, before it gets the trigger's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Do {
    Start,
    Stop,
    Mark,
    Status,
    Beep(Beeps),
    RetryDevices,
    PowerOff,
    Exit,
}

/// One row: in `from`, on `on`, go to `to` and do `effects` in order.
pub struct Transition {
    pub from: State,
    pub on: Trigger,
    pub to: State,
    pub effects: &'static [Do],
}

const fn row(from: State, on: Trigger, to: State, effects: &'static [Do]) -> Transition {
    Transition {
        from,
        on,
        to,
        effects,
    }
}

use Do as D;
use State as S;
use Trigger as T;

/// Every transition. A (state, trigger) pair not listed is ignored.
pub const TRANSITIONS: &[Transition] = &[
    row(S::Booting, T::RecoveryDone, S::Idle, &[]),
    row(
        S::Booting,
        T::DeviceFailed,
        S::Error,
        &[D::Beep(Beeps::Failure)],
    ),
    row(S::Booting, T::Terminate, S::ShuttingDown, &[D::Exit]),
    row(S::Idle, T::Toggle, S::Recording, &[D::Start]),
    row(S::Idle, T::Start, S::Recording, &[D::Start]),
    row(S::Idle, T::Status, S::Idle, &[D::Status]),
    row(S::Idle, T::Shutdown, S::ShuttingDown, &[D::PowerOff]),
    row(
        S::Idle,
        T::DeviceFailed,
        S::Error,
        &[D::Beep(Beeps::Failure)],
    ),
    row(S::Idle, T::Terminate, S::ShuttingDown, &[D::Exit]),
    row(
        S::Recording,
        T::Started,
        S::Recording,
        &[D::Beep(Beeps::Start)],
    ),
    row(
        S::Recording,
        T::StartFailed,
        S::Idle,
        &[D::Beep(Beeps::Failure)],
    ),
    row(
        S::Recording,
        T::Toggle,
        S::Idle,
        &[D::Stop, D::Beep(Beeps::Stop)],
    ),
    row(
        S::Recording,
        T::Stop,
        S::Idle,
        &[D::Stop, D::Beep(Beeps::Stop)],
    ),
    row(
        S::Recording,
        T::Mark,
        S::Recording,
        &[D::Mark, D::Beep(Beeps::Mark)],
    ),
    row(S::Recording, T::Status, S::Recording, &[D::Status]),
    row(
        S::Recording,
        T::Shutdown,
        S::ShuttingDown,
        &[D::Stop, D::Beep(Beeps::Stop), D::PowerOff],
    ),
    row(
        S::Recording,
        T::RecordingEnded,
        S::Idle,
        &[D::Beep(Beeps::Failure)],
    ),
    row(
        S::Recording,
        T::DeviceFailed,
        S::Error,
        &[D::Stop, D::Beep(Beeps::Failure)],
    ),
    row(
        S::Recording,
        T::Terminate,
        S::ShuttingDown,
        &[D::Stop, D::Exit],
    ),
    row(S::Error, T::RetryDue, S::Error, &[D::RetryDevices]),
    row(S::Error, T::DevicesOk, S::Idle, &[]),
    row(S::Error, T::Status, S::Error, &[D::Status]),
    row(S::Error, T::Shutdown, S::ShuttingDown, &[D::PowerOff]),
    row(S::Error, T::Terminate, S::ShuttingDown, &[D::Exit]),
];

/// How often devices are retried in [`State::Error`] (µs).
pub const RETRY_US: i64 = 5_000_000;

/// The service's state and its gesture recogniser.
#[derive(Debug, Clone)]
pub struct Machine {
    state: State,
    config: GestureConfig,
    gestures: Gestures,
    next_retry_us: Option<i64>,
}

impl Machine {
    pub fn new(config: GestureConfig) -> Self {
        Machine {
            state: State::Booting,
            config,
            gestures: Gestures::default(),
            next_retry_us: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Frames captured since this time must be held back: a press is pending whose
    /// meaning (start, stop, mark...) is not known yet.
    pub fn hold_from_us(&self) -> Option<i64> {
        self.gestures.undecided_since()
    }

    /// When the service must send the next [`Event::Tick`] at the latest.
    pub fn next_deadline_us(&self) -> Option<i64> {
        let gesture = self.gestures.next_deadline_us(&self.config);
        match (gesture, self.next_retry_us) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn handle(&mut self, event: Event) -> Vec<Effect> {
        match event {
            Event::Edge { pressed, at_us } => {
                let gesture = self.gestures.edge(pressed, at_us, &self.config);
                gesture.map_or_else(Vec::new, |g| self.gesture(g))
            }
            Event::Tick { now_us } => {
                let mut effects = match self.gestures.tick(now_us, &self.config) {
                    Some(g) => self.gesture(g),
                    None => Vec::new(),
                };
                if self.next_retry_us.is_some_and(|due| now_us >= due) {
                    self.next_retry_us = Some(now_us + RETRY_US);
                    effects.extend(self.fire(T::RetryDue, now_us));
                }
                effects
            }
            Event::Command { command, at_us } => {
                let trigger = match command {
                    Command::Press => self.action_trigger(self.config.press),
                    Command::Start => Some(T::Start),
                    Command::Stop => Some(T::Stop),
                    Command::Mark => Some(T::Mark),
                    Command::Status => Some(T::Status),
                };
                trigger.map_or_else(Vec::new, |t| self.fire(t, at_us))
            }
            Event::RecoveryDone => self.fire(T::RecoveryDone, 0),
            Event::Started => self.fire(T::Started, 0),
            Event::StartFailed => self.fire(T::StartFailed, 0),
            Event::RecordingEnded => self.fire(T::RecordingEnded, 0),
            Event::DeviceFailed { at_us } => self.fire(T::DeviceFailed, at_us),
            Event::DevicesOk => self.fire(T::DevicesOk, 0),
            Event::Terminate { at_us } => self.fire(T::Terminate, at_us),
        }
    }

    fn gesture(&mut self, gesture: Gesture) -> Vec<Effect> {
        let recording = self.state == State::Recording;
        let (action, at_us) = match gesture {
            Gesture::Single { at_us } => (self.config.press, at_us),
            Gesture::Double { at_us } if recording => (self.config.double_press_recording, at_us),
            Gesture::Double { at_us } => (self.config.double_press_idle, at_us),
            Gesture::Long { at_us } => (self.config.long_press, at_us),
        };
        self.action_trigger(action)
            .map_or_else(Vec::new, |t| self.fire(t, at_us))
    }

    fn action_trigger(&self, action: Action) -> Option<Trigger> {
        match action {
            Action::Toggle => Some(T::Toggle),
            Action::Mark => Some(T::Mark),
            Action::Status => Some(T::Status),
            Action::Shutdown => Some(T::Shutdown),
            Action::None => None,
        }
    }

    fn fire(&mut self, trigger: Trigger, at_us: i64) -> Vec<Effect> {
        let Some(row) = TRANSITIONS
            .iter()
            .find(|r| r.from == self.state && r.on == trigger)
        else {
            return Vec::new();
        };
        if row.to == State::Error && self.state != State::Error {
            self.next_retry_us = Some(at_us + RETRY_US);
        }
        if row.to != State::Error {
            self.next_retry_us = None;
        }
        self.state = row.to;
        row.effects
            .iter()
            .map(|d| match *d {
                D::Start => Effect::Start { from_us: at_us },
                D::Stop => Effect::Stop { at_us },
                D::Mark => Effect::Mark { at_us },
                D::Status => Effect::Status,
                D::Beep(b) => Effect::Beep(b),
                D::RetryDevices => Effect::RetryDevices,
                D::PowerOff => Effect::PowerOff,
                D::Exit => Effect::Exit,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: i64 = 1000;

    fn machine_in(state: State) -> Machine {
        let mut m = Machine::new(GestureConfig::default());
        m.state = state;
        m
    }

    fn press(m: &mut Machine, down_us: i64, up_us: i64) -> Vec<Effect> {
        let mut fx = m.handle(Event::Edge {
            pressed: true,
            at_us: down_us,
        });
        fx.extend(m.handle(Event::Edge {
            pressed: false,
            at_us: up_us,
        }));
        fx
    }

    fn tick(m: &mut Machine, now_us: i64) -> Vec<Effect> {
        m.handle(Event::Tick { now_us })
    }

    const ALL_STATES: [State; 5] = [
        State::Booting,
        State::Idle,
        State::Recording,
        State::Error,
        State::ShuttingDown,
    ];
    const ALL_TRIGGERS: [Trigger; 14] = [
        T::RecoveryDone,
        T::Toggle,
        T::Start,
        T::Stop,
        T::Mark,
        T::Status,
        T::Shutdown,
        T::Started,
        T::StartFailed,
        T::RecordingEnded,
        T::DeviceFailed,
        T::RetryDue,
        T::DevicesOk,
        T::Terminate,
    ];

    /// The table as a list of (from, trigger) -> (to, effects) written out by hand: a
    /// row changed by accident fails here.
    #[test]
    fn every_state_and_trigger_does_what_the_table_says() {
        use Effect as E;
        let at = 7 * MS;
        let expected = |s: State, t: Trigger| -> (State, Vec<Effect>) {
            match (s, t) {
                (S::Booting, T::RecoveryDone) => (S::Idle, vec![]),
                (S::Booting, T::DeviceFailed) => (S::Error, vec![E::Beep(Beeps::Failure)]),
                (S::Booting | S::Idle | S::Error, T::Terminate) => (S::ShuttingDown, vec![E::Exit]),
                (S::Idle, T::Toggle | T::Start) => (S::Recording, vec![E::Start { from_us: at }]),
                (S::Idle, T::Status) => (S::Idle, vec![E::Status]),
                (S::Idle | S::Error, T::Shutdown) => (S::ShuttingDown, vec![E::PowerOff]),
                (S::Idle, T::DeviceFailed) => (S::Error, vec![E::Beep(Beeps::Failure)]),
                (S::Recording, T::Started) => (S::Recording, vec![E::Beep(Beeps::Start)]),
                (S::Recording, T::StartFailed | T::RecordingEnded) => {
                    (S::Idle, vec![E::Beep(Beeps::Failure)])
                }
                (S::Recording, T::Toggle | T::Stop) => {
                    (S::Idle, vec![E::Stop { at_us: at }, E::Beep(Beeps::Stop)])
                }
                (S::Recording, T::Mark) => (
                    S::Recording,
                    vec![E::Mark { at_us: at }, E::Beep(Beeps::Mark)],
                ),
                (S::Recording, T::Status) => (S::Recording, vec![E::Status]),
                (S::Recording, T::Shutdown) => (
                    S::ShuttingDown,
                    vec![E::Stop { at_us: at }, E::Beep(Beeps::Stop), E::PowerOff],
                ),
                (S::Recording, T::DeviceFailed) => (
                    S::Error,
                    vec![E::Stop { at_us: at }, E::Beep(Beeps::Failure)],
                ),
                (S::Recording, T::Terminate) => {
                    (S::ShuttingDown, vec![E::Stop { at_us: at }, E::Exit])
                }
                (S::Error, T::RetryDue) => (S::Error, vec![E::RetryDevices]),
                (S::Error, T::DevicesOk) => (S::Idle, vec![]),
                (S::Error, T::Status) => (S::Error, vec![E::Status]),
                (s, _) => (s, vec![]),
            }
        };
        for state in ALL_STATES {
            for trigger in ALL_TRIGGERS {
                let mut m = machine_in(state);
                let effects = m.fire(trigger, at);
                assert_eq!(
                    (m.state(), effects),
                    expected(state, trigger),
                    "{state:?} on {trigger:?}"
                );
            }
        }
    }

    #[test]
    fn boot_recording_and_back_to_idle() {
        let mut m = Machine::new(GestureConfig::default());
        assert_eq!(m.state(), State::Booting);
        // A press during recovery does nothing.
        press(&mut m, 0, 100 * MS);
        assert!(tick(&mut m, 700 * MS).is_empty());
        assert_eq!(m.handle(Event::RecoveryDone), vec![]);
        assert_eq!(m.state(), State::Idle);
        assert!(press(&mut m, 1_000 * MS, 1_100 * MS).is_empty());
        assert_eq!(
            tick(&mut m, 1_501 * MS),
            vec![Effect::Start {
                from_us: 1_000 * MS
            }]
        );
        assert_eq!(m.handle(Event::Started), vec![Effect::Beep(Beeps::Start)]);
        press(&mut m, 4_000 * MS, 4_080 * MS);
        assert_eq!(
            tick(&mut m, 4_501 * MS),
            vec![
                Effect::Stop { at_us: 4_000 * MS },
                Effect::Beep(Beeps::Stop)
            ]
        );
        assert_eq!(m.state(), State::Idle);
    }

    /// Every gesture in every state, with the default actions.
    #[test]
    fn every_gesture_in_every_state() {
        use Effect as E;
        let t0 = 10_000 * MS;
        type Make = fn(&mut Machine, i64) -> Vec<Effect>;
        let single: Make = |m, t| {
            let mut fx = press(m, t, t + 100 * MS);
            fx.extend(tick(m, t + 501 * MS));
            fx
        };
        let double: Make = |m, t| {
            let mut fx = press(m, t, t + 100 * MS);
            fx.extend(press(m, t + 300 * MS, t + 400 * MS));
            fx.extend(tick(m, t + 2_000 * MS));
            fx
        };
        let long: Make = |m, t| {
            let mut fx = m.handle(Event::Edge {
                pressed: true,
                at_us: t,
            });
            fx.extend(tick(m, t + 5_000 * MS));
            fx.extend(m.handle(Event::Edge {
                pressed: false,
                at_us: t + 6_000 * MS,
            }));
            fx.extend(tick(m, t + 7_000 * MS));
            fx
        };
        let cases: [(&str, Make, State, State, Vec<Effect>); 15] = [
            ("single", single, S::Booting, S::Booting, vec![]),
            (
                "single",
                single,
                S::Idle,
                S::Recording,
                vec![E::Start { from_us: t0 }],
            ),
            (
                "single",
                single,
                S::Recording,
                S::Idle,
                vec![E::Stop { at_us: t0 }, E::Beep(Beeps::Stop)],
            ),
            ("single", single, S::Error, S::Error, vec![]),
            ("single", single, S::ShuttingDown, S::ShuttingDown, vec![]),
            ("double", double, S::Booting, S::Booting, vec![]),
            ("double", double, S::Idle, S::Idle, vec![E::Status]),
            (
                "double",
                double,
                S::Recording,
                S::Recording,
                vec![E::Mark { at_us: t0 }, E::Beep(Beeps::Mark)],
            ),
            ("double", double, S::Error, S::Error, vec![E::Status]),
            ("double", double, S::ShuttingDown, S::ShuttingDown, vec![]),
            ("long", long, S::Booting, S::Booting, vec![]),
            ("long", long, S::Idle, S::ShuttingDown, vec![E::PowerOff]),
            (
                "long",
                long,
                S::Recording,
                S::ShuttingDown,
                vec![E::Stop { at_us: t0 }, E::Beep(Beeps::Stop), E::PowerOff],
            ),
            ("long", long, S::Error, S::ShuttingDown, vec![E::PowerOff]),
            ("long", long, S::ShuttingDown, S::ShuttingDown, vec![]),
        ];
        for (name, gesture, from, to, effects) in cases {
            let mut m = machine_in(from);
            let got: Vec<Effect> = gesture(&mut m, t0)
                .into_iter()
                .filter(|e| *e != E::RetryDevices)
                .collect();
            assert_eq!((m.state(), got), (to, effects), "{name} in {from:?}");
            assert_eq!(m.hold_from_us(), None, "{name} in {from:?} left a hold");
        }
    }

    #[test]
    fn a_single_press_is_known_only_after_the_window_and_acts_at_its_edge() {
        let mut m = machine_in(State::Recording);
        m.handle(Event::Edge {
            pressed: true,
            at_us: 0,
        });
        assert_eq!(m.hold_from_us(), Some(0));
        m.handle(Event::Edge {
            pressed: false,
            at_us: 80 * MS,
        });
        assert_eq!(m.next_deadline_us(), Some(500 * MS + 1));
        assert!(tick(&mut m, 500 * MS).is_empty(), "window still open");
        assert_eq!(m.state(), State::Recording);
        assert_eq!(m.hold_from_us(), Some(0), "frames after the press held");
        assert_eq!(
            tick(&mut m, 501 * MS)[0],
            Effect::Stop { at_us: 0 },
            "ends at the press, not 0.5 s later"
        );
        assert_eq!(m.hold_from_us(), None);
    }

    #[test]
    fn a_press_held_past_the_window_is_single_at_release() {
        let mut m = machine_in(State::Idle);
        m.handle(Event::Edge {
            pressed: true,
            at_us: 0,
        });
        assert!(tick(&mut m, 2_000 * MS).is_empty(), "may still become long");
        assert_eq!(m.next_deadline_us(), Some(5_000 * MS));
        let fx = m.handle(Event::Edge {
            pressed: false,
            at_us: 3_000 * MS,
        });
        assert_eq!(fx, vec![Effect::Start { from_us: 0 }]);
    }

    #[test]
    fn a_long_press_fires_while_held_and_its_release_does_nothing() {
        let mut m = machine_in(State::Idle);
        m.handle(Event::Edge {
            pressed: true,
            at_us: 0,
        });
        assert!(tick(&mut m, 4_999 * MS).is_empty());
        assert_eq!(tick(&mut m, 5_000 * MS), vec![Effect::PowerOff]);
        let fx = m.handle(Event::Edge {
            pressed: false,
            at_us: 9_000 * MS,
        });
        assert!(fx.is_empty());
        assert!(tick(&mut m, 20_000 * MS).is_empty());
    }

    #[test]
    fn a_double_press_leaves_no_recording_and_no_hold() {
        let mut m = machine_in(State::Idle);
        press(&mut m, 0, 100 * MS);
        let fx = press(&mut m, 499 * MS, 600 * MS);
        assert_eq!(fx, vec![Effect::Status]);
        assert_eq!(m.hold_from_us(), None);
        assert!(tick(&mut m, 10_000 * MS).is_empty());
        assert_eq!(m.state(), State::Idle);
        // Second press just outside the window: two single presses (start, then stop).
        let mut m = machine_in(State::Idle);
        press(&mut m, 0, 100 * MS);
        let mut fx = press(&mut m, 501 * MS, 600 * MS);
        fx.extend(tick(&mut m, 1_100 * MS));
        assert_eq!(
            fx,
            vec![
                Effect::Start { from_us: 0 },
                Effect::Stop { at_us: 501 * MS },
                Effect::Beep(Beeps::Stop)
            ]
        );
    }

    #[test]
    fn repeated_edges_of_one_direction_are_ignored() {
        let mut m = machine_in(State::Idle);
        let edge = |m: &mut Machine, pressed, at_us| m.handle(Event::Edge { pressed, at_us });
        edge(&mut m, true, 0);
        edge(&mut m, true, 10 * MS);
        edge(&mut m, false, 20 * MS);
        edge(&mut m, false, 30 * MS);
        assert_eq!(tick(&mut m, 600 * MS), vec![Effect::Start { from_us: 0 }]);
    }

    #[test]
    fn configured_actions_replace_the_defaults() {
        let config = GestureConfig {
            double_press_idle: Action::Toggle,
            double_press_recording: Action::None,
            long_press: Action::Status,
            ..GestureConfig::default()
        };
        let mut m = Machine::new(config.clone());
        m.state = State::Idle;
        press(&mut m, 0, 10 * MS);
        assert_eq!(
            press(&mut m, 200 * MS, 210 * MS),
            vec![Effect::Start { from_us: 0 }]
        );
        assert_eq!(m.state(), State::Recording);
        press(&mut m, 1_000 * MS, 1_010 * MS);
        assert!(press(&mut m, 1_200 * MS, 1_210 * MS).is_empty());
        assert_eq!(m.state(), State::Recording, "double press set to none");
        m.handle(Event::Edge {
            pressed: true,
            at_us: 3_000 * MS,
        });
        assert_eq!(tick(&mut m, 8_000 * MS), vec![Effect::Status]);
    }

    #[test]
    fn commands_act_at_once() {
        let mut m = machine_in(State::Idle);
        let cmd = |m: &mut Machine, command| m.handle(Event::Command { command, at_us: 5 });
        assert!(cmd(&mut m, Command::Stop).is_empty());
        assert!(cmd(&mut m, Command::Mark).is_empty());
        assert_eq!(
            cmd(&mut m, Command::Start),
            vec![Effect::Start { from_us: 5 }]
        );
        assert!(cmd(&mut m, Command::Start).is_empty());
        assert_eq!(cmd(&mut m, Command::Mark)[0], Effect::Mark { at_us: 5 });
        assert_eq!(cmd(&mut m, Command::Status), vec![Effect::Status]);
        assert_eq!(cmd(&mut m, Command::Press)[0], Effect::Stop { at_us: 5 });
        assert_eq!(
            cmd(&mut m, Command::Press),
            vec![Effect::Start { from_us: 5 }]
        );
    }

    #[test]
    fn error_state_retries_devices_until_they_are_back() {
        let mut m = machine_in(State::Idle);
        m.handle(Event::DeviceFailed { at_us: 0 });
        assert_eq!(m.state(), State::Error);
        assert_eq!(m.next_deadline_us(), Some(RETRY_US));
        assert!(tick(&mut m, RETRY_US - 1).is_empty());
        assert_eq!(tick(&mut m, RETRY_US), vec![Effect::RetryDevices]);
        m.handle(Event::DeviceFailed { at_us: RETRY_US });
        assert_eq!(m.next_deadline_us(), Some(2 * RETRY_US), "not pushed back");
        assert_eq!(tick(&mut m, 2 * RETRY_US), vec![Effect::RetryDevices]);
        m.handle(Event::DevicesOk);
        assert_eq!(m.state(), State::Idle);
        assert_eq!(m.next_deadline_us(), None);
    }
}
