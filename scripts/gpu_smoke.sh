#!/usr/bin/env bash
# GPU smoke test (not part of `make test`): a few minutes on any CUDA machine.
#
#   bash scripts/gpu_smoke.sh                      # CUDA, bf16-mixed, DDP over all visible GPUs when >= 2
#   XMTC_SMOKE_ACCELERATOR=cpu XMTC_SMOKE_PRECISION=32 bash scripts/gpu_smoke.sh   # dry run on CPU
#
# Runs, on the demo subset (data/eurlex57k-demo):
#   1. AttentionXML (configs/demo_axml.yaml): a short fit with the robustness callback (tiny budget);
#   2. APLC-XLNet (configs/demo_aplc.yaml): the same;
#   3. `python -m xmtc attack` (configs/attack_demo.yaml, a few pairs per bin) on the AttentionXML checkpoint, on one
#      device and, with 2 or more, sharded over them with DDP (its results.jsonl must equal the one-device run's);
# and prints what ran where: device names, precision, strategy, world size and wall-clock per step.
# Needs the demo masked LM (models/mlm-eurlex57k-demo) and tokenizer (models/tok-eurlex57k-demo); where they
# are missing, reduced ones are built under the run directory (the real ones: `make models/...`).
#
# Environment (all optional):
#   XMTC_SMOKE_ACCELERATOR  gpu (default) | cpu
#   XMTC_SMOKE_PRECISION    bf16-mixed (default) | 16-mixed | 32 | ...
#   XMTC_SMOKE_DEVICES      devices for the fits (default: every visible GPU; 1 on CPU; 2 on CPU = gloo DDP)
#   XMTC_SMOKE_STEPS        optimizer steps per fit (default 40; validation + robustness at half and at the end)
#   XMTC_SMOKE_MLM_STEPS    steps of the reduced masked LM when the demo one is missing (default 60)
#   XMTC_SMOKE_OUT          run directory (default logs/gpu-smoke/<date-time>)
#   PYTHON                  interpreter (default .venv/bin/python, else python3)
set -euo pipefail
cd "$(dirname "$0")/.."

ACCEL=${XMTC_SMOKE_ACCELERATOR:-gpu}
PREC=${XMTC_SMOKE_PRECISION:-bf16-mixed}
STEPS=${XMTC_SMOKE_STEPS:-40}
MLM_STEPS=${XMTC_SMOKE_MLM_STEPS:-60}
OUT=${XMTC_SMOKE_OUT:-logs/gpu-smoke/$(date +%Y%m%d-%H%M%S)}
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
mkdir -p "$OUT"
SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
T0=$(date +%s.%N)

say() { echo "$*" | tee -a "$SUMMARY"; }
elapsed() { "$PYTHON" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(date +%s.%N)"; }

# -- what is here ------------------------------------------------------------------------------------------
say "== xmtc GPU smoke test, $(date -u +%Y-%m-%dT%H:%M:%SZ), run directory $OUT"
"$PYTHON" - "$ACCEL" <<'PY' | tee -a "$SUMMARY"
import platform, sys
import torch, lightning
print(f"host {platform.node()}, python {platform.python_version()}, torch {torch.__version__} "
      f"(CUDA build: {torch.version.cuda}), lightning {lightning.__version__}, CPU threads {torch.get_num_threads()}")
n = torch.cuda.device_count()
for i in range(n):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor}, "
          f"bf16 supported: {torch.cuda.is_bf16_supported() if i == 0 else '-'}")
if sys.argv[1] == "gpu" and n == 0:
    sys.exit("no CUDA device visible to torch: install a CUDA build of torch (README, 'GPU machines'), "
             "or dry-run with XMTC_SMOKE_ACCELERATOR=cpu XMTC_SMOKE_PRECISION=32")
PY
if command -v nvidia-smi > /dev/null; then nvidia-smi -L | tee -a "$SUMMARY" || true; fi

