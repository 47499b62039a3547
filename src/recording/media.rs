//! Thin helpers over libavformat/libavcodec shared by the part writer, merge and
//! read-back: initialisation, Matroska outputs with checked muxer options, packed frame
//! layout, and the tags grabd stores in its files.

use std::path::Path;
use std::sync::Once;

use ffmpeg_next::{self as ffmpeg, format, Dictionary, Rational};

use super::error::{Error, Result};

/// Timestamps inside grabd are microseconds.
pub const MICROS: Rational = Rational(1, 1_000_000);

/// Global tag: the chunk's start, in µs of media time since the recording's origin.
pub const TAG_CHUNK_START_US: &str = "GRABD_CHUNK_START_US";
/// Global tag: wall-clock time (µs since the Unix epoch) of media time 0.
pub const TAG_ORIGIN_UNIX_US: &str = "GRABD_ORIGIN_UNIX_US";
/// Global tag: the recording id.
pub const TAG_RECORDING_ID: &str = "GRABD_RECORDING_ID";
/// Track tag: the grabd stream a track holds. Tracks are matched by it, never by their
/// title (the user's `TITLE` metadata names the track).
pub const TAG_STREAM: &str = "GRABD_STREAM";
/// Global tag of a merged chunk: the part files it holds, `/`-separated (a `/` is in no
/// file name). Only these parts may be deleted once the chunk is durable.
pub const TAG_PARTS: &str = "GRABD_PARTS";

/// Initialise libav once per process and keep its logging to errors.
pub fn ensure_init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // init() only registers devices/formats on old ffmpeg; it cannot fail on 5.x.
        let _ = ffmpeg::init();
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Error);
    });
}

/// Bytes of one frame of `format` at `width`x`height` with rows packed (no padding).
pub fn packed_frame_size(format: format::Pixel, width: u32, height: u32) -> Result<usize> {
    let (w, h) = (to_c_int(width)?, to_c_int(height)?);
    // SAFETY: pure computation on plain integers.
    let size = unsafe { ffmpeg::ffi::av_image_get_buffer_size(format.into(), w, h, 1) };
    usize::try_from(size).map_err(|_| {
        Error::InvalidConfig(format!(
            "no packed layout for {format:?} at {width}x{height}"
        ))
    })
}

fn to_c_int(v: u32) -> Result<i32> {
    i32::try_from(v).map_err(|_| Error::InvalidConfig(format!("size {v} too large")))
}

/// Copy a packed frame (rows without padding, planes one after another) into `frame`,
/// whose planes have libav's aligned strides.
pub fn fill_frame_from_packed(frame: &mut ffmpeg::frame::Video, data: &[u8]) -> Result<()> {
    let expected = packed_frame_size(frame.format(), frame.width(), frame.height())?;
    if data.len() != expected {
        return Err(Error::InvalidConfig(format!(
            "frame has {} bytes, {:?} {}x{} needs {expected}",
            data.len(),
            frame.format(),
            frame.width(),
            frame.height()
        )));
    }
    let mut offset = 0;
    for plane in 0..frame.planes() {
        let row_bytes = plane_row_bytes(frame.format(), frame.width(), plane)?;
        let rows = frame.plane_height(plane) as usize;
        let stride = frame.stride(plane);
        let dst = frame.data_mut(plane);
        for row in 0..rows {
            let src = &data[offset..offset + row_bytes];
            dst[row * stride..row * stride + row_bytes].copy_from_slice(src);
            offset += row_bytes;
        }
    }
    Ok(())
}

/// The planes of `frame` as packed rows (no padding), one plane after another: the
/// layout [`fill_frame_from_packed`] takes.
pub fn packed_from_frame(frame: &ffmpeg::frame::Video) -> Result<Vec<u8>> {
    let size = packed_frame_size(frame.format(), frame.width(), frame.height())?;
    let mut data = Vec::with_capacity(size);
    for plane in 0..frame.planes() {
        let row_bytes = plane_row_bytes(frame.format(), frame.width(), plane)?;
        let rows = frame.plane_height(plane) as usize;
        let stride = frame.stride(plane);
        let src = frame.data(plane);
        for row in 0..rows {
            data.extend_from_slice(&src[row * stride..row * stride + row_bytes]);
        }
    }
    Ok(data)
}

fn plane_row_bytes(format: format::Pixel, width: u32, plane: usize) -> Result<usize> {
    let plane = i32::try_from(plane).unwrap_or(i32::MAX);
    // SAFETY: pure computation on plain integers.
    let n = unsafe { ffmpeg::ffi::av_image_get_linesize(format.into(), to_c_int(width)?, plane) };
    usize::try_from(n).map_err(|_| Error::InvalidConfig(format!("no plane {plane} in {format:?}")))
}

