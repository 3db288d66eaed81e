"""Run folders: train one, resume one, re-evaluate one (what a folder holds, and reading it
back, is :mod:`cetl.run_folder`).

All files are written atomically; ``--resume`` continues from the last finished round.
In domain adaptation S for seed s *is* the ``source_only`` run of seed s (METHOD.md §9):
:func:`ensure_source_run` trains it once and every coupling method reuses it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from cetl.build import (
    build_method,
    build_source,
    build_training_data,
    labelled_domain,
    load_target_net,
    uses_source,
)
from cetl.config import ExperimentConfig, dump_yaml, to_dict
from cetl.data.datasets import dataset_variant, is_custom
from cetl.data.root import DataRoot
from cetl.engine import distributed
from cetl.engine.loop import BEST_CHECKPOINT, LAST_CHECKPOINT, accuracy, resolve_device, train
from cetl.errors import CetlError, ConfigError, RunError
from cetl.files import atomic_write_json, atomic_write_text
from cetl.run_folder import (
    CONFIG_FILE,
    DATA_ROOT_FILE,
    SUMMARY_FILE,
    read_config,
    read_summary,
    source_run_config,
    source_run_dir,
)
from cetl.summary import RunSummary, write_summary
from cetl.version import __version__

RUN_FILES = (
    CONFIG_FILE,
    SUMMARY_FILE,
    "metrics.jsonl",
    LAST_CHECKPOINT,
    BEST_CHECKPOINT,
    "eval.json",
    DATA_ROOT_FILE,
)
"""Files a run and its follow-ups write into its folder (``--overwrite`` removes them, with
``tensorboard/`` and exported models)."""


def _check_run_dir(run_dir: Path, config: ExperimentConfig, *, resume: bool, overwrite: bool = False) -> None:
    """Refuse to overwrite a run unless told to, or to resume one with a different config."""
    if resume and overwrite:
        raise ConfigError("--resume continues the run in the folder and --overwrite replaces it; pass one")
    has_checkpoint = (run_dir / LAST_CHECKPOINT).exists()
    if not resume:
        if (has_checkpoint or (run_dir / SUMMARY_FILE).exists()) and not overwrite:
            raise RunError(
                f"'{run_dir}' already holds a run. Pass --resume to continue (or re-report) it, "
                f"--overwrite to replace it, or choose another folder with --out."
            )
        return
    if not has_checkpoint:
        started = " (it stopped before its first round finished; train it again without --resume)"
        raise RunError(
            f"nothing to resume in '{run_dir}': it has no {LAST_CHECKPOINT}"
            + (started if (run_dir / CONFIG_FILE).exists() else "")
        )
    saved_path = run_dir / CONFIG_FILE
    if saved_path.exists():
        differences = config_differences(to_dict(read_config(run_dir)), to_dict(config))
        if differences:
            raise RunError(
                f"cannot resume '{run_dir}' with a different config; changed: "
                f"{', '.join(differences)}. Resume with the saved config "
                f"('cetl train {saved_path} --out {run_dir} --resume') or use a new --out."
            )


def _prepare_run_dir(run_dir: Path, *, overwrite: bool) -> None:
    """Fail now, not after hours of training, when ``run_dir`` cannot be written; clear it for
    ``--overwrite``; drop temporary files a killed process left mid-write (``atomic_write_bytes``)."""
    missing = [path for path in (run_dir, *run_dir.parents) if not path.exists()]  # deepest first
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as error:
        raise RunError(
            f"cannot write run files to '{run_dir}' ({error.strerror or error}); choose a writable "
            f"folder with --out"
        ) from None
    finally:
        for path in missing:  # the run creates its folder once its data and networks are built
            with contextlib.suppress(OSError):
                path.rmdir()
    for name in RUN_FILES:
        for temporary in run_dir.glob(f".{name}.*"):
            temporary.unlink(missing_ok=True)
        if overwrite:
            (run_dir / name).unlink(missing_ok=True)
    if overwrite:
        for exported in ("model.onnx", "model.pt2"):
            (run_dir / exported).unlink(missing_ok=True)
        shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)


def resume_hint(run_dir: Path) -> str:
    """What to run after a run into ``run_dir`` was interrupted (Ctrl-C, SIGTERM)."""
    if (run_dir / LAST_CHECKPOINT).exists():
        return (
            f"Finished rounds are saved in {run_dir / LAST_CHECKPOINT}; continue with "
            f"'cetl train {run_dir / CONFIG_FILE} --out {run_dir} --resume'."
        )
    return (
        f"No round of '{run_dir}' had finished, so it has nothing to resume; run the same command "
        f"again (a source run S that was being trained resumes by itself)."
    )


PAIRING_KEYS = frozenset({"experiment", "profile", "seed", "data", "network"})
"""What an S given by ``source.path`` must share with the run it serves (a paired comparison)."""
DISPLAY_KEYS = frozenset({"train.progress", "train.tensorboard", "train.log_every"})
"""Config keys that change what a run shows, not what it trains: never a reason to refuse reuse."""


def config_differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``key (old → new)`` for every leaf of two config dicts that differs (display keys aside)."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(dict.fromkeys([*old, *new]))
        return [d for k in keys for d in config_differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    if prefix[:-1] in DISPLAY_KEYS:
        return []
    return [] if old == new else [f"{prefix[:-1]} ({old!r} → {new!r})"]


def data_mismatch(summary: RunSummary, data_root: DataRoot) -> str | None:
    """Why a finished run's data is not what ``data_root`` holds, or ``None``: the bundled
    sample against a data folder, or a full set against a subset. Reusing such a run would
    report numbers of other data under this call's name (a config alone does not say)."""
    ran_on_sample = summary.data_root_origin == "sample"
    if ran_on_sample != (data_root.origin == "sample"):
        was = "the bundled sample" if ran_on_sample else summary.data_root
        return f"it was trained on {was}, and this call reads {data_root.describe()}"
    if ran_on_sample:
        return None
    for name, variant in summary.data_variants.items():
        try:
            now = dataset_variant(name, data_root)
        except CetlError:  # absent here: the data layer says so, clearly, if the run needs it
            continue
        if now != variant:
            return f"it read the {variant} {name}, and {data_root.describe()} holds the {now} one"
    return None


