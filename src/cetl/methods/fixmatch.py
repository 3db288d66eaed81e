"""``fixmatch``: semi-supervised learning from few labels and many unlabelled images, no S at all.

Sohn, Berthelot, Li, Zhang, Carlini, Cubuk, Kurakin, Zhang, Raffel, "FixMatch: Simplifying
Semi-Supervised Learning with Consistency and Confidence", NeurIPS 2020, §2.2–2.3:

- supervised term (Eq. 2): ``ℓ_s = (1/B) Σ_b H(y_b, p(y | α(x_b)))`` on weakly augmented
  labelled images;
- unlabelled term (Eq. 4): ``ℓ_u = (1/μB) Σ_b 1(max q_b ≥ τ) H(argmax q_b, p(y | A(u_b)))``
  with ``q_b = p(y | α(u_b))`` (no gradient): the prediction on a weak view becomes the
  pseudo-label of a strong view when it is confident;
- loss ``ℓ_s + λ_u ℓ_u``; the paper's τ = 0.95, λ_u = 1, μ = 7, and an exponential moving
  average of the weights (decay 0.999) for evaluation.

Weak α and strong A (RandAugment + Cutout) are :mod:`cetl.data.randaugment`'s. One forward
pass reads the labelled, weak and strong batches together, as the reference code does (one
set of BatchNorm statistics). The two engine contracts it needs are general: a stage's
streams may draw different batch sizes (``Stage.batch_scale``: μ unlabelled images per
labelled one) and the engine keeps the weight average (``Method.averaged_networks``).

The stage's epoch is one pass over the labelled images, as ``target_only``'s classification
epoch, so both take the same number of optimiser steps; each step of ``fixmatch`` also reads
μ·B unlabelled images. The D10 balance shows whether the unlabelled term was active: no
confident pseudo-label means no gradient, and the term is reported inert.

``fixmatch_kd`` adds the distillation term of ``kd`` on the unlabelled images: S's softened
logits of each image against T2's on its weak view, for a forward-only S that predicts the
target's classes (METHOD.md §11's "fixmatch with the distillation term added").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cetl.config import MethodConfig, NonNegativeFloat, PositiveFloat, PositiveInt, Probability, Range
from cetl.data.randaugment import strong, weak
from cetl.data.training import TrainingData
from cetl.fisher.protection import Collectives
from cetl.losses.classification import classification_loss
from cetl.losses.distillation import soft_target_loss
from cetl.methods.base import Batch, Component, Method, Stage, Update, labels_by_setting
from cetl.methods.kd import cached_logits, teacher_logits
from cetl.networks import TapNetwork
from cetl.source import FrozenSource


@dataclass(frozen=True, kw_only=True)
class FixMatchConfig(MethodConfig):
    """FixMatch's options, at the paper's values."""

    name: str = "fixmatch"
    threshold: Probability = 0.95
    """τ: the confidence a weak view's prediction needs to become a pseudo-label."""
    unlabelled_weight: NonNegativeFloat = 1.0
    """λ_u: the weight of the unlabelled term (0 leaves weakly augmented supervised training)."""
    unlabelled_ratio: PositiveInt = 7
    """μ: unlabelled images per labelled image in each step's batch."""
    ema_decay: Annotated[float, Range(ge=0, lt=1)] = 0.999
    """Decay per step of the weight average that is evaluated and kept (0: the trained weights)."""


