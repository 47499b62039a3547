//! The one way grabd starts a thread: [`spawn`] gives a [`Handle`] that
//!
//! - names the thread by its role (`enc-rgb`, `src-imu`, `finalize`, `part-sync`) within
//!   the kernel's 15-byte limit: the label is cut, never the role ([`thread_name`]);
//! - runs the body under `catch_unwind`, so a panic becomes one [`ThreadExit::Panicked`]
//!   event, delivered once to the caller's [`ExitSink`] from the dying thread itself
//!   (before anyone joins it), instead of a channel that silently disconnects;
//! - joins with a deadline ([`Handle::join_until`] → [`Joined`]); a thread that overruns
//!   it is reported (logged and returned as [`Joined::TimedOut`]), never silently
//!   detached;
//! - carries a [`Heartbeat`]: the body calls [`Heartbeat::beat`] from its loop and the
//!   spawner reads [`Heartbeat::since_last_beat`], so a watchdog pings only while every
//!   thread still reports;
//! - and [`lower_priority`] lets a thread whose work may lag (video encoding, the
//!   finalizer) yield the CPU to those that must run on time.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError};

/// How many nice levels below the process's own priority video encoding runs (and a
/// codec's worker threads, which inherit it): each level is about 1.25× less CPU under
/// contention, so capture, the data streams and the part syncer, which need little but
/// on time, get about 3× the share of an encoder. On a board short of CPU the encoders
/// are what sheds frames (within the latency budget), not the sources or the fsyncs.
pub const ENCODER_NICE: i32 = 5;

/// How many nice levels below the process the finalizer runs: below the encoders too.
/// Its work may lag without risk (the parts it consumes are durable on their own; a lag
/// only leaves more to do at stop). When the CPU is not saturated this changes nothing.
pub const FINALIZER_NICE: i32 = 10;

/// Run the calling thread (and the threads it starts from now on) `levels` nice levels
/// below the process. A thread may always lower its own priority; should the kernel
/// still refuse (a seccomp filter), the thread runs on as it was, and that is logged.
pub fn lower_priority(levels: i32) {
    if let Err(e) = lower_own_priority(levels) {
        tracing::warn!(error = %e, levels, "could not lower this thread's priority");
    }
}

fn lower_own_priority(levels: i32) -> nix::Result<()> {
    use nix::errno::Errno;
    use nix::libc;
    // On Linux the nice value belongs to each thread; PRIO_PROCESS with a thread id
    // names just that thread.
    let tid = nix::unistd::gettid().as_raw() as libc::id_t;
    // getpriority may return -1 as a valid value: errno tells an error apart.
    Errno::clear();
    // SAFETY: getpriority takes plain integers and touches no memory.
    let now = unsafe { libc::getpriority(libc::PRIO_PROCESS as _, tid) };
    if now == -1 && Errno::last_raw() != 0 {
        return Err(Errno::last());
    }
    let nice = (now + levels).min(19);
    // SAFETY: setpriority takes plain integers and touches no memory.
    Errno::result(unsafe { libc::setpriority(libc::PRIO_PROCESS as _, tid, nice) }).map(drop)
}

/// Linux keeps at most 15 bytes of a thread's name (`TASK_COMM_LEN` less the NUL).
pub const MAX_NAME_LEN: usize = 15;

/// How a thread ended, when that is news for its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThreadExit {
    /// The body panicked; `message` is the panic's text.
    Panicked { thread: String, message: String },
}

/// Hears a thread's [`ThreadExit`]; it runs on the dying thread, so keep it short and
/// never join that thread from it.
pub type ExitSink = Arc<dyn Fn(ThreadExit) + Send + Sync>;

/// The result of [`Handle::join_until`].
#[derive(Debug, PartialEq, Eq)]
pub enum Joined<T> {
    /// The body returned.
    Done(T),
    /// The body panicked with this message (already delivered to the sink).
    Panicked(String),
    /// The thread was still running at the deadline. It is left running: Rust cannot
    /// stop a thread, so the caller must not touch what the thread works on.
    TimedOut,
}

/// `role-label`, with the label cut to fit [`MAX_NAME_LEN`] (at a character boundary);
/// just `role` when the label is empty. A role longer than the limit is a programming
/// error; it is cut too (debug builds panic).
pub fn thread_name(role: &str, label: &str) -> String {
    debug_assert!(
        role.len() < MAX_NAME_LEN,
        "thread role {role:?} is too long"
    );
    let full = if label.is_empty() {
        role.to_owned()
    } else {
        format!("{role}-{label}")
    };
    let mut end = full.len().min(MAX_NAME_LEN);
    while !full.is_char_boundary(end) {
        end -= 1;
    }
    full[..end].to_owned()
}

