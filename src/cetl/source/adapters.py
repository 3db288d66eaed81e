"""Ways to obtain S: a run folder of this project, a torchvision model, any callable.

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

from torch import Tensor, nn

from cetl.errors import CetlError, ConfigError
from cetl.networks import TapNetwork
from cetl.source.frozen import (
    FrozenSource,
    InputTransform,
    layer_extractor,
    logits_extractor,
    penultimate_extractor,
)


def source_from_network(net: TapNetwork, *, tap: str, temperature: float, description: str) -> FrozenSource:
    """S from a project network; taps read through ``forward_taps`` (it stops at the tap)."""
    if tap == "soft":
        return FrozenSource(
            net, extract=logits_extractor, temperature=temperature, description=f"{description} soft"
        )
    name = {"coupling": net.coupling_tap, "logits": "logits"}.get(tap, tap)
    net.tap_shape(name)  # raises ConfigError listing the valid taps

    def extract(model: nn.Module, x: Tensor) -> Tensor:
        return model.forward_taps(x, [name])[name]

    return FrozenSource(net, extract=extract, description=f"{description} @{name}")


def source_from_run(run_dir: Path, *, tap: str, temperature: float) -> FrozenSource:
    """S from a finished run folder of this project (its selected weights, ``best.pt``)."""
    from cetl.runs import load_target_net  # runs builds methods that hold sources

    _, net, _ = load_target_net(run_dir)
    return source_from_network(net, tap=tap, temperature=temperature, description=f"run {run_dir}")


def source_from_torchvision(spec: str, *, tap: str, temperature: float) -> FrozenSource:
    """S from ``NAME[:WEIGHTS]``, e.g. ``resnet50:IMAGENET1K_V1`` (``torchvision.models``).

    The weights' own preprocessing (input size, ImageNet mean and std) becomes S's input
    transform; grey images are repeated to RGB.

    Raises:
        ConfigError: unknown model or weights name.
        CetlError: the weights are not in the torch hub cache and cannot be downloaded.
    """
    import torchvision.models as models

    name, _, weights_name = spec.partition(":")
    if name not in models.list_models():
        raise ConfigError(f"unknown torchvision model '{name}'; see torchvision.models.list_models()")
    weights = None
    transform = InputTransform(channels=3)
    if weights_name:
        weights_enum = models.get_model_weights(name)
        try:
            weights = weights_enum[weights_name]
        except KeyError:
            known = [w.name for w in weights_enum]
            raise ConfigError(
                f"unknown weights '{weights_name}' for {name}; known: {', '.join(known)}"
            ) from None
        preprocess = weights.transforms()
        transform = InputTransform(
            size=int(preprocess.crop_size[0]),
            channels=3,
            mean=tuple(preprocess.mean),
            std=tuple(preprocess.std),
        )
    try:
        model = models.get_model(name, weights=weights)
    except (OSError, RuntimeError) as error:  # URLError is an OSError
        raise CetlError(
            f"could not load the {spec} weights ({error}). Offline, put the weights file in "
            f"the torch hub cache ($TORCH_HOME/hub/checkpoints, default ~/.cache/torch/hub/"
            f"checkpoints) on a machine with internet first."
        ) from None
    if tap == "soft":
        extract, temp = logits_extractor, temperature
    elif tap == "logits":
        extract, temp = logits_extractor, None
    elif tap == "coupling":
        extract, temp = penultimate_extractor(model), None
    else:
        extract, temp = layer_extractor(model, tap), None
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
