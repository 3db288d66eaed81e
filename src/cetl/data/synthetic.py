"""Tiny learnable synthetic data for tests and offline smoke runs.

Each class is a fixed random pattern plus noise, so a small network learns it in a
few steps and a test can tell "learns" from "does not" without any download.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cetl.data.labelled import LabelledSet
from cetl.data.training import TrainingData
from cetl.seeding import seeded_generator


def synthetic_set(
    count: int, *, image_size: int, num_classes: int, channels: int = 1, seed: int, noise: float = 0.3
) -> LabelledSet:
    """``count`` images in [0,1]: class prototypes (fixed by ``num_classes``) plus seeded noise."""
    # Coarse 4×4 patterns scaled up: large blobs that a small CNN separates in a few steps.
    coarse = torch.rand(num_classes, channels, 4, 4, generator=seeded_generator(0, "prototypes"))
    prototypes = F.interpolate(coarse, size=(image_size, image_size), mode="nearest")
    generator = seeded_generator(seed, "synthetic")
    labels = torch.randint(num_classes, (count,), generator=generator)
    noise_map = noise * torch.randn(count, channels, image_size, image_size, generator=generator)
    return LabelledSet((prototypes[labels] + noise_map).clamp(0.0, 1.0), labels)


def synthetic_training_data(count: int = 96, *, image_size: int = 28, num_classes: int = 4) -> TrainingData:
    """A :class:`TrainingData` whose target domain is the source domain, shifted in brightness."""
    labelled = synthetic_set(count, image_size=image_size, num_classes=num_classes, seed=1)
    val = synthetic_set(count // 4, image_size=image_size, num_classes=num_classes, seed=2)
    test = synthetic_set(count // 2, image_size=image_size, num_classes=num_classes, seed=3)
    shifted = LabelledSet((test.x * 0.8 + 0.1), test.y)
    target = synthetic_set(count, image_size=image_size, num_classes=num_classes, seed=4).x * 0.8 + 0.1
    return TrainingData(labelled, val, target, shifted)
