"""A paper table with our numbers beside the paper's: ``report.md``, ``results.json`` and plots.

Input is per cell the finished runs (one per seed) or the reason there are none; output is
the table laid out as in the paper, each paper number beside the measured mean ± std over
seeds, then learning curves, the error-bound plot (Fig. 2), GFI's kept fraction per layer, and
where the runs logged them the term balance (METHOD.md D10) and the accuracy after every stage.
Measured numbers are each run's ``target_test_accuracy``, the model its own selection rule
chose; ``oracle_*`` fields (best round by target labels) are never read here.

Text is built by pure functions so tests can check it exactly; ``cetl reproduce`` and
``cetl report`` both write through :func:`write_table_report`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cetl.engine.balance import INERT_RATIO
from cetl.engine.logging import format_duration
from cetl.files import atomic_write_json, atomic_write_text
from cetl.report.collect import Run, balance_records, stage_records
from cetl.report.curve import curve_markdown, paired_markdown, plot_curve
from cetl.report.regret import regret_markdown
from cetl.report.render import (
    format_ratio,
    plot_bound,
    plot_gfi_kept,
    plot_mean_curves,
    plot_stage_curves,
    plot_term_balance,
)
from cetl.report.results import SUBSET_MARK, CellResult, TableResult, cell_text

REPORT_FILE = "report.md"
RESULTS_FILE = "results.json"


@dataclass(frozen=True)
class Header:
    """What a reader needs to trust the numbers: how, on what, where and how long."""

    profile: str
    seeds: tuple[int, ...]
    hardware: str
    command: str = ""
    commands: tuple[str, ...] = ()
    """Every call's command (with its time) when several calls filled one folder, instead of ``command``."""
    extra: tuple[str, ...] = ()
    """Further ``- ...`` lines (e.g. elapsed time of the command)."""


def measured_runs(results: Sequence[TableResult]) -> list[Run]:
    return [run for table in results for cell in table.cells for run in cell.runs]


def data_line(results: Sequence[TableResult]) -> str:
    """Data roots and, per dataset, whether the full release or a subset was read."""
    runs = measured_runs(results)
    if not runs:
        return "none measured yet"
    roots = sorted({str(run.summary.data_root) for run in runs})
    variants: dict[str, str] = {}
    for table in results:
        for cell in table.cells:
            for name, variant in cell.data_variants.items():
                variants[name] = "subset" if "subset" in (variant, variants.get(name)) else variant
    described = ", ".join(f"{name} {variant}" for name, variant in sorted(variants.items()))
    return f"{'; '.join(roots)}: {described}" if described else "; ".join(roots)


def table_markdown(result: TableResult, *, seeds: int) -> str:
    """The table as in the paper (its rows and columns), "paper" and "ours" side by side per
    column; cells without a run say why in numbered notes below (exact text is tested)."""
    table = result.table
    header = "| | " + " | ".join(f"{column} paper | {column} ours" for column in table.columns) + " |"
    lines = [header, "|---|" + "---:|---:|" * len(table.columns)]
    notes: dict[str, int] = {}
    for row in table.rows:
        texts = []
        for column in table.columns:
            cell = result.at(row, column)
            if cell is None:
                texts += ["–", "–"]
                continue
            paper = "–" if cell.cell.paper is None else f"{cell.cell.paper:.2f}"
            texts += [paper, cell_text(cell, seeds, notes)]
        lines.append(f"| {row} | " + " | ".join(texts) + " |")
    lines += [""] + [f"- [{number}] {reason}" for reason, number in notes.items()]
    if any(cell.measured and cell.data == "subset" for cell in result.cells):
        lines.append(
            f"- {SUBSET_MARK} on a subset of the data (`cetl data check`): not comparable with the "
            "paper's full-data numbers"
        )
    return "\n".join(lines).rstrip() + "\n"


