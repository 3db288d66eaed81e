"""Raw datasets through torchvision's own classes, with actionable errors.

Each registered :class:`DatasetSpec` knows the torchvision class that reads it,
the files torchvision expects under the data root, and how a user gets them.
Loading returns a :class:`RawSplit` of uint8 images ``(N, C, H, W)`` and int64
labels, memoised per process: protocols (``cetl.data.protocols``) resize and
normalise from there, so every protocol reads the same bytes.

A root may hold a *subset* of a dataset instead of the official release (CIFAR-10:
only some batch files, as in ``ROOT/subsets/cifar-10-batches-py``). Such a copy is
found and loaded, a :class:`SubsetWarning` says so once per process, and
:func:`dataset_variant` tells reports which copy a run read, because numbers on a
subset are not comparable with published ones.

The user's own data is named ``imagefolder:PATH`` or ``npz:FILE`` wherever a
dataset name is expected (:func:`find_spec`; the formats are in ``cetl.data.custom``).

Why one file: the registry of specs and the readers it names are one table; a reader is a few lines
each and only meaningful next to its spec.
"""

from __future__ import annotations

import contextlib
import functools
import pickle
import socket
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cetl.data.cifar_batches import read_batches
from cetl.data.root import ENV_VAR, DataRoot
from cetl.errors import ConfigError, DataError
from cetl.registry import Registry

SPLITS = ("train", "test")
DOWNLOAD_TIMEOUT_S = 20.0
CUSTOM_SCHEMES = ("imagefolder", "npz")
"""Prefixes that name the user's own data instead of a registered dataset."""


class SubsetWarning(UserWarning):
    """A dataset was loaded from a partial copy; results on it are not comparable with full-data ones."""


@dataclass(frozen=True)
class RawSplit:
    """One split of a dataset as stored: uint8 images ``(N, C, H, W)``, int64 labels ``(N,)``."""

    images: Tensor
    labels: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def select(self, indices: Tensor) -> RawSplit:
        """The images at ``indices``, in that order."""
        return RawSplit(self.images[indices], self.labels[indices])


@dataclass(frozen=True)
class DatasetSpec:
    """How to find, load and explain one dataset."""

    name: str
    title: str
    num_classes: int
    channels: int
    files: tuple[str, ...]
    """Files torchvision needs, relative to the data root."""
    how_to_get: str
    reader: Callable[[Path, str, bool], tuple[Any, Any]]
    """``reader(root, split, download) -> (images array-like, labels array-like)``."""
    layout: str
    """Axis order of the reader's images: ``NHW``, ``NCHW`` or ``NHWC``."""
    classes: tuple[str, ...] = ()
    """Class names by label index, where known; protocols match classes across datasets by name."""
    full_counts: dict[str, int] = field(default_factory=dict)
    """Images per split in the official release, to say how much of it a subset holds."""
    splits: tuple[str, ...] = SPLITS
    """Splits :func:`load_raw` serves (the user's own data may add ``val`` and ``unlabelled``)."""
    locator: Callable[[Path], Located | None] | None = None
    """For datasets a root may hold only part of: which copy ``root`` holds, or ``None``."""
    also_accepted: str = ""
    """What else :attr:`locator` accepts, for the missing-files message."""
    path: Path | None = None
    """The user's own data: the folder or file it lives in, independent of the data root."""

    def missing_files(self, root: Path) -> list[str]:
        """Expected files of the official release that are not under ``root``."""
        return [f for f in self.files if not (root / f).exists()]

    def locate(self, root: Path) -> Located | None:
        """Which copy of the dataset ``root`` holds and where, or ``None`` when it holds none."""
        if self.locator is not None:
            return self.locator(root)
        return None if self.missing_files(root) else Located("full", root)


@dataclass(frozen=True)
class Located:
    """Where a dataset was found and whether it is the official release or a subset of it."""

    variant: str
    """``full`` (the official release, checksums verified by torchvision) or ``subset``."""
    path: Path
    """The folder (or file) read."""


DATASETS: Registry[DatasetSpec] = Registry("dataset", contract="DatasetSpec")


def _tv():
    import torchvision.datasets as tvd  # deferred: importing torchvision costs ~1 s

    return tvd


def _read_mnist(root: Path, split: str, download: bool) -> tuple[Any, Any]:
    ds = _tv().MNIST(str(root), train=split == "train", download=download)
    return ds.data, ds.targets


def _read_usps(root: Path, split: str, download: bool) -> tuple[Any, Any]:
    ds = _tv().USPS(str(root / "USPS"), train=split == "train", download=download)
    return ds.data, ds.targets


