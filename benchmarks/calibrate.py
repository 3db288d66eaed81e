"""Hand-run benchmark: CETL III's pre-registered λ calibration (docs/method.md §10).

The grid and the selection rule below were written into docs/method.md *before* any cell ran;
this script runs exactly that grid, applies exactly that rule, and publishes every cell:

    CETL_DATA_ROOT=../shared/datasets OMP_NUM_THREADS=1 python benchmarks/calibrate.py --family dwa
    CETL_DATA_ROOT=../shared/datasets OMP_NUM_THREADS=1 python benchmarks/calibrate.py --family eq3
    python benchmarks/calibrate.py --report          # benchmarks/results/calibration_quick.{md,json}

Each cell × seed trains through ``cetl compare``'s cell code (``run_cell``: same data, budget,
selection and resumability as ``cetl train``) into ``runs/calibration/<family>/<cell>/``, with S
the ``source_only`` run of the same seed in ``runs/benchmarks`` (trained first if missing), so
every cell is paired with the S of the table runs. Families can run in separate processes.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cetl.data.root import resolve_data_root
from cetl.files import atomic_write_json, atomic_write_text
from cetl.run_folder import read_summary
from cetl.workflows.compare import cell_dir, run_cell

RESULTS = Path(__file__).parent / "results"
EXPERIMENT = "digits_mn_to_us"
PROFILE = "quick"
SEEDS = (0, 1, 2)
S_ROOT = Path("runs/benchmarks")
OUT = Path("runs/calibration")
PIXELS = 32 * 32
"""D = pixels per image: a ‖·‖² summed over pixels is D × the per-pixel mean, while the
cross-entropy is O(1) per sample; the DWA grid keeps one λ per unit of each protected loss."""


@dataclass(frozen=True)
class Cell:
    """One grid point: a method with its overrides; ``defining`` terms must not be inert."""

    family: str
    label: str
    method: str
    sets: tuple[str, ...]
    defining: tuple[str, ...]
    strength: float
    """How hard the cell pushes the coupling/protection (ties go to the weaker cell)."""


def _dwa(lam: float) -> Cell:
    recon = PIXELS * lam
    return Cell(
        "dwa",
        f"lambda={lam:g}",
        "cetl",
        (f"method.dwa1_weight={recon:g}", f"method.dwa2_weight={recon:g}", f"method.dwa3_weight={lam:g}"),
        ("dwa1", "dwa2", "dwa3"),
        lam,
    )


def _eq3(classify: float) -> Cell:
    return Cell(
        "eq3",
        f"classify_weight={classify:g}",
        "cetl_u",
        (f"method.classify_weight={classify:g}",),
        ("recon_target",),
        1 - classify,
    )


def _eq6(recon: float) -> Cell:
    sets = (f"method.e2e_recon_source_weight={recon:g}", f"method.e2e_recon_target_weight={recon:g}")
    return Cell(
        "eq6", f"lambda1=lambda3={recon:g}", "cetl_e2e", sets, ("recon_source", "recon_target"), recon
    )


GRID: dict[str, list[Cell]] = {
    "dwa": [_dwa(lam) for lam in (1e-3, 1e-2, 1e-1, 1.0)],
    "eq3": [_eq3(c) for c in (0.7, 0.97, 0.997)],
    "eq6": [_eq6(r) for r in (0.3, 0.03, 0.003)],
}
"""Pre-registered in docs/method.md §10 (do not change without changing the doc first)."""


def run_family(family: str, cells: list[str]) -> None:
    data_root = resolve_data_root(None)
    for seed in SEEDS:  # S first, shared with the table runs
        run_cell(EXPERIMENT, "source_only", seed, profile=PROFILE, sets=[], out=S_ROOT, data_root=data_root)
    for cell in GRID[family]:
        if cells and cell.label not in cells:
            continue
        for seed in SEEDS:
            s_path = cell_dir(S_ROOT, EXPERIMENT, PROFILE, "source_only", seed)
            sets = [*cell.sets, f"source.path={s_path}"]
            summary = run_cell(
                EXPERIMENT,
                cell.method,
                seed,
                profile=PROFILE,
                sets=sets,
                out=OUT / family / cell.label,
                data_root=data_root,
            )
            print(f"{family} {cell.label} seed {seed}: val {summary.val_accuracy:.4f}", flush=True)


def _cell_rows(family: str) -> list[dict[str, Any]]:
    rows = []
    for cell in GRID[family]:
        seeds = []
        for seed in SEEDS:
            summary = read_summary(
                cell_dir(OUT / family / cell.label, EXPERIMENT, PROFILE, cell.method, seed)
            )
            s = read_summary(cell_dir(S_ROOT, EXPERIMENT, PROFILE, "source_only", seed))
            if summary is None or s is None:
                continue
            inert = sorted({e["term"] for e in summary.inert_terms if e["term"] in cell.defining})
            ratios = {}
            for update, terms in summary.term_balance.items():
                for term, entry in terms.items():
                    if term in cell.defining:
                        ratios[f"{update}:{term}"] = entry["mean_ratio"]
            seeds.append(
                {
                    "seed": seed,
                    "val_accuracy": 100 * summary.val_accuracy,
                    "target_test_accuracy": summary.target_test_percent,
                    "paired_gain": summary.target_test_percent - s.target_test_percent,
                    "oracle_target_test_accuracy": 100 * summary.oracle_target_test_accuracy,
                    "inert_defining_terms": inert,
                    "mean_ratio": ratios,
                    "wall_seconds": summary.wall_seconds,
                }
            )
        complete = len(seeds) == len(SEEDS)
        rows.append(
            {
                "family": family,
                "cell": cell.label,
                "method": cell.method,
                "sets": list(cell.sets),
                "strength": cell.strength,
                "complete": complete,
                "active": complete and not any(s["inert_defining_terms"] for s in seeds),
                "mean_val_accuracy": statistics.fmean(s["val_accuracy"] for s in seeds) if seeds else None,
                "seeds": seeds,
            }
        )
    return rows


def choose(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The pre-registered rule: among complete cells whose defining terms are active in every
    seed, the highest mean source-validation accuracy; within 0.1 points, the weaker cell."""
    eligible = [r for r in rows if r["active"]]
    if not eligible or not all(r["complete"] for r in rows):
        return None
    best = max(r["mean_val_accuracy"] for r in eligible)
    close = [r for r in eligible if r["mean_val_accuracy"] >= best - 0.1]
    return min(close, key=lambda r: r["strength"])


