"""``cetl_f`` and ``cetl_u``: CETL trained in sequence rather than in rounds of Algorithm 1
(paper Table 2; METHOD.md §2).

Round 0 first trains T1∘S alone for ``phase1_epochs`` (``L_r^s``) and freezes T1′ as the
reconstruction target; every round then trains T2 on Eq. 3, ``λ L_c^t + (1−λ) L_r^t``, with
T1 frozen (``cetl_f``) or updated with it (``cetl_u``).
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor, nn

from cetl.methods.base import Batch, Stage, Update
from cetl.methods.cetl import CETL


class CetlF(CETL):
    """T1∘S first, then T2 with Eq. 3 and T1 frozen."""

    updates_decoder_with_target: ClassVar[bool] = False
    """Whether the Eq. 3 update also trains T1 (``cetl_u``)."""

    def stages(self, round_index: int) -> list[Stage]:
        trained: tuple[nn.Module, ...] = (self.target_net,)
        if self.updates_decoder_with_target:
            trained = (self.target_net, self.decoder)
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

    def _classify_coupled(self, batch: Batch) -> dict[str, Tensor]:
        return self._classify(batch) | self._reconstruct_target(batch)


class CetlU(CetlF):
    """As ``cetl_f``, but T1 is also updated in the second phase."""

    updates_decoder_with_target: ClassVar[bool] = True
