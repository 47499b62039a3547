//! A synthetic IMU with plausible readings: gravity on a slowly swaying device, a small
//! rotation, and sensor noise.

use super::{Imu, ImuSample, SensorError};
use crate::clock::Pacer;

pub struct SyntheticImu {
    pacer: Pacer,
    n: u64,
    noise_state: u64,
}

impl SyntheticImu {
    pub fn new(rate_hz: f64) -> Self {
        SyntheticImu {
            pacer: Pacer::new(rate_hz),
            n: 0,
            noise_state: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// Small deterministic noise in [-0.5, 0.5) (xorshift; no RNG crate needed).
    fn noise(&mut self) -> f32 {
        self.noise_state ^= self.noise_state << 13;
        self.noise_state ^= self.noise_state >> 7;
        self.noise_state ^= self.noise_state << 17;
        (self.noise_state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }

    /// The sample at time `t_us` (sample number `n`).
    pub fn sample_at(&mut self, t_us: i64) -> ImuSample {
        let t = self.n as f32 * self.pacer.period_us() as f32 / 1e6;
        let sway = 0.2 * (t * 0.5 * std::f32::consts::TAU).sin();
        let g = 9.80665f32;
        ImuSample {
            t_us,
            accel: [
                g * sway.sin() + 0.05 * self.noise(),
                0.05 * self.noise(),
                g * sway.cos() + 0.05 * self.noise(),
            ],
            gyro: [
                0.2 * 0.5 * std::f32::consts::TAU * (t * 0.5 * std::f32::consts::TAU).cos()
                    + 0.01 * self.noise(),
                0.01 * self.noise(),
                0.01 * self.noise(),
            ],
            temp_c: None,
        }
    }
}

impl Imu for SyntheticImu {
    fn read(&mut self) -> Result<ImuSample, SensorError> {
        let t_us = self.pacer.wait();
        let sample = self.sample_at(t_us);
        self.n += 1;
        Ok(sample)
    }

    fn describe(&self) -> String {
        format!("synthetic imu {} Hz", 1_000_000 / self.pacer.period_us())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_are_plausible() {
        let mut imu = SyntheticImu::new(100.0);
        for i in 0..200 {
            let s = imu.sample_at(i * 10_000);
            let g = (s.accel.iter().map(|a| a * a).sum::<f32>()).sqrt();
            assert!((9.5..10.1).contains(&g), "|a| = {g}");
            assert!(s.gyro.iter().all(|w| w.abs() < 1.0));
            imu.n += 1;
        }
    }
}
