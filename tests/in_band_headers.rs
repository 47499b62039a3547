//! H.264 encoders that give no extradata and send SPS/PPS in-band (the Pi 4's
//! `h264_v4l2m2m`): the writer must take the parameter sets from the first packet and
//! store them as every part's, chunk's and the final file's CodecPrivate.
//!
//! libx264 opened without `GLOBAL_HEADER` (`flags=-global_header`) has the same shape
//! (empty extradata, SPS/PPS in the first packet) and goes through the same code path.
//! What is claimed is read back with libavformat and `mkvmerge -J`.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use grabd::recording::VideoStreamConfig;

/// libx264 that puts SPS/PPS in-band instead of in extradata.
fn in_band_config() -> VideoStreamConfig {
    rgb_config().with_option("flags", "-global_header")
}

/// The CodecPrivate mkvmerge sees on the video track of `path` (hex), if any.
fn mkvmerge_codec_private(path: &Path) -> Option<String> {
    let out = Command::new("mkvmerge")
        .arg("-J")
        .arg(path)
        .output()
        .expect("run mkvmerge (scripts/deps installs mkvtoolnix)");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("mkvmerge json");
    assert!(
        json["container"]["recognized"].as_bool() == Some(true),
        "mkvmerge does not recognise {}: {json}",
        path.display()
    );
    json["tracks"]
        .as_array()
        .expect("tracks")
        .iter()
        .find(|t| t["type"] == "video")
        .and_then(|t| t["properties"]["codec_private_data"].as_str())
        .map(str::to_owned)
}

/// The H.264 video track's extradata as libavformat reads it back: an avcC record
/// (version 1) holding at least one SPS and one PPS.
fn assert_avcc_extradata(path: &Path) {
    use ffmpeg_next as ff;
    ff::init().expect("ffmpeg init");
    let input = ff::format::input(&path).expect("open file");
    let stream = input
        .streams()
        .find(|s| s.parameters().medium() == ff::media::Type::Video)
        .expect("video track");
    // SAFETY: codecpar is valid while `input` lives; extradata holds extradata_size bytes.
    let extradata = unsafe {
        let par = stream.parameters().as_ptr();
        let size = usize::try_from((*par).extradata_size).unwrap_or(0);
        if (*par).extradata.is_null() || size == 0 {
            Vec::new()
        } else {
            std::slice::from_raw_parts((*par).extradata, size).to_vec()
        }
    };
    assert!(
        extradata.len() > 7 && extradata[0] == 1,
        "{}: video CodecPrivate is not an avcC record: {extradata:02x?}",
        path.display()
    );
    let sps_count = extradata[5] & 0x1f;
    assert!(sps_count >= 1, "{}: no SPS in avcC", path.display());
}

fn record_in_band(name: &str, config: VideoStreamConfig) -> Rig {
    let mut rig = Rig::start(name, rgb_and_imu_specs(config), options(1000));
    for i in 0..70 {
        rig.push_all(&["rgb", "imu"], i);
    }
    let report = rig.stop_cleanly();
    for stream in &report.streams {
        assert!(!stream.failed, "stream {} failed", stream.name);
    }
    rig
}

fn assert_every_file_has_codec_private(rig: &Rig, frames: u64) {
    let chunks = rig.chunks();
    assert_eq!(chunks.len(), 3, "2.8 s in 1 s chunks");
    for (_, chunk) in &chunks {
        assert_avcc_extradata(chunk);
        assert!(
            mkvmerge_codec_private(chunk).is_some(),
            "{}: mkvmerge sees no CodecPrivate",
            chunk.display()
        );
    }
    assert_avcc_extradata(&rig.final_path);
    assert!(
        mkvmerge_codec_private(&rig.final_path).is_some(),
        "final file: mkvmerge sees no CodecPrivate"
    );
    // Every packet is a frame (no header-only packet muxed), and every frame decodes.
    let tracks = read_tracks(&rig.final_path);
    let rgb = track(&tracks, "rgb");
    assert_eq!(rgb.packets.len() as u64, frames, "one packet per frame");
    rig.assert_final_decodes(&[("rgb", frames)]);
}

/// One encoder kept for the whole recording (forced IDR per chunk).
#[test]
fn in_band_sps_pps_become_codec_private_of_every_file() {
    let rig = record_in_band("inband", in_band_config());
    assert_every_file_has_codec_private(&rig, 70);
}

/// An encoder reopened per chunk: each new encoder's first packet gives the headers.
#[test]
fn in_band_sps_pps_with_an_encoder_reopened_per_chunk() {
    let rig = record_in_band(
        "inband_reopen",
        in_band_config().with_option("forced-idr", "0"),
    );
    assert_every_file_has_codec_private(&rig, 70);
}
