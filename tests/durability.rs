//! Durability (issue 2): the fsync / rename / directory-fsync order is asserted on the
//! system calls grabd really makes (strace), not assumed; and `recording::durable`, the
//! one module every durable write goes through, is checked through its API.
//!
//! The protocol, for every file that must survive a power cut: write `X.tmp`, fsync it
//! after its last write, rename it to `X`, fsync `X`'s directory. Every create, rename
//! and delete that matters is followed by an fsync of the directory holding it; nothing
//! is deleted before what replaces it is durable.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::cli::{wait_new_dir, Rig, BIN};
use grabd::recording::durable;

const TRACED: &str = "openat,creat,mkdir,mkdirat,rmdir,fsync,fdatasync,rename,renameat,renameat2,\
                      unlink,unlinkat,write,pwrite64,writev,pwritev";

// ---------------------------------------------------------------------------------------
// strace log model

/// One completed system call.
#[derive(Debug, Clone)]
struct Call {
    tid: u32,
    name: String,
    args: String,
    /// The return value's leading integer (-1 on failure).
    ret: i64,
    /// Log line where the call began and where it returned.
    start: usize,
    end: usize,
}

impl Call {
    fn ok(&self) -> bool {
        self.ret >= 0
    }
}

fn parse_ret(ret: &str) -> i64 {
    let ret = ret.trim();
    let end = ret
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || (i == 0 && c == '-')))
        .map_or(ret.len(), |(i, _)| i);
    ret[..end].parse().unwrap_or(-1)
}

/// Parse `strace -f -y -o LOG` output (a thread id before each line; calls interrupted
/// by another thread show as `<unfinished ...>` and `<... name resumed>`).
fn parse_strace(text: &str) -> Vec<Call> {
    let mut calls = Vec::new();
    let mut pending: BTreeMap<u32, (String, String, usize)> = BTreeMap::new();
    for (line_no, line) in text.lines().enumerate() {
        let Some((tid, rest)) = line.split_once(' ') else {
            continue;
        };
        let Ok(tid) = tid.trim().parse::<u32>() else {
            continue;
        };
        let rest = rest.trim_start();
        if rest.starts_with("+++") || rest.starts_with("---") {
            continue;
        }
        let (name, body, start) = if let Some(resumed) = rest.strip_prefix("<... ") {
            let Some((name, after)) = resumed.split_once(" resumed>") else {
                continue;
            };
            let Some((pname, head, start)) = pending.remove(&tid) else {
                continue;
            };
            debug_assert_eq!(pname, name);
            (pname, format!("{head}{after}"), start)
        } else if let Some(head) = rest.strip_suffix("<unfinished ...>") {
            let Some((name, args)) = head.split_once('(') else {
                continue;
            };
            pending.insert(tid, (name.to_owned(), args.trim_end().to_owned(), line_no));
            continue;
        } else {
            let Some((name, args)) = rest.split_once('(') else {
                continue;
            };
            (name.to_owned(), args.to_owned(), line_no)
        };
        let Some((args, ret)) = body.rsplit_once(" = ") else {
            continue;
        };
        let args = args.trim_end();
        let args = args.strip_suffix(')').unwrap_or(args).to_owned();
        calls.push(Call {
            tid,
            name,
            args,
            ret: parse_ret(ret),
            start,
            end: line_no,
        });
    }
    calls
}

/// The path strace -y shows for the file-descriptor argument that starts `arg`.
fn fd_path(arg: &str) -> Option<PathBuf> {
    let open = arg.find('<')?;
    let close = arg[open..].find('>')? + open;
    Some(PathBuf::from(&arg[open + 1..close]))
}

/// The quoted strings among a call's arguments, in order.
fn quoted(args: &str) -> Vec<String> {
    args.split('"')
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, s)| s.to_owned())
        .collect()
}

/// `name` relative to the directory fd argument `dirfd` (or absolute).
fn resolve(dirfd: &str, name: &str) -> PathBuf {
    if name.starts_with('/') {
        PathBuf::from(name)
    } else {
        fd_path(dirfd).unwrap_or_default().join(name)
    }
}

