"""Relative Fisher information (CETL paper Eq. 9; METHOD.md D5).

Chen, Zhang, Dong, "Coupled End-to-End Transfer Learning with Generalized Fisher
Information", CVPR 2018. ``RF_i = I(F_{1,i}, F_{2,i})``: the mutual information, normalised to
[0, 1], between two tasks' Fisher samples for the same parameter θ_i, paired by micro-batch.
A high RF says the two tasks lean on θ_i together, so GFI (Eq. 10) shares it.

Both estimators report Linfoot's informational coefficient ``sqrt(1 − exp(−2I))`` so that the
threshold u of Eq. 10 means the same for each (D5):

* ``gaussian`` (default): I = −½·log(1 − ρ²), ρ the Pearson correlation over k of
  ``log(f1 + ε1)`` and ``log(f2 + ε2)``; the coefficient is then exactly |ρ|. It needs only the
  streaming sums of :func:`cetl.fisher.estimate.estimate_fisher` (O(#params)). With K = 32 the
  estimate for independent samples averages ≈ 0.14 (E|ρ̂| ≈ sqrt(2/(π(K−1)))): log
  :func:`rf_quantiles`.
* ``binned``: equal-frequency bins (B ≈ K^(1/3)), plug-in I with the Miller–Madow bias
  correction, from kept samples (``keep_samples=True``, O(K·#params)); for validation and small
  nets. Its ceiling is below 1: identical samples give I ≈ log B, i.e. sqrt(1 − 1/B²) (≈ 0.95 at
  K = 32, B = 3).

Where either loss's samples have zero variance (a parameter one loss never touches) RF = 0,
never NaN.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from cetl.errors import ConfigError
from cetl.fisher.estimate import FisherEstimate
from cetl.registry import Registry

RelativeFisherFn = Callable[[FisherEstimate, str, str], dict[str, Tensor]]

RF_ESTIMATORS: Registry[RelativeFisherFn] = Registry(
    "relative Fisher estimator", contract="fn(estimate, first, second) -> {parameter name: RF in [0, 1]}"
)

ZERO_VARIANCE = 1e-9
"""Variances below this fraction of the second moment are round-off of a constant sample."""


def relative_fisher(
    estimate: FisherEstimate, first: str, second: str, *, estimator: str = "gaussian"
) -> dict[str, Tensor]:
    """``RF_i = I(F_{1,i}, F_{2,i})`` on Linfoot's [0, 1] scale (Eq. 9, D5), per parameter name.

    Args:
        estimate: from :func:`cetl.fisher.estimate.estimate_fisher`, with ``(first, second)`` (in
            either order) among its ``pairs`` for ``gaussian``, or ``keep_samples=True`` for
            ``binned``.
        first, second: the two losses' names.
        estimator: a name in :data:`RF_ESTIMATORS` (``gaussian`` or ``binned``).

    Returns:
        RF per parameter name, float32, shaped and placed like the parameter.
    """
    return RF_ESTIMATORS.get(estimator)(estimate, first, second)


@RF_ESTIMATORS.register("gaussian")
def gaussian_relative_fisher(estimate: FisherEstimate, first: str, second: str) -> dict[str, Tensor]:
    """|ρ| of the log Fisher samples: Linfoot's coefficient of the Gaussian I = −½·log(1 − ρ²).

    ρ comes from the raw moments accumulated in float64 by the estimator; a variance under
    :data:`ZERO_VARIANCE` of the second moment is treated as exactly zero (RF = 0).
    """
    a, b = estimate.stats(first), estimate.stats(second)
    cross = estimate.log_cross_mean.get((first, second), estimate.log_cross_mean.get((second, first)))
    if a.log_mean is None or b.log_mean is None or cross is None:
        raise ConfigError(
            f"the gaussian Relative Fisher of '{first}' and '{second}' needs them as a pair: "
            f"pass pairs=[('{first}', '{second}')] to estimate_fisher"
        )
    assert a.log_sq_mean is not None and b.log_sq_mean is not None
    rf = {}
    for name in a.mean:
        mean_a, mean_b = a.log_mean[name], b.log_mean[name]
        var_a = a.log_sq_mean[name] - mean_a.square()
        var_b = b.log_sq_mean[name] - mean_b.square()
        covariance = cross[name] - mean_a * mean_b
        varies = (var_a > ZERO_VARIANCE * a.log_sq_mean[name]) & (var_b > ZERO_VARIANCE * b.log_sq_mean[name])
        # Clamp before sqrt: where ``varies`` is False the quotient is discarded, but must not be NaN.
        rho = covariance / torch.sqrt(var_a.clamp_min(0) * var_b.clamp_min(0)).clamp_min(1e-300)
        rf[name] = torch.where(varies, rho.abs().clamp(max=1.0), 0.0).to(torch.float32)
    return rf


@RF_ESTIMATORS.register("binned")
def binned_relative_fisher(estimate: FisherEstimate, first: str, second: str) -> dict[str, Tensor]:
    """Linfoot's coefficient of the Miller–Madow-corrected plug-in I over equal-frequency bins.

    Binning uses ranks, which ``log(f + ε)`` does not change, so the raw samples are binned.
    """
    a, b = estimate.stats(first), estimate.stats(second)
    if a.samples is None or b.samples is None:
        raise ConfigError(
            "the binned Relative Fisher needs the samples: pass keep_samples=True to estimate_fisher"
        )
    rf = {}
    for name, x in a.samples.items():
        y = b.samples[name]
        mi = binned_mutual_information(x.reshape(len(x), -1), y.reshape(len(y), -1))  # (N,)
        rf[name] = linfoot(mi).reshape(x.shape[1:]).to(torch.float32)
    return rf


def binned_mutual_information(x: Tensor, y: Tensor, bins: int | None = None) -> Tensor:
    """Plug-in mutual information (nats) with the Miller–Madow correction, column by column.

    Each column of ``x`` and ``y`` is cut into ``bins`` equal-frequency bins (default
    ``max(2, round(K^(1/3)))``); tied values share a bin, so a constant column has entropy 0.
    Miller–Madow adds ``(m − 1)/(2K)`` to each plug-in entropy (m = occupied bins), which removes
    most of the plug-in estimator's upward bias for independent samples. A column where ``x``
    or ``y`` is constant has I = 0 exactly; the result is clamped at 0.

    Args:
        x, y: paired samples, one column per variable.
        bins: the number of bins per variable.

    Returns:
        I per column.

    Shape:
        x, y ``(K, N)`` → ``(N,)``.
    """
    k = len(x)
    bins = bins or max(2, round(k ** (1 / 3)))
    bx, by = _equal_frequency_bins(x, bins), _equal_frequency_bins(y, bins)  # (N, K) each
    joint = torch.zeros(bx.shape[0], bins * bins, dtype=torch.float64, device=x.device)  # (N, B²)
    joint.scatter_add_(1, bx * bins + by, torch.ones_like(bx, dtype=torch.float64))
    joint = joint / k
    px = joint.view(-1, bins, bins).sum(dim=2)  # (N, B)
    py = joint.view(-1, bins, bins).sum(dim=1)  # (N, B)

    def entropy(p: Tensor) -> Tensor:  # Miller–Madow-corrected, (N,)
        return -torch.xlogy(p, p).sum(dim=1) + ((p > 0).sum(dim=1) - 1) / (2 * k)

    mi = entropy(px) + entropy(py) - entropy(joint)
    constant = (x.amin(dim=0) == x.amax(dim=0)) | (y.amin(dim=0) == y.amax(dim=0))
    return torch.where(constant, 0.0, mi.clamp_min(0.0))


def linfoot(mutual_information: Tensor) -> Tensor:
    """Linfoot's informational coefficient ``sqrt(1 − exp(−2I))`` ∈ [0, 1] (|ρ| for Gaussians)."""
    return torch.sqrt(-torch.expm1(-2 * mutual_information.clamp_min(0.0)))


