#!/usr/bin/env bash
# Device check: is the decoder of CETL (and DRCN) alive on the DRCN net, `paper` profile, on a GPU?
# With a hard [0, 1] clamp CETL's decoder died in round 0 on USPS->MNIST (an H200, bf16 and fp32
# alike): L_r^s stuck at mean(x^2) ~ 0.10 and L_r^t = 0.0. The clip now leaks 1e-4 of the gradient
# outside the range (cetl.networks.mirror.Clip01). Both directions: S (source_only) first, then
# METHODS side by side on the one GPU, ROUNDS rounds each; prints per-round mean losses.
#
#   ROUNDS=6 BUDGET=240 bash benchmarks/gpu_cetl_decoder.sh     # from the repository root
#
# Needs runs/gpu_carry/digits.tgz (`tar czf runs/gpu_carry/digits.tgz -C DATA_ROOT MNIST/raw USPS`).
set -u
ROUNDS=${ROUNDS:-6}
BUDGET=${BUDGET:-240}
PROFILE=${PROFILE:-paper}
METHODS=${METHODS:-cetl drcn}
EXPERIMENTS=${EXPERIMENTS:-digits_us_to_mn digits_mn_to_us}
RUNS=${RUNS:-/tmp/decoder-runs}
mkdir -p /tmp/cetl-data "$RUNS"
[ -d /tmp/cetl-data/MNIST ] || tar xzf runs/gpu_carry/digits.tgz -C /tmp/cetl-data
export CETL_DATA_ROOT=/tmp/cetl-data PYTHONPATH=src PYTHONUNBUFFERED=1
cell() {  # EXPERIMENT METHOD
  timeout "$BUDGET" python3 -m cetl compare "$1" --methods "$2" --seeds 1 --profile "$PROFILE" --out "$RUNS" \
    --set train.rounds="$ROUNDS" --set train.progress=false --set train.tensorboard=false \
    --set train.log_every=10 >"$RUNS/log_$1_$2.txt" 2>&1
  echo "$1 $2 exit $?"
}
for e in $EXPERIMENTS; do cell "$e" source_only & done
wait
for e in $EXPERIMENTS; do for m in $METHODS; do cell "$e" "$m" & done; done
wait
python3 - "$RUNS" "$PROFILE" $EXPERIMENTS <<'PY'
import json, pathlib, statistics, sys
runs, profile, experiments = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
for experiment in experiments:
    for cell in sorted((runs / experiment / profile).glob("*/seed0")):
        print(f"== {experiment} {cell.parent.name}")
        metrics = cell / "metrics.jsonl"
        if not metrics.exists():
            print("   no metrics")
            continue
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        for r in sorted({row["round"] for row in rows}):
            out = []
            for key in ("recon_source", "recon_target", "classify"):
                values = [row[key] for row in rows if row.get("round") == r and key in row]
                if values:
                    out.append(f"{key} {statistics.mean(values):.4f} (last {values[-1]:.4f})")
            evals = [row for row in rows if row.get("round") == r and row.get("kind") == "eval"]
            if evals:
                e = evals[-1]
                out.append(f"val {e.get('val_accuracy', 0):.4f} test {e.get('target_test_accuracy', 0):.4f}")
            print(f"   round {r}: " + "; ".join(out))
        summary = cell / "summary.json"
        if summary.exists():
            s = json.loads(summary.read_text())
            keys = ("target_test_accuracy", "selected_round", "wall_seconds", "oracle_target_test_accuracy")
            print("   summary:", {k: s.get(k) for k in keys})
PY
