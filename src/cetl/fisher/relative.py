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

Shared zeros (``rf_shared_zeros``, D5 refinement). Behind a ReLU, a unit inactive on every image
of a micro-batch gives the weights around it a squared gradient of exactly 0 for every loss
evaluated on that micro-batch: the zero comes from the shared forward pass, not from either
task. ``exclude`` (default) leaves the micro-batches where *both* samples are 0 out of θ_i's
correlation, which is then taken over the n_i micro-batches where at least one loss uses θ_i;
``agree`` counts them as ordinary samples. At ``(log ε1, log ε2)``, ~18 nats below the other
samples, each shared zero pulls |ρ| towards 1 by itself, whatever the two tasks' Fisher do where
θ_i is used (``benchmarks/results/rf_zeros.md``). Where fewer than :func:`min_kept` micro-batches
remain (half of K, at least :data:`MIN_SAMPLES`) RF = 0, as for a parameter a loss never
touches: both tasks leave θ_i unused on most micro-batches, and a correlation over a few points
crosses u = 0.5 by chance (independent samples: P ≈ 0.67 over 3 points, 0.21 over 8, 0.05 over
16, 0.004 over 32).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor

from cetl.errors import ConfigError
from cetl.fisher.estimate import FisherEstimate, shifted_log
from cetl.registry import Registry

SharedZeros = Literal["agree", "exclude"]
SHARED_ZEROS: tuple[SharedZeros, ...] = ("agree", "exclude")

RelativeFisherFn = Callable[..., dict[str, Tensor]]
"""``fn(estimate, first, second, *, shared_zeros) -> {parameter name: RF in [0, 1]}``."""

RF_ESTIMATORS: Registry[RelativeFisherFn] = Registry(
    "relative Fisher estimator",
    contract="fn(estimate, first, second, *, shared_zeros) -> {parameter name: RF in [0, 1]}",
)

ZERO_VARIANCE = 1e-9
"""Variances below this fraction of the second moment are round-off of a constant sample."""

MIN_SAMPLES = 3
"""Fewest micro-batches a correlation is taken over with ``exclude`` (two points give |ρ| = 1)."""
MIN_KEPT_FRACTION = 0.5
"""With ``exclude``, RF = 0 where fewer than this fraction of the K micro-batches remain."""


def min_kept(k: int) -> int:
    """Micro-batches that must remain after ``exclude`` for RF ≠ 0: half of K, at least
    :data:`MIN_SAMPLES`, at most K (so ``agree``, which keeps all K, is never cut)."""
    return min(k, max(MIN_SAMPLES, math.ceil(MIN_KEPT_FRACTION * k)))


def relative_fisher(
    estimate: FisherEstimate,
    first: str,
    second: str,
    *,
    estimator: str = "gaussian",
    shared_zeros: SharedZeros = "exclude",
) -> dict[str, Tensor]:
    """``RF_i = I(F_{1,i}, F_{2,i})`` on Linfoot's [0, 1] scale (Eq. 9, D5), per parameter name.

    Args:
        estimate: from :func:`cetl.fisher.estimate.estimate_fisher`, with ``(first, second)`` (in
            either order) among its ``pairs`` for ``gaussian``, or ``keep_samples=True`` for
            ``binned``.
        first, second: the two losses' names.
        estimator: a name in :data:`RF_ESTIMATORS` (``gaussian`` or ``binned``).
        shared_zeros: micro-batches where both samples of θ_i are 0: left out of θ_i's
            correlation (``exclude``) or counted as samples (``agree``); see the module docstring.

    Returns:
        RF per parameter name, float32, shaped and placed like the parameter.
    """
    if shared_zeros not in SHARED_ZEROS:
        raise ConfigError(f"rf_shared_zeros must be one of {list(SHARED_ZEROS)}; got {shared_zeros!r}")
    return RF_ESTIMATORS.get(estimator)(estimate, first, second, shared_zeros=shared_zeros)


