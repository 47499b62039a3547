//! Per-stream encoders: raw frames or sensor records in, packets with microsecond PTS
//! out. They know nothing of files; the part writer muxes what they return.
//!
//! PTS are microseconds on the recording's shared timeline (the caller subtracts the
//! origin), so the packets of every stream are directly comparable; the chunked writer
//! makes them relative to the chunk they land in.

use ffmpeg_next::{self as ffmpeg, codec, encoder, software::scaling, Dictionary};

use super::error::{Error, Result};
use super::in_band_headers::{self, InBandHeaders};
use super::libav_log;
use super::media::{ensure_init, fill_frame_from_packed, rescale, MICROS};
use super::stream_config::{parse_pixel_format, DataStreamConfig, StreamConfig, VideoStreamConfig};

/// What a part writer needs to declare a track for an encoder's packets.
pub struct TrackSpec {
    pub parameters: codec::Parameters,
    /// Time base of the packets handed to the muxer.
    pub time_base: ffmpeg::Rational,
}

/// Encodes raw frames of one video stream. Every chunk must start with a keyframe so
/// that it plays on its own: an encoder that [honours forced
/// keyframes](VideoStreamEncoder::honours_forced_keyframes) is kept across chunks and told
/// to start each one with an IDR frame; any other is flushed and reopened per chunk.
pub struct VideoStreamEncoder {
    encoder: encoder::video::Encoder,
    input: ffmpeg::frame::Video,
    /// Present only when the input pixel format differs from the encoder's.
    converter: Option<Converter>,
    last_pts: Option<i64>,
    /// The encoder's own time base: microseconds, unless the codec cannot take them
    /// ([`encoder_time_base`]). Packets leave [`encode`](Self::encode) in microseconds.
    time_base: ffmpeg::Rational,
    /// The last PTS handed to the encoder, in its own time base.
    last_encoder_pts: Option<i64>,
    honours_forced_keyframes: bool,
    /// Present when the encoder sends its parameter sets in-band (no extradata).
    in_band_headers: Option<InBandHeaders>,
    name: String,
}

/// Pixel format conversion in front of an encoder, with its output frame.
struct Converter {
    scaler: scaling::Context,
    out: ffmpeg::frame::Video,
}

// SAFETY: an SwsContext has no thread affinity (libswscale keeps no thread-local state
// for it); it only must not be used by two threads at once, which ownership already
// rules out (`Converter` is not `Sync`). ffmpeg-next leaves it `!Send` only because it
// holds a raw pointer. This lets an encoder opened on one thread run on another.
unsafe impl Send for Converter {}

/// Encoders that start a new GOP at a frame marked `I`, so that one instance can serve a
/// whole recording: no pipeline drain, re-initialisation or (for V4L2 M2M) device reopen
/// at every chunk. libx264 and libx265 do so only with `forced-idr`, which grabd sets
/// unless the config sets it; FFmpeg's V4L2 M2M encoders send FORCE_KEY_FRAME.
const FORCED_KEYFRAME_ENCODERS: &[&str] = &["libx264", "libx265", "h264_v4l2m2m", "hevc_v4l2m2m"];
const FORCED_IDR_OPTION: &str = "forced-idr";

/// Encoders whose time base denominator must fit 16 bits (MPEG-4 part 2 and its
/// H.263 family): they refuse microseconds ("timebase 1/1000000 not supported").
const SIXTEEN_BIT_TIME_BASE_ENCODERS: &[&str] = &["mpeg4", "h263", "h263p", "msmpeg4", "msmpeg4v2"];

/// The time base an encoder is opened with. Matroska stores whole milliseconds, so an
/// encoder that cannot take microseconds loses nothing the file would keep with them.
fn encoder_time_base(codec: &str) -> ffmpeg::Rational {
    if SIXTEEN_BIT_TIME_BASE_ENCODERS.contains(&codec) {
        ffmpeg::Rational(1, 1000)
    } else {
        MICROS
    }
}