def cells_markdown(result: TableResult) -> str:
    """Per measured cell: seeds, per-seed numbers, selection rule, data and wall time."""
    lines = [
        "| cell | n | per seed (%) | selected by | data | wall s |",
        "|---|---:|---|---|---|---:|",
    ]
    for cell in result.cells:
        if cell.measured:
            per_seed = ", ".join(f"{a:.2f}" for a in cell.accuracies)
            lines.append(
                f"| {cell.cell.id} | {len(cell.runs)} | {per_seed} | {cell.selected_by} "
                f"| {cell.data} | {cell.wall_seconds:.0f} |"
            )
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def inert_markdown(result: TableResult) -> str:
    """Per measured cell and seed, the loss terms found inert (METHOD.md D10), as a short list;
    empty when none was (or the runs predate term balance), so such tables read as before."""
    lines = []
    for cell in result.cells:
        for run in cell.runs:
            for entry in run.summary.inert_terms or ():
                rounds = entry["rounds"]
                lines.append(
                    f"- {cell.cell.id}, seed {run.seed}: `{entry['term']}` of "
                    f"{entry['stage']}/{entry['update']}, round{'s' if len(rounds) > 1 else ''} "
                    f"{', '.join(str(r + 1) for r in rounds)} (at most "
                    f"{format_ratio(entry['max_ratio'])}% of the largest term)"
                )
    if not lines:
        return ""
    intro = (
        f"Inert loss terms: under {INERT_RATIO:.0%} of the largest term of their update for a whole "
        "stage (METHOD.md D10), so they barely moved the weights they were meant to."
    )
    return "\n".join([intro, "", *lines]) + "\n"


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def write_plots(results: Sequence[TableResult], out_dir: Path) -> dict[str, list[tuple[str, str]]]:
    """Learning curves per table column, the bound plot and GFI kept fractions per CETL cell,
    term balance and accuracy after every stage per measured cell; returns
    ``{section: [(caption, file name)]}`` for the plots that had data."""
    plots: dict[str, list[tuple[str, str]]] = {section: [] for section in SECTIONS}
    for result in results:
        table = result.table
        # One plot per column, a line per row (the methods); a one-row table (Table 2, whose
        # columns are the methods) gets one plot for its row.
        if table.curve:  # a study along a curve: the curve replaces per-column learning curves
            name = f"curve_{table.name}.png"
            if plot_curve(result, out_dir / name):
                plots["label_curve"].append((f"{table.title}", name))
        by_row = len(table.rows) == 1
        for axis in () if table.curve else table.rows if by_row else table.columns:
            cells = [c for c in result.cells if (c.cell.row if by_row else c.cell.column) == axis]
            groups = [
                (c.cell.column if by_row else c.cell.row, [run.summary for run in c.runs])
                for c in cells
                if c.measured
            ]
            name = f"curves_{table.name}_{_slug(axis)}.png"
            if groups and plot_mean_curves(groups, out_dir / name, title=f"{table.name}, {axis}"):
                plots["curves"].append((f"{table.name}, {axis}: target test accuracy per round", name))
        plotted: set[Path] = set()
        for cell in result.cells:
            if not cell.measured:
                continue
            paths = {run.path for run in cell.runs if run.path is not None}
            if paths and paths <= plotted:  # S of a curve study: one run set in every column
                continue
            plotted |= paths
            _write_cell_plots(table.name, cell, out_dir, plots)
            if cell.cell.method != "cetl":
                continue
            first = cell.runs[0]
            variant = f" ({cell.cell.variant})" if cell.cell.variant else ""
            where = f"{table.name}, {cell.cell.column}{variant}, seed {first.seed}"
            stem = _slug(cell.cell.column) + (f"_{_slug(cell.cell.variant)}" if cell.cell.variant else "")
            name = f"bound_{table.name}_{stem}.png"
            if plot_bound(first.summary, out_dir / name):
                plots["bound"].append((f"{where}: error bound (Eq. 14), normalised as in Fig. 2", name))
            name = f"gfi_{table.name}_{stem}.png"
            if plot_gfi_kept(stage_records(first), out_dir / name, title=f"CETL, {where}"):
                plots["gfi"].append((f"{where}: GFI kept fraction per layer over rounds", name))
    return plots


def _write_cell_plots(
    table: str, cell: CellResult, out_dir: Path, plots: dict[str, list[tuple[str, str]]]
) -> None:
    """Term balance of the cell's first seed (as the GFI plot) and its accuracy after every
    stage (mean over seeds), where the runs logged them."""
    seed = cell.runs[0].seed
    where = f"{table}, {cell.cell.column}, {cell.cell.row}"
    # Named by column and row: a column can hold one method in several rows (Table 3).
    slug = f"{table}_{_slug(cell.cell.column)}_{_slug(cell.cell.row)}"
    balance, stages = plot_balance_and_stages(
        cell.runs, out_dir, name=slug, title=f"{cell.cell.method}, {where}"
    )
    if balance:
        plots["balance"].append((f"{where}, seed {seed}: gradient norm per loss term", f"balance_{slug}.png"))
    if stages:
        plots["stages"].append((f"{where}: accuracy after every stage", f"stages_{slug}.png"))


def plot_balance_and_stages(
    runs: Sequence[Run], out_dir: Path, *, name: str, title: str
) -> tuple[bool, bool]:
    """``balance_<name>.png``, the term balance of the first run, and
    ``stages_<name>.png``, the accuracy after every stage over all runs; whether each had data.
    Gated on the summary, so runs from before term balance cost no read of their metrics.jsonl."""
    first = runs[0]
    balance = bool(first.summary.term_balance) and plot_term_balance(
        balance_records(first), out_dir / f"balance_{name}.png", title=f"{title}, seed {first.seed}"
    )
    stages = plot_stage_curves([run.summary for run in runs], out_dir / f"stages_{name}.png", title=title)
    return balance, stages


