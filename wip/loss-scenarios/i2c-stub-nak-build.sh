#!/usr/bin/env bash
# Build i2c-stub out of tree for the guest kernel with one addition: a writable `nak`
# parameter. While it is 1 the stub answers no address (ENXIO, what a real adapter
# reports when a chip is gone from the bus), so the imu-loss scenario can take the IMU
# away mid-recording and give it back: the stock stub cannot be removed while grabd
# holds /dev/i2c-N open, and it never fails a transfer.
# Usage: build KERNEL_VERSION OUT_DIR  (e.g. 6.1.0-57-amd64 target/qemu/i2c-stub-nak)
# Leaves OUT_DIR/i2c-stub.ko; cached (rebuilt only when missing). Needs apt (root).
set -euo pipefail
KV=$1
OUT=$(mkdir -p "$2" && cd "$2" && pwd)
[[ -f $OUT/i2c-stub.ko ]] && exit 0
log() { printf '[i2c-stub-nak] %s\n' "$*" >&2; }
pkgs=("linux-headers-$KV" linux-source-6.1)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
	log "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get install -y -o DPkg::Lock::Timeout=300 --no-install-recommends "${missing[@]}" >"$OUT/apt.log" 2>&1 ||
		{ apt-get update >>"$OUT/apt.log" 2>&1 &&
			apt-get install -y -o DPkg::Lock::Timeout=300 --no-install-recommends "${missing[@]}" >>"$OUT/apt.log" 2>&1; } ||
		{ tail -20 "$OUT/apt.log"; log "apt-get install failed"; exit 1; }
fi
SRC=$OUT/src
rm -rf "$SRC" && mkdir -p "$SRC"
tarball=$(ls /usr/src/linux-source-6.1.tar.* | head -n1)
top=linux-source-6.1 # the tarball's top folder
tar -xf "$tarball" -C "$SRC" "$top/drivers/i2c/i2c-stub.c"
cp "$SRC/$top/drivers/i2c/i2c-stub.c" "$SRC/i2c-stub.c"
python3 - "$SRC/i2c-stub.c" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
anchor = 'MODULE_PARM_DESC(functionality, "Override functionality bitfield");\n'
check = "\t/* Search for the right chip */\n"
if anchor not in s or check not in s:
    sys.exit("i2c-stub.c: the functionality parameter or the chip search was not found")
s = s.replace(anchor, anchor + '\nstatic bool nak;\nmodule_param(nak, bool, 0644);\n'
              'MODULE_PARM_DESC(nak, "Answer no address (ENXIO), as a chip gone from the bus");\n', 1)
s = s.replace(check, "\tif (READ_ONCE(nak))\n\t\treturn -ENXIO;\n\n" + check, 1)
open(p, "w").write(s)
PY
echo "obj-m += i2c-stub.o" >"$SRC/Makefile"
make -C "/usr/src/linux-headers-$KV" M="$SRC" modules >"$OUT/make.log" 2>&1 ||
	{ tail -30 "$OUT/make.log"; log "make failed"; exit 1; }
cp "$SRC/i2c-stub.ko" "$OUT/i2c-stub.ko"
log "built $(modinfo -F vermagic "$OUT/i2c-stub.ko")"
