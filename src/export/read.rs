//! Reading a finished recording back for export: its tracks as cameras, depth cameras
//! and IMUs, with their calibration, and the selection played to a [`Sink`] in file
//! order: decoded frames and IMU samples, each at its media time (µs from the
//! recording's zero; [`Recording::unix_ns`] makes it absolute).

use std::path::{Path, PathBuf};

use ffmpeg_next::{self as ffmpeg, codec, format::Pixel, media};

use super::{Error, Progress, Result, Selection};
use crate::recording::calibration::{track_calibration, Calibration};
use crate::recording::media::{
    int_tag, open_input, read_packet, rescale, stream_name, stream_title, MICROS,
    TAG_ORIGIN_UNIX_US,
};
use crate::sensors::{decode_batch, ImuSample};

/// What a track holds, as the exporters tell them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrackKind {
    /// A colour or grey camera.
    Camera,
    /// 16-bit depth values (in the calibration's depth unit).
    Depth,
    /// IMU samples (a data track with the `type=imu` tag).
    Imu,
    /// Anything else (another data track).
    Other,
}

/// One track of the recording.
#[derive(Debug, Clone)]
pub struct Track {
    pub index: usize,
    pub name: String,
    pub kind: TrackKind,
    pub width: u32,
    pub height: u32,
    /// Nominal frames per second (0 when the file does not say).
    pub fps: f64,
    /// The track's calibration (empty when it has none).
    pub calibration: Calibration,
}

/// What a [`Recording`] plays its selection to.
pub trait Sink {
    /// A decoded frame of `track` at media time `t_us`.
    fn frame(&mut self, track: &Track, t_us: i64, frame: &ffmpeg::frame::Video) -> Result<()>;
    /// IMU samples of `track`, in time order, each later than the ones before.
    fn imu(&mut self, track: &Track, samples: &[ImuSample]) -> Result<()>;
    /// Whether the sink takes `track`'s packets as they are (a packet copy) rather than
    /// decoded frames.
    fn copies(&self, _track: &Track) -> bool {
        false
    }
    /// A packet of a track the sink [`copies`](Sink::copies), in the selection, from
    /// the first keyframe in it on.
    fn packet(&mut self, _track: &Track, _packet: &ffmpeg::Packet) -> Result<()> {
        Ok(())
    }
}

/// A finished recording opened for export.
pub struct Recording {
    path: PathBuf,
    input: ffmpeg::format::context::Input,
    /// Wall-clock µs since the Unix epoch of media time 0.
    pub origin_unix_us: i64,
    pub tracks: Vec<Track>,
    /// The file's duration in µs (0 when unknown).
    pub duration_us: i64,
}