@RF_ESTIMATORS.register("gaussian")
def gaussian_relative_fisher(
    estimate: FisherEstimate, first: str, second: str, *, shared_zeros: SharedZeros = "exclude"
) -> dict[str, Tensor]:
    """|ρ| of the log Fisher samples: Linfoot's coefficient of the Gaussian I = −½·log(1 − ρ²).

    ρ comes from the raw moments accumulated in float64 by the estimator; a variance under
    :data:`ZERO_VARIANCE` of the second moment is treated as exactly zero (RF = 0). The logs are
    shifted so that a zero adds nothing to any moment; ``exclude`` therefore only rescales the
    means from K micro-batches to the n_i = K − (shared zeros of θ_i) that remain, and sets RF = 0
    where n_i < :func:`min_kept`.
    """
    a, b = estimate.stats(first), estimate.stats(second)
    pair = (first, second) if (first, second) in estimate.log_cross_mean else (second, first)
    cross = estimate.log_cross_mean.get(pair)
    if a.log_mean is None or b.log_mean is None or cross is None:
        raise ConfigError(
            f"the gaussian Relative Fisher of '{first}' and '{second}' needs them as a pair: "
            f"pass pairs=[('{first}', '{second}')] to estimate_fisher"
        )
    assert a.log_sq_mean is not None and b.log_sq_mean is not None
    zeros = estimate.shared_zeros.get(pair) if shared_zeros == "exclude" else None
    if shared_zeros == "exclude" and zeros is None:
        raise ConfigError(
            f"rf_shared_zeros=exclude needs the shared-zero counts of ('{first}', '{second}'), which "
            f"estimate_fisher records for every pair; this estimate has none"
        )
    k = estimate.count
    rf = {}
    for name in a.mean:
        if zeros is None:
            count = torch.full_like(a.log_mean[name], float(k))
        else:  # counts are stored as fractions of K: round back to the exact integer
            count = k - torch.round(zeros[name].double() * k)
        scale = k / count.clamp_min(1)  # sums over all K hold nothing from excluded micro-batches
        mean_a, mean_b = a.log_mean[name] * scale, b.log_mean[name] * scale
        square_a, square_b = a.log_sq_mean[name] * scale, b.log_sq_mean[name] * scale
        var_a = square_a - mean_a.square()
        var_b = square_b - mean_b.square()
        covariance = cross[name] * scale - mean_a * mean_b
        # "Constant" is judged against the second moment of the unshifted log(f + ε), as before
        # the shift: variation of ~1e-3 nats or less is round-off, not a sample that varies.
        varies = (
            (var_a > ZERO_VARIANCE * _unshifted_square(square_a, mean_a, a.eps))
            & (var_b > ZERO_VARIANCE * _unshifted_square(square_b, mean_b, b.eps))
            & (count >= min_kept(k))
        )
        # Clamp before sqrt: where ``varies`` is False the quotient is discarded, but must not be NaN.
        rho = covariance / torch.sqrt(var_a.clamp_min(0) * var_b.clamp_min(0)).clamp_min(1e-300)
        rf[name] = torch.where(varies, rho.abs().clamp(max=1.0), 0.0).to(torch.float32)
    return rf


@RF_ESTIMATORS.register("binned")
def binned_relative_fisher(
    estimate: FisherEstimate, first: str, second: str, *, shared_zeros: SharedZeros = "exclude"
) -> dict[str, Tensor]:
    """Linfoot's coefficient of the Miller–Madow-corrected plug-in I over equal-frequency bins.

    Binning uses ranks, which ``log(f + ε)`` does not change, so the raw samples are binned.
    With ``exclude`` the micro-batches where both samples are 0 (as the gaussian estimator's logs
    count them) are left out, column by column: bins then split the n_i micro-batches that
    remain, and RF = 0 where n_i < :func:`min_kept`.
    """
    a, b = estimate.stats(first), estimate.stats(second)
    if a.samples is None or b.samples is None:
        raise ConfigError(
            "the binned Relative Fisher needs the samples: pass keep_samples=True to estimate_fisher"
        )
    rf = {}
    for name, x in a.samples.items():
        x, y = x.reshape(len(x), -1), b.samples[name].reshape(len(x), -1)  # (K, N)
        keep = ~(_is_zero(x, a.eps) & _is_zero(y, b.eps)) if shared_zeros == "exclude" else None
        mi = binned_mutual_information(x, y, keep=keep)  # (N,)
        rf[name] = linfoot(mi).reshape(a.samples[name].shape[1:]).to(torch.float32)
    return rf


