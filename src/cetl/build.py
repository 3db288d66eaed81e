"""The only place that turns config dataclasses into objects (DESIGN.md principle 4).

Networks, methods and the engine take explicit keyword arguments; this module
reads an :class:`ExperimentConfig` and calls them, so a reader can see in one file
how every config field reaches the code that uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cetl.config import DataConfig, ExperimentConfig
from cetl.data.datasets import DATASETS, load_raw
from cetl.data.digits import (
    PROTOCOLS,
    LabelledSet,
    seeded_generator,
    seeded_subset,
    split_validation,
    to_protocol,
)
from cetl.data.root import DataRoot
from cetl.engine.loop import TrainingData
from cetl.errors import ConfigError
from cetl.methods import METHODS, Method
from cetl.networks import NETWORKS, TapNetwork


@dataclass(frozen=True)
class DataInfo:
    """Facts about the prepared data, recorded in ``summary.json``."""

    num_classes: int
    channels: int
    image_size: int
    sizes: dict[str, int]
    notes: tuple[str, ...]


def build_training_data(
    config: DataConfig, *, root: DataRoot, labelled_domain: str
) -> tuple[TrainingData, DataInfo]:
    """Load, subset, resize and split the data of a run.

    ``labelled_domain`` (the method's) decides whether the labelled stream holds source
    or target training images. Target test labels are loaded only to report accuracy.
    """
    protocol = PROTOCOLS[config.protocol]
    source, target = DATASETS.get(config.source), DATASETS.get(config.target)
    if source.num_classes != target.num_classes:
        raise ConfigError(
            f"data.source {config.source} has {source.num_classes} classes but data.target "
            f"{config.target} has {target.num_classes}; domain adaptation needs one label space"
        )
    notes: list[str] = []

    def train_split(name: str, limit: int | None) -> LabelledSet:
        raw = load_raw(name, "train", root)
        count = limit if limit is not None else protocol.train_counts.get(name)
        if count is not None and count > len(raw):
            notes.append(
                f"{name} train: {count} images requested, {len(raw)} available in "
                f"{root.describe()}; using {len(raw)}"
            )
        return to_protocol(seeded_subset(raw, count, seed=config.split_seed, name=f"{name}/train"), protocol)

    source_train = train_split(config.source, config.source_train_limit)
    target_train = train_split(config.target, config.target_train_limit)
    target_test = to_protocol(
        seeded_subset(
            load_raw(config.target, "test", root),
            config.test_limit,
            seed=config.split_seed,
            name=f"{config.target}/test",
        ),
        protocol,
    )
    labelled_all = source_train if labelled_domain == "source" else target_train
    labelled, labelled_val = split_validation(
        labelled_all,
        config.val_fraction,
        seed=config.split_seed,
        name=config.source if labelled_domain == "source" else config.target,
    )
    unlabelled = target_test.x if config.transductive else target_train.x
    data = TrainingData(labelled, labelled_val, unlabelled, target_test)
    info = DataInfo(
        num_classes=source.num_classes,
        channels=protocol.channels,
        image_size=protocol.image_size,
        sizes={
            "labelled_train": len(labelled),
            "labelled_val": len(labelled_val),
            "target_unlabelled": int(unlabelled.shape[0]),
            "target_test": len(target_test),
        },
        notes=tuple(notes),
    )
    return data, info


def build_target_net(config: ExperimentConfig, info: DataInfo) -> TapNetwork:
    """T2, initialised from a generator seeded by the run seed."""
    torch.manual_seed(seeded_generator(config.seed, "init", "target_net").initial_seed())
    return NETWORKS.get(config.network.name)(
        in_channels=info.channels, image_size=info.image_size, num_classes=info.num_classes
    )


def build_method(config: ExperimentConfig, info: DataInfo) -> Method:
    """The configured method around a freshly initialised target network."""
    method_class = METHODS.get(config.method.name)
    return method_class(config.method, target_net=build_target_net(config, info))


def labelled_domain(config: ExperimentConfig) -> str:
    """Whose labels the configured method trains on (without building it)."""
    return METHODS.get(config.method.name).labelled_domain
