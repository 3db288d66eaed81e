"""Cells carried from an earlier reproduction's ``results.json`` into a new report.

A study such as the label-efficiency curves is hours of CPU per column, more than one working
session holds, and run folders do not always outlive the machine that trained them. What does
outlive it is the committed ``results.json``: per cell, each seed's selected accuracy. Carrying
those cells lets a later call train only the missing columns and report the whole curve, with
each carried cell named as such (its source command is in the report's header), instead of
re-training finished columns or hand-merging tables.

A carried cell has no run folder, so its balance and per-stage plots are not redrawn; its
numbers, seeds and curve position are exactly those of the file, and so are its per-round
selection scores where the file has them (``selection_histories``, written since 2026-12-06):
its regret row and learning curve are those of the report that measured it. Pairing across
cells stays seed by seed: a column should be trained (or carried) as a whole so that every
method of it shares one S per seed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cetl.errors import ConfigError
from cetl.experiments.paper import TEACHER, Table
from cetl.report.collect import Run
from cetl.summary import RunSummary


def carried_cells(path: Path, table: Table, profile: str) -> tuple[dict[str, tuple[Run, ...]], str]:
    """``cell id → runs`` for each measured cell of ``table`` in the ``results.json`` at ``path``,
    and the command that produced the file.

    Raises:
        ConfigError: the file is not a results.json of this table and profile.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(
            f"--carry {path}: cannot read it ({error}); give a results.json that cetl reproduce wrote"
        ) from error
    tables = {t.get("name"): t for t in data.get("tables", ())} if isinstance(data, dict) else {}
    if table.name not in tables:
        raise ConfigError(
            f"--carry {path}: it holds no {table.name} results "
            f"(it has: {', '.join(map(str, tables)) or 'none'})"
        )
    if data.get("profile") != profile:
        raise ConfigError(
            f"--carry {path}: its cells are of profile '{data.get('profile')}', this call's is '{profile}'"
        )
    cells = {cell.id: cell for cell in table.cells}
    carried: dict[str, tuple[Run, ...]] = {}
    for entry in tables[table.name].get("cells", ()):
        cell = cells.get(entry.get("id"))
        if cell is None or entry.get("status") != "measured":
            continue  # a cell since removed from the table, or one that had no number
        histories = entry.get("selection_histories") or [[] for _ in entry["seeds"]]  # older files: none
        carried[cell.id] = tuple(
            Run(
                None,
                _seed_summary(
                    entry, seed, accuracy, profile, curve=table.curve is not None, path=path, history=history
                ),
            )
            for seed, accuracy, history in zip(entry["seeds"], entry["accuracies"], histories, strict=True)
        )
    return carried, str(data.get("command", ""))


def _seed_summary(
    entry: dict[str, Any],
    seed: int,
    accuracy: float,
    profile: str,
    *,
    curve: bool,
    path: Path,
    history: list[dict[str, Any]],
) -> RunSummary:
    """What a report reads of one seed's run, rebuilt from its cell's entry."""
    per_class = entry.get("labels_per_class")
    if per_class is None and curve and entry.get("method") != TEACHER:
        # Files from before ``labels_per_class`` was recorded: a curve's column is its x value.
        try:
            per_class = float(entry["column"])
        except (KeyError, ValueError):
            per_class = None
    return RunSummary(
        experiment=entry["experiment"],
        method=entry["method"],
        profile=profile,
        seed=int(seed),
        target_test_accuracy=accuracy / 100,
        selected_by=entry.get("selected_by", "?"),
        setting=entry.get("setting", ""),  # a domain-adaptation cell's report shows its regret
        wall_seconds=float(entry.get("wall_seconds", 0.0)) / max(1, int(entry.get("n", 1))),
        data_variants=dict(entry.get("data_variants", {})),
        device="carried",  # the report's header counts devices and roots: name what it cannot know
        data_root="carried",
        label_draw=None if per_class is None else {"per_class": per_class},
        history=list(history),  # its rounds' scores: the regret table and learning curve read them
        extra={"carried": str(path)},  # which file, for the report's header
    )
