"""`cetl reproduce`: planning (reuse, resume, not run, conflict), resumption, teacher cells, CLI errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from cetl.cli import main
from cetl.config import dump_yaml
from cetl.data.root import DataRoot
from cetl.errors import ConfigError, RunError
from cetl.experiments.paper import TABLES
from cetl.run_folder import source_run_config
from cetl.workflows.compare import cell_config
from cetl.workflows.reproduce import MANIFEST_FILE, get_table, plan, reproduce, select_cells
from helpers import as_summary


def _root_with(tmp_path: Path, real: DataRoot | None, *names: str) -> DataRoot:
    """A data root holding only ``names`` (links into the real root)."""
    root = tmp_path / "data"
    root.mkdir()
    for name in names:
        assert real is not None
        (root / name).symlink_to(real.path / name)
    return DataRoot(root, "option", download=False)


def _states(tasks):
    return {(task.cell.id, task.seed): (task.state, task.reason) for task in tasks}


def test_table_names_and_only_are_checked_with_suggestions():
    assert get_table("5") is get_table("Table5") is TABLES["table5"]
    with pytest.raises(ConfigError, match="did you mean 'table5'"):
        get_table("tabel5")
    table = TABLES["table5"]
    assert [c.id for c in select_cells(table, ["digits_mn_to_us/cetl"])] == ["digits_mn_to_us/cetl"]
    assert len(select_cells(table, ["digits_us_to_mn"])) == 10 and len(select_cells(table, ["adda"])) == 3
    with pytest.raises(ConfigError, match="did you mean 'digits_mn_to_us/cetl'"):
        select_cells(table, ["digits_mn_to_us/cetll"])


def test_cli_errors_exit_2_with_one_line(capsys, tmp_path):
    assert main(["reproduce", "table9", "--out", str(tmp_path)]) == 2
    assert "unknown table 'table9'" in capsys.readouterr().err
    assert main(["reproduce", "table5", "--only", "nosuch", "--out", str(tmp_path)]) == 2
    assert "--only nosuch matches no cell of table5" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["reproduce", "table5", "--seeds", "0"])
    assert not any(tmp_path.iterdir())  # nothing was planned into the folder


def test_cells_without_their_data_are_not_run_and_reported_so(tmp_path, capsys):
    root = _root_with(tmp_path, None)  # an empty root: no MNIST, no USPS, nothing
    out = tmp_path / "runs"
    folder, failed = reproduce(TABLES["table5"], [0], profile="smoke", out=out, data_root=root, log=print)
    assert failed == 0
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    assert manifest["reasons"]["digits_sv_to_mn/cetl"] == (
        f"not run: SVHN and MNIST not found under {root.path}; see `cetl data check`"
    )
    assert manifest["reasons"]["digits_mn_to_us/cetl"].startswith("not run: MNIST and USPS not found under")
    results = json.loads((folder / "results.json").read_text())
    assert {cell["status"] for cell in results["tables"][0]["cells"]} == {"not run"}
    text = (folder / "report.md").read_text()
    assert "| CETL | 92.96 | not run [1] |" in text
    assert not (out / "digits_mn_to_us").exists()  # nothing trained, no cell folder made
    assert main(["report", str(folder)]) == 0  # re-rendered from the manifest
    assert "not run [1]" in capsys.readouterr().out


@pytest.mark.needs_data
def test_missing_usps_marks_only_its_cells(tmp_path, data_root):
    root = _root_with(tmp_path, data_root, "MNIST")
    states = _states(plan(TABLES["table5"], [0], profile="smoke", sets=(), out=tmp_path, data_root=root))
    reason = f"not run: USPS not found under {root.path}; see `cetl data check`"
    assert states[("digits_mn_to_us/dann", 0)] == ("not run", reason)
    assert states[("digits_us_to_mn/source_only", 0)] == ("not run", reason)


@pytest.mark.needs_data
def test_reproduce_trains_reuses_and_refuses_a_changed_config(tmp_path, capsys, data_root):
    out = tmp_path / "runs"
    argv = ["reproduce", "table5", "--profile", "smoke", "--seeds", "1", "--out", str(out)]
    argv += ["--data-root", str(data_root.path), "--set", "train.rounds=1"]
    argv += ["--only", "digits_mn_to_us/source_only", "digits_mn_to_us/target_only"]
    assert main([*argv, "--dry-run"]) == 0
    dry = capsys.readouterr().out
    assert "digits_mn_to_us/source_only seed 0: train" in dry and "to reuse, 0 to resume, 2 to train" in dry
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "ETA" in captured.err and "| Source | 85.55 |" in captured.out
    folder = out / "table5" / "smoke"
    results = json.loads((folder / "results.json").read_text())
    cells = {cell["id"]: cell for cell in results["tables"][0]["cells"]}
    assert cells["digits_mn_to_us/source_only"]["n"] == 1
    assert cells["digits_mn_to_us/source_only"]["selected_by"] == "source_val"
    assert cells["digits_mn_to_us/cetl"]["status"] == "pending"
    assert cells["digits_sv_to_mn/cetl"]["status"] == "not run"
    assert main(argv) == 0  # finished cells are reused, nothing retrained
    assert capsys.readouterr().err.count("(reused)") == 2
    changed = [a if a != "train.rounds=1" else "train.rounds=2" for a in argv]
    assert main(changed) == 1
    err = capsys.readouterr().err
    assert "nothing was trained" in err and "train.rounds (1 → 2)" in err
    assert main([*changed, "--dry-run"]) == 1
    assert "conflict: the finished cell" in capsys.readouterr().out


@pytest.mark.needs_data
def test_the_teacher_cell_is_s_of_the_students(tmp_path, data_root):
    out = tmp_path / "runs"
    table = TABLES["table4"]
    states = _states(plan(table, [0], profile="smoke", sets=(), out=out, data_root=data_root))
    assert states[("kd_cifar10/teacher", 0)][0] == "train"
    assert states[("kd_cifar100/teacher", 0)] == (
        "not run",
        f"not run: CIFAR-100 not found under {data_root.path}; see `cetl data check`",
    )
    # A finished teacher is reused and reported as the "Teacher" row, with nothing trained.
    config = cell_config("kd_cifar10", "cetl", 0, profile="smoke", sets=(), out=out)
    teacher = Path(config.source.path)
    assert teacher == out / "kd_cifar10" / "smoke" / "source_only-resnet26" / "seed0"
    teacher.mkdir(parents=True)
    summary = {
        "experiment": "kd_cifar10",
        "method": "source_only",
        "profile": "smoke",
        "seed": 0,
        "network": "resnet26",
        "target_test_accuracy": 0.5,
        "selected_by": "last",
        "wall_seconds": 3.0,
        "data_root": "x",
        "device": "cpu",
        "history": [],
    }
    (teacher / "summary.json").write_text(json.dumps(summary))
    (teacher / "config.yaml").write_text(dump_yaml(source_run_config(config)))
    folder, _ = reproduce(
        table, [0], profile="smoke", out=out, data_root=data_root, only=["kd_cifar10/teacher"], log=print
    )
    assert "| Teacher | 91.86 | 50.00 ± 0.00 | 65.23 | not run [1] |" in (folder / "report.md").read_text()
    another_seed = dataclasses.replace(source_run_config(config), seed=1)
    (teacher / "config.yaml").write_text(dump_yaml(another_seed))
    states = _states(plan(table, [0], profile="smoke", sets=(), out=out, data_root=data_root))
    assert states[("kd_cifar10/teacher", 0)][0] == "conflict"  # a teacher of another seed is refused


@pytest.mark.needs_data
def test_pretrained_weights_missing_from_the_hub_cache_are_not_run(tmp_path, monkeypatch, data_root):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    states = _states(plan(TABLES["table3"], [0], profile="quick", sets=(), out=tmp_path, data_root=data_root))
    state, reason = states[("tl_alexnet_to_cifar10s/cetl", 0)]
    assert state == "not run" and "alexnet IMAGENET1K_V1 weights not in the torch hub cache" in reason
    assert str(tmp_path / "torch") in reason
    assert states[("tl_alexnet_to_cifar10s/target_only", 0)][0] == "train"  # the baseline reads no S
    assert states[("tl_vgg16_to_stl10/cetl", 0)][1].startswith("not run: STL-10 not found")
    # S of the CI-CNN row is trained on CIFAR-100: its absence counts too.
    assert states[("tl_cicnn_cifar100_to_stl10/cetl", 0)][1].startswith("not run: STL-10 and CIFAR-100 not")
    smoke = _states(plan(TABLES["table2"], [0], profile="smoke", sets=(), out=tmp_path, data_root=data_root))
    assert {state for state, _ in smoke.values()} == {"train"}  # random weights in smoke


def test_a_finished_cell_with_its_config_is_reused_without_data(tmp_path):
    out = tmp_path / "runs"
    config = cell_config("digits_mn_to_us", "sa", 0, profile="smoke", sets=(), out=out)
    run_dir = out / "digits_mn_to_us" / "smoke" / "sa" / "seed0"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(dump_yaml(config))
    (run_dir / "summary.json").write_text(json.dumps(as_summary({"method": "sa"}).to_json()))
    root = DataRoot(tmp_path / "no-data", "option", download=False)
    states = _states(plan(TABLES["table5"], [0], profile="smoke", sets=(), out=out, data_root=root))
    assert states[("digits_mn_to_us/sa", 0)] == ("done", "")
    assert states[("digits_mn_to_us/dann", 0)][1].startswith("not run: data root")


def test_a_reused_cpu_s_of_another_thread_count_is_named_in_a_warning_and_the_header(tmp_path, capsys):
    import torch

    from cetl.report.collect import Run, device_counts
    from cetl.workflows.runs import ensure_source_run

    config = cell_config("digits_mn_to_us", "cetl", 0, profile="smoke", sets=(), out=tmp_path / "runs")
    s_dir = Path(str(config.source.path))
    s_dir.mkdir(parents=True)
    (s_dir / "config.yaml").write_text(dump_yaml(source_run_config(config)))
    root = DataRoot(tmp_path / "no-data", "option", download=False)
    threads = torch.get_num_threads()
    for trained_with, warned in ((threads + 1, True), (threads, False), (None, False)):
        s = as_summary({"device": "cpu", "torch_threads": trained_with})
        (s_dir / "summary.json").write_text(json.dumps(s.to_json()))
        assert ensure_source_run(config, data_root=root) == s_dir  # reused either way, never retrained
        assert ensure_source_run(config, data_root=root) == s_dir  # warned once per S, not per student
        err = capsys.readouterr().err
        assert err.count("warning") == warned
        assert (f"trained with {threads + 1} torch threads and this process has {threads}" in err) is warned
        assert (f"OMP_NUM_THREADS={threads + 1}" in err) is warned
    runs = [Run(None, as_summary({"device": "cpu", "torch_threads": n})) for n in (1, 1, 2, None)]
    assert device_counts(runs) == "cpu ×1, cpu (1 thread) ×2, cpu (2 threads) ×1"


@pytest.mark.needs_data
def test_a_failing_cell_is_reported_and_the_others_still_run(tmp_path, monkeypatch, capsys, data_root):
    import cetl.workflows.reproduce

    def failing(experiment, method, seed, **_):
        raise RunError(f"{method} seed {seed}: non-finite loss\nat round 1")

    monkeypatch.setattr(cetl.workflows.reproduce, "run_cell", failing)
    argv = ["reproduce", "table5", "--profile", "smoke", "--seeds", "2", "--out", str(tmp_path)]
    assert main([*argv, "--data-root", str(data_root.path), "--only", "digits_mn_to_us/sa"]) == 1
    captured = capsys.readouterr()
    assert captured.err.count("failed: sa seed") == 2  # the second seed ran after the first failed
    assert "| SA | 85.89 | failed [4] |" in captured.out  # [1]-[3]: pending, no SVHN, no STL-10
    assert "- [4] failed: seed 1: sa seed 1: non-finite loss at round 1" in captured.out
