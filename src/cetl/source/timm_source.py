"""S from a timm model (``source.kind=timm``; the optional ``timm`` extra).

timm names a model and, after a dot, a pretrained tag (``resnet18.a1_in1k``); its own data
config gives the input size and normalisation, which become S's input transform.
``NAME:none`` builds random weights with that same preprocessing (smoke tests, benchmarks).

The ``coupling`` tap is timm's own pre-logits output (``forward_head(..., pre_logits=True)``):
"features before the last FC layer" (METHOD.md §5) for every timm architecture, including
those whose classifier is not an ``nn.Linear``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from cetl.errors import CetlError, ConfigError
from cetl.registry import did_you_mean
from cetl.source.adapters import resolve_input_transform
from cetl.source.frozen import FrozenSource, InputTransform, tap_extractor

INSTALL_HINT = 'pip install "cetl[timm]"'


def _import_timm() -> Any:
    try:
        import timm
    except ImportError:
        raise CetlError(f"source.kind=timm needs the timm package: {INSTALL_HINT}") from None
    return timm


def pre_logits(model: nn.Module, x: Tensor) -> Tensor:
    """timm's features before the classifier (after global pooling), ``(B, num_features)``."""
    return model.forward_head(model.forward_features(x), pre_logits=True)


def source_from_timm(
    spec: str, *, tap: str, temperature: float, input_size: int | None = None, normalize: str = "auto"
) -> FrozenSource:
    """S from ``NAME[:none]``: a timm model, pretrained unless ``:none``.

    Raises:
        CetlError: timm is not installed, or the pretrained weights cannot be fetched.
        ConfigError: unknown model name (with the closest names), or a weights suffix other
            than ``:none``.
    """
    timm = _import_timm()
    name, _, weights = spec.partition(":")
    if weights not in ("", "none"):
        raise ConfigError(
            f"timm source '{spec}': the part after ':' can only be 'none' (random weights); "
            f"name a pretrained tag with a dot instead, e.g. resnet18.a1_in1k"
        )
    if not timm.is_model(name):
        raise ConfigError(
            f"unknown timm model '{name}';{did_you_mean(name.split('.')[0], timm.list_models())} "
            f"see timm.list_models()"
        )
    pretrained = weights != "none"
    try:
        model = timm.create_model(name, pretrained=pretrained)
    except (OSError, RuntimeError, ImportError, ValueError) as error:
        raise CetlError(
            f"could not load the pretrained timm weights of {name} ({error}). timm fetches them "
            f"from the Hugging Face Hub (needs a network); offline, "
            f"fill the Hub cache ($HF_HOME) on a machine with internet first and set HF_HUB_OFFLINE=1, "
            f"or use source.model={name}:none for random weights."
        ) from None
    data_config = timm.data.resolve_model_data_config(model)
    channels, height, _ = data_config["input_size"]
    transform = resolve_input_transform(
        input_size=input_size,
        normalize=normalize,
        channels=int(channels),
        default_size=int(height),
        default_stats=(tuple(data_config["mean"]), tuple(data_config["std"])),
    )
    return frozen_timm_model(
        model, tap=tap, temperature=temperature, transform=transform, description=f"timm {spec}"
    )


def frozen_timm_model(
    model: nn.Module, *, tap: str, temperature: float, transform: InputTransform, description: str
) -> FrozenSource:
    """A timm model as S, read at ``tap`` (``coupling``: its pre-logits), behind ``transform``."""
    extract, temp = tap_extractor(model, tap, temperature, coupling=pre_logits)
    return FrozenSource(
        model,
        extract=extract,
        temperature=temp,
        input_transform=transform,
        description=f"{description} @{tap}",
    )
