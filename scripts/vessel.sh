#!/usr/bin/env bash
# The device program built from this checkout and run with the given arguments (the
# README's main command). The build needs one system library a fresh Debian lacks, libclang
# (bindgen generates the V4L2 camera bindings with it): installed first when missing.
# Paths in the arguments are taken from the directory you run it in.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

if ! ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so'; then
  echo "vessel.sh: installing libclang-dev (needed to build the V4L2 bindings; once)" >&2
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libclang-dev >/dev/null
fi
cargo build --release --manifest-path "$root/Cargo.toml" -p vessel-runtime --bin vessel
exec "$root/target/release/vessel" "$@"
