"""The one training loop on synthetic data: learning, resume, checkpoints, logs, selection."""

import json
from pathlib import Path

import pytest
import torch

from cetl.config import MethodConfig, OptimizerConfig, TrainConfig
from cetl.data.synthetic import synthetic_training_data
from cetl.engine import loop
from cetl.engine.checkpoint import load_checkpoint, save_checkpoint
from cetl.errors import ConfigError, RunError
from cetl.files import atomic_write_bytes
from cetl.methods.baselines import SourceOnly, TargetOnly
from cetl.networks import NETWORKS

TRAIN = TrainConfig(rounds=4, batch_size=16, log_every=2, tensorboard=False, progress=False)
OPTIMIZER = OptimizerConfig(lr=1e-3)


def make_method(cls=SourceOnly):
    torch.manual_seed(0)
    net = NETWORKS.get("lenet")(in_channels=1, image_size=28, num_classes=4)
    return cls(MethodConfig(), target_net=net)


def run(
    run_dir: Path,
    *,
    resume: bool = False,
    train: TrainConfig = TRAIN,
    cls=SourceOnly,
    seed: int = 0,
    optimizer: OptimizerConfig = OPTIMIZER,
):
    method = make_method(cls)
    result = loop.train(
        method,
        synthetic_training_data(),
        train_config=train,
        optimizer_config=optimizer,
        seed=seed,
        run_dir=run_dir,
        resume=resume,
    )
    return method, result


def test_tiny_run_learns_and_writes_records(tmp_path):
    _method, result = run(tmp_path)
    assert result.selected_by == "source_val"
    assert result.val_accuracy > 0.6  # 4 classes: chance is 0.25
    assert result.steps == {"classify": 4 * (96 // 16)}
    records = records_without_times(tmp_path)
    stage_records = [r for r in records if r["kind"] == "stage"]
    assert [r["stage"] for r in stage_records] == ["classify"] * 4
    assert stage_records[-1]["mean_loss"] < stage_records[0]["mean_loss"]
    assert result.term_steps == {"classify": 24}
    train_records = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["round"] for r in evals] == [0, 1, 2, 3]
    assert len(train_records) == 24 // 2 and train_records[0]["stage"] == "classify"
    assert train_records[-1]["classify"] < train_records[0]["classify"]
    best = max(evals, key=lambda r: r["val_accuracy"])
    assert result.selected_round == best["round"]
    assert result.target_test_accuracy == best["target_test_accuracy"]


def test_interrupted_and_resumed_run_matches_an_uninterrupted_one(tmp_path, interrupt_at_evaluation):
    reference, reference_result = run(tmp_path / "straight")
    interrupt_at_evaluation(5)  # round 3's first evaluation: rounds 1-2 are checkpointed
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "interrupted")
    interrupt_at_evaluation(None)
    assert load_checkpoint(tmp_path / "interrupted" / loop.LAST_CHECKPOINT)["progress"]["rounds_done"] == 2

    resumed, resumed_result = run(tmp_path / "interrupted", resume=True)
    for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert resumed_result.history == reference_result.history
    assert resumed_result.steps == reference_result.steps
    assert records_without_times(tmp_path / "interrupted") == records_without_times(tmp_path / "straight")


def records_without_times(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_resume_of_a_finished_run_trains_nothing_and_reports_the_same(tmp_path):
    _, first = run(tmp_path)
    _, again = run(tmp_path, resume=True)
    assert (again.selected_round, again.target_test_accuracy) == (
        first.selected_round,
        first.target_test_accuracy,
    )


def test_same_seed_same_numbers_different_seed_different_numbers(tmp_path):
    _, a = run(tmp_path / "a")
    _, b = run(tmp_path / "b")
    assert a.history == b.history
    _, c = run(tmp_path / "c", seed=1)
    assert c.history != a.history


def test_last_selection_and_target_only(tmp_path):
    _, result = run(tmp_path, cls=TargetOnly)
    assert result.selected_by == "last" and result.selected_round == TRAIN.rounds - 1
    with pytest.raises(ConfigError, match=r"needs labelled source data"):
        loop.resolve_selection("source_val", "target")


def test_checkpoint_round_trip_and_unsafe_or_corrupt_files_are_refused(tmp_path):
    payload = {"networks": {"w": torch.arange(3.0)}, "rounds_done": 2, "history": [{"a": 0.5}]}
    save_checkpoint(tmp_path / "c.pt", payload)
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert torch.equal(loaded["networks"]["w"], payload["networks"]["w"]) and loaded["history"] == [
        {"a": 0.5}
    ]

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(RunError, match=r"could not be read safely"):
        load_checkpoint(tmp_path / "evil.pt")
    atomic_write_bytes(tmp_path / "truncated.pt", (tmp_path / "c.pt").read_bytes()[:100])
    with pytest.raises(RunError, match=r"could not be read safely"):
        load_checkpoint(tmp_path / "truncated.pt")
    with pytest.raises(RunError, match=r"does not exist"):
        load_checkpoint(tmp_path / "absent.pt")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "summary.json"
    target.write_text("old")

    with pytest.raises(TypeError):
        atomic_write_bytes(target, object())  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_non_finite_loss_is_a_clear_error(tmp_path):
    with pytest.raises(RunError, match=r"non-finite loss"):
        run(tmp_path, optimizer=OptimizerConfig(lr=1e30))


def test_tensorboard_events_are_written(tmp_path):
    run(tmp_path, train=TrainConfig(rounds=1, batch_size=32, log_every=1, tensorboard=True, progress=False))
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_convergence_stops_when_stage_losses_settle(tmp_path):
    settled = TrainConfig(rounds=30, batch_size=16, tensorboard=False, progress=False, tol=0.5, patience=1)
    _, result = run(tmp_path / "a", train=settled)
    assert 2 <= result.rounds < 30
    strict = TrainConfig(rounds=3, batch_size=16, tensorboard=False, progress=False, tol=1e-9, patience=1)
    _, result = run(tmp_path / "b", train=strict)
    assert result.rounds == 3


def test_without_a_terminal_progress_prints_plain_lines_with_the_run_eta(capsys, monkeypatch, tmp_path):
    from cetl.engine import logging as run_logging

    clock = run_logging.RunClock(start_fraction=0.0)
    steps = run_logging.progress(
        range(3),
        total=3,
        description="round 1/2 classify",
        enabled=True,
        run_fraction=lambda step: step / 6,
        clock=clock,
        every=0.0,
    )
    assert list(steps) == [0, 1, 2]
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("cetl: round 1/2 classify: step 1/3; run 17% done, ETA ")
    assert lines[-1].startswith("cetl: round 1/2 classify: step 3/3; run 50% done, ETA ")
    # In a real run the fraction reaches 100% at the last step of the last stage of the last round.
    monkeypatch.setattr(run_logging, "PLAIN_EVERY", 0.0)
    run(tmp_path, train=TrainConfig(rounds=2, batch_size=16, max_steps_per_epoch=2, tensorboard=False))
    printed = [line for line in capsys.readouterr().err.splitlines() if line.startswith("cetl: round")]
    assert printed[-1].startswith("cetl: round 2/2 classify: step 2/2; run 100% done, ETA 0m00s")
