"""Side-by-side comparison: methods × seeds of one experiment, paired per seed.

``cetl compare EXPERIMENT --methods a,b --seeds 3`` trains every (method, seed) cell
through the same path as ``cetl train`` (same data, network, budget and selection rule),
then reports mean ± std per method and each method's *paired* difference from a reference
method seed by seed. In domain adaptation the reference is ``source_only``, which for seed
s is also S of every coupling method of seed s, so a difference isolates what the method
added to that very S.

Cells live at ``OUT/<experiment>/<profile>/<method>/seed<N>`` (with the default ``OUT`` =
``runs``, the folders ``cetl train`` uses), so finished cells are reused and an interrupted
comparison resumes where it stopped. ``compare.json`` and ``compare.md`` are rewritten after
every cell, atomically.

Why one file: the cell machinery and the summaries of those cells (accuracy, term balance) are one
workflow over one folder layout, reused as a whole by ``cetl reproduce``.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cetl.build import uses_source
from cetl.config import ExperimentConfig, to_dict
from cetl.data.root import DataRoot
from cetl.engine import distributed
from cetl.engine.balance import INERT_RATIO
from cetl.engine.logging import format_eta
from cetl.errors import ConfigError, RunError
from cetl.experiments import merge_config, resolve
from cetl.experiments.paper import paper_accuracy
from cetl.files import atomic_write_json, atomic_write_text
from cetl.methods import METHODS
from cetl.report.collect import Run
from cetl.report.regret import regret_markdown
from cetl.report.render import format_ratio
from cetl.report.results import SeedStatistics
from cetl.report.tables import plot_balance_and_stages
from cetl.run_folder import read_config, read_summary
from cetl.summary import RunSummary
from cetl.workflows.runs import LAST_CHECKPOINT, config_differences, data_mismatch, train_run

ORACLE_METHODS = frozenset({"target_only"})
"""Methods that read target labels: in domain adaptation an upper bound, never a result."""


@dataclass(frozen=True)
class MethodRow(SeedStatistics):
    """One method's results over the seeds of a comparison (accuracies in %)."""

    method: str
    seeds: tuple[int, ...]
    accuracies: tuple[float, ...]
    differences: tuple[float, ...]
    """Per-seed accuracy minus the reference method's on the same seed (empty for the reference)."""
    selected_by: str
    classify_steps: int
    wall_seconds: float
    paper: float | None


@dataclass(frozen=True)
class TermRow:
    """One loss term of one update of one method over its seeds (METHOD.md D10)."""

    method: str
    update: str
    """``stage/update``, as ``summary.json``'s ``term_balance`` keys it."""
    term: str
    ratios: tuple[float, ...]
    """Per seed that measured the term: its mean gradient norm over the update's largest."""
    inert: int
    """Seeds that found the term inert (in their ``inert_terms``)."""
    seeds: int
    """The method's seeds in the comparison (``len(ratios)`` is fewer where some did not measure)."""

    @property
    def mean(self) -> float:
        return statistics.fmean(self.ratios)


def cell_dir(out: Path, experiment: str, profile: str, method: str, seed: int) -> Path:
    """The run folder of one (method, seed) cell."""
    return out / experiment / profile / method / f"seed{seed}"


def reference_method(methods: Sequence[str]) -> str:
    """``source_only`` when compared (DA's paired baseline), else the first method listed."""
    return "source_only" if "source_only" in methods else methods[0]


def parse_methods(text: str) -> list[str]:
    """``"a,b , c"`` → ``["a", "b", "c"]``, each checked against the registry up front."""
    methods = [name.strip() for name in text.split(",") if name.strip()]
    if not methods:
        raise ConfigError("--methods is empty; give a comma-separated list, e.g. source_only,dann,cetl")
    for name in methods:
        METHODS.get(name)  # unknown names fail here, with a "did you mean", before any training
    if len(set(methods)) != len(methods):
        raise ConfigError(f"--methods lists a method twice: {text}")
    return methods


