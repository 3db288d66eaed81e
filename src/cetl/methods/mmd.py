"""``wdan``: the CETL paper's "WDA" row (Table 5), weighted-MMD domain adaptation.

Yan, Ding, Li, Wang, Xu, Zuo, "Mind the Class Weight Bias: Weighted Maximum Mean Discrepancy
for Unsupervised Domain Adaptation", CVPR 2017. The CETL paper cites it as [37], "Weighted
Maximum Mean Discrepancy (WDA) ... to take class weight bias into account", and copies its
digit numbers; the method itself is the paper's weighted domain adaptation network (WDAN),
registered as ``wdan`` and, under the CETL paper's name for it, ``wda``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from cetl.config import MethodConfig, NonNegativeFloat, PositiveFloat, PositiveInt
from cetl.data.training import TrainingData
from cetl.fisher.protection import Collectives
from cetl.losses.classification import classification_loss
from cetl.losses.mmd import weighted_mmd
from cetl.methods.base import Batch, Component, Method, Stage, Update
from cetl.networks import TapNetwork
from cetl.networks.base import LOGITS

PREDICT_BATCH = 1024


@dataclass(frozen=True, kw_only=True)
class WdanConfig(MethodConfig):
    """Options of ``wdan`` / ``wda``."""

    name: str = "wdan"
    mmd_weight: NonNegativeFloat = 1.0
    """λ of the WDAN objective: weight of the summed WMMD² terms (DAN's and WDAN's: 1)."""
    layers: Literal["coupling", "coupling_and_logits"] = "coupling_and_logits"
    """Layers whose features are matched: the coupling tap, or it and the logits (DAN adapts
    every task-specific fully connected layer; for ``lenet`` those are ``fc1`` and the logits)."""
    class_weights: Literal["cem", "uniform"] = "cem"
    """``cem``: α re-estimated from target pseudo-labels after every round (WDAN's CEM);
    ``uniform``: α = 1 throughout, i.e. plain multi-kernel MMD (DAN), the paper's ablation."""
    kernels: PositiveInt = 5
    """Gaussian kernels in the multi-kernel MMD (DAN: 5)."""
    kernel_mul: PositiveFloat = 2.0
    """Ratio between neighbouring kernel bandwidths (DAN: 2)."""


def class_weight_ratios(pseudo_labels: Tensor, source_labels: Tensor, num_classes: int) -> Tensor:
    """WDAN's C-step: ``α_c = ŵ_c^t / w_c^s``, the target prior (from pseudo-labels) over the source prior.

    Args:
        pseudo_labels: predicted classes of the target images (the E-step).
        source_labels: labels of the source training images.
        num_classes: K.

    Returns:
        ``α`` ``(K,)``; 0 for a class with no source image (no source sample carries it).
    """
    target_prior = torch.bincount(pseudo_labels, minlength=num_classes).float() / max(1, len(pseudo_labels))
    source_prior = torch.bincount(source_labels, minlength=num_classes).float() / max(1, len(source_labels))
    return torch.where(source_prior > 0, target_prior / source_prior.clamp_min(1e-12), 0.0)


class WDAN(Method):
    """WDAN: Yan et al., CVPR 2017, the weighted-MMD objective trained by classification EM (CEM).

    Each step one update of T2 minimises

        L_c(T2(x_s), y_s) + mmd_weight · Σ_layers WMMD²(features_s, features_t; α)

    with every source sample weighted by ``α_{y}``, the ratio of the target class prior to the
    source class prior. Target labels are never read: α comes from CEM. Per round,

    - M-step: the ``wdan`` stage trains T2 with α fixed;
    - E-step and C-step (the stage's end): T2 labels every target training image with its
      prediction, and α is re-estimated from those pseudo-labels (:func:`class_weight_ratios`).

    Source and target go through T2 as one batch, so BatchNorm nets see both domains.

    Simplifications, stated: the kernel weights are equal (DAN learns them), and the MMD² is
    the all-pairs estimate on each batch rather than the sampled linear-time estimate of DAN
    and of the authors' Caffe layer (``yhldhit/WMMD-Caffe``); with batches of 128 the
    all-pairs estimate is cheap and has less variance. The first round uses α = 1 because
    T2's predictions mean nothing before it has been trained.

    Args:
        config: the method's options.
        target_net: T2.
    """

    Config = WdanConfig
    components: ClassVar[frozenset[Component]] = frozenset()

    def __init__(self, config: WdanConfig, *, target_net: TapNetwork) -> None:
        super().__init__()
        self.config = config
        self.target_net = target_net
        self.register_buffer("class_weights", torch.ones(target_net.num_classes), persistent=False)
        self._data: TrainingData | None = None

    def prepare(self, data: TrainingData, world: Collectives) -> None:
        self._data = data

    def stages(self, round_index: int) -> list[Stage]:
        update = Update("target_net", (self.target_net,), self._losses, {"wmmd": self.config.mmd_weight})
        on_end = self._estimate_class_weights if self.config.class_weights == "cem" else None
        return [Stage("wdan", ("labelled", "target"), (update,), on_end=on_end)]

    def _losses(self, batch: Batch) -> dict[str, Tensor]:
        coupling = self.target_net.coupling_tap
        taps = [coupling, LOGITS] if self.config.layers == "coupling_and_logits" else [coupling]
        features = self.target_net.forward_taps(torch.cat([batch.x, batch.x_tgt]), taps)
        n = len(batch.x)
        logits = (
            features[LOGITS][:n]
            if LOGITS in features
            else self.target_net.classify_tap(features[coupling][:n])
        )
        alpha = self.class_weights[batch.y]  # (B_s,)
        wmmd = sum(
            weighted_mmd(
                value[:n],
                value[n:],
                alpha,
                kernels=self.config.kernels,
                kernel_mul=self.config.kernel_mul,
            )
            for value in features.values()
        )
        return {"classify": classification_loss(logits, batch.y), "wmmd": wmmd}

    @torch.no_grad()
    def _estimate_class_weights(self) -> dict[str, float]:
        """E-step (pseudo-label every target training image) and C-step (α) for the next round."""
        if self._data is None:
            raise RuntimeError("wdan: prepare() was not called before training")
        was_training = self.target_net.training
        self.target_net.eval()
        images = self._data.target
        pseudo = torch.cat(
            [
                self.target_net(images[start : start + PREDICT_BATCH]).argmax(dim=1)
                for start in range(0, len(images), PREDICT_BATCH)
            ]
        )
        self.target_net.train(was_training)
        alpha = class_weight_ratios(pseudo, self._data.labelled.y, self.target_net.num_classes)
        self.class_weights.copy_(alpha.to(self.class_weights.device))
        return {"class_weight_min": float(alpha.min()), "class_weight_max": float(alpha.max())}

    def predict(self, x: Tensor) -> Tensor:
        return self.target_net(x)

    def trainable_networks(self) -> dict[str, nn.Module]:
        return {"target_net": self.target_net}

    def resumable_state(self) -> dict[str, Any]:
        """α, estimated at the end of the last round and used by the next one."""
        return {"class_weights": self.class_weights.clone()}

    def load_resumable_state(self, state: dict[str, Any]) -> None:
        self.class_weights.copy_(state["class_weights"])
