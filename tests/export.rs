//! Issue 17: calibration carried in the file and the manifest, and `grabd export` to
//! EuRoC, TUM RGB-D and plain frames. One short synthetic recording (rgb H.264, depth
//! FFV1 gray16le, IMU) is made once per run with `grabd record`; every claim about an
//! export is checked against that file read back with libavformat (packets, decoded
//! depth frames, IMU payloads), and the EuRoC and TUM outputs are loaded by
//! `tests/formats_reader.py`, a reader written from the formats' own descriptions.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::cli::{read_json, Rig};
use grabd::recording::{Calibration, DistortionModel};

/// 1 s chunks; a calibrated 160x100 rgb camera (a keyframe every 10 frames), an 80x50
/// depth camera in mm (every 40 frames: its keyframes lie before rgb's, see
/// `start_key`), a 200 Hz IMU batched with rgb.
const CONFIG: &str = r#"
[recording]
chunk_length_s = 1.0

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
options = { preset = "ultrafast", bf = "0", g = "10" }

[stream.calibration]
intrinsics = [150.0, 151.0, 80.5, 49.5]
distortion_model = "radtan"
distortion_coeffs = [0.01, -0.002, 0.0005, 0.0001]
t_imu_cam = [[0, -1, 0, 0.05], [1, 0, 0, -0.01], [0, 0, 1, 0.002], [0, 0, 0, 1]]
timeshift_cam_imu_s = 0.003
rotation_deg = 180

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
options = { g = "40" }
calibration = { depth_unit_mm = 1.0, intrinsics = [75.0, 75.0, 40.0, 25.0] }

[[stream]]
name = "imu"
kind = "data"
rate_hz = 200
batch_with = "rgb"
"#;

/// The recording every test here reads (made once; its folder lives for the run).
struct Recorded {
    /// Keeps the recording's folder.
    _rig: Rig,
    mkv: PathBuf,
}

fn recorded() -> &'static Recorded {
    static RECORDED: OnceLock<Recorded> = OnceLock::new();
    RECORDED.get_or_init(|| {
        let rig = Rig::with_config(CONFIG);
        let r = rig.run_record("2");
        assert_eq!(r.code, 0, "{}", r.stderr);
        let mkv = PathBuf::from(r.last_line().expect("the final path"));
        Recorded { _rig: rig, mkv }
    })
}

fn rgb_calibration() -> Calibration {
    Calibration {
        intrinsics: Some([150.0, 151.0, 80.5, 49.5]),
        distortion_model: Some(DistortionModel::Radtan),
        distortion_coeffs: vec![0.01, -0.002, 0.0005, 0.0001],
        t_imu_cam: Some([
            [0.0, -1.0, 0.0, 0.05],
            [1.0, 0.0, 0.0, -0.01],
            [0.0, 0.0, 1.0, 0.002],
            [0.0, 0.0, 0.0, 1.0],
        ]),
        timeshift_cam_imu_s: 0.003,
        rotation_deg: 180,
        ..Default::default()
    }
}

