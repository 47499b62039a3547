//! The `grabd` command line (issue 2): exit codes and one-line errors for bad flags,
//! bad configs and unusable storage (read-only, full) with nothing left behind; clean
//! stops on SIGINT/SIGTERM; the final path on stdout and a manifest whose every field
//! matches the file read back; unique recording ids.
//!
//! Storage tests mount small tmpfs file systems (the tests run as root); each mount is
//! undone by a guard on drop, and a test whose mount fails is skipped with the reason.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::cli::{
    assert_config_refused, entries, grabd, read_json, signal, verify, wait_new_dir, Mount, Rig,
    Run, CONFIG, HEAVY_CONFIG,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

impl Rig {
    fn spawn_record(&self, duration: &str) -> Child {
        self.record_cmd(&self.config, &self.spool, &self.output, duration)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

fn unix_us(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_micros() as i64
}

// ---------------------------------------------------------------------------------------

#[test]
fn bad_flags_exit_2_and_create_nothing() {
    let rig = Rig::new();
    let s = rig.spool.to_str().unwrap();
    let o = rig.output.to_str().unwrap();
    let c = rig.config.to_str().unwrap();
    let cases: Vec<Vec<&str>> = vec![
        vec![],
        vec!["nosuchcommand"],
        vec!["record"],
        vec!["record", "--spool", s, "--output", o],
        vec!["record", "--output", o, "--duration", "1"],
        vec!["record", "--spool", s, "--output", o, "--duration", "abc"],
        vec!["record", "--spool", s, "--output", o, "--duration", "0"],
        vec!["record", "--spool", s, "--output", o, "--duration", "-3"],
        vec!["record", "--spool", s, "--output", o, "--duration", "inf"],
        vec![
            "record",
            "--spool",
            s,
            "--output",
            o,
            "--duration",
            "1",
            "--chunk-length",
            "x",
        ],
        vec![
            "record",
            "--spool",
            s,
            "--output",
            o,
            "--duration",
            "1",
            "--bogus",
        ],
        vec![
            "record",
            "--config",
            c,
            "--spool",
            s,
            "--output",
            o,
            "--duration",
            "1",
            "extra",
        ],
        vec!["recover", "--spool", s],
        vec!["recover", "--output", o],
        vec!["verify"],
    ];
    for args in cases {
        let r = grabd(&args);
        assert_eq!(r.code, 2, "{args:?}: exit {} ({})", r.code, r.stderr);
        assert!(!r.stderr.trim().is_empty(), "{args:?}: no error message");
        assert!(r.stdout.trim().is_empty(), "{args:?}: stdout {}", r.stdout);
        assert!(
            !rig.spool.exists() && !rig.output.exists(),
            "{args:?} created folders"
        );
    }
    let help = grabd(["--help"]);
    assert_eq!(help.code, 0);
    for sub in ["record", "recover", "verify"] {
        assert!(help.stdout.contains(sub), "{}", help.stdout);
    }
}

#[test]
fn unreadable_config_exits_2_with_one_line() {
    let missing = PathBuf::from("/nonexistent/grabd-test.toml");
    assert_config_refused(None, Some(&missing), "/nonexistent/grabd-test.toml");
    let dir = tempfile::tempdir().unwrap();
    assert_config_refused(None, Some(dir.path()), &dir.path().display().to_string());
    assert_config_refused(
        Some(b"[recording]\nchunk_length_s = \xff\xfe\n"),
        None,
        "bad.toml",
    );
}

#[test]
fn bad_toml_exits_2_with_one_line() {
    assert_config_refused(Some(b"this is [ not toml"), None, "bad.toml");
    assert_config_refused(
        Some(b"[recording]\nchunk_lenght_s = 1.0\n"),
        None,
        "chunk_lenght_s",
    );
    assert_config_refused(
        Some(b"[recording]\nchunk_length_s = 0.0\n"),
        None,
        "chunk_length_s",
    );
}

#[test]
fn unknown_codec_or_pixel_format_exits_2_with_one_line() {
    assert_config_refused(
        Some(CONFIG.replace("\"libx264\"", "\"nope264\"").as_bytes()),
        None,
        "nope264",
    );
    assert_config_refused(
        Some(CONFIG.replace("\"rgb24\"", "\"rgb99\"").as_bytes()),
        None,
        "rgb99",
    );
    assert_config_refused(
        Some(
            CONFIG
                .replace("kind = \"data\"", "kind = \"audio\"")
                .as_bytes(),
        ),
        None,
        "audio",
    );
}

/// README: "Unknown keys, codecs, options and pixel formats are errors at start-up."
///
/// Regression test: failed on 0f29c43 (an unknown codec option is found only when the first
/// frame opens the encoder: the recording starts, the stream fails, a final file without it
/// is written and exit 2 (stream_config.rs VideoStreamConfig::validate does not check
/// options)).
#[test]
fn unknown_codec_option_is_refused_at_start_up() {
    assert_config_refused(
        Some(
            CONFIG
                .replace("preset = \"ultrafast\"", "presett = \"ultrafast\"")
                .as_bytes(),
        ),
        None,
        "presett",
    );
}

/// An error line gives each cause once (anyhow's chain plus a Display that already
/// embeds its source repeats it).
///
/// Regression test: failed on 0f29c43 (errors print their cause twice, e.g. `cannot read
/// config X: No such file or directory (os error 2): No such file or directory (os error
/// 2)` (config.rs ConfigError::Read and recording::Error::Io display `{source}` and also
/// expose it as #[source])).
#[test]
fn error_lines_give_each_cause_once() {
    let rig = Rig::new();
    let out = rig
        .record_cmd(Path::new("/nonexistent.toml"), &rig.spool, &rig.output, "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn output_on_a_read_only_file_system_exits_2_and_leaves_nothing() {
    let rig = Rig::new();
    let ro = rig.root.join("ro");
    let _mount = match Mount::read_only(&ro) {
        Ok(m) => m,
        Err(why) => {
            eprintln!("SKIPPED: cannot mount a read-only file system here: {why}");
            return;
        }
    };
    let sub = ro.join("recordings");
    for (spool, output) in [(&rig.spool, &ro), (&rig.spool, &sub), (&sub, &rig.output)] {
        let r = Run::from(
            rig.record_cmd(&rig.config, spool, output, "2")
                .output()
                .unwrap(),
        );
        assert_eq!(r.code, 2, "spool {spool:?} output {output:?}: {}", r.stderr);
        let line = r.one_line_error();
        assert!(line.contains("read-only"), "{line}");
        assert!(r.stdout.trim().is_empty());
        assert!(entries(&rig.spool).is_empty(), "{:?}", entries(&rig.spool));
        assert!(
            entries(&rig.output).is_empty(),
            "{:?}",
            entries(&rig.output)
        );
        assert!(entries(&ro).is_empty());
    }
}

#[test]
fn a_full_file_system_is_refused_at_once() {
    let rig = Rig::new();
    let small = rig.root.join("small");
    let _mount = match Mount::tmpfs(&small, "size=8m") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("SKIPPED: cannot mount a tmpfs here: {why}");
            return;
        }
    };
    let spool = small.join("spool");
    let output = small.join("output");
    let started = Instant::now();
    let r = Run::from(
        rig.record_cmd(&rig.config, &spool, &output, "30")
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not refused at once"
    );
    let line = r.one_line_error();
    assert!(line.contains("full"), "{line}");
    assert!(entries(&spool).is_empty(), "{:?}", entries(&spool));
    assert!(entries(&output).is_empty(), "{:?}", entries(&output));
}

/// Record the heavy config onto a tmpfs of `size` until it fills; the outcome must be
/// either a refusal at once, or a finished playable file + manifest, exit 2 and a clear
/// message, with no spool folder left. Returns a description.
fn fill_up(size: &str) -> String {
    let rig = Rig::with_config(HEAVY_CONFIG);
    let card = rig.root.join("card");
    let _mount = match Mount::tmpfs(&card, &format!("size={size}")) {
        Ok(m) => m,
        Err(why) => return format!("SKIPPED: cannot mount a tmpfs here: {why}"),
    };
    let spool = card.join("spool");
    let output = card.join("output");
    let started = Instant::now();
    let out = rig
        .record_cmd(&rig.config, &spool, &output, "60")
        .output()
        .unwrap();
    let took = started.elapsed();
    let r = Run::from(out);
    assert_eq!(r.code, 2, "{size}: a full card must exit 2: {}", r.stderr);
    assert!(took < Duration::from_secs(50), "{size}: never stopped");
    let Some(path) = r.last_line() else {
        // Refused at once.
        let line = r.one_line_error();
        assert!(line.contains("full"), "{size}: {line}");
        assert!(
            entries(&output).is_empty(),
            "{size}: {:?}",
            entries(&output)
        );
        return format!("{size}: refused at once");
    };
    let mkv = PathBuf::from(path);
    let stderr_last = r.stderr.lines().last().unwrap_or_default().to_owned();
    assert!(
        stderr_last.contains("full"),
        "{size}: the message must say the card is full: {}",
        r.stderr
    );
    assert!(
        mkv.is_file(),
        "{size}: printed {path} but it does not exist"
    );
    let v = verify(&mkv);
    assert_eq!(v["manifest_ok"], true, "{size}: {v}");
    let manifest = read_json(&mkv.with_extension("json"));
    assert_eq!(manifest["recovered"], false);
    assert!(
        entries(&spool).is_empty(),
        "{size}: spool left: {:?}",
        entries(&spool)
    );
    format!(
        "{size}: stopped after {took:?} with {} s recorded, {} MiB",
        manifest["duration_s"],
        fs::metadata(&mkv).unwrap().len() >> 20
    )
}

#[test]
fn storage_filling_up_mid_recording_finishes_the_file_first() {
    eprintln!("{}", fill_up("40m"));
}

/// The same on smaller cards, where the last chunk is a larger share of the space.
///
/// Regression test: failed on 0f29c43 (on 12-24 MiB the storage guard stops too late:
/// finishing hits ENOSPC, exit 2 with `No space left on device` and no manifest (sometimes
/// no final file), spool left (runtime/storage.rs SpaceGuard reserve ignores the 500 ms
/// check interval and the rebuild-from-chunks fallback)).
#[test]
fn storage_filling_up_on_small_cards_finishes_the_file_first() {
    for size in ["12m", "16m", "24m"] {
        eprintln!("{}", fill_up(size));
    }
}

/// SIGINT and SIGTERM during `record`: exit 0 and a final file that verifies, ending
/// about when the signal came.
#[test]
fn sigint_and_sigterm_stop_cleanly_with_a_finished_file() {
    let handles: Vec<_> = [
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGTERM,
    ]
    .into_iter()
    .map(|sig| {
        std::thread::spawn(move || {
            let rig = Rig::new();
            let mut child = rig.spawn_record("30");
            // Recorded time counts from the recording folder (start-up before it, which
            // a loaded machine slows, is not recording).
            let (_, started) = wait_new_dir(&rig.spool, &[], &mut child);
            // Wait until the first chunk is finished, so the signal lands mid-recording.
            let deadline = started + Duration::from_secs(15);
            let first_chunk = loop {
                let dirs = entries(&rig.spool);
                if let Some(d) = dirs.first() {
                    let chunk = rig.spool.join(d).join("00000.mkv");
                    if chunk.exists() {
                        break chunk;
                    }
                }
                assert!(Instant::now() < deadline, "{sig}: no chunk appeared");
                std::thread::sleep(Duration::from_millis(5));
            };
            std::thread::sleep(Duration::from_millis(300));
            let signalled = started.elapsed();
            signal(&child, sig);
            let t = Instant::now();
            let out = {
                // Bounded wait: a hang must fail, not block the suite.
                loop {
                    if child.try_wait().unwrap().is_some() {
                        break child.wait_with_output().unwrap();
                    }
                    if t.elapsed() > Duration::from_secs(20) {
                        let _ = child.kill();
                        panic!("{sig}: grabd did not stop within 20 s");
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            };
            let stop_time = t.elapsed();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{sig}: {stderr}");
            let mkv = PathBuf::from(stdout.lines().last().expect("a path"));
            verify(&mkv);
            let manifest = read_json(&mkv.with_extension("json"));
            let d = manifest["duration_s"].as_f64().unwrap();
            let expected = signalled.as_secs_f64();
            assert!(
                d <= expected + 0.2 && d >= expected - 0.5,
                "{sig}: {d} s recorded, signal after {expected} s"
            );
            assert!(!first_chunk.exists());
            assert!(entries(&rig.spool).is_empty(), "{:?}", entries(&rig.spool));
            format!("{sig}: stopped {stop_time:?} after the signal, {d} s recorded")
        })
    })
    .collect();
    for h in handles {
        eprintln!("{}", h.join().expect("signal run"));
    }
}

/// Packet count per track title, read back by ffprobe (an independent reader); `None`
/// when ffprobe is not installed.
fn ffprobe_packets(mkv: &Path) -> Option<Vec<(String, u64)>> {
    let out = common::ffprobe_count_packets(mkv).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(
        v["streams"]
            .as_array()?
            .iter()
            .map(|s| {
                let (title, n) = common::ffprobe_stream_count(s);
                (title.unwrap_or_default().to_owned(), n.unwrap_or(0))
            })
            .collect(),
    )
}

fn looks_like_id(id: &str) -> bool {
    // 2026-11-25T07-56-21.123Z, optionally -N
    let b = id.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    b.len() >= 24
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b'-'
        && digits(14..16)
        && b[16] == b'-'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..23)
        && b[23] == b'Z'
}

#[test]
fn record_prints_the_final_path_and_a_true_manifest() {
    let rig = Rig::new();
    let duration = 3.0;
    let before = SystemTime::now();
    let r = rig.run_record("3");
    let after = SystemTime::now();
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mkv = PathBuf::from(r.last_line().expect("the final path"));
    assert_eq!(mkv.parent(), Some(rig.output.as_path()));
    assert_eq!(mkv.extension().unwrap(), "mkv");
    let id = mkv.file_stem().unwrap().to_string_lossy().into_owned();
    assert!(looks_like_id(&id), "{id}");
    let manifest_path = rig.output.join(format!("{id}.json"));
    assert_eq!(
        entries(&rig.output),
        [format!("{id}.json"), format!("{id}.mkv")]
    );
    assert!(entries(&rig.spool).is_empty(), "{:?}", entries(&rig.spool));
    let v = verify(&mkv);
    assert_eq!(v["manifest_ok"], true);
    common::assert_imu_times_on_the_timeline(&mkv);
    let m = read_json(&manifest_path);

    assert_eq!(m["recording_id"], id.as_str(), "{m}");
    assert_eq!(m["recovered"], false);
    assert_eq!(m["software_version"], env!("CARGO_PKG_VERSION"));
    // Times.
    let started = humantime::parse_rfc3339(m["started_at"].as_str().unwrap()).unwrap();
    let stopped = humantime::parse_rfc3339(m["stopped_at"].as_str().unwrap()).unwrap();
    let origin = m["origin_unix_us"].as_i64().unwrap();
    assert!((unix_us(started) - origin).abs() < 1000, "{m}");
    assert!(
        started >= before - Duration::from_millis(1) && stopped <= after,
        "{m}"
    );
    let wall = stopped.duration_since(started).unwrap().as_secs_f64();
    // stopped_at is taken once the writer has finished, so it may trail by the stop.
    assert!(
        wall >= duration - 0.1 && wall < duration + 1.0,
        "stopped − started = {wall}: {m}"
    );
    let d = m["duration_s"].as_f64().unwrap();
    assert!((d - duration).abs() < 0.25, "duration_s {d}: {m}");
    // Streams, in the configured order, with their configs and counts read back.
    let streams = m["streams"].as_array().unwrap();
    let names: Vec<&str> = streams
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["rgb", "depth", "imu"]);
    let kinds: Vec<&str> = streams
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["video", "video", "data"]);
    assert_eq!(streams[0]["config"]["width"], 160);
    assert_eq!(streams[0]["config"]["codec"], "libx264");
    assert_eq!(streams[1]["config"]["codec"], "ffv1");
    assert_eq!(streams[1]["config"]["height"], 50);
    let probed = ffprobe_packets(&mkv);
    for s in streams {
        let name = s["name"].as_str().unwrap();
        let written = s["frames_written"].as_u64().unwrap();
        let verified = v["streams"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .and_then(|t| t["packets"].as_u64())
            .unwrap();
        assert_eq!(written, verified, "{name}: manifest vs verify");
        if let Some(probed) = &probed {
            let n = probed.iter().find(|(t, _)| t == name).map(|(_, n)| *n);
            assert_eq!(Some(written), n, "{name}: manifest vs ffprobe {probed:?}");
        }
        let dropped = s["frames_dropped"].as_u64().expect("frames_dropped known");
        assert!(
            ((written + dropped) as f64 - duration * 25.0).abs() <= 3.0,
            "{name}: {written} frames written + {dropped} dropped in {duration} s"
        );
        // How many are dropped is not fixed: on a busy machine frames that can no
        // longer become durable within max_latency_ms are shed (and counted above).
    }
    // The file itself.
    let bytes = fs::read(&mkv).unwrap();
    assert_eq!(m["file"]["name"], format!("{id}.mkv"));
    assert_eq!(m["file"]["size_bytes"].as_u64(), Some(bytes.len() as u64));
    // The checksum: SHA-256 of each 1 MiB block.
    assert_eq!(m["file"]["sha256_block_bytes"], 1_048_576);
    let blocks: Vec<String> = bytes
        .chunks(1 << 20)
        .map(|block| {
            Sha256::digest(block)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        })
        .collect();
    assert_eq!(m["file"]["sha256_blocks"], serde_json::json!(blocks));
    eprintln!(
        "manifest checked: {} bytes, {d} s, ffprobe {}",
        bytes.len(),
        if probed.is_some() {
            "agrees"
        } else {
            "not installed"
        }
    );
}

/// Ids are unique to the millisecond and sort after every id already there: every id
/// of the next seconds is claimed in advance (as a recording folder in the spool, then
/// as a finished file in the output), and concurrent recorders share one spool. The
/// claims go to a tmpfs where there is one: a loaded disk makes fewer than a thousand
/// folders a second, so the claims would fall behind the clock they claim.
#[test]
fn recording_ids_are_unique_within_a_millisecond() {
    for claim_in_output in [false, true] {
        let mut rig = Rig::new();
        let fast = rig.root.join("fast");
        let _mount = match Mount::tmpfs(&fast, "size=64m") {
            Ok(m) => {
                rig.spool = fast.join("spool");
                rig.output = fast.join("output");
                Some(m)
            }
            Err(why) => {
                eprintln!("no tmpfs ({why}): claiming on the disk");
                None
            }
        };
        fs::create_dir_all(&rig.spool).unwrap();
        fs::create_dir_all(&rig.output).unwrap();
        let now = unix_us(SystemTime::now()) / 1000 * 1000;
        let mut claimed = BTreeSet::new();
        for ms in -50..4000i64 {
            let id = grabd::clock::rfc3339_ms(now + ms * 1000).replace(':', "-");
            if claim_in_output {
                fs::write(rig.output.join(format!("{id}.mkv")), b"").unwrap();
            } else {
                fs::create_dir(rig.spool.join(&id)).unwrap();
            }
            claimed.insert(id);
        }
        let r = rig.run_record("0.5");
        assert_eq!(r.code, 0, "{}", r.stderr);
        let mkv = PathBuf::from(r.last_line().unwrap());
        let id = mkv.file_stem().unwrap().to_string_lossy().into_owned();
        assert!(!claimed.contains(&id), "took a claimed id {id}");
        assert!(looks_like_id(&id) && id.len() == 24, "{id}");
        let latest = claimed.last().unwrap();
        assert!(
            &id > latest && format!("{id}.mkv") > format!("{latest}.mkv"),
            "{id} must sort after every id there (the latest is {latest})"
        );
        verify(&mkv);
        // The claimed names are untouched.
        if claim_in_output {
            for c in &claimed {
                assert_eq!(
                    fs::metadata(rig.output.join(format!("{c}.mkv")))
                        .unwrap()
                        .len(),
                    0
                );
            }
        } else {
            assert_eq!(entries(&rig.spool).len(), claimed.len());
            for c in &claimed {
                assert!(entries(&rig.spool.join(c)).is_empty());
            }
        }
    }

    // Recordings started at the same instant from four threads of one process (the
    // ids then race for the same millisecond).
    use grabd::recording::{Recording, StreamConfig, VideoStreamConfig, WriterOptions};
    use std::sync::{Arc, Barrier};
    let rig = Rig::new();
    fs::create_dir_all(&rig.spool).unwrap();
    fs::create_dir_all(&rig.output).unwrap();
    let barrier = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (barrier, spool, output) =
                (Arc::clone(&barrier), rig.spool.clone(), rig.output.clone());
            std::thread::spawn(move || {
                let v = VideoStreamConfig::new(64, 48, 25.0)
                    .unwrap()
                    .with_codec("ffv1", "gray16le", "gray16le")
                    .unwrap();
                let streams = vec![("v".to_owned(), StreamConfig::Video(v))];
                barrier.wait();
                Recording::start(&spool, &output, streams, WriterOptions::default()).unwrap()
            })
        })
        .collect();
    let recordings: Vec<Recording> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let ids: BTreeSet<String> = recordings.iter().map(|r| r.id().to_owned()).collect();
    assert_eq!(ids.len(), 4, "{ids:?}");
    let bases: BTreeSet<&str> = ids.iter().map(|i| &i[..24]).collect();
    eprintln!(
        "4 recordings started at once: {ids:?} ({} distinct milliseconds)",
        bases.len()
    );
    for r in recordings {
        // No frame: nothing is left.
        assert!(r.stop().unwrap().finished.is_none());
    }
    assert!(entries(&rig.output).is_empty());
    assert!(entries(&rig.spool).is_empty());
}

