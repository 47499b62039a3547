//! Configuration: [`RawConfig`] is the TOML as written (checked only for shape),
//! [`Config`] the validated, usable set of streams and recording settings.
//!
//! ```toml
//! [recording]
//! chunk_length_s = 60.0
//!
//! [[stream]]
//! name = "rgb"
//! kind = "video"
//! source = "synthetic"
//! width = 1280
//! height = 800
//! fps = 25
//! codec = "libx264"
//! options = { preset = "superfast" }
//!
//! [[stream]]
//! name = "imu"
//! kind = "data"
//! source = "synthetic"
//! rate_hz = 100          # samples per second
//! batch_with = "rgb"     # one packet per frame of this stream (default: first video)
//! ```

mod mistake;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::capture::{SyntheticPattern, V4l2Config};
use crate::gpio::{Bias, LineSpec};
use crate::recording::{
    DataStreamConfig, MuxerSettings, StreamConfig, VideoStreamConfig, WriterOptions,
};
use crate::runtime::state::{Action, GestureConfig};
use crate::sensors::Mpu6050Config;

use mistake::Source;
pub use mistake::{KeyPath, Mistake};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    /// `config FILE:LINE:COL: key: what is wrong` (position and key when known).
    #[error(
        "config {origin}{}: {}{message}",
        position.map(|(l, c)| format!(":{l}:{c}")).unwrap_or_default(),
        key.as_ref().map(|k| format!("{k}: ")).unwrap_or_default()
    )]
    Mistake {
        origin: String,
        /// 1-based line and column.
        position: Option<(usize, usize)>,
        key: Option<String>,
        message: String,
    },
}

/// The range a number setting must lie in. Every limit is in [`limits`], so that the
/// config file and the command line refuse the same values in the same words.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    pub min: f64,
    pub max: f64,
    pub unit: &'static str,
}

impl Limit {
    /// `value` when it lies in the range, else what is wrong with it.
    pub fn check(&self, value: f64) -> Result<f64, String> {
        if value.is_finite() && (self.min..=self.max).contains(&value) {
            Ok(value)
        } else {
            Err(format!(
                "must be {}..{} {}, got {}",
                show(self.min),
                show(self.max),
                self.unit,
                show(value)
            ))
        }
    }

    /// A number of seconds in the range, as a duration.
    pub fn seconds(&self, value: f64) -> Result<Duration, String> {
        // In range, so finite and far below Duration's limit.
        self.check(value).map(Duration::from_secs_f64)
    }

    /// A whole-number setting in the range (counts, milliseconds, MiB).
    pub fn whole(&self, value: u64) -> Result<u64, String> {
        // u64 → f64 keeps the magnitude, all the range check needs.
        self.check(value as f64).map(|_| value)
    }
}

