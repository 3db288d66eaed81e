"""``cetl report RUN_OR_DIR ...``: paper tables with measured numbers, from any finished runs.

A folder ``cetl reproduce`` wrote is re-rendered from its own record (``reproduce.json``: the
cells it planned, why some did not run). Any other folders are searched for finished runs,
which fill the cells of every paper table they belong to (:func:`cetl.report.collect.match_cells`);
the other cells of those tables say that no run was given for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cetl.errors import ConfigError, RunError
from cetl.experiments.paper import TABLES
from cetl.report.collect import device_counts, find_runs, match_cells, pick_profile
from cetl.report.results import CellResult, TableResult
from cetl.report.tables import Header, measured_runs, write_table_report

DEFAULT_OUT = Path("report")
MISSING = "missing: no finished run in the folders given"


def build_report(paths: Sequence[Path], *, out: Path | None = None, profile: str | None = None) -> Path:
    """Write ``report.md``, ``results.json`` and plots for ``paths``; returns ``report.md``'s path.

    Raises:
        ConfigError: a reproduce folder mixed with other paths, or runs of several profiles.
        RunError: a path without finished runs, or runs that belong to no paper table.
    """
    from cetl.workflows.reproduce import is_reproduction, report_from_manifest

    if any(is_reproduction(path) for path in paths):
        if len(paths) != 1:
            raise ConfigError("a 'cetl reproduce' folder is reported on its own; give it as the only path")
        return report_from_manifest(paths[0], out)
    runs = find_runs(paths)
    experiments = {cell.experiment for table in TABLES.values() for cell in table.cells}
    experiments |= {also for table in TABLES.values() for cell in table.cells for also in cell.also}
    in_tables = [run for run in runs if run.summary.experiment in experiments]
    if not in_tables:
        raise RunError(
            f"none of the {len(runs)} finished runs given is a cell of a paper table "
            f"({', '.join(TABLES)}); compare other runs with 'cetl compare'"
        )
    profile = pick_profile(in_tables, profile)
    results = []
    for table in TABLES.values():
        matched = match_cells(table, in_tables, profile=profile)
        if matched:
            cells = tuple(
                CellResult(cell, tuple(matched.get(cell.id, ())), "" if cell.id in matched else MISSING)
                for cell in table.cells
            )
            results.append(TableResult(table, cells))
    if not results:
        raise RunError(f"no finished run given is a cell of a paper table with profile '{profile}'")
    measured = measured_runs(results)
    header = Header(
        profile=profile,
        seeds=tuple(sorted({run.seed for run in measured})),
        hardware=f"{device_counts(measured)} (the runs' devices)",
    )
    return write_table_report(results, header, out or DEFAULT_OUT)
