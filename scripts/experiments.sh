#!/usr/bin/env bash
# The measured results of the README, for one dataset: float ResNet-20, the uniform LSQ QAT
# table, EBS searches at the BitOPs of uniform W3A3 and W2A2 fine-tuned with the uniform runs'
# recipe, and integer (.bmx) parity of every configuration on the full test set.
#
#   scripts/experiments.sh DATA OUT [FLOAT_EPOCHS QAT_EPOCHS SEARCH_EPOCHS]
#     DATA     fashion-mnist | cifar10:DIR
#     OUT      output directory (runs that already finished are not run again)
#     defaults: fashion-mnist 20 5 3; cifar10 15 8 3
#
# Environment: BITMIX (binary; default build/bin/bitmix), THREADS, SEED (1), FLOAT_DIR (use an
# existing float run instead of OUT/float), QAT_BITS (uniform configurations, default "8 4 3 2 1";
# 3 and 2 are needed: the searches fine-tune with their recipes).
set -euo pipefail
[[ $# -ge 2 ]] || { sed -n '2,13p' "$0" >&2; exit 2; }
data=$1 out=$2
root=$(cd "$(dirname "$0")/.." && pwd)
bitmix=${BITMIX:-$root/build/bin/bitmix}
seed=${SEED:-1}
case ${data%%:*} in
  cifar10) float_epochs=${3:-15} qat_epochs=${4:-8} search_epochs=${5:-3}
           float_flags=(--lr 0.1 --wd 5e-4 --nesterov --warmup 1 --augment crop-flip) ;;
  *)       float_epochs=${3:-20} qat_epochs=${4:-5} search_epochs=${5:-3}
           float_flags=(--lr 0.1 --wd 5e-4 --augment crop-flip --pad-crop 2) ;;
esac
common=(--data "$data" --seed "$seed" --no-progress)
eval_flags=(--data "$data" --no-progress)   # evaluation is deterministic: no --seed
[[ -n ${THREADS:-} ]] && common+=(--threads "$THREADS") && eval_flags+=(--threads "$THREADS")
mkdir -p "$out"
finished() { [[ -f $1/summary.json ]] && python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1])).get("finished", True) else 1)' "$1/summary.json"; }
log() { echo "experiments: $*" >&2; }

# 1. Float model.
float_dir=${FLOAT_DIR:-$out/float}
if ! finished "$float_dir"; then
  log "float ResNet-20, $float_epochs epochs"
  "$bitmix" train "${common[@]}" --model resnet20 --epochs "$float_epochs" "${float_flags[@]}" --out "$float_dir"
fi
float_ckpt=$float_dir/model.ckpt

# 2. Uniform QAT table (W8A8 ... W1A1), scripts/qat-table.sh's recipe.
log "uniform LSQ QAT, $qat_epochs epochs per configuration"
qat_bits=${QAT_BITS:-8 4 3 2 1}
BITMIX=$bitmix SEED=$seed CONFIGS="$qat_bits" "$root/scripts/qat-table.sh" "$data" "$float_ckpt" "$out/qat" "$qat_epochs"

# 3. EBS at the BitOPs of uniform W3A3 (candidates 2-5 bits) and W2A2 (1-4 bits), fine-tuned exactly
#    like the uniform runs
#    (qat-table.sh's flags and its weight decay for that bitwidth).
float_wd=$(python3 -c "import json; print(json.load(open('$float_dir/summary.json'))['training']['options']['weight_decay'])")
augment=$(python3 - "$out/qat/w3a3/summary.json" <<'PY'
import json, sys
o = json.load(open(sys.argv[1]))["training"]["options"]
crop, flip = int(o.get("pad_crop", 0)), bool(o.get("horizontal_flip", False))
name = {(True, True): "crop-flip", (True, False): "crop", (False, True): "flip", (False, False): "none"}[(crop > 0, flip)]
print(f"--augment {name}" + (f" --pad-crop {crop}" if crop > 0 else ""))
PY
)
for b in 3 2; do
  dir=$out/ebs-b$b
  # The budget must lie inside the candidates' cost range, with room on both sides: at the BitOPs
  # of uniform W2A2, candidates 2..5 leave exactly one feasible configuration (uniform W2A2).
  if [[ $b == 2 ]]; then candidates=1,2,3,4; else candidates=2,3,4,5; fi
  wd=$(python3 -c "print(f'{$float_wd / (2 if $b == 3 else 4):g}')")
  if ! finished "$dir/search"; then
    log "EBS search at the BitOPs of uniform W${b}A${b}, $search_epochs epochs"
    # shellcheck disable=SC2086  # augment is a list of flags
    "$bitmix" search "${common[@]}" --init "$float_ckpt" --budget-avg-bits "$b" --wbits "$candidates" --abits "$candidates" \
      --epochs "$search_epochs" --lr 0.01 --wd "$wd" $augment --out "$dir/search"
  fi
  if ! finished "$dir/finetune"; then
    log "fine-tuning the searched configuration (budget W${b}A${b}), $qat_epochs epochs"
    # shellcheck disable=SC2086
    "$bitmix" train "${common[@]}" --bits "$dir/search/bits.json" --init "$dir/search/model.ckpt" $augment \
      --epochs "$qat_epochs" --batch 128 --optimizer sgd --momentum 0.9 --nesterov --lr 0.01 --schedule cosine \
      --wd "$wd" --out "$dir/finetune"
  fi
done

# 4. Integer models and parity with the fake-quant models, full test set.
runs=()
for b in $qat_bits; do runs+=("qat/w${b}a${b}"); done
runs+=(ebs-b3/finetune ebs-b2/finetune)
for run in "${runs[@]}"; do
  dir=$out/$run
  [[ -f $dir/parity.json ]] && continue
  log "export and parity: $run"
  "$bitmix" export --init "$dir/model.ckpt" --out "$dir/model.bmx"
  "$bitmix" eval "${eval_flags[@]}" --model "$dir/model.bmx" --compare "$dir/model.ckpt" --json "$dir/parity.json"
done

# 5. The table.
python3 - "$out" "$data" "${runs[@]}" <<'PY' | tee "$out/results.md"
import json, os, sys
out, data, runs = sys.argv[1], sys.argv[2], sys.argv[3:]
def load(path):
    return json.load(open(os.path.join(out, path)))
print(f"Results on {data} (ResNet-20; first conv and last linear at 8 bits):\n")
print("| configuration | fake-quant acc. | integer acc. | top-1 agreement | GBitOPs/image | weights (KiB) |")
print("|---|---|---|---|---|---|")
for run in runs:
    s, p = load(f"{run}/summary.json"), load(f"{run}/parity.json")
    q = s["quantization"]
    name = run.replace("qat/", "uniform ").replace("ebs-b3/finetune", "EBS @ W3A3 BitOPs").replace("ebs-b2/finetune", "EBS @ W2A2 BitOPs")
    fq = p.get("compare", {}).get("fake_quant_accuracy", s["final"]["test_accuracy"])
    agree = p.get("compare", {}).get("top1_agreement", float("nan"))
    print(f"| {name} | {100*fq:.2f}% | {100*p['accuracy']:.2f}% | {100*agree:.2f}% | {q['bitops']/1e9:.3f} | {q['weight_bytes']/1024:.1f} |")
PY
