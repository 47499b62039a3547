//! Parameter sets that an encoder sends in-band instead of as extradata.
//!
//! Matroska keeps an H.264/HEVC track's SPS/PPS in the track header (CodecPrivate),
//! written before the first frame. `h264_v4l2m2m` (the Pi 4's hardware encoder) never
//! sets extradata and sends SPS/PPS as a separate first packet; libavformat 5.1's
//! Matroska muxer then fails its header. [`InBandHeaders`] runs every packet of such an
//! encoder through libavcodec's `extract_extradata` bitstream filter (with `remove=1`):
//! the parameter sets become the track's extradata, they are cut out of the packets,
//! and a packet that held nothing else is dropped instead of muxed as a frame.
//!
//! The two framings meet once more in a final file: a track declared from an encoder
//! (before any chunk held its stream) has the encoder's Annex B extradata, so the
//! Matroska muxer converts each packet written to it from Annex B to length-prefixed
//! NAL units; the chunks' packets already are, and go back to Annex B first
//! ([`length_prefixed_to_annex_b`]).
//!
//! ffmpeg-next has no safe wrapper for bitstream filters; the raw calls live here.

use std::ffi::CString;
use std::ptr;

use ffmpeg_next::{self as ffmpeg, codec, ffi, packet::Mut, Rational};

use super::error::{Error, Result};

const FILTER: &str = "extract_extradata";

/// The `extract_extradata` filter of one encoder, and the parameter sets it found.
pub struct InBandHeaders {
    bsf: *mut ffi::AVBSFContext,
    extradata: Option<Vec<u8>>,
}

// SAFETY: an AVBSFContext has no thread affinity; it only must not be used by two threads
// at once, which ownership rules out (`InBandHeaders` is not `Sync`). This lets an
// encoder opened on one thread run on another, as `VideoStreamEncoder` does.
unsafe impl Send for InBandHeaders {}

impl InBandHeaders {
    /// Whether an opened encoder of `parameters` needs this: an H.264/HEVC encoder that
    /// left its extradata empty.
    pub fn needed(parameters: &codec::Parameters) -> bool {
        matches!(parameters.id(), codec::Id::H264 | codec::Id::HEVC)
            && extradata(parameters).is_empty()
    }

    /// A filter for the packets of an encoder with these `parameters`, whose packets are
    /// timed in `time_base`.
    pub fn new(parameters: &codec::Parameters, time_base: Rational) -> Result<Self> {
        let failed = |what: &str, ret: i32| {
            Error::media(format!("{FILTER}: {what}"), ffmpeg::Error::from(ret))
        };
        let name = CString::new(FILTER).unwrap_or_default();
        // SAFETY: `name` is a valid C string; the filter returned is static.
        let filter = unsafe { ffi::av_bsf_get_by_name(name.as_ptr()) };
        if filter.is_null() {
            return Err(Error::media(
                format!("{FILTER} bitstream filter not found in libavcodec"),
                ffmpeg::Error::BsfNotFound,
            ));
        }
        let mut bsf: *mut ffi::AVBSFContext = ptr::null_mut();
        // SAFETY: `filter` is valid; on success `bsf` owns a new context.
        let ret = unsafe { ffi::av_bsf_alloc(filter, &mut bsf) };
        if ret < 0 {
            return Err(failed("allocate", ret));
        }
        // From here on, Drop frees `bsf` on every error path.
        let headers = InBandHeaders {
            bsf,
            extradata: None,
        };
        let remove = CString::new("remove").unwrap_or_default();
        // SAFETY: `bsf` is a freshly allocated context whose par_in is allocated and
        // whose priv_data holds the filter's options; `parameters` is a valid
        // AVCodecParameters that avcodec_parameters_copy only reads.
        let ret = unsafe {
            let ret = ffi::avcodec_parameters_copy((*bsf).par_in, parameters.as_ptr());
            if ret < 0 {
                ret
            } else {
                (*bsf).time_base_in = time_base.into();
                let ret = ffi::av_opt_set_int((*bsf).priv_data, remove.as_ptr(), 1, 0);
                if ret < 0 {
                    ret
                } else {
                    ffi::av_bsf_init(bsf)
                }
            }
        };
        if ret < 0 {
            return Err(failed("set up", ret));
        }
        Ok(headers)
    }

    /// The parameter sets found so far (Annex B), if any.
    pub fn extradata(&self) -> Option<&[u8]> {
        self.extradata.as_deref()
    }

