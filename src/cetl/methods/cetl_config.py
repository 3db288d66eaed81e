"""The options of the CETL family (METHOD.md §2, §4, §9, §10): one config class for every
variant, so ``--method`` can switch between them with the same ``--set`` overrides."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from cetl.config import MethodConfig, NonNegativeFloat, NonNegativeInt, PositiveInt, Probability, Range


@dataclass(frozen=True, kw_only=True)
class CetlConfig(MethodConfig):
    """Options of the CETL family (METHOD.md §2, §4, §9)."""

    name: str = "cetl_e"
    recon_reduction: Literal["sum", "mean"] = "sum"
    """D2: ``L_r^s`` and ``L_r^t`` as the paper's ‖·‖², summed over each sample's pixels and
    averaged over the batch (``sum``), or the per-pixel mean (``mean``, ~1/1000 of the scale)."""
    recon_target: Literal["frozen", "live"] = "frozen"
    """D3: the target of ``L_r^t`` is T1′(S(x)) with T1′ frozen at the end of stage 1
    (``frozen``), or T1(S(x)) from the T1 being trained, detached (``live``)."""
    classify_weight: Probability = 0.997
    """λ of Eq. 3 (``cetl_f``, ``cetl_u``): ``λ L_c^t + (1−λ) L_r^t``. Chosen on source validation
    from {0.7, 0.97, 0.997} (METHOD.md §10): with the per-image ‖·‖² the reconstruction gradient
    is ~30× the cross-entropy's, so DRCN's 0.7 let reconstruction drown classification."""
    e2e_recon_source_weight: NonNegativeFloat = 0.3
    """λ1 of Eq. 6 (``cetl_e2e``)."""
    e2e_classify_weight: NonNegativeFloat = 0.7
    """λ2 of Eq. 6 (``cetl_e2e``)."""
    e2e_recon_target_weight: NonNegativeFloat = 0.3
    """λ3 of Eq. 6 (``cetl_e2e``)."""
    e2e_warmup_epochs: NonNegativeInt = 1
    """D11 (``cetl_e2e``): epochs of stage 1 alone (T1∘S) before the first joint round, after
    which T1′ is frozen as the reconstruction target. 0 freezes the random initial T1."""
    phase1_epochs: PositiveInt = 4
    """``cetl_f``/``cetl_u``: epochs of stage 1 (T1∘S) before T2 is trained."""
    reconstruct_epochs: PositiveInt = 1
    """Epochs of each reconstruction stage (1 and 2) per round (D7's ``stage_epochs`` for them)."""
    target_init: Literal["random", "source"] = "random"
    """Initialise T2 randomly or from S's weights (needs the same architecture)."""
    input_noise: Annotated[float, Range(ge=0, lt=1)] = 0.0
    """DRCN-style denoising: fraction of input pixels zeroed on the reconstruction stages."""
    augment: bool = False
    """DRCN-style augmentation on the reconstruction stages: rotation ±20°, shift ±20%.
    Inputs then vary per step, so the source-feature cache is bypassed (D9)."""
    fisher: Literal["sampled", "empirical"] = "sampled"
    """D4: targets of the Fisher losses drawn from the model (``sampled``) or the true ones."""
    fisher_batches: PositiveInt = 32
    """K of D4: micro-batches per Fisher estimate."""
    fisher_batch_size: PositiveInt = 8
    """m of D4: images per micro-batch."""
    fisher_norm: Literal["mean", "none"] = "mean"
    """Divide F by its mean over the regularised set, so λ is scale-free across losses (D4)."""
    rf_estimator: Literal["gaussian", "binned"] = "gaussian"
    """D5: the Relative Fisher estimator (both on Linfoot's scale)."""
    rf_shared_zeros: Literal["agree", "exclude"] = "exclude"
    """D5 refinement: micro-batches where both losses' Fisher samples of θ_i are 0 (a ReLU unit
    inactive on the whole micro-batch) are left out of θ_i's RF (``exclude``), or counted as
    samples (``agree``, which pulls RF towards 1 by itself)."""
    rf_threshold: Probability = 0.5
    """u in Eq. 10: RF at or above it counts as shared."""
    keep_prob: Probability = 0.9
    """p in Eq. 10: keep a shared parameter's Fisher with probability p (a private one, 1 − p)."""
    dwa1_weight: NonNegativeFloat = 102.4
    """λ of DWA1 (Eq. 11): protects stage 1's T1 during stage 2. Calibrated (METHOD.md §10) as
    D·λ with λ = 0.1 and D = 1,024 pixels, since it sits beside a squared error summed over D."""
    dwa2_weight: NonNegativeFloat = 102.4
    """λ of DWA2: protects stage 2's T1 during the next round's stage 1 (D·λ, as DWA1)."""
    dwa3_weight: NonNegativeFloat = 0.1
    """λ of DWA3: protects stage 2's T2 during stage 3, beside the cross-entropy (λ = 0.1, §10)."""
    dwa_reduction: Literal["mean", "sum"] = "sum"
    """Eq. 11 literally (``sum``), or divided by the number of parameters (``mean``), which made
    DWA inert: 1e-4 to 1e-3 of its update's task gradient (METHOD.md §10)."""
    kd_weight: NonNegativeFloat = 0.0
    """D8's option: add Hinton's soft-target term (τ² KL to S's soft tap, S's τ) with this weight
    to every classification loss; needs S's tap to be ``soft``. 0: cross-entropy only (Alg. 1)."""
    target_tap: str = "auto"
    """The T2 tap T1 decodes (D8): ``soft`` (T2's own logits softened with S's τ, as S's
    ``soft`` tap), ``coupling`` (the network's, e.g. ``fc7``) or a layer name (a FitNets-like
    feature layer). ``auto``: ``soft`` where S's tap is ``soft`` (distillation), else ``coupling``."""