/// x264's and x265's presets (`x264 --help`): an unknown one is refused by the library
/// itself, on its own stderr line, before libav's log sees it, so grabd names it first.
pub(crate) const X26X_PRESETS: &[&str] = &[
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
];

impl VideoStreamEncoder {
    pub fn new(config: &VideoStreamConfig) -> Result<Self> {
        config.validate()?;
        ensure_init();
        let input_format = parse_pixel_format(&config.input_pixel_format)?;
        let output_format = parse_pixel_format(&config.output_pixel_format)?;
        let codec = encoder::find_by_name(&config.codec)
            .ok_or_else(|| Error::InvalidConfig(format!("unknown encoder {}", config.codec)))?;
        // A context made with the codec keeps the codec's own defaults (libx264 threads=auto).
        let mut video = codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(|e| Error::media(format!("{} is not a video encoder", config.codec), e))?;
        video.set_width(config.width);
        video.set_height(config.height);
        video.set_format(output_format);
        let time_base = encoder_time_base(codec.name());
        video.set_time_base(time_base);
        video.set_frame_rate(Some(ffmpeg::Rational::from(config.fps)));
        if config.bitrate > 0 {
            video.set_bit_rate(usize::try_from(config.bitrate).unwrap_or(usize::MAX));
        }
        // Matroska stores codec headers (SPS/PPS) in the track, not in-band.
        video.set_flags(codec::Flags::GLOBAL_HEADER);

        let mut options = Dictionary::new();
        for (k, v) in &config.stream_options {
            options.set(k, v);
        }
        if !config.stream_options.contains_key("threads") {
            // libavcodec's context default is 1 thread; FFV1 and others scale with more.
            options.set("threads", "auto");
        }
        let honours_forced_keyframes = FORCED_KEYFRAME_ENCODERS.contains(&codec.name())
            && match config.stream_options.get(FORCED_IDR_OPTION) {
                Some(value) => matches!(value.as_str(), "1" | "true"),
                None => {
                    if codec.name().starts_with("libx26") {
                        options.set(FORCED_IDR_OPTION, "1");
                    }
                    true
                }
            };
        let encoder = open_checked(video, codec, options, &config.codec)?;
        // SAFETY: the context is open and owned by `encoder`; gop_size is a plain field.
        let every_frame_a_keyframe = unsafe { (*encoder.as_ptr()).gop_size } == 1;
        let honours_forced_keyframes = honours_forced_keyframes || every_frame_a_keyframe;
        let parameters = codec::Parameters::from(&*encoder);
        let in_band_headers = if InBandHeaders::needed(&parameters) {
            Some(InBandHeaders::new(&parameters, MICROS)?)
        } else {
            None
        };

        let converter = if input_format != output_format {
            let scaler = scaling::Context::get(
                input_format,
                config.width,
                config.height,
                output_format,
                config.width,
                config.height,
                scaling::Flags::BILINEAR,
            )
            .map_err(|e| {
                Error::media(
                    format!(
                        "convert {} to {}",
                        config.input_pixel_format, config.output_pixel_format
                    ),
                    e,
                )
            })?;
            let out = ffmpeg::frame::Video::new(output_format, config.width, config.height);
            Some(Converter { scaler, out })
        } else {
            None
        };
        Ok(VideoStreamEncoder {
            encoder,
            input: ffmpeg::frame::Video::new(input_format, config.width, config.height),
            converter,
            last_pts: None,
            time_base,
            last_encoder_pts: None,
            honours_forced_keyframes,
            in_band_headers,
            name: config.codec.clone(),
        })
    }

    /// Whether a frame encoded with `keyframe` set starts a new GOP that needs nothing
    /// before it (so the encoder may be kept across chunks): an encoder that honours
    /// forced keyframes, or one opened with a GOP of one frame (`g = 1`), where every
    /// frame is a keyframe. FFV1 is the case that needs the latter: it marks keyframes
    /// by GOP position only.
    pub fn honours_forced_keyframes(&self) -> bool {
        self.honours_forced_keyframes
    }