/// Several `grabd record` processes started together on one spool and output.
///
/// Regression test: failed on 0f29c43 (concurrent recorders on one spool fail at start-up:
/// the storage preflight probe has a fixed name (`.grabd-write-test`), so one process
/// renames or deletes the other's probe (runtime/storage.rs preflight)).
#[test]
fn concurrent_recorders_in_one_spool_all_finish_with_distinct_ids() {
    let rig = Rig::new();
    let children: Vec<Child> = (0..4).map(|_| rig.spawn_record("1")).collect();
    let mut ids = BTreeSet::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mkv = PathBuf::from(stdout.lines().last().unwrap());
        verify(&mkv);
        ids.insert(mkv.file_stem().unwrap().to_string_lossy().into_owned());
    }
    assert_eq!(ids.len(), 4, "{ids:?}");
    assert_eq!(entries(&rig.output).len(), 8, "{:?}", entries(&rig.output));
}

/// libfaketime, which moves the wall clock of one process (scripts/deps installs it).
fn faketime_lib() -> PathBuf {
    let arch = std::env::consts::ARCH;
    PathBuf::from(format!(
        "/usr/lib/{arch}-linux-gnu/faketime/libfaketimeMT.so.1"
    ))
}

/// Issue 13 item 9: the wall clock steps back an hour mid-recording (NTP arriving on a
/// board without an RTC; libfaketime steps grabd's clock only, never the monotonic one).
/// The manifest keeps `stopped_at` after `started_at` with the monotonic duration and
/// says the clock stepped; the next recording, made while the clock is still behind,
/// gets an id that sorts after the previous one.
#[test]
fn a_wall_clock_stepped_back_keeps_times_and_ids_in_order() {
    let faketime = faketime_lib();
    assert!(
        faketime.exists(),
        "{} missing: scripts/deps installs libfaketime",
        faketime.display()
    );
    let rig = Rig::new();
    let offset = rig.root.join("faketime");
    fs::write(&offset, "+0\n").unwrap();
    let record = |duration: &str| {
        let mut cmd = rig.record_cmd(&rig.config, &rig.spool, &rig.output, duration);
        cmd.env("LD_PRELOAD", &faketime)
            .env("FAKETIME_TIMESTAMP_FILE", &offset)
            .env("FAKETIME_CACHE_DURATION", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    };

    let mut child = record("4").spawn().unwrap();
    let known = entries(&rig.spool)
        .into_iter()
        .map(PathBuf::from)
        .collect::<Vec<_>>();
    let (_, started) = wait_new_dir(&rig.spool, &known, &mut child);
    while started.elapsed() < Duration::from_millis(1500) {
        std::thread::sleep(Duration::from_millis(20));
    }
    fs::write(&offset, "-3600\n").unwrap();
    let stepped = Run::from(child.wait_with_output().unwrap());
    assert_eq!(stepped.code, 0, "{}", stepped.stderr);
    let mkv = PathBuf::from(stepped.last_line().unwrap());
    let manifest = read_json(&mkv.with_extension("json"));
    let at = |key: &str| {
        let text = manifest[key].as_str().unwrap().to_owned();
        humantime::parse_rfc3339(&text).unwrap()
    };
    let (started_at, stopped_at) = (at("started_at"), at("stopped_at"));
    let span = stopped_at
        .duration_since(started_at)
        .unwrap_or_else(|_| panic!("stopped_at is before started_at: {manifest}"));
    let duration = manifest["duration_s"].as_f64().unwrap();
    assert!(
        (span.as_secs_f64() - duration).abs() < 0.5 && duration > 3.0,
        "stopped_at - started_at = {span:?}, duration_s = {duration}: {manifest}"
    );
    let step = manifest["clock_stepped_s"]
        .as_f64()
        .expect("clock_stepped_s");
    assert!((step + 3600.0).abs() < 5.0, "clock_stepped_s = {step}");

    // The clock is still an hour behind for the next recording.
    let next = Run::from(record("1").output().unwrap());
    assert_eq!(next.code, 0, "{}", next.stderr);
    let next_mkv = PathBuf::from(next.last_line().unwrap());
    assert!(
        next_mkv.file_name() > mkv.file_name(),
        "{} must sort after {}",
        next_mkv.display(),
        mkv.display()
    );
    let next_manifest = read_json(&next_mkv.with_extension("json"));
    assert!(
        next_manifest["clock_stepped_s"].is_null(),
        "{next_manifest}"
    );
}
