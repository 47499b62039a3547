//! Frames as PNG images: a decoded frame becomes packed 8-bit grey, 8-bit RGB or
//! 16-bit grey rows ([`Converter`], libswscale), and a pool of threads ([`PngPool`],
//! one per core) encodes and writes them (PNG encoding, not decoding, is most of an
//! export's work). PNG via the `png` crate: the image-rs project's encoder, well kept
//! and without the codecs grabd does not need.

use std::path::PathBuf;

use crossbeam_channel::{bounded, Receiver, Sender};
use ffmpeg_next::{self as ffmpeg, format::Pixel, software::scaling};

use super::{Error, Result};
use crate::thread::{self, Joined};

/// The pixel layout of an exported image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// 8-bit grey (EuRoC's cameras, Kalibr reads mono8).
    Gray8,
    /// 8-bit RGB.
    Rgb8,
    /// 16-bit grey, the values as recorded (depth).
    Gray16,
}

impl Layout {
    fn pixel(self) -> Pixel {
        match self {
            Layout::Gray8 => Pixel::GRAY8,
            Layout::Rgb8 => Pixel::RGB24,
            Layout::Gray16 => Pixel::GRAY16BE,
        }
    }

    fn bytes_per_pixel(self) -> usize {
        match self {
            Layout::Gray8 => 1,
            Layout::Rgb8 => 3,
            Layout::Gray16 => 2,
        }
    }
}

/// Packed rows of one image; 16-bit samples big-endian, as PNG stores them.
pub struct Picture {
    pub width: u32,
    pub height: u32,
    pub layout: Layout,
    pub data: Vec<u8>,
}

/// Converts decoded frames of any pixel format into packed [`Picture`]s of one layout.
pub struct Converter {
    layout: Layout,
    scaler: Option<(scaling::Context, Pixel, u32, u32)>,
    scaled: ffmpeg::frame::Video,
}

impl Converter {
    pub fn new(layout: Layout) -> Self {
        Converter {
            layout,
            scaler: None,
            scaled: ffmpeg::frame::Video::empty(),
        }
    }

    pub fn convert(&mut self, frame: &ffmpeg::frame::Video) -> Result<Picture> {
        let (format, width, height) = (frame.format(), frame.width(), frame.height());
        let source = if format == self.layout.pixel() {
            frame
        } else {
            if !matches!(&self.scaler, Some((_, f, w, h)) if (*f, *w, *h) == (format, width, height))
            {
                let context = scaling::Context::get(
                    format,
                    width,
                    height,
                    self.layout.pixel(),
                    width,
                    height,
                    scaling::Flags::BILINEAR,
                )
                .map_err(|e| Error::Png {
                    path: PathBuf::new(),
                    reason: format!("no conversion from {format:?} to {:?}: {e}", self.layout),
                })?;
                self.scaler = Some((context, format, width, height));
                self.scaled = ffmpeg::frame::Video::empty();
            }
            if let Some((context, ..)) = self.scaler.as_mut() {
                context
                    .run(frame, &mut self.scaled)
                    .map_err(|e| Error::Png {
                        path: PathBuf::new(),
                        reason: format!("converting {format:?} to {:?}: {e}", self.layout),
                    })?;
            }
            &self.scaled
        };
        let row = width as usize * self.layout.bytes_per_pixel();
        let stride = source.stride(0);
        let plane = source.data(0);
        let mut data = Vec::with_capacity(row * height as usize);
        for y in 0..height as usize {
            data.extend_from_slice(&plane[y * stride..y * stride + row]);
        }
        Ok(Picture {
            width,
            height,
            layout: self.layout,
            data,
        })
    }
}

/// Encodes PNGs on one thread per core and writes each to its path.
pub struct PngPool {
    jobs: Option<Sender<(PathBuf, Picture)>>,
    workers: Vec<thread::Handle<Result<u64>>>,
}

impl PngPool {
    pub fn start() -> Result<PngPool> {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        // Two images per worker in flight bound the memory held.
        let (jobs, queue) = bounded::<(PathBuf, Picture)>(n * 2);
        let mut workers = Vec::new();
        for k in 0..n {
            let queue: Receiver<(PathBuf, Picture)> = queue.clone();
            let handle = thread::spawn("png", &k.to_string(), None, move |_| {
                let mut written = 0;
                for (path, picture) in queue.iter() {
                    write_png(&path, &picture)?;
                    written += 1;
                }
                Ok(written)
            })
            .map_err(|e| Error::io("start a png thread", &PathBuf::from("png"), e))?;
            workers.push(handle);
        }
        Ok(PngPool {
            jobs: Some(jobs),
            workers,
        })
    }

    /// Queue `picture` to be written to `path` (blocks while every worker is busy).
    pub fn write(&mut self, path: PathBuf, picture: Picture) -> Result<()> {
        let sent = self.jobs.as_ref().map(|jobs| jobs.send((path, picture)));
        match sent {
            Some(Ok(())) => Ok(()),
            // Every worker stopped: one failed, and finish says why.
            _ => self.finish().and(Err(Error::Worker("png".into()))),
        }
    }

    /// Wait for every image to be written; the first error of any worker.
    pub fn finish(&mut self) -> Result<u64> {
        self.jobs = None;
        let mut written = 0;
        let mut first_error = None;
        for worker in self.workers.drain(..) {
            let name = worker.name().to_owned();
            // Writing the queued images is bounded by the disk: a generous deadline.
            match worker.join_within(std::time::Duration::from_secs(600)) {
                Joined::Done(Ok(n)) => written += n,
                Joined::Done(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Joined::Panicked(_) | Joined::TimedOut => {
                    first_error.get_or_insert(Error::Worker(name));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(written),
        }
    }
}

impl Drop for PngPool {
    fn drop(&mut self) {
        if !self.workers.is_empty() {
            let _ = self.finish();
        }
    }
}

/// Encode `picture` as PNG into `path` (fast deflate: PNG stays lossless, and the
/// export's time is mostly this).
pub fn write_png(path: &std::path::Path, picture: &Picture) -> Result<()> {
    let png_error = |e: png::EncodingError| Error::Png {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let file = std::fs::File::create(path).map_err(|e| Error::io("create", path, e))?;
    let mut encoder =
        png::Encoder::new(std::io::BufWriter::new(file), picture.width, picture.height);
    let (color, depth) = match picture.layout {
        Layout::Gray8 => (png::ColorType::Grayscale, png::BitDepth::Eight),
        Layout::Rgb8 => (png::ColorType::Rgb, png::BitDepth::Eight),
        Layout::Gray16 => (png::ColorType::Grayscale, png::BitDepth::Sixteen),
    };
    encoder.set_color(color);
    encoder.set_depth(depth);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header().map_err(png_error)?;
    writer.write_image_data(&picture.data).map_err(png_error)?;
    writer.finish().map_err(png_error)
}
