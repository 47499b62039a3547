//! The H.264 encoder ladder: `codec = "h264"` becomes `h264_v4l2m2m` (the Pi 4's
//! bcm2835-codec) only when a V4L2 memory-to-memory device exists whose CAPTURE queue
//! offers H264 and whose OUTPUT queue takes NV12 or YUV420; otherwise libx264.
//!
//! Devices are judged from VIDIOC_QUERYCAP and VIDIOC_ENUM_FMT alone (single- and
//! multi-planar), never by opening the codec and catching its error. The judgement
//! ([`choose_h264`]) is a pure function of what the ioctls returned, so it is tested on
//! capabilities recorded from real boards.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use v4l::v4l2;
use v4l::v4l_sys::{v4l2_capability, v4l2_fmtdesc};

use crate::recording::VideoStreamConfig;

pub const HARDWARE_H264: &str = "h264_v4l2m2m";
pub const SOFTWARE_H264: &str = "libx264";

const CAP_VIDEO_M2M_MPLANE: u32 = 0x0000_4000;
const CAP_VIDEO_M2M: u32 = 0x0000_8000;
const CAP_STREAMING: u32 = 0x0400_0000;
const CAP_DEVICE_CAPS: u32 = 0x8000_0000;
const BUF_VIDEO_CAPTURE: u32 = 1;
const BUF_VIDEO_OUTPUT: u32 = 2;
const BUF_VIDEO_CAPTURE_MPLANE: u32 = 9;
const BUF_VIDEO_OUTPUT_MPLANE: u32 = 10;
/// What the hardware encoder is fed: grabd converts frames to yuv420p (YU12) or nv12.
const ENCODER_INPUTS: &[&str] = &["NV12", "YU12"];

/// What VIDIOC_QUERYCAP and VIDIOC_ENUM_FMT said about one /dev/video* node.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct M2mCandidate {
    pub path: PathBuf,
    pub driver: String,
    pub card: String,
    /// `device_caps` when the driver sets V4L2_CAP_DEVICE_CAPS, else `capabilities`.
    pub caps: u32,
    /// Pixel formats (fourcc) of the CAPTURE queue (the encoder's output).
    pub capture_formats: Vec<String>,
    /// Pixel formats of the OUTPUT queue (the encoder's input).
    pub output_formats: Vec<String>,
}

impl M2mCandidate {
    pub fn is_m2m(&self) -> bool {
        self.caps & (CAP_VIDEO_M2M | CAP_VIDEO_M2M_MPLANE) != 0
    }
}

/// Why a device cannot serve as the H.264 encoder, or `None` when it can.
pub fn rejection(candidate: &M2mCandidate) -> Option<String> {
    if candidate.caps & (CAP_VIDEO_M2M | CAP_VIDEO_M2M_MPLANE) == 0 {
        return Some("not a memory-to-memory device".into());
    }
    if candidate.caps & CAP_STREAMING == 0 {
        return Some("no streaming I/O".into());
    }
    if !candidate.capture_formats.iter().any(|f| f == "H264") {
        return Some(format!(
            "its CAPTURE queue offers no H264 ({})",
            list_or_none(&candidate.capture_formats)
        ));
    }
    if !candidate
        .output_formats
        .iter()
        .any(|f| ENCODER_INPUTS.contains(&f.as_str()))
    {
        return Some(format!(
            "its OUTPUT queue takes neither NV12 nor YU12 ({})",
            list_or_none(&candidate.output_formats)
        ));
    }
    None
}

fn list_or_none(formats: &[String]) -> String {
    if formats.is_empty() {
        "none".into()
    } else {
        formats.join(", ")
    }
}

/// The encoder picked for `codec = "h264"`, and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct H264Choice {
    pub codec: &'static str,
    pub device: Option<PathBuf>,
    pub reason: String,
    /// Every device looked at and not taken, with the reason.
    pub rejected: Vec<(PathBuf, String)>,
}

