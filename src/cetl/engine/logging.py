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
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from cetl.files import atomic_write_text

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


def format_duration(seconds: float) -> str:
    """``11520`` → ``3h12m``, ``95`` → ``1m35s`` (whole seconds, rounded down)."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def format_eta(seconds: float) -> str:
    """``3725`` → ``1h02m``, ``75`` → ``1m15s``; ``?`` while nothing has been timed."""
    return format_duration(seconds) if math.isfinite(seconds) else "?"


class RunClock:
    """The whole run's ETA from the fraction done, at this process's own pace (a resumed run
    counts only what it trained itself)."""

    def __init__(self, start_fraction: float) -> None:
        self.started = time.perf_counter()
        self.start_fraction = start_fraction

    def eta(self, fraction: float) -> float:
        done = fraction - self.start_fraction
        if done <= 0:
            return math.nan
        return (time.perf_counter() - self.started) * (1 - fraction) / done


PLAIN_EVERY = 60.0
"""Seconds between plain progress lines when stderr is not a terminal (CI, nohup, a pipe)."""


def progress(
    iterable: Iterable[T],
    *,
    total: int,
    description: str,
    enabled: bool,
    run_fraction: Callable[[int], float] | None = None,
    clock: RunClock | None = None,
    every: float | None = None,
) -> Iterator[T]:
    """Steps of one stage epoch, with progress: a tqdm bar on a terminal (the whole run's ETA
    beside it), else a plain line on stderr every ``every`` seconds (default
    :data:`PLAIN_EVERY`), so a long run without a terminal is never silent for minutes.
    ``run_fraction(step)`` is the run's fraction done after ``step`` steps of this epoch; with
    ``clock`` it gives the run's ETA."""
    if not enabled:
        return iter(iterable)
    interval = PLAIN_EVERY if every is None else every

    def run_eta(step: int) -> str:
        if run_fraction is None or clock is None:
            return ""
        fraction = run_fraction(step)
        return f"run {100 * fraction:.0f}% done, ETA {format_eta(clock.eta(fraction))}"

    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        def bar() -> Iterator[T]:
            with tqdm(iterable, total=total, desc=description, leave=False, dynamic_ncols=True) as steps:
                for step, item in enumerate(steps):
                    if step % 20 == 0 and clock is not None:
                        steps.set_postfix_str(run_eta(step), refresh=False)
                    yield item

        return bar()

    def plain() -> Iterator[T]:
        last = time.perf_counter()
        for step, item in enumerate(iterable):
            yield item
            now = time.perf_counter()
            if now - last >= interval:
                where = run_eta(step + 1)
                print(
                    f"cetl: {description}: step {step + 1}/{total}" + (f"; {where}" if where else ""),
                    file=sys.stderr,
                    flush=True,
                )
                last = now

    return plain()
