"""Protocols (METHOD.md §8): image size, colour, default subset sizes and shared class spaces.

Numbers in the domain-adaptation literature are only comparable under one
protocol, so a protocol is data here, pinned per experiment:

- ``drcn`` (Table 5's): full training sets, every image 32×32 grey in [0,1]
  (USPS up-sampled full frame, SVHN converted to grey);
- ``adda`` ("p"): 2,000 MNIST / 1,800 USPS training images at 28×28;
- ``tllib`` (TLlib's digits, ``examples/domain_adaptation/image_classification``): full
  training sets at 28×28 grey (USPS up-sampled full frame); TLlib's mean 0.5 / std 0.5
  normalisation is the first layer of its networks (``lenet_tllib``), so the data stays in [0, 1];
- ``cifar``: every image 32×32 RGB (CIFAR-10/100 as stored; KD);
- ``cifar10s`` (CIFAR-10-s, Table 2/3): 32×32 RGB, at most 1,000 training images per class
  (the paper's stratified 20% of CIFAR-10; all of the 4,000-image subset), all test images;
- ``stl_cifar`` (Table 5's ST↔CI): 32×32 RGB (STL-10 down-sampled, antialiased), only
  the 9 classes the two datasets share, relabelled to one index space.

``to_protocol`` does sizes and colour; ``cetl.data.natural`` applies the class
selection and the per-class cap, which only the natural-image protocols use;
:mod:`cetl.data.subsets` draws subsets and the validation split.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from cetl.data.datasets import RawSplit
from cetl.data.labelled import LabelledSet


@dataclass(frozen=True)
class Protocol:
    """Image size, colour and default training-set sizes of one published protocol."""

    name: str
    image_size: int
    channels: int
    train_counts: dict[str, int] = field(default_factory=dict)
    """Default number of training images per dataset; absent means the full set."""
    train_per_class: dict[str, int] = field(default_factory=dict)
    """Per dataset, the most training images kept of *each class* (seeded; CIFAR-10-s)."""
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
    "tllib": Protocol("tllib", image_size=28, channels=1),
    "cifar": Protocol("cifar", image_size=32, channels=3),
    "cifar10s": Protocol("cifar10s", image_size=32, channels=3, train_per_class={"cifar10": 1000}),
    "stl_cifar": Protocol(
        "stl_cifar",
        image_size=32,
        channels=3,
        classes=STL_CIFAR_CLASSES,
        class_aliases={"car": "automobile"},
    ),
}


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
