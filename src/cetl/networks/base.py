"""Classifiers whose intermediate outputs can be read by name, and the layer spec they come from.

CETL couples networks through *taps*: T1 reads T2's coupling tap (METHOD.md §1, D1), FitNets
and FSP read feature maps, and a method that needs both the tap and the logits should run the
network once. :class:`TapNetwork` makes every such read a method call on a chain of named
layers, rather than a forward hook.

Most networks here are also described by a *layer spec*: a list of small frozen dataclasses
(:class:`Normalize`, :class:`Conv`, :class:`MaxPool`, :class:`Flatten`, :class:`Linear`,
:class:`Dropout`). The
encoder is built from the spec (:meth:`TapNetwork.from_spec`) and so is its mirrored decoder
(:func:`cetl.networks.mirror.build_decoder`), so the two cannot drift apart. The same spec
arithmetic decides which image sizes a network accepts.

Why one file: the layer spec, its shape arithmetic and :class:`TapNetwork` are built from each
other (the network and its mirrored decoder come from the same spec), so they change together.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from torch import Tensor, nn

from cetl.errors import ConfigError
from cetl.registry import did_you_mean

Shape = tuple[int, ...]
"""A per-sample shape: ``(C, H, W)`` for feature maps, ``(D,)`` for vectors."""

LOGITS = "logits"
"""The name of every network's last layer, so ``"logits"`` is always a valid tap."""

LARGEST_SIZE_LISTED = 64
"""Image sizes up to this are tried when telling a user which sizes a network accepts."""


class SpecShapeError(ValueError):
    """A layer spec cannot take the shape it is given (e.g. max-pooling an odd size).

    Internal: builders turn it into a :class:`ConfigError` that lists the sizes that work.
    """


class NetworkBuilder(Protocol):
    """What ``NETWORKS`` holds: keyword-only, so configs can't depend on argument order."""

    def __call__(self, *, in_channels: int, image_size: int, num_classes: int) -> TapNetwork: ...


# --- building blocks, shared by encoders (here) and decoders (mirror.py) -----------------------


def _block(core: nn.Module, norm: nn.Module | None, relu: bool, core_name: str) -> nn.Module:
    """``core`` → optional BatchNorm → optional ReLU, as one named module.

    A bare ``core`` is returned when nothing follows it, so plain layers keep short
    state_dict keys (``logits.weight``). ReLU is not in-place: a tap returns this block's
    output, and a later in-place op would silently overwrite the tensor the caller holds.
    """
    if norm is None and not relu:
        return core
    parts: OrderedDict[str, nn.Module] = OrderedDict([(core_name, core)])
    if norm is not None:
        parts["bn"] = norm
    if relu:
        parts["relu"] = nn.ReLU()
    return nn.Sequential(parts)


def conv_block(
    in_channels: int,
    out_channels: int,
    kernel_size: int,
    *,
    padding: Literal["same", "valid"],
    batch_norm: bool,
    relu: bool,
    transposed: bool = False,
) -> nn.Module:
    """A conv (or transposed conv) with optional BatchNorm and ReLU.

    'same' padding is written as an explicit ``kernel_size // 2`` (odd kernels only, checked by
    :class:`Conv`) so it is symmetric and exports cleanly. The conv has no bias when BatchNorm
    follows, because BatchNorm's shift makes it redundant.
    """
    conv_type = nn.ConvTranspose2d if transposed else nn.Conv2d
    pad = kernel_size // 2 if padding == "same" else 0
    conv = conv_type(in_channels, out_channels, kernel_size, padding=pad, bias=not batch_norm)
    norm = nn.BatchNorm2d(out_channels) if batch_norm else None
    return _block(conv, norm, relu, "conv")


def linear_block(in_features: int, out_features: int, *, batch_norm: bool, relu: bool) -> nn.Module:
    """A fully connected layer with optional BatchNorm and ReLU (no bias under BatchNorm)."""
    linear = nn.Linear(in_features, out_features, bias=not batch_norm)
    norm = nn.BatchNorm1d(out_features) if batch_norm else None
    return _block(linear, norm, relu, "linear")


# --- the layer spec ------------------------------------------------------------------------------


def _expect_map(name: str, in_shape: Shape) -> tuple[int, int, int]:
    if len(in_shape) != 3:
        raise SpecShapeError(f"'{name}' needs a (C, H, W) feature map, got shape {in_shape}")
    c, h, w = in_shape
    return c, h, w


