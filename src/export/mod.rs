//! `grabd export`: a finished recording into the folders and files that SLAM,
//! calibration and viewing tools read, straight from the MKV (libavformat, no ffmpeg
//! subprocess).
//!
//! Map:
//! - [`Format`]: what to write — [`euroc`] (ASL/EuRoC: ORB-SLAM3, Kalibr, OpenVINS,
//!   basalt), [`tum`] (TUM RGB-D), [`frames`] (PNG per frame + CSV) and [`mcap`] (Foxglove).
//! - [`Selection`]: `--start/--end` (media seconds) and `--streams`.
//! - [`read`]: the read-back layer. [`read::Recording`] opens the file, names its tracks
//!   (camera, depth camera, IMU) with their calibration, and plays the selection to a
//!   [`read::Sink`]: decoded video frames (libav's own threads on every core) and IMU
//!   samples (the payload decoder of [`crate::sensors`]), each with its absolute time:
//!   the recording's wall-clock origin plus media time.
//! - [`images`]: frames as PNG, encoded and written by a pool of threads.
//! - [`Publish`] (here): every export is written into `<out>.tmp` and renamed to `<out>`
//!   only when complete, so a partial export never looks like one.
//! - [`Progress`] (here): a one-line progress display, on a terminal only.

pub mod euroc;
pub mod frames;
pub mod images;
pub mod mcap;
pub mod read;
pub mod tum;

use std::collections::BTreeMap;
use std::fmt;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::recording::{self, durable};
pub use images::ImageFormat;

/// What `grabd export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Euroc,
    Tum,
    Frames,
    Mcap,
}

impl Format {
    /// The names `--format` takes.
    pub const NAMES: [&'static str; 4] = ["euroc", "tum", "frames", "mcap"];

    pub fn name(self) -> &'static str {
        match self {
            Format::Euroc => "euroc",
            Format::Tum => "tum",
            Format::Frames => "frames",
            Format::Mcap => "mcap",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "euroc" => Ok(Format::Euroc),
            "tum" => Ok(Format::Tum),
            "frames" => Ok(Format::Frames),
            "mcap" => Ok(Format::Mcap),
            other => Err(format!(
                "unknown format {other:?} (one of {})",
                Format::NAMES.join(", ")
            )),
        }
    }
}

/// Everything that can stop an export; each is one line naming the file, stream or
/// value and the limit.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Recording(#[from] recording::Error),
    #[error("{path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    /// The format has no place for this stream.
    #[error("{format} cannot hold stream {stream:?}: {why}")]
    CannotHold {
        format: Format,
        stream: String,
        why: String,
    },
    /// `--streams` named a stream the file does not have.
    #[error("--streams: {path} has no stream {stream:?} (it has {have})")]
    NoSuchStream {
        path: PathBuf,
        stream: String,
        have: String,
    },
    #[error("--start/--end: {0}")]
    BadRange(String),
    #[error("{0} exists already: export writes a new folder (remove it or choose another)")]
    OutExists(PathBuf),
    #[error("{op} {path}: {cause}")]
    Io {
        op: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("image {path}: {reason}")]
    Image { path: PathBuf, reason: String },
    /// `--image-format` asked for images the format does not take.
    #[error("--image-format {image}: {format} writes PNG only (JPEG is for --format frames)")]
    ImageFormat { format: Format, image: &'static str },
    #[error("export thread {0} panicked")]
    Worker(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, path: &Path, cause: std::io::Error) -> Self {
        Error::Io {
            op,
            path: path.to_owned(),
            cause,
        }
    }
}

/// Which part of the recording to export.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selection {
    /// Media time (µs from the recording's zero) of the first frame or sample taken.
    pub start_us: Option<i64>,
    /// Media time at which to stop (exclusive).
    pub end_us: Option<i64>,
    /// Stream names; `None`: every stream the format can hold.
    pub streams: Option<Vec<String>>,
}

impl Selection {
    /// `--start`/`--end` in media seconds, checked.
    pub fn from_seconds(
        start_s: Option<f64>,
        end_s: Option<f64>,
        streams: Option<Vec<String>>,
    ) -> Result<Self> {
        let us = |what: &str, s: Option<f64>| -> Result<Option<i64>> {
            match s {
                None => Ok(None),
                Some(s) if (0.0..1e9).contains(&s) => Ok(Some((s * 1e6) as i64)),
                Some(s) => Err(Error::BadRange(format!(
                    "{what} {s} must be seconds of media time from 0 up to 1e9"
                ))),
            }
        };
        let (start_us, end_us) = (us("--start", start_s)?, us("--end", end_s)?);
        if let (Some(start), Some(end)) = (start_us, end_us) {
            if end <= start {
                return Err(Error::BadRange(format!(
                    "--end {} s is not after --start {} s",
                    end as f64 / 1e6,
                    start as f64 / 1e6
                )));
            }
        }
        Ok(Selection {
            start_us,
            end_us,
            streams,
        })
    }

