#!/usr/bin/env bash
# The test command (README, .ci/run): every workspace test on this machine (x86_64, including
# the board-in-a-VM test), then the runtime's tests built for aarch64 and run under
# qemu-aarch64-static, then the VM test again with an emulated Cortex-A72 and the aarch64
# build of `vessel`. Installs its packages first when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

for need in qemu-system-x86_64 qemu-system-aarch64 qemu-aarch64-static busybox depmod cpio aarch64-linux-gnu-gcc /usr/bin/rustc; do
  command -v "$need" >/dev/null || { echo "test.sh: $need missing: installing test dependencies"; scripts/install-test-deps.sh; break; }
done

cargo test --release --workspace
scripts/cross-build.sh aarch64 --tests
scripts/cross-build.sh aarch64
scripts/vm-test.sh aarch64 target-cross/aarch64-unknown-linux-gnu/release/vessel
