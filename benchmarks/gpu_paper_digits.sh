#!/usr/bin/env bash
# Device check of issue 7: one seed of the `paper` profile (DRCN network, full DRCN-protocol
# data) for MNIST<->USPS, every domain-adaptation method, on one GPU, within a fixed budget.
#
#   ROUNDS=20 BUDGET=420 bash benchmarks/gpu_paper_digits.sh   # from the repository root
#
# Needs runs/gpu_carry/digits.tgz (MNIST raw + USPS, `tar czf` of the data root's MNIST/raw and
# USPS) and writes logs and compare tables to $OUT (default /tmp/out). The cells of one phase
# run side by side on the one GPU (the digit nets leave it mostly idle one at a time); methods
# coupled to S start once both directions' S (source_only) exist. Rounds are capped (ROUNDS) so
# the whole check fits a 10-minute device call; the note says so next to the numbers.
set -u
PROFILE=${PROFILE:-paper}
ROUNDS=${ROUNDS:-20}
BUDGET=${BUDGET:-420}
OUTDIR=${OUT:-/tmp/out}
METHODS=${METHODS:-source_only,sa,dann,drcn,adda,wda,cetl}
mkdir -p "$OUTDIR" /tmp/cetl-data
tar xzf runs/gpu_carry/digits.tgz -C /tmp/cetl-data
export CETL_DATA_ROOT=/tmp/cetl-data PYTHONPATH=src PYTHONUNBUFFERED=1
RUNS=/tmp/cetl-runs
START=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)'

cell() {  # EXPERIMENT METHOD: one cell through `cetl compare` (S shared per seed), bounded in time
  local left=$((BUDGET - ($(date +%s) - START)))
  [ "$left" -gt 10 ] || { echo "skip $1 $2: budget spent" >"$OUTDIR/log_$1_$2.txt"; return; }
  timeout "$left" python3 -m cetl compare "$1" --methods "$2" --seeds 1 --profile "$PROFILE" --out "$RUNS" \
    --set train.rounds="$ROUNDS" --set train.progress=false --set train.tensorboard=false \
    >"$OUTDIR/log_$1_$2.txt" 2>&1
  echo "$1 $2 exit $? at $(($(date +%s) - START)) s"
}

EXPERIMENTS="digits_mn_to_us digits_us_to_mn"
IFS=, read -ra ALL <<<"$METHODS"
for e in $EXPERIMENTS; do for m in "${ALL[@]}"; do
  case $m in source_only|dann|drcn) cell "$e" "$m" & ;; esac
done; done
wait
for e in $EXPERIMENTS; do for m in "${ALL[@]}"; do
  case $m in source_only|dann|drcn) ;; *) cell "$e" "$m" & ;; esac
done; done
wait
for e in $EXPERIMENTS; do
  python3 -m cetl compare "$e" --methods "$METHODS" --seeds 1 --profile "$PROFILE" --out "$RUNS" --only-finished \
    --set train.rounds="$ROUNDS" --set train.progress=false --set train.tensorboard=false \
    >"$OUTDIR/compare_$e.md" 2>"$OUTDIR/compare_$e.err"
  # Cells that did not finish in the budget are absent from the table; say which.
  cat "$OUTDIR/compare_$e.md"
done
python3 - "$RUNS" >"$OUTDIR/summaries.json" <<'PY'
import json, pathlib, sys
rows = []
for path in sorted(pathlib.Path(sys.argv[1]).glob("*/*/*/seed0/summary.json")):
    s = json.loads(path.read_text())
    rows.append({k: s.get(k) for k in ("experiment", "method", "target_test_accuracy", "val_accuracy",
        "selected_round", "rounds", "wall_seconds", "device", "source_accuracy_on_target", "stage_seconds",
        "oracle_target_test_accuracy")})
print(json.dumps(rows, indent=1))
PY
echo "total $(($(date +%s) - START)) s"
