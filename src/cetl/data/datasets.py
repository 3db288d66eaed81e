"""Raw datasets through torchvision's own classes, with actionable errors.

Each registered :class:`DatasetSpec` knows the torchvision class that reads it,
the files torchvision expects under the data root, and how a user gets them.
Loading returns a :class:`RawSplit` of uint8 images ``(N, C, H, W)`` and int64
labels, memoised per process: protocols (``cetl.data.digits``) resize and
normalise from there, so every protocol reads the same bytes.
"""

from __future__ import annotations

import contextlib
import functools
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cetl.data.root import ENV_VAR, DataRoot
from cetl.errors import DataError
from cetl.registry import Registry

SPLITS = ("train", "test")
DOWNLOAD_TIMEOUT_S = 20.0


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

    def missing_files(self, root: Path) -> list[str]:
        """Expected files that are not under ``root``."""
        return [f for f in self.files if not (root / f).exists()]


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


def _read_cifar10(root: Path, split: str, download: bool) -> tuple[Any, Any]:
    ds = _tv().CIFAR10(str(root), train=split == "train", download=download)
    return ds.data, ds.targets


def _read_cifar100(root: Path, split: str, download: bool) -> tuple[Any, Any]:
    ds = _tv().CIFAR100(str(root), train=split == "train", download=download)
    return ds.data, ds.targets


def _read_stl10(root: Path, split: str, download: bool) -> tuple[Any, Any]:
    ds = _tv().STL10(str(root), split=split, download=download)
    return ds.data, ds.labels


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
    ),
    DatasetSpec(
        name="stl10",
        title="STL-10",
        num_classes=10,
        channels=3,
        files=tuple(
            f"stl10_binary/{f}"
            for f in ("train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "unlabeled_X.bin")
        ),
        how_to_get="torchvision.datasets.STL10(ROOT, download=True) (stl10_binary.tar.gz, 2.5 GB; "
        "torchvision's check also needs unlabeled_X.bin)",
        reader=_read_stl10,
        layout="NCHW",
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
    return (
        f"{spec.title} ({spec.name}) was not found in {root.describe()}.\n"
        f"Expected files:\n{listed}\n"
        f"To get them: {spec.how_to_get}, then point --data-root or ${ENV_VAR} at ROOT."
    )


def load_raw(name: str, split: str, root: DataRoot) -> RawSplit:
    """One split of dataset ``name`` as a :class:`RawSplit`.

    Raises:
        DataError: the dataset is absent (and cannot be downloaded), incomplete or unreadable;
            the message lists the files expected and how to get them.
    """
    spec = DATASETS.get(name)
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}' for {spec.title}; expected one of {SPLITS}")
    return _load_cached(spec.name, split, root)


@functools.lru_cache(maxsize=16)
def _load_cached(name: str, split: str, root: DataRoot) -> RawSplit:
    spec = DATASETS.get(name)
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
    except (RuntimeError, OSError, ValueError) as error:
        if root.download:
            raise DataError(
                f"could not download {spec.title} into {root.describe()}: {error}\n"
                f"Without internet access, fetch the files elsewhere and set --data-root or "
                f"${ENV_VAR}.\n{missing_message(spec, root)}"
            ) from None
        if spec.missing_files(root.path):
            raise DataError(missing_message(spec, root)) from None
        raise DataError(
            f"{spec.title} files are present in {root.describe()} but torchvision could not "
            f"read them ({error}); they may be truncated or corrupt. Re-fetch them: "
            f"{spec.how_to_get}."
        ) from None
    return RawSplit(_to_nchw(images, spec.layout), torch.as_tensor(np.asarray(labels)).long())
