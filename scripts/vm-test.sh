#!/usr/bin/env bash
# Board-in-a-VM test: boots a Debian kernel under qemu-system with the `vivid` virtual camera
# and a `bochs` framebuffer, runs `vessel camera` for a few frames from /dev/video0, then reads
# the screen back through the qemu monitor (screendump) and checks it against what the program
# says it drew.
#
#   scripts/vm-test.sh x86_64|aarch64 PATH/TO/vessel [FRAMES]
#   scripts/vm-test.sh x86_64|aarch64 --tests TEST_BINARY...
#
# The second form runs cargo test binaries (built for that architecture) inside the VM, with
# the files they read (models, boards, reference images, three DRIVE test images) at the
# same paths as on the build machine. It exists because test harness binaries hang under
# qemu-aarch64-static (user mode) here, while they run under system emulation.
#
# Needs (scripts/install-test-deps.sh): qemu-system-x86 / qemu-system-arm, busybox-static,
# kmod, cpio, python3; downloads the kernel package from the Debian registry (cached in
# target/vm-test/). Facts behind the choices: ../shared/notes/vm-board-testing.md.
set -euo pipefail

arch=${1:?usage: vm-test.sh x86_64|aarch64 VESSEL_BINARY [FRAMES] | --tests BINARY...}
tests=()
if [ "${2:-}" = --tests ]; then
  for t in "${@:3}"; do tests+=("$(readlink -f "$t")"); done
  [ ${#tests[@]} -gt 0 ] || { echo "vm-test: --tests needs test binaries" >&2; exit 1; }
  binary=${tests[0]}
else
  binary=$(readlink -f "${2:?usage: vm-test.sh x86_64|aarch64 VESSEL_BINARY [FRAMES]}")
fi
frames=${3:-6}
root=$(cd "$(dirname "$0")/.." && pwd)
model=${VESSEL_VM_MODEL:-$root/models/drive-int8.nnef.tgz}
work=$root/target/vm-test/$arch
mkdir -p "$work"
cd "$work"

die() { echo "vm-test ($arch): $*" >&2; exit 1; }
[ -x "$binary" ] || die "$binary is not an executable"
[ -f "$model" ] || die "$model not found"

case $arch in
  x86_64)
    deb_arch=amd64; kpkg=linux-image-amd64; qemu=qemu-system-x86_64
    qemu_args=(-accel tcg -cpu max -vga std); console=ttyS0
    busybox_src=/bin/busybox
    ;;
  aarch64)
    deb_arch=arm64; kpkg=linux-image-arm64:arm64; qemu=qemu-system-aarch64
    qemu_args=(-M virt -cpu cortex-a72 -device bochs-display); console=ttyAMA0
    busybox_src=
    ;;
  *) die "unknown architecture '$arch' (x86_64 or aarch64)";;
esac
command -v "$qemu" >/dev/null || die "$qemu not installed (run scripts/install-test-deps.sh)"