/// Pick the H.264 encoder from what the scan found (`Err` = the node could not be
/// queried). `hardware_in_libavcodec` says whether this libavcodec has h264_v4l2m2m.
/// The first usable device wins, as h264_v4l2m2m itself takes the first that fits.
pub fn choose_h264(
    scanned: &[(PathBuf, Result<M2mCandidate, String>)],
    hardware_in_libavcodec: bool,
) -> H264Choice {
    let mut rejected = Vec::new();
    let mut usable = None;
    for (path, result) in scanned {
        match result {
            Err(e) => rejected.push((path.clone(), e.clone())),
            Ok(candidate) => match rejection(candidate) {
                Some(why) => rejected.push((path.clone(), format!("{}: {why}", candidate.card))),
                None if usable.is_none() => usable = Some(candidate),
                None => rejected.push((path.clone(), "a device before it was taken".into())),
            },
        }
    }
    match usable {
        Some(candidate) if hardware_in_libavcodec => H264Choice {
            codec: HARDWARE_H264,
            device: Some(candidate.path.clone()),
            reason: format!(
                "{} ({}) encodes H.264",
                candidate.path.display(),
                candidate.card
            ),
            rejected,
        },
        Some(candidate) => H264Choice {
            codec: SOFTWARE_H264,
            device: None,
            reason: format!(
                "{} encodes H.264 but this libavcodec has no {HARDWARE_H264}",
                candidate.path.display()
            ),
            rejected,
        },
        None => H264Choice {
            codec: SOFTWARE_H264,
            device: None,
            reason: if scanned.is_empty() {
                "no V4L2 device".into()
            } else {
                "no V4L2 memory-to-memory H.264 encoder".into()
            },
            rejected,
        },
    }
}

/// Query every `/dev/video*` node under `dev` (in number order).
pub fn scan(dev: &Path) -> Vec<(PathBuf, Result<M2mCandidate, String>)> {
    let mut nodes: Vec<(u32, PathBuf)> = std::fs::read_dir(dev)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let number = name.strip_prefix("video")?.parse().ok()?;
            Some((number, entry.path()))
        })
        .collect();
    nodes.sort();
    nodes
        .into_iter()
        .map(|(_, path)| {
            let result = query(&path).map_err(|e| format!("{}: {e}", path.display()));
            (path, result)
        })
        .collect()
}

/// The ladder as the config applies it: scan `/dev` and pick.
pub fn choose_h264_here() -> H264Choice {
    let hardware = {
        crate::recording::media::ensure_init();
        ffmpeg_next::encoder::find_by_name(HARDWARE_H264).is_some()
    };
    choose_h264(&scan(Path::new("/dev")), hardware)
}

/// Options that only the hardware encoder knows; every other option of an `h264`
/// stream is libx264's (preset, tune, profile, bf...).
const HARDWARE_OPTIONS: &[&str] = &["num_capture_buffers", "num_output_buffers"];
/// h264_v4l2m2m's own default (200 kb/s) is unusable; with no bitrate configured this
/// is set instead.
const HARDWARE_DEFAULT_BITRATE: u64 = 2_000_000;

