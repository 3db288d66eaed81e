"""Label-free selection rules on constructed cases whose answer is known, and selection regret."""

from __future__ import annotations

import math

import pytest
import torch

from cetl.engine.validators import (
    chosen_record,
    deep_embedded_validation,
    regret,
    soft_neighbourhood_density,
)
from cetl.losses.information import information_maximisation


def _im(logits: torch.Tensor) -> float:
    entropy, diversity = information_maximisation(logits)
    return float(entropy + diversity)


def test_im_prefers_confident_and_diverse_predictions_to_a_collapse_or_uniform_ones():
    classes = torch.arange(4).repeat(25)
    balanced = 20 * torch.nn.functional.one_hot(classes, 4).float()
    collapsed = 20 * torch.nn.functional.one_hot(torch.zeros(100, dtype=torch.long), 4).float()
    uniform = torch.zeros(100, 4)
    assert _im(balanced) == pytest.approx(-math.log(4), abs=1e-3)
    assert _im(collapsed) == pytest.approx(0.0, abs=1e-3)
    assert _im(uniform) == pytest.approx(0.0, abs=1e-3)


def test_snd_is_higher_for_dense_neighbourhoods():
    generator = torch.Generator().manual_seed(0)
    classes = torch.arange(4).repeat(50)
    clustered = 10 * torch.nn.functional.one_hot(classes, 4).float()
    scattered = clustered + 4 * torch.randn(200, 4, generator=generator)
    assert soft_neighbourhood_density(clustered) > soft_neighbourhood_density(scattered)
    # Tight clusters of 50: each image's neighbours are its 49 cluster mates, equally near.
    assert soft_neighbourhood_density(clustered) == pytest.approx(math.log(49), abs=1e-2)


def test_dev_is_the_plain_validation_loss_without_shift_and_upweights_target_like_images():
    generator = torch.Generator().manual_seed(0)
    source = torch.randn(400, 3, generator=generator)
    target = torch.randn(400, 3, generator=generator)
    val = torch.randn(200, 3, generator=generator)
    labels = torch.randint(0, 3, (200,), generator=generator)
    plain = torch.nn.functional.cross_entropy(val, labels).item()
    assert deep_embedded_validation(
        source_logits=source, target_logits=target, val_logits=val, val_labels=labels
    ) == pytest.approx(plain, rel=0.1)
    # Target images sit at +1.5 on the first logit; validation images there are misclassified
    # (their label is their lowest logit), the others right: weighing target-like images up must
    # score the model worse than the plain validation loss.
    shifted = target + torch.tensor([1.5, 0.0, 0.0])
    near_target = val[:, 0] > 0.5
    labels = torch.where(near_target, val.argmin(dim=1), val.argmax(dim=1))
    plain = torch.nn.functional.cross_entropy(val, labels).item()
    dev = deep_embedded_validation(
        source_logits=source, target_logits=shifted, val_logits=val, val_labels=labels
    )
    assert dev > plain + 0.2


def test_each_rule_chooses_its_round_and_regret_is_oracle_minus_chosen():
    history = [
        {"round": 0, "val_accuracy": 0.90, "target_test_accuracy": 0.70, "unsupervised_im": -1.0},
        {"round": 1, "val_accuracy": 0.95, "target_test_accuracy": 0.75, "unsupervised_im": -2.0},
        {"round": 2, "val_accuracy": 0.95, "target_test_accuracy": 0.80, "unsupervised_im": -1.5},
        {"round": 3, "val_accuracy": 0.93, "target_test_accuracy": 0.78, "unsupervised_im": -0.5},
    ]
    assert chosen_record(history, "source_val")["round"] == 1  # ties: the first best, as the engine
    assert chosen_record(history, "unsupervised:im")["round"] == 1
    assert chosen_record(history, "last")["round"] == 3
    assert regret(history, "source_val") == pytest.approx(0.05)
    assert regret(history, "last") == pytest.approx(0.02)
    assert regret(history, "unsupervised:snd") is None  # never logged
