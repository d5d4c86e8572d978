#!/usr/bin/env bash
# The bitmix quick start: on a fresh Debian 12 machine, set up, build, and run the whole
# pipeline on Fashion-MNIST (Debian's dataset-fashion-mnist):
#   1. train a float ResNet-20 briefly
#   2. fine-tune a uniform W3A3 baseline (LSQ) from it
#   3. EBS-search per-layer bits at the BitOPs of uniform W3A3, then fine-tune that configuration
#   4. export both to integer .bmx models, evaluate them and benchmark them
#   5. print fp32 vs uniform vs searched: accuracy, BitOPs, weight size, measured latency
# Usage: scripts/quickstart.sh [OUT_DIR]    (default: ./quickstart; about 15 minutes on 2 cores)
# Environment: BITMIX_QUICKSTART_SUBSET (training images per stage, default 30000),
#              BITMIX_QUICKSTART_EPOCHS (float epochs, default 2).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/quickstart}
build="$root/build-quickstart"
subset=${BITMIX_QUICKSTART_SUBSET:-30000}
float_epochs=${BITMIX_QUICKSTART_EPOCHS:-2}
start=$(date +%s)
stamp() { echo "== [$(( $(date +%s) - start ))s] $*"; }

stamp "installing system packages"
"$root/scripts/setup-debian.sh"
stamp "building the bitmix tool"
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBITMIX_BUILD_TESTS=OFF \
      -DBITMIX_BUILD_BENCHMARKS=OFF >/dev/null
cmake --build "$build" --target bitmix_cli -j "$(nproc)"
bitmix="$build/bin/bitmix"
mkdir -p "$out"
common=(--data fashion-mnist --seed 1 --no-progress)

stamp "1/5 float ResNet-20 ($float_epochs epochs on $subset images)"
"$bitmix" train "${common[@]}" --model resnet20 --epochs "$float_epochs" --lr 0.1 --train-subset "$subset" \
  --out "$out/float"

stamp "2/5 uniform W3A3 baseline (LSQ, 1 epoch from the float weights)"
"$bitmix" train "${common[@]}" --quant lsq --wbits 3 --abits 3 --init "$out/float/model.ckpt" --epochs 1 \
  --lr 0.01 --wd 1e-4 --train-subset "$subset" --out "$out/uniform-w3a3"

stamp "3/5 EBS search at the BitOPs of uniform W3A3, then fine-tuning"
"$bitmix" search "${common[@]}" --init "$out/float/model.ckpt" --budget-avg-bits 3 --wbits 2,3,4,5 --abits 2,3,4,5 \
  --epochs 1 --lr 0.01 --train-subset "$subset" --out "$out/search"
"$bitmix" train "${common[@]}" --bits "$out/search/bits.json" --init "$out/search/model.ckpt" --epochs 1 \
  --lr 0.01 --wd 1e-4 --train-subset "$subset" --out "$out/searched"

stamp "4/5 export to integer .bmx models, evaluate, benchmark"
for run in uniform-w3a3 searched; do
  "$bitmix" export --init "$out/$run/model.ckpt" --bits "$out/$run/bits.json" --out "$out/$run/model.bmx"
  "$bitmix" eval --model "$out/$run/model.bmx" --data fashion-mnist --json "$out/$run/eval.json"
  "$bitmix" bench --model "$out/$run/model.bmx" --batch 1 --threads 1 --json "$out/$run/bench.json" > "$out/$run/bench.txt"
done

stamp "5/5 summary"
"$bitmix" report --float "$out/float" --run "uniform W3A3=$out/uniform-w3a3" --run "EBS searched=$out/searched" \
  | tee "$out/summary.md"
stamp "done: $out"
