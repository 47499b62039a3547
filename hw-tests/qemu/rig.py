#!/usr/bin/env python3
"""Host side of the grabd QEMU rig: boots the guest, cuts its power, replays
its write log, and checks the card on the host at native speed.

Started by hw-tests/qemu/run, which builds the kernel, initramfs and tools
first. Prints `PASS <name>` / `FAIL <name>: reason` per scenario, a summary
table, and a closing `N passed, N failed` line. Standard library only.
"""
import argparse
import bisect
import concurrent.futures
import contextlib
import ctypes
import hashlib
import json
import os
import queue
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

LOSS_LIMIT_S = 1.1
PR_SET_PDEATHSIG = 1


def log(msg):
    print(f"[qemu-rig] {msg}", file=sys.stderr, flush=True)


def sh(cmd, check=True, **kw):
    """Runs a command, returns CompletedProcess with text output."""
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} -> {r.returncode}: {r.stderr.strip()[-500:]}")
    return r


def _die_with_parent():
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Guest:
    """One QEMU boot. Every serial line is timestamped with host time.time()."""

    def __init__(self, rig, name, scenario, params, drives, timeout_s, initrd=None, qemu_args=()):
        self.rig, self.name, self.timeout_s = rig, name, timeout_s
        # no_timer_check: a TCG guest starved by a loaded host fails the kernel's IO-APIC
        # timer check at boot ("IO-APIC + timer doesn't work!", a panic), seen with two
        # host CPU hogs at load 13.
        append = ["console=ttyS0", "quiet", "panic=-1", "rdinit=/init", "no_timer_check",
                  f"rig.scenario={scenario}"]
        append += [f"rig.{k}={v}" for k, v in params.items()]
        cmd = [rig.qemu, "-accel", "tcg", "-smp", "2", "-m", "1536", "-nic", "none",
               "-nographic", "-no-reboot", "-kernel", rig.kernel, "-initrd", initrd or rig.initrd,
               "-append", " ".join(append), *qemu_args]
        for d in drives:
            cmd += ["-drive", d]
        self.lines = []          # (host_time, text)
        self.q = queue.Queue()
        self.logf = open(os.path.join(rig.logdir, f"{name}.log"), "w")
        self.t_start = time.time()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        self.deadline = self.t_start + timeout_s
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self.t_init = None
        self.killed_at = None

    def _read(self):
        for raw in self.proc.stdout:
            t = time.time()
            text = raw.decode("utf-8", "replace").rstrip("\r\n")
            i = text.find("@rig ")
            if i > 0:  # firmware escape sequences or kernel text before our line
                text = text[i:]
            self.lines.append((t, text))
            self.logf.write(f"{t - self.t_start:9.3f} {text}\n")
            self.logf.flush()
            self.q.put((t, text))
        self.q.put((time.time(), None))

    def wait_for(self, pattern, timeout_s=None):
        """Waits for a line matching regex `pattern`; returns (host_t, match) or None."""
        rx = re.compile(pattern)
        end = min(self.deadline, time.time() + timeout_s) if timeout_s else self.deadline
        while True:
            left = end - time.time()
            if left <= 0:
                return None
            try:
                t, text = self.q.get(timeout=left)
            except queue.Empty:
                return None
            if text is None:
                return None
            if text.startswith("@rig init") and self.t_init is None:
                self.t_init = t
            m = rx.search(text)
            if m:
                return t, m

    def boot_time(self):
        if self.t_init is None:
            for t, text in self.lines:
                if text.startswith("@rig init"):
                    self.t_init = t
                    break
        return None if self.t_init is None else self.t_init - self.t_start

    def kill(self):
        """Cuts the power: SIGKILL, no flush of anything the guest still holds."""
        t = time.time()
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.killed_at = t
        self.finish()
        return t

    def finish(self, timeout_s=None):
        try:
            self.proc.wait(timeout=max(0.1, timeout_s if timeout_s is not None
                                       else self.deadline - time.time()))
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.reader.join(timeout=5)
        self.logf.close()

    def rig_lines(self, word):
        """All '@rig <word> ...' lines as (host_t, rest)."""
        out = []
        for t, text in self.lines:
            if text.startswith(f"@rig {word}"):
                out.append((t, text[len(f"@rig {word}"):].strip()))
        return out

    def recordings(self):
        """Each `grabd record` the guest ran, in order: begin/exit guest clock (s),
        rc, printed file, and its stderr lines."""
        out, cur = [], None
        for _, text in self.lines:
            if text.startswith("@rig rec-begin "):
                cur = {"begin": int(text.split()[2]) / 1e6, "rc": None, "end": None,
                       "file": "", "stderr": []}
                out.append(cur)
            elif cur is None:
                continue
            elif text.startswith("@rig log "):
                cur["stderr"].append(text[len("@rig log "):])
            elif text.startswith("@rig rec-exit "):
                f = text.split()
                cur["rc"], cur["end"] = int(f[2][3:]), int(f[3]) / 1e6
            elif text.startswith("@rig rec-file"):
                cur["file"] = text[len("@rig rec-file"):].strip()
        return out

    def clock_offset(self):
        """host_time - guest_time in seconds, from the tick lines (min: the
        serial latency only ever adds), and the spread of the samples."""
        samples = []
        for t, text in self.lines:
            m = re.fullmatch(r"T (\d+)", text.strip())
            if m:
                samples.append(t - int(m.group(1)) / 1e6)
        if not samples:
            return None, None
        return min(samples), statistics.median(samples) - min(samples)


class Card:
    """A raw ext4 image standing in for the SD card."""

    def __init__(self, path, size_mb, label="CARD"):
        self.path = path
        if os.path.exists(path):
            os.unlink(path)
        with open(path, "wb") as f:
            f.truncate(size_mb << 20)
        sh(["mkfs.ext4", "-q", "-F", "-L", label, "-E", "lazy_itable_init=0,lazy_journal_init=0", path])

    def drive(self, index=0):
        return f"file={self.path},format=raw,if=virtio,cache=writeback,index={index}"


@contextlib.contextmanager
def snapshot_mount(rig, image, rw=False, copy=True, tag="", precheck=False):
    """Copies `image` (unless copy=False), replays its journal (as the kernel
    would at mount), optionally checks the file system read-only, mounts it.
    Yields (mountpoint, snapshot_path)."""
    snap = image
    if copy:
        snap = os.path.join(rig.work, f"snap{tag}.img")
        sh(["cp", "--sparse=always", image, snap])
    r = sh(["e2fsck", "-E", "journal_only", "-y", snap], check=False)
    if r.returncode not in (0, 1):
        raise RuntimeError(f"e2fsck journal replay failed ({r.returncode}): {r.stdout[-300:]}")
    if precheck:
        ok, tail = fsck_clean(snap)
        if not ok:
            raise RuntimeError(f"file system inconsistent after journal replay: {tail}")
    mnt = os.path.join(rig.work, f"mnt{tag}")
    os.makedirs(mnt, exist_ok=True)
    opts = "loop" if rw else "loop,ro,noload"
    sh(["mount", "-t", "ext4", "-o", opts, snap, mnt])
    try:
        yield mnt, snap
    finally:
        for _ in range(20):
            if sh(["umount", mnt], check=False).returncode == 0:
                break
            time.sleep(0.2)