/// A number as a person would write it: 86400, 0.1, 1e30.
fn show(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e16 {
        format!("{v:.0}")
    } else if v.is_finite() && (v.abs() >= 1e9 || (v != 0.0 && v.abs() < 1e-4)) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// Every number limit of the config and the command line.
pub mod limits {
    use super::Limit;

    /// A chunk is the unit of rotation and merging (`chunk_length_s`, `--chunk-length`).
    pub const CHUNK_LENGTH_S: Limit = Limit {
        min: 0.1,
        max: 86_400.0,
        unit: "s",
    };
    /// `grabd record --duration` (about 115 days).
    pub const DURATION_S: Limit = Limit {
        min: 0.001,
        max: 1e7,
        unit: "s",
    };
    pub const MAX_ENCODER_QUEUE_SIZE: Limit = Limit {
        min: 1.0,
        max: 10_000.0,
        unit: "frames",
    };
    /// Capture-to-durable budget of a frame: what a power cut may take from a recorder
    /// that cannot keep up (the writer refuses one too small for its cluster and sync).
    pub const MAX_LATENCY_MS: Limit = Limit {
        min: 100.0,
        max: 600_000.0,
        unit: "ms",
    };
    /// Frames one stream's queue may hold, in MiB.
    pub const MAX_QUEUE_MB: Limit = Limit {
        min: 1.0,
        max: 4096.0,
        unit: "MiB",
    };
    pub const ROTATION_GRACE_S: Limit = Limit {
        min: 0.01,
        max: 3600.0,
        unit: "s",
    };
    /// How often grown parts are fsynced: part of what a power cut can take.
    pub const SYNC_INTERVAL_MS: Limit = Limit {
        min: 10.0,
        max: 1000.0,
        unit: "ms",
    };
    /// A cluster lives only in memory until it closes: this bounds what a power cut takes.
    pub const CLUSTER_TIME_LIMIT_MS: Limit = Limit {
        min: 10.0,
        max: 1000.0,
        unit: "ms",
    };
    /// Free-space floor (1 TiB at most).
    pub const MIN_FREE_MB: Limit = Limit {
        min: 0.0,
        max: 1_048_576.0,
        unit: "MiB",
    };
    /// Samples per second of a data stream's source.
    pub const RATE_HZ: Limit = Limit {
        min: 0.1,
        max: 10_000.0,
        unit: "Hz",
    };
    /// Packets per second of a data stream batched by time.
    pub const BATCH_HZ: Limit = Limit {
        min: 0.1,
        max: 1000.0,
        unit: "Hz",
    };
}

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub recording: RawRecording,
    /// `None` when the file has no `[[stream]]`: the built-in device.
    pub stream: Option<Vec<RawStream>>,
    #[serde(default)]
    pub device: RawDevice,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRecording {
    pub chunk_length_s: Option<f64>,
    pub max_encoder_queue_size: Option<usize>,
    /// Capture-to-durable budget per frame (the power-cut loss bound); frames that
    /// cannot make it are shed and counted.
    pub max_latency_ms: Option<u64>,
    /// MiB of frames one stream's queue may hold.
    pub max_queue_mb: Option<u64>,
    pub rotation_grace_s: Option<f64>,
    pub sync_interval_ms: Option<u64>,
    pub cluster_time_limit_ms: Option<u32>,
    /// Stop recording when free space falls below this many MiB.
    pub min_free_mb: Option<u64>,
    /// `"stop"` (default) or `"continue"`.
    pub on_source_loss: Option<String>,
}

/// The keys of a `[[stream]]` that [`RawStream`] reads itself; the rest are the stream
/// config's own fields.
const RAW_STREAM_KEYS: &[&str] = &[
    "name",
    "kind",
    "source",
    "rate_hz",
    "batch_with",
    "batch_hz",
];

#[derive(Debug, Deserialize)]
pub struct RawStream {
    pub name: String,
    pub kind: String,
    #[serde(default = "default_source")]
    pub source: String,
    pub rate_hz: Option<f64>,
    pub batch_with: Option<String>,
    pub batch_hz: Option<f64>,
    /// Everything else: the stream config's own fields (read from the file's own table,
    /// so that their mistakes keep their position).
    #[serde(flatten)]
    pub rest: toml::Table,
}

/// `codec = "h264"`: the hardware encoder where one exists, else libx264 (see
/// [`crate::capture::choose_h264`]).
pub const H264_LADDER: &str = "h264";

fn default_source() -> String {
    "synthetic".into()
}

/// `[device]`: what `grabd run` drives and where it keeps recordings.
///
/// ```toml
/// [device]
/// button = "GPIO24"                 # a line name, or { chip = "gpiochip0", offset = 24 }
/// button_active_low = true          # pressed = line low (button to ground)
/// button_bias = "pull-up"           # pull-up | pull-down | disabled | as-is
/// debounce_ms = 10
/// green_led = "GPIO17"
/// red_led = "GPIO23"
/// buzzer = "GPIO12"                 # an active buzzer on a line, or:
/// # buzzer_pwm = { chip = 0, channel = 0, hz = 2000, duty = 0.1 }   # a passive one
/// double_press_s = 0.5
/// long_press_s = 5.0
/// press = "toggle"                  # toggle | mark | status | shutdown | none
/// double_press_idle = "status"
/// double_press_recording = "mark"
/// long_press = "shutdown"
/// shutdown_command = ["systemctl", "poweroff"]
/// spool = "/data/grabd/spool"
/// output = "/data/grabd/recordings"
/// control_socket = "/run/grabd/control"
/// low_space_mb = 1024               # status beeps "low" below this
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevice {
    pub button: Option<LineSpec>,
    pub button_active_low: Option<bool>,
    pub button_bias: Option<Bias>,
    pub debounce_ms: Option<u64>,
    pub green_led: Option<LineSpec>,
    pub red_led: Option<LineSpec>,
    pub leds_active_low: Option<bool>,
    pub buzzer: Option<LineSpec>,
    pub buzzer_pwm: Option<PwmSpec>,
    pub double_press_s: Option<f64>,
    pub long_press_s: Option<f64>,
    pub press: Option<Action>,
    pub double_press_idle: Option<Action>,
    pub double_press_recording: Option<Action>,
    pub long_press: Option<Action>,
    pub shutdown_command: Option<Vec<String>>,
    pub spool: Option<PathBuf>,
    pub output: Option<PathBuf>,
    pub control_socket: Option<PathBuf>,
    pub low_space_mb: Option<u64>,
}

/// A passive buzzer's PWM channel (`/sys/class/pwm/pwmchip<chip>/pwm<channel>`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PwmSpec {
    pub chip: u32,
    pub channel: u32,
    #[serde(default = "default_pwm_hz")]
    pub hz: f64,
    #[serde(default = "default_pwm_duty")]
    pub duty: f64,
}

fn default_pwm_hz() -> f64 {
    2000.0
}

fn default_pwm_duty() -> f64 {
    0.1
}

/// The validated `[device]` section.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceConfig {
    pub button: Option<LineSpec>,
    pub button_active_low: bool,
    pub button_bias: Bias,
    pub debounce: Duration,
    pub green_led: Option<LineSpec>,
    pub red_led: Option<LineSpec>,
    pub leds_active_low: bool,
    pub buzzer: Option<LineSpec>,
    pub buzzer_pwm: Option<PwmSpec>,
    pub gestures: GestureConfig,
    pub shutdown_command: Vec<String>,
    pub spool: PathBuf,
    pub output: PathBuf,
    pub control_socket: PathBuf,
    pub low_space_bytes: u64,
}

/// Where `grabd run` and `grabd ctl` find the control socket unless configured.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/grabd/control";