/// What a call did to the file system, in the terms the protocol talks about.
#[derive(Debug, Clone, PartialEq)]
enum Op {
    Create(PathBuf),
    Write(PathBuf),
    Sync(PathBuf),
    Rename(PathBuf, PathBuf),
    Unlink(PathBuf),
    Rmdir(PathBuf),
    Mkdir(PathBuf),
}

#[derive(Debug, Clone)]
struct Event {
    call: Call,
    op: Op,
}

fn events(calls: &[Call]) -> Vec<Event> {
    let mut out = Vec::new();
    for call in calls.iter().filter(|c| c.ok()) {
        let args: Vec<&str> = call.args.split(", ").collect();
        let q = quoted(&call.args);
        let op = match call.name.as_str() {
            "openat" if call.args.contains("O_CREAT") && q.len() == 1 => {
                Some(Op::Create(resolve(args[0], &q[0])))
            }
            "creat" if q.len() == 1 => Some(Op::Create(PathBuf::from(&q[0]))),
            "write" | "pwrite64" | "writev" | "pwritev" => fd_path(args[0]).map(Op::Write),
            "fsync" | "fdatasync" => fd_path(args[0]).map(Op::Sync),
            "rename" if q.len() == 2 => {
                Some(Op::Rename(PathBuf::from(&q[0]), PathBuf::from(&q[1])))
            }
            "renameat" | "renameat2" if q.len() == 2 && args.len() >= 4 => {
                Some(Op::Rename(resolve(args[0], &q[0]), resolve(args[2], &q[1])))
            }
            "unlink" if q.len() == 1 => Some(Op::Unlink(PathBuf::from(&q[0]))),
            "unlinkat" if q.len() == 1 => {
                let path = resolve(args[0], &q[0]);
                Some(if call.args.contains("AT_REMOVEDIR") {
                    Op::Rmdir(path)
                } else {
                    Op::Unlink(path)
                })
            }
            "rmdir" if q.len() == 1 => Some(Op::Rmdir(PathBuf::from(&q[0]))),
            "mkdir" if q.len() == 1 => Some(Op::Mkdir(PathBuf::from(&q[0]))),
            "mkdirat" if q.len() == 1 => Some(Op::Mkdir(resolve(args[0], &q[0]))),
            _ => None,
        };
        if let Some(op) = op {
            out.push(Event {
                call: call.clone(),
                op,
            });
        }
    }
    out
}

fn parent(path: &Path) -> PathBuf {
    path.parent().map(Path::to_owned).unwrap_or_default()
}

