//! The runtime's stop conditions and what the sources do around them (issue 12 items 5,
//! 11, 13; issue 13 item 10): a stalled process does not burst frames, SIGHUP stops
//! like SIGTERM, a closed stdout is no error, storage that fails or runs short stops
//! the recording with a finished file, and every stream that dropped frames is named at
//! stop.
//!
//! Storage tests mount small tmpfs file systems (the tests run as root), undone on drop.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::cli::{entries, signal, verify, Rig, Run};
use nix::sys::signal::Signal;

/// Wait for `child` to exit within `limit`; kill it and fail otherwise.
fn wait_output(mut child: Child, limit: Duration, what: &str) -> Output {
    let t = Instant::now();
    loop {
        if child.try_wait().expect("poll grabd").is_some() {
            return child.wait_with_output().expect("grabd output");
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            panic!("{what}: grabd did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Spawn `grabd record` on the rig with stdout and stderr captured.
fn spawn_record(rig: &Rig, duration: &str) -> Child {
    rig.record_cmd(&rig.config, &rig.spool, &rig.output, duration)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn grabd record")
}

/// Wait until the rig's recording has finished its first chunk (it is mid-recording).
fn wait_first_chunk(rig: &Rig, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let done = entries(&rig.spool)
            .first()
            .is_some_and(|d| rig.spool.join(d).join("00000.mkv").exists());
        if done {
            return;
        }
        if let Some(status) = child.try_wait().expect("poll grabd") {
            panic!("grabd exited ({status}) before its first chunk");
        }
        assert!(Instant::now() < deadline, "no chunk appeared");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The printed final file of a run that must have exited 0.
fn finished_file(r: &Run, what: &str) -> PathBuf {
    assert_eq!(r.code, 0, "{what}: exit code; stderr:\n{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{what}: {}", r.stderr);
    PathBuf::from(
        r.last_line()
            .unwrap_or_else(|| panic!("{what}: no path printed")),
    )
}

/// Regression test: the synthetic pacer read the clock before it slept, so after a
/// SIGSTOP it delivered the frames it had missed at once (frames under 1 ms apart, the
/// same millisecond PTS twice in a track).
#[test]
fn a_stopped_process_skips_frames_instead_of_bursting() {
    let rig = Rig::new();
    let mut child = spawn_record(&rig, "5");
    wait_first_chunk(&rig, &mut child);
    signal(&child, Signal::SIGSTOP);
    std::thread::sleep(Duration::from_secs(2));
    signal(&child, Signal::SIGCONT);
    let r = Run::from(wait_output(child, Duration::from_secs(30), "stall"));
    let mkv = finished_file(&r, "stall");
    verify(&mkv);
    let tracks = common::read_tracks(&mkv);
    for name in ["rgb", "depth", "imu"] {
        let mut pts = common::track(&tracks, name).pts();
        pts.sort_unstable();
        let gaps: Vec<i64> = pts.windows(2).map(|w| w[1] - w[0]).collect();
        let closest = gaps.iter().copied().min().expect("frames");
        let longest = gaps.iter().copied().max().expect("frames");
        // 25 fps (imu in rgb's batches): 40 ms apart, ±1 ms of Matroska rounding.
        assert!(
            closest >= 39_000,
            "{name}: two frames {closest} µs apart after the stall: {pts:?}"
        );
        assert!(longest >= 1_500_000, "{name}: no stall seen ({longest} µs)");
    }
}

/// Regression test: SIGHUP (an SSH session that drops) killed `record` with no final
/// file.
#[test]
fn sighup_stops_cleanly_like_sigterm() {
    let rig = Rig::new();
    let mut child = spawn_record(&rig, "30");
    wait_first_chunk(&rig, &mut child);
    let signalled = Instant::now();
    signal(&child, Signal::SIGHUP);
    let r = Run::from(wait_output(child, Duration::from_secs(20), "SIGHUP"));
    assert!(signalled.elapsed() < Duration::from_secs(10));
    let mkv = finished_file(&r, "SIGHUP");
    verify(&mkv);
    assert!(entries(&rig.spool).is_empty(), "{:?}", entries(&rig.spool));
}

/// Regression test: with stdout closed (`grabd record … | true`) grabd panicked after
/// finishing and exited 101. The recording is fine, so the exit code is 0.
#[test]
fn a_closed_stdout_is_not_an_error() {
    let rig = Rig::new();
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(r#""$@" | true; exit "${PIPESTATUS[0]}""#)
        .arg("bash")
        .arg(common::cli::BIN);
    rig.record_args(&mut cmd, "1.5");
    let r = Run::from(cmd.output().expect("run bash"));
    assert_eq!(r.code, 0, "stderr:\n{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    let finished: Vec<String> = entries(&rig.output)
        .into_iter()
        .filter(|n| n.ends_with(".mkv"))
        .collect();
    assert_eq!(finished.len(), 1, "{:?}", entries(&rig.output));
    verify(&rig.output.join(&finished[0]));
}
