//! Shared rig of the tests that run the `grabd` binary (`cli.rs`, `durability.rs`,
//! `crash_recovery.rs`): the test configs, a scratch spool + output + config, the
//! `grabd record` command line, a finished run's exit code and output, and read-back
//! (`grabd verify`, manifests, folder listings).

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_grabd");

/// The rgb camera of the test configs: 160x100@25 H.264 from rgb24, ultrafast, no
/// B-frames, GOP 25. A macro, so that the configs stay compile-time string constants.
macro_rules! rgb_stream_toml {
    () => {
        r#"
[[stream]]
name = "rgb"
kind = "video"
width = 160
height = 100
fps = 25
codec = "libx264"
bitrate = 300000
input_pixel_format = "rgb24"
output_pixel_format = "yuv420p"
options = { preset = "ultrafast", bf = "0", g = "25" }
"#
    };
}

/// 1 s chunks of a small rgb camera, an FFV1 depth camera and a 100 Hz IMU batched with
/// rgb.
pub const CONFIG: &str = concat!(
    r#"
[recording]
chunk_length_s = 1.0
"#,
    rgb_stream_toml!(),
    r#"
[[stream]]
name = "depth"
kind = "video"
width = 80
height = 50
fps = 25
codec = "ffv1"
bitrate = 0
input_pixel_format = "gray16le"
output_pixel_format = "gray16le"

[[stream]]
name = "imu"
kind = "data"
rate_hz = 100
batch_with = "rgb"
"#
);

/// About 3 MB/s of recording (two 10 kHz IMUs in 50 Hz batches plus a small camera),
/// with a 1 MiB free-space floor: fills a small tmpfs in seconds.
pub const HEAVY_CONFIG: &str = concat!(
    r#"
[recording]
chunk_length_s = 1.0
min_free_mb = 1
"#,
    rgb_stream_toml!(),
    r#"
[[stream]]
name = "imu1"
kind = "data"
rate_hz = 10000
batch_hz = 50

[[stream]]
name = "imu2"
kind = "data"
rate_hz = 10000
batch_hz = 50
"#
);

/// A finished `grabd` run.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    /// The non-empty lines of stdout.
    pub fn lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect()
    }

    pub fn last_line(&self) -> Option<&str> {
        self.stdout.lines().rev().find(|l| !l.trim().is_empty())
    }

    /// The error of a failed run: exactly one non-empty line on stderr.
    pub fn one_line_error(&self) -> &str {
        let lines: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| !l.trim().is_empty())
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "expected a one-line error, got stderr:\n{}",
            self.stderr
        );
        lines[0]
    }
}

/// Run `grabd ARGS` to the end (without `GRABD_LOG`, stdin from /dev/null).
pub fn grabd<I, S>(args: I) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(BIN)
        .args(args)
        .env_remove("GRABD_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run grabd")
        .into()
}

/// A scratch spool + output + config. Neither folder exists until grabd makes it.
pub struct Rig {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub spool: PathBuf,
    pub output: PathBuf,
    pub config: PathBuf,
}

impl Rig {
    /// A rig with [`CONFIG`].
    pub fn new() -> Rig {
        Rig::with_config(CONFIG)
    }

    pub fn with_config(config_text: &str) -> Rig {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().canonicalize().expect("canonical tempdir");
        let config = root.join("grabd.toml");
        fs::write(&config, config_text).expect("write config");
        Rig {
            spool: root.join("spool"),
            output: root.join("output"),
            config,
            root,
            _tmp: tmp,
        }
    }

    /// `grabd record` for `duration` with the given config, spool and output (the rig's
    /// own or others).
    pub fn record_cmd(
        &self,
        config: &Path,
        spool: &Path,
        output: &Path,
        duration: &str,
    ) -> Command {
        let mut cmd = Command::new(BIN);
        add_record_args(&mut cmd, config, spool, output, duration);
        cmd
    }

    /// `grabd record` for `duration` with the rig's config, spool and output.
    pub fn run_record(&self, duration: &str) -> Run {
        Run::from(
            self.record_cmd(&self.config, &self.spool, &self.output, duration)
                .output()
                .unwrap(),
        )
    }

    /// Neither the spool nor the output holds anything (they may not even exist).
    pub fn assert_nothing_left(&self) {
        assert!(
            entries(&self.spool).is_empty(),
            "spool: {:?}",
            entries(&self.spool)
        );
        assert!(
            entries(&self.output).is_empty(),
            "output: {:?}",
            entries(&self.output)
        );
    }

    /// Append `record` for `duration` with the rig's config, spool and output to `cmd`
    /// (`grabd` itself, or a wrapper such as strace that runs it).
    pub fn record_args<'c>(&self, cmd: &'c mut Command, duration: &str) -> &'c mut Command {
        add_record_args(cmd, &self.config, &self.spool, &self.output, duration)
    }
}