def rf_quantiles(
    rf: Mapping[str, Tensor], qs: Sequence[float] = (0.1, 0.5, 0.9)
) -> dict[str, dict[str, float]]:
    """Per-layer summary of an RF map for logs: ``{name: {"q10": …, "q50": …, "q90": …, "mean": …}}``.

    Quantiles interpolate linearly (numpy's default); they are computed by sorting, which,
    unlike ``torch.quantile``, has no size limit for large fully connected layers.
    """
    if any(not 0.0 <= q <= 1.0 for q in qs):
        raise ConfigError(f"RF quantiles must lie in [0, 1]; got {list(qs)}")
    summary = {}
    for name, values in rf.items():
        flat = values.detach().reshape(-1).double().sort().values  # (N,)
        if flat.numel() == 0:
            continue
        position = torch.tensor(qs, dtype=torch.float64, device=flat.device) * (flat.numel() - 1)
        low = position.floor().long()
        high = position.ceil().long()
        value = flat[low] + (flat[high] - flat[low]) * (position - low)
        row = {f"q{100 * q:g}": v for q, v in zip(qs, value.tolist(), strict=True)}
        row["mean"] = float(flat.mean())
        summary[name] = row
    return summary


def _equal_frequency_bins(x: Tensor, bins: int) -> Tensor:
    """Bin index of each sample by rank, ties sharing a bin: ``floor(#smaller · B / K)``.

    Shape:
        x ``(K, N)`` → ``(N, K)`` (long).
    """
    columns = x.T.contiguous()  # (N, K)
    smaller = torch.searchsorted(columns.sort(dim=1).values, columns)  # (N, K): #values strictly below
    return smaller * bins // x.shape[0]
