//! `--format mcap`: one MCAP file (`<recording>.mcap`) that Foxglove opens and plays.
//!
//! - H.264 cameras: `foxglove.CompressedVideo` on `/<stream>/video`, one message per
//!   packet, copied (not re-encoded) through libavcodec's `h264_mp4toannexb` filter:
//!   Annex B, and every IDR carrying its SPS/PPS, as Foxglove wants.
//! - Depth (16-bit grey): `foxglove.RawImage` (`16UC1`) on `/<stream>/depth`, decoded.
//! - IMUs: one JSON message per sample on `/<stream>` with the fields of ROS's
//!   `sensor_msgs/Imu` (Foxglove has no IMU schema; orientation unknown: covariance −1).
//! - Calibration: `foxglove.CameraCalibration` on `/<stream>/calibration` with the
//!   camera's first frame, when the track has intrinsics.
//!
//! Log times are absolute (the recording's origin plus media time, ns). Written with the
//! `mcap` crate: chunked, uncompressed (H.264 does not shrink), indexed, with CRCs.

use std::collections::BTreeMap;
use std::path::Path;

use ffmpeg_next::{self as ffmpeg, ffi, packet::Mut as _};
use foxglove::schemas::{CameraCalibration, CompressedVideo, RawImage, Timestamp};
use foxglove::Encode;

use super::read::{Sink, Track, TrackKind};
use super::{streams_for, Error, Format, Progress, Report, Result, Selection};
use crate::sensors::ImuSample;

/// Export the selection of `recording` into `dir/<file stem>.mcap`.
pub fn write(
    recording: &mut super::read::Recording,
    selection: &Selection,
    dir: &Path,
    progress: &mut Progress,
) -> Result<Report> {
    let (tracks, skipped) = streams_for(
        recording,
        selection,
        Format::Mcap,
        &[TrackKind::Camera, TrackKind::Depth, TrackKind::Imu],
        "MCAP takes cameras, depth cameras and IMUs",
    )?;
    let stem = recording
        .path()
        .file_stem()
        .map_or_else(|| "recording".into(), |s| s.to_string_lossy().into_owned());
    let path = dir.join(format!("{stem}.mcap"));
    let file = std::fs::File::create(&path).map_err(|e| Error::io("create", &path, e))?;
    let options = ::mcap::WriteOptions::new()
        .compression(None)
        .profile("")
        .library(format!("grabd {}", env!("CARGO_PKG_VERSION")));
    let writer = options
        .create(std::io::BufWriter::with_capacity(1 << 20, file))
        .map_err(|e| mcap_error(&path, e))?;
    let mut sink = McapSink {
        path: path.clone(),
        writer,
        channels: BTreeMap::new(),
        annexb: BTreeMap::new(),
        origin_unix_us: recording.origin_unix_us,
        sequence: 0,
        report: Report {
            skipped,
            ..Default::default()
        },
    };
    for track in &tracks {
        sink.add_track(recording.path(), track)?;
    }
    recording.play(&tracks, selection, &mut sink, progress)?;
    for track in &tracks {
        sink.flush_annexb(track)?;
    }
    let McapSink {
        mut writer, report, ..
    } = sink;
    writer.finish().map_err(|e| mcap_error(&path, e))?;
    let file = writer
        .into_inner()
        .into_inner()
        .map_err(|e| Error::io("write", &path, e.into_error()))?;
    file.sync_all().map_err(|e| Error::io("fsync", &path, e))?;
    Ok(report)
}

fn mcap_error(path: &Path, e: ::mcap::McapError) -> Error {
    Error::BadFile {
        path: path.to_owned(),
        reason: format!("mcap: {e}"),
    }
}

/// The channels of one track.
struct Channels {
    data: u16,
    calibration: Option<u16>,
    calibration_sent: bool,
}

struct McapSink {
    path: std::path::PathBuf,
    writer: ::mcap::Writer<std::io::BufWriter<std::fs::File>>,
    channels: BTreeMap<usize, Channels>,
    annexb: BTreeMap<usize, AnnexB>,
    origin_unix_us: i64,
    sequence: u32,
    report: Report,
}

