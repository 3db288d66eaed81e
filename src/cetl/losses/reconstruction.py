"""Reconstruction losses of the coupled objective (CETL paper, Eqs. 2 and 5).

Chen, Zhang, Dong, "Coupled End-to-End Transfer Learning with Generalized Fisher
Information", CVPR 2018. Both are mean squared errors over pixels and batch
(METHOD.md D2: the mean, so the λs do not depend on image size).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def source_reconstruction_loss(recons1: Tensor, x_tgt: Tensor) -> Tensor:
    """``L_r^s = ‖T1(S(x)) − x‖²`` (Eq. 2): how well T1 decodes S's tap back to the image.

    Args:
        recons1: ``T1(S(x))``, the decoder's output from the source path.
        x_tgt: the target images that went into S (the reconstruction target).

    Returns:
        The mean squared error (D2).

    Shape:
        both ``(B, C, H, W)``.
    """
    return F.mse_loss(recons1.float(), x_tgt.float())


def target_reconstruction_loss(recons2: Tensor, recons1: Tensor) -> Tensor:
    """``L_r^t = ‖T1(T2(x)) − T1′(S(x))‖²`` (Eq. 5): the coupling of T2 to S through T1.

    The target ``recons1`` is treated as a constant (it is detached here): by D3 it comes
    from T1′, a frozen copy of T1 taken at the end of stage 1, and no gradient may flow into
    the source path.

    Args:
        recons2: ``T1(T2(x))``, the decoder's output from the target path.
        recons1: ``T1′(S(x))``, the reconstruction target.

    Returns:
        The mean squared error (D2).

    Shape:
        both ``(B, C, H, W)``.
    """
    return F.mse_loss(recons2.float(), recons1.detach().float())
