"""Finding the first non-finite loss without slowing the GPU down.

A NaN or infinite loss poisons every weight it touches, so the engine stops at the first one
(``engine.on_nan=stop``) and names where it happened: round, stage, update, step and the terms
that were not finite. Reading a CUDA tensor on the host waits for the GPU, so on CUDA the first
offending step and its values are recorded *on the device* each step and read only when the
loop checks (logging steps and epoch ends); on the CPU, where reading costs nothing, every
update is checked as it finishes. Either way the error is raised before the round's checkpoint
is written, so ``last.pt`` keeps the last good round.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from cetl.errors import RunError


@dataclass
class _Record:
    """The first non-finite step of one update, on the device (step −1: none yet)."""

    names: tuple[str, ...]
    step: Tensor  # () int64
    values: Tensor  # (T,) float32


class NonFiniteWatch:
    """Raise a :class:`RunError` at the first non-finite loss term.

    Args:
        device: where the loss terms live; CUDA defers reading them to :meth:`check`.
        advice: what to say after the location (which checkpoint is kept, how to go on);
            called when the error is raised, so it can describe the run's current state.
    """

    def __init__(self, device: torch.device, advice: Callable[[], str]) -> None:
        self._eager = device.type != "cuda"
        self._advice = advice
        self._records: dict[tuple[str, str, tuple[str, ...]], _Record] = {}

    def observe(
        self, terms: dict[str, Tensor], *, round_index: int, stage: str, update: str, step: int
    ) -> None:
        """Note the terms of one update at (1-based, global) ``step``."""
        names = tuple(terms)
        values = torch.stack([terms[name].detach().float().reshape(()) for name in names])  # (T,)
        if self._eager:
            if not bool(torch.isfinite(values).all()):
                self._fail(round_index, stage, update, step, names, values.tolist())
            return
        key = (stage, update, names)
        if key not in self._records:
            self._records[key] = _Record(
                names, torch.full((), -1, dtype=torch.long, device=values.device), torch.zeros_like(values)
            )
        record = self._records[key]
        first = (record.step < 0) & ~torch.isfinite(values).all()  # () bool, stays on the device
        record.step.masked_fill_(first, step)
        record.values.copy_(torch.where(first, values, record.values))

    def check(self, *, round_index: int) -> None:
        """Raise if any observed step was non-finite (reads the device-side records: a sync)."""
        for (stage, update, names), record in self._records.items():
            step = int(record.step)
            if step >= 0:
                self._fail(round_index, stage, update, step, names, record.values.tolist())

    def _fail(
        self,
        round_index: int,
        stage: str,
        update: str,
        step: int,
        names: tuple[str, ...],
        values: list[float],
    ) -> None:
        bad = ", ".join(f"{n}={v}" for n, v in zip(names, values, strict=True) if not math.isfinite(v))
        raise RunError(
            f"non-finite loss in round {round_index + 1}, stage '{stage}', update '{update}', "
            f"step {step}: {bad}. {self._advice()}"
        )
