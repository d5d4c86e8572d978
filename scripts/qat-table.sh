#!/usr/bin/env bash
# The QAT accuracy table of issue 4: ResNet-20 fine-tuned with LSQ at uniform W8A8, W4A4, W3A3
# and W2A2 (first conv and last linear at 8 bits) from the same float checkpoint, for the same
# number of epochs, with the recipe docs/quantization.md ("Fine-tuning recipe") justifies.
#
#   scripts/qat-table.sh DATA FLOAT_CKPT OUT EPOCHS
#     DATA        a bitmix --data spec: fashion-mnist, cifar10:DIR, ...
#     FLOAT_CKPT  the float checkpoint (bitmix train ... --out DIR writes DIR/model.ckpt)
#     OUT         output directory: one run per configuration (OUT/w4a4/...), OUT/float/eval.json,
#                 and the table as OUT/qat-table.md and OUT/qat-table.csv
#     EPOCHS      fine-tuning epochs of every configuration
#
# Environment (optional): BITMIX (the bitmix binary; default build/bin/bitmix), THREADS, SEED (1),
# CONFIGS ("8 4 3 2": the bitwidths to run), TRAIN_SUBSET / TEST_SUBSET (0 = all; for short
# proof runs only: the table then says so), EXTRA (more flags for every fine-tuning run).
# A configuration whose OUT/wXaX/summary.json says it finished is not run again, so an
# interrupted table can be completed by running the same command.
set -euo pipefail

if [[ $# -ne 4 ]]; then
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
  exit 2
fi
data=$1 float_ckpt=$2 out=$3 epochs=$4
root=$(cd "$(dirname "$0")/.." && pwd)
bitmix=${BITMIX:-$root/build/bin/bitmix}
seed=${SEED:-1}
configs=${CONFIGS:-"8 4 3 2"}
train_subset=${TRAIN_SUBSET:-0}
test_subset=${TEST_SUBSET:-0}

[[ -x $bitmix ]] || { echo "qat-table: no bitmix binary at $bitmix (build it, or set BITMIX)" >&2; exit 2; }
[[ -f $float_ckpt ]] || { echo "qat-table: no float checkpoint $float_ckpt" >&2; exit 2; }
[[ $epochs =~ ^[1-9][0-9]*$ ]] || { echo "qat-table: EPOCHS '$epochs': expected a positive integer" >&2; exit 2; }
command -v python3 >/dev/null || { echo "qat-table: python3 is needed to read the runs' JSON" >&2; exit 2; }
mkdir -p "$out"

# What the float run did, from the checkpoint's metadata (the JSON after the 64-byte header, see
# docs/training.md): the model's shape options, and the data pipeline and objective that the
# fine-tuning keeps (augmentation, label smoothing), and its weight decay, which LSQ's rule scales.
read -r model_flags augment_flags float_wd float_data < <(python3 - "$float_ckpt" <<'PY'
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    header = f.read(64)
    if header[:8] != b"BMXCKPT\0":
        sys.exit(f"qat-table: {sys.argv[1]} is not a bitmix checkpoint")
    offset, size = struct.unpack_from("<QQ", header, 24)
    f.seek(offset)
    meta = json.loads(f.read(size))
# docs/training.md "Checkpoint metadata"; checkpoints without "metadata_version" have the earlier layout.
versioned = "metadata_version" in meta
model = meta.get("model") or {}
options = (meta.get("training") or {}).get("options", {}) if versioned else meta.get("options", {})
data_spec = meta.get("data", {}).get("spec", "?") if versioned else model.get("data", "?")
model_flags = f"--model={model.get('arch', 'resnet20')},--shortcut={model.get('shortcut', 'A')},--width={model.get('width', 0)}"
crop, flip = int(options.get("pad_crop", 0)), bool(options.get("horizontal_flip", False))
augment = {(True, True): "crop-flip", (True, False): "crop", (False, True): "flip", (False, False): "none"}[(crop > 0, flip)]
augment_flags = f"--augment={augment}" + (f",--pad-crop={crop}" if crop > 0 else "")
augment_flags += f",--label-smoothing={options.get('label_smoothing', 0.0):g}"
print(model_flags, augment_flags, f"{options.get('weight_decay', 5e-4):g}", data_spec or "?")
PY
)
IFS=, read -r -a model_args <<<"$model_flags"
IFS=, read -r -a augment_args <<<"$augment_flags"
[[ ${model_args[0]} == --model=resnet20 ]] ||
  echo "qat-table: note: $float_ckpt holds ${model_args[0]#--model=}, not resnet20" >&2
[[ ${float_data%%:*} == "${data%%:*}" ]] ||
  echo "qat-table: note: $float_ckpt was trained on $float_data, the table uses $data" >&2

common=(--data "$data" "${model_args[@]}" --seed "$seed" --train-subset "$train_subset" --test-subset "$test_subset"
        --no-progress)
[[ -n ${THREADS:-} ]] && common+=(--threads "$THREADS")

# Weight decay by precision, LSQ's rule (Esser et al. 2020) applied to the float run's decay:
# unchanged at 8 and 4 bits, halved at 3, quartered at 2 (lower precision regularizes already).
weight_decay() {
  case $1 in
    2) python3 -c "print(f'{$float_wd / 4:g}')" ;;
    3) python3 -c "print(f'{$float_wd / 2:g}')" ;;
    *) echo "$float_wd" ;;
  esac
}

