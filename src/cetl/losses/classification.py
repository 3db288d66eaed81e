"""Classification losses (CETL paper, Eqs. 1 and 4).

Chen, Zhang, Dong, "Coupled End-to-End Transfer Learning with Generalized Fisher
Information", CVPR 2018. The paper's Eqs. 1 and 4 drop the minus sign; both are
the usual cross-entropy (negative log-likelihood), as METHOD.md §2 records.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def classification_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy ``L_c`` of logits against integer labels (Eq. 1 for S, Eq. 4 for T2).

    Args:
        logits: unnormalised class scores.
        labels: class indices.

    Returns:
        A scalar: the mean negative log-likelihood over the batch.

    Shape:
        logits ``(B, K)``, labels ``(B,)``.
    """
    return F.cross_entropy(logits.float(), labels)
