"""``tl_any_to_own``: the template ``cetl adapt`` fills in with the user's own data and source.

Transfer learning in the sense of the paper's §3.4.4: a small target network T2 learns from
a few labelled target images, with a frozen source S that is only run forward (any
framework, no source data). Source and target data are both the user's dataset (as in the
``tl_*`` experiments: every method reads the target's own labels), so model selection takes
the last round (``train.selection=auto``).

The template's data (USPS) and source (none yet) are placeholders: :func:`cetl.workflows.adapt.adapt`
replaces them, and a run folder's ``config.yaml`` holds the resolved values, so
``cetl train RUN/config.yaml`` reruns an adapt run like any other.

Profiles (METHOD.md §9's shapes, via :mod:`cetl.experiments.profiles`):

- ``smoke`` (tests): 64 test images, 2 rounds of 2 steps per stage, tiny Fisher estimates;
- ``quick`` (CPU): 10 rounds at batch 32, at most :data:`QUICK_STEPS_PER_EPOCH` steps per stage epoch;
- ``paper`` (GPU): 50 rounds, Adam 3e-4.

Few labels make an epoch of the labelled data a step or two, so ``cetl.adapt`` raises the
classification epochs per round to reach :data:`CLASSIFY_STEPS_PER_ROUND` steps.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

from cetl.config import ExperimentConfig, NetworkConfig, SourceConfig, TrainConfig
from cetl.experiments.profiles import budget, profile_data
from cetl.methods.cetl_config import CetlConfig

ExperimentFn = Callable[[str], ExperimentConfig]

NAME = "tl_any_to_own"
"""Transfer learning (``tl_``) from any source to your own data, named as every experiment is."""
QUICK_STEPS_PER_EPOCH = 100
"""``quick`` caps every stage epoch at this many steps (3,200 images at batch 32), so the
reconstruction stages over many unlabelled images stay minutes on a CPU."""
CLASSIFY_STEPS_PER_ROUND = {"smoke": 1, "quick": 30, "paper": 100}
"""Least classification steps per round ``cetl.adapt`` aims for when labels are few."""


def classify_epochs(train: TrainConfig, profile: str, labelled_images: int) -> int:
    """Classification epochs per round so that ``labelled_images`` (few) still give at least
    :data:`CLASSIFY_STEPS_PER_ROUND` steps per round; never fewer than ``train.stage_epochs``."""
    steps = min(max(1, labelled_images // train.batch_size), train.max_steps_per_epoch or labelled_images)
    return max(train.stage_epochs, math.ceil(CLASSIFY_STEPS_PER_ROUND[profile] / steps))


def adapt_experiment(profile: str) -> ExperimentConfig:
    """The ``tl_any_to_own`` template: method ``cetl``, a LeNet-size T2, placeholder data and source."""
    train, optimizer = budget(profile, NAME, quick_rounds=10, quick_batch=32, smoke_batch=16, smoke_steps=2)
    if profile == "quick":  # minutes on a CPU however many unlabelled images there are
        train = dataclasses.replace(train, max_steps_per_epoch=QUICK_STEPS_PER_EPOCH)
    method = CetlConfig(name="cetl")
    data = profile_data(profile, source="usps", target="usps", protocol="drcn", smoke_images=64)
    if profile == "smoke":  # a few small Fisher micro-batches keep tests to seconds
        method = dataclasses.replace(method, fisher_batches=4, fisher_batch_size=4)
        # Every training image stays, so --labels-per-class means the same in every profile
        # (a seeded subset could leave a class short); smoke's step cap keeps it fast.
        data = dataclasses.replace(data, source_train_limit=None, target_train_limit=None)
    return ExperimentConfig(
        experiment=NAME,
        setting="transfer",
        profile=profile,
        data=data,
        network=NetworkConfig(name="lenet"),
        source=SourceConfig(kind="run"),
        method=method,
        optimizer=optimizer,
        train=train,
    )


EXPERIMENTS: dict[str, ExperimentFn] = {NAME: adapt_experiment}
