"""CETL III: term balance (D10), per-stage evaluation, D11's warm-up, the literal reductions."""

import dataclasses
import json

import torch
from torch import nn

from cetl.config import OptimizerConfig
from cetl.engine import loop
from cetl.engine.balance import INERT_RATIO, BalanceTracker, term_gradient_norms
from cetl.engine.distributed import SINGLE
from cetl.fisher import DWAPenalty
from cetl.methods.base import Batch, Update
from helpers import TRAIN, train_synthetic
from test_cetl import make_method, snapshot


def tiny_update(weights=None):
    """``w ∈ R²``; terms ``fit = (w·x)²`` and ``shrink = ‖w‖²``: gradients 2(w·x)x and 2w by hand."""
    net = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, -2.0]]))

    def losses(batch: Batch) -> dict[str, torch.Tensor]:
        return {"fit": net(batch.x).sum() ** 2, "shrink": net.weight.square().sum()}

    return net, Update("tiny", (net,), losses, weights or {})


def test_norms_equal_a_hand_computation():
    net, update = tiny_update({"shrink": 0.5})
    x = torch.tensor([[3.0, 1.0]])  # w·x = 1
    w = torch.tensor([1.0, -2.0])
    expected = {
        "fit": (2 * 1.0 * torch.tensor([3.0, 1.0])).norm().item(),
        "shrink": 0.5 * (2 * w).norm().item(),
    }
    norms: dict[str, float] = {}
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    loop.run_update(
        update,
        Batch(x=x),
        optimizer,
        max_grad_norm=None,
        autocast=torch.autocast("cpu", enabled=False),
        norms_out=norms,
    )
    assert norms.keys() == expected.keys()
    for name in expected:
        assert abs(norms[name] - expected[name]) < 1e-5, (name, norms, expected)
    # the step is the ordinary one on the weighted sum: w − 0.1·(2(w·x)x + 0.5·2w)
    stepped = w - 0.1 * (2 * torch.tensor([3.0, 1.0]) + w)
    torch.testing.assert_close(net.weight.detach().reshape(-1), stepped)
    # a term that no trained parameter reaches has norm 0
    other = nn.Parameter(torch.ones(1))
    assert term_gradient_norms({"none": other.sum() * 2}, net.parameters()) == {"none": 0.0}


def test_an_inert_term_is_reported_and_an_active_one_is_not(capsys):
    tracker = BalanceTracker()
    tracker.add("s", "u", {"task": 1.0, "tiny": 0.5 * INERT_RATIO, "active": 0.2})
    tracker.add(
        "s", "u", {"task": 2.0, "tiny": 0.9 * INERT_RATIO * 2, "active": 0.01}
    )  # 0.5%: once is enough
    found = tracker.end_stage(0, "s")
    assert [entry["term"] for entry in found] == ["tiny"]
    assert "'tiny' of s/u is inert in round 1" in capsys.readouterr().err
    summary = tracker.summary()
    assert summary["inert_terms"][0]["rounds"] == [0]
    assert abs(summary["term_balance"]["s/u"]["tiny"]["mean_ratio"] - 0.7 * INERT_RATIO) < 1e-12
    assert summary["term_balance"]["s/u"]["task"]["mean_ratio"] == 1.0
    tracker.add("s", "u", {"task": 1.0, "tiny": 0.1, "active": 0.2})  # active in round 2
    assert tracker.end_stage(1, "s") == []
    assert capsys.readouterr().err == ""