def cell_config(
    experiment: str, method: str, seed: int, *, profile: str, sets: Sequence[str], out: Path
) -> ExperimentConfig:
    """The config of one cell; S is the same seed's ``source_only`` cell beside it, or, for
    ``source.kind=experiment``, that experiment's ``source_only`` cell in the same ``out``."""
    config = resolve(experiment, method=method, profile=profile, seed=seed, sets=list(sets))
    if not uses_source(config) or config.source.path:
        return config
    if config.source.kind == "source_only":
        # S of this seed inside the comparison's own folder: the source_only cell, or a teacher's
        # folder beside it when S is another network than T2 (distillation).
        teacher = config.source.network
        folder = "source_only" if teacher in (None, config.network.name) else f"source_only-{teacher}"
        shared_s = cell_dir(out, experiment, profile, folder, seed)
        config = merge_config(config, {"source": {"path": str(shared_s)}})
    elif config.source.kind == "experiment" and config.source.experiment:
        # One S per seed for every study that borrows it (Table 3's CI-CNN, the label-efficiency
        # curves): the DA comparison of that experiment in this out reuses it as its own.
        shared_s = cell_dir(out, config.source.experiment, profile, "source_only", seed)
        config = merge_config(config, {"source": {"path": str(shared_s)}})
    return config


CELL_PATH_PARTS = 4
"""``<experiment>/<profile>/<method>/seed<N>``: how much of a cell's S path names it within ``out``."""


def cell_differences(saved: ExperimentConfig, wanted: ExperimentConfig) -> list[str]:
    """:func:`config_differences` of two cell configs, with S's folder compared by its place in
    the comparison (its last :data:`CELL_PATH_PARTS` parts), not by where ``out`` lives: a
    runs folder moved or copied elsewhere is reused from its new place."""

    def placed(config: ExperimentConfig) -> dict[str, Any]:
        values = to_dict(config)
        path = values["source"].get("path")
        if path:
            values["source"]["path"] = "/".join(Path(path).parts[-CELL_PATH_PARTS:])
        return values

    return config_differences(placed(saved), placed(wanted))


def finished_cell(
    run_dir: Path, config: ExperimentConfig, data_root: DataRoot | None = None
) -> RunSummary | None:
    """The summary of a cell finished with ``config`` (on the data ``data_root`` holds, when
    given), ``None`` while unfinished.

    Raises:
        RunError: the cell finished with another config or on other data (never silently reused).
    """
    finished = read_summary(run_dir)
    if finished is not None and data_root is not None:
        why = data_mismatch(finished, data_root)
        if why:
            raise RunError(
                f"the finished cell '{run_dir}' does not fit this call's data: {why}; use another --out, "
                f"or move the cell away"
            )
    if finished is not None:
        # Compared through the schema: fields added since the cell ran take their defaults.
        differences = cell_differences(read_config(run_dir), config)
        if differences:
            raise RunError(
                f"the finished cell '{run_dir}' was trained with another config (changed: "
                f"{', '.join(differences)}); compare into another --out, or move the cell away"
            )
    return finished


def run_cell(
    experiment: str,
    method: str,
    seed: int,
    *,
    profile: str,
    sets: Sequence[str],
    out: Path,
    data_root: DataRoot,
    folder: str | None = None,
) -> RunSummary:
    """Train one cell (or return its finished summary); S is the same seed's ``source_only`` cell.

    ``folder`` names the cell's folder where it is not the method's (a configured variant of a
    method, e.g. ``baseline`` with T2 started from S, beside the plain one).
    """
    run_dir = cell_dir(out, experiment, profile, folder or method, seed)
    config = cell_config(experiment, method, seed, profile=profile, sets=sets, out=out)
    finished = finished_cell(run_dir, config, data_root)
    if finished is not None:
        return finished
    return train_run(
        config, run_dir=run_dir, data_root=data_root, resume=(run_dir / LAST_CHECKPOINT).exists()
    )


