"""What a run folder holds and how to read it back: its file names, its config, its summary, the
data root it read and where its S lives.

A run folder holds everything needed to trust and repeat a result:

- ``config.yaml``: the resolved config (``cetl train RUN/config.yaml`` reruns it);
- ``metrics.jsonl`` and ``tensorboard/``: training and evaluation records;
- ``last.pt`` (resume point) and ``best.pt`` (the selected weights);
- ``summary.json``: the result, written last, so its presence means "finished".

Readers (reports, comparisons, adapt) live in several layers, so reading sits here, below the
workflows that write (:mod:`cetl.workflows.runs`); building a finished run's networks is
:mod:`cetl.build`'s (:func:`cetl.build.load_target_net`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import yaml

from cetl.config import ExperimentConfig
from cetl.data.root import ENV_VAR, DataRoot, resolve_data_root, sample_root
from cetl.errors import RunError
from cetl.experiments import EXPERIMENTS, merge_config
from cetl.summary import RunSummary, read_summary_file

CONFIG_FILE = "config.yaml"


SUMMARY_FILE = "summary.json"


def default_run_dir(config: ExperimentConfig) -> Path:
    """``runs/<experiment>/<profile>/<method>/seed<N>``: one folder per comparable cell."""
    return Path("runs") / config.experiment / config.profile / config.method.name / f"seed{config.seed}"


DATA_ROOT_FILE = "data_root.json"
"""The data root a run read (``path``, ``origin``), written when it starts."""


def source_run_config(config: ExperimentConfig) -> ExperimentConfig:
    """The ``source_only`` config whose selected model is S for ``config`` (METHOD.md §9).

    The experiment's profile defaults with this run's data, network and seed: every coupling
    method of one seed shares one S, and ``cetl train ...
    --method source_only`` with the same overrides trains the very same run, so "CETL vs
    source only" is a paired comparison. With ``source.network`` set
    (the distillation teacher, METHOD.md §5), S is trained as that network instead.
    """
    if config.source.kind == "experiment":  # S is another experiment's own run (Table 3's CI-CNN)
        if not config.source.experiment:
            raise RunError("source.kind=experiment needs source.experiment, e.g. pretrain_cicnn_cifar100")
        # S is that experiment's source_only run (the pretrain_* experiments are nothing else).
        return merge_config(
            EXPERIMENTS.get(config.source.experiment)(config.profile),
            {"method": {"name": "source_only"}, "seed": config.seed},
        )
    base = EXPERIMENTS.get(config.experiment)(config.profile)
    base = merge_config(base, {"method": {"name": "source_only"}, "seed": config.seed})
    network = config.network
    if config.source.network is not None:
        network = dataclasses.replace(config.network, name=config.source.network)
    data = dataclasses.replace(config.data, transductive=False, target_labels_per_class=0)
    return dataclasses.replace(base, data=data, network=network)


def source_run_dir(config: ExperimentConfig, expected: ExperimentConfig) -> Path:
    """Where S's run lives: ``source.path``, else the ``source_only`` folder of ``expected``,
    named ``source_only-<network>`` when S is another network than T2 (a teacher), so that the
    teacher and ``--method source_only`` with T2's network never share a folder."""
    if config.source.path:
        return Path(config.source.path)
    path = default_run_dir(expected)
    if expected.network.name != config.network.name:
        path = path.parent.with_name(f"source_only-{expected.network.name}") / path.name
    return path


def read_config(run_dir: Path) -> ExperimentConfig:
    """The config a run folder was trained with."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise RunError(f"'{run_dir}' is not a cetl run folder: it has no {CONFIG_FILE}")
    saved = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(saved, dict) or "experiment" not in saved or "profile" not in saved:
        raise RunError(f"'{path}' is not a cetl run config (it lacks 'experiment' or 'profile')")
    base = EXPERIMENTS.get(saved.pop("experiment"))(saved.pop("profile"))
    return merge_config(base, saved)


def read_summary(run_dir: Path) -> RunSummary | None:
    """A finished run's ``summary.json``, or ``None`` while the run is unfinished."""
    path = run_dir / SUMMARY_FILE
    return read_summary_file(path) if path.exists() else None


def run_data_root(run_dir: Path, explicit: str | None) -> DataRoot:
    """The data root to resume or re-read a run with: ``explicit`` (``--data-root``), else
    ``$CETL_DATA_ROOT``, else the root the run recorded when it started (so a resume hint works
    in a new shell), else the download cache."""
    if explicit or os.environ.get(ENV_VAR):
        return resolve_data_root(explicit)
    recorded = run_dir / DATA_ROOT_FILE
    if recorded.is_file():
        saved = json.loads(recorded.read_text(encoding="utf-8"))
        if saved.get("origin") == "sample":
            return sample_root()
        if saved.get("origin") != "cache":
            return DataRoot(Path(saved["path"]), "run", download=False)
    summary = read_summary(run_dir)  # runs from before data_root.json
    if summary is not None and summary.data_root_origin == "sample":
        return sample_root()
    return resolve_data_root(None)
