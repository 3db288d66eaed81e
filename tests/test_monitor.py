"""The error-bound monitor (METHOD.md §6) and the unsupervised selection rules."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from cetl.cli import main
from cetl.data.labelled import LabelledSet
from cetl.data.training import TrainingData
from cetl.engine.validators import unsupervised_scores
from cetl.monitor import BOUND_KEYS, bound_terms, gaussian_mmd
from cetl.report.render import bound_series, write_report
from cetl.summary import RunSummary


def test_mmd_of_two_points_matches_the_hand_computed_value():
    x, y = torch.tensor([[0.0]]), torch.tensor([[1.0]])
    # pooled squared distances off the diagonal are all 1 → bandwidth 1; k(x,y) = e^{-1}
    assert gaussian_mmd(x, y).item() == pytest.approx(math.sqrt(2 - 2 * math.exp(-1)), rel=1e-5)


def test_mmd_is_zero_for_identical_samples_and_grows_with_a_shift():
    x = torch.randn(64, 8, generator=torch.Generator().manual_seed(0))
    assert gaussian_mmd(x, x).item() == pytest.approx(0.0, abs=1e-3)
    assert gaussian_mmd(x, x + 0.5).item() < gaussian_mmd(x, x + 3.0).item()


class _Fixed(nn.Module):
    """Predicts class ``labels[i]`` for image i of a batch whose first pixel holds i."""

    def __init__(self, labels: list[int], classes: int = 3) -> None:
        super().__init__()
        self.labels = torch.tensor(labels)
        self.classes = classes

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        index = x.flatten(1)[:, 0].long()
        return nn.functional.one_hot(self.labels[index], self.classes).float()


def test_bound_terms_follow_eq_14():
    images = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 1, 2, 2).contiguous()
    labels = torch.tensor([0, 1, 2, 0])
    source = _Fixed([0, 1, 2, 1])  # wrong on image 3
    target = _Fixed([0, 1, 1, 1])  # wrong on images 2, 3; disagrees with S on image 2
    terms = bound_terms(
        source=source,
        target=target,
        source_reconstruct=lambda x: x,  # perfect reconstructions: M1 = 0
        target_reconstruct=lambda x: x + 1.0,
        labelled_val=LabelledSet(images, labels),
        target_images=images,
        target_test=LabelledSet(images, labels),
    )
    assert set(terms) == set(BOUND_KEYS)
    assert terms["bound_lhs"] == pytest.approx(0.5)
    assert terms["bound_e_s"] == pytest.approx(0.25)
    assert terms["bound_d"] == pytest.approx(0.25)
    assert terms["bound_m1"] == pytest.approx(0.0, abs=1e-3)
    assert terms["bound_m2"] > 0.1
    assert terms["bound_rhs"] == pytest.approx(
        0.25 + 2 * 0.25 + 3 * terms["bound_m1"] + 2 * terms["bound_m2"]
    )


def test_entropy_validator_scores_uniform_predictions_at_log_k():
    class Uniform(nn.Module):
        def predict(self, x):
            return torch.zeros(len(x), 4)

    x = torch.rand(6, 1, 2, 2)
    data = TrainingData(
        LabelledSet(x, torch.zeros(6, dtype=torch.long)),
        LabelledSet(x, x[:, 0, 0, 0].long()),
        x,
        LabelledSet(x, x[:, 0, 0, 0].long()),
    )
    import contextlib

    score = unsupervised_scores(["unsupervised:entropy"], Uniform(), data, autocast=contextlib.nullcontext())
    assert score == {"unsupervised_entropy": pytest.approx(math.log(4))}


def test_bound_series_normalises_each_side_by_its_maximum():
    history = [
        {"round": 0, "bound_lhs": 0.4, "bound_rhs": 2.0},
        {"round": 1, "bound_lhs": 0.2, "bound_rhs": 1.0},
        {"round": 2, "target_test_accuracy": 0.9},  # a record without the bound is skipped
    ]
    assert bound_series(history) == ([1, 2], [1.0, 0.5], [1.0, 0.5])


@pytest.mark.needs_data
def test_cetl_run_logs_the_bound_and_unsupervised_selection_is_honoured(tmp_path, monkeypatch, data_root):
    monkeypatch.chdir(tmp_path)  # S goes to its default folder, runs/..., under tmp_path
    run = tmp_path / "cetl"
    argv = ["train", "digits_mn_to_us", "--method", "cetl_e", "--profile", "smoke", "--out", str(run)]
    argv += ["--data-root", str(data_root.path), "--set", "train.selection=unsupervised:reconstruction"]
    assert main(argv) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["selected_by"] == "unsupervised:reconstruction"
    history = summary["history"]
    best = min(history, key=lambda h: h["unsupervised_reconstruction"])
    assert summary["selected_round"] == best["round"]
    assert all(set(BOUND_KEYS) <= set(h) for h in history)
    assert summary["oracle_target_test_accuracy"] == max(h["target_test_accuracy"] for h in history)
    report = write_report([RunSummary.from_json(summary)], tmp_path / "report", title="t", intro="i")
    assert "![error bound, Eq. 14](bound_cetl_e.png)" in report.read_text()
    assert (tmp_path / "report" / "bound_cetl_e.png").stat().st_size > 1000


@pytest.mark.needs_data
def test_reconstruction_selection_without_a_decoder_is_a_config_error(tmp_path, capsys, data_root):
    argv = ["train", "digits_mn_to_us", "--method", "source_only", "--profile", "smoke"]
    argv += ["--out", str(tmp_path / "r"), "--data-root", str(data_root.path)]
    argv += ["--set", "train.selection=unsupervised:reconstruction"]
    assert main(argv) == 2
    assert "needs a method with a decoder" in capsys.readouterr().err
