"""`cetl compare`: pairing, the exact table text, resumption, and the new experiments."""

from __future__ import annotations

import json

import pytest

from cetl.cli import main
from cetl.errors import ConfigError
from cetl.experiments import resolve
from cetl.summary import RunSummary
from cetl.workflows.compare import MethodRow, format_table, parse_methods, reference_method, summarise
from helpers import as_summary


def _summary(accuracy: float, *, selected_by: str = "source_val") -> RunSummary:
    return as_summary(
        {
            "target_test_accuracy": accuracy,
            "selected_by": selected_by,
            "classify_steps": 10,
            "wall_seconds": 4.0,
        }
    )


def test_differences_are_paired_seed_by_seed_with_the_reference():
    summaries = {
        "source_only": {0: _summary(0.80), 1: _summary(0.70)},
        "dann": {0: _summary(0.85), 1: _summary(0.72)},
    }
    rows = {row.method: row for row in summarise("digits_mn_to_us", summaries, [0, 1])}
    assert rows["dann"].differences == pytest.approx((5.0, 2.0))
    assert rows["source_only"].differences == ()
    assert rows["dann"].mean == pytest.approx(78.5)
    assert rows["dann"].std == pytest.approx(((6.5**2) * 2) ** 0.5)
    assert rows["dann"].paper == 91.11


def test_unfinished_seeds_are_left_out_of_a_row():
    summaries = {"source_only": {0: _summary(0.8)}, "dann": {}}
    rows = summarise("digits_mn_to_us", summaries, [0, 1])
    assert [row.method for row in rows] == ["source_only"]
    assert rows[0].seeds == (0,)


def test_table_text_is_exact():
    rows = [
        MethodRow("source_only", (0, 1), (80.0, 70.0), (), "source_val", 12, 3.2, 85.55),
        MethodRow("dann", (0, 1), (85.0, 72.0), (5.0, 2.0), "source_val", 12, 9.6, 91.11),
        MethodRow("target_only", (0,), (95.0,), (15.0,), "last", 12, 2.0, None),
    ]
    assert format_table(rows, reference="source_only") == (
        "| method | target test acc. (%) | per seed | paired Δ vs source_only | paper (%) "
        "| selected by | classify steps | wall s |\n"
        "|---|---:|---|---|---:|---|---:|---:|\n"
        "| source_only | 75.00 ± 7.07 | 80.00, 70.00 | reference | 85.55 | source_val | 12 | 3 |\n"
        "| dann | 78.50 ± 9.19 | 85.00, 72.00 | +3.50 (+5.00, +2.00) | 91.11 | source_val | 12 | 10 |\n"
        "| target_only* | 95.00 ± 0.00 | 95.00 | +15.00 (+15.00) | – | last | 12 | 2 |\n"
        "\n"
        "\\* reads target labels: an oracle upper bound, not a domain-adaptation result.\n"
    )
    # In transfer learning and distillation target_only is the baseline, not an oracle.
    plain = format_table(rows, reference="source_only", oracle=False)
    assert "| target_only | 95.00" in plain and "oracle" not in plain


def test_reference_is_source_only_when_compared_else_the_first_method():
    assert reference_method(["cetl", "source_only"]) == "source_only"
    assert reference_method(["target_only", "cetl"]) == "target_only"


def test_method_list_is_checked_before_anything_runs():
    assert parse_methods(" source_only, cetl ") == ["source_only", "cetl"]
    with pytest.raises(ConfigError, match="did you mean 'source_only'"):
        parse_methods("source_onl,cetl")
    with pytest.raises(ConfigError, match="twice"):
        parse_methods("cetl,cetl")


