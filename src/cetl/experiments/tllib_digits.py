"""TLlib's digits protocol, pinned: ``digits_mn_to_us_tllib`` and ``digits_us_to_mn_tllib``.

The Transfer-Learning-Library (thuml, ``examples/domain_adaptation/image_classification``,
``erm.sh`` and ``dann.sh``, "Digits") is the best-kept public implementation of these
baselines, so its recipe is the bar ours must meet on its own protocol (issue 21):

- data: full MNIST and USPS training sets, 28×28 grey (protocol ``tllib``), normalised with
  mean 0.5 / std 0.5 (the first layer of ``lenet_tllib``); the target's test set is reported;
- batches of 128 source + 128 target images; 2,000 steps in all (:data:`TOTAL_STEPS`); the
  last step is reported (``train.selection=last``), nothing is held out of the source set;
- SGD with Nesterov momentum 0.9 at lr 0.01 (0.1 for USPS→MNIST, as TLlib's scripts),
  annealed as ``lr · (1 + γ·step)^-0.75``;
- per method (:data:`METHOD_POLICIES`, applied by :func:`cetl.experiments.resolve`):
  ``source_only`` (TLlib's ``erm.py``): LeNet with a linear head, γ = 3e-4, weight decay 5e-4;
  ``dann``: LeNet + a 256-unit bottleneck (BatchNorm, ReLU) read by a 1,024-unit discriminator
  with BatchNorm, γ = 1e-3, weight decay 1e-3, the reversal coefficient warmed up over 1,000
  steps (TLlib's ``WarmStartGradientReverseLayer``: ``2/(1+exp(−i/1000)) − 1``).

Both schedules are written in this project's fraction-of-training form p = step / 2,000:
``(1 + γ·step)^-0.75 = (1 + γ·2000·p)^-0.75`` (``anneal_alpha`` = γ × 2,000) and the warm
start is DANN's ``2/(1+exp(−γ' p)) − 1`` with γ' = 2,000 / 1,000 = 2.

The engine counts steps in rounds of stage epochs, an epoch ending with the source set; each
direction's split (:data:`SCHEDULE`) gives exactly 2,000 steps with a fresh shuffle per
epoch, where TLlib cycles its loader. ``smoke`` keeps the recipe on 256 images and a few steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cetl.config import DataConfig, ExperimentConfig, NetworkConfig, OptimizerConfig, TrainConfig
from cetl.errors import ConfigError

ExperimentFn = Callable[[str], ExperimentConfig]

TOTAL_STEPS = 2_000
"""Steps of every run on this protocol, as the TLlib runs the targets come from."""
ROUNDS = 5
"""Rounds the 2,000 steps are split into (an evaluation after each)."""
SCHEDULE = {"mnist": (1, 400), "usps": (8, 50)}
"""Source dataset → (epochs per round, steps per epoch): 5 × 1 × 400 and 5 × 8 × 50 steps.
MNIST's 60,000 images give 468 full batches, USPS's 7,291 only 56."""
LEARNING_RATE = {"mnist": 0.01, "usps": 0.1}
"""TLlib's ``--lr`` per source dataset (``erm.sh``/``dann.sh``: MNIST→USPS 0.01, USPS→MNIST 0.1)."""
WARM_START_STEPS = 1_000
"""TLlib's reversal warm-up length (``max_iters``)."""


def _anneal_alpha(gamma: float) -> float:
    """TLlib's γ per step as this project's α per fraction of training."""
    return gamma * TOTAL_STEPS


METHOD_POLICIES: dict[str, dict[str, Any]] = {
    "source_only": {
        "network": {"name": "lenet_tllib"},
        "optimizer": {"anneal_alpha": _anneal_alpha(3e-4), "weight_decay": 5e-4},
    },
    "dann": {
        "network": {"name": "lenet_tllib_bottleneck"},
        "optimizer": {"weight_decay": 1e-3},
        "method": {
            "lr_anneal_alpha": _anneal_alpha(1e-3),
            "lr_anneal_beta": 0.75,
            "gamma": TOTAL_STEPS / WARM_START_STEPS,
            "hidden": 1024,
            "discriminator_batch_norm": True,
            "domain_weight": 1.0,
        },
    },
}
"""TLlib's per-method settings (``erm.py`` and ``dann.py`` defaults): data the experiments
apply for the method a run picks, so ``cetl train digits_mn_to_us_tllib --method dann`` is TLlib's
DANN. Other methods run with the protocol's shared settings."""


def tllib_experiment(name: str, source: str, target: str, profile: str) -> ExperimentConfig:
    """TLlib's digits recipe from labelled ``source`` to unlabelled ``target`` (any profile but smoke
    is the pinned recipe; smoke shrinks it for tests)."""
    epochs, steps = SCHEDULE[source]
    if profile == "smoke":
        limits: dict[str, Any] = {"source_train_limit": 256, "target_train_limit": 256, "test_limit": 256}
        train = TrainConfig(
            rounds=2, batch_size=64, max_steps_per_epoch=2, log_every=1, tensorboard=False, selection="last"
        )
    elif profile in ("quick", "paper"):
        limits = {}
        train = TrainConfig(
            rounds=ROUNDS,
            stage_epochs=epochs,
            max_steps_per_epoch=steps,
            batch_size=128,
            selection="last",
            eval_every_stage=False,
        )
    else:
        raise ConfigError(f"unknown profile '{profile}' for {name}")
    return ExperimentConfig(
        experiment=name,
        setting="domain_adaptation",
        profile=profile,
        data=DataConfig(source=source, target=target, protocol="tllib", val_fraction=0.0, **limits),
        network=NetworkConfig(name="lenet_tllib"),
        optimizer=OptimizerConfig(
            name="sgd", lr=LEARNING_RATE[source], momentum=0.9, nesterov=True, weight_decay=5e-4
        ),
        train=train,
    )


def _direction(source: str, target: str) -> tuple[str, ExperimentFn]:
    short = {"mnist": "mn", "usps": "us"}
    name = f"digits_{short[source]}_to_{short[target]}_tllib"

    def experiment(profile: str) -> ExperimentConfig:
        return tllib_experiment(name, source, target, profile)

    experiment.__doc__ = (
        f"{source.upper()} (labelled) → {target.upper()} (unlabelled; TLlib's digits recipe, 28×28, "
        f"{TOTAL_STEPS:,} SGD steps, last step)."
    )
    return name, experiment


EXPERIMENTS: dict[str, ExperimentFn] = dict(
    _direction(source, target) for source, target in (("mnist", "usps"), ("usps", "mnist"))
)
POLICIES: dict[str, dict[str, dict[str, Any]]] = {name: METHOD_POLICIES for name in EXPERIMENTS}
"""Experiment → method → overrides, collected by :mod:`cetl.experiments`."""
