"""Natural-image domain adaptation (paper Table 5): STL-10 ↔ CIFAR-10 in their 9 shared classes.

Both directions use the ``stl_cifar`` protocol (32×32 RGB, CIFAR 'frog' and STL 'monkey'
dropped, METHOD.md §8) and the CI-CNN target network (METHOD.md §7).

- ``smoke``: 256 images per domain, 2 rounds of a few steps (tests).
- ``quick``: the data as present (the CIFAR-10 subset here is 4,000 images), 8 rounds,
  Adam 1e-3 as the digit ``quick`` profile.
- ``paper``: full sets, 50 rounds, Adam 3e-4 (GPU work).
"""

from __future__ import annotations

from collections.abc import Callable

from cetl.config import ExperimentConfig, NetworkConfig
from cetl.experiments.profiles import budget, profile_data

ExperimentFn = Callable[[str], ExperimentConfig]


def natural_experiment(name: str, source: str, target: str, profile: str) -> ExperimentConfig:
    """A domain-adaptation config between STL-10 and CIFAR-10 (labelled ``source``)."""
    train, optimizer = budget(profile, name)
    data = profile_data(profile, source=source, target=target, protocol="stl_cifar")
    return ExperimentConfig(
        experiment=name,
        setting="domain_adaptation",
        profile=profile,
        data=data,
        network=NetworkConfig(name="ci_cnn"),
        optimizer=optimizer,
        train=train,
    )


def natural_st_to_ci(profile: str) -> ExperimentConfig:
    """STL-10 (labelled) → CIFAR-10 (unlabelled), 9 shared classes."""
    return natural_experiment("natural_st_to_ci", "stl10", "cifar10", profile)


def natural_ci_to_st(profile: str) -> ExperimentConfig:
    """CIFAR-10 (labelled) → STL-10 (unlabelled), 9 shared classes."""
    return natural_experiment("natural_ci_to_st", "cifar10", "stl10", profile)


EXPERIMENTS: dict[str, ExperimentFn] = {
    "natural_st_to_ci": natural_st_to_ci,
    "natural_ci_to_st": natural_ci_to_st,
}
