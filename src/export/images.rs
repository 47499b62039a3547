//! Frames as image files: a decoded frame becomes packed 8-bit grey, 8-bit RGB,
//! 16-bit grey or full-range YUV 4:2:0 planes ([`Converter`], libswscale), and a pool
//! of threads ([`ImagePool`], one per core) encodes and writes them (encoding, not
//! decoding, is most of an export's work). PNG via the `png` crate (the image-rs
//! project's encoder, well kept and without the codecs grabd does not need); JPEG via
//! libavcodec's mjpeg encoder, from [`Layout::Yuv420Jpeg`] pictures.

use std::path::PathBuf;

use crossbeam_channel::{bounded, Receiver, Sender};
use ffmpeg_next::{self as ffmpeg, format::Pixel, software::scaling};

use super::{Error, Result};
use crate::recording::media::{fill_frame_from_packed, packed_from_frame};
use crate::thread::{self, Joined};

/// The file format of the frames of `grabd export --format frames`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ImageFormat {
    /// Lossless; the only one EuRoC, TUM RGB-D and depth images take.
    #[default]
    Png,
    /// Smaller files, lossy (libavcodec's mjpeg at [`JPEG_QSCALE`]).
    Jpeg,
}

impl ImageFormat {
    /// The names `--image-format` takes.
    pub const NAMES: [&'static str; 2] = ["png", "jpeg"];

    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Jpeg => "jpeg",
        }
    }

    /// The files' extension.
    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Jpeg => "jpg",
        }
    }
}

impl std::str::FromStr for ImageFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "png" => Ok(ImageFormat::Png),
            "jpeg" | "jpg" => Ok(ImageFormat::Jpeg),
            other => Err(format!(
                "unknown image format {other:?} (one of {})",
                ImageFormat::NAMES.join(", ")
            )),
        }
    }
}

/// JPEG quality as libavcodec's quantiser scale (ffmpeg's `-q:v`: 2 best … 31 worst).
pub const JPEG_QSCALE: i32 = 2;

/// The pixel layout of an exported image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// 8-bit grey (EuRoC's cameras, Kalibr reads mono8).
    Gray8,
    /// 8-bit RGB.
    Rgb8,
    /// 16-bit grey, the values as recorded (depth).
    Gray16,
    /// 8-bit YUV 4:2:0, full range: what a JPEG holds.
    Yuv420Jpeg,
}

impl Layout {
    fn pixel(self) -> Pixel {
        match self {
            Layout::Gray8 => Pixel::GRAY8,
            Layout::Rgb8 => Pixel::RGB24,
            Layout::Gray16 => Pixel::GRAY16BE,
            Layout::Yuv420Jpeg => Pixel::YUVJ420P,
        }
    }
}

/// Packed rows of one image, its planes one after another; 16-bit samples big-endian,
/// as PNG stores them.
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
                .map_err(|e| Error::Image {
                    path: PathBuf::new(),
                    reason: format!("no conversion from {format:?} to {:?}: {e}", self.layout),
                })?;
                self.scaler = Some((context, format, width, height));
                self.scaled = ffmpeg::frame::Video::empty();
            }
            if let Some((context, ..)) = self.scaler.as_mut() {
                context
                    .run(frame, &mut self.scaled)
                    .map_err(|e| Error::Image {
                        path: PathBuf::new(),
                        reason: format!("converting {format:?} to {:?}: {e}", self.layout),
                    })?;
            }
            &self.scaled
        };
        Ok(Picture {
            width,
            height,
            layout: self.layout,
            data: packed_from_frame(source)?,
        })
    }
}

/// Encodes images on one thread per core and writes each to its path: a
/// [`Layout::Yuv420Jpeg`] picture as JPEG, every other as PNG.
pub struct ImagePool {
    jobs: Option<Sender<(PathBuf, Picture)>>,
    workers: Vec<thread::Handle<Result<u64>>>,
}

