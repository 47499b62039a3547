//! Issue 12 item 10: tracks are matched by grabd's own GRABD_STREAM tag, never by their
//! title. A user's `title`/`TITLE` metadata names the track (as the reference's W1
//! configs do) and changes nothing else: every stream keeps its packets, its config and
//! its drop count in the manifest.

mod common;

use common::cli::{grabd, read_json, verify, Rig};
use serde_json::Value;

/// Two cameras titled "camera" (rgb H.264, depth FFV1) and an IMU titled like the
/// reference's W1 config.
const TITLED: &str = r#"
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
metadata = { title = "camera" }

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
metadata = { title = "camera" }

[[stream]]
name = "imu"
kind = "data"
rate_hz = 100
batch_with = "rgb"
metadata = { TITLE = "egocentric_imu" }
"#;

/// The track titles of a file, in order, read by ffprobe.
fn titles(mkv: &std::path::Path) -> Vec<String> {
    let out = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream_tags=title",
            "-of",
            "json",
        ])
        .arg(mkv)
        .output()
        .expect("ffprobe");
    let v: Value = serde_json::from_slice(&out.stdout).expect("ffprobe json");
    v["streams"]
        .as_array()
        .expect("streams")
        .iter()
        .map(|s| s["tags"]["title"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// Regression test: failed on 377863d (a user title replaced the track name that
/// merge and concat match tracks by: FFV1 packets went into the H.264 track, and the
/// manifest lost every config).
#[test]
fn user_titles_name_tracks_without_changing_their_identity() {
    let rig = Rig::with_config(TITLED);
    let r = grabd([
        "record".as_ref(),
        "--config".as_ref(),
        rig.config.as_os_str(),
        "--spool".as_ref(),
        rig.spool.as_os_str(),
        "--output".as_ref(),
        rig.output.as_os_str(),
        "--duration".as_ref(),
        "2.5".as_ref(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mkv = std::path::PathBuf::from(r.last_line().expect("the final path"));
    let v = verify(&mkv);
    let names: Vec<&str> = v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["rgb", "depth", "imu"], "{v}");
    for s in v["streams"].as_array().unwrap() {
        let packets = s["packets"].as_u64().unwrap();
        // About 62 each; a busy machine sheds some (max_latency_ms). Two streams' packets
        // in one track would make about 125.
        assert!((1..=70).contains(&packets), "{s}");
    }
    assert_eq!(titles(&mkv), ["camera", "camera", "egocentric_imu"]);
    let manifest = read_json(&mkv.with_extension("json"));
    for s in manifest["streams"].as_array().unwrap() {
        assert!(!s["config"].is_null(), "config lost: {manifest}");
        assert!(
            !s["frames_dropped"].is_null(),
            "drop count lost: {manifest}"
        );
    }
}