def _read_svhn(root: Path, split: str, download: bool) -> tuple[Any, Any]:
    ds = _tv().SVHN(str(root / "SVHN"), split=split, download=download)
    return ds.data, ds.labels


CIFAR10_FOLDERS = ("cifar-10-batches-py", "subsets/cifar-10-batches-py")
"""Where CIFAR-10 is looked for under the root, in order: the official place, then a subset's."""


def locate_cifar10(root: Path) -> Located | None:
    """The first CIFAR-10 folder holding ``batches.meta``, ``test_batch`` and a training batch.

    It is ``full`` only in the official place with all five training batches (torchvision then
    verifies every checksum); anything else is a ``subset``, read without checksums because a
    subset's batch files are not the official ones.
    """
    for relative in CIFAR10_FOLDERS:
        folder = root / relative
        if not ((folder / "batches.meta").is_file() and (folder / "test_batch").is_file()):
            continue
        batches = _cifar10_train_batches(folder)
        if batches:
            full = relative == CIFAR10_FOLDERS[0] and len(batches) == 5
            return Located("full" if full else "subset", folder)
    return None


def _cifar10_train_batches(folder: Path) -> list[str]:
    return [f"data_batch_{i}" for i in range(1, 6) if (folder / f"data_batch_{i}").is_file()]


def _read_cifar10(root: Path, split: str, download: bool) -> tuple[Any, Any]:
    tvd = _tv()
    found = locate_cifar10(root)
    if found is None or found.variant == "full" or download:
        # A download root gets the official release; only a read-only root is read as it stands.
        ds = tvd.CIFAR10(str(root), train=split == "train", download=download)
        return ds.data, ds.targets

    # A subset's batch files have no official checksums, so they are never handed to pickle.load
    names = _cifar10_train_batches(found.path) if split == "train" else ["test_batch"]
    return read_batches(found.path, names)


def _read_cifar100(root: Path, split: str, download: bool) -> tuple[Any, Any]:
    ds = _tv().CIFAR100(str(root), train=split == "train", download=download)
    return ds.data, ds.targets


def _read_stl10(root: Path, split: str, download: bool) -> tuple[Any, Any]:
    tvd = _tv()
    if download:
        ds = tvd.STL10(str(root), split=split, download=True)
        return ds.data, ds.labels

    class STL10Labelled(tvd.STL10):
        """torchvision's STL-10 without its demand for ``unlabeled_X.bin`` (2.7 GB), which the
        labelled splits never read; the four labelled files are still checksummed."""

        def _check_integrity(self) -> bool:
            from torchvision.datasets.utils import check_integrity

            labelled = [*self.train_list[:2], *self.test_list]
            folder = Path(self.root) / self.base_folder
            return all(check_integrity(str(folder / name), md5) for name, md5 in labelled)

    ds = STL10Labelled(str(root), split=split, download=False)
    return ds.data, ds.labels


