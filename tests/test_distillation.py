"""Knowledge distillation: KD / FitNets / FSP losses by hand, the methods, the kd_* experiments."""

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cetl.build import DataInfo, build_method
from cetl.cli import main
from cetl.config import OptimizerConfig, TrainConfig
from cetl.data.synthetic import synthetic_set
from cetl.data.training import TrainingData
from cetl.engine import loop
from cetl.engine.distributed import SINGLE
from cetl.errors import ConfigError
from cetl.experiments import resolve
from cetl.experiments.distillation import TABLE4
from cetl.losses.distillation import fsp_loss, fsp_matrix, hint_loss, soft_probability_loss, soft_target_loss
from cetl.methods import METHODS
from cetl.methods.distillation import FSP, FitNets, KnowledgeDistillation, hint_regressor
from cetl.networks import NETWORKS
from cetl.run_folder import source_run_config, source_run_dir
from cetl.source import FrozenSource, source_from_network
from cetl.workflows.runs import train_run
from helpers import changed, snapshot
from helpers import make_method as _make_method

INFO = DataInfo(num_classes=10, channels=3, image_size=32, sizes={}, notes=())
TRAIN = TrainConfig(rounds=2, batch_size=8, max_steps_per_epoch=2, tensorboard=False, progress=False)
DISTILLATION = ("kd", "fitnets", "fsp")


def make_teacher() -> FrozenSource:
    torch.manual_seed(3)
    net = NETWORKS.get("resnet26")(in_channels=3, image_size=32, num_classes=10)
    return source_from_network(net, tap="soft", temperature=4.0, description="test resnet26")


def make_method(name: str, *, sets=(), source: FrozenSource | None = None):
    """A distillation method on ``kd_cifar10`` with a random ResNet-26 teacher."""
    return _make_method(name, experiment="kd_cifar10", sets=sets, source=source or make_teacher(), info=INFO)


def tiny_data() -> TrainingData:
    def make(count: int, seed: int):
        return synthetic_set(count, image_size=32, num_classes=10, channels=3, seed=seed)

    labelled = make(16, 1)
    return TrainingData(labelled, make(8, 2), labelled.x, make(8, 3))


def step(method, stage, batch) -> None:
    for update in stage.updates:
        optimizer = loop.make_optimizer(list(update.parameters()), OptimizerConfig(lr=1e-2))
        loop.run_update(
            update, batch, optimizer, max_grad_norm=None, autocast=torch.autocast("cpu", enabled=False)
        )


# --------------------------------------------------------------------------- losses by hand


def test_soft_target_loss_two_classes_by_hand():
    # Teacher logits (2, 0), student (0, 0), τ = 2: p_t = softmax(1, 0) = (e, 1)/(e + 1), p_s = (½, ½).
    p = math.e / (math.e + 1)  # 0.731059
    kl = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)  # 0.110944
    student = torch.zeros(1, 2, requires_grad=True)
    teacher = torch.tensor([[2.0, 0.0]], requires_grad=True)
    loss = soft_target_loss(student, teacher, temperature=2.0)
    assert loss.item() == pytest.approx(4 * kl, rel=1e-5)  # τ² = 4 scales the KL
    assert loss.item() == pytest.approx(0.443776, abs=1e-5)
    loss.backward()
    # Hinton §2: ∂(τ²·KL)/∂s = τ (p_s − p_t), so the τ² keeps the soft gradient's size as τ grows.
    assert torch.allclose(student.grad, torch.tensor([[2 * (0.5 - p), 2 * (0.5 - (1 - p))]]), atol=1e-6)
    assert teacher.grad is None  # the teacher's logits are constants
    assert soft_target_loss(teacher.detach(), teacher.detach(), 4.0).item() == pytest.approx(0.0, abs=1e-7)


