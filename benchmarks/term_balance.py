"""Per-cell evidence a table's accuracy needs beside it: term balance and accuracy after each stage.

For every run folder under ``OUT/EXPERIMENT/PROFILE/CELL/seedN`` (a ``cetl reproduce`` or
``cetl compare`` output), prints Markdown:

- the term balance (METHOD.md D10): per stage and loss term, the median over the run's balance
  records of the term's gradient norm as a share of the largest term of its update, then the
  range of those medians over seeds;
- the target test accuracy after each stage, averaged over rounds 2 to last and over seeds
  (``train.eval_every_stage``): whether a stage lifts or lowers T2's accuracy.

Usage::

    python benchmarks/term_balance.py runs/tl_efficientnet_lite0_to_cifar10s/quick cetl cetl-random_s hint
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path


def records(run: Path) -> list[dict]:
    with (run / "metrics.jsonl").open() as handle:
        return [json.loads(line) for line in handle if line.strip()]


def balance(rows: list[dict]) -> dict[tuple[str, str], float]:
    """(stage, term) → median share of the largest term of its update, in %."""
    shares: dict[tuple[str, str], list[float]] = defaultdict(list)
    for row in rows:
        if row.get("kind") != "balance":
            continue
        norms = {k.removeprefix("grad_norm/"): v for k, v in row.items() if k.startswith("grad_norm/")}
        largest = max(norms.values()) or 1.0
        for term, value in norms.items():
            shares[(row["stage"], term)].append(100.0 * value / largest)
    return {key: statistics.median(values) for key, values in shares.items()}


def stage_accuracy(rows: list[dict]) -> dict[str, float]:
    """stage → mean target test accuracy (%) right after it, over rounds 1..last (0-based)."""
    after: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        if row.get("kind") == "stage_eval" and row["round"] >= 1 and row["target_test_accuracy"] is not None:
            after[row["stage"]].append(100.0 * row["target_test_accuracy"])
    return {stage: statistics.mean(values) for stage, values in after.items()}


def main(folder: str, *cells: str) -> None:
    root = Path(folder)
    for cell in cells:
        runs = sorted((root / cell).glob("seed*/metrics.jsonl"))
        if not runs:
            print(f"{cell}: no runs\n")
            continue
        per_seed = [records(path.parent) for path in runs]
        print(f"### {cell} ({len(runs)} seeds)\n")
        print("| stage | term | median share of the largest term (%), range over seeds |")
        print("|---|---|---|")
        shares = [balance(rows) for rows in per_seed]
        for key in sorted({key for seed in shares for key in seed}):
            values = [seed[key] for seed in shares if key in seed]
            print(f"| {key[0]} | {key[1]} | {min(values):.1f}–{max(values):.1f} |")
        accuracy = [stage_accuracy(rows) for rows in per_seed]
        stages = list(dict.fromkeys(stage for seed in accuracy for stage in seed))
        if stages:
            means = {s: statistics.mean(seed[s] for seed in accuracy if s in seed) for s in stages}
            text = ", ".join(f"{stage} {value:.2f}" for stage, value in means.items())
            print(f"\nTarget test accuracy after each stage (rounds 2–last, mean over seeds): {text}\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
