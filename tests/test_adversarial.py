"""DANN, ADDA and WDAN ("WDA"): the GRL, the domain and WMMD losses, and each method on the engine."""

import contextlib
import dataclasses
import json
import math
from pathlib import Path

import pytest
import torch

from cetl.config import OptimizerConfig
from cetl.data.synthetic import synthetic_training_data
from cetl.engine import loop
from cetl.errors import ConfigError
from cetl.losses.adversarial import domain_loss, grad_reverse, grl_coefficient, inverted_label_loss
from cetl.losses.mmd import weighted_mmd
from cetl.methods import METHODS
from cetl.methods.mmd import WDAN, class_weight_ratios
from cetl.source import FrozenSource
from helpers import make_method, make_source, train_synthetic


def a_batch(progress: float = 0.0) -> loop.Batch:
    data = synthetic_training_data()
    return loop.Batch(x=data.labelled.x[:8], y=data.labelled.y[:8], x_tgt=data.target[:8], progress=progress)


# --------------------------------------------------------------------------- loss references


def test_gradient_reversal_is_identity_forward_and_minus_lambda_backward():
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = grad_reverse(x, 0.5)
    assert torch.equal(y, x)
    (torch.tensor([3.0, 1.0, -2.0]) * y).sum().backward()
    # d/dx of sum(c * x) is c; reversed and scaled by 0.5: −0.5 c.
    assert torch.equal(x.grad, torch.tensor([-1.5, -0.5, 1.0]))


def test_reversal_coefficient_schedule():
    assert grl_coefficient(0.0) == 0.0
    # 2 / (1 + e^-5) - 1 = 2 / 1.0067379... - 1
    assert grl_coefficient(0.5) == pytest.approx(0.9866142981514303, abs=1e-12)
    assert grl_coefficient(1.0) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert grl_coefficient(0.5, gamma=0.0) == 0.0


def test_domain_and_inverted_label_losses_by_hand():
    source, target = torch.tensor([0.0, 2.0]), torch.tensor([1.0])
    # source labelled 1: −log σ(z) = log(1 + e^−z); target labelled 0: −log(1 − σ(z)) = log(1 + e^z)
    expected = 0.5 * ((math.log(2) + math.log(1 + math.exp(-2))) / 2 + math.log(1 + math.e))
    assert domain_loss(source, target).item() == pytest.approx(expected, rel=1e-6)
    assert inverted_label_loss(target).item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-6)


def test_weighted_mmd_by_hand():
    source, target = torch.tensor([[0.0], [1.0]]), torch.tensor([[2.0]])
    weights = torch.tensor([1.0, 3.0])  # normalised: a = (1/4, 3/4)
    value = weighted_mmd(source, target, weights, bandwidths=torch.tensor([1.0]))  # k = exp(−d²)
    # a K_ss a = 1/16 + 9/16 + 2·(3/16) e^−1;  a K_st b = (1/4) e^−4 + (3/4) e^−1;  K_tt = 1
    expected = 1.625 - 1.125 * math.exp(-1) - 0.5 * math.exp(-4)
    assert value.item() == pytest.approx(expected, rel=1e-6)


