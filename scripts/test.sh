#!/usr/bin/env bash
# Sets up a fresh Debian 12 machine, builds bitmix and runs every test:
#   1. the full Release build (-Werror) with all unit tests, the install/consumer test and the
#      real-data reader tests (Fashion-MNIST from Debian, CIFAR-10 from ../shared);
#   2. the readers and parsers again under AddressSanitizer + UndefinedBehaviorSanitizer;
#   3. the NEON kernels, cross-built for AArch64 and run under qemu-user.
# Usage: scripts/test.sh [BUILD_ROOT]   (default: ./build; sub-builds go beside it)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
jobs=$(nproc)
start=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - start ))s] $*"; }

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

stamp "sanitizer build (AddressSanitizer + UndefinedBehaviorSanitizer)"
asan="$build-asan"
sanitized_suites=(core data)
for suite in quant runtime; do
  [ -d "$root/tests/$suite" ] && sanitized_suites+=("$suite")
done
# -O1 with line tables only: sanitizer reports keep file:line, and the build is much faster than
# RelWithDebInfo's full debug information on 2 cores. Warnings are the Release build's job: GCC 12
# reports bogus -Wstringop-overflow at -O1 with the sanitizers, so no -Werror here.
cmake -S "$root" -B "$asan" -G Ninja -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS="-O1 -g1" \
      -DBITMIX_SANITIZE=ON -DBITMIX_WERROR=OFF \
      -DBITMIX_BUILD_BENCHMARKS=OFF -DBITMIX_BUILD_EXAMPLES=OFF >/dev/null
targets=()
for suite in "${sanitized_suites[@]}"; do targets+=("bitmix_${suite}_tests"); done
cmake --build "$asan" -j "$jobs" --target "${targets[@]}"
stamp "sanitizer tests: ${sanitized_suites[*]}"
regex=$(IFS='|'; echo "^(${sanitized_suites[*]})\$")
(cd "$asan" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
   ctest --output-on-failure -j "$jobs" -R "$regex")

if [ -x "$root/scripts/test-aarch64.sh" ]; then
  stamp "AArch64 cross build, NEON kernels under qemu-user"
  "$root/scripts/test-aarch64.sh" "$build-aarch64"
fi
stamp "all tests passed"
