//! Button and outputs on the GPIO character device (gpiocdev, uAPI v2).

use std::time::Duration;

use gpiocdev::line::{EdgeDetection, EdgeKind, Value};
use gpiocdev::Request;

use super::{Bias, Button, ButtonEdge, Debouncer, GpioError, LineSpec, Output};
use crate::clock::monotonic_us;

const CONSUMER: &str = "grabd";

fn failed(line: &LineSpec, e: impl std::fmt::Display) -> GpioError {
    GpioError::Failed {
        line: line.to_string(),
        reason: e.to_string(),
    }
}

/// The record button: both edges, stamped by the kernel on CLOCK_MONOTONIC.
pub struct CdevButton {
    line: LineSpec,
    request: Request,
    /// Set when the kernel refused debounce: debounced here instead.
    software: Option<Debouncer>,
    last_seqno: Option<u32>,
}

impl CdevButton {
    pub fn open(
        line: &LineSpec,
        active_low: bool,
        bias: Bias,
        debounce: Duration,
    ) -> Result<Self, GpioError> {
        let (chip, offset) = line.locate()?;
        let build = |debounced: bool| {
            let mut b = Request::builder();
            b.on_chip(&chip)
                .with_consumer(CONSUMER)
                .with_line(offset)
                .as_input()
                .with_edge_detection(EdgeDetection::BothEdges);
            if active_low {
                b.as_active_low();
            }
            match bias {
                Bias::PullUp => {
                    b.with_bias(gpiocdev::line::Bias::PullUp);
                }
                Bias::PullDown => {
                    b.with_bias(gpiocdev::line::Bias::PullDown);
                }
                Bias::Disabled => {
                    b.with_bias(gpiocdev::line::Bias::Disabled);
                }
                Bias::AsIs => {}
            }
            if debounced && !debounce.is_zero() {
                b.with_debounce_period(debounce);
            }
            b.request()
        };
        let (request, software) = match build(true) {
            Ok(request) => (request, None),
            Err(e) if !debounce.is_zero() => {
                tracing::warn!(line = %line, error = %e, "kernel debounce refused; debouncing in software");
                let request = build(false).map_err(|e| failed(line, e))?;
                let pressed = request.lone_value().map_err(|e| failed(line, e))? == Value::Active;
                let period_us = i64::try_from(debounce.as_micros()).unwrap_or(i64::MAX);
                (request, Some(Debouncer::new(period_us, pressed)))
            }
            Err(e) => return Err(failed(line, e)),
        };
        Ok(CdevButton {
            line: line.clone(),
            request,
            software,
            last_seqno: None,
        })
    }

    fn pressed_now(&self) -> Result<bool, GpioError> {
        Ok(self
            .request
            .lone_value()
            .map_err(|e| failed(&self.line, e))?
            == Value::Active)
    }
}

impl Button for CdevButton {
    fn wait(&mut self, timeout: Duration) -> Result<Option<ButtonEdge>, GpioError> {
        let start = monotonic_us();
        let limit = start + i64::try_from(timeout.as_micros()).unwrap_or(i64::MAX);
        loop {
            let now = monotonic_us();
            if let Some(debouncer) = &mut self.software {
                if debouncer.settle_deadline_us().is_some_and(|due| now >= due) {
                    let level = self
                        .request
                        .lone_value()
                        .map_err(|e| failed(&self.line, e))?
                        == Value::Active;
                    if let Some(pressed) = debouncer.settle(level, now) {
                        return Ok(Some(ButtonEdge {
                            pressed,
                            at_us: now,
                        }));
                    }
                }
            }
            let wake = self
                .software
                .as_ref()
                .and_then(Debouncer::settle_deadline_us)
                .map_or(limit, |due| due.min(limit));
            let wait_us = u64::try_from(wake - now).unwrap_or(0);
            let ready = self
                .request
                .wait_edge_event(Duration::from_micros(wait_us))
                .map_err(|e| failed(&self.line, e))?;
            if !ready {
                if monotonic_us() >= limit {
                    return Ok(None);
                }
                continue;
            }
            let event = self
                .request
                .read_edge_event()
                .map_err(|e| failed(&self.line, e))?;
            let pressed = event.kind == EdgeKind::Rising;
            let at_us = i64::try_from(event.timestamp_ns / 1000).unwrap_or(i64::MAX);
            if let Some(last) = self.last_seqno.replace(event.line_seqno) {
                if event.line_seqno != last.wrapping_add(1) {
                    // The kernel's queue (16 events) overflowed: the edges between are
                    // gone, so report the level as it is now.
                    tracing::warn!(line = %self.line, lost = event.line_seqno.wrapping_sub(last) - 1, "button events lost");
                    let pressed = self.pressed_now()?;
                    return Ok(Some(ButtonEdge { pressed, at_us }));
                }
            }
            match &mut self.software {
                None => return Ok(Some(ButtonEdge { pressed, at_us })),
                Some(debouncer) => {
                    if let Some(pressed) = debouncer.edge(pressed, at_us) {
                        return Ok(Some(ButtonEdge { pressed, at_us }));
                    }
                }
            }
        }
    }

    fn describe(&self) -> String {
        format!(
            "button {} ({} debounce)",
            self.line,
            if self.software.is_some() {
                "software"
            } else {
                "kernel"
            }
        )
    }
}

/// An LED or an active buzzer: a line driven for the life of the process.
pub struct CdevOutput {
    line: LineSpec,
    request: Request,
}

impl CdevOutput {
    pub fn open(line: &LineSpec, active_low: bool) -> Result<Self, GpioError> {
        let (chip, offset) = line.locate()?;
        let mut b = Request::builder();
        b.on_chip(&chip)
            .with_consumer(CONSUMER)
            .with_line(offset)
            .as_output(Value::Inactive);
        if active_low {
            b.as_active_low();
        }
        let request = b.request().map_err(|e| failed(line, e))?;
        Ok(CdevOutput {
            line: line.clone(),
            request,
        })
    }
}

impl Output for CdevOutput {
    fn set(&mut self, on: bool) -> Result<(), GpioError> {
        let value = if on { Value::Active } else { Value::Inactive };
        self.request
            .set_lone_value(value)
            .map_err(|e| failed(&self.line, e))
    }

    fn describe(&self) -> String {
        format!("line {}", self.line)
    }
}