    /// Open (and drop) an encoder for `config`: catches what only the codec can judge,
    /// such as unknown or invalid codec options, before any file exists.
    pub fn check(config: &VideoStreamConfig) -> Result<()> {
        let encoder = Self::new(config)?;
        // An encoder with in-band headers has its track's extradata only after a frame.
        if encoder.in_band_headers.is_none() {
            let spec = encoder.track_spec()?;
            super::media::check_matroska_takes(&config.codec, spec.parameters, spec.time_base)?;
        }
        Ok(())
    }

    /// The track for this encoder's packets. For an encoder that sends its parameter
    /// sets in-band, call it only once a packet was returned: they become the track's
    /// extradata (Matroska CodecPrivate) then.
    pub fn track_spec(&self) -> Result<TrackSpec> {
        let mut parameters = codec::Parameters::from(&*self.encoder);
        if let Some(found) = self.in_band_headers.as_ref().and_then(|h| h.extradata()) {
            in_band_headers::set_extradata(&mut parameters, found)?;
        }
        Ok(TrackSpec {
            parameters,
            time_base: MICROS,
        })
    }

    /// The track, when it is known before the first packet: not for an encoder that
    /// sends its parameter sets in-band (they come with that packet).
    pub fn track_spec_before_packets(&self) -> Option<TrackSpec> {
        if self.in_band_headers.is_some() {
            return None;
        }
        self.track_spec().ok()
    }

    /// Encode one packed frame (see [`VideoStreamConfig::input_frame_size`]) at `pts_us`,
    /// as a keyframe if `keyframe` (a request that only encoders which
    /// [honour it](Self::honours_forced_keyframes) are sure to follow). Returns the packets
    /// the encoder released (maybe none: encoders buffer).
    pub fn encode(
        &mut self,
        data: &[u8],
        pts_us: i64,
        keyframe: bool,
    ) -> Result<Vec<ffmpeg::Packet>> {
        if pts_us < 0 || self.last_pts.is_some_and(|last| pts_us <= last) {
            return Err(Error::InvalidConfig(format!(
                "PTS {pts_us} is negative or not after the previous one"
            )));
        }
        fill_frame_from_packed(&mut self.input, data)?;
        let frame = match &mut self.converter {
            Some(Converter { scaler, out }) => {
                scaler
                    .run(&self.input, out)
                    .map_err(|e| Error::media("pixel format conversion", e))?;
                out
            }
            None => &mut self.input,
        };
        // In a coarser time base two frames may round to one tick: keep them apart.
        let mut pts = rescale(pts_us, MICROS, self.time_base);
        if let Some(last) = self.last_encoder_pts {
            pts = pts.max(last + 1);
        }
        frame.set_pts(Some(pts));
        // The frame is reused: clear the mark as well as set it.
        frame.set_kind(if keyframe {
            ffmpeg::picture::Type::I
        } else {
            ffmpeg::picture::Type::None
        });
        self.encoder
            .send_frame(frame)
            .map_err(|e| Error::media("send frame to encoder", e))?;
        self.last_pts = Some(pts_us);
        self.last_encoder_pts = Some(pts);
        self.drain()
    }

    /// Signal the end of the stream and return every packet still buffered.
    pub fn flush(&mut self) -> Result<Vec<ffmpeg::Packet>> {
        self.encoder
            .send_eof()
            .map_err(|e| Error::media("flush encoder", e))?;
        self.drain()
    }

    fn drain(&mut self) -> Result<Vec<ffmpeg::Packet>> {
        let mut packets = Vec::new();
        loop {
            let mut packet = ffmpeg::Packet::empty();
            match self.encoder.receive_packet(&mut packet) {
                Ok(()) => {
                    packet.rescale_ts(self.time_base, MICROS);
                    packets.extend(self.without_in_band_headers(packet)?);
                }
                Err(ffmpeg::Error::Eof) => break,
                Err(ffmpeg::Error::Other { errno }) if errno == libc_eagain() => break,
                Err(e) => return Err(Error::media("receive packet from encoder", e)),
            }
        }
        Ok(packets)
    }