if [ -n "${XMTC_SMOKE_DEVICES:-}" ]; then
  DEVICES=$XMTC_SMOKE_DEVICES
elif [ "$ACCEL" = gpu ]; then
  DEVICES=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
else
  DEVICES=1
fi
if [ "$DEVICES" -ge 2 ]; then AXML_STRATEGY=ddp; APLC_STRATEGY=ddp_find_unused_parameters_true
else AXML_STRATEGY=auto; APLC_STRATEGY=auto; fi
say "plan: accelerator=$ACCEL devices=$DEVICES precision=$PREC steps=$STEPS strategy: axml $AXML_STRATEGY, aplc $APLC_STRATEGY"

# -- the demo's masked LM and tokenizer --------------------------------------------------------------------
MLM=models/mlm-eurlex57k-demo
if [ ! -f "$MLM/config.json" ]; then
  MLM="$OUT/mlm-reduced"
  say "building a reduced masked LM ($MLM_STEPS steps) in $MLM: $PYTHON -m xmtc.attack.mlm"
  t=$(date +%s.%N)
  "$PYTHON" -m xmtc.attack.mlm --data data/eurlex57k-demo --output "$MLM" --steps "$MLM_STEPS" \
    > "$OUT/mlm.log" 2>&1 || { tail -n 30 "$OUT/mlm.log"; exit 1; }
  say "  masked LM: $(elapsed "$t") s"
fi
TOK=models/tok-eurlex57k-demo
if [ ! -f "$TOK/tokenizer.json" ]; then
  TOK="$OUT/tok"
  say "building the demo tokenizer in $TOK (as make models/tok-eurlex57k-demo/tokenizer.json does)"
  t=$(date +%s.%N)
  "$PYTHON" -m xmtc.data.train_tokenizer --data data/eurlex57k-demo --output "$TOK" --max-length 256 \
    > "$OUT/tok.log" 2>&1 || { tail -n 30 "$OUT/tok.log"; exit 1; }
  say "  tokenizer: $(elapsed "$t") s"
fi

# -- one step: run it, keep its log, report where Lightning says it ran ------------------------------------
report() {  # $1 = log file: Lightning's own lines about devices, precision and processes
  grep -hE "GPU available|TPU available|Using .*(precision|Mixed Precision)|Initializing distributed|distributed_backend=|Starting with [0-9]+ processes|LOCAL_RANK: 0 - CUDA_VISIBLE" "$1" \
    | sed 's/^/    /' | sort -u | tee -a "$SUMMARY" || true
}
ROWS=()
run_step() {  # $1 = name, $2 = "devices precision strategy" as run, rest = command
  local name=$1 what=$2; shift 2
  local log="$OUT/$name.log" t rc=0 secs world
  say "-- $name: $*"
  t=$(date +%s.%N)
  "$@" > "$log" 2>&1 || rc=$?
  secs=$(elapsed "$t")
  say "  $name: exit $rc, $secs s (log $log)"
  report "$log"
  if [ "$rc" != 0 ]; then tail -n 40 "$log"; say "FAILED: $name"; exit "$rc"; fi
  # world size as the processes reported it (Lightning's "MEMBER: i/N"), else 1
  world=$(grep -ohE "MEMBER: [0-9]+/[0-9]+" "$log" | head -n 1 | cut -d/ -f2 || true)
  ROWS+=("| $name | $ACCEL | $what | ${world:-1} | $secs |")
}

ROBUSTNESS=(--trainer.callbacks+=callbacks/robustness.yaml --trainer.callbacks.every_n_epochs=1
  --trainer.callbacks.settings.kinds=[positive] --trainer.callbacks.settings.samples_per_bin=2
  --trainer.callbacks.settings.masked_lm="$MLM" --trainer.callbacks.max_bins=2
  --trainer.callbacks.max_documents=200 --trainer.callbacks.time_limit=60)
