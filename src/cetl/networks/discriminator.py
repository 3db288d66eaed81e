"""The domain discriminator of the adversarial baselines (DANN, ADDA).

One small MLP on T2's coupling-tap features answers "source or target?" with one logit.
Both papers use this shape: DANN's domain classifier (Ganin et al., JMLR 2016) is a small
fully connected network on the feature extractor's output, and ADDA's digit discriminator
(Tzeng et al., CVPR 2017) has two hidden layers of 500 ReLU units and one output.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from cetl.errors import ConfigError


class DomainDiscriminator(nn.Module):
    """``features → [Linear → (BatchNorm) → ReLU] × layers → Linear → one logit`` (source = 1, target = 0).

    No BatchNorm or dropout by default: its statistics would differ between source and target
    batches seen separately, which would let it tell the domains apart by batch statistics
    rather than by features. ``batch_norm=True`` is TLlib's DANN discriminator (BatchNorm after
    each hidden layer); it is only sound when source and target features go through it as
    one batch, as ``dann`` passes them.

    Args:
        in_shape: per-sample feature shape, e.g. ``target_net.tap_shape(target_net.coupling_tap)``;
            feature maps are flattened.
        hidden: width of every hidden layer.
        layers: number of hidden layers.
        batch_norm: BatchNorm between each hidden layer and its ReLU.

    Raises:
        ConfigError: ``hidden`` or ``layers`` is not positive.

    Shape:
        input ``(B, *in_shape)``, output ``(B,)``.
    """

    def __init__(
        self, in_shape: tuple[int, ...], *, hidden: int, layers: int = 2, batch_norm: bool = False
    ) -> None:
        super().__init__()
        if hidden < 1 or layers < 1:
            raise ConfigError(
                f"the domain discriminator needs hidden >= 1 and layers >= 1, got hidden={hidden}, "
                f"layers={layers}; set method.hidden to a positive width"
            )
        width = math.prod(in_shape)
        blocks: list[nn.Module] = [nn.Flatten()]
        for _ in range(layers):
            blocks += [nn.Linear(width, hidden), *([nn.BatchNorm1d(hidden)] if batch_norm else []), nn.ReLU()]
            width = hidden
        blocks.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*blocks)

    def forward(self, features: Tensor) -> Tensor:
        """One domain logit per sample: positive means "source"."""
        return self.net(features).squeeze(1)
