#!/usr/bin/env bash
# bitmix's whole integer ResNet-20 against the sum of oneDNN's int8 (and fp32) convolutions over
# the same 21 convolutions, one thread, batch 1 and 64, under each ISA cap (bitmix and oneDNN
# capped alike; oneDNN reads DNNL_MAX_CPU_ISA once per process, so each cap is its own run):
#   avx2        BITMIX_MAX_ISA=avx2        DNNL_MAX_CPU_ISA=AVX2
#   avx512vnni  BITMIX_MAX_ISA=avx512vnni  DNNL_MAX_CPU_ISA=AVX512_CORE_VNNI
# Pinned to one CPU (taskset -c ${BENCH_CPU:-1}), --benchmark_repetitions=${BENCH_REPS:-5}; the
# table shows medians of CPU time (other processes on a shared machine disturb it least) and
# ratio = oneDNN int8 sum / bitmix whole network (> 1: bitmix is faster).
# Usage: scripts/bench-resnet-peer.sh [BUILD_DIR]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
bench=$build/benchmarks/runtime/bitmix_resnet_peer_bench
if [ ! -x "$bench" ]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$build" -j 2 --target bitmix_resnet_peer_bench
fi
out=${BENCH_OUT:-$build/bench-resnet-peer}
mkdir -p "$out"
reps=${BENCH_REPS:-5}
cpu=${BENCH_CPU:-1}
pin=()
command -v taskset >/dev/null && pin=(taskset -c "$cpu")
run() {  # run NAME [ENV...]
  local name=$1
  shift
  echo "== $name" >&2
  env "$@" "${pin[@]}" "$bench" --benchmark_repetitions="$reps" --benchmark_report_aggregates_only=true \
    --benchmark_filter="${BENCH_FILTER:-.}" --benchmark_format=json --benchmark_out="$out/$name.json" \
    --benchmark_out_format=json >/dev/null
}
if [ -z "${BENCH_PARSE_ONLY:-}" ]; then  # BENCH_PARSE_ONLY=1: only print the tables of an earlier run
  run avx2 BITMIX_MAX_ISA=avx2 DNNL_MAX_CPU_ISA=AVX2
  run avx512vnni BITMIX_MAX_ISA=avx512vnni DNNL_MAX_CPU_ISA=AVX512_CORE_VNNI
fi

python3 - "$out" <<'PY'
import json, re, sys
out = sys.argv[1]
for cap in ("avx2", "avx512vnni"):
    with open(f"{out}/{cap}.json") as f:
        run = json.load(f)
    med, label = {}, {}
    for b in run["benchmarks"]:
        if b.get("aggregate_name") != "median":
            continue
        name = re.sub(r"/min_time:[^/]+", "", b["run_name"]).removesuffix("/real_time")
        med[name] = b["cpu_time"]
        label[name] = b.get("label", "")
    print(f"\n### cap {cap} (one thread; median of {run['benchmarks'][0].get('repetitions', '?')} repetitions, CPU time, us)\n")
    print("| model | family | batch | bitmix | oneDNN u8s8 sum | ratio | oneDNN fp32 sum | ratio | families (P popcount, I int8, L lut, G gemm) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in sorted(med):
        parts = name.split("/")
        if parts[1] != "bitmix":
            continue
        config, family, batch = parts[2], parts[3], parts[4]
        t = med[name]
        u8 = med.get(f"resnet20/onednn_u8s8/{batch}")
        f32 = med.get(f"resnet20/onednn_fp32/{batch}")
        r8 = f"{u8 / t:.2f}x" if u8 else "-"
        r32 = f"{f32 / t:.2f}x" if f32 else "-"
        print(f"| {config} | {family} | {batch[1:]} | {t:.0f} | {u8 or 0:.0f} | {r8} | {f32 or 0:.0f} | {r32} | {label[name]} |")
    for kind in ("u8s8", "fp32"):
        for batch in ("b1", "b64"):
            n = f"resnet20/onednn_{kind}/{batch}"
            if n in label:
                print(f"\noneDNN {kind} {batch}: {label[n]}", end="")
    print()
PY
