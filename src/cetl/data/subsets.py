"""Seeded subsets, few-label draws and the held-out validation split.

Drawn from ``split_seed`` (or the run's seed for few-label draws) by name through
:func:`cetl.seeding.seeded_generator`, so every training seed and every method sees the same
images, and a new kind of draw shifts no existing one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cetl.data.datasets import RawSplit
from cetl.data.labelled import LabelledSet
from cetl.errors import ConfigError
from cetl.seeding import seeded_generator


def seeded_subset(raw: RawSplit, count: int | None, *, seed: int, name: str) -> RawSplit:
    """``count`` images drawn without replacement by a seeded permutation.

    When ``count`` is ``None`` or not smaller than the split, the split is returned in its
    stored order. That keeps a pre-drawn subset (the bundled sample stores exactly the images
    this function draws from the full set, in this order) identical to drawing from the full set.
    """
    if count is None or count >= len(raw):
        return raw
    if count <= 0:
        raise ConfigError(f"a subset size must be positive, got {count} for {name}")
    order = torch.randperm(len(raw), generator=seeded_generator(seed, "subset", name))
    return raw.select(order[:count])


def per_class_indices(labels: Tensor, per_class: int, *, seed: int, name: str) -> Tensor:
    """Sorted indices of ``per_class`` images of every class, drawn by a seeded permutation
    (few-label settings); a run records them so its labelled images can be named later.

    Raises:
        ConfigError: ``per_class`` is not positive, or a class has fewer images than asked.
    """
    if per_class <= 0:
        raise ConfigError(f"labels per class must be positive, got {per_class} for {name}")
    generator = seeded_generator(seed, "per_class", name)
    chosen = []
    for label in torch.unique(labels).tolist():  # sorted, so the draw order is fixed
        members = torch.nonzero(labels == label).squeeze(1)
        if len(members) < per_class:
            raise ConfigError(
                f"{name} has {len(members)} images of class {label}, fewer than the {per_class} "
                f"labels per class asked for; lower data.target_labels_per_class"
            )
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values


def split_validation(
    data: LabelledSet, fraction: float, *, seed: int, name: str
) -> tuple[LabelledSet, LabelledSet]:
    """Hold out ``fraction`` of ``data`` (seeded) for model selection; returns (train, val).

    ``fraction`` 0 holds nothing out: ``val`` is empty (a few labels per class, where a
    hold-out would leave classes without a training image).
    """
    if not 0.0 <= fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return data, LabelledSet(data.x[:0], data.y[:0])
    count = max(1, round(len(data) * fraction))
    if count >= len(data):
        raise ConfigError(
            f"{name} has {len(data)} labelled images, too few to hold out {fraction:.0%} "
            f"for validation; use more data or a smaller data.val_fraction"
        )
    order = torch.randperm(len(data), generator=seeded_generator(seed, "validation", name))
    val, train = order[:count], order[count:]
    return LabelledSet(data.x[train], data.y[train]), LabelledSet(data.x[val], data.y[val])
