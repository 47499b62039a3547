//! EuRoC / ASL layout (what ORB-SLAM3's `*_euroc` examples, Kalibr, OpenVINS and
//! basalt read):
//!
//! ```text
//! OUT/mav0/cam0/data/<t_ns>.png    8-bit grey, one per frame
//! OUT/mav0/cam0/data.csv           #timestamp [ns],filename
//! OUT/mav0/cam0/sensor.yaml        T_BS (camera → IMU), rate, resolution, intrinsics, distortion
//! OUT/mav0/imu0/data.csv           #timestamp [ns],w_RS_S_x [rad s^-1],…,a_RS_S_z [m s^-2]
//! OUT/mav0/imu0/sensor.yaml
//! OUT/timestamps.txt               cam0's frame times in ns, one a line (ORB-SLAM3's times file)
//! OUT/kalibr/camN/<t_ns>.png       the same images (hard links) in the layout of Kalibr's
//! OUT/kalibr/imuN.csv              bagcreater (`kalibr_bagcreater --folder OUT/kalibr`)
//! OUT/kalibr/camchain.yaml         Kalibr's camchain: T_cam_imu (IMU → camera) and
//!                                  timeshift_cam_imu, for the cameras with intrinsics
//! ```
//!
//! Cameras are numbered in file order, IMUs likewise; the body frame is the first IMU's.
//! Depth and other data streams have no place here. With an IMU, the cameras' frames
//! begin at its first sample: ORB-SLAM3's EuRoC examples take the IMU samples at or
//! before the first frame, and read before their array when there are none.

use std::path::Path;

use super::read::{Recording, Sink, Track, TrackKind};
use super::{
    imu_row, make_dir, streams_for, write_text, Error, Format, ImageTracks, Progress, Report,
    Result, Selection, TextFile,
};
use crate::recording::Calibration;
use crate::sensors::ImuSample;

const IMU_HEADER: &str = "#timestamp [ns],w_RS_S_x [rad s^-1],w_RS_S_y [rad s^-1],w_RS_S_z [rad s^-1],a_RS_S_x [m s^-2],a_RS_S_y [m s^-2],a_RS_S_z [m s^-2]\n";

pub fn write(
    recording: &mut Recording,
    selection: &Selection,
    out: &Path,
    progress: &mut Progress,
) -> Result<Report> {
    let (tracks, skipped) = streams_for(
        recording,
        selection,
        Format::Euroc,
        &[TrackKind::Camera, TrackKind::Imu],
        "EuRoC holds cameras and IMUs only",
    )?;
    if tracks.is_empty() {
        return Err(Error::CannotHold {
            format: Format::Euroc,
            stream: "(none)".into(),
            why: format!("{} has no camera or IMU stream", recording.path().display()),
        });
    }
    let mav0 = out.join("mav0");
    let mut sink = EurocSink {
        origin_unix_us: recording.origin_unix_us,
        folders: Vec::new(),
        images: ImageTracks::start()?,
        first_camera_times: None,
        imu_span: Default::default(),
        body_imu: tracks
            .iter()
            .find(|t| t.kind == TrackKind::Imu)
            .map(|t| t.index),
        first_imu_us: None,
    };
    let (mut cams, mut imus) = (0, 0);
    for track in &tracks {
        let folder = if track.kind == TrackKind::Camera {
            cams += 1;
            mav0.join(format!("cam{}", cams - 1))
        } else {
            imus += 1;
            mav0.join(format!("imu{}", imus - 1))
        };
        let (csv, header) = if track.kind == TrackKind::Camera {
            make_dir(&folder.join("data"))?;
            (folder.join("data.csv"), "#timestamp [ns],filename\n")
        } else {
            make_dir(&folder)?;
            (folder.join("data.csv"), IMU_HEADER)
        };
        sink.folders
            .push((track.index, folder, TextFile::create(&csv, header)?));
    }
    if cams > 0 {
        sink.first_camera_times = Some(TextFile::create(&out.join("timestamps.txt"), "")?);
    }
    recording.play(&tracks, selection, &mut sink, progress)?;
    let EurocSink {
        folders,
        images,
        first_camera_times,
        imu_span,
        ..
    } = sink;
    let frames = images.finish()?;
    let mut report = Report {
        frames,
        skipped,
        ..Default::default()
    };
    if let Some(times) = first_camera_times {
        times.finish()?;
    }
    let body = tracks
        .iter()
        .find(|t| t.kind == TrackKind::Imu)
        .map(|t| t.name.clone());
    for ((index, folder, csv), track) in folders.into_iter().zip(&tracks) {
        debug_assert_eq!(index, track.index);
        csv.finish()?;
        let yaml = if track.kind == TrackKind::Camera {
            camera_yaml(track, body.as_deref())
        } else {
            let (rows, rate_hz) = imu_span.rate(track.index);
            report.imu_samples.insert(track.name.clone(), rows);
            imu_yaml(track, rate_hz)
        };
        write_text(&folder.join("sensor.yaml"), &yaml)?;
    }
    kalibr_view(&mav0, &out.join("kalibr"), &tracks)?;
    Ok(report)
}