impl ImagePool {
    pub fn start() -> Result<ImagePool> {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        // Two images per worker in flight bound the memory held.
        let (jobs, queue) = bounded::<(PathBuf, Picture)>(n * 2);
        let mut workers = Vec::new();
        for k in 0..n {
            let queue: Receiver<(PathBuf, Picture)> = queue.clone();
            let handle = thread::spawn("image", &k.to_string(), None, move |_| {
                let mut written = 0;
                let mut jpeg: Option<JpegEncoder> = None;
                for (path, picture) in queue.iter() {
                    if picture.layout == Layout::Yuv420Jpeg {
                        let size = (picture.width, picture.height);
                        let encoder = match jpeg.take() {
                            Some(e) if e.size == size => jpeg.insert(e),
                            _ => jpeg.insert(JpegEncoder::open(size, &path)?),
                        };
                        encoder.write(&path, &picture)?;
                    } else {
                        write_png(&path, &picture)?;
                    }
                    written += 1;
                }
                Ok(written)
            })
            .map_err(|e| Error::io("start an image thread", &PathBuf::from("image"), e))?;
            workers.push(handle);
        }
        Ok(ImagePool {
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
            _ => self.finish().and(Err(Error::Worker("image".into()))),
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

impl Drop for ImagePool {
    fn drop(&mut self) {
        if !self.workers.is_empty() {
            let _ = self.finish();
        }
    }
}

/// libavcodec's mjpeg encoder for pictures of one size (intra only: each frame in
/// gives one whole JPEG file out).
struct JpegEncoder {
    encoder: ffmpeg::encoder::Video,
    size: (u32, u32),
    pts: i64,
}

impl JpegEncoder {
    fn open(size: (u32, u32), path: &std::path::Path) -> Result<JpegEncoder> {
        let failed = |what: &str, e: ffmpeg::Error| Error::Image {
            path: path.to_owned(),
            reason: format!("mjpeg encoder: {what}: {e}"),
        };
        let codec =
            ffmpeg::encoder::find(ffmpeg::codec::Id::MJPEG).ok_or_else(|| Error::Image {
                path: path.to_owned(),
                reason: "this libavcodec has no mjpeg encoder".into(),
            })?;
        let mut video = ffmpeg::codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(|e| failed("context", e))?;
        video.set_width(size.0);
        video.set_height(size.1);
        video.set_format(Layout::Yuv420Jpeg.pixel());
        video.set_time_base(ffmpeg::Rational(1, 25));
        // A fixed quantiser (what `-q:v` sets), not a bit rate.
        video.set_flags(ffmpeg::codec::Flags::QSCALE);
        video.set_global_quality(JPEG_QSCALE * ffmpeg::ffi::FF_QP2LAMBDA);
        let encoder = video.open_as(codec).map_err(|e| failed("open", e))?;
        Ok(JpegEncoder {
            encoder,
            size,
            pts: 0,
        })
    }

    fn write(&mut self, path: &std::path::Path, picture: &Picture) -> Result<()> {
        let failed = |what: &str, e: ffmpeg::Error| Error::Image {
            path: path.to_owned(),
            reason: format!("mjpeg encoder: {what}: {e}"),
        };
        // A new frame each time: the encoder may still hold the one it was sent last.
        let mut frame =
            ffmpeg::frame::Video::new(Layout::Yuv420Jpeg.pixel(), picture.width, picture.height);
        fill_frame_from_packed(&mut frame, &picture.data)?;
        frame.set_pts(Some(self.pts));
        self.pts += 1;
        // SAFETY: `frame` is a valid, owned AVFrame; `quality` is a plain field the
        // encoder reads as this frame's lambda under QSCALE.
        unsafe { (*frame.as_mut_ptr()).quality = JPEG_QSCALE * ffmpeg::ffi::FF_QP2LAMBDA };
        self.encoder
            .send_frame(&frame)
            .map_err(|e| failed("send", e))?;
        let mut packet = ffmpeg::Packet::empty();
        self.encoder
            .receive_packet(&mut packet)
            .map_err(|e| failed("receive", e))?;
        std::fs::write(path, packet.data().unwrap_or_default())
            .map_err(|e| Error::io("write", path, e))
    }
}

/// Encode `picture` as PNG into `path` (fast deflate: PNG stays lossless, and the
/// export's time is mostly this).
pub fn write_png(path: &std::path::Path, picture: &Picture) -> Result<()> {
    let png_error = |e: png::EncodingError| Error::Image {
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
        Layout::Yuv420Jpeg => {
            return Err(Error::Image {
                path: path.to_owned(),
                reason: "YUV planes are written as JPEG, not PNG".into(),
            })
        }
    };
    encoder.set_color(color);
    encoder.set_depth(depth);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header().map_err(png_error)?;
    writer.write_image_data(&picture.data).map_err(png_error)?;
    writer.finish().map_err(png_error)
}