impl RawDevice {
    fn validate(self) -> Result<DeviceConfig, Mistake> {
        let device = KeyPath::top("device");
        let invalid = |key: &str, m: String| Mistake::at(device.key(key), m);
        let seconds_us = |key: &str, v: f64, lo: f64, hi: f64| {
            if (lo..=hi).contains(&v) {
                Ok((v * 1e6).round() as i64)
            } else {
                Err(invalid(key, format!("must be {lo}..{hi} s, got {v}")))
            }
        };
        let defaults = GestureConfig::default();
        let double_press_us = match self.double_press_s {
            Some(v) => seconds_us("double_press_s", v, 0.05, 2.0)?,
            None => defaults.double_press_us,
        };
        let long_press_us = match self.long_press_s {
            Some(v) => seconds_us("long_press_s", v, 1.0, 60.0)?,
            None => defaults.long_press_us,
        };
        if long_press_us <= double_press_us {
            return Err(invalid(
                "long_press_s",
                format!(
                    "{} s must be longer than double_press_s ({} s)",
                    long_press_us as f64 / 1e6,
                    double_press_us as f64 / 1e6
                ),
            ));
        }
        let debounce_ms = self.debounce_ms.unwrap_or(10);
        if debounce_ms > 100 {
            return Err(invalid(
                "debounce_ms",
                format!("must be 0..100, got {debounce_ms}"),
            ));
        }
        if self.buzzer.is_some() && self.buzzer_pwm.is_some() {
            return Err(invalid(
                "buzzer_pwm",
                "set buzzer or buzzer_pwm, not both".into(),
            ));
        }
        if let Some(p) = &self.buzzer_pwm {
            let pwm = device.key("buzzer_pwm");
            if !(20.0..=20_000.0).contains(&p.hz) {
                return Err(Mistake::at(
                    pwm.key("hz"),
                    format!("must be 20..20000, got {}", p.hz),
                ));
            }
            if !(0.0..=1.0).contains(&p.duty) {
                return Err(Mistake::at(
                    pwm.key("duty"),
                    format!("must be 0..1, got {}", p.duty),
                ));
            }
        }
        let shutdown_command = self
            .shutdown_command
            .unwrap_or_else(|| vec!["systemctl".into(), "poweroff".into()]);
        if shutdown_command.first().map_or(true, String::is_empty) {
            return Err(invalid("shutdown_command", "must name a program".into()));
        }
        Ok(DeviceConfig {
            button: self.button,
            button_active_low: self.button_active_low.unwrap_or(true),
            button_bias: self.button_bias.unwrap_or_default(),
            debounce: Duration::from_millis(debounce_ms),
            green_led: self.green_led,
            red_led: self.red_led,
            leds_active_low: self.leds_active_low.unwrap_or(false),
            buzzer: self.buzzer,
            buzzer_pwm: self.buzzer_pwm,
            gestures: GestureConfig {
                double_press_us,
                long_press_us,
                press: self.press.unwrap_or(defaults.press),
                double_press_idle: self.double_press_idle.unwrap_or(defaults.double_press_idle),
                double_press_recording: self
                    .double_press_recording
                    .unwrap_or(defaults.double_press_recording),
                long_press: self.long_press.unwrap_or(defaults.long_press),
            },
            shutdown_command,
            spool: self.spool.unwrap_or_else(|| "/data/grabd/spool".into()),
            output: self
                .output
                .unwrap_or_else(|| "/data/grabd/recordings".into()),
            control_socket: self
                .control_socket
                .unwrap_or_else(|| DEFAULT_CONTROL_SOCKET.into()),
            low_space_bytes: self.low_space_mb.unwrap_or(1024) << 20,
        })
    }
}

/// Where a stream's frames come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    SyntheticVideo(SyntheticPattern),
    SyntheticImu {
        rate_hz: f64,
        batching: Batching,
    },
    /// `source = "v4l2:/dev/..."`.
    V4l2(V4l2Config),
    /// `source = "mpu6050:/dev/i2c-N@0xNN"`.
    Mpu6050 {
        config: Mpu6050Config,
        batching: Batching,
    },
}

impl SourceSpec {
    /// How IMU samples of this source are grouped, for IMU sources.
    pub fn batching(&self) -> Option<&Batching> {
        match self {
            SourceSpec::SyntheticImu { batching, .. } | SourceSpec::Mpu6050 { batching, .. } => {
                Some(batching)
            }
            _ => None,
        }
    }
}

/// What happens to a recording when one of its sources is lost (a camera unplugged, an
/// IMU gone from the bus).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SourceLossPolicy {
    /// Finish the recording with everything before the loss, and report the failure.
    #[default]
    Stop,
    /// Keep recording the other streams; the lost source rejoins when it comes back.
    Continue,
}

/// How IMU samples are grouped into packets.
#[derive(Debug, Clone, PartialEq)]
pub enum Batching {
    /// One packet per frame of this video stream, stamped with the frame's time.
    PerFrameOf(String),
    /// One packet per period of this many Hz.
    Rate(f64),
}

#[derive(Debug, Clone)]
pub struct StreamSpec {
    pub name: String,
    pub config: StreamConfig,
    pub source: SourceSpec,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub streams: Vec<StreamSpec>,
    pub writer: WriterOptions,
    pub min_free_bytes: u64,
    pub device: DeviceConfig,
    pub on_source_loss: SourceLossPolicy,
}

/// The reference device's streams: rgb 1280x800@25 H.264, depth 640x400@25 FFV1
/// gray16le, IMU at 100 Hz batched per rgb frame.
pub const DEFAULT_CONFIG: &str = r#"
[[stream]]
name = "rgb"
kind = "video"
width = 1280
height = 800
fps = 25
codec = "libx264"
bitrate = 4000000
input_pixel_format = "rgb24"
output_pixel_format = "yuv420p"
options = { preset = "superfast", profile = "baseline", bf = "0", g = "25", tune = "zerolatency" }

[[stream]]
name = "depth"
kind = "video"
width = 640
height = 400
fps = 25
codec = "ffv1"
bitrate = 0
input_pixel_format = "gray16le"
output_pixel_format = "gray16le"
options = { level = "3", g = "25" }
metadata = { units = "millimetres" }
calibration = { depth_unit_mm = 1.0 }

[[stream]]
name = "imu"
kind = "data"
rate_hz = 100
batch_with = "rgb"
metadata = { format = "json", units = "m/s^2, rad/s" }
"#;

