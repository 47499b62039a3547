//! Shared helpers of the ChunkedWriter integration tests (`writer_timeline.rs`,
//! `writer_faults.rs`): small stream configs, synthetic frames, a writer rig with a final
//! output, and read-back of the files with libavformat (`ffmpeg_next`) and `ffprobe`.
//! The tests of the `grabd` binary share [`cli`].
//!
//! Every claim the tests make about what was recorded comes from reading the files back
//! here, never from the writer's own counters.

#![allow(dead_code)]

pub mod cli;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use grabd::recording::merge::list_chunks;
use grabd::recording::{
    ChunkedWriter, DataStreamConfig, FinalOutput, Frame, StreamSender, VideoStreamConfig,
    WriterOptions, WriterReport,
};

/// An arbitrary time domain for test frames (µs): far from the monotonic clock, so the
/// writer must not care where timestamps come from.
pub const T0: i64 = 7_000_000_000;
/// 25 fps, a whole number of milliseconds (MKV stores ms).
pub const FRAME_US: i64 = 40_000;

/// 64x48 H.264 from rgb24: ultrafast, no B-frames, GOP 25.
pub fn rgb_config() -> VideoStreamConfig {
    sized_rgb_config(64, 48)
}

pub fn sized_rgb_config(width: u32, height: u32) -> VideoStreamConfig {
    VideoStreamConfig::new(width, height, 25.0)
        .expect("rgb config")
        .with_option("preset", "ultrafast")
        .with_option("bf", "0")
        .with_option("g", "25")
}

/// 64x48 H.264 that holds frames back the way a real camera setup does: B-frames, a
/// 40-frame lookahead (1.6 s at 25 fps, longer than the tests' 1 s chunks) and no
/// keyframe of its own before frame 250, so every chunk boundary depends on the
/// keyframe the writer forces.
pub fn deep_rgb_config() -> VideoStreamConfig {
    rgb_config()
        .with_option("preset", "medium")
        .with_option("bf", "3")
        .with_option("g", "250")
}

/// Packets that carry x264's version SEI, which each new libx264 encoder puts in its
/// first frame: how many encoders made a track.
pub fn x264_encoder_starts(track: &TrackRead) -> usize {
    let marker = b"x264 - core";
    track
        .packets
        .iter()
        .filter(|p| p.data.windows(marker.len()).any(|w| w == marker))
        .count()
}

/// Check a chunk's track against what was pushed: exactly the frames of the chunk's
/// interval (PTS relative to the chunk's start), starting with a keyframe.
pub fn assert_chunk_track(chunk: &Path, start_us: i64, length_us: i64, name: &str, pushed: &[i64]) {
    let tracks = read_tracks(chunk);
    let t = track(&tracks, name);
    assert!(
        t.packets.first().is_some_and(|p| p.key),
        "{}: {name} does not start with a keyframe",
        chunk.display()
    );
    let mut pts = t.pts();
    pts.sort_unstable();
    let expected: Vec<i64> = pushed
        .iter()
        .filter(|&&t| t >= start_us && t < start_us + length_us)
        .map(|t| t - start_us)
        .collect();
    assert_eq!(pts, expected, "{}: {name} frames", chunk.display());
}

/// 32x24 FFV1 gray16le (lossless).
pub fn depth_config() -> VideoStreamConfig {
    VideoStreamConfig::new(32, 24, 25.0)
        .expect("depth config")
        .with_codec("ffv1", "gray16le", "gray16le")
        .expect("ffv1 gray16le")
        .with_bitrate(0)
}