# --- kernel and modules, resolved from the registry at run time (cached) ---------------
if [ ! -f kernel.ready ]; then
  rm -rf kernel debs && mkdir -p kernel debs
  pkg=$(apt-cache depends "$kpkg" | sed -n 's/^ *Depends: \(linux-image-[^ ]*\).*/\1/p' | head -1)
  [ -n "$pkg" ] || die "cannot resolve the kernel package behind $kpkg (apt-get update?)"
  echo "vm-test ($arch): downloading $pkg"
  (cd debs && apt-get download "$pkg" >/dev/null) || die "apt-get download $pkg failed"
  dpkg -x debs/*.deb kernel
  if [ "$arch" = aarch64 ]; then
    (cd debs && apt-get download busybox-static:arm64 >/dev/null) || die "apt-get download busybox-static:arm64 failed"
    mkdir -p bb && dpkg -x debs/busybox-static_*arm64.deb bb
  fi
  touch kernel.ready
fi
kver=$(ls kernel/lib/modules | head -1)
[ -n "$kver" ] || die "no modules in the kernel package"
vmlinuz=$(ls kernel/boot/vmlinuz-* | head -1)
[ -f kernel/lib/modules/$kver/modules.dep ] || depmod -b kernel "$kver"
[ "$arch" = aarch64 ] && busybox_src=$work/bb/bin/busybox
[ -x "$busybox_src" ] || die "busybox not found at $busybox_src"

# x86_64: boot the ELF vmlinux inside the bzImage (saves the ~10 s self-decompression).
kernel_image=$vmlinuz
if [ "$arch" = x86_64 ]; then
  if [ ! -f vmlinux ]; then
    python3 - "$vmlinuz" <<'PY' || true
import lzma, sys
data = open(sys.argv[1], "rb").read()
i = data.find(b"\xfd7zXZ\x00")
while i >= 0:
    try:
        out = lzma.LZMADecompressor().decompress(data[i:])
        if out[:4] == b"\x7fELF":
            open("vmlinux", "wb").write(out)
            break
    except lzma.LZMAError:
        pass
    i = data.find(b"\xfd7zXZ\x00", i + 1)
PY
  fi
  [ -f vmlinux ] && kernel_image=$work/vmlinux
fi

# --- initramfs: busybox init, modules, the program and its libraries, model, profile -------
rm -rf initrd && mkdir -p initrd/{bin,dev,proc,sys,tmp,mods,models,boards,captures}
cp "$busybox_src" initrd/bin/busybox
# One module per call: modprobe reads further names as the first module's parameters.
mods=$(for top in vivid bochs; do modprobe -d kernel -S "$kver" --show-depends "$top"; done \
  | awk '$1=="insmod" && !seen[$2]++ {print $2}')
[ -n "$mods" ] || die "module closure of vivid + bochs is empty"
: > initrd/mods/list
for m in $mods; do
  name=$(basename "$m")
  case $name in
    *.xz) xz -dc "$m" > "initrd/mods/${name%.xz}"; name=${name%.xz};;
    *.zst) zstd -qdc "$m" > "initrd/mods/${name%.zst}"; name=${name%.zst};;
    *) cp "$m" initrd/mods/;;
  esac
  echo "$name" >> initrd/mods/list
done
cp "$binary" initrd/vessel
if [ "$arch" = x86_64 ]; then
  for lib in $(ldd "$binary" | grep -o '/[^ ]*'); do
    mkdir -p "initrd$(dirname "$lib")"; cp -L "$lib" "initrd$lib"
  done
else
  sysroot=/usr/aarch64-linux-gnu
  mkdir -p initrd/lib initrd/lib/aarch64-linux-gnu
  cp -L $sysroot/lib/ld-linux-aarch64.so.1 initrd/lib/
  for lib in libc.so.6 libm.so.6 libgcc_s.so.1; do cp -L $sysroot/lib/$lib initrd/lib/aarch64-linux-gnu/; done
fi
cp "$model" initrd/models/drive-int8.nnef.tgz
cp "$root/boards/qemu-vm.toml" initrd/boards/
data=${VESSEL_DATA_DIR:-$root/../shared/data}
if [ ${#tests[@]} -gt 0 ]; then
  mkdir -p initrd/tests "initrd$root/runtime" initrd/data/DRIVE/test/images initrd/data/DRIVE/test/mask
  for t in "${tests[@]}"; do cp "$t" initrd/tests/; done
  cp -r "$root/runtime/tests" "initrd$root/runtime/"
  cp -r "$root/boards" "$root/models" "initrd$root/"
  for id in 01 08 15; do
    cp "$data/DRIVE/test/images/${id}_test.tif" initrd/data/DRIVE/test/images/
    cp "$data/DRIVE/test/mask/${id}_test_mask.gif" initrd/data/DRIVE/test/mask/
  done
fi
cat > initrd/init <<INIT
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
export LD_LIBRARY_PATH=/lib/aarch64-linux-gnu
for m in \$(cat /mods/list); do
  case \$m in vivid.ko) insmod /mods/\$m n_devs=1;; *) insmod /mods/\$m;; esac
done
# The framebuffer console's cursor would draw over the picture.
for v in /sys/class/vtconsole/vtcon*; do grep -q "frame buffer" \$v/name && echo 0 > \$v/bind; done
i=0; while [ ! -e /dev/video0 ] || [ ! -e /dev/fb0 ]; do i=\$((i+1)); [ \$i -gt 300 ] && break; sleep 0.1; done
[ -e /dev/fb0 ] || { echo "VESSEL-NOFB"; dmesg | grep -iE "bochs|drm|fb|insmod|module" | tail -30; }
if [ -d /tests ]; then
  export VESSEL_DATA_DIR=/data VESSEL_INT8_AGREEMENT_IDS=01
  cd $root/runtime
  for t in /tests/*; do \$t --test-threads=1 --include-ignored; echo "VESSEL-TEST \$(basename \$t) \$?"; done
else
cd /
cd /
: > /tmp/vessel.out
/vessel camera --board qemu-vm --frames $frames --shutter-at 2 --save-dir /captures --report-screen --no-keyboard > /tmp/vessel.out 2>&1 &
pid=\$!
# Hot-unplug the camera after the second frame and plug it back 4 s later: the program must
# say so, wait, reopen it and go on (with 6 frames, the last ones come from the reopened camera).
# (The log exists before the program starts, so the count is a number from the first look.)
i=0; while [ "\$(grep -c '^frame ' /tmp/vessel.out)" -lt 2 ] && kill -0 \$pid 2>/dev/null; do sleep 0.2; done
if kill -0 \$pid 2>/dev/null; then
  echo vivid.0 > /sys/bus/platform/drivers/vivid/unbind && echo VESSEL-UNPLUGGED
  sleep 4
  echo vivid.0 > /sys/bus/platform/drivers/vivid/bind && echo VESSEL-REPLUGGED
fi
wait \$pid
echo "VESSEL-EXIT \$?"
cat /tmp/vessel.out
fi
echo "VESSEL-SAVED \$(ls /captures | tr '\n' ' ')"
echo VESSEL-DONE
sleep 3600
INIT
chmod +x initrd/init
(cd initrd && find . | cpio -o -H newc --quiet | gzip -1 > ../initrd.cpio.gz)

# --- boot, wait for the program, read the screen back -----------------------------------
rm -f serial.log mon.sock screen.ppm
timeout=${VESSEL_VM_TIMEOUT:-900}; [ ${#tests[@]} -gt 0 ] && timeout=${VESSEL_VM_TIMEOUT:-2400}
memory=1024; [ ${#tests[@]} -gt 0 ] && memory=2048
"$qemu" "${qemu_args[@]}" -smp 2 -m $memory -nographic -net none -no-reboot \
  -monitor unix:mon.sock,server,nowait -kernel "$kernel_image" -initrd initrd.cpio.gz \
  -append "console=$console panic=-1 quiet loglevel=4" > serial.log 2>&1 &
qemu_pid=$!
trap 'kill $qemu_pid 2>/dev/null || true' EXIT
start=$(date +%s)
until grep -q VESSEL-DONE serial.log; do
  kill -0 $qemu_pid 2>/dev/null || { cat serial.log; die "qemu exited early"; }
  [ $(( $(date +%s) - start )) -lt "$timeout" ] || { tail -50 serial.log; die "timed out after ${timeout}s"; }
  sleep 1
done
echo "vm-test ($arch): program finished after $(( $(date +%s) - start )) s"
python3 - "$work" <<'PY'
import socket, sys, time, os
work = sys.argv[1]
s = socket.socket(socket.AF_UNIX)
s.connect(os.path.join(work, "mon.sock"))
def until_prompt():
    buf = b""
    deadline = time.time() + 60
    while b"(qemu)" not in buf:
        if time.time() > deadline:
            raise SystemExit("no (qemu) prompt from the monitor")
        buf += s.recv(4096)
    return buf
until_prompt()
s.sendall(f"screendump {os.path.join(work, 'screen.ppm')}\n".encode())
until_prompt()
s.sendall(b"quit\n")
time.sleep(0.5)
PY
wait $qemu_pid 2>/dev/null || true
trap - EXIT

# --- checks ---------------------------------------------------------------------------
if [ ${#tests[@]} -gt 0 ]; then
  grep -aE "^test |^test result|VESSEL-TEST" serial.log
  ran=$(grep -ac "^VESSEL-TEST " serial.log || true)
  bad=$(grep -aE "^VESSEL-TEST " serial.log | tr -d '\r' | awk '$3 != "0"' | wc -l)
  [ "$ran" -eq ${#tests[@]} ] && [ "$bad" -eq 0 ] || die "tests failed in the VM ($bad of $ran binaries failed, ${#tests[@]} expected)"
  echo "vm-test ($arch): all ${#tests[@]} test binaries passed in the VM"
  exit 0
fi
python3 - "$work" "$frames" <<'PY'
import hashlib, re, sys, os
work, frames = sys.argv[1], int(sys.argv[2])
log = open(os.path.join(work, "serial.log"), errors="replace").read()
def fail(msg):
    print(log[-4000:])
    raise SystemExit(f"FAIL: {msg}")
m = re.search(r"VESSEL-EXIT (\d+)", log)
if not m or m.group(1) != "0":
    fail(f"vessel camera exited with {m.group(1) if m else '?'}")
opened = re.findall(r"camera /dev/video0 \"vivid[^\"]*\": YUYV 640x480", log)
if len(opened) != 2:
    fail(f"expected the camera opened twice (start, after the replug), saw {len(opened)}")
if "VESSEL-UNPLUGGED" not in log or "VESSEL-REPLUGGED" not in log or "camera lost" not in log:
    fail("the unplug was not reported")
after_reopen = log[log.rindex(opened[-1]):]
if not re.search(r"^frame \d+ ", after_reopen, re.M):
    fail("no frame was processed after the camera came back")
drawn = re.findall(r"frame (\d+) seq \d+ latency_ms \d+ density ([0-9.]+) screen (\d+)x(\d+) sha256 ([0-9a-f]{64})", log)
if len(drawn) != frames:
    fail(f"{len(drawn)} frames reported drawn, expected {frames}")
saved = re.search(r"VESSEL-SAVED (.*)", log).group(1).split()
for suffix in ("frame.png", "mask.png", "overlay.png", "json"):
    if not any(f.endswith("00002." + suffix) for f in saved):
        fail(f"shutter capture of frame 2 lacks its .{suffix}: {saved}")
data = open(os.path.join(work, "screen.ppm"), "rb").read()
header = re.match(rb"P6\s+(\d+)\s+(\d+)\s+(\d+)\s", data)
if not header:
    fail("screendump is not a binary PPM")
w, h = int(header.group(1)), int(header.group(2))
pixels = data[header.end():]
last = drawn[-1]
if (w, h) != (int(last[2]), int(last[3])):
    fail(f"screen is {w}x{h}, the program drew {last[2]}x{last[3]}")
got = hashlib.sha256(pixels[: w * h * 3]).hexdigest()
if got != last[4]:
    fail(f"screen content differs from what the program drew (screen {got}, program {last[4]})")
lit = sum(1 for i in range(0, w * h * 3, 3 * 97) if pixels[i:i + 3] != b"\0\0\0")
print(f"vm-test ok: {frames} frames, camera unplugged and reopened, screen {w}x{h} matches the program's last frame (sha256 {got[:16]}…), "
      f"{lit} of {w * h // 97} sampled pixels lit, vessel density {float(last[1]):.3f}, capture saved")
PY
