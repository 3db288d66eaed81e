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
``cetl_e2e`` (Eq. 6, one joint update).
"""

from __future__ import annotations

import copy
import math
import sys
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cetl.config import MethodConfig
from cetl.data.training import TrainingData
from cetl.errors import ConfigError
from cetl.losses.classification import classification_loss
from cetl.losses.reconstruction import source_reconstruction_loss, target_reconstruction_loss
from cetl.methods.base import Batch, Method, Stage, Update
from cetl.networks import TapNetwork
from cetl.source import FeatureCache, FrozenSource

Variant = Literal["baseline", "cetl_f", "cetl_u", "cetl_e", "cetl_e2e"]


@dataclass(frozen=True, kw_only=True)
class CetlConfig(MethodConfig):
    """Options of the CETL family (METHOD.md §2, §4, §9)."""

    name: str = "cetl_e"
    recon_target: Literal["frozen", "live"] = "frozen"
    """D3: the target of ``L_r^t`` is T1′(S(x)) with T1′ frozen at the end of stage 1
    (``frozen``), or T1(S(x)) from the T1 being trained, detached (``live``)."""
    classify_weight: float = 0.7
    """λ of Eq. 3 (``cetl_f``, ``cetl_u``): ``λ L_c^t + (1−λ) L_r^t``; 0.7 as DRCN."""
    e2e_recon_source_weight: float = 0.3
    """λ1 of Eq. 6 (``cetl_e2e``)."""
    e2e_classify_weight: float = 0.7
    """λ2 of Eq. 6 (``cetl_e2e``)."""
    e2e_recon_target_weight: float = 0.3
    """λ3 of Eq. 6 (``cetl_e2e``)."""
    phase1_epochs: int = 4
    """``cetl_f``/``cetl_u``: epochs of stage 1 (T1∘S) before T2 is trained."""
    reconstruct_epochs: int = 1
    """Epochs of each reconstruction stage (1 and 2) per round (D7's ``stage_epochs`` for them)."""
    target_init: Literal["random", "source"] = "random"
    """Initialise T2 randomly or from S's weights (needs the same architecture)."""
    input_noise: float = 0.0
    """DRCN-style denoising: fraction of input pixels zeroed on the reconstruction stages."""
    augment: bool = False
    """DRCN-style augmentation on the reconstruction stages: rotation ±20°, shift ±20%.
    Inputs then vary per step, so the source-feature cache is bypassed (D9)."""


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
        for name in ("classify_weight",):
            if not 0.0 <= getattr(config, name) <= 1.0:
                raise ConfigError(f"method.{name} must be in [0, 1], got {getattr(config, name)}")
        if not 0.0 <= config.input_noise < 1.0:
            raise ConfigError(f"method.input_noise must be in [0, 1), got {config.input_noise}")
        self.config = config
        self.target_net = target_net
        self.decoder = decoder
        self.source = source
        self.source_adapter = source_adapter
        self.labelled_domain = labelled_domain
        self._feature_cache = feature_cache
        self._features: Tensor | None = None  # (N_target, *tap_shape) once prepared
        self._frozen_path: nn.Module | None = None  # T1′ ∘ adapter′ (D3)

    @classmethod
    def labelled_domain_for(cls, setting: str) -> Literal["source", "target"]:
        return "source" if setting == "domain_adaptation" else "target"

    def prepare(self, data: TrainingData) -> None:
        """Compute S's tap for every target-stream image once (D9), unless inputs vary."""
        if self.variant == "baseline" or self._feature_cache is None:
            return
        if self.config.augment:
            print(
                "cetl: source-feature cache bypassed: method.augment varies S's inputs (D9)", file=sys.stderr
            )
            return
        self._features = self._feature_cache.features(self.source, data.target)

    # ------------------------------------------------------------------ stages

    def stages(self, round_index: int) -> list[Stage]:
        t1_path = (self.decoder, self.source_adapter)
        classify = Stage(
            "classify", ("labelled",), (Update("target_net", (self.target_net,), self._classify),)
        )
        reconstruct_source = Stage(
            "reconstruct_source",
            ("target",),
            (Update("decoder", t1_path, self._reconstruct_source),),
            on_end=self._freeze_decoder,
            epochs=self.config.reconstruct_epochs,
        )
        if self.variant == "baseline":
            return [classify]
        if self.variant == "cetl_e":
            reconstruct_target = Stage(
                "reconstruct_target",
                ("target",),
                (
                    Update(
                        "decoder_and_target_net", (self.decoder, self.target_net), self._reconstruct_target
                    ),
                ),
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
                        {"classify": weight, "recon_target": 1 - weight},
                    ),
                ),
            )
            if round_index == 0:
                first = Stage(
                    "reconstruct_source",
                    ("target",),
                    (Update("decoder", t1_path, self._reconstruct_source),),
                    on_end=self._freeze_decoder,
                    epochs=self.config.phase1_epochs,
                )
                return [first, coupled]
            return [coupled]
        weights = {
            "recon_source": self.config.e2e_recon_source_weight,
            "classify": self.config.e2e_classify_weight,
            "recon_target": self.config.e2e_recon_target_weight,
        }
        everything = (self.decoder, self.source_adapter, self.target_net)
        joint = Update("joint", everything, self._joint, weights)
        return [Stage("joint", ("labelled", "target"), (joint,), on_end=self._freeze_decoder)]

    # ------------------------------------------------------------------ loss terms

    def _classify(self, batch: Batch) -> dict[str, Tensor]:
        return {"classify": classification_loss(self.target_net(batch.x), batch.y)}

    def _reconstruct_source(self, batch: Batch) -> dict[str, Tensor]:
        clean = self._augment(batch.x_tgt)
        noisy = self._add_noise(clean)
        cached = batch.idx_tgt if noisy is batch.x_tgt else None
        recons1 = self.decoder(self.source_adapter(self._source_tap(noisy, cached)))
        return {"recon_source": source_reconstruction_loss(recons1, clean)}

    def _reconstruct_target(self, batch: Batch) -> dict[str, Tensor]:
        clean = self._augment(batch.x_tgt)
        target = self._recons1(clean, batch.idx_tgt if clean is batch.x_tgt else None)
        coupling = self.target_net.coupling_tap
        features = self.target_net.forward_taps(self._add_noise(clean), [coupling])[coupling]
        return {"recon_target": target_reconstruction_loss(self.decoder(features), target)}

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
            self._freeze_decoder()  # cetl_e2e's first round: T1′ is the initial T1
        return self._frozen_path(features)

    def _freeze_decoder(self) -> None:
        """Take T1′ (with the adapter): the fixed reconstruction target of stage 2 (D3)."""
        path = nn.Sequential(self.source_adapter, self.decoder)
        self._frozen_path = copy.deepcopy(path).eval().requires_grad_(False)

    def _add_noise(self, x: Tensor) -> Tensor:
        if self.config.input_noise <= 0.0 or not self.training:
            return x
        return x * (torch.rand_like(x) >= self.config.input_noise)

    def _augment(self, x: Tensor) -> Tensor:
        """Random rotation (±20°) and shift (±20%) per image, as DRCN's reconstruction pipeline."""
        if not self.config.augment or not self.training:
            return x
        batch = x.shape[0]
        angle = (torch.rand(batch, device=x.device) * 2 - 1) * math.radians(20)
        shift = (torch.rand(batch, 2, device=x.device) * 2 - 1) * 0.4  # grid units: 0.4 = 20% of width
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.stack(
            [torch.stack([cos, -sin, shift[:, 0]], dim=1), torch.stack([sin, cos, shift[:, 1]], dim=1)], dim=1
        )  # (B, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")

    # ------------------------------------------------------------------ contract

    def predict(self, x: Tensor) -> Tensor:
        return self.target_net(x)

    def trainable_networks(self) -> dict[str, nn.Module]:
        if self.variant == "baseline":
            return {"target_net": self.target_net}
        networks = {"target_net": self.target_net, "decoder": self.decoder}
        if any(True for _ in self.source_adapter.parameters()):
            networks["source_adapter"] = self.source_adapter
        return networks

    def resumable_state(self) -> dict[str, Any]:
        """T1′ crosses round boundaries in ``cetl_f``/``cetl_u``/``cetl_e2e``: save it."""
        return {} if self._frozen_path is None else {"frozen_decoder": self._frozen_path.state_dict()}

    def load_resumable_state(self, state: dict[str, Any]) -> None:
        if "frozen_decoder" in state:
            self._freeze_decoder()
            self._frozen_path.load_state_dict(state["frozen_decoder"])


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


class CetlE2E(CETL):
    """Eq. 6 end to end: one update of T1, the adapter and T2 on all three terms."""

    variant: ClassVar[Variant] = "cetl_e2e"
