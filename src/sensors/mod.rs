//! IMU and other sensors. A driver yields samples stamped on the monotonic clock; the
//! runtime batches them into data-stream records ([`encode_batch`]).
//!
//! - [`Imu`]: the trait every IMU driver implements.
//! - [`SyntheticImu`]: plausible readings without hardware.
//! - [`Mpu6050`]: MPU-6050 / MPU-6500 over SMBus (`/dev/i2c-N`).
//!
//! # IMU payload, version 3
//!
//! Each data packet of an IMU stream (track tags `type=imu`, `format=json`,
//! `version=3`) is one JSON object holding the samples read since the previous packet:
//!
//! ```json
//! {"version":3,"samples":[{"t_us":40123,"a":[0.01,-0.02,9.81],"g":[0.001,0.0,-0.002],"temp_c":31.2}]}
//! ```
//!
//! - `t_us`: the sample's own time in µs on the recording's timeline: the same zero as
//!   every track's timestamps (the first frame), from the same CLOCK_MONOTONIC as the
//!   frames, exact to the µs (the file's packet timestamps are ms). It may be negative
//!   for samples read just before the first frame.
//! - `a`: acceleration in m/s² (x, y, z in the chip's frame); `g`: angular rate in
//!   rad/s; `temp_c`: die temperature in °C, absent when the source has none.
//!
//! The packet itself is stamped with the time of the video frame it is batched with (or
//! of its period's end). Version 2 (the reference) gave only `dt` in ms from the batch's
//! first sample.

mod mpu6050;
pub mod synthetic;

use serde::{Deserialize, Serialize};

/// One IMU reading: acceleration in m/s², angular rate in rad/s, CLOCK_MONOTONIC µs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ImuSample {
    pub t_us: i64,
    pub accel: [f32; 3],
    pub gyro: [f32; 3],
    pub temp_c: Option<f32>,
}

#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    #[error("imu {device}: {reason}")]
    Failed { device: String, reason: String },
}

/// An IMU. `read` blocks until the next sample is due.
pub trait Imu: Send {
    fn read(&mut self) -> Result<ImuSample, SensorError>;
    fn describe(&self) -> String;
}

/// The version written in each payload and in the track's `version` tag.
pub const IMU_PAYLOAD_VERSION: u32 = 3;

/// The track tags of an IMU data stream.
pub const IMU_TRACK_TAGS: [(&str, &str); 3] =
    [("type", "imu"), ("format", "json"), ("version", "3")];

/// One sample as a payload holds it.
#[derive(Serialize, Deserialize)]
struct PayloadSample {
    t_us: i64,
    a: [f32; 3],
    g: [f32; 3],
    #[serde(default, skip_serializing_if = "Option::is_none")]
    temp_c: Option<f32>,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    version: u32,
    samples: Vec<PayloadSample>,
}

/// A batch of samples as stored in one data-stream packet (version 3, see the module
/// doc): each sample's time made relative to `origin_us`, the recording's zero on
/// CLOCK_MONOTONIC.
pub fn encode_batch(samples: &[ImuSample], origin_us: i64) -> Vec<u8> {
    let samples = samples
        .iter()
        .map(|s| PayloadSample {
            t_us: s.t_us - origin_us,
            a: s.accel,
            g: s.gyro,
            temp_c: s.temp_c,
        })
        .collect();
    encode(&Payload {
        version: IMU_PAYLOAD_VERSION,
        samples,
    })
}

/// The samples of one data-stream packet (the reverse of [`encode_batch`]), their
/// `t_us` on the recording's timeline; `None` when `payload` is not a version-3 IMU
/// payload.
pub fn decode_batch(payload: &[u8]) -> Option<Vec<ImuSample>> {
    let payload: Payload = serde_json::from_slice(payload).ok()?;
    if payload.version != IMU_PAYLOAD_VERSION {
        return None;
    }
    let samples = payload
        .samples
        .into_iter()
        .map(|s| ImuSample {
            t_us: s.t_us,
            accel: s.a,
            gyro: s.g,
            temp_c: s.temp_c,
        })
        .collect();
    Some(samples)
}

/// A payload made with origin 0 (times on CLOCK_MONOTONIC) made relative to
/// `origin_us`, for sources that run longer than one recording; `None` when `payload`
/// is not a version-3 IMU payload.
pub fn rebase_batch(payload: &[u8], origin_us: i64) -> Option<Vec<u8>> {
    decode_batch(payload).map(|samples| encode_batch(&samples, origin_us))
}

fn encode(payload: &Payload) -> Vec<u8> {
    // Plain numbers and arrays: serialising cannot fail.
    serde_json::to_vec(payload).unwrap_or_default()
}

pub use mpu6050::{
    identify as identify_mpu6050, Model as ImuModel, Mpu6050, Mpu6050Config, RegisterBus,
};
pub use synthetic::SyntheticImu;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_v3_gives_each_sample_its_time_on_the_recording_timeline() {
        let samples = [
            ImuSample {
                t_us: 1_000_500,
                accel: [0.0, 0.0, 9.5],
                gyro: [0.0, 0.25, 0.0],
                temp_c: Some(30.0),
            },
            ImuSample {
                t_us: 1_010_500,
                accel: [0.0, 0.0, 9.5],
                gyro: [0.0, 0.0, 0.0],
                temp_c: None,
            },
        ];
        let json: serde_json::Value =
            serde_json::from_slice(&encode_batch(&samples, 1_000_000)).unwrap();
        assert_eq!(json["version"], 3);
        assert_eq!(json["samples"][0]["t_us"], 500);
        assert_eq!(json["samples"][1]["t_us"], 10_500);
        assert_eq!(json["samples"][0]["g"][1], 0.25);
        assert_eq!(json["samples"][0]["temp_c"], 30.0);
        assert!(json["samples"][1].get("temp_c").is_none());
    }

    #[test]
    fn a_monotonic_payload_rebased_equals_one_encoded_for_the_origin() {
        let samples = [ImuSample {
            t_us: 5_000_250,
            accel: [0.5, 0.0, 9.5],
            gyro: [0.0, 0.0, 0.125],
            temp_c: Some(25.0),
        }];
        let rebased = rebase_batch(&encode_batch(&samples, 0), 4_000_000).unwrap();
        assert_eq!(rebased, encode_batch(&samples, 4_000_000));
        assert_eq!(rebase_batch(b"{\"imu\":[]}", 1), None);
    }

    #[test]
    fn a_payload_decodes_to_the_samples_it_was_made_of() {
        let samples = vec![ImuSample {
            t_us: 2_000_125,
            accel: [0.5, -1.25, 9.5],
            gyro: [0.0, 0.0625, -0.125],
            temp_c: None,
        }];
        let decoded = decode_batch(&encode_batch(&samples, 2_000_000)).unwrap();
        assert_eq!(
            decoded,
            vec![ImuSample {
                t_us: 125,
                ..samples[0]
            }]
        );
        assert_eq!(decode_batch(b"{\"version\":2,\"samples\":[]}"), None);
    }
}
