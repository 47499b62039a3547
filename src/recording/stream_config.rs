//! Stream configurations: what each track of a recording holds and how it is encoded.
//!
//! Both kinds are checked when they are built ([`VideoStreamConfig::validate`],
//! [`DataStreamConfig::validate`]), against the libavcodec this binary links, so a typo
//! in a codec or pixel format name is an error at start-up, not a crash at frame 1.

use std::collections::BTreeMap;
use std::str::FromStr;

use ffmpeg_next::{codec, encoder, format::Pixel, media};
use serde::{Deserialize, Serialize};

use super::calibration::{Calibration, TAG_CALIBRATION};
use super::error::{Error, Result};
use super::media::ensure_init;

/// A video track: raw frames in `input_pixel_format` encoded with `codec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VideoStreamConfig {
    pub width: u32,
    pub height: u32,
    /// Nominal frames per second (the encoder's rate-control hint; timestamps rule).
    pub fps: f64,
    #[serde(default = "default_codec")]
    pub codec: String,
    /// Target bit rate in bits per second (0 = the codec's default, e.g. lossless FFV1).
    #[serde(default = "default_bitrate")]
    pub bitrate: u64,
    #[serde(default = "default_input_pixel_format")]
    pub input_pixel_format: String,
    #[serde(default = "default_output_pixel_format")]
    pub output_pixel_format: String,
    /// Codec options passed to the encoder verbatim (e.g. `preset`, `g`, `bf`).
    #[serde(default, alias = "options")]
    pub stream_options: BTreeMap<String, String>,
    /// Stored as the Matroska track's tags.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Stored as the track tag `GRABD_CALIBRATION` (see [`Calibration`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// Boxed: most streams have none, and it is larger than the rest of the config.
    pub calibration: Option<Box<Calibration>>,
}

/// Output pixel formats of depth streams (16-bit values in the depth unit).
const DEPTH_PIXEL_FORMATS: &[&str] = &["gray16le", "gray16be"];

fn default_codec() -> String {
    "libx264".into()
}
fn default_bitrate() -> u64 {
    2_000_000
}
fn default_input_pixel_format() -> String {
    "rgb24".into()
}
fn default_output_pixel_format() -> String {
    "yuv420p".into()
}
fn default_data_codec() -> String {
    "ass".into()
}

impl VideoStreamConfig {
    /// A validated config with the reference's defaults (libx264, 2 Mb/s, rgb24 → yuv420p).
    pub fn new(width: u32, height: u32, fps: f64) -> Result<Self> {
        let config = VideoStreamConfig {
            width,
            height,
            fps,
            codec: default_codec(),
            bitrate: default_bitrate(),
            input_pixel_format: default_input_pixel_format(),
            output_pixel_format: default_output_pixel_format(),
            stream_options: BTreeMap::new(),
            metadata: BTreeMap::new(),
            calibration: None,
        };
        config.validate()?;
        Ok(config)
    }

    /// Builder-style setters that re-validate, so a config is never half-checked.
    pub fn with_codec(mut self, codec: &str, input: &str, output: &str) -> Result<Self> {
        self.codec = codec.into();
        self.input_pixel_format = input.into();
        self.output_pixel_format = output.into();
        self.validate()?;
        Ok(self)
    }

    pub fn with_bitrate(mut self, bitrate: u64) -> Self {
        self.bitrate = bitrate;
        self
    }

    pub fn with_option(mut self, key: &str, value: &str) -> Self {
        self.stream_options.insert(key.into(), value.into());
        self
    }

    pub fn with_metadata(mut self, key: &str, value: &str) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    pub fn with_calibration(mut self, calibration: Calibration) -> Result<Self> {
        self.calibration = Some(Box::new(calibration));
        self.validate()?;
        Ok(self)
    }

    /// Whether the stream holds 16-bit depth values (16-bit grey in and out).
    pub fn is_depth(&self) -> bool {
        DEPTH_PIXEL_FORMATS.contains(&self.output_pixel_format.as_str())
    }