fn name_of(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A traced run's events, with the checks of the durability protocol.
struct Trace {
    events: Vec<Event>,
    /// Only paths under here are held to the protocol.
    roots: Vec<PathBuf>,
}

impl Trace {
    fn load(log: &Path, roots: &[&Path]) -> Trace {
        let text = fs::read_to_string(log).expect("read strace log");
        Trace {
            events: events(&parse_strace(&text)),
            roots: roots.iter().map(|r| r.to_path_buf()).collect(),
        }
    }

    fn ours(&self, path: &Path) -> bool {
        self.roots.iter().any(|r| path.starts_with(r))
    }

    /// A successful fsync of `dir` that starts after line `after` on thread `tid`.
    fn dir_synced_after(&self, dir: &Path, after: usize, tid: u32) -> Option<&Event> {
        self.events
            .iter()
            .find(|e| e.call.tid == tid && e.call.start > after && e.op == Op::Sync(dir.to_owned()))
    }

    fn renames(&self) -> impl Iterator<Item = (&Event, &PathBuf, &PathBuf)> {
        self.events.iter().filter_map(|e| match &e.op {
            Op::Rename(from, to) if self.ours(to) => Some((e, from, to)),
            _ => None,
        })
    }

    /// The rename that gave `dest` its name, and the directory fsync that made it durable.
    fn persisted(&self, dest: &Path) -> Option<(&Event, &Event)> {
        let (rename, _, _) = self.renames().find(|(_, _, to)| to.as_path() == dest)?;
        let sync = self.dir_synced_after(&parent(dest), rename.call.end, rename.call.tid)?;
        Some((rename, sync))
    }

    /// Every violation of the protocol in the trace.
    fn violations(&self) -> Vec<String> {
        let mut bad = Vec::new();
        for (rename, from, to) in self.renames() {
            if from.as_os_str() != durable::tmp_path(to).as_os_str() {
                bad.push(format!(
                    "{to:?} was renamed from {from:?}, not from its .tmp"
                ));
            }
            // fsync of the temporary file after its last write, before the rename.
            let last_write = self
                .events
                .iter()
                .filter(|e| e.call.end < rename.call.start && e.op == Op::Write(from.clone()))
                .map(|e| e.call.end)
                .max();
            let synced = self.events.iter().any(|e| {
                e.op == Op::Sync(from.clone())
                    && e.call.end < rename.call.start
                    && last_write.map_or(true, |w| e.call.start > w)
            });
            if !synced {
                bad.push(format!(
                    "{from:?} was not fsynced after its last write before its rename to {to:?}"
                ));
            }
            if self
                .dir_synced_after(&parent(to), rename.call.end, rename.call.tid)
                .is_none()
            {
                bad.push(format!(
                    "no fsync of {:?} after renaming {to:?} into it",
                    parent(to)
                ));
            }
        }
        for e in &self.events {
            match &e.op {
                Op::Unlink(path) if self.ours(path) => {
                    let dir = parent(path);
                    let direct = self
                        .dir_synced_after(&dir, e.call.end, e.call.tid)
                        .is_some();
                    // Inside a tree removed at once: the folder goes too, and its parent
                    // is synced after that.
                    let via_tree = self.events.iter().any(|r| {
                        r.call.tid == e.call.tid
                            && r.call.start > e.call.end
                            && r.op == Op::Rmdir(dir.clone())
                            && self
                                .dir_synced_after(&parent(&dir), r.call.end, r.call.tid)
                                .is_some()
                    });
                    if !direct && !via_tree {
                        bad.push(format!("no directory fsync after deleting {path:?}"));
                    }
                }
                Op::Rmdir(path) | Op::Mkdir(path)
                    if self.ours(path)
                        && self
                            .dir_synced_after(&parent(path), e.call.end, e.call.tid)
                            .is_none() =>
                {
                    bad.push(format!("no fsync of {:?} after {:?}", parent(path), e.op));
                }
                _ => {}
            }
        }
        bad
    }

    fn unlinks(&self) -> impl Iterator<Item = (&Event, &PathBuf)> {
        self.events.iter().filter_map(|e| match &e.op {
            Op::Unlink(p) if self.ours(p) => Some((e, p)),
            _ => None,
        })
    }

    /// Parts are deleted only after their chunk is durable.
    fn parts_outlive_their_chunk(&self) -> Vec<String> {
        let mut bad = Vec::new();
        for (e, path) in self.unlinks() {
            let name = name_of(path);
            let Some(stem) = name.strip_suffix(".mkv.part") else {
                continue;
            };
            let chunk_id = stem.split('.').next().unwrap_or(stem);
            let chunk = parent(path).join(format!("{chunk_id}.mkv"));
            match self.persisted(&chunk) {
                Some((_, sync)) if sync.call.end < e.call.start => {}
                _ => bad.push(format!(
                    "{path:?} deleted before {chunk:?} was renamed and its directory fsynced"
                )),
            }
        }
        bad
    }
}

fn strace_works() -> Result<bool, String> {
    let probe = |extra: &[&str]| {
        Command::new("strace")
            .args(extra)
            .args(["-f", "-o", "/dev/null", "true"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
    };
    match probe(&[]) {
        Ok(out) if out.status.success() => {}
        Ok(out) => return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned()),
        Err(e) => return Err(format!("strace: {e}")),
    }
    Ok(probe(&["--seccomp-bpf"]).is_ok_and(|o| o.status.success()))
}

/// `strace` prefix for a grabd command. A missing or unusable strace fails the test
/// (scripts/deps installs it): a durability test that cannot trace must not pass.
fn strace_command(log: &Path) -> Command {
    let seccomp = strace_works()
        .unwrap_or_else(|why| panic!("strace cannot trace here ({why}); scripts/deps installs it"));
    let mut cmd = Command::new("strace");
    if seccomp {
        cmd.arg("--seccomp-bpf");
    }
    cmd.args(["-f", "-y", "-e"])
        .arg(format!("trace={TRACED}"))
        .arg("-o")
        .arg(log)
        .arg(BIN);
    cmd
}

fn report(bad: &[String]) -> String {
    bad.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
}

// ---------------------------------------------------------------------------------------
// Traced runs

/// A 2.5 s recording with 1 s chunks, traced: session.json (twice), chunks 00000–00002,
/// the final MKV and its manifest all follow the protocol, parts and chunks are
/// deleted only once what holds their packets is durable, and open parts get fsynced.
#[test]
fn record_follows_the_durability_protocol() {
    let rig = Rig::new();
    let log = rig.root.join("record.strace");
    let mut cmd = strace_command(&log);
    rig.record_args(&mut cmd, "2.5");
    let out = cmd.output().expect("run strace grabd record");
    assert!(
        out.status.success(),
        "traced record failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mkv = PathBuf::from(stdout.lines().last().expect("final path"));
    let id = mkv.file_stem().unwrap().to_string_lossy().into_owned();
    let dir = rig.spool.join(&id);
    let manifest = rig.output.join(format!("{id}.json"));

    let trace = Trace::load(&log, &[&rig.spool, &rig.output]);
    let bad = trace.violations();
    assert!(bad.is_empty(), "protocol violations:\n{}", report(&bad));
    let bad = trace.parts_outlive_their_chunk();
    assert!(bad.is_empty(), "{}", report(&bad));

    // Every file that must survive went through the protocol.
    let renamed: Vec<String> = trace.renames().map(|(_, _, to)| name_of(to)).collect();
    let count = |n: &str| renamed.iter().filter(|r| *r == n).count();
    assert!(count("session.json") >= 2, "session.json: {renamed:?}");
    let mut chunks: Vec<&String> = renamed
        .iter()
        .filter(|n| n.len() == 9 && n.ends_with(".mkv"))
        .collect();
    chunks.sort();
    assert_eq!(
        chunks,
        ["00000.mkv", "00001.mkv", "00002.mkv"],
        "{renamed:?}"
    );
    assert_eq!(count(&format!("{id}.mkv")), 1, "{renamed:?}");
    assert_eq!(count(&format!("{id}.json")), 1, "{renamed:?}");

    // The recording folder's own creation is durable.
    assert!(
        trace.events.iter().any(|e| e.op == Op::Mkdir(dir.clone())),
        "no mkdir of {dir:?}"
    );

    // Order of the stop: final file durable, then manifest durable, then (only then)
    // the chunks that hold the same packets go.
    let (_, final_sync) = trace.persisted(&mkv).expect("final file persisted");
    let (manifest_rename, manifest_sync) = trace.persisted(&manifest).expect("manifest persisted");
    assert!(final_sync.call.end < manifest_rename.call.start);
    let chunk_deletes: Vec<&Event> = trace
        .unlinks()
        .filter(|(_, p)| parent(p) == dir && name_of(p).len() == 9 && name_of(p).ends_with(".mkv"))
        .map(|(e, _)| e)
        .collect();
    assert_eq!(chunk_deletes.len(), 3, "chunks deleted: {chunk_deletes:?}");
    for e in &chunk_deletes {
        assert!(
            e.call.start > manifest_sync.call.end,
            "a chunk was deleted before the manifest was durable: {e:?}"
        );
    }
    assert!(
        trace.events.iter().any(|e| e.op == Op::Rmdir(dir.clone())),
        "the spool folder was not removed"
    );

    // Open parts are fsynced while they grow (chunks 0 and 1 each lived a full second,
    // two sync intervals).
    for chunk in ["00000", "00001"] {
        for stream in ["rgb", "depth", "imu"] {
            let part = dir.join(format!("{chunk}.{stream}.mkv.part"));
            assert!(
                trace.events.iter().any(|e| e.op == Op::Sync(part.clone())),
                "{part:?} was never fsynced while open"
            );
            let created = trace
                .events
                .iter()
                .find(|e| e.op == Op::Create(part.clone()))
                .expect("part created");
            assert!(
                trace
                    .events
                    .iter()
                    .any(|e| e.call.start > created.call.end && e.op == Op::Sync(dir.clone())),
                "no fsync of the folder after creating {part:?}"
            );
        }
    }
    let n_sync = trace
        .events
        .iter()
        .filter(|e| matches!(e.op, Op::Sync(_)))
        .count();
    eprintln!(
        "traced record: {} events, {n_sync} fsyncs, {} renames, all in order",
        trace.events.len(),
        renamed.len()
    );
}

/// Recovery of a recorder killed mid-chunk, traced: stale temporary files are deleted
/// durably, the salvaged chunk is durable before its parts go, the final file before
/// its manifest, the manifest before the spool folder.
#[test]
fn recover_follows_the_durability_protocol() {
    let rig = Rig::new();
    let log = rig.root.join("recover.strace");
    let mut traced = strace_command(&log);
    let mut cmd = Command::new(BIN);
    rig.record_args(&mut cmd, "60");
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (dir, t0) = wait_new_dir(&rig.spool, &[], &mut child);
    let at = t0 + Duration::from_millis(1700);
    std::thread::sleep(at.saturating_duration_since(Instant::now()));
    child.kill().unwrap();
    child.wait().unwrap();
    let id = dir.file_name().unwrap().to_string_lossy().into_owned();
    let stale = dir.join("00042.mkv.tmp");
    fs::write(&stale, b"never finished").unwrap();
    let parts: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| name_of(p).ends_with(".mkv.part"))
        .collect();
    assert!(!parts.is_empty(), "no part in progress at the kill");

    traced
        .arg("recover")
        .arg("--spool")
        .arg(&rig.spool)
        .arg("--output")
        .arg(&rig.output)
        .env_remove("GRABD_LOG");
    let out = traced.output().expect("run strace grabd recover");
    assert!(
        out.status.success(),
        "traced recover failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mkv = rig.output.join(format!("{id}.mkv"));
    let manifest = rig.output.join(format!("{id}.json"));
    assert!(mkv.is_file() && manifest.is_file());

    let trace = Trace::load(&log, &[&rig.spool, &rig.output]);
    let bad = trace.violations();
    assert!(bad.is_empty(), "protocol violations:\n{}", report(&bad));
    let bad = trace.parts_outlive_their_chunk();
    assert!(bad.is_empty(), "{}", report(&bad));

    assert!(
        trace.unlinks().any(|(_, p)| *p == stale),
        "stale {stale:?} not deleted"
    );
    for part in &parts {
        assert!(
            trace.unlinks().any(|(_, p)| p == part),
            "{part:?} not deleted after salvage"
        );
    }
    let (_, final_sync) = trace.persisted(&mkv).expect("final file persisted");
    let (manifest_rename, manifest_sync) = trace.persisted(&manifest).expect("manifest persisted");
    assert!(
        final_sync.call.end < manifest_rename.call.start,
        "manifest before the final file was durable"
    );
    let first_cleanup = trace
        .unlinks()
        .filter(|(_, p)| parent(p) == dir && name_of(p).ends_with(".mkv"))
        .map(|(e, _)| e.call.start)
        .min()
        .expect("chunks removed");
    assert!(
        first_cleanup > manifest_sync.call.end,
        "chunks removed before the manifest was durable"
    );
    assert!(
        trace.events.iter().any(|e| e.op == Op::Rmdir(dir.clone())),
        "spool folder not removed"
    );
}

/// The parser itself, on lines strace 6 writes.
#[test]
fn strace_parser_reads_interleaved_threads() {
    let log = "\
10 openat(AT_FDCWD</w>, \"/w/s/a.tmp\", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0666) = 3</w/s/a.tmp>
10 write(3</w/s/a.tmp>, \"x, y\"..., 4) = 4
11 fsync(5</w/s/b.part> <unfinished ...>
10 fsync(3</w/s/a.tmp>) = 0
11 <... fsync resumed>) = 0
10 rename(\"/w/s/a.tmp\", \"/w/s/a\") = 0
10 openat(AT_FDCWD</w>, \"/w/s\", O_RDONLY|O_CLOEXEC) = 4</w/s>
10 fsync(4</w/s>) = 0
10 unlinkat(4</w/s>, \"c\", 0) = 0
10 unlinkat(AT_FDCWD</w>, \"/w/s\", AT_REMOVEDIR) = 0
10 unlink(\"/w/missing\") = -1 ENOENT (No such file or directory)
10 openat(AT_FDCWD</w>, \"/w\", O_RDONLY|O_CLOEXEC) = 4</w>
10 fsync(4</w>) = 0
10 +++ exited with 0 +++
";
    let calls = parse_strace(log);
    assert_eq!(calls.len(), 12);
    let resumed = calls.iter().find(|c| c.tid == 11).unwrap();
    assert_eq!((resumed.start, resumed.end, resumed.ret), (2, 4, 0));
    let failed = calls.iter().find(|c| c.name == "unlink").unwrap();
    assert!(!failed.ok());
    let ev: Vec<Op> = events(&calls).into_iter().map(|e| e.op).collect();
    let p = PathBuf::from;
    assert_eq!(
        ev,
        [
            Op::Create(p("/w/s/a.tmp")),
            Op::Write(p("/w/s/a.tmp")),
            Op::Sync(p("/w/s/a.tmp")),
            Op::Sync(p("/w/s/b.part")),
            Op::Rename(p("/w/s/a.tmp"), p("/w/s/a")),
            Op::Sync(p("/w/s")),
            Op::Unlink(p("/w/s/c")),
            Op::Rmdir(p("/w/s")),
            Op::Sync(p("/w")),
        ]
    );
    let trace = Trace {
        events: events(&calls),
        roots: vec![p("/w")],
    };
    assert_eq!(trace.violations(), Vec::<String>::new());

    // The same log with the fsync before the last write, and no directory fsync.
    let broken = log
        .replace("10 fsync(3</w/s/a.tmp>) = 0\n", "")
        .replace(
            "10 openat(AT_FDCWD</w>, \"/w/s/a.tmp\", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0666) = 3</w/s/a.tmp>\n",
            "10 openat(AT_FDCWD</w>, \"/w/s/a.tmp\", O_WRONLY|O_CREAT|O_TRUNC|O_CLOEXEC, 0666) = 3</w/s/a.tmp>\n10 fsync(3</w/s/a.tmp>) = 0\n",
        )
        .replace("10 fsync(4</w>) = 0\n", "");
    let trace = Trace {
        events: events(&parse_strace(&broken)),
        roots: vec![p("/w")],
    };
    let bad = trace.violations();
    assert!(
        bad.iter()
            .any(|b| b.contains("not fsynced after its last write")),
        "{bad:?}"
    );
    assert!(bad.iter().any(|b| b.contains("Rmdir")), "{bad:?}");
}

// ---------------------------------------------------------------------------------------
// recording::durable through its API (strace would add nothing here)

#[test]
fn tmp_path_is_the_name_plus_tmp_in_the_same_folder() {
    assert_eq!(
        durable::tmp_path(Path::new("/a/b/x.mkv")),
        Path::new("/a/b/x.mkv.tmp")
    );
    assert_eq!(
        durable::tmp_path(Path::new("session.json")),
        Path::new("session.json.tmp")
    );
}

#[test]
fn write_file_creates_and_replaces_leaving_no_tmp() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.json");
    durable::write_file(&path, b"first version, longer").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"first version, longer");
    durable::write_file(&path, b"second").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"second");
    durable::write_file(&path, b"").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"");
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "only the file itself"
    );
}

#[test]
fn write_file_over_a_stale_tmp_writes_exactly_the_new_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("session.json");
    fs::write(durable::tmp_path(&path), vec![b'#'; 10_000]).unwrap();
    durable::write_file(&path, b"{}").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"{}");
    assert!(!durable::tmp_path(&path).exists());
}

#[test]
fn write_file_failure_keeps_the_old_state_and_no_tmp() {
    let dir = tempfile::tempdir().unwrap();
    // Missing folder: nothing created, the error names the path.
    let missing = dir.path().join("nope/m.json");
    let err = durable::write_file(&missing, b"x").unwrap_err().to_string();
    assert!(err.contains("nope"), "{err}");
    assert!(!dir.path().join("nope").exists());
    // The destination is a folder: the rename fails, the folder and its contents stay,
    // and the temporary file is cleaned up.
    let target = dir.path().join("taken");
    fs::create_dir(&target).unwrap();
    fs::write(target.join("inside"), b"keep").unwrap();
    assert!(durable::write_file(&target, b"x").is_err());
    assert_eq!(fs::read(target.join("inside")).unwrap(), b"keep");
    assert!(!durable::tmp_path(&target).exists(), "tmp left behind");
}

#[test]
fn persist_renames_within_and_across_folders() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("chunk.mkv");
    let tmp = durable::tmp_path(&dest);
    fs::write(&dest, b"old").unwrap();
    fs::write(&tmp, b"new").unwrap();
    durable::persist(&tmp, &dest).unwrap();
    assert_eq!(fs::read(&dest).unwrap(), b"new");
    assert!(!tmp.exists());

    let other = dir.path().join("out");
    fs::create_dir(&other).unwrap();
    let src = dir.path().join("x.tmp");
    fs::write(&src, b"moved").unwrap();
    durable::persist(&src, &other.join("x")).unwrap();
    assert_eq!(fs::read(other.join("x")).unwrap(), b"moved");
    assert!(!src.exists());

    // A missing temporary file is an error and creates nothing.
    let ghost = dir.path().join("ghost");
    assert!(durable::persist(&durable::tmp_path(&ghost), &ghost).is_err());
    assert!(!ghost.exists());
}

#[test]
fn remove_file_is_idempotent_and_refuses_folders() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("00000.rgb.mkv.part");
    fs::write(&f, b"x").unwrap();
    durable::remove_file(&f).unwrap();
    assert!(!f.exists());
    durable::remove_file(&f).unwrap();
    let sub = dir.path().join("sub");
    fs::create_dir(&sub).unwrap();
    assert!(durable::remove_file(&sub).is_err());
    assert!(sub.is_dir());
}

#[test]
fn create_dir_all_nests_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b/c");
    durable::create_dir_all(&nested).unwrap();
    assert!(nested.is_dir());
    durable::create_dir_all(&nested).unwrap();
    let file = dir.path().join("f");
    fs::write(&file, b"x").unwrap();
    assert!(durable::create_dir_all(&file.join("d")).is_err());
}

/// Regression test: failed on 0f29c43 (durable::create_dir_all(path of an existing regular
/// file) returns Ok (fs::create_dir's AlreadyExists is taken as success without checking it
/// is a directory)).
#[test]
fn create_dir_all_refuses_an_existing_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    fs::write(&file, b"x").unwrap();
    assert!(durable::create_dir_all(&file).is_err());
}

#[test]
fn remove_dir_all_and_syncs_report_missing_paths() {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("rec");
    fs::create_dir_all(tree.join("x")).unwrap();
    fs::write(tree.join("x/00000.mkv"), b"x").unwrap();
    durable::remove_dir_all(&tree).unwrap();
    assert!(!tree.exists());
    durable::remove_dir_all(&tree).unwrap();
    let err = durable::sync_file(&tree.join("gone"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("gone"), "{err}");
    let err = durable::sync_dir(&tree).unwrap_err().to_string();
    assert!(err.contains("rec"), "{err}");
    durable::sync_dir(dir.path()).unwrap();
}
