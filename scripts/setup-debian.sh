#!/usr/bin/env bash
# Installs every Debian 12 package bitmix needs. Idempotent: installs only what is missing,
# and runs `apt-get update` only when something is. Works as root or through sudo.
#
#   scripts/setup-debian.sh            build tools, libraries, data, cross toolchain
#   scripts/setup-debian.sh --peers    also the benchmark peers (oneDNN, PyTorch)
set -euo pipefail

packages=(
  build-essential cmake ninja-build git pkg-config
  ccache                         # rebuilds of unchanged sources come from the cache (CMake uses it when found)
  libeigen3-dev libfmt-dev zlib1g-dev nlohmann-json3-dev
  googletest libgtest-dev libgmock-dev libbenchmark-dev
  dataset-fashion-mnist          # Fashion-MNIST IDX files in /usr/share/datasets/fashion-mnist
  libjpeg-dev                    # ../shared/data/cifar10/make-cifar10-bin.sh decodes the JPEG copy
  g++-aarch64-linux-gnu qemu-user  # the NEON kernels are cross-built and run under emulation
  clang-14 libclang-rt-14-dev    # scripts/fuzz.sh: the libFuzzer targets in tests/fuzz build with Clang
  libonnx-dev libprotobuf-dev    # bitmix import (ONNX); optional: without them the build skips ONNX support
  python3-onnx python3-torch     # the ONNX tests build their models at test time (skipped without them)
)
for arg in "$@"; do
  case "$arg" in
    --peers) packages+=(libdnnl-dev python3-torch) ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "setup-debian.sh: unknown option '$arg' (accepted: --peers)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "setup-debian.sh: all ${#packages[@]} packages present"
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  sudo=()
elif command -v sudo >/dev/null 2>&1; then
  sudo=(sudo)
else
  echo "setup-debian.sh: need root or sudo to install: ${missing[*]}" >&2
  exit 1
fi
echo "setup-debian.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup-debian.sh: done"
