//! The record button, the status LEDs and the buzzer.
//!
//! - [`Button`]: debounced edges stamped on CLOCK_MONOTONIC (the frames' clock).
//!   [`CdevButton`] reads a line of the GPIO character device through gpiocdev (both
//!   edges, kernel debounce, with [`Debouncer`] as the software fallback);
//!   [`FakeButton`] is driven by tests.
//! - [`Output`]: one on/off device held for the process's life: an LED or an active
//!   buzzer on a line ([`CdevOutput`]), a passive buzzer on a PWM channel
//!   ([`PwmBuzzer`]), or [`FakeOutput`].
//! - [`Indicator`]: the LED and beep patterns, on a thread of their own so that a
//!   pattern never delays the button or capture.
//! - [`LineSpec`]: how a line is named in the config ("GPIO24", or chip + offset);
//!   [`LineSpec::find`] says whether it exists ([`FoundLine`], for `grabd probe`).

mod cdev;
mod debounce;
mod fake;
mod indicator;
mod pwm;

pub use cdev::{CdevButton, CdevOutput};
pub use debounce::Debouncer;
pub use fake::{FakeButton, FakeOutput, FakeOutputLog};
pub use indicator::{beep_pattern, Indicator, Outputs, Pattern};
pub use pwm::PwmBuzzer;

use std::path::PathBuf;
use std::time::Duration;

/// Why a GPIO device could not be used. The message names the line.
#[derive(Debug, thiserror::Error)]
pub enum GpioError {
    #[error("GPIO line {line}: not found on any /dev/gpiochip*")]
    NotFound { line: String },
    #[error("GPIO line {line}: {reason}")]
    Failed { line: String, reason: String },
}

/// A line as the config names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(
    untagged,
    expecting = "a GPIO line: a name such as \"GPIO24\", or { chip = \"gpiochip0\", offset = 24 }"
)]
pub enum LineSpec {
    /// By line name, e.g. "GPIO24" on a Raspberry Pi (chips get renumbered; names
    /// do not).
    Named(String),
    /// By chip (a path, or a name like "gpiochip0") and offset.
    Offset { chip: String, offset: u32 },
}

impl std::fmt::Display for LineSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineSpec::Named(name) => write!(f, "{name:?}"),
            LineSpec::Offset { chip, offset } => write!(f, "{chip}:{offset}"),
        }
    }
}

impl LineSpec {
    /// The chip device and offset of the line.
    pub fn locate(&self) -> Result<(PathBuf, u32), GpioError> {
        match self {
            LineSpec::Named(name) => gpiocdev::find_named_line(name)
                .map(|found| (found.chip, found.info.offset))
                .ok_or_else(|| GpioError::NotFound {
                    line: self.to_string(),
                }),
            LineSpec::Offset { chip, offset } => {
                let path = if chip.starts_with('/') {
                    PathBuf::from(chip)
                } else {
                    PathBuf::from("/dev").join(chip)
                };
                Ok((path, *offset))
            }
        }
    }
}

/// Where a configured line is, and who holds it now (`grabd probe`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundLine {
    pub chip: PathBuf,
    pub offset: u32,
    /// The consumer that holds the line (a kernel driver, another program), if any.
    pub used_by: Option<String>,
}

impl LineSpec {
    /// Whether the line exists: by name on any chip, or the chip has that offset.
    /// Opens only the chip, never requests the line.
    pub fn find(&self) -> Result<FoundLine, GpioError> {
        let failed = |reason: String| GpioError::Failed {
            line: self.to_string(),
            reason,
        };
        let (chip, info) = match self {
            LineSpec::Named(name) => {
                let found = gpiocdev::find_named_line(name).ok_or_else(|| GpioError::NotFound {
                    line: self.to_string(),
                })?;
                (found.chip, found.info)
            }
            LineSpec::Offset { .. } => {
                let (path, offset) = self.locate()?;
                let chip = gpiocdev::Chip::from_path(&path)
                    .map_err(|e| failed(format!("{}: {e}", path.display())))?;
                let lines = chip
                    .info()
                    .map_err(|e| failed(format!("{}: {e}", path.display())))?
                    .num_lines;
                if offset >= lines {
                    return Err(failed(format!(
                        "{} has {lines} lines, offsets 0 to {}",
                        path.display(),
                        lines.saturating_sub(1)
                    )));
                }
                let info = chip
                    .line_info(offset)
                    .map_err(|e| failed(format!("{}: {e}", path.display())))?;
                (path, info)
            }
        };
        let used_by = info.used.then(|| match info.consumer.as_str() {
            "" => "(unnamed consumer)".to_string(),
            consumer => consumer.to_string(),
        });
        Ok(FoundLine {
            chip,
            offset: info.offset,
            used_by,
        })
    }
}

/// The line's pull resistor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bias {
    #[default]
    PullUp,
    PullDown,
    Disabled,
    /// Leave the line's bias as it is (set by the board's device tree).
    AsIs,
}

/// A debounced button edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ButtonEdge {
    pub pressed: bool,
    /// CLOCK_MONOTONIC µs ([`crate::clock::monotonic_us`]).
    pub at_us: i64,
}

/// The record button.
pub trait Button: Send {
    /// The next edge, or `None` when `timeout` passed without one.
    fn wait(&mut self, timeout: Duration) -> Result<Option<ButtonEdge>, GpioError>;
    /// What the button is, for logs and status.
    fn describe(&self) -> String;
}

/// An on/off device: an LED or a buzzer.
pub trait Output: Send {
    fn set(&mut self, on: bool) -> Result<(), GpioError>;
    fn describe(&self) -> String;
}