def summarise(
    experiment: str, summaries: dict[str, dict[int, RunSummary]], seeds: Sequence[int]
) -> list[MethodRow]:
    """Rows for the methods whose every seed finished, paired with the reference on each seed."""
    methods = list(summaries)
    reference = reference_method(methods)
    reference_runs = summaries.get(reference, {})
    rows = []
    for method, runs in summaries.items():
        done = [seed for seed in seeds if seed in runs]
        if not done:
            continue
        accuracies = tuple(runs[seed].target_test_percent for seed in done)
        differences = (
            tuple(
                runs[seed].target_test_percent - reference_runs[seed].target_test_percent
                for seed in done
                if seed in reference_runs
            )
            if method != reference
            else ()
        )
        first = runs[done[0]]
        rows.append(
            MethodRow(
                method=method,
                seeds=tuple(done),
                accuracies=accuracies,
                differences=differences,
                selected_by=first.selected_by,
                classify_steps=int(first.classify_steps),
                wall_seconds=statistics.fmean(runs[seed].wall_seconds for seed in done),
                paper=paper_accuracy(method, experiment),
            )
        )
    return rows


def format_table(rows: Sequence[MethodRow], *, reference: str, oracle: bool = True) -> str:
    """The Markdown comparison table (exact text is tested).

    ``oracle``: mark ``target_only`` as reading target labels, which only domain adaptation
    forbids; in transfer learning and distillation it is the plain baseline (the student).
    """
    lines = [
        f"| method | target test acc. (%) | per seed | paired Δ vs {reference} | paper (%) "
        "| selected by | classify steps | wall s |",
        "|---|---:|---|---|---:|---|---:|---:|",
    ]
    for row in rows:
        name = f"{row.method}*" if oracle and row.method in ORACLE_METHODS else row.method
        per_seed = ", ".join(f"{a:.2f}" for a in row.accuracies)
        if row.differences:
            mean_difference = statistics.fmean(row.differences)
            delta = f"{mean_difference:+.2f} ({', '.join(f'{d:+.2f}' for d in row.differences)})"
        else:
            delta = "reference" if row.method == reference else "–"
        paper = "–" if row.paper is None else f"{row.paper:.2f}"
        lines.append(
            f"| {name} | {row.mean:.2f} ± {row.std:.2f} | {per_seed} | {delta} | {paper} "
            f"| {row.selected_by} | {row.classify_steps} | {row.wall_seconds:.0f} |"
        )
    if oracle and any(row.method in ORACLE_METHODS for row in rows):
        lines += ["", "\\* reads target labels: an oracle upper bound, not a domain-adaptation result."]
    return "\n".join(lines) + "\n"


def summarise_balance(
    rows: Sequence[MethodRow], summaries: dict[str, dict[int, RunSummary]]
) -> list[TermRow]:
    """Per method row, every term its seeds' ``term_balance`` measured, in training order;
    empty for runs from before term balance (or with it switched off)."""
    term_rows = []
    for row in rows:
        runs = [summaries[row.method][seed] for seed in row.seeds]
        ratios: dict[tuple[str, str], list[float]] = {}
        for summary in runs:
            for update, terms in (summary.term_balance or {}).items():
                for term, entry in terms.items():
                    ratios.setdefault((update, term), []).append(entry["mean_ratio"])
        # A set per seed: a seed counts once however many rounds it found the term inert in.
        inert = Counter(
            key
            for summary in runs
            for key in {(f"{e['stage']}/{e['update']}", e["term"]) for e in summary.inert_terms or ()}
        )
        term_rows += [
            TermRow(row.method, update, term, tuple(values), inert[update, term], len(runs))
            for (update, term), values in ratios.items()
        ]
    return term_rows


