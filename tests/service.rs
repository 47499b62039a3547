//! `grabd run` in process (issue 14), with a fake button and fake LEDs/buzzer: a press,
//! about 2 s, a press gives one final file whose length is the press interval; a
//! double press while recording leaves a mark, not a stop; a double press in idle
//! leaves no recording; a new recording starts within 1 s of a stop while the last
//! one still finishes; the control socket answers; SIGTERM (the stop flag) finishes
//! the current recording before the service returns; a mark is a chapter and in the
//! manifest, even after a power cut.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cli::{read_json, verify, CONFIG};
use common::wait_until;
use grabd::clock::monotonic_us;
use grabd::config::Config;
use grabd::gpio::{ButtonEdge, FakeButton, FakeOutput, FakeOutputLog, Outputs};
use grabd::runtime::control;
use grabd::runtime::service::{self, Devices, Exit};
use serde_json::Value;

struct Running {
    socket: PathBuf,
    spool: PathBuf,
    output: PathBuf,
    button: crossbeam_channel::Sender<ButtonEdge>,
    red: FakeOutputLog,
    buzzer: FakeOutputLog,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<Exit, service::ServiceError>>,
    _dir: tempfile::TempDir,
}

fn start() -> Running {
    start_with("")
}

/// The service with `device_lines` added to its `[device]` section.
fn start_with(device_lines: &str) -> Running {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let text = format!(
        "{CONFIG}\n[device]\nspool = {:?}\noutput = {:?}\ncontrol_socket = {:?}\n{device_lines}\n",
        root.join("spool"),
        root.join("out"),
        root.join("run/control")
    );
    let config = Config::from_toml(&text, "test.toml").unwrap();
    let (button, edges) = FakeButton::new();
    let (green, _) = FakeOutput::new("green");
    let (red, red_log) = FakeOutput::new("red");
    let (buzzer, buzzer_log) = FakeOutput::new("buzzer");
    let devices = Devices {
        button: Some(Box::new(button)),
        outputs: Outputs {
            green: Some(Box::new(green)),
            red: Some(Box::new(red)),
            buzzer: Some(Box::new(buzzer)),
        },
        health: Vec::new(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let thread = std::thread::spawn(move || service::run(&config, devices, &flag));
    let r = Running {
        socket: root.join("run/control"),
        spool: root.join("spool"),
        output: root.join("out"),
        button: edges,
        red: red_log,
        buzzer: buzzer_log,
        stop,
        thread,
        _dir: dir,
    };
    wait_for(&r, "ready", |s| s["state"] == "idle");
    r
}

fn status(r: &Running) -> Value {
    control::request(&r.socket, "status").unwrap_or(Value::Null)
}

fn wait_for(r: &Running, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(r);
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{what}: last status {s}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A press of 80 ms; returns its down edge's time.
fn press(r: &Running) -> i64 {
    let down = monotonic_us();
    r.button
        .send(ButtonEdge {
            pressed: true,
            at_us: down,
        })
        .unwrap();
    std::thread::sleep(Duration::from_millis(80));
    r.button
        .send(ButtonEdge {
            pressed: false,
            at_us: monotonic_us(),
        })
        .unwrap();
    down
}

fn finished_files(output: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(output)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.extension().is_some_and(|e| e == "mkv"));
    v.sort();
    v
}

fn pulses(log: &FakeOutputLog) -> usize {
    let log = log.lock().unwrap();
    log.windows(2).filter(|w| w[0].1 && !w[1].1).count()
}

#[test]
fn press_record_press_then_marks_double_press_and_sigterm() {
    let r = start();
    let beeps_before = pulses(&r.buzzer);

    // Double press in idle: status beeps, no recording.
    press(&r);
    std::thread::sleep(Duration::from_millis(150));
    press(&r);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(status(&r)["state"], "idle");
    assert!(finished_files(&r.output).is_empty());

    // Press, 2 s, press: one file as long as the press interval.
    let t0 = press(&r);
    wait_for(&r, "recording", |s| s["state"] == "recording");
    std::thread::sleep(Duration::from_millis(1000));
    // A double press while recording is a mark.
    let t_mark = press(&r);
    std::thread::sleep(Duration::from_millis(150));
    press(&r);
    std::thread::sleep(Duration::from_millis(900));
    assert_eq!(
        status(&r)["state"],
        "recording",
        "a double press stopped it"
    );
    let t1 = press(&r);
    let stopped = wait_for(&r, "stop", |s| s["state"] == "idle");
    let stop_seen = Instant::now();
    assert!(stopped["recording"].is_null());

    // The next recording starts within 1 s of the stop, finishing or not.
    let reply = control::request(&r.socket, "start").unwrap();
    assert_eq!(reply["ok"], true, "{reply}");
    let next_start = stop_seen.elapsed();
    assert!(next_start < Duration::from_secs(1), "{next_start:?}");
    std::thread::sleep(Duration::from_millis(1200));

    // SIGTERM: the current recording is finished before run returns.
    r.stop.store(true, Ordering::Release);
    let exit = r.thread.join().unwrap().unwrap();
    assert_eq!(exit, Exit::Terminated);

    let files = finished_files(&r.output);
    assert_eq!(files.len(), 2, "{files:?}");
    let first = &files[0];
    verify(first);
    // The IMU runs for the whole process on CLOCK_MONOTONIC; its tap puts the sample
    // times on this recording's timeline.
    common::assert_imu_times_on_the_timeline(first);
    let manifest = read_json(&first.with_extension("json"));
    let want = (t1 - t0) as f64 / 1e6;
    let got = manifest["duration_s"].as_f64().unwrap();
    // Within one frame (40 ms) plus the frame's own duration.
    assert!(
        (got - want).abs() <= 0.081,
        "recorded {got} s, pressed {want} s apart"
    );
    // The first frame is the one at the press edge: none of the frames held back
    // while the double-press window decided was dropped when the recording got them
    // (they had waited longer than the latency budget allows a frame in its queue).
    let rgb = common::read_tracks(first);
    let first_pts_us = common::track(&rgb, "rgb").pts()[0];
    assert!(
        first_pts_us <= 40_000,
        "the first rgb frame is at {first_pts_us} µs of media, not at the press"
    );
    assert_eq!(manifest["streams"][0]["dropped_overload"], 0, "{manifest}");
    // The mark is in the manifest and, read back with ffprobe, a chapter of the file,
    // at the press (within a frame: media time 0 is the first frame, not the press).
    let want_mark = (t_mark - t0) as f64 / 1e6;
    let marks = manifest["marks_s"].as_array().expect("marks_s").clone();
    assert_eq!(marks.len(), 1, "{manifest}");
    let mark = marks[0].as_f64().unwrap();
    assert!(
        (mark - want_mark).abs() <= 0.041,
        "mark at {mark} s, pressed at {want_mark} s"
    );
    let found = chapters(first);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        (found[0].0 - mark).abs() < 0.001,
        "{found:?} vs mark {mark}"
    );
    assert_eq!(found[0].1, "mark 1");
    assert!(
        !first.with_extension("marks.json").exists(),
        "marks live in the manifest"
    );
    verify(&files[1]);
    // Recording blinks red; beeps: status (1), start (1), mark (1), stop (2), start (1).
    assert!(pulses(&r.red) >= 1);
    let beeps = pulses(&r.buzzer) - beeps_before;
    assert!(beeps >= 6, "{beeps} beeps");
}

/// A loaded board hands the main loop a double press late: both presses were stamped
/// inside the double-press window, but reach the service after it. It is still a
/// double press (status), not a single press that starts a recording.
#[test]
fn a_double_press_that_arrives_late_is_still_a_double_press() {
    let r = start();
    let p = monotonic_us() - 2_000_000;
    for (pressed, at) in [(true, 0), (false, 80), (true, 250), (false, 330)] {
        let at_us = p + at * 1000;
        r.button.send(ButtonEdge { pressed, at_us }).unwrap();
    }
    std::thread::sleep(Duration::from_millis(1500));
    let s = status(&r);
    assert_eq!(s["state"], "idle", "{s}");
    r.stop.store(true, Ordering::Release);
    r.thread.join().unwrap().unwrap();
    assert!(finished_files(&r.output).is_empty());
}

/// The recording a press would start is made ready at the press's first edge, while
/// its double-press window still decides (so a single press runs at once when the
/// window closes, not after the encoders open); a double press drops it and leaves
/// nothing. A long window (2 s) makes "during the window" unmistakable.
#[test]
fn a_press_prepares_its_recording_during_the_double_press_window() {
    let r = start_with("double_press_s = 2.0");
    let recording_dirs = |r: &Running| -> usize {
        std::fs::read_dir(&r.spool).map_or(0, |d| {
            d.flatten()
                .filter(|e| e.path().join(".grabd-recording").exists())
                .count()
        })
    };
    let first = press(&r);
    let deadline = Instant::now() + Duration::from_millis(1500);
    while recording_dirs(&r) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let within_s = (monotonic_us() - first) as f64 / 1e6;
    assert_eq!(
        recording_dirs(&r),
        1,
        "no recording prepared {within_s:.2} s after the press"
    );
    assert_eq!(status(&r)["state"], "idle", "still deciding the press");
    press(&r); // the second press of a double press: status, no recording
    assert!(
        wait_until(Duration::from_secs(10), || recording_dirs(&r) == 0),
        "the prepared recording was left after a double press"
    );
    assert_eq!(status(&r)["state"], "idle");
    r.stop.store(true, Ordering::Release);
    r.thread.join().unwrap().unwrap();
    assert!(finished_files(&r.output).is_empty(), "a stray recording");
}

/// A fresh card has no spool or output folder before the first recording; the free
/// space is still the card's, not unknown (which a double press in idle beeped as "low").
#[test]
fn free_space_is_known_before_the_first_recording() {
    let r = start();
    assert!(!r.output.exists());
    let s = status(&r);
    assert!(s["free_bytes"].as_u64().is_some_and(|b| b > 0), "{s}");
    r.stop.store(true, Ordering::Release);
    assert_eq!(r.thread.join().unwrap().unwrap(), Exit::Terminated);
}

#[test]
fn run_and_ctl_fail_with_one_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[device]\nlong_press = \"reboot\"\n").unwrap();
    let missing = dir.path().join("missing.toml");
    for (config, needle) in [(&missing, "missing.toml"), (&bad, "reboot")] {
        let r = common::cli::grabd(["run".as_ref(), "--config".as_ref(), config.as_os_str()]);
        assert_eq!(r.code, 2, "{}", r.stderr);
        assert!(r.one_line_error().contains(needle), "{}", r.stderr);
    }
    let socket = dir.path().join("control");
    let r = common::cli::grabd([
        "ctl".as_ref(),
        "status".as_ref(),
        "--socket".as_ref(),
        socket.as_os_str(),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.one_line_error().contains("control socket"),
        "{}",
        r.stderr
    );
}