/// Item 1: the calibration of the config is in the finished file's track tags (read
/// back with libavformat) and in the manifest's stream configs.
#[test]
fn calibration_is_in_the_track_tags_and_the_manifest() {
    let rec = recorded();
    let in_file = grabd::recording::file_calibrations(&rec.mkv).expect("read the tags");
    assert_eq!(in_file.get("rgb"), Some(&rgb_calibration()));
    let depth = in_file.get("depth").expect("depth calibration");
    assert_eq!(depth.depth_unit_mm, Some(1.0));
    assert!(!in_file.contains_key("imu"), "{in_file:?}");

    // The raw tag, as ffprobe shows it to anyone.
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_streams", "-of", "json"])
        .arg(&rec.mkv)
        .output()
        .expect("ffprobe");
    let probed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe JSON");
    let rgb = probed["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["tags"]["title"] == "rgb")
        .expect("rgb track");
    let tag = rgb["tags"]["GRABD_CALIBRATION"]
        .as_str()
        .expect("GRABD_CALIBRATION tag");
    let tagged: Calibration = serde_json::from_str(tag).unwrap();
    assert_eq!(tagged, rgb_calibration());

    let manifest = read_json(&rec.mkv.with_extension("json"));
    let rgb = manifest["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "rgb")
        .expect("rgb in the manifest");
    let in_manifest: Calibration =
        serde_json::from_value(rgb["config"]["calibration"].clone()).expect("calibration");
    assert_eq!(in_manifest, rgb_calibration());
}

// ---------------------------------------------------------------------------------------
// Read-back of the recording itself, with libavformat (not grabd's export code).

/// The recording's wall-clock origin (µs since the Unix epoch): its global tag.
fn origin_unix_us(mkv: &std::path::Path) -> i64 {
    ffmpeg_next::init().unwrap();
    let input = ffmpeg_next::format::input(&mkv).unwrap();
    let origin = input
        .metadata()
        .get("GRABD_ORIGIN_UNIX_US")
        .map(str::to_owned);
    origin.expect("origin tag").parse().unwrap()
}

/// Absolute ns of every packet of track `name`, in time order.
fn packet_times_ns(mkv: &std::path::Path, name: &str) -> Vec<i64> {
    let origin = origin_unix_us(mkv);
    let tracks = common::read_tracks(mkv);
    let mut pts = common::track(&tracks, name).pts();
    pts.sort_unstable();
    pts.iter().map(|us| (origin + us) * 1000).collect()
}

/// One IMU sample as the payloads hold it: absolute ns, gyro, accel.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    t_ns: i64,
    w: [f64; 3],
    a: [f64; 3],
}

/// Every IMU sample of the `imu` track, from its JSON payloads (version 3).
fn imu_samples(mkv: &std::path::Path) -> Vec<Sample> {
    let origin = origin_unix_us(mkv);
    let tracks = common::read_tracks(mkv);
    let mut samples = Vec::new();
    for p in &common::track(&tracks, "imu").packets {
        let payload: serde_json::Value = serde_json::from_slice(&p.data).unwrap();
        for s in payload["samples"].as_array().unwrap() {
            let v = |key: &str, i: usize| s[key][i].as_f64().unwrap();
            samples.push(Sample {
                t_ns: (origin + s["t_us"].as_i64().unwrap()) * 1000,
                w: [v("g", 0), v("g", 1), v("g", 2)],
                a: [v("a", 0), v("a", 1), v("a", 2)],
            });
        }
    }
    samples
}

/// SHA-256 of each decoded frame of track `name` as packed little-endian 16-bit rows,
/// with its absolute ns.
fn depth_frames(mkv: &std::path::Path, name: &str) -> Vec<(i64, String)> {
    use ffmpeg_next as ff;
    use sha2::Digest;
    let origin = origin_unix_us(mkv);
    let mut input = ff::format::input(&mkv).unwrap();
    let stream = input
        .streams()
        .find(|s| s.metadata().get("title") == Some(name))
        .expect("depth track");
    let (index, tb) = (stream.index(), stream.time_base());
    let mut decoder = ff::codec::context::Context::from_parameters(stream.parameters())
        .unwrap()
        .decoder()
        .video()
        .unwrap();
    let mut out = Vec::new();
    let mut frame = ff::frame::Video::empty();
    let mut take = |decoder: &mut ff::decoder::Video, out: &mut Vec<(i64, String)>| {
        while decoder.receive_frame(&mut frame).is_ok() {
            assert_eq!(frame.format(), ff::format::Pixel::GRAY16LE);
            let row = frame.width() as usize * 2;
            let mut bytes = Vec::new();
            for y in 0..frame.height() as usize {
                bytes.extend_from_slice(&frame.data(0)[y * frame.stride(0)..][..row]);
            }
            let pts = frame.timestamp().unwrap();
            let us = pts * 1_000_000 * i64::from(tb.numerator()) / i64::from(tb.denominator());
            out.push(((origin + us) * 1000, hex(&sha2::Sha256::digest(&bytes))));
        }
    };
    for (s, packet) in input.packets() {
        if s.index() == index {
            decoder.send_packet(&packet).unwrap();
            take(&mut decoder, &mut out);
        }
    }
    decoder.send_eof().unwrap();
    take(&mut decoder, &mut out);
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `grabd export` of the shared recording into a new folder of `root`.
fn export(format: &str, extra: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let rec = recorded();
    let root = tempfile::tempdir().unwrap();
    let out = root.path().join(format!("{format}-out"));
    let mut args = vec![
        "export".as_ref(),
        rec.mkv.as_os_str(),
        "--format".as_ref(),
        format.as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ];
    args.extend(extra.iter().map(|a| std::ffi::OsStr::new(*a)));
    let r = common::cli::grabd(args);
    assert_eq!(r.code, 0, "export {format}: {}", r.stderr);
    assert!(out.is_dir());
    assert!(!out.with_file_name(format!("{format}-out.tmp")).exists());
    (root, out)
}

/// What `tests/formats_reader.py` (Debian's python3 with numpy and Pillow) read.
fn python_read(format: &str, dir: &std::path::Path) -> serde_json::Value {
    python_read_with(format, &[dir])
}

/// [`python_read`] with more folders (a reference export for `frames`).
fn python_read_with(format: &str, dirs: &[&std::path::Path]) -> serde_json::Value {
    let reader = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/formats_reader.py");
    let out = std::process::Command::new("/usr/bin/python3")
        .arg(reader)
        .arg(format)
        .args(dirs)
        .output()
        .expect("run /usr/bin/python3 (scripts/deps installs python3-numpy python3-pil)");
    assert!(
        out.status.success(),
        "the {format} reader refused the export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn i64s(v: &serde_json::Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

fn assert_samples_match(what: &str, t_ns: &[i64], w: &[[f64; 3]], a: &[[f64; 3]], want: &[Sample]) {
    assert_eq!(t_ns.len(), want.len(), "{what}: rows");
    for (k, s) in want.iter().enumerate() {
        assert_eq!(t_ns[k], s.t_ns, "{what}: time of row {k}");
        for i in 0..3 {
            assert!(
                (w[k][i] - s.w[i]).abs() < 1e-9,
                "{what}: gyro of row {k}: {:?} vs {:?}",
                w[k],
                s.w
            );
            assert!(
                (a[k][i] - s.a[i]).abs() < 1e-9,
                "{what}: accel of row {k}: {:?} vs {:?}",
                a[k],
                s.a
            );
        }
    }
}

fn triples(v: &serde_json::Value) -> Vec<[f64; 3]> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let r = r.as_array().unwrap();
            [
                r[0].as_f64().unwrap(),
                r[1].as_f64().unwrap(),
                r[2].as_f64().unwrap(),
            ]
        })
        .collect()
}

/// EuRoC: one 8-bit grey PNG per rgb packet from the IMU's first sample on, named by
/// its absolute ns (ORB-SLAM3's EuRoC loader takes the IMU samples at or before its
/// first frame: with none, it reads before its array); the IMU's rows are its samples
/// (times and values); T_BS is the camera → IMU extrinsic; depth has no place in EuRoC
/// and is left out.
#[test]
fn euroc_export_loads_in_a_reader_of_the_format() {
    let rec = recorded();
    let (_root, out) = export("euroc", &[]);
    let read = python_read("euroc", &out);
    let cams = read["cams"].as_object().unwrap();
    assert_eq!(cams.keys().collect::<Vec<_>>(), ["cam0"], "{read}");
    let cam0 = &read["cams"]["cam0"];
    let want = imu_samples(&rec.mkv);
    let all = packet_times_ns(&rec.mkv, "rgb");
    let packets: Vec<i64> = all.iter().copied().filter(|&t| t >= want[0].t_ns).collect();
    assert!(packets.len() >= 25, "{} rgb packets", packets.len());
    assert!(
        all.len() - packets.len() <= 1,
        "{all:?} from {}",
        want[0].t_ns
    );
    assert_eq!(i64s(&cam0["t_ns"]), packets);
    let imu_t = i64s(&read["imus"]["imu0"]["t_ns"]);
    assert!(
        imu_t[0] <= packets[0],
        "the IMU starts after the first frame"
    );
    assert_eq!(cam0["pngs"], packets.len());
    assert_eq!(cam0["sizes"], serde_json::json!([[160, 100]]));
    assert_eq!(cam0["modes"], serde_json::json!(["L"]));
    let t_bs: Vec<f64> = rgb_calibration()
        .t_imu_cam
        .unwrap()
        .iter()
        .flatten()
        .copied()
        .collect();
    assert_eq!(cam0["T_BS"], serde_json::json!(t_bs));

    let imu = &read["imus"]["imu0"];
    assert!(want.len() >= 300, "{} samples", want.len());
    assert_samples_match(
        "imu0",
        &i64s(&imu["t_ns"]),
        &triples(&imu["w"]),
        &triples(&imu["a"]),
        &want,
    );
    // ORB-SLAM3's times file: cam0's frames.
    let times: Vec<i64> = std::fs::read_to_string(out.join("timestamps.txt"))
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(times, packets);

    // Kalibr's bagcreater layout holds the same images and rows; its camchain's
    // T_cam_imu (IMU → camera) times EuRoC's T_BS (camera → IMU) is the identity.
    let kalibr = &read["kalibr"];
    assert_eq!(i64s(&kalibr["cams"]["cam0"]), packets);
    assert_eq!(i64s(&kalibr["imus"]["imu0"]), i64s(&imu["t_ns"]));
    let t_cam_imu: Vec<Vec<f64>> =
        serde_json::from_value(kalibr["T_cam_imu"]["cam0"].clone()).unwrap();
    for (i, row) in t_cam_imu.iter().enumerate() {
        for j in 0..4 {
            let product: f64 = (0..4).map(|k| row[k] * t_bs[k * 4 + j]).sum();
            let identity = if i == j { 1.0 } else { 0.0 };
            assert!(
                (product - identity).abs() < 1e-12,
                "T_cam_imu · T_BS [{i}][{j}] = {product}"
            );
        }
    }
    assert_eq!(kalibr["timeshift_cam_imu"]["cam0"], 0.003);
}

/// TUM RGB-D: rgb and depth PNGs per packet named by `%.6f` seconds, depth values equal
/// to the recorded millimetres (decoded from the MKV), associations within 20 ms, and
/// the accelerometer's rows.
#[test]
fn tum_export_loads_in_a_reader_of_the_format() {
    let rec = recorded();
    let (_root, out) = export("tum", &[]);
    let read = python_read("tum", &out);
    let seconds = |ns: i64| format!("{}.{:06}", ns / 1_000_000_000, ns / 1000 % 1_000_000);
    let rgb: Vec<String> = packet_times_ns(&rec.mkv, "rgb")
        .into_iter()
        .map(seconds)
        .collect();
    assert_eq!(read["rgb"], serde_json::json!(rgb));
    assert_eq!(read["rgb_sizes"], serde_json::json!([[160, 100]]));
    let depth = depth_frames(&rec.mkv, "depth");
    assert_eq!(depth.len(), packet_times_ns(&rec.mkv, "depth").len());
    let read_depth = read["depth"].as_array().unwrap();
    assert_eq!(read_depth.len(), depth.len());
    for ((t_ns, sha), got) in depth.iter().zip(read_depth) {
        assert_eq!(got["t"], seconds(*t_ns));
        assert_eq!(got["size"], serde_json::json!([80, 50]));
        assert_eq!(
            got["sha256_le16"],
            *sha,
            "depth values at {}",
            seconds(*t_ns)
        );
        assert!(got["max"].as_u64().unwrap() > 255, "16-bit values: {got}");
    }
    let pairs = read["associations"].as_array().unwrap();
    assert!(
        pairs.len() * 10 >= rgb.len() * 9,
        "{} pairs for {} rgb frames",
        pairs.len(),
        rgb.len()
    );
    for pair in pairs {
        let t = |i: usize| pair[i].as_str().unwrap().parse::<f64>().unwrap();
        assert!((t(0) - t(1)).abs() <= 0.020 + 1e-9, "pair {pair}");
        assert!(rgb.contains(&pair[0].as_str().unwrap().to_owned()));
    }
    let want = imu_samples(&rec.mkv);
    let accel = read["accelerometer"].as_array().unwrap();
    assert_eq!(accel.len(), want.len());
    for (row, s) in accel.iter().zip(&want) {
        assert_eq!(row[0], seconds(s.t_ns));
        for i in 0..3 {
            assert!(
                (row[i + 1].as_f64().unwrap() - s.a[i]).abs() < 1e-9,
                "{row} vs {s:?}"
            );
        }
    }
    let calibration = std::fs::read_to_string(out.join("calibration.yaml")).unwrap();
    assert!(
        calibration.contains("depth_map_factor: 1000.0"),
        "{calibration}"
    );
}

/// frames: PNG per frame of every video stream (depth as 16-bit), CSV of times, IMU CSV;
/// `--start/--end` take the frames of that media interval, `--streams` the streams
/// named.
#[test]
fn frames_export_selects_by_time_and_stream() {
    let rec = recorded();
    let (_root, out) = export("frames", &[]);
    for name in ["rgb", "depth"] {
        let csv = std::fs::read_to_string(out.join(name).join("frames.csv")).unwrap();
        let times: Vec<i64> = csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(times, packet_times_ns(&rec.mkv, name), "{name}");
        let pngs = std::fs::read_dir(out.join(name)).unwrap().filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "png")
        });
        assert_eq!(pngs.count(), times.len(), "{name}");
    }
    let imu = std::fs::read_to_string(out.join("imu.csv")).unwrap();
    assert_eq!(imu.lines().count() - 1, imu_samples(&rec.mkv).len());

    let (_root, part) = export(
        "frames",
        &["--start", "0.5", "--end", "1.2", "--streams", "rgb,imu"],
    );
    let origin_ns = origin_unix_us(&rec.mkv) * 1000;
    let inside = |t: &i64| (500_000_000..1_200_000_000).contains(&(t - origin_ns));
    let want: Vec<i64> = packet_times_ns(&rec.mkv, "rgb")
        .into_iter()
        .filter(inside)
        .collect();
    let csv = std::fs::read_to_string(part.join("rgb").join("frames.csv")).unwrap();
    let got: Vec<i64> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(got, want);
    assert!(!part.join("depth").exists());
    let imu = std::fs::read_to_string(part.join("imu.csv")).unwrap();
    let want = imu_samples(&rec.mkv)
        .into_iter()
        .filter(|s| inside(&s.t_ns))
        .count();
    assert_eq!(imu.lines().count() - 1, want);
}

