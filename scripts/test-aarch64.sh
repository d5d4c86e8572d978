#!/usr/bin/env bash
# Cross-builds core + kernels + their tests for AArch64 and runs them under qemu-user, so the
# NEON path is really executed (the CPU summary line shows "active: neon").
# Usage: scripts/test-aarch64.sh [BUILD_DIR]   (default: ./build-aarch64)
# Needs Debian's g++-aarch64-linux-gnu and qemu-user (scripts/setup-debian.sh installs them).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-aarch64}
for tool in aarch64-linux-gnu-g++ qemu-aarch64; do
  command -v "$tool" >/dev/null || { echo "test-aarch64.sh: $tool not found (install g++-aarch64-linux-gnu and qemu-user)" >&2; exit 1; }
done
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBITMIX_WERROR=ON -DBITMIX_KERNELS_ONLY=ON \
      -DCMAKE_TOOLCHAIN_FILE="$root/cmake/toolchains/aarch64-linux-gnu.cmake" >/dev/null
cmake --build "$build" -j 2 --target bitmix_core_tests bitmix_kernels_tests bitmix_isa_tests
cd "$build"
# qemu-user cannot fork a process whose threads are running (its TCG state asserts in the child:
# "cpu == current_cpu"), so the one test that forks after the thread pool has started runs only
# natively; the kernels, the dispatch and every other core test run here.
GTEST_FILTER='-ThreadPoolTest.ForkedChildGetsAWorkingPool' ctest --output-on-failure -j 1
