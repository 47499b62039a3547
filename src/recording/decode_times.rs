//! Decode timestamps for packets copied out of Matroska, which stores none.
//!
//! Read back, a B-frame track's packets come in decode order with PTS out of order, and
//! the demuxer's DTS is no decode time: unset (H.264), a guess for some, or the PTS
//! again (HEVC). The muxer refuses a DTS after its PTS or one that goes back, so a copy
//! needs real ones. A packet is decoded before any packet after it is shown, so its DTS
//! is the smallest PTS among it and the next [`REORDER_WINDOW`] packets of its track
//! (never below the track's last DTS). Matroska writes only the PTS: this changes
//! nothing in the files, it only lets every frame through. Only video reorders: a data
//! (subtitle) packet's DTS is its PTS at once, so a sparse data track holds nothing back.

use std::collections::VecDeque;

use ffmpeg_next::{self as ffmpeg, media};

/// How many later packets of a track fix a packet's DTS: libavformat's own bound on
/// reordering (MAX_REORDER_DELAY); x265 allows at most 16 B-frames.
pub const REORDER_WINDOW: usize = 16;

/// Packets of one or more tracks, held in the order they were read until their DTS is
/// known, and released in that same order (so a file's interleaving is kept).
pub struct DecodeTimes {
    held: VecDeque<(usize, ffmpeg::Packet)>,
    /// Per track (by the caller's index): how many later packets fix a DTS, and the
    /// last DTS released.
    tracks: Vec<TrackTimes>,
}

#[derive(Clone, Copy)]
struct TrackTimes {
    window: usize,
    last: Option<i64>,
}

impl DecodeTimes {
    /// For tracks `0..` of these media.
    pub fn new(media: impl IntoIterator<Item = media::Type>) -> Self {
        let tracks = media
            .into_iter()
            .map(|medium| TrackTimes {
                window: if medium == media::Type::Video {
                    REORDER_WINDOW
                } else {
                    0
                },
                last: None,
            })
            .collect();
        DecodeTimes {
            held: VecDeque::new(),
            tracks,
        }
    }

    /// Hold `packet` of `track` (any time base, the same for all of a track's packets).
    pub fn push(&mut self, track: usize, packet: ffmpeg::Packet) {
        self.held.push_back((track, packet));
    }

    /// The next packet in read order with its DTS set, once the packets after it are
    /// read (or, with `at_end`, once no more will come). A packet shown before a DTS
    /// already released cannot be decoded in order and is dropped with a warning; that
    /// needs reordering deeper than the window, which no encoder grabd runs makes.
    pub fn pop(&mut self, at_end: bool) -> Option<(usize, ffmpeg::Packet)> {
        loop {
            let &(track, _) = self.held.front()?;
            let Some(&TrackTimes { window, last }) = self.tracks.get(track) else {
                return self.held.pop_front();
            };
            let later: Vec<Option<i64>> = self
                .held
                .iter()
                .skip(1)
                .filter(|(t, _)| *t == track)
                .take(window)
                .map(|(_, p)| p.pts())
                .collect();
            if later.len() < window && !at_end {
                return None;
            }
            let (_, mut packet) = self.held.pop_front()?;
            let pts = packet.pts();
            let shown_next = std::iter::once(pts).chain(later).flatten().min();
            let Some(dts) = shown_next.or(packet.dts()).or(last) else {
                // No timestamp at all: the muxer fills it in.
                return Some((track, packet));
            };
            let dts = last.map_or(dts, |l| dts.max(l));
            if pts.is_some_and(|p| dts > p) {
                tracing::warn!(track, "dropping a packet that decodes after it is shown");
                continue;
            }
            self.tracks[track].last = Some(dts);
            packet.set_dts(Some(dts));
            return Some((track, packet));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(pts: i64, demuxer_dts: Option<i64>) -> ffmpeg::Packet {
        let mut p = ffmpeg::Packet::empty();
        p.set_pts(Some(pts));
        p.set_dts(demuxer_dts);
        p
    }

    fn drain(times: &mut DecodeTimes) -> Vec<(usize, i64, i64)> {
        std::iter::from_fn(|| times.pop(true))
            .map(|(t, p)| (t, p.pts().unwrap_or(-1), p.dts().unwrap_or(-1)))
            .collect()
    }

    #[test]
    fn hevc_decode_order_gets_dts_before_every_pts() {
        // libx265 with 3 B-frames, read back: the demuxer repeats the PTS as DTS.
        let pts = [0, 160, 80, 40, 120, 320, 240, 200, 280];
        let mut times = DecodeTimes::new([media::Type::Video]);
        for p in pts {
            times.push(0, packet(p, Some(p)));
        }
        let out = drain(&mut times);
        let dts: Vec<i64> = out.iter().map(|&(_, _, d)| d).collect();
        assert_eq!(dts, [0, 40, 40, 40, 120, 200, 200, 200, 280]);
        let kept: Vec<i64> = out.iter().map(|&(_, p, _)| p).collect();
        assert_eq!(kept, pts, "every packet kept, in read order");
    }

    #[test]
    fn video_waits_for_its_window_data_does_not_and_read_order_is_kept() {
        let mut times = DecodeTimes::new([media::Type::Video, media::Type::Subtitle]);
        times.push(1, packet(0, None));
        assert_eq!(
            times.pop(false).map(|(t, p)| (t, p.dts())),
            Some((1, Some(0)))
        );
        times.push(0, packet(0, None));
        times.push(1, packet(40, None));
        assert!(
            times.pop(false).is_none(),
            "the video's later packets are not read yet"
        );
        for i in 1..=REORDER_WINDOW as i64 {
            times.push(0, packet(i * 40, None));
        }
        assert_eq!(
            times.pop(false).map(|(t, p)| (t, p.dts())),
            Some((0, Some(0)))
        );
        assert_eq!(
            times.pop(false).map(|(t, p)| (t, p.dts())),
            Some((1, Some(40)))
        );
        assert!(times.pop(false).is_none());
        assert_eq!(drain(&mut times).len(), REORDER_WINDOW);
    }

    #[test]
    fn dts_never_goes_back_and_a_packet_shown_before_it_is_dropped() {
        let mut times = DecodeTimes::new([media::Type::Video]);
        times.push(0, packet(1000, None));
        assert_eq!(drain(&mut times), [(0, 1000, 1000)]);
        // A later file starts earlier: its packets cannot decode in order.
        times.push(0, packet(900, None));
        times.push(0, packet(1040, None));
        assert_eq!(drain(&mut times), [(0, 1040, 1040)]);
    }
}
