//! One stream's encoder state machine ([`Track`]): frames in on the recording's
//! timeline, packets out into the part of the chunk they belong to, parts closed and
//! handed to the barrier when the keyframe that starts a later chunk comes out.

use ffmpeg_next as ffmpeg;

use super::barrier::ENDED;
use super::Shared;
use crate::recording::encoder::StreamEncoder;
use crate::recording::error::{Error, Result};
use crate::recording::media::{TAG_CHUNK_START_US, TAG_ORIGIN_UNIX_US};
use crate::recording::part::{ClosedPart, PartWriter};
use crate::recording::spool;
use crate::recording::stream_config::StreamConfig;
use std::sync::Arc;

/// The part of one chunk that an encoder thread's packets go to.
struct OpenPart {
    index: u64,
    writer: PartWriter,
}

/// One encoder thread's encoder and the part its packets go to.
///
/// The encoder works on the recording's timeline (µs from the origin). A packet belongs
/// to the chunk its PTS falls in, and a part is closed when the keyframe that starts a
/// later chunk comes out of the encoder, so every part starts with a keyframe even when
/// the encoder holds frames back. An encoder that honours forced keyframes is kept for
/// the whole recording and told to make each chunk's first frame a keyframe; any other
/// is flushed and reopened at each boundary.
pub(super) struct Track<'a> {
    pub shared: &'a Shared,
    pub stream: usize,
    pub name: &'a str,
    config: &'a StreamConfig,
    encoder: Option<StreamEncoder>,
    /// Chunk of the last frame given to `encoder`; `None` while it holds nothing.
    fed_chunk: Option<u64>,
    /// Keep the encoder across chunks; cleared for good if it ignores a forced keyframe.
    keep_encoder: bool,
    part: Option<OpenPart>,
    /// The first chunk this stream has not finished (only this thread moves it).
    pub closed_before: u64,
}

impl<'a> Track<'a> {
    /// Stream `stream` of `shared`, starting with the encoder opened with the writer.
    pub fn new(
        shared: &'a Shared,
        stream: usize,
        name: &'a str,
        config: &'a StreamConfig,
        encoder: Option<StreamEncoder>,
    ) -> Self {
        Track {
            shared,
            stream,
            name,
            config,
            keep_encoder: encoder
                .as_ref()
                .map_or(true, StreamEncoder::keeps_across_chunks),
            encoder,
            fed_chunk: None,
            part: None,
            closed_before: 0,
        }
    }

    /// Whether `data` can be encoded as a frame of this stream at all: a video frame of
    /// the configured size, a data record that is not empty. Anything else is one bad
    /// frame, not a broken stream.
    pub fn accepts(&self, data: &[u8]) -> bool {
        match self.config {
            StreamConfig::Video(video) => video.input_frame_size().ok() == Some(data.len()),
            StreamConfig::Data(_) => !data.is_empty(),
        }
    }

    pub fn chunk_of(&self, media_us: i64) -> u64 {
        u64::try_from(media_us / self.shared.chunk_length_us).unwrap_or(0)
    }

    /// Encode a frame of `chunk` at `media_us` and write out what the encoder releases.
    pub fn encode(&mut self, chunk: u64, media_us: i64, data: &[u8]) -> Result<()> {
        let mut keyframe = false;
        if self.fed_chunk.is_some_and(|fed| chunk > fed) {
            if self.keep_encoder {
                keyframe = true;
            } else {
                self.drain_encoder(true)?;
            }
        }
        if self.fed_chunk.is_none() && self.part.as_ref().map_or(true, |p| p.index < chunk) {
            // The encoder holds nothing: every earlier chunk is complete.
            self.close_part(chunk)?;
        }
        let mut encoder = match self.encoder.take() {
            Some(encoder) => encoder,
            None => {
                let encoder = StreamEncoder::new(self.config)?;
                self.keep_encoder &= encoder.keeps_across_chunks();
                encoder
            }
        };
        let result = encoder
            .encode(data, media_us, keyframe)
            .and_then(|packets| self.write(&encoder, packets));
        self.encoder = Some(encoder);
        self.fed_chunk = Some(chunk);
        result
    }

    /// Write packets (PTS on the recording's timeline) into the part of their chunk.
    fn write(&mut self, encoder: &StreamEncoder, packets: Vec<ffmpeg::Packet>) -> Result<()> {
        for mut packet in packets {
            let chunk = self.chunk_of(packet.pts().or(packet.dts()).unwrap_or(0).max(0));
            if let Some(part) = &self.part {
                if chunk > part.index {
                    if packet.is_key() {
                        self.close_part(chunk)?;
                    } else if self.keep_encoder {
                        // It stays in the chunk before, which then runs a little long;
                        // the next chunk starts at the encoder's next keyframe.
                        tracing::warn!(
                            stream = self.name,
                            "the encoder ignored a forced keyframe; it will be reopened at each chunk"
                        );
                        self.keep_encoder = false;
                    }
                }
            }
            let part = match &mut self.part {
                Some(part) => part,
                None => self
                    .part
                    .insert(self.open_part(chunk.max(self.closed_before))),
            };
            let start_us = self.shared.chunk_start_us(part.index);
            let timeline_us = packet.pts().or(packet.dts()).unwrap_or(0);
            let captured_us = self.shared.origin.get().map_or(0, |o| o.monotonic_us) + timeline_us;
            packet.set_pts(packet.pts().map(|t| t - start_us));
            packet.set_dts(packet.dts().map(|t| t - start_us));
            part.writer.write(encoder, [packet], captured_us)?;
        }
        Ok(())
    }