@dataclass(frozen=True)
class Conv:
    """2-D convolution → (BatchNorm) → ReLU.

    Attributes:
        name: layer and tap name.
        out_channels: number of kernels.
        kernel_size: square, odd (so 'same' padding is symmetric).
        padding: ``"same"`` keeps H and W; ``"valid"`` shrinks them by ``kernel_size - 1``.
        batch_norm: BatchNorm between the conv and the ReLU.
    """

    name: str
    out_channels: int
    kernel_size: int
    padding: Literal["same", "valid"] = "same"
    batch_norm: bool = False

    def __post_init__(self) -> None:
        if self.kernel_size % 2 == 0:
            raise ValueError(f"'{self.name}': kernel_size must be odd, got {self.kernel_size}")

    def output_shape(self, in_shape: Shape) -> Shape:
        """Shape after this layer; raises :class:`SpecShapeError` when the map is too small."""
        _, h, w = _expect_map(self.name, in_shape)
        if self.padding == "same":
            return (self.out_channels, h, w)
        k = self.kernel_size
        if h < k or w < k:
            raise SpecShapeError(f"'{self.name}' (a {k}x{k} unpadded conv) got a {h}x{w} map")
        return (self.out_channels, h - k + 1, w - k + 1)

    def build(self, in_shape: Shape) -> nn.Module:
        """The module for input shape ``in_shape``."""
        return conv_block(
            in_shape[0],
            self.out_channels,
            self.kernel_size,
            padding=self.padding,
            batch_norm=self.batch_norm,
            relu=True,
        )


@dataclass(frozen=True)
class MaxPool:
    """2×2 max-pooling with stride 2.

    Only even sizes are accepted: flooring an odd size would lose a row that the mirror's ×2
    upsampling cannot restore, so decoder and image sizes would no longer match.
    """

    name: str

    def output_shape(self, in_shape: Shape) -> Shape:
        """Shape after this layer; raises :class:`SpecShapeError` for odd H or W."""
        c, h, w = _expect_map(self.name, in_shape)
        if h % 2 or w % 2:
            raise SpecShapeError(f"'{self.name}' (2x2 max-pool) needs an even size, got {h}x{w}")
        return (c, h // 2, w // 2)

    def build(self, in_shape: Shape) -> nn.Module:
        """The module (shape-independent)."""
        return nn.MaxPool2d(2)


@dataclass(frozen=True)
class Flatten:
    """``(C, H, W)`` → ``(C·H·W,)``, the hand-over from convolutions to fully connected layers."""

    name: str

    def output_shape(self, in_shape: Shape) -> Shape:
        """Shape after this layer."""
        c, h, w = _expect_map(self.name, in_shape)
        return (c * h * w,)

    def build(self, in_shape: Shape) -> nn.Module:
        """The module (shape-independent)."""
        return nn.Flatten()


@dataclass(frozen=True)
class Linear:
    """Fully connected layer → (BatchNorm) → (ReLU).

    Attributes:
        name: layer and tap name.
        out_features: output width.
        batch_norm: BatchNorm between the layer and the ReLU.
        relu: False only for the logits layer.
    """

    name: str
    out_features: int
    batch_norm: bool = False
    relu: bool = True

    def output_shape(self, in_shape: Shape) -> Shape:
        """Shape after this layer; the input must already be flat."""
        if len(in_shape) != 1:
            raise SpecShapeError(f"'{self.name}' needs a flat input, got shape {in_shape}")
        return (self.out_features,)

    def build(self, in_shape: Shape) -> nn.Module:
        """The module for input shape ``in_shape``."""
        return linear_block(in_shape[0], self.out_features, batch_norm=self.batch_norm, relu=self.relu)


@dataclass(frozen=True)
class Dropout:
    """Dropout; not a tap (its output is randomly masked in training) and not mirrored.

    Attributes:
        name: layer name.
        p: drop probability.
        channelwise: drop whole feature maps (``nn.Dropout2d``), for dropout between convs.
    """

    name: str
    p: float = 0.5
    channelwise: bool = False

    def output_shape(self, in_shape: Shape) -> Shape:
        """Unchanged."""
        if self.channelwise:
            _expect_map(self.name, in_shape)
        return in_shape

    def build(self, in_shape: Shape) -> nn.Module:
        """The module (shape-independent)."""
        return nn.Dropout2d(self.p) if self.channelwise else nn.Dropout(self.p)


@dataclass(frozen=True)
class Normalize:
    """A fixed input normalisation ``(x − mean) / std``, part of the network rather than the data.

    Published recipes normalise their inputs (TLlib's digits: mean 0.5, std 0.5); doing it
    inside the network keeps every dataset in [0, 1], the range the decoders reconstruct and
    the augmentations assume, while the convolutions see exactly the recipe's inputs. Like
    dropout it is not a tap and not mirrored (T1 reconstructs the [0, 1] image).

    Attributes:
        name: layer name.
        mean: subtracted from every pixel.
        std: divides every pixel after the subtraction.
    """

    name: str
    mean: float = 0.5
    std: float = 0.5

    def output_shape(self, in_shape: Shape) -> Shape:
        """Unchanged."""
        return in_shape

    def build(self, in_shape: Shape) -> nn.Module:
        """The module (shape-independent, no parameters)."""
        return _Affine(1.0 / self.std, -self.mean / self.std)


class _Affine(nn.Module):
    """``x · scale + shift`` with fixed numbers (no parameters, no buffers: checkpoints unchanged)."""

    def __init__(self, scale: float, shift: float) -> None:
        super().__init__()
        self.scale, self.shift = scale, shift

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale + self.shift

    def extra_repr(self) -> str:
        return f"scale={self.scale}, shift={self.shift}"


LayerSpec = Normalize | Conv | MaxPool | Flatten | Linear | Dropout


def spec_shapes(spec: Sequence[LayerSpec], in_shape: Shape) -> list[Shape]:
    """Per-sample shapes through ``spec``: ``[in_shape, after spec[0], after spec[1], ...]``.

    Raises:
        SpecShapeError: a layer cannot take the shape it receives.
    """
    shapes = [in_shape]
    for layer in spec:
        shapes.append(layer.output_shape(shapes[-1]))
    return shapes


def check_builder_args(network: str, *, in_channels: int, image_size: int, num_classes: int) -> None:
    """Reject non-positive sizes with a message naming the network, before torch fails cryptically.

    Raises:
        ConfigError: an argument is not a positive integer.
    """
    values = {"in_channels": in_channels, "image_size": image_size, "num_classes": num_classes}
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"network '{network}': {key} must be a positive integer, got {value!r}")


