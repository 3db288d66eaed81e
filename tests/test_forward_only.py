"""A source run only forward: ONNX taps, kd on the unlabelled images, fixmatch, the engine's EMA
and per-stream batches (issue 36)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cetl.build import SOURCE_ONNX, DataInfo, exported_source, load_target_net
from cetl.cli import main
from cetl.config import OptimizerConfig, TrainConfig
from cetl.data.labelled import LabelledSet
from cetl.data.root import DataRoot
from cetl.data.synthetic import synthetic_training_data
from cetl.data.training import TrainingData
from cetl.engine import loop
from cetl.engine.distributed import SINGLE
from cetl.experiments import resolve
from cetl.experiments.paper import TEACHER
from cetl.losses.distillation import soft_target_loss
from cetl.methods import METHODS
from cetl.methods.base import Method, Stage
from cetl.methods.baselines import TargetOnly
from cetl.methods.fixmatch import FixMatch, FixMatchConfig
from cetl.networks import NETWORKS, TapNetwork
from cetl.networks.base import Conv, Flatten, Linear, MaxPool
from cetl.source import source_from_network
from cetl.source.onnx import source_from_onnx
from cetl.workflows.reproduce import get_table, reproduce
from cetl.workflows.runs import train_run
from helpers import make_method


@pytest.fixture(scope="module")
def _trained_source(tmp_path_factory):
    """Trains the source once per module (``data_root`` is per test, so the root is read here)."""
    cache: dict[str, Path] = {}

    def trained(data_root: DataRoot) -> Path:
        if "run" not in cache:
            run = tmp_path_factory.mktemp("s") / "source"
            config = resolve(
                "digits_mn_to_us", method="source_only", profile="smoke", sets=["network.name=lenet"]
            )
            train_run(config, run_dir=run, data_root=data_root)
            cache["run"] = run
        return cache["run"]

    return trained


@pytest.fixture
def digit_source(_trained_source, data_root):
    """A smoke ``source_only`` MNIST LeNet run folder: the S of ``tl_mn_to_us_*``."""
    return _trained_source(data_root)


@pytest.mark.needs_data
def test_an_onnx_export_carries_the_coupling_tap_and_any_tap_asked_for(digit_source, tmp_path, capsys):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    _, net, _ = load_target_net(digit_source)
    path = tmp_path / "s.onnx"
    assert (
        main(
            [
                "export",
                str(digit_source),
                "--format",
                "onnx",
                "--output",
                str(path),
                "--taps",
                "coupling,conv1",
            ]
        )
        == 0
    )
    images = torch.rand(6, 1, 32, 32)
    with torch.no_grad():
        expected = net.forward_taps(images, [net.coupling_tap, "conv1", "logits"])
    coupling = source_from_onnx(path, tap="coupling", temperature=4.0)
    assert coupling.model.outputs == ["logits", "coupling", "conv1"]
    torch.testing.assert_close(coupling(images), expected[net.coupling_tap], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(coupling.predict(images), expected["logits"], atol=1e-4, rtol=1e-4)
    conv1 = source_from_onnx(path, tap="conv1", temperature=4.0)
    torch.testing.assert_close(conv1(images), expected["conv1"], atol=1e-4, rtol=1e-4)
    assert main(["export", str(digit_source), "--format", "onnx", "--taps", "fc9"]) != 0
    assert "has no tap 'fc9'" in capsys.readouterr().err
    assert main(["export", str(digit_source), "--format", "pt", "--taps", "coupling"]) != 0
    assert "returns the logits only" in capsys.readouterr().err


@pytest.mark.needs_data
def test_cetl_from_the_onnx_export_of_s_trains_as_cetl_from_the_run(digit_source, tmp_path, data_root):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    results = {}
    for access in ("network", "onnx"):
        config = resolve(
            "tl_mn_to_us_n5",
            method="cetl",
            profile="smoke",
            sets=[
                "source.kind=run",
                f"source.path={digit_source}",
                f"source.access={access}",
                "train.rounds=1",
                "data.target_train_limit=256",
            ],
        )
        run = tmp_path / access
        summary = train_run(config, run_dir=run, data_root=data_root)
        _, net, _ = load_target_net(run)
        results[access] = (summary, net.state_dict())
    assert (digit_source / SOURCE_ONNX).is_file()
    assert exported_source(digit_source).stat().st_mtime == (digit_source / SOURCE_ONNX).stat().st_mtime
    (network, weights), (onnx, onnx_weights) = results["network"], results["onnx"]
    assert onnx.target_test_accuracy == pytest.approx(network.target_test_accuracy, abs=0.02)
    for name, tensor in weights.items():
        torch.testing.assert_close(onnx_weights[name], tensor, atol=1e-3, rtol=1e-3, msg=name)
    described = json.loads((tmp_path / "onnx" / "summary.json").read_text())
    assert "onnx source.onnx" in json.dumps(described)


# --------------------------------------------------------------------------- engine contracts


def _bars(count: int, generator: torch.Generator) -> LabelledSet:
    """Two classes of 32×32 images, a horizontal (0) or a vertical (1) bar anywhere, plus noise:
    two clusters no two labelled images describe, which unlabelled images connect."""
    labels = torch.randint(2, (count,), generator=generator)
    positions = torch.randint(4, 28, (count,), generator=generator)
    images = torch.zeros(count, 1, 32, 32)
    for index, (label, position) in enumerate(zip(labels.tolist(), positions.tolist(), strict=True)):
        if label == 0:
            images[index, 0, position - 1 : position + 1, 4:28] = 1.0
        else:
            images[index, 0, 4:28, position - 1 : position + 1] = 1.0
    noisy = images + 0.1 * torch.randn(images.shape, generator=generator)
    return LabelledSet(noisy.clamp(0.0, 1.0), labels)


def _bar_data() -> TrainingData:
    generator = torch.Generator().manual_seed(0)
    labelled = torch.zeros(2, 1, 32, 32)
    labelled[0, 0, 15:17, 4:28] = 1.0  # one label per class: both bars through the centre
    labelled[1, 0, 4:28, 15:17] = 1.0
    empty = LabelledSet(torch.zeros(0, 1, 32, 32), torch.zeros(0, dtype=torch.long))
    return TrainingData(
        LabelledSet(labelled, torch.tensor([0, 1])), empty, _bars(512, generator).x, _bars(256, generator)
    )


def _fixmatch(unlabelled_weight: float) -> FixMatch:
    torch.manual_seed(0)
    net = TapNetwork.from_spec(
        [
            Conv("conv1", 8, 3),
            MaxPool("pool1"),
            Conv("conv2", 16, 3),
            MaxPool("pool2"),
            Flatten("flatten"),
            Linear("fc1", 32),
            Linear("logits", 2, relu=False),
        ],
        name="tiny",
        in_channels=1,
        image_size=32,
        num_classes=2,
        coupling_tap="fc1",
    )
    config = FixMatchConfig(unlabelled_weight=unlabelled_weight, unlabelled_ratio=32, ema_decay=0.9)
    return FixMatch(config, target_net=net, labelled_domain="target")


def test_fixmatch_learns_two_clusters_from_one_label_each_only_with_its_unlabelled_term(tmp_path):
    data = _bar_data()
    train = TrainConfig(
        rounds=12, batch_size=2, stage_epochs=10, tensorboard=False, progress=False, selection="last"
    )
    accuracy = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same numbers on every machine
    try:
        for weight in (0.0, 1.0):
            result = loop.train(
                _fixmatch(weight),
                data,
                train_config=train,
                optimizer_config=OptimizerConfig(lr=1e-2),
                seed=0,
                run_dir=tmp_path / str(weight),
                resume=False,
            )
            accuracy[weight] = result.target_test_accuracy
            assert result.steps == {"fixmatch": 120}
            assert ("unlabelled" in {t["term"] for t in result.inert_terms}) == (weight == 0.0)
    finally:
        torch.set_num_threads(threads)
    assert accuracy[1.0] >= 0.95, accuracy  # pseudo-labels carry each bar across positions
    assert accuracy[0.0] <= 0.75, accuracy  # the two labelled bars alone do not


def test_a_stage_draws_each_stream_at_its_own_batch_size():
    data = synthetic_training_data(count=96)
    stage = Stage("s", ("labelled", "target"), (), batch_scale={"target": 3})
    steps, batches = loop._batches(
        data, stage, batch_size=8, max_steps=None, seed=0, tag=("t",), progress=lambda f: f
    )
    batches = list(batches)
    assert steps == len(batches) == 96 // 8  # the first stream sets the epoch
    assert {len(b.x) for b in batches} == {8} and {len(b.x_tgt) for b in batches} == {24}
    seen = torch.cat([b.idx_tgt for b in batches])
    assert len(seen) == 12 * 24 and len(set(seen.tolist())) == 96  # cycled: every image, then again


def test_the_engine_keeps_a_weight_average_equal_to_a_hand_computation(tmp_path):
    data = synthetic_training_data(count=96)
    method = _averaged_target_only(decay=0.5)
    weights = []
    original = loop.run_update

    def recording(update, batch, optimizer, **kwargs):
        terms = original(update, batch, optimizer, **kwargs)
        weights.append({k: v.detach().clone() for k, v in method.target_net.state_dict().items()})
        return terms

    train = TrainConfig(rounds=1, batch_size=8, tensorboard=False, progress=False, selection="last")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "run_update", recording)
        initial = {k: v.detach().clone() for k, v in method.target_net.state_dict().items()}
        loop.train(
            method,
            data,
            train_config=train,
            optimizer_config=OptimizerConfig(lr=1e-2),
            seed=0,
            run_dir=tmp_path,
            resume=False,
        )
    assert len(weights) == 12
    expected = initial
    for n, step in enumerate(weights, start=1):  # θ̄ ← d θ̄ + (1 − d) θ, d = min(0.5, n / (n + 9))
        decay = min(0.5, n / (n + 9))  # the warm-up, then 0.5 from step 9
        expected = {k: decay * expected[k] + (1 - decay) * step[k] for k in expected}
    final = method.target_net.state_dict()  # the selected (last) weights are the average's
    for key, value in expected.items():
        torch.testing.assert_close(final[key], value, msg=key)
    assert not torch.equal(final["fc1.linear.weight"], weights[-1]["fc1.linear.weight"])
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    key = "fc1.linear.weight"
    torch.testing.assert_close(saved["networks"]["target_net"][key], weights[-1][key])  # trained
    torch.testing.assert_close(saved["averages"]["networks"]["target_net"][key], expected[key])
    assert saved["averages"]["updates"] == 12


def _averaged_target_only(decay: float) -> Method:
    """``target_only`` that asks the engine for a weight average."""
    torch.manual_seed(0)
    net = NETWORKS.get("lenet")(in_channels=1, image_size=28, num_classes=4)

    class Averaged(TargetOnly):
        def averaged_networks(self) -> dict[str, float]:
            return {"target_net": decay}

    return Averaged(TargetOnly.Config(name="target_only"), target_net=net)


# --------------------------------------------------------------------------- kd on the unlabelled images


def test_kd_distils_on_every_unlabelled_image_in_an_epoch_unless_all_images_are_labelled():
    seen: list[int] = []
    method = make_method("kd", experiment="tl_mn_to_us_n5")
    data = synthetic_training_data(count=64)
    method.prepare(data, SINGLE)
    (stage,) = method.stages(0)
    assert stage.streams == ("target", "labelled") and stage.epochs == 1
    assert method._teacher_target is not None and len(method._teacher_target) == len(data.target)
    _steps, batches = loop._batches(
        data, stage, batch_size=16, max_steps=None, seed=0, tag=("t",), progress=lambda f: f
    )
    for batch in batches:
        terms = stage.updates[0].losses(batch)
        assert set(terms) == {"distill", "classify"}
        seen += batch.idx_tgt.tolist()
    assert sorted(seen) == list(range(len(data.target)))
    # The soft term averages over the labelled and the unlabelled batch: check one by hand.
    batch = next(
        iter(
            loop._batches(data, stage, batch_size=16, max_steps=1, seed=0, tag=("t",), progress=lambda f: f)[
                1
            ]
        )
    )
    method.eval()  # no dropout: the same forward pass twice
    student = method.target_net(torch.cat([batch.x, batch.x_tgt]))
    teacher = method.source.predict(torch.cat([batch.x, batch.x_tgt])).float()
    expected = soft_target_loss(student, teacher, method.config.temperature)
    torch.testing.assert_close(stage.updates[0].losses(batch)["distill"], expected)
    # Table 4 (distillation: every training image labelled) keeps Hinton's labelled-only form.
    table4 = _make_kd_on("kd_cifar10")
    assert table4.stages(0)[0].streams == ("labelled",)
    labelled_only = make_method("kd", experiment="tl_mn_to_us_n5", sets=["method.distill_on=labelled"])
    assert labelled_only.stages(0)[0].streams == ("labelled",)


def _make_kd_on(experiment: str) -> Method:
    torch.manual_seed(3)
    teacher = NETWORKS.get("resnet26")(in_channels=3, image_size=32, num_classes=10)
    source = source_from_network(teacher, tap="soft", temperature=4.0, description="test resnet26")
    info = DataInfo(num_classes=10, channels=3, image_size=32, sizes={}, notes=())
    return make_method("kd", experiment=experiment, source=source, info=info)


# --------------------------------------------------------------------------- the forward-only curves


def test_the_forward_only_studies_give_s_to_every_method_only_as_its_onnx_export():
    for name in ("forward_only_mn_to_us", "forward_only_us_to_mn"):
        table = get_table(name)
        assert table.columns == ("1", "5", "10", "50")
        methods = {c.method for c in table.cells}
        assert methods == {TEACHER, "target_only", "kd", "hint", "fixmatch", "fixmatch_kd", "cetl"}
        for cell in table.cells:
            reads_s = cell.method != TEACHER and "source" in METHODS.get(cell.method).components
            assert ("source.access=onnx" in cell.sets) == reads_s, cell.id
            assert not any("target_init" in s for s in cell.sets)  # T2 from random weights everywhere


@pytest.mark.needs_data
def test_a_smoke_forward_only_column_trains_every_row_from_the_onnx_export(tmp_path, data_root):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    out = tmp_path / "runs"
    folder, failed = reproduce(
        get_table("forward_only_mn_to_us"),
        [0],
        profile="smoke",
        out=out,
        data_root=data_root,
        sets=["train.rounds=1", "data.target_train_limit=500"],
        only=[f"tl_mn_to_us_n1/{cell}" for cell in ("fixmatch", "kd-fo", "fixmatch_kd-fo", "cetl-fo")],
        log=lambda line: None,
    )
    assert failed == 0
    source = out / "digits_mn_to_us" / "smoke" / "source_only" / "seed0"
    assert (source / SOURCE_ONNX).is_file()
    for cell in ("kd-fo", "fixmatch_kd-fo", "cetl-fo"):
        summary = json.loads((out / "tl_mn_to_us_n1" / "smoke" / cell / "seed0" / "summary.json").read_text())
        assert "onnx source.onnx" in json.dumps(summary), cell
    report = (folder / "report.md").read_text()
    assert "Paired difference from `fixmatch`" in report and "| cetl |" in report