DIGIT_CLASSES = tuple(str(digit) for digit in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
"""Label order of each release (CIFAR-10's ``batches.meta``, STL-10's ``class_names.txt``)."""

for _spec in (
    DatasetSpec(
        name="mnist",
        title="MNIST",
        num_classes=10,
        channels=1,
        files=tuple(
            f"MNIST/raw/{f}"
            for f in (
                "train-images-idx3-ubyte",
                "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte",
                "t10k-labels-idx1-ubyte",
            )
        ),
        how_to_get="torchvision.datasets.MNIST(ROOT, download=True) on a machine with internet",
        reader=_read_mnist,
        layout="NHW",
        classes=DIGIT_CLASSES,
        full_counts={"train": 60000, "test": 10000},
    ),
    DatasetSpec(
        name="usps",
        title="USPS",
        num_classes=10,
        channels=1,
        files=("USPS/usps.bz2", "USPS/usps.t.bz2"),
        how_to_get="torchvision.datasets.USPS(ROOT + '/USPS', download=True) "
        "(the LIBSVM multiclass files usps.bz2 and usps.t.bz2)",
        reader=_read_usps,
        layout="NHW",
        classes=DIGIT_CLASSES,
        full_counts={"train": 7291, "test": 2007},
    ),
    DatasetSpec(
        name="svhn",
        title="SVHN",
        num_classes=10,
        channels=3,
        files=("SVHN/train_32x32.mat", "SVHN/test_32x32.mat"),
        how_to_get="torchvision.datasets.SVHN(ROOT + '/SVHN', split=..., download=True) "
        "(format 2 'cropped digits' .mat files; reading them needs scipy)",
        reader=_read_svhn,
        layout="NCHW",
        classes=DIGIT_CLASSES,
        full_counts={"train": 73257, "test": 26032},
    ),
    DatasetSpec(
        name="cifar10",
        title="CIFAR-10",
        num_classes=10,
        channels=3,
        files=tuple(
            f"cifar-10-batches-py/{f}"
            for f in ("batches.meta", *(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
        ),
        how_to_get="torchvision.datasets.CIFAR10(ROOT, download=True) (the python version, "
        "cifar-10-python.tar.gz, unpacked)",
        reader=_read_cifar10,
        layout="NHWC",
        classes=CIFAR10_CLASSES,
        full_counts={"train": 50000, "test": 10000},
        locator=locate_cifar10,
        also_accepted="a subset: batches.meta, test_batch and any of data_batch_1..5 (checksums not "
        "verified) in ROOT/cifar-10-batches-py or ROOT/subsets/cifar-10-batches-py",
    ),
    DatasetSpec(
        name="cifar100",
        title="CIFAR-100",
        num_classes=100,
        channels=3,
        files=tuple(f"cifar-100-python/{f}" for f in ("meta", "train", "test")),
        how_to_get="torchvision.datasets.CIFAR100(ROOT, download=True) (the python version)",
        reader=_read_cifar100,
        layout="NHWC",
        full_counts={"train": 50000, "test": 10000},
    ),
    DatasetSpec(
        name="stl10",
        title="STL-10",
        num_classes=10,
        channels=3,
        files=tuple(f"stl10_binary/{f}" for f in ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin")),
        how_to_get="torchvision.datasets.STL10(ROOT, download=True) (stl10_binary.tar.gz, 2.5 GB; "
        "the labelled files suffice, unlabeled_X.bin may be deleted)",
        reader=_read_stl10,
        layout="NCHW",
        classes=STL10_CLASSES,
        full_counts={"train": 5000, "test": 8000},
    ),
):
    DATASETS.add(_spec.name, _spec)


def _to_nchw(images: Any, layout: str) -> Tensor:
    tensor = torch.as_tensor(np.asarray(images))
    if layout == "NHW":
        tensor = tensor.unsqueeze(1)
    elif layout == "NHWC":
        tensor = tensor.permute(0, 3, 1, 2)
    return tensor.to(torch.uint8).contiguous()


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Make an offline download fail within seconds instead of hanging on a dead socket."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def missing_message(spec: DatasetSpec, root: DataRoot) -> str:
    """What is missing, where it was looked for, and how to fix it."""
    missing = spec.missing_files(root.path)
    listed = "\n".join(f"  - {root.path / f}" for f in (missing or spec.files))
    also = f"Also accepted: {spec.also_accepted}.\n" if spec.also_accepted else ""
    return (
        f"{spec.title} ({spec.name}) was not found in {root.describe()}.\n"
        f"Expected files:\n{listed}\n{also}"
        f"To get them: {spec.how_to_get}, then point --data-root or ${ENV_VAR} at ROOT."
    )


def is_custom(name: str) -> bool:
    """Whether ``name`` names the user's own data (``imagefolder:PATH``, ``npz:FILE``)."""
    scheme, colon, _ = name.partition(":")
    return bool(colon) and scheme in CUSTOM_SCHEMES


def find_spec(name: str) -> DatasetSpec:
    """The spec of a registered dataset, or of the user's own data named ``SCHEME:PATH``.

    Raises:
        ConfigError: an unknown name (with "did you mean" and the accepted forms).
        DataError: the user's own data is absent or malformed (see ``cetl.data.custom``).
    """
    if is_custom(name):
        from cetl.data.custom import custom_spec  # deferred: cetl.data.custom builds on this module

        scheme, _, location = name.partition(":")
        return custom_spec(scheme, location)
    try:
        return DATASETS.get(name)
    except ConfigError as error:
        raise ConfigError(f"{error}; or your own data as imagefolder:FOLDER or npz:FILE.npz") from None


def locate_dataset(name: str, root: DataRoot) -> Located:
    """Which copy of ``name`` a run reads from ``root`` (``full`` or ``subset``) and where.

    The bundled sample counts as a subset (its training sets are the ADDA draws). Call it after
    loading when ``root`` may download: the download replaces a subset with the full release.

    Raises:
        DataError: ``root`` holds no copy (the message lists the files expected).
    """
    spec = find_spec(name)
    if spec.path is not None:
        return Located("full", spec.path)
    if root.origin == "sample":
        return Located("subset", root.path)
    found = spec.locate(root.path)
    if found is None:
        raise DataError(missing_message(spec, root))
    return found


def dataset_variant(name: str, root: DataRoot) -> str:
    """``full`` or ``subset``: which copy of ``name`` ``root`` holds, for ``summary.json``."""
    return locate_dataset(name, root).variant


def load_raw(name: str, split: str, root: DataRoot) -> RawSplit:
    """One split of dataset ``name`` as a :class:`RawSplit`.

    ``name`` is a registered dataset or the user's own data (``imagefolder:PATH``, ``npz:FILE``).
    Loading a subset of a dataset warns once per process (:class:`SubsetWarning`).

    Raises:
        DataError: the dataset is absent (and cannot be downloaded), incomplete or unreadable;
            the message lists the files expected and how to get them.
    """
    spec = find_spec(name)
    if split not in spec.splits:
        raise DataError(
            f"unknown split '{split}' for {spec.title}; expected one of {spec.splits}"
            + (f". Expected layout: {spec.how_to_get}" if spec.path is not None else "")
        )
    raw = _load_cached(spec.name, split, root)
    _warn_if_subset(spec, root)
    return raw


_WARNED_SUBSETS: set[tuple[str, Path]] = set()


def _warn_if_subset(spec: DatasetSpec, root: DataRoot) -> None:
    """Say once per process and copy that results will be on a subset, with its sizes."""
    if spec.locator is None or root.origin == "sample":
        return
    found = spec.locate(root.path)
    if found is None or found.variant != "subset" or (spec.name, found.path) in _WARNED_SUBSETS:
        return
    _WARNED_SUBSETS.add((spec.name, found.path))
    held = " / ".join(f"{len(_load_cached(spec.name, split, root))} {split}" for split in spec.splits)
    full = " / ".join(
        f"{spec.full_counts[split]} {split}" for split in spec.splits if split in spec.full_counts
    )
    warnings.warn(
        f"{spec.title} is a subset in {found.path}: {held} images (the official release has {full}); "
        f"results on it are not comparable with full-data numbers",
        SubsetWarning,
        stacklevel=3,
    )


@functools.lru_cache(maxsize=16)
def _load_cached(name: str, split: str, root: DataRoot) -> RawSplit:
    spec = find_spec(name)
    if spec.path is not None:  # the user's own data: no data root, no download
        images, labels = spec.reader(spec.path, split, False)
        return RawSplit(_to_nchw(images, spec.layout), torch.as_tensor(np.asarray(labels)).long())
    if root.origin == "sample":
        from cetl.data.sample import load_sample

        return load_sample(spec, split)
    if not root.path.is_dir() and not root.download:
        raise DataError(
            f"data root {root.describe()} does not exist. Set --data-root or ${ENV_VAR} to a "
            f"folder in torchvision's layout (run 'cetl data check --root DIR' to see what it "
            f"holds), or unset both to download into the cache."
        )
    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            images, labels = spec.reader(root.path, split, root.download)
    except ImportError as error:
        raise DataError(f"reading {spec.title} needs a package that is missing: {error}") from None
    except (RuntimeError, OSError, ValueError, EOFError, pickle.UnpicklingError) as error:
        if root.download:
            raise DataError(
                f"could not download {spec.title} into {root.describe()}: {error}\n"
                f"Without internet access, fetch the files elsewhere and set --data-root or "
                f"${ENV_VAR}.\n{missing_message(spec, root)}"
            ) from None
        if spec.locate(root.path) is None:
            raise DataError(missing_message(spec, root)) from None
        files = "\n".join(
            f"  - {root.path / f} ({(root.path / f).stat().st_size:,} bytes)"
            for f in spec.files
            if (root.path / f).is_file()
        )
        raise DataError(
            f"{spec.title} files are present in {root.describe()} but torchvision could not "
            f"read them ({split} split: {error}); one of these files may be truncated or corrupt:\n"
            f"{files}\nRe-fetch them: {spec.how_to_get}."
        ) from None
    raw = RawSplit(_to_nchw(images, spec.layout), torch.as_tensor(np.asarray(labels)).long())
    _check_labels(spec, split, raw.labels, root)
    return raw


def _check_labels(spec: DatasetSpec, split: str, labels: Tensor, root: DataRoot) -> None:
    """A label outside ``0..num_classes-1`` means a damaged file; caught here, it is named, where
    the loss would fail with an index error (on a GPU, a device-side assert) rounds later."""
    bad = torch.nonzero((labels < 0) | (labels >= spec.num_classes)).squeeze(1)
    if len(bad):
        first = int(bad[0])
        files = ", ".join(str(root.path / f) for f in spec.files)
        raise DataError(
            f"{spec.title} {split} split in {root.describe()} has {len(bad)} label(s) outside "
            f"0..{spec.num_classes - 1}, the first {int(labels[first])} at image {first}; its files "
            f"({files}) are damaged or not {spec.title}'s. Re-fetch them: {spec.how_to_get}."
        )
