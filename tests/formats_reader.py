#!/usr/bin/python3
"""A reader of EuRoC/ASL and TUM RGB-D folders written from the formats' own
descriptions (not from grabd's code), for tests/export.rs.

    formats_reader.py euroc DIR   |   formats_reader.py tum DIR
    formats_reader.py frames DIR [REFERENCE_DIR]

Prints one JSON object of what it read. It fails (exit 1, message on stderr) on
anything a loader of the format would trip over: a missing header, an image that is
not where its list says, a file name that is not its timestamp, a wrong image mode.

EuRoC (ASL): mav0/camN/data.csv "#timestamp [ns],filename", images
mav0/camN/data/<ns>.png; mav0/imuN/data.csv "#timestamp [ns],w_RS_S_x [rad s^-1],
w_RS_S_y,w_RS_S_z,a_RS_S_x [m s^-2],a_RS_S_y,a_RS_S_z"; sensor.yaml per sensor with
T_BS {cols: 4, rows: 4, data: [16 values, row-major]}.
TUM RGB-D: rgb.txt and depth.txt, "#" comment lines then "timestamp filename" with
float seconds since the Unix epoch; depth as 16-bit PNG; associations.txt
"t_rgb file_rgb t_depth file_depth"; accelerometer.txt "timestamp ax ay az".
"""

import hashlib
import json
import os
import re
import sys

import numpy as np
from PIL import Image


def fail(message):
    sys.stderr.write(f"formats_reader: {message}\n")
    sys.exit(1)


def data_lines(path):
    """Lines of a text file that are not comments, split on commas or spaces."""
    rows = []
    with open(path, encoding="ascii") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            rows.append([field.strip() for field in re.split(r"[,\s]+", line)])
    return rows


def first_line(path):
    with open(path, encoding="ascii") as f:
        return f.readline().rstrip("\n")


def t_bs(sensor_yaml):
    """The 16 numbers of T_BS's data list (flow style, possibly over several lines)."""
    text = open(sensor_yaml, encoding="utf-8").read()
    match = re.search(r"T_BS:\s*\n\s*cols:\s*4\s*\n\s*rows:\s*4\s*\n\s*data:\s*\[([^\]]*)\]", text)
    if not match:
        fail(f"{sensor_yaml}: no T_BS with cols: 4, rows: 4, data: [...]")
    values = [float(v) for v in match.group(1).replace("\n", " ").split(",")]
    if len(values) != 16:
        fail(f"{sensor_yaml}: T_BS has {len(values)} values, not 16")
    return values


def euroc(root):
    mav0 = os.path.join(root, "mav0")
    out = {"cams": {}, "imus": {}}
    for name in sorted(os.listdir(mav0)):
        folder = os.path.join(mav0, name)
        if name.startswith("cam"):
            csv = os.path.join(folder, "data.csv")
            if first_line(csv) != "#timestamp [ns],filename":
                fail(f"{csv}: header {first_line(csv)!r}")
            times, sizes, modes = [], set(), set()
            for t, filename in data_lines(csv):
                if filename != f"{t}.png":
                    fail(f"{csv}: file {filename} is not named by its time {t}")
                image = Image.open(os.path.join(folder, "data", filename))
                sizes.add(image.size)
                modes.add(image.mode)
                times.append(int(t))
            pngs = [n for n in os.listdir(os.path.join(folder, "data")) if n.endswith(".png")]
            out["cams"][name] = {
                "t_ns": times,
                "pngs": len(pngs),
                "sizes": sorted(list(s) for s in sizes),
                "modes": sorted(modes),
                "T_BS": t_bs(os.path.join(folder, "sensor.yaml")),
            }
        elif name.startswith("imu"):
            csv = os.path.join(folder, "data.csv")
            header = first_line(csv).split(",")
            want = ["#timestamp [ns]"] + [f"w_RS_S_{a} [rad s^-1]" for a in "xyz"] + [
                f"a_RS_S_{a} [m s^-2]" for a in "xyz"
            ]
            if header != want:
                fail(f"{csv}: header {header}")
            rows = data_lines(csv)
            out["imus"][name] = {
                "t_ns": [int(r[0]) for r in rows],
                "w": [[float(v) for v in r[1:4]] for r in rows],
                "a": [[float(v) for v in r[4:7]] for r in rows],
                "T_BS": t_bs(os.path.join(folder, "sensor.yaml")),
            }
    out["kalibr"] = kalibr(os.path.join(root, "kalibr"))
    return out


