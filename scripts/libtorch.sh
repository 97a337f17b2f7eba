#!/usr/bin/env bash
# Runs a command with LibTorch set up for the trainer's `tch` backend (README, "Fast
# training"): the first time, makes a Python venv holding torch==2.9.0 from PyPI (the
# libtorch that burn's tch crate expects; several GB with its CUDA dependencies), then sets
# the variables its build and run need and runs the command:
#   scripts/libtorch.sh cargo run --release -p vessel-trainer --features tch -- bench --all-backends
# Its builds go to target/tch ($CARGO_TARGET_DIR): the binary is target/tch/release/vessel-train.
# With no command it prints the variables, for `eval "$(scripts/libtorch.sh)"`. With
# VESSEL_LIBTORCH_CHECK_ONLY=1 it installs nothing and fails where torch is not set up.
# The venv lives outside the repository: $VESSEL_TORCH_VENV, else ~/.cache/vessel/torch-2.9.0.
set -euo pipefail

TORCH_VERSION=2.9.0
venv=${VESSEL_TORCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/vessel/torch-$TORCH_VERSION}

have_torch() {
  [ -x "$venv/bin/python" ] &&
    [ "$("$venv/bin/python" -W ignore -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null)" = "$TORCH_VERSION" ]
}

if ! have_torch; then
  # For callers that only ask whether libtorch is set up (scripts/test.sh).
  [ "${VESSEL_LIBTORCH_CHECK_ONLY:-}" != 1 ] || exit 1
  echo "libtorch.sh: installing torch==$TORCH_VERSION into $venv (once; a few minutes, several GB)" >&2
  command -v python3 >/dev/null || { echo "libtorch.sh: python3 is needed to install torch" >&2; exit 1; }
  if ! python3 -m venv "$venv" 2>/dev/null; then
    echo "libtorch.sh: python3 cannot make a venv; installing Debian's python3-venv" >&2
    SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --progress-bar off "torch==$TORCH_VERSION"
  have_torch || { echo "libtorch.sh: torch $TORCH_VERSION did not install into $venv" >&2; exit 1; }
fi

torch_lib=$("$venv/bin/python" -W ignore -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
# torch-sys finds libtorch through the venv's python; the binary finds it at run time
# through LD_LIBRARY_PATH.
export LIBTORCH_USE_PYTORCH=1
export PATH="$venv/bin:$PATH"
export LD_LIBRARY_PATH="$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export VESSEL_LIBTORCH="$torch_lib"
# Its own target folder: a tch build and a default (Flex) build differ in burn's features,
# and sharing one folder would rebuild burn and swap target/release/vessel-train at each turn.
root=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target/tch}"

if [ $# -eq 0 ]; then
  printf 'export LIBTORCH_USE_PYTORCH=1\nexport PATH=%q\nexport LD_LIBRARY_PATH=%q\nexport VESSEL_LIBTORCH=%q\nexport CARGO_TARGET_DIR=%q\n' \
    "$PATH" "$LD_LIBRARY_PATH" "$VESSEL_LIBTORCH" "$CARGO_TARGET_DIR"
  exit 0
fi
exec "$@"
