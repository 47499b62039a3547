//! InvenSense MPU-6050 / MPU-6500 on an I2C bus (`/dev/i2c-N`, address 0x68 or 0x69).
//!
//! Only SMBus byte-data writes and I2C-block reads are used (through `i2cdev`), never
//! I2C_RDWR: they work on a Pi's controller and on the kernel's i2c-stub alike. The chip
//! is polled at the configured rate; each sample is stamped on CLOCK_MONOTONIC (the
//! clock frames and button events use) at the middle of its 14-byte burst read, and
//! converted to SI units with the scale of the configured ranges.
//!
//! Register map (product specification / register map rev. 4.2): WHO_AM_I 0x75
//! (0x68 = MPU-6050, 0x70 = MPU-6500), PWR_MGMT_1 0x6B, SMPLRT_DIV 0x19, CONFIG 0x1A
//! (DLPF in bits 0-2), GYRO_CONFIG 0x1B / ACCEL_CONFIG 0x1C (range in bits 3-4), data
//! 0x3B-0x48 (accel x y z, temperature, gyro x y z; big-endian i16).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Imu, ImuSample, SensorError};
use crate::clock::{monotonic_us, Pacer};

const WHO_AM_I: u8 = 0x75;
const PWR_MGMT_1: u8 = 0x6B;
const SMPLRT_DIV: u8 = 0x19;
const CONFIG: u8 = 0x1A;
const GYRO_CONFIG: u8 = 0x1B;
const ACCEL_CONFIG: u8 = 0x1C;
const DATA: u8 = 0x3B;
const DATA_LEN: u8 = 14;

const PWR_RESET: u8 = 0x80;
/// Awake, clocked from the X gyro's PLL (the datasheet's recommended source).
const PWR_PLL_X: u8 = 0x01;

const STANDARD_GRAVITY: f32 = 9.806_65;

/// Which chip answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Model {
    Mpu6050,
    Mpu6500,
}

impl Model {
    pub fn from_who_am_i(value: u8) -> Option<Model> {
        match value {
            0x68 => Some(Model::Mpu6050),
            0x70 => Some(Model::Mpu6500),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Model::Mpu6050 => "MPU-6050",
            Model::Mpu6500 => "MPU-6500",
        }
    }

    fn temperature_c(self, raw: i16) -> f32 {
        match self {
            Model::Mpu6050 => f32::from(raw) / 340.0 + 36.53,
            Model::Mpu6500 => f32::from(raw) / 333.87 + 21.0,
        }
    }
}

/// What the chip is set to.
#[derive(Debug, Clone, PartialEq)]
pub struct Mpu6050Config {
    pub bus: PathBuf,
    pub address: u16,
    /// Samples per second (polling rate; the chip's own rate is set to match).
    pub rate_hz: f64,
    /// ±2, 4, 8 or 16 g.
    pub accel_range_g: u32,
    /// ±250, 500, 1000 or 2000 °/s.
    pub gyro_range_dps: u32,
    /// Digital low-pass filter setting 0-6 (CONFIG register; 1 = 188 Hz ... 6 = 5 Hz).
    pub dlpf: u8,
}

impl Mpu6050Config {
    pub fn new(bus: impl Into<PathBuf>, address: u16) -> Self {
        Mpu6050Config {
            bus: bus.into(),
            address,
            rate_hz: 100.0,
            accel_range_g: 2,
            gyro_range_dps: 250,
            dlpf: 3,
        }
    }

    /// `/dev/i2c-1@0x68`.
    pub fn device(&self) -> String {
        format!("{}@{:#04x}", self.bus.display(), self.address)
    }

    /// Check what can be checked without the chip; the message names the value and the
    /// allowed ones.
    pub fn validate(&self) -> Result<(), String> {
        if !matches!(self.address, 0x68 | 0x69) {
            return Err(format!(
                "address {:#04x}: an MPU-6050/6500 answers at 0x68 or 0x69",
                self.address
            ));
        }
        if accel_range_bits(self.accel_range_g).is_none() {
            return Err(format!(
                "accel_range_g {}: must be 2, 4, 8 or 16",
                self.accel_range_g
            ));
        }
        if gyro_range_bits(self.gyro_range_dps).is_none() {
            return Err(format!(
                "gyro_range_dps {}: must be 250, 500, 1000 or 2000",
                self.gyro_range_dps
            ));
        }
        if self.dlpf > 6 {
            return Err(format!("dlpf {}: must be 0..6", self.dlpf));
        }
        if !(self.rate_hz.is_finite() && self.rate_hz >= 4.0 && self.rate_hz <= 1000.0) {
            return Err(format!("rate_hz {}: must be 4..1000", self.rate_hz));
        }
        Ok(())
    }

