import json

import pytest

from cetl.cli import main
from cetl.experiments import EXPERIMENTS
from cetl.experiments.paper import TABLES, TEACHER, paper_accuracy
from cetl.methods import METHODS
from cetl.report.collect import Run, find_runs, match_cells
from cetl.report.render import comparison_table, format_percent, gfi_kept_series, mean_curve, write_report
from cetl.report.results import CellResult, TableResult
from cetl.report.tables import Header, write_table_report
from helpers import as_summary


def summary(method, accuracy, val, selected_by="source_val"):
    return as_summary(
        {
            "experiment": "digits_mn_to_us",
            "method": method,
            "profile": "quick",
            "seed": 0,
            "target_test_accuracy": accuracy,
            "val_accuracy": val,
            "selected_by": selected_by,
            "selected_round": 6,
            "rounds": 8,
            "wall_seconds": 81.4,
            "network": "lenet",
            "protocol": "drcn",
            "data_root": "sample",
            "data_sizes": {"labelled_train": 10},
            "device": "cpu",
            "cetl_version": "0.1.0",
            "history": [
                {"round": r, "val_accuracy": val, "target_test_accuracy": accuracy} for r in range(3)
            ],
        }
    )


def test_format_percent():
    assert format_percent(0.81234) == "81.23"
    assert format_percent(None) == "–"


def test_comparison_table_exact_text():
    table = comparison_table(
        [summary("source_only", 0.7354, 0.9775), summary("target_only", 0.95, 0.96, "last")]
    )
    assert table == (
        "| method | target test acc. (%) | paper (%) | source val acc. (%) | selected by "
        "| rounds | time (s) |\n"
        "|---|---:|---:|---:|---|---:|---:|\n"
        "| source_only | 73.54 | 85.55 | 97.75 | source_val | 7/8 | 81 |\n"
        "| target_only* | 95.00 | – | – | last | 7/8 | 81 |\n"
        "\n"
        "\\* target_only: oracle: trained on target labels, which domain adaptation may not read.\n"
    )


def test_write_report_makes_markdown_and_a_png(tmp_path):
    path = write_report([summary("source_only", 0.7, 0.9)], tmp_path, title="T", intro="I")
    text = path.read_text()
    assert text.startswith("# T\n\nI\n\n| method |") and "![accuracy per round](curves.png)" in text
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- paper tables as data, and the table report (cetl reproduce / cetl report) ---------------


def test_every_table_cell_names_a_registered_experiment_and_method():
    for table in TABLES.values():
        for cell in table.cells:
            for experiment in (cell.experiment, *cell.also):
                EXPERIMENTS.get(experiment)
            assert cell.method == TEACHER or cell.method in METHODS.names(), cell.id
            assert cell.row in table.rows and cell.column in table.columns
        assert len({(c.row, c.column) for c in table.cells}) == len(table.cells)


def test_tables_hold_the_papers_numbers():
    assert list(TABLES) == ["table2", "table3", "table23", "table4", "table5"]
    table5 = TABLES["table5"]
    assert len(table5.rows) == 10 and table5.columns[0] == "MN→US"  # 7 paper rows, DRCN bare, SHOT, oracle
    bare = table5.cell("DRCN, bare (without its authors' recipe)", "US→MN")
    assert (bare.folder, bare.sets, bare.paper) == ("drcn-bare", ("method.recipe=bare",), None)
    assert table5.cell("SHOT (source-free, not in the paper)", "MN→US").method == "shot"
    assert table5.cell("ADDA", "MN→SV") is None  # a dash in the paper: no cell
    assert table5.cell("WDA", "MN→SV").paper == 23.5
    assert table5.cell("Target only (oracle, not in the paper)", "US→MN").paper is None
    assert paper_accuracy("cetl", "digits_us_to_mn") == 90.89
    assert paper_accuracy("cetl_fi", "tl_alexnet_to_cifar10s") == 64.19  # Table 2
    assert paper_accuracy("target_only", "tl_googlenet_to_stl10") == 60.52  # Table 3 baseline
    assert paper_accuracy(TEACHER, "kd_cifar100") == 65.23  # Table 4
    assert paper_accuracy("target_only", "digits_mn_to_us") is None


def _run_summary(experiment, method, seed, accuracy, **extra):
    summary = {
        "experiment": experiment,
        "method": method,
        "profile": "quick",
        "seed": seed,
        "network": "ci_cnn",
        "target_test_accuracy": accuracy,
        "selected_by": "last",
        "wall_seconds": 30.0,
        "data_root": "/data (from $CETL_DATA_ROOT)",
        "data_variants": {"cifar10": "subset"},
        "device": "cpu",
        "oracle_target_test_accuracy": 0.99,  # never reported
        "history": [
            {"round": r, "val_accuracy": 0.5, "target_test_accuracy": accuracy - 0.01 * (1 - r)}
            for r in range(2)
        ],
    }
    return as_summary(summary | extra)


