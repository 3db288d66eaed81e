"""ResNet-26, the CIFAR knowledge-distillation teacher (METHOD.md §7).

He et al.'s CIFAR ResNet ("Deep Residual Learning", 2016, §4.2): depth 6n + 2, here n = 4 — a
3×3 stem conv with 16 kernels, three stages of n basic blocks with 16, 32 and 64 channels (the
first block of stages 2 and 3 halves H and W), global average pooling and a linear classifier.
Shortcuts that change shape use He et al.'s option A (subsample, then zero-pad the new
channels), so shortcuts add no parameters and the count matches the paper's family
(0.37M for ResNet-26 with 10 classes).

The network is not a plain chain of spec layers, so it has no mirror; it only teaches.
Taps: ``stem``, ``stage1``, ``stage2``, ``stage3``, ``pool`` (the coupling tap: the features
before the classifier) and ``logits``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch.nn.functional as F
from torch import Tensor, nn

from cetl.networks.base import LOGITS, Shape, TapNetwork, check_builder_args, conv_block

STAGE_CHANNELS = (16, 32, 64)


class ZeroPadShortcut(nn.Module):
    """Option-A shortcut: keep every second pixel and append zero channels.

    Args:
        extra_channels: channels to append (the block's output minus input channels).
    """

    def __init__(self, extra_channels: int) -> None:
        super().__init__()
        self.extra_channels = extra_channels

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, ::2, ::2]  # (B, C, ceil(H/2), ceil(W/2)), the size a stride-2 3×3 conv gives
        return F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))  # (B, C + extra, H', W')


class BasicBlock(nn.Module):
    """Two 3×3 conv–BatchNorm layers plus the shortcut, then ReLU.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: 2 in the first block of a downsampling stage, else 1.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        reshape = stride != 1 or in_channels != out_channels
        self.shortcut = ZeroPadShortcut(out_channels - in_channels) if reshape else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))  # (B, C_out, H', W')
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def _stage(in_channels: int, out_channels: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [BasicBlock(in_channels, out_channels, stride)]
    layers += [BasicBlock(out_channels, out_channels, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def cifar_resnet(depth: int, *, name: str, in_channels: int, image_size: int, num_classes: int) -> TapNetwork:
    """A CIFAR ResNet of depth 6n + 2 as a :class:`TapNetwork` (any image size).

    Convolutions use He (fan-out) initialisation, as in the paper; BatchNorm starts at (1, 0).
    """
    if (depth - 2) % 6 or depth < 8:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1, got {depth}")
    check_builder_args(name, in_channels=in_channels, image_size=image_size, num_classes=num_classes)
    blocks = (depth - 2) // 6
    c1, c2, c3 = STAGE_CHANNELS
    layers: list[tuple[str, nn.Module]] = [
        ("stem", conv_block(in_channels, c1, 3, padding="same", batch_norm=True, relu=True)),
        ("stage1", _stage(c1, c1, blocks, stride=1)),
        ("stage2", _stage(c1, c2, blocks, stride=2)),
        ("stage3", _stage(c2, c3, blocks, stride=2)),
        ("pool", nn.Sequential(OrderedDict(avg=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten()))),
        (LOGITS, nn.Linear(c3, num_classes)),
    ]
    h2 = (image_size + 1) // 2  # a stride-2, padding-1 3×3 conv gives ceil(H / 2)
    h3 = (h2 + 1) // 2
    tap_shapes: dict[str, Shape] = {
        "stem": (c1, image_size, image_size),
        "stage1": (c1, image_size, image_size),
        "stage2": (c2, h2, h2),
        "stage3": (c3, h3, h3),
        "pool": (c3,),
        LOGITS: (num_classes,),
    }
    net = TapNetwork(
        layers,
        name=name,
        in_channels=in_channels,
        image_size=image_size,
        num_classes=num_classes,
        coupling_tap="pool",
        tap_shapes=tap_shapes,
    )
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return net


def resnet26(*, in_channels: int, image_size: int, num_classes: int) -> TapNetwork:
    """ResNet-26 (n = 4), the KD teacher; coupling tap ``pool``. No mirror."""
    return cifar_resnet(
        26, name="resnet26", in_channels=in_channels, image_size=image_size, num_classes=num_classes
    )
