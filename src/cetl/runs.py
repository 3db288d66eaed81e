"""Run folders: train one, resume one, reload one.

A run folder holds everything needed to trust and repeat a result:

- ``config.yaml``: the resolved config (``cetl train RUN/config.yaml`` reruns it);
- ``metrics.jsonl`` and ``tensorboard/``: training and evaluation records;
- ``last.pt`` (resume point) and ``best.pt`` (the selected weights);
- ``summary.json``: the result, written last, so its presence means "finished".

All files are written atomically; ``--resume`` continues from the last finished round.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from cetl import __version__
from cetl.build import DataInfo, build_method, build_training_data, labelled_domain
from cetl.config import ExperimentConfig, dump_yaml, merge, to_dict
from cetl.data.root import DataRoot, resolve_data_root, sample_root
from cetl.engine.checkpoint import atomic_write_json, atomic_write_text, load_checkpoint
from cetl.engine.loop import (
    BEST_CHECKPOINT,
    LAST_CHECKPOINT,
    TrainingData,
    accuracy,
    resolve_device,
    train,
)
from cetl.errors import RunError
from cetl.experiments import EXPERIMENTS
from cetl.methods import Method

CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"


def default_run_dir(config: ExperimentConfig) -> Path:
    """``runs/<experiment>/<profile>/<method>/seed<N>``: one folder per comparable cell."""
    return Path("runs") / config.experiment / config.profile / config.method.name / f"seed{config.seed}"


def _check_run_dir(run_dir: Path, config: ExperimentConfig, *, resume: bool) -> None:
    """Refuse to overwrite a run, or to resume one with a different config."""
    has_checkpoint = (run_dir / LAST_CHECKPOINT).exists()
    if not resume:
        if has_checkpoint or (run_dir / SUMMARY_FILE).exists():
            raise RunError(
                f"'{run_dir}' already holds a run. Pass --resume to continue (or re-report) it, "
                f"or choose another folder with --out."
            )
        return
    if not has_checkpoint:
        raise RunError(f"nothing to resume in '{run_dir}': it has no {LAST_CHECKPOINT}")
    saved_path = run_dir / CONFIG_FILE
    if saved_path.exists():
        saved = yaml.safe_load(saved_path.read_text(encoding="utf-8"))
        differences = _differences(saved, to_dict(config))
        if differences:
            raise RunError(
                f"cannot resume '{run_dir}' with a different config; changed: "
                f"{', '.join(differences)}. Resume with the saved config "
                f"('cetl train {saved_path} --out {run_dir} --resume') or use a new --out."
            )


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = list(dict.fromkeys([*old, *new]))
        return [d for k in keys for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [f"{prefix[:-1]} ({old!r} → {new!r})"]


def train_run(
    config: ExperimentConfig, *, run_dir: Path, data_root: DataRoot, resume: bool = False
) -> dict[str, Any]:
    """Train ``config`` into ``run_dir`` and return (and write) its summary."""
    _check_run_dir(run_dir, config, resume=resume)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG_FILE, dump_yaml(config))
    data, info = build_training_data(config.data, root=data_root, labelled_domain=labelled_domain(config))
    if config.profile == "paper" and resolve_device(config.train.device).type == "cpu":
        info = replace(
            info,
            notes=(
                *info.notes,
                "the paper profile is GPU work (the DRCN network trains "
                "at ~50 images/s on 2 CPU cores); on CPU use --profile quick",
            ),
        )
    for note in info.notes:
        print(f"cetl: note: {note}", file=sys.stderr)
    method = build_method(config, info)
    result = train(
        method,
        data,
        train_config=config.train,
        optimizer_config=config.optimizer,
        seed=config.seed,
        run_dir=run_dir,
        resume=resume,
    )
    summary = {
        "experiment": config.experiment,
        "method": config.method.name,
        "profile": config.profile,
        "setting": config.setting,
        "source_dataset": config.data.source,
        "target_dataset": config.data.target,
        "seed": config.seed,
        "target_test_accuracy": result.target_test_accuracy,
        "selected_by": result.selected_by,
        "wall_seconds": round(result.wall_seconds, 2),
        "device": result.device,
        "world_size": 1,
        "cetl_version": __version__,
        "val_accuracy": result.val_accuracy,
        "selected_round": result.selected_round,
        "rounds": result.rounds,
        "classify_steps": result.steps.get("classify", 0),
        "steps": result.steps,
        "network": config.network.name,
        "protocol": config.data.protocol,
        "transductive": config.data.transductive,
        "data_root": data_root.describe(),
        "data_root_origin": data_root.origin,
        "data_sizes": info.sizes,
        "data_notes": list(info.notes),
        "history": result.history,
    }
    atomic_write_json(run_dir / SUMMARY_FILE, summary)
    return summary


@dataclass
class LoadedRun:
    """A finished run rebuilt from its folder, with the selected weights loaded."""

    config: ExperimentConfig
    method: Method
    data: TrainingData
    info: DataInfo


def read_config(run_dir: Path) -> ExperimentConfig:
    """The config a run folder was trained with."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise RunError(f"'{run_dir}' is not a cetl run folder: it has no {CONFIG_FILE}")
    saved = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(saved, dict) or "experiment" not in saved or "profile" not in saved:
        raise RunError(f"'{path}' is not a cetl run config (it lacks 'experiment' or 'profile')")
    base = EXPERIMENTS.get(saved.pop("experiment"))(saved.pop("profile"))
    return merge(base, saved)


def run_data_root(run_dir: Path, explicit: str | None) -> DataRoot:
    """The data root to re-read a run with: explicit, else the sample if it trained on it."""
    if explicit is None:
        summary_path = run_dir / SUMMARY_FILE
        if summary_path.exists():
            import json

            if json.loads(summary_path.read_text()).get("data_root_origin") == "sample":
                return sample_root()
    return resolve_data_root(explicit)


def load_run(run_dir: Path, *, data_root: DataRoot) -> LoadedRun:
    """Rebuild a run's method and data and load its selected weights (``best.pt``)."""
    config = read_config(run_dir)
    data, info = build_training_data(config.data, root=data_root, labelled_domain=labelled_domain(config))
    method = build_method(config, info)
    checkpoint = load_checkpoint(run_dir / BEST_CHECKPOINT)
    networks = method.trainable_networks()
    for name, network in networks.items():
        if name not in checkpoint.get("networks", {}):
            raise RunError(f"'{run_dir / BEST_CHECKPOINT}' has no weights for '{name}'")
        network.load_state_dict(checkpoint["networks"][name])
    method.eval()
    return LoadedRun(config, method, data, info)


def evaluate_run(run_dir: Path, *, data_root: DataRoot) -> dict[str, Any]:
    """Re-evaluate a run's selected weights; writes and returns ``eval.json``."""
    import contextlib

    run = load_run(run_dir, data_root=data_root)
    report = {
        "experiment": run.config.experiment,
        "method": run.config.method.name,
        "val_accuracy": accuracy(run.method, run.data.labelled_val, autocast=contextlib.nullcontext()),
        "target_test_accuracy": accuracy(run.method, run.data.target_test, autocast=contextlib.nullcontext()),
        "target_test_size": len(run.data.target_test),
        "data_root": data_root.describe(),
    }
    atomic_write_json(run_dir / "eval.json", report)
    return report
