#!/usr/bin/env bash
# ThreadSanitizer over bitmix's concurrency: the thread pool's own tests, training with 2 pool
# threads (the trainer, resuming, interrupting, weight averaging), and several runtime Sessions
# sharing one Model from different threads at once (checked against a single thread). A data
# race, a lock-order inversion or a race on a freed object fails the run.
# Usage: scripts/tsan.sh [BUILD_DIR]   (default: ./build-tsan)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-tsan}
start=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - start ))s] $*"; }

stamp "ThreadSanitizer build"
CC=clang-14 CXX=clang++-14 cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=None \
  -DCMAKE_CXX_FLAGS="-O1 -g1" -DBITMIX_TSAN=ON -DBITMIX_WERROR=OFF \
  -DBITMIX_BUILD_BENCHMARKS=OFF -DBITMIX_BUILD_EXAMPLES=OFF >/dev/null
cmake --build "$build" -j "$(nproc)" --target bitmix_core_tests bitmix_nn_tests bitmix_runtime_tests

# halt_on_error: the first report fails the run (exit 66) with its stacks in the log.
export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:history_size=4"
run() {
  local what=$1; shift
  stamp "$what"
  "$@" --gtest_brief=1
}
# The forking test is left out: ThreadSanitizer does not support threads in a forked child.
run "thread pool" "$build/tests/bitmix_core_tests" --gtest_filter='ThreadPool*:-*Fork*'
BITMIX_NUM_THREADS=2 run "training with 2 threads" "$build/tests/bitmix_nn_tests" \
  --gtest_filter='Trainer.*:*Resume*:*Interrupt*:QatTraining*'
run "sessions sharing a model" "$build/tests/bitmix_runtime_tests" --gtest_filter='*SessionConcurrency*:Session.*'
stamp "no data race found"
