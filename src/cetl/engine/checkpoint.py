"""Atomic writes and safe checkpoint loading.

Every file a run writes goes through :func:`atomic_write_bytes`: write to a
temporary file in the same folder, fsync, then ``os.replace``. A crash or
Ctrl-C mid-write leaves the previous file intact, never a truncated one, which
is what makes ``--resume`` trustworthy. Checkpoints hold only tensors and plain
data and are read with ``torch.load(weights_only=True)``, so a checkpoint from
an untrusted source cannot execute code.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from cetl.errors import RunError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()
"""What ``open(path, "w")`` would give; ``mkstemp`` makes owner-only files (0600)."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.chmod(temporary, FILE_MODE)
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


@contextlib.contextmanager
def atomic_output(path: Path, *, suffix: str = "") -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer that wants a file name (an exporter); on
    success it replaces ``path`` with the usual file mode, on any error it is removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make the rename itself durable: after a power cut the folder names the new file."""
    if not hasattr(os, "O_DIRECTORY"):  # Windows: folders cannot be opened or synced
        return
    with contextlib.suppress(OSError):  # some filesystems refuse; the file itself is synced
        handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Save tensors and plain data atomically (loadable with ``weights_only=True``)."""
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: Path, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint without executing code from it.

    Raises:
        RunError: the file is missing, truncated, or holds objects other than tensors and
            plain data (which ``weights_only=True`` refuses to unpickle).
    """
    if not path.is_file():
        raise RunError(f"checkpoint '{path}' does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or unsafe files
        if "Weights only load failed" in str(error):
            # torch's own text goes on to suggest weights_only=False: advice that would run the
            # code in a hostile file, so it is not passed on.
            raise RunError(
                f"checkpoint '{path}' could not be read safely: it holds Python objects other than "
                f"tensors and plain data, which could run code when loaded, so cetl refuses it. "
                f"Use a checkpoint written by cetl; do not load this file from an untrusted source."
            ) from None
        raise RunError(
            f"checkpoint '{path}' could not be read safely ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}). It may be truncated, from "
            f"another program, or contain code objects; cetl only loads tensors and plain data."
        ) from None
    if not isinstance(payload, dict):
        raise RunError(f"checkpoint '{path}' does not hold a cetl checkpoint (a dict)")
    return payload
