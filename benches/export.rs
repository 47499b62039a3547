//! Export speed (issue 17 item 4), each against a standard tool on the same file,
//! measured side by side in one run:
//!
//! - `grabd export --format euroc` of a W1 recording (the built-in reference device:
//!   rgb 1280x800@25 H.264, depth FFV1, IMU) against `ffmpeg -i FILE %06d.png` on its
//!   rgb track: frames/s of each and their ratio (export is bounded by decode and PNG
//!   encode);
//! - `grabd export --format mcap` against `cp` of the same MKV: MB/s of the MKV (the
//!   H.264 is a packet copy, so it should run near disk speed). W1's synthetic frames
//!   compress to almost nothing, so this runs on an H.264 file of a real camera's size
//!   (16 Mbit/s, made by ffmpeg). grabd syncs what it wrote, so `cp` is timed both
//!   alone and followed by `sync FILE` (an fsync of the copy).
//!
//! ```text
//! cargo bench --bench export -- [--seconds N] [--reps N] [--mcap-seconds N]
//! ```
//!
//! Records N seconds of W1 (default 10) with `grabd record` and makes the H.264 file
//! (default 120 s, 240 MB), then runs each group's commands `reps` times (default 3),
//! alternating within a rep, and takes medians. Frames are counted from what was
//! written, not from either tool's report. Writes `target/bench/export.json` and
//! `target/bench/export.md` and prints the tables. Not part of CI (it records in real
//! time and decodes a few hundred HD frames).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

const GRABD_BIN: &str = env!("CARGO_BIN_EXE_grabd");

/// A run of one command into a fresh folder, returning what it produced (frames, or
/// bytes).
type Go = Box<dyn Fn(&Path) -> Result<u64>>;

/// One command of a group: its name in the table, its run and its timings.
struct Run {
    name: &'static str,
    go: Go,
    walls: Vec<f64>,
    produced: u64,
}

impl Run {
    fn new(name: &'static str, go: impl Fn(&Path) -> Result<u64> + 'static) -> Run {
        Run {
            name,
            go: Box::new(go),
            walls: vec![],
            produced: 0,
        }
    }

    fn median_wall(&self) -> f64 {
        let mut v = self.walls.clone();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }
}

