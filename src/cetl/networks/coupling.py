"""The source adapter of METHOD.md D1: fitting S's tap to the decoder's input.

T1 = mirror(T2), so T1 reads T2's coupling tap. When S's tap has another shape (AlexNet
fc7 = 4096 vs CI-CNN fc7 = 1024), a learned adapter maps S's tap to T1's input. It belongs
to the T1∘S path: trained in stage 1 with T1, excluded from Fisher/GFI (it is not shared).
"""

from __future__ import annotations

import math

from torch import nn

from cetl.errors import ConfigError


def source_adapter(source_shape: tuple[int, ...], decoder_input: tuple[int, ...]) -> nn.Module:
    """Identity when the shapes match; a Linear for vectors; a 1×1 conv for equal-size maps.

    A vector source feeding a map input (or the reverse) is flattened and projected with a
    Linear. Maps of different spatial size cannot be reconciled without inventing structure,
    so they are a clear error naming both shapes.
    """
    if tuple(source_shape) == tuple(decoder_input):
        return nn.Identity()
    if len(source_shape) == 3 and len(decoder_input) == 3:
        if source_shape[1:] != decoder_input[1:]:
            raise ConfigError(
                f"source tap shape {tuple(source_shape)} and decoder input {tuple(decoder_input)} are "
                f"maps of different sizes; tap a layer with {decoder_input[1:]} maps or a vector layer"
            )
        return nn.Conv2d(source_shape[0], decoder_input[0], kernel_size=1)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(source_shape), math.prod(decoder_input)),
        nn.Unflatten(1, tuple(decoder_input)),
    )
