//! grabd: the firmware service of a press-button field recorder.
//!
//! Data flows one way: sources ([`capture`], [`sensors`]) → bounded queues →
//! per-stream encoders → chunked writer → finalizer → final MKV ([`recording`]).
//! [`gpio`] is the button, LEDs and buzzer. [`runtime`] runs a session (sources,
//! storage guard, signals) and the `grabd run` service; [`config`] turns TOML
//! into validated stream sets. [`inspect`] reads a finished recording back for a
//! person (table, JSON, picture); [`export`] takes it into EuRoC, TUM RGB-D, plain
//! frames or MCAP.

pub mod capture;
pub mod clock;
pub mod config;
pub mod export;
pub mod gpio;
pub mod inspect;
pub mod recording;
pub mod runtime;
pub mod sensors;
pub mod thread;
