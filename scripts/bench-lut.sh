#!/usr/bin/env bash
# The table-lookup kernels (conv/lut/...) and their inner-loop bounds (lut_loop/...) next to the
# bit-serial kernels and oneDNN's u8s8 convolution on ResNet-20's 3x3 layers, one thread, in one
# process per ISA cap, and markdown tables of the medians (CPU time) and ratios.
#   avx2    BITMIX_MAX_ISA=avx2    DNNL_MAX_CPU_ISA=AVX2
#   avx512  BITMIX_MAX_ISA=avx512  DNNL_MAX_CPU_ISA=AVX512_CORE_VNNI
# Usage: scripts/bench-lut.sh [BUILD_DIR]
# Env: BENCH_MIN_TIME (s per repetition, default 0.1), BENCH_REPS (default 5), BENCH_CORE (taskset
#      core, default 1), BENCH_OUT (JSON dir, default BUILD_DIR/bench-lut)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
bench=$build/benchmarks/kernels/bitmix_kernels_bench
[ -x "$bench" ] || cmake --build "$build" -j 2 --target bitmix_kernels_bench
out=${BENCH_OUT:-$build/bench-lut}
mkdir -p "$out"
shapes='(conv1_3to16_32|s1_16to16_32|s2_16to32_32s2|s2_32to32_16|s3_32to64_16s2|s3_64to64_8|proj_16to32_32s2)'
run() {  # run NAME FILTER [ENV...]
  local name=$1 filter=$2
  shift 2
  echo "== $name" >&2
  env "$@" taskset -c "${BENCH_CORE:-1}" "$bench" --benchmark_filter="$filter" \
    --benchmark_min_time="${BENCH_MIN_TIME:-0.1}" --benchmark_repetitions="${BENCH_REPS:-5}" \
    --benchmark_enable_random_interleaving=true --benchmark_report_aggregates_only=true \
    --benchmark_format=json --benchmark_out="$out/$name.json" --benchmark_out_format=json >/dev/null
}
peers="conv/bitmix/ISA/W(1A1|2A1|2A2|3A2)/$shapes/b(1|64)/t1/real_time\$|conv/onednn_u8s8/$shapes/b(1|64)/t1/real_time\$|conv/int8/ISA/"
run avx2 "lut_loop/|lut_build/|conv/lut/avx2/|${peers//ISA/avx2}" BITMIX_MAX_ISA=avx2 DNNL_MAX_CPU_ISA=AVX2
run avx512 "conv/lut/avx512/|${peers//ISA/avx512}" BITMIX_MAX_ISA=avx512 DNNL_MAX_CPU_ISA=AVX512_CORE_VNNI

