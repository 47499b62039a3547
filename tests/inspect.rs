//! `grabd inspect FILE [--json] [--png OUT]` (issue 17 item 3): what it says of a
//! recording is checked against an independent reader (ffprobe, and the packets read
//! here with libavformat), and its picture is checked pixel by pixel.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::cli::grabd;
use common::{depth_config, rgb_config, video_frame, wait_until, FRAME_US, T0};
use grabd::recording::{
    Calibration, DataStreamConfig, DistortionModel, Recording, StreamConfig, VideoStreamConfig,
    WriterOptions,
};
use grabd::sensors::{encode_batch, ImuSample, IMU_TRACK_TAGS};
use serde_json::Value;

/// The frames of rgb left out of the recording: a gap of 10 frames after frame 29.
const RGB_HOLE: std::ops::Range<u64> = 30..40;
const FRAMES: u64 = 75;
/// IMU samples per frame (100 Hz at 25 fps).
const SAMPLES_PER_FRAME: i64 = 4;

/// A finished recording (rgb H.264, depth FFV1, a 100 Hz IMU) of 3 s with a hole in rgb
/// and one mark at 1 s; returns (its folder, the MKV).
fn record_with_hole_and_mark() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let (spool, output) = (tmp.path().join("spool"), tmp.path().join("out"));
    let streams = vec![
        ("rgb".to_owned(), StreamConfig::Video(calibrated_rgb())),
        ("depth".to_owned(), StreamConfig::Video(depth_config())),
        ("imu".to_owned(), StreamConfig::Data(imu_config())),
    ];
    let mut rec = Recording::start(&spool, &output, streams, WriterOptions::default()).unwrap();
    let (rgb, depth, imu) = (
        rec.sender("rgb").unwrap(),
        rec.sender("depth").unwrap(),
        rec.sender("imu").unwrap(),
    );
    for i in 0..FRAMES {
        let ts = T0 + i as i64 * FRAME_US;
        if !RGB_HOLE.contains(&i) {
            common::push_blocking(&rgb, video_frame(&rgb_config(), ts, i));
        }
        common::push_blocking(&depth, video_frame(&depth_config(), ts, i));
        let samples: Vec<ImuSample> = (0..SAMPLES_PER_FRAME)
            .map(|k| ImuSample {
                t_us: ts - (SAMPLES_PER_FRAME - 1 - k) * 10_000,
                accel: [0.1 * (i % 7) as f32, -0.2, 9.81],
                gyro: [0.0, 0.01 * (i % 5) as f32, -0.02],
                temp_c: Some(30.0),
            })
            .collect();
        common::push_blocking(
            &imu,
            grabd::recording::Frame::new(ts, encode_batch(&samples, T0)),
        );
        if i == 30 {
            assert!(wait_until(Duration::from_secs(10), || rec
                .writer()
                .origin()
                .is_some()));
            let origin = rec.writer().origin().unwrap();
            assert_eq!(origin.monotonic_us, T0);
            rec.mark(T0 + 1_000_000).unwrap();
        }
    }
    let finished = rec.stop().unwrap().finished.expect("a final file");
    (tmp, finished.mkv)
}

/// rgb with a calibration (stored as its track tag).
fn calibrated_rgb() -> VideoStreamConfig {
    let mut config = rgb_config();
    config.calibration = Some(Box::new(Calibration {
        intrinsics: Some([60.0, 61.0, 32.5, 24.0]),
        distortion_model: Some(DistortionModel::Radtan),
        distortion_coeffs: vec![0.1, -0.05, 0.001, 0.0],
        rotation_deg: 180,
        ..Default::default()
    }));
    config
}

/// A data stream tagged as grabd's IMU streams are (`type=imu`, payload version 3).
fn imu_config() -> DataStreamConfig {
    IMU_TRACK_TAGS
        .into_iter()
        .fold(DataStreamConfig::default(), |c, (k, v)| {
            c.with_metadata(k, v)
        })
}

/// `grabd inspect ARGS…`: (exit code, stdout, stderr).
fn inspect(args: &[&std::ffi::OsStr]) -> common::cli::Run {
    let mut all: Vec<&std::ffi::OsStr> = vec!["inspect".as_ref()];
    all.extend_from_slice(args);
    grabd(all)
}

