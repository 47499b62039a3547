//! `grabd run`: the process a recorder boots into.
//!
//! Boot recovery first, then the devices (button, LEDs, buzzer, sources), then READY.
//! One main loop owns the [`Machine`]: button edges (from the button thread), control
//! requests (from the control socket's thread) and signals come in; the machine's
//! effects are carried out here. Sources run for the whole process and push into
//! [`Tap`]s; a stopped recording is finished on a thread of its own, so the button is
//! never dead and finishings may overlap.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};

use super::control::{self, Reply, Request};
use super::recorder::{join_sources, start_sources, FrameSink, ImuTimeline, SourceThread};
use super::sources;
use super::state::{Beeps, Command, Effect, Event, Machine, State};
use super::storage::{self, SpaceGuard};
use super::systemd::Notifier;
use super::tap::Tap;
use crate::clock::monotonic_us;
use crate::config::{Config, DeviceConfig};
use crate::gpio::{self, Button, ButtonEdge, Indicator, Outputs, Pattern};
use crate::recording::{self, Recording, Stopped, StreamConfig};
use crate::thread::{Handle, Heartbeat, Joined};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("cannot start the {what} thread: {cause}")]
    Spawn {
        what: &'static str,
        cause: std::io::Error,
    },
    #[error("control socket {path}: {cause}")]
    Control { path: String, cause: std::io::Error },
}

/// How the service ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// SIGTERM/SIGINT.
    Terminated,
    /// A shutdown gesture: the configured shutdown command was run.
    PoweredOff,
}

/// The button and the indicator outputs, opened (or found missing).
pub struct Devices {
    pub button: Option<Box<dyn Button>>,
    pub outputs: Outputs,
    /// Per device: "ok", "not configured", or why it is missing.
    pub health: Vec<(String, String)>,
}

impl Devices {
    /// Open what `[device]` names. A missing LED or buzzer is a warning; a missing
    /// button too (the control socket still works), but it shows as unhealthy.
    pub fn open(config: &DeviceConfig) -> Devices {
        let mut health = Vec::new();
        let mut note = |name: &str, result: Result<String, String>| match result {
            Ok(s) => health.push((name.to_owned(), s)),
            Err(e) => {
                tracing::warn!(device = name, error = %e, "device missing; running without it");
                health.push((name.to_owned(), e));
            }
        };
        let button = match &config.button {
            None => {
                note("button", Ok("not configured".into()));
                None
            }
            Some(line) => match gpio::CdevButton::open(
                line,
                config.button_active_low,
                config.button_bias,
                config.debounce,
            ) {
                Ok(b) => {
                    note("button", Ok("ok".into()));
                    Some(Box::new(b) as Box<dyn Button>)
                }
                Err(e) => {
                    note("button", Err(e.to_string()));
                    None
                }
            },
        };
        let mut output = |name: &str, line: &Option<gpio::LineSpec>, active_low: bool| match line {
            None => {
                note(name, Ok("not configured".into()));
                None
            }
            Some(line) => match gpio::CdevOutput::open(line, active_low) {
                Ok(o) => {
                    note(name, Ok("ok".into()));
                    Some(Box::new(o) as Box<dyn gpio::Output>)
                }
                Err(e) => {
                    note(name, Err(e.to_string()));
                    None
                }
            },
        };
        let green = output("green_led", &config.green_led, config.leds_active_low);
        let red = output("red_led", &config.red_led, config.leds_active_low);
        let buzzer = match &config.buzzer_pwm {
            Some(p) => match gpio::PwmBuzzer::open(p.chip, p.channel, p.hz, p.duty) {
                Ok(b) => {
                    note("buzzer", Ok("ok".into()));
                    Some(Box::new(b) as Box<dyn gpio::Output>)
                }
                Err(e) => {
                    note("buzzer", Err(e.to_string()));
                    None
                }
            },
            None => output("buzzer", &config.buzzer, false),
        };
        Devices {
            button,
            outputs: Outputs { green, red, buzzer },
            health,
        }
    }
}

