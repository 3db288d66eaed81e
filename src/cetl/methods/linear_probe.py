"""``linear_probe``: a linear classifier on S's frozen features — S kept at inference.

The reference for how much S's features already know about the target task: one ``nn.Linear``
trained with the classification loss (Eq. 4) on S's tap features of the labelled images,
predicting through S at test time. It is **not a small model**: S runs on every prediction
(EfficientNet-Lite0: 4.65M parameters on a 224-px image, against CI-CNN's 3.72M on 32 px), so
reports label it as a reference, never as a row CETL's T2 competes with on equal terms. Where
the probe is below T2 trained alone, S's features carry little for this task, and no method
that transfers them should be expected to pay.

S's features are computed once per image (D9) and looked up by content when the engine
evaluates (:class:`~cetl.source.cache.FeatureLookup`), so each round costs the head's training
only. ``epochs_per_round`` classification epochs run each round (a linear head on cached
features is cheap; 10 rounds × 10 epochs is 2,800 Adam steps on 3,600 images).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Literal

from torch import Tensor, nn

from cetl.config import MethodConfig, PositiveInt
from cetl.data.training import TrainingData
from cetl.fisher.protection import Collectives
from cetl.losses.classification import classification_loss
from cetl.methods.base import Batch, Component, Method, Stage, Update, labels_by_setting
from cetl.networks import TapNetwork
from cetl.source import FeatureCache, FrozenSource
from cetl.source.cache import FeatureLookup


@dataclass(frozen=True, kw_only=True)
class LinearProbeConfig(MethodConfig):
    """Options of the linear probe."""

    name: str = "linear_probe"
    epochs_per_round: PositiveInt = 10
    """Classification epochs of the linear head per round."""


class LinearProbe(Method):
    """A linear head on S's tap features, trained on the labelled images; predicts through S.

    Args:
        config: the head's epochs per round.
        target_net: T2 as configured; only its number of classes is read.
        source: S, frozen, read at its configured tap.
        feature_cache: where S's features are kept across runs (D9); ``None`` keeps them in memory.
        labelled_domain: whose labels the head reads.
    """

    Config = LinearProbeConfig
    components: ClassVar[frozenset[Component]] = frozenset({"source", "feature_cache", "labelled_domain"})

    def __init__(
        self,
        config: LinearProbeConfig,
        *,
        target_net: TapNetwork,
        source: FrozenSource,
        feature_cache: FeatureCache | None,
        labelled_domain: Literal["source", "target"],
    ) -> None:
        super().__init__()
        self.config = config
        self.source = source
        self.labelled_domain = labelled_domain
        self._feature_cache = feature_cache or FeatureCache(cache_dir=None)
        image = (target_net.in_channels, target_net.image_size, target_net.image_size)
        self.head = nn.Linear(math.prod(source.tap_shape(image)), target_net.num_classes)
        self._lookup = FeatureLookup(source)
        self._labelled: Tensor | None = None  # (N_labelled, D) once prepared

    @classmethod
    def labelled_domain_for(cls, setting: str) -> Literal["source", "target"]:
        return labels_by_setting(setting)

    def prepare(self, data: TrainingData, world: Collectives) -> None:
        """S's features of the target training and test images, once; the labelled images are
        among the former in transfer learning, so they cost no further pass of S."""
        for images in (data.target, data.target_test.x):
            if len(images):
                self._lookup.add(images, self._feature_cache.features(self.source, images).float())
        self._labelled = self._lookup(data.labelled.x)

    def stages(self, round_index: int) -> list[Stage]:
        update = Update("head", (self.head,), self._classify)
        return [Stage("classify", ("labelled",), (update,), epochs=self.config.epochs_per_round)]

    def _classify(self, batch: Batch) -> dict[str, Tensor]:
        if self._labelled is not None and batch.idx is not None:
            features = self._labelled[batch.idx]
        else:
            features = self._lookup(batch.x)
        return {"classify": classification_loss(self.head(features.flatten(1)), batch.y)}

    def predict(self, x: Tensor) -> Tensor:
        return self.head(self._lookup(x).flatten(1))

    def trainable_networks(self) -> dict[str, nn.Module]:
        return {"head": self.head}

    def exportable(self) -> nn.Module:
        """S and the head as one network (images in [0,1] → logits), for ``eval`` and ``export``."""
        return ProbedSource(self.source, self.head)


class ProbedSource(nn.Module):
    """A frozen S followed by a trained linear head on its tap features."""

    def __init__(self, source: FrozenSource, head: nn.Linear) -> None:
        super().__init__()
        self.source = source
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.source(x).float().flatten(1))
