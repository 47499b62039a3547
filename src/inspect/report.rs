//! What a recording holds, read back from the file with libavformat: its streams with
//! their timing, gaps and IMU samples, its marks (chapters) and `grabd verify`'s
//! verdict, as JSON ([`Inspection`] serialises) or as a table ([`Inspection::table`]).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ffmpeg_next::{self as ffmpeg, media};
use serde::Serialize;

use super::timing::{seconds, timing, Timing};
use crate::recording::calibration::{track_calibration, Calibration};
use crate::recording::manifest::{self, Verdict};
use crate::recording::media::{open_input, read_packet, rescale, MICROS};
use crate::recording::Result;
use crate::sensors::{decode_batch, ImuSample};

#[derive(Debug, Clone, Serialize)]
pub struct Inspection {
    pub file: PathBuf,
    pub size_bytes: u64,
    /// The container's duration (libavformat's, as `ffprobe -show_format` prints it).
    pub duration_s: f64,
    /// Wall clock (µs since the Unix epoch) of media time 0, from the file's tag.
    pub origin_unix_us: Option<i64>,
    pub started_at: Option<String>,
    pub streams: Vec<StreamReport>,
    /// The file's chapters (grabd's marks), in media seconds.
    pub marks_s: Vec<f64>,
    /// `grabd verify`'s verdict on the file and its manifest.
    pub verdict: Verdict,
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    pub index: usize,
    pub name: String,
    /// `video`, `subtitle` (grabd's data tracks), …
    pub kind: String,
    pub codec: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub pixel_format: Option<String>,
    pub packets: u64,
    pub keyframes: u64,
    pub frames_decoded: u64,
    pub decode_errors: u64,
    pub first_s: Option<f64>,
    pub last_s: Option<f64>,
    pub span_s: Option<f64>,
    /// Packet timing: usual interval, jitter, gaps and the frames missing in them.
    pub interval_ms: Option<f64>,
    pub jitter_ms: Option<f64>,
    pub max_interval_ms: Option<f64>,
    pub gaps: Vec<super::Gap>,
    pub missing_frames: u64,
    /// Frames the writer says it dropped (the manifest's count; the file cannot say).
    pub dropped_by_writer: Option<u64>,
    /// The camera's calibration, from its track tag (`None`: the file has none).
    pub calibration: Option<Calibration>,
    /// Why the calibration tag could not be read, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calibration_error: Option<String>,
    /// The samples of an IMU track (grabd's payload version 3).
    pub imu: Option<ImuReport>,
    /// Every packet's time (µs), sorted: for the picture.
    #[serde(skip)]
    pub pts_us: Vec<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImuReport {
    pub samples: u64,
    pub rate_hz: Option<f64>,
    pub jitter_ms: Option<f64>,
    pub gaps: Vec<super::Gap>,
    pub missing_samples: u64,
    /// Every sample, in time order: for the picture.
    #[serde(skip)]
    pub values: Vec<ImuSample>,
}

impl StreamReport {
    pub fn is_camera(&self) -> bool {
        self.kind == "video"
    }
}

/// Read `path` back: decode every packet (the verdict), then the stream parameters,
/// the IMU payloads and the chapters.
pub fn read(path: &Path) -> Result<Inspection> {
    let mut pts = Vec::new();
    let verdict = manifest::verdict(path, Some(&mut pts))?;
    let manifest = manifest::read_manifest(&manifest::manifest_path(path)).ok();
    let mut input = open_input(path)?;
    let mut streams = Vec::new();
    for (stream, track) in input.streams().zip(&verdict.summary.tracks) {
        let index = stream.index();
        let (width, height, pixel_format) = video_shape(&stream);
        let mut times = pts.get(index).cloned().unwrap_or_default();
        times.sort_unstable();
        let Timing {
            interval_ms,
            jitter_ms,
            max_interval_ms,
            gaps,
            missing,
        } = timing(&times);
        let (calibration, calibration_error) = match track_calibration(&stream) {
            Ok(calibration) => (calibration, None),
            Err(e) => (None, Some(e.to_string())),
        };
        let is_imu = stream
            .metadata()
            .get("type")
            .is_some_and(|t| t.eq_ignore_ascii_case("imu"));
        streams.push(StreamReport {
            index,
            name: track.name.clone(),
            kind: track.kind.clone(),
            codec: track.codec.clone(),
            width,
            height,
            pixel_format,
            packets: track.packets,
            keyframes: track.keyframes,
            frames_decoded: track.frames_decoded,
            decode_errors: track.decode_errors,
            first_s: track.first_pts_us.map(seconds),
            last_s: track.last_pts_us.map(seconds),
            span_s: track
                .first_pts_us
                .zip(track.last_pts_us)
                .map(|(f, l)| seconds(l - f)),
            interval_ms,
            jitter_ms,
            max_interval_ms,
            gaps,
            missing_frames: missing,
            dropped_by_writer: manifest.as_ref().and_then(|m| {
                m.streams
                    .iter()
                    .find(|s| s.name == track.name)
                    .and_then(|s| s.frames_dropped)
            }),
            calibration,
            calibration_error,
            imu: is_imu.then(|| ImuReport {
                samples: 0,
                rate_hz: None,
                jitter_ms: None,
                gaps: Vec::new(),
                missing_samples: 0,
                values: Vec::new(),
            }),
            pts_us: times,
        });
    }
    let marks_s = input
        .chapters()
        .map(|c| seconds(rescale(c.start(), c.time_base(), MICROS)))
        .collect();
    let duration_s = input.duration() as f64 / f64::from(ffmpeg::ffi::AV_TIME_BASE);
    read_imu_samples(&mut input, path, &mut streams)?;
    let origin_unix_us = verdict.summary.origin_unix_us;
    Ok(Inspection {
        file: path.to_owned(),
        size_bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        duration_s,
        origin_unix_us,
        started_at: origin_unix_us.map(crate::clock::rfc3339_ms),
        streams,
        marks_s,
        verdict,
    })
}

/// Width, height and pixel format of a video track (`None`s for other tracks).
fn video_shape(
    stream: &ffmpeg::format::stream::Stream,
) -> (Option<u32>, Option<u32>, Option<String>) {
    if stream.parameters().medium() != media::Type::Video {
        return (None, None, None);
    }
    let decoder = ffmpeg::codec::context::Context::from_parameters(stream.parameters())
        .and_then(|c| c.decoder().video());
    match decoder {
        Ok(d) => (
            Some(d.width()),
            Some(d.height()),
            d.format().descriptor().map(|f| f.name().to_owned()),
        ),
        Err(_) => (None, None, None),
    }
}

/// Decode the payload of every packet of the IMU tracks (a packet that is no IMU
/// payload adds nothing) and time the samples.
fn read_imu_samples(
    input: &mut ffmpeg::format::context::Input,
    path: &Path,
    streams: &mut [StreamReport],
) -> Result<()> {
    if streams.iter().all(|s| s.imu.is_none()) {
        return Ok(());
    }
    // The verdict has said whether the file is cut short: read what is readable.
    while let Some(packet) = read_packet(input, path, true)? {
        let Some(imu) = streams
            .get_mut(packet.stream())
            .and_then(|s| s.imu.as_mut())
        else {
            continue;
        };
        if let Some(samples) = packet.data().and_then(decode_batch) {
            imu.values.extend(samples);
        }
    }
    for imu in streams.iter_mut().filter_map(|s| s.imu.as_mut()) {
        imu.values.sort_by_key(|s| s.t_us);
        let times: Vec<i64> = imu.values.iter().map(|s| s.t_us).collect();
        let t = timing(&times);
        imu.samples = times.len() as u64;
        imu.rate_hz = t.interval_ms.filter(|&ms| ms > 0.0).map(|ms| 1000.0 / ms);
        imu.jitter_ms = t.jitter_ms;
        imu.gaps = t.gaps;
        imu.missing_samples = t.missing;
    }
    Ok(())
}

impl Inspection {
    /// The report as a table for a person.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}: {} bytes, {:.3} s, started {}",
            self.file.display(),
            self.size_bytes,
            self.duration_s,
            self.started_at.as_deref().unwrap_or("(unknown)")
        );
        let _ = writeln!(
            out,
            "{:<10} {:<9} {:<6} {:<10} {:>7} {:>8} {:>8} {:>11} {:>9} {:>5} {:>7} {:>7}",
            "stream",
            "kind",
            "codec",
            "size",
            "packets",
            "first_s",
            "span_s",
            "interval_ms",
            "jitter_ms",
            "gaps",
            "missing",
            "dropped"
        );
        let or_dash = |v: Option<f64>, digits: usize| {
            v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
        };
        for s in &self.streams {
            let size = match (s.width, s.height) {
                (Some(w), Some(h)) => format!("{w}x{h}"),
                _ => "-".to_owned(),
            };
            let _ = writeln!(
                out,
                "{:<10} {:<9} {:<6} {:<10} {:>7} {:>8} {:>8} {:>11} {:>9} {:>5} {:>7} {:>7}",
                s.name,
                s.kind,
                s.codec,
                size,
                s.packets,
                or_dash(s.first_s, 3),
                or_dash(s.span_s, 3),
                or_dash(s.interval_ms, 1),
                or_dash(s.jitter_ms, 2),
                s.gaps.len(),
                s.missing_frames,
                s.dropped_by_writer
                    .map_or_else(|| "-".to_owned(), |d| d.to_string()),
            );
        }
        for s in &self.streams {
            if let Some(imu) = &s.imu {
                let _ = writeln!(
                    out,
                    "{} samples: {} at {} Hz, jitter {} ms, {} gaps, {} missing",
                    s.name,
                    imu.samples,
                    or_dash(imu.rate_hz, 1),
                    or_dash(imu.jitter_ms, 2),
                    imu.gaps.len(),
                    imu.missing_samples
                );
            }
            if let Some(c) = &s.calibration {
                let _ = writeln!(out, "{} calibration: {}", s.name, describe(c));
            }
            if let Some(e) = &s.calibration_error {
                let _ = writeln!(out, "{} calibration unreadable: {e}", s.name);
            }
            for g in &s.gaps {
                let _ = writeln!(
                    out,
                    "{} gap at {:.3} s: {:.3} s, {} missing",
                    s.name, g.at_s, g.length_s, g.missing
                );
            }
        }
        let marks: Vec<String> = self.marks_s.iter().map(|m| format!("{m:.3} s")).collect();
        let _ = writeln!(
            out,
            "marks: {}",
            if marks.is_empty() {
                "none".to_owned()
            } else {
                marks.join(", ")
            }
        );
        if self.verdict.ok {
            let _ = writeln!(out, "verdict: ok");
        } else {
            let _ = writeln!(out, "verdict: NOT OK: {}", self.verdict.why.join("; "));
        }
        out
    }
}