    /// Check everything that can be checked without a frame.
    pub fn validate(&self) -> Result<()> {
        ensure_init();
        let bad =
            |field: &'static str, message: String| Err(Error::InvalidSetting { field, message });
        if self.width == 0 || self.height == 0 {
            let field = if self.width == 0 { "width" } else { "height" };
            return bad(
                field,
                format!("video size {}x{} is empty", self.width, self.height),
            );
        }
        if !(self.fps.is_finite() && self.fps > 0.0) {
            return bad("fps", format!("fps must be positive, got {}", self.fps));
        }
        parse_pixel_format(&self.input_pixel_format)
            .map_err(|e| e.for_field("input_pixel_format"))?;
        let output = parse_pixel_format(&self.output_pixel_format)
            .map_err(|e| e.for_field("output_pixel_format"))?;
        for (field, format_name) in [
            ("input_pixel_format", &self.input_pixel_format),
            ("output_pixel_format", &self.output_pixel_format),
        ] {
            let format = parse_pixel_format(format_name).map_err(|e| e.for_field(field))?;
            check_chroma_multiple(format, format_name, self.width, self.height)?;
        }
        if let Some(calibration) = &self.calibration {
            calibration.validate(self.width, self.height, self.is_depth())?;
        }
        if let Some(preset) = self.stream_options.get("preset") {
            let x26x = matches!(self.codec.as_str(), "libx264" | "libx265");
            if x26x && !super::encoder::X26X_PRESETS.contains(&preset.as_str()) {
                return bad(
                    "options",
                    format!(
                        "{} has no preset {preset:?} (it has {})",
                        self.codec,
                        super::encoder::X26X_PRESETS.join(", ")
                    ),
                );
            }
        }
        let Some(codec) = encoder::find_by_name(&self.codec) else {
            return bad("codec", format!("unknown encoder {:?}", self.codec));
        };
        if codec.medium() != media::Type::Video {
            return bad("codec", format!("{:?} is not a video encoder", self.codec));
        }
        if let Some(formats) = codec.video().ok().and_then(|v| v.formats()) {
            let formats: Vec<Pixel> = formats.collect();
            if !formats.is_empty() && !formats.contains(&output) {
                return bad(
                    "output_pixel_format",
                    format!(
                        "encoder {} cannot encode pixel format {}",
                        self.codec, self.output_pixel_format
                    ),
                );
            }
        }
        Ok(())
    }

    /// Bytes in one tightly packed input frame.
    pub fn input_frame_size(&self) -> Result<usize> {
        let format = parse_pixel_format(&self.input_pixel_format)?;
        super::media::packed_frame_size(format, self.width, self.height)
    }
}

/// A subsampled chroma plane needs the picture to span whole chroma samples: 4:2:0
/// (and packed 4:2:2 such as yuyv422) frames of odd size cannot be encoded or even laid
/// out, and libav says so only in its log.
fn check_chroma_multiple(format: Pixel, name: &str, width: u32, height: u32) -> Result<()> {
    let Some(descriptor) = format.descriptor() else {
        return Ok(());
    };
    for (field, size, log2) in [
        ("width", width, descriptor.log2_chroma_w()),
        ("height", height, descriptor.log2_chroma_h()),
    ] {
        let multiple = 1u32 << log2;
        if size % multiple != 0 {
            return Err(Error::InvalidSetting {
                field,
                message: format!(
                    "{size} is not a multiple of {multiple}, which {name} needs (its chroma is subsampled)"
                ),
            });
        }
    }
    Ok(())
}

/// A data track (IMU and other sensors) stored as a Matroska subtitle track: Matroska
/// through libavformat takes only audio, video and subtitle tracks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataStreamConfig {
    #[serde(default = "default_data_codec")]
    pub codec: String,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl Default for DataStreamConfig {
    fn default() -> Self {
        DataStreamConfig {
            codec: default_data_codec(),
            metadata: BTreeMap::new(),
        }
    }
}

impl DataStreamConfig {
    pub fn with_metadata(mut self, key: &str, value: &str) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    pub fn validate(&self) -> Result<()> {
        self.codec_id()
            .map(|_| ())
            .map_err(|e| e.for_field("codec"))
    }