impl Config {
    /// The built-in synthetic device.
    pub fn default_synthetic() -> Result<Self, ConfigError> {
        Self::from_toml(DEFAULT_CONFIG, "<built-in>")
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.display().to_string(),
            cause,
        })?;
        Self::from_toml(&text, &path.display().to_string())
    }

    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let source = Source::parse(text, origin)?;
        let raw: RawConfig = source.deserialize().map_err(|m| source.place(m))?;
        let mut config = Self::from_raw(raw, &source).map_err(|m| source.place(m))?;
        if config.streams.is_empty() {
            // A file with only [recording] keeps the built-in streams.
            config.streams = Self::default_synthetic()?.streams;
        }
        Ok(config)
    }

    fn from_raw(raw: RawConfig, source: &Source) -> Result<Self, Mistake> {
        let recording = KeyPath::top("recording");
        let setting = |key: &str| recording.key(key);
        let r = &raw.recording;
        let mut writer = WriterOptions::default();
        fn checked<T>(key: KeyPath, result: Result<T, String>) -> Result<T, Mistake> {
            result.map_err(|m| Mistake::at(key, m))
        }
        if let Some(s) = r.chunk_length_s {
            writer.chunk_length = checked(setting("chunk_length_s"), chunk_length(s))?;
        }
        if let Some(n) = r.max_encoder_queue_size {
            let n = checked(
                setting("max_encoder_queue_size"),
                limits::MAX_ENCODER_QUEUE_SIZE.whole(n as u64),
            )?;
            // In range, so it fits.
            writer.max_encoder_queue_size = n as usize;
        }
        // The loss bound: 1.1 s measured on the QEMU rig's power cuts, of which this is
        // the writer's part (the rest is the last frame's interval and the cut itself).
        let max_latency_ms = match r.max_latency_ms {
            Some(ms) => checked(setting("max_latency_ms"), limits::MAX_LATENCY_MS.whole(ms))?,
            None => 1000,
        };
        writer.max_latency = Some(Duration::from_millis(max_latency_ms));
        if let Some(mb) = r.max_queue_mb {
            let mb = checked(setting("max_queue_mb"), limits::MAX_QUEUE_MB.whole(mb))?;
            // In range: at most 2^32 bytes.
            writer.max_queue_bytes = usize::try_from(mb << 20).unwrap_or(usize::MAX);
        }
        if let Some(s) = r.rotation_grace_s {
            writer.rotation_grace = checked(
                setting("rotation_grace_s"),
                limits::ROTATION_GRACE_S.seconds(s),
            )?;
        }
        if let Some(ms) = r.sync_interval_ms {
            let ms = checked(
                setting("sync_interval_ms"),
                limits::SYNC_INTERVAL_MS.whole(ms),
            )?;
            writer.sync_interval = Duration::from_millis(ms);
        }
        let mut muxer = MuxerSettings::default();
        if let Some(ms) = r.cluster_time_limit_ms {
            muxer.cluster_time_limit_ms = checked(
                setting("cluster_time_limit_ms"),
                limits::CLUSTER_TIME_LIMIT_MS.whole(ms.into()),
            )? as u32;
        }
        writer.muxer = muxer;
        let min_free_mb = match r.min_free_mb {
            Some(mb) => checked(setting("min_free_mb"), limits::MIN_FREE_MB.whole(mb))?,
            None => 32,
        };
        // In range: at most 2^40 bytes.
        let min_free_bytes = min_free_mb << 20;
        let device = raw.device.validate()?;
        let on_source_loss = match r.on_source_loss.as_deref() {
            None | Some("stop") => SourceLossPolicy::Stop,
            Some("continue") => SourceLossPolicy::Continue,
            Some(other) => {
                return Err(Mistake::at(
                    setting("on_source_loss"),
                    format!("must be \"stop\" or \"continue\", got {other:?}"),
                ))
            }
        };

        let raw_streams =
            match raw.stream {
                None => Vec::new(),
                Some(streams) if streams.is_empty() => return Err(Mistake::at(
                    KeyPath::top("stream"),
                    "an empty list records nothing (leave `stream` out for the built-in device)",
                )),
                Some(streams) => streams,
            };
        let first_video = raw_streams
            .iter()
            .find(|s| s.kind == "video")
            .map(|s| s.name.clone());
        let tables = source
            .table()
            .get("stream")
            .and_then(toml_edit::Item::as_array_of_tables);
        let mut streams = Vec::new();
        for (index, s) in raw_streams.into_iter().enumerate() {
            let at = KeyPath::stream(index, &s.name);
            let err = |m: String| Mistake::at(at.clone(), m);
            let setting = |e| stream_mistake(&at, e);
            let fields = || {
                tables
                    .and_then(|t| t.get(index))
                    .ok_or_else(|| err("not a [[stream]] table".into()))
            };
            let hardware = sources::parse(&s.source, &s.kind, &s.rest)
                .map_err(|(key, m)| Mistake::at(at.key(key), m))?;
            let skip = [RAW_STREAM_KEYS, sources::KEYS].concat();
            let (config, source) = match s.kind.as_str() {
                "video" => {
                    if s.rate_hz.is_some() || s.batch_with.is_some() || s.batch_hz.is_some() {
                        return Err(err(
                            "rate_hz/batch_with/batch_hz are for data streams".into()
                        ));
                    }
                    let mut video: VideoStreamConfig =
                        source.deserialize_table(fields()?, &at, &skip)?;
                    if video.codec == H264_LADDER {
                        video = ladder(&s.name, video);
                    }
                    if let Some(sources::Hardware::Camera(camera)) = &hardware {
                        let mut camera = camera.clone();
                        (camera.width, camera.height, camera.fps) =
                            (video.width, video.height, video.fps);
                        sources::set_input_format(&mut video, camera.format)
                            .map_err(|m| Mistake::at(at.key("input_pixel_format"), m))?;
                        crate::recording::VideoStreamEncoder::check(&video).map_err(setting)?;
                        streams.push(StreamSpec {
                            name: s.name.clone(),
                            config: StreamConfig::Video(video),
                            source: SourceSpec::V4l2(camera),
                        });
                        continue;
                    }
                    crate::recording::VideoStreamEncoder::check(&video).map_err(setting)?;
                    let pattern = SyntheticPattern::for_pixel_format(&video.input_pixel_format)
                        .ok_or_else(|| {
                            Mistake::at(
                                at.key("input_pixel_format"),
                                format!(
                                    "the synthetic source makes rgb24, gray16le or yuyv422, not {}",
                                    video.input_pixel_format
                                ),
                            )
                        })?;
                    (
                        StreamConfig::Video(video),
                        SourceSpec::SyntheticVideo(pattern),
                    )
                }
                "data" => {
                    let mut data: DataStreamConfig =
                        source.deserialize_table(fields()?, &at, &skip)?;
                    data.validate().map_err(setting)?;
                    for (key, value) in crate::sensors::IMU_TRACK_TAGS {
                        data.metadata.insert(key.into(), value.into());
                    }
                    let rate_hz = limits::RATE_HZ
                        .check(s.rate_hz.unwrap_or(100.0))
                        .map_err(|m| Mistake::at(at.key("rate_hz"), m))?;
                    let batching = match (s.batch_hz, s.batch_with.clone().or(first_video.clone()))
                    {
                        (Some(hz), _) => Batching::Rate(
                            limits::BATCH_HZ
                                .check(hz)
                                .map_err(|m| Mistake::at(at.key("batch_hz"), m))?,
                        ),
                        (None, Some(video)) => Batching::PerFrameOf(video),
                        (None, None) => Batching::Rate(25.0),
                    };
                    let source = match hardware {
                        Some(sources::Hardware::Imu(mut imu)) => {
                            imu.rate_hz = rate_hz;
                            imu.validate().map_err(|m| {
                                // The message starts with the key it is about.
                                let key = m.split(' ').next().unwrap_or_default();
                                let key = if sources::KEYS.contains(&key) || key == "rate_hz" {
                                    key
                                } else {
                                    "source"
                                };
                                Mistake::at(at.key(key), format!("{}: {m}", imu.device()))
                            })?;
                            SourceSpec::Mpu6050 {
                                config: imu,
                                batching,
                            }
                        }
                        _ => SourceSpec::SyntheticImu { rate_hz, batching },
                    };
                    (StreamConfig::Data(data), source)
                }
                other => {
                    return Err(Mistake::at(
                        at.key("kind"),
                        format!("kind must be \"video\" or \"data\", got {other:?}"),
                    ))
                }
            };
            streams.push(StreamSpec {
                name: s.name,
                config,
                source,
            });
        }
        for (index, spec) in streams.iter().enumerate() {
            let at = KeyPath::stream(index, &spec.name);
            crate::recording::stream_config::validate_stream_name(&spec.name)
                .map_err(|e| stream_mistake(&at, e.for_field("name")))?;
            if streams[..index].iter().any(|o| o.name == spec.name) {
                return Err(Mistake::at(
                    at.key("name"),
                    format!("stream {:?} appears twice", spec.name),
                ));
            }
            if let Some(Batching::PerFrameOf(video)) = spec.source.batching() {
                let ok = streams
                    .iter()
                    .any(|o| &o.name == video && matches!(o.config, StreamConfig::Video(_)));
                if !ok {
                    return Err(Mistake::at(
                        at.key("batch_with"),
                        format!("batch_with names {video:?}, which is not a video stream"),
                    ));
                }
            }
        }
        Ok(Config {
            streams,
            writer,
            min_free_bytes,
            device,
            on_source_loss,
        })
    }

    /// Streams in the form the recording core takes.
    pub fn stream_configs(&self) -> Vec<(String, StreamConfig)> {
        self.streams
            .iter()
            .map(|s| (s.name.clone(), s.config.clone()))
            .collect()
    }
}

