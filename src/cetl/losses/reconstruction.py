"""Reconstruction losses of the coupled objective (CETL paper, Eqs. 2 and 5).

Chen, Zhang, Dong, "Coupled End-to-End Transfer Learning with Generalized Fisher
Information", CVPR 2018. Both are the paper's ‖·‖²: by default the squared error summed
over each sample's elements and averaged over the batch (METHOD.md D2, ``reduction="sum"``).
The per-element mean (``reduction="mean"``) stays an option; it divides the gradient by the
number of pixels, which made the reconstruction terms ~1000× weaker than cross-entropy in the
joint variants and so switched the coupling off (METHOD.md §10).
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

from cetl.errors import ConfigError

ReconReduction = Literal["sum", "mean"]


def squared_error(output: Tensor, target: Tensor, reduction: ReconReduction = "sum") -> Tensor:
    """‖output − target‖² per sample, averaged over the batch (``sum``), or the per-element mean.

    Shape:
        both ``(B, ...)`` → a scalar (float32 at least).
    """
    if reduction == "mean":
        return F.mse_loss(output.float(), target.float())
    if reduction == "sum":
        return F.mse_loss(output.float(), target.float(), reduction="sum") / max(1, output.shape[0])
    raise ConfigError(f"recon_reduction must be 'sum' or 'mean'; got {reduction!r}")


def source_reconstruction_loss(recons1: Tensor, x_tgt: Tensor, reduction: ReconReduction = "sum") -> Tensor:
    """``L_r^s = ‖T1(S(x)) − x‖²`` (Eq. 2): how well T1 decodes S's tap back to the image.

    Args:
        recons1: ``T1(S(x))``, the decoder's output from the source path.
        x_tgt: the target images that went into S (the reconstruction target).
        reduction: D2's ``sum`` (per sample, then the batch mean) or ``mean`` (per element).

    Shape:
        both ``(B, C, H, W)``.
    """
    return squared_error(recons1, x_tgt, reduction)


def target_reconstruction_loss(recons2: Tensor, recons1: Tensor, reduction: ReconReduction = "sum") -> Tensor:
    """``L_r^t = ‖T1(T2(x)) − T1′(S(x))‖²`` (Eq. 5): the coupling of T2 to S through T1.

    The target ``recons1`` is treated as a constant (it is detached here): by D3 it comes
    from T1′, a frozen copy of T1 taken at the end of stage 1, and no gradient may flow into
    the source path.

    Args:
        recons2: ``T1(T2(x))``, the decoder's output from the target path.
        recons1: ``T1′(S(x))``, the reconstruction target.
        reduction: as :func:`source_reconstruction_loss`.

    Shape:
        both ``(B, C, H, W)``.
    """
    return squared_error(recons2, recons1.detach(), reduction)