/// Test-only fault switch (`GRABD_TEST_HANG=<stream>:<seconds>`): that stream's source
/// thread hangs that long after start, so the watchdog path can be shown to work.
fn hang_fault() -> Option<(String, Duration)> {
    let spec = std::env::var("GRABD_TEST_HANG").ok()?;
    let (stream, after) = spec.split_once(':')?;
    Some((
        stream.to_owned(),
        Duration::from_secs_f64(after.parse().ok()?),
    ))
}

enum Input {
    Edge(ButtonEdge),
    ButtonFailed(String),
    Control(Request, Sender<Reply>),
}

/// A recording in progress.
struct Current {
    recording: Recording,
    guard: SpaceGuard,
    started: Instant,
    from_us: i64,
    marks: usize,
    logged_first_frame: bool,
    failure: Arc<Mutex<Option<String>>>,
    /// The recording's origin once its first frame is processed (IMU taps wait for it).
    origin: Arc<OnceLock<i64>>,
}

impl Current {
    /// Hand the writer's origin to the taps once it is known.
    fn publish_origin(&self) {
        if self.origin.get().is_none() {
            if let Some(origin) = self.recording.writer().origin() {
                let _ = self.origin.set(origin.monotonic_us);
            }
        }
    }
}

/// How much media a tap holds back while a press is pending: the double-press window
/// and a second for the recording to get going; a recording is handed up to that much
/// at its start.
fn hold_cap_us(device: &DeviceConfig) -> i64 {
    device.gestures.double_press_us + 1_000_000
}

/// Test-only fault switch (`GRABD_TEST_SLOW_FINISH=<seconds>`): each recording's
/// finalizer stalls that long before each chunk, so finishing a recording outlasts the
/// press that starts the next one (the QEMU rig's gestures scenario shows the two
/// overlapping, which a fast finish on an idle guest would leave unshown).
fn slow_finish_fault() -> Option<Duration> {
    let seconds = std::env::var("GRABD_TEST_SLOW_FINISH").ok()?.parse().ok()?;
    Duration::try_from_secs_f64(seconds).ok()
}

/// A recording made ready at a press's first edge, while the double-press window decides
/// what the press means (see [`Service::prepare_for_press`]): a single press then
/// starts it at once, any other gesture drops it.
struct Prepared {
    recording: Recording,
    guard: SpaceGuard,
    failure: Arc<Mutex<Option<String>>>,
}

struct Service<'a> {
    config: &'a Config,
    machine: Machine,
    indicator: Indicator,
    notifier: Notifier,
    taps: Vec<(String, Arc<Tap>)>,
    /// The stream configs with what the opened sources negotiated (size, rate, where
    /// timestamps come from): what the next recording is started with.
    streams: Vec<(String, StreamConfig)>,
    sources: Vec<SourceThread>,
    sources_stop: Arc<AtomicBool>,
    source_failure: Arc<Mutex<Option<String>>>,
    current: Option<Current>,
    prepared: Option<Prepared>,
    /// The press edge a recording was last prepared (or tried) for.
    prepared_for_us: Option<i64>,
    finishing: Vec<(String, Handle<Result<Stopped, recording::Error>>)>,
    last_finished: Option<PathBuf>,
    health: Vec<(String, String)>,
    heartbeats: Vec<(String, Heartbeat)>,
    exit: Option<Exit>,
    /// For the button thread (also after it is reopened).
    inputs: Sender<Input>,
    button_stop: Arc<AtomicBool>,
    button_thread: Option<Handle<()>>,
    /// Monotonic µs up to which the button thread has handed over every edge: the
    /// gestures' clock (see [`Service::gesture_now`]).
    button_reported_us: Arc<AtomicI64>,
}

