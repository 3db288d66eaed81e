"""Fisher information, Relative Fisher, GFI and the DWA penalty (CETL paper Section 3.2).

One streaming estimator serves every stage and variant (METHOD.md D4–D6). A GFI is computed
in four steps, e.g. GFI1 (after stage 1, protecting ``L_r^s`` on T1)::

    estimate = estimate_fisher(
        dict(decoder.named_parameters()),
        {"recon_source": loss_s, "recon_target": loss_t},  # each fn(micro_batch) -> scalar
        micro_batches,                                      # K, both losses on the same one
        modules=[decoder, target_net],
        pairs=[("recon_source", "recon_target")],
    )
    fisher = normalise_fisher(estimate.fisher("recon_source"))
    rf = relative_fisher(estimate, "recon_source", "recon_target")
    gfi = generalized_fisher(fisher, rf, generator=torch.Generator().manual_seed(seed))
    dwa1 = DWAPenalty.capture(gfi, dict(decoder.named_parameters()))  # θ* = now
"""

from __future__ import annotations

from cetl.fisher.estimate import (
    FisherEstimate,
    FisherStats,
    Stacked,
    estimate_fisher,
    normalise_fisher,
    sampled_categorical_loss,
    sampled_gaussian_loss,
)
from cetl.fisher.gfi import DWAPenalty, generalized_fisher, kept_fractions
from cetl.fisher.relative import RF_ESTIMATORS, relative_fisher, rf_quantiles

__all__ = [
    "RF_ESTIMATORS",
    "DWAPenalty",
    "FisherEstimate",
    "FisherStats",
    "Stacked",
    "estimate_fisher",
    "generalized_fisher",
    "kept_fractions",
    "normalise_fisher",
    "relative_fisher",
    "rf_quantiles",
    "sampled_categorical_loss",
    "sampled_gaussian_loss",
]