/// A cheap, cloneable liveness signal shared by a thread and its spawner.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    base: Instant,
    /// µs from `base` of the last beat.
    last_us: Arc<AtomicU64>,
}

impl Heartbeat {
    fn new() -> Self {
        Heartbeat {
            base: Instant::now(),
            last_us: Arc::new(AtomicU64::new(0)),
        }
    }

    /// "Still working": one relaxed atomic store.
    pub fn beat(&self) {
        let us = u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last_us.fetch_max(us, Ordering::Relaxed);
    }

    /// When the thread last beat (its start counts as a beat).
    pub fn last_beat(&self) -> Instant {
        self.base + Duration::from_micros(self.last_us.load(Ordering::Relaxed))
    }

    pub fn since_last_beat(&self) -> Duration {
        self.last_beat().elapsed()
    }
}

/// An owned, named thread running a body that returns `T`. See the module docs.
#[derive(Debug)]
pub struct Handle<T> {
    name: String,
    thread: Option<std::thread::JoinHandle<()>>,
    outcome: Receiver<Result<T, String>>,
    heartbeat: Heartbeat,
}

/// Start `body` on a thread named [`thread_name`]`(role, label)`. A panic in `body` is
/// caught, logged, and sent to `on_exit` once.
pub fn spawn<T, F>(
    role: &str,
    label: &str,
    on_exit: Option<ExitSink>,
    body: F,
) -> std::io::Result<Handle<T>>
where
    T: Send + 'static,
    F: FnOnce(&Heartbeat) -> T + Send + 'static,
{
    let name = thread_name(role, label);
    let heartbeat = Heartbeat::new();
    let (tx, outcome) = bounded(1);
    let beat = heartbeat.clone();
    let thread_name = name.clone();
    let thread = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let result = catch_unwind(AssertUnwindSafe(|| body(&beat))).map_err(panic_message);
            if let Err(message) = &result {
                tracing::error!(thread = %thread_name, panic = %message, "thread panicked");
                if let Some(sink) = &on_exit {
                    let exit = ThreadExit::Panicked {
                        thread: thread_name.clone(),
                        message: message.clone(),
                    };
                    // A panicking sink must not take the report with it.
                    if catch_unwind(AssertUnwindSafe(|| sink(exit))).is_err() {
                        tracing::error!(thread = %thread_name, "the exit sink panicked");
                    }
                }
            }
            let _ = tx.send(result);
        })?;
    Ok(Handle {
        name,
        thread: Some(thread),
        outcome,
        heartbeat,
    })
}

/// The text of a panic's payload (what `panic!` was given).
pub fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic without a message)".to_owned()
    }
}

impl<T> Handle<T> {
    /// The thread's name as the kernel shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The thread's heartbeat, for a watchdog to read.
    pub fn heartbeat(&self) -> Heartbeat {
        self.heartbeat.clone()
    }

    /// Whether the body has ended (returned or panicked).
    pub fn is_finished(&self) -> bool {
        self.thread
            .as_ref()
            .map_or(true, std::thread::JoinHandle::is_finished)
    }

    /// Wait until the body ends or `deadline` passes, whichever is first.
    pub fn join_until(mut self, deadline: Instant) -> Joined<T> {
        let left = deadline.saturating_duration_since(Instant::now());
        let outcome = match self.outcome.recv_timeout(left) {
            Ok(outcome) => outcome,
            Err(RecvTimeoutError::Timeout) => {
                tracing::error!(thread = %self.name, "thread did not end by its deadline; left running");
                // Dropping the JoinHandle detaches the thread; it has been reported.
                self.thread = None;
                return Joined::TimedOut;
            }
            // The body's result is sent last; without it the thread died in a way
            // catch_unwind could not see (an abort takes the process anyway).
            Err(RecvTimeoutError::Disconnected) => Err("thread ended without a result".into()),
        };
        if let Some(thread) = self.thread.take() {
            // It has sent its outcome and is returning: this join is immediate.
            let _ = thread.join();
        }
        match outcome {
            Ok(value) => Joined::Done(value),
            Err(message) => Joined::Panicked(message),
        }
    }

    /// [`join_until`](Handle::join_until) `now + timeout`.
    pub fn join_within(self, timeout: Duration) -> Joined<T> {
        self.join_until(Instant::now() + timeout)
    }
}