/// The stream config for the chosen encoder: the codec, its options, and for the
/// hardware encoder always a bitrate and a GOP (`g`, default one second of frames),
/// with the choice and its reason as track tags (so they reach the manifest and file).
pub fn apply_h264_choice(mut video: VideoStreamConfig, choice: &H264Choice) -> VideoStreamConfig {
    video.codec = choice.codec.to_owned();
    if choice.codec == HARDWARE_H264 {
        let gop = video
            .stream_options
            .get("g")
            .cloned()
            .unwrap_or_else(|| format!("{}", video.fps.round().max(1.0)));
        let kept: BTreeMap<String, String> = video
            .stream_options
            .iter()
            .filter(|(k, _)| HARDWARE_OPTIONS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        video.stream_options = kept;
        video.stream_options.insert("g".into(), gop);
        if video.bitrate == 0 {
            video.bitrate = HARDWARE_DEFAULT_BITRATE;
        }
    } else {
        video
            .stream_options
            .retain(|k, _| !HARDWARE_OPTIONS.contains(&k.as_str()));
    }
    video
        .metadata
        .insert("encoder".into(), choice.codec.to_owned());
    video
        .metadata
        .insert("encoder_reason".into(), choice.reason.clone());
    video
}

fn query(path: &Path) -> std::io::Result<M2mCandidate> {
    let device = v4l::Device::with_path(path)?;
    let fd = device.handle().fd();
    // SAFETY: v4l2_capability is plain data (zero is a valid value); VIDIOC_QUERYCAP
    // fills it and reads nothing from it; `fd` stays open while `device` lives.
    let cap: v4l2_capability = unsafe {
        let mut cap: v4l2_capability = std::mem::zeroed();
        v4l2::ioctl(
            fd,
            v4l2::vidioc::VIDIOC_QUERYCAP,
            std::ptr::addr_of_mut!(cap).cast(),
        )?;
        cap
    };
    let caps = if cap.capabilities & CAP_DEVICE_CAPS != 0 {
        cap.device_caps
    } else {
        cap.capabilities
    };
    let (capture, output) = if caps & CAP_VIDEO_M2M_MPLANE != 0 {
        (BUF_VIDEO_CAPTURE_MPLANE, BUF_VIDEO_OUTPUT_MPLANE)
    } else {
        (BUF_VIDEO_CAPTURE, BUF_VIDEO_OUTPUT)
    };
    let is_m2m = caps & (CAP_VIDEO_M2M | CAP_VIDEO_M2M_MPLANE) != 0;
    Ok(M2mCandidate {
        path: path.to_owned(),
        driver: c_string(&cap.driver),
        card: c_string(&cap.card),
        caps,
        capture_formats: if is_m2m {
            enum_formats(fd, capture)
        } else {
            Vec::new()
        },
        output_formats: if is_m2m {
            enum_formats(fd, output)
        } else {
            Vec::new()
        },
    })
}

/// The pixel formats (fourcc) a queue of `buf_type` offers, by VIDIOC_ENUM_FMT.
pub fn enum_formats(fd: i32, buf_type: u32) -> Vec<String> {
    let mut formats = Vec::new();
    for index in 0..64 {
        // SAFETY: v4l2_fmtdesc is plain data; VIDIOC_ENUM_FMT reads index and type and
        // fills the rest; `fd` is an open V4L2 node.
        let desc = unsafe {
            let mut desc: v4l2_fmtdesc = std::mem::zeroed();
            desc.index = index;
            desc.type_ = buf_type;
            match v4l2::ioctl(
                fd,
                v4l2::vidioc::VIDIOC_ENUM_FMT,
                std::ptr::addr_of_mut!(desc).cast(),
            ) {
                Ok(()) => desc,
                Err(_) => break,
            }
        };
        formats.push(fourcc(desc.pixelformat));
    }
    formats
}

pub(crate) fn fourcc(code: u32) -> String {
    code.to_le_bytes()
        .iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { ' ' })
        .collect::<String>()
        .trim_end()
        .to_owned()
}

