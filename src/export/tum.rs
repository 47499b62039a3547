//! TUM RGB-D layout (ORB-SLAM3's `rgbd_tum`, the TUM benchmark tools):
//!
//! ```text
//! OUT/rgb/<t>.png            8-bit RGB, named by %.6f seconds since the Unix epoch
//! OUT/depth/<t>.png          16-bit grey, the recorded values (see depth_map_factor)
//! OUT/rgb.txt, depth.txt     "# …" header lines, then "timestamp filename"
//! OUT/associations.txt       "t_rgb rgb/… t_depth depth/…": nearest depth per rgb frame
//!                            within ASSOCIATION_TOLERANCE_US, each depth used once
//! OUT/accelerometer.txt      "timestamp ax ay az" of the IMU, if one is exported
//! OUT/calibration.yaml       depth_map_factor (ORB-SLAM3's RGBD.DepthMapFactor: values
//!                            per metre) and the cameras' intrinsics
//! ```
//!
//! One colour camera and at most one depth camera: choose with `--streams` when the
//! recording has more.

use std::path::Path;

use super::images::Layout;
use super::read::{Recording, Sink, Track, TrackKind};
use super::{
    make_dir, seconds_6, streams_for, write_text, Error, Format, ImageTracks, Progress, Report,
    Result, Selection, TextFile,
};
use crate::sensors::ImuSample;

/// The largest rgb–depth time difference an association takes (the TUM tools'
/// `associate.py` default, 0.02 s).
pub const ASSOCIATION_TOLERANCE_US: i64 = 20_000;

pub fn write(
    recording: &mut Recording,
    selection: &Selection,
    out: &Path,
    progress: &mut Progress,
) -> Result<Report> {
    let (tracks, skipped) = streams_for(
        recording,
        selection,
        Format::Tum,
        &[TrackKind::Camera, TrackKind::Depth, TrackKind::Imu],
        "TUM RGB-D holds one colour camera, one depth camera and an accelerometer",
    )?;
    let one = |kind: TrackKind, what: &str| -> Result<Option<Track>> {
        let of_kind: Vec<&Track> = tracks.iter().filter(|t| t.kind == kind).collect();
        match of_kind.as_slice() {
            [] => Ok(None),
            [track] => Ok(Some((*track).clone())),
            [_, second, ..] => Err(Error::CannotHold {
                format: Format::Tum,
                stream: second.name.clone(),
                why: format!(
                    "TUM RGB-D holds one {what}; the selection has {} ({}): choose one with --streams",
                    of_kind.len(),
                    of_kind.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
                ),
            }),
        }
    };
    let rgb = one(TrackKind::Camera, "colour camera")?.ok_or_else(|| Error::CannotHold {
        format: Format::Tum,
        stream: "(none)".into(),
        why: "TUM RGB-D needs a colour camera, and the selection has none".into(),
    })?;
    let depth = one(TrackKind::Depth, "depth camera")?;
    let imu = one(TrackKind::Imu, "accelerometer (IMU)")?;
    make_dir(&out.join("rgb"))?;
    let mut sink = TumSink {
        out: out.to_owned(),
        origin_unix_us: recording.origin_unix_us,
        rgb_index: rgb.index,
        rgb_txt: TextFile::create(
            &out.join("rgb.txt"),
            "# color images\n# grabd export\n# timestamp filename\n",
        )?,
        depth_txt: None,
        accel_txt: None,
        images: ImageTracks::start()?,
        rgb_times: Vec::new(),
        depth_times: Vec::new(),
        imu_rows: 0,
    };
    let mut played = vec![rgb.clone()];
    if let Some(depth) = &depth {
        make_dir(&out.join("depth"))?;
        sink.depth_txt = Some(TextFile::create(
            &out.join("depth.txt"),
            "# depth maps\n# grabd export\n# timestamp filename\n",
        )?);
        played.push(depth.clone());
    }
    if let Some(imu) = &imu {
        sink.accel_txt = Some(TextFile::create(
            &out.join("accelerometer.txt"),
            "# accelerometer data\n# grabd export\n# timestamp ax ay az\n",
        )?);
        played.push(imu.clone());
    }
    played.sort_by_key(|t| t.index);
    recording.play(&played, selection, &mut sink, progress)?;
    let TumSink {
        rgb_txt,
        depth_txt,
        accel_txt,
        images,
        rgb_times,
        depth_times,
        imu_rows,
        ..
    } = sink;
    let frames = images.finish()?;
    rgb_txt.finish()?;
    for text in [depth_txt, accel_txt].into_iter().flatten() {
        text.finish()?;
    }
    let mut report = Report {
        frames,
        skipped,
        ..Default::default()
    };
    if let Some(imu) = &imu {
        report.imu_samples.insert(imu.name.clone(), imu_rows);
    }
    if depth.is_some() {
        let mut lines = String::new();
        for (r, d) in associate(&rgb_times, &depth_times, ASSOCIATION_TOLERANCE_US) {
            let (r, d) = (seconds_6(r), seconds_6(d));
            lines.push_str(&format!("{r} rgb/{r}.png {d} depth/{d}.png\n"));
        }
        write_text(&out.join("associations.txt"), &lines)?;
    }
    write_text(
        &out.join("calibration.yaml"),
        &calibration_yaml(&rgb, depth.as_ref()),
    )?;
    Ok(report)
}