/// The images and IMU rows again in the layout of Kalibr's bagcreater, as hard links
/// (a copy where the file system has none), and Kalibr's camchain.
fn kalibr_view(mav0: &Path, kalibr: &Path, tracks: &[Track]) -> Result<()> {
    make_dir(kalibr)?;
    let mut camchain = String::new();
    let (mut cams, mut imus) = (0, 0);
    for track in tracks {
        if track.kind == TrackKind::Camera {
            let name = format!("cam{cams}");
            cams += 1;
            let (from, to) = (mav0.join(&name).join("data"), kalibr.join(&name));
            make_dir(&to)?;
            let entries = std::fs::read_dir(&from).map_err(|e| Error::io("list", &from, e))?;
            for entry in entries {
                let entry = entry.map_err(|e| Error::io("list", &from, e))?;
                link_or_copy(&entry.path(), &to.join(entry.file_name()))?;
            }
            camchain.push_str(&camchain_entry(&name, track));
        } else {
            let name = format!("imu{imus}");
            imus += 1;
            link_or_copy(
                &mav0.join(&name).join("data.csv"),
                &kalibr.join(format!("{name}.csv")),
            )?;
        }
    }
    if !camchain.is_empty() {
        write_text(&kalibr.join("camchain.yaml"), &camchain)?;
    }
    Ok(())
}

fn link_or_copy(from: &Path, to: &Path) -> Result<()> {
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).map_err(|e| Error::io("copy", to, e))?;
    }
    Ok(())
}

/// One camera of Kalibr's camchain.yaml; nothing for a camera without intrinsics
/// (Kalibr needs them).
fn camchain_entry(name: &str, track: &Track) -> String {
    let c = &track.calibration;
    let Some(k) = c.intrinsics else {
        return String::new();
    };
    let rows: Vec<String> = c
        .t_cam_imu()
        .iter()
        .map(|r| format!("  - {}", list(r)))
        .collect();
    format!(
        "{name}:\n  camera_model: pinhole\n  intrinsics: {}\n  distortion_model: {}\n  distortion_coeffs: {}\n  resolution: [{}, {}]\n  T_cam_imu:\n{}\n  timeshift_cam_imu: {:?}\n  rostopic: /{name}/image_raw\n",
        list(&k),
        c.distortion_model.map_or("none", |m| m.kalibr_name()),
        list(&c.distortion_coeffs),
        track.width,
        track.height,
        rows.join("\n"),
        c.timeshift_cam_imu_s
    )
}

struct EurocSink {
    origin_unix_us: i64,
    /// Per track: its index, folder and data.csv.
    folders: Vec<(usize, std::path::PathBuf, TextFile)>,
    images: ImageTracks,
    /// `timestamps.txt`: the first camera's frame times.
    first_camera_times: Option<TextFile>,
    imu_span: ImuSpan,
    /// The first IMU's track, and its first sample's media time once seen: frames
    /// before it are left out.
    body_imu: Option<usize>,
    first_imu_us: Option<i64>,
}

impl EurocSink {
    fn slot(&mut self, track: &Track) -> Result<(usize, &mut std::path::PathBuf, &mut TextFile)> {
        let position = self
            .folders
            .iter()
            .position(|(i, ..)| *i == track.index)
            .ok_or_else(|| Error::Worker(format!("euroc: unexpected track {}", track.name)))?;
        let (_, folder, csv) = &mut self.folders[position];
        Ok((position, folder, csv))
    }
}

impl Sink for EurocSink {
    fn frame(&mut self, track: &Track, t_us: i64, frame: &ffmpeg_next::frame::Video) -> Result<()> {
        // A frame decoded before any IMU sample was read is left out too: the first
        // samples come in the packet of the first frames.
        if self.body_imu.is_some() && !self.first_imu_us.is_some_and(|first| t_us >= first) {
            return Ok(());
        }
        let t_ns = (self.origin_unix_us + t_us) * 1000;
        let name = format!("{t_ns}.png");
        let (position, folder, _) = self.slot(track)?;
        let path = folder.join("data").join(&name);
        if self
            .images
            .write(track, t_us, frame, super::images::Layout::Gray8, path)?
        {
            let (_, _, csv) = self.slot(track)?;
            csv.write(&format!("{t_ns},{name}\n"))?;
            if position == 0 {
                if let Some(times) = self.first_camera_times.as_mut() {
                    times.write(&format!("{t_ns}\n"))?;
                }
            }
        }
        Ok(())
    }

