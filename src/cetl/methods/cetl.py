"""CETL: Algorithm 1 and its variants without DWA (paper Table 2; METHOD.md §2, §4).

Chen, Zhang, Dong, "Coupled End-to-End Transfer Learning with Generalized Fisher
Information", CVPR 2018.

A frozen source S, a shared decoder T1 = mirror(T2) and the target network T2. One
round of Algorithm 1 (``cetl_e``):

1. ``reconstruct_source``: x_tgt → S → (adapter) → T1 → recons1; ``L_r^s`` (Eq. 2);
   updates T1 and the adapter. At its end T1′, a frozen copy of T1 (and the adapter), is
   taken (D3).
2. ``reconstruct_target``: x_tgt → T2 → T1 → recons2; ``L_r^t`` against T1′(S(x)) (Eq. 5);
   one update over T1 ∪ T2.
3. ``classify``: labelled x → T2; ``L_c^t`` (Eq. 4); updates T2.

Variants (``--method``): ``baseline`` (stage 3 alone), ``cetl_f``/``cetl_u`` (T1∘S first for
``phase1_epochs``, then Eq. 3 on T2 with T1 frozen / also updated), ``cetl_e`` (Algorithm 1),
``cetl_e2e`` (Eq. 6, one joint update, after one stage-1 epoch that gives T1′ something to
decode, D11).
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from cetl.config import MethodConfig, NonNegativeFloat, NonNegativeInt, PositiveInt, Probability, Range
from cetl.data.training import TrainingData
from cetl.engine import distributed
from cetl.errors import ConfigError
from cetl.fisher import (
    DWAPenalty,
    Stacked,
    estimate_fisher,
    generalized_fisher,
    kept_fractions,
    normalise_fisher,
    relative_fisher,
    rf_quantiles,
    sampled_categorical_loss,
    sampled_gaussian_loss,
)
from cetl.losses.classification import classification_loss
from cetl.losses.distillation import soft_probability_loss
from cetl.losses.reconstruction import source_reconstruction_loss, target_reconstruction_loss
from cetl.methods.base import Batch, Component, Method, Stage, Update
from cetl.methods.corruption import impulse_noise, random_affine
from cetl.monitor import bound_terms
from cetl.networks import TapNetwork
from cetl.source import FeatureCache, FrozenSource

Variant = Literal["baseline", "cetl_f", "cetl_u", "cetl_e", "cetl_fi", "cetl", "cetl_e2e"]
DWA_VARIANTS = ("cetl_fi", "cetl")


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


class CETL(Method):
    """The CETL family; ``variant`` selects which stages a round runs.

    Args:
        config: the method's options.
        target_net: T2.
        decoder: T1 = mirror(T2); reads T2's coupling tap.
        source: S, frozen.
        source_adapter: maps S's tap to T1's input (D1); identity when shapes agree.
        feature_cache: computes S's tap outputs for the target stream once (D9); ``None``
            runs S on every step.
        labelled_domain: whose labels stage 3 reads: ``source`` in domain adaptation,
            ``target`` in transfer learning and distillation.
    """

    Config = CetlConfig
    variant: ClassVar[Variant] = "cetl_e"
    components: ClassVar[frozenset[Component]] = frozenset(
        {"source", "decoder", "source_adapter", "feature_cache", "labelled_domain"}
    )

    def __init__(
        self,
        config: CetlConfig,
        *,
        target_net: TapNetwork,
        decoder: nn.Module,
        source: FrozenSource,
        source_adapter: nn.Module,
        feature_cache: FeatureCache | None,
        labelled_domain: Literal["source", "target"],
    ) -> None:
        super().__init__()
        if config.kd_weight > 0 and source.temperature is None:
            raise ConfigError(
                f"method.kd_weight={config.kd_weight:g} needs S's soft targets, but S's tap gives "
                "none: set source.tap=soft (and source.temperature), or method.kd_weight=0"
            )
        self.config = config
        self.target_net = target_net
        self.decoder = decoder
        self.source = source
        self.source_adapter = source_adapter
        self.labelled_domain = labelled_domain
        self._feature_cache = feature_cache
        self._features: Tensor | None = None  # (N_target, *tap_shape) once prepared
        self._labelled_soft: Tensor | None = None  # S's soft targets of the labelled images (kd_weight)
        self._frozen_path: nn.Module | None = None  # T1′ ∘ adapter′ (D3)
        self._dwa: dict[str, DWAPenalty] = {}  # "dwa1".."dwa3", each with its θ*
        self._fisher_data: TrainingData | None = None

    @classmethod
    def labelled_domain_for(cls, setting: str) -> Literal["source", "target"]:
        return "source" if setting == "domain_adaptation" else "target"

    def prepare(self, data: TrainingData) -> None:
        """Compute S's tap for every target-stream image once (D9), unless inputs vary."""
        self._fisher_data = data
        if self._feature_cache is None:
            return
        if self.config.kd_weight > 0:  # S's soft targets for stage 3's inputs, which never vary
            self._labelled_soft = self._feature_cache.features(self.source, data.labelled.x).float()
        if self.variant == "baseline":
            return
        if self.config.augment:
            print(
                "cetl: source-feature cache bypassed: method.augment varies S's inputs (D9)", file=sys.stderr
            )
            return
        # float32 whatever autocast the engine prepares under: the Fisher pass runs without it
        self._features = self._feature_cache.features(self.source, data.target).float()

    # ------------------------------------------------------------------ stages

    def stages(self, round_index: int) -> list[Stage]:
        t1_path = (self.decoder, self.source_adapter)
        classify = Stage(
            "classify",
            ("labelled",),
            (Update("target_net", (self.target_net,), self._classify_protected, self._dwa_weights),),
        )
        reconstruct_source = Stage(
            "reconstruct_source",
            ("target",),
            (Update("decoder", t1_path, self._reconstruct_source_protected, self._dwa_weights),),
            on_end=self._end_reconstruct_source,
            epochs=self.config.reconstruct_epochs,
        )
        if self.variant == "baseline":
            return [classify]
        if self.variant in ("cetl_e", *DWA_VARIANTS):
            reconstruct_target = Stage(
                "reconstruct_target",
                ("target",),
                (
                    Update(
                        "decoder_and_target_net",
                        (self.decoder, self.target_net),
                        self._reconstruct_target_protected,
                        self._dwa_weights,
                    ),
                ),
                on_end=self._end_reconstruct_target,
                epochs=self.config.reconstruct_epochs,
            )
            return [reconstruct_source, reconstruct_target, classify]
        if self.variant in ("cetl_f", "cetl_u"):
            trained = (self.target_net,) if self.variant == "cetl_f" else (self.target_net, self.decoder)
            weight = self.config.classify_weight
            coupled = Stage(
                "classify_coupled",
                ("labelled", "target"),
                (
                    Update(
                        "coupled",
                        trained,
                        self._classify_coupled,
                        {"classify": weight, "recon_target": 1 - weight} | self._kd_weight,
                    ),
                ),
            )
            if round_index == 0:
                return [self._decoder_warmup(self.config.phase1_epochs), coupled]
            return [coupled]
        weights = {
            "recon_source": self.config.e2e_recon_source_weight,
            "classify": self.config.e2e_classify_weight,
            "recon_target": self.config.e2e_recon_target_weight,
        } | self._kd_weight
        everything = (self.decoder, self.source_adapter, self.target_net)
        joint = Update("joint", everything, self._joint, weights)
        stages = [Stage("joint", ("labelled", "target"), (joint,), on_end=self._freeze_decoder)]
        if round_index == 0 and self.config.e2e_warmup_epochs > 0:
            # D11: T1′ must decode S before it is a target; frozen at random, round 0 would
            # train T1∘T2 to reproduce a blank image.
            stages.insert(0, self._decoder_warmup(self.config.e2e_warmup_epochs))
        return stages

    def _decoder_warmup(self, epochs: int) -> Stage:
        """T1∘S alone for ``epochs`` (``L_r^s``), then T1′ frozen as the reconstruction target: the
        first phase of ``cetl_f``/``cetl_u`` and ``cetl_e2e``'s warm-up (D11)."""
        t1_path = (self.decoder, self.source_adapter)
        update = Update("decoder", t1_path, self._reconstruct_source)
        return Stage("reconstruct_source", ("target",), (update,), on_end=self._freeze_decoder, epochs=epochs)

    # ------------------------------------------------------------------ loss terms

    def _classify(self, batch: Batch) -> dict[str, Tensor]:
        logits = self.target_net(batch.x)
        terms = {"classify": classification_loss(logits, batch.y)}
        if self.config.kd_weight > 0:
            assert self.source.temperature is not None  # checked in __init__
            if batch.idx is not None and self._labelled_soft is not None:
                soft = self._labelled_soft[batch.idx]
            else:
                soft = self.source(batch.x)
            terms["kd"] = soft_probability_loss(logits, soft, self.source.temperature)
        return terms

    def _reconstruct_source(self, batch: Batch) -> dict[str, Tensor]:
        clean = self._augment(batch.x_tgt)
        noisy = self._add_noise(clean)
        cached = batch.idx_tgt if noisy is batch.x_tgt else None
        recons1 = self.decoder(self.source_adapter(self._source_tap(noisy, cached)))
        return {"recon_source": source_reconstruction_loss(recons1, clean, self.config.recon_reduction)}

    def _reconstruct_target(self, batch: Batch) -> dict[str, Tensor]:
        clean = self._augment(batch.x_tgt)
        target = self._recons1(clean, batch.idx_tgt if clean is batch.x_tgt else None)
        features = self.target_net.coupling(self._add_noise(clean))
        recons2 = self.decoder(features)
        return {"recon_target": target_reconstruction_loss(recons2, target, self.config.recon_reduction)}

    @property
    def _dwa_weights(self) -> dict[str, float]:
        c = self.config
        return {"dwa1": c.dwa1_weight, "dwa2": c.dwa2_weight, "dwa3": c.dwa3_weight} | self._kd_weight

    @property
    def _kd_weight(self) -> dict[str, float]:
        """The weight of D8's optional Hinton term, where it is on."""
        return {"kd": self.config.kd_weight} if self.config.kd_weight > 0 else {}

    def _penalty(self, name: str, network: nn.Module) -> dict[str, Tensor]:
        """The DWA term ``name`` on ``network`` once its GFI exists (none in round 1's stage 1)."""
        if name not in self._dwa:
            return {}
        return {name: self._dwa[name](dict(network.named_parameters()))}

    def _reconstruct_source_protected(self, batch: Batch) -> dict[str, Tensor]:
        return self._reconstruct_source(batch) | self._penalty("dwa2", self.decoder)

    def _reconstruct_target_protected(self, batch: Batch) -> dict[str, Tensor]:
        return self._reconstruct_target(batch) | self._penalty("dwa1", self.decoder)

    def _classify_protected(self, batch: Batch) -> dict[str, Tensor]:
        return self._classify(batch) | self._penalty("dwa3", self.target_net)

    def _classify_coupled(self, batch: Batch) -> dict[str, Tensor]:
        return self._classify(batch) | self._reconstruct_target(batch)

    def _joint(self, batch: Batch) -> dict[str, Tensor]:
        return self._reconstruct_source(batch) | self._classify(batch) | self._reconstruct_target(batch)

    # ------------------------------------------------------------------ helpers

    def _source_tap(self, x: Tensor, index: Tensor | None) -> Tensor:
        """S's tap for ``x``: from the cache when ``x`` is the stream's own images (D9)."""
        if index is not None and self._features is not None:
            return self._features[index]
        return self.source(x)

    @torch.no_grad()
    def _recons1(self, x: Tensor, index: Tensor | None) -> Tensor:
        """The target of ``L_r^t``: T1′(S(x)) (D3, ``frozen``) or T1(S(x)) detached (``live``)."""
        features = self._source_tap(x, index)
        if self.config.recon_target == "live":
            return self.decoder(self.source_adapter(features)).detach()
        if self._frozen_path is None:
            self._freeze_decoder()  # cetl_e2e with e2e_warmup_epochs=0: T1′ is the initial T1
        return self._frozen_path(features)

    def _end_reconstruct_source(self) -> dict[str, float]:
        """Freeze T1′ (D3); with DWA, compute GFI1 on T1 (protects ``L_r^s``, RF vs ``L_r^t``)."""
        self._freeze_decoder()
        if self.variant not in DWA_VARIANTS:
            return {}
        return self._compute_gfi("dwa1", self.decoder, "target", ("recon_source", "recon_target"))

    def _end_reconstruct_target(self) -> dict[str, float] | None:
        """With DWA: GFI2 on T1 (protects ``L_r^t``, RF vs ``L_r^s``) and GFI3 on T2 (protects
        ``L_r^t``, RF vs ``L_c^t``, both on labelled micro-batches), METHOD.md D6."""
        if self.variant not in DWA_VARIANTS:
            return None
        record = self._compute_gfi("dwa2", self.decoder, "target", ("recon_target", "recon_source"))
        return record | self._compute_gfi("dwa3", self.target_net, "labelled", ("recon_target", "classify"))

    def _compute_gfi(
        self, name: str, network: nn.Module, stream: str, losses: tuple[str, str]
    ) -> dict[str, float]:
        """Estimate F of ``losses[0]`` and its RF against ``losses[1]`` on ``network``, draw the
        GFI (``cetl``) or keep F (``cetl_fi``), and anchor DWA term ``name`` at θ* = now.

        Returns the numbers logged with the stage: kept fractions, RF quantiles per layer, time.
        """
        started = time.perf_counter()
        c = self.config
        data = self._fisher_data
        images = data.target if stream == "target" else data.labelled.x
        labels = data.labelled.y if stream == "labelled" else None
        # Ranks draw from different RNG streams (the engine seeds them per rank), so rank 0's
        # draws are broadcast: micro-batches, sampled targets and the GFI mask agree everywhere.
        world = distributed.current()
        rows = world.broadcast(torch.randint(len(images), (c.fisher_batches, c.fisher_batch_size)))
        mask_seed = int(world.broadcast(torch.randint(2**62, (1,))))
        # One seed per (micro-batch, loss): sampled targets independent of how K is split over ranks.
        noise_seeds = world.broadcast(torch.randint(2**62, (c.fisher_batches, len(losses))))
        # Noise drawn here from those seeds, not inside the losses: the estimator can then
        # differentiate several micro-batches in one batched pass (``Stacked``).
        noise = (
            [self._fisher_noise(key, noise_seeds[:, slot], images) for slot, key in enumerate(losses)]
            if c.fisher == "sampled"
            else []
        )
        micro_batches = Stacked(tuple(t.to(images.device) for t in (rows, *noise)))
        binned = c.rf_estimator == "binned"  # keeps per-sample Fishers: every rank does all K
        if not binned:
            micro_batches = micro_batches.rows(world.shard(torch.arange(len(micro_batches))))
        cached = self._features if stream == "target" else None
        loss_fns = {
            key: self._fisher_loss(key, slot, images, labels, cached) for slot, key in enumerate(losses)
        }
        parameters = dict(network.named_parameters())
        estimate = estimate_fisher(
            parameters,
            loss_fns,
            micro_batches,
            modules=[self.target_net, self.decoder, self.source_adapter],
            pairs=[losses],
            keep_samples=binned,
            reduce=world.sum if world.distributed and not binned else None,
            holds_first=world.is_main or binned,
        )
        fisher = estimate.fisher(losses[0])
        if c.fisher_norm == "mean":
            fisher = normalise_fisher(fisher)
        rf = relative_fisher(estimate, *losses, estimator=c.rf_estimator, shared_zeros=c.rf_shared_zeros)
        if self.variant == "cetl":
            gfi = generalized_fisher(
                fisher,
                rf,
                generator=torch.Generator().manual_seed(mask_seed),
                rf_threshold=c.rf_threshold,
                keep_prob=c.keep_prob,
            )
        else:
            gfi = fisher  # cetl_fi: plain Fisher, i.e. EWC
        self._dwa[name] = DWAPenalty.capture(gfi, parameters, reduction=c.dwa_reduction)
        gfi_name = name.replace("dwa", "gfi")
        record = {
            f"{gfi_name}_kept/{k}" if k != "overall" else f"{gfi_name}_kept": v
            for k, v in kept_fractions(gfi).items()
        }
        for layer, quantiles in rf_quantiles(rf).items():
            record.update({f"{gfi_name}_rf/{layer}/{q}": v for q, v in quantiles.items()})
        record[f"{gfi_name}_fisher_seconds"] = time.perf_counter() - started
        return record

    def _fisher_loss(
        self, key: str, slot: int, images: Tensor, labels: Tensor | None, features: Tensor | None
    ) -> Callable[[tuple[Tensor, ...]], Tensor]:
        """``fn((indices, *noise)) -> L̃_k`` for one micro-batch: sampled targets (D4) or the true ones.

        ``noise[slot]`` is this loss's pre-drawn noise on micro-batch k (:meth:`_fisher_noise`),
        so the estimate does not depend on which rank evaluates k, and the function has no
        Python-level randomness, so the estimator may batch micro-batches (``torch.func.vmap``).
        ``features`` are S's cached taps of ``images`` (D9), or ``None`` to run S.
        """
        sampled = self.config.fisher == "sampled"

        def source_path(index: Tensor) -> Tensor:
            tap = features[index] if features is not None else self.source(images[index])
            return self.decoder(self.source_adapter(tap))

        def target_path(index: Tensor) -> Tensor:
            return self.decoder(self.target_net.coupling(images[index]))

        def loss(micro_batch: tuple[Tensor, ...]) -> Tensor:
            index = micro_batch[0]
            noise = micro_batch[1 + slot] if sampled else None
            if key == "recon_source":
                out = source_path(index)
                if sampled:
                    return sampled_gaussian_loss(out, noise=noise)
                return source_reconstruction_loss(out, images[index], self.config.recon_reduction)
            if key == "recon_target":
                out = target_path(index)
                if sampled:
                    return sampled_gaussian_loss(out, noise=noise)
                with torch.no_grad():
                    target = self._recons1(images[index], None)
                return target_reconstruction_loss(out, target, self.config.recon_reduction)
            logits = self.target_net(images[index])
            if sampled:
                return sampled_categorical_loss(logits, uniform=noise)
            return classification_loss(logits, labels[index])

        return loss

    def _fisher_noise(self, key: str, seeds: Tensor, images: Tensor) -> Tensor:
        """The sampled-target noise of loss ``key`` for each micro-batch, one CPU generator per seed:
        ``N(0, 1)`` shaped like a reconstruction ``(m, C, H, W)``, or ``U(0, 1)`` shaped like the
        logits ``(m, classes)`` for ``classify`` (D4).

        Shape:
            seeds ``(K,)`` → ``(K, m, …)`` on the CPU.
        """
        m = self.config.fisher_batch_size
        shape = (m, self.target_net.num_classes) if key == "classify" else (m, *images.shape[1:])
        draw = torch.rand if key == "classify" else torch.randn
        return torch.stack(
            [draw(shape, generator=torch.Generator().manual_seed(int(seed))) for seed in seeds]
        )

    def _freeze_decoder(self) -> None:
        """Take T1′ (with the adapter): the fixed reconstruction target of stage 2 (D3)."""
        path = nn.Sequential(self.source_adapter, self.decoder)
        self._frozen_path = copy.deepcopy(path).eval().requires_grad_(False)

    def _add_noise(self, x: Tensor) -> Tensor:
        """DRCN's impulse noise on reconstruction inputs, in training only (``x`` itself when off)."""
        return impulse_noise(x, self.config.input_noise) if self.training else x

    def _augment(self, x: Tensor) -> Tensor:
        """Random rotation (±20°) and shift (±20%) per image, as DRCN's recipe."""
        if not self.config.augment or not self.training:
            return x
        return random_affine(x)

    # ------------------------------------------------------------------ contract

    def predict(self, x: Tensor) -> Tensor:
        return self.target_net(x)

    def reconstruct(self, x: Tensor) -> Tensor | None:
        if self.variant == "baseline":
            return None  # T1 is never trained
        return self.decoder(self.target_net.coupling(x))

    def monitor(self, data: TrainingData) -> dict[str, float]:
        """Eq. 14's terms, where S and T2 share a label space (not in transfer learning)."""
        if self.variant == "baseline":
            return {}
        probe = data.target[:2]
        if self.source.predict(probe).shape != self.target_net(probe).shape:
            return {}  # transfer learning: S's classes are not T2's
        return bound_terms(
            source=self.source,
            target=self,
            source_reconstruct=lambda x: self.decoder(self.source_adapter(self.source(x))),
            target_reconstruct=self.reconstruct,
            labelled_val=data.labelled_val,
            target_images=data.target,
            target_test=data.target_test,
        )

    def trainable_networks(self) -> dict[str, nn.Module]:
        if self.variant == "baseline":
            return {"target_net": self.target_net}
        networks = {"target_net": self.target_net, "decoder": self.decoder}
        if any(True for _ in self.source_adapter.parameters()):
            networks["source_adapter"] = self.source_adapter
        return networks

    def resumable_state(self) -> dict[str, Any]:
        """What crosses round boundaries: T1′ (``cetl_f``/``cetl_u``/``cetl_e2e``) and the DWA
        terms with their GFI and θ* (GFI2 is used in the next round's stage 1)."""
        state: dict[str, Any] = {
            name: {"gfi": p.gfi, "anchor": p.anchor, "reduction": p.reduction}
            for name, p in self._dwa.items()
        }
        if self._frozen_path is not None:
            state["frozen_decoder"] = self._frozen_path.state_dict()
        return state

    def load_resumable_state(self, state: dict[str, Any]) -> None:
        if "frozen_decoder" in state:
            self._freeze_decoder()
            self._frozen_path.load_state_dict(state["frozen_decoder"])
        self._dwa = {name: DWAPenalty(**value) for name, value in state.items() if name.startswith("dwa")}


class Baseline(CETL):
    """T2 alone with ``L_c^t`` (Table 2's baseline), at the same classification budget."""

    variant: ClassVar[Variant] = "baseline"


class CetlF(CETL):
    """T1∘S first, then T2 with Eq. 3 and T1 frozen."""

    variant: ClassVar[Variant] = "cetl_f"


class CetlU(CETL):
    """As ``cetl_f``, but T1 is also updated in the second phase."""

    variant: ClassVar[Variant] = "cetl_u"


class CetlE(CETL):
    """Algorithm 1 rounds without DWA."""

    variant: ClassVar[Variant] = "cetl_e"


class CetlFI(CETL):
    """Algorithm 1 with DWA from the plain Fisher (GFI = F, no masking: EWC)."""

    variant: ClassVar[Variant] = "cetl_fi"


class Cetl(CETL):
    """Algorithm 1 with DWA from the Generalized Fisher Information: the paper's method."""

    variant: ClassVar[Variant] = "cetl"


class CetlE2E(CETL):
    """Eq. 6 end to end: one update of T1, the adapter and T2 on all three terms."""

    variant: ClassVar[Variant] = "cetl_e2e"