def format_balance_table(term_rows: Sequence[TermRow]) -> str:
    """The term-balance section of ``compare.md`` (exact text is tested); empty without rows,
    so comparisons of runs from before term balance read as before."""
    if not term_rows:
        return ""
    lines = [
        "## Term balance",
        "",
        "Gradient norm of each weighted loss term over the largest term of its update (METHOD.md "
        "D10), averaged over a run's measurements: mean and range over seeds. Inert: under "
        f"{INERT_RATIO:.0%} of the largest term for a whole stage.",
        "",
        "| method | stage/update | term | mean ratio (%) | min–max over seeds (%) | inert |",
        "|---|---|---|---:|---:|---|",
    ]
    for row in term_rows:
        mean = format_ratio(row.mean) + (f" (n={len(row.ratios)})" if len(row.ratios) != row.seeds else "")
        spread = f"{format_ratio(min(row.ratios))}–{format_ratio(max(row.ratios))}"
        inert = f"{row.inert} of {row.seeds} seed{'s' if row.seeds > 1 else ''}" if row.inert else "–"
        lines.append(f"| {row.method} | {row.update} | {row.term} | {mean} | {spread} | {inert} |")
    return "\n".join(lines) + "\n"


def _write_plots(
    folder: Path,
    experiment: str,
    profile: str,
    rows: Sequence[MethodRow],
    summaries: dict[str, dict[int, RunSummary]],
) -> tuple[str, str]:
    """Per method, the term balance of its first seed and its accuracy after every stage (mean
    over seeds), as PNGs beside ``compare.md``; returns the Markdown linking those that had data
    (balance links, the per-stage section), each empty where no method had any."""
    balance, stages = [], []
    for row in rows:
        seed = row.seeds[0]
        # ``folder`` is OUT/<experiment>/<profile>: the cells lie below it.
        runs = [
            Run(cell_dir(folder.parent.parent, experiment, profile, row.method, s), summaries[row.method][s])
            for s in row.seeds
        ]
        has_balance, has_stages = plot_balance_and_stages(
            runs, folder, name=row.method, title=f"{row.method}, {experiment}"
        )
        if has_balance:
            caption = f"{row.method}, seed {seed}: gradient norm per loss term"
            balance.append(f"![{caption}](balance_{row.method}.png)")
        if has_stages:
            stages.append(f"![{row.method}: accuracy after every stage](stages_{row.method}.png)")
    return _paragraphs(balance), ("\n## Accuracy after every stage\n" + _paragraphs(stages) if stages else "")


def _paragraphs(lines: Sequence[str]) -> str:
    return "".join(f"\n{line}\n" for line in lines)


def compare(
    experiment: str,
    methods: Sequence[str],
    seeds: Sequence[int],
    *,
    profile: str,
    out: Path,
    data_root: DataRoot,
    sets: Sequence[str] = (),
    only_finished: bool = False,
    log: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
) -> Path:
    """Run every cell not finished yet and write ``compare.json`` / ``compare.md``; returns the folder.

    The reference method's cells run first (S of each seed, in domain adaptation), then the
    others method by method. Progress and an ETA (from the cells trained in this call) go to
    ``log``. ``only_finished`` trains nothing and tabulates the cells that have finished (a
    look at a comparison still running elsewhere).
    """
    methods = list(methods)
    reference = reference_method(methods)
    order = [reference] + [m for m in methods if m != reference]
    folder = out / experiment / profile
    summaries: dict[str, dict[int, RunSummary]] = {m: {} for m in order}
    cells = [(m, s) for m in order for s in seeds]
    trained_seconds: list[float] = []
    for number, (method, seed) in enumerate(cells, start=1):
        started = time.perf_counter()
        was_finished = read_summary(cell_dir(out, experiment, profile, method, seed)) is not None
        if only_finished and not was_finished:
            log(f"[{number}/{len(cells)}] {experiment} {method} seed {seed}: not finished (left out)")
            continue
        summary = run_cell(experiment, method, seed, profile=profile, sets=sets, out=out, data_root=data_root)
        summaries[method][seed] = summary
        if not was_finished:
            trained_seconds.append(time.perf_counter() - started)
        remaining = sum(
            1 for m, s in cells[number:] if read_summary(cell_dir(out, experiment, profile, m, s)) is None
        )
        eta = statistics.fmean(trained_seconds) * remaining if trained_seconds else math.nan
        took = "reused" if was_finished else f"{summary.wall_seconds:.0f} s"
        eta_text = f"; ETA {format_eta(eta)}" if remaining else ""
        log(
            f"[{number}/{len(cells)}] {experiment} {method} seed {seed}: "
            f"{summary.target_test_percent:.2f}% ({took}){eta_text}"
        )
        if distributed.current().is_main:  # under torchrun every rank trains, rank 0 writes
            _write(folder, experiment, profile, seeds, sets, summaries, reference)
    return folder


