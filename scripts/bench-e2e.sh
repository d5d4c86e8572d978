#!/usr/bin/env bash
# End-to-end ResNet-20 inference latency (3x32x32 inputs, 10 classes): bitmix integer models
# (uniform W1A1, W2A2, W4A4, W8A8 with the first conv and the classifier at 8 bits, and a mixed
# configuration) next to PyTorch fp32 and PyTorch int8 (FX post-training quantization, oneDNN
# engine) on the same machine, at batch 1 and 64 with 1 and 2 threads. Prints a markdown table
# of median latencies and the speed-up over PyTorch int8.
#
# Usage: scripts/bench-e2e.sh [BUILD_DIR]        (default: ./build; builds bitmix_runtime_bench)
#   ROUNDS=3             alternate bitmix and PyTorch this many times, report the median of rounds
#   SECONDS_PER_CASE=1   minimum measuring time per case and round
#   BITMIX_BENCH_MODELS=name=file.bmx,...   benchmark these .bmx files instead of compiled ones
#   PYTHON=/usr/bin/python3  TORCH_ENGINE=onednn
# PyTorch is skipped with a message when it cannot be imported.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
rounds=${ROUNDS:-3}
seconds=${SECONDS_PER_CASE:-1}
python=${PYTHON:-/usr/bin/python3}
engine=${TORCH_ENGINE:-onednn}
bench="$build/benchmarks/runtime/bitmix_runtime_bench"
if [ ! -x "$bench" ]; then
  cmake --build "$build" --target bitmix_runtime_bench >&2
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

have_torch=1
for round in $(seq 1 "$rounds"); do
  echo "round $round/$rounds: bitmix" >&2
  "$bench" --benchmark_min_time="$seconds" --benchmark_format=json --benchmark_out="$work/bitmix-$round.json" \
           --benchmark_out_format=json >/dev/null
  if [ "$have_torch" = 1 ]; then
    echo "round $round/$rounds: pytorch" >&2
    status=0
    "$python" "$root/scripts/bench-e2e-pytorch.py" --engine "$engine" --seconds "$seconds" \
      >"$work/pytorch-$round.jsonl" 2>"$work/pytorch-$round.err" || status=$?
    if [ "$status" != 0 ]; then
      echo "PyTorch skipped: $python scripts/bench-e2e-pytorch.py failed (exit $status): $(tail -n 1 "$work/pytorch-$round.err")" >&2
      have_torch=0
      rm -f "$work/pytorch-$round.jsonl"
    fi
  fi
done

"$python" - "$work" <<'EOF'
import glob, json, os, statistics, sys
work = sys.argv[1]
cases = [(1, 1), (1, 2), (64, 1), (64, 2)]
rows = {}  # name -> {(batch, threads): [us, ...]}
cpu_rows = {}  # one-thread CPU times
for path in sorted(glob.glob(os.path.join(work, "bitmix-*.json"))):
    data = json.load(open(path))
    for b in data["benchmarks"]:
        if b.get("run_type") != "iteration" or b.get("error_occurred"):
            continue
        name, batch, threads = b["run_name"].split("/")[:3]
        us = b["real_time"] * {"us": 1, "ms": 1e3, "ns": 1e-3, "s": 1e6}[b["time_unit"]]
        key = (int(batch[1:]), int(threads[1:]))
        rows.setdefault("bitmix " + name, {}).setdefault(key, []).append(us)
        if key[1] == 1:
            cpu = b["cpu_time"] * {"us": 1, "ms": 1e3, "ns": 1e-3, "s": 1e6}[b["time_unit"]]
            cpu_rows.setdefault("bitmix " + name, {}).setdefault(key, []).append(cpu)
for path in sorted(glob.glob(os.path.join(work, "pytorch-*.jsonl"))):
    for line in open(path):
        r = json.loads(line)
        rows.setdefault(r["impl"], {}).setdefault((r["batch"], r["threads"]), []).append(r["median_us"])
        if r["threads"] == 1 and "median_cpu_us" in r:
            cpu_rows.setdefault(r["impl"], {}).setdefault((r["batch"], 1), []).append(r["median_cpu_us"])
def fmt(us):
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} us"
def table(rows, cases, title):
    med = {name: {k: statistics.median(v) for k, v in per.items()} for name, per in rows.items()}
    order = ["pytorch-fp32", "pytorch-int8"] + sorted(n for n in med if n.startswith("bitmix "))
    int8 = med.get("pytorch-int8", {})
    print(title + "\n")
    print("| model | " + " | ".join(f"batch {b}, {t} thread{'s' if t > 1 else ''}" for b, t in cases) + " |")
    print("|---|" + "---|" * len(cases))
    for name in order:
        if name not in med:
            continue
        cells = []
        for c in cases:
            us = med[name].get(c)
            if us is None:
                cells.append("-")
            elif c in int8 and name != "pytorch-int8":
                cells.append(f"{fmt(us)} ({int8[c] / us:.2f}x)")
            else:
                cells.append(fmt(us))
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
table(rows, cases, "Wall-clock latency per batch (median over the rounds; in parentheses the speed-up over "
      "PyTorch int8, FX post-training quantization, in the same case):")
table(cpu_rows, [(1, 1), (64, 1)], "CPU time per batch with one thread (steadier than wall time on a busy machine):")
if "pytorch-int8" not in rows:
    print("PyTorch was not available: no peer figures.")
EOF