    /// An encoder packet as it goes into the file: for an encoder that sends SPS/PPS
    /// in-band, without them (they are the track's extradata), and `None` for a packet
    /// that held nothing else. A frame before any SPS is refused: its track would have
    /// no CodecPrivate.
    fn without_in_band_headers(
        &mut self,
        packet: ffmpeg::Packet,
    ) -> Result<Option<ffmpeg::Packet>> {
        let Some(headers) = self.in_band_headers.as_mut() else {
            return Ok(Some(packet));
        };
        let packet = headers.filter(packet)?;
        if packet.is_some() && headers.extradata().is_none() {
            return Err(Error::media(
                format!("encoder {} sent a frame before its SPS", self.name),
                ffmpeg::Error::InvalidData,
            ));
        }
        Ok(packet)
    }
}

fn libc_eagain() -> i32 {
    nix::errno::Errno::EAGAIN as i32
}

/// Open the encoder and refuse codec options it did not recognise.
fn open_checked(
    mut video: encoder::video::Video,
    codec: ffmpeg::Codec,
    options: Dictionary,
    name: &str,
) -> Result<encoder::video::Encoder> {
    // SAFETY: the context and codec pointers are valid and owned by `video`/`codec`;
    // avcodec_open2 takes the dictionary and leaves in it the options it did not use,
    // which we take back into an owned Dictionary that frees it.
    let ((ret, leftover), libav_says) = libav_log::capture(|| unsafe {
        let mut raw = options.disown();
        let ret = ffmpeg::ffi::avcodec_open2(video.as_mut_ptr(), codec.as_ptr(), &mut raw);
        (ret, Dictionary::own(raw))
    });
    if ret < 0 {
        return Err(Error::media(
            libav_log::with_reason(format!("open encoder {name}"), &libav_says),
            ffmpeg::Error::from(ret),
        ));
    }
    let unused: Vec<String> = leftover.iter().map(|(k, _)| k.to_string()).collect();
    if !unused.is_empty() {
        return Err(Error::InvalidSetting {
            field: "options",
            message: format!("encoder {name} does not know the options {unused:?}"),
        });
    }
    Ok(encoder::video::Encoder(video))
}

/// Builds the packets of a data (subtitle) track: the payload verbatim, PTS explicit.
/// There is no codec to run, so nothing is buffered and nothing needs flushing.
pub struct DataStreamEncoder {
    codec_id: codec::Id,
    last_pts: Option<i64>,
}

impl DataStreamEncoder {
    pub fn new(config: &DataStreamConfig) -> Result<Self> {
        Ok(DataStreamEncoder {
            codec_id: config.codec_id()?,
            last_pts: None,
        })
    }

    pub fn track_spec(&self) -> Result<TrackSpec> {
        let mut parameters = codec::Parameters::new();
        parameters.set_medium(ffmpeg::media::Type::Subtitle);
        parameters.set_id(self.codec_id);
        Ok(TrackSpec {
            parameters,
            time_base: MICROS,
        })
    }

    /// Every record is a keyframe already: `keyframe` changes nothing.
    pub fn encode(
        &mut self,
        data: &[u8],
        pts_us: i64,
        _keyframe: bool,
    ) -> Result<Vec<ffmpeg::Packet>> {
        if data.is_empty() {
            return Err(Error::InvalidConfig("empty data record".into()));
        }
        if pts_us < 0 || self.last_pts.is_some_and(|last| pts_us < last) {
            return Err(Error::InvalidConfig(format!(
                "PTS {pts_us} is negative or before the previous one"
            )));
        }
        let mut packet = ffmpeg::Packet::copy(data);
        packet.set_pts(Some(pts_us));
        packet.set_dts(Some(pts_us));
        packet.set_flags(ffmpeg::packet::Flags::KEY);
        self.last_pts = Some(pts_us);
        Ok(vec![packet])
    }