    fn imu(&mut self, track: &Track, samples: &[ImuSample]) -> Result<()> {
        let origin = self.origin_unix_us;
        let (_, _, csv) = self.slot(track)?;
        let mut rows = String::new();
        for s in samples {
            rows.push_str(&imu_row((origin + s.t_us) * 1000, s));
            rows.push('\n');
        }
        csv.write(&rows)?;
        if self.body_imu == Some(track.index) && self.first_imu_us.is_none() {
            self.first_imu_us = samples.first().map(|s| s.t_us);
        }
        self.imu_span.add(track.index, samples);
        Ok(())
    }
}

/// Per IMU track: rows written and the first and last sample time, for its rate.
#[derive(Default)]
pub(crate) struct ImuSpan(std::collections::BTreeMap<usize, (u64, i64, i64)>);

impl ImuSpan {
    pub(crate) fn add(&mut self, index: usize, samples: &[ImuSample]) {
        let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
            return;
        };
        let entry = self.0.entry(index).or_insert((0, first.t_us, first.t_us));
        entry.0 += samples.len() as u64;
        entry.2 = last.t_us;
    }

    /// Rows written and the mean rate in Hz (0 with fewer than two rows).
    pub(crate) fn rate(&self, index: usize) -> (u64, f64) {
        match self.0.get(&index) {
            Some(&(n, first, last)) if n > 1 && last > first => {
                (n, (n - 1) as f64 / ((last - first) as f64 / 1e6))
            }
            Some(&(n, ..)) => (n, 0.0),
            None => (0, 0.0),
        }
    }
}

/// A 4×4 matrix in EuRoC's `{cols, rows, data}` form.
fn matrix_yaml(name: &str, m: &[[f64; 4]; 4]) -> String {
    let rows: Vec<String> = m
        .iter()
        .map(|r| {
            r.iter()
                .map(|v| format!("{v:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect();
    format!(
        "{name}:\n  cols: 4\n  rows: 4\n  data: [{}]\n",
        rows.join(",\n         ")
    )
}

fn list(values: &[f64]) -> String {
    let v: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    format!("[{}]", v.join(", "))
}

fn camera_yaml(track: &Track, body: Option<&str>) -> String {
    let c: &Calibration = &track.calibration;
    let mut y = format!(
        "# General sensor definitions.\nsensor_type: camera\ncomment: grabd stream {}\n\n",
        track.name
    );
    y.push_str(&format!(
        "# Sensor extrinsics wrt. the body-frame ({}): camera → IMU.\n",
        body.map_or_else(
            || "no IMU: identity".to_owned(),
            |b| format!("IMU stream {b}")
        )
    ));
    y.push_str(&matrix_yaml("T_BS", &c.t_imu_cam_or_identity()));
    y.push_str(&format!(
        "\n# Camera specific definitions.\nrate_hz: {}\nresolution: [{}, {}]\ncamera_model: pinhole\n",
        track.fps, track.width, track.height
    ));
    match c.intrinsics {
        Some(k) => y.push_str(&format!("intrinsics: {} # fu, fv, cu, cv\n", list(&k))),
        None => y.push_str("# intrinsics: not in the recording's calibration\n"),
    }
    if let Some(model) = c.distortion_model {
        y.push_str(&format!(
            "distortion_model: {}\ndistortion_coefficients: {}\n",
            model.euroc_name(),
            list(&c.distortion_coeffs)
        ));
    }
    y.push_str(&format!(
        "\n# grabd: t_imu = t_cam + timeshift_cam_imu (s); the stored image turned clockwise by\n# rotation_deg, then flipped, is upright.\ntimeshift_cam_imu: {:?}\nrotation_deg: {}\nflip: {}\n",
        c.timeshift_cam_imu_s,
        c.rotation_deg,
        serde_json::to_value(c.flip)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    ));
    y
}

fn imu_yaml(track: &Track, rate_hz: f64) -> String {
    format!(
        "# General sensor definitions.\nsensor_type: imu\ncomment: grabd stream {}\n\n\
         # Sensor extrinsics wrt. the body-frame (this IMU).\n{}\n\
         rate_hz: {}\n\
         # The noise densities and random walks are not known to the recorder: calibrate\n\
         # them (e.g. with allan_variance_ros) and add them here.\n",
        track.name,
        matrix_yaml("T_BS", &crate::recording::calibration::IDENTITY),
        (rate_hz * 1000.0).round() / 1000.0,
    )
}
