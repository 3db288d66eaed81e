"""What the method tests share: tiny sources, methods built the way ``cetl train`` builds them,
the engine on the synthetic data, and parameter snapshots (one definition for every file)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from cetl.build import DataInfo, build_method
from cetl.config import EngineConfig, OptimizerConfig, TrainConfig
from cetl.data.synthetic import synthetic_training_data
from cetl.engine import loop
from cetl.experiments import resolve
from cetl.methods import METHODS, Method
from cetl.networks import NETWORKS
from cetl.source import FrozenSource, source_from_network
from cetl.summary import RunSummary

DIGITS_INFO = DataInfo(num_classes=4, channels=1, image_size=28, sizes={}, notes=())
"""The synthetic digits (:func:`cetl.data.synthetic.synthetic_training_data`): 4 classes, 28×28 grey."""

TRAIN = TrainConfig(rounds=2, batch_size=16, max_steps_per_epoch=2, tensorboard=False, progress=False)


def make_source(seed: int = 7, tap: str = "coupling") -> FrozenSource:
    """A random LeNet as S: what a method does with S does not depend on S being good."""
    torch.manual_seed(seed)
    net = NETWORKS.get("lenet")(in_channels=1, image_size=28, num_classes=4)
    return source_from_network(net, tap=tap, temperature=4.0, description="test lenet")


def make_method(
    name: str,
    *,
    experiment: str = "digits_mn_to_us",
    sets: Iterable[str] = (),
    source: FrozenSource | None = None,
    info: DataInfo = DIGITS_INFO,
) -> Method:
    """``name`` on ``experiment``'s ``smoke`` config, built by :func:`cetl.build.build_method`;
    S (``source`` or :func:`make_source`) only for methods that take one."""
    config = resolve(experiment, method=name, profile="smoke", sets=list(sets))
    takes_source = "source" in METHODS.get(name).components
    return build_method(config, info, source=(source or make_source()) if takes_source else None)


def train_synthetic(
    method: Method,
    run_dir: Path,
    *,
    train: TrainConfig = TRAIN,
    resume: bool = False,
    engine: EngineConfig | None = None,
):
    """The engine on the synthetic data with Adam 1e-3 and seed 0."""
    return loop.train(
        method,
        synthetic_training_data(),
        train_config=train,
        optimizer_config=OptimizerConfig(lr=1e-3),
        seed=0,
        run_dir=run_dir,
        resume=resume,
        engine_config=engine,
    )


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def changed(before: dict[str, torch.Tensor], module: nn.Module) -> bool:
    return any(not torch.equal(before[key], value) for key, value in module.state_dict().items())


def as_summary(fields: dict) -> RunSummary:
    """A :class:`RunSummary` from the fields a report test cares about; the other required fields
    get placeholder values (so each test states only what it checks)."""
    required = {
        "experiment": "digits_mn_to_us",
        "method": "source_only",
        "profile": "quick",
        "seed": 0,
        "target_test_accuracy": 0.5,
        "selected_by": "source_val",
        "wall_seconds": 1.0,
    }
    return RunSummary.from_json(required | fields)
