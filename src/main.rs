//! The `grabd` command line. Everything it does lives in the library; this file only
//! parses flags, sets up logging and signals, prints results and maps errors to exit
//! codes (0 ok, 1 a check failed, 2 an error).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use grabd::config::{limits, Config};
use grabd::recording::{self, manifest};

#[derive(Parser)]
#[command(name = "grabd", version, about = "Press-button field recorder service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Record the configured sources (default: the built-in synthetic device) for a
    /// fixed time, then finish the final MKV and print its path.
    Record {
        /// TOML configuration (streams and recording settings).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Folder for in-progress chunks (the same card as --output is best).
        #[arg(long)]
        spool: PathBuf,
        /// Folder for finished recordings.
        #[arg(long)]
        output: PathBuf,
        /// Seconds to record (SIGINT/SIGTERM/SIGHUP stop earlier, cleanly).
        #[arg(long, value_parser = parse_duration)]
        duration: Duration,
        /// Chunk length in seconds (overrides the config).
        #[arg(long, value_parser = parse_chunk_length)]
        chunk_length: Option<Duration>,
    },
    /// Finish every recording cut off in the spool (boot recovery).
    Recover {
        #[arg(long)]
        spool: PathBuf,
        #[arg(long)]
        output: PathBuf,
    },
    /// Read a recording back: decode every packet, check its manifest; print JSON.
    Verify { file: PathBuf },
    /// Show what a recording holds, read back from the file: streams, timing, gaps and
    /// drops, IMU samples, marks and verify's verdict (exit 1 when it is not ok).
    Inspect {
        file: PathBuf,
        /// Also draw one picture of the recording into this PNG.
        #[arg(long)]
        png: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The service a recorder boots into: boot recovery, then the button, LEDs and
    /// buzzer of `[device]`, the control socket, and systemd readiness and watchdog.
    Run {
        #[arg(long, default_value = "/etc/grabd/grabd.toml")]
        config: PathBuf,
    },
    /// Talk to a running `grabd run` through its control socket; prints its JSON reply.
    Ctl {
        #[arg(value_parser = clap::builder::PossibleValuesParser::new(grabd::runtime::control::Request::NAMES))]
        request: String,
        #[arg(long, default_value = grabd::config::DEFAULT_CONTROL_SOCKET)]
        socket: PathBuf,
    },
    /// Export a finished recording for SLAM and calibration tools: `euroc` (ORB-SLAM3,
    /// Kalibr, OpenVINS, basalt), `tum` (TUM RGB-D), `frames` (PNG/JPEG per frame + CSV) or
    /// `mcap` (Foxglove), into a new folder (written as OUT.tmp, renamed when complete).
    Export {
        file: PathBuf,
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(grabd::export::Format::NAMES))]
        format: String,
        /// The folder to create (it must not exist).
        #[arg(long)]
        out: PathBuf,
        /// Media time in seconds of the first frame or sample exported.
        #[arg(long)]
        start: Option<f64>,
        /// Media time in seconds to stop at (exclusive).
        #[arg(long)]
        end: Option<f64>,
        /// Streams to export, comma-separated (default: every one the format holds).
        #[arg(long, value_delimiter = ',')]
        streams: Option<Vec<String>>,
        /// The cameras' images of `frames`: png, or jpeg (smaller, lossy; depth stays
        /// 16-bit PNG). The other formats take PNG only.
        #[arg(long, default_value = "png", value_parser = clap::builder::PossibleValuesParser::new(grabd::export::ImageFormat::NAMES))]
        image_format: String,
    },
    /// List cameras, M2M encoders, IMUs, GPIO chips and storage, and what the config
    /// would record; exit 0 when it can record, 1 when it cannot.
    Probe {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Folders whose storage to test (1 MiB write + fsync).
        #[arg(long)]
        spool: Option<PathBuf>,
        #[arg(long)]
        output: Option<PathBuf>,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// `println!` that never panics: a closed stdout (`grabd record … | true`) is not an
/// error of the recording, so what cannot be printed is dropped.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Seconds as given on the command line; the limits are the config's ([`limits`]).
fn seconds(s: &str) -> Result<f64, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    limits::DURATION_S.seconds(seconds(s)?)
}

