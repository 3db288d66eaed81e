"""``drcn``: Deep Reconstruction-Classification Networks, a domain-adaptation baseline.

Ghifary, Kleijn, Zhang, Balduzzi, Li, "Deep Reconstruction-Classification Networks for
Unsupervised Domain Adaptation", ECCV 2016 (Table 5's "DRCN" row of the CETL paper).

One encoder serves two heads: a label head trained on labelled source images and a
convolutional decoder trained to reconstruct unlabelled target images. Its objective (Section 3
there; the CETL paper's Eq. 3 has the same form) is ``λ L_c({x_s, y_s}) + (1 − λ) L_r({x̃_t, x_t})``
with λ = 0.7, and its Algorithm 1 minimises it by alternating the two terms, each with its own
optimiser steps. Here:

- encoder + label head = T2 (its layers up to the coupling tap, then its classifier);
- decoder = T1, the mirror of T2 (``build_decoder``), reading T2's coupling tap;
- per round: ``reconstruct_target`` (target stream; ``L_r = ‖T1(T2_tap(x̃_t)) − x_t‖²``, updates
  T2's encoder and T1, weight 1 − λ), then ``classify`` (labelled source stream; cross-entropy,
  updates T2, weight λ). The order follows the authors' code (a reconstruction epoch, then a
  classification epoch), so each round's evaluation sees a freshly trained label head.

Training recipe (METHOD.md D12, ``method.recipe``): by default the official code's, a
denoising and augmenting reconstruction input, augmented source images, no dropout on the
reconstruction path and Adam 3e-4; ``bare`` is the paper's equations alone.

DRCN is CETL without S: its reconstruction target is the image itself where CETL's (Eq. 5) is
T1′(S(x)); so it reuses CETL's loss ``target_reconstruction_loss`` and the shared corruptions
of ``cetl.data.augment``.

Note on λ: each term has its own optimiser (one per update, as in Algorithm 1), and Adam is
nearly invariant to a constant factor on its loss, so with the default Adam λ mostly matters
through ``optimizer.max_grad_norm`` and SGD; it is kept as the paper states it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from torch import Tensor, nn

from cetl.config import MethodConfig, Probability, Range
from cetl.data.augment import impulse_noise, random_affine
from cetl.losses.classification import classification_loss
from cetl.losses.reconstruction import target_reconstruction_loss
from cetl.methods.base import Batch, Component, Method, Stage, Update
from cetl.networks import TapNetwork


@dataclass(frozen=True, kw_only=True)
class DrcnConfig(MethodConfig):
    """Options of ``drcn`` (DRCN, ECCV 2016, Section 3; METHOD.md D12 for the recipe)."""

    name: str = "drcn"
    classify_weight: Probability = 0.7
    """λ of DRCN's objective: ``λ L_c + (1 − λ) L_r`` (0.7 in the paper)."""
    recipe: Literal["authors", "bare"] = "authors"
    """D12. ``authors``: as the official code ran it: the reconstruction input corrupted
    (impulse noise, 50%) and geometrically augmented (rotation ±20°, shift ±20%) while its
    target stays the clean image, the labelled source images augmented alike, no dropout on
    the reconstruction path, Adam 3e-4 for both updates whatever the run's ``optimizer.lr``.
    ``bare``: the paper's equations alone (this project's ``drcn`` before 2026-12-05), with
    ``input_noise`` and ``augment`` as given and the run's optimiser."""
    input_noise: Annotated[float, Range(ge=0, lt=1)] | None = None
    """Denoising: fraction of the reconstruction input's pixels set to zero (DRCN's impulse
    noise); the decoder still reconstructs the clean image. ``None``: the recipe's (0.5 for
    ``authors``, 0 for ``bare``)."""
    augment: bool | None = None
    """Geometric augmentation (rotation ±20°, shift ±20%) of the labelled source images in
    ``classify`` and, with ``authors``, of the reconstruction input. ``None``: the recipe's."""


