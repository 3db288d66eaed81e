"""``shot``: source-free adaptation of a copy of S (Liang, Hu, Feng, "Do We Really Need to Access
the Source Data? Source Hypothesis Transfer for Unsupervised Domain Adaptation", ICML 2020).

The method a practitioner with a trained source network and unlabelled target images would
pick today. S's network is split into the feature extractor g (every layer before the last
fully connected one) and the hypothesis h (that last layer). A trainable copy of S is adapted on
unlabelled target images; h stays frozen ("source hypothesis transfer", §3.1), g learns with

- information maximisation (§3.2, Eq. 2): ``L_ent = E_x[-Σ_k δ_k log δ_k]`` (each prediction
  confident) and ``L_div = Σ_k p̂_k log p̂_k`` with ``p̂ = E_x[δ(x)]`` (predictions diverse over
  the target set), δ = softmax(h(g(x)));
- self-supervised pseudo-labels (§3.3, Eqs. 4–6): class centroids of the target features
  weighted by the predictions, ``c_k = Σ_x δ_k(x) ĝ(x) / Σ_x δ_k(x)``; each image takes its
  nearest centroid by cosine distance; centroids are recomputed once from those hard labels
  and the images relabelled (Eq. 5). ĝ(x) is g's output with a 1 appended, L2-normalised, as
  the authors' code does. The labels are recomputed at the start of every round (the authors:
  every epoch), with the network in eval mode, and read through ``Batch.idx_tgt``;
- the full objective (Eq. 6): ``L = L_ent + L_div + β · CE(pseudo-labels)``, β = 0.3.

S itself stays frozen and bit-identical (the method trains a ``copy.deepcopy``); an ONNX S has
no weights to adapt and is refused. Differences from the paper, recorded in docs/baselines.md:
S is whatever network the user has (the paper trains its own with label smoothing, a
batch-normalised bottleneck and a weight-normalised head); the optimiser and budget are the
experiment's, as for every method it is compared with.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cetl.config import MethodConfig, NonNegativeFloat, NonNegativeInt
from cetl.errors import ConfigError
from cetl.losses.classification import classification_loss
from cetl.losses.information import information_maximisation
from cetl.methods.base import Batch, Component, Method, Stage, Update
from cetl.methods.fine_tune import FineTunedNetwork
from cetl.networks import TapNetwork
from cetl.source import FrozenSource, InputTransform

if TYPE_CHECKING:
    from cetl.data.training import TrainingData
    from cetl.fisher.protection import Collectives

LABEL_BATCH = 1024
"""Images per forward pass when pseudo-labelling the whole target set."""


@dataclass(frozen=True, kw_only=True)
class ShotConfig(MethodConfig):
    """Options of ``shot`` (module docstring; defaults are the paper's)."""

    name: str = "shot"
    pseudo_label_weight: NonNegativeFloat = 0.3
    """β of Eq. 6 (the paper's 0.3 on every benchmark); 0 is SHOT-IM, its ablation."""
    diversity_weight: NonNegativeFloat = 1.0
    """Weight of ``L_div``; ``L_ent`` weighs 1 (the paper weighs them equally)."""
    relabel_steps: NonNegativeInt = 1
    """Centroid-and-relabel iterations after the prediction-weighted centroids (the paper: 1)."""


def centroid_labels(features: Tensor, probabilities: Tensor, *, relabel_steps: int) -> Tensor:
    """SHOT's pseudo-labels (Eqs. 4–5) for features ``(N, D)`` and predictions ``(N, K)``.

    Classes that no image predicts get no centroid (the authors' code), so a label is always a
    class some image was predicted as.
    """
    augmented = torch.cat([features.float(), features.new_ones(len(features), 1).float()], dim=1)
    augmented = F.normalize(augmented, dim=1)
    present = torch.unique(probabilities.argmax(dim=1))
    weights = probabilities.float()
    for step in range(relabel_steps + 1):
        centroids = weights.T @ augmented / (weights.sum(dim=0)[:, None] + 1e-8)  # (K, D+1)
        distance = 1 - augmented @ F.normalize(centroids[present], dim=1).T  # cosine distance
        labels = present[distance.argmin(dim=1)]
        if step < relabel_steps:
            weights = F.one_hot(labels, probabilities.shape[1]).float()
    return labels


class Shot(Method):
    """A copy of S adapted to unlabelled target images with h frozen (module docstring).

    Args:
        config: the method's options.
        target_net: T2 as configured; only its number of classes is read (the adapted network is
            the copy of S, whose classes must be the target's).
        source: S; its module is copied, never trained.

    Raises:
        ConfigError: S has no trainable weights (ONNX), no last ``nn.Linear``, or another number
            of classes than the target.
    """

    Config = ShotConfig
    labelled_domain: Literal["source", "target"] = "source"
    components: ClassVar[frozenset[Component]] = frozenset({"source"})

    def __init__(self, config: ShotConfig, *, target_net: TapNetwork, source: FrozenSource) -> None:
        super().__init__()
        if not any(True for _ in source.model.parameters()):
            raise ConfigError(
                f"shot adapts a copy of S, but {source.description} has no weights (an ONNX file runs "
                f"in ONNX Runtime and cannot be adapted); use a torchvision, timm or project-trained source"
            )
        self.config = config
        network = copy.deepcopy(source.model)  # S's own module stays frozen, in eval mode
        heads = [name for name, module in network.named_modules() if isinstance(module, nn.Linear)]
        if not heads:
            raise ConfigError("shot freezes S's last fully connected layer (h), but S has no nn.Linear")
        head = network.get_submodule(heads[-1])
        if head.out_features != target_net.num_classes:
            raise ConfigError(
                f"shot keeps S's classifier, so S must predict the target's {target_net.num_classes} "
                f"classes; {source.description} outputs {head.out_features}"
            )
        parent, _, child = heads[-1].rpartition(".")
        setattr(network.get_submodule(parent) if parent else network, child, nn.Identity())
        self.features = network.requires_grad_(True).train()  # g: S up to its last layer
        self.head = head.requires_grad_(False)  # h: frozen, rebuilt from S when a run is reloaded
        self.input_transform: InputTransform = source.input_transform
        self.register_buffer("pseudo_labels", torch.zeros(0, dtype=torch.long), persistent=False)
        self._target: Tensor | None = None

    def prepare(self, data: TrainingData, world: Collectives) -> None:
        self._target = data.target

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(g(x), h(g(x)))."""
        features = self.features(self.input_transform(x)).flatten(1)
        return features, self.head(features)

    @torch.no_grad()
    def _label_target(self) -> None:
        """Pseudo-labels for every target image with the current network, in eval mode."""
        assert self._target is not None, "prepare() runs before the first round"
        was_training = self.features.training
        self.features.eval()
        features, probabilities = [], []
        for start in range(0, len(self._target), LABEL_BATCH):
            feature, logits = self._forward(self._target[start : start + LABEL_BATCH])
            features.append(feature.float())
            probabilities.append(torch.softmax(logits.float(), dim=1))
        self.features.train(was_training)
        self.pseudo_labels = centroid_labels(
            torch.cat(features), torch.cat(probabilities), relabel_steps=self.config.relabel_steps
        )

    def stages(self, round_index: int) -> list[Stage]:
        if self.config.pseudo_label_weight > 0:
            self._label_target()
        weights = {"diversity": self.config.diversity_weight, "pseudo_label": self.config.pseudo_label_weight}
        update = Update("features", (self.features,), self._adapt, weights=weights)
        return [Stage("adapt", ("target",), (update,))]

    def _adapt(self, batch: Batch) -> dict[str, Tensor]:
        assert batch.x_tgt is not None and batch.idx_tgt is not None
        _, logits = self._forward(batch.x_tgt)
        entropy, diversity = information_maximisation(logits)
        terms = {"entropy": entropy, "diversity": diversity}
        if self.config.pseudo_label_weight > 0:
            terms["pseudo_label"] = classification_loss(logits, self.pseudo_labels[batch.idx_tgt])
        return terms

    def predict(self, x: Tensor) -> Tensor:
        return self._forward(x)[1]

    def trainable_networks(self) -> dict[str, nn.Module]:
        return {"shot_features": self.features}

    def exportable(self) -> nn.Module:
        """h∘g behind S's input transform: images in [0,1] → logits (export, eval, predict)."""
        return FineTunedNetwork(nn.Sequential(self.features, nn.Flatten(1), self.head), self.input_transform)