def binned_mutual_information(
    x: Tensor, y: Tensor, bins: int | None = None, *, keep: Tensor | None = None
) -> Tensor:
    """Plug-in mutual information (nats) with the Miller–Madow correction, column by column.

    Each column of ``x`` and ``y`` is cut into ``bins`` equal-frequency bins (default
    ``max(2, round(K^(1/3)))``); tied values share a bin, so a constant column has entropy 0.
    Miller–Madow adds ``(m − 1)/(2K)`` to each plug-in entropy (m = occupied bins), which removes
    most of the plug-in estimator's upward bias for independent samples. A column where ``x``
    or ``y`` is constant has I = 0 exactly; the result is clamped at 0.

    Args:
        x, y: paired samples, one column per variable.
        bins: the number of bins per variable.
        keep: which samples count, per column (default all); a column then uses its n kept
            samples in place of K (bins by rank among them, Miller–Madow with n), and one with
            fewer than :func:`min_kept` of K has I = 0.

    Returns:
        I per column.

    Shape:
        x, y ``(K, N)``, keep ``(K, N)`` bool → ``(N,)``.
    """
    k = len(x)
    bins = bins or max(2, round(k ** (1 / 3)))
    if keep is None:
        keep = torch.ones_like(x, dtype=torch.bool)
    count = keep.sum(dim=0).to(torch.float64)  # (N,)
    bx, by = _equal_frequency_bins(x, bins, keep), _equal_frequency_bins(y, bins, keep)  # (N, K) each
    joint = torch.zeros(bx.shape[0], bins * bins, dtype=torch.float64, device=x.device)  # (N, B²)
    joint.scatter_add_(1, bx * bins + by, keep.T.to(torch.float64))
    joint = joint / count.clamp_min(1)[:, None]
    px = joint.view(-1, bins, bins).sum(dim=2)  # (N, B)
    py = joint.view(-1, bins, bins).sum(dim=1)  # (N, B)

    def entropy(p: Tensor) -> Tensor:  # Miller–Madow-corrected, (N,)
        return -torch.xlogy(p, p).sum(dim=1) + ((p > 0).sum(dim=1) - 1) / (2 * count.clamp_min(1))

    mi = entropy(px) + entropy(py) - entropy(joint)
    inf = torch.tensor(torch.inf, dtype=x.dtype, device=x.device)

    def constant(v: Tensor) -> Tensor:  # over the kept samples, (N,)
        return torch.where(keep, v, inf).amin(dim=0) == torch.where(keep, v, -inf).amax(dim=0)

    degenerate = constant(x) | constant(y) | (count < min_kept(k))
    return torch.where(degenerate, 0.0, mi.clamp_min(0.0))


def _unshifted_square(square: Tensor, mean: Tensor, eps: float | None) -> Tensor:
    """``E[(ℓ + log ε)²]`` from ``E[ℓ²]`` and ``E[ℓ]``: the raw second moment of ``log(f + ε)``."""
    assert eps is not None  # a loss in a pair has its ε
    log_eps = math.log(eps)
    return square + 2 * log_eps * mean + log_eps**2


def _is_zero(f: Tensor, eps: float | None) -> Tensor:
    """The samples the gaussian estimator's logs count as 0 (:func:`shifted_log`), or ``f == 0``
    where the loss was in no pair (no ε)."""
    return f == 0 if eps is None else shifted_log(f, eps) == 0


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


def _equal_frequency_bins(x: Tensor, bins: int, keep: Tensor) -> Tensor:
    """Bin index of each kept sample by rank among the kept ones, ties sharing a bin:
    ``floor(#smaller · B / n)``; samples not kept get some bin and must weigh 0.

    Shape:
        x, keep ``(K, N)`` → ``(N, K)`` (long).
    """
    columns = torch.where(keep, x, torch.inf).T.contiguous()  # (N, K): left-out samples sort last
    smaller = torch.searchsorted(columns.sort(dim=1).values, columns)  # (N, K): #values strictly below
    count = keep.sum(dim=0).clamp_min(1)[:, None]  # (N, 1)
    return (smaller * bins // count).clamp_max(bins - 1)
