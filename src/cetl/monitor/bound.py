"""The error-bound monitor (CETL paper Section 3.3, Eq. 14, Fig. 2; METHOD.md §6).

Eq. 14 bounds T2's target error by terms a user can watch during training:

    LHS = ε_T(T2)  ≤  RHS = ε_S(S) + 2·d(S, T2) + 3·M1 + 2·M2,

with ``ε_S(S)`` S's error on labelled evaluation data, ``d`` the rate at which S's and T2's
argmax disagree on target images, and the two ``sup_f`` terms estimated by Gaussian-kernel MMDs
between reconstructions and images: ``M1 = MMD(T1(S(x)), x)``, ``M2 = MMD(T1(T2(x)), x)``.
The bound only makes sense where S and T2 share a label space (domain adaptation,
distillation). LHS reads target labels, so it is logged for the record and never selects a
model (the engine's selection does not look at these keys).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from cetl.data.labelled import LabelledSet
from cetl.losses.mmd import squared_distances, weighted_mmd

BOUND_KEYS = ("bound_lhs", "bound_rhs", "bound_e_s", "bound_d", "bound_m1", "bound_m2")
EVAL_BATCH = 1024
MONITOR_IMAGES = 512
"""Target images the d, M1 and M2 estimates use: MMD costs O(n²) memory and time."""

Predict = Callable[[Tensor], Tensor]


def gaussian_mmd(x: Tensor, y: Tensor) -> Tensor:
    """MMD (not squared) between samples ``x`` and ``y`` with one Gaussian kernel whose bandwidth
    is the median pairwise squared distance of the pooled samples (the median heuristic)."""
    x, y = x.float().flatten(1), y.float().flatten(1)
    pooled = torch.cat([x, y])
    distances = squared_distances(pooled, pooled)
    off_diagonal = distances[~torch.eye(len(pooled), dtype=torch.bool, device=pooled.device)]
    bandwidth = off_diagonal.median().clamp_min(1e-12).view(1)
    ones = torch.ones(len(x), device=x.device)
    return weighted_mmd(x, y, ones, bandwidths=bandwidth).clamp_min(0.0).sqrt()


def _error(model: nn.Module, data: LabelledSet) -> float:
    """Top-1 error of ``model.predict`` on ``data``, in batches (callers run in eval mode)."""
    wrong = sum(
        int((model.predict(data.x[i : i + EVAL_BATCH]).argmax(1) != data.y[i : i + EVAL_BATCH]).sum())
        for i in range(0, len(data), EVAL_BATCH)
    )
    return wrong / max(1, len(data))


@torch.inference_mode()
def bound_terms(
    *,
    source: nn.Module,
    target: nn.Module,
    source_reconstruct: Predict,
    target_reconstruct: Predict,
    labelled_val: LabelledSet,
    target_images: Tensor,
    target_test: LabelledSet,
) -> dict[str, float]:
    """Every term of Eq. 14 as floats keyed by :data:`BOUND_KEYS`.

    Args:
        source, target: S and the method being trained; their ``predict`` gives logits.
        source_reconstruct, target_reconstruct: ``x ↦ T1(S(x))`` and ``x ↦ T1(T2(x))``.
        labelled_val: labelled evaluation data S is scored on (ε_S).
        target_images: unlabelled target images; the first :data:`MONITOR_IMAGES` are used.
        target_test: labelled target test data (LHS only).
    """
    x = target_images[:MONITOR_IMAGES]  # (n, C, H, W)
    disagreement = (source.predict(x).argmax(1) != target.predict(x).argmax(1)).float().mean().item()
    e_s = _error(source, labelled_val)
    m1 = gaussian_mmd(source_reconstruct(x), x).item()
    m2 = gaussian_mmd(target_reconstruct(x), x).item()
    return {
        "bound_lhs": _error(target, target_test),
        "bound_rhs": e_s + 2 * disagreement + 3 * m1 + 2 * m2,
        "bound_e_s": e_s,
        "bound_d": disagreement,
        "bound_m1": m1,
        "bound_m2": m2,
    }