    /// Under a latency budget: end the open part's cluster once its oldest packet was
    /// captured more than `Shared::cluster_hold_us` ago (see `part`), or at once while
    /// the stream `sheds`: then its kept frames are far apart, and their gaps already
    /// take most of the loss bound.
    ///
    /// Returns when (monotonic µs) the cluster still open becomes overdue, if one is.
    pub fn end_overdue_cluster(&mut self, sheds: bool) -> Result<Option<i64>> {
        let (Some(hold_us), Some(part)) = (self.shared.cluster_hold_us, self.part.as_mut()) else {
            return Ok(None);
        };
        let hold_us = if sheds { 0 } else { hold_us };
        part.writer
            .end_cluster(crate::clock::monotonic_us() - hold_us)?;
        Ok(part
            .writer
            .buffered_since_us()
            .map(|since| since.saturating_add(hold_us)))
    }

    fn open_part(&self, index: u64) -> OpenPart {
        let shared = self.shared;
        let id = shared.chunk_id(index);
        let origin_unix_us = shared.origin.get().map_or(0, |o| o.unix_us);
        let writer = PartWriter::new(
            spool::part_path(&shared.dir, &id, self.name),
            self.name,
            &self.config.track_tags(),
            vec![
                (
                    TAG_CHUNK_START_US.into(),
                    shared.chunk_start_us(index).to_string(),
                ),
                (TAG_ORIGIN_UNIX_US.into(), origin_unix_us.to_string()),
            ],
            shared.muxer,
            Some(Arc::clone(&shared.syncer)),
        );
        OpenPart { index, writer }
    }

    /// Close the open part (if any) and tell the barrier that this stream has finished
    /// every chunk before `next`.
    fn close_part(&mut self, next: u64) -> Result<()> {
        let Some(part) = self.part.take() else {
            self.pass(next, None);
            return Ok(());
        };
        let (closed, result) = if self.shared.faults.fails_close(self.name) {
            (
                part.writer.abandon(),
                Err(injected_close_failure(self.name)),
            )
        } else {
            part.writer.close()
        };
        // A part whose close failed still holds its clusters: it goes to its chunk,
        // whose merge salvages it, and is never left out of every chunk.
        self.pass(next, closed.map(|closed| (part.index, closed)));
        result
    }

    /// After a panic: drop the encoder unflushed and hand the open part over as it is
    /// (no trailer; the muxer may have been mid-call), leaving the barrier.
    pub fn abandon(&mut self) {
        self.encoder = None;
        self.fed_chunk = None;
        let closed = self
            .part
            .take()
            .and_then(|part| part.writer.abandon().map(|closed| (part.index, closed)));
        self.pass(ENDED, closed);
    }

    /// Tell the barrier that this stream has finished every chunk before `next`,
    /// handing over the part it closed (if any).
    fn pass(&mut self, next: u64, closed: Option<(u64, ClosedPart)>) {
        self.closed_before = self.closed_before.max(next);
        self.shared.advance(self.stream, self.closed_before, closed);
    }

    /// Flush the encoder into its parts; the encoder is gone afterwards. After a failure
    /// (often a bad frame, not a broken encoder) the frames it still holds are worth
    /// keeping, and a flush error is only logged.
    fn drain_encoder(&mut self, healthy: bool) -> Result<()> {
        self.fed_chunk = None;
        let Some(mut encoder) = self.encoder.take() else {
            return Ok(());
        };
        let flushed = encoder
            .flush()
            .and_then(|packets| self.write(&encoder, packets));
        match flushed {
            Err(e) if healthy => Err(e),
            Err(e) => {
                tracing::warn!(stream = self.name, error = %e, "flushing the encoder after a failure failed");
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    }

    /// The stream fell silent and missed the deadline of the chunks before `through`:
    /// flush what its encoder holds and close them without waiting for more frames. A
    /// part of a later chunk (frames fed just before the silence) stays open.
    pub fn close_silent(&mut self, through: u64) -> Result<()> {
        self.drain_encoder(true)?;
        if self.part.as_ref().is_some_and(|p| p.index < through) {
            self.close_part(through)
        } else {
            self.pass(through, None);
            Ok(())
        }
    }

    /// End of the stream: flush the encoder and close the last part.
    pub fn finish(&mut self, healthy: bool) -> Result<()> {
        let drained = self.drain_encoder(healthy);
        self.close_part(ENDED)?;
        drained
    }
}

fn injected_close_failure(stream: &str) -> Error {
    Error::Io {
        op: "finish (injected fault)",
        path: format!("the part of {stream}").into(),
        cause: std::io::Error::from_raw_os_error(nix::libc::EIO),
    }
}
