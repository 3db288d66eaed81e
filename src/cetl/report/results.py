"""A table's measured cells: one cell's runs (or why it has none), a table of them, and the one
text a cell is shown as. Shared by the paper tables (:mod:`cetl.report.tables`) and the
label-efficiency curves (:mod:`cetl.report.curve`), so neither imports the other."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cetl.engine.validators import selection_history
from cetl.experiments.paper import Cell, Table
from cetl.report.collect import Run

SUBSET_MARK = "†"


def sample_std(values: Sequence[float]) -> float:
    """Sample standard deviation over seeds, 0 for a single seed (as tables report ± 0.00)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


class SeedStatistics:
    """Mean and sample standard deviation of a row's per-seed ``accuracies`` (%), for every
    table that reports a method over seeds."""

    accuracies: tuple[float, ...]

    @property
    def mean(self) -> float:
        return statistics.fmean(self.accuracies)

    @property
    def std(self) -> float:
        """Sample standard deviation over seeds (0 for one seed)."""
        return sample_std(self.accuracies)


@dataclass(frozen=True)
class CellResult(SeedStatistics):
    """One cell: its finished runs (one per seed), or why it has none."""

    cell: Cell
    runs: tuple[Run, ...] = ()
    reason: str = ""
    """Why no run is shown: ``not run: ...`` (cannot run here), ``failed: ...``, ``pending: ...``."""

    @property
    def measured(self) -> bool:
        return bool(self.runs)

    @property
    def accuracies(self) -> tuple[float, ...]:
        """Per seed, in %: the selected model's target test accuracy."""
        return tuple(run.summary.target_test_percent for run in self.runs)

    @property
    def selected_by(self) -> str:
        return ", ".join(sorted({run.summary.selected_by for run in self.runs}))

    @property
    def data_variants(self) -> dict[str, str]:
        """Dataset → ``full`` or ``subset``, over the cell's runs (a subset anywhere wins)."""
        variants: dict[str, str] = {}
        for run in self.runs:
            for name, variant in run.summary.data_variants.items():
                variants[name] = "subset" if "subset" in (variant, variants.get(name)) else variant
        return variants

    @property
    def data(self) -> str:
        return "subset" if "subset" in self.data_variants.values() else "full"

    @property
    def carried_from(self) -> str | None:
        """The earlier ``results.json`` this cell's numbers were carried from (``cetl reproduce
        --carry``), or ``None`` for a cell measured from run folders; a cell is carried whole."""
        return self.runs[0].summary.extra.get("carried") if self.runs else None

    @property
    def wall_seconds(self) -> float:
        """Training seconds summed over seeds (S's own training is its own cell's)."""
        return sum(float(run.summary.wall_seconds) for run in self.runs)

    def to_json(self) -> dict[str, Any]:
        cell = self.cell
        entry: dict[str, Any] = {
            "id": cell.id,
            "row": cell.row,
            "column": cell.column,
            "experiment": cell.experiment,
            "method": cell.method,
            "paper": cell.paper,
            "status": "measured" if self.measured else self.reason.partition(":")[0],
            "reason": self.reason,
        }
        if self.measured:
            entry |= {
                "n": len(self.runs),
                "seeds": [run.seed for run in self.runs],
                "accuracies": list(self.accuracies),
                "mean": self.mean,
                "std": self.std,
                "selected_by": self.selected_by,
                "profile": self.runs[0].summary.profile,
                "setting": self.runs[0].summary.setting,
                "data": self.data,
                "data_variants": self.data_variants,
                "wall_seconds": round(self.wall_seconds, 2),
                "runs": [str(run.path) for run in self.runs if run.path is not None],
                # Per seed, what the regret table and the learning curves read: a later report
                # that carries this cell (cetl reproduce --carry) shows them without its runs.
                "selection_histories": [selection_history(run.summary.history) for run in self.runs],
            }
            per_class = {run.summary.label_draw["per_class"] for run in self.runs if run.summary.label_draw}
            if len(per_class) == 1:  # a curve's x (carried cells need it: cetl reproduce --carry)
                entry["labels_per_class"] = per_class.pop()
            if self.carried_from is not None:
                entry["carried"] = True
        return entry


@dataclass(frozen=True)
class TableResult:
    """A table and the result of each of its cells, in the table's cell order."""

    table: Table
    cells: tuple[CellResult, ...]

    def at(self, row: str, column: str) -> CellResult | None:
        return next((c for c in self.cells if c.cell.row == row and c.cell.column == column), None)


def _measured_text(result: CellResult, seeds: int) -> str:
    text = f"{result.mean:.2f} ± {result.std:.2f}"
    if len(result.runs) != seeds:
        text += f" (n={len(result.runs)})"
    if result.carried_from is not None:
        text += " (carried)"  # measured by an earlier reproduction: the header names its command
    return text + (f" {SUBSET_MARK}" if result.data == "subset" else "")


def cell_text(cell: CellResult, seeds: int, notes: dict[str, int]) -> str:
    """A cell's mean ± std, or why it has no run as ``status [n]`` (``notes`` numbers reasons)."""
    if cell.measured:
        return _measured_text(cell, seeds)
    number = notes.setdefault(cell.reason, len(notes) + 1)
    return f"{cell.reason.partition(':')[0]} [{number}]"
