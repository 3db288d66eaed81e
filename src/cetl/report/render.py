"""Render run summaries as a Markdown comparison with plots.

Input is the list of ``summary.json`` dicts of the runs to compare; output is a
Markdown table (measured vs paper) and PNG plots beside it. Formatting lives in
small pure functions so tests can check the exact text.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cetl.engine.checkpoint import atomic_write_bytes, atomic_write_text
from cetl.experiments.paper import paper_accuracy

METHOD_NOTES = {
    "target_only": "oracle: trained on target labels, which domain adaptation may not read",
}


def format_percent(fraction: float | None) -> str:
    """``0.8123`` → ``81.23``; missing values as an en dash."""
    return "–" if fraction is None else f"{100 * fraction:.2f}"


def comparison_table(summaries: Sequence[dict[str, Any]]) -> str:
    """A Markdown table: one row per run, measured accuracy beside the paper's number."""
    lines = [
        "| method | target test acc. (%) | paper (%) | source val acc. (%) | selected by "
        "| rounds | time (s) |",
        "|---|---:|---:|---:|---|---:|---:|",
    ]
    for s in summaries:
        paper = paper_accuracy(s["method"], s["experiment"])
        note = METHOD_NOTES.get(s["method"])
        name = f"{s['method']}*" if note else s["method"]
        val = format_percent(s["val_accuracy"]) if s["selected_by"] == "source_val" else "–"
        lines.append(
            f"| {name} | {format_percent(s['target_test_accuracy'])} | "
            f"{'–' if paper is None else f'{paper:.2f}'} | {val} | {s['selected_by']} | "
            f"{s['selected_round'] + 1}/{s['rounds']} | {s['wall_seconds']:.0f} |"
        )
    notes = [
        f"\\* {m}: {METHOD_NOTES[m]}."
        for m in dict.fromkeys(s["method"] for s in summaries)
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


def _save(figure: Any, path: Path) -> None:
    """Lay out, render and close ``figure``; the PNG is written atomically."""
    import io

    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    _pyplot().close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def plot_curves(summaries: Sequence[dict[str, Any]], path: Path) -> None:
    """Target test and validation accuracy per round, one line pair per run (PNG)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for s in summaries:
        rounds = [h["round"] + 1 for h in s["history"]]
        line = axis.plot(
            rounds,
            [100 * h["target_test_accuracy"] for h in s["history"]],
            marker="o",
            label=f"{s['method']}: target test",
        )[0]
        axis.plot(
            rounds,
            [100 * h["val_accuracy"] for h in s["history"]],
            linestyle="--",
            color=line.get_color(),
            alpha=0.6,
            label=f"{s['method']}: validation",
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


def plot_bound(summary: dict[str, Any], path: Path) -> bool:
    """The error bound of Eq. 14 per round, each side normalised by its maximum (the paper's
    Fig. 2), as a PNG; returns ``False`` (and writes nothing) when the run logged no bound."""
    rounds, lhs, rhs = bound_series(summary["history"])
    if not rounds:
        return False
    figure, axis = _pyplot().subplots(figsize=(5.6, 3.6), dpi=120)
    axis.plot(rounds, lhs, marker="o", label="LHS: target error of T2")
    axis.plot(rounds, rhs, marker="s", label="RHS: e_S + 2d + 3·M1 + 2·M2")
    axis.set_xlabel("round")
    axis.set_ylabel("normalised by its maximum")
    axis.set_title(f"{summary['method']}, {summary['experiment']} (seed {summary['seed']})", fontsize="small")
    _finish(figure, axis, path)
    return True


def write_report(summaries: Sequence[dict[str, Any]], out_dir: Path, *, title: str, intro: str) -> Path:
    """``report.md`` with the comparison table and ``curves.png``; returns the report's path."""
    plot_curves(summaries, out_dir / "curves.png")
    bound_plots = [
        f"bound_{s['method']}.png" for s in summaries if plot_bound(s, out_dir / f"bound_{s['method']}.png")
    ]
    first = summaries[0]
    details = (
        f"- experiment `{first['experiment']}`, profile `{first['profile']}`, seed {first['seed']}, "
        f"network `{first['network']}`, protocol `{first['protocol']}`\n"
        f"- data: {first['data_root']}; "
        + ", ".join(f"{name.replace('_', ' ')} {count:,}" for name, count in first["data_sizes"].items())
        + "\n"
        f"- device: {first['device']}; cetl {first['cetl_version']}\n"
    )
    notes = sorted({n for s in summaries for n in s.get("data_notes", [])})
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


def mean_curve(summaries: Sequence[dict[str, Any]]) -> tuple[list[int], list[float]]:
    """(rounds, mean target test accuracy in %) over runs, at the rounds every run evaluated.

    Seeds of one cell share a schedule, so this is the cell's learning curve; a round that one
    seed lacks (an unfinished history) is left out rather than averaged over fewer seeds.
    """
    per_round: dict[int, list[float]] = {}
    for s in summaries:
        for record in s["history"]:
            if "target_test_accuracy" in record:
                per_round.setdefault(record["round"], []).append(record["target_test_accuracy"])
    rounds = sorted(r for r, values in per_round.items() if len(values) == len(summaries))
    return [r + 1 for r in rounds], [100 * sum(per_round[r]) / len(per_round[r]) for r in rounds]


def plot_mean_curves(
    groups: Sequence[tuple[str, Sequence[dict[str, Any]]]], path: Path, *, title: str
) -> bool:
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
        axis.set_title(name.upper(), fontsize="small")
        axis.set_xlabel("round")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="x-small")
    axes[0][0].set_ylabel("fraction of Fisher values kept")
    figure.suptitle(title, fontsize="small")
    _save(figure, path)
    return True