pub(crate) fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAMING: u32 = CAP_STREAMING;

    fn candidate(
        path: &str,
        card: &str,
        caps: u32,
        capture: &[&str],
        output: &[&str],
    ) -> M2mCandidate {
        M2mCandidate {
            path: path.into(),
            driver: card.split('-').next().unwrap_or(card).into(),
            card: card.into(),
            caps,
            capture_formats: capture.iter().map(|s| s.to_string()).collect(),
            output_formats: output.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// A Raspberry Pi 4 (Pi OS, kernel 6.1): bcm2835-codec's decoder, encoder and ISP
    /// nodes, then a UVC camera. Formats as `v4l2-ctl --list-formats-out/-ext` lists
    /// them (abridged).
    fn pi4() -> Vec<(PathBuf, Result<M2mCandidate, String>)> {
        let mplane = CAP_VIDEO_M2M_MPLANE | STREAMING;
        vec![
            candidate(
                "/dev/video0",
                "UVC Camera (046d:0825)",
                0x0420_0001,
                &[],
                &[],
            ),
            candidate(
                "/dev/video10",
                "bcm2835-codec-decode",
                mplane,
                &["YU12", "YV12", "NV12", "NV21", "RGBP"],
                &["H264", "MJPG", "MPG2"],
            ),
            candidate(
                "/dev/video11",
                "bcm2835-codec-encode",
                mplane,
                &["H264"],
                &[
                    "YU12", "YV12", "NV12", "NV21", "RGBP", "RGB3", "BGR3", "BGR4",
                ],
            ),
            candidate(
                "/dev/video12",
                "bcm2835-codec-isp",
                mplane,
                &["YU12", "NV12", "RGBP"],
                &["YU12", "NV12", "RGBP"],
            ),
        ]
        .into_iter()
        .map(|c| (c.path.clone(), Ok(c)))
        .collect()
    }

    #[test]
    fn a_pi4_picks_the_bcm2835_encoder_and_names_why_the_others_were_not() {
        let choice = choose_h264(&pi4(), true);
        assert_eq!(choice.codec, HARDWARE_H264);
        assert_eq!(choice.device.as_deref(), Some(Path::new("/dev/video11")));
        assert!(
            choice.reason.contains("bcm2835-codec-encode"),
            "{}",
            choice.reason
        );
        let why: BTreeMap<_, _> = choice.rejected.iter().cloned().collect();
        assert!(why[Path::new("/dev/video0")].contains("not a memory-to-memory device"));
        assert!(why[Path::new("/dev/video10")].contains("CAPTURE queue offers no H264 (YU12"));
        assert!(why[Path::new("/dev/video12")].contains("offers no H264"));
    }

    #[test]
    fn without_h264_v4l2m2m_in_libavcodec_the_pi4_uses_libx264() {
        let choice = choose_h264(&pi4(), false);
        assert_eq!(choice.codec, SOFTWARE_H264);
        assert!(
            choice.reason.contains("no h264_v4l2m2m"),
            "{}",
            choice.reason
        );
    }

    #[test]
    fn single_planar_m2m_encoders_count_too() {
        let c = candidate(
            "/dev/video3",
            "vicodec",
            CAP_VIDEO_M2M | STREAMING,
            &["H264"],
            &["NV12"],
        );
        assert_eq!(rejection(&c), None);
    }

    /// A Pi 5 has no hardware H.264 encoder (its HEVC decoder is M2M), a PC only UVC
    /// cameras or nothing: libx264.
    #[test]
    fn no_hardware_encoder_means_libx264() {
        let pi5 = vec![candidate(
            "/dev/video19",
            "rpi-hevc-dec",
            CAP_VIDEO_M2M_MPLANE | STREAMING,
            &["NC12"],
            &["S265"],
        )];
        let scanned: Vec<_> = pi5.into_iter().map(|c| (c.path.clone(), Ok(c))).collect();
        let choice = choose_h264(&scanned, true);
        assert_eq!(choice.codec, SOFTWARE_H264);
        assert_eq!(choice.reason, "no V4L2 memory-to-memory H.264 encoder");
        assert_eq!(choose_h264(&[], true).reason, "no V4L2 device");
        let unreadable = vec![(
            PathBuf::from("/dev/video0"),
            Err("/dev/video0: Permission denied".to_string()),
        )];
        let choice = choose_h264(&unreadable, true);
        assert_eq!(choice.codec, SOFTWARE_H264);
        assert_eq!(choice.rejected[0].1, "/dev/video0: Permission denied");
    }

    #[test]
    fn an_encoder_that_cannot_take_yuv420_or_nv12_is_rejected() {
        let c = candidate(
            "/dev/video5",
            "odd-enc",
            CAP_VIDEO_M2M_MPLANE | STREAMING,
            &["H264"],
            &["RGB3"],
        );
        assert_eq!(
            rejection(&c).as_deref(),
            Some("its OUTPUT queue takes neither NV12 nor YU12 (RGB3)")
        );
        let no_streaming = candidate(
            "/dev/video5",
            "odd-enc",
            CAP_VIDEO_M2M_MPLANE,
            &["H264"],
            &["NV12"],
        );
        assert_eq!(
            rejection(&no_streaming).as_deref(),
            Some("no streaming I/O")
        );
    }

    #[test]
    fn the_hardware_encoder_always_gets_a_bitrate_and_a_gop_and_only_its_options() {
        let video = VideoStreamConfig::new(640, 480, 30.0)
            .expect("config")
            .with_bitrate(0)
            .with_option("preset", "superfast")
            .with_option("num_capture_buffers", "8");
        let choice = choose_h264(&pi4(), true);
        let hw = apply_h264_choice(video.clone(), &choice);
        assert_eq!(hw.codec, HARDWARE_H264);
        assert_eq!(hw.bitrate, HARDWARE_DEFAULT_BITRATE);
        assert_eq!(hw.stream_options.get("g").map(String::as_str), Some("30"));
        assert_eq!(
            hw.stream_options
                .get("num_capture_buffers")
                .map(String::as_str),
            Some("8")
        );
        assert!(!hw.stream_options.contains_key("preset"));
        assert_eq!(hw.metadata["encoder"], HARDWARE_H264);
        assert_eq!(hw.metadata["encoder_reason"], choice.reason);

        let sw = apply_h264_choice(video, &choose_h264(&[], true));
        assert_eq!(sw.codec, SOFTWARE_H264);
        assert_eq!(
            sw.stream_options.get("preset").map(String::as_str),
            Some("superfast")
        );
        assert!(!sw.stream_options.contains_key("num_capture_buffers"));
        assert_eq!(sw.metadata["encoder_reason"], "no V4L2 device");
    }

    #[test]
    fn fourcc_codes_read_as_text() {
        assert_eq!(fourcc(u32::from_le_bytes(*b"H264")), "H264");
        assert_eq!(c_string(b"vivid\0\0\0"), "vivid");
    }
}