def test_fsp_matrix_two_by_two_by_hand():
    first = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[1.0, 0.0], [0.0, 1.0]]]])  # (1, 2, 2, 2)
    second = torch.tensor([[[[1.0, 1.0], [0.0, 2.0]]]])  # (1, 1, 2, 2)
    # G_ij = Σ_st F1_i F2_j / (h·w): (1 + 2 + 0 + 8) / 4 and (1 + 0 + 0 + 2) / 4.
    assert torch.equal(fsp_matrix(first, second), torch.tensor([[[2.75], [0.75]]]))
    # A larger map is average-pooled to the smaller size first.
    big = first.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # (1, 2, 4, 4), same 2×2 averages
    assert torch.equal(fsp_matrix(big, second), fsp_matrix(first, second))
    # Eq. 2: squared Frobenius norms summed over pairs, averaged over the batch.
    student = [torch.zeros(2, 1, 2), torch.zeros(2, 1, 1)]
    teacher = [torch.tensor([[[1.0, 2.0]], [[0.0, 0.0]]]), torch.tensor([[[3.0]], [[1.0]]])]
    assert fsp_loss(student, teacher).item() == pytest.approx((5 + 0) / 2 + (9 + 1) / 2)
    with pytest.raises(ValueError, match="pair 0"):
        fsp_loss([torch.zeros(1, 2, 2)], [torch.zeros(1, 2, 3)])


def test_fitnets_regressor_shapes_and_hint_loss():
    conv = hint_regressor((96, 16, 16), (32, 16, 16))
    assert isinstance(conv, torch.nn.Conv2d) and conv.kernel_size == (1, 1)
    assert conv(torch.zeros(2, 96, 16, 16)).shape == (2, 32, 16, 16)
    shrink = hint_regressor((96, 16, 16), (32, 8, 8))  # Romero §2.2: k = N_g − N_h + 1
    assert shrink.kernel_size == (9, 9) and shrink(torch.zeros(2, 96, 16, 16)).shape == (2, 32, 8, 8)
    assert hint_regressor((1024,), (64,))(torch.zeros(2, 1024)).shape == (2, 64)
    with pytest.raises(ConfigError, match="smaller than the hint"):
        hint_regressor((96, 8, 8), (32, 16, 16))
    with pytest.raises(ConfigError, match="cannot regress"):
        hint_regressor((1024,), (32, 16, 16))
    a, b = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    assert torch.allclose(hint_loss(a, b), ((a - b) ** 2).mean())


# --------------------------------------------------------------------------- methods


def test_registered_with_the_teacher_as_their_only_network_besides_t2():
    for name, cls in zip(DISTILLATION, (KnowledgeDistillation, FitNets, FSP), strict=True):
        assert METHODS.get(name) is cls
        # kd and fitnets read the setting: distil the unlabelled images too, except in Table 4's
        assert cls.components - {"setting"} == {"source", "labelled_domain"}
        assert cls.labelled_domain_for("distillation") == "target"
        assert cls.labelled_domain_for("domain_adaptation") == "source"  # never target labels in DA


@pytest.mark.parametrize("name", DISTILLATION)
def test_smoke_run_leaves_the_teacher_bit_identical(name, tmp_path):
    teacher = make_teacher()
    before = teacher.fingerprint()
    method = make_method(name, source=teacher)
    result = loop.train(
        method,
        tiny_data(),
        train_config=TRAIN,
        optimizer_config=OptimizerConfig(lr=1e-3),
        seed=0,
        run_dir=tmp_path,
        resume=False,
    )
    assert teacher.fingerprint() == before
    assert result.rounds == 2 and result.selected_by == "last"
    device = next(method.target_net.parameters()).device  # the engine may have moved it to a GPU
    assert method.predict(torch.zeros(3, 3, 32, 32, device=device)).shape == (3, 10)
    first = {"kd": ["distill"], "fitnets": ["hint", "distill"], "fsp": ["fsp", "classify"]}[name]
    assert [s.name for s in method.stages(0)] == first
    assert [s.name for s in method.stages(1)] == first[-1:]  # the hint / FSP stage runs once
    assert result.term_steps["classify"] == 4  # same classification budget as kd and target_only


def test_kd_reads_cached_teacher_logits_with_tau_and_alpha():
    method = make_method("kd", sets=["method.temperature=2", "method.soft_weight=0.25"])
    data = tiny_data()
    method.prepare(data, SINGLE)
    assert torch.equal(method._teacher_logits, method.source.predict(data.labelled.x))
    (stage,) = method.stages(0)
    (update,) = stage.updates
    assert dict(update.weights) == {"distill": 0.25, "classify": 0.75}
    batch = loop.Batch(x=data.labelled.x[:4], y=data.labelled.y[:4], idx=torch.arange(4))
    method.target_net.eval()  # no dropout, so the terms can be recomputed here
    terms = update.losses(batch)
    student = method.target_net(batch.x)
    teacher = method.source.predict(batch.x)
    assert terms["distill"].item() == pytest.approx(soft_target_loss(student, teacher, 2.0).item(), rel=1e-5)
    assert terms["classify"].item() == pytest.approx(F.cross_entropy(student, batch.y).item(), rel=1e-5)


