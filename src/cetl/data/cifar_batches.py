"""CIFAR's python batch files read without letting them run code (issue 37, item 1).

The batches are pickles. torchvision unpickles them with :func:`pickle.load` after checking
each file's MD5 against the official release, so an official folder is safe; a subset's files
(the CIFAR-10 subset in the data root) have no official checksums, and an unchecked pickle can
call anything (``__reduce__`` → ``os.system``). Here they go through an unpickler that admits
only what a batch holds — dicts, lists, strings, numbers and one numpy ``uint8`` array — and
the result is checked for that shape, so a planted file is a clear error naming it.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from cetl.errors import DataError

_ALLOWED = {
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 2 pickles write bytes
}
"""The only callables a CIFAR batch pickle names (numpy's array reconstruction)."""


class _BatchUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, path: Path) -> None:
        super().__init__(io.BytesIO(data), encoding="latin1")
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise DataError(
                f"{self.path} is not a CIFAR batch file: its pickle asks for {module}.{name}, which a "
                f"batch never holds (a planted or foreign file; nothing of it was run). Re-fetch the "
                f"dataset's files"
            )
        return super().find_class(module, name)


def read_batch(path: Path) -> dict[str, Any]:
    """One batch file as a dict (``data``, ``labels`` or ``fine_labels``, ...), safely.

    Raises:
        DataError: the file asks for anything but numpy arrays, or is not a dict.
        OSError, pickle.UnpicklingError, EOFError: unreadable or truncated (the caller names the file).
    """
    loaded = _BatchUnpickler(path.read_bytes(), path).load()
    if not isinstance(loaded, dict):
        raise DataError(f"{path} is not a CIFAR batch file: it holds a {type(loaded).__name__}, not a dict")
    return loaded


def read_batches(folder: Path, names: list[str]) -> tuple[np.ndarray, list[int]]:
    """Images ``(N, 32, 32, 3)`` uint8 (torchvision's CIFAR layout) and labels of ``names``."""
    images, labels = [], []
    for name in names:
        path = folder / name
        batch = read_batch(path)
        data, batch_labels = batch.get("data"), batch.get("labels", batch.get("fine_labels"))
        if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2):
            raise DataError(f"{path} is not a CIFAR batch file: 'data' is not a uint8 image matrix")
        if (
            data.shape[1] != 3 * 32 * 32
            or not isinstance(batch_labels, list)
            or len(batch_labels) != len(data)
        ):
            raise DataError(f"{path} is not a CIFAR batch file: {data.shape} images for its labels")
        if not all(isinstance(label, int) for label in batch_labels):
            raise DataError(f"{path} is not a CIFAR batch file: its labels are not integers")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels += batch_labels
    return np.concatenate(images), labels