def log_ts(line):
    """Guest wall-clock seconds from the RFC 3339 timestamp that starts a grabd log line."""
    m = re.match(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(\.\d+)?Z", line.strip())
    if not m:
        return None
    import calendar
    y, mo, d, h, mi, se = (int(x) for x in m.groups()[:6])
    return calendar.timegm((y, mo, d, h, mi, se)) + float(m.group(7) or 0)


def fsck_clean(image):
    r = sh(["e2fsck", "-fn", image], check=False)
    return r.returncode == 0, (r.stdout + r.stderr).strip().splitlines()[-3:]


def kept_unchanged(mnt, keep):
    """Whether the recording the guest reported as `keep` ("<sha256> /card/<path>") is
    still on the card mounted at `mnt`, byte for byte."""
    ksha, kpath = keep[0][1].split()
    kp = mnt + kpath[len("/card"):]
    return os.path.exists(kp) and sha256(kp) == ksha


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


class Rig:
    def __init__(self, a):
        self.a = a
        a.fill_mb = 0
        self.qemu = shutil.which("qemu-system-x86_64")
        self.kernel, self.initrd = a.kernel, a.initrd
        self.grabd, self.logreplay = a.grabd, a.logreplay
        self.work = os.path.join(a.build, "work")
        self.logdir = os.path.join(a.build, "logs")
        shutil.rmtree(self.work, ignore_errors=True)
        shutil.rmtree(self.logdir, ignore_errors=True)
        os.makedirs(self.work)
        os.makedirs(self.logdir)
        self.env = dict(os.environ)
        self.env["PATH"] = os.path.dirname(a.clk) + ":" + self.env["PATH"]
        self.results = []      # (name, ok, reason)
        self.table = []        # (what, value)
        self.boot_times = []
        self.locks = {f"-{i}": threading.Lock() for i in range(a.jobs)}

    # -- host-side checks ----------------------------------------------------
    def verify(self, mkv):
        r = sh([self.grabd, "verify", mkv], check=False, env=self.env)
        try:
            v = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            v = {"ok": False, "error": f"unparsable verify output rc={r.returncode}: "
                                       f"{r.stdout[-200:]} {r.stderr[-200:]}"}
        v["rc"] = r.returncode
        if v.get("ok") and r.returncode != 0:
            v["ok"] = False
            v["error"] = f"verify said ok but exited {r.returncode}"
        if not self.a.standin and v.get("ok"):
            p = sh(["ffprobe", "-v", "error", "-show_entries", "stream=index,codec_type",
                    "-of", "json", mkv], check=False)
            n = len(json.loads(p.stdout or "{}").get("streams", [])) if p.returncode == 0 else 0
            if p.returncode != 0 or p.stderr.strip() or n == 0:
                v["ok"] = False
                v["error"] = f"ffprobe rc={p.returncode} streams={n}: {p.stderr.strip()[:200]}"
        return v

    def recover(self, mnt):
        r = sh([self.grabd, "recover", "--spool", f"{mnt}/spool", "--output", f"{mnt}/out"],
               check=False, env=self.env)
        return r.returncode, r.stdout.split(), r.stderr.strip()

    def result(self, name, ok, reason=""):
        self.results.append((name, ok, reason))
        print(f"PASS {name}" if ok else f"FAIL {name}: {reason}", flush=True)

    def boot(self, name, scenario, params, drives, timeout_s, **qemu):
        return Guest(self, name, scenario, params, drives, timeout_s, **qemu)

    def note_boot(self, g):
        bt = g.boot_time()
        if bt is not None:
            self.boot_times.append(bt)
        return bt

    # -- scenarios -----------------------------------------------------------
    def smoke(self):
        card = Card(os.path.join(self.work, "smoke.img"), 128)
        g = self.boot("smoke", "smoke", {"duration": 3}, [card.drive()], 180)
        end = g.wait_for(r"^@rig end")
        g.finish(5)
        bt = self.note_boot(g)
        log(f"smoke: boot to /init {bt:.1f} s" if bt else "smoke: no /init")
        if not end:
            return self.result("smoke", False, f"guest did not finish (see {g.logf.name})")
        ex = g.rig_lines("rec-exit")
        rc = ex[0][1].split()[0] if ex else "none"
        if rc != "rc=0":
            return self.result("smoke", False, f"grabd record {rc}: {g.rig_lines('rec-stderr')}")
        path = g.rig_lines("rec-file")[0][1]
        with snapshot_mount(self, card.path) as (mnt, snap):
            v = self.verify(mnt + path[len("/card"):])
        ok, tail = fsck_clean(snap)
        if not v.get("ok"):
            return self.result("smoke", False, f"verify: {v}")
        if not ok:
            return self.result("smoke", False, f"fsck: {tail}")
        self.result("smoke", True)


    def press_record_press(self):
        """grabd run on gpio-sim: a press, ~3 s, a press; the final MKV lasts the press
        interval (within one frame), the LEDs show idle and recording, the buzzer beeps
        start (1) and stop (2) twice, and ctl start records again within 1 s of a stop."""
        name = "press-record-press"
        card = Card(os.path.join(self.work, "press.img"), 128)
        g = self.boot(name, "pressrecord", {}, [card.drive()], 240)
        end = g.wait_for(r"^@rig end")
        g.finish(5)
        self.note_boot(g)
        if not end:
            return self.result(name, False, f"guest did not finish (see {g.logf.name})")
        problems = []
        idle = [t for _, t in g.rig_lines("led idle")]
        if idle != ["green=1 red=0"]:
            problems.append(f"idle LEDs {idle}")
        rec = [t for _, t in g.rig_lines("led recording")]
        if not rec or any("green=0" not in t for t in rec) or \
                not any("red=1" in t for t in rec) or not any("red=0" in t for t in rec):
            problems.append(f"recording LEDs (want green off, red blinking) {rec}")
        presses = [float(t.split()[0]) for _, t in g.rig_lines("press-down")]
        pulses = g.rig_lines("buzzer-pulses")
        npulses = int(pulses[0][1]) if pulses else -1
        if npulses != 6:
            problems.append(f"{npulses} buzzer pulses, want 6 (start 1 + stop 2, twice)")
        nxt = g.rig_lines("next-start")
        next_s = None
        if nxt:
            f = nxt[0][1].split(maxsplit=2)
            next_s = float(f[1]) - float(f[0])
            if '"ok":true' not in f[2] or next_s > 1.0:
                problems.append(f"start after a stop took {next_s:.2f} s: {f[2]}")
        else:
            problems.append("no next-start line")
        first = [float(m.group(1)) for _, t in g.rig_lines("log")
                 for m in [re.search(r"press_to_first_frame_ms=([0-9.]+)", t)] if m]
        files = [t for _, t in g.rig_lines("run-file")]
        dur = None
        if len(files) != 2 or len(presses) != 2:
            problems.append(f"files {files}, presses {presses}")
        else:
            with snapshot_mount(self, card.path) as (mnt, snap):
                for f in files:
                    v = self.verify(mnt + f[len("/card"):])
                    if not v.get("ok"):
                        problems.append(f"verify {f}: {v}")
                with open(mnt + files[0][len("/card"):-len(".mkv")] + ".json") as fh:
                    dur = json.load(fh)["duration_s"]
            want = presses[1] - presses[0]
            # One frame (40 ms) for where each end falls between frames, plus the
            # last frame's own duration.
            if abs(dur - want) > 0.081:
                problems.append(f"recorded {dur:.3f} s, pressed {want:.3f} s apart")
        if first and max(first) > 80:
            problems.append(f"press to first frame {first} ms (one frame is 40 ms)")
        self.table.append(("press -> first frame (ms)", " / ".join(f"{x:.1f}" for x in first) or "n/a"))
        self.table.append(("stop -> next recording running (s)", f"{next_s:.2f}" if next_s is not None else "n/a"))
        self.table.append(("press interval / recorded (s)",
                           f"{presses[1] - presses[0]:.3f} / {dur:.3f}" if dur is not None and len(presses) == 2 else "n/a"))
        self.result(name, not problems, "; ".join(problems))

    # -- gestures, a power cut while recording, the watchdog (issue 14) ----------
    # Every time compared here is the guest's own (CLOCK_REALTIME of the same guest:
    # `clk press`, the notify listener and grabd's log timestamps), so a loaded host
    # that slows the guest shows as what grabd itself took, not as serial latency.
    @staticmethod
    def presses(g):
        """Each `clk press` the guest made: label -> (realtime s, [offset of each write, s])."""
        out = {}
        for _, t in g.rig_lines("press "):
            label, rt, _mono, offsets = t.split()
            out[label] = (int(rt) / 1e6, [int(x) / 1e6 for x in offsets.split(",")])
        return out

    @staticmethod
    def grabd_log(g, pattern):
        """(guest realtime s, match) of each grabd log line matching `pattern`."""
        out = []
        for _, t in g.rig_lines("log"):
            m = re.search(pattern, t)
            if m and log_ts(t) is not None:
                out.append((log_ts(t), m))
        return out

    def run_files(self, g, mnt):
        """The finished recordings the guest listed: (path on the host, manifest, verify)."""
        out = []
        for _, f in g.rig_lines("run-file"):
            p = mnt + f[len("/card"):]
            with open(p[:-len(".mkv")] + ".json") as fh:
                out.append((p, json.load(fh), self.verify(p)))
        return out

    def gestures(self):
        """One boot of `grabd run` on gpio-sim, every gesture of issue 14 (guest/init's
        scn_gestures says the sequence)."""
        name = "gestures"
        card = Card(os.path.join(self.work, "gestures.img"), 128)
        g = self.boot(name, "gestures", {}, [card.drive()], 300)
        end = g.wait_for(r"^@rig end")
        g.finish(5)
        self.note_boot(g)
        if not end:
            return self.result(name, False, f"guest did not finish (see {g.logf.name})")
        bad = []
        pr = self.presses(g)
        want = ("double-idle", "bounce", "double-mark", "stop-and-next", "long")
        if any(k not in pr for k in want):
            return self.result(name, False, f"presses made: {sorted(pr)} (see {g.logf.name})")
        # The presses were what they were meant to be (the guest may be preempted). The
        # bounce's edges are meant to be 0.3 ms apart; on a loaded host a vCPU preempted
        # between two writes stretches a gap (4.4 and 9.0 ms seen, two hogs on a 2-core
        # host). The kernel's debounce (10 ms, the default) restarts at every edge, so
        # the burst is still one press while every gap is shorter than that.
        b = pr["bounce"][1]
        gaps = [b[k + 1] - b[k] for k in list(range(0, 6)) + list(range(7, 13))]
        if max(gaps) >= 0.010:
            bad.append(f"a gap in the bounce reached the 10 ms debounce: writes at {b}")
        if pr["double-idle"][1][2] > 0.45 or pr["double-mark"][1][2] > 0.45:
            bad.append(f"a double press's second press came late: {pr['double-idle']} {pr['double-mark']}")
        if pr["stop-and-next"][1][2] < 0.55:
            bad.append(f"the press after the stop fell in its double-press window: {pr['stop-and-next']}")
        started = self.grabd_log(g, r"recording started id=(\S+)")
        firsts = self.grabd_log(g, r"first frame .*press_to_first_frame_ms=([0-9.]+)")
        statuses = self.grabd_log(g, r"INFO status ")
        marks = self.grabd_log(g, r"INFO mark .*at_s=([0-9.]+)")
        stopping = self.grabd_log(g, r"stopping; finishing in the background id=(\S+)")
        finished = {m.group(1).strip('"'): t for t, m in
                    self.grabd_log(g, r"recording finished id=(\S+)")}
        # double press in idle: status, and no recording
        st = g.rig_lines("status-after-double")
        st = json.loads(st[0][1]) if st else {}
        if len(statuses) != 1 or st.get("state") != "idle" or st.get("recording") is not None:
            bad.append(f"double press in idle: {len(statuses)} status lines, then {st}")
        if len(started) != 2 or started[0][0] < pr["bounce"][0]:
            bad.append(f"want exactly 2 recordings, after the bounce and after the stop: "
                       f"{[(t, m.group(1)) for t, m in started]}")
            return self.result(name, False, "; ".join(bad))
        ida, idb = started[0][1].group(1), started[1][1].group(1)
        # the bounce counted once: one recording (above), no double press (status/mark)
        if len(marks) != 1:
            bad.append(f"{len(marks)} marks, want 1 (the double press while recording)")
        # press during A's background finishing: B runs within 1 s of its press
        # (0.5 s of it is the double-press window), while A still finishes
        next_press = pr["stop-and-next"][0] + pr["stop-and-next"][1][2]
        b_first = [t for t, m in firsts if t > next_press]
        next_s = b_first[0] - next_press if b_first else None
        if next_s is None or next_s > 1.0:
            bad.append(f"press during finishing -> recording B running took {next_s} s")
        if ida not in finished or not b_first or finished[ida] < b_first[0]:
            bad.append(f"recording A was not finishing any more when B started "
                       f"(A finished {finished.get(ida)}, B running {b_first[:1]}): nothing overlapped")
        # long press: B stops while the button is still held (5 s, released at 6.5 s),
        # is finished, then the shutdown command runs
        long_at = pr["long"][0]
        b_stop = [t for t, m in stopping if m.group(1) == idb]
        long_s = b_stop[0] - long_at if b_stop else None
        if long_s is None or not 5.0 <= long_s < 6.5:
            bad.append(f"long press stopped B after {long_s} s (want 5 s, while held: < 6.5 s)")
        cmd = g.rig_lines("shutdown-command")
        cmd_t = int(cmd[0][1].split()[0]) / 1e6 if cmd else None
        if cmd_t is None or idb not in finished or cmd_t < finished[idb] or "files=2" not in cmd[0][1]:
            bad.append(f"shutdown command {cmd} ran before B was finished ({finished.get(idb)})")
        ex = g.rig_lines("run-exit")
        if not ex or not ex[0][1].startswith("rc=0"):
            bad.append(f"grabd run after the shutdown command: {ex}")
        with snapshot_mount(self, card.path) as (mnt, _snap):
            files = self.run_files(g, mnt)
        if len(files) != 2:
            bad.append(f"{len(files)} recordings on the card, want 2 (no stray one from a double press)")
        for path, man, v in files:
            if not v.get("ok"):
                bad.append(f"verify {os.path.basename(path)}: {v}")
        if len(files) == 2:
            a = files[0][1]
            # A lasts from the bounce (its debounced edge comes after the last bounce)
            # to the stop press; within one frame at each end, as press-record-press.
            want_a = pr["stop-and-next"][0] - pr["bounce"][0] - pr["bounce"][1][6]
            if abs(a["duration_s"] - want_a) > 0.081:
                bad.append(f"A recorded {a['duration_s']:.3f} s, pressed {want_a:.3f} s apart")
            # the mark is at the double press's first edge, on A's media time
            want_m = pr["double-mark"][0] - pr["bounce"][0] - pr["bounce"][1][6]
            got = a.get("marks_s") or []
            if len(got) != 1 or abs(got[0] - want_m) > 0.081:
                bad.append(f"A's marks_s {got}, want [{want_m:.3f}]")
        self.table += [
            ("gestures: press -> first frame (ms)", " / ".join(m.group(1) for _, m in firsts) or "n/a"),
            ("gestures: press during finishing -> next recording running (s)",
             "n/a" if next_s is None else f"{next_s:.2f} (0.5 of it the double-press window)"),
            ("gestures: long press -> stopped (s)", "n/a" if long_s is None else f"{long_s:.2f}"),
        ]
        self.result(name, not bad, "; ".join(bad))

    def button_power_cut(self):
        """Boot 1: a press, the power cut 2.5 s into the recording. Boot 2: `grabd run`
        recovers the recording before READY=1 (the guest's notify socket), it verifies,
        and at most LOSS_LIMIT_S was lost before the cut."""
        name = "button-power-cut"
        card = Card(os.path.join(self.work, "buttoncut.img"), 128)
        g = self.boot("buttoncut-1", "buttoncut", {"phase": "cut"}, [card.drive()], 240)
        ok = g.wait_for(r"^@rig log .*INFO first frame", 200)
        self.note_boot(g)
        if not ok:
            g.kill()
            return self.result(name, False, f"no recording before the cut (see {g.logf.name})")
        time.sleep(2.5)
        cut_host = g.kill()
        offset, spread = g.clock_offset()
        cut = cut_host - offset if offset is not None else None
        g2 = self.boot("buttoncut-2", "buttoncut", {"phase": "boot"}, [card.drive()], 240)
        end = g2.wait_for(r"^@rig end")
        g2.finish(5)
        self.note_boot(g2)
        if not end or cut is None:
            return self.result(name, False, f"second boot did not finish or no clock (see {g2.logf.name})")
        bad = []
        recovered = self.grabd_log(g2, r"recovered a cut-off recording")
        ready = [int(t.split()[0]) / 1e6 for _, t in g2.rig_lines("notify") if t.endswith(" READY=1")]
        if not recovered or not ready or recovered[0][0] > ready[0]:
            bad.append(f"recovered at {recovered[:1]}, READY=1 at {ready[:1]}: want recovery first")
        st = g2.rig_lines("status-after-boot")
        if not st or json.loads(st[0][1]).get("state") != "idle":
            bad.append(f"state after boot: {st}")
        left = g2.rig_lines("spool-left")
        if not left or left[0][1]:
            bad.append(f"spool left after recovery: {left}")
        loss = None
        with snapshot_mount(self, card.path) as (mnt, _snap):
            files = self.run_files(g2, mnt)
        if len(files) != 1:
            bad.append(f"{len(files)} recordings after the recovery, want 1")
        for path, man, v in files:
            if not v.get("ok"):
                bad.append(f"verify {os.path.basename(path)}: {v}")
            elif not man.get("recovered"):
                bad.append(f"{os.path.basename(path)}: manifest does not say recovered")
            lm = self.last_media_us(v)
            loss = cut - lm / 1e6 if lm else None
            if loss is None or loss > LOSS_LIMIT_S:
                bad.append(f"lost {loss} s before the cut (limit {LOSS_LIMIT_S} s)")
        ready_ms = (ready[0] - recovered[0][0]) * 1000 if recovered and ready else None
        self.table += [("button-power-cut: lost before the cut (s)", "n/a" if loss is None else f"{loss:.3f}"),
                       ("button-power-cut: recovered -> READY=1 (ms)", "n/a" if ready_ms is None else f"{ready_ms:.0f}")]
        self.result(name, not bad, "; ".join(bad))

    WATCHDOG_S = 4
    WATCHDOG_HANG_S = 8

    def watchdog(self):
        """READY=1, then WATCHDOG=1 every half interval (grabd pings at half of
        WATCHDOG_USEC, as systemd advises); after GRABD_TEST_HANG hangs the rgb source
        thread the pings stop within one interval and do not come back."""
        name = "watchdog"
        wd = self.WATCHDOG_S
        card = Card(os.path.join(self.work, "watchdog.img"), 128)
        g = self.boot(name, "watchdog", {"wd_s": wd, "hang_s": self.WATCHDOG_HANG_S}, [card.drive()], 300)
        end = g.wait_for(r"^@rig end")
        g.finish(5)
        self.note_boot(g)
        if not end:
            return self.result(name, False, f"guest did not finish (see {g.logf.name})")
        bad = []
        notes = [(int(t.split()[0]) / 1e6, int(t.split()[1]) / 1e6, t.split(maxsplit=2)[2])
                 for _, t in g.rig_lines("notify ")]
        ready = [n for n in notes if n[2] == "READY=1"]
        pings = [n for n in notes if n[2] == "WATCHDOG=1"]
        hang = self.grabd_log(g, r"test fault: this source thread hangs now")
        withheld = self.grabd_log(g, r"thread stopped reporting; withholding watchdog pings.*thread=(.*)")
        watch_end = g.rig_lines("watch-end")
        if not ready or not hang or not watch_end:
            return self.result(name, False, f"READY {ready[:1]}, hang {hang[:1]}, end {watch_end[:1]}")
        t_hang, t_end = hang[0][0], int(watch_end[0][1]) / 1e6
        if pings and pings[0][0] < ready[0][0]:
            bad.append("WATCHDOG=1 before READY=1")
        before = [p for p in pings if p[0] <= t_hang]
        gaps = [b[1] - a[1] for a, b in zip(before, before[1:])]
        if len(before) < 2:
            bad.append(f"{len(before)} pings between READY=1 and the hang")
        # systemd kills the service when a ping is more than one interval late
        if any(x > wd for x in gaps):
            bad.append(f"a ping came {max(gaps):.2f} s after the one before (interval {wd} s)")
        last = pings[-1][0] if pings else ready[0][0]
        if last - t_hang > wd:
            bad.append(f"pings went on {last - t_hang:.2f} s after the hang (interval {wd} s)")
        if t_end - last < 2 * wd:
            bad.append(f"only {t_end - last:.1f} s without pings before the end of the watch")
        if not withheld or "rgb" not in withheld[0][1].group(1):
            bad.append(f"no 'withholding' log line naming the rgb source: {[m.group(0) for _, m in withheld]}")
        self.table += [("watchdog: interval / ping gaps median / max (s)",
                        f"{wd} / " + (f"{statistics.median(gaps):.2f} / {max(gaps):.2f}" if gaps else "n/a")),
                       ("watchdog: hang -> last ping (s)", f"{last - t_hang:.2f}")]
        self.result(name, not bad, "; ".join(bad))

    # -- real sources: vivid webcams and the MPU-6050 on i2c-stub ---------------
    SOURCES_SCENARIOS = ("probe", "v4l2-record", "imu-values")

    def sources(self):
        """One boot: `grabd probe --json`, then 6 s from two vivid cameras (15 fps) and
        the stub IMU (100 Hz), whose accel x flips from +0.5 g to -0.5 g at 3 s."""
        card = Card(os.path.join(self.work, "sources.img"), 128)
        g = self.boot("sources", "sources", {"duration": 6, "change_after": 3}, [card.drive()], 300)
        end = g.wait_for(r"^@rig end")
        g.finish(5)
        self.note_boot(g)
        if not end:
            for n in self.SOURCES_SCENARIOS:
                self.result(n, False, f"guest did not finish (see {g.logf.name})")
            return
        self.sources_probe(g)
        recs = g.recordings()
        rec = recs[0] if recs else None
        if not rec or rec["rc"] != 0:
            why = f"grabd record rc={rec and rec['rc']}: {g.rig_lines('rec-stderr')}"
            self.result("v4l2-record", False, why)
            self.result("imu-values", False, why)
            return
        with snapshot_mount(self, card.path) as (mnt, _snap):
            v, manifest, pts, raw = self.read_sources_file(mnt + rec["file"][len("/card"):])
        self.sources_record(v, manifest, pts, rec["stderr"])
        self.sources_imu(g, manifest, raw)

    def read_sources_file(self, mkv):
        """verify's answer, the manifest, each camera's packet times (s) and the IMU
        track's raw payloads."""
        v = self.verify(mkv)
        manifest = json.load(open(os.path.splitext(mkv)[0] + ".json"))
        pts = {}
        for i, name in enumerate(("cam0", "cam1")):
            p = sh(["ffprobe", "-v", "error", "-select_streams", f"v:{i}", "-show_entries",
                    "packet=pts_time", "-of", "csv=p=0", mkv], check=False)
            pts[name] = sorted(float(x) for x in p.stdout.split() if x.strip())
        raw = subprocess.run(["ffmpeg", "-v", "error", "-i", mkv, "-map", "0:s:0", "-c",
                              "copy", "-f", "data", "-"], capture_output=True).stdout
        return v, manifest, pts, raw

    @staticmethod
    def imu_samples(raw):
        """The samples of concatenated version-3 IMU payloads, and what is wrong."""
        bad = []
        samples, dec, text, i = [], json.JSONDecoder(), raw.decode("utf-8", "replace"), 0
        while i < len(text):
            while i < len(text) and text[i] not in "{":
                i += 1
            if i >= len(text):
                break
            try:
                obj, i = dec.raw_decode(text, i)
            except ValueError:
                bad.append(f"unparsable IMU payload at byte {i}")
                break
            if obj.get("version") != 3:
                bad.append(f"payload version {obj.get('version')}")
            samples += obj.get("samples", [])
        return samples, bad

    def sources_probe(self, g):
        bad = []
        rc = g.rig_lines("probe-rc")
        js = g.rig_lines("probe-json")
        try:
            report = json.loads(js[0][1]) if js else {}
        except ValueError as e:
            report = {}
            bad.append(f"probe JSON: {e}")
        if not rc or not rc[0][1].startswith("rc=0"):
            bad.append(f"probe exit {rc[0][1] if rc else 'none'}")
        cams = report.get("cameras", [])
        if len(cams) != 2:
            bad.append(f"{len(cams)} cameras listed")
        for c in cams:
            fmts = {f["fourcc"]: f for f in c.get("formats", [])}
            sizes = {(s["width"], s["height"]) for s in fmts.get("YUYV", {}).get("sizes", [])}
            if (320, 180) not in sizes or (640, 360) not in sizes:
                bad.append(f"{c.get('path')}: YUYV sizes {sorted(sizes)}")
        imus = [i for i in report.get("imus", []) if i.get("address") == "0x68"]
        if not imus or imus[0].get("who_am_i") != "0x68" or imus[0].get("model") != "MPU-6050":
            bad.append(f"imus {report.get('imus')}")
        if report.get("m2m_encoders"):
            bad.append(f"M2M encoders {report['m2m_encoders']}")
        if report.get("h264", {}).get("codec") != "libx264":
            bad.append(f"h264 {report.get('h264')}")
        self.table.append(("probe: cameras / IMUs / H.264", f"{len(cams)} / {len(imus)} / "
                           f"{report.get('h264', {}).get('codec')} ({report.get('h264', {}).get('reason')})"))
        self.result("probe", not bad, "; ".join(bad))

    # Frames are judged against the guest's own clock, not the host's: vivid numbers
    # every frame it is due by the guest's time and stamps it on the guest's
    # CLOCK_MONOTONIC, so a loaded host (a starved guest) shows as frames the driver
    # numbered but never delivered. grabd logs per camera what it got ("camera closed
    # ... frames=D missed_by_driver=M dropped_lagging=L first_us=.. last_us=..").
    # Passing means, per camera:
    # - the driver's count holds: D + M = the frames due between its first and last
    #   buffer at the set rate (within ACCOUNT_TOLERANCE);
    # - grabd's count holds: every frame delivered is in the file or counted (lagging,
    #   the writer's drops), but for the few delivered after the stop (TAIL_FRAMES);
    # - grabd itself dropped at most MAX_DROPPED of the due frames, and the driver
    #   missed at most MAX_MISSED (a starved guest loses frames in vivid itself: its
    #   thread skips those it is late for; a capture loop that stopped requeueing
    #   would show as all of them missed).
    ACCOUNT_TOLERANCE = (0.02, 2)   # share of the due frames, or frames, whichever is more
    TAIL_FRAMES = 3
    MAX_DROPPED = 0.05
    MAX_MISSED = 0.5

    @staticmethod
    def cameras_closed(log):
        """(stream, (delivered, missed_by_driver, dropped_lagging, first_us, last_us)) of
        each "camera closed" line grabd logged, in order."""
        out = []
        for line in log:
            m = re.search(r"camera closed stream=(\w+) .*frames=(\d+) missed_by_driver=(\d+) "
                          r"dropped_lagging=(\d+) first_us=(\d+) last_us=(\d+)", line)
            if m:
                out.append((m.group(1), tuple(int(x) for x in m.group(2, 3, 4, 5, 6))))
        return out

    def sources_record(self, v, manifest, pts, log):
        bad = []
        if not v.get("ok"):
            bad.append(f"verify: {v}")
        fps = 15
        counts, jitters = [], []
        closed = dict(self.cameras_closed(log))
        stats = {s["name"]: s for s in manifest.get("streams", [])}
        for name in ("cam0", "cam1"):
            p = pts[name]
            if name not in closed or len(p) < 2:
                bad.append(f"{name}: {len(p)} frames, 'camera closed' line: {name in closed}")
                continue
            delivered, missed, lagging, first_us, last_us = closed[name]
            due = round((last_us - first_us) / 1e6 * fps) + 1
            share, frames = self.ACCOUNT_TOLERANCE
            if abs(delivered + missed - due) > max(share * due, frames):
                bad.append(f"{name}: {delivered} delivered + {missed} missed != {due} due by the guest clock")
            writer_drops = stats.get(name, {}).get("frames_dropped") or 0
            unaccounted = delivered - lagging - writer_drops - len(p)
            if not 0 <= unaccounted <= self.TAIL_FRAMES:
                bad.append(f"{name}: {delivered} delivered, {len(p)} recorded, {lagging} + {writer_drops} dropped")
            if lagging + writer_drops > self.MAX_DROPPED * due:
                bad.append(f"{name}: grabd dropped {lagging + writer_drops} of {due} frames "
                           f"(more than {self.MAX_DROPPED:.0%})")
            if missed > self.MAX_MISSED * due:
                bad.append(f"{name}: the driver missed {missed} of {due} frames "
                           f"(more than {self.MAX_MISSED:.0%})")
            d = [b - a for a, b in zip(p, p[1:])]
            if any(x <= 0 for x in d):
                bad.append(f"{name}: timestamps not increasing")
            # Jitter against the frame grid (a dropped frame is a gap of whole periods).
            jitter = max((abs(x - round(x * fps) / fps) for x in d), default=0) * 1000
            jitters.append(jitter)
            counts.append(f"{name} {len(p)} of {due} due ({missed} missed by the driver, "
                          f"{lagging + writer_drops} dropped by grabd)")
            # A camera on another clock would be off by seconds (boot time) or more.
            if p[0] > 1.0:
                bad.append(f"{name}: first frame at {p[0]} s (not on the common clock)")
        for s in manifest.get("streams", []):
            cfg = s.get("config") or {}
            meta = cfg.get("metadata", {})
            if s["name"].startswith("cam") and (meta.get("encoder") != "libx264" or
                                                 not meta.get("timestamps", "").startswith("buffer")):
                bad.append(f"{s['name']}: tags {meta}")
        self.table.append(("v4l2-record frames (15 fps, due by guest clock)", "; ".join(counts)))
        self.table.append(("v4l2-record worst jitter (ms)", " / ".join(f"{j:.1f}" for j in jitters)))
        self.result("v4l2-record", not bad, "; ".join(bad))

    def sources_imu(self, g, manifest, raw):
        samples, bad = self.imu_samples(raw)
        # The guest's clock just before and just after the register write, on the
        # recording's timeline. A sample is stamped at its read's middle; a loaded TCG
        # guest can preempt the reader mid-read (a 55 ms read was seen in CI), so
        # samples within 150 ms of the write are not judged: this judges values.
        changed = g.rig_lines("imu-changed")
        window = ([int(t) - manifest["origin_unix_us"] for t in changed[0][1].split()[:2]]
                  if changed else None)
        g_mps2, one_dps = 9.80665, 3.141592653589793 / 180
        margin_us = 150_000
        before = [s for s in samples if window and s["t_us"] < window[0] - margin_us]
        after = [s for s in samples if window and s["t_us"] > window[1] + margin_us]
        def near(a, b, tol=0.01):
            return abs(a - b) <= tol
        # The rate itself is not judged here (a loaded TCG guest misses polls); the values are.
        # Enough to judge the values by (a starved guest polls less often than 100 Hz).
        if len(samples) < 0.2 * 100 * manifest.get("duration_s", 0):
            bad.append(f"{len(samples)} samples in {manifest.get('duration_s')} s at 100 Hz")
        ts = [s["t_us"] for s in samples]
        if any(b <= a for a, b in zip(ts, ts[1:])):
            bad.append("sample times not increasing")
        if not before or not all(near(s["a"][0], 0.5 * g_mps2) for s in before):
            wrong = [s for s in before if not near(s["a"][0], 0.5 * g_mps2)][:1]
            bad.append(f"before the change (window {window}): {wrong} ({len(before)} samples)")
        if not after or not all(near(s["a"][0], -0.5 * g_mps2) for s in after):
            bad.append(f"after the change: {[s for s in after if not near(s['a'][0], -0.5 * g_mps2)][:1]}")
        for s in before + after:
            if not (near(s["a"][2], g_mps2) and near(s["g"][0], one_dps, 1e-4)
                    and near(s.get("temp_c", 0), 36.53)):
                bad.append(f"sample {s}")
                break
        self.table.append(("imu-values samples before / after change / total",
                           f"{len(before)} / {len(after)} / {len(samples)}"))
        self.result("imu-values", not bad, "; ".join(bad))

    # -- source loss: a vivid camera unbound, the stub IMU NAKing (issue 15) -------
    # All times are the guest's CLOCK_REALTIME: the guest's "lost T0 T1" / "given-back
    # T0 T1" lines (just before and after the unbind or the nak switch), grabd's log
    # timestamps, and the file's media times (origin_unix_us + pts).
    # Loss to "stopping": the source thread sees the loss at once (poll reports POLLERR
    # after the Disconnect; the next 10 ms poll of the IMU gets ENXIO) and the session
    # loop looks every 50 ms: 0.08-0.09 s on an idle host. The rest is a starved TCG
    # guest not running grabd's threads: 0.94 s with two host hogs on a host already at
    # load 10, where the guest's encoders were behind. Below the 2 s no-frame timeout,
    # so a loss seen only by that backstop fails.
    LOSS_TO_STOP_S = 1.5
    # Given back (the camera: lost, since vivid gives it back as grabd closes it) to
    # the first frame or sample in the same recording: seeing the loss, closing,
    # reopening (every 0.5 s: format, rate, STREAMON; the IMU's reset and setup) and
    # the first frame at 15 fps. Measured: camera 0.65 s, IMU 0.04 s on this machine at
    # load 10; camera 3.87 s with two host hogs at load 17, where the guest's vivid missed
    # more than half its frames (the guest ran at under half speed).
    REJOIN_S = 5.0
    # A stream "throughout" has no gap longer than this. A starved guest's vivid thread
    # skips the frames it is late for (see v4l2-record; grabd's own drops are judged by
    # the "camera closed" accounting below) and its IMU poll is not run: worst gaps
    # 0.44 s idle, 0.91 s with two host hogs at load 10. A stream that paused for the
    # other's loss would show the 2 s of it, one that stopped the rest of the recording.
    MAX_GAP_S = 1.5
    # What the lost stream keeps before the loss: its last frame at most one such gap
    # before the device went (0.74 s seen with two host hogs).
    END_BEFORE_LOSS_S = MAX_GAP_S
    FRAME_PERIOD_S = 1 / 15

    def camera_loss(self):
        # cam1 goes by vivid's Disconnect control; under "continue" vivid reconnects it
        # as soon as grabd closes it, so it is back at once (see guest/init).
        self.source_loss("camera-loss", "camera", "cam1", "/dev/video1", ("cam0", "imu"),
                         back_by_itself=True)

    def imu_loss(self):
        self.source_loss("imu-loss", "imu", "imu", "@0x68", ("cam0", "cam1"),
                         params={"stub": "i2c-stub-nak"})

    def source_loss(self, name, what, lost_stream, device, others, back_by_itself=False,
                    params=None):
        """One boot (guest scn_loss): under "stop" the device goes 2 s in (the recording
        stops with exit 2 naming it and a finished file holding everything up to the
        loss); given back, the next recording records it throughout; under "continue" it
        goes 2 s in and comes back (2 s later, or `back_by_itself` at once): the other
        streams record throughout and the lost one rejoins the same recording."""
        card = Card(os.path.join(self.work, f"{name}.img"), 128)
        g = self.boot(name, "loss", {"what": what, **(params or {})}, [card.drive()], 900)
        end = g.wait_for(r"^@rig end")
        g.finish(5)
        self.note_boot(g)
        if not end:
            return self.result(name, False, f"guest did not finish (see {g.logf.name})")
        recs = g.recordings()
        lost = [[int(x) / 1e6 for x in t.split()] for _, t in g.rig_lines("lost")]
        back = [[int(x) / 1e6 for x in t.split()] for _, t in g.rig_lines("given-back")]
        if len(recs) != 3 or len(lost) != 2 or len(back) != (1 if back_by_itself else 2):
            return self.result(name, False, f"{len(recs)} recordings, lost {lost}, back {back} "
                                            f"(see {g.logf.name})")
        bad = []
        files = {}
        with snapshot_mount(self, card.path) as (mnt, _snap):
            for label, rec in zip(("stop", "next", "continue"), recs):
                if rec["file"].startswith("/card/"):
                    files[label] = self.read_sources_file(mnt + rec["file"][len("/card"):])
                else:
                    bad.append(f"{label}: no file (rc={rec['rc']}, {rec['stderr'][-1:]})")
        for label, (v, _m, _p, _r) in files.items():
            if not v.get("ok"):
                bad.append(f"{label}: verify {v}")

        def times(label, stream):
            """The stream's frame (sample) times in the file, on the guest's clock (s)."""
            _v, manifest, pts, raw = files[label]
            origin = manifest["origin_unix_us"] / 1e6
            if stream == "imu":
                return [origin + x["t_us"] / 1e6 for x in self.imu_samples(raw)[0]]
            return [origin + t for t in pts[stream]]

        def worst_gap(t, lo, hi):
            """The longest stretch of [lo, hi] without a frame (s)."""
            inside = [lo] + [x for x in t if lo < x < hi] + [hi]
            return max(b - a for a, b in zip(inside, inside[1:]))

        def stopping(rec):
            """When grabd logged "stopping" (guest clock), or None."""
            t = [log_ts(l) for l in rec["stderr"] if re.search(r"INFO stopping reason=", l)]
            return t[0] if t else None

        def throughout(label, s, lo, hi):
            """What is wrong with stream s of `label` between lo and hi, or None."""
            t = times(label, s)
            if s == "imu" and times(label, "cam0"):
                # Its packets go with cam0's frames: samples after the last one are not
                # in the file.
                hi = min(hi, times(label, "cam0")[-1])
            gap = worst_gap(t, lo, hi) if hi > lo else 0
            return None if t and gap <= self.MAX_GAP_S else \
                f"{label}: {s} has a gap of {gap:.2f} s in the {hi - lo:.2f} s it should have run"

        streams = (lost_stream,) + others
        counts = {label: {s: len(times(label, s)) for s in streams} for label in files}
        stop, nxt, cont = recs
        # "stop": exit 2 naming the device, a finished file with everything up to the loss.
        if stop["rc"] != 2 or not any(device in line for line in stop["stderr"]):
            bad.append(f"stop: rc={stop['rc']}, no line naming {device}: {stop['stderr'][-2:]}")
        stopped = stopping(stop)
        loss_to_stop = stopped - lost[0][0] if stopped else None
        loss_to_exit = stop["end"] - lost[0][0] if stop["end"] else None
        if loss_to_stop is None or not 0 <= loss_to_stop <= self.LOSS_TO_STOP_S:
            bad.append(f"stop: loss to 'stopping' {loss_to_stop} s (bound {self.LOSS_TO_STOP_S} s)")
        if "stop" in files and stopped:
            t = times("stop", lost_stream)
            # vivid stamps a buffer with its end of frame, 0.9 of a period after it filled
            # it: a frame filled before the loss may carry a time up to a period after.
            if not t or t[-1] < lost[0][0] - self.END_BEFORE_LOSS_S or \
                    t[-1] > lost[0][1] + self.FRAME_PERIOD_S:
                bad.append(f"stop: {lost_stream} ends {t[-1] - lost[0][0] if t else None} s "
                           f"from the loss (taking it away took {lost[0][1] - lost[0][0]:.3f} s)")
            t0 = files["stop"][1]["origin_unix_us"] / 1e6
            for s in streams:
                hi = lost[0][0] - self.END_BEFORE_LOSS_S if s == lost_stream else stopped
                bad.append(throughout("stop", s, t0, hi))
            # Everything the driver delivered before the loss is in the file (or counted
            # as dropped), but for the few delivered after the stop.
            drops = {x["name"]: x.get("frames_dropped") or 0
                     for x in files["stop"][1].get("streams", [])}
            for s, (delivered, _missed, lagging, _f, _l) in self.cameras_closed(stop["stderr"]):
                left = delivered - lagging - drops.get(s, 0) - counts["stop"].get(s, 0)
                if not 0 <= left <= self.TAIL_FRAMES:
                    bad.append(f"stop: {s}: {delivered} delivered, {counts['stop'].get(s)} "
                               f"recorded, {lagging} + {drops.get(s, 0)} dropped")
        # "next": after it came back, a recording records it throughout.
        if nxt["rc"] != 0:
            bad.append(f"next: rc={nxt['rc']} {nxt['stderr'][-1:]}")
        if "next" in files and stopping(nxt):
            t0 = files["next"][1]["origin_unix_us"] / 1e6
            bad += [throughout("next", s, t0, stopping(nxt)) for s in streams]
        # "continue": the others go on, the lost one has nothing while gone and rejoins.
        rejoin = None
        if cont["rc"] != 0:
            bad.append(f"continue: rc={cont['rc']} {cont['stderr'][-1:]}")
        said = [w for w in ("lost; recording goes on without it", "back; it rejoins the recording")
                if not any(w in line for line in cont["stderr"])]
        if said:
            bad.append(f"continue: grabd never logged {said}")
        if "continue" in files and stopping(cont):
            gone, stopped = lost[1], stopping(cont)
            came = gone if back_by_itself else back[1]
            t0 = files["continue"][1]["origin_unix_us"] / 1e6
            for s in others:
                bad.append(throughout("continue", s, t0, stopped))
            t = times("continue", lost_stream)
            during = [x for x in t if gone[1] < x < came[0]]
            if during:
                bad.append(f"continue: {lost_stream} has {len(during)} frames while gone")
            bad.append(throughout("continue", lost_stream, t0, gone[0] - self.END_BEFORE_LOSS_S))
            # From when the give-back began: a starved guest may take a second to return
            # from the write that gives it back, and the source may rejoin meanwhile.
            after = [x for x in t if x >= came[0]]
            rejoin = after[0] - came[0] if after else None
            if rejoin is None or rejoin > self.REJOIN_S:
                bad.append(f"continue: {lost_stream} rejoined {rejoin} s after it came back "
                           f"(bound {self.REJOIN_S} s)")
            else:
                bad.append(throughout("continue", lost_stream, came[0] + rejoin, stopped))
        bad = [b for b in bad if b]
        fmt = lambda x: "n/a" if x is None else f"{x:.2f}"
        self.table.append((f"{name}: frames stop / next / continue",
                           " / ".join(", ".join(f"{s} {n}" for s, n in counts[label].items())
                                      for label in counts)))
        self.table.append((f"{name}: loss -> stopping / exit (s); rejoin after back (s)",
                           f"{fmt(loss_to_stop)} / {fmt(loss_to_exit)}; {fmt(rejoin)}"
                           + (" (back by itself: from the loss)" if back_by_itself else "")))
        self.result(name, not bad, "; ".join(bad))

    # -- helpers shared by the scenarios ---------------------------------------
    @staticmethod
    def listing(mnt):
        """What is on the card: finished outputs, temp files, spool folders."""
        out, spool = os.path.join(mnt, "out"), os.path.join(mnt, "spool")
        st = {"mkv": {}, "tmp": [], "spool": {}}
        if os.path.isdir(out):
            for f in sorted(os.listdir(out)):
                if f.endswith(".mkv"):
                    st["mkv"][f[:-4]] = os.path.join(out, f)
                elif f.endswith(".tmp"):
                    st["tmp"].append(f)
        if os.path.isdir(spool):
            for d in sorted(os.listdir(spool)):
                p = os.path.join(spool, d)
                if os.path.isdir(p):
                    st["spool"][d] = sorted(os.listdir(p))
        return st

    @staticmethod
    def last_media_us(v):
        """origin + the last frame of the stream that ends first (worst_stream)."""
        worst = Rig.worst_stream(v)
        if worst is None or not v.get("origin_unix_us"):
            return None
        return v["origin_unix_us"] + worst["last_pts_us"]

    @staticmethod
    def worst_stream(v):
        """verify's entry for the stream whose last frame is earliest, of those with
        any packet; None if there is none."""
        streams = [s for s in (v or {}).get("streams") or [] if s.get("packets")]
        return min(streams, key=lambda s: s.get("last_pts_us")) if streams else None

    @staticmethod
    def worst_stream_name(v):
        worst = Rig.worst_stream(v)
        return worst["name"] if worst else "-"

    @staticmethod
    def frames_dropped(mkv):
        """Frames each stream dropped, from the recording's manifest (every
        dropped_* count it has, or its frames_dropped total)."""
        try:
            with open(mkv[:-4] + ".json") as f:
                man = json.load(f)
        except (OSError, ValueError):
            return {}
        out = {}
        for s in man.get("streams", []):
            parts = {k[len("dropped_"):]: v for k, v in s.items()
                     if k.startswith("dropped_") and isinstance(v, int) and v}
            total = s.get("frames_dropped") or 0
            if parts or total:
                out[s.get("name")] = parts or total
        return out

    def file_shas(self, mkv):
        j = mkv[:-4] + ".json"
        return sha256(mkv), (sha256(j) if os.path.exists(j) else None)

    # -- scenario 1: power cuts at random moments ----------------------------
    def power_cut(self, name="power-cut", loads=("none",)):
        """Power cuts; boot k records under load loads[k % len(loads)] (guest/init's
        load_on: none, hog, slow)."""
        loaded = loads != ("none",)
        if loaded:
            ncuts = self.a.loaded_cuts or (20 if self.a.full else 8)
        else:
            ncuts = self.a.cuts or (60 if self.a.full else 20)
        tag = name.replace("-", "")
        dur = 4
        seed = self.a.seed if self.a.seed is not None else int(time.time())
        rnd = random.Random(seed)
        log(f"{name}: {ncuts} cuts, {dur} s recordings, 1 s chunks, seed {seed}")
        card = Card(os.path.join(self.work, f"{tag}.img"), 256)
        states = open(os.path.join(self.logdir, f"{tag}-states.log"), "w")
        registry = {}          # recording id -> (sha mkv, sha json), finished and checked
        pending = None         # the last cut, waiting for the next boot's recovery
        fails, losses, phases, cuts = [], [], {}, []
        by_load, dropped = {}, {}  # load -> worst loss; load -> frames dropped per stream
        lag, stop_len = 0.3, 1.0   # "recording started" -> first frame; "stopping" -> exit
        lag_ts = 0.0               # origin - timestamp of grabd's "recording started" line
        kinds = ["mid-chunk", "finalize", "stop", "concat"]
        for k in range(ncuts + 2):
            last = k == ncuts + 1
            load = loads[k % len(loads)]
            g = self.boot(f"{tag}-{k:03d}", "powercut",
                          {"duration": dur, "record": 0 if last else 1, "load": load},
                          [card.drive()], 120 if loaded else 90)
            rb = g.wait_for(r"^@rig (rec-begin|hold|mountfail)")
            self.note_boot(g)
            if not rb or (rb[1].group(1) != "rec-begin" and not last):
                g.kill()
                fails.append(f"boot {k}: guest never started recording (see {g.logf.name})")
                break
            target = None
            if k == 0:
                g.wait_for(r"^@rig rec-exit", 90)
                time.sleep(0.5)
            elif last:
                time.sleep(0.5)
            else:
                target = kinds[(k - 1) % len(kinds)]
                if target in ("mid-chunk", "finalize"):
                    ev = g.wait_for(r"^@rig log .*recording started", 30)
                    n = rnd.randrange(0, dur) if target == "mid-chunk" else rnd.randrange(1, dur)
                    off = rnd.uniform(0.3, 0.9) if target == "mid-chunk" else rnd.uniform(0.0, 0.2)
                    at = (ev[0] if ev else time.time()) + lag + n + off
                else:
                    ev = g.wait_for(r"^@rig log .*stopping", dur + 30)
                    f = rnd.uniform(0.0, 0.3) if target == "stop" else rnd.uniform(0.3, 1.1)
                    at = (ev[0] if ev else time.time()) + f * stop_len
                time.sleep(max(0.0, at - time.time()))
            cut_host = g.kill()
            # the card exactly as the cut left it, for reproducing a failure by hand
            sh(["cp", "--sparse=always", card.path, os.path.join(self.work, f"{tag}-cut-{k:03d}.img")])
            off, spread = g.clock_offset()
            if off is None:
                fails.append(f"boot {k}: no clock ticks from the guest")
                break
            cut_guest = cut_host - off
            rec_begin = next((int(x[1].split()[0]) / 1e6 for x in g.rig_lines("rec-begin")), None)
            t_started = next((t - off for t, x in g.rig_lines("log") if "recording started" in x), None)
            ts_started = next((log_ts(x) for _, x in g.rig_lines("log") if "recording started" in x), None)
            t_stopping = next((t - off for t, x in g.rig_lines("log") if "stopping" in x), None)
            exits = g.rig_lines("rec-exit")
            exited = bool(exits) and exits[0][1].startswith("rc=0")
            if k == 0 and exits and t_stopping:
                stop_len = exits[0][0] - off - t_stopping
            rec = [x[1] for x in g.rig_lines("recover-end")]
            if rec and not rec[0].startswith("rc=0"):
                fails.append(f"boot {k}: guest grabd recover {rec[0]} "
                             f"{[x[1] for x in g.rig_lines('recover-stderr')]}")
            if exits and not exited:
                fails.append(f"boot {k}: grabd record exited {exits[0][1]} "
                             f"{[x[1] for x in g.rig_lines('rec-stderr')]}")
            # -- check the card as the cut left it (after this boot's recovery)
            with snapshot_mount(self, card.path) as (mnt, snap):
                st = self.listing(mnt)
                states.write(f"--- after boot {k} (cut at guest {cut_guest:.3f}): {json.dumps(st)}\n")
                for rid, (sm, sj) in registry.items():
                    if rid not in st["mkv"]:
                        fails.append(f"cut {k}: finished recording {rid} lost")
                    elif self.file_shas(st["mkv"][rid]) != (sm, sj):
                        fails.append(f"cut {k}: finished recording {rid} changed")
                if pending is not None:
                    rid = pending["id"]
                    v = None
                    if rid and rid in st["mkv"]:
                        v = self.verify(st["mkv"][rid])
                        if not v.get("ok"):
                            fails.append(f"cut {k - 1}: recovered {rid} fails verify: {v}")
                    if rid and rid in st["spool"]:
                        fails.append(f"cut {k - 1}: recovery left spool/{rid}: {st['spool'][rid]}")
                    origin = v["origin_unix_us"] / 1e6 if v and v.get("origin_unix_us") else None
                    if k - 1 == 0 and origin and pending["started"]:
                        lag = origin - pending["started"]
                        lag_ts = origin - (pending["started_ts"] or origin)
                        log(f"{name}: calibration: first frame {lag:.2f} s after 'recording started', "
                            f"{origin - pending['rec_begin']:.2f} s after launch; "
                            f"'stopping' to exit {stop_len:.2f} s")
                    lm = self.last_media_us(v) if v else None
                    est = ""
                    if origin is None and pending["started_ts"]:
                        # nothing survived: the first frame's time from grabd's own
                        # "recording started" log line (guest clock) and the calibration
                        origin, est = pending["started_ts"] + lag_ts, " (origin estimated)"
                    elif origin is None:
                        origin, est = pending["rec_begin"], " (origin = launch)"
                    end = min(pending["cut"], origin + dur)
                    loss = end - (lm / 1e6 if lm is not None else origin)
                    ph = self.cut_phase(pending, origin, dur)
                    if k - 1 > 0:
                        losses.append(loss)
                        phases[ph] = phases.get(ph, 0) + 1
                        cuts.append((k - 1, ph, pending["target"], loss))
                    log(f"{name}: cut {k - 1:3d} target={pending['target'] or '-':9s} "
                        f"phase={ph:10s} loss={loss:6.3f} s{est} ({self.worst_stream_name(v)}) id={rid} "
                        f"clock-spread={pending['spread'] * 1000:.1f} ms")
                    states.write(f"cut {k - 1}: phase {ph} loss {loss:.3f} verify {json.dumps(v)}\n")
                    if loss > LOSS_LIMIT_S:
                        fails.append(f"cut {k - 1} ({ph}): lost {loss:.3f} s{est} > {LOSS_LIMIT_S} s "
                                     f"(load {pending['load']}; card as cut: "
                                     f"target/qemu/work/{tag}-cut-{k - 1:03d}.img)")
                    if k - 1 > 0:
                        by_load[pending["load"]] = max(loss, by_load.get(pending["load"], 0.0))
                    if v and v.get("ok"):
                        for s, n in self.frames_dropped(st["mkv"][rid]).items():
                            dropped.setdefault(pending["load"], {}).setdefault(s, 0)
                            dropped[pending["load"]][s] += n
                    if rid and rid in st["mkv"] and v and v.get("ok"):
                        registry[rid] = self.file_shas(st["mkv"][rid])
                # the recording this boot made (cut now, recovered by the next boot)
                current = [d for d in st["spool"] if d not in registry]
                current += [r for r in st["mkv"] if r not in registry and r not in current
                            and (pending is None or r != pending["id"])]
                if len(current) > 1:
                    fails.append(f"cut {k}: more than one unfinished recording: {current}")
                cid = current[0] if current else None
                files = st["spool"].get(cid, [])
                if exited and cid:
                    v = self.verify(st["mkv"][cid]) if cid in st["mkv"] else {"ok": False, "error": "missing"}
                    if not v.get("ok"):
                        fails.append(f"cut {k}: recording {cid} finished before the cut fails: {v}")
                pending = None if last else {
                    "id": cid, "cut": cut_guest, "rec_begin": rec_begin, "exited": exited,
                    "started": t_started, "started_ts": ts_started, "stopping": t_stopping if t_stopping and t_stopping <= cut_guest else None,
                    "chunk_tmp": any(f.endswith(".tmp") for f in files),
                    "parts": any(f.endswith(".part") for f in files),
                    "final": cid in st["mkv"], "target": target, "spread": spread,
                    "load": load}
            ok, tail = fsck_clean(snap)
            if not ok:
                fails.append(f"cut {k}: file system not clean after journal replay: {tail}")
        states.close()
        made = len(cuts)
        med = statistics.median(losses) if losses else float("nan")
        worst = max(losses) if losses else float("nan")
        ph = ", ".join(f"{p} {n}" for p, n in sorted(phases.items()))
        self.table += [(f"{name}: cuts made", f"{made} (seed {seed}; {ph})"),
                       (f"{name}: loss worst / median (s)", f"{worst:.3f} / {med:.3f} (limit {LOSS_LIMIT_S})")]
        if loaded:
            self.table += [(f"{name}: worst loss under {ld} (s)", f"{w:.3f}; frames dropped {dropped.get(ld, {})}")
                           for ld, w in sorted(by_load.items())]
        missing = [p for p in kinds if p not in phases]
        if missing:
            log(f"{name}: warning: no cut landed in phase(s) {missing}")
        if made < ncuts and not fails:
            fails.append(f"only {made} of {ncuts} cuts made")
        self.result(name, not fails, "; ".join(fails[:5]) + (f" (+{len(fails) - 5} more)" if len(fails) > 5 else ""))

    @staticmethod
    def cut_phase(c, origin, dur):
        """Where in the recording the cut fell, from the clock and the card's state."""
        if c["exited"]:
            return "after-exit"
        if c["stopping"] is not None or (origin and c["cut"] - origin >= dur):
            # stopping: encoders flushed, last chunk merged, appended to the final file
            return "concat" if c["final"] or not c["parts"] else "stop"
        if origin is None or c["cut"] < origin:
            return "startup"
        if c["chunk_tmp"] or (c["cut"] - origin) % 1.0 < 0.25:
            return "finalize"
        return "mid-chunk"

    # -- scenario 2: replay the write log to every flush point ---------------
    def replay_entries(self, logimg):
        r = sh([self.logreplay, "list", logimg, "--all"])
        entries = []
        for line in r.stdout.splitlines():
            f = line.split("\t")
            entries.append({"idx": int(f[0]), "flags": f[1], "sector": int(f[2]),
                            "nr": int(f[3]), "mark": None if f[4] == "-" else f[4]})
        return entries

    def flush_points(self, name="flush-points", loads=("none", "none")):
        """Two recordings A and B logged write by write; A records under load
        loads[0], B under loads[1] (guest/init's load_on)."""
        tag = "flush" if name == "flush-points" else name.replace("-points", "")
        card = Card(os.path.join(self.work, f"{tag}.img"), 128)
        base = os.path.join(self.work, f"{tag}-base.img")
        sh(["cp", "--sparse=always", card.path, base])
        logimg = os.path.join(self.work, f"{tag}-log.img")
        with open(logimg, "wb") as f:
            f.truncate(1 << 30)
        ldrive = f"file={logimg},format=raw,if=virtio,cache=unsafe,index=1"
        g = self.boot(f"{tag}log", "flushlog", {"duration_a": 2, "duration_b": 20 if self.a.full else 6,
                                                "mark_ms": 50, "load_a": loads[0], "load_b": loads[1]},
                      [card.drive(0), ldrive], 300)
        end = g.wait_for(r"^@rig end")
        g.finish(10)
        self.note_boot(g)
        if not end:
            return self.result(name, False, f"guest did not finish (see {g.logf.name})")
        exits = g.rig_lines("rec-exit")
        if len(exits) != 2 or not all(x[1].startswith("rc=0") for x in exits):
            return self.result(name, False, f"grabd record exits {exits} {g.rig_lines('rec-stderr')}")
        if not g.rig_lines("lw-removed"):
            return self.result(name, False, "dm-log-writes device was not removed cleanly")
        entries = self.replay_entries(logimg)
        # Self-check of the replayer: the whole log onto the base must give back
        # the card exactly as the guest left it.
        whole = os.path.join(self.work, f"{tag}-replayed.img")
        sh(["cp", "--sparse=always", base, whole])
        sh([self.logreplay, "replay", logimg, whole, "--to", str(len(entries) - 1)])
        if sh(["cmp", "-s", whole, card.path], check=False).returncode != 0:
            return self.result(name, False, "replaying the whole log does not reproduce the card")
        os.unlink(whole)
        info = sh([self.logreplay, "info", logimg]).stdout.split()
        info = dict(zip(info[::2], info[1::2]))
        # reference: the card as grabd left it
        with snapshot_mount(self, card.path) as (mnt, _):
            st = self.listing(mnt)
            ref = {}
            for rid, p in st["mkv"].items():
                v = self.verify(p)
                if not v.get("ok"):
                    return self.result(name, False, f"final state: {rid} fails verify: {v}")
                with open(p[:-4] + ".json") as f:
                    man = json.load(f)
                ref[rid] = {"shas": self.file_shas(p), "origin": v["origin_unix_us"] / 1e6,
                            "dur": float(man.get("duration_s") or 0),
                            "dropped": self.frames_dropped(p)}
        if len(ref) != 2:
            return self.result(name, False, f"expected 2 recordings in the final state, found {list(ref)}")
        (ida, ra), (idb, rb) = sorted(ref.items(), key=lambda x: x[1]["origin"])
        times, done = [], {}
        for e in entries:
            m = e["mark"] and re.fullmatch(r"(t|doneA|doneB)(\d+)", e["mark"])
            if m:
                times.append((e["idx"], int(m.group(2)) / 1e6))
                if m.group(1) != "t":
                    done[m.group(1)] = e["idx"]
        if "doneA" not in done or "doneB" not in done:
            return self.result(name, False, "marks doneA/doneB missing from the log")
        points = [e["idx"] for e in entries if "FLUSH" in e["flags"] or "FUA" in e["flags"]]
        want = len(points) if (self.a.all_marks or self.a.full) else (self.a.marks or 200)
        if want >= len(points):
            sample = points
        else:
            step = len(points) / want
            chosen = {points[int(i * step)] for i in range(want)} | {points[-1]}
            # plus the points around each "recording finished" mark
            for d in done.values():
                j = bisect.bisect_left(points, d)
                chosen.update(points[max(0, j - 3):j + 3])
            sample = sorted(chosen)
        log(f"{name}: log has {len(entries)} entries, {len(points)} flush/FUA points, "
            f"{info.get('marks')} marks, {int(info.get('data_bytes', 0)) >> 20} MiB data; "
            f"checking {len(sample)}")
        ctx = {"base": base, "log": logimg, "points": points, "times": times, "ref": ref,
               "done": done, "ida": ida, "idb": idb}
        fails, losses, checked, t0 = [], [], 0, time.time()
        jobs = self.a.jobs
        with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
            futs = [pool.submit(self.flush_state, ctx, p, f"-{i % jobs}") for i, p in enumerate(sample)]
            # states with the same tag share files; flush_state takes the tag's lock
            for p, fu in zip(sample, futs):
                bad, lost = fu.result()
                checked += 1
                losses += lost
                if bad:
                    if not fails:
                        log(f"{name}: reproduce the first failing state: cp --sparse=always {base} S.img && "
                            f"{self.logreplay} replay {logimg} S.img --to {p} && "
                            f"e2fsck -E journal_only -y S.img && mount -o loop S.img /mnt")
                    fails.append(f"entry {p}: " + "; ".join(bad))
                    log(f"{name}: entry {p}: " + "; ".join(bad))
        worst = max(losses, default=(0.0, None, False, None))
        running = [x[0] for x in losses if x[2]]
        flosses = running
        worst, worst_at = worst[0], worst[1]
        dt = time.time() - t0
        if loads != ("none", "none"):
            for rid, load in ((ida, loads[0]), (idb, loads[1])):
                w = max((x[0] for x in losses if x[3] == rid), default=float("nan"))
                self.table.append((f"{name}: worst loss under {load} (s)",
                                   f"{w:.3f}; frames dropped {ref[rid]['dropped']}"))
        self.table += [(f"{name}: points in log / checked", f"{len(points)} / {checked} "
                        f"({'all' if len(sample) == len(points) else 'sample'}; {dt / max(1, checked):.2f} s each)"),
                       (f"{name}: failed states", str(len(fails))),
                       (f"{name}: loss worst / median (s)",
                        f"{worst:.3f} at entry {worst_at} / "
                        f"{statistics.median(flosses) if flosses else float('nan'):.3f} "
                        f"(cut just before the next flush; upper bound, marks every 50 ms)")]
        self.result(name, not fails, f"{len(fails)} of {checked} states failed: " + "; ".join(fails[:3]))

    def flush_state(self, ctx, p, tag):
        """Replays the log to flush point p on a fresh copy of the base image and
        checks it. Returns (problems, [(loss, p, recording_was_running, id)])."""
        state = os.path.join(self.work, f"state{tag}.img")
        points, times, ref, done = ctx["points"], ctx["times"], ctx["ref"], ctx["done"]
        bad, lost = [], []
        with self.locks[tag]:
            sh(["cp", "--sparse=always", ctx["base"], state])
            sh([self.logreplay, "replay", ctx["log"], state, "--to", str(p)])
            # The state after flush point p lasts until the next flush point is
            # logged; a cut just before that loses the most. That moment is bounded
            # by the first clock mark logged after it (marks every 50 ms).
            j = bisect.bisect_right(points, p)
            nxt = points[j] if j < len(points) else None
            t_hi = float("inf") if nxt is None else next((t for i, t in times if i > nxt), float("inf"))
            try:
                with snapshot_mount(self, state, rw=True, copy=False, tag=tag, precheck=True) as (mnt, _):
                    pre = self.listing(mnt)
                    for rid, r in ref.items():
                        if rid in pre["mkv"] and sha256(pre["mkv"][rid]) != r["shas"][0]:
                            bad.append(f"finished file {rid} differs from the final one before recovery")
                    # previous-or-next rule: only after the mark that follows grabd's
                    # exit must the finished file be there
                    if p > done["doneA"] and ctx["ida"] not in pre["mkv"]:
                        bad.append(f"{ctx['ida']} finished before this point but is missing")
                    if p > done["doneB"] and ctx["idb"] not in pre["mkv"]:
                        bad.append(f"{ctx['idb']} finished before this point but is missing")
                    rc, _, err = self.recover(mnt)
                    if rc != 0:
                        bad.append(f"recover rc={rc}: {err[-200:]}")
                    post = self.listing(mnt)
                    for rid in post["spool"]:
                        bad.append(f"spool/{rid} left after recovery: {post['spool'][rid][:5]}")
                    verified = {}
                    for rid, path in post["mkv"].items():
                        v = verified[rid] = self.verify(path)
                        if not v.get("ok"):
                            bad.append(f"{rid} fails verify: {v}")
                        elif rid not in ref:
                            bad.append(f"unexpected recording {rid}")
                    for rid, r in ref.items():
                        if r["origin"] >= t_hi:
                            continue
                        endt = min(t_hi, r["origin"] + r["dur"])
                        v = verified.get(rid)
                        lm = self.last_media_us(v) if v and v.get("ok") else None
                        loss = endt - (lm / 1e6 if lm else r["origin"])
                        lost.append((loss, p, r["origin"] + r["dur"] > t_hi, rid))
                        if loss > LOSS_LIMIT_S:
                            bad.append(f"{rid} lost {loss:.3f} s ({self.worst_stream_name(v)})")
            except RuntimeError as e:
                bad.append(str(e))
            ok, tail = fsck_clean(state)
            if not ok:
                bad.append(f"fsck after recovery: {tail}")
        return bad, lost

    # -- scenario 3: the card fills up ----------------------------------------
    def disk_full(self):
        name = "disk-full"
        card = Card(os.path.join(self.work, "full.img"), self.a.card_mb)
        # Other data on the card, so that the recording starts this far above
        # grabd's own floor (min_free_mb, 32 MiB by default) and fills in about
        # a minute instead of ten.
        with snapshot_mount(self, card.path, rw=True, copy=False) as (mnt, _):
            sv = os.statvfs(mnt)
            free = sv.f_bavail * sv.f_frsize
            fill = max(0, free - ((self.a.floor_mb + self.a.headroom_mb) << 20))
            with open(os.path.join(mnt, "filler.bin"), "wb") as f:
                left = fill
                while left > 0:
                    n = min(left, 1 << 20)
                    f.write(os.urandom(n))
                    left -= n
                os.fsync(f.fileno())
            self.a.fill_mb = fill >> 20
        log(f"{name}: {self.a.card_mb} MB card, {free >> 20} MiB free after mkfs, "
            f"{fill >> 20} MiB of other data: {(free - fill) >> 20} MiB left for grabd")
        g = self.boot("diskfull", "diskfull", {"duration_keep": 2, "duration_fill": 240},
                      [card.drive()], 420)
        end = g.wait_for(r"^@rig end")
        g.finish(10)
        self.note_boot(g)
        if not end:
            return self.result(name, False, f"guest did not finish (see {g.logf.name})")
        begins = [int(x[1].split()[0]) for x in g.rig_lines("rec-begin")]
        exits = [(x[1].split()[0], int(x[1].split()[1])) for x in g.rig_lines("rec-exit")]
        files = [x[1] for x in g.rig_lines("rec-file")]
        errs = [x[1] for x in g.rig_lines("rec-stderr")]
        dfs = [x[1] for x in g.rig_lines("df")]
        keep = g.rig_lines("keep-sha")
        bad = []
        if len(exits) != 3:
            return self.result(name, False, f"expected 3 recordings, got exits {exits}")
        if exits[0][0] != "rc=0" or not keep:
            bad.append(f"first recording {exits[0][0]}")
        fill_s = (exits[1][1] - begins[1]) / 1e6
        refuse_s = (exits[2][1] - begins[2]) / 1e6
        if exits[1][0] not in ("rc=0", "rc=2"):
            bad.append(f"filling recording exited {exits[1][0]}")
        if fill_s >= 240:
            bad.append("the filling recording ran its whole 240 s: it never stopped for space")
        if exits[2][0] != "rc=2":
            bad.append(f"recording on the full card exited {exits[2][0]}, want rc=2")
        if refuse_s > 5:
            bad.append(f"refusal took {refuse_s:.1f} s")
        recs = g.recordings()
        refusal_err = recs[2]["stderr"] if len(recs) == 3 else []
        if len(refusal_err) != 1:
            bad.append(f"refusal should be one stderr line, got {len(refusal_err)}: {refusal_err[-3:]}")
        fill_bytes = None
        with snapshot_mount(self, card.path) as (mnt, snap):
            st = self.listing(mnt)
            if keep and not kept_unchanged(mnt, keep):
                bad.append("the recording finished before the card filled was changed or lost")
            fp = files[1] if len(files) > 1 else ""
            if not fp.startswith("/card/"):
                bad.append(f"filling recording printed no final file ({errs})")
            else:
                p = mnt + fp[len("/card"):]
                if not os.path.exists(p):
                    bad.append(f"{fp} missing")
                else:
                    fill_bytes = os.path.getsize(p)
                    v = self.verify(p)
                    if not v.get("ok"):
                        bad.append(f"filling recording fails verify: {v}")
            for rid, p in st["mkv"].items():
                v = self.verify(p)
                if not v.get("ok"):
                    bad.append(f"{rid} fails verify")
            leftovers = {d: fl for d, fl in st["spool"].items()}
        ok, tail = fsck_clean(snap)
        if not ok:
            bad.append(f"fsck: {tail}")
        def last(r):
            return r["stderr"][-1] if r["stderr"] else "(no stderr)"
        log(f"{name}: filled for {fill_s:.1f} s, {exits[1][0]}, last message: {last(recs[1])}")
        log(f"{name}: next recording ended after {refuse_s:.2f} s ({exits[2][0]}), "
            f"last message: {last(recs[2])}; df: {dfs}; spool leftovers: {leftovers}")
        self.table += [("disk-full: bytes in the final file before full",
                        f"{fill_bytes} ({self.a.card_mb} MB card, {self.a.fill_mb} MiB other data, recorded {fill_s:.0f} s)"),
                       ("disk-full: refusal on a full card (s)", f"{refuse_s:.2f} ({exits[2][0]})")]
        self.result(name, not bad, "; ".join(bad))

    # -- scenario 4: failing writes --------------------------------------------
    def io_error(self):
        name = "io-error"
        card = Card(os.path.join(self.work, "ioerr.img"), 128)
        g = self.boot("ioerror", "ioerror", {"duration_keep": 2, "fault_after": 3, "duration_after": 2},
                      [card.drive()], 240)
        end = g.wait_for(r"^@rig end")
        g.finish(10)
        self.note_boot(g)
        if not end:
            return self.result(name, False, f"guest did not finish (see {g.logf.name})")
        exits = [(x[1].split()[0], int(x[1].split()[1])) for x in g.rig_lines("rec-exit")]
        files = [x[1] for x in g.rig_lines("rec-file")]
        errs = [x[1] for x in g.rig_lines("rec-stderr")]
        keep = g.rig_lines("keep-sha")
        fault = g.rig_lines("fault-on")
        rec = g.rig_lines("recover-end")
        bad = []
        if len(exits) != 3 or not fault:
            return self.result(name, False, f"guest sequence incomplete: exits {exits} fault {fault}")
        t_fault = int(fault[0][1].split()[0]) / 1e6  # when the suspend began
        to_exit = exits[1][1] / 1e6 - t_fault
        if exits[0][0] != "rc=0":
            bad.append(f"recording before the fault {exits[0][0]}")
        if exits[1][0] == "rc=0":
            bad.append("recording under the fault reported success")
        err = errs[0] if errs else ""
        if "/card" not in err:
            bad.append(f"error message names no path on the card: {err!r}")
        if not rec or not rec[0][1].startswith("rc=0"):
            bad.append(f"recover after the fault: {rec}")
        if exits[2][0] != "rc=0":
            bad.append(f"recording after the fault was cleared {exits[2][0]}")
        loss = None
        with snapshot_mount(self, card.path) as (mnt, snap):
            st = self.listing(mnt)
            if not keep:
                bad.append("no keep recording")
            elif not kept_unchanged(mnt, keep):
                bad.append("recording finished before the fault changed or lost")
            faulted = None
            for line in g.recordings()[1]["stderr"]:
                m = re.search(r"recording started id=(\S+)", line)
                if m:
                    faulted = m.group(1)
            for rid, p in st["mkv"].items():
                v = self.verify(p)
                if not v.get("ok"):
                    bad.append(f"{rid} fails verify: {v}")
                if rid == faulted:
                    lm = self.last_media_us(v)
                    loss = t_fault - lm / 1e6 if lm else None
            if loss is None:
                bad.append("nothing of the faulted recording survived")
            elif loss > LOSS_LIMIT_S:
                bad.append(f"faulted recording lost {loss:.3f} s of data written before the fault")
            if len(files) < 3 or not files[2].startswith("/card/out/"):
                bad.append("no file from the recording after the fault")
            if st["spool"]:
                bad.append(f"spool left: {st['spool']}")
        ok, tail = fsck_clean(snap)
        if not ok:
            bad.append(f"fsck: {tail}")
        log(f"{name}: error reported {to_exit:.2f} s after the fault: {err!r}")
        self.table += [("io-error: fault to clean exit (s)", f"{to_exit:.2f} ({exits[1][0]})"),
                       ("io-error: data lost before the fault (s)", "n/a" if loss is None else f"{loss:.3f}")]
        self.result(name, not bad, "; ".join(bad))

    def systemd_guest(self):
        """The shipped unit under a real systemd (hw-tests/systemd/scenario.py)."""
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "systemd"))
        import scenario
        scenario.run(self, snapshot_mount, fsck_clean, Card, log)

    def run(self):
        t0 = time.time()
        only = set(self.a.only.split(",")) if self.a.only else None
        order = [("smoke", self.smoke), ("power-cut", self.power_cut),
                 ("flush-points", self.flush_points),
                 ("power-cut-loaded", lambda: self.power_cut("power-cut-loaded", ("hog", "slow"))),
                 ("flush-points-loaded", lambda: self.flush_points("flush-points-loaded", ("hog", "slow"))),
                 ("disk-full", self.disk_full),
                 ("io-error", self.io_error), ("press-record-press", self.press_record_press),
                 ("gestures", self.gestures), ("button-power-cut", self.button_power_cut),
                 ("watchdog", self.watchdog),
                 ("systemd-guest", self.systemd_guest), ("sources", self.sources),
                 ("camera-loss", self.camera_loss), ("imu-loss", self.imu_loss)]
        # Scenarios run only when named in --only (none at present: the button and
        # source-loss scenarios joined the default set in session 6).
        opt_in: set = set()
        for name, fn in order:
            names = {name} | (set(self.SOURCES_SCENARIOS) if name == "sources" else set())
            if (only and not names & only) or (not only and name in opt_in):
                continue
            try:
                fn()
            except Exception as e:  # a rig error is a failed scenario, not a crash
                import traceback
                traceback.print_exc()
                self.result(name, False, f"rig error: {e}")
        total = time.time() - t0
        self.summary(total)
        return all(ok for _, ok, _ in self.results)

    def summary(self, total):
        bt = self.boot_times
        rows = [("boot to /init (s)", f"min {min(bt):.1f} / median {statistics.median(bt):.1f} / "
                                      f"max {max(bt):.1f} over {len(bt)} boots" if bt else "n/a")]
        rows += self.table
        rows.append(("rig time (s)", f"{total:.0f}"))
        w = max(len(r[0]) for r in rows)
        print("\n=== grabd QEMU rig summary ===")
        for k, v in rows:
            print(f"{k:<{w}}  {v}")
        for name, ok, reason in self.results:
            print(f"{'PASS' if ok else 'FAIL'} {name}" + ("" if ok else f": {reason}"))
        npass = sum(1 for r in self.results if r[1])
        print(f"qemu-rig: {npass} passed, {len(self.results) - npass} failed", flush=True)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--build", required=True)
    p.add_argument("--kernel", required=True)
    p.add_argument("--initrd", required=True)
    p.add_argument("--grabd", required=True)
    p.add_argument("--logreplay", required=True)
    p.add_argument("--clk", required=True)
    p.add_argument("--standin", action="store_true")
    p.add_argument("--only", help="comma-separated scenario names")
    p.add_argument("--full", action="store_true",
                   help="long sweep: 60 cuts, a 20 s second recording in the write log, every flush point")
    p.add_argument("--cuts", type=int, help="power cuts (default 20, 60 with --full)")
    p.add_argument("--loaded-cuts", type=int,
                   help="power-cut-loaded: power cuts (default 8, 20 with --full)")
    p.add_argument("--marks", type=int, help="flush points to check (default 200)")
    p.add_argument("--all-marks", action="store_true", help="check every flush point")
    p.add_argument("--seed", type=int, help="random seed for cut moments")
    p.add_argument("--jobs", type=int, default=2, help="flush points checked in parallel")
    p.add_argument("--card-mb", type=int, default=64, help="disk-full card size")
    p.add_argument("--floor-mb", type=int, default=32, help="disk-full: grabd's min_free_mb")
    p.add_argument("--systemd-timeout", type=int, default=900,
                   help="systemd-guest: seconds each of its two boots may take")
    p.add_argument("--headroom-mb", type=int, default=4,
                   help="disk-full: MiB above the floor left free by other data")
    a = p.parse_args()
    ok = Rig(a).run()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