/// One stream of a test rig.
#[derive(Clone)]
pub enum Spec {
    Video(&'static str, VideoStreamConfig),
    Data(&'static str),
}

impl Spec {
    pub fn name(&self) -> &'static str {
        match self {
            Spec::Video(n, _) | Spec::Data(n) => n,
        }
    }

    /// The frame this stream gets at `ts` (its `i`-th): a moving pattern for video, a
    /// small JSON record for data.
    pub fn frame(&self, ts: i64, i: u64) -> Frame {
        match self {
            Spec::Video(_, config) => video_frame(config, ts, i),
            Spec::Data(_) => Frame::new(ts, imu_payload(ts, i)),
        }
    }
}

/// The standard three streams: rgb (H.264), depth (FFV1) and imu (data).
pub fn standard_specs() -> Vec<Spec> {
    vec![
        Spec::Video("rgb", rgb_config()),
        Spec::Video("depth", depth_config()),
        Spec::Data("imu"),
    ]
}

/// Two streams: rgb with `rgb` as its config, and imu (data).
pub fn rgb_and_imu_specs(rgb: VideoStreamConfig) -> Vec<Spec> {
    vec![Spec::Video("rgb", rgb), Spec::Data("imu")]
}

/// A packed raw frame of `config`'s input format whose bytes change with `i`.
pub fn video_frame(config: &VideoStreamConfig, ts: i64, i: u64) -> Frame {
    let size = config.input_frame_size().expect("frame size");
    let data: Vec<u8> = (0..size)
        .map(|j| ((j as u64 * 7 + i * 13) % 251) as u8)
        .collect();
    Frame::new(ts, data)
}

/// The IMU record pushed at `ts`: JSON with the µs timestamp inside (the file keeps ms).
pub fn imu_payload(ts: i64, i: u64) -> Vec<u8> {
    format!(
        r#"{{"t_us":{ts},"i":{i},"accel":[0.01,{:.3},9.81],"gyro":[0.0,0.0,{:.4}]}}"#,
        (i % 17) as f64 * 0.125,
        (i % 5) as f64 * 0.0625
    )
    .into_bytes()
}

/// Push, retrying every millisecond while the queue is full. Returns how many pushes were
/// refused on the way. Panics if the frame is not taken within 20 s.
pub fn push_blocking(sender: &StreamSender, frame: Frame) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut refused = 0;
    while !sender.push(frame.clone()) {
        refused += 1;
        assert!(
            Instant::now() < deadline,
            "a frame at {} was not accepted within 20 s",
            frame.timestamp_us
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    refused
}

/// A started writer over a temp spool folder, with its final output in a separate folder.
pub struct Rig {
    pub tmp: tempfile::TempDir,
    pub spool: PathBuf,
    pub output_dir: PathBuf,
    pub final_path: PathBuf,
    pub specs: Vec<Spec>,
    pub writer: ChunkedWriter,
    senders: BTreeMap<&'static str, StreamSender>,
    /// Frames pushed (accepted) per stream, as (timestamp µs, payload) in push order.
    pub accepted: BTreeMap<&'static str, Vec<(i64, Vec<u8>)>>,
}

pub fn options(chunk_ms: u64) -> WriterOptions {
    WriterOptions {
        chunk_length: Duration::from_millis(chunk_ms),
        ..WriterOptions::default()
    }
}

impl Rig {
    pub fn start(name: &str, specs: Vec<Spec>, mut options: WriterOptions) -> Rig {
        let tmp = tempfile::tempdir().expect("temp dir");
        let spool = tmp.path().join("spool");
        let output_dir = tmp.path().join("out");
        std::fs::create_dir_all(&output_dir).expect("output dir");
        let final_path = output_dir.join(format!("{name}.mkv"));
        options.final_output = Some(FinalOutput {
            path: final_path.clone(),
            global_tags: vec![],
            marks: Default::default(),
        });
        let videos = specs
            .iter()
            .filter_map(|s| match s {
                Spec::Video(n, c) => Some((n.to_string(), c.clone())),
                Spec::Data(_) => None,
            })
            .collect();
        let datas = specs
            .iter()
            .filter_map(|s| match s {
                Spec::Data(n) => Some((n.to_string(), DataStreamConfig::default())),
                Spec::Video(..) => None,
            })
            .collect();
        let mut writer =
            ChunkedWriter::new(name, &spool, videos, datas, options).expect("create writer");
        writer.start().expect("start writer");
        let senders = specs
            .iter()
            .map(|s| (s.name(), writer.sender(s.name()).expect("sender")))
            .collect();
        Rig {
            tmp,
            spool,
            output_dir,
            final_path,
            specs,
            writer,
            senders,
            accepted: BTreeMap::new(),
        }
    }

    pub fn sender(&self, name: &str) -> &StreamSender {
        &self.senders[name]
    }

    pub fn spec(&self, name: &str) -> Spec {
        self.specs
            .iter()
            .find(|s| s.name() == name)
            .cloned()
            .expect("known stream")
    }

    /// Push stream `name`'s `i`-th frame at `ts`, waiting while its queue is full.
    pub fn push(&mut self, name: &'static str, ts: i64, i: u64) {
        let frame = self.spec(name).frame(ts, i);
        let data = frame.data.to_vec();
        push_blocking(self.sender(name), frame);
        self.accepted.entry(name).or_default().push((ts, data));
    }

    /// Push frame `i` (at `T0 + i·40 ms`) to each of `names`.
    pub fn push_all(&mut self, names: &[&'static str], i: u64) {
        for &name in names {
            self.push(name, T0 + i as i64 * FRAME_US, i);
        }
    }

    /// Media times (µs from `origin`) of what `name` had accepted.
    pub fn accepted_media_us(&self, name: &str, origin: i64) -> Vec<i64> {
        self.accepted
            .get(name)
            .map(|v| v.iter().map(|(ts, _)| ts - origin).collect())
            .unwrap_or_default()
    }

    pub fn stop(&mut self) -> WriterReport {
        self.writer.stop().expect("stop writer")
    }

    /// Stop, and fail if the finalizer reported an error.
    pub fn stop_cleanly(&mut self) -> WriterReport {
        let report = self.stop();
        assert!(
            report.finalize.errors.is_empty(),
            "finalizer errors: {:?}",
            report.finalize.errors
        );
        report
    }

    /// The chunk files in the spool folder, by their start tag.
    pub fn chunks(&self) -> Vec<(i64, PathBuf)> {
        list_chunks(&self.spool).expect("list chunks")
    }

    /// The final file decodes without an error, each `(track, frames)` decodes exactly
    /// that many frames, and nothing temporary is left behind.
    pub fn assert_final_decodes(&self, frames: &[(&str, u64)]) {
        let decoded =
            grabd::recording::probe::inspect(&self.final_path, true, None).expect("inspect final");
        assert_eq!(
            decoded.decode_errors(),
            0,
            "decode errors in the final file"
        );
        for &(name, count) in frames {
            let track = decoded.track(name).expect("track in the final file");
            assert_eq!(track.frames_decoded, count, "{name}: frames decoded");
        }
        self.assert_no_leftovers();
    }

    /// Fail if a `.part` or `.tmp` file is left in the spool or output folder.
    pub fn assert_no_leftovers(&self) {
        let mut left = Vec::new();
        for dir in [&self.spool, &self.output_dir] {
            for entry in std::fs::read_dir(dir).expect("list dir") {
                let path = entry.expect("dir entry").path();
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                if name.ends_with(".part") || name.ends_with(".tmp") {
                    left.push(path);
                }
            }
        }
        assert!(left.is_empty(), "left behind after stop: {left:?}");
    }
}

/// The ids of the chunks the finalizer reports, in its order.
pub fn chunk_ids(report: &WriterReport) -> Vec<&str> {
    report
        .finalize
        .chunks
        .iter()
        .map(|c| c.id.as_str())
        .collect()
}

/// One packet as read back.
#[derive(Debug, Clone)]
pub struct Pkt {
    pub pts_us: i64,
    pub key: bool,
    pub data: Vec<u8>,
}

/// One track as read back: its name (the Matroska track name), medium and packets in
/// file order.
#[derive(Debug, Clone)]
pub struct TrackRead {
    pub name: String,
    pub medium: String,
    pub packets: Vec<Pkt>,
}

impl TrackRead {
    pub fn pts(&self) -> Vec<i64> {
        self.packets.iter().map(|p| p.pts_us).collect()
    }
}

/// Read every packet of `path` with libavformat; panics on any read error other than
/// the end of the file (a truncated file is a failure here).
pub fn read_tracks(path: &Path) -> Vec<TrackRead> {
    use ffmpeg_next as ff;
    ff::init().expect("ffmpeg init");
    let mut input = ff::format::input(&path)
        .unwrap_or_else(|e| panic!("open {} for reading: {e}", path.display()));
    let mut tracks: Vec<TrackRead> = Vec::new();
    let mut time_bases = Vec::new();
    for stream in input.streams() {
        let medium = match stream.parameters().medium() {
            ff::media::Type::Video => "video",
            ff::media::Type::Subtitle => "subtitle",
            ff::media::Type::Audio => "audio",
            _ => "other",
        };
        tracks.push(TrackRead {
            name: stream
                .metadata()
                .get("title")
                .map(str::to_owned)
                .unwrap_or_else(|| format!("#{}", stream.index())),
            medium: medium.into(),
            packets: Vec::new(),
        });
        time_bases.push(stream.time_base());
    }
    loop {
        let mut packet = ff::Packet::empty();
        match packet.read(&mut input) {
            Ok(()) => {}
            Err(ff::Error::Eof) => break,
            Err(e) => panic!("reading {} failed: {e}", path.display()),
        }
        let i = packet.stream();
        let tb = time_bases[i];
        let pts = packet
            .pts()
            .unwrap_or_else(|| panic!("a packet without PTS in {}", path.display()));
        let pts_us = i64::try_from(
            i128::from(pts) * 1_000_000 * i128::from(tb.numerator()) / i128::from(tb.denominator()),
        )
        .expect("pts fits");
        tracks[i].packets.push(Pkt {
            pts_us,
            key: packet.is_key(),
            data: packet.data().unwrap_or_default().to_vec(),
        });
    }
    tracks
}

/// The track called `name`, or a panic listing what is there.
pub fn track<'a>(tracks: &'a [TrackRead], name: &str) -> &'a TrackRead {
    tracks.iter().find(|t| t.name == name).unwrap_or_else(|| {
        let names: Vec<&str> = tracks.iter().map(|t| t.name.as_str()).collect();
        panic!("no track {name:?} in {names:?}")
    })
}

pub fn track_names(tracks: &[TrackRead]) -> Vec<String> {
    tracks.iter().map(|t| t.name.clone()).collect()
}

/// `ffprobe -count_packets` on `path`, printing every stream's index, packet count and
/// title as JSON (read each stream of it with [`ffprobe_stream_count`]).
pub fn ffprobe_count_packets(path: &Path) -> Command {
    let mut cmd = Command::new("ffprobe");
    cmd.args([
        "-v",
        "error",
        "-count_packets",
        "-show_entries",
        "stream=index,nb_read_packets:stream_tags=title",
        "-of",
        "json",
    ])
    .arg(path);
    cmd
}

/// One stream of [`ffprobe_count_packets`]' JSON: its title and packet count, where given.
pub fn ffprobe_stream_count(s: &serde_json::Value) -> (Option<&str>, Option<u64>) {
    let title = s["tags"]["title"]
        .as_str()
        .or_else(|| s["tags"]["TITLE"].as_str());
    let n = s["nb_read_packets"].as_str().and_then(|n| n.parse().ok());
    (title, n)
}

/// Packets per track name as counted by `ffprobe -count_packets` (an independent reader;
/// it leaves the count out for a track without packets: 0 here).
pub fn ffprobe_packet_counts(path: &Path) -> BTreeMap<String, u64> {
    let out = ffprobe_count_packets(path).output().expect("run ffprobe");
    assert!(
        out.status.success(),
        "ffprobe failed on {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    json["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .map(|s| {
            let (name, n) = ffprobe_stream_count(s);
            (name.expect("track title").to_owned(), n.unwrap_or(0))
        })
        .collect()
}

/// Wait (polling) until `cond` holds; false if `timeout` passes first.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Assert that consecutive PTS strictly increase and never jump by more than `max_gap`.
pub fn assert_continuous(what: &str, pts: &[i64], max_gap: i64) {
    for w in pts.windows(2) {
        assert!(
            w[1] > w[0],
            "{what}: PTS go back or repeat: {} then {}",
            w[0],
            w[1]
        );
        assert!(
            w[1] - w[0] <= max_gap,
            "{what}: gap of {} µs between {} and {} (max {max_gap})",
            w[1] - w[0],
            w[0],
            w[1]
        );
    }
}

/// Every IMU sample in the `imu` track of `path` has its own time (`t_us`, payload
/// version 3) on the recording's timeline: at or before its packet's time (which is
/// whole ms in the file) and after the packet before it (the samples since then); only
/// the first packet's may lie before the recording's zero.
pub fn assert_imu_times_on_the_timeline(path: &Path) {
    let tracks = read_tracks(path);
    let imu = track(&tracks, "imu");
    assert!(
        !imu.packets.is_empty(),
        "no IMU packets in {}",
        path.display()
    );
    // The first packet also holds what was read before the first frame.
    let mut previous_us: Option<i64> = None;
    let mut samples = 0;
    for p in &imu.packets {
        let payload: serde_json::Value = serde_json::from_slice(&p.data).expect("IMU JSON");
        assert_eq!(payload["version"], 3, "{payload}");
        for s in payload["samples"].as_array().expect("samples") {
            let t = s["t_us"].as_i64().expect("t_us");
            assert!(
                t <= p.pts_us + 1000 && previous_us.map_or(true, |before| t > before - 1000),
                "sample at {t} µs in the packet at {} µs (the one before at {previous_us:?} µs)",
                p.pts_us
            );
            samples += 1;
        }
        previous_us = Some(p.pts_us);
    }
    assert!(samples > 0, "IMU packets without samples");
}