    /// Whether media time `t_us` is in the selected interval.
    pub fn contains(&self, t_us: i64) -> bool {
        self.start_us.map_or(true, |s| t_us >= s) && self.end_us.map_or(true, |e| t_us < e)
    }

    /// Whether `stream` was named by `--streams` (every stream when none were).
    pub fn names(&self, stream: &str) -> bool {
        self.streams
            .as_ref()
            .map_or(true, |names| names.iter().any(|n| n == stream))
    }

    /// Whether the user chose the streams.
    pub fn explicit(&self) -> bool {
        self.streams.is_some()
    }
}

/// How an export went.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Report {
    /// The finished folder (or file).
    pub out: PathBuf,
    /// Images written per stream.
    pub frames: BTreeMap<String, u64>,
    /// IMU rows written per stream.
    pub imu_samples: BTreeMap<String, u64>,
    /// Streams left out because the format cannot hold them (no `--streams` given).
    pub skipped: Vec<String>,
}

/// Export `file` as `format` into `out` (a folder that must not exist yet), the
/// images of `frames` as `image` (the other formats take PNG only).
pub fn export(
    file: &Path,
    format: Format,
    image: ImageFormat,
    out: &Path,
    selection: &Selection,
    progress: &mut Progress,
) -> Result<Report> {
    if image != ImageFormat::Png && !matches!(format, Format::Frames) {
        return Err(Error::ImageFormat {
            format,
            image: image.name(),
        });
    }
    let mut recording = read::Recording::open(file)?;
    recording.check_selection(selection)?;
    let publish = Publish::begin(out)?;
    let result = match format {
        Format::Euroc => euroc::write(&mut recording, selection, publish.dir(), progress),
        Format::Tum => tum::write(&mut recording, selection, publish.dir(), progress),
        Format::Frames => frames::write(&mut recording, selection, image, publish.dir(), progress),
        Format::Mcap => mcap::write(&mut recording, selection, publish.dir(), progress),
    };
    progress.done();
    match result {
        Ok(mut report) => {
            publish.finish()?;
            report.out = out.to_owned();
            Ok(report)
        }
        Err(e) => {
            publish.abandon();
            Err(e)
        }
    }
}

/// An export folder in the making: written under `<out>.tmp`, renamed to `<out>` once
/// complete and synced, removed if the export fails.
pub struct Publish {
    tmp: PathBuf,
    out: PathBuf,
}

impl Publish {
    /// Start an export into `out`, which must not exist; a `<out>.tmp` left by an export
    /// that was killed is grabd's own and is replaced.
    pub fn begin(out: &Path) -> Result<Publish> {
        if out.symlink_metadata().is_ok() {
            return Err(Error::OutExists(out.to_owned()));
        }
        let tmp = durable::tmp_path(out);
        if tmp.symlink_metadata().is_ok() {
            std::fs::remove_dir_all(&tmp).map_err(|e| Error::io("remove", &tmp, e))?;
        }
        durable::create_dir_all(&tmp)?;
        Ok(Publish {
            tmp,
            out: out.to_owned(),
        })
    }

    /// The folder to write into.
    pub fn dir(&self) -> &Path {
        &self.tmp
    }

    /// Sync everything written (one `syncfs`, not an fsync per image), then rename the
    /// folder into place and sync its parent.
    pub fn finish(self) -> Result<()> {
        let dir = std::fs::File::open(&self.tmp).map_err(|e| Error::io("open", &self.tmp, e))?;
        use std::os::fd::AsRawFd;
        nix::unistd::syncfs(dir.as_raw_fd())
            .map_err(|e| Error::io("syncfs", &self.tmp, e.into()))?;
        durable::persist(&self.tmp, &self.out)?;
        Ok(())
    }

    /// Remove what was written.
    pub fn abandon(self) {
        if let Err(e) = std::fs::remove_dir_all(&self.tmp) {
            tracing::warn!(path = %self.tmp.display(), error = %e, "could not remove a failed export");
        }
    }
}

/// Progress shown on stderr while exporting, only when stderr is a terminal (a log or
/// a test gets nothing).
pub struct Progress {
    shown: bool,
    total_us: i64,
    last: Option<Instant>,
}

impl Progress {
    /// Progress on stderr if it is a terminal.
    pub fn on_terminal() -> Self {
        Progress {
            shown: std::io::stderr().is_terminal(),
            total_us: 0,
            last: None,
        }
    }

    /// No progress at all.
    pub fn hidden() -> Self {
        Progress {
            shown: false,
            total_us: 0,
            last: None,
        }
    }

    /// The media time the export runs to.
    pub fn set_total_us(&mut self, total_us: i64) {
        self.total_us = total_us.max(1);
    }

    /// The export reached media time `at_us` with `frames` images written.
    pub fn update(&mut self, at_us: i64, frames: u64) {
        if !self.shown
            || self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_millis(200))
        {
            return;
        }
        self.last = Some(Instant::now());
        let percent = (at_us.max(0) as f64 / self.total_us.max(1) as f64 * 100.0).min(100.0);
        let _ = write!(
            std::io::stderr(),
            "\rexport: {percent:5.1} %  {:.1} s  {frames} images",
            at_us as f64 / 1e6
        );
    }

    /// End the progress line.
    pub fn done(&mut self) {
        if self.shown && self.last.is_some() {
            let _ = writeln!(std::io::stderr());
            self.last = None;
        }
    }
}