    pub fn flush(&mut self) -> Result<Vec<ffmpeg::Packet>> {
        Ok(Vec::new())
    }
}

/// The encoder of one stream, whichever kind it is.
pub enum StreamEncoder {
    Video(Box<VideoStreamEncoder>),
    Data(DataStreamEncoder),
}

impl StreamEncoder {
    pub fn encode(
        &mut self,
        data: &[u8],
        pts_us: i64,
        keyframe: bool,
    ) -> Result<Vec<ffmpeg::Packet>> {
        match self {
            StreamEncoder::Video(v) => v.encode(data, pts_us, keyframe),
            StreamEncoder::Data(d) => d.encode(data, pts_us, keyframe),
        }
    }

    /// Whether one instance can serve every chunk (see
    /// [`VideoStreamEncoder::honours_forced_keyframes`]); data records are all keyframes.
    pub fn keeps_across_chunks(&self) -> bool {
        match self {
            StreamEncoder::Video(v) => v.honours_forced_keyframes(),
            StreamEncoder::Data(_) => true,
        }
    }

    pub fn new(config: &StreamConfig) -> Result<Self> {
        Ok(match config {
            StreamConfig::Video(c) => StreamEncoder::Video(Box::new(VideoStreamEncoder::new(c)?)),
            StreamConfig::Data(c) => StreamEncoder::Data(DataStreamEncoder::new(c)?),
        })
    }

    pub fn flush(&mut self) -> Result<Vec<ffmpeg::Packet>> {
        match self {
            StreamEncoder::Video(v) => v.flush(),
            StreamEncoder::Data(d) => d.flush(),
        }
    }

    pub fn track_spec(&self) -> Result<TrackSpec> {
        match self {
            StreamEncoder::Video(v) => v.track_spec(),
            StreamEncoder::Data(d) => d.track_spec(),
        }
    }

    /// See [`VideoStreamEncoder::track_spec_before_packets`]; a data track always is.
    pub fn track_spec_before_packets(&self) -> Option<TrackSpec> {
        match self {
            StreamEncoder::Video(v) => v.track_spec_before_packets(),
            StreamEncoder::Data(d) => d.track_spec().ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 32x24 lossless FFV1, gray16le in and out, with the given codec options.
    fn ffv1(options: &[(&str, &str)]) -> VideoStreamConfig {
        let mut config = VideoStreamConfig::new(32, 24, 25.0)
            .and_then(|c| c.with_codec("ffv1", "gray16le", "gray16le"))
            .expect("ffv1 gray16le config")
            .with_bitrate(0);
        for (key, value) in options {
            config = config.with_option(key, value);
        }
        config
    }

    /// FFV1 marks a frame as a keyframe by its GOP position only, so a forced keyframe
    /// is lost on it and it must be reopened per chunk; with `g = 1` every frame is a
    /// keyframe, so one encoder serves the whole recording (no reopen at every chunk,
    /// which costs a slow board the first frames of each chunk).
    #[test]
    fn an_encoder_that_makes_every_frame_a_keyframe_is_kept_across_chunks() {
        let default = StreamEncoder::new(&StreamConfig::Video(ffv1(&[]))).expect("ffv1");
        assert!(!default.keeps_across_chunks(), "FFV1 with its default GOP");

        let config = ffv1(&[("g", "1")]);
        let mut all_intra = StreamEncoder::new(&StreamConfig::Video(config.clone())).expect("ffv1");
        assert!(all_intra.keeps_across_chunks(), "FFV1 with g = 1");
        let frame = vec![7u8; (config.width * config.height * 2) as usize];
        let mut packets = Vec::new();
        for i in 0..5 {
            packets.extend(all_intra.encode(&frame, i * 40_000, false).expect("encode"));
        }
        packets.extend(all_intra.flush().expect("flush"));
        assert_eq!(packets.len(), 5);
        assert!(
            packets.iter().all(|p| p.is_key()),
            "every packet a keyframe"
        );
    }
}
