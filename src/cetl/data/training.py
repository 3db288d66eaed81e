"""The tensors one run trains and evaluates on, as the engine receives them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from cetl.data.labelled import LabelledSet


@dataclass(frozen=True)
class TrainingData:
    """Device-resident tensors a run reads.

    Attributes:
        labelled: labelled training images (source images in domain adaptation).
        labelled_val: held-out part of the labelled data, used for model selection.
        target: unlabelled target training images ``(N, C, H, W)``.
        target_test: labelled target test data; read only to *report* accuracy.
    """

    labelled: LabelledSet
    labelled_val: LabelledSet
    target: Tensor
    target_test: LabelledSet

    def to(self, device: torch.device) -> TrainingData:
        return TrainingData(
            self.labelled.to(device),
            self.labelled_val.to(device),
            self.target.to(device),
            self.target_test.to(device),
        )
