"""Safe checkpoint saving and loading.

Checkpoints are written atomically (:mod:`cetl.files`), hold only tensors and plain data and
are read with ``torch.load(weights_only=True)``, so a checkpoint from an untrusted source cannot
execute code.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from cetl.errors import RunError
from cetl.files import atomic_write_bytes


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