/// A bad file, a stream the format cannot hold, an unknown stream: one line, exit 2,
/// and no export folder (nor its temporary) left behind. An export killed earlier left
/// a `.tmp` folder: the next export replaces it.
#[test]
fn export_refusals_are_one_line_and_leave_nothing() {
    let rec = recorded();
    let root = tempfile::tempdir().unwrap();
    let junk = root.path().join("junk.mkv");
    std::fs::write(&junk, b"not a recording at all").unwrap();
    let out = root.path().join("out");
    let mkv = rec.mkv.to_str().unwrap();
    let o = out.to_str().unwrap();
    let cases: [(Vec<&str>, &str); 4] = [
        (
            vec![junk.to_str().unwrap(), "--format", "euroc"],
            "junk.mkv",
        ),
        (
            vec![mkv, "--format", "euroc", "--streams", "depth"],
            "euroc cannot hold stream \"depth\"",
        ),
        (
            vec![mkv, "--format", "tum", "--streams", "nosuch"],
            "has no stream \"nosuch\"",
        ),
        (
            vec![mkv, "--format", "frames", "--start", "2", "--end", "1"],
            "--end 1 s is not after --start 2 s",
        ),
    ];
    for (args, needle) in cases {
        let mut all = vec!["export"];
        all.extend(&args);
        all.extend(["--out", o]);
        let r = common::cli::grabd(&all);
        assert_eq!(r.code, 2, "{all:?}: {}", r.stderr);
        let line = r.one_line_error();
        assert!(line.contains(needle), "{needle:?} not in {line:?}");
        assert!(
            !out.exists() && !root.path().join("out.tmp").exists(),
            "{all:?} left files"
        );
    }
    // clap's refusal: the first line names it (its usage block follows).
    let r = common::cli::grabd(["export", mkv, "--format", "dvd", "--out", o]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.lines().next().unwrap().contains("'dvd'"),
        "{}",
        r.stderr
    );
    std::fs::create_dir(root.path().join("out.tmp")).unwrap();
    std::fs::write(root.path().join("out.tmp").join("0.png"), b"half").unwrap();
    let r = common::cli::grabd([
        "export",
        mkv,
        "--format",
        "frames",
        "--streams",
        "imu",
        "--out",
        o,
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!root.path().join("out.tmp").exists());
    assert!(!out.join("0.png").exists());
    assert!(out.join("imu.csv").exists());
    let r = common::cli::grabd(["export", mkv, "--format", "frames", "--out", o]);
    assert_eq!(r.code, 2);
    assert!(
        r.one_line_error().contains("exists already"),
        "{}",
        r.stderr
    );
}

/// The media µs of the keyframes of track `name`.
fn keyframes_us(mkv: &std::path::Path, name: &str) -> Vec<i64> {
    let tracks = common::read_tracks(mkv);
    let mut keys: Vec<i64> = common::track(&tracks, name)
        .packets
        .iter()
        .filter(|p| p.key)
        .map(|p| p.pts_us)
        .collect();
    keys.sort_unstable();
    keys
}

/// A start for `--start` 0.1 s after an rgb keyframe `k` (returned with it) where the
/// depth track's last keyframe before it is not the file's first but earlier than `k`
/// (the export must begin at depth's keyframe, not at rgb's, the default stream's),
/// with 0.5 s of the recording after `k`.
fn start_key(mkv: &std::path::Path) -> (i64, i64) {
    let depth_keys = keyframes_us(mkv, "depth");
    let last = *packet_times_ns(mkv, "rgb").last().unwrap() / 1000 - origin_unix_us(mkv);
    keyframes_us(mkv, "rgb")
        .into_iter()
        .filter(|&k| k + 500_000 <= last)
        .find_map(|k| {
            let start = k + 100_000;
            let depth_key = depth_keys.iter().filter(|&&d| d <= start).max()?;
            (depth_keys[0] < *depth_key && *depth_key < k).then_some((start, k))
        })
        .unwrap_or_else(|| panic!("no rgb keyframe after depth's: depth {depth_keys:?}"))
}

/// `--start` in the middle of a group of pictures and `--end`, for every format: the
/// frames and samples of exactly that media interval (times of the MKV's packets and
/// samples, depth values decoded from the whole file), none from before it and none
/// missing after it, although the export seeks to the keyframes before the start
/// rather than decoding the file from its beginning. MCAP's H.264 copy starts at the
/// first keyframe in the interval.
#[test]
fn start_and_end_take_exactly_that_interval_in_every_format() {
    let rec = recorded();
    let origin_ns = origin_unix_us(&rec.mkv) * 1000;
    let (start_us, key) = start_key(&rec.mkv);
    let end_us = start_us + 400_000;
    let media = |t_ns: i64| (t_ns - origin_ns) / 1000;
    let inside = |t_ns: &i64| (start_us..end_us).contains(&media(*t_ns));
    let rgb: Vec<i64> = packet_times_ns(&rec.mkv, "rgb")
        .into_iter()
        .filter(inside)
        .collect();
    let depth: Vec<(i64, String)> = depth_frames(&rec.mkv, "depth")
        .into_iter()
        .filter(|(t, _)| inside(t))
        .collect();
    let samples: Vec<Sample> = imu_samples(&rec.mkv)
        .into_iter()
        .filter(|s| inside(&s.t_ns))
        .collect();
    assert!(rgb.len() >= 8 && depth.len() >= 8 && samples.len() >= 60);
    let (s, e) = (
        format!("{}", start_us as f64 / 1e6),
        format!("{}", end_us as f64 / 1e6),
    );
    let range = ["--start", s.as_str(), "--end", e.as_str()];
    let csv_times = |path: PathBuf| -> Vec<i64> {
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(',').next().unwrap().parse().unwrap())
            .collect()
    };

    let (_root, out) = export("frames", &range);
    assert_eq!(csv_times(out.join("rgb/frames.csv")), rgb, "frames rgb");
    let depth_ns: Vec<i64> = depth.iter().map(|(t, _)| *t).collect();
    assert_eq!(
        csv_times(out.join("depth/frames.csv")),
        depth_ns,
        "frames depth"
    );
    let imu_ns: Vec<i64> = samples.iter().map(|s| s.t_ns).collect();
    assert_eq!(csv_times(out.join("imu.csv")), imu_ns, "frames imu");

    let (_root, out) = export("euroc", &range);
    let read = python_read("euroc", &out);
    // EuRoC's frames begin at the IMU's first sample (see the euroc test).
    let from_imu: Vec<i64> = rgb
        .iter()
        .copied()
        .filter(|&t| t >= samples[0].t_ns)
        .collect();
    assert_eq!(i64s(&read["cams"]["cam0"]["t_ns"]), from_imu, "euroc cam0");
    let imu = &read["imus"]["imu0"];
    assert_samples_match(
        "euroc imu0",
        &i64s(&imu["t_ns"]),
        &triples(&imu["w"]),
        &triples(&imu["a"]),
        &samples,
    );

    let (_root, out) = export("tum", &range);
    let read = python_read("tum", &out);
    let seconds = |ns: i64| format!("{}.{:06}", ns / 1_000_000_000, ns / 1000 % 1_000_000);
    let want: Vec<String> = rgb.iter().map(|&t| seconds(t)).collect();
    assert_eq!(read["rgb"], serde_json::json!(want), "tum rgb");
    let got: Vec<(String, String)> = read["depth"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["t"].as_str().unwrap().to_owned(),
                d["sha256_le16"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = depth
        .iter()
        .map(|(t, h)| (seconds(*t), h.clone()))
        .collect();
    assert_eq!(got, want, "tum depth: times and values");
    assert_eq!(
        read["accelerometer"].as_array().unwrap().len(),
        samples.len()
    );

    // MCAP: from just before the keyframe, so the copy has a keyframe to start at.
    let (start_us, end_us) = (key - 100_000, key + 400_000);
    let (s, e) = (
        format!("{}", start_us as f64 / 1e6),
        format!("{}", end_us as f64 / 1e6),
    );
    let (_root, out) = export("mcap", &["--start", &s, "--end", &e]);
    let stem = rec.mkv.file_stem().unwrap().to_string_lossy();
    let bytes = std::fs::read(out.join(format!("{stem}.mcap"))).unwrap();
    let mut topics: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    for message in mcap::MessageStream::new(&bytes).unwrap() {
        let message = message.unwrap();
        topics
            .entry(message.channel.topic.clone())
            .or_default()
            .push(message.log_time as i64);
    }
    let inside = |t_ns: &i64| (start_us..end_us).contains(&media(*t_ns));
    let video: Vec<i64> = packet_times_ns(&rec.mkv, "rgb")
        .into_iter()
        .filter(|t| inside(t) && media(*t) >= key)
        .collect();
    assert!(video.len() >= 8);
    assert_eq!(topics["/rgb/video"], video, "mcap video");
    let depth: Vec<i64> = depth_frames(&rec.mkv, "depth")
        .into_iter()
        .map(|(t, _)| t)
        .filter(inside)
        .collect();
    assert_eq!(topics["/depth/depth"], depth, "mcap depth");
    let imu: Vec<i64> = imu_samples(&rec.mkv)
        .into_iter()
        .map(|s| s.t_ns)
        .filter(inside)
        .collect();
    assert_eq!(topics["/imu"], imu, "mcap imu");
}

/// With `--start`, reading begins at the keyframes before it: the first packet read is
/// near the earliest of the video tracks' keyframes at or before the start (not the
/// file's first), and the packets before it are never read.
#[test]
fn start_seeks_instead_of_reading_from_the_beginning() {
    use grabd::export::read::{Recording, Sink, Track};
    use grabd::export::{Progress, Selection};
    struct Count(u64);
    impl Sink for Count {
        fn frame(
            &mut self,
            _: &Track,
            _: i64,
            _: &ffmpeg_next::frame::Video,
        ) -> grabd::export::Result<()> {
            self.0 += 1;
            Ok(())
        }
        fn imu(&mut self, _: &Track, _: &[grabd::sensors::ImuSample]) -> grabd::export::Result<()> {
            Ok(())
        }
    }
    let rec = recorded();
    let (start_us, _) = start_key(&rec.mkv);
    let before = |keys: Vec<i64>| keys.into_iter().filter(|&k| k <= start_us).max().unwrap();
    let seek_point =
        before(keyframes_us(&rec.mkv, "rgb")).min(before(keyframes_us(&rec.mkv, "depth")));
    assert!(seek_point > 0, "keyframes {seek_point}");
    let all: usize = common::read_tracks(&rec.mkv)
        .iter()
        .map(|t| t.packets.len())
        .sum();

    let mut recording = Recording::open(&rec.mkv).unwrap();
    let tracks = recording.tracks.clone();
    let selection = Selection::from_seconds(Some(start_us as f64 / 1e6), None, None).unwrap();
    let mut sink = Count(0);
    let played = recording
        .play(&tracks, &selection, &mut sink, &mut Progress::hidden())
        .unwrap();
    let first = played.first_packet_us.expect("packets read");
    // The cluster holding the keyframe may begin with IMU packets a little before it.
    assert!(
        first > 0 && first >= seek_point - 300_000,
        "first packet read at {first} µs; the keyframe to seek to is at {seek_point} µs"
    );
    assert!((played.packets_read as usize) < all, "{played:?} of {all}");
    assert!(sink.0 > 0);
}

/// frames `--image-format jpeg`: a JPEG (libavcodec's mjpeg) per camera frame, named by
/// its time, that Pillow reads back at the camera's size and whose pixels are those of
/// the PNG export within JPEG's loss (a wrong plane layout or colour range is far off);
/// depth stays 16-bit PNG (JPEG has no 16-bit samples). The formats that need PNG
/// refuse JPEG in one line.
#[test]
fn frames_export_writes_jpeg_when_asked() {
    let rec = recorded();
    let (_root, png) = export("frames", &[]);
    let (_root, jpeg) = export("frames", &["--image-format", "jpeg"]);
    let read = python_read_with("frames", &[&jpeg, &png]);
    let rgb = &read["rgb"];
    let packets = packet_times_ns(&rec.mkv, "rgb");
    assert_eq!(i64s(&rgb["t_ns"]), packets);
    assert_eq!(rgb["files"], packets.len());
    assert_eq!(rgb["extensions"], serde_json::json!([".jpg"]));
    assert_eq!(rgb["formats"], serde_json::json!(["JPEG"]));
    assert_eq!(rgb["modes"], serde_json::json!(["RGB"]));
    assert_eq!(rgb["sizes"], serde_json::json!([[160, 100]]));
    // ffmpeg's own `-q:v 2` JPEGs of this file are 4.1 levels from the PNGs (4:2:0
    // chroma at the colour bars' edges); limited-range samples taken for full range
    // would be 17.7 off, swapped or shifted planes 50 and more.
    let diff = rgb["max_mean_abs_diff"].as_f64().unwrap();
    assert!(
        diff < 8.0,
        "JPEG differs from PNG by {diff} levels on average"
    );
    let depth = &read["depth"];
    assert_eq!(i64s(&depth["t_ns"]), packet_times_ns(&rec.mkv, "depth"));
    assert_eq!(depth["formats"], serde_json::json!(["PNG"]));
    // Pillow names a 16-bit grey PNG I;16, or I once loaded.
    let modes = &depth["modes"];
    assert!(
        *modes == serde_json::json!(["I;16"]) || *modes == serde_json::json!(["I"]),
        "{modes}"
    );

    let root = tempfile::tempdir().unwrap();
    let out = root.path().join("out");
    let r = common::cli::grabd([
        "export".as_ref(),
        rec.mkv.as_os_str(),
        "--format".as_ref(),
        "euroc".as_ref(),
        "--image-format".as_ref(),
        "jpeg".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.one_line_error().contains("--image-format jpeg"),
        "{}",
        r.stderr
    );
    assert!(!out.exists() && !root.path().join("out.tmp").exists());
}
