"""Run folders → records: find finished runs and match them to paper-table cells.

A finished run is a folder with ``summary.json`` (written last, so its presence means
"finished"). A run *is* a cell of a paper table when its experiment, method, network and
profile are the cell's: the network check keeps a run trained with another T2 (``--set
network.name=...``) out of a table it was not configured for. Table 4's "Teacher" row is the
``source_only`` run trained as the teacher's network (S of every student).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cetl.errors import ConfigError, RunError
from cetl.experiments import resolve
from cetl.experiments.paper import TEACHER, Cell, Table
from cetl.run_folder import SUMMARY_FILE, read_summary
from cetl.summary import RunSummary


@dataclass(frozen=True)
class Run:
    """A finished run: its folder (``None`` when only its summary is at hand) and summary."""

    path: Path | None
    summary: RunSummary

    @property
    def seed(self) -> int:
        return int(self.summary.seed)


def find_runs(paths: Iterable[Path]) -> list[Run]:
    """Every finished run at or under ``paths``, in path order.

    Raises:
        RunError: a path that does not exist, or holds no finished run.
    """
    runs: list[Run] = []
    for path in paths:
        if not path.exists():
            raise RunError(f"'{path}' does not exist")
        if (path / SUMMARY_FILE).is_file():
            folders = [path]
        else:
            folders = sorted(summary.parent for summary in path.rglob(SUMMARY_FILE))
        if not folders:
            raise RunError(f"'{path}' holds no finished run (no {SUMMARY_FILE} in it or below it)")
        for folder in folders:
            summary = read_summary(folder)
            if summary is not None:
                runs.append(Run(folder, summary))
    return runs


def cell_network(cell: Cell, profile: str) -> str:
    """The network a run of ``cell`` trains: the teacher's for :data:`TEACHER`, else T2's."""
    if cell.method == TEACHER:
        config = resolve(cell.experiment, profile=profile)
        return config.source.network or config.network.name
    return resolve(cell.experiment, method=cell.method, profile=profile).network.name


def _is_cell(cell: Cell, summary: RunSummary, network: str) -> bool:
    method = "source_only" if cell.method == TEACHER else cell.method
    return (
        summary.experiment in (cell.experiment, *cell.also)
        and summary.method == method
        and summary.network == network
    )


def match_cells(
    table: Table, runs: Sequence[Run], *, profile: str, seeds: Sequence[int] | None = None
) -> dict[str, list[Run]]:
    """``{cell id: runs of that cell}`` (by seed), for runs of ``profile`` and, if given, ``seeds``.

    Raises:
        RunError: two runs are the same cell and seed (say which folder to report).
    """
    candidates = [
        run for run in runs if run.summary.profile == profile and (seeds is None or run.seed in seeds)
    ]
    matched: dict[str, list[Run]] = {}
    for cell in table.cells:
        network = cell_network(cell, profile)
        found: dict[int, Run] = {}
        for run in candidates:
            if not _is_cell(cell, run.summary, network):
                continue
            if run.seed in found:
                raise RunError(
                    f"two runs are cell {cell.id} seed {run.seed} of {table.name}: "
                    f"'{found[run.seed].path}' and '{run.path}'; report one of the folders"
                )
            found[run.seed] = run
        if found:
            matched[cell.id] = [found[seed] for seed in sorted(found)]
    return matched


def pick_profile(runs: Sequence[Run], explicit: str | None) -> str:
    """``explicit``, else the one profile the runs share.

    Raises:
        ConfigError: the runs mix profiles and none was named (their numbers are not comparable).
    """
    if explicit:
        return explicit
    profiles = sorted({str(run.summary.profile) for run in runs})
    if len(profiles) != 1:
        raise ConfigError(
            f"the runs given mix profiles ({', '.join(profiles)}), whose numbers are not "
            f"comparable; choose one with --profile"
        )
    return profiles[0]


def metrics_records(run: Run, kind: str) -> list[dict[str, Any]]:
    """The ``kind: <kind>`` records of a run's ``metrics.jsonl``, in the order written; empty
    when the folder or the file is not at hand (a summary alone, or a run copied without it)."""
    if run.path is None or not (run.path / "metrics.jsonl").is_file():
        return []
    records = []
    for line in (run.path / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("kind") == kind:
            records.append(record)
    return records


def stage_records(run: Run) -> list[dict[str, Any]]:
    """The ``kind: stage`` records of a run (GFI kept fractions, stage losses and seconds)."""
    return metrics_records(run, "stage")


def balance_records(run: Run) -> list[dict[str, Any]]:
    """The ``kind: balance`` records of a run: ``grad_norm/<term>`` per stage and update
    (METHOD.md D10); empty for runs from before term balance was measured."""
    return metrics_records(run, "balance")


def _device(summary: RunSummary) -> str:
    """``cpu (1 thread)`` where the thread count is known: CPU runs are bit-reproducible only at
    one count, so a mix in a report's header says its S and its students may not pair."""
    threads = summary.torch_threads
    if summary.device != "cpu" or threads is None:
        return str(summary.device)
    return f"cpu ({threads} thread{'s' if threads != 1 else ''})"


def device_counts(runs: Iterable[Run]) -> str:
    """The devices ``runs`` trained on, with how many runs each (``cpu ×36, cuda ×12``): a
    reproduction reuses cells wherever they were trained, so the machine reporting is not enough."""
    counts = Counter(_device(run.summary) for run in runs)
    return ", ".join(f"{device} ×{count}" for device, count in sorted(counts.items()))