    /// Pass one encoder packet through the filter. Returns the packet without its
    /// parameter sets, or `None` when it held nothing else.
    pub fn filter(&mut self, mut packet: ffmpeg::Packet) -> Result<Option<ffmpeg::Packet>> {
        let failed =
            |ret: i32| Error::media(format!("{FILTER}: filter packet"), ffmpeg::Error::from(ret));
        // SAFETY: `self.bsf` is an initialised context; av_bsf_send_packet takes the
        // packet's reference (leaving `packet` blank) and av_bsf_receive_packet moves
        // its output into `packet`. extract_extradata gives one packet per packet.
        let ret = unsafe {
            let ret = ffi::av_bsf_send_packet(self.bsf, packet.as_mut_ptr());
            if ret < 0 {
                ret
            } else {
                ffi::av_bsf_receive_packet(self.bsf, packet.as_mut_ptr())
            }
        };
        if ret < 0 {
            return Err(failed(ret));
        }
        if let Some(found) = packet
            .side_data()
            .find(|s| s.kind() == ffmpeg::packet::side_data::Type::NewExtraData)
        {
            if self.extradata.is_none() && !found.data().is_empty() {
                self.extradata = Some(found.data().to_vec());
            }
        }
        Ok((packet.size() > 0).then_some(packet))
    }
}

impl Drop for InBandHeaders {
    fn drop(&mut self) {
        // SAFETY: `self.bsf` was allocated by av_bsf_alloc and is freed only here.
        unsafe { ffi::av_bsf_free(&mut self.bsf) };
    }
}

/// The extradata of `parameters` (empty when there is none).
pub fn extradata(parameters: &codec::Parameters) -> &[u8] {
    // SAFETY: a valid AVCodecParameters holds `extradata_size` bytes at `extradata`
    // (or a null pointer); the slice lives no longer than `parameters`.
    unsafe {
        let par = parameters.as_ptr();
        match usize::try_from((*par).extradata_size) {
            Ok(size) if size > 0 && !(*par).extradata.is_null() => {
                std::slice::from_raw_parts((*par).extradata, size)
            }
            _ => &[],
        }
    }
}

/// Whether `extradata` is an Annex B byte stream (a start code first), as an encoder
/// gives its parameter sets; a container's avcC/hvcC record starts with its version, 1.
pub fn is_annex_b(extradata: &[u8]) -> bool {
    extradata.starts_with(&[0, 0, 1]) || extradata.starts_with(&[0, 0, 0, 1])
}

/// The size of the NAL unit lengths in packets described by an H.264 avcC or HEVC hvcC
/// record (`None` for other codecs or a record too short to say).
pub fn nal_length_size(id: codec::Id, record: &[u8]) -> Option<usize> {
    let at = match id {
        codec::Id::H264 => 4,
        codec::Id::HEVC => 21,
        _ => return None,
    };
    record.get(at).map(|b| usize::from(b & 3) + 1)
}

/// Rewrite a packet of NAL units with 4-byte lengths (as Matroska and MP4 store
/// H.264/HEVC) as Annex B in place: each length becomes the 4-byte start code, so the
/// size stays. Returns `false`, leaving `data` as it was, when the lengths do not add
/// up to the packet.
pub fn length_prefixed_to_annex_b(data: &mut [u8]) -> bool {
    let mut starts = Vec::new();
    let mut at = 0;
    while at < data.len() {
        let Some(length) = data.get(at..at + 4) else {
            return false;
        };
        let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]);
        starts.push(at);
        at = match usize::try_from(length)
            .ok()
            .and_then(|n| (at + 4).checked_add(n))
        {
            Some(next) if next <= data.len() => next,
            _ => return false,
        };
    }
    for start in starts {
        data[start..start + 4].copy_from_slice(&[0, 0, 0, 1]);
    }
    true
}

