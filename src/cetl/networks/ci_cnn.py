"""CI-CNN, the reduced AlexNet for 32×32 RGB images (CIFAR/STL target, KD student; METHOD.md §7).

The paper gives only its outline: five 3×3 conv layers with 1/2–1/4 of AlexNet's kernels, three
FC layers, and fewer than 10% of AlexNet's parameters. This project's reading:

- kernels: AlexNet's (64, 192, 384, 256, 256) halved, i.e. (32, 96, 192, 128, 128), 'same' padded;
- max-pooling where AlexNet pools (after conv1, conv2, conv5), so 32×32 → 4×4 and 128×4×4 = 2,048
  features are flattened;
- FC layers named as AlexNet's: fc6 1024 → fc7 1024 (the coupling tap; D1's "CI-CNN fc7 = 1024")
  → logits, each hidden FC followed by ReLU and dropout 0.5.

That is 3.72M parameters with 10 classes, 6.1% of torchvision AlexNet's 61.1M.
"""

from __future__ import annotations

from cetl.networks.base import Conv, Dropout, Flatten, LayerSpec, Linear, MaxPool, TapNetwork

CI_CNN_CHANNELS = (32, 96, 192, 128, 128)
"""Kernels per conv layer: half of AlexNet's (64, 192, 384, 256, 256)."""


def ci_cnn_spec(*, num_classes: int) -> list[LayerSpec]:
    """CI-CNN's layers (see the module docstring for the choices the paper leaves open)."""
    c1, c2, c3, c4, c5 = CI_CNN_CHANNELS
    return [
        Conv("conv1", c1, 3),
        MaxPool("pool1"),
        Conv("conv2", c2, 3),
        MaxPool("pool2"),
        Conv("conv3", c3, 3),
        Conv("conv4", c4, 3),
        Conv("conv5", c5, 3),
        MaxPool("pool5"),
        Flatten("flatten"),
        Linear("fc6", 1024),
        Dropout("drop_fc6", 0.5),
        Linear("fc7", 1024),
        Dropout("drop_fc7", 0.5),
        Linear("logits", num_classes, relu=False),
    ]


def ci_cnn(*, in_channels: int, image_size: int, num_classes: int) -> TapNetwork:
    """CI-CNN (reduced AlexNet); coupling tap ``fc7``. Image sizes: multiples of 8."""
    return TapNetwork.from_spec(
        ci_cnn_spec(num_classes=num_classes),
        name="ci_cnn",
        in_channels=in_channels,
        image_size=image_size,
        num_classes=num_classes,
        coupling_tap="fc7",
    )
