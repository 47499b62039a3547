//! IMU and other sensors. A driver yields samples stamped on the monotonic clock; the
//! runtime batches them into data-stream records.

pub mod synthetic;

use serde::Serialize;

/// One IMU reading: acceleration in m/s², angular rate in rad/s.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ImuSample {
    pub t_us: i64,
    pub accel: [f32; 3],
    pub gyro: [f32; 3],
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

/// A batch of samples as stored in one data-stream packet (JSON, µs times kept exact
/// inside the payload since the file's timestamps are milliseconds).
pub fn encode_batch(samples: &[ImuSample]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "imu": samples })).unwrap_or_default()
}

pub use synthetic::SyntheticImu;
