//! Crash safety (issue 2): a `grabd record` child with 1 s chunks is killed with SIGKILL
//! at several points (mid-chunk, while a chunk is finalized, while the final file is
//! grown, during stop and concat), then `grabd recover` must leave exactly one playable
//! file per recording (zero decode errors, manifest checked, `recovered: true`) holding
//! every finished chunk plus the salvaged in-progress part.
//!
//! "Holding everything" is checked two ways: per stream, the recovered file has at least
//! as many packets as the spool files held at the kill (counted by reading them after
//! the process is dead, so nothing moves under the count), and the recovered media span
//! is at least (kill time − start) − 1.5 s. The loss each run measured is printed.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use common::cli::{self, entries, grabd, names_in, read_json, signal, wait_new_dir, Rig, Run};
use grabd::recording::{self, probe};
use serde_json::Value;
use sha2::{Digest, Sha256};

const FRAME: Duration = Duration::from_millis(40);
/// What a kill may cost at most (the bound; measured values are printed).
const MAX_LOSS: Duration = Duration::from_millis(1500);

impl Rig {
    /// Start `grabd record` for `duration_s`; its stdout/stderr go to `<label>.out/.err`.
    fn record(&self, label: &str, duration_s: f64) -> Child {
        let out = fs::File::create(self.root.join(format!("{label}.out"))).expect("stdout file");
        let err = fs::File::create(self.root.join(format!("{label}.err"))).expect("stderr file");
        self.record_cmd(
            &self.config,
            &self.spool,
            &self.output,
            &duration_s.to_string(),
        )
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn grabd record")
    }

    fn log(&self, label: &str) -> String {
        let out = fs::read_to_string(self.root.join(format!("{label}.out"))).unwrap_or_default();
        let err = fs::read_to_string(self.root.join(format!("{label}.err"))).unwrap_or_default();
        format!("--- {label} stdout:\n{out}--- {label} stderr:\n{err}")
    }

    fn recover(&self) -> Run {
        grabd([
            "recover".as_ref(),
            "--spool".as_ref(),
            self.spool.as_os_str(),
            "--output".as_ref(),
            self.output.as_os_str(),
        ])
    }

    fn recording_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = fs::read_dir(&self.spool)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default();
        dirs.sort();
        dirs
    }

    /// The spool's entries, leaving out its own lock file (empty, no data).
    fn spool_names(&self) -> Vec<String> {
        entries(&self.spool)
    }

    fn output_names(&self) -> Vec<String> {
        names_in(&self.output)
    }

    fn mkv_of(&self, dir: &Path) -> PathBuf {
        self.output.join(format!("{}.mkv", id_of(dir)))
    }

    /// After recovery: no recording folder left, no temporary file in the output.
    fn assert_clean(&self) {
        assert!(
            self.recording_dirs().is_empty(),
            "recording folders left in the spool: {:?}",
            self.recording_dirs()
        );
        let tmp: Vec<String> = self
            .output_names()
            .into_iter()
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(
            tmp.is_empty(),
            "temporary files left in the output: {tmp:?}"
        );
    }
}