    /// SMPLRT_DIV for the rate: the chip samples at 1 kHz with the DLPF on, 8 kHz off.
    fn sample_rate_divider(&self) -> u8 {
        let base = if self.dlpf == 0 { 8000.0 } else { 1000.0 };
        ((base / self.rate_hz).round() - 1.0).clamp(0.0, 255.0) as u8
    }
}

fn accel_range_bits(g: u32) -> Option<u8> {
    [2, 4, 8, 16].iter().position(|&r| r == g).map(|i| i as u8)
}

fn gyro_range_bits(dps: u32) -> Option<u8> {
    [250, 500, 1000, 2000]
        .iter()
        .position(|&r| r == dps)
        .map(|i| i as u8)
}

/// The SMBus transfers the driver uses: all an SMBus-only adapter needs to offer.
pub trait RegisterBus: Send {
    fn read_byte(&mut self, register: u8) -> std::io::Result<u8>;
    fn write_byte(&mut self, register: u8, value: u8) -> std::io::Result<()>;
    /// I2C-block read (SMBus "read I2C block data", at most 32 bytes).
    fn read_block(&mut self, register: u8, len: u8) -> std::io::Result<Vec<u8>>;
}

impl RegisterBus for i2cdev::linux::LinuxI2CDevice {
    fn read_byte(&mut self, register: u8) -> std::io::Result<u8> {
        i2cdev::core::I2CDevice::smbus_read_byte_data(self, register).map_err(Into::into)
    }
    fn write_byte(&mut self, register: u8, value: u8) -> std::io::Result<()> {
        i2cdev::core::I2CDevice::smbus_write_byte_data(self, register, value).map_err(Into::into)
    }
    fn read_block(&mut self, register: u8, len: u8) -> std::io::Result<Vec<u8>> {
        i2cdev::core::I2CDevice::smbus_read_i2c_block_data(self, register, len).map_err(Into::into)
    }
}

/// Read WHO_AM_I at `bus`/`address`: the chip found, or why not (for `grabd probe`).
pub fn identify(bus: &Path, address: u16) -> Result<(u8, Option<Model>), String> {
    let mut device = i2cdev::linux::LinuxI2CDevice::new(bus, address)
        .map_err(|e| format!("{}@{address:#04x}: {e}", bus.display()))?;
    let value = device
        .read_byte(WHO_AM_I)
        .map_err(|e| format!("{}@{address:#04x}: read WHO_AM_I: {e}", bus.display()))?;
    Ok((value, Model::from_who_am_i(value)))
}

/// A configured MPU-6050/6500, polled at its rate.
pub struct Mpu6050 {
    bus: Box<dyn RegisterBus>,
    model: Model,
    device: String,
    pacer: Pacer,
    /// m/s² per LSB and rad/s per LSB for the configured ranges.
    accel_scale: f32,
    gyro_scale: f32,
}

impl Mpu6050 {
    /// Open `/dev/i2c-N` at the address and set the chip up.
    pub fn open(config: &Mpu6050Config) -> Result<Self, SensorError> {
        let device =
            i2cdev::linux::LinuxI2CDevice::new(&config.bus, config.address).map_err(|e| {
                SensorError::Failed {
                    device: config.device(),
                    reason: format!("open: {e}"),
                }
            })?;
        Self::with_bus(Box::new(device), config)
    }

