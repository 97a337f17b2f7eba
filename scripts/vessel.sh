#!/usr/bin/env bash
# The device program built from this checkout and run with the given arguments (the
# README's main command). The build needs one system library a fresh Debian lacks, libclang
# (bindgen generates the V4L2 camera bindings with it): installed first when missing.
# Run it from the repository's root: paths in the arguments, and the default model
# (models/drive-int8.nnef.tgz), are taken from the directory you run it in.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

# Debian's package, when dpkg can tell; elsewhere the build says what is missing.
if command -v dpkg-query >/dev/null &&
  [ "$(dpkg-query -W -f='${Status}' libclang-dev 2>/dev/null)" != "install ok installed" ]; then
  echo "vessel.sh: installing libclang-dev (needed to build the V4L2 bindings; once)" >&2
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libclang-dev >/dev/null
fi
cargo build --release --manifest-path "$root/Cargo.toml" -p vessel-runtime --bin vessel
exec "$root/target/release/vessel" "$@"