fn id_of(dir: &Path) -> String {
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

/// SIGKILL `child` if it is still running. `true` when it was.
fn kill9(child: &mut Child) -> bool {
    if let Ok(Some(_)) = child.try_wait() {
        return false;
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    true
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

/// Packets per stream that a (dead) recorder's folder holds: every merged chunk, plus
/// what is readable in the parts of chunks that were not merged yet. Temporary files
/// are not counted: they are incomplete by definition.
fn packets_on_disk(dir: &Path) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    let names = names_in(dir);
    let mut add = |path: &Path| {
        if let Ok(summary) = probe::inspect(path, false, None) {
            for track in summary.tracks {
                *counts.entry(track.name).or_insert(0) += track.packets;
            }
        }
    };
    for name in &names {
        if let Some(chunk) = name.strip_suffix(".mkv") {
            if !chunk.contains('.') {
                add(&dir.join(name));
            }
        }
    }
    for name in &names {
        if let Some(stem) = name.strip_suffix(".mkv.part") {
            let chunk = stem.split('.').next().unwrap_or(stem);
            if !names.contains(&format!("{chunk}.mkv")) {
                add(&dir.join(name));
            }
        }
    }
    counts
}

/// `grabd verify` a file: it must exit 0 with every packet decoded, the manifest checked
/// and nothing truncated.
fn verify(mkv: &Path) -> Value {
    let v = cli::verify(mkv);
    assert_eq!(v["manifest_ok"], true, "{v}");
    assert_eq!(v["truncated"], false, "{v}");
    v
}

fn stream_packets(v: &Value, name: &str) -> u64 {
    v["streams"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == name)
        .and_then(|s| s["packets"].as_u64())
        .unwrap_or(0)
}

/// Frames of stream `name` in the verified file plus those its manifest says were
/// dropped: a busy machine sheds frames that can no longer become durable in time
/// (max_latency_ms), so only the sum is known.
fn frames_accounted(v: &Value, manifest: &Value, name: &str) -> u64 {
    let dropped = manifest["streams"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s["name"] == name)
        .and_then(|s| s["frames_dropped"].as_u64())
        .unwrap_or(0);
    stream_packets(v, name) + dropped
}

/// Media span of a verified file (earliest first PTS to latest last PTS).
fn span(v: &Value) -> Duration {
    let streams = v["streams"].as_array().cloned().unwrap_or_default();
    let first = streams
        .iter()
        .filter_map(|s| s["first_pts_us"].as_i64())
        .min();
    let last = streams
        .iter()
        .filter_map(|s| s["last_pts_us"].as_i64())
        .max();
    match (first, last) {
        (Some(f), Some(l)) if l >= f => Duration::from_micros((l - f) as u64),
        _ => Duration::ZERO,
    }
}

/// What a killed recorder left, to be checked after recovery.
struct Killed {
    label: String,
    dir: PathBuf,
    /// Media time recorded before the kill (from the folder's appearance).
    recorded: Duration,
    on_disk: BTreeMap<String, u64>,
    /// Whether its spool folder was still there (then `recover` must finish it).
    spool_left: bool,
    /// Whether session.json was still there (then the manifest must have every config).
    session_left: bool,
    /// Whether the manifest had been written (then recovery may keep it as it is).
    manifest_left: bool,
}

impl Killed {
    fn capture(rig: &Rig, label: String, dir: PathBuf, recorded: Duration) -> Killed {
        Killed {
            on_disk: packets_on_disk(&dir),
            spool_left: dir.is_dir(),
            session_left: dir.join("session.json").is_file(),
            manifest_left: rig.output.join(format!("{}.json", id_of(&dir))).is_file(),
            label,
            dir,
            recorded,
        }
    }
}

/// Check one recording after `grabd recover`; returns the media it lost.
fn check_recovered(rig: &Rig, k: &Killed) -> Duration {
    let id = id_of(&k.dir);
    let mkv = rig.mkv_of(&k.dir);
    let manifest_path = rig.output.join(format!("{id}.json"));
    assert!(
        mkv.is_file() && manifest_path.is_file(),
        "{}: no final file + manifest for {id}; output holds {:?}\n{}",
        k.label,
        rig.output_names(),
        rig.log(&k.label)
    );
    let v = verify(&mkv);
    let manifest = read_json(&manifest_path);
    assert_eq!(manifest["recording_id"], id.as_str(), "{manifest}");
    if !k.manifest_left {
        assert_eq!(
            manifest["recovered"], k.spool_left,
            "{}: `recovered` must be true exactly when recover finished the recording: {manifest}",
            k.label
        );
    } else if !k.spool_left {
        assert_eq!(manifest["recovered"], false, "{}: {manifest}", k.label);
    }
    if k.session_left {
        for s in manifest["streams"].as_array().expect("streams") {
            assert!(
                !s["config"].is_null(),
                "{}: manifest lost a stream config: {manifest}",
                k.label
            );
        }
    }
    for (stream, &n) in &k.on_disk {
        let got = stream_packets(&v, stream);
        assert!(
            got >= n,
            "{}: stream {stream} has {got} packets after recovery, but the spool held {n} at the kill: {v}",
            k.label
        );
    }
    let kept = span(&v) + FRAME;
    assert!(
        kept + MAX_LOSS >= k.recorded,
        "{}: recovered {kept:?} of media after {:?} of recording (more than {MAX_LOSS:?} lost): {v}",
        k.label,
        k.recorded
    );
    let min_frames = (k.recorded.saturating_sub(MAX_LOSS).as_secs_f64() * 25.0) as u64;
    for stream in ["rgb", "depth"] {
        assert!(
            stream_packets(&v, stream) + 1 >= min_frames,
            "{}: {stream} holds too few frames for {:?}: {v}",
            k.label,
            k.recorded
        );
    }
    k.recorded.saturating_sub(kept)
}

/// A short description of what a dead recorder left behind.
fn describe_state(rig: &Rig, dir: &Path) -> String {
    let id = id_of(dir);
    let out = rig.output_names();
    let has = |n: &str| out.iter().any(|o| o == n);
    let spool = names_in(dir);
    let mut parts = Vec::new();
    if !dir.exists() {
        parts.push("spool folder gone".to_owned());
    } else {
        let n_parts = spool.iter().filter(|n| n.ends_with(".mkv.part")).count();
        let chunks: Vec<&String> = spool
            .iter()
            .filter(|n| n.ends_with(".mkv") && !n.contains(".mkv."))
            .collect();
        let tmps: Vec<&String> = spool.iter().filter(|n| n.ends_with(".tmp")).collect();
        parts.push(format!("{} chunks, {n_parts} parts", chunks.len()));
        if !tmps.is_empty() {
            parts.push(format!("spool tmp {tmps:?}"));
        }
        if !spool.iter().any(|n| n == "session.json") {
            parts.push("no session.json".into());
        }
    }
    if has(&format!("{id}.mkv.tmp")) {
        parts.push("final .mkv.tmp".into());
    }
    if has(&format!("{id}.mkv")) {
        parts.push("final .mkv".into());
    }
    if has(&format!("{id}.json")) {
        parts.push("manifest".into());
    }
    parts.join(", ")
}

/// Kill three recorders sharing one spool at 0.8 s (nothing merged yet: everything comes
/// from salvaged parts), 2.5 s and 3.3 s (finished chunks plus a part in progress); one
/// `grabd recover` finishes all three.
#[test]
fn sigkill_mid_chunk_recovers_finished_chunks_and_the_salvaged_part() {
    let rig = Rig::new();
    let offsets = [2.5, 0.8, 3.3];
    let mut known = Vec::new();
    let mut live = Vec::new();
    for (i, offset) in offsets.iter().enumerate() {
        let label = format!("rec{i}");
        let mut child = rig.record(&label, 60.0);
        let (dir, t0) = wait_new_dir(&rig.spool, &known, &mut child);
        known.push(dir.clone());
        live.push((label, child, dir, t0 + Duration::from_secs_f64(*offset), t0));
    }
    live.sort_by_key(|l| l.3);
    let mut killed = Vec::new();
    for (label, mut child, dir, at, t0) in live {
        sleep_until(at);
        let now = Instant::now();
        assert!(
            kill9(&mut child),
            "{label} exited before its kill\n{}",
            rig.log(&label)
        );
        let state = describe_state(&rig, &dir);
        eprintln!("{label}: killed {:?} after start; left: {state}", now - t0);
        killed.push(Killed::capture(&rig, label, dir, now - t0));
    }

    let r = rig.recover();
    assert_eq!(r.code, 0, "recover failed: {}", r.stderr);
    let mut printed: Vec<String> = r.lines().into_iter().map(str::to_owned).collect();
    printed.sort();
    let mut expected: Vec<String> = killed
        .iter()
        .map(|k| rig.mkv_of(&k.dir).display().to_string())
        .collect();
    expected.sort();
    assert_eq!(
        printed, expected,
        "recover must print each recovered file once"
    );

    let mut worst = Duration::ZERO;
    for k in &killed {
        let loss = check_recovered(&rig, k);
        eprintln!(
            "{}: recorded {:?}, lost {:?}, spool held {:?}",
            k.label, k.recorded, loss, k.on_disk
        );
        worst = worst.max(loss);
    }
    eprintln!("mid-chunk kills: worst loss {worst:?}");
    rig.assert_clean();
    assert_eq!(
        rig.output_names().len(),
        2 * killed.len(),
        "{:?}",
        rig.output_names()
    );
}

/// Where to kill while the finalizer works.
#[derive(Debug, Clone, Copy)]
enum FinalizeTrigger {
    /// The first chunk's merged file is being written (`00000.mkv.tmp` exists).
    MergingFirstChunk,
    /// The second chunk was just renamed into place (its parts may still exist).
    SecondChunkRenamed,
    /// The final file started growing (`<output>/<id>.mkv.tmp` exists).
    FinalFileGrowing,
}

/// SIGKILL the instant a finalizer step becomes visible on disk (polled in a tight loop).
#[test]
fn sigkill_during_chunk_finalize() {
    let mut worst = Duration::ZERO;
    for trigger in [
        FinalizeTrigger::MergingFirstChunk,
        FinalizeTrigger::SecondChunkRenamed,
        FinalizeTrigger::FinalFileGrowing,
    ] {
        let rig = Rig::new();
        let label = format!("{trigger:?}");
        let mut child = rig.record(&label, 60.0);
        let (dir, t0) = wait_new_dir(&rig.spool, &[], &mut child);
        let id = id_of(&dir);
        let (target, fallback) = match trigger {
            FinalizeTrigger::MergingFirstChunk => {
                (dir.join("00000.mkv.tmp"), Some(dir.join("00000.mkv")))
            }
            FinalizeTrigger::SecondChunkRenamed => (dir.join("00001.mkv"), None),
            FinalizeTrigger::FinalFileGrowing => (rig.output.join(format!("{id}.mkv.tmp")), None),
        };
        let deadline = t0 + Duration::from_secs(15);
        let caught = loop {
            if target.exists() {
                break true;
            }
            if fallback.as_ref().is_some_and(|f| f.exists()) {
                break false;
            }
            assert!(Instant::now() < deadline, "{label}: never saw {target:?}");
        };
        let now = Instant::now();
        assert!(
            kill9(&mut child),
            "{label}: exited early\n{}",
            rig.log(&label)
        );
        let state = describe_state(&rig, &dir);
        eprintln!(
            "{label}: killed {:?} after start ({}); left: {state}",
            now - t0,
            if caught {
                "caught the step in progress"
            } else {
                "missed the temporary file, killed right after its rename"
            }
        );
        let k = Killed::capture(&rig, label.clone(), dir, now - t0);
        let r = rig.recover();
        assert_eq!(r.code, 0, "{label}: recover failed: {}", r.stderr);
        assert_eq!(
            r.lines(),
            [rig.mkv_of(&k.dir).display().to_string()],
            "{label}"
        );
        let loss = check_recovered(&rig, &k);
        eprintln!("{label}: lost {loss:?}, spool held {:?}", k.on_disk);
        worst = worst.max(loss);
        rig.assert_clean();
    }
    eprintln!("finalize kills: worst loss {worst:?}");
}

/// When, after SIGTERM, the SIGKILL lands.
#[derive(Debug, Clone, Copy)]
enum StopKill {
    /// A fixed delay after SIGTERM.
    After(Duration),
    /// The instant the final file has its name (before its manifest).
    FinalRenamed,
    /// The instant the manifest exists (while the spool folder is being removed).
    ManifestWritten,
}

/// One run of the stop/concat sweep: SIGTERM at `term_at`, then SIGKILL per `kill`.
fn stop_then_kill(term_at: Duration, kill: StopKill) -> (String, Duration) {
    let rig = Rig::new();
    let label = format!("{kill:?}");
    let mut child = rig.record(&label, 60.0);
    let (dir, t0) = wait_new_dir(&rig.spool, &[], &mut child);
    let id = id_of(&dir);
    sleep_until(t0 + term_at);
    let term = Instant::now();
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let wait_for = |path: PathBuf| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !path.exists() && Instant::now() < deadline {
            std::hint::spin_loop();
        }
    };
    match kill {
        StopKill::After(delay) => std::thread::sleep(delay),
        StopKill::FinalRenamed => wait_for(rig.output.join(format!("{id}.mkv"))),
        StopKill::ManifestWritten => wait_for(rig.output.join(format!("{id}.json"))),
    }
    let was_running = kill9(&mut child);
    let state = if was_running {
        describe_state(&rig, &dir)
    } else {
        format!("exited by itself ({})", describe_state(&rig, &dir))
    };
    let k = Killed::capture(&rig, label.clone(), dir, term - t0);
    let r = rig.recover();
    assert_eq!(r.code, 0, "{label}: recover failed: {}", r.stderr);
    if k.spool_left {
        assert_eq!(
            r.lines(),
            [rig.mkv_of(&k.dir).display().to_string()],
            "{label}"
        );
    } else {
        assert!(
            r.lines().is_empty(),
            "{label}: nothing to recover: {}",
            r.stdout
        );
    }
    let loss = check_recovered(&rig, &k);
    rig.assert_clean();
    assert_eq!(
        rig.output_names().len(),
        2,
        "{label}: {:?}",
        rig.output_names()
    );
    (state, loss)
}

/// SIGTERM starts the stop (last chunk, final file, rename, manifest, spool removal);
/// SIGKILL lands at delays spread over the measured stop time, and the instant the
/// final file is renamed and the manifest written.
#[test]
fn sigkill_during_stop_and_concat() {
    let term_at = Duration::from_millis(1500);
    // Baseline: a clean stop, timed.
    let rig = Rig::new();
    let mut child = rig.record("baseline", 60.0);
    let (dir, t0) = wait_new_dir(&rig.spool, &[], &mut child);
    sleep_until(t0 + term_at);
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let term = Instant::now();
    let status = child.wait().expect("wait");
    let stop_time = term.elapsed();
    assert!(
        status.success(),
        "clean stop failed\n{}",
        rig.log("baseline")
    );
    let v = verify(&rig.mkv_of(&dir));
    assert!(span(&v) + FRAME + MAX_LOSS >= term_at, "{v}");
    assert!(rig.recover().lines().is_empty());
    eprintln!("a clean stop takes {stop_time:?}");

    let mut kills: Vec<StopKill> = (0..=8)
        .map(|i| StopKill::After(stop_time * i / 8))
        .collect();
    kills.extend([
        StopKill::After(Duration::from_millis(2)),
        StopKill::FinalRenamed,
        StopKill::ManifestWritten,
    ]);
    // Three lanes at a time.
    let mut results = Vec::new();
    for lane in kills.chunks(3) {
        let handles: Vec<_> = lane
            .iter()
            .map(|&k| std::thread::spawn(move || (k, stop_then_kill(term_at, k))))
            .collect();
        for h in handles {
            results.push(h.join().expect("stop/kill run panicked"));
        }
    }
    let mut worst = Duration::ZERO;
    for (kill, (state, loss)) in &results {
        eprintln!("SIGKILL {kill:?} after SIGTERM: {state}; lost {loss:?}");
        worst = worst.max(*loss);
    }
    eprintln!("stop/concat kills: worst loss {worst:?}");
}

/// A recorder killed the moment its folder exists has recorded nothing or almost
/// nothing: recovery leaves either nothing at all or a playable file.
#[test]
fn sigkill_right_after_start_leaves_nothing_or_a_playable_file() {
    let rig = Rig::new();
    let mut child = rig.record("early", 60.0);
    let (dir, t0) = wait_new_dir(&rig.spool, &[], &mut child);
    assert!(kill9(&mut child));
    let k = Killed::capture(&rig, "early".into(), dir, t0.elapsed());
    let r = rig.recover();
    assert_eq!(r.code, 0, "{}", r.stderr);
    if r.lines().is_empty() {
        assert!(
            rig.output_names().is_empty(),
            "a recording without frames must leave nothing: {:?}",
            rig.output_names()
        );
        eprintln!("killed before the first frame: nothing left");
    } else {
        check_recovered(&rig, &k);
        eprintln!("killed after {:?}: a playable file", k.recorded);
    }
    rig.assert_clean();
}

#[test]
fn recover_with_a_missing_or_empty_spool_does_nothing() {
    let rig = Rig::new();
    let r = rig.recover();
    assert_eq!(r.code, 0, "missing spool: {}", r.stderr);
    assert!(r.lines().is_empty(), "{}", r.stdout);
    assert!(rig.output_names().is_empty());
    assert!(!rig.spool.exists(), "recover must not create the spool");

    fs::create_dir(&rig.spool).unwrap();
    let r = rig.recover();
    assert_eq!(r.code, 0, "empty spool: {}", r.stderr);
    assert!(r.lines().is_empty(), "{}", r.stdout);
    assert!(rig.output_names().is_empty(), "{:?}", rig.output_names());
    assert!(rig.spool_names().is_empty());
}

/// Name → (size, sha256, mtime) of every file in a folder.
fn fingerprint(dir: &Path) -> BTreeMap<String, (u64, String, std::time::SystemTime)> {
    names_in(dir)
        .into_iter()
        .map(|n| {
            let path = dir.join(&n);
            let meta = fs::metadata(&path).unwrap();
            let sha = hex(&Sha256::digest(fs::read(&path).unwrap()));
            (n, (meta.len(), sha, meta.modified().unwrap()))
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A recording folder as grabd creates it (with its marker).
fn create_marked_dir(dir: &Path) {
    fs::create_dir(dir).unwrap();
    fs::write(dir.join(recording::spool::MARKER_FILE), b"").unwrap();
}

/// Kill a recorder at `at` into its recording; returns what it left.
/// A recorder killed 2.85 s in, with its rgb part in progress and that part's packets
/// as `(position, size)` read back by ffprobe: the material of the damage tests.
fn crash_with_rgb_part(rig: &Rig) -> (Killed, PathBuf, Vec<(u64, u64)>) {
    let rgb_part = |dir: &Path| {
        names_in(dir)
            .into_iter()
            .find(|n| n.ends_with(".rgb.mkv.part"))
            .map(|n| dir.join(n))
    };
    // On a busy machine the encoder may lag its chunk: wait until the part in progress
    // holds a cluster of packets (its header alone is ~600 bytes, half a chunk ~5 kB).
    let holds_packets = |dir: &Path| {
        rgb_part(dir).is_some_and(|p| fs::metadata(p).is_ok_and(|m| m.len() >= 2 << 10))
    };
    let k = crash_when(rig, "damaged", Duration::from_millis(2850), holds_packets);
    let part = rgb_part(&k.dir).expect("an rgb part in progress");
    let probe = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "packet=size,pos",
            "-of",
            "csv=p=0",
        ])
        .arg(&part)
        .output()
        .expect("ffprobe");
    // ffprobe prints a packet's size before its position, whatever the order asked.
    let packets = String::from_utf8_lossy(&probe.stdout)
        .lines()
        .filter_map(|l| {
            let (size, pos) = l.trim_end_matches(',').split_once(',')?;
            Some((pos.parse().ok()?, size.parse().ok()?))
        })
        .collect();
    (k, part, packets)
}

fn crash(rig: &Rig, label: &str, at: Duration) -> Killed {
    crash_when(rig, label, at, |_| true)
}

/// [`crash`], at `at` or later: once `ready` holds for the recording folder (within 20 s).
fn crash_when(rig: &Rig, label: &str, at: Duration, ready: impl Fn(&Path) -> bool) -> Killed {
    let mut child = rig.record(label, 60.0);
    let known = rig.recording_dirs();
    let (dir, t0) = wait_new_dir(&rig.spool, &known, &mut child);
    sleep_until(t0 + at);
    while !ready(&dir) {
        assert!(
            t0.elapsed() < at + Duration::from_secs(20),
            "{label}: never ready"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let now = Instant::now();
    assert!(
        kill9(&mut child),
        "{label} exited early\n{}",
        rig.log(label)
    );
    Killed::capture(rig, label.into(), dir, now - t0)
}

#[test]
fn recover_is_idempotent() {
    let rig = Rig::new();
    let k = crash(&rig, "crash", Duration::from_millis(1600));
    let first = rig.recover();
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert_eq!(first.lines(), [rig.mkv_of(&k.dir).display().to_string()]);
    check_recovered(&rig, &k);
    let before = fingerprint(&rig.output);
    std::thread::sleep(Duration::from_millis(20));

    let second = rig.recover();
    assert_eq!(second.code, 0, "{}", second.stderr);
    assert!(
        second.lines().is_empty(),
        "second recover printed: {}",
        second.stdout
    );
    assert_eq!(
        fingerprint(&rig.output),
        before,
        "second recover changed the output"
    );
    assert!(rig.recording_dirs().is_empty());
}

/// `grabd recover` run (repeatedly) while a recorder is live must leave its folder
/// alone; the recording then finishes normally with nothing missing.
#[test]
fn recover_skips_a_recording_held_by_a_live_recorder() {
    let rig = Rig::new();
    let duration = 3.5;
    let mut child = rig.record("live", duration);
    let (dir, t0) = wait_new_dir(&rig.spool, &[], &mut child);
    let id = id_of(&dir);
    let mut runs = 0;
    for at_ms in [100u64, 700, 1300, 2100, 2700] {
        sleep_until(t0 + Duration::from_millis(at_ms));
        let r = rig.recover();
        runs += 1;
        assert_eq!(r.code, 0, "recover during recording: {}", r.stderr);
        assert!(
            r.lines().is_empty(),
            "recover touched a live recording: {}",
            r.stdout
        );
        assert!(dir.join("session.json").is_file(), "session.json removed");
        let out = rig.output_names();
        assert!(
            !out.contains(&format!("{id}.mkv")) && !out.contains(&format!("{id}.json")),
            "recover finished a live recording: {out:?}"
        );
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{}", rig.log("live"));
    let stdout = fs::read_to_string(rig.root.join("live.out")).unwrap();
    let mkv = rig.mkv_of(&dir);
    assert_eq!(
        stdout.lines().last(),
        Some(mkv.display().to_string().as_str())
    );
    let v = verify(&mkv);
    let manifest = read_json(&rig.output.join(format!("{id}.json")));
    assert_eq!(manifest["recovered"], false, "{manifest}");
    let d = manifest["duration_s"].as_f64().unwrap();
    assert!(
        (d - duration).abs() < 0.3,
        "duration {d} for {duration} s: {manifest}"
    );
    for stream in ["rgb", "depth"] {
        let n = frames_accounted(&v, &manifest, stream);
        assert!(
            (duration * 25.0 - n as f64).abs() <= 3.0,
            "{stream}: {n} frames in {duration} s: {v}"
        );
    }
    rig.assert_clean();
    eprintln!("{runs} recover runs during a live recording left it alone");
}

#[test]
fn recover_removes_stale_tmp_files() {
    let rig = Rig::new();
    let k = crash(&rig, "crash", Duration::from_millis(1600));
    let id = id_of(&k.dir);
    // Leftovers of writes that never completed, as a power cut leaves them.
    fs::write(k.dir.join("00007.mkv.tmp"), b"half a chunk").unwrap();
    fs::write(k.dir.join("session.json.tmp"), b"{\"recording_").unwrap();
    fs::write(
        rig.output.join(format!("{id}.mkv.tmp")),
        b"half a final file",
    )
    .unwrap();
    fs::write(rig.output.join(format!("{id}.json.tmp")), b"{\"half").unwrap();

    let r = rig.recover();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.lines(), [rig.mkv_of(&k.dir).display().to_string()]);
    check_recovered(&rig, &k);
    rig.assert_clean();
    assert_eq!(
        rig.output_names(),
        [format!("{id}.json"), format!("{id}.mkv")],
        "only the final file and its manifest may remain"
    );
}

/// Recording folders without a single frame (empty; session only; parts with a header
/// but no complete cluster, or empty; only stale temporary files) leave no file, no
/// manifest and no folder.
#[test]
fn recover_leaves_nothing_for_recordings_without_frames() {
    let rig = Rig::new();
    // A real Matroska header to cut short: the start of a short recording's file.
    let scratch = Rig::new();
    let mut child = scratch.record("short", 0.4);
    assert!(child.wait().unwrap().success(), "{}", scratch.log("short"));
    let mkv = fs::read_dir(&scratch.output)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "mkv"))
        .expect("a short recording");
    let header = fs::read(&mkv).unwrap()[..200].to_vec();

    fs::create_dir_all(&rig.spool).unwrap();
    let session = |dir: &Path| {
        recording::manifest::Session {
            recording_id: id_of(dir),
            streams: Vec::new(),
            software_version: "test".into(),
            stopped_unix_us: None,
            clock_step_us: None,
            marks_us: Vec::new(),
            stats: Vec::new(),
        }
        .write(dir)
        .unwrap();
    };
    // A power cut between creating a folder and marking it as grabd's.
    let empty = rig.spool.join("2026-01-01T00-00-00.000Z");
    fs::create_dir(&empty).unwrap();

    let marked_only = rig.spool.join("2026-01-01T00-00-00.500Z");
    create_marked_dir(&marked_only);

    let session_only = rig.spool.join("2026-01-01T00-00-01.000Z");
    create_marked_dir(&session_only);
    session(&session_only);

    let header_only = rig.spool.join("2026-01-01T00-00-02.000Z");
    create_marked_dir(&header_only);
    session(&header_only);
    fs::write(header_only.join("00000.rgb.mkv.part"), &header).unwrap();
    fs::write(header_only.join("00000.depth.mkv.part"), b"").unwrap();
    fs::write(header_only.join("00000.imu.mkv.part"), &header[..40]).unwrap();

    let tmp_only = rig.spool.join("2026-01-01T00-00-03.000Z");
    create_marked_dir(&tmp_only);
    fs::write(tmp_only.join("00000.mkv.tmp"), b"never finished").unwrap();
    fs::write(tmp_only.join("session.json.tmp"), b"{").unwrap();

    let r = rig.recover();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(
        r.lines().is_empty(),
        "nothing to recover, got: {}",
        r.stdout
    );
    assert!(
        rig.output_names().is_empty(),
        "a recording without frames must leave no file and no manifest: {:?}",
        rig.output_names()
    );
    assert!(
        rig.spool_names().is_empty(),
        "frameless recording folders must be removed: {:?}",
        rig.spool_names()
    );
}

/// A recorder killed while removing its spool folder (after the final file and the
/// manifest are durable; `remove_dir_all` had already unlinked session.json) must not
/// lose what the manifest said: recovery may finish the folder, but the manifest must
/// keep every stream's config and drop count.
///
/// Regression test: failed on 0f29c43 (recovery rewrites a complete manifest from a spool
/// folder whose session.json is gone, dropping every stream config (recovery.rs
/// finish_recording_dir)).
#[test]
fn recover_keeps_the_manifest_of_a_recording_killed_during_spool_cleanup() {
    let rig = Rig::new();
    let mut child = rig.record("done", 2.2);
    assert!(child.wait().unwrap().success(), "{}", rig.log("done"));
    let stdout = fs::read_to_string(rig.root.join("done.out")).unwrap();
    let mkv = PathBuf::from(stdout.lines().last().expect("a path"));
    let id = mkv.file_stem().unwrap().to_string_lossy().into_owned();
    let manifest_path = rig.output.join(format!("{id}.json"));
    let before = read_json(&manifest_path);

    // The state a SIGKILL inside remove_dir_all leaves: some chunks and the lock, no
    // session.json (it is unlinked in directory order, here first).
    let dir = rig.spool.join(&id);
    create_marked_dir(&dir);
    fs::copy(&mkv, dir.join("00001.mkv")).unwrap();

    let r = rig.recover();
    assert_eq!(r.code, 0, "{}", r.stderr);
    verify(&mkv);
    let after = read_json(&manifest_path);
    for (b, a) in before["streams"]
        .as_array()
        .unwrap()
        .iter()
        .zip(after["streams"].as_array().unwrap())
    {
        assert_eq!(a["config"], b["config"], "config lost:\n{before}\n{after}");
        assert_eq!(a["frames_dropped"], b["frames_dropped"], "{after}");
    }
    rig.assert_clean();
}

/// The state the finalizer leaves when the last chunk's merge fails (seen with ENOSPC on
/// a full card): the final file renamed into place without that chunk, its parts kept
/// "for recovery". Recovery must not then delete those parts while their packets are in
/// no durable output.
///
/// Regression test: failed on 0f29c43 (recover deletes parts whose data is not in the
/// existing final file (recovery.rs finish_recording_dir trusts `mkv.exists()`;
/// finalizer.rs persists the final file after a failed chunk merge)).
#[test]
fn recover_never_deletes_parts_missing_from_an_existing_final_file() {
    let rig = Rig::new();
    let k = crash(&rig, "crash", Duration::from_millis(2850));
    let id = id_of(&k.dir);
    let parts: Vec<String> = names_in(&k.dir)
        .into_iter()
        .filter(|n| n.ends_with(".mkv.part"))
        .collect();
    assert!(
        !parts.is_empty(),
        "no part in progress: {:?}",
        names_in(&k.dir)
    );
    // Build the final file from the merged chunks only, as the finalizer does after a
    // failed merge of the last chunk.
    let aside = rig.root.join("aside");
    fs::create_dir(&aside).unwrap();
    for p in &parts {
        fs::rename(k.dir.join(p), aside.join(p)).unwrap();
    }
    let _ = fs::remove_file(rig.output.join(format!("{id}.mkv.tmp")));
    recording::merge_recording_chunks(
        &k.dir,
        &rig.mkv_of(&k.dir),
        &[],
        &[(recording::media::TAG_RECORDING_ID.to_owned(), id.clone())],
        &[],
        recording::MuxerSettings::default(),
        recording::ReadMode::Strict,
    )
    .unwrap()
    .expect("chunks to merge");
    for p in &parts {
        fs::rename(aside.join(p), k.dir.join(p)).unwrap();
    }

    let r = rig.recover();
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = verify(&rig.mkv_of(&k.dir));
    let still_there: Vec<String> = names_in(&k.dir);
    for (stream, &n) in &k.on_disk {
        let got = stream_packets(&v, stream);
        assert!(
            got >= n,
            "stream {stream}: the final file holds {got} packets, the spool held {n}, and \
             recover left {still_there:?} of it"
        );
    }
}

/// `recover` running in a loop (as a boot script racing a button press would) while
/// recordings start and stop: every recording must start, finish its file and leave no
/// folder; recover must never fail because a folder came or went under it.
///
/// Regression test: failed on 0f29c43 (recover can delete a just-created recording folder
/// before its recorder locks it (session.rs create_unique_dir → RecordingLock::try_acquire
/// window), re-creates `.lock` in a folder being removed (ENOTEMPTY at stop), and aborts on
/// a folder that vanished (recovery.rs recover_spool `?`)).
#[test]
fn recover_racing_recordings_that_start_and_stop() {
    use grabd::recording::{Frame, Recording, StreamConfig, VideoStreamConfig, WriterOptions};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let output = tmp.path().join("output");
    fs::create_dir_all(&spool).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let recoverer = {
        let (spool, output, stop) = (spool.clone(), output.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut errors = Vec::new();
            let mut runs = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match recording::recover_spool(&spool, &output, Default::default()) {
                    Ok(report) => {
                        for (dir, why) in report.failed {
                            errors.push(format!("failed {}: {why}", dir.display()));
                        }
                        for f in report.recovered {
                            errors.push(format!("finished a live recording {}", f.mkv.display()));
                        }
                    }
                    Err(e) => errors.push(format!("recover_spool: {e}")),
                }
                runs += 1;
            }
            (runs, errors)
        })
    };
    let mut problems = Vec::new();
    let rounds = 30;
    for i in 0..rounds {
        let config = VideoStreamConfig::new(64, 48, 25.0)
            .unwrap()
            .with_codec("ffv1", "gray16le", "gray16le")
            .unwrap();
        let streams = vec![("v".to_owned(), StreamConfig::Video(config))];
        let rec = match Recording::start(&spool, &output, streams, WriterOptions::default()) {
            Ok(rec) => rec,
            Err(e) => {
                problems.push(format!("round {i}: start failed: {e}"));
                continue;
            }
        };
        let sender = rec.sender("v").unwrap();
        let t = grabd::clock::monotonic_us();
        for n in 0..3 {
            sender.push(Frame::new(t + n * 40_000, vec![0u8; 64 * 48 * 2]));
        }
        let dir = rec.spool_dir().to_owned();
        match rec.stop() {
            Ok(stopped) if stopped.finished.is_some() => {}
            Ok(_) => problems.push(format!("round {i}: no final file")),
            Err(e) => problems.push(format!("round {i}: stop failed: {e}")),
        }
        if dir.exists() {
            problems.push(format!(
                "round {i}: spool folder left: {:?}",
                names_in(&dir)
            ));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (runs, errors) = recoverer.join().unwrap();
    eprintln!("{runs} recover runs raced {rounds} recordings");
    problems.extend(errors);
    assert!(
        problems.is_empty(),
        "{} problems, e.g.:\n{}",
        problems.len(),
        problems
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A failing card can leave blocks it never wrote inside a part (its size committed,
/// its data not: zeros). Recovery must keep what decodes before the damage and nothing
/// from the damage on, so the recovered file decodes with zero errors.
#[test]
fn recover_salvages_parts_only_up_to_damage() {
    let rig = Rig::new();
    let (k, part, packets) = crash_with_rgb_part(&rig);
    assert!(
        packets.len() >= 4,
        "too few packets in {part:?}: {packets:?}"
    );
    // Zero the payload of the second packet of the part: what follows it can only be
    // decoded from it, so all of it must go.
    let (pos, size) = packets[1];
    let mut bytes = fs::read(&part).unwrap();
    for b in &mut bytes[(pos as usize + 4)..(pos + size) as usize] {
        *b = 0;
    }
    fs::write(&part, &bytes).unwrap();
    let in_chunks: u64 = names_in(&k.dir)
        .iter()
        .filter(|n| n.ends_with(".mkv") && !n.contains(".part"))
        .map(|n| {
            probe::inspect(&k.dir.join(n), false, None)
                .unwrap()
                .track("rgb")
                .map_or(0, |t| t.packets)
        })
        .sum();

    let r = rig.recover();
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = verify(&rig.mkv_of(&k.dir));
    assert_eq!(v["decode_errors"], 0, "{v}");
    let rgb = stream_packets(&v, "rgb");
    assert!(
        rgb > in_chunks && rgb < in_chunks + packets.len() as u64,
        "rgb: {rgb} packets recovered; chunks held {in_chunks}, the damaged part {} (damage at \
         its 2nd)",
        packets.len()
    );
}

/// Issue 12 item 2: recovery claims only the folders grabd created (a recording id
/// holding grabd's marker) and deletes only files whose names grabd makes; folders such
/// as fsck's `lost+found`, a user's photos, a folder merely named like a recording and
/// foreign files inside a recording folder stay, with one warning for the spool.
///
/// Regression test: failed on 377863d (recover removed `photos` and `lost+found` as
/// "recording holds no frame", and every `*.tmp`).
#[test]
fn recover_leaves_what_grabd_did_not_make() {
    let rig = Rig::new();
    let k = crash(&rig, "crash", Duration::from_millis(1600));
    let photos = rig.spool.join("photos");
    fs::create_dir(&photos).unwrap();
    fs::write(photos.join("a.jpg"), b"x").unwrap();
    fs::create_dir(rig.spool.join("lost+found")).unwrap();
    fs::write(rig.spool.join("notes.tmp"), b"mine").unwrap();
    let lookalike = rig.spool.join("2026-01-01T00-00-00.000Z");
    fs::create_dir(&lookalike).unwrap();
    fs::write(lookalike.join("00000.rgb.mkv.part"), b"not grabd's").unwrap();
    fs::write(lookalike.join("00000.mkv.tmp"), b"not grabd's").unwrap();
    fs::write(k.dir.join("keep.txt"), b"mine").unwrap();
    fs::write(k.dir.join("scratch.tmp"), b"mine").unwrap();

    let r = rig.recover();
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.lines(), [rig.mkv_of(&k.dir).display().to_string()]);
    check_recovered(&rig, &k);
    assert_eq!(fs::read(photos.join("a.jpg")).unwrap(), b"x");
    assert!(rig.spool.join("lost+found").is_dir());
    assert_eq!(fs::read(rig.spool.join("notes.tmp")).unwrap(), b"mine");
    assert_eq!(
        names_in(&lookalike),
        ["00000.mkv.tmp", "00000.rgb.mkv.part"]
    );
    assert_eq!(
        names_in(&k.dir),
        [recording::spool::MARKER_FILE, "keep.txt", "scratch.tmp"],
        "only grabd's files may go from a recording folder"
    );
    let warnings = r
        .stderr
        .lines()
        .filter(|l| l.contains("left entries grabd did not make in the spool"))
        .count();
    assert_eq!(warnings, 1, "{}", r.stderr);

    // Once the foreign files are gone the folder is removed; nothing else changes.
    fs::remove_file(k.dir.join("keep.txt")).unwrap();
    fs::remove_file(k.dir.join("scratch.tmp")).unwrap();
    let again = rig.recover();
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert!(!k.dir.exists());
    assert_eq!(
        names_in(&rig.spool),
        [
            "2026-01-01T00-00-00.000Z",
            "lost+found",
            "notes.tmp",
            "photos"
        ]
    );
}

/// Issue 12 item 2: with the output folder inside the spool (`--output S/out`), a
/// `recover` during a recording must leave the output, and the live final file growing
/// in it, alone.
///
/// Regression test: failed on 377863d (recover removed `S/out` with the live
/// `<id>.mkv.tmp`, and the recording then failed).
#[test]
fn recover_during_a_recording_leaves_an_output_inside_the_spool() {
    let rig = Rig::new();
    let output = rig.spool.join("out");
    let err = fs::File::create(rig.root.join("live.err")).unwrap();
    let mut child = rig
        .record_cmd(&rig.config, &rig.spool, &output, "3.5")
        .stdout(std::process::Stdio::piped())
        .stderr(err)
        .spawn()
        .unwrap();
    let (dir, t0) = wait_new_dir(&rig.spool, std::slice::from_ref(&output), &mut child);
    for at_ms in [1500u64, 2300, 3000] {
        sleep_until(t0 + Duration::from_millis(at_ms));
        let r = grabd([
            "recover".as_ref(),
            "--spool".as_ref(),
            rig.spool.as_os_str(),
            "--output".as_ref(),
            output.as_os_str(),
        ]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(
            output.is_dir(),
            "recover removed the output inside the spool"
        );
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", rig.log("live"));
    let mkv = output.join(format!("{}.mkv", id_of(&dir)));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().last(),
        Some(mkv.display().to_string().as_str())
    );
    let v = verify(&mkv);
    let manifest = read_json(&mkv.with_extension("json"));
    assert!(frames_accounted(&v, &manifest, "rgb") >= 80, "{v}");
}

/// Every file (name, bytes) of some folders, to put them back as they were.
struct Snapshot(Vec<(PathBuf, Vec<NamedBytes>)>);

type NamedBytes = (String, Vec<u8>);

impl Snapshot {
    fn take(dirs: &[&Path]) -> Snapshot {
        Snapshot(
            dirs.iter()
                .map(|dir| {
                    let files = names_in(dir)
                        .into_iter()
                        .map(|n| (n.clone(), fs::read(dir.join(&n)).unwrap()))
                        .collect();
                    (dir.to_path_buf(), files)
                })
                .collect(),
        )
    }

    fn restore(&self) {
        for (dir, files) in &self.0 {
            let _ = fs::remove_dir_all(dir);
            fs::create_dir_all(dir).unwrap();
            for (name, bytes) in files {
                fs::write(dir.join(name), bytes).unwrap();
            }
        }
    }
}

/// The parts (file names) a recording folder holds.
fn parts_in(dir: &Path) -> Vec<String> {
    names_in(dir)
        .into_iter()
        .filter(|n| n.ends_with(".mkv.part"))
        .collect()
}

/// Issue 12 item 3: a part that its chunk does not hold (a failed close, an encoder that
/// hung or panicked at stop, a part that came after its chunk was merged) is merged into
/// the final file by recovery, never deleted because its chunk exists.
///
/// Regression test: failed on 377863d (recovery deleted every part whose chunk file
/// existed).
#[test]
fn recover_merges_a_part_its_chunk_lacks() {
    let rig = Rig::new();
    let k = crash(&rig, "crash", Duration::from_millis(2850));
    let parts = parts_in(&k.dir);
    assert!(
        parts.iter().any(|p| p.ends_with(".imu.mkv.part")),
        "no imu part in progress: {parts:?}"
    );
    // Merge each chunk without its imu part, as the finalizer does when that part never
    // reached it, and delete what the merge consumed.
    let chunks: std::collections::BTreeSet<String> = parts
        .iter()
        .map(|p| p.split('.').next().unwrap().to_owned())
        .collect();
    for chunk in chunks {
        let inputs: Vec<PathBuf> = parts
            .iter()
            .filter(|p| p.starts_with(&format!("{chunk}.")) && !p.contains(".imu."))
            .map(|p| k.dir.join(p))
            .collect();
        let merged = recording::merge_stream_files(
            &inputs,
            &k.dir.join(format!("{chunk}.mkv")),
            recording::ReadMode::Salvage,
            recording::MuxerSettings::default(),
        )
        .unwrap();
        assert_eq!(merged.consumed, inputs);
        for p in &merged.consumed {
            fs::remove_file(p).unwrap();
        }
    }
    let r = rig.recover();
    assert_eq!(r.code, 0, "{}", r.stderr);
    check_recovered(&rig, &k);
    rig.assert_clean();
}

/// Issue 12 item 3, fault injection: recovery under a low RLIMIT_NOFILE, where opening
/// a part fails with EMFILE. Whatever the limit, no part may be deleted unread: either
/// recover finishes with every packet, or it fails and a later recover (with the normal
/// limit) gets every packet.
///
/// Regression test: failed on 377863d (salvage skipped a part it could not open, on any
/// error, and its caller then deleted all the chunk's parts).
#[test]
fn recover_short_of_file_descriptors_deletes_no_unread_part() {
    let rig = Rig::new();
    let k = crash(&rig, "crash", Duration::from_millis(2850));
    assert!(!parts_in(&k.dir).is_empty());
    let before = Snapshot::take(&[&k.dir, &rig.output]);
    let mut failed_runs = 0;
    for limit in 4..=14 {
        before.restore();
        let limited: Run = std::process::Command::new("prlimit")
            .arg(format!("--nofile={limit}:{limit}"))
            .arg(cli::BIN)
            .arg("recover")
            .arg("--spool")
            .arg(&rig.spool)
            .arg("--output")
            .arg(&rig.output)
            .output()
            .expect("prlimit (util-linux)")
            .into();
        if limited.code != 0 {
            failed_runs += 1;
            let r = rig.recover();
            assert_eq!(r.code, 0, "limit {limit}, then: {}", r.stderr);
        }
        let v = verify(&rig.mkv_of(&k.dir));
        for (stream, &n) in &k.on_disk {
            let got = stream_packets(&v, stream);
            assert!(
                got >= n,
                "limit {limit} (recover exit {}): {stream} has {got} packets, the spool held \
                 {n}\n{}",
                limited.code,
                limited.stderr
            );
        }
        rig.assert_clean();
    }
    assert!(
        failed_runs > 0,
        "no limit made recover fail: no fault injected"
    );
}

/// Issue 12 item 7: a part overwritten at 30, 50 or 70 % with bytes no encoder wrote is
/// salvaged only as far as it decodes without concealment: the recovered file decodes
/// with zero errors even with error detection on.
///
/// Regression test: failed on 377863d (salvage kept frames the decoder concealed).
#[test]
fn recover_salvages_no_concealed_frame() {
    for fraction in [0.3, 0.5, 0.7] {
        let rig = Rig::new();
        let (k, part, packets) = crash_with_rgb_part(&rig);
        let mut bytes = fs::read(&part).unwrap();
        let target = (bytes.len() as f64 * fraction) as u64;
        let (pos, size) = packets
            .iter()
            .copied()
            .filter(|&(_, size)| size >= 40)
            .min_by_key(|&(pos, _)| pos.abs_diff(target))
            .expect("an rgb packet");
        let start = (pos + size / 3) as usize;
        for (i, b) in bytes[start..start + (size / 3) as usize]
            .iter_mut()
            .enumerate()
        {
            *b = (i as u8).wrapping_mul(151).wrapping_add(17);
        }
        fs::write(&part, &bytes).unwrap();

        let r = rig.recover();
        assert_eq!(r.code, 0, "{fraction}: {}", r.stderr);
        let v = verify(&rig.mkv_of(&k.dir));
        assert_eq!(v["decode_errors"], 0, "{fraction}: {v}");
    }
}
