"""``cetl reproduce TABLE``: run a paper table's cells × seeds, then report them beside the paper.

Every (cell, seed) trains through ``cetl compare``'s cell machinery (:func:`cetl.workflows.compare.run_cell`:
the same config resolution, the same folders ``OUT/<experiment>/<profile>/<method>/seed<N>``,
S shared per seed, a finished cell reused and one finished with another config refused), so a
reproduction resumes where it stopped and reuses cells a comparison already trained. Table 4's
"Teacher" is S itself, trained (once) by :func:`cetl.workflows.runs.ensure_source_run`.

Before anything trains, every cell is planned: a cell that cannot run here (a dataset the data
root lacks, pretrained weights not in the torch hub cache) is marked ``not run`` with the reason,
asked of the data layer itself, instead of failing hours in. The report (``report.md``,
``results.json``, plots) and ``reproduce.json`` (what was asked, on which machine, why cells did
not run) go to ``OUT/<table>/<profile>/``; ``cetl report`` re-renders them from there.

Why one file: planning, running and reporting a table share the table's cell list and folder
layout; a split would pass that state between modules.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cetl.build import uses_source
from cetl.config import ExperimentConfig
from cetl.data.datasets import find_spec, is_custom
from cetl.data.root import ENV_VAR, DataRoot
from cetl.engine import distributed
from cetl.errors import CetlError, ConfigError, RunError
from cetl.experiments.label_efficiency import STUDIES
from cetl.experiments.paper import TABLES, TEACHER, Cell, Table
from cetl.files import atomic_write_json
from cetl.methods import METHODS
from cetl.registry import did_you_mean
from cetl.report.carry import carried_cells
from cetl.report.collect import Run, device_counts
from cetl.report.results import CellResult, TableResult
from cetl.report.tables import Header, format_duration, measured_runs, write_table_report
from cetl.run_folder import CONFIG_FILE, read_config, read_summary, source_run_config
from cetl.summary import RunSummary
from cetl.workflows.compare import (
    cell_config,
    cell_differences,
    cell_dir,
    finished_cell,
    format_eta,
    run_cell,
)
from cetl.workflows.runs import LAST_CHECKPOINT, ensure_source_run

MANIFEST_FILE = "reproduce.json"
CALLS_DIR = "calls"
"""One record per ``cetl reproduce`` call into a report folder (its command, ``--only``, carry,
start and time), each its own file so that calls side by side never overwrite each other: a
table filled cell by cell still reports every command, every carried file and its wall span."""
STUDENT_OF_TEACHER = "cetl"
"""The student whose S is the teacher cell's run (every student of a seed shares that S)."""


@dataclass(frozen=True)
class Task:
    """One (cell, seed): where its run lives, the config it trains, and what to do with it."""

    cell: Cell
    seed: int
    run_dir: Path
    config: ExperimentConfig | None
    """For :data:`TEACHER`, a student's config (its S is the cell); ``None`` when unresolvable."""
    state: str
    """``done``, ``resume``, ``train``, ``not run`` (cannot run here) or ``conflict``."""
    reason: str = ""


def get_table(name: str) -> Table:
    """A paper table by name (``table5``; ``5`` and ``Table5`` too) or a study
    (``label_efficiency_mn_to_us``).

    Raises:
        ConfigError: unknown table, with the known ones.
    """
    known = {**TABLES, **STUDIES}
    key = name.lower()
    if key not in STUDIES:
        key = f"table{key.removeprefix('table')}"
    if key not in known:
        raise ConfigError(
            f"unknown table '{name}';{did_you_mean(name, list(known))} known: {', '.join(known)}"
        )
    return known[key]


def select_cells(table: Table, only: Sequence[str]) -> list[Cell]:
    """The cells ``--only`` names: a cell id (``EXPERIMENT/METHOD``), an experiment or a method.

    Raises:
        ConfigError: a name that matches no cell of the table.
    """
    if not only:
        return list(table.cells)
    for name in only:
        if not any(name in (cell.id, cell.experiment, cell.method, cell.folder) for cell in table.cells):
            known = [cell.id for cell in table.cells]
            raise ConfigError(
                f"--only {name} matches no cell of {table.name};{did_you_mean(name, known)} "
                f"cells: {', '.join(known)}"
            )
    return [
        cell
        for cell in table.cells
        if any(n in (cell.id, cell.experiment, cell.method, cell.folder) for n in only)
    ]