/// Matroska muxer settings for every file grabd writes.
#[derive(Debug, Clone, Copy)]
pub struct MuxerSettings {
    /// Close a cluster after this much media time on any track. A cluster lives only in
    /// the muxer's memory until it closes, so this bounds what a power cut can take.
    pub cluster_time_limit_ms: u32,
    /// Hand every written cluster to the kernel at once instead of buffering it in
    /// libavformat's AVIO buffer (where an fsync cannot reach it).
    pub flush_packets: bool,
    /// CRC-32 elements in every cluster. Worth it in the final file a user keeps; the
    /// intermediate parts and chunks skip it (a fifth of a remux's CPU, and libav's
    /// demuxer does not check it when salvaging anyway).
    pub write_crc32: bool,
}

impl MuxerSettings {
    /// The settings for intermediate files (parts, chunks).
    pub fn intermediate(self) -> Self {
        MuxerSettings {
            write_crc32: false,
            ..self
        }
    }

    /// The settings for a file that only counts once it is complete and persisted
    /// (merged chunks, the final file): nothing gains from handing each cluster to the
    /// kernel early, and a write per packet costs.
    pub fn written_whole(self) -> Self {
        MuxerSettings {
            flush_packets: false,
            ..self
        }
    }
}

impl Default for MuxerSettings {
    fn default() -> Self {
        MuxerSettings {
            // A cluster is on the card only once closed: the shorter, the less a power
            // cut takes (4 cluster headers a second per track cost nothing).
            cluster_time_limit_ms: 250,
            flush_packets: true,
            write_crc32: true,
        }
    }
}

/// Why a path libavformat cannot take is refused.
pub const NOT_UTF8: &str = "the name is not UTF-8, and libavformat takes only UTF-8 file names";

/// ffmpeg-next hands libavformat file names as UTF-8 C strings and panics on any other
/// name: refuse such a path with an error instead (every open here checks it first).
pub fn check_utf8_path(path: &Path) -> Result<()> {
    match path.to_str() {
        Some(_) => Ok(()),
        None => Err(Error::BadFile {
            path: path.to_owned(),
            reason: NOT_UTF8.into(),
        }),
    }
}

/// Create a Matroska output at `path` (whatever its extension).
pub fn create_mkv(path: &Path) -> Result<format::context::Output> {
    ensure_init();
    check_utf8_path(path)?;
    format::output_as(&path, "matroska")
        .map_err(|e| Error::media(format!("create {}", path.display()), e))
}

/// Write the header with `settings`, refusing any option the muxer did not take (libav
/// otherwise ignores a misspelt option silently).
pub fn write_mkv_header(
    octx: &mut format::context::Output,
    path: &Path,
    settings: MuxerSettings,
) -> Result<()> {
    let mut opts = Dictionary::new();
    opts.set(
        "cluster_time_limit",
        &settings.cluster_time_limit_ms.to_string(),
    );
    if settings.flush_packets {
        opts.set("flush_packets", "1");
    }
    if !settings.write_crc32 {
        opts.set("write_crc32", "0");
    }
    let leftover = octx
        .write_header_with(opts)
        .map_err(|e| Error::media(format!("write header of {}", path.display()), e))?;
    let unused: Vec<String> = leftover.iter().map(|(k, _)| k.to_string()).collect();
    if !unused.is_empty() {
        return Err(Error::media(
            format!("muxer ignored options {unused:?} for {}", path.display()),
            ffmpeg::Error::OptionNotFound,
        ));
    }
    Ok(())
}

/// Add a track of `parameters` to a Matroska output, with the codec tag left to the
/// muxer (a tag from another container may not be valid in Matroska).
pub fn add_track(
    octx: &mut format::context::Output,
    parameters: ffmpeg::codec::Parameters,
    time_base: Rational,
) -> Result<format::stream::StreamMut<'_>> {
    let mut stream = octx
        .add_stream(ffmpeg::encoder::find(ffmpeg::codec::Id::None))
        .map_err(|e| Error::media("add stream", e))?;
    stream.set_parameters(parameters);
    stream.set_time_base(time_base);
    // SAFETY: the stream was just created and its codecpar is valid.
    unsafe { (*(*stream.as_mut_ptr()).codecpar).codec_tag = 0 };
    Ok(stream)
}

/// Whether Matroska can hold a track of `parameters` (it cannot hold raw RGB, for one):
/// its header is written to /dev/null, so the refusal comes before any file exists.
pub fn check_matroska_takes(
    codec: &str,
    parameters: ffmpeg::codec::Parameters,
    time_base: Rational,
) -> Result<()> {
    let null = Path::new("/dev/null");
    let mut octx = create_mkv(null)?;
    add_track(&mut octx, parameters, time_base)?;
    let (written, libav_says) = super::libav_log::capture(|| octx.write_header());
    written.map(drop).map_err(|e| {
        Error::media(
            super::libav_log::with_reason(format!("Matroska cannot hold {codec}"), &libav_says),
            e,
        )
    })
}

