#!/usr/bin/env bash
# The post-training allocation tables of docs/allocation.md, for one float checkpoint:
#   1. PTQ accuracy of uniform / independent / hawq / clado at 5 weight-size budgets evenly
#      spaced between uniform W3 and uniform W8 (candidates W 2,3,4,8, A 8), every configuration
#      quantized by `bitmix quantize` with the same calibration set, without and with bias
#      correction;
#   2. at the middle budget, 30 random configurations: measured loss increase vs the CLADO
#      quadratic and the independent sum (Spearman);
#   3. the activation calibrators (mse, percentile) and bias correction at uniform W4A8 / W8A4 / W3A8.
#
#   scripts/allocation-table.sh FLOAT_CKPT OUT
#
# Environment: BITMIX (binary; default build/bin/bitmix), THREADS (2), SEED (1),
# SENS (sensitivity images, 1024), CALIB (calibration images, 1024), RANDOM_CONFIGS (30),
# TEST (test images each PTQ model is evaluated on, 0 = all), HAWQ_ITERATIONS (100).
# One CLADO measurement (OUT/clado-cache.txt) serves every budget and the independent allocator;
# one HAWQ measurement (OUT/hawq-cache.json) every budget.
set -euo pipefail
[[ $# -eq 2 ]] || { sed -n '2,17p' "$0" >&2; exit 2; }
float=$1 out=$2
root=$(cd "$(dirname "$0")/.." && pwd)
bitmix=${BITMIX:-$root/build/bin/bitmix}
threads=${THREADS:-2} seed=${SEED:-1} sens=${SENS:-1024} calib=${CALIB:-1024} random=${RANDOM_CONFIGS:-30}
test_images=${TEST:-0} hawq_iterations=${HAWQ_ITERATIONS:-100}
common=(--seed "$seed" --threads "$threads" --no-progress)
sets=(--calib-images "$calib" --sens-images "$sens")
mkdir -p "$out"
kib() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["weight_kib"])' "$1/summary.json"; }

# The two ends of the size range: uniform W3A8 and W8A8 (first conv and last linear at 8 bits).
for w in 3 8; do
  "$bitmix" allocate "${common[@]}" --init "$float" --method uniform --wbits "$w" --abits 8 \
    --budget-avg-bits 8 "${sets[@]}" --out "$out/uniform-w$w" > /dev/null
done
lo=$(kib "$out/uniform-w3") hi=$(kib "$out/uniform-w8")
budgets=$(python3 -c "lo,hi=$lo,$hi; print(' '.join(f'{lo+(hi-lo)*k/6:.3f}' for k in range(1,6)))")
echo "size budgets (KiB) between uniform W3 ($lo) and W8 ($hi): $budgets"

quantize() {  # DIR: PTQ of DIR/bits.json into DIR/ptq, and with bias correction into DIR/ptq-bc
  local dir=$1
  [[ -f $dir/ptq/summary.json ]] || "$bitmix" quantize "${common[@]}" --init "$float" --bits "$dir/bits.json" \
    --calib-images "$calib" --test-subset "$test_images" --out "$dir/ptq" > /dev/null
  [[ -f $dir/ptq-bc/summary.json ]] || "$bitmix" quantize "${common[@]}" --init "$float" --bits "$dir/bits.json" \
    --calib-images "$calib" --test-subset "$test_images" --bias-correction --out "$dir/ptq-bc" > /dev/null
}

k=0
for b in $budgets; do
  k=$((k + 1))
  for method in uniform independent hawq clado; do
    dir=$out/b$k-$method
    extra=()
    [[ $method == clado && $k == 3 ]] && extra=(--evaluate-random "$random")
    [[ -f $dir/summary.json ]] || "$bitmix" allocate "${common[@]}" --init "$float" --method "$method" \
      --budget-size-kb "$b" "${sets[@]}" --cache "$out/clado-cache.txt" --hawq-cache "$out/hawq-cache.json" --hawq-iterations "$hawq_iterations" "${extra[@]}" --out "$dir" > "$dir.log" 2>&1 \
      || { cat "$dir.log" >&2; exit 1; }
    quantize "$dir"
  done
done

# Calibrators and bias correction at a few uniform configurations.
for cfg in 4:8 3:8 8:4; do
  w=${cfg%:*} a=${cfg#*:}
  dir=$out/calib-w${w}a${a}
  "$bitmix" allocate "${common[@]}" --init "$float" --method uniform --wbits "$w" --abits "$a" --budget-avg-bits 8 \
    "${sets[@]}" --out "$dir" > /dev/null
  for variant in mse percentile mse-bc; do
    flags=(--calibrator "${variant%-bc}")
    [[ $variant == *-bc ]] && flags+=(--bias-correction)
    [[ -f $dir/$variant/summary.json ]] || "$bitmix" quantize "${common[@]}" --init "$float" --bits "$dir/bits.json" \
      --calib-images "$calib" --test-subset "$test_images" "${flags[@]}" --out "$dir/$variant" > /dev/null
  done
done

python3 - "$out" $budgets <<'PY'
import json, sys, os
out, budgets = sys.argv[1], sys.argv[2:]
load = lambda p: json.load(open(p))
print("\n| size budget (KiB) | uniform | independent | hawq | clado |")
print("|---|---|---|---|---|")
for k, b in enumerate(budgets, 1):
    cells = []
    for m in ["uniform", "independent", "hawq", "clado"]:
        a = load(f"{out}/b{k}-{m}/summary.json"); q = load(f"{out}/b{k}-{m}/ptq/summary.json")
        cells.append(f"{100*q['test_accuracy']:.2f} ({a['weight_kib']:.1f})")
    print(f"| {b} | " + " | ".join(cells) + " |")
print("\nthe same configurations, PTQ with bias correction:")
print("\n| size budget (KiB) | uniform | independent | hawq | clado |")
print("|---|---|---|---|---|")
for k, b in enumerate(budgets, 1):
    cells = [f"{100*load(f'{out}/b{k}-{m}/ptq-bc/summary.json')['test_accuracy']:.2f}"
             for m in ["uniform", "independent", "hawq", "clado"]]
    print(f"| {b} | " + " | ".join(cells) + " |")
f = load(f"{out}/b1-clado/ptq/summary.json")
print(f"\nfloat test accuracy {100*f['float_test_accuracy']:.2f}% on {f['test_images']} images")
for m in ["clado", "hawq", "independent"]:
    runs = [load(f"{out}/b{k}-{m}/summary.json") for k in range(1, len(budgets) + 1)]
    measured = max(r.get("measurement", {}).get("seconds", 0) for r in runs)  # the run that was not cached
    solves = ", ".join(f"{r['solver']['seconds']:.3f} s ({r['solver']['status']}, {r['solver']['nodes']} nodes)" for r in runs)
    print(f"{m}: measurement {measured:.1f} s; solves per budget: {solves}")
s = load(f"{out}/b3-clado/summary.json")
if "random_configs" in s:
    r = s["random_configs"]
    print(f"random configurations ({r['configurations']}): Spearman clado {r['spearman_clado']:.3f}, "
          f"clado PSD {r['spearman_clado_psd']:.3f}, independent {r['spearman_independent']:.3f}")
if "psd_projection" in s:
    p = s["psd_projection"]
    print(f"PSD projection: removed {100*p['relative_removed']:.2f}% of ||C||, {p['negative_eigenvalues']} negative eigenvalues")
print("\n| uniform | mse | percentile | mse + bias correction |")
print("|---|---|---|---|")
for cfg in ["w4a8", "w3a8", "w8a4"]:
    cells = [f"{100*load(f'{out}/calib-{cfg}/{v}/summary.json')['test_accuracy']:.2f}" for v in ["mse", "percentile", "mse-bc"]]
    print(f"| {cfg.upper()} | " + " | ".join(cells) + " |")
PY
