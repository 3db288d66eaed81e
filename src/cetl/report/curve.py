"""A study whose columns are points of a curve (label efficiency): its table, paired differences and plot.

A paper table puts our number beside the paper's; a curve study has no paper numbers, so its
report lays out accuracy (mean ± std over seeds) per row and column, then each row's paired
difference from the study's reference methods (seed by seed, only seeds both have), and draws
accuracy against labelled images per class on a log axis: one line per method with a ± std
band, S itself (the :data:`~cetl.experiments.paper.TEACHER` row) as a horizontal line.

The x value of a column is read from its runs, not from its label: ``label_draw.per_class`` for a
drawn subset, else the labelled training images over the classes (the ``all`` column).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cetl.experiments.paper import TEACHER
from cetl.report.results import CellResult, TableResult, cell_text
from cetl.summary import RunSummary


def labels_per_class(summary: RunSummary) -> float | None:
    """Labelled training images per class a run saw (``None`` for a run that does not say)."""
    draw = summary.label_draw
    if draw:
        return float(draw["per_class"])
    classes = summary.num_classes
    labelled = summary.data_sizes.get("labelled_train")
    return labelled / classes if classes and labelled else None


@dataclass(frozen=True)
class CurvePoint:
    column: str
    x: float
    mean: float
    std: float
    n: int


def _std(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def curve_points(result: TableResult) -> dict[str, list[CurvePoint]]:
    """Row → its measured points in column order (S's row included)."""
    table = result.table
    points: dict[str, list[CurvePoint]] = {}
    for row in table.rows:
        for column in table.columns:
            cell = result.at(row, column)
            if cell is None or not cell.measured:
                continue
            xs = [x for x in (labels_per_class(run.summary) for run in cell.runs) if x is not None]
            if not xs and cell.cell.method != TEACHER:
                continue
            x = statistics.fmean(xs) if xs else float("nan")
            points.setdefault(row, []).append(CurvePoint(column, x, cell.mean, cell.std, len(cell.runs)))
    return points


def _by_seed(cell: CellResult) -> dict[int, float]:
    return {run.seed: run.summary.target_test_percent for run in cell.runs}


def paired_markdown(result: TableResult) -> str:
    """Per reference method, each other row's mean paired difference per column, with how many
    seeds it was ahead: ``+1.23 (3/3)``. Empty when no pair has a common seed."""
    table = result.table
    blocks = []
    for reference in table.references:
        reference_row = next((c.cell.row for c in result.cells if c.cell.folder == reference), None)
        if reference_row is None:
            continue
        lines = [
            f"Paired difference from `{reference}` (percentage points; seeds ahead / seeds paired):",
            "",
            "| | " + " | ".join(table.columns) + " |",
            "|---|" + "---:|" * len(table.columns),
        ]
        rows = 0
        for row in table.rows:
            if row == reference_row:
                continue
            texts = []
            for column in table.columns:
                cell, base = result.at(row, column), result.at(reference_row, column)
                if cell is None or base is None or not (cell.measured and base.measured):
                    texts.append("–")
                    continue
                ours, theirs = _by_seed(cell), _by_seed(base)
                seeds = sorted(set(ours) & set(theirs))
                if not seeds:
                    texts.append("–")
                    continue
                differences = [ours[s] - theirs[s] for s in seeds]
                ahead = sum(d > 0 for d in differences)
                texts.append(f"{statistics.fmean(differences):+.2f} ({ahead}/{len(seeds)})")
            if any(text != "–" for text in texts):
                rows += 1
                lines.append(f"| {row} | " + " | ".join(texts) + " |")
        if rows:
            blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n" if blocks else ""


def curve_markdown(result: TableResult, *, seeds: int) -> str:
    """Accuracy per row and column: mean ± std over seeds, ``(n=k)`` where seeds are missing,
    and why a cell has no run."""

    table = result.table
    lines = ["| | " + " | ".join(table.columns) + " |", "|---|" + "---:|" * len(table.columns)]
    notes: dict[str, int] = {}
    for row in table.rows:
        texts = []
        for column in table.columns:
            cell = result.at(row, column)
            texts.append("–" if cell is None else cell_text(cell, seeds, notes))
        lines.append(f"| {row} | " + " | ".join(texts) + " |")
    lines += [""] + [f"- [{number}] {reason}" for reason, number in notes.items()]
    return "\n".join(lines).rstrip() + "\n"


def plot_curve(result: TableResult, path: Path) -> bool:
    """Accuracy against labelled images per class for a curve study (:func:`plot_band_curves`);
    ``False`` (and no file) when no method has a point."""
    from cetl.report.render import plot_band_curves

    points = curve_points(result)
    teacher_row = next((c.cell.row for c in result.cells if c.cell.method == TEACHER), None)
    lines = {
        row.split(" (")[0]: sorted(((p.x, p.mean, p.std) for p in row_points), key=lambda point: point[0])
        for row, row_points in points.items()
        if row != teacher_row
    }
    reference = None
    if teacher_row in points:
        s_mean = statistics.fmean(p.mean for p in points[teacher_row])
        reference = (f"S alone ({s_mean:.1f}%)", s_mean)
    return plot_band_curves(
        lines,
        path,
        title=result.table.title,
        xlabel=result.table.curve or "",
        ylabel="target test accuracy (%), mean ± std over seeds",
        reference=reference,
    )