/// Open a file for reading packets.
pub fn open_input(path: &Path) -> Result<format::context::Input> {
    ensure_init();
    check_utf8_path(path)?;
    // libav says why it refused a file ("EBML header parsing failed") only in its log:
    // put that into the one error line.
    let (opened, libav_says) = super::libav_log::capture(|| format::input(&path));
    opened.map_err(|e| {
        Error::media(
            super::libav_log::with_reason(format!("open {}", path.display()), &libav_says),
            e,
        )
    })
}

/// Open one of grabd's own Matroska files for packet copy. Its track headers carry
/// the codec parameters, so the stream probing of [`open_input`] (which decodes
/// frames: ~30 ms per FFV1 chunk) is skipped.
pub fn open_for_copy(path: &Path) -> Result<format::context::Input> {
    use std::os::unix::ffi::OsStrExt;
    ensure_init();
    let c_path =
        std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|_| Error::BadFile {
            path: path.to_owned(),
            reason: "path holds a NUL byte".into(),
        })?;
    let mut ctx = std::ptr::null_mut();
    // SAFETY: `ctx` starts null as avformat_open_input requires; on success it owns a
    // context that `Input::wrap` takes over (and closes on drop); on failure libav
    // frees it and leaves it null.
    let ret = unsafe {
        ffmpeg::ffi::avformat_open_input(
            &mut ctx,
            c_path.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    if ret < 0 {
        return Err(Error::media(
            format!("open {}", path.display()),
            ffmpeg::Error::from(ret),
        ));
    }
    // SAFETY: `ctx` is a valid, opened input context (see above).
    Ok(unsafe { format::context::Input::wrap(ctx) })
}

/// A global tag of an input file parsed as an integer.
pub fn int_tag(input: &format::context::Input, key: &str) -> Option<i64> {
    input
        .metadata()
        .get(key)
        .and_then(|v| v.trim().parse().ok())
}

/// The grabd stream a track holds (its [`TAG_STREAM`] tag).
pub fn stream_name(stream: &format::stream::Stream) -> Option<String> {
    stream.metadata().get(TAG_STREAM).map(str::to_owned)
}

/// The track's title (its name in players).
pub fn stream_title(stream: &format::stream::Stream) -> Option<String> {
    stream.metadata().get("title").map(str::to_owned)
}

/// Whether a read error means the file itself is damaged or cut short (so salvage ends
/// it there), rather than a failure to read it now (EMFILE, ENOMEM...: salvage must
/// fail and leave the file for a later try). libav reports a file cut short inside an
/// element as EIO, so an EIO counts as damage only if the file reads back whole.
pub fn is_damage(path: &Path, cause: &ffmpeg::Error) -> bool {
    match cause {
        ffmpeg::Error::Other { errno } if *errno == nix::libc::EIO => std::fs::read(path).is_ok(),
        ffmpeg::Error::Other { .. } => false,
        _ => true,
    }
}

/// Rescale a timestamp between time bases with libav's rounding (nearest, ties away).
pub fn rescale(value: i64, from: Rational, to: Rational) -> i64 {
    use ffmpeg::Rescale;
    value.rescale(from, to)
}

/// Read the next packet. `Ok(None)` at end of file; a truncated or damaged file (power
/// cut) also ends here when `salvage` is set, since it is readable only up to its last
/// cluster. Errors that are not damage ([`is_damage`]) are errors in either mode.
pub fn read_packet(
    input: &mut format::context::Input,
    path: &Path,
    salvage: bool,
) -> Result<Option<ffmpeg::Packet>> {
    let mut packet = ffmpeg::Packet::empty();
    match packet.read(input) {
        Ok(()) => Ok(Some(packet)),
        Err(ffmpeg::Error::Eof) => Ok(None),
        Err(e) if salvage && is_damage(path, &e) => {
            tracing::warn!(path = %path.display(), error = %e, "stopped reading a damaged file at its last readable packet");
            Ok(None)
        }
        Err(e) => Err(Error::media(format!("read {}", path.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packed planes into a frame (with libav's padded strides) and back are the same
    /// bytes, for odd sizes whose chroma rows round up.
    #[test]
    fn packed_frames_round_trip() {
        ensure_init();
        for (format, width, height) in [
            (format::Pixel::YUVJ420P, 5, 3),
            (format::Pixel::RGB24, 7, 2),
            (format::Pixel::GRAY16BE, 3, 3),
        ] {
            let size = packed_frame_size(format, width, height).unwrap();
            let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let mut frame = ffmpeg::frame::Video::new(format, width, height);
            fill_frame_from_packed(&mut frame, &data).unwrap();
            assert!(frame.stride(0) > 0);
            assert_eq!(packed_from_frame(&frame).unwrap(), data, "{format:?}");
        }
    }
}
