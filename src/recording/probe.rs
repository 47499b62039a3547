//! Reading a recording back: every claim grabd makes about a file (packet counts,
//! timestamps, duration, decodability, checksum) comes from here, never from the
//! writer's own counters.

use std::io::Read;
use std::path::Path;

use ffmpeg_next::{self as ffmpeg, media};
use sha2::{Digest, Sha256};

use super::error::{Error, Result};
use super::media::{
    int_tag, open_input, read_packet, rescale, stream_name, stream_title, MICROS,
    TAG_ORIGIN_UNIX_US,
};

/// One track as read back from a file.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct TrackSummary {
    pub name: String,
    pub kind: String,
    pub codec: String,
    pub packets: u64,
    pub keyframes: u64,
    pub first_pts_us: Option<i64>,
    pub last_pts_us: Option<i64>,
    /// Frames that failed to decode (video only; 0 when not decoded).
    pub decode_errors: u64,
    pub frames_decoded: u64,
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct FileSummary {
    pub tracks: Vec<TrackSummary>,
    pub origin_unix_us: Option<i64>,
    /// Whether reading stopped early at damage (a truncated file).
    pub truncated: bool,
}

impl FileSummary {
    pub fn track(&self, name: &str) -> Option<&TrackSummary> {
        self.tracks.iter().find(|t| t.name == name)
    }

    pub fn decode_errors(&self) -> u64 {
        self.tracks.iter().map(|t| t.decode_errors).sum()
    }
}

/// Read every packet of `path`; with `decode`, also decode every video packet and
/// count errors. Packet PTS per track are also collected when `pts_out` is given.
pub fn inspect(
    path: &Path,
    decode: bool,
    mut pts_out: Option<&mut Vec<Vec<i64>>>,
) -> Result<FileSummary> {
    let mut input = open_input(path)?;
    let mut summary = FileSummary {
        origin_unix_us: int_tag(&input, TAG_ORIGIN_UNIX_US),
        ..Default::default()
    };
    let mut decoders = Vec::new();
    let mut time_bases = Vec::new();
    for stream in input.streams() {
        let params = stream.parameters();
        let kind = match params.medium() {
            media::Type::Video => "video",
            media::Type::Subtitle => "subtitle",
            media::Type::Audio => "audio",
            _ => "other",
        };
        summary.tracks.push(TrackSummary {
            // grabd's stream tag; the title for files grabd did not write.
            name: stream_name(&stream)
                .or_else(|| stream_title(&stream))
                .unwrap_or_else(|| format!("#{}", stream.index())),
            kind: kind.into(),
            codec: format!("{:?}", params.id()).to_lowercase(),
            ..Default::default()
        });
        time_bases.push(stream.time_base());
        let decoder = if decode {
            DecodeCheck::for_stream(&stream, path)?
        } else {
            None
        };
        decoders.push(decoder);
    }
    if let Some(out) = pts_out.as_deref_mut() {
        *out = vec![Vec::new(); summary.tracks.len()];
    }
    loop {
        let packet = match read_packet(&mut input, path, false) {
            Ok(Some(p)) => p,
            Ok(None) => break,
            Err(_) => {
                summary.truncated = true;
                break;
            }
        };
        let i = packet.stream();
        let Some(track) = summary.tracks.get_mut(i) else {
            continue;
        };
        track.packets += 1;
        if packet.is_key() {
            track.keyframes += 1;
        }
        if let Some(pts) = packet.pts() {
            let us = rescale(pts, time_bases[i], MICROS);
            track.first_pts_us = Some(track.first_pts_us.map_or(us, |f| f.min(us)));
            track.last_pts_us = Some(track.last_pts_us.map_or(us, |l| l.max(us)));
            if let Some(out) = pts_out.as_deref_mut() {
                out[i].push(us);
            }
        }
        if let Some(decoder) = decoders[i].as_mut() {
            let (frames, errors) = decoder.feed(Some(&packet));
            track.frames_decoded += frames;
            track.decode_errors += errors;
        }
    }
    for (decoder, track) in decoders.iter_mut().zip(summary.tracks.iter_mut()) {
        if let Some(decoder) = decoder.as_mut() {
            let (frames, errors) = decoder.feed(None);
            track.frames_decoded += frames;
            track.decode_errors += errors;
        }
    }
    Ok(summary)
}

/// Decodes one video track packet by packet, to count frames and find damage.
pub(crate) struct DecodeCheck {
    decoder: ffmpeg::decoder::Video,
    frame: ffmpeg::frame::Video,
}

impl DecodeCheck {
    /// A checker for `stream`, or `None` when it is not video (nothing to decode).
    pub(crate) fn for_stream(
        stream: &ffmpeg::format::stream::Stream,
        path: &Path,
    ) -> Result<Option<Self>> {
        let params = stream.parameters();
        if params.medium() != media::Type::Video {
            return Ok(None);
        }
        let context = ffmpeg::codec::context::Context::from_parameters(params)
            .map_err(|e| Error::media("decoder parameters", e))?;
        let decoder = context
            .decoder()
            .video()
            .map_err(|e| Error::media(format!("open decoder for {}", path.display()), e))?;
        Ok(Some(DecodeCheck {
            decoder,
            frame: ffmpeg::frame::Video::empty(),
        }))
    }

    /// Decode `packet` (`None`: drain at the end); returns (frames decoded, errors).
    pub(crate) fn feed(&mut self, packet: Option<&ffmpeg::Packet>) -> (u64, u64) {
        let sent = match packet {
            Some(p) => self.decoder.send_packet(p),
            None => self.decoder.send_eof(),
        };
        if sent.is_err() {
            return (0, 1);
        }
        let (mut frames, mut errors) = (0, 0);
        loop {
            match self.decoder.receive_frame(&mut self.frame) {
                Ok(()) => {
                    frames += 1;
                    if self.frame.is_corrupt() {
                        errors += 1;
                    }
                }
                Err(ffmpeg::Error::Eof) => break,
                Err(ffmpeg::Error::Other { errno })
                    if errno == nix::errno::Errno::EAGAIN as i32 =>
                {
                    break
                }
                Err(_) => {
                    errors += 1;
                    break;
                }
            }
        }
        (frames, errors)
    }
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Error::io("read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}