def test_weighted_mmd_removes_class_weight_bias_that_plain_mmd_sees():
    # Two classes at fixed points; source 50/50, target 25/75: the same class-conditionals.
    source = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 1])
    target = torch.tensor([[0.0, 0.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    alpha = class_weight_ratios(torch.tensor([0, 1, 1, 1]), labels, 2)
    torch.testing.assert_close(alpha, torch.tensor([0.5, 1.5]))
    assert weighted_mmd(source, target, torch.ones(4)).item() > 1e-3
    assert weighted_mmd(source, target, alpha[labels]).item() == pytest.approx(0.0, abs=1e-6)
    assert weighted_mmd(target, target, torch.ones(4)).item() == pytest.approx(0.0, abs=1e-6)


def test_class_weight_ratios_by_hand():
    alpha = class_weight_ratios(torch.tensor([0, 0, 0, 1]), torch.tensor([0, 1, 1, 1]), 3)
    # target prior (3/4, 1/4, 0) over source prior (1/4, 3/4, 0); no source image of class 2.
    torch.testing.assert_close(alpha, torch.tensor([3.0, 1 / 3, 0.0]))


# --------------------------------------------------------------------------- DANN


def test_dann_reversal_reaches_t2_only_as_the_schedule_allows():
    method = make_method("dann")

    def domain_grads(progress):
        method.zero_grad()
        method._losses(a_batch(progress))["domain"].backward()
        t2 = sum(p.grad.abs().sum() for p in method.target_net.parameters() if p.grad is not None)
        return float(t2), float(sum(p.grad.abs().sum() for p in method.discriminator.parameters()))

    t2_start, d_start = domain_grads(0.0)
    t2_later, d_later = domain_grads(0.5)
    assert t2_start == 0.0 and d_start > 0  # λ_0 = 0: only D learns at first
    assert t2_later > 0 and d_later > 0
    (update,) = method.stages(0)[0].updates
    assert update.weights == {"domain": 1.0}
    assert {id(p) for p in update.parameters()} == {
        id(p) for p in [*method.target_net.parameters(), *method.discriminator.parameters()]
    }


def test_dann_anneals_the_learning_rate_as_its_paper():
    method = make_method("dann")
    (update,) = method.stages(0)[0].updates
    assert update.lr_factor(0.0) == 1.0
    assert update.lr_factor(1.0) == pytest.approx(11**-0.75)
    optimizer = loop.make_optimizer(update.param_groups(1e-3), OptimizerConfig(lr=1e-3))
    loop.run_update(update, a_batch(0.5), optimizer, max_grad_norm=None, autocast=contextlib.nullcontext())
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * 6**-0.75)
    assert optimizer.param_groups[0]["base_lr"] == 1e-3  # kept in the state: a resumed run anneals alike
    loop.run_update(update, a_batch(0.0), optimizer, max_grad_norm=None, autocast=contextlib.nullcontext())
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    constant = METHODS.get("dann")(
        dataclasses.replace(method.config, lr_anneal_alpha=0.0), target_net=method.target_net
    )
    assert constant.stages(0)[0].updates[0].lr_factor is None


def test_dann_reversed_gradient_is_minus_lambda_times_the_plain_one():
    method = make_method("dann")
    coupling = method.target_net.coupling_tap
    features = method.target_net.forward_taps(a_batch().x_tgt, [coupling])[coupling].detach()
    plain = features.clone().requires_grad_(True)
    domain_loss(method.discriminator(plain), method.discriminator(plain)).backward()
    reversed_input = features.clone().requires_grad_(True)
    coefficient = grl_coefficient(0.3)
    domain_loss(
        method.discriminator(grad_reverse(reversed_input, coefficient)),
        method.discriminator(grad_reverse(reversed_input, coefficient)),
    ).backward()
    torch.testing.assert_close(reversed_input.grad, -coefficient * plain.grad)


# --------------------------------------------------------------------------- ADDA


def test_adda_starts_from_s_freezes_the_classifier_and_leaves_s_bit_identical(tmp_path):
    source = make_source()
    fingerprint = source.fingerprint()
    method = make_method("adda", source=source)
    for name, value in source.model.state_dict().items():
        assert torch.equal(method.target_net.state_dict()[name], value), name
    discriminator, encoder = method.stages(0)[0].updates
    assert [discriminator.name, encoder.name] == ["discriminator", "target_encoder"]
    trained = {id(p) for p in encoder.parameters()}
    assert all(id(p) not in trained for p in method.target_net.logits.parameters())
    classifier = {k: v.clone() for k, v in method.target_net.logits.state_dict().items()}
    encoder_before = method.target_net.fc1.linear.weight.clone()

    train_synthetic(method, tmp_path)

    assert source.fingerprint() == fingerprint
    assert all(p.grad is None and not p.requires_grad for p in source.parameters())
    for name, value in method.target_net.logits.state_dict().items():
        assert torch.equal(value.cpu(), classifier[name]), name
    assert not torch.equal(method.target_net.fc1.linear.weight.cpu(), encoder_before)
    assert method.predict(
        torch.rand(3, 1, 28, 28, device=method.target_net.fc1.linear.weight.device)
    ).shape == (3, 4)


def test_adda_updates_use_the_published_adam_settings_whatever_the_run_lr():
    method = make_method("adda", source=make_source())
    (stage,) = method.stages(0)
    settings = OptimizerConfig(lr=1e-3)
    for update in stage.updates:
        assert dict(update.optimizer) == {"lr": 2e-4, "beta1": 0.5}
        optimizer = loop.make_optimizer(
            list(update.parameters()), dataclasses.replace(settings, **update.optimizer)
        )
        assert optimizer.param_groups[0]["lr"] == 2e-4
        assert optimizer.param_groups[0]["betas"] == (0.5, 0.999)
    (stage,) = make_method("adda", sets=["method.lr=null"], source=make_source()).stages(0)
    assert all("lr" not in update.optimizer for update in stage.updates)


def test_adda_reads_s_at_its_own_tap_and_the_logits_variant_adapts_every_layer():
    source = make_source(tap="logits")  # source.tap does not matter: ADDA reads S at its tap
    method = make_method("adda", source=source)
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(method._source_features(x), source.model.forward_taps(x, ["fc1"])["fc1"])
    logits_variant = make_method("adda", source=source, sets=["method.adversary_tap=logits"])
    assert logits_variant.discriminator.net[1].in_features == 4
    assert all(p.requires_grad for p in logits_variant.target_net.parameters())
    torch.testing.assert_close(logits_variant._source_features(x), source.model(x))


def test_adda_refuses_a_source_that_is_not_a_project_network():
    plain = FrozenSource(
        torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 4)),
        extract=lambda model, x: model(x),
        description="plain",
    )
    with pytest.raises(ConfigError, match="network of this project"):
        make_method("adda", source=plain)


