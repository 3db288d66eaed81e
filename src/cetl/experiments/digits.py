"""Digit domain adaptation (paper Table 5): MNIST ↔ USPS, SVHN ↔ MNIST.

One builder, :func:`digits_experiment`, sizes every digit experiment per profile
(METHOD.md §9); the named experiments only pick the direction and variant:
``digits_<src>_to_<tgt>`` (DRCN protocol, Table 5's), ``..._p`` (ADDA's 2,000/1,800
protocol at 28×28) and ``..._10labels`` (10 labelled target images per class join the
labelled source data in classification, METHOD.md §5).

- ``smoke``: 256 images per domain, LeNet-size net, 2 rounds of a few steps (tests).
- ``quick``: DRCN protocol (32×32 grey), LeNet-size net, 8 rounds, MNIST (and SVHN) capped at a
  seeded 20,000 images so a CPU run takes about a minute; USPS in full. Adam at 1e-3 rather
  than DRCN's 3e-4, chosen on *source validation only* (MNIST→USPS, seed 0, 8 rounds: 98.65%
  vs 97.75%; a 12-round run showed source validation flat after round 8).
- ``paper``: DRCN protocol on full sets with the DRCN network, 50 rounds (GPU work).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cetl.config import DataConfig, ExperimentConfig, NetworkConfig, OptimizerConfig, TrainConfig
from cetl.errors import ConfigError

ExperimentFn = Callable[[str], ExperimentConfig]

QUICK_MNIST_LIMIT = 20_000
"""Seeded MNIST subset in ``quick`` (METHOD.md §9: at least 20,000 if time demands)."""


def digits_experiment(
    name: str, source: str, target: str, profile: str, *, protocol: str = "drcn", **data: Any
) -> ExperimentConfig:
    """A domain-adaptation config from labelled ``source`` digits to unlabelled ``target`` digits.

    ``protocol="adda"`` is ADDA's "p" protocol (2,000 MNIST / 1,800 USPS at 28×28, LeNet in
    every profile); extra ``data`` fields (e.g. ``target_labels_per_class``) are passed through.
    """
    if protocol not in ("drcn", "adda"):
        raise ConfigError(f"digit experiments use the drcn or adda protocol, not '{protocol}'")
    large = ("mnist", "svhn")
    if profile == "smoke":
        limits: dict[str, Any] = {"source_train_limit": 256, "target_train_limit": 256, "test_limit": 256}
        network, train = (
            "lenet",
            TrainConfig(
                rounds=2,
                batch_size=64,
                max_steps_per_epoch=3,
                log_every=1,
                tensorboard=False,
                eval_every_stage=True,
            ),
        )
        optimizer = OptimizerConfig(lr=1e-3)
    elif profile == "quick":
        limits = {}
        if protocol == "drcn":
            limits = {
                "source_train_limit": QUICK_MNIST_LIMIT if source in large else None,
                "target_train_limit": QUICK_MNIST_LIMIT if target in large else None,
            }
        # The adda protocol's 2,000/1,800 images give ~14 steps a round: more rounds for a
        # comparable number of steps.
        network, train = "lenet", TrainConfig(rounds=8 if protocol == "drcn" else 30, eval_every_stage=True)
        optimizer = OptimizerConfig(lr=1e-3)
    elif profile == "paper":
        limits = {}
        network = "drcn" if protocol == "drcn" else "lenet"
        train = TrainConfig(rounds=50 if protocol == "drcn" else 100)
        optimizer = OptimizerConfig()  # DRCN's Adam 3e-4 (METHOD.md §9)
    else:
        raise ConfigError(f"unknown profile '{profile}' for {name}")
    return ExperimentConfig(
        experiment=name,
        setting="domain_adaptation",
        profile=profile,
        data=DataConfig(source=source, target=target, protocol=protocol, **{**limits, **data}),
        network=NetworkConfig(name=network),
        optimizer=optimizer,
        train=train,
    )


_SHORT = {"mnist": "mn", "usps": "us", "svhn": "sv"}
FEW_LABELS = 10
"""Target labels per class in the few-label variants (``*_10labels``)."""


def _direction(
    source: str, target: str, protocol: str = "drcn", suffix: str = "", **data: Any
) -> ExperimentFn:
    name = f"digits_{_SHORT[source]}_to_{_SHORT[target]}{suffix}"

    def experiment(profile: str) -> ExperimentConfig:
        return digits_experiment(name, source, target, profile, protocol=protocol, **data)

    what = "ADDA's 'p' protocol, 28×28" if protocol == "adda" else "DRCN protocol, 32×32"
    few = f", {data['target_labels_per_class']} target labels per class" if data else ""
    experiment.__doc__ = f"{source.upper()} (labelled) → {target.upper()} (unlabelled; {what}{few})."
    experiment.__name__ = name
    return experiment


_DIRECTIONS = [
    _direction("mnist", "usps"),
    _direction("usps", "mnist"),
    _direction("svhn", "mnist"),
    _direction("mnist", "svhn"),
    _direction("mnist", "usps", protocol="adda", suffix="_p"),
    _direction("usps", "mnist", protocol="adda", suffix="_p"),
    _direction("mnist", "usps", suffix="_10labels", target_labels_per_class=FEW_LABELS),
    _direction("usps", "mnist", suffix="_10labels", target_labels_per_class=FEW_LABELS),
]
EXPERIMENTS: dict[str, ExperimentFn] = {fn.__name__: fn for fn in _DIRECTIONS}
