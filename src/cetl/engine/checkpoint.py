"""Atomic writes and safe checkpoint loading.

Every file a run writes goes through :func:`atomic_write_bytes`: write to a
temporary file in the same folder, fsync, then ``os.replace``. A crash or
Ctrl-C mid-write leaves the previous file intact, never a truncated one, which
is what makes ``--resume`` trustworthy. Checkpoints hold only tensors and plain
data and are read with ``torch.load(weights_only=True)``, so a checkpoint from
an untrusted source cannot execute code.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from cetl.errors import RunError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


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
        raise RunError(
            f"checkpoint '{path}' could not be read safely ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}). It may be truncated, from "
            f"another program, or contain code objects; cetl only loads tensors and plain data."
        ) from None
    if not isinstance(payload, dict):
        raise RunError(f"checkpoint '{path}' does not hold a cetl checkpoint (a dict)")
    return payload