/// Run the service until SIGTERM/SIGINT (`stop`) or a shutdown gesture.
pub fn run(config: &Config, devices: Devices, stop: &AtomicBool) -> Result<Exit, ServiceError> {
    let device = &config.device;
    let notifier = Notifier::from_env();
    let indicator = Indicator::start(devices.outputs).map_err(|cause| ServiceError::Spawn {
        what: "indicator",
        cause,
    })?;
    indicator.show(Pattern::Booting);
    notifier.status("recovering cut-off recordings");

    // Boot recovery before anything else touches the spool.
    match recording::recover_spool(&device.spool, &device.output, Default::default()) {
        Ok(report) => {
            for f in &report.recovered {
                tracing::info!(file = %f.mkv.display(), "recovered a cut-off recording");
            }
            for (dir, why) in &report.failed {
                tracing::error!(dir = %dir.display(), error = %why, "could not recover");
            }
        }
        Err(e) => tracing::error!(error = %e, "boot recovery failed"),
    }

    let (tx, rx) = bounded::<Input>(256);
    let mut heartbeats = Vec::new();
    if let Some(indicator_beat) = indicator.heartbeat() {
        heartbeats.push(("indicator".to_owned(), indicator_beat));
    }
    let control = control::serve(&device.control_socket, {
        let tx = tx.clone();
        move |request, reply| tx.try_send(Input::Control(request, reply)).is_ok()
    })
    .map_err(|cause| ServiceError::Control {
        path: device.control_socket.display().to_string(),
        cause,
    })?;
    heartbeats.push(("control".to_owned(), control.heartbeat()));

    let hold_cap_us = hold_cap_us(device);
    let no_video = !config
        .streams
        .iter()
        .any(|s| matches!(s.config, StreamConfig::Video(_)));
    let taps: Vec<(String, Arc<Tap>)> = config
        .streams
        .iter()
        .map(|s| {
            // IMU sources run on CLOCK_MONOTONIC (ImuTimeline::Monotonic); their taps
            // put the sample times on each recording's timeline.
            let tap = match s.source.batching() {
                Some(_) => Tap::rebasing(hold_cap_us, crate::sensors::rebase_batch, no_video),
                None => Tap::new(hold_cap_us),
            };
            (s.name.clone(), Arc::new(tap))
        })
        .collect();
    let mut service = Service {
        config,
        machine: Machine::new(device.gestures.clone()),
        indicator,
        notifier,
        taps,
        streams: config.stream_configs(),
        sources: Vec::new(),
        sources_stop: Arc::new(AtomicBool::new(false)),
        source_failure: Arc::default(),
        current: None,
        prepared: None,
        prepared_for_us: None,
        finishing: Vec::new(),
        last_finished: None,
        health: devices.health,
        heartbeats,
        exit: None,
        inputs: tx,
        button_stop: Arc::new(AtomicBool::new(false)),
        button_thread: None,
        button_reported_us: Arc::new(AtomicI64::new(0)),
    };
    if let Some(button) = devices.button {
        service.start_button(button)?;
    }
    service.start_sources();
    service.machine.handle(Event::RecoveryDone);
    service.show_state();
    service.notifier.ready();
    tracing::info!(
        button = service.health_of("button"),
        socket = %device.control_socket.display(),
        "ready"
    );

    let result = service.main_loop(&rx, stop);
    service.shut_down();
    drop(control);
    service.stop_button();
    result
}

/// How long the button thread waits on the line at a time: how far its report of
/// "no edge until now" may lag behind ([`Service::gesture_now`]).
const BUTTON_WAIT: Duration = Duration::from_millis(50);

/// The button thread: edges to the main loop as they come (it only waits on the line),
/// and in `reported_us` the time up to which every edge has been handed over.
fn spawn_button(
    mut button: Box<dyn Button>,
    tx: Sender<Input>,
    stop: Arc<AtomicBool>,
    reported_us: Arc<AtomicI64>,
) -> Result<Handle<()>, ServiceError> {
    crate::thread::spawn("button", "", None, move |beat| {
        while !stop.load(Ordering::Acquire) {
            beat.beat();
            match button.wait(BUTTON_WAIT) {
                Ok(Some(edge)) => {
                    if tx.send(Input::Edge(edge)).is_err() {
                        return;
                    }
                    reported_us.fetch_max(edge.at_us, Ordering::Release);
                }
                Ok(None) => {
                    reported_us.fetch_max(monotonic_us(), Ordering::Release);
                }
                Err(e) => {
                    let _ = tx.send(Input::ButtonFailed(e.to_string()));
                    return;
                }
            }
        }
    })
    .map_err(|cause| ServiceError::Spawn {
        what: "button",
        cause,
    })
}

