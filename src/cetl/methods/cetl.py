"""CETL: Algorithm 1 and its variants (paper Table 2; METHOD.md §2, §4).

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

:class:`CETL` holds the networks, the loss terms and the method contract; each variant is a
small class that states its own stage programme: ``baseline`` (stage 3 alone), ``cetl_e``
(Algorithm 1), ``cetl_fi``/``cetl`` (Algorithm 1 protected by DWA from the Fisher / the GFI,
through :class:`~cetl.fisher.protection.DWAProtection`), ``cetl_e2e`` (Eq. 6, one joint
update, after one stage-1 epoch that gives T1′ something to decode, D11), and in
:mod:`cetl.methods.cetl_sequential` ``cetl_f``/``cetl_u`` (Eq. 3).

Why one file: the variants are a few lines each over the shared :class:`CETL` base; reading them
side by side is how Table 2's differences are checked (the sequential pair lives in
:mod:`cetl.methods.cetl_sequential`).
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from cetl.data.augment import impulse_noise, random_affine
from cetl.data.training import TrainingData
from cetl.errors import ConfigError
from cetl.fisher import sampled_categorical_loss, sampled_gaussian_loss
from cetl.fisher.protection import Collectives, DWAProtection, FisherLoss
from cetl.losses.classification import classification_loss
from cetl.losses.distillation import soft_probability_loss
from cetl.losses.reconstruction import source_reconstruction_loss, target_reconstruction_loss
from cetl.methods.base import Batch, Component, Method, Stage, Update, labels_by_setting
from cetl.methods.cetl_config import CetlConfig
from cetl.monitor import bound_terms
from cetl.networks import TapNetwork
from cetl.source import FeatureCache, FrozenSource

__all__ = ["CETL", "Baseline", "Cetl", "CetlConfig", "CetlE", "CetlE2E", "CetlFI"]


class CETL(Method):
    """The CETL family's networks, loss terms and contract; subclasses state :meth:`stages`.

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
    components: ClassVar[frozenset[Component]] = frozenset(
        {"source", "decoder", "source_adapter", "feature_cache", "labelled_domain"}
    )
    trains_decoder: ClassVar[bool] = True
    """``False`` for ``baseline``: T1 is never trained, so it is neither reconstructed with,
    checkpointed nor fed S's features."""
    dwa: ClassVar[Literal["none", "fisher", "gfi"]] = "none"
    """Which DWA protects stages 1–3: none, the plain Fisher (EWC) or the GFI (Eq. 10)."""

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
        self._fisher_data: TrainingData | None = None
        self._world: Collectives | None = None
        self.protection: DWAProtection | None = None
        if self.dwa != "none":
            self.protection = DWAProtection(
                generalized=self.dwa == "gfi",
                sampled=config.fisher == "sampled",
                batches=config.fisher_batches,
                batch_size=config.fisher_batch_size,
                normalise=config.fisher_norm == "mean",
                rf_estimator=config.rf_estimator,
                rf_shared_zeros=config.rf_shared_zeros,
                rf_threshold=config.rf_threshold,
                keep_prob=config.keep_prob,
                reduction=config.dwa_reduction,
            )

    @classmethod
    def labelled_domain_for(cls, setting: str) -> Literal["source", "target"]:
        return labels_by_setting(setting)

    def prepare(self, data: TrainingData, world: Collectives) -> None:
        """Keep the data and processes DWA's estimates read; compute S's tap for every
        target-stream image once (D9), unless inputs vary."""
        self._fisher_data = data
        self._world = world
        if self._feature_cache is None:
            return
        if self.config.kd_weight > 0:  # S's soft targets for stage 3's inputs, which never vary
            self._labelled_soft = self._feature_cache.features(self.source, data.labelled.x).float()
        if not self.trains_decoder:
            return
        if self.config.augment:
            print(
                "cetl: source-feature cache bypassed: method.augment varies S's inputs (D9)", file=sys.stderr
            )
            return
        # float32 whatever autocast the engine prepares under: the Fisher pass runs without it
        self._features = self._feature_cache.features(self.source, data.target).float()

    # ------------------------------------------------------------------ stages

    def _classify_stage(self) -> Stage:
        """Stage 3: T2 on the labelled stream (``L_c^t``, with DWA3 where it exists)."""
        return Stage(
            "classify",
            ("labelled",),
            (Update("target_net", (self.target_net,), self._classify_protected, self._dwa_weights),),
        )

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
        """The DWA term ``name`` on ``network`` once its GFI exists; none without DWA."""
        return self.protection.penalty(name, network) if self.protection is not None else {}

    def _reconstruct_source_protected(self, batch: Batch) -> dict[str, Tensor]:
        return self._reconstruct_source(batch) | self._penalty("dwa2", self.decoder)

    def _reconstruct_target_protected(self, batch: Batch) -> dict[str, Tensor]:
        return self._reconstruct_target(batch) | self._penalty("dwa1", self.decoder)

    def _classify_protected(self, batch: Batch) -> dict[str, Tensor]:
        return self._classify(batch) | self._penalty("dwa3", self.target_net)

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

    def _fisher_loss(
        self, key: str, slot: int, images: Tensor, labels: Tensor | None, features: Tensor | None
    ) -> FisherLoss:
        """``fn((indices, *noise)) -> L̃_k`` for one micro-batch: sampled targets (D4) or the true ones.

        ``noise[slot]`` is this loss's pre-drawn noise on micro-batch k, and the function has no
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

    def _compute_gfi(
        self, name: str, network: nn.Module, stream: str, losses: tuple[str, str]
    ) -> dict[str, float]:
        """DWA term ``name`` on ``network``: F of ``losses[0]`` against ``losses[1]`` on the
        ``target`` (unlabelled) or ``labelled`` stream the engine handed to :meth:`prepare`."""
        assert self.protection is not None and self._fisher_data is not None and self._world is not None
        data = self._fisher_data
        images = data.target if stream == "target" else data.labelled.x
        labels = data.labelled.y if stream == "labelled" else None
        cached = self._features if stream == "target" else None

        def loss_for(key: str, slot: int) -> Callable[[tuple[Tensor, ...]], Tensor]:
            return self._fisher_loss(key, slot, images, labels, cached)

        return self.protection.estimate(
            name,
            network,
            images=images,
            losses=losses,
            loss_for=loss_for,
            num_classes=self.target_net.num_classes,
            modules=[self.target_net, self.decoder, self.source_adapter],
            world=self._world,
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
        if not self.trains_decoder:
            return None
        return self.decoder(self.target_net.coupling(x))

    def monitor(self, data: TrainingData) -> dict[str, float]:
        """Eq. 14's terms, where S and T2 share a label space (not in transfer learning)."""
        if not self.trains_decoder:
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
        if not self.trains_decoder:
            return {"target_net": self.target_net}
        networks = {"target_net": self.target_net, "decoder": self.decoder}
        if any(True for _ in self.source_adapter.parameters()):
            networks["source_adapter"] = self.source_adapter
        return networks

    def resumable_state(self) -> dict[str, Any]:
        """What crosses round boundaries: T1′ (``cetl_f``/``cetl_u``/``cetl_e2e``) and the DWA
        terms with their GFI and θ* (GFI2 is used in the next round's stage 1)."""
        state: dict[str, Any] = self.protection.state() if self.protection is not None else {}
        if self._frozen_path is not None:
            state["frozen_decoder"] = self._frozen_path.state_dict()
        return state

    def load_resumable_state(self, state: dict[str, Any]) -> None:
        if "frozen_decoder" in state:
            self._freeze_decoder()
            self._frozen_path.load_state_dict(state["frozen_decoder"])
        if self.protection is not None:
            self.protection.load_state(state)