/// The chapters of `mkv` as ffprobe reads them back: (start seconds, title).
fn chapters(mkv: &Path) -> Vec<(f64, String)> {
    let probe = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_chapters", "-of", "json"])
        .arg(mkv)
        .output()
        .expect("ffprobe");
    let json: Value = serde_json::from_slice(&probe.stdout).unwrap();
    json["chapters"]
        .as_array()
        .map(|chapters| {
            chapters
                .iter()
                .map(|c| {
                    let start = c["start_time"].as_str().unwrap().parse().unwrap();
                    (start, c["tags"]["title"].as_str().unwrap_or("").to_owned())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Issue 14 item 3: a mark survives a power cut. `grabd run` records, is marked through
/// `grabd ctl mark`, and is killed (SIGKILL) before it can finish; `grabd recover`
/// then writes the mark into the manifest and as a chapter of the recovered file.
#[test]
fn a_mark_survives_a_power_cut() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let socket = root.join("run/control");
    let (spool, output) = (root.join("spool"), root.join("out"));
    let config = root.join("grabd.toml");
    std::fs::write(
        &config,
        format!(
            "{CONFIG}\n[device]\nspool = {spool:?}\noutput = {output:?}\ncontrol_socket = {socket:?}\n"
        ),
    )
    .unwrap();
    let mut run = std::process::Command::new(common::cli::BIN)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let ask = |request: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match control::request(&socket, request) {
                Ok(reply) => return reply,
                Err(e) => assert!(Instant::now() < deadline, "{request}: {e}"),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert_eq!(ask("start")["ok"], true);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !finished_chunk_exists(&spool) {
        assert!(Instant::now() < deadline, "no chunk was finished");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(ask("mark")["ok"], true);
    std::thread::sleep(Duration::from_millis(600));
    run.kill().unwrap();
    run.wait().unwrap();

    let r = common::cli::grabd([
        "recover".as_ref(),
        "--spool".as_ref(),
        spool.as_os_str(),
        "--output".as_ref(),
        output.as_os_str(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mkv = PathBuf::from(r.last_line().expect("a recovered file"));
    verify(&mkv);
    let manifest = read_json(&mkv.with_extension("json"));
    assert_eq!(manifest["recovered"], true);
    let marks = manifest["marks_s"].as_array().expect("marks_s").clone();
    assert_eq!(marks.len(), 1, "{manifest}");
    let mark = marks[0].as_f64().unwrap();
    let found = chapters(&mkv);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        (found[0].0 - mark).abs() < 0.001,
        "{found:?} vs mark {mark}"
    );
    assert_eq!(found[0].1, "mark 1");
}

/// Whether the recording in `spool` has finished its first chunk.
fn finished_chunk_exists(spool: &Path) -> bool {
    std::fs::read_dir(spool)
        .into_iter()
        .flatten()
        .flatten()
        .any(|d| d.path().join("00000.mkv").exists())
}
