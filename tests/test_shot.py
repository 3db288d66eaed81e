"""``shot`` (Liang et al. 2020): information maximisation, centroid pseudo-labels, S untouched."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cetl.build import load_target_net
from cetl.config import OptimizerConfig, TrainConfig
from cetl.data.synthetic import synthetic_training_data
from cetl.engine.distributed import SINGLE
from cetl.engine.loop import train
from cetl.errors import ConfigError
from cetl.experiments import resolve
from cetl.losses.information import information_maximisation
from cetl.methods.base import Batch
from cetl.methods.shot import Shot, ShotConfig, centroid_labels
from cetl.networks import NETWORKS
from cetl.source import FrozenSource, source_from_network
from cetl.workflows.runs import evaluate_run, train_run


def _lenet(classes: int = 4) -> nn.Module:
    return NETWORKS.get("lenet")(in_channels=1, image_size=28, num_classes=classes)


def test_information_maximisation_matches_its_definition():
    uniform = torch.zeros(5, 4)
    entropy, diversity = information_maximisation(uniform)
    assert entropy.item() == pytest.approx(math.log(4))
    assert diversity.item() == pytest.approx(-math.log(4), abs=1e-4)
    confident_one_class = torch.tensor([[50.0, 0, 0, 0]] * 5)
    entropy, diversity = information_maximisation(confident_one_class)
    assert entropy.item() == pytest.approx(0.0, abs=1e-6)
    assert diversity.item() == pytest.approx(0.0, abs=1e-4)  # no diversity: the worst value


def test_centroid_labels_recover_clusters_from_noisy_predictions():
    generator = torch.Generator().manual_seed(0)
    directions = torch.eye(3, 8) * 5
    truth = torch.arange(3).repeat_interleave(20)
    features = directions[truth] + 0.3 * torch.randn(60, 8, generator=generator)
    probabilities = torch.nn.functional.one_hot(truth, 4).float() * 0.6 + 0.1
    wrong = torch.arange(0, 60, 6)  # every sixth prediction points at the next class
    probabilities[wrong] = torch.nn.functional.one_hot((truth[wrong] + 1) % 3, 4).float() * 0.6 + 0.1
    labels = centroid_labels(features, probabilities, relabel_steps=1)
    assert torch.equal(labels, truth)
    assert 3 not in labels.tolist()  # a class no image predicts gets no centroid


def test_shot_adapts_a_copy_with_the_head_frozen_and_s_bit_identical(tmp_path):
    net = _lenet()
    source = source_from_network(net, tap="coupling", temperature=4.0, description="lenet")
    before = source.fingerprint()
    method = Shot(ShotConfig(), target_net=_lenet(), source=source)
    data = synthetic_training_data(count=48, image_size=28, num_classes=4)
    method.prepare(data, SINGLE)
    (stage,) = method.stages(0)
    assert stage.streams == ("target",) and method.pseudo_labels.shape == (len(data.target),)
    index = torch.tensor([3, 7, 11])
    method.eval()  # LeNet's dropout would draw differently in the two passes compared
    terms = stage.updates[0].losses(Batch(x_tgt=data.target[index], idx_tgt=index))
    assert set(terms) == {"entropy", "diversity", "pseudo_label"}
    expected = nn.functional.cross_entropy(method.predict(data.target[index]), method.pseudo_labels[index])
    torch.testing.assert_close(terms["pseudo_label"], expected)
    method.train()
    head = {k: v.clone() for k, v in method.head.state_dict().items()}
    features = {k: v.clone() for k, v in method.features.state_dict().items()}
    train(
        method,
        data,
        train_config=TrainConfig(rounds=2, batch_size=16, max_steps_per_epoch=2, tensorboard=False),
        optimizer_config=OptimizerConfig(lr=1e-2),
        seed=0,
        run_dir=tmp_path,
        resume=False,
    )
    assert source.fingerprint() == before  # S itself never trains
    assert all(torch.equal(v, head[k]) for k, v in method.head.state_dict().items())
    assert any(not torch.equal(v, features[k]) for k, v in method.features.state_dict().items())
    torch.testing.assert_close(net.logits.weight, method.head.weight)


def test_shot_refuses_a_forward_only_source_and_other_classes():
    forward_only = FrozenSource(nn.Identity(), extract=lambda model, x: model(x), description="onnx x.onnx")
    with pytest.raises(ConfigError, match="has no weights"):
        Shot(ShotConfig(), target_net=_lenet(), source=forward_only)
    source = source_from_network(_lenet(10), tap="coupling", temperature=4.0, description="lenet")
    with pytest.raises(ConfigError, match="must predict the target's 4 classes"):
        Shot(ShotConfig(), target_net=_lenet(4), source=source)


@pytest.mark.needs_data
def test_a_shot_run_on_digits_evaluates_and_exports(tmp_path, monkeypatch, data_root):
    monkeypatch.chdir(tmp_path)  # S (source_only of the same seed) is trained here first
    config = resolve("digits_mn_to_us", method="shot", profile="smoke", sets=["train.rounds=1"])
    summary = train_run(config, run_dir=tmp_path / "shot", data_root=data_root)
    assert summary.term_balance["adapt/features"].keys() == {"entropy", "diversity", "pseudo_label"}
    assert evaluate_run(tmp_path / "shot", data_root=data_root)["target_test_accuracy"] == pytest.approx(
        summary.target_test_accuracy
    )
    _, net, _ = load_target_net(tmp_path / "shot")
    assert net(torch.rand(2, 1, 32, 32)).shape == (2, 10)
