//! The real sources as the `grabd` binary sees them on a machine without the hardware:
//! `grabd probe` reports what is there and refuses a config whose devices are not,
//! and `grabd record` with a missing camera or IMU fails before any file exists, with
//! one line naming the device. (The devices themselves are tested under QEMU with
//! vivid and i2c-stub, `hw-tests/qemu`.)

mod common;

use std::fs;

use common::cli::*;

const MISSING_CAMERA: &str = r#"
[[stream]]
name = "cam"
kind = "video"
source = "v4l2:/dev/video97"
width = 320
height = 180
fps = 15
codec = "h264"
options = { preset = "ultrafast" }

[[stream]]
name = "imu"
kind = "data"
source = "mpu6050:/dev/i2c-97@0x68"
rate_hz = 100
"#;

#[test]
fn probe_reports_the_machine_and_exits_0_when_the_config_can_record() {
    let rig = Rig::new();
    fs::create_dir_all(&rig.spool).unwrap();
    let run = grabd([
        "probe".as_ref(),
        "--json".as_ref(),
        "--config".as_ref(),
        rig.config.as_os_str(),
        "--spool".as_ref(),
        rig.spool.as_os_str(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("probe JSON");
    assert_eq!(report["can_record"], true);
    // No V4L2 M2M encoder on this machine: the ladder picks libx264.
    assert_eq!(report["h264"]["codec"], "libx264");
    let storage = &report["storage"][0];
    assert!(
        storage["write_fsync_ms"]
            .as_f64()
            .is_some_and(|ms| ms > 0.0),
        "{storage}"
    );
    assert!(storage["free_bytes"].as_u64().is_some_and(|b| b > 0));
    assert!(storage["filesystem"].is_string());
    let names: Vec<&str> = report["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["rgb", "depth", "imu"]);
    // Only the probe's own file was written, and it is gone.
    assert!(entries(&rig.spool).is_empty(), "{:?}", entries(&rig.spool));
}

#[test]
fn probe_exits_1_naming_each_missing_device() {
    let rig = Rig::with_config(MISSING_CAMERA);
    let run = grabd([
        "probe".as_ref(),
        "--config".as_ref(),
        rig.config.as_os_str(),
    ]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let last = run.last_line().unwrap();
    assert!(last.starts_with("can record: no: "), "{last}");
    assert!(last.contains("/dev/video97"), "{last}");
    assert!(last.contains("/dev/i2c-97@0x68"), "{last}");
}

#[test]
fn record_with_a_missing_camera_fails_before_any_file_with_one_line() {
    let rig = Rig::with_config(MISSING_CAMERA);
    let run = Run::from(
        rig.record_cmd(&rig.config, &rig.spool, &rig.output, "2")
            .output()
            .unwrap(),
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    let line = run.one_line_error();
    assert!(line.contains("cam (/dev/video97)"), "{line}");
    assert!(!rig.output.exists() || entries(&rig.output).is_empty());
    assert!(!rig.spool.exists() || entries(&rig.spool).is_empty());
}