/// A chunk length in seconds, checked against [`limits::CHUNK_LENGTH_S`] and rounded to
/// the whole milliseconds the writer counts in.
pub fn chunk_length(seconds: f64) -> Result<Duration, String> {
    let seconds = limits::CHUNK_LENGTH_S.check(seconds)?;
    Ok(Duration::from_millis((seconds * 1000.0).round() as u64))
}

/// A stream config's own error, as a mistake in the stream's table of the file.
fn stream_mistake(stream: &KeyPath, e: crate::recording::Error) -> Mistake {
    use crate::recording::Error;
    match e {
        Error::InvalidSetting { field, message } => Mistake::at(stream.key(field), message),
        Error::InvalidConfig(message) => Mistake::at(stream.clone(), message),
        other => Mistake::at(stream.clone(), other.to_string()),
    }
}

/// `codec = "h264"`: pick the encoder (see [`crate::capture::choose_h264`]), log it.
fn ladder(stream: &str, video: VideoStreamConfig) -> VideoStreamConfig {
    let choice = crate::capture::choose_h264_here();
    for (path, why) in &choice.rejected {
        tracing::debug!(stream, device = %path.display(), why, "not an H.264 encoder");
    }
    // Logged at info when a recording starts (runtime::sources); here only for debugging,
    // so that a config error stays the one line on stderr.
    tracing::debug!(stream, encoder = choice.codec, reason = %choice.reason, "H.264 encoder chosen");
    crate::capture::apply_h264_choice(video, &choice)
}

/// The hardware part of a stream's `source`: `v4l2:` cameras and `mpu6050:` IMUs, with
/// their own keys (which the stream config does not read).
mod sources {
    use std::path::PathBuf;
    use std::time::Duration;

    use crate::capture::{CaptureFormat, V4l2Config};
    use crate::recording::VideoStreamConfig;
    use crate::sensors::Mpu6050Config;

    pub enum Hardware {
        Camera(V4l2Config),
        Imu(Mpu6050Config),
    }

