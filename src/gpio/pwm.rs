//! A passive buzzer on a PWM channel (`/sys/class/pwm`): on = the tone plays.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{GpioError, Output};

pub struct PwmBuzzer {
    channel_dir: PathBuf,
}

fn write(path: &Path, value: &str) -> Result<(), GpioError> {
    std::fs::write(path, value).map_err(|e| GpioError::Failed {
        line: path.display().to_string(),
        reason: e.to_string(),
    })
}

impl PwmBuzzer {
    /// Export `channel` of `/sys/class/pwm/pwmchip<chip>` and set a square wave of
    /// `hz` at `duty` (0..1; the reference drives its buzzer at 2 kHz, 10 %).
    pub fn open(chip: u32, channel: u32, hz: f64, duty: f64) -> Result<Self, GpioError> {
        Self::open_in(Path::new("/sys/class/pwm"), chip, channel, hz, duty)
    }

    fn open_in(
        root: &Path,
        chip: u32,
        channel: u32,
        hz: f64,
        duty: f64,
    ) -> Result<Self, GpioError> {
        let chip_dir = root.join(format!("pwmchip{chip}"));
        let channel_dir = chip_dir.join(format!("pwm{channel}"));
        if !channel_dir.exists() {
            write(&chip_dir.join("export"), &channel.to_string())?;
            // udev may still be fixing the new files' permissions.
            let deadline = Instant::now() + Duration::from_secs(1);
            while !channel_dir.join("enable").exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let period_ns = (1e9 / hz).round() as u64;
        let duty_ns = (period_ns as f64 * duty.clamp(0.0, 1.0)).round() as u64;
        write(&channel_dir.join("enable"), "0")?;
        // A duty cycle longer than the old period is refused: set it to 0 first.
        write(&channel_dir.join("duty_cycle"), "0")?;
        write(&channel_dir.join("period"), &period_ns.to_string())?;
        write(&channel_dir.join("duty_cycle"), &duty_ns.to_string())?;
        Ok(PwmBuzzer { channel_dir })
    }
}

impl Output for PwmBuzzer {
    fn set(&mut self, on: bool) -> Result<(), GpioError> {
        write(&self.channel_dir.join("enable"), if on { "1" } else { "0" })
    }

    fn describe(&self) -> String {
        format!("PWM {}", self.channel_dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exports_the_channel_and_sets_a_2khz_tone() {
        let root = tempfile::tempdir().unwrap();
        let chip = root.path().join("pwmchip0");
        let channel = chip.join("pwm1");
        std::fs::create_dir_all(&channel).unwrap();
        for f in ["enable", "period", "duty_cycle"] {
            std::fs::write(channel.join(f), "0").unwrap();
        }
        let mut b = PwmBuzzer::open_in(root.path(), 0, 1, 2000.0, 0.1).unwrap();
        let read = |f: &str| std::fs::read_to_string(channel.join(f)).unwrap();
        assert_eq!(read("period"), "500000");
        assert_eq!(read("duty_cycle"), "50000");
        b.set(true).unwrap();
        assert_eq!(read("enable"), "1");
        b.set(false).unwrap();
        assert_eq!(read("enable"), "0");
        let err = PwmBuzzer::open_in(root.path(), 3, 0, 2000.0, 0.1)
            .err()
            .unwrap();
        assert!(err.to_string().contains("pwmchip3"), "{err}");
    }
}