def _datasets(config: ExperimentConfig) -> list[str]:
    """Registered datasets a cell reads, its S's training data included."""
    names = [config.data.source, config.data.target]
    if uses_source(config) and config.source.kind == "experiment":
        source = source_run_config(config).data
        names += [source.source, source.target]
    return [name for name in dict.fromkeys(names) if not is_custom(name)]


def _missing_weights(config: ExperimentConfig) -> str | None:
    """Pretrained torchvision weights S needs that the torch hub cache lacks (no download here:
    a data root that the user named means offline, and a missing file would hang on the network)."""
    if not uses_source(config) or config.source.kind != "torchvision" or not config.source.model:
        return None
    name, _, weights_name = config.source.model.partition(":")
    if not weights_name or weights_name.lower() == "none":
        return None
    import torchvision.models as models

    from cetl.source.adapters import hub_weights_file

    file = hub_weights_file(models.get_model_weights(name)[weights_name])
    if file.exists():
        return None
    return f"not run: {name} {weights_name} weights not in the torch hub cache ({file})"


def blocker(config: ExperimentConfig, data_root: DataRoot) -> str | None:
    """Why a cell with ``config`` cannot run here (``not run: ...``), or ``None``; asks, never trains."""
    if data_root.origin == "sample":  # the bundled sample is a file, not a torchvision layout
        from cetl.data.sample import SAMPLE_COUNTS

        absent = [find_spec(name).title for name in _datasets(config) if name not in SAMPLE_COUNTS]
        if absent:
            return (
                f"not run: {' and '.join(absent)} not in the bundled sample (MNIST and USPS only); "
                f"set --data-root or ${ENV_VAR}"
            )
        return _missing_weights(config)
    if not data_root.download:  # a root that downloads fetches what it lacks when the cell runs
        if not data_root.path.is_dir():
            return f"not run: data root {data_root.path} does not exist; see `cetl data check`"
        specs = [find_spec(name) for name in _datasets(config)]
        missing = [spec.title for spec in specs if spec.locate(data_root.path) is None]
        if missing:
            return f"not run: {' and '.join(missing)} not found under {data_root.path}; see `cetl data check`"
    return _missing_weights(config)


def _conflict(run_dir: Path, config: ExperimentConfig, data_root: DataRoot) -> str | None:
    """Why a cell's folder cannot be reused or resumed with ``config`` on ``data_root`` (another
    config, or other data, ran there)."""
    try:
        finished_cell(run_dir, config, data_root)
    except RunError as error:
        return str(error)
    if read_summary(run_dir) is None and (run_dir / CONFIG_FILE).exists():
        differences = cell_differences(read_config(run_dir), config)
        if differences:
            changed = ", ".join(differences)
            return f"the unfinished cell '{run_dir}' was started with another config (changed: {changed})"
    return None


def _teacher_conflict(config: ExperimentConfig, data_root: DataRoot) -> str | None:
    """Why a finished teacher cannot serve as S of ``config`` (:func:`ensure_source_run`'s own
    check, which trains nothing when S has finished)."""
    if config.source.path is None or read_summary(Path(config.source.path)) is None:
        return None
    try:
        ensure_source_run(config, data_root=data_root)
    except RunError as error:
        return str(error)
    return None


def plan(
    table: Table,
    seeds: Sequence[int],
    *,
    profile: str,
    sets: Sequence[str],
    out: Path,
    data_root: DataRoot,
) -> list[Task]:
    """Every (cell, seed) of ``table`` with its state; S-providing cells first in each column,
    so each seed's S is trained as its own cell, timed and reported."""
    ordered = sorted(
        table.cells, key=lambda c: (table.columns.index(c.column), c.method not in ("source_only", TEACHER))
    )
    tasks: list[Task] = []
    for cell in ordered:
        for seed in seeds:
            config, run_dir = _cell_run(cell, seed, profile=profile, sets=sets, out=out)
            if config is None:
                reason = f"not run: method '{cell.method}' is not implemented"
                tasks.append(Task(cell, seed, run_dir, None, "not run", reason))
            else:
                tasks.append(_task(cell, seed, run_dir, config, data_root))
    return tasks


