#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz: one per reader) with Clang, AddressSanitizer and
# UndefinedBehaviorSanitizer, seeds each with the valid and malformed files bitmix_fuzz_seeds
# writes, runs every regression input (tests/fuzz/regressions/<target>/), then fuzzes each
# target for SECONDS. A crash, sanitizer report, leak, escaped exception or hang fails the run;
# the reproducer is kept in BUILD/crashes/ (add it to tests/fuzz/regressions/<target>/ with the
# fix). Usage: scripts/fuzz.sh [SECONDS] [BUILD_DIR]   (default: 30 s each, ./build-fuzz)
#   FUZZ_TARGETS="bmx checkpoint"  only these targets;  FUZZ_JOBS=N  parallel fuzzing processes;
#   FUZZ_NO_BUILD=1  use the targets as they are built (e.g. while another build uses the tree)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-30}
build=${2:-$root/build-fuzz}
targets=(${FUZZ_TARGETS:-cifar10 idx checkpoint run_metadata bit_config latency_table bmx})
jobs=${FUZZ_JOBS:-1}
case "$seconds" in ''|*[!0-9]*) echo "fuzz.sh: SECONDS '$seconds': expected a whole number" >&2; exit 2 ;; esac

# A tree already configured with the fuzz targets (scripts/test.sh's sanitizer tree) is used as
# it is; otherwise this configures one.
if ! grep -qs '^BITMIX_BUILD_FUZZERS:BOOL=ON$' "$build/CMakeCache.txt"; then
  CC=clang-14 CXX=clang++-14 cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=None \
    -DCMAKE_CXX_FLAGS="-O1 -g1" -DBITMIX_BUILD_FUZZERS=ON -DBITMIX_WERROR=OFF \
    -DBITMIX_BUILD_BENCHMARKS=OFF -DBITMIX_BUILD_EXAMPLES=OFF >/dev/null
fi
build_targets=(bitmix_fuzz_seeds)
for t in "${targets[@]}"; do build_targets+=("bitmix_fuzz_$t"); done
[ "${FUZZ_NO_BUILD:-0}" = 1 ] || cmake --build "$build" -j "$(nproc)" --target "${build_targets[@]}"

seeds="$build/seeds"
rm -rf "$seeds"
"$build/fuzz/bitmix_fuzz_seeds" "$seeds"
mkdir -p "$build/crashes"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
parallel=()
[ "$jobs" -gt 1 ] && parallel=(-fork="$jobs")
status=0
for t in "${targets[@]}"; do
  bin="$build/fuzz/bitmix_fuzz_$t"
  corpus="$build/corpus/$t"
  mkdir -p "$corpus"
  dict=()
  case "$t" in
    bit_config|latency_table|run_metadata) dict=(-dict="$root/tests/fuzz/dict/json.dict") ;;
    checkpoint|bmx|idx) dict=(-dict="$root/tests/fuzz/dict/$t.dict") ;;
  esac
  regressions="$root/tests/fuzz/regressions/$t"
  if [ -d "$regressions" ] && [ -n "$(ls -A "$regressions")" ]; then
    echo "== $t: regression inputs"
    "$bin" "${dict[@]}" "$regressions"/* >"$build/$t-regressions.log" 2>&1 ||
      { echo "fuzz.sh: $t fails on a regression input:"; tail -n 30 "$build/$t-regressions.log"; status=1; continue; }
  fi
  echo "== $t: fuzzing for $seconds s"
  if ! "$bin" "${dict[@]}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
       "${parallel[@]}" -print_final_stats=1 -artifact_prefix="$build/crashes/$t-" \
       "$corpus" "$seeds/$t" >"$build/$t.log" 2>&1; then
    echo "fuzz.sh: $t FAILED; reproducer(s): $(ls "$build/crashes/$t-"* 2>/dev/null | tr '\n' ' ')"
    grep -E "ERROR|SUMMARY|runtime error|terminate|deadly" "$build/$t.log" | head -n 20 || true
    status=1
    continue
  fi
  grep -E "stat::number_of_executed_units|stat::peak_rss_mb|cov: " "$build/$t.log" | tail -n 3 | tr '\n' ' '
  echo
done
exit $status