def _write(
    folder: Path,
    experiment: str,
    profile: str,
    seeds: Sequence[int],
    sets: Sequence[str],
    summaries: dict[str, dict[int, RunSummary]],
    reference: str,
) -> None:
    rows = summarise(experiment, summaries, seeds)
    first = next(summary for runs in summaries.values() for summary in runs.values())
    command = (
        f"cetl compare {experiment} --methods {','.join(summaries)} --seeds {len(seeds)} "
        f"--profile {profile}" + "".join(f" --set {s}" for s in sets)
    )
    # Methods may run on different networks (an experiment's per-method policy): name each.
    networks: dict[str, list[str]] = {}
    for method, runs in summaries.items():
        for summary in runs.values():
            if method not in networks.setdefault(summary.network, []):
                networks[summary.network].append(method)
    network = (
        f"Network `{first.network}`"
        if len(networks) == 1
        else "Networks " + ", ".join(f"`{name}` ({', '.join(methods)})" for name, methods in networks.items())
    )
    header = (
        f"# {experiment}: `{profile}` profile, seeds {', '.join(map(str, seeds))}\n\n"
        f"Command: `{command}`  \n"
        f"{network}, protocol `{first.protocol}`, data {first.data_root} "
        f"({', '.join(f'{k} {v}' for k, v in first.data_variants.items())}), "
        f"device {first.device}. Model selection never reads target labels; the paper column is "
        f"the CETL paper's number for the same cell (its protocol and network, METHOD.md §8).\n\n"
    )
    oracle = first.setting == "domain_adaptation"
    term_rows = summarise_balance(rows, summaries)
    balance = format_balance_table(term_rows)
    balance_plots, stage_plots = _write_plots(folder, experiment, profile, rows, summaries)
    text = header + format_table(rows, reference=reference, oracle=oracle)
    if balance:  # only with data: comparisons of older runs read exactly as before
        text += f"\n{balance}{balance_plots}"
    regret = regret_markdown([(row.method, [summaries[row.method][s] for s in row.seeds]) for row in rows])
    if oracle and regret:
        text += f"\n## Selection regret\n\n{regret}"
    atomic_write_text(folder / "compare.md", text + stage_plots)
    atomic_write_json(
        folder / "compare.json",
        {
            "experiment": experiment,
            "profile": profile,
            "seeds": list(seeds),
            "sets": list(sets),
            "reference": reference,
            "command": command,
            "rows": [
                {
                    "method": row.method,
                    "seeds": list(row.seeds),
                    "target_test_accuracy": list(row.accuracies),
                    "mean": row.mean,
                    "std": row.std,
                    "paired_difference": list(row.differences),
                    "paper": row.paper,
                    "selected_by": row.selected_by,
                    "classify_steps": row.classify_steps,
                    "wall_seconds": row.wall_seconds,
                    **_balance_json(term_rows, row.method),
                }
                for row in rows
            ],
        },
    )


def _balance_json(term_rows: Sequence[TermRow], method: str) -> dict[str, Any]:
    """One method's ``term_balance`` (``{"stage/update": {term: mean ratio over seeds}}``) and
    ``inert_terms`` (``{"stage/update/term": seeds that found it inert}``) for ``compare.json``;
    both empty for runs from before term balance."""
    balance: dict[str, dict[str, float]] = {}
    inert: dict[str, int] = {}
    for row in term_rows:
        if row.method != method:
            continue
        balance.setdefault(row.update, {})[row.term] = row.mean
        if row.inert:
            inert[f"{row.update}/{row.term}"] = row.inert
    return {"term_balance": balance, "inert_terms": inert}
