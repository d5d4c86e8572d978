#!/usr/bin/env bash
# Runs the kernel benchmarks once per ISA cap and prints markdown tables of speed ratios against
# the peers measured in the same process (oneDNN fp32 and u8s8 convolution, Eigen fp32 GEMM).
#
# oneDNN reads DNNL_MAX_CPU_ISA once per process, so each cap is its own run:
#   avx2     BITMIX_MAX_ISA=avx2    DNNL_MAX_CPU_ISA=AVX2
#   avx512   BITMIX_MAX_ISA=avx512  DNNL_MAX_CPU_ISA=AVX512_CORE_VNNI
#   uncapped (no caps: oneDNN takes the best it has, e.g. AMX on Sapphire Rapids)
# Usage: scripts/bench-kernels.sh [BUILD_DIR] [--full]
#   --full   every (w_bits, a_bits) in {1,2,3,4,8}^2 (slow); default W1A1, W2A2, W4A4, W8A8
# Env: BENCH_MIN_TIME (seconds per benchmark, default 0.2), BENCH_OUT (JSON dir, default BUILD_DIR/bench-kernels)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$root/build
full=0
for arg in "$@"; do
  case "$arg" in
    --full) full=1 ;;
    *) build=$arg ;;
  esac
done
bench=$build/benchmarks/kernels/bitmix_kernels_bench
if [ ! -x "$bench" ]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build "$build" -j 2 --target bitmix_kernels_bench
fi
out=${BENCH_OUT:-$build/bench-kernels}
mkdir -p "$out"
min_time=${BENCH_MIN_TIME:-0.2}
if [ "$full" = 1 ]; then bits='W[12348]A[12348]'; else bits='W(1A1|2A2|4A4|8A8)'; fi

run() {  # run NAME FILTER [ENV...]
  local name=$1 filter=$2
  shift 2
  echo "== $name: $filter" >&2
  env "$@" "$bench" --benchmark_filter="$filter" --benchmark_min_time="$min_time" \
    --benchmark_format=json --benchmark_out="$out/$name.json" --benchmark_out_format=json >/dev/null
}
# (names end in /real_time: every benchmark measures wall-clock time)
conv_t1="conv/bitmix/ISA/$bits/.*/t1(/f32out)?/real_time\$|conv/onednn_(fp32|u8s8)/.*/t1/real_time\$"
threads="conv/bitmix/ISA/W(1A1|2A2)/.*/b64/t[12]/real_time\$"
run avx2 "${conv_t1//ISA/avx2}|gemm/bitmix/avx2/$bits/|gemm/eigen|${threads//ISA/avx2}" \
    BITMIX_MAX_ISA=avx2 DNNL_MAX_CPU_ISA=AVX2
run avx512 "${conv_t1//ISA/avx512}|gemm/bitmix/avx512/$bits/|${threads//ISA/avx512}" \
    BITMIX_MAX_ISA=avx512 DNNL_MAX_CPU_ISA=AVX512_CORE_VNNI
run uncapped "${conv_t1//ISA/avx512}"

python3 - "$out" <<'PY'
import json, re, sys, collections
out = sys.argv[1]
runs = {}
for name in ("avx2", "avx512", "uncapped"):
    with open(f"{out}/{name}.json") as f:
        runs[name] = json.load(f)

# Single-thread rows use CPU time, which other processes on a shared machine disturb far less
# than wall-clock time; the two-thread scaling table needs wall-clock time.
def times(run, field="cpu_time"):
    t, labels = {}, {}
    for b in run["benchmarks"]:
        if b.get("error_occurred"):
            continue
        name = b["name"].removesuffix("/real_time")
        t[name] = b[field] * {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[b["time_unit"]]
        labels[name] = b.get("label", "")
    return t, labels

ctx = runs["avx2"]["context"]
model = ctx.get("cpu", "?").split(";")[0].removeprefix("cpu: ")
print(f"Machine: {model}, {ctx.get('num_cpus')} CPUs ({ctx.get('cpu', '?')})\n")
print("Ratios are peer time / bitmix time (above 1: bitmix is faster), single thread, CPU time; the")
print("thread-scaling table uses wall-clock time. bitmix requantizes")
print("its output into packed planes with ReLU (as inside a residual block), oneDNN u8s8 writes u8 with an")
print("output scale and ReLU, oneDNN fp32 writes f32 with ReLU; `f32out` rows are bitmix writing float NCHW.\n")

for cap in ("avx2", "avx512", "uncapped"):
    t, labels = times(runs[cap])
    isa = "avx2" if cap == "avx2" else "avx512"
    impls = sorted({labels[k] for k in t if k.startswith("conv/onednn")})
    print(f"### Convolution, cap `{cap}` (bitmix {isa}; oneDNN: {', '.join(impls) or 'n/a'})\n")
    print("| shape | batch | bits | bitmix µs | vs oneDNN u8s8 | vs oneDNN fp32 |")
    print("|---|---|---|---|---|---|")
    rows = []
    for k, v in t.items():
        m = re.fullmatch(rf"conv/bitmix/{isa}/(W\dA\d)/([^/]+)/b(\d+)/t1(/f32out)?", k)
        if not m:
            continue
        bits, shape, batch, f32 = m.groups()
        int8 = t.get(f"conv/onednn_u8s8/{shape}/b{batch}/t1")
        fp32 = t.get(f"conv/onednn_fp32/{shape}/b{batch}/t1")
        fmt = lambda peer: f"{peer / v:.2f}x" if peer else "n/a"
        rows.append((shape, int(batch), bits + (" f32out" if f32 else ""), f"{v * 1e6:.0f}", fmt(int8), fmt(fp32)))
    for r in sorted(rows, key=lambda r: (r[0], r[1], r[2])):
        print("| " + " | ".join(str(x) for x in r) + " |")
    print()
    gemm = {k: v for k, v in t.items() if k.startswith("gemm/")}
    if gemm:
        eigen = next((v for k, v in gemm.items() if k.startswith("gemm/eigen")), None)
        print(f"### GEMM 1024^3, cap `{cap}`, one thread\n")
        print("| kernel | ms | binary MAC/s | vs Eigen fp32 |")
        print("|---|---|---|---|")
        for k, v in sorted(gemm.items()):
            m = re.fullmatch(r"gemm/bitmix/\w+/W(\d)A(\d)/(\d+)(/packed)?", k)
            ratio = f"{eigen / v:.2f}x" if eigen else "n/a"
            if m:
                binary = int(m.group(1)) * int(m.group(2)) * int(m.group(3)) ** 3 / v
                print(f"| {k} | {v * 1e3:.2f} | {binary / 1e12:.3f} T | {ratio} |")
            else:
                print(f"| {k} | {v * 1e3:.2f} | - | {ratio} |")
        print()
    scaling = []
    wall, _ = times(runs[cap], "real_time")
    for k, v in wall.items():
        m = re.fullmatch(rf"conv/bitmix/{isa}/(W\dA\d)/([^/]+)/b64/t2", k)
        if m and (one := wall.get(k[:-1] + "1")):
            scaling.append((m.group(2), m.group(1), f"{one / v:.2f}x"))
    if scaling:
        print(f"### Two threads vs one, batch 64, bitmix {isa}\n")
        print("| shape | bits | speedup |")
        print("|---|---|---|")
        for r in sorted(scaling):
            print("| " + " | ".join(r) + " |")
        print()
PY