@pytest.mark.needs_data
def test_compare_runs_cells_shares_s_and_resumes(tmp_path, capsys, data_root):
    out = tmp_path / "runs"
    argv = ["compare", "digits_mn_to_us", "--methods", "source_only,cetl", "--seeds", "2"]
    argv += ["--profile", "smoke", "--out", str(out), "--data-root", str(data_root.path)]
    assert main(argv) == 0
    folder = out / "digits_mn_to_us" / "smoke"
    table = json.loads((folder / "compare.json").read_text())
    rows = {row["method"]: row for row in table["rows"]}
    assert rows["cetl"]["seeds"] == [0, 1]
    s_accuracy = rows["source_only"]["target_test_accuracy"]
    cetl_accuracy = rows["cetl"]["target_test_accuracy"]
    assert rows["cetl"]["paired_difference"] == pytest.approx(
        [c - s for c, s in zip(cetl_accuracy, s_accuracy, strict=True)]
    )
    # S of each seed is that seed's source_only cell, not a second training elsewhere.
    summary = json.loads((folder / "cetl" / "seed1" / "summary.json").read_text())
    assert summary["source_run"] == str(folder / "source_only" / "seed1")
    assert "| cetl |" in (folder / "compare.md").read_text()
    capsys.readouterr()
    assert main(argv) == 0  # everything finished: reused, nothing retrained
    assert capsys.readouterr().err.count("(reused)") == 4
    # A finished cell is never silently reused for a different config.
    assert main([*argv, "--set", "train.rounds=3"]) == 1
    assert "was trained with another config (changed: train.rounds (2 → 3))" in capsys.readouterr().err
    # A runs folder moved elsewhere is reused from its new place (S found by its place in it).
    moved = tmp_path / "elsewhere" / "runs"
    moved.parent.mkdir()
    out.rename(moved)
    assert main([a if a != str(out) else str(moved) for a in argv]) == 0
    assert capsys.readouterr().err.count("(reused)") == 4


def test_compare_rejects_an_unknown_method_with_exit_2(capsys):
    assert main(["compare", "digits_mn_to_us", "--methods", "source_only,cetll"]) == 2
    assert "did you mean 'cetl'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("experiment", "source", "target", "protocol", "network"),
    [
        ("digits_sv_to_mn", "svhn", "mnist", "drcn", "lenet"),
        ("digits_mn_to_us_p", "mnist", "usps", "adda", "lenet"),
        ("natural_st_to_ci", "stl10", "cifar10", "stl_cifar", "ci_cnn"),
    ],
)
def test_table5_experiments_resolve(experiment, source, target, protocol, network):
    config = resolve(experiment, profile="quick")
    assert (config.data.source, config.data.target, config.data.protocol) == (source, target, protocol)
    assert config.network.name == network


@pytest.mark.needs_data
def test_missing_svhn_fails_clearly_naming_the_file(tmp_path, capsys, data_root):
    argv = ["train", "digits_sv_to_mn", "--profile", "smoke", "--data-root", str(data_root.path)]
    code = main([*argv, "--out", str(tmp_path / "run")])
    assert code == 1
    assert "train_32x32.mat" in capsys.readouterr().err


@pytest.mark.needs_data
def test_few_label_variant_adds_target_labels_to_the_source_data(tmp_path, data_root):
    from cetl.build import build_training_data

    config = resolve("digits_mn_to_us_10labels", profile="smoke")
    data, info = build_training_data(config.data, root=data_root, labelled_domain="source")
    assert info.sizes["target_labelled"] == 100
    plain, _ = build_training_data(
        resolve("digits_mn_to_us", profile="smoke").data,
        root=data_root,
        labelled_domain="source",
    )
    assert len(data.labelled) == len(plain.labelled) + 100
    assert len(data.labelled_val) == len(plain.labelled_val)  # validation stays source-only


@pytest.mark.needs_data
def test_only_rank_0_writes_the_tables(tmp_path, monkeypatch, data_root):
    import types

    from cetl.workflows import compare as compare_module

    out = tmp_path / "runs"
    args = dict(profile="smoke", out=out, data_root=data_root, log=lambda line: None)
    folder = compare_module.compare("digits_mn_to_us", ["source_only"], [0], **args)
    (folder / "compare.md").unlink()
    monkeypatch.setattr(compare_module.distributed, "current", lambda: types.SimpleNamespace(is_main=False))
    compare_module.compare("digits_mn_to_us", ["source_only"], [0], only_finished=True, **args)
    assert not (folder / "compare.md").exists()