# --------------------------------------------------------------------------- WDAN / WDA


@pytest.mark.parametrize("name", ["wdan", "wda"])
def test_wdan_estimates_class_weights_after_each_round_and_resumes_them(name, tmp_path):
    method = make_method(name)
    assert isinstance(method, WDAN) and torch.equal(method.class_weights, torch.ones(4))
    train_synthetic(method, tmp_path)
    alpha = method.class_weights.cpu()
    assert not torch.equal(alpha, torch.ones(4))  # a pseudo-label estimate, not the start value
    assert "class_weights" in torch.load(tmp_path / "last.pt", weights_only=True)["method_state"]
    fresh = make_method(name)
    fresh.load_resumable_state(method.resumable_state())
    assert torch.equal(fresh.class_weights.cpu(), alpha)


def test_wdan_uniform_is_plain_mmd():
    method = make_method("wdan", sets=["method.class_weights=uniform"])
    assert method.stages(0)[0].on_end is None


# --------------------------------------------------------------------------- every method, engine and CLI


@pytest.mark.parametrize("name", ["dann", "adda", "wdan"])
def test_each_method_trains_two_rounds_on_the_engine(name, tmp_path):
    source = make_source()
    method = make_method(name, source=source)
    result = train_synthetic(method, tmp_path)
    assert result.rounds == 2
    assert "source" not in method.trainable_networks()
    expected = {"dann": {"target_net", "discriminator"}, "adda": {"target_net", "discriminator"}}
    assert set(method.trainable_networks()) == expected.get(name, {"target_net"})
    assert result.term_steps.get("classify", 0) == (0 if name == "adda" else 4)


@pytest.mark.needs_data
@pytest.mark.parametrize("name", ["dann", "adda", "wdan"])
def test_cli_smoke_run_writes_a_summary(name, data_root, tmp_path, monkeypatch):
    from cetl.cli import main

    monkeypatch.chdir(tmp_path)
    args = ["train", "digits_mn_to_us", "--profile", "smoke", "--data-root", str(data_root.path)]
    assert main([*args, "--method", name, "--out", "run"]) == 0
    summary = json.loads(Path("run/summary.json").read_text())
    assert summary["method"] == name
    assert summary["rounds"] == 2
    assert summary["selected_by"] == "source_val"
    assert 0.0 <= summary["target_test_accuracy"] <= 1.0
    if name == "adda":
        assert summary["source_run"]  # S was trained first, as source_only of seed 0
