#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds bitmix and runs every test:
#   1. the full Release build (-Werror) with all unit tests, the install/consumer test and the
#      real-data reader tests (Fashion-MNIST from Debian, CIFAR-10 from ../shared);
#   2. every test suite and the CLI tests again under AddressSanitizer + UndefinedBehaviorSanitizer
#      + LeakSanitizer (Clang), then each libFuzzer target for 30 s from the same tree
#      (BITMIX_FUZZ_SECONDS changes that; a crash fails the run and keeps the reproducer);
#   3. the NEON kernels, cross-built for AArch64 and run under qemu-user.
# Usage: scripts/test.sh [BUILD_ROOT]   (default: ./build; sub-builds go beside it)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
jobs=$(nproc)
start=$(date +%s)
# Each stage line shows the wall time so far and the CPU time of every finished command (user +
# system, all cores): on a shared machine the latter is what a stage costs.
cpu() { times | awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/); printf "%d", u[1] * 60 + u[2] + s[1] * 60 + s[2] }'; }
stamp() { echo "== [$(( $(date +%s) - start ))s, cpu $(cpu)s] $*"; }

stamp "installing system packages"
"$root/scripts/setup-debian.sh"

cifar_script="$root/../shared/data/cifar10/make-cifar10-bin.sh"
if [ -z "${BITMIX_CIFAR10_DIR:-}" ] && [ -f "$cifar_script" ]; then
  stamp "writing CIFAR-10 in its binary layout"
  bash "$cifar_script" "$build/data" >/dev/null
  export BITMIX_CIFAR10_DIR="$build/data/cifar-10-batches-bin"
fi

stamp "release build"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBITMIX_WERROR=ON >/dev/null
cmake --build "$build" -j "$jobs"
stamp "release tests"
(cd "$build" && ctest --output-on-failure -j "$jobs")

stamp "sanitizer build (Clang: AddressSanitizer, UndefinedBehaviorSanitizer, LeakSanitizer; fuzz targets)"
# One instrumented tree for everything: every test suite, the bitmix tool for the CLI tests, and
# the libFuzzer targets (BITMIX_BUILD_FUZZERS implies the sanitizers). -O1 with line tables
# only: reports keep file:line, and the build is much faster than full debug information on 2
# cores. Warnings are the Release build's job, so no -Werror here.
san="$build-san"
CC=clang-14 CXX=clang++-14 cmake -S "$root" -B "$san" -G Ninja -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS="-O1 -g1" \
      -DBITMIX_BUILD_FUZZERS=ON -DBITMIX_WERROR=OFF -DBITMIX_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build "$san" -j "$jobs"
stamp "sanitizer tests: every suite and the CLI tests"
# Not here: the install tests (they build a separate, uninstrumented consumer against the
# installed library) and the layering check of the sources (the Release run has it).
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
(cd "$san" && ctest --output-on-failure -j "$jobs" -LE 'install|layering')
stamp "fuzzing every reader for ${BITMIX_FUZZ_SECONDS:-30} s each"
"$root/scripts/fuzz.sh" "${BITMIX_FUZZ_SECONDS:-30}" "$san"
unset ASAN_OPTIONS UBSAN_OPTIONS

if [ -x "$root/scripts/test-aarch64.sh" ]; then
  stamp "AArch64 cross build, NEON kernels under qemu-user"
  "$root/scripts/test-aarch64.sh" "$build-aarch64"
fi
stamp "all tests passed"
