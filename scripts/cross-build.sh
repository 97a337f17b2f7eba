#!/usr/bin/env bash
# Cross-builds `vessel` (or, with --tests, the runtime's test binaries) for a Raspberry Pi with
# Debian's Rust toolchain, which carries the ARM standard libraries that rustup cannot fetch
# here (see ../shared/notes/vm-board-testing.md).
#
#   scripts/cross-build.sh aarch64|armv7 [--tests]
#
# --tests builds the runtime's unit tests and the integration tests that need no other
# program (display reference, the frame arena, int8 vs f32 on DRIVE) and runs them inside the aarch64 VM of
# scripts/vm-test.sh (an emulated Cortex-A72): test harness binaries built by Debian's Rust
# hang under qemu-aarch64-static here (a one-test crate does too), whole programs do not.
#
# aarch64: Raspberry Pi OS 64-bit (Pi 3/4/5, Zero 2 W); armv7: Raspberry Pi OS 32-bit.
# Output: target-cross/<triple>/release/vessel (separate target dir: another compiler).
set -euo pipefail
arch=${1:?usage: cross-build.sh aarch64|armv7 [--tests]}
mode=${2:-}
root=$(cd "$(dirname "$0")/.." && pwd)
case $arch in
  aarch64) triple=aarch64-unknown-linux-gnu; gcc=aarch64-linux-gnu-gcc; sysroot=/usr/aarch64-linux-gnu;;
  armv7) triple=armv7-unknown-linux-gnueabihf; gcc=arm-linux-gnueabihf-gcc; sysroot=/usr/arm-linux-gnueabihf;;
  *) echo "cross-build: unknown architecture '$arch' (aarch64 or armv7)" >&2; exit 1;;
esac
[ -x /usr/bin/rustc ] || { echo "cross-build: Debian's rustc-web is not installed (scripts/install-test-deps.sh)" >&2; exit 1; }
command -v $gcc >/dev/null || { echo "cross-build: $gcc is not installed" >&2; exit 1; }
upper=$(echo "$triple" | tr 'a-z-' 'A-Z_')
export RUSTC=/usr/bin/rustc
export "CARGO_TARGET_${upper}_LINKER=$gcc"
export "CARGO_TARGET_${upper}_RUNNER=qemu-${arch/armv7/arm}-static -L $sysroot"
export "BINDGEN_EXTRA_CLANG_ARGS_${triple//-/_}=-I$sysroot/include"
export CARGO_TARGET_DIR=$root/target-cross
cd "$root"
if [ "$mode" = --tests ]; then
  [ "$arch" = aarch64 ] || { echo "cross-build: --tests is for aarch64" >&2; exit 1; }
  # The build's output goes to stderr through the inherited descriptor: `tee /dev/stderr`
  # reopens the file behind it and, when stderr is a log file, truncates everything before.
  built=$(/usr/bin/cargo test --release --target "$triple" -p vessel-runtime --lib --test display --test large_blocks \
    --test int8_agreement --no-run 2>&1 | tee >(cat >&2) | sed -n 's/.*Executable .*(\(.*\))$/\1/p')
  [ -n "$built" ] || { echo "cross-build: no test binaries were built" >&2; exit 1; }
  # shellcheck disable=SC2086 # one path per word
  "$root/scripts/vm-test.sh" aarch64 --tests $built
else
  /usr/bin/cargo build --release --target "$triple" -p vessel-runtime --bin vessel
  echo "built $CARGO_TARGET_DIR/$triple/release/vessel"
fi