def _cell_run(
    cell: Cell, seed: int, *, profile: str, sets: Sequence[str], out: Path
) -> tuple[ExperimentConfig | None, Path]:
    """The config a (cell, seed) trains (``None`` for a method not implemented) and its run
    folder, as ``cetl compare`` places it; the teacher's folder is S of a student of the seed."""
    if cell.method == TEACHER:
        config = cell_config(cell.experiment, STUDENT_OF_TEACHER, seed, profile=profile, sets=sets, out=out)
        return config, Path(str(config.source.path))
    run_dir = cell_dir(out, cell.experiment, profile, cell.folder, seed)
    if cell.method not in METHODS.names():
        return None, run_dir
    sets = [*cell.sets, *sets]
    return cell_config(cell.experiment, cell.method, seed, profile=profile, sets=sets, out=out), run_dir


def _task(cell: Cell, seed: int, run_dir: Path, config: ExperimentConfig, data_root: DataRoot) -> Task:
    conflict = (
        _conflict(run_dir, config, data_root)
        if cell.method != TEACHER
        else _teacher_conflict(config, data_root)
    )
    if conflict:
        return Task(cell, seed, run_dir, config, "conflict", f"conflict: {conflict}")
    if read_summary(run_dir) is not None:
        return Task(cell, seed, run_dir, config, "done")
    reason = blocker(config, data_root)
    if reason:
        return Task(cell, seed, run_dir, config, "not run", reason)
    return Task(cell, seed, run_dir, config, "resume" if (run_dir / LAST_CHECKPOINT).exists() else "train")


def format_plan(tasks: Sequence[Task]) -> str:
    """What ``cetl reproduce`` would do (``--dry-run``): a line per (cell, seed) that has a run
    to reuse, resume or train, one per cell that cannot run or conflicts, then the counts."""
    lines = []
    for task in tasks:
        if task.state in ("done", "resume", "train"):
            what = {"done": "reuse", "resume": "resume", "train": "train"}[task.state]
            lines.append(f"{task.cell.id} seed {task.seed}: {what}  ({task.run_dir})")
        elif not lines or not lines[-1].startswith(f"{task.cell.id} (every seed)"):
            lines.append(f"{task.cell.id} (every seed): {task.reason}")
    states = ("done", "resume", "train", "not run", "conflict")
    counts = {state: sum(t.state == state for t in tasks) for state in states}
    lines.append(
        f"cell × seed: {counts['done']} to reuse, {counts['resume']} to resume, {counts['train']} to "
        f"train, {counts['not run']} not run, {counts['conflict']} in conflict"
    )
    return "\n".join(lines)


def hardware() -> str:
    """The machine, for the report header: CPU, cores, threads, GPU, torch version."""
    import torch

    text = (
        f"{platform.machine()} CPU, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}"
    )
    if torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text


def report_dir(out: Path, table: Table, profile: str) -> Path:
    return out / table.name / profile


def _estimate(task: Task, tasks: Sequence[Task], trained: Sequence[float]) -> float:
    """Seconds ``task`` will take: the mean of its own cell's finished seeds, else of the same
    method's finished cells in other columns, else of the cells this call trained."""
    for same in (lambda t: t.cell == task.cell, lambda t: t.cell.method == task.cell.method):
        summaries = [read_summary(t.run_dir) for t in tasks if same(t) and t.state == "done"]
        timed = [float(s.wall_seconds) for s in summaries if s is not None]
        if timed:
            return statistics.fmean(timed)
    return statistics.fmean(trained) if trained else math.nan


