//! Packet-copy remuxing done in-process with libavformat: per-stream parts into one
//! chunk ([`merge_stream_files`]) and chunks into one recording ([`ConcatWriter`],
//! [`merge_recording_chunks`]).
//!
//! No timestamp is ever rebased: a chunk keeps its parts' PTS (µs from the chunk's
//! origin, stored at the file's ms resolution), and a concatenation adds each chunk's
//! exact start (its `GRABD_CHUNK_START_US` tag), so inter-stream offsets survive both.
//! Every output is written to `*.tmp` and made durable with [`durable::persist`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use ffmpeg_next::{self as ffmpeg, codec, format, packet::Mut, Dictionary, Rational};

use super::decode_times::DecodeTimes;
use super::durable;
use super::encoder::TrackSpec;
use super::error::{Error, Result};
use super::in_band_headers;
use super::media::{
    create_mkv, int_tag, is_damage, open_for_copy, read_packet, rescale, stream_name,
    write_mkv_header, MuxerSettings, MICROS, TAG_CHUNK_START_US, TAG_ORIGIN_UNIX_US, TAG_PARTS,
};
use super::part::add_stream_track;
use super::probe::{medium_name, BlockHasher, DecodeCheck};
use super::spool::SpoolFile;

/// How to treat inputs that end early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadMode {
    /// Any read error is an error.
    Strict,
    /// Read each input up to its last readable packet (power-cut salvage).
    Salvage,
}

/// Packets written per track.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MergeSummary {
    pub packets: Vec<(String, u64)>,
    /// For a concatenated file: everything its manifest states, known from writing it.
    pub file: Option<FileFacts>,
}

/// What the writer of a final file knows about it, so that its manifest needs no
/// second pass over it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileFacts {
    pub size_bytes: u64,
    /// SHA-256 of each [`CHECKSUM_BLOCK_BYTES`](super::probe::CHECKSUM_BLOCK_BYTES) block.
    pub block_sha256: Vec<String>,
    pub origin_unix_us: Option<i64>,
    pub tracks: Vec<TrackFacts>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrackFacts {
    pub name: String,
    pub kind: String,
    pub packets: u64,
    /// The latest PTS written, µs on the recording's timeline.
    pub last_pts_us: Option<i64>,
}

struct InputTrack {
    input: format::context::Input,
    path: PathBuf,
    stream_index: usize,
    out_index: usize,
    in_tb: Rational,
    /// The next packet to write, its DTS set.
    head: Option<ffmpeg::Packet>,
    /// Packets read ahead until their DTS is known.
    times: DecodeTimes,
    /// No more packets will be read (the input ended, or its damage starts).
    ended: bool,
    /// When salvaging video: every packet is decoded before it is kept, and the track
    /// ends at the first one that does not decode (blocks a failing card never wrote).
    check: Option<DecodeCheck>,
}

impl InputTrack {
    /// Put the track's next packet into `head` (`None` at its end or its damage).
    fn advance(&mut self, salvage: bool) -> Result<()> {
        loop {
            if let Some((_, packet)) = self.times.pop(self.ended) {
                self.head = Some(packet);
                return Ok(());
            }
            if self.ended {
                self.head = None;
                return Ok(());
            }
            match next_packet_of(&mut self.input, &self.path, self.stream_index, salvage)? {
                Some(packet) if self.check.as_mut().map_or(0, |c| c.feed(Some(&packet)).1) > 0 => {
                    tracing::warn!(part = %self.path.display(), "salvage stops at a packet that does not decode");
                    self.ended = true;
                }
                Some(packet) => self.times.push(0, packet),
                None => self.ended = true,
            }
        }
    }
}

/// The next packet of stream `stream_index` of `input`, `None` at its end.
fn next_packet_of(
    input: &mut format::context::Input,
    path: &Path,
    stream_index: usize,
    salvage: bool,
) -> Result<Option<ffmpeg::Packet>> {
    while let Some(packet) = read_packet(input, path, salvage)? {
        if packet.stream() == stream_index {
            return Ok(Some(packet));
        }
    }
    Ok(None)
}

fn packet_time_us(packet: &ffmpeg::Packet, tb: Rational) -> i64 {
    let t = packet.dts().or(packet.pts()).unwrap_or(0);
    rescale(t, tb, MICROS)
}