class FixMatch(Method):
    """Sohn et al. 2020 on the labelled stream and the unlabelled target stream.

    Args:
        config: τ, λ_u, μ and the average's decay.
        target_net: T2.
        labelled_domain: whose labels the supervised term reads.
    """

    Config = FixMatchConfig
    components: ClassVar[frozenset[Component]] = frozenset({"labelled_domain"})

    def __init__(
        self, config: FixMatchConfig, *, target_net: TapNetwork, labelled_domain: Literal["source", "target"]
    ) -> None:
        super().__init__()
        self.config = config
        self.target_net = target_net
        self.labelled_domain = labelled_domain

    @classmethod
    def labelled_domain_for(cls, setting: str) -> Literal["source", "target"]:
        return labels_by_setting(setting)

    def stages(self, round_index: int) -> list[Stage]:
        weights = {"unlabelled": self.config.unlabelled_weight, **self._extra_weights()}
        update = Update("target_net", (self.target_net,), self._losses, weights)
        batch_scale = {"target": self.config.unlabelled_ratio}
        return [Stage("fixmatch", ("labelled", "target"), (update,), batch_scale=batch_scale)]

    def _extra_weights(self) -> dict[str, float]:
        return {}

    def _losses(self, batch: Batch) -> dict[str, Tensor]:
        assert batch.x is not None and batch.x_tgt is not None
        labelled, unlabelled = len(batch.x), len(batch.x_tgt)
        weak_target = weak(batch.x_tgt)
        logits = self.target_net(torch.cat([weak(batch.x), weak_target, strong(batch.x_tgt)]))
        supervised, on_weak, on_strong = logits.split([labelled, unlabelled, unlabelled])
        confidence, pseudo = on_weak.detach().float().softmax(dim=1).max(dim=1)
        confident = (confidence >= self.config.threshold).float()
        consistency = (F.cross_entropy(on_strong.float(), pseudo, reduction="none") * confident).mean()
        terms = {"classify": classification_loss(supervised, batch.y), "unlabelled": consistency}
        return terms | self._extra_terms(batch, on_weak)

    def _extra_terms(self, batch: Batch, on_weak: Tensor) -> dict[str, Tensor]:
        return {}

    def averaged_networks(self) -> dict[str, float]:
        return {"target_net": self.config.ema_decay} if self.config.ema_decay > 0 else {}

    def predict(self, x: Tensor) -> Tensor:
        return self.target_net(x)

    def trainable_networks(self) -> dict[str, nn.Module]:
        return {"target_net": self.target_net}


@dataclass(frozen=True, kw_only=True)
class FixMatchKDConfig(FixMatchConfig):
    """FixMatch plus the distillation of S's predictions on the unlabelled images."""

    name: str = "fixmatch_kd"
    temperature: PositiveFloat = 4.0
    """τ of the soft targets (Hinton et al. 2015), as ``kd``'s."""
    distill_weight: NonNegativeFloat = 1.0
    """Weight of the distillation term beside ℓ_s + λ_u ℓ_u."""


class FixMatchKD(FixMatch):
    """``fixmatch`` + ``τ² KL(softmax(S(u)/τ) ‖ softmax(T2(α(u))/τ))`` on the unlabelled batch.

    S's logits of every unlabelled image are computed once (S is frozen, its inputs fixed; the
    student reads a weak view of the image S saw, as augmentation never re-runs S).
    """

    Config = FixMatchKDConfig
    components: ClassVar[frozenset[Component]] = frozenset({"source", "labelled_domain"})

    def __init__(
        self,
        config: FixMatchKDConfig,
        *,
        target_net: TapNetwork,
        source: FrozenSource,
        labelled_domain: Literal["source", "target"],
    ) -> None:
        super().__init__(config, target_net=target_net, labelled_domain=labelled_domain)
        self.kd_config = config
        self.source = source
        self._teacher: Tensor | None = None  # (N_target, K) once prepared

    def prepare(self, data: TrainingData, world: Collectives) -> None:
        self._teacher = teacher_logits(self.source, data.target)

    def _extra_weights(self) -> dict[str, float]:
        return {"distill": self.kd_config.distill_weight}

    def _extra_terms(self, batch: Batch, on_weak: Tensor) -> dict[str, Tensor]:
        assert batch.x_tgt is not None
        teacher = cached_logits(self.source, batch.x_tgt, batch.idx_tgt, self._teacher)
        return {"distill": soft_target_loss(on_weak, teacher, self.kd_config.temperature)}
