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
        let kind = medium_name(params.medium());
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
    summary.truncated |= matroska_cut_short(path)?;
    for (decoder, track) in decoders.iter_mut().zip(summary.tracks.iter_mut()) {
        if let Some(decoder) = decoder.as_mut() {
            let (frames, errors) = decoder.feed(None);
            track.frames_decoded += frames;
            track.decode_errors += errors;
        }
    }
    Ok(summary)
}

/// Whether a Matroska file is shorter than its Segment says (a file cut short, e.g. in
/// half, reads back "cleanly" up to the cut). A Segment of unknown size (a live part)
/// says nothing.
pub fn matroska_cut_short(path: &Path) -> Result<bool> {
    const EBML_ID: u64 = 0x1A45_DFA3;
    const SEGMENT_ID: u64 = 0x1853_8067;
    let mut head = [0u8; 64];
    let mut file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| Error::io("stat", path, e))?
        .len();
    let n = file
        .read(&mut head)
        .map_err(|e| Error::io("read", path, e))?;
    let head = &head[..n];
    let mut pos = 0;
    let element = |pos: &mut usize| -> Option<(u64, Option<u64>)> {
        let (id, _) = read_vint(head, pos, true)?;
        let (size, unknown) = read_vint(head, pos, false)?;
        Some((id, (!unknown).then_some(size)))
    };
    let Some((EBML_ID, Some(ebml_size))) = element(&mut pos) else {
        return Ok(false);
    };
    pos += usize::try_from(ebml_size).unwrap_or(usize::MAX / 2);
    match element(&mut pos) {
        Some((SEGMENT_ID, Some(size))) => Ok((pos as u64).saturating_add(size) > len),
        _ => Ok(false),
    }
}

/// An EBML variable-length integer at `pos` (advanced past it): its value (with the
/// length marker for ids) and whether it is the reserved "unknown" value.
fn read_vint(bytes: &[u8], pos: &mut usize, keep_marker: bool) -> Option<(u64, bool)> {
    let first = *bytes.get(*pos)?;
    let len = first.leading_zeros() as usize + 1;
    if len > 8 {
        return None;
    }
    let mut value = if keep_marker {
        u64::from(first)
    } else {
        u64::from(first) & (0xFF >> len)
    };
    for i in 1..len {
        value = (value << 8) | u64::from(*bytes.get(*pos + i)?);
    }
    *pos += len;
    let unknown = !keep_marker && value == (1u64 << (7 * len)) - 1;
    Some((value, unknown))
}

/// The kind of a track as grabd names it.
pub fn medium_name(medium: media::Type) -> &'static str {
    match medium {
        media::Type::Video => "video",
        media::Type::Subtitle => "subtitle",
        media::Type::Audio => "audio",
        _ => "other",
    }
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
        let mut context = ffmpeg::codec::context::Context::from_parameters(params)
            .map_err(|e| Error::media("decoder parameters", e))?;
        // Decoders conceal damage and still return frames: make them report it instead
        // (checksums such as FFV1's slice CRCs, bitstream and buffer checks, and an
        // error rather than concealment).
        // SAFETY: the context is allocated and not opened yet; err_recognition is a
        // plain int field read when the decoder opens.
        unsafe {
            (*context.as_mut_ptr()).err_recognition = ffmpeg::ffi::AV_EF_CRCCHECK
                | ffmpeg::ffi::AV_EF_BITSTREAM
                | ffmpeg::ffi::AV_EF_BUFFER
                | ffmpeg::ffi::AV_EF_EXPLODE;
        }
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
                    // SAFETY: a frame just received holds valid fields.
                    let concealed = unsafe { (*self.frame.as_ptr()).decode_error_flags } != 0;
                    if self.frame.is_corrupt() || concealed {
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
    Ok(hex(&hasher.finalize()))
}

/// The block size of a file's checksum: SHA-256 of every 1 MiB block (the last one
/// shorter), so that the final file can be hashed while it grows and only the blocks
/// its trailer rewrites are read again at stop. By hand:
/// `split -b 1048576 --filter=sha256sum FILE.mkv` prints the same hashes in order.
pub const CHECKSUM_BLOCK_BYTES: u64 = 1 << 20;

/// SHA-256 of each [`CHECKSUM_BLOCK_BYTES`] block of a file as it grows. Blocks are
/// hashed once complete, except those overlapping the first `rewritten_below` bytes
/// (the Matroska header, which the trailer rewrites): [`finish`](BlockHasher::finish)
/// hashes those and the tail.
#[derive(Debug, Default)]
pub struct BlockHasher {
    rewritten_below: u64,
    blocks: std::collections::BTreeMap<u64, String>,
    next: u64,
}

impl BlockHasher {
    pub fn new(rewritten_below: u64) -> Self {
        BlockHasher {
            rewritten_below,
            ..Default::default()
        }
    }

    /// Hash the blocks of `path` that are complete now and will not change.
    pub fn catch_up(&mut self, path: &Path) -> Result<()> {
        let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        while (self.next + 1) * CHECKSUM_BLOCK_BYTES <= len {
            let start = self.next * CHECKSUM_BLOCK_BYTES;
            if start >= self.rewritten_below {
                self.blocks.insert(
                    self.next,
                    hash_range(&file, path, start, CHECKSUM_BLOCK_BYTES)?,
                );
            }
            self.next += 1;
        }
        Ok(())
    }

    /// The hashes of every block of the finished file `path`.
    pub fn finish(mut self, path: &Path) -> Result<Vec<String>> {
        let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("stat", path, e))?
            .len();
        let count = len.div_ceil(CHECKSUM_BLOCK_BYTES);
        (0..count)
            .map(|k| match self.blocks.remove(&k) {
                Some(hash) => Ok(hash),
                None => {
                    let start = k * CHECKSUM_BLOCK_BYTES;
                    hash_range(&file, path, start, CHECKSUM_BLOCK_BYTES.min(len - start))
                }
            })
            .collect()
    }
}

/// The block hashes of a whole file (what [`BlockHasher`] gives for it).
pub fn block_sha256_file(path: &Path) -> Result<Vec<String>> {
    BlockHasher::new(u64::MAX).finish(path)
}

fn hash_range(file: &std::fs::File, path: &Path, start: u64, len: u64) -> Result<String> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(usize::MAX)];
    file.read_exact_at(&mut buf, start)
        .map_err(|e| Error::io("read", path, e))?;
    Ok(hex(&Sha256::digest(&buf)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