AUTHORS_NOISE = 0.5
AUTHORS_ADAM = {"name": "adam", "lr": 3e-4}
"""The official code's optimiser (METHOD.md D12), applied to both of DRCN's updates."""


class DRCN(Method):
    """DRCN (Ghifary et al., ECCV 2016, Section 3 objective, Algorithm 1) on T2 and its mirrored decoder.

    Args:
        config: the method's options.
        target_net: T2, the encoder and label head.
        decoder: T1, reading T2's coupling tap and returning an image.
    """

    Config = DrcnConfig
    labelled_domain: Literal["source", "target"] = "source"
    components: ClassVar[frozenset[Component]] = frozenset({"decoder"})

    def __init__(self, config: DrcnConfig, *, target_net: TapNetwork, decoder: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.target_net = target_net
        self.decoder = decoder

    @property
    def authors(self) -> bool:
        return self.config.recipe == "authors"

    @property
    def input_noise(self) -> float:
        noise = self.config.input_noise
        return noise if noise is not None else (AUTHORS_NOISE if self.authors else 0.0)

    @property
    def augment(self) -> bool:
        return self.config.augment if self.config.augment is not None else self.authors

    def stages(self, round_index: int) -> list[Stage]:
        weight = self.config.classify_weight
        optimizer = AUTHORS_ADAM if self.authors else {}
        reconstruct = Update(
            "encoder_and_decoder",
            (self.target_net, self.decoder),  # the label head is off this path: no gradient
            self._reconstruct_target,
            {"recon_target": 1.0 - weight},
            optimizer=optimizer,
        )
        classify = Update(
            "target_net", (self.target_net,), self._classify, {"classify": weight}, optimizer=optimizer
        )
        return [
            Stage("reconstruct_target", ("target",), (reconstruct,)),
            Stage("classify", ("labelled",), (classify,)),
        ]

    def _reconstruct_target(self, batch: Batch) -> dict[str, Tensor]:
        """``L_r``: reconstruct the clean target image from its corrupted (and, with the
        authors' recipe, augmented) copy; dropout off on this path in the authors' recipe."""
        clean = batch.x_tgt
        source = clean
        if self.training:
            if self.augment and self.authors:
                source = random_affine(source)
            source = impulse_noise(source, self.input_noise)
        with _dropout_off(self.target_net) if self.authors else contextlib.nullcontext():
            decoded = self._decode(source)
        # DRCN's own code uses the per-pixel mean; its stages are single-term, so under Adam the
        # scale does not matter (CETL's joint losses use D2's per-sample sum).
        loss = target_reconstruction_loss(decoded, clean, reduction="mean")
        return {"recon_target": loss}

    def _classify(self, batch: Batch) -> dict[str, Tensor]:
        """``L_c``: cross-entropy of T2 on labelled source images (optionally augmented)."""
        x = random_affine(batch.x) if self.augment and self.training else batch.x
        return {"classify": classification_loss(self.target_net(x), batch.y)}

    def _decode(self, x: Tensor) -> Tensor:
        return self.decoder(self.target_net.coupling(x))

    def reconstruct(self, x: Tensor) -> Tensor | None:
        """T1(T2(x)), for the unsupervised reconstruction-based model selection."""
        return self._decode(x)

    def predict(self, x: Tensor) -> Tensor:
        return self.target_net(x)

    def trainable_networks(self) -> dict[str, nn.Module]:
        return {"target_net": self.target_net, "decoder": self.decoder}


@contextlib.contextmanager
def _dropout_off(network: nn.Module) -> Iterator[None]:
    """Dropout layers in eval mode for the duration (the authors' reconstruction path)."""
    layers = [m for m in network.modules() if isinstance(m, nn.modules.dropout._DropoutNd) and m.training]
    for layer in layers:
        layer.eval()
    try:
        yield
    finally:
        for layer in layers:
            layer.train()
