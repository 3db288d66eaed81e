"""TLlib's digits protocol: per-method policies, SGD with Nesterov momentum, run-wide annealing."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cetl.config import OptimizerConfig, TrainConfig
from cetl.data.synthetic import synthetic_training_data
from cetl.engine import loop
from cetl.engine.checkpoint import load_checkpoint
from cetl.errors import ConfigError
from cetl.experiments import resolve
from cetl.experiments.tllib_digits import TOTAL_STEPS
from cetl.losses.adversarial import grl_coefficient
from cetl.methods.base import inverse_decay
from helpers import make_method


def test_each_method_gets_tllibs_own_settings():
    erm = resolve("digits_mn_to_us_tllib", method="source_only")
    dann = resolve("digits_mn_to_us_tllib", method="dann")
    assert (erm.network.name, dann.network.name) == ("lenet_tllib", "lenet_tllib_bottleneck")
    assert (erm.optimizer.weight_decay, dann.optimizer.weight_decay) == (5e-4, 1e-3)
    assert erm.optimizer.name == dann.optimizer.name == "sgd" and dann.optimizer.nesterov
    assert dann.method.discriminator_batch_norm and dann.method.hidden == 1024
    assert resolve("digits_us_to_mn_tllib", method="dann").optimizer.lr == 0.1
    for config in (erm, dann):
        steps = config.train.rounds * config.train.stage_epochs * config.train.max_steps_per_epoch
        assert steps == TOTAL_STEPS and config.train.selection == "last"
    us = resolve("digits_us_to_mn_tllib", method="dann").train
    assert us.rounds * us.stage_epochs * us.max_steps_per_epoch == TOTAL_STEPS
    assert us.max_steps_per_epoch <= 7_291 // 128  # every epoch is full batches of USPS


def test_schedules_equal_tllibs_per_step_formulas():
    """``(1 + γ·step)^-0.75`` and the warm-start reversal ``2/(1+exp(−step/1000)) − 1`` at every
    step equal this project's fraction-of-training forms with the policy's numbers."""
    erm = resolve("digits_mn_to_us_tllib", method="source_only").optimizer
    dann = resolve("digits_mn_to_us_tllib", method="dann").method
    for step in (0, 1, 500, 1_000, 1_999):
        p = step / TOTAL_STEPS
        assert inverse_decay(p, erm.anneal_alpha, erm.anneal_beta) == pytest.approx(
            (1 + 3e-4 * step) ** -0.75
        )
        assert inverse_decay(p, dann.lr_anneal_alpha, 0.75) == pytest.approx((1 + 1e-3 * step) ** -0.75)
        warm_start = 2.0 / (1.0 + math.exp(-step / 1_000)) - 1.0
        assert grl_coefficient(p, dann.gamma) == pytest.approx(warm_start)


def test_command_line_and_files_override_the_policy(tmp_path):
    assert (
        resolve("digits_mn_to_us_tllib", method="dann", sets=["network.name=lenet"]).network.name == "lenet"
    )
    config_file = tmp_path / "run.yaml"
    config_file.write_text("experiment: digits_mn_to_us_tllib\noptimizer:\n  weight_decay: 0.0\n")
    assert resolve(str(config_file), method="dann").optimizer.weight_decay == 0.0
    config_file.write_text("experiment: digits_mn_to_us_tllib\nmethod:\n  name: cetl\n")
    switched = resolve(str(config_file), method="dann")  # --method wins, with its policy
    assert switched.method.name == "dann" and switched.network.name == "lenet_tllib_bottleneck"
    other = resolve("digits_mn_to_us_tllib", method="drcn")  # no policy: the protocol's settings
    assert other.network.name == "lenet_tllib" and other.optimizer.anneal_alpha == 0.0


def test_dann_discriminator_sees_both_domains_as_one_batch():
    method = make_method("dann", experiment="digits_mn_to_us_tllib")
    norms = [m for m in method.discriminator.modules() if isinstance(m, nn.BatchNorm1d)]
    assert len(norms) == 2
    data = synthetic_training_data(image_size=28)
    batch = loop.Batch(x=data.labelled.x[:6], y=data.labelled.y[:6], x_tgt=data.target[:4], progress=0.5)
    seen: list[int] = []
    handle = method.discriminator.register_forward_hook(lambda _m, args, _o: seen.append(len(args[0])))
    try:
        terms = method._losses(batch)
    finally:
        handle.remove()
    assert seen == [10] and torch.isfinite(terms["domain"])


def test_nesterov_without_momentum_is_refused():
    parameters = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(ConfigError, match=r"optimizer\.nesterov needs momentum"):
        loop.make_optimizer(parameters, OptimizerConfig(name="sgd", momentum=0.0, nesterov=True))
    sgd = loop.make_optimizer(parameters, OptimizerConfig(name="sgd", nesterov=True))
    assert sgd.param_groups[0]["nesterov"]


def test_run_wide_annealing_reaches_a_method_without_its_own_schedule(tmp_path):
    method = make_method("source_only")
    train = TrainConfig(rounds=2, batch_size=32, max_steps_per_epoch=3, tensorboard=False, progress=False)
    config = OptimizerConfig(name="sgd", lr=0.1, nesterov=True, anneal_alpha=10.0)
    loop.train(
        method,
        synthetic_training_data(),
        train_config=train,
        optimizer_config=config,
        seed=0,
        run_dir=tmp_path,
        resume=False,
    )
    (state,) = load_checkpoint(tmp_path / "last.pt")["optimizers"].values()
    group = state["param_groups"][0]
    last_progress = 5 / 6  # 96 images at batch 32: the 6th of 6 steps starts 5/6 of the way in
    assert group["base_lr"] == 0.1
    assert group["lr"] == pytest.approx(0.1 * inverse_decay(last_progress, 10.0, 0.75))


@pytest.mark.needs_data
def test_a_comparison_names_each_methods_network(tmp_path, data_root):
    from cetl.cli import main

    out = tmp_path / "runs"
    argv = ["compare", "digits_mn_to_us_tllib", "--methods", "source_only,dann", "--seeds", "1"]
    assert main([*argv, "--profile", "smoke", "--out", str(out), "--data-root", str(data_root.path)]) == 0
    text = (out / "digits_mn_to_us_tllib" / "smoke" / "compare.md").read_text()
    assert "Networks `lenet_tllib` (source_only), `lenet_tllib_bottleneck` (dann)" in text
