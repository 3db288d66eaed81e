"""Single-network baselines: ``source_only`` and ``target_only``.

Both train T2 alone with the classification loss (CETL paper, Eq. 4) in one
``classify`` stage per round; they differ only in whose labels they read.

- ``source_only``: labelled *source* images; the domain-adaptation lower bound
  (Table 5's "source only"). In domain adaptation it is also S: CETL's frozen
  source for seed s is the ``source_only`` model of seed s.
- ``target_only``: labelled *target* training images; Table 2's ``baseline`` in
  transfer learning, and an oracle upper bound in domain adaptation (it reads
  target labels, which a domain-adaptation method may not).
"""

from __future__ import annotations

from typing import Literal

from torch import Tensor, nn

from cetl.losses.classification import classification_loss
from cetl.methods.base import Batch, Method, Stage, Update
from cetl.networks import TapNetwork


class SourceOnly(Method):
    """T2 trained with ``L_c`` (Eq. 4) on the labelled source data."""

    labelled_domain: Literal["source", "target"] = "source"

    def __init__(self, config: Method.Config, *, target_net: TapNetwork) -> None:
        super().__init__()
        self.config = config
        self.target_net = target_net

    def stages(self, round_index: int) -> list[Stage]:
        update = Update("target_net", (self.target_net,), self._classify)
        return [Stage("classify", ("labelled",), (update,))]

    def _classify(self, batch: Batch) -> dict[str, Tensor]:
        return {"classify": classification_loss(self.target_net(batch.x), batch.y)}

    def predict(self, x: Tensor) -> Tensor:
        return self.target_net(x)

    def trainable_networks(self) -> dict[str, nn.Module]:
        return {"target_net": self.target_net}


class TargetOnly(SourceOnly):
    """T2 trained with ``L_c`` (Eq. 4) on labelled target training data."""

    labelled_domain: Literal["source", "target"] = "target"
