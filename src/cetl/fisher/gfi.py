"""Generalized Fisher Information (CETL paper Eq. 10) and the DWA penalty (Eq. 11).

Chen, Zhang, Dong, "Coupled End-to-End Transfer Learning with Generalized Fisher
Information", CVPR 2018. Plain EWC protects every parameter the old task finds important, which
can leave a new task nothing to learn with. GFI keeps the Fisher ``F_i`` of the protected task
mostly where the two tasks share θ_i (high Relative Fisher) and mostly drops it elsewhere, so
the DWA penalty allocates shared and private parameters dynamically (METHOD.md §3, D6).

The ``cetl_fi`` variant (plain Fisher, EWC) uses ``GFI = F``: pass the (normalised) Fisher
straight to :class:`DWAPenalty` without :func:`generalized_fisher`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from cetl.errors import ConfigError

Reduction = Literal["mean", "sum"]


def generalized_fisher(
    fisher: Mapping[str, Tensor],
    rf: Mapping[str, Tensor],
    *,
    generator: torch.Generator,
    rf_threshold: float = 0.5,
    keep_prob: float = 0.9,
) -> dict[str, Tensor]:
    """GFI (Eq. 10): ``F_i`` kept with probability p where ``RF_i ≥ u``, with 1 − p where ``RF_i < u``.

    One Bernoulli draw per parameter per call. The uniforms are drawn on the CPU from
    ``generator`` in sorted parameter-name order and only then moved to each tensor's device,
    so the mask depends on the seed alone: identical on every device and every DDP rank.

    Args:
        fisher: ``F`` of the protected task per parameter name (normalised or not).
        rf: the Relative Fisher of the protected and the other task, same names and shapes.
        generator: a seeded CPU ``torch.Generator`` (seed it identically on every rank).
        rf_threshold: u, the RF above which a parameter counts as shared (default 0.5).
        keep_prob: p, the probability of keeping a shared parameter's Fisher (default 0.9).

    Returns:
        GFI per parameter name: ``F_i`` or 0, in ``fisher``'s order, dtypes and devices.
    """
    if not 0.0 <= keep_prob <= 1.0:
        raise ConfigError(f"keep_prob (p in Eq. 10) must lie in [0, 1]; got {keep_prob}")
    if not 0.0 <= rf_threshold <= 1.0:
        raise ConfigError(f"rf_threshold (u in Eq. 10) must lie in [0, 1]; got {rf_threshold}")
    if generator.device.type != "cpu":
        raise ConfigError(
            f"the GFI generator must be a CPU generator, so masks agree on every device; "
            f"got one on {generator.device}"
        )
    _check_same_layout("rf", fisher, rf)
    gfi = {}
    for name in sorted(fisher):
        f = fisher[name]
        uniform = torch.rand(f.shape, generator=generator)  # CPU, see docstring
        shared = rf[name].detach().cpu() >= rf_threshold
        keep = torch.where(shared, uniform < keep_prob, uniform < 1.0 - keep_prob)
        gfi[name] = torch.where(keep.to(f.device), f, torch.zeros((), dtype=f.dtype, device=f.device))
    return {name: gfi[name] for name in fisher}


def kept_fractions(gfi: Mapping[str, Tensor]) -> dict[str, float]:
    """Fraction of parameters with a non-zero GFI: ``{"overall": …, <parameter name>: …}`` for logs."""
    kept = {name: int(torch.count_nonzero(g)) for name, g in gfi.items()}
    total = sum(g.numel() for g in gfi.values())
    fractions = {"overall": sum(kept.values()) / total if total else 0.0}
    fractions.update({name: kept[name] / g.numel() if g.numel() else 0.0 for name, g in gfi.items()})
    return fractions


@dataclass(frozen=True)
class DWAPenalty:
    """Dynamic Weight Allocation (Eq. 11): ``Σ_i ½ · GFI_i · (θ_i − θ*_i)²``, without λ.

    λ of Eq. 11 (``dwa_weight``) is this term's loss weight, applied by the engine like every
    other weight (methods return unweighted terms, DESIGN.md "Contracts"); so ``λ · penalty(θ)``
    is Eq. 11 and its gradient is ``λ · GFI · (θ − θ*)`` (divided by the number of parameters with
    ``reduction="mean"``). Build it with :meth:`capture` when the GFI is computed: θ* must be
    the parameters' values at that moment.

    Attributes:
        gfi: the GFI per parameter name (or ``F`` itself for ``cetl_fi``, EWC).
        anchor: θ*, detached copies of the parameters, same names and shapes.
        reduction: ``"mean"`` (default, METHOD.md §3) divides by the number of regularised
            parameters, so λ does not scale with network size; ``"sum"`` is Eq. 11 literally.
    """

    gfi: dict[str, Tensor]
    anchor: dict[str, Tensor]
    reduction: Reduction = "mean"

    def __post_init__(self) -> None:
        if self.reduction not in ("mean", "sum"):
            raise ConfigError(f"dwa_reduction must be 'mean' or 'sum'; got {self.reduction!r}")
        if not self.gfi:
            raise ConfigError("a DWA penalty needs at least one regularised parameter; the GFI is empty")
        _check_same_layout("anchor", self.gfi, self.anchor)
        # Flattened once: each call then costs a handful of kernels whatever the number of
        # parameter tensors (one subtraction over all of them, one concatenation, one weighted
        # sum) instead of four per tensor, which on a GPU is launch time in every protected step.
        names = tuple(self.gfi)
        object.__setattr__(self, "_names", names)
        object.__setattr__(self, "_anchors", [self.anchor[name] for name in names])
        object.__setattr__(self, "_flat_gfi", torch.cat([self.gfi[name].reshape(-1) for name in names]))

    @classmethod
    def capture(
        cls, gfi: Mapping[str, Tensor], parameters: Mapping[str, Tensor], *, reduction: Reduction = "mean"
    ) -> DWAPenalty:
        """The penalty anchored at the parameters' current values (θ* of Eq. 11)."""
        missing = sorted(set(gfi) - set(parameters))
        if missing:
            raise ConfigError(f"the GFI names parameters that are not given: {missing}")
        anchor = {name: parameters[name].detach().clone() for name in gfi}
        return cls(gfi=dict(gfi), anchor=anchor, reduction=reduction)

    @property
    def num_parameters(self) -> int:
        """How many scalars are regularised (the divisor of ``reduction="mean"``)."""
        return self._flat_gfi.numel()

    def __call__(self, parameters: Mapping[str, Tensor]) -> Tensor:
        """The penalty at the live ``parameters`` (by name), differentiable with respect to them.

        Returns:
            A scalar tensor (float32 at least).
        """
        differences = torch._foreach_sub([parameters[name] for name in self._names], self._anchors)
        flat = torch.cat([difference.reshape(-1) for difference in differences])
        total = (self._flat_gfi * flat.square()).sum(dtype=torch.float32)
        divisor = self.num_parameters if self.reduction == "mean" else 1
        return 0.5 * total / max(divisor, 1)


def _check_same_layout(what: str, reference: Mapping[str, Tensor], other: Mapping[str, Tensor]) -> None:
    """``other`` has exactly ``reference``'s names and shapes (a :class:`ConfigError` otherwise)."""
    if set(reference) != set(other):
        raise ConfigError(
            f"{what} and the Fisher name different parameters: only in the Fisher "
            f"{sorted(set(reference) - set(other))}, only in {what} {sorted(set(other) - set(reference))}"
        )
    for name, tensor in reference.items():
        if tensor.shape != other[name].shape:
            raise ConfigError(
                f"{what}['{name}'] has shape {tuple(other[name].shape)}, the Fisher {tuple(tensor.shape)}"
            )
