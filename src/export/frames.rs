//! Plain frames, for anything else:
//!
//! ```text
//! OUT/<stream>/<t_ns>.png     a camera as 8-bit RGB (or <t_ns>.jpg with
//!                             --image-format jpeg), a depth camera as 16-bit grey PNG
//!                             (the recorded values, in its calibration's depth unit;
//!                             JPEG has no 16-bit samples, so depth stays PNG)
//! OUT/<stream>/frames.csv     #timestamp [ns],media_time [us],filename
//! OUT/<imu>.csv               #timestamp [ns],media_time [us],w_x..w_z [rad s^-1],
//!                             a_x..a_z [m s^-2],temp [C]
//! ```
//!
//! Timestamps are ns since the Unix epoch (the recording's origin plus media time).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::images::{ImageFormat, Layout};
use super::read::{Recording, Sink, Track, TrackKind};
use super::{
    make_dir, streams_for, Error, Format, ImageTracks, Progress, Report, Result, Selection,
    TextFile,
};
use crate::sensors::ImuSample;

const IMU_HEADER: &str = "#timestamp [ns],media_time [us],w_x [rad s^-1],w_y [rad s^-1],w_z [rad s^-1],a_x [m s^-2],a_y [m s^-2],a_z [m s^-2],temp [C]\n";

pub fn write(
    recording: &mut Recording,
    selection: &Selection,
    image: ImageFormat,
    out: &Path,
    progress: &mut Progress,
) -> Result<Report> {
    let (tracks, skipped) = streams_for(
        recording,
        selection,
        Format::Frames,
        &[TrackKind::Camera, TrackKind::Depth, TrackKind::Imu],
        "frames holds cameras, depth cameras and IMUs (other data tracks have no known payload)",
    )?;
    if tracks.is_empty() {
        return Err(Error::CannotHold {
            format: Format::Frames,
            stream: "(none)".into(),
            why: format!("{} has no camera or IMU stream", recording.path().display()),
        });
    }
    let mut sink = FramesSink {
        out: out.to_owned(),
        image,
        origin_unix_us: recording.origin_unix_us,
        csv: BTreeMap::new(),
        images: ImageTracks::start()?,
        imu_rows: BTreeMap::new(),
    };
    for track in &tracks {
        let csv = if track.kind == TrackKind::Imu {
            TextFile::create(&out.join(format!("{}.csv", track.name)), IMU_HEADER)?
        } else {
            let dir = out.join(&track.name);
            make_dir(&dir)?;
            TextFile::create(
                &dir.join("frames.csv"),
                "#timestamp [ns],media_time [us],filename\n",
            )?
        };
        sink.csv.insert(track.index, csv);
    }
    recording.play(&tracks, selection, &mut sink, progress)?;
    let FramesSink {
        csv,
        images,
        imu_rows,
        ..
    } = sink;
    let frames = images.finish()?;
    for text in csv.into_values() {
        text.finish()?;
    }
    Ok(Report {
        frames,
        imu_samples: imu_rows,
        skipped,
        ..Default::default()
    })
}

struct FramesSink {
    out: PathBuf,
    image: ImageFormat,
    origin_unix_us: i64,
    csv: BTreeMap<usize, TextFile>,
    images: ImageTracks,
    imu_rows: BTreeMap<String, u64>,
}

impl FramesSink {
    fn csv(&mut self, track: &Track) -> Result<&mut TextFile> {
        self.csv
            .get_mut(&track.index)
            .ok_or_else(|| Error::Worker(format!("frames: unexpected track {}", track.name)))
    }
}

impl Sink for FramesSink {
    fn frame(&mut self, track: &Track, t_us: i64, frame: &ffmpeg_next::frame::Video) -> Result<()> {
        let t_ns = (self.origin_unix_us + t_us) * 1000;
        let (layout, image) = match (track.kind, self.image) {
            (TrackKind::Depth, _) => (Layout::Gray16, ImageFormat::Png),
            (_, ImageFormat::Png) => (Layout::Rgb8, ImageFormat::Png),
            (_, ImageFormat::Jpeg) => (Layout::Yuv420Jpeg, ImageFormat::Jpeg),
        };
        let name = format!("{t_ns}.{}", image.extension());
        let path = self.out.join(&track.name).join(&name);
        if self.images.write(track, t_us, frame, layout, path)? {
            self.csv(track)?.write(&format!("{t_ns},{t_us},{name}\n"))?;
        }
        Ok(())
    }

    fn imu(&mut self, track: &Track, samples: &[ImuSample]) -> Result<()> {
        let mut rows = String::new();
        for s in samples {
            let t_ns = (self.origin_unix_us + s.t_us) * 1000;
            let temp = s.temp_c.map(|t| t.to_string()).unwrap_or_default();
            rows.push_str(&format!(
                "{t_ns},{},{},{},{},{},{},{},{temp}\n",
                s.t_us, s.gyro[0], s.gyro[1], s.gyro[2], s.accel[0], s.accel[1], s.accel[2]
            ));
        }
        self.csv(track)?.write(&rows)?;
        *self.imu_rows.entry(track.name.clone()).or_default() += samples.len() as u64;
        Ok(())
    }
}