def image_shapes(
    network: str, spec: Sequence[LayerSpec], *, in_channels: int, image_size: int
) -> list[Shape]:
    """:func:`spec_shapes` for a square image, with a user-facing error for sizes that don't fit.

    Raises:
        ConfigError: the spec cannot take ``image_size``; the message lists the sizes that can.
    """
    try:
        return spec_shapes(spec, (in_channels, image_size, image_size))
    except SpecShapeError as error:
        reason = error
    working = []
    for size in range(1, LARGEST_SIZE_LISTED + 1):
        try:
            spec_shapes(spec, (in_channels, size, size))
        except SpecShapeError:
            continue
        working.append(str(size))
    raise ConfigError(
        f"network '{network}' cannot take image_size {image_size}: {reason}. "
        f"Sizes that work (up to {LARGEST_SIZE_LISTED}): {', '.join(working) or 'none'}"
    )


# --- the network ---------------------------------------------------------------------------------


class TapNetwork(nn.Module):
    """A classifier whose intermediate outputs can be read by name.

    The network is a chain of named layers, each registered directly on this module, so
    state_dict keys read like the architecture (``conv1.conv.weight``, ``fc2.linear.weight``).
    A *tap* is the output of one layer of the chain; the last layer is always ``"logits"``.

    Args:
        layers: ``(name, module)`` pairs, applied in order; the last must be named ``"logits"``.
        name: the registry name, for error messages.
        in_channels: image channels the network expects.
        image_size: image height and width the network expects.
        num_classes: width of the logits.
        coupling_tap: the tap T1 reads (METHOD.md D1), e.g. ``"fc2"`` for ``drcn``.
        tap_shapes: per-sample output shape of every layer that is a tap (dropout layers are
            not); the tests check these against real forward passes.
        spec: the layer spec the chain was built from, or ``None`` for networks (ResNet) that
            are not a plain chain of spec layers; the mirror builder needs it.
    """

    def __init__(
        self,
        layers: Sequence[tuple[str, nn.Module]],
        *,
        name: str,
        in_channels: int,
        image_size: int,
        num_classes: int,
        coupling_tap: str,
        tap_shapes: Mapping[str, Shape],
        spec: Sequence[LayerSpec] | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.in_channels = in_channels
        self.image_size = image_size
        self.num_classes = num_classes
        self.coupling_tap = coupling_tap
        self.coupling_temperature: float | None = None
        self.spec: tuple[LayerSpec, ...] | None = tuple(spec) if spec is not None else None
        self._order = tuple(layer_name for layer_name, _ in layers)
        self._index = {layer_name: i for i, layer_name in enumerate(self._order)}
        self._tap_shapes = {tap: tuple(shape) for tap, shape in tap_shapes.items()}
        for layer_name, module in layers:
            self.add_module(layer_name, module)
        # Programming errors in a builder, so plain exceptions rather than ConfigError.
        if not self._order or self._order[-1] != LOGITS:
            raise ValueError(f"{name}: the last layer must be named '{LOGITS}', got {self._order}")
        if self._tap_shapes.get(LOGITS) != (num_classes,):
            raise ValueError(f"{name}: tap '{LOGITS}' must have shape ({num_classes},)")
        if not set(self._tap_shapes) <= set(self._order) or coupling_tap not in self._tap_shapes:
            raise ValueError(f"{name}: taps {list(self._tap_shapes)} must be layers {self._order}")

    @classmethod
    def from_spec(
        cls,
        spec: Sequence[LayerSpec],
        *,
        name: str,
        in_channels: int,
        image_size: int,
        num_classes: int,
        coupling_tap: str,
    ) -> TapNetwork:
        """Build the chain from a layer spec; every layer but dropout and normalisation becomes a tap.

        Raises:
            ConfigError: ``image_size`` doesn't fit the spec, or an argument is not positive.
        """
        check_builder_args(name, in_channels=in_channels, image_size=image_size, num_classes=num_classes)
        shapes = image_shapes(name, spec, in_channels=in_channels, image_size=image_size)
        layers = [(layer.name, layer.build(shape)) for layer, shape in zip(spec, shapes[:-1], strict=True)]
        tap_shapes = {
            layer.name: shape
            for layer, shape in zip(spec, shapes[1:], strict=True)
            if not isinstance(layer, Dropout | Normalize)
        }
        return cls(
            layers,
            name=name,
            in_channels=in_channels,
            image_size=image_size,
            num_classes=num_classes,
            coupling_tap=coupling_tap,
            tap_shapes=tap_shapes,
            spec=spec,
        )

    def forward(self, x: Tensor) -> Tensor:
        """Class logits ``(B, num_classes)`` of images ``(B, C, H, W)``."""
        return self._run(x, 0, len(self._order))

    def forward_taps(self, x: Tensor, taps: Sequence[str]) -> dict[str, Tensor]:
        """The outputs of ``taps`` (in the order asked), running the chain only as far as needed.

        Raises:
            ConfigError: a name is not a tap of this network; the message lists the valid ones.
        """
        for tap in taps:
            self._check_tap(tap)
        wanted = set(taps)
        if not wanted:
            return {}
        outputs: dict[str, Tensor] = {}
        for layer_name in self._order[: max(self._index[tap] for tap in wanted) + 1]:
            x = self.get_submodule(layer_name)(x)
            if layer_name in wanted:
                outputs[layer_name] = x
        return {tap: outputs[tap] for tap in taps}

    def coupling(self, x: Tensor) -> Tensor:
        """What T1 reads from T2 for images ``x``: the coupling tap's output, softened as
        ``softmax(z / τ)`` when :meth:`use_coupling_tap` set a temperature (D8's soft logits)."""
        features = self.forward_taps(x, [self.coupling_tap])[self.coupling_tap]
        if self.coupling_temperature is None:
            return features
        return (features.float() / self.coupling_temperature).softmax(dim=1)

    def use_coupling_tap(self, name: str, *, temperature: float | None = None) -> None:
        """Couple through tap ``name`` instead of the architecture's default (before T1 is built).

        ``temperature`` softens it (only the logits: a softmax over other features means nothing).

        Raises:
            ConfigError: ``name`` is not a tap, or a temperature is asked for another tap.
        """
        self._check_tap(name)
        if temperature is not None and name != LOGITS:
            raise ConfigError(f"only the '{LOGITS}' tap can be softened with a temperature, not '{name}'")
        self.coupling_tap = name
        self.coupling_temperature = temperature

    def tap_names(self) -> list[str]:
        """Valid tap names, input to output."""
        return [layer_name for layer_name in self._order if layer_name in self._tap_shapes]

    def tap_shape(self, name: str) -> tuple[int, ...]:
        """Per-sample output shape of tap ``name``, e.g. ``(1024,)`` or ``(200, 8, 8)``."""
        self._check_tap(name)
        return self._tap_shapes[name]

    def classify_tap(self, features: Tensor) -> Tensor:
        """Logits from the coupling tap's output, so a method can reuse one forward pass.

        ``features`` has shape ``(B, *tap_shape(coupling_tap))``; dropout after the tap applies
        as in :meth:`forward`. Not for a softened tap, whose output is no longer the layer's.
        """
        if self.coupling_temperature is not None:
            raise ValueError(f"{self.name}: classify_tap on a softened coupling tap")
        return self._run(features, self._index[self.coupling_tap] + 1, len(self._order))

    def _run(self, x: Tensor, start: int, stop: int) -> Tensor:
        for layer_name in self._order[start:stop]:
            x = self.get_submodule(layer_name)(x)
        return x

    def _check_tap(self, name: str) -> None:
        if name not in self._tap_shapes:
            valid = self.tap_names()
            raise ConfigError(
                f"network '{self.name}' has no tap '{name}';{did_you_mean(name, valid)} "
                f"valid taps: {', '.join(valid)}"
            )

    def extra_repr(self) -> str:
        softened = "" if self.coupling_temperature is None else f", softened τ={self.coupling_temperature:g}"
        return f"name={self.name!r}, coupling_tap={self.coupling_tap!r}{softened}"