/// The JSON schema of an IMU sample: the fields of ROS's `sensor_msgs/Imu`.
const IMU_SCHEMA: &str = r#"{"type":"object","properties":{
"timestamp":{"type":"object","properties":{"sec":{"type":"integer"},"nsec":{"type":"integer"}}},
"frame_id":{"type":"string"},
"orientation":{"type":"object"},"orientation_covariance":{"type":"array","items":{"type":"number"}},
"angular_velocity":{"type":"object","properties":{"x":{"type":"number"},"y":{"type":"number"},"z":{"type":"number"}}},
"angular_velocity_covariance":{"type":"array","items":{"type":"number"}},
"linear_acceleration":{"type":"object","properties":{"x":{"type":"number"},"y":{"type":"number"},"z":{"type":"number"}}},
"linear_acceleration_covariance":{"type":"array","items":{"type":"number"}}}}"#;

impl McapSink {
    fn schema<T: Encode>(&mut self) -> Result<u16> {
        let schema = T::get_schema().ok_or_else(|| Error::BadFile {
            path: self.path.clone(),
            reason: "a Foxglove schema without a descriptor".into(),
        })?;
        self.writer
            .add_schema(&schema.name, &schema.encoding, &schema.data)
            .map_err(|e| mcap_error(&self.path, e))
    }

    fn channel(&mut self, schema: u16, topic: &str, encoding: &str) -> Result<u16> {
        self.writer
            .add_channel(schema, topic, encoding, &BTreeMap::new())
            .map_err(|e| mcap_error(&self.path, e))
    }

    fn add_track(&mut self, file: &Path, track: &Track) -> Result<()> {
        let name = &track.name;
        let data = match track.kind {
            TrackKind::Camera => {
                self.annexb.insert(track.index, AnnexB::open(file, track)?);
                let schema = self.schema::<CompressedVideo>()?;
                self.channel(schema, &format!("/{name}/video"), "protobuf")?
            }
            TrackKind::Depth => {
                let schema = self.schema::<RawImage>()?;
                self.channel(schema, &format!("/{name}/depth"), "protobuf")?
            }
            _ => {
                let schema = self
                    .writer
                    .add_schema("sensor_msgs/Imu", "jsonschema", IMU_SCHEMA.as_bytes())
                    .map_err(|e| mcap_error(&self.path, e))?;
                self.channel(schema, &format!("/{name}"), "json")?
            }
        };
        let calibration = if track.calibration.intrinsics.is_some() {
            let schema = self.schema::<CameraCalibration>()?;
            Some(self.channel(schema, &format!("/{name}/calibration"), "protobuf")?)
        } else {
            None
        };
        self.channels.insert(
            track.index,
            Channels {
                data,
                calibration,
                calibration_sent: false,
            },
        );
        Ok(())
    }

    fn unix_ns(&self, t_us: i64) -> u64 {
        u64::try_from((self.origin_unix_us + t_us).max(0)).unwrap_or(0) * 1000
    }

    fn put(&mut self, channel: u16, t_us: i64, bytes: &[u8]) -> Result<()> {
        let time = self.unix_ns(t_us);
        self.sequence = self.sequence.wrapping_add(1);
        self.writer
            .write_to_known_channel(
                &::mcap::records::MessageHeader {
                    channel_id: channel,
                    sequence: self.sequence,
                    log_time: time,
                    publish_time: time,
                },
                bytes,
            )
            .map_err(|e| mcap_error(&self.path, e))
    }

    fn timestamp(&self, t_us: i64) -> Timestamp {
        let ns = self.unix_ns(t_us);
        Timestamp::new(
            u32::try_from(ns / 1_000_000_000).unwrap_or(u32::MAX),
            (ns % 1_000_000_000) as u32,
        )
    }

    fn encode<T: Encode>(&self, message: &T) -> Result<Vec<u8>> {
        let mut bytes = Vec::with_capacity(message.encoded_len().unwrap_or(256));
        message.encode(&mut bytes).map_err(|e| Error::BadFile {
            path: self.path.clone(),
            reason: format!("encode a message: {e}"),
        })?;
        Ok(bytes)
    }