SECTIONS = {
    "label_curve": "Accuracy against labelled images per class",
    "curves": "Learning curves",
    "bound": "Error bound (Eq. 14; the paper's Fig. 2)",
    "gfi": "GFI: kept fraction per layer",
    "balance": "Term balance: gradient norm per loss term (METHOD.md D10)",
    "stages": "Accuracy after every stage",
}


def _names(results: Sequence[TableResult]) -> str:
    """``Table 5``, ``Tables 3, 5``, a table's own heading, or a study's own name."""
    plain = [r.table for r in results if not r.table.curve]
    papers = [table.name.removeprefix("table") for table in plain if not table.heading]
    headed = [table.heading for table in plain if table.heading]
    studies = [r.table.name for r in results if r.table.curve]
    numbered = [f"Table{'s' if len(papers) > 1 else ''} {', '.join(papers)}"] if papers else []
    parts = numbered + headed + studies
    return ", ".join(parts)


def report_markdown(
    results: Sequence[TableResult], header: Header, plots: dict[str, list[tuple[str, str]]]
) -> str:
    """The whole ``report.md`` (exact text is tested)."""
    title = f"# Reproduction: {_names(results)} (`{header.profile}` profile)"
    total = sum(cell.wall_seconds for result in results for cell in result.cells)
    lines = [
        title,
        "",
        f"- profile: `{header.profile}`; seeds: {', '.join(map(str, header.seeds))}",
        f"- data: {data_line(results)}",
        f"- hardware: {header.hardware}",
        f"- total time: {format_duration(total)} (training, summed over the cells' runs)",
        *header.extra,
    ]
    if header.command:
        lines.append(f"- command: `{header.command}`")
    if header.commands:
        lines.append(f"- commands ({len(header.commands)} calls into this folder):")
        lines += [f"  - {command}" for command in header.commands]
    lines += [
        "",
        "Ours: mean ± std over seeds of the target test accuracy (%) of the model each run's "
        "selection rule chose, never by target labels. Paper: the CETL paper's number, from its "
        "own protocol and network (METHOD.md §8), so at a CPU profile it is context, not a target.",
    ]
    for result in results:
        if result.table.curve:
            lines += ["", f"## {result.table.name}: {result.table.title}", ""]
            lines.append(curve_markdown(result, seeds=len(header.seeds)).rstrip("\n"))
            paired = paired_markdown(result)
            if paired:
                lines += ["", paired.rstrip("\n")]
        else:
            lines += ["", f"## {result.table.label}: {result.table.title}", ""]
            lines.append(table_markdown(result, seeds=len(header.seeds)).rstrip("\n"))
            lines += [f"- {note}" for note in result.table.notes]
        cells = cells_markdown(result)
        if cells:
            lines += ["", cells.rstrip("\n")]
        inert = inert_markdown(result)
        if inert:
            lines += ["", inert.rstrip("\n")]
        measured = [c for c in result.cells if c.measured]
        if any(run.summary.setting == "domain_adaptation" for c in measured for run in c.runs):
            regret = regret_markdown([(c.cell.id, [run.summary for run in c.runs]) for c in measured])
            if regret:
                lines += ["", "Selection regret per cell:", "", regret.rstrip("\n")]
    for section, title_text in SECTIONS.items():
        if plots.get(section):
            lines += ["", f"## {title_text}"]
            for caption, name in plots[section]:
                lines += ["", f"![{caption}]({name})"]
    return "\n".join(lines).rstrip("\n") + "\n"


def results_json(results: Sequence[TableResult], header: Header) -> dict[str, Any]:
    """``results.json``: the header and every cell (paper, measured mean, std, n, selection rule,
    profile, data used, wall time), for scripts and for the next comparison."""
    return {
        "profile": header.profile,
        "seeds": list(header.seeds),
        "hardware": header.hardware,
        "command": header.command,
        **({"commands": list(header.commands)} if header.commands else {}),
        "data": data_line(results),
        "total_wall_seconds": round(sum(c.wall_seconds for r in results for c in r.cells), 2),
        "tables": [
            {
                "name": result.table.name,
                "title": result.table.title,
                "cells": [cell.to_json() for cell in result.cells],
            }
            for result in results
        ],
    }


def write_table_report(results: Sequence[TableResult], header: Header, out_dir: Path) -> Path:
    """Plots, ``report.md`` and ``results.json`` into ``out_dir`` (each written atomically)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = write_plots(results, out_dir)
    atomic_write_json(out_dir / RESULTS_FILE, results_json(results, header))
    path = out_dir / REPORT_FILE
    atomic_write_text(path, report_markdown(results, header, plots))
    return path
