#!/usr/bin/env bash
# Installs what the tests need on a Debian 12 machine (CI runs this from .ci/run):
# qemu (system emulators for the VM test, user-mode for aarch64 unit tests), busybox, kmod,
# cpio, libclang (the v4l crate's bindings), and Debian's Rust with the aarch64 standard
# library for cross-building (rustup cannot fetch other targets here).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo

# qemu-utils on these machines comes from bookworm-backports: qemu-system must match it.
if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
  printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    | $SUDO tee /etc/apt/sources.list.d/backports.sources >/dev/null
fi
dpkg --print-foreign-architectures | grep -qx arm64 || $SUDO dpkg --add-architecture arm64
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq -t bookworm-backports qemu-system-x86 qemu-system-arm qemu-user-static >/dev/null
$SUDO apt-get install -y -qq libclang-dev busybox-static kmod cpio xz-utils python3 \
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross rustc-web cargo-web libstd-rust-web-dev:arm64 >/dev/null
echo "test dependencies installed"