/// Run every command of `runs` once per rep, alternating, each into a new folder of
/// `scratch` removed after it.
fn time_interleaved(scratch: &Path, group: &str, reps: usize, runs: &mut [Run]) -> Result<()> {
    for rep in 0..reps {
        for (k, run) in runs.iter_mut().enumerate() {
            let out = scratch.join(format!("{group}-{k}-{rep}"));
            let t = Instant::now();
            run.produced = (run.go)(&out).with_context(|| run.name)?;
            run.walls.push(t.elapsed().as_secs_f64());
            std::fs::remove_dir_all(&out)?;
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str, default: f64| -> Result<f64> {
        match args.iter().position(|a| a == flag) {
            Some(i) => args
                .get(i + 1)
                .context(format!("{flag} needs a value"))?
                .parse()
                .context(format!("{flag}: not a number")),
            None => Ok(default),
        }
    };
    let seconds = value("--seconds", 10.0)?;
    let reps = (value("--reps", 3.0)? as usize).max(1);
    let mcap_seconds = value("--mcap-seconds", 120.0)?;
    let scratch = tempfile::tempdir()?;
    let mkv = record_w1(scratch.path(), seconds)?;
    let size = std::fs::metadata(&mkv)?.len();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());

    let mut euroc = vec![
        Run::new("grabd export --format euroc (grey PNG + IMU CSV)", {
            let mkv = mkv.clone();
            move |out| {
                run_ok(&mut grabd_export(&mkv, "euroc", out))?;
                count_pngs(&out.join("mav0/cam0/data"))
            }
        }),
        Run::new("ffmpeg -i FILE -map 0:v:0 -pix_fmt gray %06d.png", {
            let mkv = mkv.clone();
            move |out| ffmpeg_pngs(&mkv, out, true)
        }),
        Run::new("ffmpeg -i FILE -map 0:v:0 %06d.png (RGB PNG)", {
            let mkv = mkv.clone();
            move |out| ffmpeg_pngs(&mkv, out, false)
        }),
    ];
    time_interleaved(scratch.path(), "euroc", reps, &mut euroc)?;

    // The synthetic W1 compresses to almost nothing (0.4 MB for 10 s): the copy is
    // timed on an H.264 file of a real camera's size instead.
    let h264 = make_h264(scratch.path(), mcap_seconds)?;
    let h264_size = std::fs::metadata(&h264)?.len();
    let mut mcap = vec![
        Run::new("grabd export --format mcap", {
            let h264 = h264.clone();
            move |out| {
                run_ok(&mut grabd_export(&h264, "mcap", out))?;
                dir_bytes(out)
            }
        }),
        Run::new("cp FILE OUT", {
            let h264 = h264.clone();
            move |out| {
                std::fs::create_dir(out)?;
                run_ok(Command::new("cp").arg(&h264).arg(out))?;
                dir_bytes(out)
            }
        }),
        Run::new("cp FILE OUT && sync OUT/FILE", {
            let h264 = h264.clone();
            move |out| {
                std::fs::create_dir(out)?;
                run_ok(Command::new("cp").arg(&h264).arg(out))?;
                run_ok(Command::new("sync").arg(out.join(h264.file_name().context("name")?)))?;
                dir_bytes(out)
            }
        }),
    ];
    time_interleaved(scratch.path(), "mcap", reps, &mut mcap)?;

    let mut table = format!(
        "W1, {seconds} s recorded ({:.1} MB), {reps} reps alternating, {cores} cores; medians.\n\n\
         | run | frames | wall s (median) | frames/s | grabd ÷ this |\n|---|---|---|---|---|\n",
        size as f64 / 1e6,
    );
    let grabd_fps = euroc[0].produced as f64 / euroc[0].median_wall();
    let mut euroc_rows = Vec::new();
    for run in &euroc {
        let wall = run.median_wall();
        let fps = run.produced as f64 / wall;
        table.push_str(&format!(
            "| {} | {} | {wall:.2} | {fps:.1} | {:.2} |\n",
            run.name,
            run.produced,
            grabd_fps / fps
        ));
        euroc_rows.push(json!({"run": run.name, "frames": run.produced, "wall_s": run.walls, "median_wall_s": wall, "frames_per_s": fps, "grabd_ratio": grabd_fps / fps}));
    }
    // MB/s of the MKV each command reads; ratios to plain cp and to cp + fsync.
    let mbps = |run: &Run| h264_size as f64 / 1e6 / run.median_wall();
    let (cp, cp_sync) = (mbps(&mcap[1]), mbps(&mcap[2]));
    table.push_str(&format!(
        "\nH.264 1280x800@25 at 16 Mbit/s, {mcap_seconds} s ({:.1} MB, made by ffmpeg from \
         testsrc2 + noise, with grabd's tags), {reps} reps alternating; medians.\n\n\
         | run | bytes written | wall s (median) | MKV MB/s | ÷ cp | ÷ cp+sync |\n|---|---|---|---|---|---|\n",
        h264_size as f64 / 1e6
    ));
    let mut mcap_rows = Vec::new();
    for run in &mcap {
        let wall = run.median_wall();
        let rate = mbps(run);
        table.push_str(&format!(
            "| {} | {} | {wall:.3} | {rate:.0} | {:.2} | {:.2} |\n",
            run.name,
            run.produced,
            rate / cp,
            rate / cp_sync
        ));
        mcap_rows.push(json!({"run": run.name, "bytes_written": run.produced, "wall_s": run.walls, "median_wall_s": wall, "mkv_mb_per_s": rate, "cp_ratio": rate / cp, "cp_sync_ratio": rate / cp_sync}));
    }
    let result: Value = json!({
        "workload": "W1",
        "recorded_s": seconds,
        "file_bytes": size,
        "reps": reps,
        "cores": cores,
        "runs": euroc_rows,
        "mcap": {"file_bytes": h264_size, "seconds": mcap_seconds, "runs": mcap_rows},
    });
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("export.json"),
        serde_json::to_string_pretty(&result)?,
    )?;
    std::fs::write(dir.join("export.md"), &table)?;
    println!("{table}");
    Ok(())
}

