"""T1, the shared decoder: the target network's layers mirrored (METHOD.md §1, D1).

The paper calls T1 the "reversed target CNN": fully connected layers, then alternating
unpooling and deconvolution, mapping T2's coupling tap back to the image. :func:`build_decoder`
is the only place such a decoder is made. It reads the encoder's layer spec from the input up
to the coupling tap and undoes it layer by layer, from the tap backwards:

======================================  ===============================================
encoder layer                           decoder layer
======================================  ===============================================
``Linear(a → b)``                       ``Linear(b → a)`` → ReLU
``Flatten``                             ``Unflatten`` to the encoder's map
``MaxPool 2×2``                         ``Upsample ×2`` (nearest)
``Conv(a → b)``, 'same' padding         ``Conv(b → a)``, same kernel, 'same' padding → ReLU
``Conv(a → b)``, no padding             ``ConvTranspose(b → a)``, same kernel → ReLU
``Dropout``                             nothing (a decoder that drops features would just
                                        learn a noisier reconstruction)
``Normalize`` (a fixed input map)       nothing (T1 reconstructs the [0, 1] image)
======================================  ===============================================

BatchNorm follows a mirrored layer where it followed the encoder layer. The mirror of the
first encoder layer outputs ``in_channels`` and has neither BatchNorm nor ReLU; the result is
clipped to [0, 1].

One layer has no encoder counterpart: an *entry conv* that keeps the channel count, run on the
coarsest map before the first mirrored conv. DRCN's decoder has it (ghif/drcn ``drcn.py``: the
decoder's convs output 200, 150, 100, then 1, from an encoder whose convs take 1, 100, 150), so
with it the ``drcn`` mirror is exactly METHOD.md §7's decoder — fc 1024 → fc 12,800 → reshape
200×8×8 → conv 200 → conv 150 + upsample ×2 → conv 100 + upsample ×2 → conv 1 — where
"conv 150 + upsample" is the mirror of conv3 (150 → 200) followed by the mirror of pool2. It is
added for every network so there is a single rule.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from cetl.errors import ConfigError
from cetl.networks.base import (
    Conv,
    Dropout,
    Flatten,
    Linear,
    MaxPool,
    Normalize,
    TapNetwork,
    conv_block,
    linear_block,
    spec_shapes,
)


class Clip01(nn.Module):
    """Clamp to [0, 1], the pixel range of every dataset here, with a leaky gradient outside it.

    METHOD.md §7 says the reconstruction is *clipped* to [0, 1], as DRCN's clipped-ReLU output
    layer: pixels the decoder already gets right inside the range keep an unsquashed, linear
    gradient (a sigmoid would shrink it near 0 and 1, where most digit pixels are).

    The value is exactly the clamp. Its gradient outside the range is ``leak`` times the identity's
    rather than zero: with a hard clamp, mostly-black digits can push every output below 0, where
    no gradient ever reaches the decoder again (seen on a GPU with the DRCN net: L_r^s stuck at
    mean(x²) from round 0 in CETL). Adam rescales a tiny but non-zero gradient to
    full-size steps, so a dead decoder recovers, while in a live one the in-range pixels' gradient
    outweighs the leak by orders of magnitude (a leak of 0.01 already changed the synthetic DWA
    test's dynamics visibly; 1e-4 does not).
    """

    def __init__(self, leak: float = 1e-4) -> None:
        super().__init__()
        self.leak = leak

    def forward(self, x: Tensor) -> Tensor:
        clipped = x.clamp(0.0, 1.0)
        if not torch.is_grad_enabled() or self.leak == 0.0:
            return clipped
        outside = x - clipped
        return clipped + self.leak * (outside - outside.detach())


def build_decoder(net: TapNetwork) -> nn.Sequential:
    """The mirror of ``net`` from its coupling tap back to the image (see the module docstring).

    Layers are named after the encoder layer they undo (``fc2``, ``unflatten``, ``unpool1``,
    ``conv1``), so decoder state_dict keys line up with the encoder's.

    Args:
        net: a network built from a layer spec.

    Returns:
        A module mapping ``(B, *net.tap_shape(net.coupling_tap))`` to images
        ``(B, net.in_channels, net.image_size, net.image_size)`` in [0, 1].

    Raises:
        ConfigError: ``net`` has no layer spec (``resnet26``, which is used as a teacher).
    """
    if net.spec is None:
        raise ConfigError(
            f"network '{net.name}' has no mirror (it is not a plain layer chain); it is used as "
            "a teacher or source, not as CETL's target network"
        )
    names = [layer.name for layer in net.spec]
    encoder = net.spec[: names.index(net.coupling_tap) + 1]
    shapes = spec_shapes(encoder, (net.in_channels, net.image_size, net.image_size))
    convs = [layer for layer in encoder if isinstance(layer, Conv)]
    # The mirror of the first learned layer produces the image, so it gets no BatchNorm or ReLU.
    first_learned = next(i for i, layer in enumerate(encoder) if isinstance(layer, Conv | Linear))

    decoder: OrderedDict[str, nn.Module] = OrderedDict()
    at_maps = False
    for i in reversed(range(len(encoder))):
        layer, in_shape, out_shape = encoder[i], shapes[i], shapes[i + 1]
        if convs and not at_maps and len(out_shape) == 3:
            # First map on the way back: DRCN's extra conv (module docstring).
            at_maps = True
            decoder["entry"] = conv_block(
                out_shape[0],
                out_shape[0],
                convs[-1].kernel_size,
                padding="same",
                batch_norm=convs[-1].batch_norm,
                relu=True,
            )
        is_output = i == first_learned
        match layer:
            case Conv():
                # A 'same' conv keeps H and W, so a conv undoes it; an unpadded conv shrinks
                # them by k - 1, which a transposed conv of the same kernel grows back exactly.
                decoder[layer.name] = conv_block(
                    out_shape[0],
                    in_shape[0],
                    layer.kernel_size,
                    padding=layer.padding,
                    batch_norm=layer.batch_norm and not is_output,
                    relu=not is_output,
                    transposed=layer.padding == "valid",
                )
            case Linear():
                decoder[layer.name] = linear_block(
                    out_shape[0],
                    in_shape[0],
                    batch_norm=layer.batch_norm and not is_output,
                    relu=not is_output,
                )
            case MaxPool():
                decoder[f"un{layer.name}"] = nn.Upsample(scale_factor=2, mode="nearest")
            case Flatten():
                decoder[f"un{layer.name}"] = nn.Unflatten(1, in_shape)
            case Dropout() | Normalize():
                pass
            case _:
                raise TypeError(f"no mirror rule for {layer!r}")
    decoder["clip"] = Clip01()
    return nn.Sequential(decoder)
