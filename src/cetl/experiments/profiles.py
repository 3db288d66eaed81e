"""What ``smoke``, ``quick`` and ``paper`` mean for an experiment family (METHOD.md §9), in one place.

Families pass their own round counts and sizes; the shape of each profile (smoke: a few
images and steps for tests; quick: Adam 1e-3 for 2 CPU cores; paper: the published Adam 3e-4)
is shared, so no family re-spells it.
"""

from __future__ import annotations

from typing import Any

from cetl.config import DataConfig, OptimizerConfig, TrainConfig
from cetl.errors import ConfigError


def budget(
    profile: str,
    name: str,
    *,
    quick_rounds: int = 8,
    paper_rounds: int = 50,
    quick_batch: int = 128,
    smoke_batch: int = 64,
    smoke_steps: int = 3,
) -> tuple[TrainConfig, OptimizerConfig]:
    """The engine budget and optimiser of ``profile`` (``name`` only names the experiment in errors)."""
    if profile == "smoke":
        train = TrainConfig(
            rounds=2,
            batch_size=smoke_batch,
            max_steps_per_epoch=smoke_steps,
            log_every=1,
            tensorboard=False,
            eval_every_stage=True,
        )
        return train, OptimizerConfig(lr=1e-3)
    if profile == "quick":
        train = TrainConfig(rounds=quick_rounds, batch_size=quick_batch, eval_every_stage=True)
        return train, OptimizerConfig(lr=1e-3)
    if profile == "paper":
        return TrainConfig(rounds=paper_rounds), OptimizerConfig()  # DRCN's Adam 3e-4
    raise ConfigError(f"unknown profile '{profile}' for {name}")


def profile_data(
    profile: str, *, source: str, target: str, protocol: str, smoke_images: int = 256, **fields: Any
) -> DataConfig:
    """The data section; ``smoke`` caps every split at ``smoke_images`` seeded images."""
    if profile == "smoke":
        fields |= {
            "source_train_limit": smoke_images,
            "target_train_limit": smoke_images,
            "test_limit": smoke_images,
        }
    return DataConfig(source=source, target=target, protocol=protocol, **fields)