struct TumSink {
    out: std::path::PathBuf,
    origin_unix_us: i64,
    rgb_index: usize,
    rgb_txt: TextFile,
    depth_txt: Option<TextFile>,
    accel_txt: Option<TextFile>,
    images: ImageTracks,
    /// Absolute µs of the frames written, for the associations.
    rgb_times: Vec<i64>,
    depth_times: Vec<i64>,
    imu_rows: u64,
}

impl Sink for TumSink {
    fn frame(&mut self, track: &Track, t_us: i64, frame: &ffmpeg_next::frame::Video) -> Result<()> {
        let unix_us = self.origin_unix_us + t_us;
        let name = seconds_6(unix_us);
        let is_rgb = track.index == self.rgb_index;
        let (folder, layout) = if is_rgb {
            ("rgb", Layout::Rgb8)
        } else {
            ("depth", Layout::Gray16)
        };
        let path = self.out.join(folder).join(format!("{name}.png"));
        if !self.images.write(track, t_us, frame, layout, path)? {
            return Ok(());
        }
        let line = format!("{name} {folder}/{name}.png\n");
        if is_rgb {
            self.rgb_txt.write(&line)?;
            self.rgb_times.push(unix_us);
        } else if let Some(depth) = self.depth_txt.as_mut() {
            depth.write(&line)?;
            self.depth_times.push(unix_us);
        }
        Ok(())
    }

    fn imu(&mut self, _track: &Track, samples: &[ImuSample]) -> Result<()> {
        let Some(accel) = self.accel_txt.as_mut() else {
            return Ok(());
        };
        let mut rows = String::new();
        for s in samples {
            rows.push_str(&format!(
                "{} {} {} {}\n",
                seconds_6(self.origin_unix_us + s.t_us),
                s.accel[0],
                s.accel[1],
                s.accel[2]
            ));
        }
        accel.write(&rows)?;
        self.imu_rows += samples.len() as u64;
        Ok(())
    }
}

/// Pairs (rgb, depth) of times whose difference is at most `tolerance`, the closest
/// first, each time used once (as the TUM tools' `associate.py` does); in rgb order.
pub fn associate(rgb: &[i64], depth: &[i64], tolerance: i64) -> Vec<(i64, i64)> {
    let mut candidates = Vec::new();
    for &r in rgb {
        // depth is in time order: only the neighbours within the tolerance.
        let from = depth.partition_point(|&d| d < r - tolerance);
        for &d in depth[from..].iter().take_while(|&&d| d <= r + tolerance) {
            candidates.push(((r - d).abs(), r, d));
        }
    }
    candidates.sort_unstable();
    let mut used_rgb = std::collections::BTreeSet::new();
    let mut used_depth = std::collections::BTreeSet::new();
    let mut pairs: Vec<(i64, i64)> = candidates
        .into_iter()
        .filter(|&(_, r, d)| {
            let free = !used_rgb.contains(&r) && !used_depth.contains(&d);
            if free {
                used_rgb.insert(r);
                used_depth.insert(d);
            }
            free
        })
        .map(|(_, r, d)| (r, d))
        .collect();
    pairs.sort_unstable();
    pairs
}

fn calibration_yaml(rgb: &Track, depth: Option<&Track>) -> String {
    let mut y = String::from("# grabd export: TUM RGB-D\n");
    if let Some(depth) = depth {
        let unit_mm = depth.calibration.depth_unit_mm_or_default();
        y.push_str(&format!(
            "# depth PNG value × {unit_mm} mm; ORB-SLAM3's RGBD.DepthMapFactor:\ndepth_map_factor: {:?}\n",
            1000.0 / unit_mm
        ));
    }
    for track in std::iter::once(rgb).chain(depth) {
        y.push_str(&format!(
            "{}:\n  stream: {}\n  width: {}\n  height: {}\n  fps: {}\n",
            if track.index == rgb.index {
                "rgb"
            } else {
                "depth"
            },
            track.name,
            track.width,
            track.height,
            track.fps
        ));
        if let Some([fx, fy, cx, cy]) = track.calibration.intrinsics {
            y.push_str(&format!(
                "  fx: {fx:?}\n  fy: {fy:?}\n  cx: {cx:?}\n  cy: {cy:?}\n"
            ));
        }
        if let Some(model) = track.calibration.distortion_model {
            y.push_str(&format!(
                "  distortion_model: {}\n  distortion_coeffs: {:?}\n",
                model.kalibr_name(),
                track.calibration.distortion_coeffs
            ));
        }
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn associations_take_the_nearest_depth_once_within_the_tolerance() {
        let rgb = [1_000_000, 1_040_000, 1_080_000, 1_200_000];
        let depth = [1_005_000, 1_030_000, 1_079_000, 1_150_000];
        assert_eq!(
            associate(&rgb, &depth, 20_000),
            [
                (1_000_000, 1_005_000),
                (1_040_000, 1_030_000),
                (1_080_000, 1_079_000)
            ]
        );
    }
}