impl Recording {
    pub fn open(path: &Path) -> Result<Recording> {
        let input = open_input(path)?;
        let bad = |reason: String| Error::BadFile {
            path: path.to_owned(),
            reason,
        };
        let origin_unix_us = int_tag(&input, TAG_ORIGIN_UNIX_US).ok_or_else(|| {
            bad(format!(
                "not a grabd recording: it has no {TAG_ORIGIN_UNIX_US} tag (the wall-clock time of its start)"
            ))
        })?;
        let mut tracks = Vec::new();
        for stream in input.streams() {
            let params = stream.parameters();
            let name = stream_name(&stream)
                .or_else(|| stream_title(&stream))
                .unwrap_or_else(|| format!("track{}", stream.index()));
            let calibration = track_calibration(&stream)
                .map_err(|e| bad(format!("stream {name:?}: {e}")))?
                .unwrap_or_default();
            let (mut width, mut height, mut kind) = (0, 0, TrackKind::Other);
            match params.medium() {
                media::Type::Video => {
                    // SAFETY: codecpar of an opened input stream is valid; plain fields.
                    let (w, h, pixel) = unsafe {
                        let p = *params.as_ptr();
                        (p.width, p.height, p.format)
                    };
                    width = u32::try_from(w).unwrap_or(0);
                    height = u32::try_from(h).unwrap_or(0);
                    let gray16 = [Pixel::GRAY16LE, Pixel::GRAY16BE]
                        .iter()
                        .any(|&f| ffmpeg::ffi::AVPixelFormat::from(f) as i32 == pixel);
                    kind = if gray16 {
                        TrackKind::Depth
                    } else {
                        TrackKind::Camera
                    };
                }
                media::Type::Subtitle if stream.metadata().get("type") == Some("imu") => {
                    kind = TrackKind::Imu;
                }
                _ => {}
            }
            let rate = stream.avg_frame_rate();
            let rate = if rate.numerator() > 0 {
                rate
            } else {
                stream.rate()
            };
            let fps = if rate.denominator() > 0 {
                f64::from(rate.numerator()) / f64::from(rate.denominator())
            } else {
                0.0
            };
            tracks.push(Track {
                index: stream.index(),
                name,
                kind,
                width,
                height,
                fps,
                calibration,
            });
        }
        let duration_us = input.duration().max(0);
        Ok(Recording {
            path: path.to_owned(),
            input,
            origin_unix_us,
            tracks,
            duration_us,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every stream `--streams` names must be in the file.
    pub fn check_selection(&self, selection: &Selection) -> Result<()> {
        for name in selection.streams.iter().flatten() {
            if !self.tracks.iter().any(|t| &t.name == name) {
                let have: Vec<&str> = self.tracks.iter().map(|t| t.name.as_str()).collect();
                return Err(Error::NoSuchStream {
                    path: self.path.clone(),
                    stream: name.clone(),
                    have: have.join(", "),
                });
            }
        }
        Ok(())
    }

    /// The selected tracks of `kind`, in file order.
    pub fn selected(&self, selection: &Selection, kind: TrackKind) -> Vec<Track> {
        self.tracks
            .iter()
            .filter(|t| t.kind == kind && selection.names(&t.name))
            .cloned()
            .collect()
    }

    /// Absolute time in ns since the Unix epoch of media time `t_us`.
    pub fn unix_ns(&self, t_us: i64) -> i64 {
        (self.origin_unix_us + t_us) * 1000
    }

    /// Play the frames and samples of `tracks` that lie in `selection` to `sink`, in
    /// file order. Video is decoded with libav's frame threads on every core. With a
    /// `--start`, reading begins at the keyframes before it ([`Self::seek_before`]).
    pub fn play(
        &mut self,
        tracks: &[Track],
        selection: &Selection,
        sink: &mut dyn Sink,
        progress: &mut Progress,
    ) -> Result<Played> {
        let path = self.path.clone();
        let count = self.input.streams().count();
        let mut decoders: Vec<Option<TrackDecoder>> = (0..count).map(|_| None).collect();
        let mut wanted: Vec<Option<Track>> = vec![None; count];
        let mut last_sample_us: Vec<Option<i64>> = vec![None; count];
        let mut copying = vec![false; count];
        for track in tracks {
            let stream = self
                .input
                .stream(track.index)
                .ok_or_else(|| Error::BadFile {
                    path: path.clone(),
                    reason: format!("no track {}", track.index),
                })?;
            if matches!(track.kind, TrackKind::Camera | TrackKind::Depth) && !sink.copies(track) {
                decoders[track.index] = Some(TrackDecoder::open(&stream, &path)?);
            }
            wanted[track.index] = Some(track.clone());
        }
        let end_us = selection.end_us.unwrap_or(i64::MAX);
        let start_us = selection.start_us.unwrap_or(0);
        if selection.start_us.is_some() {
            self.seek_before(tracks, start_us)?;
        }
        progress.set_total_us(end_us.min(self.duration_us.max(1)) - start_us);
        let mut frames_out = 0u64;
        let mut played = Played::default();
        let time_bases: Vec<ffmpeg::Rational> =
            self.input.streams().map(|s| s.time_base()).collect();
        while let Some(packet) = read_packet(&mut self.input, &path, false)? {
            let i = packet.stream();
            played.packets_read += 1;
            if played.first_packet_us.is_none() {
                played.first_packet_us = packet
                    .pts()
                    .or(packet.dts())
                    .map(|p| rescale(p, time_bases[i], MICROS));
            }
            let Some(track) = wanted.get(i).and_then(Option::as_ref) else {
                continue;
            };
            let pts_us = packet.pts().map(|p| rescale(p, time_bases[i], MICROS));
            // Every later packet is past the end (IMU samples lie at or before their
            // packet's time; one second leaves the decoders' delay room).
            if pts_us.is_some_and(|t| t > end_us.saturating_add(1_000_000)) {
                break;
            }
            if sink.copies(track) {
                let in_selection = pts_us.is_some_and(|t| selection.contains(t));
                // A copy starts at a keyframe, or nothing before the next one decodes.
                copying[i] |= in_selection && packet.is_key();
                if in_selection && copying[i] {
                    sink.packet(track, &packet)?;
                }
            } else if let Some(decoder) = decoders[i].as_mut() {
                decoder.send(Some(&packet), &path)?;
                frames_out += decoder.receive(track, selection, time_bases[i], sink, &path)?;
            } else if track.kind == TrackKind::Imu {
                let samples = decode_batch(packet.data().unwrap_or_default()).ok_or_else(|| {
                    Error::BadFile {
                        path: path.clone(),
                        reason: format!(
                            "stream {:?}: a packet at {} µs is not an IMU payload of version {}",
                            track.name,
                            pts_us.unwrap_or_default(),
                            crate::sensors::IMU_PAYLOAD_VERSION
                        ),
                    }
                })?;
                let last = &mut last_sample_us[i];
                let kept: Vec<ImuSample> = samples
                    .into_iter()
                    .filter(|s| selection.contains(s.t_us))
                    .filter(|s| {
                        // Keep the rows monotonic: a sample not after the one before
                        // (never written by grabd) is left out.
                        let later = last.map_or(true, |l| s.t_us > l);
                        if later {
                            *last = Some(s.t_us);
                        }
                        later
                    })
                    .collect();
                if !kept.is_empty() {
                    sink.imu(track, &kept)?;
                }
            }
            if let Some(t) = pts_us {
                progress.update(t - start_us, frames_out);
            }
        }
        for (i, decoder) in decoders.iter_mut().enumerate() {
            if let (Some(decoder), Some(track)) = (decoder.as_mut(), wanted[i].as_ref()) {
                decoder.send(None, &path)?;
                decoder.receive(track, selection, time_bases[i], sink, &path)?;
            }
        }
        Ok(played)
    }

    /// Before playing from `start_us`, seek to the keyframe at or before it of each
    /// video track of `tracks` (of every video track in the file when `tracks` has
    /// none: an IMU's packets follow the video's in file order), the earliest of them,
    /// so that every decoder starts at a keyframe and an export of the end of a long
    /// recording does not read (and decode) the rest. The file's index (Matroska's
    /// cues) says where the keyframes are; when a track has no keyframe there at or
    /// before `start_us` (or the file has no index), it is read from its beginning.
    fn seek_before(&mut self, tracks: &[Track], start_us: i64) -> Result<()> {
        let is_video = |t: &&Track| matches!(t.kind, TrackKind::Camera | TrackKind::Depth);
        let selected: Vec<usize> = tracks.iter().filter(is_video).map(|t| t.index).collect();
        let anchors = if selected.is_empty() {
            self.tracks
                .iter()
                .filter(is_video)
                .map(|t| t.index)
                .collect()
        } else {
            selected
        };
        // Matroska's demuxer reads the cues (at the file's end) only when first asked
        // to seek: seek once on the default stream, which also leaves the file where
        // it should be read from if the finer seek below finds no keyframe.
        // SAFETY: the input context is open; stream -1 takes AV_TIME_BASE (µs).
        let ret = unsafe {
            ffmpeg::ffi::av_seek_frame(
                self.input.as_mut_ptr(),
                -1,
                start_us,
                ffmpeg::ffi::AVSEEK_FLAG_BACKWARD,
            )
        };
        if ret < 0 {
            // No index to seek by: read from the beginning.
            return self.seek_to_beginning();
        }
        // (media µs, stream, timestamp in the stream's time base) of the earliest.
        let mut earliest: Option<(i64, usize, i64)> = None;
        for index in anchors {
            let Some(stream) = self.input.stream(index) else {
                return self.seek_to_beginning();
            };
            let tb = stream.time_base();
            if tb.numerator() <= 0 || tb.denominator() <= 0 {
                return self.seek_to_beginning();
            }
            // start_us in the stream's time base, rounded down (never past start).
            let ts = i128::from(start_us) * i128::from(tb.denominator())
                / (i128::from(tb.numerator()) * 1_000_000);
            let ts = i64::try_from(ts).unwrap_or(i64::MAX);
            // SAFETY: the stream pointer is valid while `self.input` lives; the entry
            // returned (or null) points into the stream's own index, read at once and
            // before any call that could change the index.
            let keyframe = unsafe {
                let entry = ffmpeg::ffi::avformat_index_get_entry_from_timestamp(
                    stream.as_ptr() as *mut _,
                    ts,
                    ffmpeg::ffi::AVSEEK_FLAG_BACKWARD,
                );
                entry.as_ref().map(|e| e.timestamp)
            };
            let Some(keyframe) = keyframe else {
                return self.seek_to_beginning();
            };
            let at_us = rescale(keyframe, tb, MICROS);
            if earliest.map_or(true, |(us, ..)| at_us < us) {
                earliest = Some((at_us, index, keyframe));
            }
        }
        let Some((at_us, index, ts)) = earliest else {
            return self.seek_to_beginning();
        };
        let stream = i32::try_from(index).unwrap_or(i32::MAX);
        // SAFETY: the input context is open; av_seek_frame takes a stream index of it
        // and a timestamp in that stream's time base.
        let ret = unsafe {
            ffmpeg::ffi::av_seek_frame(
                self.input.as_mut_ptr(),
                stream,
                ts,
                ffmpeg::ffi::AVSEEK_FLAG_BACKWARD,
            )
        };
        if ret < 0 {
            return Err(Error::BadFile {
                path: self.path.clone(),
                reason: format!(
                    "seek to the keyframe at {at_us} µs before --start: {}",
                    ffmpeg::Error::from(ret)
                ),
            });
        }
        tracing::debug!(start_us, keyframe_us = at_us, "export: seeked");
        Ok(())
    }

    /// Read from the file's first packet again (after a seek that found no keyframe).
    fn seek_to_beginning(&mut self) -> Result<()> {
        // SAFETY: the input context is open; stream -1 takes AV_TIME_BASE (µs).
        let ret = unsafe {
            ffmpeg::ffi::avformat_seek_file(self.input.as_mut_ptr(), -1, i64::MIN, 0, 0, 0)
        };
        if ret < 0 {
            return Err(Error::BadFile {
                path: self.path.clone(),
                reason: format!(
                    "seek to the beginning for --start: {}",
                    ffmpeg::Error::from(ret)
                ),
            });
        }
        Ok(())
    }
}

/// What [`Recording::play`] read of the file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Played {
    /// Packets read, of every track.
    pub packets_read: u64,
    /// Media time of the first packet read (after the seek for `--start`).
    pub first_packet_us: Option<i64>,
}

/// A video decoder on every core (frame threads; slice threads for codecs that only
/// have those, such as FFV1 with slices).
struct TrackDecoder {
    decoder: ffmpeg::decoder::Video,
    frame: ffmpeg::frame::Video,
}

impl TrackDecoder {
    fn open(stream: &ffmpeg::format::stream::Stream, path: &Path) -> Result<Self> {
        let mut context = codec::context::Context::from_parameters(stream.parameters())
            .map_err(|e| media_error(path, "decoder parameters", e))?;
        context.set_threading(codec::threading::Config {
            kind: codec::threading::Type::Frame,
            // 0: as many as libav finds cores.
            count: 0,
            ..Default::default()
        });
        let decoder = context
            .decoder()
            .video()
            .map_err(|e| media_error(path, "open decoder", e))?;
        Ok(TrackDecoder {
            decoder,
            frame: ffmpeg::frame::Video::empty(),
        })
    }

    fn send(&mut self, packet: Option<&ffmpeg::Packet>, path: &Path) -> Result<()> {
        let sent = match packet {
            Some(p) => self.decoder.send_packet(p),
            None => self.decoder.send_eof(),
        };
        sent.map_err(|e| media_error(path, "decode", e))
    }

    /// Hand every frame the decoder has ready to `sink`; returns how many were in the
    /// selection.
    fn receive(
        &mut self,
        track: &Track,
        selection: &Selection,
        time_base: ffmpeg::Rational,
        sink: &mut dyn Sink,
        path: &Path,
    ) -> Result<u64> {
        let mut handed = 0;
        loop {
            match self.decoder.receive_frame(&mut self.frame) {
                Ok(()) => {
                    let Some(ts) = self.frame.timestamp().or(self.frame.pts()) else {
                        return Err(Error::BadFile {
                            path: path.to_owned(),
                            reason: format!("stream {:?}: a frame without a time", track.name),
                        });
                    };
                    let t_us = rescale(ts, time_base, MICROS);
                    if selection.contains(t_us) {
                        sink.frame(track, t_us, &self.frame)?;
                        handed += 1;
                    }
                }
                Err(ffmpeg::Error::Eof) => return Ok(handed),
                Err(ffmpeg::Error::Other { errno }) if errno == nix::libc::EAGAIN => {
                    return Ok(handed)
                }
                Err(e) => return Err(media_error(path, "decode", e)),
            }
        }
    }
}

fn media_error(path: &Path, what: &str, cause: ffmpeg::Error) -> Error {
    Error::BadFile {
        path: path.to_owned(),
        reason: format!("{what}: {cause}"),
    }
}