def test_hint_and_fsp_stages_train_only_the_layers_they_reach():
    data = tiny_data()
    batch = loop.Batch(x=data.labelled.x[:8], y=data.labelled.y[:8], idx=torch.arange(8))
    for name, extra, deepest_trained in (("fitnets", "regressor", "conv2"), ("fsp", "connectors", "conv5")):
        method = make_method(name)
        method.prepare(data, SINGLE)
        first = method.stages(0)[0]
        net = method.target_net
        before = {n: snapshot(m) for n, m in net.named_children()}
        extra_before, teacher_before = snapshot(getattr(method, extra)), method.source.fingerprint()
        step(method, first, batch)
        moved = [n for n, m in net.named_children() if changed(before[n], m)]
        assert moved[-1] == deepest_trained and "fc6" not in moved and "logits" not in moved
        assert changed(extra_before, getattr(method, extra))
        assert method.source.fingerprint() == teacher_before


def test_bad_layer_names_are_clear_config_errors():
    with pytest.raises(ConfigError, match=r"method.guided_layer: .*no tap 'conv9'.*valid taps"):
        make_method("fitnets", sets=["method.guided_layer=conv9"])
    with pytest.raises(ConfigError, match="list as many of each"):
        make_method("fsp", sets=["method.student_layers=conv1,conv2"])
    with pytest.raises(ConfigError, match="feature maps"):
        make_method("fsp", sets=["method.student_layers=conv1,conv2,conv3,fc6"])
    with pytest.raises(ConfigError, match="soft_weight"):
        resolve("kd_cifar10", method="kd", profile="smoke", sets=["method.soft_weight=1.5"])


# --------------------------------------------------------------------------- experiments


def test_experiments_pin_the_teacher_student_and_d8_taps():
    for profile in ("smoke", "quick", "paper"):
        config = resolve("kd_cifar10", method="cetl", profile=profile)
        assert (config.setting, config.data.protocol, config.data.source, config.data.target) == (
            "distillation",
            "cifar",
            "cifar10",
            "cifar10",
        )
        assert config.network.name == "ci_cnn"
        assert (config.source.network, config.source.tap, config.source.temperature) == (
            "resnet26",
            "soft",
            4.0,
        )
        teacher = source_run_config(config)
        assert teacher.network.name == "resnet26" and teacher.method.name == "source_only"
        assert source_run_dir(config, teacher) == Path(
            f"runs/kd_cifar10/{profile}/source_only-resnet26/seed0"
        )
    assert resolve("kd_cifar100", profile="smoke").data.target == "cifar100"
    assert TABLE4[("cetl", "kd_cifar10")] == 89.11 and TABLE4[("teacher", "kd_cifar100")] == 65.23