_WARNED_THREADS: set[Path] = set()
"""The S folders already warned about in this process (once each, not once per student)."""


def _warn_other_threads(summary: RunSummary, path: Path) -> None:
    """Say when a reused CPU S trained with another torch thread count than this process: S is
    valid, but retrained at this count it would not be the same S to the last digit, so students
    paired with this one could not be paired with it. Benchmarks that share S pin ``OMP_NUM_THREADS``."""
    threads = torch.get_num_threads()
    same = summary.torch_threads in (None, threads)
    if summary.device != "cpu" or same or path in _WARNED_THREADS or not distributed.current().is_main:
        return
    _WARNED_THREADS.add(path)
    print(
        f"cetl: warning: S ('{path}') was trained with {summary.torch_threads} torch threads and this "
        f"process has {threads}: S is reused as it is, but retrained with {threads} it would differ in "
        f"its last digits; set OMP_NUM_THREADS={summary.torch_threads} for runs that must pair with it",
        file=sys.stderr,
    )


def ensure_source_run(config: ExperimentConfig, *, data_root: DataRoot) -> Path:
    """The finished run folder of S, training it first when it does not exist yet."""
    if config.source.kind == "run":
        if not config.source.path:
            raise RunError("source.kind=run needs source.path, the run folder of S")
        path = Path(config.source.path)
        if not (path / SUMMARY_FILE).exists():
            raise RunError(f"source.path '{path}' is not a finished run (it has no {SUMMARY_FILE})")
        return path
    expected = source_run_config(config)
    path = source_run_dir(config, expected)
    if (path / SUMMARY_FILE).exists():
        # Compared through read_config, so fields added to the schema since S was trained take
        # their defaults instead of counting as changes; the source section is moot for S. An
        # S named by source.path (as `cetl compare` names each seed's source_only cell, trained
        # with the comparison's overrides) must match where pairing needs it: data, network, seed.
        keys = PAIRING_KEYS if config.source.path else None
        saved = {
            k: v for k, v in to_dict(read_config(path)).items() if k != "source" and (not keys or k in keys)
        }
        wanted = {k: v for k, v in to_dict(expected).items() if k != "source" and (not keys or k in keys)}
        differences = config_differences(saved, wanted)
        if differences:
            raise RunError(
                f"the source run '{path}' was trained with another config than S needs "
                f"(changed: {', '.join(differences)}); move it away, or point source.path elsewhere"
            )
        finished = read_summary(path)
        why = data_mismatch(finished, data_root) if finished is not None else None
        if why:
            raise RunError(f"the source run '{path}' does not fit this call's data: {why}; move it away")
        if finished is not None:
            _warn_other_threads(finished, path)
        return path
    resume = (path / LAST_CHECKPOINT).exists()
    if distributed.current().is_main:
        print(
            f"cetl: S is the source_only run of seed {config.seed}; {'resuming' if resume else 'training'} "
            f"it into {path}",
            file=sys.stderr,
        )
    train_run(expected, run_dir=path, data_root=data_root, resume=resume)
    return path