/// What [`merge_stream_files`] did.
#[derive(Debug, Default)]
pub struct Merged {
    /// Packets written per track; `None` when no input held a packet (nothing written).
    pub summary: Option<MergeSummary>,
    /// The part files among the inputs that are now wholly in the output (or held
    /// nothing readable): exactly these may be deleted, and only once it is durable.
    pub consumed: Vec<PathBuf>,
}

/// Merge part files (and a chunk being completed with parts it lacks) into one
/// multi-stream Matroska file by packet copy, interleaved by timestamp. Inputs that hold
/// no readable packet add no track. The output's [`TAG_PARTS`] tag lists every part it
/// holds (those of an input chunk too). When salvaging, an input is read up to its
/// damage; an input that cannot be read for any other reason (EMFILE, ENOMEM...) fails
/// the merge, so that no part is ever deleted unread.
pub fn merge_stream_files(
    inputs: &[PathBuf],
    output_path: &Path,
    mode: ReadMode,
    settings: MuxerSettings,
) -> Result<Merged> {
    merge_stream_files_paced(inputs, output_path, mode, settings, &|| {})
}

/// [`merge_stream_files`], calling `pause` before each packet it copies: the finalizer
/// waits there while the encoders are behind their capture.
pub fn merge_stream_files_paced(
    inputs: &[PathBuf],
    output_path: &Path,
    mode: ReadMode,
    settings: MuxerSettings,
    pause: &dyn Fn(),
) -> Result<Merged> {
    let salvage = mode == ReadMode::Salvage;
    let mut tracks = Vec::new();
    let mut global_tags = None;
    let mut held_parts: Vec<String> = Vec::new();
    let mut consumed = Vec::new();
    for path in inputs {
        let is_part = matches!(SpoolFile::of(path), Some(SpoolFile::Part { .. }));
        let mut opened = match open_for_copy(path) {
            Ok(input) => Some(input),
            Err(Error::Media { cause, .. }) if salvage && is_damage(path, &cause) => {
                tracing::warn!(path = %path.display(), error = %cause, "skipping a part with nothing readable");
                None
            }
            Err(e) => return Err(e),
        };
        if let Some(input) = &opened {
            let tags = input.metadata().to_owned();
            held_parts.extend(parts_tag(&tags));
            global_tags.get_or_insert(tags);
        }
        let stream_count = opened.as_ref().map_or(0, |i| i.streams().count());
        for stream_index in 0..stream_count {
            // One demuxer per track, so that each track is read at its own pace.
            let input = match opened.take() {
                Some(input) => input,
                None => open_for_copy(path)?,
            };
            let stream = input
                .stream(stream_index)
                .ok_or_else(|| bad_file(path, "stream vanished"))?;
            let in_tb = stream.time_base();
            let times = DecodeTimes::new([stream.parameters().medium()]);
            let check = if salvage {
                DecodeCheck::for_stream(&stream, path)?
            } else {
                None
            };
            let mut track = InputTrack {
                input,
                path: path.clone(),
                stream_index,
                out_index: tracks.len(),
                in_tb,
                head: None,
                times,
                ended: false,
                check,
            };
            // Read ahead to the first packet: a track without one is left out.
            track.advance(salvage)?;
            if track.head.is_some() {
                tracks.push(track);
            }
        }
        if is_part {
            consumed.push(path.clone());
            held_parts.push(file_name(path));
        }
    }
    if tracks.is_empty() {
        return Ok(Merged {
            summary: None,
            consumed,
        });
    }

    let tmp = durable::tmp_path(output_path);
    let result = (|| {
        let mut octx = create_mkv(&tmp)?;
        let mut tags = global_tags.unwrap_or_default();
        held_parts.sort();
        held_parts.dedup();
        tags.set(TAG_PARTS, &held_parts.join("/"));
        octx.set_metadata(tags);
        for track in &tracks {
            let stream = track
                .input
                .stream(track.stream_index)
                .ok_or_else(|| bad_file(&track.path, "stream vanished"))?;
            add_copy_stream(&mut octx, &stream)?;
        }
        write_mkv_header(&mut octx, &tmp, settings.intermediate().written_whole())?;
        let out_tbs: Vec<Rational> = octx.streams().map(|s| s.time_base()).collect();
        let mut counts = vec![0u64; tracks.len()];
        // k-way merge: always write the earliest pending packet next.
        loop {
            pause();
            let next = tracks
                .iter()
                .enumerate()
                .filter_map(|(i, t)| t.head.as_ref().map(|p| (packet_time_us(p, t.in_tb), i)))
                .min();
            let Some((_, i)) = next else { break };
            let track = &mut tracks[i];
            let Some(mut packet) = track.head.take() else {
                break;
            };
            track.advance(salvage)?;
            packet.rescale_ts(track.in_tb, out_tbs[track.out_index]);
            packet.set_stream(track.out_index);
            packet.set_position(-1);
            packet
                .write(&mut octx)
                .map_err(|e| Error::media(format!("write {}", tmp.display()), e))?;
            counts[i] += 1;
        }
        octx.write_trailer()
            .map_err(|e| Error::media(format!("finish {}", tmp.display()), e))?;
        drop(octx);
        durable::persist(&tmp, output_path)?;
        Ok(MergeSummary {
            packets: tracks
                .iter()
                .zip(counts)
                .map(|(t, n)| {
                    let name = t
                        .input
                        .stream(t.stream_index)
                        .and_then(|s| stream_name(&s))
                        .unwrap_or_default();
                    (name, n)
                })
                .collect(),
            file: None,
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|summary| Merged {
        summary: Some(summary),
        consumed,
    })
}

/// The part file names a chunk's [`TAG_PARTS`] tag lists.
fn parts_tag(tags: &Dictionary) -> Vec<String> {
    tags.get(TAG_PARTS)
        .map(|v| {
            v.split('/')
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The part file names chunk `chunk` holds (its [`TAG_PARTS`] tag).
pub fn parts_in_chunk(chunk: &Path) -> Result<Vec<String>> {
    Ok(parts_tag(&open_for_copy(chunk)?.metadata().to_owned()))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn bad_file(path: &Path, reason: &str) -> Error {
    Error::BadFile {
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}

/// Add an output stream that copies `stream`'s codec, time base and tags.
fn add_copy_stream(
    octx: &mut format::context::Output,
    stream: &format::stream::Stream,
) -> Result<()> {
    let mut out = super::media::add_track(octx, stream.parameters(), stream.time_base())?;
    out.set_metadata(stream.metadata().to_owned());
    Ok(())
}

/// A configured stream's track in a final file, declared whether or not any chunk holds
/// a packet of it: a stream dead from power-on (a silent IMU) still has its track, empty.
pub struct DeclaredTrack {
    pub name: String,
    /// The user's track tags (the stream config's metadata).
    pub track_tags: BTreeMap<String, String>,
    /// The codec parameters, when known before the first packet. An encoder that sends
    /// them in-band has `None`: its track can come only from a chunk that holds it.
    pub spec: Option<TrackSpec>,
}

/// A recording's final file growing chunk by chunk: tracks are declared up front, chunks are appended as they are finished, and only `finish` makes
/// the file visible under its name (durably). Until then it is a `*.tmp` that recovery
/// throws away, since every chunk it holds is still on disk.
pub struct ConcatWriter {
    dest: PathBuf,
    tmp: PathBuf,
    octx: Option<format::context::Output>,
    /// Stream name (the GRABD_STREAM tag) → (output index, output time base).
    tracks: HashMap<String, (usize, Rational)>,
    /// Per track, in output order: declared with an encoder's Annex B extradata, so the
    /// muxer takes Annex B packets (see [`in_band_headers`]).
    takes_annex_b: Vec<bool>,
    /// Per track, in output order: what the manifest will state.
    facts: Vec<TrackFacts>,
    origin_unix_us: Option<i64>,
    /// Every track's packets, held until their decode times are known (they are in
    /// no chunk: Matroska stores none). Kept across chunks, so they never go back.
    times: DecodeTimes,
    /// Hashes the file's blocks as they are appended (see [`BlockHasher`]).
    hasher: BlockHasher,
}

impl ConcatWriter {
    /// Create `dest`'s temp file with the recording tags of the first template and
    /// `global_tags`, and a track for each of `declared` (in that order), then for any
    /// other stream of `templates` (by stream tag, in order of first appearance). A track
    /// is copied from the first template that holds its stream; one that none holds is
    /// made from its declaration, or left out when its parameters are not known.
    pub fn create(
        dest: &Path,
        templates: &[PathBuf],
        declared: &[DeclaredTrack],
        global_tags: &[(String, String)],
        settings: MuxerSettings,
    ) -> Result<Self> {
        let tmp = durable::tmp_path(dest);
        let mut octx = create_mkv(&tmp)?;
        // The recording's tags (origin...) come from its chunks, minus the chunk's start.
        let mut tags = Dictionary::new();
        let mut origin_unix_us = None;
        if let Some(first) = templates.first() {
            let input = open_for_copy(first)?;
            origin_unix_us = int_tag(&input, TAG_ORIGIN_UNIX_US);
            for (k, v) in input.metadata().iter() {
                if k != TAG_CHUNK_START_US && k != TAG_PARTS && k.starts_with("GRABD_") {
                    tags.set(k, v);
                }
            }
        }
        for (k, v) in global_tags {
            tags.set(k, v);
        }
        octx.set_metadata(tags);
        let mut names: Vec<String> = Vec::new();
        let mut facts = Vec::new();
        let mut media = Vec::new();
        let mut takes_annex_b = Vec::new();
        // Each stream with the first template that holds it.
        let mut sources: Vec<(String, Option<&Path>)> =
            declared.iter().map(|d| (d.name.clone(), None)).collect();
        for template in templates {
            let input = open_for_copy(template)?;
            for stream in input.streams() {
                let name = stream_name(&stream)
                    .ok_or_else(|| bad_file(template, "a track has no grabd stream tag"))?;
                match sources.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, from @ None)) => *from = Some(template),
                    Some(_) => {}
                    None => sources.push((name, Some(template))),
                }
            }
        }
        for (name, from) in sources {
            let medium = match from {
                Some(template) => {
                    let input = open_for_copy(template)?;
                    let stream = input
                        .streams()
                        .find(|s| stream_name(s).as_ref() == Some(&name))
                        .ok_or_else(|| bad_file(template, "stream vanished"))?;
                    add_copy_stream(&mut octx, &stream)?;
                    takes_annex_b.push(false);
                    stream.parameters().medium()
                }
                None => {
                    let declaration = declared.iter().find(|d| d.name == name);
                    let Some((d, spec)) = declaration.and_then(|d| d.spec.as_ref().map(|s| (d, s)))
                    else {
                        continue;
                    };
                    add_stream_track(&mut octx, &name, &d.track_tags, spec)?;
                    takes_annex_b.push(
                        matches!(spec.parameters.id(), codec::Id::H264 | codec::Id::HEVC)
                            && in_band_headers::is_annex_b(in_band_headers::extradata(
                                &spec.parameters,
                            )),
                    );
                    spec.parameters.medium()
                }
            };
            media.push(medium);
            facts.push(TrackFacts {
                name: name.clone(),
                kind: medium_name(medium).to_owned(),
                ..Default::default()
            });
            names.push(name);
        }
        if names.is_empty() {
            return Err(Error::BadFile {
                path: dest.to_owned(),
                reason: "no tracks to concatenate".into(),
            });
        }
        write_mkv_header(&mut octx, &tmp, settings.written_whole())?;
        // The trailer rewrites the header (sizes, duration, seek index), nothing after it.
        let header_bytes = output_position(&mut octx);
        let tracks = octx
            .streams()
            .zip(&names)
            .map(|(s, n)| (n.clone(), (s.index(), s.time_base())))
            .collect();
        Ok(ConcatWriter {
            dest: dest.to_owned(),
            tmp,
            octx: Some(octx),
            tracks,
            takes_annex_b,
            facts,
            origin_unix_us,
            times: DecodeTimes::new(media),
            hasher: BlockHasher::new(header_bytes),
        })
    }

    /// Append every packet of `chunk`, shifted by the chunk's start on the recording's
    /// timeline.
    pub fn append(&mut self, chunk: &Path, mode: ReadMode) -> Result<()> {
        self.append_paced(chunk, mode, &|| {})
    }

    /// [`append`](ConcatWriter::append), calling `pause` before each packet it copies.
    pub fn append_paced(&mut self, chunk: &Path, mode: ReadMode, pause: &dyn Fn()) -> Result<()> {
        let salvage = mode == ReadMode::Salvage;
        let mut input = open_for_copy(chunk)?;
        let offset_us = int_tag(&input, TAG_CHUNK_START_US)
            .ok_or_else(|| bad_file(chunk, "no chunk start tag"))?;
        let mut map = Vec::new();
        for stream in input.streams() {
            let name = stream_name(&stream).unwrap_or_default();
            let Some(&(out_index, out_tb)) = self.tracks.get(&name) else {
                return Err(bad_file(
                    chunk,
                    &format!("track {name:?} is not in the recording"),
                ));
            };
            // The chunk's packets are length-prefixed (its muxer converted them); a track
            // declared with Annex B extradata needs them back as Annex B.
            let parameters = stream.parameters();
            let record = in_band_headers::extradata(&parameters);
            let to_annex_b = self.takes_annex_b.get(out_index).copied().unwrap_or(false)
                && !in_band_headers::is_annex_b(record);
            if to_annex_b && in_band_headers::nal_length_size(parameters.id(), record) != Some(4) {
                return Err(bad_file(
                    chunk,
                    &format!("track {name:?}: NAL units without 4-byte lengths"),
                ));
            }
            map.push((out_index, stream.time_base(), out_tb, to_annex_b));
        }
        while let Some(mut packet) = read_packet(&mut input, chunk, salvage)? {
            pause();
            let Some(&(out_index, in_tb, out_tb, to_annex_b)) = map.get(packet.stream()) else {
                continue;
            };
            if to_annex_b && !packet_to_annex_b(&mut packet) {
                return Err(bad_file(chunk, "a packet is not length-prefixed NAL units"));
            }
            let shift = |t: i64| rescale(rescale(t, in_tb, MICROS) + offset_us, MICROS, out_tb);
            packet.set_pts(packet.pts().map(shift));
            packet.set_dts(None);
            packet.set_duration(rescale(packet.duration(), in_tb, out_tb));
            packet.set_stream(out_index);
            packet.set_position(-1);
            self.times.push(out_index, packet);
            self.write_ready(false)?;
        }
        // The chunk's last packets: the next chunk starts on a keyframe, so none of its
        // packets is shown before them.
        self.write_ready(true)?;
        // What was just written is in the page cache: hash it now, not at stop.
        self.hasher.catch_up(&self.tmp)
    }

    /// Write the held packets whose decode times are known (all of them with `at_end`).
    fn write_ready(&mut self, at_end: bool) -> Result<()> {
        let octx = self
            .octx
            .as_mut()
            .ok_or_else(|| bad_file(&self.tmp, "already finished"))?;
        while let Some((out_index, packet)) = self.times.pop(at_end) {
            let out_tb = octx
                .stream(out_index)
                .ok_or_else(|| bad_file(&self.tmp, "stream vanished"))?
                .time_base();
            let pts = packet.pts();
            packet
                .write(octx)
                .map_err(|e| Error::media(format!("write {}", self.tmp.display()), e))?;
            let track = &mut self.facts[out_index];
            track.packets += 1;
            if let Some(pts) = pts.map(|p| rescale(p, out_tb, MICROS)) {
                track.last_pts_us = Some(track.last_pts_us.map_or(pts, |l| l.max(pts)));
            }
        }
        Ok(())
    }

    /// fsync what has been appended so far, so that finishing has only the last chunk
    /// left to flush (stop latency stays flat however long the recording).
    pub fn sync(&self) -> Result<()> {
        durable::sync_file(&self.tmp)
    }

    /// Write the recording's bookmarks (`marks_us`, media µs) as chapters and the
    /// trailer, and make the file durable under its final name.
    pub fn finish(mut self, marks_us: &[i64]) -> Result<MergeSummary> {
        let result = (|| {
            let mut octx = self
                .octx
                .take()
                .ok_or_else(|| bad_file(&self.tmp, "already finished"))?;
            add_chapters(&mut octx, &self.tmp, marks_us)?;
            octx.write_trailer()
                .map_err(|e| Error::media(format!("finish {}", self.tmp.display()), e))?;
            drop(octx);
            let hasher = std::mem::take(&mut self.hasher);
            let block_sha256 = hasher.finish(&self.tmp)?;
            let size_bytes = std::fs::metadata(&self.tmp)
                .map_err(|e| Error::io("stat", &self.tmp, e))?
                .len();
            durable::persist(&self.tmp, &self.dest)?;
            Ok(FileFacts {
                size_bytes,
                block_sha256,
                origin_unix_us: self.origin_unix_us,
                tracks: std::mem::take(&mut self.facts),
            })
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        result.map(|facts| MergeSummary {
            packets: facts
                .tracks
                .iter()
                .map(|t| (t.name.clone(), t.packets))
                .collect(),
            file: Some(facts),
        })
    }
}

/// Rewrite `packet`'s length-prefixed NAL units as Annex B (see
/// [`in_band_headers::length_prefixed_to_annex_b`]); `false` if they are not.
fn packet_to_annex_b(packet: &mut ffmpeg::Packet) -> bool {
    // SAFETY: the packet is valid; av_packet_make_writable gives it a buffer of its own
    // (copying a shared one), so writing through data_mut touches no other packet.
    if unsafe { ffmpeg::ffi::av_packet_make_writable(packet.as_mut_ptr()) } < 0 {
        return false;
    }
    packet
        .data_mut()
        .is_some_and(in_band_headers::length_prefixed_to_annex_b)
}

/// One chapter per bookmark, named "mark N", each starting at its mark: Matroska's
/// muxer writes chapters added after the header with the trailer.
fn add_chapters(octx: &mut format::context::Output, path: &Path, marks_us: &[i64]) -> Result<()> {
    for (n, &at) in marks_us.iter().enumerate() {
        let number = n as i64 + 1;
        octx.add_chapter(number, MICROS, at, at, format!("mark {number}"))
            .map_err(|e| Error::media(format!("add a chapter to {}", path.display()), e))?;
    }
    Ok(())
}

/// The byte position of an output's writer (how much it has written, buffered or not).
fn output_position(octx: &mut format::context::Output) -> u64 {
    // SAFETY: the context is open for writing, so `pb` is a valid AVIOContext;
    // seeking by 0 from the current position only reports it.
    let pos = unsafe {
        let pb = (*octx.as_mut_ptr()).pb;
        if pb.is_null() {
            return u64::MAX;
        }
        ffmpeg::ffi::avio_seek(pb, 0, nix::libc::SEEK_CUR)
    };
    // Unknown: treat the whole file as rewritten (hashed at finish).
    u64::try_from(pos).unwrap_or(u64::MAX)
}

impl Drop for ConcatWriter {
    fn drop(&mut self) {
        // Not finished: the temp file is incomplete and every chunk is still on disk.
        if self.octx.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// The chunk files (`*.mkv`) of a recording directory, ordered by their start tag.
pub fn list_chunks(recording_dir: &Path) -> Result<Vec<(i64, PathBuf)>> {
    let entries =
        std::fs::read_dir(recording_dir).map_err(|e| Error::io("list", recording_dir, e))?;
    let mut chunks = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| Error::io("list", recording_dir, e))?
            .path();
        if matches!(SpoolFile::of(&path), Some(SpoolFile::Chunk { .. })) {
            let input = open_for_copy(&path)?;
            let start = int_tag(&input, TAG_CHUNK_START_US)
                .ok_or_else(|| bad_file(&path, "no chunk start tag"))?;
            chunks.push((start, path));
        }
    }
    chunks.sort();
    Ok(chunks)
}

/// Concatenate the chunks of `recording_dir` into `output_path` (packet copy, original
/// timestamps), with the `declared` tracks (see [`ConcatWriter::create`]). The chunks are left in place: the caller removes them once everything
/// that refers to them (the manifest) is durable. Returns `Ok(None)` when there is no
/// chunk.
pub fn merge_recording_chunks(
    recording_dir: &Path,
    output_path: &Path,
    declared: &[DeclaredTrack],
    global_tags: &[(String, String)],
    marks_us: &[i64],
    settings: MuxerSettings,
    mode: ReadMode,
) -> Result<Option<MergeSummary>> {
    let chunks: Vec<PathBuf> = list_chunks(recording_dir)?
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    if chunks.is_empty() {
        return Ok(None);
    }
    let mut writer = ConcatWriter::create(output_path, &chunks, declared, global_tags, settings)?;
    for chunk in &chunks {
        writer.append(chunk, mode)?;
    }
    writer.finish(marks_us).map(Some)
}
