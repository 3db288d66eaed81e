"""Weighted maximum mean discrepancy (WMMD) with a multi-kernel Gaussian kernel.

Yan, Ding, Li, Wang, Xu, Zuo, "Mind the Class Weight Bias: Weighted Maximum Mean Discrepancy
for Unsupervised Domain Adaptation", CVPR 2017 (the CETL paper's "WDA" [37]). Plain MMD
compares the source and target feature means in a kernel space; when the class priors differ
between domains (class weight bias), it pushes the features to match the *priors* as well.
WMMD reweights every source sample by ``α_{y}``, the ratio of the target to the source prior
of its class, so the source side of MMD describes a source domain with the target's priors:

    WMMD² = ‖ Σ_i a_i φ(x_i^s) − (1/N) Σ_j φ(x_j^t) ‖²,   a_i = α_{y_i} / Σ_k α_{y_k}.

With all α = 1 this is the (biased, all-pairs) MMD² of DAN (Long et al., ICML 2015), whose
multi-kernel Gaussian family we use: K kernels with bandwidths spread by ``kernel_mul``
around the mean pairwise squared distance of the batch, averaged with equal weights.
"""

from __future__ import annotations

import torch
from torch import Tensor


def squared_distances(x: Tensor, y: Tensor) -> Tensor:
    """``‖x_i − y_j‖²`` for every pair, ``(len(x), len(y))``.

    Expanded as ``‖x‖² + ‖y‖² − 2 x·y`` rather than ``cdist(x, y)²``: the square root inside
    ``cdist`` has an infinite derivative at distance 0, which the diagonal of ``x = y`` hits.
    """
    return (x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1) - 2 * x @ y.T).clamp_min(0.0)


def multi_gaussian_kernel(x: Tensor, y: Tensor, *, bandwidths: Tensor) -> Tensor:
    """``(1/K) Σ_k exp(−‖x_i − y_j‖² / bandwidth_k)`` for every pair: a ``(len(x), len(y))`` matrix."""
    squared = squared_distances(x, y)  # (n, m)
    return torch.exp(-squared.unsqueeze(0) / bandwidths.view(-1, 1, 1)).mean(dim=0)


def kernel_bandwidths(features: Tensor, *, kernels: int, kernel_mul: float) -> Tensor:
    """DAN's bandwidth family: the mean pairwise squared distance of ``features`` (no gradient:
    the bandwidth is a statistic of the batch, not something to optimise) times
    ``kernel_mul^(k − kernels // 2)`` for k = 0..kernels−1."""
    with torch.no_grad():
        n = features.shape[0]
        base = squared_distances(features, features).sum() / max(1, n * n - n)
        base = base.clamp_min(1e-12)
        powers = torch.arange(kernels, device=features.device, dtype=features.dtype) - kernels // 2
        return base * kernel_mul**powers


def weighted_mmd(
    source: Tensor,
    target: Tensor,
    source_weights: Tensor,
    *,
    kernels: int = 5,
    kernel_mul: float = 2.0,
    bandwidths: Tensor | None = None,
) -> Tensor:
    """WMMD² between weighted source and uniform target features (Yan et al. 2017, weighted MMD).

    Args:
        source: source features (flattened to vectors).
        target: target features.
        source_weights: ``α_{y_i}`` of each source sample (non-negative; normalised here, so
            only their ratios matter). All ones gives plain MMD².
        kernels: number of Gaussian kernels (DAN: 5).
        kernel_mul: ratio between neighbouring bandwidths (DAN: 2).
        bandwidths: explicit bandwidths ``(K,)``, replacing the batch estimate (tests).

    Returns:
        A non-negative scalar (up to rounding), computed in float32.

    Shape:
        source ``(B_s, ...)``, target ``(B_t, ...)``, source_weights ``(B_s,)``.
    """
    source = source.float().flatten(1)
    target = target.float().flatten(1)
    if bandwidths is None:
        bandwidths = kernel_bandwidths(torch.cat([source, target]), kernels=kernels, kernel_mul=kernel_mul)
    weights = source_weights.float()
    # An all-zero batch of weights (every class absent from the target estimate) leaves the
    # source side empty; the clamp keeps that a finite zero rather than NaN.
    a = weights / weights.sum().clamp_min(1e-12)  # (B_s,)
    b = torch.full((target.shape[0],), 1.0 / target.shape[0], device=target.device)  # (B_t,)
    k_ss = multi_gaussian_kernel(source, source, bandwidths=bandwidths)
    k_st = multi_gaussian_kernel(source, target, bandwidths=bandwidths)
    k_tt = multi_gaussian_kernel(target, target, bandwidths=bandwidths)
    return a @ k_ss @ a - 2 * (a @ k_st @ b) + b @ k_tt @ b
