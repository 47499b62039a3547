//! `logreplay`: list and replay a dm-log-writes log (see the library docs).
//!
//! ```text
//! logreplay info LOG
//! logreplay list LOG [--all] [--no-scan]
//! logreplay replay LOG TARGET (--to ENTRY | --to-mark NAME) [--from ENTRY] [--no-scan]
//! ```
//!
//! `list` prints one tab-separated line per entry: index, flags, sector,
//! nr_sectors, mark name (or `-`), and `past` for entries found past the
//! superblock's count. Without `--all` only flush, FUA and mark entries are
//! listed. `replay` writes entries `--from..=--to` (default from 0) onto TARGET
//! in place; TARGET must be a copy of the device as it was when logging began.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::process::ExitCode;

use logreplay::{find_mark, replay, Error, Flags, LogReader};

const USAGE: &str = "usage: logreplay info LOG | list LOG [--all] [--no-scan] | \
replay LOG TARGET (--to ENTRY | --to-mark NAME) [--from ENTRY] [--no-scan]";

enum Cmd {
    Info { log: String },
    List { log: String, all: bool, scan: bool },
    Replay(ReplayArgs),
}

struct ReplayArgs {
    log: String,
    target: String,
    to: Target,
    from: usize,
    scan: bool,
}

enum Target {
    Entry(usize),
    Mark(String),
}

fn parse(args: &[String]) -> Result<Cmd, String> {
    let mut pos = Vec::new();
    let mut all = false;
    let mut scan = true;
    let mut to = None;
    let mut from = 0usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--all" => all = true,
            "--no-scan" => scan = false,
            "--to" | "--to-mark" | "--from" => {
                let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
                let num = || {
                    v.parse::<usize>()
                        .map_err(|_| format!("{a}: not a number: {v}"))
                };
                match a.as_str() {
                    "--to" => to = Some(Target::Entry(num()?)),
                    "--to-mark" => to = Some(Target::Mark(v.clone())),
                    _ => from = num()?,
                }
            }
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            _ => pos.push(a.clone()),
        }
    }
    match (pos.first().map(String::as_str), pos.len()) {
        (Some("info"), 2) => Ok(Cmd::Info {
            log: pos[1].clone(),
        }),
        (Some("list"), 2) => Ok(Cmd::List {
            log: pos[1].clone(),
            all,
            scan,
        }),
        (Some("replay"), 3) => Ok(Cmd::Replay(ReplayArgs {
            log: pos[1].clone(),
            target: pos[2].clone(),
            to: to.ok_or("replay needs --to or --to-mark")?,
            from,
            scan,
        })),
        _ => Err(USAGE.to_owned()),
    }
}

fn open_log(path: &str) -> Result<LogReader<File>, Error> {
    LogReader::new(File::open(path)?)
}

fn run(cmd: Cmd) -> Result<(), Error> {
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    match cmd {
        Cmd::Info { log } => {
            let mut r = open_log(&log)?;
            let s = r.superblock();
            let e = r.entries(true)?;
            let count = |bits: u64| e.iter().filter(|x| x.flags.0 & bits != 0).count();
            writeln!(
                out,
                "version {}\nsectorsize {}\nnr_entries {}\nentries_found {}\npast_count {}\n\
                 flush {}\nfua {}\nmarks {}\ndiscards {}\ndata_bytes {}",
                s.version,
                s.sectorsize,
                s.nr_entries,
                e.len(),
                e.iter().filter(|x| x.past_count).count(),
                count(Flags::FLUSH),
                count(Flags::FUA),
                count(Flags::MARK),
                count(Flags::DISCARD),
                e.iter().map(|x| x.stored_len(s.sectorsize)).sum::<u64>(),
            )?;
        }
        Cmd::List { log, all, scan } => {
            let mut r = open_log(&log)?;
            for e in r.entries(scan)? {
                if all || e.flags.is_durability_point() || e.flags.has(Flags::MARK) {
                    writeln!(
                        out,
                        "{}\t{}\t{}\t{}\t{}{}",
                        e.index,
                        e.flags,
                        e.sector,
                        e.nr_sectors,
                        e.mark.as_deref().unwrap_or("-"),
                        if e.past_count { "\tpast" } else { "" }
                    )?;
                }
            }
        }
        Cmd::Replay(a) => {
            let size = std::fs::metadata(&a.target)?.len();
            let mut r = open_log(&a.log)?.with_device_size(size);
            let entries = r.entries(a.scan)?;
            let to = match &a.to {
                Target::Entry(i) => *i,
                Target::Mark(m) => find_mark(&entries, m)?,
            };
            let mut target = OpenOptions::new().write(true).open(&a.target)?;
            let n = replay(&mut r, &entries, a.from, to, &mut target)?;
            target.sync_all()?;
            writeln!(out, "replayed entries {}..={} ({n} writes)", a.from, to)?;
        }
    }
    out.flush()?;
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = match parse(&args) {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("logreplay: {msg}");
            return ExitCode::from(2);
        }
    };
    match run(cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("logreplay: {e}");
            ExitCode::FAILURE
        }
    }
}