def reproduce(
    table: Table,
    seeds: Sequence[int],
    *,
    profile: str,
    out: Path,
    data_root: DataRoot,
    sets: Sequence[str] = (),
    only: Sequence[str] = (),
    command: str = "",
    carry: Sequence[Path] = (),
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> tuple[Path, int]:
    """Run the cells not finished yet and write the report; returns (report folder, failed cells).

    ``carry``: earlier reproductions' ``results.json`` files; a cell with no finished run in its
    folders is reported from the first of them that measured it (:mod:`cetl.report.carry`).

    Raises:
        RunError: a selected cell's folder holds a run with another config (nothing trains).
    """
    started = time.perf_counter()
    for path in carry:  # a wrong file fails before anything trains
        carried_cells(path, table, profile)
    selected = set(select_cells(table, only))
    tasks = plan(table, seeds, profile=profile, sets=sets, out=out, data_root=data_root)
    conflicts = [t for t in tasks if t.state == "conflict" and t.cell in selected]
    if conflicts:
        raise RunError(
            "nothing was trained: "
            + "; ".join(t.reason.removeprefix("conflict: ") for t in conflicts)
            + " — reproduce into another --out, or move those cells away"
        )
    folder = report_dir(out, table, profile)
    started_at = datetime.now(timezone.utc)
    manifest: dict[str, Any] = {
        "table": table.name,
        "profile": profile,
        "seeds": list(seeds),
        "sets": list(sets),
        "only": list(only),
        "runs": str(out),
        "data_root": data_root.describe(),
        "command": command,
        "carry": [str(path) for path in carry],
        "hardware": hardware(),
        "started": started_at.isoformat(timespec="seconds"),
        "reasons": {},
    }
    for task in tasks:
        if task.state in ("not run", "conflict"):
            manifest["reasons"].setdefault(task.cell.id, task.reason)
    call = {key: manifest[key] for key in ("command", "only", "carry", "seeds", "started", "hardware")}
    # The start orders the files, to the microsecond (two calls of one process within a second
    # kept their order only by chance); the suffix keeps calls of several processes apart.
    stamp = started_at.isoformat(timespec="microseconds").replace(":", "")
    call_file = folder / CALLS_DIR / f"{stamp}-{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
    for cell, reason in manifest["reasons"].items():
        log(f"{table.name} {cell}: {reason}")
    runnable = [t for t in tasks if t.cell in selected and t.state in ("done", "resume", "train")]
    trained: list[float] = []
    failed = 0
    for number, task in enumerate(runnable, start=1):
        tick = time.perf_counter()
        try:
            summary = _run(task, profile=profile, sets=sets, out=out, data_root=data_root)
        except CetlError as error:  # one cell's failure (a non-finite loss...) leaves the others to run
            failed += 1
            message = " ".join(str(error).split())  # one line: it is a note under a table
            manifest["reasons"][task.cell.id] = f"failed: seed {task.seed}: {message}"
            log(f"[{number}/{len(runnable)}] {task.cell.id} seed {task.seed}: failed: {message}")
            _write(folder, manifest, call_file, call, started)
            continue
        if task.state != "done":
            trained.append(time.perf_counter() - tick)
        left = [t for t in runnable[number:] if t.state != "done"]
        eta = sum(_estimate(t, tasks, trained) for t in left)
        took = "reused" if task.state == "done" else f"{summary.wall_seconds:.0f} s"
        eta_text = f"; ETA {format_eta(eta)}" if left else ""
        accuracy = summary.target_test_percent
        log(
            f"[{number}/{len(runnable)}] {table.name} {task.cell.column} / {task.cell.row} "
            f"({task.cell.id}) seed {task.seed}: {accuracy:.2f}% ({took}){eta_text}"
        )
        if task.state != "done":
            _write(folder, manifest, call_file, call, started)
    _write(folder, manifest, call_file, call, started)
    return folder, failed


def _run(task: Task, *, profile: str, sets: Sequence[str], out: Path, data_root: DataRoot) -> RunSummary:
    """Train (or reuse) one task through compare's cell machinery; the teacher as S of a student."""
    if task.cell.method == TEACHER:
        assert task.config is not None
        summary = read_summary(ensure_source_run(task.config, data_root=data_root))
        assert summary is not None  # ensure_source_run returns a finished run
        return summary
    return run_cell(
        task.cell.experiment,
        task.cell.method,
        task.seed,
        profile=profile,
        sets=[*task.cell.sets, *sets],
        out=out,
        data_root=data_root,
        folder=task.cell.folder,
    )


def _write(
    folder: Path, manifest: dict[str, Any], call_file: Path, call: dict[str, Any], started: float
) -> None:
    """This call's record, then the manifest, then the report (which reads every call's record)."""
    if not distributed.current().is_main:  # under torchrun every rank trains, rank 0 writes
        return
    manifest["elapsed_seconds"] = call["elapsed_seconds"] = round(time.perf_counter() - started, 1)
    call_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(call_file, call)
    atomic_write_json(folder / MANIFEST_FILE, manifest)
    report_from_manifest(folder)


def read_manifest(folder: Path) -> dict[str, Any]:
    """A reproduction's manifest with every call into its folder folded in: ``calls`` (oldest
    first) and ``carry``, the manifest's own files first, then those earlier calls named (a
    column carried by one ``--only`` call stays carried when the next call names no file)."""
    manifest = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))
    calls = []
    for path in sorted((folder / CALLS_DIR).glob("*.json")):  # named by start: sorted is oldest first
        try:
            calls.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError) as error:
            message = f"cannot read the call record {path}: {error}; delete it to report without it"
            raise RunError(message) from error
    manifest["calls"] = calls
    carry = list(manifest.get("carry", []))
    for call in reversed(calls):
        carry += [path for path in call.get("carry", []) if path not in carry]
    manifest["carry"] = carry
    return manifest


