"""Hand-run benchmark: digit experiments over seeds and methods, paired with S.

Usage (writes ``benchmarks/results/<name>.md`` and ``.json``)::

    CETL_DATA_ROOT=../shared/datasets python benchmarks/digits.py --name quick_digits \\
        --methods source_only target_only --experiments digits_mn_to_us digits_us_to_mn
    CETL_DATA_ROOT=../shared/datasets python benchmarks/digits.py --name quick_cetl \\
        --methods source_only baseline cetl_f cetl_u cetl_e cetl_e2e

Each cell is a real training run through the same code path as ``cetl train``, into
``runs/benchmarks/``; finished runs are reused, so an interrupted benchmark resumes.
``source_only`` of seed s *is* S of every coupling method of seed s, so gains over it
are paired. Times are wall seconds on this machine; compare them only within one run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from pathlib import Path
from typing import Any

import torch

from cetl.config import merge
from cetl.data.root import resolve_data_root
from cetl.experiments import resolve
from cetl.runs import LAST_CHECKPOINT, read_summary, train_run

RESULTS = Path(__file__).parent / "results"


def run_cell(experiment: str, method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    base = args.out / experiment / args.profile
    run_dir = base / method / f"seed{seed}"
    finished = read_summary(run_dir)
    if finished is not None:
        return finished
    config = resolve(experiment, method=method, profile=args.profile, seed=seed, sets=args.set)
    config = merge(config, {"source": {"path": str(base / "source_only" / f"seed{seed}")}})
    summary = train_run(
        config,
        run_dir=run_dir,
        data_root=resolve_data_root(None),
        resume=(run_dir / LAST_CHECKPOINT).exists(),
    )
    print(f"{experiment} {method} seed {seed}: {100 * summary['target_test_accuracy']:.2f}%", file=sys.stderr)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="results file stem")
    parser.add_argument("--experiments", nargs="+", default=["digits_mn_to_us"])
    parser.add_argument("--methods", nargs="+", default=["source_only"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--set", action="append", default=[], help="config override for every cell")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks"))
    args = parser.parse_args()
    rows = []
    for experiment in args.experiments:
        s_accuracy = (
            {
                seed: 100 * run_cell(experiment, "source_only", seed, args)["target_test_accuracy"]
                for seed in args.seeds
            }
            if any(m != "target_only" for m in args.methods)
            else {}
        )
        for method in args.methods:
            summaries = [run_cell(experiment, method, seed, args) for seed in args.seeds]
            accuracies = [100 * s["target_test_accuracy"] for s in summaries]
            gains = (
                [a - s_accuracy[seed] for a, seed in zip(accuracies, args.seeds, strict=True)]
                if s_accuracy
                else []
            )
            stage_seconds: dict[str, float] = {}
            for s in summaries:
                for stage, seconds in s.get("stage_seconds", {}).items():
                    stage_seconds[stage] = stage_seconds.get(stage, 0.0) + seconds / len(summaries)
            rows.append(
                {
                    "experiment": experiment,
                    "method": method,
                    "seeds": args.seeds,
                    "target_test_accuracy": accuracies,
                    "mean": statistics.mean(accuracies),
                    "std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
                    "gain_over_s": gains,
                    "classify_steps": summaries[0]["classify_steps"],
                    "selected_by": summaries[0]["selected_by"],
                    "wall_seconds": statistics.mean(s["wall_seconds"] for s in summaries),
                    "stage_seconds": {k: round(v, 1) for k, v in stage_seconds.items()},
                }
            )
    threads = torch.get_num_threads()
    machine = f"{platform.processor() or platform.machine()}, {threads} threads, torch {torch.__version__}"
    command = "CETL_DATA_ROOT=... python benchmarks/digits.py " + " ".join(sys.argv[1:])
    lines = [
        f"# {args.name}: `{args.profile}` digit runs over seeds {args.seeds}",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine} (CPU; no GPU). Selection never reads target labels.",
        "",
        "| experiment | method | target test acc. (%) mean ± std | per seed | paired gain over S | "
        "classify steps | selected by | wall s | s per stage |",
        "|---|---|---:|---|---|---:|---|---:|---|",
    ]
    for row in rows:
        per_seed = ", ".join(f"{a:.2f}" for a in row["target_test_accuracy"])
        gains = ", ".join(f"{g:+.2f}" for g in row["gain_over_s"])
        mean_gain = f"{statistics.mean(row['gain_over_s']):+.2f} ({gains})" if row["gain_over_s"] else "–"
        stages = ", ".join(f"{k} {v:.0f}" for k, v in row["stage_seconds"].items())
        lines.append(
            f"| {row['experiment']} | {row['method']} | {row['mean']:.2f} ± {row['std']:.2f} | {per_seed} | "
            f"{mean_gain} | {row['classify_steps']} | {row['selected_by']} | {row['wall_seconds']:.0f} "
            f"| {stages} |"
        )
    lines += ["", "`target_only` reads target labels: an oracle, not a domain-adaptation result."]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    payload = {"command": command, "machine": machine, "rows": rows}
    (RESULTS / f"{args.name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
