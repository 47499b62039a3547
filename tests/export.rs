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

/// 1 s chunks; a calibrated 160x100 rgb camera, an 80x50 depth camera in mm, a 200 Hz
/// IMU batched with rgb.
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
options = { preset = "ultrafast", bf = "0", g = "25" }

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