fn parse_chunk_length(s: &str) -> Result<Duration, String> {
    grabd::config::chunk_length(seconds(s)?)
}

/// Print a command-line mistake so that its first line names it (clap lists missing
/// arguments on the lines after its first), then clap's usage block; help and version
/// go to stdout with exit 0.
fn refuse_command_line(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            eprintln!("grabd: no command given");
            let _ = e.print();
            return ExitCode::from(2);
        }
        _ => {}
    }
    let text = e.render().to_string();
    let mut paragraphs = text.trim().splitn(2, "\n\n");
    let first = paragraphs.next().unwrap_or_default();
    // "error: the following required arguments were not provided:\n  --spool <SPOOL>"
    // becomes one line.
    let first: Vec<&str> = first.lines().map(str::trim).collect();
    let first = first.join(" ");
    eprintln!("grabd: {}", first.strip_prefix("error: ").unwrap_or(&first));
    if let Some(rest) = paragraphs.next() {
        eprintln!("\n{rest}");
    }
    ExitCode::from(2)
}

fn main() -> ExitCode {
    init_logging();
    grabd::runtime::process::keep_heap_flat();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return refuse_command_line(e),
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // One line: the error and its causes.
            let chain: Vec<String> = e.chain().map(ToString::to_string).collect();
            eprintln!("grabd: {}", chain.join(": "));
            ExitCode::from(2)
        }
    }
}

