"""The engine on the synthetic data, as the method tests run it (one definition for every file)."""

from __future__ import annotations

from cetl.config import OptimizerConfig, TrainConfig
from cetl.data.synthetic import synthetic_training_data
from cetl.engine import loop

TRAIN = TrainConfig(rounds=2, batch_size=16, max_steps_per_epoch=2, tensorboard=False, progress=False)


def train_synthetic(method, run_dir, *, train=TRAIN, resume=False):
    """The engine on the synthetic data with Adam 1e-3 and seed 0."""
    return loop.train(
        method,
        synthetic_training_data(),
        train_config=train,
        optimizer_config=OptimizerConfig(lr=1e-3),
        seed=0,
        run_dir=run_dir,
        resume=resume,
    )