    /// Set up the chip behind `bus`: identify it (any WHO_AM_I but 0x68/0x70 is
    /// refused), reset and wake it, program rate, filter and ranges, and read them back.
    pub fn with_bus(
        mut bus: Box<dyn RegisterBus>,
        config: &Mpu6050Config,
    ) -> Result<Self, SensorError> {
        let device = config.device();
        let fail = |reason: String| SensorError::Failed {
            device: device.clone(),
            reason,
        };
        config.validate().map_err(&fail)?;
        let who = bus
            .read_byte(WHO_AM_I)
            .map_err(|e| fail(format!("read WHO_AM_I: {e}")))?;
        let model = Model::from_who_am_i(who).ok_or_else(|| {
            fail(format!(
                "WHO_AM_I is {who:#04x}: not an MPU-6050 (0x68) or MPU-6500 (0x70)"
            ))
        })?;
        let accel_bits = accel_range_bits(config.accel_range_g).unwrap_or(0);
        let gyro_bits = gyro_range_bits(config.gyro_range_dps).unwrap_or(0);
        let write = |bus: &mut Box<dyn RegisterBus>, register: u8, value: u8| {
            bus.write_byte(register, value)
                .map_err(|e| fail(format!("write register {register:#04x}: {e}")))
        };
        write(&mut bus, PWR_MGMT_1, PWR_RESET)?;
        // The reset takes up to 100 ms. Its bit is not polled: i2c-stub never clears it.
        std::thread::sleep(Duration::from_millis(100));
        write(&mut bus, PWR_MGMT_1, PWR_PLL_X)?;
        let settings = [
            (SMPLRT_DIV, config.sample_rate_divider()),
            (CONFIG, config.dlpf),
            (GYRO_CONFIG, gyro_bits << 3),
            (ACCEL_CONFIG, accel_bits << 3),
        ];
        for (register, value) in settings {
            write(&mut bus, register, value)?;
        }
        for (register, value) in settings {
            let read = bus
                .read_byte(register)
                .map_err(|e| fail(format!("read register {register:#04x}: {e}")))?;
            if read != value {
                return Err(fail(format!(
                    "register {register:#04x} reads {read:#04x} after writing {value:#04x}"
                )));
            }
        }
        let lsb_per_g = 16384.0 / f32::from(1u8 << accel_bits);
        let lsb_per_dps = 131.0 / f32::from(1u8 << gyro_bits);
        tracing::info!(%device, model = model.name(), rate_hz = config.rate_hz, "IMU ready");
        Ok(Mpu6050 {
            bus,
            model,
            device,
            pacer: Pacer::new(config.rate_hz),
            accel_scale: STANDARD_GRAVITY / lsb_per_g,
            gyro_scale: std::f32::consts::PI / 180.0 / lsb_per_dps,
        })
    }

    pub fn model(&self) -> Model {
        self.model
    }

    /// One burst read of the data registers, converted; stamped at the read's middle.
    pub fn sample(&mut self) -> Result<ImuSample, SensorError> {
        let before = monotonic_us();
        let data = self
            .bus
            .read_block(DATA, DATA_LEN)
            .map_err(|e| SensorError::Failed {
                device: self.device.clone(),
                reason: format!("read data registers: {e}"),
            })?;
        let after = monotonic_us();
        if data.len() != usize::from(DATA_LEN) {
            return Err(SensorError::Failed {
                device: self.device.clone(),
                reason: format!("read {} of {DATA_LEN} data bytes", data.len()),
            });
        }
        let word = |i: usize| i16::from_be_bytes([data[2 * i], data[2 * i + 1]]);
        Ok(ImuSample {
            t_us: before + (after - before) / 2,
            accel: [0, 1, 2].map(|i| f32::from(word(i)) * self.accel_scale),
            gyro: [4, 5, 6].map(|i| f32::from(word(i)) * self.gyro_scale),
            temp_c: Some(self.model.temperature_c(word(3))),
        })
    }
}

impl Imu for Mpu6050 {
    fn read(&mut self) -> Result<ImuSample, SensorError> {
        self.pacer.wait();
        self.sample()
    }