class Baseline(CETL):
    """T2 alone with ``L_c^t`` (Table 2's baseline), at the same classification budget."""

    trains_decoder: ClassVar[bool] = False

    def stages(self, round_index: int) -> list[Stage]:
        return [self._classify_stage()]


class CetlE(CETL):
    """Algorithm 1 rounds: stage 1 (T1∘S), stage 2 (T1∘T2 against T1′∘S), stage 3 (T2)."""

    def stages(self, round_index: int) -> list[Stage]:
        reconstruct_source = Stage(
            "reconstruct_source",
            ("target",),
            (
                Update(
                    "decoder",
                    (self.decoder, self.source_adapter),
                    self._reconstruct_source_protected,
                    self._dwa_weights,
                ),
            ),
            on_end=self._end_reconstruct_source,
            epochs=self.config.reconstruct_epochs,
        )
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
        return [reconstruct_source, reconstruct_target, self._classify_stage()]

    def _end_reconstruct_source(self) -> dict[str, float]:
        """Freeze T1′ (D3); with DWA, compute GFI1 on T1 (protects ``L_r^s``, RF vs ``L_r^t``)."""
        self._freeze_decoder()
        if self.protection is None:
            return {}
        return self._compute_gfi("dwa1", self.decoder, "target", ("recon_source", "recon_target"))

    def _end_reconstruct_target(self) -> dict[str, float] | None:
        """With DWA: GFI2 on T1 (protects ``L_r^t``, RF vs ``L_r^s``) and GFI3 on T2 (protects
        ``L_r^t``, RF vs ``L_c^t``, both on labelled micro-batches), METHOD.md D6."""
        if self.protection is None:
            return None
        record = self._compute_gfi("dwa2", self.decoder, "target", ("recon_target", "recon_source"))
        return record | self._compute_gfi("dwa3", self.target_net, "labelled", ("recon_target", "classify"))


class CetlFI(CetlE):
    """Algorithm 1 with DWA from the plain Fisher (GFI = F, no masking: EWC)."""

    dwa: ClassVar[Literal["none", "fisher", "gfi"]] = "fisher"


class Cetl(CetlE):
    """Algorithm 1 with DWA from the Generalized Fisher Information: the paper's method."""

    dwa: ClassVar[Literal["none", "fisher", "gfi"]] = "gfi"


class CetlE2E(CETL):
    """Eq. 6 end to end: one update of T1, the adapter and T2 on all three terms."""

    def stages(self, round_index: int) -> list[Stage]:
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

    def _joint(self, batch: Batch) -> dict[str, Tensor]:
        return self._reconstruct_source(batch) | self._classify(batch) | self._reconstruct_target(batch)