    /// The libavcodec id of the subtitle codec named in the config.
    pub fn codec_id(&self) -> Result<codec::Id> {
        ensure_init();
        if !DATA_CODECS.contains(&self.codec.as_str()) {
            return Err(Error::InvalidConfig(format!(
                "{:?} cannot hold a data stream: it needs a codec whose packets are stored \
                 byte for byte ({})",
                self.codec,
                DATA_CODECS.join(", ")
            )));
        }
        let codec = encoder::find_by_name(&self.codec)
            .or_else(|| ffmpeg_next::decoder::find_by_name(&self.codec))
            .ok_or_else(|| {
                Error::InvalidConfig(format!("unknown subtitle codec {:?}", self.codec))
            })?;
        if codec.medium() != media::Type::Subtitle {
            return Err(Error::InvalidConfig(format!(
                "data streams are stored as subtitle tracks; {:?} is not a subtitle codec",
                self.codec
            )));
        }
        Ok(codec.id())
    }
}

/// Subtitle codecs whose packets Matroska stores byte for byte, which a data stream's
/// records need. Others (bitmap subtitles such as `dvdsub`) would make the track claim
/// to be something it is not.
const DATA_CODECS: &[&str] = &["ass"];

/// Either kind of stream, with the name it is recorded under.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum StreamConfig {
    Video(VideoStreamConfig),
    Data(DataStreamConfig),
}

impl StreamConfig {
    pub fn validate(&self) -> Result<()> {
        match self {
            StreamConfig::Video(v) => v.validate(),
            StreamConfig::Data(d) => d.validate(),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            StreamConfig::Video(_) => "video",
            StreamConfig::Data(_) => "data",
        }
    }

    /// The user's track tags.
    pub fn metadata(&self) -> &BTreeMap<String, String> {
        match self {
            StreamConfig::Video(v) => &v.metadata,
            StreamConfig::Data(d) => &d.metadata,
        }
    }

    /// Every tag the stream's track carries besides grabd's stream name: the user's
    /// metadata and the calibration.
    pub fn track_tags(&self) -> BTreeMap<String, String> {
        let mut tags = self.metadata().clone();
        if let StreamConfig::Video(VideoStreamConfig {
            calibration: Some(calibration),
            ..
        }) = self
        {
            tags.insert(TAG_CALIBRATION.into(), calibration.to_tag());
        }
        tags
    }
}

/// Parse a libav pixel format name (`rgb24`, `gray16le`, `yuyv422`...).
pub fn parse_pixel_format(name: &str) -> Result<Pixel> {
    ensure_init();
    match Pixel::from_str(name) {
        Ok(Pixel::None) | Err(_) => Err(Error::InvalidConfig(format!(
            "unknown pixel format {name:?}"
        ))),
        Ok(format) => Ok(format),
    }
}

/// Stream names become file names and track titles: keep them plain.
pub fn validate_stream_name(name: &str) -> Result<()> {
    if super::spool::is_plain_name(name) {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "stream name {name:?} must be 1-64 characters of A-Z a-z 0-9 _ -"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_defaults_are_valid() {
        let c = VideoStreamConfig::new(1280, 800, 25.0).unwrap();
        assert_eq!(c.codec, "libx264");
        assert_eq!(c.input_frame_size().unwrap(), 1280 * 800 * 3);
    }

    #[test]
    fn bad_configs_fail_at_construction() {
        for (w, h, fps) in [
            (0, 800, 25.0),
            (1280, 0, 25.0),
            (64, 64, 0.0),
            (64, 64, -1.0),
        ] {
            assert!(matches!(
                VideoStreamConfig::new(w, h, fps),
                Err(Error::InvalidSetting { .. })
            ));
        }
        let c = VideoStreamConfig::new(64, 64, 25.0).unwrap();
        let err = c
            .clone()
            .with_codec("libx999", "rgb24", "yuv420p")
            .unwrap_err();
        assert!(err.to_string().contains("libx999"), "{err}");
        let err = c
            .clone()
            .with_codec("libx264", "rgb99", "yuv420p")
            .unwrap_err();
        assert!(err.to_string().contains("rgb99"), "{err}");
        let err = c.with_codec("ffv1", "gray16le", "nv12").unwrap_err();
        assert!(err.to_string().contains("nv12"), "{err}");
        assert!(DataStreamConfig {
            codec: "h264".into(),
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(DataStreamConfig::default().validate().is_ok());
    }

    #[test]
    fn stream_names_are_plain() {
        assert!(validate_stream_name("rgb_0-a").is_ok());
        for bad in ["", "a.b", "a/b", "a b"] {
            assert!(validate_stream_name(bad).is_err(), "{bad}");
        }
    }
}