fn init_logging() {
    use tracing_subscriber::{fmt, EnvFilter};
    let filter = EnvFilter::try_from_env("GRABD_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    // Under systemd (stderr already goes to the journal: JOURNAL_STREAM) the journal
    // takes the events with their fields (recording id, stream); elsewhere stderr.
    if grabd::runtime::systemd::journal_available() && std::env::var_os("JOURNAL_STREAM").is_some()
    {
        use tracing_subscriber::layer::SubscriberExt;
        if let Ok(journald) = tracing_journald::layer() {
            let subscriber = tracing_subscriber::registry().with(filter).with(journald);
            let _ = tracing::subscriber::set_global_default(subscriber);
            return;
        }
    }
    // Colours only for a person at a terminal, never in logs or the journal.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .init();
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Record {
            config,
            spool,
            output,
            duration,
            chunk_length,
        } => {
            let mut config = match &config {
                Some(path) => Config::load(path)?,
                None => Config::default_synthetic()?,
            };
            if let Some(length) = chunk_length {
                config.writer.chunk_length = length;
            }
            let stop = Arc::new(AtomicBool::new(false));
            // SIGHUP too: an SSH session that drops must leave a finished file.
            for signal in [
                signal_hook::consts::SIGINT,
                signal_hook::consts::SIGTERM,
                signal_hook::consts::SIGHUP,
            ] {
                signal_hook::flag::register(signal, Arc::clone(&stop))
                    .context("installing signal handlers")?;
            }
            let outcome = grabd::runtime::record(&config, &spool, &output, Some(duration), &stop)
                .context("record")?;
            for e in &outcome.errors {
                eprintln!("grabd: warning: {e}");
            }
            let failure = outcome.failure();
            match (&outcome.finished, &outcome.reason, failure) {
                (Some(finished), grabd::runtime::StopReason::StorageFull, None) => {
                    eprintln!(
                        "grabd: storage nearly full: stopped early and finished the recording"
                    );
                    say!("{}", finished.mkv.display());
                    Ok(ExitCode::from(2))
                }
                (Some(finished), _, Some(why)) => {
                    eprintln!("grabd: {why}: stopped and finished the recording");
                    say!("{}", finished.mkv.display());
                    Ok(ExitCode::from(2))
                }
                (Some(finished), _, None) => {
                    say!("{}", finished.mkv.display());
                    Ok(ExitCode::SUCCESS)
                }
                (None, _, Some(why)) => {
                    eprintln!("grabd: {why}; no frame was recorded, nothing written");
                    Ok(ExitCode::from(2))
                }
                (None, _, None) => {
                    eprintln!("grabd: no frame was recorded; nothing written");
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        Command::Recover { spool, output } => {
            match std::fs::metadata(&spool) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    eprintln!(
                        "grabd: {}: no spool there, nothing to recover",
                        spool.display()
                    );
                    return Ok(ExitCode::SUCCESS);
                }
                Ok(m) if !m.is_dir() => {
                    anyhow::bail!("recover: spool {} is not a folder", spool.display())
                }
                _ => {}
            }
            let report =
                recording::recover_spool(&spool, &output, Default::default()).context("recover")?;
            for finished in &report.recovered {
                say!("{}", finished.mkv.display());
            }
            if report.failed.is_empty() {
                Ok(ExitCode::SUCCESS)
            } else {
                for (dir, why) in &report.failed {
                    eprintln!("grabd: could not recover {}: {why}", dir.display());
                }
                Ok(ExitCode::from(2))
            }
        }
        Command::Run { config } => {
            let config = Config::load(&config)?;
            let stop = Arc::new(AtomicBool::new(false));
            for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                signal_hook::flag::register(signal, Arc::clone(&stop))
                    .context("installing signal handlers")?;
            }
            let devices = grabd::runtime::service::Devices::open(&config.device);
            grabd::runtime::service::run(&config, devices, &stop).context("run")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ctl { request, socket } => {
            let reply = grabd::runtime::control::request(&socket, &request)
                .with_context(|| format!("control socket {}", socket.display()))?;
            println!("{reply}");
            Ok(if reply["ok"] == true {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Probe {
            config,
            spool,
            output,
            json,
        } => {
            let config = match &config {
                Some(path) => Config::load(path)?,
                None => Config::default_synthetic()?,
            };
            let dirs: Vec<PathBuf> = spool.into_iter().chain(output).collect();
            let report = grabd::runtime::probe::probe(&config, &dirs);
            if json {
                say!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                say!("{}", report.human().trim_end());
            }
            Ok(if report.can_record {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Inspect { file, png, json } => {
            let report = grabd::inspect::read(&file).context("inspect")?;
            if let Some(png) = &png {
                grabd::inspect::draw(&report, png).context("inspect")?;
            }
            if json {
                say!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                say!("{}", report.table().trim_end());
            }
            Ok(if report.verdict.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Export {
            file,
            format,
            out,
            start,
            end,
            streams,
            image_format,
        } => {
            let format: grabd::export::Format = format.parse().map_err(anyhow::Error::msg)?;
            let image: grabd::export::ImageFormat =
                image_format.parse().map_err(anyhow::Error::msg)?;
            let selection = grabd::export::Selection::from_seconds(start, end, streams)?;
            let mut progress = grabd::export::Progress::on_terminal();
            let report =
                grabd::export::export(&file, format, image, &out, &selection, &mut progress)
                    .with_context(|| format!("export {}", file.display()))?;
            for stream in &report.skipped {
                eprintln!("grabd: {format} has no place for stream {stream:?}: left out");
            }
            say!("{}", report.out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { file } => {
            let verdict = manifest::verdict(&file, None).context("verify")?;
            let ok = verdict.ok;
            let mut report = serde_json::to_value(&verdict)?;
            report["origin_unix_us"] = serde_json::json!(verdict.summary.origin_unix_us);
            report["streams"] = verdict
                .summary
                .tracks
                .iter()
                .map(|t| {
                    serde_json::json!({
                        "name": t.name,
                        "kind": t.kind,
                        "packets": t.packets,
                        "frames_decoded": t.frames_decoded,
                        "first_pts_us": t.first_pts_us,
                        "last_pts_us": t.last_pts_us,
                    })
                })
                .collect();
            say!("{report}");
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