impl<T> Drop for Handle<T> {
    fn drop(&mut self) {
        if self.thread.as_ref().is_some_and(|t| !t.is_finished()) {
            tracing::error!(thread = %self.name, "thread handle dropped while the thread runs; it is left running");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn collecting_sink() -> (ExitSink, Arc<Mutex<Vec<ThreadExit>>>) {
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&events);
        let sink: ExitSink = Arc::new(move |e| seen.lock().unwrap().push(e));
        (sink, events)
    }

    #[test]
    fn a_returning_body_is_done_and_no_event_is_sent() {
        let (sink, events) = collecting_sink();
        let handle = spawn("enc", "rgb", Some(sink), |_| 7).unwrap();
        assert_eq!(handle.join_within(Duration::from_secs(5)), Joined::Done(7));
        assert!(events.lock().unwrap().is_empty());
    }

    #[test]
    fn a_panic_is_caught_and_reported_once() {
        let (sink, events) = collecting_sink();
        let handle = spawn("enc", "rgb", Some(sink), |_| -> u32 {
            panic!("encoder exploded at {}", 42)
        })
        .unwrap();
        assert_eq!(
            handle.join_within(Duration::from_secs(5)),
            Joined::Panicked("encoder exploded at 42".into())
        );
        assert_eq!(
            *events.lock().unwrap(),
            vec![ThreadExit::Panicked {
                thread: "enc-rgb".into(),
                message: "encoder exploded at 42".into(),
            }]
        );
    }

    #[test]
    fn the_sink_hears_of_a_panic_before_anyone_joins() {
        let (sink, events) = collecting_sink();
        let handle = spawn("finalize", "", Some(sink), |_| panic!("boom")).unwrap();
        let waited = Instant::now();
        while events.lock().unwrap().is_empty() && waited.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(events.lock().unwrap().len(), 1);
        assert_eq!(
            handle.join_within(Duration::from_secs(5)),
            Joined::<()>::Panicked("boom".into())
        );
        assert_eq!(
            events.lock().unwrap().len(),
            1,
            "reported once, not per join"
        );
    }

    #[test]
    fn the_deadline_is_honoured_and_a_late_thread_is_reported() {
        let (release_tx, release_rx) = bounded::<()>(1);
        let handle = spawn("part-sync", "", None, move |_| {
            let _ = release_rx.recv();
        })
        .unwrap();
        let started = Instant::now();
        assert_eq!(
            handle.join_within(Duration::from_millis(100)),
            Joined::TimedOut
        );
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
        let _ = release_tx.send(());
    }

    #[test]
    fn names_keep_the_role_and_fit_the_kernel_limit() {
        assert_eq!(thread_name("enc", "rgb"), "enc-rgb");
        assert_eq!(thread_name("finalize", ""), "finalize");
        assert_eq!(thread_name("enc", "egocentric_rgb_left"), "enc-egocentric_");
        assert_eq!(
            thread_name("enc", "egocentric_rgb_left").len(),
            MAX_NAME_LEN
        );
        // Never cut inside a character.
        assert_eq!(thread_name("src", "kamera-äöü-links"), "src-kamera-äö");
    }

    #[test]
    fn the_kernel_sees_the_role_name() {
        let handle = spawn("enc", "a_very_long_stream_name", None, |_| {
            std::fs::read_to_string("/proc/thread-self/comm").unwrap_or_default()
        })
        .unwrap();
        let Joined::Done(comm) = handle.join_within(Duration::from_secs(5)) else {
            panic!("the thread did not return");
        };
        assert_eq!(comm.trim_end(), "enc-a_very_long");
    }

    #[test]
    fn the_spawner_sees_the_last_beat() {
        let (go_tx, go_rx) = bounded::<()>(1);
        let (beaten_tx, beaten_rx) = bounded::<()>(1);
        let handle = spawn("src", "imu", None, move |heartbeat| {
            let _ = go_rx.recv();
            heartbeat.beat();
            let _ = beaten_tx.send(());
        })
        .unwrap();
        let heartbeat = handle.heartbeat();
        let at_start = heartbeat.last_beat();
        std::thread::sleep(Duration::from_millis(30));
        assert!(heartbeat.since_last_beat() >= Duration::from_millis(30));
        go_tx.send(()).unwrap();
        beaten_rx.recv().unwrap();
        assert!(heartbeat.last_beat() >= at_start + Duration::from_millis(30));
        assert_eq!(handle.join_within(Duration::from_secs(5)), Joined::Done(()));
    }
}
