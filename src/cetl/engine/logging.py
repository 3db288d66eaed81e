"""Run records: ``metrics.jsonl``, TensorBoard events and progress bars.

``metrics.jsonl`` is the source of truth (one JSON object a line, ``kind`` =
``train`` or ``eval``); TensorBoard mirrors it for people who like curves. On
resume the log is cut back to the last checkpointed round so that a resumed run
ends with exactly the records an uninterrupted one would have.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from cetl.engine.checkpoint import atomic_write_text

T = TypeVar("T")


class MetricsLog:
    """Append-only JSONL log with an optional TensorBoard mirror.

    Args:
        path: the ``metrics.jsonl`` file.
        tensorboard_dir: where event files go, or ``None`` to skip TensorBoard.
        resume_after_round: when resuming, drop records of rounds after this one (they belong
            to the interrupted round and will be written again).
    """

    def __init__(self, path: Path, *, tensorboard_dir: Path | None, resume_after_round: int | None) -> None:
        self.path = path
        if resume_after_round is not None and path.exists():
            kept = [
                line
                for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
                if _round_of(line) <= resume_after_round
            ]
            atomic_write_text(path, "".join(line + "\n" for line in kept))
        elif resume_after_round is None:
            atomic_write_text(path, "")
        self._file = path.open("a", encoding="utf-8")
        self._writer = None
        if tensorboard_dir is not None:
            self._writer = _tensorboard_writer(tensorboard_dir)

    def write(self, record: dict[str, Any], *, step: int) -> None:
        """Append ``record`` (plain numbers and strings) and mirror its numbers to TensorBoard."""
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._writer is not None:
            prefix = record.get("kind", "")
            stage = record.get("stage")
            for key, value in record.items():
                if isinstance(value, float):
                    tag = "/".join(p for p in (prefix, stage, key) if p)
                    self._writer.add_scalar(tag, value, global_step=step)

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()


class NullLog:
    """The log of ranks other than 0 in a multi-process run: rank 0 writes the one record."""

    def write(self, record: dict[str, Any], *, step: int) -> None:
        """Discard ``record`` (every rank holds the same values; rank 0 logs them)."""

    def close(self) -> None:
        """Nothing to close."""


def _round_of(line: str) -> float:
    """The round of a record line; a line torn by a killed process (or blank) is dropped (inf)."""
    try:
        record = json.loads(line)
    except ValueError:
        return math.inf
    return record.get("round", -1) if isinstance(record, dict) else math.inf


def _tensorboard_writer(directory: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is a dependency, but a minimal install may lack it
        print("cetl: tensorboard is not installed; writing metrics.jsonl only", file=sys.stderr)
        return None
    return SummaryWriter(log_dir=str(directory))


def progress(iterable: Iterable[T], *, total: int, description: str, enabled: bool) -> Iterator[T]:
    """A tqdm bar on a terminal; a plain iterator otherwise (logs stay clean in CI)."""
    if not enabled or not sys.stderr.isatty():
        return iter(iterable)
    from tqdm.auto import tqdm

    return iter(tqdm(iterable, total=total, desc=description, leave=False, dynamic_ncols=True))
