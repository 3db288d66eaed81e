"""Label efficiency: per-seed label draws, no hold-out with few labels, the studies and their curve report."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from cetl.build import build_training_data, load_target_net, source_from_run
from cetl.config import DataConfig
from cetl.data.labelled import LabelledSet
from cetl.data.root import DataRoot
from cetl.data.subsets import per_class_indices, split_validation
from cetl.errors import ConfigError, RunError
from cetl.experiments import resolve
from cetl.experiments.label_efficiency import LABELS_PER_CLASS, STUDIES
from cetl.experiments.paper import TEACHER
from cetl.report.carry import carried_cells
from cetl.report.collect import Run
from cetl.report.curve import labels_per_class
from cetl.report.results import CellResult, TableResult
from cetl.report.tables import Header, write_table_report
from cetl.workflows.compare import cell_config
from cetl.workflows.reproduce import CALLS_DIR, get_table, report_from_manifest, reproduce
from cetl.workflows.runs import evaluate_run, train_run
from cetl.workflows.serve import export_run
from helpers import as_summary


def test_per_class_draws_are_stratified_reproducible_and_differ_across_seeds():
    labels = torch.arange(10).repeat_interleave(30)[
        torch.randperm(300, generator=torch.Generator().manual_seed(1))
    ]
    first = per_class_indices(labels, 3, seed=0, name="digits/train")
    again = per_class_indices(labels, 3, seed=0, name="digits/train")
    other = per_class_indices(labels, 3, seed=1, name="digits/train")
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert torch.bincount(labels[first], minlength=10).tolist() == [3] * 10
    assert torch.bincount(labels[other], minlength=10).tolist() == [3] * 10
    with pytest.raises(ConfigError, match="fewer than the 31 labels per class"):
        per_class_indices(labels, 31, seed=0, name="digits/train")


def test_a_zero_val_fraction_holds_nothing_out():
    data = LabelledSet(torch.zeros(10, 1, 2, 2), torch.arange(10))
    train, val = split_validation(data, 0.0, seed=0, name="x")
    assert len(train) == 10 and len(val) == 0
    with pytest.raises(ConfigError, match=r"in \[0, 1\)"):
        split_validation(data, 1.0, seed=0, name="x")


@pytest.mark.needs_data
def test_each_run_seed_draws_its_own_labels_unless_labels_seed_fixes_them(data_root):
    config = DataConfig(
        source="usps", target="usps", target_labels_per_class=2, val_fraction=0.0, test_limit=16
    )

    def draw(data_config: DataConfig, seed: int) -> list[int]:
        data, info = build_training_data(data_config, root=data_root, labelled_domain="target", seed=seed)
        assert len(data.labelled) == 20 and len(data.labelled_val) == 0
        assert info.label_draw is not None and info.label_draw["per_class"] == 2
        return info.label_draw["indices"]

    assert draw(config, 0) == draw(config, 0)
    assert draw(config, 0) != draw(config, 1)
    fixed = dataclasses.replace(config, labels_seed=7)
    assert draw(fixed, 0) == draw(fixed, 1) == draw(config, 7)


def test_the_studies_cover_both_directions_every_count_and_s():
    assert set(STUDIES) == {
        "label_efficiency_mn_to_us",
        "label_efficiency_us_to_mn",
        "label_efficiency_demo",
        "forward_only_mn_to_us",
        "forward_only_us_to_mn",
    }
    table = get_table("label_efficiency_mn_to_us")
    assert table.columns == (*map(str, LABELS_PER_CLASS), "all")
    assert {c.method for c in table.cells} >= {TEACHER, "target_only", "fine_tune", "cetl_e", "cetl"}
    variants = {c.id: c.sets for c in table.cells if c.variant}
    assert variants["tl_mn_to_us_n1/baseline-from-s"] == ("method.target_init=source",)
    assert "tl_mn_to_us_all/cetl-from-s" in variants
    config = resolve("tl_us_to_mn_n10", method="cetl", profile="quick", seed=2)
    assert config.data.source == config.data.target == "mnist"
    assert config.data.target_labels_per_class == 10 and config.data.val_fraction == 0.0
    assert config.data.labels_seed is None and config.train.selection == "last"
    assert (config.source.kind, config.source.experiment) == ("experiment", "digits_us_to_mn")
    assert config.train.stage_epochs > 1  # 100 labels still get the template's steps per round
    assert resolve("tl_mn_to_us_all", profile="quick").data.target_labels_per_class == 0


def test_s_of_a_study_is_the_source_only_cell_of_its_experiment_in_the_same_out(tmp_path):
    config = cell_config("tl_mn_to_us_n5", "cetl", 3, profile="smoke", sets=(), out=tmp_path)
    assert config.source.path == str(tmp_path / "digits_mn_to_us" / "smoke" / "source_only" / "seed3")


@pytest.mark.needs_data
def test_source_val_without_a_validation_split_is_a_clear_error(tmp_path, data_root):
    config = resolve("digits_mn_to_us", method="source_only", profile="smoke", sets=["data.val_fraction=0"])
    with pytest.raises(ConfigError, match="val_fraction=0 holds nothing out"):
        train_run(config, run_dir=tmp_path / "run", data_root=data_root)


@pytest.mark.needs_data
def test_a_smoke_study_records_draws_and_writes_the_curve_and_paired_tables(tmp_path, data_root):
    out = tmp_path / "runs"
    cells = [f"tl_mn_to_us_{n}/{m}" for n in ("n1", "n5") for m in ("target_only", "fine_tune")]
    folder, failed = reproduce(
        get_table("label_efficiency_mn_to_us"),
        [0, 1],
        profile="smoke",
        out=out,
        data_root=data_root,
        sets=["train.rounds=1"],
        only=[*cells, "tl_mn_to_us_n1/teacher", "tl_mn_to_us_n1/baseline-from-s"],
        log=lambda line: None,
    )
    assert failed == 0
    draws = []
    for seed in (0, 1):
        summary = json.loads(
            (out / "tl_mn_to_us_n5" / "smoke" / "fine_tune" / f"seed{seed}" / "summary.json").read_text()
        )
        assert summary["val_accuracy"] is None and summary["selected_by"] == "last"
        assert summary["label_draw"]["seed"] == seed and len(summary["label_draw"]["indices"]) == 50
        draws.append(summary["label_draw"]["indices"])
    assert draws[0] != draws[1]
    from_s = out / "tl_mn_to_us_n1" / "smoke" / "baseline-from-s" / "seed0" / "config.yaml"
    assert "target_init: source" in from_s.read_text()
    assert (folder / "curve_label_efficiency_mn_to_us.png").stat().st_size > 0
    report = (folder / "report.md").read_text()
    assert "Paired difference from `fine_tune`" in report and "Paired difference from `target_only`" in report
    assert "| target_only (T2 on the labels alone) | " in report
    # S's row is one run set in every column: its per-cell plots are drawn once.
    assert len(list(folder.glob("balance_*_s_frozen_*.png"))) == 1


@pytest.mark.needs_data
def test_a_fine_tune_run_evaluates_and_exports_like_any_other(tmp_path, monkeypatch, data_root):
    monkeypatch.chdir(tmp_path)  # S's default folder (runs/digits_mn_to_us/...) lands here
    config = resolve("tl_mn_to_us_n5", method="fine_tune", profile="smoke", sets=["train.rounds=1"])
    run = tmp_path / "ft"
    summary = train_run(config, run_dir=run, data_root=data_root)
    report = evaluate_run(run, data_root=data_root)
    assert report["target_test_accuracy"] == pytest.approx(summary.target_test_accuracy)
    assert report["val_accuracy"] is None  # nothing held out
    program = torch.export.load(str(export_run(run, fmt="pt")))
    _, net, _ = load_target_net(run)
    x = torch.rand(3, 1, 32, 32)
    torch.testing.assert_close(program.module()(x), net(x))
    with pytest.raises(ConfigError, match="is a fine_tune run, whose network is a copy of its own source"):
        source_from_run(run, tap="coupling", temperature=4.0)


# --- carrying finished columns into a later reproduction (cetl reproduce --carry) -------------


def _first_reproduction(tmp_path: Path) -> Path:
    """A results.json in which only the 10-labels column was measured, two seeds."""
    table = get_table("label_efficiency_mn_to_us")
    cells = []
    for number, cell in enumerate(table.cells):
        if cell.column != "10":
            cells.append(CellResult(cell, (), "pending: not finished yet"))
            continue
        draw = None if cell.method == "teacher" else {"per_class": 10, "seed": 0, "indices": []}
        runs = tuple(
            Run(
                None,
                as_summary(
                    {
                        "experiment": cell.experiment,
                        "method": cell.method,
                        "seed": seed,
                        "target_test_accuracy": 0.5 + 0.01 * number + 0.002 * seed,
                        "label_draw": draw,
                    }
                ),
            )
            for seed in (0, 1)
        )
        cells.append(CellResult(cell, runs))
    out = tmp_path / "first"
    write_table_report([TableResult(table, tuple(cells))], Header("quick", (0, 1), "cpu", "cetl first"), out)
    return out / "results.json"


def test_carried_cells_are_reported_with_their_numbers_and_curve_place(tmp_path):
    carried = _first_reproduction(tmp_path)
    folder = tmp_path / "second"
    folder.mkdir()
    manifest = {
        "table": "label_efficiency_mn_to_us",
        "profile": "quick",
        "seeds": [0, 1],
        "sets": [],
        "runs": str(tmp_path / "runs"),
        "reasons": {},
        "carry": [str(carried)],
        "hardware": "cpu",
        "command": "cetl second",
    }
    (folder / "reproduce.json").write_text(json.dumps(manifest))
    report_from_manifest(folder)
    before = {c["id"]: c for c in json.loads(carried.read_text())["tables"][0]["cells"]}
    after = {c["id"]: c for c in json.loads((folder / "results.json").read_text())["tables"][0]["cells"]}
    for cell_id, entry in before.items():
        if entry["status"] != "measured":
            assert after[cell_id]["status"] == "pending"  # nothing carried where nothing was measured
            continue
        assert after[cell_id]["accuracies"] == entry["accuracies"] and after[cell_id]["carried"] is True
        assert after[cell_id].get("labels_per_class") == entry.get("labels_per_class")
    text = (folder / "report.md").read_text()
    assert f"- carried from `cetl first` ({carried}; no run folder here" in text
    assert text.count(" (carried)") == sum(entry["status"] == "measured" for entry in before.values())
    assert (folder / "curve_label_efficiency_mn_to_us.png").stat().st_size > 0
    # A results.json from before labels_per_class was recorded: the curve's column is its x.
    old = json.loads(carried.read_text())
    for entry in old["tables"][0]["cells"]:
        entry.pop("labels_per_class", None)
    carried.write_text(json.dumps(old))
    runs, _ = carried_cells(carried, get_table("label_efficiency_mn_to_us"), "quick")
    assert {
        labels_per_class(run.summary) for cell, rs in runs.items() if "teacher" not in cell for run in rs
    } == {10.0}


def test_calls_into_one_folder_keep_every_command_and_what_an_earlier_call_carried(tmp_path):
    """A study filled cell by cell (one ``--only`` call each, even side by side) reports all of them."""
    carried = _first_reproduction(tmp_path)
    table = get_table("label_efficiency_mn_to_us")
    empty = DataRoot(tmp_path / "nothing", "option", download=False)  # every cell 'not run': nothing trains
    (tmp_path / "nothing").mkdir()
    out = tmp_path / "runs"
    common = {"profile": "quick", "out": out, "data_root": empty, "log": lambda line: None}
    reproduce(table, [0, 1], only=["tl_mn_to_us_n1"], command="cetl first call", carry=[carried], **common)
    folder, _ = reproduce(table, [0, 1], only=["tl_mn_to_us_n5"], command="cetl second call", **common)
    assert len(list((folder / CALLS_DIR).glob("*.json"))) == 2
    text = (folder / "report.md").read_text()
    assert "- commands (2 calls into this folder):" in text and "(the 2 calls' span" in text
    assert "  - `cetl first call` (started " in text and "  - `cetl second call` (started " in text
    assert "- command: `" not in text  # one list, not the last call's command alone
    results = json.loads((folder / "results.json").read_text())
    assert [c.split("`")[1] for c in results["commands"]] == ["cetl first call", "cetl second call"]
    cells = {cell["id"]: cell for cell in results["tables"][0]["cells"]}
    assert cells["tl_mn_to_us_n10/cetl"]["carried"] is True  # the first call's carry outlives it
    (folder / CALLS_DIR / "broken.json").write_text("{")
    with pytest.raises(RunError, match=r"cannot read the call record .*broken\.json.*delete it"):
        report_from_manifest(folder)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"profile": "smoke"}, "of profile 'quick', this call's is 'smoke'"),
        ({"table": "table5"}, "holds no table5 results"),
        ({"text": "{oops"}, "cannot read it"),
    ],
)
def test_a_results_file_that_does_not_fit_is_refused(tmp_path, change, message):
    carried = _first_reproduction(tmp_path)
    if "text" in change:
        carried.write_text(change["text"])
    table = get_table(change.get("table", "label_efficiency_mn_to_us"))
    with pytest.raises(ConfigError, match=message):
        carried_cells(carried, table, change.get("profile", "quick"))


def test_a_curve_equal_to_an_earlier_one_is_drawn_dashed_and_named(tmp_path, monkeypatch):
    """A control that is the very run of a baseline (same stage, same seed) must stay visible."""
    from cetl.report import render

    axes = []
    monkeypatch.setattr(render, "_finish", lambda figure, axis, path: axes.append(axis))
    same = [(1.0, 57.5, 4.9), (10.0, 81.6, 1.5)]
    drawn = render.plot_band_curves(
        {"target_only": same, "fine_tune": [(1.0, 81.0, 2.1), (10.0, 89.5, 0.8)], "baseline": list(same)},
        tmp_path / "curve.png",
        title="a title " * 30,
        xlabel="labels per class",
        ylabel="accuracy",
    )
    (axis,) = axes
    assert drawn
    labels = {line.get_label(): line.get_linestyle() for line in axis.get_lines()}
    assert labels == {"target_only": "-", "fine_tune": "-", "baseline (= target_only)": "--"}
    assert [tick.get_text() for tick in axis.get_xticklabels()] == ["1", "10"]
    assert "\n" in axis.get_title()  # a long title wraps instead of running off the figure