def test_engine_logs_balance_and_reports_the_inert_term(tmp_path):
    """``cetl_u`` with Eq. 3's λ at 1 − 1e-7: ``recon_target`` is there in name only."""
    method = make_method("cetl_u", sets=["method.classify_weight=0.9999999"])
    train = dataclasses.replace(TRAIN, balance_every=1)
    result = train_synthetic(method, tmp_path, train=train)
    coupled = result.term_balance["classify_coupled/coupled"]
    assert coupled["recon_target"]["max_ratio"] < INERT_RATIO <= coupled["classify"]["max_ratio"]
    assert {(e["stage"], e["term"]) for e in result.inert_terms} == {("classify_coupled", "recon_target")}
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    balance = [r for r in records if r["kind"] == "balance" and r["stage"] == "classify_coupled"]
    assert len(balance) == 2 * 2  # 2 rounds × 2 steps, every step measured
    assert all(r["grad_norm/classify"] > 0 and "grad_norm/recon_target" in r for r in balance)
    # the default λ couples for real: no inert term
    method = make_method("cetl_u")
    assert train_synthetic(method, tmp_path / "default", train=train).inert_terms == []


def test_measuring_balance_does_not_change_training(tmp_path):
    weights = {}
    for every in (None, 1):
        method = make_method("cetl", sets=["method.dwa3_weight=0.5"])
        train_synthetic(method, tmp_path / str(every), train=dataclasses.replace(TRAIN, balance_every=every))
        weights[every] = snapshot(method.target_net)
    for name, value in weights[None].items():
        assert torch.equal(value, weights[1][name]), name


def test_per_stage_evaluation_rows(tmp_path):
    method = make_method("cetl_e")
    result = train_synthetic(method, tmp_path, train=dataclasses.replace(TRAIN, eval_every_stage=True))
    stages = ["reconstruct_source", "reconstruct_target", "classify"]
    assert [(r["round"], r["stage"]) for r in result.stage_history] == [
        (r, s) for r in range(2) for s in stages
    ]
    for round_record in result.history:  # the last stage's row is the round's evaluation
        last = [r for r in result.stage_history if r["round"] == round_record["round"]][-1]
        assert last["target_test_accuracy"] == round_record["target_test_accuracy"]
        assert last["val_accuracy"] == round_record["val_accuracy"]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in records if r["kind"] == "stage_eval"]) == 6
    off = train_synthetic(make_method("cetl_e"), tmp_path / "off")
    assert off.stage_history == []


def test_e2e_warm_up_freezes_a_trained_decoder_not_the_initial_one():
    """D11: T1′ is taken after one stage-1 epoch, so it differs from the initial T1."""
    from cetl.data.synthetic import synthetic_training_data

    data = synthetic_training_data()
    method = make_method("cetl_e2e")
    method.prepare(data, SINGLE)
    initial = snapshot(method.decoder)
    stages = method.stages(0)
    assert [s.name for s in stages] == ["reconstruct_source", "joint"]
    assert [s.name for s in method.stages(1)] == ["joint"]
    warmup = stages[0]
    optimizer = loop.make_optimizer(list(warmup.updates[0].parameters()), OptimizerConfig(lr=1e-3))
    batch = Batch(x_tgt=data.target[:16], idx_tgt=torch.arange(16))
    for _ in range(3):
        loop.run_update(
            warmup.updates[0],
            batch,
            optimizer,
            max_grad_norm=None,
            autocast=torch.autocast("cpu", enabled=False),
        )
    warmup.on_end()
    frozen = method._frozen_path[1].state_dict()  # (adapter, decoder)
    assert any(not torch.equal(frozen[k], initial[k]) for k in initial)
    off = make_method("cetl_e2e", sets=["method.e2e_warmup_epochs=0"])
    assert [s.name for s in off.stages(0)] == ["joint"]


def test_dwa_reduction_sum_is_eq_11_literally():
    gfi = {"w": torch.tensor([1.0, 3.0])}
    penalty = DWAPenalty.capture(gfi, {"w": torch.zeros(2)}, reduction="sum")
    assert float(penalty({"w": torch.tensor([2.0, 1.0])})) == 0.5 * (1 * 4 + 3 * 1)
    method = make_method("cetl")
    assert method.config.dwa_reduction == "sum" and method.config.recon_reduction == "sum"
