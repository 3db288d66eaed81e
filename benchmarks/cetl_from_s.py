"""Hand-run probe: does CETL pay in domain adaptation when T2 starts from S instead of at random?

Why: on the digits `quick` table, `cetl` from a random T2 stays below its own S (CETL III). Every
round, stage 2 (reconstruct target images through T2) lifts target accuracy and stage 3
(classify source labels) gives part of it back, but the trajectory starts so far below S that it
never clears it. Starting T2 at S (``method.target_init=source``; S and T2 are both LeNets) keeps
every mechanism and removes that handicap. Pre-registered: `cetl` at the calibrated defaults, only
``target_init`` changed, selection on source validation, paired with S of the same seed; no other
setting is tried, and the table is reported whatever it says.

``--method baseline`` runs the fair comparison on the same footing: T2 from S trained on CETL's
classification schedule with no coupling (fine-tuning S on source labels). The coupling earns its
place only where `cetl` from S beats `baseline` from S, seed by seed.

Usage (cells in ``runs/benchmarks`` beside `benchmarks/digits.py`'s, so S is shared and finished
cells are reused; writes ``benchmarks/results/<name>/<experiment>/cetl_from_s.md``)::

    CETL_DATA_ROOT=../shared/datasets python benchmarks/cetl_from_s.py --name cetl3_quick \\
        --experiments digits_mn_to_us digits_us_to_mn --seeds 3 [--method baseline]

It writes ``<method>_from_s.md``.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any

from cetl.data.root import resolve_data_root
from cetl.experiments.label_efficiency import VARIANT_SETS
from cetl.experiments.paper import Cell
from cetl.workflows.compare import run_cell

RESULTS = Path(__file__).parent / "results"
VARIANT = "from-s"
"""The label-efficiency curves' variant (``method.target_init=source``), so the cell's folder,
``cetl-from-s``, is the one those curves train and reuse."""


def _stage_lifts(summary: dict[str, Any]) -> dict[str, float]:
    """Mean change of target accuracy (points) across each stage, over rounds ≥ 1 (round 0 trains
    from the start and says nothing about what a stage does to a trained T2)."""
    history = summary.get("stage_history") or []
    lifts: dict[str, list[float]] = {}
    previous = None
    for entry in history:
        accuracy = entry["target_test_accuracy"]
        if previous is not None and entry["round"] >= 1:
            lifts.setdefault(entry["stage"], []).append(100 * (accuracy - previous))
        previous = accuracy
    return {stage: statistics.mean(values) for stage, values in lifts.items()}


def _oracle(summary: dict[str, Any]) -> float:
    """The best target accuracy after any stage: an oracle figure, never a result."""
    history = summary.get("stage_history") or []
    return 100 * max((entry["target_test_accuracy"] for entry in history), default=float("nan"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="results folder under benchmarks/results")
    parser.add_argument("--experiments", nargs="+", default=["digits_mn_to_us"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--profile", default="quick")
    parser.add_argument(
        "--method", default="cetl", choices=("cetl", "baseline"), help="the method started from S"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks"))
    args = parser.parse_args()
    common = {"profile": args.profile, "out": args.out, "data_root": resolve_data_root(None)}
    for experiment in args.experiments:
        cell = Cell(
            f"{args.method}, T2 from S",
            experiment,
            experiment,
            args.method,
            None,
            sets=VARIANT_SETS[VARIANT],
            variant=VARIANT,
        )
        lines = [
            f"# {experiment}: `{args.method}` with T2 started from S (`method.target_init=source`), "
            "paired with S",
            "",
            f"Command: `python benchmarks/cetl_from_s.py --name {args.name} --experiments {experiment} "
            f"--seeds {args.seeds} --profile {args.profile} --method {args.method}`. Selection on "
            "source validation; target labels are read only to report the test accuracy and the "
            "oracle column. Stage lifts: mean change of target test accuracy across each stage over "
            "rounds ≥ 1 (points).",
            "",
            f"| seed | S (%) | {args.method}, T2 from S (%) | Δ vs S | selected round | "
            "stage lifts (rounds ≥ 1) | best after any stage (oracle) |",
            "|---:|---:|---:|---:|---:|---|---:|",
        ]
        differences = []
        for seed in range(args.seeds):
            s = run_cell(experiment, "source_only", seed, sets=(), **common)
            run = run_cell(experiment, cell.method, seed, sets=cell.sets, folder=cell.folder, **common)
            difference = 100 * (run["target_test_accuracy"] - s["target_test_accuracy"])
            differences.append(difference)
            lifts = ", ".join(f"{stage} {lift:+.2f}" for stage, lift in _stage_lifts(run).items())
            lines.append(
                f"| {seed} | {100 * s['target_test_accuracy']:.2f} | "
                f"{100 * run['target_test_accuracy']:.2f} | {difference:+.2f} | "
                f"{run.get('selected_round', '–')} | {lifts or '–'} | {_oracle(run):.2f} |"
            )
            print(lines[-1], flush=True)
        positive = sum(d > 0 for d in differences)
        lines.append(
            f"| mean | | | {statistics.mean(differences):+.2f} | | "
            f"{positive}/{len(differences)} seeds positive | |"
        )
        target = RESULTS / args.name / experiment / f"{args.method}_from_s.md"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("\n".join(lines) + "\n")
        print(f"wrote {target}")


if __name__ == "__main__":
    main()