/// Replace the extradata of `parameters` with `data`.
pub fn set_extradata(parameters: &mut codec::Parameters, data: &[u8]) -> Result<()> {
    let size = i32::try_from(data.len())
        .map_err(|_| Error::InvalidConfig(format!("extradata of {} bytes", data.len())))?;
    let padding = ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
    // SAFETY: libavformat frees extradata with av_free, so it is allocated with
    // av_mallocz, with the zeroed padding libavcodec requires after it; the old buffer is
    // freed with av_freep, which also nulls the pointer.
    unsafe {
        let par = parameters.as_mut_ptr();
        ffi::av_freep(ptr::addr_of_mut!((*par).extradata).cast());
        (*par).extradata_size = 0;
        let buffer = ffi::av_mallocz(data.len() + padding).cast::<u8>();
        if buffer.is_null() {
            return Err(Error::media(
                "allocate extradata",
                ffmpeg::Error::Other {
                    errno: nix::errno::Errno::ENOMEM as i32,
                },
            ));
        }
        ptr::copy_nonoverlapping(data.as_ptr(), buffer, data.len());
        (*par).extradata = buffer;
        (*par).extradata_size = size;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NAL unit types of an Annex B byte stream, with each unit's bytes.
    fn nal_units(data: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut starts = Vec::new();
        let mut i = 0;
        while i + 3 <= data.len() {
            if data[i..i + 3] == [0, 0, 1] {
                starts.push(i + 3);
                i += 3;
            } else {
                i += 1;
            }
        }
        starts
            .iter()
            .enumerate()
            .map(|(n, &s)| {
                let end = starts.get(n + 1).map_or(data.len(), |&next| next - 3);
                (data[s] & 0x1f, [&[0, 0, 0, 1], &data[s..end]].concat())
            })
            .collect()
    }

    /// The first packet of libx264 opened without GLOBAL_HEADER, split the way
    /// h264_v4l2m2m sends it: SPS/PPS alone, then the frame.
    fn v4l2m2m_shaped_packets() -> (codec::Parameters, Vec<u8>, Vec<u8>) {
        crate::recording::media::ensure_init();
        let x264 = ffmpeg::encoder::find_by_name("libx264").expect("libx264");
        let mut video = codec::context::Context::new_with_codec(x264)
            .encoder()
            .video()
            .expect("video encoder");
        video.set_width(64);
        video.set_height(48);
        video.set_format(ffmpeg::format::Pixel::YUV420P);
        video.set_time_base(Rational(1, 25));
        let mut options = ffmpeg::Dictionary::new();
        options.set("preset", "ultrafast");
        let mut encoder = video.open_with(options).expect("open libx264");
        let mut frame = ffmpeg::frame::Video::new(ffmpeg::format::Pixel::YUV420P, 64, 48);
        frame.set_pts(Some(0));
        encoder.send_frame(&frame).expect("send frame");
        encoder.send_eof().expect("send eof");
        let mut first = ffmpeg::Packet::empty();
        encoder.receive_packet(&mut first).expect("a packet");
        let units = nal_units(first.data().expect("packet data"));
        let is_header = |t: u8| t == 7 || t == 8;
        let pick = |header: bool| -> Vec<u8> {
            units
                .iter()
                .filter(|u| is_header(u.0) == header)
                .flat_map(|u| u.1.clone())
                .collect()
        };
        let (headers, rest) = (pick(true), pick(false));
        assert!(
            !headers.is_empty() && !rest.is_empty(),
            "x264's first packet: {units:?}"
        );
        (codec::Parameters::from(&*encoder), headers, rest)
    }

    #[test]
    fn a_header_only_packet_gives_the_extradata_and_is_dropped() {
        let (parameters, headers, frame) = v4l2m2m_shaped_packets();
        assert!(InBandHeaders::needed(&parameters), "no extradata, H.264");
        let mut filter = InBandHeaders::new(&parameters, Rational(1, 1_000_000)).expect("filter");
        let out = filter
            .filter(ffmpeg::Packet::copy(&headers))
            .expect("filter headers");
        assert!(out.is_none(), "a header-only packet is not a frame");
        let extradata = filter.extradata().expect("SPS/PPS found").to_vec();
        let types: Vec<u8> = nal_units(&extradata).iter().map(|u| u.0).collect();
        assert_eq!(types, vec![7, 8], "extradata holds SPS and PPS");

        let out = filter
            .filter(ffmpeg::Packet::copy(&frame))
            .expect("filter frame");
        let out = out.expect("the frame is kept");
        let types: Vec<u8> = nal_units(out.data().expect("data"))
            .iter()
            .map(|u| u.0)
            .collect();
        assert!(types.contains(&5), "IDR slice kept: {types:?}");
        assert_eq!(
            filter.extradata(),
            Some(&extradata[..]),
            "first SPS/PPS kept"
        );
    }

    #[test]
    fn a_frame_before_any_parameter_set_has_no_extradata() {
        let (parameters, _, frame) = v4l2m2m_shaped_packets();
        let mut filter = InBandHeaders::new(&parameters, Rational(1, 1_000_000)).expect("filter");
        let out = filter
            .filter(ffmpeg::Packet::copy(&frame))
            .expect("filter frame");
        assert!(out.is_some());
        assert!(filter.extradata().is_none());
    }

    #[test]
    fn length_prefixed_units_become_start_codes_and_bad_lengths_are_refused() {
        let mut two = vec![0, 0, 0, 2, 0x65, 0xaa, 0, 0, 0, 1, 0x41];
        assert!(length_prefixed_to_annex_b(&mut two));
        assert_eq!(two, [0, 0, 0, 1, 0x65, 0xaa, 0, 0, 0, 1, 0x41]);
        for bad in [&[0, 0, 0, 9, 0x65][..], &[0, 0, 0, 1, 0x65, 0, 0][..]] {
            let mut data = bad.to_vec();
            assert!(!length_prefixed_to_annex_b(&mut data), "{bad:?}");
            assert_eq!(data, bad, "a refused packet is left as it was");
        }
        assert!(is_annex_b(&[0, 0, 0, 1, 0x67]) && is_annex_b(&[0, 0, 1, 0x67]));
        assert!(!is_annex_b(&[1, 0x64, 0, 0x1f, 0xff]));
        assert_eq!(
            nal_length_size(codec::Id::H264, &[1, 0x64, 0, 0x1f, 0xff]),
            Some(4)
        );
    }

    #[test]
    fn set_extradata_replaces_what_was_there() {
        let mut parameters = codec::Parameters::new();
        set_extradata(&mut parameters, &[1, 2, 3]).expect("set");
        set_extradata(&mut parameters, &[4, 5]).expect("set again");
        assert_eq!(extradata(&parameters), &[4, 5]);
    }
}