    fn describe(&self) -> String {
        format!("{} at {}", self.model.name(), self.device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Registers as plain memory, like i2c-stub; writes are logged.
    #[derive(Clone)]
    struct FakeChip {
        registers: Arc<Mutex<[u8; 256]>>,
        writes: Arc<Mutex<Vec<(u8, u8)>>>,
    }

    impl FakeChip {
        fn with_who_am_i(value: u8) -> Self {
            let chip = FakeChip {
                registers: Arc::new(Mutex::new([0; 256])),
                writes: Arc::default(),
            };
            chip.set(WHO_AM_I, &[value]);
            chip
        }
        fn set(&self, register: u8, values: &[u8]) {
            let mut r = self.registers.lock().unwrap();
            for (i, v) in values.iter().enumerate() {
                r[usize::from(register) + i] = *v;
            }
        }
    }

    impl RegisterBus for FakeChip {
        fn read_byte(&mut self, register: u8) -> std::io::Result<u8> {
            Ok(self.registers.lock().unwrap()[usize::from(register)])
        }
        fn write_byte(&mut self, register: u8, value: u8) -> std::io::Result<()> {
            self.writes.lock().unwrap().push((register, value));
            self.set(register, &[value]);
            Ok(())
        }
        fn read_block(&mut self, register: u8, len: u8) -> std::io::Result<Vec<u8>> {
            let r = self.registers.lock().unwrap();
            let start = usize::from(register);
            Ok(r[start..start + usize::from(len)].to_vec())
        }
    }

    fn words(values: [i16; 7]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_be_bytes()).collect()
    }

    #[test]
    fn other_chips_are_refused_by_name() {
        let config = Mpu6050Config::new("/dev/i2c-1", 0x68);
        let err = Mpu6050::with_bus(Box::new(FakeChip::with_who_am_i(0x71)), &config)
            .err()
            .expect("refused")
            .to_string();
        assert_eq!(
            err,
            "imu /dev/i2c-1@0x68: WHO_AM_I is 0x71: not an MPU-6050 (0x68) or MPU-6500 (0x70)"
        );
    }

    #[test]
    fn the_configured_ranges_rate_and_filter_are_programmed() {
        let chip = FakeChip::with_who_am_i(0x70);
        let config = Mpu6050Config {
            rate_hz: 200.0,
            accel_range_g: 8,
            gyro_range_dps: 1000,
            dlpf: 2,
            ..Mpu6050Config::new("/dev/i2c-1", 0x69)
        };
        let imu = Mpu6050::with_bus(Box::new(chip.clone()), &config).expect("set up");
        assert_eq!(imu.model(), Model::Mpu6500);
        let writes = chip.writes.lock().unwrap().clone();
        assert_eq!(
            writes,
            vec![
                (PWR_MGMT_1, 0x80),
                (PWR_MGMT_1, 0x01),
                (SMPLRT_DIV, 4),
                (CONFIG, 2),
                (GYRO_CONFIG, 2 << 3),
                (ACCEL_CONFIG, 2 << 3)
            ]
        );
    }

    /// Known raw values give the datasheet's SI values for ±2 g / ±250 °/s and ±16 g /
    /// ±2000 °/s; registers changed between reads change the next sample.
    #[test]
    fn raw_readings_become_si_units_for_the_range() {
        let chip = FakeChip::with_who_am_i(0x68);
        let mut imu = Mpu6050::with_bus(
            Box::new(chip.clone()),
            &Mpu6050Config::new("/dev/i2c-1", 0x68),
        )
        .expect("set up");
        chip.set(DATA, &words([16384, -8192, 0, 340, 131, -262, 0]));
        let s = imu.sample().expect("sample");
        let close = |a: f32, b: f32| (a - b).abs() < 1e-4;
        assert!(
            close(s.accel[0], 9.80665) && close(s.accel[1], -4.903325) && s.accel[2] == 0.0,
            "{s:?}"
        );
        let one_dps = std::f32::consts::PI / 180.0;
        assert!(
            close(s.gyro[0], one_dps) && close(s.gyro[1], -2.0 * one_dps),
            "{s:?}"
        );
        assert!(close(s.temp_c.unwrap(), 37.53), "{s:?}");

        chip.set(DATA, &words([2048, 0, 0, 0, 0, 0, 164]));
        let s2 = imu.sample().expect("sample");
        assert!(close(s2.accel[0], 0.125 * 9.80665), "{s2:?}");
        assert!(s2.t_us >= s.t_us);

        let wide = Mpu6050Config {
            accel_range_g: 16,
            gyro_range_dps: 2000,
            ..Mpu6050Config::new("/dev/i2c-1", 0x68)
        };
        let mut imu = Mpu6050::with_bus(Box::new(chip.clone()), &wide).expect("set up");
        chip.set(DATA, &words([2048, 0, 0, 0, 0, 0, 164]));
        let s = imu.sample().expect("sample");
        assert!(close(s.accel[0], 9.80665), "{s:?}");
        assert!((s.gyro[2] - 10.0 * one_dps).abs() < 1e-3, "{s:?}");
    }

    #[test]
    fn bad_settings_are_named() {
        let base = Mpu6050Config::new("/dev/i2c-1", 0x68);
        let cases = [
            (
                Mpu6050Config {
                    address: 0x50,
                    ..base.clone()
                },
                "address 0x50",
            ),
            (
                Mpu6050Config {
                    accel_range_g: 3,
                    ..base.clone()
                },
                "accel_range_g 3",
            ),
            (
                Mpu6050Config {
                    gyro_range_dps: 300,
                    ..base.clone()
                },
                "gyro_range_dps 300",
            ),
            (
                Mpu6050Config {
                    dlpf: 7,
                    ..base.clone()
                },
                "dlpf 7",
            ),
            (
                Mpu6050Config {
                    rate_hz: 5000.0,
                    ..base.clone()
                },
                "rate_hz 5000",
            ),
        ];
        for (config, needle) in cases {
            let err = config.validate().expect_err(needle);
            assert!(err.starts_with(needle), "{err}");
        }
    }
}
