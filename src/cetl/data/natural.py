"""Natural-image protocols (METHOD.md §8): CIFAR-10-s and STL↔CIFAR's 9 shared classes.

The protocols themselves are data in :data:`cetl.data.protocols.PROTOCOLS` (``cifar``,
``cifar10s``, ``stl_cifar``); this module applies the two steps they add to the
digit protocols, on stored images, before :func:`~cetl.data.protocols.to_protocol`
resizes them:

1. **class selection** (``Protocol.classes``): keep the images of the shared classes and
   relabel them. For ``stl_cifar`` the common index space is CIFAR-10's order without
   'frog' (STL-10's 'car' is CIFAR-10's 'automobile'; 'monkey' is dropped)::

       index  class        CIFAR-10 label  STL-10 label
       0      airplane     0               0
       1      automobile   1               2 (car)
       2      bird         2               1
       3      cat          3               3
       4      deer         4               4
       5      dog          5               5
       6      horse        7               6
       7      ship         8               8
       8      truck        9               9
       -      (dropped)    6 (frog)        7 (monkey)

2. **stratified cap** (``Protocol.train_per_class``, training split only): at most ``n``
   images of each class, drawn by a permutation seeded from ``split_seed`` alone, kept in stored
   order. CIFAR-10-s caps CIFAR-10 at 1,000 per class: exactly the paper's 20% of each class's
   5,000 on the full set, and on the 4,000-image subset every image (8% of CIFAR-10, 366–422 per
   class), where a fraction of the subset would leave 800. The test split is always kept whole.

The usual build is :func:`load_protocol`; :func:`apply_protocol` is the same on a
:class:`RawSplit` already loaded, for callers that subset further.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cetl.data.datasets import DatasetSpec, RawSplit, find_spec, load_raw
from cetl.data.labelled import LabelledSet
from cetl.data.protocols import PROTOCOLS, Protocol, to_protocol
from cetl.data.root import DataRoot
from cetl.errors import ConfigError, DataError
from cetl.seeding import seeded_generator

DROPPED = -1
"""The label :func:`class_map` gives a class a protocol drops."""


def class_map(spec: DatasetSpec, protocol: Protocol) -> Tensor:
    """Each stored label's index in the protocol's label space, or :data:`DROPPED`.

    Returns:
        int64 ``(spec.num_classes,)``; the identity when the protocol keeps every class.

    Raises:
        ConfigError: the protocol names classes the dataset lacks (e.g. ``stl_cifar`` on MNIST).
    """
    if not protocol.classes:
        return torch.arange(spec.num_classes)
    names = [protocol.class_aliases.get(name, name) for name in spec.classes]
    lacking = [name for name in protocol.classes if name not in names]
    if lacking:
        raise ConfigError(
            f"protocol '{protocol.name}' keeps the classes {', '.join(protocol.classes)}, but "
            f"{spec.title} ({spec.name}) lacks {', '.join(lacking)}"
            + (f" (its classes: {', '.join(spec.classes)})" if spec.classes else " (it names no classes)")
            + "; use a protocol without a class list, e.g. 'cifar'"
        )
    return torch.tensor([protocol.classes.index(n) if n in protocol.classes else DROPPED for n in names])


def protocol_num_classes(name: str, protocol: Protocol) -> int:
    """How many classes dataset ``name`` has under ``protocol`` (what a classifier head needs)."""
    return len(protocol.classes) if protocol.classes else find_spec(name).num_classes


def select_classes(raw: RawSplit, spec: DatasetSpec, protocol: Protocol) -> RawSplit:
    """The images of the protocol's classes, relabelled; unlabelled images (label < 0) all stay."""
    if not protocol.classes:
        return raw
    mapping = class_map(spec, protocol)
    labelled = raw.labels >= 0
    new = torch.where(labelled, mapping[raw.labels.clamp(min=0)], raw.labels)
    keep = torch.nonzero(~labelled | (new != DROPPED)).squeeze(1)
    return RawSplit(raw.images[keep], new[keep])


def stratified_subset(raw: RawSplit, per_class: int, *, seed: int, name: str) -> RawSplit:
    """``min(per_class, n_c)`` images of each class, seeded, in stored order.

    Args:
        raw: a labelled split (labels ≥ 0).
        per_class: the most images kept of each class (≥ 1).
        seed: the split seed; the draw depends on it and ``name`` only.
        name: what is drawn from (e.g. ``cifar10/train``), so different datasets draw independently.
    """
    if per_class < 1:
        raise ConfigError(f"a per-class cap must be at least 1, got {per_class} for {name}")
    if bool((raw.labels < 0).any()):
        raise DataError(f"{name} holds unlabelled images; a stratified subset needs a label for each")
    generator = seeded_generator(seed, "stratified", name)
    chosen = []
    for label in torch.unique(raw.labels).tolist():  # sorted, so the draw order is fixed
        members = torch.nonzero(raw.labels == label).squeeze(1)
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return raw.select(torch.cat(chosen).sort().values)


def apply_protocol(raw: RawSplit, name: str, split: str, protocol: Protocol, *, split_seed: int) -> RawSplit:
    """Class selection, then (training split only) the stratified cap; see the module docstring."""
    raw = select_classes(raw, find_spec(name), protocol)
    per_class = protocol.train_per_class.get(name)
    if split == "train" and per_class is not None:
        raw = stratified_subset(raw, per_class, seed=split_seed, name=f"{name}/{split}")
    return raw


def load_protocol(
    name: str, split: str, root: DataRoot, protocol: Protocol, *, split_seed: int = 0
) -> LabelledSet:
    """One split of ``name`` under ``protocol``: classes, per-class cap, then size and colour."""
    raw = apply_protocol(load_raw(name, split, root), name, split, protocol, split_seed=split_seed)
    return to_protocol(raw, protocol)


def cifar10_s(split: str, root: DataRoot, *, split_seed: int = 0) -> LabelledSet:
    """CIFAR-10-s (Tables 2–3): at most 1,000 training images per class (20% of the full set), or
    the whole test split."""
    return load_protocol("cifar10", split, root, PROTOCOLS["cifar10s"], split_seed=split_seed)


def stl_cifar(name: str, split: str, root: DataRoot) -> LabelledSet:
    """STL-10 or CIFAR-10 (``name``) in STL↔CIFAR's 9 shared classes, 32×32 RGB."""
    return load_protocol(name, split, root, PROTOCOLS["stl_cifar"])
