"""Information maximisation (Liang et al. 2020, Eq. 2): confident and diverse predictions.

``L_ent = E_x[-Σ_k δ_k log δ_k]`` (each prediction confident) and ``L_div = Σ_k p̂_k log p̂_k``
with ``p̂ = E_x[δ(x)]`` (predictions spread over the classes), δ = softmax(logits). SHOT
minimises both; the ``unsupervised:im`` selection rule scores a model by their sum.
"""

from __future__ import annotations

import torch
from torch import Tensor

DIVERSITY_EPS = 1e-5
"""Inside ``log`` of the mean prediction, as SHOT's code: a class no image predicts stays finite."""


def information_maximisation(logits: Tensor) -> tuple[Tensor, Tensor]:
    """``(L_ent, L_div)`` for a batch of logits ``(B, K)``; lower is better for both."""
    log_p = torch.log_softmax(logits.float(), dim=1)
    p = log_p.exp()
    entropy = -(p * log_p).sum(dim=1).mean()
    mean = p.mean(dim=0)
    diversity = (mean * torch.log(mean + DIVERSITY_EPS)).sum()  # = -H(p̂)
    return entropy, diversity