def _table4_result(tmp_path):
    cetl_dir = tmp_path / "cetl_seed0"
    cetl_dir.mkdir()
    stage = {"kind": "stage", "stage": "reconstruct_target", "gfi3_kept/fc6.linear.weight": 0.2}
    (cetl_dir / "metrics.jsonl").write_text(
        json.dumps(stage | {"round": 0}) + "\n" + json.dumps(stage | {"round": 1}) + "\n"
    )
    bound = [{"round": r, "bound_lhs": 0.5 - 0.1 * r, "bound_rhs": 2.0 - r} for r in range(2)]
    runs = {
        "kd_cifar10/teacher": [
            Run(None, _run_summary("kd_cifar10", "source_only", s, a, network="resnet26"))
            for s, a in ((0, 0.42), (1, 0.44))
        ],
        "kd_cifar10/target_only": [
            Run(None, _run_summary("kd_cifar10", "target_only", s, a)) for s, a in ((0, 0.40), (1, 0.41))
        ],
        "kd_cifar10/cetl": [
            Run(
                cetl_dir,
                _run_summary(
                    "kd_cifar10",
                    "cetl",
                    0,
                    0.43,
                    history=bound
                    + [
                        {"round": r, "val_accuracy": 0.5, "target_test_accuracy": 0.4 + 0.03 * r}
                        for r in range(2)
                    ],
                ),
            )
        ],
    }
    reasons = {
        "kd_cifar10/fitnets": "failed: seed 0: boom",
        "kd_cifar10/kd": "pending: not finished yet",
        "kd_cifar10/fsp": "pending: not finished yet",
    }
    missing = "not run: CIFAR-100 not found under /data; see `cetl data check`"
    table = TABLES["table4"]
    cells = tuple(
        CellResult(
            cell, tuple(runs.get(cell.id, ())), "" if cell.id in runs else reasons.get(cell.id, missing)
        )
        for cell in table.cells
    )
    return TableResult(table, cells)


EXPECTED_TABLE4_REPORT = """\
# Reproduction: Table 4 (`quick` profile)

- profile: `quick`; seeds: 0, 1
- data: /data (from $CETL_DATA_ROOT): cifar10 subset
- hardware: x86_64 CPU, 2 cores
- total time: 2m30s (training, summed over the cells' runs)
- elapsed: 5m00s
- command: `cetl reproduce table4 --profile quick --seeds 2`

Ours: mean ± std over seeds of the target test accuracy (%) of the model each run's selection \
rule chose, never by target labels. Paper: the CETL paper's number, from its own protocol and \
network (METHOD.md §8), so at a CPU profile it is context, not a target.

## Table 4: Comparison on knowledge distillation

| | CIFAR-10 paper | CIFAR-10 ours | CIFAR-100 paper | CIFAR-100 ours |
|---|---:|---:|---:|---:|
| Teacher | 91.86 | 43.00 ± 1.41 † | 65.23 | not run [1] |
| Student | 87.55 | 40.50 ± 0.71 † | 60.71 | not run [1] |
| FitNets | 88.57 | failed [2] | 61.28 | not run [1] |
| Soft-targets | 88.45 | pending [3] | 61.03 | not run [1] |
| FSP DNN | 88.70 | pending [3] | 63.33 | not run [1] |
| CETL | 89.11 | 43.00 ± 0.00 (n=1) † | 64.83 | not run [1] |

- [1] not run: CIFAR-100 not found under /data; see `cetl data check`
- [2] failed: seed 0: boom
- [3] pending: not finished yet
- † on a subset of the data (`cetl data check`): not comparable with the paper's full-data numbers

| cell | n | per seed (%) | selected by | data | wall s |
|---|---:|---|---|---|---:|
| kd_cifar10/teacher | 2 | 42.00, 44.00 | last | subset | 60 |
| kd_cifar10/target_only | 2 | 40.00, 41.00 | last | subset | 60 |
| kd_cifar10/cetl | 1 | 43.00 | last | subset | 30 |

## Learning curves

![table4, CIFAR-10: target test accuracy per round](curves_table4_cifar_10.png)

## Error bound (Eq. 14; the paper's Fig. 2)

![table4, CIFAR-10, seed 0: error bound (Eq. 14), normalised as in Fig. 2](bound_table4_cifar_10.png)

## GFI: kept fraction per layer

![table4, CIFAR-10, seed 0: GFI kept fraction per layer over rounds](gfi_table4_cifar_10.png)
"""


