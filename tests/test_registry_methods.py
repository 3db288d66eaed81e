"""Every registered method, picked up from the registry: built as ``cetl train`` builds it, trained
for two tiny rounds on the engine, S bit-identical afterwards (DESIGN.md principle 3 and 5).

A newly registered method is trained here with no test edits; a method this loop cannot train
(it needs a setting the synthetic digits do not offer) must say so in :data:`EXPERIMENT_FOR`.
"""

from __future__ import annotations

import pytest
import torch

from cetl.data.synthetic import synthetic_training_data
from cetl.methods import METHODS
from helpers import changed, make_method, make_source, snapshot, train_synthetic

EXPERIMENT_FOR: dict[str, str] = {}
"""Methods that need an experiment other than ``digits_mn_to_us`` (none today: the distillation
methods run on the digits too, with a LeNet S as the teacher)."""

OPTIONS_FOR: dict[str, list[str]] = {
    # Their defaults name ResNet-26 / CI-CNN layers; LeNet has its own taps.
    "fitnets": ["method.hint_layer=pool1", "method.guided_layer=pool1"],
    "fsp": ["method.teacher_layers=conv1,pool1", "method.student_layers=conv1,pool1"],
}
ONE_ROUND = {"sa"}
"""Closed-form methods: fitted once in round 0, after which they have no stages."""


@pytest.mark.parametrize("name", METHODS.names())
def test_every_registered_method_trains_two_rounds_and_leaves_s_untouched(name, tmp_path):
    source = make_source()
    before = source.fingerprint()
    method = make_method(
        name,
        experiment=EXPERIMENT_FOR.get(name, "digits_mn_to_us"),
        sets=OPTIONS_FOR.get(name, ()),
        source=source,
    )
    trained = method.trainable_networks()
    before_training = {key: snapshot(net) for key, net in trained.items()}

    result = train_synthetic(method, tmp_path / name)

    assert result.rounds == (1 if name in ONE_ROUND else 2)
    assert sum(result.steps.values()) > 0, f"{name} took no optimiser step"
    unchanged = [key for key, net in trained.items() if not changed(before_training[key], net)]
    assert len(unchanged) < len(trained), f"{name} trained none of {sorted(trained)}"
    if "source" in METHODS.get(name).components:
        assert source.fingerprint() == before, f"{name} changed the frozen source"
    images = synthetic_training_data().target_test.x[:5]
    with torch.no_grad():
        logits = method.predict(images)
    assert logits.shape == (5, 4)
    assert torch.isfinite(logits).all()
