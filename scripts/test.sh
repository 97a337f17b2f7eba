#!/usr/bin/env bash
# The test command (README, .ci/run): every workspace test on this machine (x86_64, including
# the board-in-a-VM test), then the runtime's tests built for aarch64 and run under
# qemu-aarch64-static, then the VM test again with an emulated Cortex-A72 and the aarch64
# build of `vessel`; the trainer's LibTorch backend too where scripts/libtorch.sh has set it
# up. Installs its packages first when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

for need in qemu-system-x86_64 qemu-system-aarch64 qemu-aarch64-static busybox depmod cpio aarch64-linux-gnu-gcc /usr/bin/rustc; do
  command -v "$need" >/dev/null || { echo "test.sh: $need missing: installing test dependencies"; scripts/install-test-deps.sh; break; }
done

# Tests that need the datasets, qemu or Debian's mirror are #[ignore = "needs …"] so that a
# plain `cargo test` passes anywhere; here they all run.
cargo test --release --workspace -- --include-ignored
# The trainer's LibTorch backend, whenever scripts/libtorch.sh has set libtorch up here (it
# is several GB from PyPI: the tests do not install it).
if VESSEL_LIBTORCH_CHECK_ONLY=1 scripts/libtorch.sh true 2>/dev/null; then
  scripts/libtorch.sh cargo test --release -p vessel-trainer --features tch --test libtorch
else
  echo "test.sh: no libtorch set up (scripts/libtorch.sh): the tch backend's tests are skipped"
fi
scripts/cross-build.sh aarch64 --tests
scripts/cross-build.sh aarch64
scripts/vm-test.sh aarch64 target-cross/aarch64-unknown-linux-gnu/release/vessel