    const CAMERA_KEYS: [&str; 4] = ["capture_format", "buffers", "allow_snap", "timeout_ms"];
    const IMU_KEYS: [&str; 3] = ["accel_range_g", "gyro_range_dps", "dlpf"];
    /// Every source-specific key (not the stream config's).
    pub const KEYS: &[&str] = &[
        "capture_format",
        "buffers",
        "allow_snap",
        "timeout_ms",
        "accel_range_g",
        "gyro_range_dps",
        "dlpf",
    ];

    /// A mistake: the key it is about and what is wrong.
    type Wrong = (&'static str, String);

    /// `None` for `synthetic`. Errors name the source (the device) and what is wrong.
    pub fn parse(source: &str, kind: &str, rest: &toml::Table) -> Result<Option<Hardware>, Wrong> {
        let (scheme, target) = source.split_once(':').unwrap_or((source, ""));
        let misplaced = |keys: &[&'static str], owner: &str| -> Result<(), Wrong> {
            match keys.iter().find(|k| rest.contains_key(**k)) {
                Some(key) => Err((key, format!("{key} is for {owner} sources"))),
                None => Ok(()),
            }
        };
        let expect_kind = |wanted: &str| -> Result<(), Wrong> {
            if kind == wanted {
                Ok(())
            } else {
                Err(("kind", format!("source {source:?} needs kind = {wanted:?}")))
            }
        };
        match scheme {
            "synthetic" if target.is_empty() => {
                misplaced(&CAMERA_KEYS, "v4l2")?;
                misplaced(&IMU_KEYS, "mpu6050")?;
                Ok(None)
            }
            "v4l2" => {
                expect_kind("video")?;
                misplaced(&IMU_KEYS, "mpu6050")?;
                let device = device_path(source, target)?;
                let format_name = get_str(rest, "capture_format")?.unwrap_or("YUYV".into());
                let format = CaptureFormat::from_name(&format_name).ok_or_else(|| {
                    (
                        "capture_format",
                        format!(
                            "{source}: capture_format {format_name:?} is not one of {}",
                            CaptureFormat::NAMES
                        ),
                    )
                })?;
                // Size and rate come from the stream's own width/height/fps.
                let mut camera = V4l2Config::new(device, format, 0, 0, 0.0);
                if let Some(n) = get_int(rest, "buffers")? {
                    camera.buffers = u32::try_from(n).unwrap_or(0);
                }
                if let Some(allow) = get_bool(rest, "allow_snap")? {
                    camera.allow_snap = allow;
                }
                if let Some(ms) = get_int(rest, "timeout_ms")? {
                    camera.timeout = Duration::from_millis(u64::try_from(ms).unwrap_or(0));
                }
                camera.validate().map_err(|m| {
                    let key = if m.starts_with("buffers") { "buffers" } else { "timeout_ms" };
                    (key, format!("{source}: {m}"))
                })?;
                Ok(Some(Hardware::Camera(camera)))
            }
            "mpu6050" => {
                expect_kind("data")?;
                misplaced(&CAMERA_KEYS, "v4l2")?;
                let (bus, address) = match target.rsplit_once('@') {
                    Some((bus, address)) => (bus, parse_address(source, address)?),
                    None => (target, 0x68),
                };
                let mut imu = Mpu6050Config::new(device_path(source, bus)?, address);
                if let Some(g) = get_int(rest, "accel_range_g")? {
                    imu.accel_range_g = u32::try_from(g).unwrap_or(0);
                }
                if let Some(dps) = get_int(rest, "gyro_range_dps")? {
                    imu.gyro_range_dps = u32::try_from(dps).unwrap_or(0);
                }
                if let Some(dlpf) = get_int(rest, "dlpf")? {
                    imu.dlpf = u8::try_from(dlpf).unwrap_or(u8::MAX);
                }
                Ok(Some(Hardware::Imu(imu)))
            }
            _ => Err((
                "source",
                format!(
                    "unknown source {source:?} (sources: synthetic, v4l2:/dev/..., mpu6050:/dev/i2c-N@0x68)"
                ),
            )),
        }
    }

    /// The camera's frames decide the stream's input pixel format (`rgb24`, the
    /// default, is taken as not set).
    pub fn set_input_format(
        video: &mut VideoStreamConfig,
        format: CaptureFormat,
    ) -> Result<(), String> {
        let wanted = format.pixel_format();
        if video.input_pixel_format != wanted && video.input_pixel_format != "rgb24" {
            return Err(format!(
                "input_pixel_format {:?} does not match the camera's {wanted} (leave it out)",
                video.input_pixel_format
            ));
        }
        video.input_pixel_format = wanted.into();
        Ok(())
    }

    fn device_path(source: &str, path: &str) -> Result<PathBuf, Wrong> {
        if path.starts_with("/dev/") && path.len() > 5 {
            Ok(PathBuf::from(path))
        } else {
            Err((
                "source",
                format!("{source:?}: the device must be a path under /dev/"),
            ))
        }
    }

    fn parse_address(source: &str, text: &str) -> Result<u16, Wrong> {
        let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            Some(hex) => u16::from_str_radix(hex, 16),
            None => text.parse(),
        };
        parsed.map_err(|_| {
            (
                "source",
                format!("{source:?}: {text:?} is not an I2C address"),
            )
        })
    }