python3 - "$out" <<'PY'
import json, re, sys
out = sys.argv[1]
def medians(name):
    with open(f"{out}/{name}.json") as f:
        run = json.load(f)
    t, rate, labels = {}, {}, {}
    for b in run["benchmarks"]:
        if b.get("error_occurred") or b.get("aggregate_name") != "median":
            continue
        key = b["run_name"].removesuffix("/real_time")
        t[key] = b["cpu_time"] * {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[b["time_unit"]]
        rate[key] = b.get("macs_per_s")
        labels[key] = b.get("label", "")
    reps = next((b.get("repetitions") for b in run["benchmarks"] if b.get("repetitions")), "?")
    return dict(run["context"], repetitions=reps), t, rate, labels

ctx, t2, r2, l2 = medians("avx2")
print(f"CPU: {ctx.get('cpu', '?')}; load average at start {ctx.get('load_avg')}; medians of "
      f"{ctx.get('repetitions', '?')} repetitions, CPU time, one thread (machine shared with other jobs)\n")
print("### Inner loops (lut_loop/..., W2A2 MAC/s for the bit loops, int8 MAC/s for the int8 ones)\n")
loops = sorted({k.split("/")[1] for k in r2 if k.startswith("lut_loop/")})
cols = sorted({"/".join(k.split("/")[2:]) for k in r2 if k.startswith("lut_loop/")})
print("| loop | " + " | ".join(cols) + " |")
print("|---|" + "---|" * len(cols))
for l in loops:
    cells = [f"{r2[f'lut_loop/{l}/{c}'] / 1e9:.0f} G" if f"lut_loop/{l}/{c}" in r2 else "skipped" for c in cols]
    print(f"| {l} | " + " | ".join(cells) + " |")
print()
with open(f"{out}/avx2.json") as f:
    builds = [b for b in json.load(f)["benchmarks"] if b["run_name"].startswith("lut_build/") and b.get("aggregate_name") == "median"]
if builds:
    print("### Building the tables at load (W2, per layer)\n")
    print("| layer | µs | table bytes | packed weight bytes |")
    print("|---|---|---|---|")
    for b in builds:
        print(f"| {b['run_name'].split('/')[1]} | {b['cpu_time']:.1f} | {b['table_bytes']:.0f} | {b['packed_weight_bytes']:.0f} |")
    print()
for cap in ("avx2", "avx512"):
    ctx, t, _, labels = medians(cap)
    impl = sorted({labels[k] for k in t if k.startswith("conv/onednn")})
    print(f"### Convolution, cap `{cap}` (oneDNN: {', '.join(impl) or 'n/a'}), µs\n")
    print("| shape | batch | bits | table lookup | bitmix conv2d (automatic family) | oneDNN u8s8 | lut vs bitmix | lut vs u8s8 |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for k, v in t.items():
        m = re.fullmatch(rf"conv/lut/{cap}/(W\dA\d)/([^/]+)/b(\d+)/t1", k)
        if not m:
            continue
        bits, shape, batch = m.groups()
        bs = t.get(f"conv/bitmix/{cap}/{bits}/{shape}/b{batch}/t1")
        dn = t.get(f"conv/onednn_u8s8/{shape}/b{batch}/t1")
        f = lambda x: f"{x * 1e6:.1f}" if x else "n/a"
        r = lambda x: f"{x / v:.2f}x" if x else "n/a"
        rows.append((shape, int(batch), bits, f(v), f(bs), f(dn), r(bs), r(dn)))
    for row in sorted(rows):
        print("| " + " | ".join(str(x) for x in row) + " |")
    print()
    # The 19 convolutions of ResNet-20 (shortcuts excluded), W2A2: each layer on the faster of
    # the table lookup and conv2d's automatic family (what a per-layer choice would take)
    # against oneDNN u8s8.
    counts = {"conv1_3to16_32": 1, "s1_16to16_32": 6, "s2_16to32_32s2": 1, "s2_32to32_16": 5,
              "s3_32to64_16s2": 1, "s3_64to64_8": 5}
    for batch in (1, 64):
        try:
            lut = sum(n * t[f"conv/lut/{cap}/W2A2/{s}/b{batch}/t1"] for s, n in counts.items())
            bs = sum(n * t[f"conv/bitmix/{cap}/W2A2/{s}/b{batch}/t1"] for s, n in counts.items())
            best = sum(n * min(t[f"conv/lut/{cap}/W2A2/{s}/b{batch}/t1"], t[f"conv/bitmix/{cap}/W2A2/{s}/b{batch}/t1"])
                       for s, n in counts.items())
            dn = sum(n * t[f"conv/onednn_u8s8/{s}/b{batch}/t1"] for s, n in counts.items())
        except KeyError as e:
            print(f"(ResNet-20 sum, batch {batch}: {e} missing)\n")
            continue
        print(f"ResNet-20 W2A2 conv sum, cap `{cap}`, batch {batch}: table lookup {lut * 1e6:.0f} µs, "
              f"conv2d automatic {bs * 1e6:.0f} µs, per-layer best {best * 1e6:.0f} µs, oneDNN u8s8 {dn * 1e6:.0f} µs; "
              f"best vs oneDNN {dn / best:.2f}x, conv2d automatic vs oneDNN {dn / bs:.2f}x\n")
PY