TABLE4_HEADER = Header(
    profile="quick",
    seeds=(0, 1),
    hardware="x86_64 CPU, 2 cores",
    command="cetl reproduce table4 --profile quick --seeds 2",
    extra=("- elapsed: 5m00s",),
)


def test_table_report_text_is_exact_and_results_json_has_every_cell(tmp_path):
    header = TABLE4_HEADER
    out = tmp_path / "report"
    path = write_table_report([_table4_result(tmp_path)], header, out)
    assert path.read_text() == EXPECTED_TABLE4_REPORT
    for name in ("curves_table4_cifar_10.png", "bound_table4_cifar_10.png", "gfi_table4_cifar_10.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    results = json.loads((out / "results.json").read_text())
    assert results["profile"] == "quick" and results["total_wall_seconds"] == 150.0
    cells = {cell["id"]: cell for cell in results["tables"][0]["cells"]}
    assert len(cells) == 12
    student = cells["kd_cifar10/target_only"]
    assert (student["paper"], student["n"], student["selected_by"], student["data"]) == (
        87.55,
        2,
        "last",
        "subset",
    )
    assert student["mean"] == pytest.approx(40.5) and student["std"] == pytest.approx(0.7071, abs=1e-4)
    assert student["profile"] == "quick" and student["wall_seconds"] == 60.0
    assert (
        cells["kd_cifar100/cetl"]["status"] == "not run"
        and "CIFAR-100" in cells["kd_cifar100/cetl"]["reason"]
    )
    assert cells["kd_cifar10/fitnets"]["status"] == "failed"
    # The oracle number is never reported; the per-round histories carry what the curves plot.
    assert "oracle" not in json.dumps(student) and "0.99" not in json.dumps(student["selection_histories"])


def test_mean_curve_averages_seeds_at_shared_rounds_and_gfi_series_are_per_layer():
    a = {"history": [{"round": 0, "target_test_accuracy": 0.5}, {"round": 1, "target_test_accuracy": 0.7}]}
    b = {"history": [{"round": 0, "target_test_accuracy": 0.6}]}
    rounds, values = mean_curve([as_summary(a), as_summary(b)])
    assert rounds == [1] and values == pytest.approx([55.0])
    records = [
        {
            "kind": "stage",
            "round": r,
            "gfi1_kept": 0.1,
            "gfi1_kept/fc.weight": 0.1 * r,
            "gfi1_kept/fc.bias": 1.0,
        }
        for r in range(3)
    ]
    assert gfi_kept_series(records) == {"gfi1": {"fc": ([1, 2, 3], [0.0, 0.1, 0.2])}}


def _write_run(folder, summary):
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(summary.to_json()))


def test_report_command_fills_paper_cells_from_a_folder_of_runs(tmp_path, capsys):
    runs = tmp_path / "runs"
    for seed, accuracy in ((0, 0.80), (1, 0.82)):
        summary = _run_summary("digits_mn_to_us", "source_only", seed, accuracy, network="lenet")
        _write_run(runs / "source_only" / f"seed{seed}", summary)
    other = _run_summary("digits_mn_to_us", "dann", 0, 0.9, network="drcn")  # another T2: not the cell
    _write_run(runs / "dann-drcn" / "seed0", other)
    _write_run(runs / "pretrain" / "seed0", _run_summary("pretrain_cicnn_mnist", "source_only", 0, 0.9))
    assert main(["report", str(runs), "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "report.md").read_text()
    assert "## Table 5: Comparison on domain adaptation" in text and "## Table 4" not in text
    assert "| Source | 85.55 | 81.00 ± 1.41 † |" in text
    assert "| ReverseGrad (DANN) | 91.11 | missing [1] |" in text
    assert "- [1] missing: no finished run in the folders given" in text
    found = find_runs([runs])
    assert list(match_cells(TABLES["table5"], found, profile="quick")) == ["digits_mn_to_us/source_only"]


def test_report_command_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere")]) == 1
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 1
    assert "holds no finished run" in capsys.readouterr().err
    runs = tmp_path / "runs"
    _write_run(runs / "a" / "seed0", _run_summary("digits_mn_to_us", "source_only", 0, 0.8, network="lenet"))
    _write_run(runs / "b" / "seed0", _run_summary("digits_mn_to_us", "source_only", 0, 0.7, network="lenet"))
    assert main(["report", str(runs), "--out", str(tmp_path / "out")]) == 1
    assert "two runs are cell digits_mn_to_us/source_only seed 0" in capsys.readouterr().err
    smoke = _run_summary("digits_mn_to_us", "dann", 0, 0.8, network="lenet", profile="smoke")
    _write_run(tmp_path / "mixed" / "smoke", smoke)
    _write_run(tmp_path / "mixed" / "quick", _run_summary("digits_mn_to_us", "dann", 0, 0.8, network="lenet"))
    assert main(["report", str(tmp_path / "mixed"), "--out", str(tmp_path / "out")]) == 2
    assert "mix profiles (quick, smoke)" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "mixed"), "--profile", "smoke", "--out", str(tmp_path / "o")]) == 0
    _write_run(tmp_path / "other" / "seed0", _run_summary("pretrain_cicnn_mnist", "source_only", 0, 0.9))
    assert main(["report", str(tmp_path / "other")]) == 1
    assert "is a cell of a paper table" in capsys.readouterr().err


