//! Opening the configured sources for one recording: synthetic patterns, V4L2 cameras
//! and MPU-6050 IMUs, each behind its trait ([`FrameSource`], [`Imu`]), with a way to
//! open it again after a loss (`on_source_loss = "continue"`).
//!
//! Hardware is opened afresh for every recording, so a camera or IMU that was
//! unplugged and came back works for the next one without a restart.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::capture::{FrameSource, SyntheticVideo, V4l2Camera};
use crate::config::{Config, SourceSpec};
use crate::recording::StreamConfig;
use crate::sensors::{Imu, Mpu6050, SyntheticImu};

/// Opens a lost source again: `Err` while it is still gone.
pub type Reopen<T> = Box<dyn FnMut() -> Result<T, String> + Send>;

/// How often a lost source is tried again under `on_source_loss = "continue"`.
pub const REOPEN_INTERVAL: Duration = Duration::from_millis(500);

/// An opened source, ready for its thread.
pub enum Opened {
    Camera(Box<dyn FrameSource>, Reopen<Box<dyn FrameSource>>),
    Imu(Box<dyn Imu>, Reopen<Box<dyn Imu>>),
}

/// The opened sources by stream name.
#[derive(Default)]
pub struct Sources(BTreeMap<String, Opened>);

impl Sources {
    pub fn take(&mut self, stream: &str) -> Option<Opened> {
        self.0.remove(stream)
    }
}

/// Open every source of `config`. What a device negotiated is written into its stream's
/// config in `streams` (size and rate it snapped to where allowed, where timestamps come
/// from, the device), so that the manifest and track tags say it. The error names the
/// stream and device.
pub fn open(config: &Config, streams: &mut [(String, StreamConfig)]) -> Result<Sources, String> {
    let mut opened = Sources::default();
    for spec in &config.streams {
        let stream_config = streams
            .iter_mut()
            .find(|(name, _)| *name == spec.name)
            .map(|(_, c)| c);
        let source = match (&spec.source, stream_config) {
            (SourceSpec::SyntheticVideo(pattern), Some(StreamConfig::Video(v))) => Opened::Camera(
                Box::new(SyntheticVideo::new(*pattern, v.width, v.height, v.fps)),
                never_back(),
            ),
            (SourceSpec::SyntheticImu { rate_hz, .. }, _) => {
                Opened::Imu(Box::new(SyntheticImu::new(*rate_hz)), never_back())
            }
            (SourceSpec::V4l2(camera_config), Some(StreamConfig::Video(v))) => {
                let camera =
                    V4l2Camera::open(&spec.name, camera_config).map_err(|e| e.to_string())?;
                let (width, height, fps) = camera.negotiated();
                (v.width, v.height, v.fps) = (width, height, fps);
                v.metadata
                    .insert("device".into(), camera_config.device.display().to_string());
                v.metadata
                    .insert("timestamps".into(), camera.timestamps().describe().into());
                if let Some(what) = camera.snapped() {
                    v.metadata.insert("snapped".into(), what.into());
                }
                let (name, again) = (spec.name.clone(), camera_config.clone());
                Opened::Camera(
                    Box::new(camera),
                    Box::new(move || {
                        V4l2Camera::open(&name, &again)
                            .map(|c| Box::new(c) as Box<dyn FrameSource>)
                            .map_err(|e| e.to_string())
                    }),
                )
            }
            (
                SourceSpec::Mpu6050 {
                    config: imu_config, ..
                },
                stream_config,
            ) => {
                let imu = Mpu6050::open(imu_config).map_err(|e| e.to_string())?;
                if let Some(StreamConfig::Data(d)) = stream_config {
                    d.metadata.insert("device".into(), imu_config.device());
                    d.metadata.insert("model".into(), imu.model().name().into());
                    d.metadata
                        .insert("rate_hz".into(), imu_config.rate_hz.to_string());
                }
                let again = imu_config.clone();
                Opened::Imu(
                    Box::new(imu),
                    Box::new(move || {
                        Mpu6050::open(&again)
                            .map(|i| Box::new(i) as Box<dyn Imu>)
                            .map_err(|e| e.to_string())
                    }),
                )
            }
            _ => continue,
        };
        opened.0.insert(spec.name.clone(), source);
    }
    for (name, config) in streams.iter() {
        if let StreamConfig::Video(v) = config {
            if let Some(reason) = v.metadata.get("encoder_reason") {
                tracing::info!(stream = %name, encoder = %v.codec, reason = %reason, "H.264 encoder chosen");
            }
        }
    }
    Ok(opened)
}

fn never_back<T>() -> Reopen<T> {
    Box::new(|| Err("a synthetic source does not come back".into()))
}

/// Try `reopen` every [`REOPEN_INTERVAL`] until it works (`Some`) or `stop` is set.
pub fn reopen_until<T>(reopen: &mut Reopen<T>, stop: &AtomicBool) -> Option<T> {
    let mut last_logged: Option<Instant> = None;
    while !stop.load(Ordering::Acquire) {
        match reopen() {
            Ok(source) => return Some(source),
            Err(e) => {
                if last_logged.map_or(true, |t| t.elapsed() >= Duration::from_secs(10)) {
                    tracing::warn!(error = %e, "source still gone; trying again");
                    last_logged = Some(Instant::now());
                }
            }
        }
        let until = Instant::now() + REOPEN_INTERVAL;
        while Instant::now() < until && !stop.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    None
}