/// The tracks of the recording that `format` takes: those of a kind in `holds` that
/// the selection names. A stream of another kind is refused when `--streams` named it,
/// and skipped (listed in the report) when no `--streams` was given.
pub(crate) fn streams_for(
    recording: &read::Recording,
    selection: &Selection,
    format: Format,
    holds: &[read::TrackKind],
    why: &str,
) -> Result<(Vec<read::Track>, Vec<String>)> {
    let mut taken = Vec::new();
    let mut skipped = Vec::new();
    for track in recording.tracks.iter().filter(|t| selection.names(&t.name)) {
        if holds.contains(&track.kind) {
            taken.push(track.clone());
        } else if selection.explicit() {
            return Err(Error::CannotHold {
                format,
                stream: track.name.clone(),
                why: why.to_owned(),
            });
        } else {
            skipped.push(track.name.clone());
        }
    }
    Ok((taken, skipped))
}

/// A text file (CSV, list) written line by line as the export goes.
pub(crate) struct TextFile {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
}

impl TextFile {
    /// Create `path` and write `header` (its lines as given).
    pub(crate) fn create(path: &Path, header: &str) -> Result<TextFile> {
        let file = std::fs::File::create(path).map_err(|e| Error::io("create", path, e))?;
        let mut text = TextFile {
            path: path.to_owned(),
            out: std::io::BufWriter::new(file),
        };
        text.write(header)?;
        Ok(text)
    }

    /// Append `text` as it is.
    pub(crate) fn write(&mut self, text: &str) -> Result<()> {
        self.out
            .write_all(text.as_bytes())
            .map_err(|e| Error::io("write", &self.path, e))
    }

    pub(crate) fn finish(mut self) -> Result<()> {
        self.out
            .flush()
            .map_err(|e| Error::io("write", &self.path, e))
    }
}

/// Create a folder of the export.
pub(crate) fn make_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create directory", dir, e))
}

/// Write a small whole file of the export.
pub(crate) fn write_text(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::io("write", path, e))
}

/// Absolute µs since the Unix epoch as `%.6f` seconds, from the integer (no float
/// rounding).
pub(crate) fn seconds_6(unix_us: i64) -> String {
    let sign = if unix_us < 0 { "-" } else { "" };
    let us = unix_us.unsigned_abs();
    format!("{sign}{}.{:06}", us / 1_000_000, us % 1_000_000)
}

/// The images of the video tracks of an export: converted on the reading thread,
/// encoded and written by the [`images::ImagePool`], each frame only if later than the
/// one before in its track (file names are times, so they never collide).
pub(crate) struct ImageTracks {
    pool: images::ImagePool,
    converters: BTreeMap<usize, images::Converter>,
    last_us: BTreeMap<usize, i64>,
    pub(crate) frames: BTreeMap<String, u64>,
}

impl ImageTracks {
    pub(crate) fn start() -> Result<ImageTracks> {
        Ok(ImageTracks {
            pool: images::ImagePool::start()?,
            converters: BTreeMap::new(),
            last_us: BTreeMap::new(),
            frames: BTreeMap::new(),
        })
    }

    /// Queue `frame` of `track` at `t_us` as an image of `layout` at `path` (JPEG for
    /// [`images::Layout::Yuv420Jpeg`], PNG for the others); false when it
    /// is not later than the track's frame before (then nothing is written).
    pub(crate) fn write(
        &mut self,
        track: &read::Track,
        t_us: i64,
        frame: &ffmpeg_next::frame::Video,
        layout: images::Layout,
        path: PathBuf,
    ) -> Result<bool> {
        if self.last_us.get(&track.index).is_some_and(|&l| t_us <= l) {
            return Ok(false);
        }
        self.last_us.insert(track.index, t_us);
        let picture = self
            .converters
            .entry(track.index)
            .or_insert_with(|| images::Converter::new(layout))
            .convert(frame)?;
        self.pool.write(path, picture)?;
        *self.frames.entry(track.name.clone()).or_default() += 1;
        Ok(true)
    }

    /// Wait for every image to be on disk.
    pub(crate) fn finish(mut self) -> Result<BTreeMap<String, u64>> {
        self.pool.finish()?;
        Ok(self.frames)
    }
}

/// An IMU sample as a CSV row: time in ns, then gyro (rad/s) and accel (m/s²), as
/// EuRoC orders them.
pub(crate) fn imu_row(unix_ns: i64, s: &crate::sensors::ImuSample) -> String {
    format!(
        "{unix_ns},{},{},{},{},{},{}",
        s.gyro[0], s.gyro[1], s.gyro[2], s.accel[0], s.accel[1], s.accel[2]
    )
}
