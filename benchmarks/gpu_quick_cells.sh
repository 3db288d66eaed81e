#!/usr/bin/env bash
# Re-run `quick` cells of `cetl compare` on a GPU, paired with S cells trained earlier (on any
# machine), and bring back each new cell's config.yaml, summary.json and metrics.jsonl (not its
# checkpoints, to stay under the device transfer limit).
#
#   CELLS="digits_mn_to_us:cetl digits_us_to_mn:drcn" SEEDS=3 OUT=/some/dir bash benchmarks/gpu_quick_cells.sh
#
# Needs runs/gpu_carry/digits.tgz (`tar czf runs/gpu_carry/digits.tgz -C DATA_ROOT MNIST/raw USPS`)
# and runs/gpu_carry/quick_s.tgz (the S cells: `tar czf ... -C runs/benchmarks
# <exp>/quick/source_only/seed<N>/{best.pt,config.yaml,summary.json} ...`). Cells of different
# EXPERIMENT:METHOD pairs run side by side on the one GPU; seeds of one pair in sequence.
set -u
SEEDS=${SEEDS:-3}
CELLS=${CELLS:?set CELLS to EXPERIMENT:METHOD pairs}
OUTDIR=${OUT:-/tmp/out}
RUNS=/tmp/quick-cells
mkdir -p /tmp/cetl-data "$RUNS" "$OUTDIR"
[ -d /tmp/cetl-data/MNIST ] || tar xzf runs/gpu_carry/digits.tgz -C /tmp/cetl-data
tar xzf runs/gpu_carry/quick_s.tgz -C "$RUNS"
export CETL_DATA_ROOT=/tmp/cetl-data PYTHONPATH=src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name --format=csv,noheader
for cell in $CELLS; do
  experiment=${cell%%:*} method=${cell#*:}
  ( python3 -m cetl compare "$experiment" --methods "$method" --seeds "$SEEDS" --profile quick --out "$RUNS" \
      --set train.progress=false >"$OUTDIR/log_${experiment}_${method}.txt" 2>&1
    echo "$cell exit $?" ) &
done
wait
cd "$RUNS" && find . -path '*/quick/*/seed*' \( -name summary.json -o -name config.yaml -o -name metrics.jsonl \) \
  ! -path '*/source_only/*' | tar czf "$OUTDIR/cells.tgz" -T -
python3 - "$RUNS" <<'PY'
import json, pathlib, sys
for path in sorted(pathlib.Path(sys.argv[1]).glob("*/quick/*/seed*/summary.json")):
    s = json.loads(path.read_text())
    print(path.parent.relative_to(sys.argv[1]), f"{100 * s['target_test_accuracy']:.2f}", s["device"], f"{s['wall_seconds']:.0f} s")
PY