/// A calibration in one line: what it sets, in the config's terms.
fn describe(c: &Calibration) -> String {
    let numbers = |v: &[f64]| v.iter().map(f64::to_string).collect::<Vec<_>>().join(", ");
    let mut parts = Vec::new();
    if let Some([fx, fy, cx, cy]) = c.intrinsics {
        parts.push(format!("fx {fx} fy {fy} cx {cx} cy {cy}"));
    }
    if let Some(model) = c.distortion_model {
        parts.push(format!(
            "{} [{}]",
            model.kalibr_name(),
            numbers(&c.distortion_coeffs)
        ));
    }
    if let Some(t) = c.t_imu_cam {
        parts.push(format!("t_imu_cam [{}]", numbers(&t.concat())));
    }
    if c.timeshift_cam_imu_s != 0.0 {
        parts.push(format!("timeshift_cam_imu {} s", c.timeshift_cam_imu_s));
    }
    if let Some(mm) = c.depth_unit_mm {
        parts.push(format!("depth unit {mm} mm"));
    }
    if c.rotation_deg != 0 {
        parts.push(format!("rotated {}°", c.rotation_deg));
    }
    if c.flip != Default::default() {
        parts.push(format!("flipped {:?}", c.flip).to_lowercase());
    }
    if parts.is_empty() {
        "empty".to_owned()
    } else {
        parts.join(", ")
    }
}