/// How often the main loop wakes at the latest (signals, storage, watchdog).
const LOOP_PERIOD: Duration = Duration::from_millis(100);
const SPACE_CHECK: Duration = Duration::from_millis(500);
/// How long the last finishings may take at exit (systemd's TimeoutStopSec is 150 s).
const FINISH_DEADLINE: Duration = Duration::from_secs(140);

impl Service<'_> {
    fn main_loop(&mut self, rx: &Receiver<Input>, stop: &AtomicBool) -> Result<Exit, ServiceError> {
        let mut last_space_check = Instant::now();
        let mut last_status = Instant::now() - Duration::from_secs(10);
        let mut disconnected = false;
        loop {
            let now = monotonic_us();
            // A deadline already passed waits for the button's report to pass it too.
            let wait = self
                .machine
                .next_deadline_us()
                .map_or(LOOP_PERIOD, |due| {
                    Duration::from_micros(u64::try_from(due - now).unwrap_or(0))
                })
                .clamp(Duration::from_millis(5), LOOP_PERIOD);
            // Read before the queue: every edge stamped before it is in the queue now.
            let gesture_now = self.gesture_now();
            let received = if disconnected {
                std::thread::sleep(wait);
                Err(RecvTimeoutError::Timeout)
            } else {
                rx.recv_timeout(wait)
            };
            let mut effects = match received {
                Ok(input) => self.input(input),
                Err(RecvTimeoutError::Timeout) => Vec::new(),
                Err(RecvTimeoutError::Disconnected) => {
                    disconnected = true;
                    Vec::new()
                }
            };
            // Everything already queued goes in before time passes for the gestures.
            while let Ok(input) = rx.try_recv() {
                let more = self.input(input);
                effects.extend(more);
            }
            effects.extend(self.machine.handle(Event::Tick {
                now_us: gesture_now,
            }));
            if stop.load(Ordering::Acquire) && self.exit.is_none() {
                tracing::info!("signal: finishing and exiting");
                effects.extend(self.machine.handle(Event::Terminate {
                    at_us: monotonic_us(),
                }));
            }
            if last_space_check.elapsed() >= SPACE_CHECK {
                last_space_check = Instant::now();
                effects.extend(self.check_recording());
            }
            self.apply(effects);
            self.reap_finishings();
            if let Some(exit) = self.exit {
                return Ok(exit);
            }
            self.watchdog();
            if last_status.elapsed() >= Duration::from_secs(1) {
                last_status = Instant::now();
                let line = self.status_line();
                self.notifier.status(&line);
            }
        }
    }

    fn input(&mut self, input: Input) -> Vec<Effect> {
        match input {
            Input::Edge(edge) => self.machine.handle(Event::Edge {
                pressed: edge.pressed,
                at_us: edge.at_us,
            }),
            Input::ButtonFailed(why) => {
                tracing::error!(error = %why, "button failed");
                self.stop_button();
                self.set_health("button", why);
                self.machine.handle(Event::DeviceFailed {
                    at_us: monotonic_us(),
                })
            }
            Input::Control(request, reply) => self.control(request, &reply),
        }
    }

    /// The gestures' clock: now, but no further than the button thread has reported
    /// its edges. A press is single once its double-press window passed without a
    /// second press; a main loop or button thread running late (a loaded board) must
    /// not decide that while the second press, stamped inside the window, is still on
    /// its way.
    fn gesture_now(&self) -> i64 {
        let now = monotonic_us();
        match self.button_thread {
            Some(_) => now.min(self.button_reported_us.load(Ordering::Acquire)),
            None => now,
        }
    }

    fn apply(&mut self, effects: Vec<Effect>) {
        let mut queue: std::collections::VecDeque<Effect> = effects.into();
        while let Some(effect) = queue.pop_front() {
            match effect {
                Effect::Start { from_us } => {
                    let next = match self.start_recording(from_us) {
                        Ok(()) => Event::Started,
                        Err(why) => {
                            tracing::warn!(error = %why, "not recording");
                            Event::StartFailed
                        }
                    };
                    queue.extend(self.machine.handle(next));
                }
                Effect::Stop { at_us } => self.stop_recording(at_us),
                Effect::Mark { at_us } => {
                    if let Some(current) = &mut self.current {
                        let id = current.recording.id().to_owned();
                        current.marks += 1;
                        match current.recording.mark(at_us) {
                            Ok(media_us) => {
                                tracing::info!(id = %id, at_s = media_us as f64 / 1e6, "mark")
                            }
                            Err(e) => {
                                tracing::error!(id = %id, error = %e, "could not keep a mark")
                            }
                        }
                    }
                }
                Effect::Status => {
                    let free = self.free_bytes().unwrap_or(0);
                    let low = free < self.config.device.low_space_bytes;
                    tracing::info!(free_mb = free >> 20, low, "status");
                    self.indicator.beep(if low {
                        Beeps::StatusLow
                    } else {
                        Beeps::StatusOk
                    });
                }
                Effect::Beep(b) => self.indicator.beep(b),
                Effect::RetryDevices => self.retry_devices(),
                Effect::PowerOff => self.exit = Some(Exit::PoweredOff),
                Effect::Exit => self.exit = Some(Exit::Terminated),
            }
        }
        self.prepare_for_press();
        self.show_state();
        let hold = self.machine.hold_from_us();
        for (_, tap) in &self.taps {
            tap.set_hold(hold);
        }
        if let Some(current) = &mut self.current {
            current.publish_origin();
            if !current.logged_first_frame {
                let first = self
                    .taps
                    .iter()
                    .filter_map(|(_, t)| t.first_frame_us())
                    .min();
                if let Some(first) = first {
                    current.logged_first_frame = true;
                    tracing::info!(
                        id = %current.recording.id(),
                        press_to_first_frame_ms = (first - current.from_us) as f64 / 1000.0,
                        "first frame"
                    );
                }
            }
        }
    }

    fn show_state(&self) {
        self.indicator.show(match self.machine.state() {
            State::Booting => Pattern::Booting,
            State::Idle => Pattern::Idle,
            State::Recording => Pattern::Recording,
            State::Error => Pattern::Error,
            State::ShuttingDown => Pattern::Off,
        });
    }

    fn free_bytes(&self) -> Result<u64, storage::StorageError> {
        let d = &self.config.device;
        storage::free_bytes_of_both(&d.spool, &d.output)
    }

    /// Open the spool folder, the writer and its encoders for a recording that has no
    /// frame yet: what takes a busy board the better part of a second.
    fn prepare_recording(&self) -> Result<Prepared, String> {
        let d = &self.config.device;
        let streams = self.streams.clone();
        let guard = SpaceGuard::new(
            self.config.min_free_bytes,
            self.config.writer.chunk_length,
            storage::expected_media_rate(&self.config.streams),
        );
        storage::check_not_marked_full(&d.output).map_err(|e| e.to_string())?;
        storage::preflight(&[&d.spool, &d.output], guard.reserve()).map_err(|e| e.to_string())?;
        let failure: Arc<Mutex<Option<String>>> = Arc::default();
        let mut options = self.config.writer.clone();
        options.on_error = Some(super::recorder::keep_first_failure(&failure));
        options.faults.stall_finalizer = slow_finish_fault();
        options.held_at_start =
            Duration::from_micros(u64::try_from(hold_cap_us(d)).unwrap_or_default());
        let recording =
            Recording::prepare(&d.spool, &d.output, streams, options).map_err(|e| e.to_string())?;
        Ok(Prepared {
            recording,
            guard,
            failure,
        })
    }

    /// While a press in idle may still turn out to be a single press (which starts a
    /// recording), have that recording ready, so that it runs as soon as the
    /// double-press window closes rather than the better part of a second later; drop
    /// it when the press turned out to be something else. Frames are held from the
    /// press edge meanwhile, so the recording still starts there.
    fn prepare_for_press(&mut self) {
        let pending = self.machine.hold_from_us().filter(|_| {
            self.machine.state() == State::Idle
                && self.config.device.gestures.press == crate::runtime::state::Action::Toggle
        });
        match pending {
            Some(press_us) if self.prepared.is_none() && self.prepared_for_us != Some(press_us) => {
                self.prepared_for_us = Some(press_us);
                match self.prepare_recording() {
                    Ok(prepared) => self.prepared = Some(prepared),
                    // Said once the press is known to be a single press (start_recording).
                    Err(why) => tracing::debug!(error = %why, "cannot prepare a recording"),
                }
            }
            Some(_) => {}
            None => {
                // Without a frame, stopping leaves nothing behind.
                if let Some(unused) = self.prepared.take() {
                    self.finish_in_background(unused.recording);
                }
            }
        }
    }

    fn start_recording(&mut self, from_us: i64) -> Result<(), String> {
        let prepared = match self.prepared.take() {
            Some(prepared) => prepared,
            None => self.prepare_recording()?,
        };
        let Prepared {
            recording,
            guard,
            failure,
        } = prepared;
        recording.log_started();
        let origin: Arc<OnceLock<i64>> = Arc::default();
        for (name, tap) in &self.taps {
            if let Some(sender) = recording.sender(name) {
                tap.attach(sender, from_us, Arc::clone(&origin));
            }
        }
        self.current = Some(Current {
            recording,
            guard,
            started: Instant::now(),
            from_us,
            marks: 0,
            logged_first_frame: false,
            failure,
            origin,
        });
        Ok(())
    }

    /// Hand the recording to a finishing thread; the next one can start at once.
    fn stop_recording(&mut self, at_us: i64) {
        let Some(current) = self.current.take() else {
            return;
        };
        current.publish_origin();
        for (_, tap) in &self.taps {
            tap.detach(at_us);
        }
        let id = current.recording.id().to_owned();
        tracing::info!(id = %id, seconds = (at_us - current.from_us) as f64 / 1e6, "stopping; finishing in the background");
        self.finish_in_background(current.recording);
    }

    /// Stop `recording` on a thread of its own (reaped by [`Self::reap_finishings`]).
    fn finish_in_background(&mut self, recording: Recording) {
        let id = recording.id().to_owned();
        let spawned = crate::thread::spawn("finish", &id, None, move |_| recording.stop());
        match spawned {
            Ok(handle) => self.finishing.push((id, handle)),
            Err(e) => {
                tracing::error!(id = %id, error = %e, "cannot start finishing; boot recovery will finish it")
            }
        }
    }

    fn reap_finishings(&mut self) {
        let mut i = 0;
        while i < self.finishing.len() {
            if !self.finishing[i].1.is_finished() {
                i += 1;
                continue;
            }
            let (id, handle) = self.finishing.swap_remove(i);
            self.log_finished(&id, handle.join_within(Duration::from_secs(1)));
        }
    }

    fn log_finished(&mut self, id: &str, joined: Joined<Result<Stopped, recording::Error>>) {
        match joined {
            Joined::Done(Ok(stopped)) => match stopped.finished {
                Some(f) => {
                    tracing::info!(id, file = %f.mkv.display(), duration_s = f.manifest.duration_s, "recording finished");
                    self.last_finished = Some(f.mkv);
                }
                None => tracing::info!(id, "no frame was recorded; nothing written"),
            },
            Joined::Done(Err(e)) => {
                tracing::error!(id, error = %e, "finishing failed; boot recovery will retry")
            }
            Joined::Panicked(m) => tracing::error!(id, panic = %m, "finishing panicked"),
            Joined::TimedOut => tracing::error!(id, "finishing did not end in time"),
        }
    }

    /// A recording that must stop by itself: storage nearly full, a stream failed.
    fn check_recording(&mut self) -> Vec<Effect> {
        let mut effects = Vec::new();
        let source_failure = self
            .source_failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(why) = source_failure {
            tracing::error!(error = %why, "a source failed");
            self.set_health("sources", why);
            let now = monotonic_us();
            self.stop_sources();
            effects.extend(self.machine.handle(Event::DeviceFailed { at_us: now }));
        }
        let free = self.free_bytes();
        let Some(current) = &mut self.current else {
            return effects;
        };
        let failed = current
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let full = match free {
            Ok(free) => current.guard.must_stop(free),
            Err(_) => false,
        };
        if failed.is_some() || full {
            match &failed {
                Some(why) => tracing::error!(error = %why, "recording failed; finishing it"),
                None => {
                    tracing::warn!("storage nearly full; stopping while there is room to finish")
                }
            }
            let now = monotonic_us();
            self.stop_recording(now);
            if full {
                let need = free.unwrap_or(0) + (64 << 20);
                if let Err(e) = storage::mark_full(&self.config.device.output, need) {
                    tracing::warn!(error = %e, "cannot mark the card full");
                }
            }
            effects.extend(self.machine.handle(Event::RecordingEnded));
        }
        effects
    }

    fn start_sources(&mut self) {
        self.sources_stop = Arc::new(AtomicBool::new(false));
        let fault = hang_fault();
        let started = Instant::now();
        let sink_for = |name: &str| -> Option<FrameSink> {
            let tap = self.taps.iter().find(|(n, _)| n == name)?.1.clone();
            let hang = fault
                .as_ref()
                .filter(|(stream, _)| stream == name)
                .map(|(_, after)| *after);
            Some(Arc::new(move |frame| {
                if hang.is_some_and(|after| started.elapsed() >= after) {
                    tracing::warn!("test fault: this source thread hangs now");
                    loop {
                        std::thread::park();
                    }
                }
                tap.push(frame);
            }))
        };
        // Opened afresh on every (re)start, so a camera or IMU that came back works.
        let mut streams = self.config.stream_configs();
        let opened = match sources::open(self.config, &mut streams) {
            Ok(opened) => opened,
            Err(why) => {
                // Taken up by the next check, as a source that fails while running.
                self.source_failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(why.clone());
                self.set_health("sources", why);
                return;
            }
        };
        self.streams = streams;
        self.sources = start_sources(
            self.config,
            opened,
            &sink_for,
            &self.sources_stop,
            &self.source_failure,
            &ImuTimeline::Monotonic,
        );
        self.set_health("sources", "ok".into());
    }

    fn stop_sources(&mut self) {
        self.sources_stop.store(true, Ordering::Release);
        join_sources(std::mem::take(&mut self.sources));
    }

    fn retry_devices(&mut self) {
        if self.health_of("sources") != "ok" {
            tracing::info!("restarting the sources");
            self.start_sources();
        }
        let d = &self.config.device;
        if let (Some(line), false) = (&d.button, self.health_of("button") == "ok") {
            match gpio::CdevButton::open(line, d.button_active_low, d.button_bias, d.debounce) {
                Ok(button) => {
                    if let Err(e) = self.start_button(Box::new(button)) {
                        self.set_health("button", e.to_string());
                    }
                }
                Err(e) => self.set_health("button", e.to_string()),
            }
        }
        let failed = ["button", "sources"].iter().any(|d| {
            let h = self.health_of(d);
            h != "ok" && h != "not configured"
        });
        if !failed {
            let effects = self.machine.handle(Event::DevicesOk);
            self.apply(effects);
        }
    }

    fn start_button(&mut self, button: Box<dyn Button>) -> Result<(), ServiceError> {
        self.stop_button();
        self.button_stop = Arc::new(AtomicBool::new(false));
        self.button_reported_us = Arc::new(AtomicI64::new(0));
        let handle = spawn_button(
            button,
            self.inputs.clone(),
            Arc::clone(&self.button_stop),
            Arc::clone(&self.button_reported_us),
        )?;
        self.heartbeats.retain(|(name, _)| name != "button");
        self.heartbeats
            .push(("button".to_owned(), handle.heartbeat()));
        self.button_thread = Some(handle);
        self.set_health("button", "ok".into());
        Ok(())
    }

    fn stop_button(&mut self) {
        self.button_stop.store(true, Ordering::Release);
        if let Some(handle) = self.button_thread.take() {
            let _ = handle.join_within(Duration::from_secs(2));
        }
        self.heartbeats.retain(|(name, _)| name != "button");
    }

    fn set_health(&mut self, device: &str, value: String) {
        match self.health.iter_mut().find(|(d, _)| d == device) {
            Some(entry) => entry.1 = value,
            None => self.health.push((device.to_owned(), value)),
        }
    }

    fn health_of(&self, device: &str) -> &str {
        self.health
            .iter()
            .find(|(d, _)| d == device)
            .map_or("not configured", |(_, v)| v.as_str())
    }

    /// Every thread that must report: the indicator, button and control threads by
    /// heartbeat; each source by its last frame; while recording, each encoder by the
    /// last frame it accepted. The main loop itself pings, so a hung loop stops too.
    fn unhealthy_thread(&self, interval: Duration) -> Option<String> {
        for (name, beat) in &self.heartbeats {
            if beat.since_last_beat() > interval {
                return Some(name.clone());
            }
        }
        let limit_us = i64::try_from(interval.as_micros()).unwrap_or(i64::MAX);
        let now = monotonic_us();
        if self.health_of("sources") == "ok" {
            for (name, tap) in &self.taps {
                if now - tap.last_frame_us() > limit_us {
                    return Some(format!("source {name}"));
                }
                if tap.last_accepted_us().is_some_and(|t| now - t > limit_us) {
                    return Some(format!("encoder {name}"));
                }
            }
        }
        None
    }

    fn watchdog(&mut self) {
        let Some(interval) = self.notifier.watchdog_interval() else {
            return;
        };
        match self.unhealthy_thread(interval / 2) {
            None => self.notifier.ping(),
            Some(thread) => self.notifier.withhold(&thread),
        }
    }

    fn status_line(&self) -> String {
        match &self.current {
            Some(c) => {
                let s = c.started.elapsed().as_secs();
                format!("recording {:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
            }
            None => {
                let free = self.free_bytes().unwrap_or(0) as f64 / 1e9;
                format!("{}, {free:.1} GB free", self.machine.state().name())
            }
        }
    }

    fn status_json(&self) -> serde_json::Value {
        let current = self.current.as_ref().map(|c| {
            serde_json::json!({
                "id": c.recording.id(),
                "seconds": c.started.elapsed().as_secs_f64(),
                "marks": c.marks,
            })
        });
        serde_json::json!({
            "ok": true,
            "state": self.machine.state(),
            "recording": current,
            "finishing": self.finishing.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
            "last_recording": self.last_finished.as_ref().map(|p| p.display().to_string()),
            "free_bytes": self.free_bytes().ok(),
            "devices": self
                .health
                .iter()
                .map(|(device, health)| (device.clone(), serde_json::Value::from(health.as_str())))
                .collect::<serde_json::Map<_, _>>(),
        })
    }

    fn control(&mut self, request: Request, reply: &Sender<Reply>) -> Vec<Effect> {
        let at_us = monotonic_us();
        let command = match request {
            Request::Status => {
                let _ = reply.send(self.status_json());
                return Vec::new();
            }
            Request::Press => Command::Press,
            Request::Start => Command::Start,
            Request::Stop => Command::Stop,
            Request::Mark => Command::Mark,
        };
        let before = self.machine.state();
        let effects = self.machine.handle(Event::Command { command, at_us });
        let acted = !effects.is_empty();
        // Carry the effects out before answering, so `ctl start` returns once the
        // recording runs (or failed).
        self.apply(effects);
        let _ = reply.send(serde_json::json!({
            "ok": acted,
            "state": self.machine.state(),
            "was": before,
        }));
        Vec::new()
    }

    fn shut_down(&mut self) {
        self.notifier.stopping();
        self.indicator.show(Pattern::Off);
        self.stop_recording(monotonic_us());
        self.stop_sources();
        let deadline = Instant::now() + FINISH_DEADLINE;
        for (id, handle) in std::mem::take(&mut self.finishing) {
            let joined = handle.join_until(deadline);
            self.log_finished(&id, joined);
        }
        if self.exit == Some(Exit::PoweredOff) {
            let command = &self.config.device.shutdown_command;
            tracing::info!(command = ?command, "powering off");
            match std::process::Command::new(&command[0])
                .args(&command[1..])
                .status()
            {
                Ok(status) if status.success() => {}
                Ok(status) => tracing::error!(%status, "shutdown command failed"),
                Err(e) => tracing::error!(error = %e, "cannot run the shutdown command"),
            }
        }
    }
}