    /// The camera's calibration, once, with its first frame.
    fn calibration(&mut self, track: &Track, t_us: i64) -> Result<()> {
        let Some(channels) = self.channels.get_mut(&track.index) else {
            return Ok(());
        };
        let (Some(channel), false) = (channels.calibration, channels.calibration_sent) else {
            return Ok(());
        };
        channels.calibration_sent = true;
        let c = &track.calibration;
        let [fx, fy, cx, cy] = c.intrinsics.unwrap_or_default();
        let model = match c.distortion_model {
            Some(crate::recording::DistortionModel::Equidistant) => "kannala_brandt",
            _ => "plumb_bob",
        };
        let message = CameraCalibration {
            timestamp: Some(self.timestamp(t_us)),
            frame_id: track.name.clone(),
            width: track.width,
            height: track.height,
            distortion_model: model.into(),
            d: c.distortion_coeffs.clone(),
            k: vec![fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
            r: vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
            p: vec![fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0],
        };
        let bytes = self.encode(&message)?;
        self.put(channel, t_us, &bytes)
    }

    fn video_message(&mut self, track: &Track, t_us: i64, annexb: Vec<u8>) -> Result<()> {
        self.calibration(track, t_us)?;
        let message = CompressedVideo {
            timestamp: Some(self.timestamp(t_us)),
            frame_id: track.name.clone(),
            data: annexb.into(),
            format: "h264".into(),
        };
        let bytes = self.encode(&message)?;
        let channel = self.channels[&track.index].data;
        self.put(channel, t_us, &bytes)?;
        *self.report.frames.entry(track.name.clone()).or_default() += 1;
        Ok(())
    }

    /// Drain the filter of `track` at the end.
    fn flush_annexb(&mut self, track: &Track) -> Result<()> {
        let Some(mut filter) = self.annexb.remove(&track.index) else {
            return Ok(());
        };
        let out = filter.filter(None, &self.path)?;
        for (t_us, bytes) in out {
            self.video_message(track, t_us, bytes)?;
        }
        Ok(())
    }
}

impl Sink for McapSink {
    fn copies(&self, track: &Track) -> bool {
        track.kind == TrackKind::Camera
    }

    fn packet(&mut self, track: &Track, packet: &ffmpeg::Packet) -> Result<()> {
        let Some(filter) = self.annexb.get_mut(&track.index) else {
            return Ok(());
        };
        let out = filter.filter(Some(packet), &self.path)?;
        for (t_us, bytes) in out {
            self.video_message(track, t_us, bytes)?;
        }
        Ok(())
    }

    fn frame(&mut self, track: &Track, t_us: i64, frame: &ffmpeg::frame::Video) -> Result<()> {
        self.calibration(track, t_us)?;
        let (w, h) = (frame.width() as usize, frame.height() as usize);
        let stride = frame.stride(0);
        let mut data = Vec::with_capacity(w * h * 2);
        for row in frame.data(0).chunks(stride).take(h) {
            data.extend_from_slice(&row[..w * 2]);
        }
        let message = RawImage {
            timestamp: Some(self.timestamp(t_us)),
            frame_id: track.name.clone(),
            width: frame.width(),
            height: frame.height(),
            encoding: "16UC1".into(),
            step: frame.width() * 2,
            data: data.into(),
        };
        let bytes = self.encode(&message)?;
        let channel = self.channels[&track.index].data;
        self.put(channel, t_us, &bytes)?;
        *self.report.frames.entry(track.name.clone()).or_default() += 1;
        Ok(())
    }

