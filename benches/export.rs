//! Export speed (issue 17 item 4): `grabd export --format euroc` of a W1 recording (the
//! built-in reference device: rgb 1280x800@25 H.264, depth FFV1, IMU) against
//! `ffmpeg -i FILE %06d.png` on the same file's rgb track, measured side by side in
//! one run: frames/s of each and their ratio.
//!
//! ```text
//! cargo bench --bench export -- [--seconds N] [--reps N]
//! ```
//!
//! Records N seconds of W1 (default 10) with `grabd record`, then times, alternating,
//! `reps` runs (default 3) of: grabd's EuRoC export (8-bit grey PNGs, IMU CSV), ffmpeg
//! writing the same grey PNGs (`-pix_fmt gray`), and ffmpeg's default (`%06d.png`: RGB
//! PNGs). Frames are counted from what was written, not from either tool's report.
//! Writes `target/bench/export.json` and `target/bench/export.md` and prints the table.
//! Not part of CI (it records in real time and decodes a few hundred HD frames).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

const GRABD_BIN: &str = env!("CARGO_BIN_EXE_grabd");

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
    let reps = value("--reps", 3.0)? as usize;
    let scratch = tempfile::tempdir()?;
    let mkv = record_w1(scratch.path(), seconds)?;
    let size = std::fs::metadata(&mkv)?.len();

    let mut runs: Vec<(&str, Vec<f64>, u64)> = vec![
        (
            "grabd export --format euroc (grey PNG + IMU CSV)",
            vec![],
            0,
        ),
        (
            "ffmpeg -i FILE -map 0:v:0 -pix_fmt gray %06d.png",
            vec![],
            0,
        ),
        ("ffmpeg -i FILE -map 0:v:0 %06d.png (RGB PNG)", vec![], 0),
    ];
    for rep in 0..reps {
        for (k, run) in runs.iter_mut().enumerate() {
            let out = scratch.path().join(format!("out-{k}-{rep}"));
            let t = Instant::now();
            let frames = match k {
                0 => {
                    run_ok(
                        Command::new(GRABD_BIN)
                            .args(["export", "--format", "euroc", "--out"])
                            .arg(&out)
                            .arg(&mkv),
                    )?;
                    count_pngs(&out.join("mav0/cam0/data"))?
                }
                _ => {
                    std::fs::create_dir(&out)?;
                    let mut cmd = Command::new("ffmpeg");
                    cmd.args(["-v", "error", "-i"])
                        .arg(&mkv)
                        .args(["-map", "0:v:0"]);
                    if k == 1 {
                        cmd.args(["-pix_fmt", "gray"]);
                    }
                    run_ok(cmd.arg(out.join("%06d.png")))?;
                    count_pngs(&out)?
                }
            };
            run.1.push(t.elapsed().as_secs_f64());
            run.2 = frames;
            std::fs::remove_dir_all(&out)?;
        }
    }
    let median = |v: &[f64]| {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let grabd_fps = runs[0].2 as f64 / median(&runs[0].1);
    let mut rows = Vec::new();
    let mut table = format!(
        "W1, {seconds} s recorded ({:.1} MB), {reps} reps alternating, {} cores; medians:\n\n\
         | run | frames | wall s (median) | frames/s | grabd ÷ this |\n|---|---|---|---|---|\n",
        size as f64 / 1e6,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    for (name, walls, frames) in &runs {
        let wall = median(walls);
        let fps = *frames as f64 / wall;
        table.push_str(&format!(
            "| {name} | {frames} | {wall:.2} | {fps:.1} | {:.2} |\n",
            grabd_fps / fps
        ));
        rows.push(json!({"run": name, "frames": frames, "wall_s": walls, "median_wall_s": wall, "frames_per_s": fps, "grabd_ratio": grabd_fps / fps}));
    }
    let result: Value = json!({
        "workload": "W1",
        "recorded_s": seconds,
        "file_bytes": size,
        "reps": reps,
        "runs": rows,
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