def test_a_carried_cell_keeps_its_regret_row_and_learning_curve(tmp_path):
    """A later reproduction that carries a domain-adaptation cell (its run folders gone) must show
    the regret the measuring report showed, computed from the same per-round scores."""
    from cetl.report.carry import carried_cells
    from cetl.report.regret import regret_markdown

    table = TABLES["table5"]
    rounds = [(0.90, 0.70, -1.0, 0.4), (0.95, 0.75, -2.0, 0.3), (0.93, 0.80, -1.5, 0.2)]
    history = [
        {"kind": "eval", "round": r, "step": 10 * r, "val_accuracy": val, "target_test_accuracy": test}
        | {"unsupervised_im": im, "unsupervised_snd": snd, "balance/unrelated": 1.0}
        for r, (val, test, im, snd) in enumerate(rounds)
    ]
    runs = tuple(
        Run(
            None,
            _run_summary("digits_mn_to_us", "dann", seed, 0.75, setting="domain_adaptation", history=history),
        )
        for seed in (0, 1)
    )
    cells = tuple(
        CellResult(cell, runs, "")
        if cell.id == "digits_mn_to_us/dann"
        else CellResult(cell, (), "pending: x")
        for cell in table.cells
    )
    out = tmp_path / "first"
    write_table_report([TableResult(table, cells)], Header("quick", (0, 1), "cpu", "cetl first"), out)
    assert "| digits_mn_to_us/dann | 5.00 | 0.00* | 5.00 | 0.00 |" in (out / "report.md").read_text()

    carried, _ = carried_cells(out / "results.json", table, "quick")
    (carried_runs,) = carried.values()
    assert [run.summary.setting for run in carried_runs] == ["domain_adaptation"] * 2
    assert carried_runs[0].summary.history[1] == {
        "round": 1,
        "val_accuracy": 0.95,
        "target_test_accuracy": 0.75,
        "unsupervised_im": -2.0,
        "unsupervised_snd": 0.3,
    }  # what selection and the curves read, not every logged key
    before = regret_markdown([("dann", [run.summary for run in runs])])
    assert before and regret_markdown([("dann", [run.summary for run in carried_runs])]) == before
    second = tmp_path / "second"
    carried_result = tuple(
        CellResult(cell, carried.get(cell.id, ()), "" if cell.id in carried else "pending: x")
        for cell in table.cells
    )
    write_table_report([TableResult(table, carried_result)], Header("quick", (0, 1), "cpu", "cetl 2"), second)
    text = (second / "report.md").read_text()
    assert (
        "| digits_mn_to_us/dann | 5.00 | 0.00* | 5.00 | 0.00 |" in text and "75.00 ± 0.00 (carried)" in text
    )
    assert (second / "curves_table5_mn_us.png").stat().st_size > 0


def test_a_headed_table_names_itself_and_prints_its_notes_under_the_table(tmp_path):
    table = TABLES["table23"]
    cells = tuple(CellResult(cell, (), "pending: not finished yet") for cell in table.cells)
    header = Header("quick", (0,), "x86_64 CPU, 2 cores", "cetl reproduce table23")
    text = write_table_report([TableResult(table, cells)], header, tmp_path).read_text()
    assert text.startswith("# Reproduction: Tables 2–3, offline (`quick` profile)\n")
    assert "## Tables 2–3, offline: Transfer learning from an ImageNet network run forward only" in text
    assert "| CETL, random-weight S (control) | – | pending [1] | – | – | – | – |" in text
    assert "| CETL | 65.33 | pending [1] | – | pending [1] | – | pending [1] |" in text
    for note in table.notes:
        assert f"- {note}\n" in text