def test_kd_cifar100_without_its_data_fails_naming_the_files(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["train", "kd_cifar100", "--method", "kd", "--profile", "smoke", "--data-root", str(tmp_path)]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "CIFAR-100" in err and "cifar-100-python/train" in err and "Traceback" not in err


def test_teacher_is_trained_once_and_reused(data_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sets = ["train.rounds=1", "train.max_steps_per_epoch=1", "data.test_limit=64"]
    kd = resolve("kd_cifar10", method="kd", profile="smoke", sets=sets)
    summary = train_run(kd, run_dir=tmp_path / "kd", data_root=data_root)
    teacher_dir = tmp_path / "runs/kd_cifar10/smoke/source_only-resnet26/seed0"
    assert summary.source_run == str(teacher_dir.relative_to(tmp_path))
    assert 0.0 <= summary.source_accuracy_on_target <= 1.0
    stamp = (teacher_dir / "summary.json").stat().st_mtime_ns
    fsp = resolve("kd_cifar10", method="fsp", profile="smoke", sets=sets)
    train_run(fsp, run_dir=tmp_path / "fsp", data_root=data_root)
    assert (teacher_dir / "summary.json").stat().st_mtime_ns == stamp  # reused, not retrained


def test_cetl_couples_through_the_students_softened_logits_by_default():
    """D8: S's tap is the teacher's logits softened with τ, T2's its own logits with the same τ,
    so T1 decodes a distribution over classes from both sides and no adapter is needed."""
    method = make_method("cetl")
    assert (method.target_net.coupling_tap, method.target_net.coupling_temperature) == ("logits", 4.0)
    x = torch.rand(4, 3, 32, 32)
    method.target_net.eval()  # no dropout, so the two forward passes agree
    soft = method.target_net.coupling(x)
    torch.testing.assert_close(soft, F.softmax(method.target_net(x) / 4.0, dim=1))
    assert not list(method.source_adapter.parameters())  # 10 classes on both sides: identity
    assert method.decoder(soft).shape == (4, 3, 32, 32)
    # A named feature layer (FitNets-like) instead, and the network's own tap on request:
    assert make_method("cetl", sets=["method.target_tap=fc6"]).target_net.coupling_tap == "fc6"
    plain = make_method("cetl", sets=["method.target_tap=coupling"]).target_net
    assert (plain.coupling_tap, plain.coupling_temperature) == ("fc7", None)
    with pytest.raises(ConfigError, match=r"no tap 'fc9'.*valid taps"):
        make_method("cetl", sets=["method.target_tap=fc9"])


def test_domain_adaptation_cetl_keeps_the_networks_coupling_tap():
    config = resolve("digits_mn_to_us", method="cetl", profile="smoke")
    info = DataInfo(num_classes=10, channels=1, image_size=32, sizes={}, notes=())
    net = NETWORKS.get("lenet")(in_channels=1, image_size=32, num_classes=10)
    source = source_from_network(net, tap="coupling", temperature=4.0, description="test lenet")
    method = build_method(config, info, source=source)
    assert (method.target_net.coupling_tap, method.target_net.coupling_temperature) == ("fc1", None)


def test_soft_probability_loss_equals_the_logit_form_by_hand():
    # The same two-class case as above, the teacher given as softmax((2, 0)/2) = (p, 1 − p).
    p = math.e / (math.e + 1)
    student = torch.zeros(1, 2, requires_grad=True)
    loss = soft_probability_loss(student, torch.tensor([[p, 1 - p]]), temperature=2.0)
    assert loss.item() == pytest.approx(0.443776, abs=1e-5)
    loss.backward()
    assert torch.allclose(student.grad, torch.tensor([[2 * (0.5 - p), 2 * (0.5 - (1 - p))]]), atol=1e-6)


def test_cetl_kd_weight_adds_hintons_term_to_classification():
    method = make_method("cetl", sets=["method.kd_weight=0.5"])
    data = tiny_data()
    method.prepare(data, SINGLE)
    classify = method.stages(0)[-1]
    batch = loop.Batch(x=data.labelled.x[:4], y=data.labelled.y[:4], x_tgt=data.target[:4])
    update = classify.updates[0]
    method.target_net.eval()  # no dropout, so the two forward passes agree
    terms = update.losses(batch)
    assert set(terms) >= {"classify", "kd"} and update.weights["kd"] == 0.5
    expected = soft_probability_loss(method.target_net(batch.x), method.source(batch.x), 4.0)
    assert terms["kd"].item() == pytest.approx(expected.item(), rel=1e-4)
    indexed = dataclasses.replace(batch, idx=torch.arange(4))  # S's soft targets from prepare's cache
    assert update.losses(indexed)["kd"].item() == pytest.approx(expected.item(), rel=1e-4)
    assert "kd" not in make_method("cetl").stages(0)[-1].updates[0].losses(batch)
    plain = source_from_network(
        NETWORKS.get("resnet26")(in_channels=3, image_size=32, num_classes=10),
        tap="logits",
        temperature=4.0,
        description="logits",
    )
    with pytest.raises(ConfigError, match=r"kd_weight=0.5 needs S's soft targets.*source.tap=soft"):
        make_method("cetl", sets=["method.kd_weight=0.5"], source=plain)
