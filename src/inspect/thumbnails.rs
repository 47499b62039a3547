//! Small RGB pictures of a video track at chosen times: seek to the keyframe before
//! each time, decode up to it, scale with swscale. Depth (16-bit grey) is stretched
//! over its own range, so that millimetres show as shades rather than near-black.

use std::path::Path;

use ffmpeg_next::{self as ffmpeg, format::Pixel, software::scaling};

use crate::recording::media::{open_input, read_packet, rescale, MICROS};
use crate::recording::{Error, Result};

/// An RGB24 picture, rows packed.
pub struct Thumbnail {
    pub width: u32,
    pub height: u32,
    pub rgb: Vec<u8>,
}

/// The frames of track `index` shown at `times_us` (media µs), each scaled to
/// `width`x`height`; `None` where no frame decodes.
pub fn thumbnails(
    path: &Path,
    index: usize,
    times_us: &[i64],
    width: u32,
    height: u32,
) -> Result<Vec<Option<Thumbnail>>> {
    let mut input = open_input(path)?;
    let stream = input
        .stream(index)
        .ok_or_else(|| bad(path, format!("no track {index}")))?;
    let time_base = stream.time_base();
    let mut decoder = ffmpeg::codec::context::Context::from_parameters(stream.parameters())
        .and_then(|c| c.decoder().video())
        .map_err(|e| Error::media(format!("open decoder of {}", path.display()), e))?;
    let mut shots = Vec::new();
    for &at in times_us {
        let seek_to = rescale(at, MICROS, ffmpeg::rescale::TIME_BASE);
        if input.seek(seek_to, ..seek_to).is_err() {
            shots.push(None);
            continue;
        }
        decoder.flush();
        let frame = frame_at(&mut input, path, &mut decoder, index, time_base, at)?;
        shots.push(match frame {
            Some(frame) => Some(scale(&frame, width, height, path)?),
            None => None,
        });
    }
    Ok(shots)
}

/// The first frame of track `index` at or after `at_us` (or the last one before the end).
fn frame_at(
    input: &mut ffmpeg::format::context::Input,
    path: &Path,
    decoder: &mut ffmpeg::decoder::Video,
    index: usize,
    time_base: ffmpeg::Rational,
    at_us: i64,
) -> Result<Option<ffmpeg::frame::Video>> {
    let mut frame = ffmpeg::frame::Video::empty();
    let mut last = None;
    let mut at_end = false;
    while !at_end {
        match read_packet(input, path, true)? {
            Some(packet) if packet.stream() == index => {
                if decoder.send_packet(&packet).is_err() {
                    continue;
                }
            }
            Some(_) => continue,
            None => {
                at_end = true;
                let _ = decoder.send_eof();
            }
        }
        while decoder.receive_frame(&mut frame).is_ok() {
            let pts = frame.timestamp().or(frame.pts()).unwrap_or(i64::MIN);
            if rescale(pts, time_base, MICROS) >= at_us {
                return Ok(Some(frame));
            }
            last = Some(frame.clone());
        }
    }
    Ok(last)
}

fn scale(frame: &ffmpeg::frame::Video, width: u32, height: u32, path: &Path) -> Result<Thumbnail> {
    let gray16 = matches!(frame.format(), Pixel::GRAY16LE | Pixel::GRAY16BE);
    let target = if gray16 {
        Pixel::GRAY16LE
    } else {
        Pixel::RGB24
    };
    let mut scaler = scaling::Context::get(
        frame.format(),
        frame.width(),
        frame.height(),
        target,
        width,
        height,
        scaling::Flags::AREA,
    )
    .map_err(|e| Error::media(format!("scale a frame of {}", path.display()), e))?;
    let mut scaled = ffmpeg::frame::Video::empty();
    scaler
        .run(frame, &mut scaled)
        .map_err(|e| Error::media(format!("scale a frame of {}", path.display()), e))?;
    let (w, h) = (width as usize, height as usize);
    let stride = scaled.stride(0);
    let data = scaled.data(0);
    let mut rgb = Vec::with_capacity(w * h * 3);
    if gray16 {
        let value = |x: usize, y: usize| {
            let i = y * stride + 2 * x;
            u16::from_le_bytes([data[i], data[i + 1]])
        };
        let all = (0..h).flat_map(|y| (0..w).map(move |x| (x, y)));
        let (low, high) = all
            .clone()
            .map(|(x, y)| value(x, y))
            .fold((u16::MAX, 0), |(lo, hi), v| (lo.min(v), hi.max(v)));
        let range = f32::from(high.saturating_sub(low).max(1));
        for (x, y) in all {
            let shade = (f32::from(value(x, y) - low) / range * 255.0) as u8;
            rgb.extend_from_slice(&[shade, shade, shade]);
        }
    } else {
        for y in 0..h {
            rgb.extend_from_slice(&data[y * stride..y * stride + 3 * w]);
        }
    }
    Ok(Thumbnail { width, height, rgb })
}

fn bad(path: &Path, reason: String) -> Error {
    Error::BadFile {
        path: path.to_owned(),
        reason,
    }
}
