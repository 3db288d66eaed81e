"""Render run summaries as a Markdown comparison with plots.

Input is the list of ``summary.json`` dicts of the runs to compare; output is a
Markdown table (measured vs paper) and PNG plots beside it. Formatting lives in
small pure functions so tests can check the exact text.

Why one file: every plot and table here renders the same summary dicts with the same formatting
helpers and matplotlib setup; each function is small and pure.
"""

from __future__ import annotations

import math
import statistics
import textwrap
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cetl.experiments.paper import paper_accuracy
from cetl.files import atomic_write_bytes, atomic_write_text
from cetl.summary import RunSummary

METHOD_NOTES = {
    "target_only": "oracle: trained on target labels, which domain adaptation may not read",
}


def format_percent(fraction: float | None) -> str:
    """``0.8123`` → ``81.23``; missing values as an en dash."""
    return "–" if fraction is None else f"{100 * fraction:.2f}"


def format_ratio(ratio: float) -> str:
    """A term's gradient norm over its update's largest, in % to 3 significant digits
    (``1`` → ``100``, ``4.2e-5`` → ``0.0042``): inert terms sit orders of magnitude down."""
    return f"{100 * ratio:.3g}"


def comparison_table(summaries: Sequence[RunSummary]) -> str:
    """A Markdown table: one row per run, measured accuracy beside the paper's number."""
    lines = [
        "| method | target test acc. (%) | paper (%) | source val acc. (%) | selected by "
        "| rounds | time (s) |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for s in summaries:
        paper = paper_accuracy(s.method, s.experiment)
        note = METHOD_NOTES.get(s.method)
        name = f"{s.method}*" if note else s.method
        val = format_percent(s.val_accuracy) if s.selected_by == "source_val" else "–"
        lines.append(
            f"| {name} | {format_percent(s.target_test_accuracy)} | "
            f"{'–' if paper is None else f'{paper:.2f}'} | {val} | {s.selected_by} | "
            f"{s.selected_round + 1}/{s.rounds} | {s.wall_seconds:.0f} |"
        )
    notes = [
        f"\\* {m}: {METHOD_NOTES[m]}."
        for m in dict.fromkeys(s.method for s in summaries)
        if m in METHOD_NOTES
    ]
    return "\n".join(lines + (["", *notes] if notes else [])) + "\n"


def _pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend (imported late: only reports need it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(figure: Any, axis: Any, path: Path) -> None:
    """Grid, legend and layout shared by every single-panel plot, then :func:`_save`."""
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    _save(figure, path)


def _finish_panel(axis: Any, *, title: str, xlabel: str) -> None:
    """Title, x label, grid and legend of one panel of a multi-panel plot (saved by :func:`_save`)."""
    axis.set_title(title, fontsize="small")
    axis.set_xlabel(xlabel)
    axis.grid(alpha=0.3)
    axis.legend(fontsize="x-small")


def _save(figure: Any, path: Path) -> None:
    """Lay out, render and close ``figure``; the PNG is written atomically."""
    import io

    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    _pyplot().close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def plot_curves(summaries: Sequence[RunSummary], path: Path) -> None:
    """Target test and validation accuracy per round, one line pair per run (PNG)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for s in summaries:
        rounds = [h["round"] + 1 for h in s.history]
        line = axis.plot(
            rounds,
            [100 * h["target_test_accuracy"] for h in s.history],
            marker="o",
            label=f"{s.method}: target test",
        )[0]
        if all(h["val_accuracy"] is not None for h in s.history):  # none: nothing held out
            axis.plot(
                rounds,
                [100 * h["val_accuracy"] for h in s.history],
                linestyle="--",
                color=line.get_color(),
                alpha=0.6,
                label=f"{s.method}: validation",
            )
    axis.set_xlabel("round")
    axis.set_ylabel("accuracy (%)")
    _finish(figure, axis, path)


def bound_series(history: Sequence[dict[str, Any]]) -> tuple[list[int], list[float], list[float]]:
    """(rounds, LHS / max LHS, RHS / max RHS) from a run's evaluation records, as Fig. 2 plots
    them; empty when the run logged no bound (its method has no S and T1, or transfer learning)."""
    records = [h for h in history if "bound_lhs" in h]
    if not records:
        return [], [], []
    lhs = [h["bound_lhs"] for h in records]
    rhs = [h["bound_rhs"] for h in records]
    top_lhs, top_rhs = max(max(lhs), 1e-12), max(max(rhs), 1e-12)
    return [h["round"] + 1 for h in records], [v / top_lhs for v in lhs], [v / top_rhs for v in rhs]


def plot_bound(summary: RunSummary, path: Path) -> bool:
    """The error bound of Eq. 14 per round, each side normalised by its maximum (the paper's
    Fig. 2), as a PNG; returns ``False`` (and writes nothing) when the run logged no bound."""
    rounds, lhs, rhs = bound_series(summary.history)
    if not rounds:
        return False
    figure, axis = _pyplot().subplots(figsize=(5.6, 3.6), dpi=120)
    axis.plot(rounds, lhs, marker="o", label="LHS: target error of T2")
    axis.plot(rounds, rhs, marker="s", label="RHS: e_S + 2d + 3·M1 + 2·M2")
    axis.set_xlabel("round")
    axis.set_ylabel("normalised by its maximum")
    axis.set_title(f"{summary.method}, {summary.experiment} (seed {summary.seed})", fontsize="small")
    _finish(figure, axis, path)
    return True


def write_report(summaries: Sequence[RunSummary], out_dir: Path, *, title: str, intro: str) -> Path:
    """``report.md`` with the comparison table and ``curves.png``; returns the report's path."""
    plot_curves(summaries, out_dir / "curves.png")
    bound_plots = [
        f"bound_{s.method}.png" for s in summaries if plot_bound(s, out_dir / f"bound_{s.method}.png")
    ]
    first = summaries[0]
    details = (
        f"- experiment `{first.experiment}`, profile `{first.profile}`, seed {first.seed}, "
        f"network `{first.network}`, protocol `{first.protocol}`\n"
        f"- data: {first.data_root}; "
        + ", ".join(f"{name.replace('_', ' ')} {count:,}" for name, count in first.data_sizes.items())
        + "\n"
        f"- device: {first.device}; cetl {first.cetl_version}\n"
    )
    notes = sorted({n for s in summaries for n in s.data_notes})
    text = (
        f"# {title}\n\n{intro}\n\n{comparison_table(summaries)}\n"
        f"![accuracy per round](curves.png)\n\n"
        + "".join(f"![error bound, Eq. 14]({name})\n\n" for name in bound_plots)
        + f"## Setup\n\n{details}"
        + ("".join(f"- note: {n}\n" for n in notes))
    )
    path = out_dir / "report.md"
    atomic_write_text(path, text)
    return path


def mean_curve(summaries: Sequence[RunSummary]) -> tuple[list[int], list[float]]:
    """(rounds, mean target test accuracy in %) over runs, at the rounds every run evaluated.

    Seeds of one cell share a schedule, so this is the cell's learning curve; a round that one
    seed lacks (an unfinished history) is left out rather than averaged over fewer seeds.
    """
    per_round: dict[int, list[float]] = {}
    for s in summaries:
        for record in s.history:
            if "target_test_accuracy" in record:
                per_round.setdefault(record["round"], []).append(record["target_test_accuracy"])
    rounds = sorted(r for r, values in per_round.items() if len(values) == len(summaries))
    return [r + 1 for r in rounds], [100 * sum(per_round[r]) / len(per_round[r]) for r in rounds]


def plot_mean_curves(groups: Sequence[tuple[str, Sequence[RunSummary]]], path: Path, *, title: str) -> bool:
    """One learning curve per (label, runs) group, mean over its runs (PNG); ``False`` (and no
    file) when no group has an evaluation record."""
    series = [(label, *mean_curve(runs)) for label, runs in groups]
    series = [(label, rounds, values) for label, rounds, values in series if rounds]
    if not series:
        return False
    figure, axis = _pyplot().subplots(figsize=(6.4, 4.0), dpi=120)
    for label, rounds, values in series:
        axis.plot(rounds, values, marker="o", markersize=3, label=label)
    axis.set_xlabel("round")
    axis.set_ylabel("target test accuracy (%), mean over seeds")
    axis.set_title(title, fontsize="small")
    _finish(figure, axis, path)
    return True


def plot_band_curves(
    lines: dict[str, Sequence[tuple[float, float, float]]],
    path: Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    reference: tuple[str, float] | None = None,
) -> bool:
    """One line per label through its ``(x, mean, std)`` points with a ± std band, on a log x
    axis ticked at the measured x values, and an optional horizontal ``(label, value)`` line;
    ``False`` (no file) without points.

    A line whose points equal an earlier line's (e.g. a control that is the same run as a
    baseline) is drawn dashed and labelled ``(= earlier)``: drawn plainly it would hide the
    other one and look like a missing method.
    """
    lines = {label: points for label, points in lines.items() if points}
    if not lines:
        return False
    figure, axis = _pyplot().subplots(figsize=(7.0, 4.4), dpi=120)
    drawn: dict[tuple[tuple[float, float, float], ...], str] = {}
    for label, points in lines.items():
        xs, means, stds = zip(*points, strict=True)
        same_as = drawn.setdefault(tuple(points), label)
        style = {"label": label}
        if same_as != label:
            style = {"label": f"{label} (= {same_as})", "linestyle": "--"}
        line = axis.plot(xs, means, marker="o", markersize=3, **style)[0]
        axis.fill_between(
            xs,
            [m - s for m, s in zip(means, stds, strict=True)],
            [m + s for m, s in zip(means, stds, strict=True)],
            color=line.get_color(),
            alpha=0.15,
        )
    if reference is not None:
        axis.axhline(reference[1], color="black", linestyle="--", linewidth=1, label=reference[0])
    axis.set_xscale("log")
    ticks = sorted({x for points in lines.values() for x, _, _ in points if math.isfinite(x)})
    axis.set_xticks(ticks, [f"{x:g}" for x in ticks])
    axis.minorticks_off()
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(textwrap.fill(title, width=90), fontsize="small")
    _finish(figure, axis, path)
    return True


GFI_NAMES = ("gfi1", "gfi2", "gfi3")


def gfi_kept_series(
    stage_records: Sequence[dict[str, Any]],
) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """``{gfi: {layer: (rounds, kept fraction)}}`` from a run's ``kind: stage`` records.

    CETL logs ``gfiK_kept/<parameter>`` after the stage that computes GFI K (METHOD.md §3); a
    layer is its weight tensor (biases hold a few dozen values each and only add noise).
    """
    series: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    for record in stage_records:
        for key, value in record.items():
            name, slash, parameter = key.partition("_kept/")
            if not slash or name not in GFI_NAMES or not parameter.endswith(".weight"):
                continue
            rounds, values = series.setdefault(name, {}).setdefault(
                parameter.removesuffix(".weight"), ([], [])
            )
            rounds.append(record["round"] + 1)
            values.append(value)
    return series


def plot_gfi_kept(stage_records: Sequence[dict[str, Any]], path: Path, *, title: str) -> bool:
    """GFI's kept fraction per layer over rounds, one panel per GFI (PNG); ``False`` (and no
    file) when the run logged no GFI (a method without DWA, or plain Fisher)."""
    series = gfi_kept_series(stage_records)
    if not series:
        return False
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(series), figsize=(4.2 * len(series), 3.6), dpi=120, squeeze=False)
    for axis, (name, layers) in zip(axes[0], sorted(series.items()), strict=True):
        for layer, (rounds, values) in layers.items():
            axis.plot(rounds, values, marker="o", markersize=3, label=layer)
        _finish_panel(axis, title=name.upper(), xlabel="round")
    axes[0][0].set_ylabel("fraction of Fisher values kept")
    figure.suptitle(title, fontsize="small")
    _save(figure, path)
    return True


GRAD_NORM = "grad_norm/"
"""Prefix of a term's gradient norm in a ``kind: balance`` record."""


def balance_series(
    balance_records: Sequence[dict[str, Any]],
) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """``{"stage/update": {term: (steps, gradient norms)}}`` from a run's ``kind: balance``
    records, in training order: the raw norms behind ``summary.json``'s ``term_balance``, so a
    term that fades (or one that is inert from the start) shows as a line far below the others."""
    series: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    for record in balance_records:
        panel = series.setdefault(f"{record['stage']}/{record['update']}", {})
        for key, value in record.items():
            if not key.startswith(GRAD_NORM):
                continue
            steps, values = panel.setdefault(key.removeprefix(GRAD_NORM), ([], []))
            steps.append(record["step"])
            values.append(value)
    return series


def plot_term_balance(balance_records: Sequence[dict[str, Any]], path: Path, *, title: str) -> bool:
    """Gradient norm of each weighted loss term over steps, log scale, one panel per
    ``stage/update`` (METHOD.md D10), as a PNG; ``False`` (and no file) when the run logged
    no balance (term balance off, or a run from before it existed)."""
    series = balance_series(balance_records)
    if not series:
        return False
    columns = min(len(series), 3)
    rows = math.ceil(len(series) / columns)
    figure, axes = _pyplot().subplots(
        rows, columns, figsize=(4.2 * columns, 3.4 * rows), dpi=120, squeeze=False
    )
    panels = list(axes.flat)
    for axis, (name, terms) in zip(panels, series.items(), strict=False):
        for term, (steps, values) in terms.items():
            axis.plot(steps, values, marker="o", markersize=2, label=term)
        # A norm of 0 (a term that does not reach these parameters) has no place on a log axis;
        # matplotlib masks it, and a panel of zeros alone stays linear rather than failing.
        if any(value > 0 for _, values in terms.values() for value in values):
            axis.set_yscale("log")
        _finish_panel(axis, title=name, xlabel="step")
    for axis in panels[len(series) :]:
        axis.set_visible(False)
    for row in axes:
        row[0].set_ylabel("gradient norm of the weighted term")
    figure.suptitle(title, fontsize="small")
    _save(figure, path)
    return True


@dataclass(frozen=True)
class StageCurve:
    """Accuracy after every stage, mean over the seeds that share the first seed's stage layout."""

    x: tuple[float, ...]
    """``round + (position of the stage in its round + 1) / stages in that round``: a round's
    last stage falls on ``round + 1``, where the per-round curves put that round."""
    stages: tuple[str, ...]
    target_test: tuple[float, ...]
    """Mean target test accuracy (%), for reporting only: selection never reads it."""
    val: tuple[float, ...]
    """Mean labelled (source) validation accuracy (%)."""
    seeds: int
    left_out: int
    """Seeds with another stage layout (another schedule): not averaged in."""


def stage_curve(summaries: Sequence[RunSummary]) -> StageCurve | None:
    """The per-stage curve of runs' ``stage_history``; ``None`` when no run has one (per-stage
    evaluation off, or a run from before it existed)."""
    histories = [s.stage_history for s in summaries if s.stage_history]
    if not histories:
        return None
    layout = [(entry["round"], entry["stage"]) for entry in histories[0]]
    shared = [h for h in histories if [(entry["round"], entry["stage"]) for entry in h] == layout]
    per_round = Counter(round_index for round_index, _ in layout)
    position: Counter[int] = Counter()
    x = []
    for round_index, _ in layout:
        position[round_index] += 1
        x.append(round_index + position[round_index] / per_round[round_index])

    def mean(key: str) -> tuple[float, ...]:
        """Mean over seeds in %; NaN where a run held nothing out for validation (``None``)."""
        return tuple(
            100 * statistics.fmean(math.nan if h[i][key] is None else h[i][key] for h in shared)
            for i in range(len(layout))
        )

    return StageCurve(
        x=tuple(x),
        stages=tuple(stage for _, stage in layout),
        target_test=mean("target_test_accuracy"),
        val=mean("val_accuracy"),
        seeds=len(shared),
        left_out=len(histories) - len(shared),
    )


def plot_stage_curves(summaries: Sequence[RunSummary], path: Path, *, title: str) -> bool:
    """Accuracy after every stage of every round (PNG), so a stage that undoes what the one
    before it learnt shows as a dip inside a round; ``False`` (and no file) without
    ``stage_history``."""
    curve = stage_curve(summaries)
    if curve is None:
        return False
    figure, axis = _pyplot().subplots(figsize=(6.4, 4.0), dpi=120)
    line = axis.plot(curve.x, curve.target_test, marker="o", markersize=3, label="target test")[0]
    axis.plot(
        curve.x,
        curve.val,
        marker="o",
        markersize=3,
        linestyle="--",
        color=line.get_color(),
        alpha=0.6,
        label="source validation",
    )
    first_round = [i for i, x in enumerate(curve.x) if math.ceil(x) == math.ceil(curve.x[0])]
    for i in first_round:  # the layout repeats each round: name the stages once
        axis.annotate(curve.stages[i], (curve.x[i], curve.target_test[i]), fontsize="x-small", rotation=30)
    axis.set_xlabel("round (the stages of a round evenly spaced within it)")
    axis.set_ylabel("target test accuracy (reporting only), %")
    seeds = f"mean over {curve.seeds} seed{'s' if curve.seeds > 1 else ''}"
    if curve.left_out:
        seeds += f"; {curve.left_out} with another stage layout left out"
    axis.set_title(f"{title} ({seeds})", fontsize="small")
    _finish(figure, axis, path)
    return True
