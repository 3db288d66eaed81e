"""``kd``: Hinton et al.'s soft-target distillation from a frozen S, on every image it may read.

The teacher is S (METHOD.md §5): a :class:`~cetl.source.FrozenSource`, never trained, read
only forward (its logits: a project network, a torchvision/timm model or an ONNX file).
With few labels and a forward-only S (issue 36) the soft term reads the unlabelled target
images as well, the recipe DINE (Liang et al., CVPR 2022) distils a prediction-only source
with; where every training image is labelled (Table 4) it is Hinton's training-set form.
τ = 4 and α = 0.9 are fixed at the values distillation papers use (Hinton et al. 2015;
Tian et al.'s RepDistiller benchmarks), not chosen on any split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from cetl.config import MethodConfig, PositiveFloat, Probability
from cetl.data.training import TrainingData
from cetl.fisher.protection import Collectives
from cetl.losses.classification import classification_loss
from cetl.losses.distillation import soft_target_loss
from cetl.methods.base import Batch, Component, Method, Stage, Update, labels_by_setting
from cetl.networks import TapNetwork
from cetl.source import FrozenSource

TEACHER_BATCH = 512
"""Images per teacher forward pass when its logits are precomputed."""


def teacher_logits(source: FrozenSource, images: Tensor) -> Tensor:
    """S's logits for ``images``, in chunks (S is frozen and its inputs fixed, so once per run)."""
    return torch.cat([source.predict(chunk).float() for chunk in images.split(TEACHER_BATCH)])


def cached_logits(source: FrozenSource, x: Tensor, index: Tensor | None, cached: Tensor | None) -> Tensor:
    """A batch's rows of :func:`teacher_logits` when they were computed, else S run on ``x``."""
    if index is not None and cached is not None:
        return cached[index]
    return source.predict(x).float()


@dataclass(frozen=True, kw_only=True)
class KDConfig(MethodConfig):
    """Options of Hinton et al.'s soft-target distillation."""

    name: str = "kd"
    temperature: PositiveFloat = 4.0
    """τ of the soft targets on both sides (Hinton et al. 2015, Eq. 1)."""
    soft_weight: Probability = 0.9
    """α: the weight of the soft term; the hard-label cross-entropy weighs 1 − α."""
    distill_on: Literal["auto", "all", "labelled"] = "auto"
    """Images the soft term reads: ``all`` (the labelled and the unlabelled target images: with a
    forward-only S and few labels, the unlabelled ones carry most of what S can teach, as in
    DINE, Liang et al. CVPR 2022), ``labelled`` (Hinton's form: the training set), ``auto``
    (``labelled`` in the distillation setting, whose every training image is labelled — Table 4
    — and ``all`` elsewhere)."""


class KnowledgeDistillation(Method):
    """Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network" (2015), Eq. 1 and §2.

    One stage, ``distill``: ``α · τ² · KL(softmax(t/τ) ‖ softmax(s/τ)) + (1 − α) · CE(s, y)``,
    with t the frozen teacher's logits and s the student's. The cross-entropy reads the labelled
    images; the soft term reads them too and, with ``distill_on=all``, the unlabelled target
    images (one KL averaged over both batches). Then the stage's epoch is one pass over the
    target images (its first stream) with the labelled images cycled alongside, run once per
    round; otherwise one epoch of the labelled images, as ``target_only``. S never changes and
    never sees autograd, so its logits are computed once in :meth:`prepare` and indexed per batch.

    Args:
        config: τ and α.
        target_net: the student (T2).
        source: the teacher (S), frozen.
        labelled_domain: whose labels the student reads (``target`` in distillation).
    """

    Config = KDConfig
    components: ClassVar[frozenset[Component]] = frozenset({"source", "labelled_domain", "setting"})

    def __init__(
        self,
        config: KDConfig,
        *,
        target_net: TapNetwork,
        source: FrozenSource,
        labelled_domain: Literal["source", "target"],
        setting: str = "transfer",
    ) -> None:
        super().__init__()
        self.config = config
        self.target_net = target_net
        self.source = source
        self.labelled_domain = labelled_domain
        self.distill_unlabelled = config.distill_on == "all" or (
            config.distill_on == "auto" and setting != "distillation"
        )
        self._teacher_logits: Tensor | None = None  # (N_labelled, K) once prepared
        self._teacher_target: Tensor | None = None  # (N_target, K) when the unlabelled are distilled

    @classmethod
    def labelled_domain_for(cls, setting: str) -> Literal["source", "target"]:
        """The student's training labels: target data, except source data in domain adaptation
        (where reading target labels would make it an oracle)."""
        return labels_by_setting(setting)

    def prepare(self, data: TrainingData, world: Collectives) -> None:
        """Precompute the teacher's logits for every image the soft term reads (S is frozen)."""
        self._teacher_logits = teacher_logits(self.source, data.labelled.x)
        if self.distill_unlabelled:
            self._teacher_target = teacher_logits(self.source, data.target)

    def stages(self, round_index: int) -> list[Stage]:
        return [self._distill_stage()]

    def _distill_stage(self) -> Stage:
        alpha = self.config.soft_weight
        update = Update(
            "target_net", (self.target_net,), self._distill, {"distill": alpha, "classify": 1 - alpha}
        )
        if self.distill_unlabelled:
            return Stage("distill", ("target", "labelled"), (update,), epochs=1)
        return Stage("distill", ("labelled",), (update,))

    def _distill(self, batch: Batch) -> dict[str, Tensor]:
        teacher = cached_logits(self.source, batch.x, batch.idx, self._teacher_logits)
        if batch.x_tgt is None:
            student = self.target_net(batch.x)
        else:  # one forward pass over both batches; the soft term averages over all of them
            student = self.target_net(torch.cat([batch.x, batch.x_tgt]))
            unlabelled = cached_logits(self.source, batch.x_tgt, batch.idx_tgt, self._teacher_target)
            teacher = torch.cat([teacher, unlabelled])
        logits = student[: len(batch.x)]
        return {
            "distill": soft_target_loss(student, teacher, self.config.temperature),
            "classify": classification_loss(logits, batch.y),
        }

    def predict(self, x: Tensor) -> Tensor:
        return self.target_net(x)

    def trainable_networks(self) -> dict[str, nn.Module]:
        return {"target_net": self.target_net}