    fn get_str(rest: &toml::Table, key: &'static str) -> Result<Option<String>, Wrong> {
        match rest.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err((key, format!("{key} must be a string, got {other}"))),
        }
    }

    fn get_int(rest: &toml::Table, key: &'static str) -> Result<Option<i64>, Wrong> {
        match rest.get(key) {
            None => Ok(None),
            Some(toml::Value::Integer(n)) if *n >= 0 => Ok(Some(*n)),
            Some(other) => Err((
                key,
                format!("{key} must be a whole number >= 0, got {other}"),
            )),
        }
    }

    fn get_bool(rest: &toml::Table, key: &'static str) -> Result<Option<bool>, Wrong> {
        match rest.get(key) {
            None => Ok(None),
            Some(toml::Value::Boolean(b)) => Ok(Some(*b)),
            Some(other) => Err((key, format!("{key} must be true or false, got {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_config_is_the_reference_device() {
        let c = Config::default_synthetic().unwrap();
        let names: Vec<_> = c.streams.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["rgb", "depth", "imu"]);
        assert_eq!(c.writer.chunk_length, Duration::from_secs(60));
        assert_eq!(
            c.streams[2].source,
            SourceSpec::SyntheticImu {
                rate_hz: 100.0,
                batching: Batching::PerFrameOf("rgb".into())
            }
        );
    }

    #[test]
    fn bad_configs_name_the_problem() {
        let cases = [
            ("[recording]\nchunk_length_s = 0\n", "chunk_length_s"),
            ("[[stream]]\nname=\"a\"\nkind=\"video\"\nwidth=0\nheight=2\nfps=25\n", "empty"),
            ("[[stream]]\nname=\"a\"\nkind=\"video\"\nwidth=2\nheight=2\nfps=25\ncodec=\"nope\"\n", "nope"),
            ("[[stream]]\nname=\"a\"\nkind=\"video\"\nwidth=2\nheight=2\nfps=25\ncolour=1\n", "colour"),
            ("[[stream]]\nname=\"a\"\nkind=\"audio\"\n", "kind"),
            (
                "[[stream]]\nname=\"a\"\nkind=\"video\"\nwidth=2\nheight=2\nfps=25\noptions={presett=\"fast\"}\n",
                "presett",
            ),
            ("[[stream]]\nname=\"i\"\nkind=\"data\"\nbatch_with=\"x\"\n", "batch_with"),
            ("[recording]\nchunk_lenght_s = 1\n", "chunk_lenght_s"),
            ("not toml at all [", "config"),
            ("[device]\nbuton = \"GPIO24\"\n", "buton"),
            ("[device]\ndouble_press_s = 3\n", "device.double_press_s"),
            ("[device]\nlong_press_s = 0.4\ndouble_press_s = 0.5\n", "long_press_s"),
            ("[device]\nlong_press = \"reboot\"\n", "reboot"),
            ("[device]\nbuzzer = \"GPIO12\"\nbuzzer_pwm = { chip = 0, channel = 0 }\n", "not both"),
            ("[device]\nbutton = 24\n", "GPIO line"),
            ("[device]\nshutdown_command = []\n", "shutdown_command"),
        ];
        for (text, needle) in cases {
            let err = Config::from_toml(text, "t.toml").unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?} gave {err:?}");
        }
    }

    #[test]
    fn device_section_names_lines_and_gestures() {
        let c = Config::from_toml(
            "[device]\nbutton = \"GPIO24\"\ngreen_led = { chip = \"gpiochip1\", offset = 3 }\nbutton_bias = \"pull-down\"\ndouble_press_s = 0.3\nlong_press = \"none\"\n",
            "t.toml",
        )
        .unwrap();
        let d = &c.device;
        assert_eq!(d.button, Some(LineSpec::Named("GPIO24".into())));
        assert_eq!(
            d.green_led,
            Some(LineSpec::Offset {
                chip: "gpiochip1".into(),
                offset: 3
            })
        );
        assert_eq!(d.button_bias, Bias::PullDown);
        assert!(d.button_active_low);
        assert_eq!(d.gestures.double_press_us, 300_000);
        assert_eq!(d.gestures.long_press, Action::None);
        assert_eq!(d.gestures.double_press_idle, Action::Status);
        assert_eq!(d.control_socket, PathBuf::from(DEFAULT_CONTROL_SOCKET));
        let defaults = Config::default_synthetic().unwrap().device;
        assert_eq!(defaults.button, None);
        assert_eq!(defaults.gestures, GestureConfig::default());
    }

    /// `codec = "h264"` goes through the encoder ladder: this machine has no V4L2 M2M
    /// encoder, so libx264 with the configured preset, and the reason is kept as a tag.
    #[test]
    fn h264_picks_an_encoder_and_records_why() {
        let text = "[[stream]]\nname=\"cam\"\nkind=\"video\"\nwidth=64\nheight=48\nfps=25\ncodec=\"h264\"\noptions={preset=\"ultrafast\"}\n";
        let c = Config::from_toml(text, "t.toml").unwrap();
        let StreamConfig::Video(video) = &c.streams[0].config else {
            panic!("a video stream")
        };
        assert_eq!(video.codec, "libx264");
        assert_eq!(video.stream_options["preset"], "ultrafast");
        assert_eq!(video.metadata["encoder"], "libx264");
        assert!(
            video.metadata["encoder_reason"].starts_with("no V4L2"),
            "{:?}",
            video.metadata
        );
    }

    fn camera_and_imu(camera_extra: &str, imu_source: &str, imu_extra: &str) -> String {
        format!(
            "[recording]\non_source_loss = \"continue\"\n\
             [[stream]]\nname=\"cam\"\nkind=\"video\"\nsource=\"v4l2:/dev/v4l/by-id/usb-cam-video-index0\"\n\
             width=320\nheight=180\nfps=30\ncodec=\"h264\"\noptions={{preset=\"ultrafast\"}}\n{camera_extra}\n\
             [[stream]]\nname=\"imu\"\nkind=\"data\"\nsource=\"{imu_source}\"\nrate_hz=200\n{imu_extra}\n"
        )
    }

    #[test]
    fn v4l2_and_mpu6050_sources_take_their_own_keys() {
        let text = camera_and_imu(
            "capture_format=\"NV12\"\nbuffers=6\nallow_snap=true\ntimeout_ms=1500",
            "mpu6050:/dev/i2c-1@0x69",
            "accel_range_g=8\ngyro_range_dps=500\ndlpf=2",
        );
        let c = Config::from_toml(&text, "t.toml").unwrap();
        assert_eq!(c.on_source_loss, SourceLossPolicy::Continue);
        let SourceSpec::V4l2(camera) = &c.streams[0].source else {
            panic!("a v4l2 source: {:?}", c.streams[0].source)
        };
        assert_eq!(
            camera.device,
            std::path::Path::new("/dev/v4l/by-id/usb-cam-video-index0")
        );
        assert_eq!(camera.format, crate::capture::CaptureFormat::Nv12);
        assert_eq!((camera.width, camera.height, camera.fps), (320, 180, 30.0));
        assert_eq!(camera.buffers, 6);
        assert!(camera.allow_snap);
        assert_eq!(camera.timeout, Duration::from_millis(1500));
        let StreamConfig::Video(video) = &c.streams[0].config else {
            panic!("video")
        };
        assert_eq!(video.input_pixel_format, "nv12");
        let SourceSpec::Mpu6050 {
            config: imu,
            batching,
        } = &c.streams[1].source
        else {
            panic!("an mpu6050 source")
        };
        assert_eq!(imu.bus, std::path::Path::new("/dev/i2c-1"));
        assert_eq!(imu.address, 0x69);
        assert_eq!(
            (imu.rate_hz, imu.accel_range_g, imu.gyro_range_dps, imu.dlpf),
            (200.0, 8, 500, 2)
        );
        assert_eq!(batching, &Batching::PerFrameOf("cam".into()));
        let StreamConfig::Data(data) = &c.streams[1].config else {
            panic!("data")
        };
        assert_eq!(data.metadata["type"], "imu");
        assert_eq!(data.metadata["version"], "3");
    }

    #[test]
    fn bad_sources_name_the_device_and_the_problem() {
        let cases = [
            (
                camera_and_imu("capture_format=\"RGB3\"", "mpu6050:/dev/i2c-1@0x68", ""),
                "capture_format \"RGB3\" is not one of",
            ),
            (
                camera_and_imu("buffers=1", "mpu6050:/dev/i2c-1@0x68", ""),
                "buffers 1: at least 2",
            ),
            (
                camera_and_imu("", "mpu6050:/dev/i2c-1@0x50", ""),
                "/dev/i2c-1@0x50: address 0x50",
            ),
            (
                camera_and_imu("", "mpu6050:/dev/i2c-1@zz", ""),
                "\"zz\" is not an I2C address",
            ),
            (
                camera_and_imu("", "mpu6050:/dev/i2c-1", "accel_range_g=3"),
                "accel_range_g 3",
            ),
            (
                camera_and_imu("dlpf=2", "mpu6050:/dev/i2c-1", ""),
                "dlpf is for mpu6050 sources",
            ),
            (
                camera_and_imu("", "mpu6050:i2c-1", ""),
                "the device must be a path under /dev/",
            ),
            (
                camera_and_imu("", "gps:/dev/ttyS0", ""),
                "unknown source \"gps:/dev/ttyS0\"",
            ),
            (
                camera_and_imu("", "v4l2:/dev/video0", ""),
                "needs kind = \"video\"",
            ),
        ];
        for (text, needle) in cases {
            let err = Config::from_toml(&text, "t.toml").unwrap_err().to_string();
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
        let bad_policy = "[recording]\non_source_loss = \"retry\"\n";
        let err = Config::from_toml(bad_policy, "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("on_source_loss: must be"), "{err}");
    }

    /// A camera's `calibration` table is read, checked against its size and stored as a
    /// track tag; a mistake in it names the stream's key and the limit.
    #[test]
    fn calibration_is_read_checked_and_becomes_a_track_tag() {
        let camera = "[[stream]]\nname=\"cam\"\nkind=\"video\"\nwidth=64\nheight=48\nfps=25\n";
        let text = format!(
            "{camera}[stream.calibration]\nintrinsics = [60.0, 61.0, 32.5, 24]\n\
             distortion_model = \"equidistant\"\ndistortion_coeffs = [0.1, 0.01, 0.0, 0.0]\n\
             t_imu_cam = [[1, 0, 0, 0.1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]\n\
             timeshift_cam_imu_s = -0.002\nrotation_deg = 180\n"
        );
        let c = Config::from_toml(&text, "t.toml").unwrap();
        let StreamConfig::Video(video) = &c.streams[0].config else {
            panic!("a video stream")
        };
        let calibration: &crate::recording::Calibration =
            video.calibration.as_ref().expect("calibration");
        assert_eq!(calibration.intrinsics, Some([60.0, 61.0, 32.5, 24.0]));
        assert_eq!(calibration.t_imu_cam.unwrap()[0][3], 0.1);
        assert_eq!(calibration.rotation_deg, 180);
        let tag = &c.streams[0].config.track_tags()[crate::recording::calibration::TAG_CALIBRATION];
        assert_eq!(
            &serde_json::from_str::<crate::recording::Calibration>(tag).unwrap(),
            calibration
        );
        for (table, needle) in [
            (
                "intrinsics = [60.0, 61.0, 90.0, 24.0]",
                "\"cam\".calibration: intrinsics: cx, cy = 90, 24 must lie in the 64x48 image",
            ),
            ("focal = 3", "unknown field `focal`"),
            ("depth_unit_mm = 1.0", "only a 16-bit grey (depth) stream"),
        ] {
            let err = Config::from_toml(
                &format!("{camera}[stream.calibration]\n{table}\n"),
                "t.toml",
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
        }
        let depth = Config::default_synthetic().unwrap();
        let StreamConfig::Video(video) = &depth.streams[1].config else {
            panic!("the built-in depth stream")
        };
        assert_eq!(video.calibration.as_ref().unwrap().depth_unit_mm, Some(1.0));
    }
}
