"""The only place that turns config dataclasses into objects (DESIGN.md principle 4).

Networks, methods and the engine take explicit keyword arguments; this module
reads an :class:`ExperimentConfig` and calls them, so a reader can see in one file
how every config field reaches the code that uses it. That includes a finished run's
networks (:func:`load_target_net`, :func:`source_from_run`): its saved config rebuilt here,
with the run's weights, since a run's S can itself be a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cetl.config import DataConfig, ExperimentConfig, SourceConfig
from cetl.data.custom import draw_name, read_loose_images
from cetl.data.datasets import RawSplit, dataset_variant, find_spec, load_raw
from cetl.data.labelled import LabelledSet
from cetl.data.natural import apply_protocol, protocol_num_classes
from cetl.data.protocols import PROTOCOLS, to_protocol
from cetl.data.root import DataRoot, user_cache_dir
from cetl.data.subsets import per_class_indices, seeded_subset, split_validation
from cetl.data.training import TrainingData
from cetl.engine.checkpoint import load_checkpoint
from cetl.engine.loop import BEST_CHECKPOINT
from cetl.errors import ConfigError, RunError
from cetl.methods import METHODS, Method
from cetl.networks import NETWORKS, TapNetwork, build_decoder
from cetl.networks.base import LOGITS
from cetl.networks.coupling import source_adapter
from cetl.networks.export import export_onnx
from cetl.run_folder import read_config, read_summary, source_run_config, source_run_dir
from cetl.seeding import seeded_generator
from cetl.source import (
    FeatureCache,
    FrozenSource,
    source_from_network,
    source_from_onnx,
    source_from_package,
    source_from_timm,
    source_from_torchvision,
)


@dataclass(frozen=True)
class DataInfo:
    """Facts about the prepared data, recorded in ``summary.json``."""

    num_classes: int
    channels: int
    image_size: int
    sizes: dict[str, int]
    notes: tuple[str, ...]
    variants: dict[str, str] = field(default_factory=dict)
    """``full`` or ``subset`` per dataset read (a subset's numbers are not comparable)."""
    classes: tuple[str, ...] = ()
    """Class names by label index, where the dataset knows them (fine-tuning keeps S's head
    only when S predicts these very classes)."""
    label_draw: dict[str, Any] | None = None
    """The few labelled target images (``target_labels_per_class``): seed, count per class and
    indices into the target training set as the run reads it (after its seeded subset)."""


def build_training_data(
    config: DataConfig, *, root: DataRoot, labelled_domain: str, seed: int = 0
) -> tuple[TrainingData, DataInfo]:
    """Load, subset, resize and split the data of a run.

    ``labelled_domain`` (the method's) decides whether the labelled stream holds source
    or target training images. ``seed`` is the run's: it draws the few labelled target images
    unless ``data.labels_seed`` fixes them. Target test labels are loaded only to report accuracy.
    """
    protocol = PROTOCOLS[config.protocol]
    source_classes = protocol_num_classes(config.source, protocol)
    target_classes = protocol_num_classes(config.target, protocol)
    if source_classes != target_classes:
        raise ConfigError(
            f"data.source {config.source} has {source_classes} classes but data.target "
            f"{config.target} has {target_classes} under protocol {config.protocol}; source and "
            f"target need one label space"
        )
    notes: list[str] = []

    def load(name: str, split: str) -> RawSplit:
        raw = load_raw(name, split, root)
        return apply_protocol(raw, name, split, protocol, split_seed=config.split_seed)

    def train_split(name: str, limit: int | None) -> LabelledSet:
        raw = load(name, "train")
        count = limit if limit is not None else protocol.train_counts.get(name)
        if count is not None and count > len(raw):
            notes.append(
                f"{name} train: {count} images requested, {len(raw)} available in "
                f"{root.describe()}; using {len(raw)}"
            )
        subset = seeded_subset(raw, count, seed=config.split_seed, name=f"{draw_name(name)}/train")
        return to_protocol(subset, protocol)

    source_train = train_split(config.source, config.source_train_limit)
    target_train = train_split(config.target, config.target_train_limit)
    if "test" in find_spec(config.target).splits:
        target_test = to_protocol(
            seeded_subset(
                load(config.target, "test"),
                config.test_limit,
                seed=config.split_seed,
                name=f"{draw_name(config.target)}/test",
            ),
            protocol,
        )
    else:  # the user's own data may have none: nothing to report on but validation
        size = (0, protocol.channels, protocol.image_size, protocol.image_size)
        target_test = LabelledSet(torch.zeros(size), torch.zeros(0, dtype=torch.long))
        notes.append(
            f"{config.target} has no test split: target test accuracy is not measured (null); "
            f"read the validation accuracy"
        )
    few_target = label_draw = None
    if config.target_labels_per_class > 0:
        draw_seed = seed if config.labels_seed is None else config.labels_seed
        chosen = per_class_indices(
            target_train.y,
            config.target_labels_per_class,
            seed=draw_seed,
            name=f"{draw_name(config.target)}/train",
        )
        few_target = LabelledSet(target_train.x[chosen], target_train.y[chosen])
        label_draw = {
            "seed": draw_seed,
            "per_class": config.target_labels_per_class,
            "indices": chosen.tolist(),
        }
    labelled_all = (
        source_train if labelled_domain == "source" else (target_train if few_target is None else few_target)
    )
    labelled_name = config.source if labelled_domain == "source" else config.target
    if "val" in find_spec(labelled_name).splits:  # the user's own val/ split (cetl.data.custom)
        labelled, labelled_val = labelled_all, to_protocol(load(labelled_name, "val"), protocol)
    else:
        labelled, labelled_val = split_validation(
            labelled_all, config.val_fraction, seed=config.split_seed, name=draw_name(labelled_name)
        )
    if few_target is not None and labelled_domain == "source":
        labelled = LabelledSet(torch.cat([labelled.x, few_target.x]), torch.cat([labelled.y, few_target.y]))
        notes.append(
            f"{len(few_target)} labelled {config.target} training images "
            f"({config.target_labels_per_class} per class) join the labelled source data"
        )
    unlabelled = target_test.x if config.transductive else target_train.x
    extra = [load(config.target, "unlabelled")] if "unlabelled" in find_spec(config.target).splits else []
    if config.unlabelled is not None:
        extra.append(read_loose_images(Path(config.unlabelled)))
    if extra:  # the user's own unlabelled images join the target stream
        unlabelled = torch.cat([unlabelled, *(to_protocol(raw, protocol).x for raw in extra)])
    data = TrainingData(labelled, labelled_val, unlabelled, target_test)
    info = DataInfo(
        num_classes=source_classes,
        channels=protocol.channels,
        image_size=protocol.image_size,
        sizes={
            "labelled_train": len(labelled),
            "labelled_val": len(labelled_val),
            "target_unlabelled": int(unlabelled.shape[0]),
            "target_test": len(target_test),
            **({"target_labelled": len(few_target)} if few_target is not None else {}),
        },
        notes=tuple(notes),
        variants={
            name: dataset_variant(name, root) for name in dict.fromkeys((config.source, config.target))
        },
        label_draw=label_draw,
        classes=class_names(labelled_name, source_classes),
    )
    return data, info


def class_names(dataset: str, num_classes: int) -> tuple[str, ...]:
    """``dataset``'s class names when it knows them and the protocol keeps all of them, else ``()``."""
    names = find_spec(dataset).classes
    return tuple(names) if len(names) == num_classes else ()


def build_target_net(config: ExperimentConfig, info: DataInfo) -> TapNetwork:
    """T2, initialised from a generator seeded by the run seed."""
    torch.manual_seed(seeded_generator(config.seed, "init", "target_net").initial_seed())
    return NETWORKS.get(config.network.name)(
        in_channels=info.channels, image_size=info.image_size, num_classes=info.num_classes
    )


def uses_source(config: ExperimentConfig) -> bool:
    """Whether the configured method reads a frozen source S (CETL, ADDA, KD, fine-tuning)."""
    return "source" in METHODS.get(config.method.name).components


PRETRAINED_KINDS = {
    "torchvision": (source_from_torchvision, "resnet50:IMAGENET1K_V1"),
    "timm": (source_from_timm, "resnet18.a1_in1k"),
    "packaged": (source_from_package, "efficientnet_lite0"),
}
"""Source kinds that name a pretrained model (``source.model``): its builder and an example name."""


def build_source(config: SourceConfig, *, run_dir: Path | None) -> FrozenSource:
    """S from the source section; ``run_dir`` is the resolved run for ``source_only``/``run``/
    ``experiment``. Only pretrained models (:data:`PRETRAINED_KINDS`) and ONNX files read
    ``input_size``/``normalize``."""
    options = {"tap": config.tap, "temperature": config.temperature}
    preprocessing = {"input_size": config.input_size, "normalize": config.normalize}
    if config.kind in PRETRAINED_KINDS:
        adapter, example = PRETRAINED_KINDS[config.kind]
        if not config.model:
            raise ConfigError(f"source.kind={config.kind} needs source.model, e.g. {example}")
        return adapter(config.model, **options, **preprocessing)
    if config.kind == "onnx":
        if not config.path:
            raise ConfigError("source.kind=onnx needs source.path, the .onnx file")
        return source_from_onnx(Path(config.path), **options, **preprocessing)
    if config.input_size is not None or config.normalize != "auto":
        raise ConfigError(
            f"source.input_size and source.normalize apply to torchvision, timm, packaged and onnx sources; "
            f"a source.kind={config.kind} network takes its own protocol's images (leave them unset)"
        )
    if run_dir is None:
        raise ConfigError(f"source.kind={config.kind} needs a run folder (source.path)")
    if config.access == "onnx":
        return source_from_onnx(exported_source(run_dir), **options)
    return source_from_run(run_dir, tap=config.tap, temperature=config.temperature)


SOURCE_ONNX = "source.onnx"
"""A run's ONNX export as a forward-only S (``source.access=onnx``), kept in the run folder."""


def exported_source(run_dir: Path) -> Path:
    """``run_dir``'s network as an ONNX file with its logits and coupling tap, exported once
    (atomically, so processes sharing S never read half a file) and again only when the run's
    selected weights are newer than the file."""
    path = run_dir / SOURCE_ONNX
    weights = run_dir / BEST_CHECKPOINT
    if not path.exists() or (weights.exists() and weights.stat().st_mtime > path.stat().st_mtime):
        _, net, info = load_target_net(run_dir)
        export_onnx(net, path, image_shape=(info.channels, info.image_size, info.image_size))
    return path


def build_feature_cache(config: SourceConfig) -> FeatureCache | None:
    """The D9 cache the source section asks for (``None`` when off)."""
    if config.cache == "off":
        return None
    if config.cache == "memory":
        return FeatureCache(cache_dir=None)
    return FeatureCache(
        cache_dir=Path(config.cache_dir) if config.cache_dir else user_cache_dir().parent / "features"
    )


def couple_through(target_net: TapNetwork, config: ExperimentConfig) -> None:
    """Point T2's coupling at the tap the method's ``target_tap`` names (CETL, D8), if it has one.

    ``auto`` follows S: where S's tap is ``soft`` (distillation), T2's own logits softened with
    the same τ, so T1 decodes the same kind of signal from both; otherwise the network's tap.
    """
    tap = getattr(config.method, "target_tap", None)
    if tap is None or tap == "coupling" or (tap == "auto" and config.source.tap != "soft"):
        return
    if tap in ("auto", "soft"):
        target_net.use_coupling_tap(LOGITS, temperature=config.source.temperature)
    else:
        target_net.use_coupling_tap(tap)


def build_method(config: ExperimentConfig, info: DataInfo, *, source: FrozenSource | None = None) -> Method:
    """The configured method around freshly initialised networks (seeded by the run seed).

    A method gets ``target_net`` plus the parts its class lists in ``components``; each part is
    built here, so one function shows how the config reaches every method.

    Raises:
        ConfigError: a method that needs S built without one, or shapes that cannot be coupled (D1).
    """
    method_class = METHODS.get(config.method.name)
    wanted = method_class.components
    target_net = build_target_net(config, info)
    couple_through(target_net, config)
    parts: dict[str, object] = {}
    if "source" in wanted:
        if source is None:
            raise ConfigError(f"method {config.method.name} needs a frozen source S (the source section)")
        parts["source"] = source
        if getattr(config.method, "target_init", "random") == "source":
            source.copy_into(target_net, why="method.target_init=source starts T2 from S")
    if "decoder" in wanted:
        torch.manual_seed(seeded_generator(config.seed, "init", "decoder").initial_seed())
        parts["decoder"] = build_decoder(target_net)
    if "source_adapter" in wanted:
        assert source is not None
        parts["source_adapter"] = source_adapter(
            source.tap_shape((info.channels, info.image_size, info.image_size)),
            target_net.tap_shape(target_net.coupling_tap),
        )
    if "feature_cache" in wanted:
        parts["feature_cache"] = build_feature_cache(config.source)
    if "labelled_domain" in wanted:
        parts["labelled_domain"] = method_class.labelled_domain_for(config.setting)
    if "class_names" in wanted:
        parts["class_names"] = info.classes
    if "setting" in wanted:
        parts["setting"] = config.setting
    return method_class(config.method, target_net=target_net, **parts)


def labelled_domain(config: ExperimentConfig) -> str:
    """Whose labels the configured method trains on (without building it)."""
    return METHODS.get(config.method.name).labelled_domain_for(config.setting)


def load_target_net(run_dir: Path) -> tuple[ExperimentConfig, nn.Module, DataInfo]:
    """T2 of a finished run with its selected weights, in eval mode: a :class:`TapNetwork`, or
    for ``fine_tune`` the fine-tuned copy of S behind S's input transform (images → logits)."""
    config = read_config(run_dir)
    protocol = PROTOCOLS[config.data.protocol]
    info = DataInfo(
        num_classes=protocol_num_classes(config.data.target, protocol),
        channels=protocol.channels,
        image_size=protocol.image_size,
        sizes={},
        notes=(),
    )
    states = load_checkpoint(run_dir / BEST_CHECKPOINT).get("networks", {})
    if "target_net" not in states and hasattr(METHODS.get(config.method.name), "exportable"):
        return config, _load_copy_of_source(config, info, states), info
    net = build_target_net(config, info)
    if "target_net" not in states:
        raise RunError(f"'{run_dir / BEST_CHECKPOINT}' holds no target network weights")
    net.load_state_dict(states["target_net"])
    return config, net.eval(), info


def _load_copy_of_source(config: ExperimentConfig, info: DataInfo, states: dict[str, Any]) -> nn.Module:
    """The network of a method that trains a copy of S (``fine_tune``, ``shot``): rebuilt from S
    (which must still be where the run found it) with the run's selected weights, behind S's
    input transform (the method's ``exportable()``)."""
    source_dir = None
    if config.source.path:
        source_dir = Path(config.source.path)
    elif config.source.kind in ("source_only", "experiment"):
        source_dir = source_run_dir(config, source_run_config(config))
    if source_dir is not None and read_summary(source_dir) is None:
        raise RunError(
            f"this {config.method.name} run's network is a copy of S, rebuilt from S's run, but "
            f"'{source_dir}' holds no finished run; put S's run folder back there"
        )
    method = build_method(config, info, source=build_source(config.source, run_dir=source_dir))
    for name, network in method.trainable_networks().items():
        network.load_state_dict(states[name])
    return method.exportable().eval()


def source_from_run(run_dir: Path, *, tap: str, temperature: float) -> FrozenSource:
    """S from a finished run folder of this project (its selected weights, ``best.pt``): the
    network is loaded here and handed to :func:`cetl.source.source_from_network`, so ``source/``
    never reads run folders."""
    config, net, _ = load_target_net(run_dir)
    if not isinstance(net, TapNetwork):
        raise ConfigError(
            f"'{run_dir}' is a {config.method.name} run, whose network is a copy of its own source, "
            f"not a project network with taps; use that run's source as S, or export it "
            f"(cetl export) and use the ONNX file"
        )
    labelled = config.data.source if labelled_domain(config) == "source" else config.data.target
    return source_from_network(
        net,
        tap=tap,
        temperature=temperature,
        description=f"run {run_dir}",
        classes=class_names(labelled, net.num_classes),
    )
