#!/usr/bin/env bash
# Table 5's digit pairs at the paper's scale on one GPU (issue 24; first written for issue 7 with
# one seed): the `paper` profile (DRCN network, full DRCN-protocol data) for MNIST<->USPS, every
# method in METHODS, SEEDS seeds, within a fixed budget.
#
#   SEEDS=3 ROUNDS=20 BUDGET=480 bash benchmarks/gpu_paper_digits.sh   # from the repository root
#   PROFILE=smoke ROUNDS=2 SEEDS=2 OUT=/tmp/dry PYTHON=.venv/bin/python bash benchmarks/gpu_paper_digits.sh  # CPU dry run
#
# Needs runs/gpu_carry/digits.tgz (MNIST raw + USPS, `tar czf` of the data root's MNIST/raw and
# USPS) and writes logs, compare tables, summaries and the run folders without their weights
# (runs.tgz: `cetl report` renders Table 5, the term balance and the per-stage curves from it)
# to $OUT (default /tmp/out). The cells of one phase run side by side on the one GPU (the digit
# nets leave it mostly idle one at a time); methods coupled to S start once both directions' S
# (source_only) exist. Every method gets the same ROUNDS (the paper's budget is the profile's
# 50; ROUNDS caps it so the whole check fits a 10-minute device call, and the note says so).
set -u
PROFILE=${PROFILE:-paper}
PYTHON=${PYTHON:-python3}  # the GPU machine's python3 has torch; a dry run names a venv's
ROUNDS=${ROUNDS:-20}
BUDGET=${BUDGET:-480}
SEEDS=${SEEDS:-3}
OUTDIR=${OUT:-/tmp/out}
METHODS=${METHODS:-source_only,dann,drcn,adda,shot,cetl,cetl_e}
mkdir -p "$OUTDIR" /tmp/cetl-data
tar xzf runs/gpu_carry/digits.tgz -C /tmp/cetl-data
export CETL_DATA_ROOT=/tmp/cetl-data PYTHONPATH=src PYTHONUNBUFFERED=1
RUNS=/tmp/cetl-runs
START=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$PYTHON" -c 'import torch, torchvision; print("torch", torch.__version__, "torchvision", torchvision.__version__)'

cell() {  # EXPERIMENT METHOD: one cell, SEEDS seeds, through `cetl compare` (S shared per seed), bounded in time
  local left=$((BUDGET - ($(date +%s) - START)))
  [ "$left" -gt 10 ] || { echo "skip $1 $2: budget spent" >"$OUTDIR/log_$1_$2.txt"; return; }
  timeout "$left" "$PYTHON" -m cetl compare "$1" --methods "$2" --seeds "$SEEDS" --profile "$PROFILE" --out "$RUNS" \
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
  "$PYTHON" -m cetl compare "$e" --methods "$METHODS" --seeds "$SEEDS" --profile "$PROFILE" --out "$RUNS" --only-finished \
    --set train.rounds="$ROUNDS" --set train.progress=false --set train.tensorboard=false \
    >"$OUTDIR/compare_$e.md" 2>"$OUTDIR/compare_$e.err"
  # Cells that did not finish in the budget are absent from the table; say which.
  cat "$OUTDIR/compare_$e.md"
done
"$PYTHON" - "$RUNS" >"$OUTDIR/summaries.json" <<'PY'
import json, pathlib, sys
rows = []
for path in sorted(pathlib.Path(sys.argv[1]).glob("*/*/*/seed*/summary.json")):
    s = json.loads(path.read_text())
    rows.append({k: s.get(k) for k in ("experiment", "method", "seed", "target_test_accuracy", "val_accuracy",
        "selected_round", "rounds", "wall_seconds", "device", "source_accuracy_on_target", "stage_seconds",
        "oracle_target_test_accuracy")})
print(json.dumps(rows, indent=1))
PY
# Everything `cetl report` reads, without weights: config, summary, metrics (balance, stage curves).
tar czf "$OUTDIR/runs.tgz" -C "$RUNS" --exclude='*.pt' --exclude='tensorboard' .
echo "total $(($(date +%s) - START)) s"