COMMON=(--trainer.accelerator="$ACCEL" --trainer.devices="$DEVICES" --trainer.precision="$PREC"
  --trainer.max_steps="$STEPS" --trainer.check_val_every_n_epoch=null --trainer.val_check_interval=$(( (STEPS + 1) / 2 ))
  --trainer.enable_progress_bar=false --trainer.logger.init_args.save_dir="$OUT" --trainer.logger.init_args.version=run)

run_step fit_axml "$DEVICES | $PREC | $AXML_STRATEGY" "$PYTHON" -m xmtc fit --config configs/demo_axml.yaml "${COMMON[@]}" \
  --trainer.strategy="$AXML_STRATEGY" "${ROBUSTNESS[@]}"
run_step fit_aplc "$DEVICES | $PREC | $APLC_STRATEGY" "$PYTHON" -m xmtc fit --config configs/demo_aplc.yaml "${COMMON[@]}" \
  --trainer.strategy="$APLC_STRATEGY" --data.init_args.tokenizer="$TOK" "${ROBUSTNESS[@]}"

AXML_CKPT="$OUT/demo_axml/run/checkpoints/last.ckpt"
run_step attack "1 | 32 (no autocast in the attack) | single device" "$PYTHON" -m xmtc attack --config configs/demo_axml.yaml --config configs/attack_demo.yaml \
  --ckpt_path "$AXML_CKPT" --output_dir "$OUT/attack" --show_progress false \
  --trainer.accelerator="$ACCEL" --trainer.devices=1 --trainer.logger.init_args.save_dir="$OUT" \
  --settings.masked_lm="$MLM" --settings.samples_per_bin=2
if [ "$DEVICES" != 1 ]; then
  run_step attack_ddp "$DEVICES | 32 | ddp" "$PYTHON" -m xmtc attack --config configs/demo_axml.yaml \
    --config configs/attack_demo.yaml --ckpt_path "$AXML_CKPT" --output_dir "$OUT/attack_ddp" --show_progress false \
    --trainer.accelerator="$ACCEL" --trainer.devices="$DEVICES" --trainer.strategy=ddp \
    --settings.masked_lm="$MLM" --settings.samples_per_bin=2
  "$PYTHON" - "$OUT" <<'PY' | tee -a "$SUMMARY"
import json, sys
from pathlib import Path
def rows(d):
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (Path(sys.argv[1]) / d / "results.jsonl").read_text().splitlines()]
one, many = rows("attack"), rows("attack_ddp")
print(f"attack sharded over the devices: {len(many)} rows, identical to the one-device run: {one == many}")
PY
fi

# -- what came out -----------------------------------------------------------------------------------------
"$PYTHON" - "$OUT" <<'PY' | tee -a "$SUMMARY"
import csv, json, sys
from pathlib import Path
out = Path(sys.argv[1])
for name in ("demo_axml", "demo_aplc"):
    run = out / name / "run"
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    last = {k: v for r in rows for k, v in r.items() if v}
    curves = run / "robustness" / "summary.csv"
    n = sum(1 for _ in csv.DictReader(open(curves))) if curves.is_file() else 0
    print(f"{name}: step {last.get('step')}, val/P@1 {float(last.get('val/P@1', 'nan')) * 100:.1f}, "
          f"robustness rows {n} ({curves if n else 'none written'})")
summary = json.loads((out / "attack" / "summary.json").read_text())
print("attack summary.json keys:", ", ".join(list(summary)[:8]))
tables = (out / "attack" / "tables.md").read_text().split("\n\n")
print(next((t for t in tables if t.startswith("|")), tables[0]))
PY
say ""
say "| step | accelerator | devices | precision | strategy | world size | seconds |"
say "|---|---|---:|---|---|---:|---:|"
for row in "${ROWS[@]}"; do say "$row"; done
say "== done in $(elapsed "$T0") s; summary in $SUMMARY"
