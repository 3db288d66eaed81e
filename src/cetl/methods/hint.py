"""``hint``: feature distillation without a decoder, the shortest route for S's features into T2.

A FitNets hint (Romero et al., ICLR 2015, Eq. 3) read at S's configured tap, on the unlabelled
target stream: T2's coupling tap, through a learned regressor r, is regressed onto S's tap
features, ``‖S(x) − r(T2_tap(x))‖²`` (a mean, as :func:`~cetl.losses.distillation.hint_loss`);
then T2 is trained with the classification loss (Eq. 4) on the labelled images. It reads S
only forward and only at its tap, as CETL does, so it works with any source CETL works with
(a packaged ImageNet network, an ONNX file) — the competitor with **the same access to S**
(METHOD.md §11): where S's features help T2, this transfers them without CETL's decoder T1,
its reconstruction targets or its Fisher weighting.

Schedule (``hint_rounds``): ``every`` (default) runs one hint epoch before each classification
epoch, round after round, as CETL's stage 2 precedes its stage 3, so both see the unlabelled
images and the labels equally often; ``first`` is FitNets' own order (the hint stage once, in
round 0, for ``hint_epochs``). S's features are computed once per run (D9).

Unlike ``fitnets`` (Table 4), which reads a project teacher's intermediate layers and only the
labelled images, this needs no teacher architecture: any tap S exposes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from torch import Tensor, nn

from cetl.config import MethodConfig, PositiveInt
from cetl.data.training import TrainingData
from cetl.fisher.protection import Collectives
from cetl.losses.classification import classification_loss
from cetl.losses.distillation import hint_loss
from cetl.methods.base import Batch, Component, Method, Stage, Update, labels_by_setting
from cetl.networks import TapNetwork
from cetl.networks.coupling import source_adapter
from cetl.source import FeatureCache, FrozenSource


@dataclass(frozen=True, kw_only=True)
class HintConfig(MethodConfig):
    """Options of the decoder-free feature hint."""

    name: str = "hint"
    hint_rounds: Literal["every", "first"] = "every"
    """``every``: a hint stage before every classification epoch; ``first``: only in round 0."""
    hint_epochs: PositiveInt = 1
    """Epochs of each hint stage over the unlabelled target images."""


class FeatureHint(Method):
    """T2's coupling tap regressed onto S's tap on unlabelled target images, then classification.

    Args:
        config: the schedule.
        target_net: T2; its coupling tap is the guided layer.
        source: S, frozen, read at its configured tap (the hint).
        feature_cache: computes S's tap for the target stream once (D9); ``None`` runs S per step.
        labelled_domain: whose labels the classification stage reads.
    """

    Config = HintConfig
    components: ClassVar[frozenset[Component]] = frozenset({"source", "feature_cache", "labelled_domain"})

    def __init__(
        self,
        config: HintConfig,
        *,
        target_net: TapNetwork,
        source: FrozenSource,
        feature_cache: FeatureCache | None,
        labelled_domain: Literal["source", "target"],
    ) -> None:
        super().__init__()
        self.config = config
        self.target_net = target_net
        self.source = source
        self.labelled_domain = labelled_domain
        self._feature_cache = feature_cache
        self._features: Tensor | None = None  # (N_target, *tap_shape) once prepared
        image = (target_net.in_channels, target_net.image_size, target_net.image_size)
        # The regressor r maps T2's tap to S's: D1's source adapter, in the other direction.
        self.regressor = source_adapter(
            target_net.tap_shape(target_net.coupling_tap), source.tap_shape(image)
        )

    @classmethod
    def labelled_domain_for(cls, setting: str) -> Literal["source", "target"]:
        return labels_by_setting(setting)

    def prepare(self, data: TrainingData, world: Collectives) -> None:
        """S's tap for every unlabelled target image, once (S is frozen, its inputs fixed)."""
        if self._feature_cache is not None:
            self._features = self._feature_cache.features(self.source, data.target).float()

    def stages(self, round_index: int) -> list[Stage]:
        classify = Stage(
            "classify", ("labelled",), (Update("target_net", (self.target_net,), self._classify),)
        )
        if self.config.hint_rounds == "first" and round_index > 0:
            return [classify]
        hinted = Update("hinted", (self.target_net, self.regressor), self._hint)
        return [Stage("hint", ("target",), (hinted,), epochs=self.config.hint_epochs), classify]

    def _hint(self, batch: Batch) -> dict[str, Tensor]:
        assert batch.x_tgt is not None
        if self._features is not None and batch.idx_tgt is not None:
            hint = self._features[batch.idx_tgt]
        else:
            hint = self.source(batch.x_tgt).float()
        return {"hint": hint_loss(self.regressor(self.target_net.coupling(batch.x_tgt)), hint)}

    def _classify(self, batch: Batch) -> dict[str, Tensor]:
        return {"classify": classification_loss(self.target_net(batch.x), batch.y)}

    def predict(self, x: Tensor) -> Tensor:
        return self.target_net(x)

    def trainable_networks(self) -> dict[str, nn.Module]:
        return {"target_net": self.target_net, "regressor": self.regressor}