def _span_seconds(calls: Sequence[dict[str, Any]]) -> float:
    """Wall time from the first call's start to the last call's end (calls may have overlapped)."""
    starts = [datetime.fromisoformat(call["started"]).timestamp() for call in calls]
    ends = [
        start + float(call.get("elapsed_seconds", 0.0)) for start, call in zip(starts, calls, strict=True)
    ]
    return max(ends) - min(starts)


def _command_lines(manifest: dict[str, Any]) -> tuple[str, tuple[str, ...], str]:
    """(the command, every call's command, the elapsed line) for the report header: one call is
    its command and time; several are each listed with their own time, and elapsed is their span."""
    calls = manifest.get("calls", [])
    if len(calls) <= 1:
        elapsed = manifest.get("elapsed_seconds", 0.0)
        return manifest["command"], (), f"- elapsed: {format_duration(elapsed)} (the command's own time)"
    commands = tuple(
        f"`{call['command']}` (started {call['started']}, took "
        f"{format_duration(call.get('elapsed_seconds', 0.0))})"
        for call in calls
    )
    elapsed = (
        f"- elapsed: {format_duration(_span_seconds(calls))} (the {len(calls)} calls' span, "
        "first start to last end)"
    )
    return "", commands, elapsed


def is_reproduction(path: Path) -> bool:
    """Whether ``path`` is a folder ``cetl reproduce`` wrote (it holds ``reproduce.json``)."""
    return (path / MANIFEST_FILE).is_file()


def collect(manifest: dict[str, Any]) -> TableResult:
    """Each cell's finished runs from its folders (as planned from the manifest), or the reason
    it has none: the one reading of a reproduction, for ``cetl reproduce`` and ``cetl report``."""
    table = get_table(manifest["table"])
    out, profile, sets = Path(manifest["runs"]), manifest["profile"], manifest["sets"]
    carried: dict[str, tuple[Run, ...]] = {}
    for path in reversed(manifest.get("carry", [])):  # the first file given wins
        carried |= carried_cells(Path(path), table, profile)[0]
    results = []
    for cell in table.cells:
        reason = manifest["reasons"].get(cell.id, "")
        runs: list[Run] = []
        if not reason.startswith("conflict"):  # a run with another config is never reported
            for seed in manifest["seeds"]:
                _, run_dir = _cell_run(cell, seed, profile=profile, sets=sets, out=out)
                summary = read_summary(run_dir)
                if summary is not None:
                    runs.append(Run(run_dir, summary))
        if not runs and cell.id in carried:
            runs = list(carried[cell.id])
        results.append(CellResult(cell, tuple(runs), "" if runs else reason or "pending: not finished yet"))
    return TableResult(table, tuple(results))


def report_from_manifest(folder: Path, out_dir: Path | None = None) -> Path:
    """Re-render a reproduction's report from its folder (into ``out_dir``, default the folder)."""
    manifest = read_manifest(folder)
    result = collect(manifest)
    by_file: dict[str, list[str]] = {}
    for cell in result.cells:
        if cell.carried_from is not None:
            by_file.setdefault(cell.carried_from, []).append(cell.cell.id)
    carry_lines = tuple(
        f"- carried from `{carried_cells(Path(path), result.table, manifest['profile'])[1]}` ({path}; "
        f"no run folder here, so no balance or stage plots): {', '.join(cells)}"
        for path, cells in by_file.items()
    )
    command, commands, elapsed = _command_lines(manifest)
    header = Header(
        profile=manifest["profile"],
        seeds=tuple(manifest["seeds"]),
        hardware=manifest["hardware"],
        command=command,
        commands=commands,
        extra=(
            elapsed,
            f"- runs trained on: {device_counts(measured_runs([result]))} "
            "(a reused cell keeps the device it was trained on)",
            *carry_lines,
        ),
    )
    return write_table_report([result], header, out_dir or folder)
