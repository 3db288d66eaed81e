"""Protocols (METHOD.md §8): sizes, colour, subsets and splits.

Numbers in the domain-adaptation literature are only comparable under one
protocol, so a protocol is data here, pinned per experiment:

- ``drcn`` (Table 5's): full training sets, every image 32×32 grey in [0,1]
  (USPS up-sampled full frame, SVHN converted to grey);
- ``adda`` ("p"): 2,000 MNIST / 1,800 USPS training images at 28×28;
- ``cifar``: every image 32×32 RGB (CIFAR-10/100 as stored; KD);
- ``cifar10s`` (CIFAR-10-s, Table 2/3): 32×32 RGB, a stratified 20% of CIFAR-10's
  training images, all test images;
- ``stl_cifar`` (Table 5's ST↔CI): 32×32 RGB (STL-10 down-sampled, antialiased), only
  the 9 classes the two datasets share, relabelled to one index space.

``to_protocol`` does sizes and colour; ``cetl.data.natural`` applies the class
selection and the stratified fraction, which only the natural-image protocols use.

Subsets and the held-out validation split are drawn from ``split_seed`` alone, so
every training seed and every method sees the same images.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from cetl.data.datasets import RawSplit
from cetl.errors import ConfigError


@dataclass(frozen=True)
class Protocol:
    """Image size, colour and default training-set sizes of one published protocol."""

    name: str
    image_size: int
    channels: int
    train_counts: dict[str, int] = field(default_factory=dict)
    """Default number of training images per dataset; absent means the full set."""
    train_fractions: dict[str, float] = field(default_factory=dict)
    """Per dataset, the share of *each class's* training images kept (seeded; CIFAR-10-s)."""
    classes: tuple[str, ...] = ()
    """A shared label space: only images of these classes are kept, relabelled to their index
    here (matched by the dataset's class names); empty keeps every class as stored."""
    class_aliases: dict[str, str] = field(default_factory=dict)
    """Dataset class name → its name in :attr:`classes`, where datasets name a class differently."""


STL_CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "horse", "ship", "truck")
"""The 9 classes STL-10 and CIFAR-10 share (CIFAR-10's order without 'frog'; STL-10's 'monkey'
is dropped too). Index i here is label i of the ``stl_cifar`` protocol."""

PROTOCOLS: dict[str, Protocol] = {
    "drcn": Protocol("drcn", image_size=32, channels=1),
    "adda": Protocol("adda", image_size=28, channels=1, train_counts={"mnist": 2000, "usps": 1800}),
    "cifar": Protocol("cifar", image_size=32, channels=3),
    "cifar10s": Protocol("cifar10s", image_size=32, channels=3, train_fractions={"cifar10": 0.2}),
    "stl_cifar": Protocol(
        "stl_cifar",
        image_size=32,
        channels=3,
        classes=STL_CIFAR_CLASSES,
        class_aliases={"car": "automobile"},
    ),
}


@dataclass(frozen=True)
class LabelledSet:
    """Float images ``(N, C, H, W)`` in [0,1] and their int64 labels ``(N,)``."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device) -> LabelledSet:
        return LabelledSet(self.x.to(device), self.y.to(device))


def seeded_generator(seed: int, *names: str) -> torch.Generator:
    """A CPU generator seeded from ``seed`` and names (so adding a name shifts no other stream)."""
    digest = hashlib.sha256(repr((seed, *names)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


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


def to_protocol(raw: RawSplit, protocol: Protocol, *, chunk: int = 8192) -> LabelledSet:
    """Convert stored uint8 images to the protocol's float size and colour.

    Resizing is full frame (bilinear, antialiased when shrinking), as DRCN up-samples USPS;
    RGB becomes grey with ITU-R 601 luma weights. Works in chunks so a full training set
    never needs a second float copy at the stored size.
    """
    parts = []
    for start in range(0, len(raw), chunk):
        images = raw.images[start : start + chunk].float().div_(255.0)  # (B, C, H, W)
        if images.shape[1] == 3 and protocol.channels == 1:
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images * weights).sum(dim=1, keepdim=True)
        elif images.shape[1] == 1 and protocol.channels == 3:
            images = images.expand(-1, 3, -1, -1)
        if images.shape[-1] != protocol.image_size or images.shape[-2] != protocol.image_size:
            shrinking = images.shape[-1] > protocol.image_size
            images = F.interpolate(
                images,
                size=(protocol.image_size, protocol.image_size),
                mode="bilinear",
                align_corners=False,
                antialias=shrinking,
            ).clamp_(0.0, 1.0)
        parts.append(images.contiguous())
    return LabelledSet(torch.cat(parts), raw.labels.clone())
