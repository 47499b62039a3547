//! `grabd probe`: what this device has and whether the config can record on it.
//!
//! Cameras (driver, bus, stable names, formats × sizes × rates), V4L2 M2M encoders with
//! the reason any is rejected and the H.264 encoder the ladder picks, MPU-6050/6500
//! IMUs found on the I2C buses, GPIO chips and whether the configured lines exist on
//! them, storage (mount, file system, free space,
//! the latency of a 1 MiB write + fsync), and the streams a recording would have.
//! Nothing here opens a codec or starts streaming.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use v4l::video::Capture;

use crate::capture::{self, CameraInfo, H264Choice};
use crate::config::{Config, DeviceConfig, SourceSpec};
use crate::gpio::{FoundLine, GpioError, LineSpec};
use crate::recording::StreamConfig;

#[derive(Debug, Serialize)]
pub struct ProbeReport {
    pub cameras: Vec<Camera>,
    pub m2m_encoders: Vec<M2mEncoder>,
    pub h264: H264Choice,
    pub imus: Vec<ImuFound>,
    pub gpio_chips: Vec<String>,
    /// Each line the `[device]` section names, and whether it exists.
    pub gpio_lines: Vec<GpioLine>,
    pub storage: Vec<Storage>,
    pub streams: Vec<StreamPlan>,
    pub can_record: bool,
    /// Why not, when it cannot.
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Camera {
    pub path: PathBuf,
    #[serde(flatten)]
    pub info: CameraInfo,
    /// `/dev/v4l/by-id` and `/dev/v4l/by-path` links to this node.
    pub links: Vec<PathBuf>,
    pub formats: Vec<CameraFormat>,
}

#[derive(Debug, Serialize)]
pub struct CameraFormat {
    pub fourcc: String,
    pub sizes: Vec<CameraSize>,
}

#[derive(Debug, Serialize)]
pub struct CameraSize {
    pub width: u32,
    pub height: u32,
    /// Discrete rates in fps; a stepwise range as its ends.
    pub fps: Vec<f64>,
}

#[derive(Debug, Serialize)]
pub struct M2mEncoder {
    pub path: PathBuf,
    pub usable: bool,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct ImuFound {
    pub bus: PathBuf,
    pub address: String,
    pub who_am_i: String,
    pub model: Option<&'static str>,
}

#[derive(Debug, Serialize)]
pub struct Storage {
    pub path: PathBuf,
    pub mount: Option<String>,
    pub filesystem: Option<String>,
    pub free_bytes: Option<u64>,
    /// 1 MiB written and fsynced, in ms.
    pub write_fsync_ms: Option<f64>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct GpioLine {
    /// The setting that names it: button, green_led, red_led or buzzer.
    pub role: &'static str,
    /// As configured.
    pub line: String,
    pub chip: Option<PathBuf>,
    pub offset: Option<u32>,
    /// Who holds it now, when someone does (grabd's own service, a kernel driver).
    pub used_by: Option<String>,
    /// Why it cannot be used: it does not exist, or its chip cannot be read.
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct StreamPlan {
    pub name: String,
    pub kind: &'static str,
    pub source: String,
    pub codec: String,
    pub detail: String,
}

/// Look at everything; `dirs` are the spool and output folders to test.
pub fn probe(config: &Config, dirs: &[PathBuf]) -> ProbeReport {
    let dev = Path::new("/dev");
    let scanned = capture::m2m_scan(dev);
    let h264 = capture::choose_h264_here();
    let m2m_encoders = scanned
        .iter()
        .filter_map(|(path, result)| {
            let candidate = result.as_ref().ok()?;
            candidate.is_m2m().then(|| M2mEncoder {
                path: path.clone(),
                usable: capture::rejection(candidate).is_none(),
                reason: capture::rejection(candidate).unwrap_or_else(|| "encodes H.264".into()),
            })
        })
        .collect();
    let cameras = cameras(dev);
    let imus = imus(dev);
    let mut problems = Vec::new();
    let streams = config
        .streams
        .iter()
        .map(|spec| plan(spec, &cameras, &mut problems))
        .collect();
    let gpio_lines = gpio_lines(&config.device, &LineSpec::find, &mut problems);
    let storage: Vec<Storage> = dirs.iter().map(|d| storage(d)).collect();
    for s in &storage {
        if let Some(e) = &s.error {
            problems.push(format!("storage {}: {e}", s.path.display()));
        }
    }
    ProbeReport {
        cameras,
        m2m_encoders,
        h264,
        imus,
        gpio_chips: numbered_nodes(dev, "gpiochip")
            .into_iter()
            .map(|p| p.display().to_string())
            .collect(),
        gpio_lines,
        storage,
        streams,
        can_record: problems.is_empty(),
        problems,
    }
}

fn plan(
    spec: &crate::config::StreamSpec,
    cameras: &[Camera],
    problems: &mut Vec<String>,
) -> StreamPlan {
    let (kind, codec) = match &spec.config {
        StreamConfig::Video(v) => ("video", v.codec.clone()),
        StreamConfig::Data(d) => ("data", d.codec.clone()),
    };
    let (source, detail) = match &spec.source {
        SourceSpec::SyntheticVideo(p) => ("synthetic".to_string(), format!("{p:?} pattern")),
        SourceSpec::SyntheticImu { rate_hz, .. } => ("synthetic".into(), format!("{rate_hz} Hz")),
        SourceSpec::V4l2(c) => {
            let source = format!("v4l2:{}", c.device.display());
            let node = capture::resolve_device(&c.device);
            let wanted = c.format.fourcc_name();
            let detail = match node {
                Err(e) => Err(e),
                Ok(node) => match cameras.iter().find(|cam| cam.path == node) {
                    None => Err(format!("{} is not a capture device", node.display())),
                    Some(cam) => match cam.formats.iter().find(|f| f.fourcc == wanted) {
                        None => Err(format!("{} does not offer {wanted}", node.display())),
                        Some(f) => {
                            let fits = f
                                .sizes
                                .iter()
                                .any(|s| (s.width, s.height) == (c.width, c.height));
                            if fits || c.allow_snap {
                                Ok(format!(
                                    "{wanted} {}x{} @ {} fps from {}",
                                    c.width, c.height, c.fps, cam.info.card
                                ))
                            } else {
                                Err(format!(
                                    "{} does not offer {wanted} at {}x{}",
                                    node.display(),
                                    c.width,
                                    c.height
                                ))
                            }
                        }
                    },
                },
            };
            (
                source,
                detail.unwrap_or_else(|e| {
                    problems.push(format!("stream {}: {e}", spec.name));
                    e
                }),
            )
        }
        SourceSpec::Mpu6050 { config, .. } => {
            let source = format!("mpu6050:{}", config.device());
            let detail = match crate::sensors::identify_mpu6050(&config.bus, config.address) {
                Ok((_, Some(model))) => format!("{} at {} Hz", model.name(), config.rate_hz),
                Ok((who, None)) => {
                    let e = format!(
                        "WHO_AM_I is {who:#04x}: not an MPU-6050 (0x68) or MPU-6500 (0x70)"
                    );
                    problems.push(format!("stream {}: {}: {e}", spec.name, config.device()));
                    e
                }
                Err(e) => {
                    problems.push(format!("stream {}: {e}", spec.name));
                    e
                }
            };
            (source, detail)
        }
    };
    StreamPlan {
        name: spec.name.clone(),
        kind,
        source,
        codec,
        detail,
    }
}

/// Each GPIO line `device` names, looked up with `find` (a missing one is a problem
/// naming the setting and the line: `grabd run` could not use it).
fn gpio_lines(
    device: &DeviceConfig,
    find: &dyn Fn(&LineSpec) -> Result<FoundLine, GpioError>,
    problems: &mut Vec<String>,
) -> Vec<GpioLine> {
    let configured = [
        ("button", &device.button),
        ("green_led", &device.green_led),
        ("red_led", &device.red_led),
        ("buzzer", &device.buzzer),
    ];
    configured
        .into_iter()
        .filter_map(|(role, spec)| Some((role, spec.as_ref()?)))
        .map(|(role, spec)| match find(spec) {
            Ok(found) => GpioLine {
                role,
                line: spec.to_string(),
                chip: Some(found.chip),
                offset: Some(found.offset),
                used_by: found.used_by,
                error: None,
            },
            Err(e) => {
                problems.push(format!("device.{role}: {e}"));
                GpioLine {
                    role,
                    line: spec.to_string(),
                    chip: None,
                    offset: None,
                    used_by: None,
                    error: Some(e.to_string()),
                }
            }
        })
        .collect()
}

fn numbered_nodes(dev: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut nodes: Vec<(u32, PathBuf)> = std::fs::read_dir(dev)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name.strip_prefix(prefix)?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    nodes.sort();
    nodes.into_iter().map(|(_, p)| p).collect()
}

fn cameras(dev: &Path) -> Vec<Camera> {
    let links: Vec<(PathBuf, PathBuf)> = ["v4l/by-id", "v4l/by-path"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(dev.join(d))
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter_map(|e| Some((std::fs::canonicalize(e.path()).ok()?, e.path())))
        .collect();
    numbered_nodes(dev, "video")
        .into_iter()
        .filter_map(|path| {
            let device = v4l::Device::with_path(&path).ok()?;
            let info = capture::query_camera(device.handle().fd()).ok()?;
            if info.caps & 1 == 0 {
                return None; // not a (single-planar) capture device
            }
            let formats = capture::enum_formats(device.handle().fd(), 1)
                .into_iter()
                .map(|fourcc| CameraFormat {
                    sizes: sizes(&device, &fourcc),
                    fourcc,
                })
                .collect();
            Some(Camera {
                links: links
                    .iter()
                    .filter(|(t, _)| *t == path)
                    .map(|(_, l)| l.clone())
                    .collect(),
                path,
                info,
                formats,
            })
        })
        .collect()
}

fn sizes(device: &v4l::Device, fourcc: &str) -> Vec<CameraSize> {
    let mut code = [b' '; 4];
    for (i, b) in fourcc.bytes().take(4).enumerate() {
        code[i] = b;
    }
    let code = v4l::FourCC::new(&code);
    let mut out = Vec::new();
    for size in device.enum_framesizes(code).unwrap_or_default() {
        let (width, height) = match size.size {
            v4l::framesize::FrameSizeEnum::Discrete(d) => (d.width, d.height),
            v4l::framesize::FrameSizeEnum::Stepwise(s) => (s.max_width, s.max_height),
        };
        let fps = device
            .enum_frameintervals(code, width, height)
            .unwrap_or_default()
            .into_iter()
            .flat_map(|i| match i.interval {
                v4l::frameinterval::FrameIntervalEnum::Discrete(f) => vec![f],
                v4l::frameinterval::FrameIntervalEnum::Stepwise(s) => vec![s.min, s.max],
            })
            .filter(|f| f.numerator > 0)
            .map(|f| (f64::from(f.denominator) / f64::from(f.numerator) * 1000.0).round() / 1000.0)
            .collect();
        out.push(CameraSize { width, height, fps });
    }
    out
}

fn imus(dev: &Path) -> Vec<ImuFound> {
    let mut found = Vec::new();
    for bus in numbered_nodes(dev, "i2c-") {
        for address in [0x68u16, 0x69] {
            if let Ok((who, model)) = crate::sensors::identify_mpu6050(&bus, address) {
                found.push(ImuFound {
                    bus: bus.clone(),
                    address: format!("{address:#04x}"),
                    who_am_i: format!("{who:#04x}"),
                    model: model.map(|m| m.name()),
                });
            }
        }
    }
    found
}

fn storage(dir: &Path) -> Storage {
    let mut s = Storage {
        path: dir.to_owned(),
        mount: None,
        filesystem: None,
        free_bytes: None,
        write_fsync_ms: None,
        error: None,
    };
    let canonical = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
        let best = mounts
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let (_, mount, fs) = (f.next()?, f.next()?, f.next()?);
                canonical
                    .starts_with(mount)
                    .then(|| (mount.to_owned(), fs.to_owned()))
            })
            .max_by_key(|(m, _)| m.len());
        if let Some((mount, fs)) = best {
            s.mount = Some(mount);
            s.filesystem = Some(fs);
        }
    }
    s.free_bytes = super::storage::free_bytes(dir).ok();
    match write_fsync_latency(dir) {
        Ok(ms) => s.write_fsync_ms = Some(ms),
        Err(e) => s.error = Some(e),
    }
    s
}

/// Write 1 MiB to a file of grabd's own naming, fsync it, delete it: the time in ms.
fn write_fsync_latency(dir: &Path) -> Result<f64, String> {
    let path = dir.join(format!(".grabd-probe-{}.tmp", std::process::id()));
    let result = (|| {
        let mut file =
            std::fs::File::create(&path).map_err(|e| format!("create {}: {e}", path.display()))?;
        let data = vec![0x5au8; 1 << 20];
        let start = Instant::now();
        file.write_all(&data)
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        file.sync_all()
            .map_err(|e| format!("fsync {}: {e}", path.display()))?;
        Ok(start.elapsed().as_secs_f64() * 1000.0)
    })();
    let _ = std::fs::remove_file(&path);
    result
}

impl ProbeReport {
    /// The report for a person.
    pub fn human(&self) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line(format!("cameras: {}", self.cameras.len()));
        for c in &self.cameras {
            line(format!(
                "  {} {} ({}, {})",
                c.path.display(),
                c.info.card,
                c.info.driver,
                c.info.bus
            ));
            for l in &c.links {
                line(format!("    link {}", l.display()));
            }
            for f in &c.formats {
                let sizes: Vec<String> = f
                    .sizes
                    .iter()
                    .map(|s| format!("{}x{}@{:?}", s.width, s.height, s.fps))
                    .collect();
                line(format!("    {} {}", f.fourcc, sizes.join(" ")));
            }
        }
        line(format!("M2M encoders: {}", self.m2m_encoders.len()));
        for m in &self.m2m_encoders {
            line(format!(
                "  {} {}: {}",
                m.path.display(),
                if m.usable { "usable" } else { "rejected" },
                m.reason
            ));
        }
        line(format!(
            "H.264 encoder: {} ({})",
            self.h264.codec, self.h264.reason
        ));
        line(format!("IMUs: {}", self.imus.len()));
        for i in &self.imus {
            line(format!(
                "  {}@{} WHO_AM_I {} {}",
                i.bus.display(),
                i.address,
                i.who_am_i,
                i.model.unwrap_or("(unknown chip)")
            ));
        }
        line(format!("GPIO chips: {}", self.gpio_chips.join(" ")));
        for l in &self.gpio_lines {
            line(match (&l.chip, l.offset, &l.error) {
                (Some(chip), Some(offset), _) => format!(
                    "  {} {}: {}:{offset}{}",
                    l.role,
                    l.line,
                    chip.display(),
                    l.used_by
                        .as_ref()
                        .map_or(String::new(), |u| format!(", held by {u}"))
                ),
                (_, _, error) => format!(
                    "  {} {}: {}",
                    l.role,
                    l.line,
                    error.as_deref().unwrap_or("not found")
                ),
            });
        }
        for s in &self.storage {
            line(format!(
                "storage {}: mount {} ({}), free {} MiB, 1 MiB write+fsync {}",
                s.path.display(),
                s.mount.as_deref().unwrap_or("?"),
                s.filesystem.as_deref().unwrap_or("?"),
                s.free_bytes.map_or("?".into(), |b| (b >> 20).to_string()),
                s.write_fsync_ms.map_or_else(
                    || s.error.clone().unwrap_or_default(),
                    |ms| format!("{ms:.1} ms")
                ),
            ));
        }
        line("would record:".into());
        for s in &self.streams {
            line(format!(
                "  {} ({}) from {} as {}: {}",
                s.name, s.kind, s.source, s.codec, s.detail
            ));
        }
        if self.can_record {
            line("can record: yes".into());
        } else {
            line(format!("can record: no: {}", self.problems.join("; ")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpio::{FoundLine, GpioError, LineSpec};

    /// A board with one chip whose lines are named BUTTON (held by the kernel's
    /// gpio-keys) and GREEN; nothing else exists.
    fn fake_board(spec: &LineSpec) -> Result<FoundLine, GpioError> {
        let chip = PathBuf::from("/dev/gpiochip0");
        match spec {
            LineSpec::Named(n) if n == "BUTTON" => Ok(FoundLine {
                chip,
                offset: 0,
                used_by: Some("gpio-keys".into()),
            }),
            LineSpec::Named(n) if n == "GREEN" => Ok(FoundLine {
                chip,
                offset: 1,
                used_by: None,
            }),
            LineSpec::Offset { offset, .. } if *offset < 2 => Ok(FoundLine {
                chip,
                offset: *offset,
                used_by: None,
            }),
            _ => Err(GpioError::NotFound {
                line: spec.to_string(),
            }),
        }
    }

    /// Issue 15 item 6: probe says, per configured line, whether it exists (chip and
    /// offset, and who holds it), and a missing one is a problem naming the setting
    /// and the line.
    #[test]
    fn probe_reports_whether_each_configured_gpio_line_exists() {
        let config = Config::from_toml(
            "[device]\nbutton = \"BUTTON\"\ngreen_led = \"GREEN\"\nred_led = \"RED\"\n\
             buzzer = { chip = \"gpiochip0\", offset = 7 }\n",
            "t.toml",
        )
        .unwrap();
        let mut problems = Vec::new();
        let lines = gpio_lines(&config.device, &fake_board, &mut problems);
        let roles: Vec<&str> = lines.iter().map(|l| l.role).collect();
        assert_eq!(roles, ["button", "green_led", "red_led", "buzzer"]);
        assert_eq!(lines[0].chip.as_deref(), Some(Path::new("/dev/gpiochip0")));
        assert_eq!(lines[0].used_by.as_deref(), Some("gpio-keys"));
        assert_eq!(
            (lines[1].offset, lines[1].error.as_deref()),
            (Some(1), None)
        );
        assert!(
            lines[2].chip.is_none() && lines[2].error.is_some(),
            "{:?}",
            lines[2]
        );
        assert!(lines[3].error.is_some(), "{:?}", lines[3]);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("red_led") && problems[0].contains("RED"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("buzzer") && problems[1].contains("gpiochip0:7"),
            "{problems:?}"
        );

        // No [device] lines: nothing to check, nothing wrong.
        let bare = Config::from_toml("", "t.toml").unwrap();
        let mut none = Vec::new();
        assert!(gpio_lines(&bare.device, &fake_board, &mut none).is_empty());
        assert!(none.is_empty());
    }
}
