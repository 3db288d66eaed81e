"""The one in-memory form of a labelled image set every loader, method and evaluator shares."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class LabelledSet:
    """Float images ``(N, C, H, W)`` in [0,1] and their int64 labels ``(N,)``."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device) -> LabelledSet:
        return LabelledSet(self.x.to(device), self.y.to(device))