finished() { [[ -f $1/summary.json ]] && python3 -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1])).get("finished") else 1)' "$1/summary.json"; }

echo "qat-table: float checkpoint $float_ckpt (${model_args[*]}; fine-tuning keeps ${augment_args[*]}; float weight decay $float_wd) on $data" >&2
if [[ ! -f $out/float/eval.json ]]; then
  "$bitmix" train "${common[@]}" --init "$float_ckpt" --eval-only --out "$out/float" >&2
fi

for b in $configs; do
  run=$out/w${b}a${b}
  if finished "$run"; then
    echo "qat-table: W${b}A${b}: already finished ($run)" >&2
    continue
  fi
  echo "qat-table: W${b}A${b}: fine-tuning for $epochs epochs" >&2
  # shellcheck disable=SC2086  # EXTRA is a list of flags
  "$bitmix" train "${common[@]}" "${augment_args[@]}" --init "$float_ckpt" \
    --quant lsq --wbits "$b" --abits "$b" --first-last-bits 8 \
    --epochs "$epochs" --batch 128 --optimizer sgd --momentum 0.9 --nesterov --lr 0.01 --schedule cosine \
    --wd "$(weight_decay "$b")" ${EXTRA:-} --out "$run" >&2
done

# shellcheck disable=SC2086  # one argument per configuration
python3 - "$out" "$data" "$float_ckpt" "$epochs" "$train_subset" "$test_subset" $configs <<'PY'
import json, os, sys

out, data, float_ckpt, epochs, train_subset, test_subset = sys.argv[1:7]
configs = sys.argv[7:]
flt = json.load(open(os.path.join(out, "float", "eval.json")))
float_acc = 100.0 * flt["test_accuracy"]

rows = []
for b in configs:
    summary = json.load(open(os.path.join(out, f"w{b}a{b}", "summary.json")))
    q = summary["quantization"]
    final = summary["final"]
    rows.append({
        "config": f"W{b}A{b}",
        "test_accuracy": 100.0 * final["test_accuracy"],
        "delta": 100.0 * final["test_accuracy"] - float_acc,
        "gbitops": q["bitops"] / 1e9,
        "weight_kib": q["weight_bytes"] / 1024.0,
        "epochs": final["epoch"],
        "float_gbitops": q["float_bitops"] / 1e9,
        "float_kib": q["float_weight_bytes"] / 1024.0,
    })
if not rows:
    sys.exit("qat-table: no configuration to tabulate")

head = ["config", "test accuracy (%)", "vs float (points)", "GBitOPs / image", "weight size (KiB)", "epochs"]
lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
lines.append(f"| float32 | {float_acc:.2f} | 0.00 | {rows[0]['float_gbitops']:.3f} | {rows[0]['float_kib']:.1f} | - |")
for r in rows:
    lines.append(f"| {r['config']} | {r['test_accuracy']:.2f} | {r['delta']:+.2f} | {r['gbitops']:.3f} | "
                 f"{r['weight_kib']:.1f} | {r['epochs']} |")
note = (f"ResNet-20, LSQ (weights per output channel, first conv and last linear at 8 bits), fine-tuned from "
        f"{float_ckpt} for {epochs} epoch{'s' if epochs != '1' else ''} on {data}; test accuracy after the last epoch on "
        f"{flt['test_images']} test images.")
if train_subset != "0" or test_subset != "0":
    note += f" SHORT PROOF RUN: training subset {train_subset}, test subset {test_subset} (0 = all); not a result."
table = "\n".join(lines) + "\n\n" + note + "\n"
open(os.path.join(out, "qat-table.md"), "w").write(table)

with open(os.path.join(out, "qat-table.csv"), "w") as f:
    f.write("config,test_accuracy,delta_vs_float,bitops_per_image,weight_bytes,epochs\n")
    f.write(f"float32,{float_acc:.4f},0,{rows[0]['float_gbitops'] * 1e9:.0f},{rows[0]['float_kib'] * 1024:.0f},\n")
    for r in rows:
        f.write(f"{r['config']},{r['test_accuracy']:.4f},{r['delta']:.4f},{r['gbitops'] * 1e9:.0f},"
                f"{r['weight_kib'] * 1024:.0f},{r['epochs']}\n")
print(table, end="")
PY
