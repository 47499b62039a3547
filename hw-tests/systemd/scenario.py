"""systemd-guest: grabd's unit, as the Debian package ships it, under a real systemd.

Host half of the scenario (the guest half is guest/grabd-rig; hw-tests/systemd/build
makes the guest). Boot 1 runs the checks of issue 16 and ends in a recording whose
power the host cuts; boot 2 (same /data disk) checks that boot recovery finished it.
The guest names the file each check produced ("file=PATH"); the host reads /data back
itself (grabd verify + ffprobe at native speed, fsck), and a check passes only if the
guest saw it pass and its file verifies. One PASS/FAIL line per check, named
"systemd-guest: <check>", printed once both boots are done.
"""
import json
import os
import re
import subprocess

CHECKS_BOOT1 = ["ready", "press", "stop", "watchdog", "security", "journal"]
DATA, SPOOL = "grabd/recordings", "grabd/spool"
# The guest records the rig's real sources (hw-tests/qemu/grabd-sources.toml): every
# file has each track, tagged with its device by grabd, with packets in it (a device
# the hardening blocked would fail the start or leave its track empty; how many is
# printed, not judged: a starved TCG guest's vivid misses up to half its frames).
SOURCE_TRACKS = {"cam0": ("video", "/dev/video0"), "cam1": ("video", "/dev/video1"),
                 "imu": ("subtitle", "/dev/i2c-0@0x68")}


def source_tracks(mkv):
    """(what is wrong with the tracks of the real sources in `mkv` or None, packets per
    track)."""
    p = subprocess.run(["ffprobe", "-v", "error", "-count_packets", "-show_entries",
                        "stream=codec_type,nb_read_packets:stream_tags", "-of", "json", mkv],
                       capture_output=True, text=True)
    streams = json.loads(p.stdout or "{}").get("streams", [])
    got = {s.get("tags", {}).get("title"): s for s in streams}
    bad, packets = [], {}
    for name, (kind, device) in SOURCE_TRACKS.items():
        s = got.get(name)
        packets[name] = int(s.get("nb_read_packets", 0)) if s else 0
        if not s or s.get("codec_type") != kind or s.get("tags", {}).get("DEVICE") != device \
                or packets[name] == 0:
            bad.append(f"{name}: {s and (s.get('codec_type'), s.get('tags', {}).get('DEVICE'))}")
    return (f"source tracks {bad} (want {SOURCE_TRACKS})" if bad else None), packets


def run(rig, snapshot_mount, fsck_clean, Card, log):
    name = "systemd-guest"
    d = os.path.join(rig.a.build, "systemd")
    root = f"file={os.path.join(d, 'root.img')},format=raw,if=virtio,snapshot=on,index=0"
    data = Card(os.path.join(rig.work, "systemd-data.img"), 256, label="DATA")
    # TCG like every rig guest; -cpu max has RDRAND, so the kernel's RNG does not wait.
    boot = dict(initrd=os.path.join(d, "initramfs.cpio"), qemu_args=["-cpu", "max"])
    reports = {}  # check -> (ok, detail)

    def collect(g, names):
        for c in names:
            hit = g.wait_for(rf"^@rig check {re.escape(c)} (ok|fail) ?(.*)")
            reports[c] = (hit[1].group(1) == "ok", hit[1].group(2)) if hit else \
                (False, f"no report from the guest (see {g.logf.name})")

    def reached(g, tag):
        up = g.wait_for(r"^@rig system (\S+) uptime=([0-9.]+)")
        if not up:
            reports[tag] = (False, f"never reached multi-user (see {g.logf.name})")
            return False
        secs = up[0] - g.t_start
        at = g.rig_lines("analyze-time")
        log(f"{name} {tag}: system {up[1].group(1)} {secs:.1f} s after QEMU started; "
            f"{at[0][1] if at else ''}")
        if up[1].group(1) != "running":
            log(f"{name}: failed units: {g.rig_lines('failed-units')}")
        rig.table.append((f"{name}: QEMU start to multi-user, {tag} (s)", f"{secs:.1f}"))
        return True

    # --- boot 1: the checks, then a power cut mid-recording --------------------------
    g = rig.boot(f"{name}-1", "systemd", {"phase": "main"}, [root, data.drive(1)],
                 rig.a.systemd_timeout, **boot)
    if reached(g, "boot 1"):
        collect(g, CHECKS_BOOT1)
    cut = g.wait_for(r"^@rig cut-now (\S+)")
    g.kill()
    for what, label in (("stop-took", "systemctl stop while recording"),
                        ("watchdog-took", "SIGSTOP to restarted by the watchdog")):
        took = g.rig_lines(what)
        if took:
            rig.table.append((f"{name}: {label} (s)", took[0][1]))

    # --- boot 2: boot recovery of the cut recording -----------------------------------
    if not cut:
        reports["power-cut"] = (False, f"no recording to cut: {g.rig_lines('cut-failed')}")
    else:
        g = rig.boot(f"{name}-2", "systemd", {"phase": "after-cut", "cut_id": cut[1].group(1)},
                     [root, data.drive(1)], rig.a.systemd_timeout, **boot)
        if reached(g, "boot 2"):
            collect(g, ["power-cut"])
        if not g.wait_for(r"^@rig end"):
            log(f"{name}: boot 2 did not finish (see {g.logf.name})")
        g.finish(30)

    # --- /data read back on the host ---------------------------------------------------
    with snapshot_mount(rig, data.path) as (mnt, snap):
        out = os.path.join(mnt, DATA)
        files = sorted(f for f in os.listdir(out) if f.endswith(".mkv")) if os.path.isdir(out) else []
        verified = {f"/data/{DATA}/{f}": rig.verify(os.path.join(out, f)) for f in files}
        for f in files:
            wrong, packets = source_tracks(os.path.join(out, f))
            rig.table.append((f"{name}: packets in {f}", ", ".join(f"{k} {v}" for k, v in packets.items())))
            if wrong and verified[f"/data/{DATA}/{f}"].get("ok"):
                verified[f"/data/{DATA}/{f}"] = {"ok": False, "error": wrong}
        spool = os.path.join(mnt, SPOOL)
        left = os.listdir(spool) if os.path.isdir(spool) else []
        fsck_ok, fsck_tail = fsck_clean(snap)
    for c, (ok, detail) in reports.items():
        for path in re.findall(r"file=(\S+?);?(?:\s|$)", detail):
            v = verified.get(path, {"ok": False, "error": "not on /data"})
            if not v.get("ok"):
                ok, detail = False, f"{detail}; host verify of {path}: {v}"
        rig.result(f"{name}: {c}", ok, detail)
    bad = [f"{p}: {v}" for p, v in verified.items() if not v.get("ok")]
    if left:
        bad.append(f"spool left: {left}")
    if not fsck_ok:
        bad.append(f"fsck: {fsck_tail}")
    # press, stop, watchdog and power cut: one recording each
    if len(files) != 4:
        bad.append(f"{len(files)} recordings on /data, want 4: {files}")
    rig.result(f"{name}: every file on /data verifies on the host", not bad, "; ".join(bad))