fn add_record_args<'c>(
    cmd: &'c mut Command,
    config: &Path,
    spool: &Path,
    output: &Path,
    duration: &str,
) -> &'c mut Command {
    cmd.arg("record")
        .arg("--config")
        .arg(config)
        .arg("--spool")
        .arg(spool)
        .arg("--output")
        .arg(output)
        .arg("--duration")
        .arg(duration)
        .env_remove("GRABD_LOG")
        .stdin(Stdio::null())
}

/// Wait for a recording folder of `child` (one not in `known`) to appear in `spool`.
/// Returns it and when it was first seen: the reference "start" of the recording (the
/// first frame comes after the folder, so times measured from here are conservative).
pub fn wait_new_dir(spool: &Path, known: &[PathBuf], child: &mut Child) -> (PathBuf, Instant) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(rd) = fs::read_dir(spool) {
            for entry in rd.flatten() {
                let path = entry.path();
                if path.is_dir() && !known.contains(&path) {
                    return (path, Instant::now());
                }
            }
        }
        if let Some(status) = child.try_wait().expect("poll grabd record") {
            panic!("grabd record exited ({status}) before its recording folder appeared");
        }
        assert!(
            Instant::now() < deadline,
            "no recording folder appeared in {}",
            spool.display()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

pub fn signal(child: &Child, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).expect("kill");
}

/// What a folder holds, sorted (nothing when it does not exist).
pub fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// What a folder holds, leaving out lock files (`.spool.lock`: empty, no data).
pub fn entries(dir: &Path) -> Vec<String> {
    names_in(dir)
        .into_iter()
        .filter(|n| !(n.starts_with('.') && n.ends_with(".lock")))
        .collect()
}

/// `grabd verify` a file; panics unless it exits 0 with every packet decoded.
pub fn verify(mkv: &Path) -> Value {
    let r = grabd(["verify".as_ref(), mkv.as_os_str()]);
    let v: Value = serde_json::from_str(r.stdout.trim())
        .unwrap_or_else(|e| panic!("verify printed no JSON ({e}): {}\n{}", r.stdout, r.stderr));
    assert_eq!(
        r.code,
        0,
        "verify {} failed: {v}\n{}",
        mkv.display(),
        r.stderr
    );
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["decode_errors"], 0, "{v}");
    v
}

pub fn read_json(path: &Path) -> Value {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()))
}

/// Config problems: exit 2, one stderr line naming the problem, nothing created.
pub fn assert_config_refused(config_text: Option<&[u8]>, config_path: Option<&Path>, needle: &str) {
    let rig = Rig::new();
    let path = config_path.map_or_else(|| rig.root.join("bad.toml"), Path::to_owned);
    if let Some(text) = config_text {
        fs::write(&path, text).unwrap();
    }
    let r = Run::from(
        rig.record_cmd(&path, &rig.spool, &rig.output, "2")
            .output()
            .unwrap(),
    );
    assert_eq!(r.code, 2, "{needle}: {}", r.stderr);
    let line = r.one_line_error();
    assert!(
        line.contains(needle),
        "error should name {needle:?}: {line}"
    );
    assert!(r.stdout.trim().is_empty(), "{}", r.stdout);
    rig.assert_nothing_left();
}

/// A tmpfs (or read-only bind) mount, undone on drop.
pub struct Mount {
    path: PathBuf,
}

impl Mount {
    pub fn tmpfs(path: &Path, options: &str) -> Result<Mount, String> {
        fs::create_dir_all(path).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| format!("mount: {e}"))?;
        if out.status.success() {
            Ok(Mount {
                path: path.to_owned(),
            })
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    }

    /// A read-only file system at `path`: a read-only tmpfs, or else a read-only bind
    /// mount of an empty folder.
    pub fn read_only(path: &Path) -> Result<Mount, String> {
        let tmpfs_err = match Mount::tmpfs(path, "ro,size=1m") {
            Ok(m) => return Ok(m),
            Err(e) => e,
        };
        let src = path.with_extension("src");
        fs::create_dir_all(&src).map_err(|e| e.to_string())?;
        let bind = Command::new("mount")
            .arg("--bind")
            .arg(&src)
            .arg(path)
            .status()
            .map_err(|e| e.to_string())?;
        if !bind.success() {
            return Err(format!("tmpfs: {tmpfs_err}; bind mount failed too"));
        }
        let mount = Mount {
            path: path.to_owned(),
        };
        let ro = Command::new("mount")
            .args(["-o", "remount,bind,ro"])
            .arg(path)
            .status()
            .map_err(|e| e.to_string())?;
        if ro.success() {
            Ok(mount)
        } else {
            Err(format!("tmpfs: {tmpfs_err}; read-only remount failed"))
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}