def kalibr(root):
    """Kalibr's bagcreater layout: camN/<ns>.png, imuN.csv (first line skipped), and a
    camchain.yaml whose T_cam_imu rows are block-style lists of 4 numbers."""
    out = {"cams": {}, "imus": {}, "T_cam_imu": {}, "timeshift_cam_imu": {}}
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name)
        if name.startswith("cam") and os.path.isdir(path):
            out["cams"][name] = sorted(int(n[:-4]) for n in os.listdir(path) if n.endswith(".png"))
        elif name.startswith("imu") and name.endswith(".csv"):
            with open(path, encoding="ascii") as f:
                f.readline()
                out["imus"][name[:-4]] = [int(line.split(",")[0]) for line in f if line.strip()]
    chain = os.path.join(root, "camchain.yaml")
    if os.path.exists(chain):
        cam = None
        rows = []
        for line in open(chain, encoding="utf-8"):
            if re.match(r"^cam\d+:", line):
                cam = line.split(":")[0]
            elif line.strip().startswith("- [") and cam:
                rows.append([float(v) for v in line.strip()[3:-1].split(",")])
                if len(rows) == 4:
                    out["T_cam_imu"][cam] = rows
                    rows = []
            elif line.strip().startswith("timeshift_cam_imu:") and cam:
                out["timeshift_cam_imu"][cam] = float(line.split(":")[1])
    return out


def tum_list(root, name, mode_check):
    entries = []
    for t, filename in data_lines(os.path.join(root, name)):
        if filename != f"{os.path.dirname(filename)}/{t}.png":
            fail(f"{name}: file {filename} is not named by its time {t}")
        image = Image.open(os.path.join(root, filename))
        mode_check(filename, image)
        entries.append((t, filename, image))
    return entries


def tum(root):
    def rgb_mode(filename, image):
        if image.mode != "RGB":
            fail(f"{filename}: mode {image.mode}, TUM's rgb images are RGB")

    def depth_mode(filename, image):
        if image.mode not in ("I;16", "I;16B", "I"):
            fail(f"{filename}: mode {image.mode}, TUM's depth images are 16-bit")

    rgb = tum_list(root, "rgb.txt", rgb_mode)
    depth = tum_list(root, "depth.txt", depth_mode)
    depth_frames = []
    for t, filename, image in depth:
        values = np.array(image).astype("<u2")
        depth_frames.append(
            {
                "t": t,
                "size": list(image.size),
                "sha256_le16": hashlib.sha256(values.tobytes()).hexdigest(),
                "max": int(values.max()),
            }
        )
    pairs = []
    for t_rgb, f_rgb, t_depth, f_depth in data_lines(os.path.join(root, "associations.txt")):
        for f in (f_rgb, f_depth):
            if not os.path.exists(os.path.join(root, f)):
                fail(f"associations.txt names {f}, which is not there")
        pairs.append([t_rgb, t_depth])
    accel = []
    accel_path = os.path.join(root, "accelerometer.txt")
    if os.path.exists(accel_path):
        accel = [[r[0]] + [float(v) for v in r[1:4]] for r in data_lines(accel_path)]
    return {
        "rgb": [t for t, _, _ in rgb],
        "rgb_sizes": sorted({image.size for _, _, image in rgb}),
        "depth": depth_frames,
        "associations": pairs,
        "accelerometer": accel,
    }


def frames(root, reference=None):
    """grabd's plain frames: <stream>/frames.csv ("#timestamp [ns],media_time [us],
    filename") and the images it names. With a reference folder (another export of the
    same frames), the mean absolute difference of each image from the reference image
    of the same time, in 8-bit RGB levels."""
    out = {}
    for name in sorted(os.listdir(root)):
        csv = os.path.join(root, name, "frames.csv")
        if not os.path.exists(csv):
            continue
        times, formats, modes, sizes, names, diffs = [], set(), set(), set(), [], []
        for t, _media, filename in data_lines(csv):
            if os.path.splitext(filename)[0] != t:
                fail(f"{csv}: file {filename} is not named by its time {t}")
            image = Image.open(os.path.join(root, name, filename))
            image.load()
            formats.add(image.format)
            modes.add(image.mode)
            sizes.add(image.size)
            times.append(int(t))
            names.append(filename)
            if reference is not None and image.mode == "RGB":
                ref_dir = os.path.join(reference, name)
                ref = [n for n in os.listdir(ref_dir) if os.path.splitext(n)[0] == t]
                if len(ref) != 1:
                    fail(f"no reference image at {t} in {ref_dir}")
                ref_image = Image.open(os.path.join(ref_dir, ref[0])).convert("RGB")
                a = np.asarray(image, dtype=np.int16)
                b = np.asarray(ref_image, dtype=np.int16)
                diffs.append(float(np.abs(a - b).mean()))
        files = [n for n in os.listdir(os.path.join(root, name)) if n != "frames.csv"]
        out[name] = {
            "t_ns": times,
            "files": len(files),
            "extensions": sorted({os.path.splitext(n)[1] for n in names}),
            "formats": sorted(formats),
            "modes": sorted(modes),
            "sizes": sorted(list(s) for s in sizes),
            "max_mean_abs_diff": max(diffs) if diffs else None,
        }
    return out


def main():
    if len(sys.argv) not in (3, 4) or sys.argv[1] not in ("euroc", "tum", "frames"):
        fail("usage: formats_reader.py euroc|tum DIR | frames DIR [REFERENCE_DIR]")
    if sys.argv[1] == "frames":
        print(json.dumps(frames(*sys.argv[2:])))
        return
    read = euroc if sys.argv[1] == "euroc" else tum
    print(json.dumps(read(sys.argv[2])))


if __name__ == "__main__":
    main()