def train_run(
    config: ExperimentConfig,
    *,
    run_dir: Path,
    data_root: DataRoot,
    resume: bool = False,
    overwrite: bool = False,
) -> RunSummary:
    """Train ``config`` into ``run_dir`` and return (and write) its summary.

    Under torchrun every rank calls this; rank 0 alone writes files and prints notes.
    """
    world = distributed.current()
    _check_run_dir(run_dir, config, resume=resume, overwrite=overwrite)
    if world.is_main:
        _prepare_run_dir(run_dir, overwrite=overwrite)
    world.barrier()  # every rank has checked the folder before rank 0 writes to it
    source_dir = None
    if uses_source(config) and config.source.kind in ("source_only", "run", "experiment"):
        source_dir = ensure_source_run(config, data_root=data_root)
    data, info = build_training_data(
        config.data, root=data_root, labelled_domain=labelled_domain(config), seed=config.seed
    )
    if config.profile == "paper" and resolve_device(config.train.device).type == "cpu":
        info = dataclasses.replace(
            info,
            notes=(
                *info.notes,
                "the paper profile is GPU work (the DRCN network "
                "trains at ~50 images/s on 2 CPU cores); on CPU use --profile quick",
            ),
        )
    for note in info.notes if world.is_main else ():
        print(f"cetl: note: {note}", file=sys.stderr)
    source = build_source(config.source, run_dir=source_dir) if uses_source(config) else None
    method = build_method(config, info, source=source)
    if world.is_main:  # only now: a data or network error leaves no half-made run folder behind
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / CONFIG_FILE, dump_yaml(config))
        # Where the data was read, for --resume, eval and export in a shell without the variable.
        atomic_write_json(run_dir / DATA_ROOT_FILE, {"path": str(data_root.path), "origin": data_root.origin})
    result = train(
        method,
        data,
        # Eq. 14's bound needs S and T2 to share a label space: not so in transfer learning,
        # where a 10-class S (a CIFAR stand-in) could look compatible by shape alone.
        train_config=dataclasses.replace(
            config.train, monitor=config.train.monitor and config.setting != "transfer"
        ),
        optimizer_config=config.optimizer,
        seed=config.seed,
        run_dir=run_dir,
        resume=resume,
        engine_config=config.engine,
    )
    source_accuracy = None
    if source is not None and config.setting != "transfer":
        # S shares T2's label space only outside transfer learning.
        test = data.target_test.to(torch.device(result.device))
        source.to(test.x.device)  # a method that only copies S's weights leaves S where it was built
        source_accuracy = accuracy(source, test, autocast=contextlib.nullcontext())
    # Labelled as an oracle: the best round by *target* accuracy, for the record only (anchors
    # that report it as their result overstate it); selection never reads it.
    scored = [record for record in result.history if record.get("target_test_accuracy") is not None]
    oracle = max(scored, key=lambda record: record["target_test_accuracy"]) if scored else None
    summary = RunSummary(
        experiment=config.experiment,
        method=config.method.name,
        profile=config.profile,
        setting=config.setting,
        source_dataset=config.data.source,
        target_dataset=config.data.target,
        seed=config.seed,
        target_test_accuracy=result.target_test_accuracy,
        selected_by=result.selected_by,
        wall_seconds=round(result.wall_seconds, 2),
        device=result.device,
        world_size=world.size,
        torch_threads=torch.get_num_threads(),
        cetl_version=__version__,
        val_accuracy=result.val_accuracy,
        selected_round=result.selected_round,
        rounds=result.rounds,
        classify_steps=result.term_steps.get("classify", 0),
        steps=result.steps,
        network=config.network.name,
        protocol=config.data.protocol,
        transductive=config.data.transductive,
        # The user's own data is read where it is named (``target_dataset``), not from a root.
        data_root="not read: the run's data is the user's own (target_dataset)"
        if is_custom(config.data.source) and is_custom(config.data.target)
        else data_root.describe(),
        data_root_origin=data_root.origin,
        num_classes=info.num_classes,
        data_sizes=dict(info.sizes),
        data_variants=dict(info.variants),
        data_notes=list(info.notes),
        label_draw=info.label_draw,
        source=source.description if source is not None else None,
        source_run=str(source_dir) if source is not None and source_dir is not None else None,
        source_accuracy_on_target=source_accuracy,
        history=result.history,
        stage_history=result.stage_history,
        term_balance=result.term_balance,
        inert_terms=result.inert_terms,
        oracle_target_test_accuracy=None
        if oracle is None or result.target_test_accuracy is None
        else oracle["target_test_accuracy"],
        oracle_round=None if oracle is None or result.target_test_accuracy is None else oracle["round"],
        stage_seconds=_stage_seconds(run_dir) if world.is_main else {},
    )
    if world.is_main:
        write_summary(run_dir / SUMMARY_FILE, summary)
    world.barrier()  # the other ranks may read this run next (S of a coupling method)
    return summary


def _stage_seconds(run_dir: Path) -> dict[str, float]:
    """Total seconds per stage, from the ``kind: stage`` records of ``metrics.jsonl``."""
    totals: dict[str, float] = {}
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record.get("kind") == "stage":
            totals[record["stage"]] = round(totals.get(record["stage"], 0.0) + record["seconds"], 2)
    return totals


def evaluate_run(run_dir: Path, *, data_root: DataRoot) -> dict[str, Any]:
    """Re-evaluate a run's selected T2 on its validation and target test data; writes ``eval.json``."""
    config, net, _ = load_target_net(run_dir)
    data, _ = build_training_data(
        config.data, root=data_root, labelled_domain=labelled_domain(config), seed=config.seed
    )
    report = {
        "experiment": config.experiment,
        "method": config.method.name,
        "val_accuracy": (
            accuracy(net, data.labelled_val, autocast=contextlib.nullcontext())
            if len(data.labelled_val)
            else None
        ),
        "target_test_accuracy": (
            accuracy(net, data.target_test, autocast=contextlib.nullcontext())
            if len(data.target_test)
            else None
        ),
        "target_test_size": len(data.target_test),
        "data_root": data_root.describe(),
    }
    atomic_write_json(run_dir / "eval.json", report)
    return report
