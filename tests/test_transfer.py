"""Transfer learning (paper §4.1, Table 3): pretrained, timm and ONNX sources, ``fine_tune``, ``tl_*``."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cetl.build import DataInfo, build_method, build_source
from cetl.data.synthetic import synthetic_training_data
from cetl.engine.loop import train
from cetl.errors import CetlError, ConfigError
from cetl.experiments import EXPERIMENTS
from cetl.experiments.transfer import TABLE2, TABLE3
from cetl.methods.base import Batch
from cetl.methods.fine_tune import FineTune, FineTuneConfig
from cetl.networks import NETWORKS
from cetl.source import InputTransform, source_from_network, source_from_onnx, source_from_torchvision

CIFAR = DataInfo(num_classes=10, channels=3, image_size=32, sizes={}, notes=())
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def cli(*args: str) -> int:
    from cetl.cli import main

    return main(list(args))


# --------------------------------------------------------------------------- experiments


def test_table3_experiments_are_registered_with_the_papers_numbers():
    for source in ("alexnet", "vgg16", "googlenet", "resnet50", "cicnn_cifar100"):
        for target in ("cifar10s", "stl10"):
            config = EXPERIMENTS.get(f"tl_{source}_to_{target}")("paper")
            assert (config.setting, config.network.name, config.method.name) == ("transfer", "ci_cnn", "cetl")
            assert config.data.target == config.data.source == {"cifar10s": "cifar10"}.get(target, target)
    paper = EXPERIMENTS.get("tl_vgg16_to_cifar10s")("paper").source
    assert (paper.kind, paper.model, paper.input_size) == ("torchvision", "vgg16:IMAGENET1K_V1", None)
    smoke = EXPERIMENTS.get("tl_vgg16_to_cifar10s")("smoke").source
    assert (smoke.model, smoke.input_size) == ("vgg16:none", 64)  # no download in tests
    cicnn = EXPERIMENTS.get("tl_cicnn_cifar100_to_stl10")("quick").source
    assert (cicnn.kind, cicnn.experiment) == ("experiment", "pretrain_cicnn_cifar100")
    assert TABLE3[("cetl", "tl_vgg16_to_cifar10s")] == 65.57
    assert TABLE3[("fine_tune", "tl_vgg16_to_stl10")] == 61.17
    assert TABLE3[("target_only", "tl_resnet50_to_stl10")] == 60.52
    assert ("cetl", "tl_cicnn_cifar100_to_cifar10s") not in TABLE3  # the paper has no such cell
    assert TABLE2[("cetl_fi", "tl_alexnet_to_cifar10s")] == 64.19


@pytest.mark.parametrize(
    ("source", "tap", "adapter_in"),
    [("alexnet", 4096, 4096), ("vgg16", 4096, 4096), ("googlenet", 1024, None), ("resnet50", 2048, 2048)],
)
def test_every_imagenet_source_couples_to_ci_cnn(source, tap, adapter_in):
    """S's features before the last FC layer, mapped to CI-CNN's fc7 (D1) where widths differ."""
    config = EXPERIMENTS.get(f"tl_{source}_to_cifar10s")("smoke")
    frozen = build_source(config.source, run_dir=None)
    assert frozen.input_transform == InputTransform(size=64, channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert frozen.tap_shape((3, 32, 32)) == (tap,)
    method = build_method(config, CIFAR, source=frozen)
    linears = [m for m in method.source_adapter.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == ([(adapter_in, 1024)] if adapter_in else [])


# --------------------------------------------------------------------------- torchvision sources


def test_missing_weights_name_the_file_and_where_torchvision_reads_it(monkeypatch, tmp_path):
    def offline(*args, **kwargs):
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr(socket, "getaddrinfo", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(CetlError) as error:
        source_from_torchvision("alexnet:IMAGENET1K_V1", tap="coupling", temperature=4.0)
    message = str(error.value)
    assert str(tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth") in message
    assert "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth" in message
    assert "source.model=alexnet:none" in message
    with pytest.raises(ConfigError, match=r"known: IMAGENET1K_V1, or 'none' for random weights"):
        source_from_torchvision("alexnet:IMAGENET", tap="coupling", temperature=4.0)


def test_random_weights_keep_the_pretrained_preprocessing_unless_overridden():
    random = source_from_torchvision("resnet18:none", tap="coupling", temperature=4.0)
    assert random.input_transform == InputTransform(
        size=224, channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD
    )
    small = source_from_torchvision(
        "resnet18:none", tap="coupling", temperature=4.0, input_size=40, normalize="symmetric"
    )
    assert small.input_transform == InputTransform(size=40, channels=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert small(torch.rand(2, 1, 32, 32)).shape == (2, 512)
    googlenet = source_from_torchvision("googlenet:none", tap="coupling", temperature=4.0, input_size=64)
    assert googlenet.model.aux1 is None and googlenet.model.aux2 is None  # as the ImageNet weights
    assert googlenet(torch.rand(1, 3, 32, 32)).shape == (1, 1024)


def test_resized_inputs_are_for_s_only_and_bn_sources_have_a_fingerprint():
    source = source_from_torchvision("resnet18:none", tap="coupling", temperature=4.0, input_size=48)
    seen: list[tuple[int, ...]] = []
    source.model.conv1.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    images = torch.rand(3, 3, 32, 32)
    source(images)
    assert seen == [(3, 3, 48, 48)] and images.shape == (3, 3, 32, 32)
    assert len(source.fingerprint()) == 64  # BatchNorm's 0-dim num_batches_tracked buffers hash too


# --------------------------------------------------------------------------- ONNX sources


class _FeaturesAndLogits(nn.Module):
    """A project network exported with two outputs: CI-CNN's fc7 features, then its logits."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        taps = self.net.forward_taps(x, ["fc7", "logits"])
        return taps["fc7"], taps["logits"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(CI-CNN, dynamic-batch ONNX file, fixed-batch-4 ONNX file), exported as ``cetl export`` does."""
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    net = NETWORKS.get("ci_cnn")(in_channels=3, image_size=32, num_classes=10).eval()
    folder = tmp_path_factory.mktemp("onnx")
    paths = {}
    for name, batch in (("dynamic", 2), ("fixed", 4)):
        paths[name] = folder / f"{name}.onnx"
        dynamic = {"x": {0: torch.export.Dim("batch", min=1)}} if name == "dynamic" else None
        torch.onnx.export(
            _FeaturesAndLogits(net).eval(),
            (torch.rand(batch, 3, 32, 32),),
            str(paths[name]),
            input_names=["images"],
            output_names=["features", "logits"],
            dynamic_shapes=dynamic,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return net, paths["dynamic"], paths["fixed"]


def test_onnx_outputs_are_chosen_by_the_tap(exported):
    net, dynamic, _ = exported
    images = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        expected = net.forward_taps(images, ["fc7", "logits"])
    first = source_from_onnx(dynamic, tap="coupling", temperature=4.0)
    torch.testing.assert_close(first(images), expected["fc7"], atol=1e-4, rtol=1e-4)
    logits = source_from_onnx(dynamic, tap="logits", temperature=4.0)  # an output of that name
    torch.testing.assert_close(logits(images), expected["logits"], atol=1e-4, rtol=1e-4)
    soft = source_from_onnx(dynamic, tap="soft", temperature=4.0)  # the output named logits, softened
    torch.testing.assert_close(
        soft(images), torch.softmax(expected["logits"] / 4.0, dim=1), atol=1e-5, rtol=1e-4
    )
    # S's own predictions are the logits output whichever tap the coupling reads
    torch.testing.assert_close(first.predict(images), expected["logits"], atol=1e-4, rtol=1e-4)
    assert first.input_transform == InputTransform(size=32, channels=3)  # from the file; [0,1] inputs
    with pytest.raises(ConfigError, match=r"has no output 'fc6'; its outputs: features, logits"):
        source_from_onnx(dynamic, tap="fc6", temperature=4.0)


def test_fixed_batch_onnx_runs_in_padded_chunks_and_is_fingerprinted_by_its_bytes(exported, tmp_path):
    net, dynamic, fixed = exported
    source = source_from_onnx(fixed, tap="coupling", temperature=4.0)
    assert source.model.fixed_batch == 4
    images = torch.rand(10, 3, 32, 32)  # chunks of 4, 4 and 2 padded to 4
    with torch.no_grad():
        expected = net.forward_taps(images, ["fc7"])["fc7"]
    torch.testing.assert_close(source(images), expected, atol=1e-4, rtol=1e-4)
    assert source.tap_shape((3, 32, 32)) == (1024,)
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(fixed.read_bytes())
    same = source_from_onnx(copy, tap="coupling", temperature=4.0)
    other = source_from_onnx(dynamic, tap="coupling", temperature=4.0)
    assert same.model.sha256.equal(source.model.sha256)
    assert not other.model.sha256.equal(source.model.sha256)
    assert other.fingerprint() != source.fingerprint()
    with pytest.raises(ConfigError, match=r"takes 32×32 images; source.input_size=64 cannot change that"):
        source_from_onnx(fixed, tap="coupling", temperature=4.0, input_size=64)


def test_onnx_errors_are_clear(exported, tmp_path, monkeypatch):
    _, dynamic, _ = exported
    with pytest.raises(ConfigError, match=r"cannot be read as an ONNX file"):
        source_from_onnx(tmp_path / "missing.onnx", tap="coupling", temperature=4.0)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")
    with pytest.raises(CetlError, match=r"ONNX Runtime could not load 'garbage.onnx'"):
        source_from_onnx(garbage, tap="coupling", temperature=4.0)
    source = source_from_onnx(dynamic, tap="coupling", temperature=4.0)
    target_net = NETWORKS.get("ci_cnn")(in_channels=3, image_size=32, num_classes=10)
    with pytest.raises(ConfigError, match=r"ONNX file runs in ONNX Runtime and cannot be fine-tuned"):
        FineTune(FineTuneConfig(), target_net=target_net, source=source)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(CetlError, match=r'pip install "cetl\[onnx\]"'):
        source_from_onnx(dynamic, tap="coupling", temperature=4.0)


# --------------------------------------------------------------------------- timm sources


def test_timm_source_without_timm_names_the_extra(monkeypatch):
    from cetl.source import source_from_timm

    monkeypatch.setitem(sys.modules, "timm", None)
    with pytest.raises(CetlError, match=r'pip install "cetl\[timm\]"'):
        source_from_timm("resnet18", tap="coupling", temperature=4.0)


def test_timm_source_reads_pre_logits_with_timms_preprocessing():
    pytest.importorskip("timm")
    from cetl.source import source_from_timm

    source = source_from_timm("resnet18:none", tap="coupling", temperature=4.0, input_size=48)
    assert source.input_transform == InputTransform(size=48, channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert source(torch.rand(2, 3, 32, 32)).shape == (2, 512)
    with pytest.raises(ConfigError, match=r"unknown timm model 'resnet181'; did you mean"):
        source_from_timm("resnet181:none", tap="coupling", temperature=4.0)
    with pytest.raises(ConfigError, match=r"can only be 'none'"):
        source_from_timm("resnet18:IMAGENET1K_V1", tap="coupling", temperature=4.0)
    network = NETWORKS.get("ci_cnn")(in_channels=3, image_size=32, num_classes=7)
    tuned = FineTune(FineTuneConfig(), target_net=network, source=source)
    assert tuned.predict(torch.rand(2, 3, 32, 32)).shape == (2, 7)  # timm's reset_classifier


# --------------------------------------------------------------------------- fine_tune


def test_fine_tune_trains_a_copy_of_s_with_a_new_last_layer(tmp_path):
    source = source_from_torchvision("resnet18:none", tap="coupling", temperature=4.0, input_size=32)
    before = source.fingerprint()
    target_net = NETWORKS.get("lenet")(in_channels=1, image_size=28, num_classes=4)
    method = FineTune(FineTuneConfig(), target_net=target_net, source=source)
    assert method.head_name == "fc" and (method.network.fc.in_features, method.network.fc.out_features) == (
        512,
        4,
    )
    assert source.model.fc.out_features == 1000  # S keeps its own classifier

    data = synthetic_training_data(count=32, image_size=28, num_classes=4)
    x, y = data.labelled.x[:6], data.labelled.y[:6]
    method.eval()
    (stage,) = method.stages(0)
    loss = stage.updates[0].losses(Batch(x=x, y=y))["classify"]
    logits = method.network(source.input_transform(x))  # grey → RGB, 28 → 32, for S's network only
    reference = -(logits.log_softmax(dim=1)[torch.arange(6), y]).mean()
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(loss, F.cross_entropy(logits, y))

    start = {k: v.clone() for k, v in method.network.state_dict().items()}
    result = train(
        method,
        data,
        train_config=EXPERIMENTS.get("tl_alexnet_to_cifar10s")("smoke").train,
        optimizer_config=EXPERIMENTS.get("tl_alexnet_to_cifar10s")("smoke").optimizer,
        seed=0,
        run_dir=tmp_path,
        resume=False,
    )
    assert result.term_steps["classify"] == 4
    assert source.fingerprint() == before  # S bit-identical: only the copy trained
    trained = method.network.state_dict()
    assert not torch.equal(trained["conv1.weight"], start["conv1.weight"])
    assert not torch.equal(trained["fc.weight"], start["fc.weight"])


def test_fine_tune_replaces_a_project_networks_logits():
    net = NETWORKS.get("lenet")(in_channels=1, image_size=28, num_classes=10)
    source = source_from_network(net, tap="coupling", temperature=4.0, description="lenet")
    target_net = NETWORKS.get("lenet")(in_channels=1, image_size=28, num_classes=3)
    method = FineTune(FineTuneConfig(), target_net=target_net, source=source)
    assert method.head_name == "logits" and method.predict(torch.rand(2, 1, 28, 28)).shape == (2, 3)
    assert net.logits.out_features == 10 and all(not p.requires_grad for p in net.parameters())
    assert set(method.trainable_networks()) == {"fine_tuned"}


def test_fine_tune_keeps_s_head_for_the_same_classes_and_trains_the_backbone_slower():
    digits = tuple(str(d) for d in range(10))
    net = NETWORKS.get("lenet")(in_channels=1, image_size=28, num_classes=10)
    source = source_from_network(net, tap="coupling", temperature=4.0, description="lenet", classes=digits)
    target_net = NETWORKS.get("lenet")(in_channels=1, image_size=28, num_classes=10)
    x = torch.rand(4, 1, 28, 28)
    kept = FineTune(FineTuneConfig(), target_net=target_net, source=source, class_names=digits)
    kept.eval()
    torch.testing.assert_close(kept.predict(x), source.predict(x))  # starts as S itself
    assert kept.kept_head
    other = tuple("abcdefghij")
    fresh = FineTune(FineTuneConfig(), target_net=target_net, source=source, class_names=other)
    assert not fresh.kept_head and not torch.equal(fresh.predict(x), source.predict(x))
    unknown = source_from_network(net, tap="coupling", temperature=4.0, description="lenet")
    assert not FineTune(FineTuneConfig(), target_net=target_net, source=unknown, class_names=digits).kept_head
    assert FineTune(FineTuneConfig(head="keep"), target_net=target_net, source=unknown).kept_head
    three = NETWORKS.get("lenet")(in_channels=1, image_size=28, num_classes=3)
    with pytest.raises(ConfigError, match=r"does not output 3 classes; use method\.head=new"):
        FineTune(FineTuneConfig(head="keep"), target_net=three, source=unknown)
    (stage,) = kept.stages(0)
    head, backbone = stage.updates[0].param_groups(1e-3)
    assert head["lr"] == 1e-3 and backbone["lr"] == pytest.approx(1e-4)
    assert {id(p) for p in head["params"]} == {id(p) for p in kept.network.logits.parameters()}
    assert len(head["params"]) + len(backbone["params"]) == len(list(kept.network.parameters()))


# --------------------------------------------------------------------------- end to end, real data


@pytest.mark.needs_data
def test_cli_cetl_from_alexnet_and_fine_tuned_googlenet(data_root, tmp_path, capsys):
    root = str(data_root.path)
    assert (
        cli(
            "train",
            "tl_alexnet_to_cifar10s",
            "--profile",
            "smoke",
            "--data-root",
            root,
            "--out",
            str(tmp_path / "a"),
        )
        == 0
    )
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    assert (summary["setting"], summary["method"], summary["selected_by"]) == ("transfer", "cetl", "last")
    assert summary["source"] == "torchvision alexnet:none @coupling"
    assert summary["source_accuracy_on_target"] is None  # S's ImageNet labels are not the target's
    assert set(summary["stage_seconds"]) == {"reconstruct_source", "reconstruct_target", "classify"}
    args = ["train", "tl_googlenet_to_cifar10s", "--profile", "smoke", "--data-root", root]
    assert cli(*args, "--method", "fine_tune", "--out", str(tmp_path / "ft")) == 0
    summary = json.loads((tmp_path / "ft" / "summary.json").read_text())
    assert summary["classify_steps"] == 4 and summary["data_sizes"]["labelled_train"] == 58


@pytest.mark.needs_data
def test_cli_cetl_from_a_fixed_batch_onnx_source(exported, data_root, tmp_path):
    _, _, fixed = exported
    args = ["train", "tl_alexnet_to_cifar10s", "--profile", "smoke", "--data-root", str(data_root.path)]
    onnx = ["--set", "source.kind=onnx", "--set", f"source.path={fixed}", "--set", "source.input_size=null"]
    assert (
        cli(*args, *onnx, "--method", "cetl_e", "--set", "train.rounds=1", "--out", str(tmp_path / "run"))
        == 0
    )
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["source"].startswith("onnx fixed.onnx sha256:") and summary["source"].endswith("@features")


@pytest.mark.needs_data
def test_cli_project_trained_source_is_a_cached_experiment_run(data_root, tmp_path, capsys, monkeypatch):
    """``source.kind=experiment``: S is another experiment's run, trained once and reused."""
    monkeypatch.chdir(tmp_path)
    args = ["train", "tl_cicnn_mnist_to_cifar10s", "--profile", "smoke", "--data-root", str(data_root.path)]
    assert cli(*args, "--method", "fine_tune", "--out", "ft") == 0
    assert "training it into runs/pretrain_cicnn_mnist/smoke/source_only/seed0" in capsys.readouterr().err
    assert cli(*args, "--method", "cetl_e", "--set", "train.rounds=1", "--out", "cetl") == 0
    assert "training it" not in capsys.readouterr().err
    summary = json.loads(Path("cetl/summary.json").read_text())
    assert summary["source_run"] == "runs/pretrain_cicnn_mnist/smoke/source_only/seed0"
    assert summary["source"].endswith("@fc7")


@pytest.mark.needs_data
@pytest.mark.parametrize(
    ("experiment", "missing"),
    [("tl_cicnn_cifar100_to_cifar10s", "CIFAR-100"), ("tl_vgg16_to_stl10", "STL-10")],
)
def test_missing_target_or_source_data_fails_clearly(
    experiment, missing, data_root, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    assert cli("train", experiment, "--profile", "smoke", "--data-root", str(data_root.path)) == 1
    err = capsys.readouterr().err
    assert f"error: {missing}" in err and "Expected files" in err
