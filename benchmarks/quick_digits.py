"""Hand-run benchmark: the ``quick`` digit experiments over seeds, on this machine's CPU.

Usage (writes ``benchmarks/results/quick_digits.md`` and ``.json``)::

    CETL_DATA_ROOT=../shared/datasets python benchmarks/quick_digits.py --seeds 0 1 2

Each cell is a real ``cetl train`` run (same code path as the CLI) into
``runs/benchmarks/``; finished runs are reused, so an interrupted benchmark resumes.
Times are wall seconds on the machine named in the output; compare them only within
one run of this script.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from pathlib import Path

import torch

from cetl.data.root import resolve_data_root
from cetl.experiments import resolve
from cetl.runs import LAST_CHECKPOINT, SUMMARY_FILE, train_run

CELLS = [
    ("digits_mn_to_us", "source_only"),
    ("digits_us_to_mn", "source_only"),
    ("digits_mn_to_us", "target_only"),
    ("digits_us_to_mn", "target_only"),
]
RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks"))
    args = parser.parse_args()
    root = resolve_data_root(None)
    rows = []
    for experiment, method in CELLS:
        summaries = []
        for seed in args.seeds:
            config = resolve(experiment, method=method, profile=args.profile, seed=seed)
            run_dir = args.out / experiment / args.profile / method / f"seed{seed}"
            if (run_dir / SUMMARY_FILE).exists():
                summaries.append(json.loads((run_dir / SUMMARY_FILE).read_text()))
                continue
            resume = (run_dir / LAST_CHECKPOINT).exists()
            summaries.append(train_run(config, run_dir=run_dir, data_root=root, resume=resume))
            print(f"{experiment} {method} seed {seed}: {100 * summaries[-1]['target_test_accuracy']:.2f}%")
        accuracies = [100 * s["target_test_accuracy"] for s in summaries]
        rows.append(
            {
                "experiment": experiment,
                "method": method,
                "seeds": args.seeds,
                "target_test_accuracy": accuracies,
                "mean": statistics.mean(accuracies),
                "std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
                "selected_by": summaries[0]["selected_by"],
                "wall_seconds": [s["wall_seconds"] for s in summaries],
            }
        )
    threads = torch.get_num_threads()
    machine = f"{platform.processor() or platform.machine()}, {threads} threads, torch {torch.__version__}"
    command = f"CETL_DATA_ROOT=... python benchmarks/quick_digits.py --seeds {' '.join(map(str, args.seeds))}"
    lines = [
        f"# `{args.profile}` digit runs over seeds {args.seeds}",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine} (CPU; no GPU)",
        "",
        "| experiment | method | target test acc. (%) mean ± std | per seed | selected by | wall s (mean) |",
        "|---|---|---:|---|---|---:|",
    ]
    for row in rows:
        per_seed = ", ".join(f"{a:.2f}" for a in row["target_test_accuracy"])
        lines.append(
            f"| {row['experiment']} | {row['method']} | {row['mean']:.2f} ± {row['std']:.2f} | {per_seed} "
            f"| {row['selected_by']} | {statistics.mean(row['wall_seconds']):.0f} |"
        )
    lines += ["", "`target_only` reads target labels: an oracle, not a domain-adaptation result."]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.profile}_digits.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"{args.profile}_digits.json").write_text(
        json.dumps({"command": command, "machine": machine, "rows": rows}, indent=2) + "\n"
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
