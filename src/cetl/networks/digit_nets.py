"""Digit networks for domain adaptation on MNIST, USPS and SVHN (METHOD.md §7).

- ``drcn``: the DRCN digit CNN, final official version (ghif/drcn, 2017-05): 32×32 grey input,
  conv 100/150/200 @3×3 with max-pooling after the first two, fc 1024 ×2, dropout 0.5.
- ``drcn_k5``: 5×5 kernels in the first two convs, as older DRCN revisions and pclucas14/drcn.
- ``drcn_bn``: BatchNorm before every ReLU (an optional switch in DRCN's code, off by default).
- ``lenet``: a LeNet-size net for quick CPU runs and the 28×28 ADDA protocol ("p"), shaped like
  ADDA's LeNet encoder (conv 20 and 50 @5×5 unpadded, fc 500).
- ``lenet_tllib``: TLlib's digits LeNet with its linear head (``tllib/vision/models/digits.py``;
  the ``erm.py`` classifier): ``lenet`` behind TLlib's input normalisation, mean 0.5 / std 0.5.
- ``lenet_tllib_bottleneck``: the same with TLlib's DANN bottleneck (``ImageClassifier``:
  fc 256 → BatchNorm → ReLU) between fc1 and the head; the coupling tap is the bottleneck,
  the features TLlib's domain discriminator reads.

The coupling tap is the last hidden layer (``fc2``, ``fc1`` for ``lenet``): DRCN shares exactly
that feature between its classifier and its decoder. Any image size the layer arithmetic
accepts works (multiples of 4; from 16 for ``lenet``), so the DRCN nets also take 28×28.
"""

from __future__ import annotations

from cetl.networks.base import Conv, Dropout, Flatten, LayerSpec, Linear, MaxPool, Normalize, TapNetwork


def drcn_spec(
    *, num_classes: int, kernel_sizes: tuple[int, int, int] = (3, 3, 3), batch_norm: bool = False
) -> list[LayerSpec]:
    """DRCN's encoder and classifier; 'same' convs, so 32×32 input flattens to 200×8×8 = 12,800."""
    k1, k2, k3 = kernel_sizes
    return [
        Conv("conv1", 100, k1, batch_norm=batch_norm),
        MaxPool("pool1"),
        Conv("conv2", 150, k2, batch_norm=batch_norm),
        MaxPool("pool2"),
        Conv("conv3", 200, k3, batch_norm=batch_norm),
        Flatten("flatten"),
        Linear("fc1", 1024, batch_norm=batch_norm),
        Dropout("drop_fc1", 0.5),
        Linear("fc2", 1024, batch_norm=batch_norm),
        Dropout("drop_fc2", 0.5),
        Linear("logits", num_classes, relu=False),
    ]


def lenet_spec(*, num_classes: int) -> list[LayerSpec]:
    """LeNet: unpadded 5×5 convs, so 28×28 flattens to 50×4×4 = 800 and 32×32 to 50×5×5 = 1,250.

    Channel dropout between conv2 and its pool follows ADDA's LeNet encoder.
    """
    return [
        Conv("conv1", 20, 5, padding="valid"),
        MaxPool("pool1"),
        Conv("conv2", 50, 5, padding="valid"),
        Dropout("drop_conv2", 0.5, channelwise=True),
        MaxPool("pool2"),
        Flatten("flatten"),
        Linear("fc1", 500),
        Dropout("drop_fc1", 0.5),
        Linear("logits", num_classes, relu=False),
    ]


def drcn(*, in_channels: int, image_size: int, num_classes: int) -> TapNetwork:
    """DRCN's digit CNN (final official version); coupling tap ``fc2``."""
    return TapNetwork.from_spec(
        drcn_spec(num_classes=num_classes),
        name="drcn",
        in_channels=in_channels,
        image_size=image_size,
        num_classes=num_classes,
        coupling_tap="fc2",
    )


def drcn_k5(*, in_channels: int, image_size: int, num_classes: int) -> TapNetwork:
    """DRCN with 5×5 kernels in conv1 and conv2 (older revisions); coupling tap ``fc2``."""
    return TapNetwork.from_spec(
        drcn_spec(num_classes=num_classes, kernel_sizes=(5, 5, 3)),
        name="drcn_k5",
        in_channels=in_channels,
        image_size=image_size,
        num_classes=num_classes,
        coupling_tap="fc2",
    )


def drcn_bn(*, in_channels: int, image_size: int, num_classes: int) -> TapNetwork:
    """DRCN with BatchNorm after every conv and hidden fc layer; coupling tap ``fc2``."""
    return TapNetwork.from_spec(
        drcn_spec(num_classes=num_classes, batch_norm=True),
        name="drcn_bn",
        in_channels=in_channels,
        image_size=image_size,
        num_classes=num_classes,
        coupling_tap="fc2",
    )


def lenet(*, in_channels: int, image_size: int, num_classes: int) -> TapNetwork:
    """LeNet-size digit net (quick CPU runs, 28×28 ADDA protocol); coupling tap ``fc1``."""
    return TapNetwork.from_spec(
        lenet_spec(num_classes=num_classes),
        name="lenet",
        in_channels=in_channels,
        image_size=image_size,
        num_classes=num_classes,
        coupling_tap="fc1",
    )


TLLIB_BOTTLENECK = 256
"""Width of TLlib's DANN bottleneck (``--bottleneck-dim``'s default)."""
TLLIB_INPUT = Normalize("normalize", 0.5, 0.5)
"""TLlib's digits normalisation (``--norm-mean 0.5 --norm-std 0.5``), the first layer of its nets."""


def lenet_tllib(*, in_channels: int, image_size: int, num_classes: int) -> TapNetwork:
    """TLlib's digits LeNet and head, inputs normalised as its recipe (mean 0.5, std 0.5); tap ``fc1``."""
    return TapNetwork.from_spec(
        [TLLIB_INPUT, *lenet_spec(num_classes=num_classes)],
        name="lenet_tllib",
        in_channels=in_channels,
        image_size=image_size,
        num_classes=num_classes,
        coupling_tap="fc1",
    )


def lenet_tllib_bottleneck(*, in_channels: int, image_size: int, num_classes: int) -> TapNetwork:
    """:func:`lenet_tllib` with TLlib's DANN bottleneck (fc 256, BatchNorm, ReLU); tap ``bottleneck``."""
    *body, head = lenet_spec(num_classes=num_classes)
    return TapNetwork.from_spec(
        [
            TLLIB_INPUT,
            *body,
            Linear("bottleneck", TLLIB_BOTTLENECK, batch_norm=True),
            head,
        ],
        name="lenet_tllib_bottleneck",
        in_channels=in_channels,
        image_size=image_size,
        num_classes=num_classes,
        coupling_tap="bottleneck",
    )