fn inspect_json(mkv: &Path) -> Value {
    let r = inspect(&[mkv.as_os_str(), "--json".as_ref()]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", r.stdout))
}

/// Packet times (s) per stream index, and the container duration, as ffprobe reads them.
fn ffprobe_view(mkv: &Path) -> (BTreeMap<u64, Vec<f64>>, f64) {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "packet=stream_index,pts_time",
        ])
        .args(["-show_entries", "format=duration", "-of", "json"])
        .arg(mkv)
        .output()
        .expect("ffprobe");
    assert!(out.status.success());
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut times: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for p in json["packets"].as_array().unwrap() {
        let t: f64 = p["pts_time"].as_str().unwrap().parse().unwrap();
        times
            .entry(p["stream_index"].as_u64().unwrap())
            .or_default()
            .push(t);
    }
    let duration = json["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    (times, duration)
}

fn close(a: &Value, b: f64) -> bool {
    a.as_f64().is_some_and(|a| (a - b).abs() < 1e-6)
}

#[test]
fn json_numbers_are_what_ffprobe_reads_and_the_hole_and_mark_are_found() {
    let (_tmp, mkv) = record_with_hole_and_mark();
    let report = inspect_json(&mkv);
    let (times, duration) = ffprobe_view(&mkv);

    assert!(close(&report["duration_s"], duration), "{report}");
    let streams = report["streams"].as_array().unwrap();
    assert_eq!(streams.len(), times.len(), "{report}");
    for s in streams {
        let t = &times[&s["index"].as_u64().unwrap()];
        let (first, last) = (
            t.iter().copied().fold(f64::MAX, f64::min),
            t.iter().copied().fold(f64::MIN, f64::max),
        );
        assert_eq!(s["packets"], t.len() as u64, "{s}");
        assert!(close(&s["first_s"], first), "{s} vs {first}");
        assert!(close(&s["last_s"], last), "{s} vs {last}");
    }
    let by_name = |name: &str| -> &Value {
        streams
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {report}"))
    };

    // The hole in rgb: one gap, from frame 29 to frame 40, 10 frames missing.
    let rgb = by_name("rgb");
    assert_eq!(rgb["packets"], FRAMES - 10);
    assert_eq!(rgb["kind"], "video");
    assert_eq!(
        (rgb["width"].as_u64(), rgb["height"].as_u64()),
        (Some(64), Some(48))
    );
    assert!(close(&rgb["interval_ms"], 40.0), "{rgb}");
    let gaps = rgb["gaps"].as_array().unwrap();
    assert_eq!(gaps.len(), 1, "{rgb}");
    assert!(close(&gaps[0]["at_s"], 29.0 * 0.04), "{rgb}");
    assert!(close(&gaps[0]["length_s"], 11.0 * 0.04), "{rgb}");
    assert_eq!(gaps[0]["missing"], 10);
    assert_eq!(rgb["missing_frames"], 10);
    assert_eq!(rgb["frames_decoded"], FRAMES - 10);
    let depth = by_name("depth");
    assert_eq!(depth["gaps"].as_array().unwrap().len(), 0, "{depth}");
    assert_eq!(depth["missing_frames"], 0);

    // The IMU samples, decoded from the payloads and counted here independently.
    let tracks = common::read_tracks(&mkv);
    let samples: usize = common::track(&tracks, "imu")
        .packets
        .iter()
        .map(|p| {
            let v: Value = serde_json::from_slice(&p.data).unwrap();
            v["samples"].as_array().unwrap().len()
        })
        .sum();
    let imu = &by_name("imu")["imu"];
    assert_eq!(imu["samples"], samples as u64, "{imu}");
    assert_eq!(imu["samples"], FRAMES * SAMPLES_PER_FRAME as u64);
    assert!(close(&imu["rate_hz"], 100.0), "{imu}");
    assert_eq!(imu["gaps"].as_array().unwrap().len(), 0, "{imu}");

    // The calibration, read back from rgb's track tag; depth has none.
    let calibration: Calibration =
        serde_json::from_value(rgb["calibration"].clone()).expect("rgb calibration");
    assert_eq!(calibration, *calibrated_rgb().calibration.unwrap());
    assert!(depth["calibration"].is_null(), "{depth}");

    // The mark: a chapter of the file, at 1 s.
    let marks = report["marks_s"].as_array().unwrap();
    assert_eq!(marks.len(), 1, "{report}");
    assert!(close(&marks[0], 1.0), "{report}");

    // The manifest's verdict is grabd verify's.
    let verify = common::cli::verify(&mkv);
    assert_eq!(report["verdict"]["ok"], verify["ok"], "{report}");
    assert_eq!(report["verdict"]["ok"], true, "{report}");
    assert_eq!(report["verdict"]["why"], verify["why"]);

    // The table says the same in words.
    let r = inspect(&[mkv.as_os_str()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for needle in [
        "rgb",
        "depth",
        "imu",
        "h264",
        "ffv1",
        "rgb calibration: fx 60 fy 61 cx 32.5 cy 24, radtan [0.1, -0.05, 0.001, 0], rotated 180°",
        "verdict: ok",
    ] {
        assert!(r.stdout.contains(needle), "no {needle:?} in\n{}", r.stdout);
    }
}

/// The layout the module documents: 1280 px wide; 10 px margins and gaps; a 90 px
/// strip per camera, 150 px each for the accelerometer and the gyro, 120 px of frame
/// intervals.
const WIDTH: u32 = 1280;
const MARGIN: u32 = 10;
const STRIP: u32 = 90;

#[test]
fn png_has_the_documented_size_and_every_camera_strip_shows_pictures() {
    let (tmp, mkv) = record_with_hole_and_mark();
    let png = tmp.path().join("look.png");
    let r = inspect(&[mkv.as_os_str(), "--png".as_ref(), png.as_os_str()]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);

    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb);
    let two_cameras_and_an_imu = MARGIN + 2 * (STRIP + MARGIN) + 2 * (150 + MARGIN) + 120 + MARGIN;
    assert_eq!((info.width, info.height), (WIDTH, two_cameras_and_an_imu));

    let pixel = |x: u32, y: u32| {
        let i = ((y * info.width + x) * 3) as usize;
        [pixels[i], pixels[i + 1], pixels[i + 2]]
    };
    for camera in 0..2 {
        let top = MARGIN + camera * (STRIP + MARGIN);
        let mut colours = std::collections::BTreeSet::new();
        let mut covered = 0;
        for x in MARGIN..WIDTH - MARGIN {
            let column: Vec<[u8; 3]> = (top..top + STRIP).map(|y| pixel(x, y)).collect();
            if column.iter().any(|&p| p != [255, 255, 255]) {
                covered += 1;
            }
            colours.extend(column);
        }
        let width = WIDTH - 2 * MARGIN;
        assert!(
            covered * 10 >= width * 8,
            "camera {camera}: only {covered} of {width} columns hold a picture"
        );
        assert!(
            colours.len() >= 16,
            "camera {camera}: {} colours, not a picture",
            colours.len()
        );
    }
    // The traces below are drawn (not left white).
    let imu_top = MARGIN + 2 * (STRIP + MARGIN);
    let drawn = (imu_top..imu_top + 150)
        .flat_map(|y| (MARGIN..WIDTH - MARGIN).map(move |x| (x, y)))
        .filter(|&(x, y)| pixel(x, y) != [255, 255, 255])
        .count();
    assert!(drawn > 1000, "accelerometer area: {drawn} pixels drawn");
}

#[test]
fn a_file_that_is_not_a_recording_is_one_line_and_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let junk = tmp.path().join("junk.mkv");
    std::fs::write(&junk, vec![0x42u8; 10_000]).unwrap();
    for path in [junk, tmp.path().join("missing.mkv")] {
        let r = inspect(&[path.as_os_str(), "--json".as_ref()]);
        assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
        let line = r.one_line_error();
        assert!(line.contains(&*path.to_string_lossy()), "{line}");
        assert!(r.stdout.is_empty(), "{}", r.stdout);
    }
}