    fn imu(&mut self, track: &Track, samples: &[ImuSample]) -> Result<()> {
        let channel = self.channels[&track.index].data;
        for s in samples {
            let ns = self.unix_ns(s.t_us);
            let xyz = |v: [f32; 3]| serde_json::json!({"x": v[0], "y": v[1], "z": v[2]});
            let message = serde_json::json!({
                "timestamp": {"sec": ns / 1_000_000_000, "nsec": ns % 1_000_000_000},
                "frame_id": track.name,
                "orientation": {"x": 0.0, "y": 0.0, "z": 0.0, "w": 1.0},
                "orientation_covariance": [-1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
                "angular_velocity": xyz(s.gyro),
                "angular_velocity_covariance": vec![0.0; 9],
                "linear_acceleration": xyz(s.accel),
                "linear_acceleration_covariance": vec![0.0; 9],
            });
            self.put(channel, s.t_us, message.to_string().as_bytes())?;
        }
        *self
            .report
            .imu_samples
            .entry(track.name.clone())
            .or_default() += samples.len() as u64;
        Ok(())
    }
}

/// libavcodec's `h264_mp4toannexb` bitstream filter on one track: Matroska's
/// length-prefixed H.264 (CodecPrivate holding SPS/PPS) into Annex B with the
/// parameter sets before every IDR.
struct AnnexB {
    context: *mut ffi::AVBSFContext,
    time_base: ffmpeg::Rational,
}

impl AnnexB {
    fn open(file: &Path, track: &Track) -> Result<AnnexB> {
        let input = crate::recording::media::open_for_copy(file)?;
        let stream = input.stream(track.index).ok_or_else(|| Error::BadFile {
            path: file.to_owned(),
            reason: format!("no track {}", track.index),
        })?;
        let failed = |what: &str, ret: i32| Error::BadFile {
            path: file.to_owned(),
            reason: format!(
                "stream {:?}: h264_mp4toannexb {what}: {}",
                track.name,
                ffmpeg::Error::from(ret)
            ),
        };
        let mut context = std::ptr::null_mut();
        // SAFETY: the filter name is a NUL-terminated literal; av_bsf_alloc fills
        // `context` (freed in Drop) or fails leaving it null; the stream's codecpar is
        // valid while `input` lives, and is copied into the filter's own par_in.
        unsafe {
            let filter = ffi::av_bsf_get_by_name(c"h264_mp4toannexb".as_ptr());
            if filter.is_null() {
                return Err(failed("not in this libavcodec", ffi::AVERROR_BSF_NOT_FOUND));
            }
            let ret = ffi::av_bsf_alloc(filter, &mut context);
            if ret < 0 {
                return Err(failed("alloc", ret));
            }
            let this = AnnexB {
                context,
                time_base: stream.time_base(),
            };
            let ret = ffi::avcodec_parameters_copy((*context).par_in, stream.parameters().as_ptr());
            if ret < 0 {
                return Err(failed("parameters", ret));
            }
            (*context).time_base_in = stream.time_base().into();
            let ret = ffi::av_bsf_init(context);
            if ret < 0 {
                return Err(failed("init", ret));
            }
            Ok(this)
        }
    }

    /// Filter `packet` (`None`: drain); returns the packets out, (media µs, bytes).
    fn filter(
        &mut self,
        packet: Option<&ffmpeg::Packet>,
        path: &Path,
    ) -> Result<Vec<(i64, Vec<u8>)>> {
        let failed = |what: &str, ret: i32| Error::BadFile {
            path: path.to_owned(),
            reason: format!("h264_mp4toannexb {what}: {}", ffmpeg::Error::from(ret)),
        };
        let mut out = Vec::new();
        // SAFETY: `self.context` is an initialised filter (see `open`); the packet sent
        // is a reference copy the filter takes over (av_bsf_send_packet takes ownership
        // of its contents), a null packet drains; packets received are owned here and
        // freed by ffmpeg::Packet's Drop.
        unsafe {
            let ret = match packet {
                Some(p) => {
                    let mut copy = p.clone();
                    ffi::av_bsf_send_packet(self.context, copy.as_mut_ptr())
                }
                None => ffi::av_bsf_send_packet(self.context, std::ptr::null_mut()),
            };
            if ret < 0 {
                return Err(failed("send", ret));
            }
            loop {
                let mut filtered = ffmpeg::Packet::empty();
                let ret = ffi::av_bsf_receive_packet(self.context, filtered.as_mut_ptr());
                if ret == ffi::AVERROR(nix::libc::EAGAIN) || ret == ffi::AVERROR_EOF {
                    break;
                }
                if ret < 0 {
                    return Err(failed("receive", ret));
                }
                let pts = filtered.pts().unwrap_or(0);
                let t_us = crate::recording::media::rescale(
                    pts,
                    self.time_base,
                    crate::recording::media::MICROS,
                );
                out.push((t_us, filtered.data().unwrap_or_default().to_vec()));
            }
        }
        Ok(out)
    }
}

impl Drop for AnnexB {
    fn drop(&mut self) {
        // SAFETY: the context was allocated by av_bsf_alloc and is freed once here.
        unsafe { ffi::av_bsf_free(&mut self.context) };
    }
}