/// `grabd export MKV --format FORMAT --out OUT`.
fn grabd_export(mkv: &Path, format: &str, out: &Path) -> Command {
    let mut cmd = Command::new(GRABD_BIN);
    cmd.args(["export", "--format", format, "--out"])
        .arg(out)
        .arg(mkv);
    cmd
}

/// ffmpeg writing the rgb track's frames as PNGs (grey or its default RGB) into `out`.
fn ffmpeg_pngs(mkv: &Path, out: &Path, grey: bool) -> Result<u64> {
    std::fs::create_dir(out)?;
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-i"])
        .arg(mkv)
        .args(["-map", "0:v:0"]);
    if grey {
        cmd.args(["-pix_fmt", "gray"]);
    }
    run_ok(cmd.arg(out.join("%06d.png")))?;
    count_pngs(out)
}

/// An H.264 MKV of `seconds` (rounded up to 30 s steps) at a real camera's size: 30 s
/// of ffmpeg's testsrc2 with noise at 1280x800@25, 16 Mbit/s, a keyframe a second (as
/// grabd records), repeated by the concat demuxer, with the tags that make it a grabd
/// recording to `grabd export` (its origin and the track's stream name).
fn make_h264(scratch: &Path, seconds: f64) -> Result<PathBuf> {
    let piece = scratch.join("piece.mkv");
    run_ok(
        Command::new("ffmpeg")
            .args(["-v", "error", "-f", "lavfi", "-i"])
            .arg("testsrc2=size=1280x800:rate=25")
            .args(["-vf", "noise=alls=12:allf=t", "-t", "30", "-c:v", "libx264"])
            .args(["-preset", "ultrafast", "-b:v", "16M", "-maxrate", "16M"])
            .args([
                "-bufsize", "8M", "-g", "25", "-bf", "0", "-pix_fmt", "yuv420p",
            ])
            .arg(&piece),
    )?;
    let list = scratch.join("pieces.txt");
    let copies = (seconds / 30.0).ceil().max(1.0) as usize;
    std::fs::write(
        &list,
        format!("file '{}'\n", piece.display()).repeat(copies),
    )?;
    let out = scratch.join("h264.mkv");
    run_ok(
        Command::new("ffmpeg")
            .args(["-v", "error", "-f", "concat", "-safe", "0", "-i"])
            .arg(&list)
            .args([
                "-c",
                "copy",
                "-metadata",
                "GRABD_ORIGIN_UNIX_US=1764633600000000",
            ])
            .args(["-metadata:s:v:0", "title=rgb"])
            .args(["-metadata:s:v:0", "GRABD_STREAM=rgb"])
            .arg(&out),
    )?;
    std::fs::remove_file(&piece)?;
    Ok(out)
}

/// Record `seconds` of the built-in device (W1) and return the final file.
fn record_w1(scratch: &Path, seconds: f64) -> Result<PathBuf> {
    let out = Command::new(GRABD_BIN)
        .arg("record")
        .arg("--spool")
        .arg(scratch.join("spool"))
        .arg("--output")
        .arg(scratch.join("rec"))
        .arg("--duration")
        .arg(seconds.to_string())
        .env("GRABD_LOG", "warn")
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!("grabd record: {}", String::from_utf8_lossy(&out.stderr));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok(PathBuf::from(
        stdout.lines().last().context("no path")?.trim(),
    ))
}

fn run_ok(cmd: &mut Command) -> Result<()> {
    let out = cmd.stdin(Stdio::null()).output()?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn count_pngs(dir: &Path) -> Result<u64> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir)? {
        if entry?.path().extension().is_some_and(|e| e == "png") {
            n += 1;
        }
    }
    Ok(n)
}

/// Bytes of the files directly in `dir`.
fn dir_bytes(dir: &Path) -> Result<u64> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir)? {
        n += entry?.metadata()?.len();
    }
    Ok(n)
}