def _mean(values: list[float]) -> str:
    if not values:
        return "–"
    spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.2f}{spread}"


def report() -> None:
    families = {family: _cell_rows(family) for family in GRID}
    chosen = {family: choose(rows) for family, rows in families.items()}
    lines = [
        f"# Calibration grid, `{PROFILE}`, {EXPERIMENT}, seeds {', '.join(map(str, SEEDS))}",
        "",
        "Pre-registered in [docs/method.md §10](../../docs/method.md) before any cell ran. Command: "
        "`python benchmarks/calibrate.py --family {dwa,eq3,eq6}` then `--report`. Every cell is paired "
        "with the `source_only` S of the same seed. **Rule**: among cells whose defining terms are "
        "active (never inert, D10) in every seed, the highest mean source-validation accuracy; within "
        "0.1 points the weaker cell. The target columns are reported, never used to choose; the "
        "oracle column (best round by target labels) is an **oracle**.",
        "",
        f"Machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}.",
        "",
    ]
    for family, rows in families.items():
        pick = chosen[family]
        lines += [
            f"## {family}",
            "",
            "| cell | method | source val (%) | target test (%) | paired gain over S | oracle target (%) "
            "| mean grad-norm ratio of defining terms | inert (seeds) | chosen |",
            "|---|---|---:|---:|---|---:|---|---|---|",
        ]
        for row in rows:
            seeds = row["seeds"]
            gains = [s["paired_gain"] for s in seeds]
            ratio_keys = sorted({k for s in seeds for k in s["mean_ratio"]})
            ratio_text = ", ".join(
                f"{k} {statistics.fmean(s['mean_ratio'][k] for s in seeds if k in s['mean_ratio']):.3g}"
                for k in ratio_keys
            )
            inert = sum(1 for s in seeds if s["inert_defining_terms"])
            lines.append(
                f"| {row['cell']} | {row['method']} | {_mean([s['val_accuracy'] for s in seeds])} "
                f"| {_mean([s['target_test_accuracy'] for s in seeds])} "
                f"| {_mean(gains)} ({', '.join(f'{g:+.2f}' for g in gains)}) "
                f"| {_mean([s['oracle_target_test_accuracy'] for s in seeds])} | {ratio_text or '–'} "
                f"| {inert}/{len(seeds)} | {'**chosen**' if pick is row else ''} |"
            )
        if pick is None:
            lines.append(
                "\nNo cell chosen yet (grid incomplete, or no cell keeps its defining terms active)."
            )
        lines.append("")
    atomic_write_text(RESULTS / "calibration_quick.md", "\n".join(lines) + "\n")
    atomic_write_json(
        RESULTS / "calibration_quick.json",
        {
            "experiment": EXPERIMENT,
            "profile": PROFILE,
            "seeds": list(SEEDS),
            "families": families,
            "chosen": {f: (c["cell"] if c else None) for f, c in chosen.items()},
        },
    )
    print(json.dumps({f: (c["cell"] if c else None) for f, c in chosen.items()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=sorted(GRID), action="append", default=[])
    parser.add_argument("--cells", nargs="*", default=[], help="only these cell labels (split a family)")
    parser.add_argument("--report", action="store_true", help="write benchmarks/results/calibration_quick.*")
    args = parser.parse_args()
    for family in args.family:
        run_family(family, args.cells)
    if args.report or not args.family:
        report()


if __name__ == "__main__":
    main()
