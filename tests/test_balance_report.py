"""Reporting term balance (METHOD.md D10) and per-stage accuracy: `cetl compare` and `cetl report`.

Synthetic ``summary.json`` dicts and ``metrics.jsonl`` files in the engine's formats; runs
without the new keys (older runs, or the features switched off) must render exactly as before.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from cetl.experiments.paper import TABLES
from cetl.report.collect import Run, balance_records
from cetl.report.render import balance_series, stage_curve
from cetl.report.results import CellResult, TableResult
from cetl.report.tables import Header, write_table_report
from cetl.summary import RunSummary
from cetl.workflows.compare import _write, format_balance_table, format_table, summarise, summarise_balance
from helpers import as_summary
from test_report import EXPECTED_TABLE4_REPORT, TABLE4_HEADER, _run_summary, _table4_result

PNG = b"\x89PNG\r\n\x1a\n"
RECON = "reconstruct_target/decoder_and_target_net"


def _term(mean_ratio: float, max_ratio: float, norm: float = 0.5) -> dict:
    return {"mean_norm": norm, "mean_ratio": mean_ratio, "max_ratio": max_ratio, "measurements": 4}


def _inert(term: str, rounds: list[int], max_ratio: float) -> dict:
    stage, _, update = RECON.partition("/")
    return {"stage": stage, "update": update, "term": term, "rounds": rounds, "max_ratio": max_ratio}


def _stage_history(shift: float, stages=("reconstruct_target", "classify")) -> list[dict]:
    return [
        {
            "round": r,
            "stage": stage,
            "val_accuracy": 0.9 + 0.01 * position,
            "target_test_accuracy": 0.6 + 0.1 * r + 0.05 * position + shift,
        }
        for r in range(2)
        for position, stage in enumerate(stages)
    ]


# Seed 0 finds dwa1 inert (rounds 1 and 2) and measures a dwa2 that seed 1 does not have.
SEED0 = {
    "term_balance": {
        RECON: {"recon_target": _term(1.0, 1.0), "dwa1": _term(0.004, 0.006), "dwa2": _term(0.5, 0.7)},
        "classify/target_net": {"classify": _term(1.0, 1.0)},
    },
    "inert_terms": [_inert("dwa1", [0, 1], 0.006)],
    "stage_history": _stage_history(0.0),
}
SEED1 = {
    "term_balance": {
        RECON: {"recon_target": _term(1.0, 1.0), "dwa1": _term(0.02, 0.05)},
        "classify/target_net": {"classify": _term(1.0, 1.0)},
    },
    "inert_terms": [],
    "stage_history": _stage_history(0.02),
}
EMPTY = {"term_balance": {}, "inert_terms": [], "stage_history": []}
"""What a run with term balance and per-stage evaluation switched off writes."""


def _balance_records(rounds: int = 2) -> list[dict]:
    stage, _, update = RECON.partition("/")
    records = []
    for r in range(rounds):
        for step in (10, 20):
            records.append(
                {
                    "kind": "balance",
                    "round": r,
                    "stage": stage,
                    "update": update,
                    "step": 100 * r + step,
                    "grad_norm/recon_target": 0.5,
                    "grad_norm/dwa1": 0.002 * (r + 1),
                }
            )
        records.append(
            {"kind": "balance", "round": r, "stage": "classify", "update": "target_net", "step": 100 * r + 50}
            | {"grad_norm/classify": 0.3}
        )
    return records


def _write_metrics(folder, records) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    other = [{"kind": "stage", "round": 0, "stage": "classify", "mean_loss": 0.1}, {"step": 5, "loss": 1.0}]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*other, *records]))


# --- pure functions -------------------------------------------------------------------------


def test_balance_series_is_per_update_and_term_in_training_order(tmp_path):
    _write_metrics(tmp_path / "run", _balance_records())
    records = balance_records(Run(tmp_path / "run", as_summary({})))
    assert len(records) == 6 and all(r["kind"] == "balance" for r in records)
    series = balance_series(records)
    assert list(series) == [RECON, "classify/target_net"]
    assert series[RECON]["dwa1"] == ([10, 20, 110, 120], [0.002, 0.002, 0.004, 0.004])
    assert series["classify/target_net"] == {"classify": ([50, 150], [0.3, 0.3])}
    assert balance_records(Run(None, as_summary({}))) == []
    assert balance_records(Run(tmp_path / "none", as_summary({}))) == []


def test_stage_curve_places_stages_within_rounds_and_averages_seeds_sharing_the_layout():
    three = {"stage_history": _stage_history(0.5, stages=("a", "b", "c"))}  # another layout
    curve = stage_curve([as_summary(fields) for fields in (SEED0, SEED1, three, {"history": []})])
    assert curve is not None
    assert curve.x == (0.5, 1.0, 1.5, 2.0)
    assert curve.stages == ("reconstruct_target", "classify") * 2
    assert curve.target_test == pytest.approx((61.0, 66.0, 71.0, 76.0))
    assert curve.val == pytest.approx((90.0, 91.0, 90.0, 91.0))
    assert (curve.seeds, curve.left_out) == (2, 1)
    assert stage_curve([as_summary({"history": []}), as_summary(EMPTY)]) is None


# --- cetl compare -----------------------------------------------------------------------------


def _compare_summary(accuracy: float, seed: int, **extra) -> RunSummary:
    return as_summary(
        {
            "experiment": "digits_mn_to_us",
            "seed": seed,
            "target_test_accuracy": accuracy,
            "selected_by": "source_val",
            "classify_steps": 10,
            "wall_seconds": 4.0,
            "network": "lenet",
            "protocol": "drcn",
            "data_root": "sample",
            "data_variants": {"mnist": "full"},
            "device": "cpu",
            "setting": "domain_adaptation",
        }
        | extra
    )


EXPECTED_BALANCE_TABLE = """\
## Term balance

Gradient norm of each weighted loss term over the largest term of its update (METHOD.md D10), \
averaged over a run's measurements: mean and range over seeds. Inert: under 1% of the largest \
term for a whole stage.

| method | stage/update | term | mean ratio (%) | min–max over seeds (%) | inert |
|---|---|---|---:|---:|---|
| cetl | reconstruct_target/decoder_and_target_net | recon_target | 100 | 100–100 | – |
| cetl | reconstruct_target/decoder_and_target_net | dwa1 | 1.2 | 0.4–2 | 1 of 2 seeds |
| cetl | reconstruct_target/decoder_and_target_net | dwa2 | 50 (n=1) | 50–50 | – |
| cetl | classify/target_net | classify | 100 | 100–100 | – |
"""


def _summaries(cetl_extra: tuple[dict, dict], source_extra: dict | None = None) -> dict:
    return {
        "source_only": {s: _compare_summary(0.7, s, **(source_extra or {})) for s in (0, 1)},
        "cetl": {s: _compare_summary(0.8, s, **cetl_extra[s]) for s in (0, 1)},
    }


def test_balance_table_text_is_exact():
    summaries = _summaries((SEED0, SEED1))
    rows = summarise("digits_mn_to_us", summaries, [0, 1])
    term_rows = summarise_balance(rows, summaries)
    assert format_balance_table(term_rows) == EXPECTED_BALANCE_TABLE
    assert format_balance_table(summarise_balance(rows, _summaries((EMPTY, EMPTY)))) == ""


def test_compare_writes_the_balance_table_plots_and_json(tmp_path):
    folder = tmp_path / "runs" / "digits_mn_to_us" / "quick"
    _write_metrics(folder / "cetl" / "seed0", _balance_records())
    summaries = _summaries((SEED0, SEED1))
    _write(folder, "digits_mn_to_us", "quick", [0, 1], [], summaries, "source_only")
    table = format_table(summarise("digits_mn_to_us", summaries, [0, 1]), reference="source_only")
    assert (
        (folder / "compare.md")
        .read_text()
        .endswith(
            f"{table}\n{EXPECTED_BALANCE_TABLE}"
            "\n![cetl, seed 0: gradient norm per loss term](balance_cetl.png)\n"
            "\n## Accuracy after every stage\n"
            "\n![cetl: accuracy after every stage](stages_cetl.png)\n"
        )
    )
    for name in ("balance_cetl.png", "stages_cetl.png"):
        assert (folder / name).read_bytes()[:8] == PNG
    assert sorted(p.name for p in folder.glob("*.png")) == ["balance_cetl.png", "stages_cetl.png"]
    rows = {row["method"]: row for row in json.loads((folder / "compare.json").read_text())["rows"]}
    assert rows["cetl"]["term_balance"][RECON] == pytest.approx(
        {"recon_target": 1.0, "dwa1": 0.012, "dwa2": 0.5}
    )
    assert rows["cetl"]["term_balance"]["classify/target_net"] == {"classify": 1.0}
    assert rows["cetl"]["inert_terms"] == {f"{RECON}/dwa1": 1}
    assert (rows["source_only"]["term_balance"], rows["source_only"]["inert_terms"]) == ({}, {})


@pytest.mark.parametrize("extra", [{}, EMPTY], ids=["older runs", "features off"])
def test_compare_without_balance_or_stage_data_renders_as_before(tmp_path, extra):
    folder = tmp_path / "digits_mn_to_us" / "quick"
    folder.mkdir(parents=True)
    summaries = _summaries((extra, extra), extra)
    _write(folder, "digits_mn_to_us", "quick", [0, 1], [], summaries, "source_only")
    table = format_table(summarise("digits_mn_to_us", summaries, [0, 1]), reference="source_only")
    text = (folder / "compare.md").read_text()
    assert text.endswith(f"\n\n{table}") and text.count("## ") == 0
    assert not list(folder.glob("*.png"))


# --- cetl report ------------------------------------------------------------------------------


def _table5_result(tmp_path) -> TableResult:
    cetl_dir = tmp_path / "cetl_seed0"
    _write_metrics(cetl_dir, _balance_records())
    runs = {
        "digits_mn_to_us/cetl": (
            Run(cetl_dir, _run_summary("digits_mn_to_us", "cetl", 0, 0.8, network="lenet", **SEED0)),
            Run(None, _run_summary("digits_mn_to_us", "cetl", 1, 0.82, network="lenet", **SEED1)),
        ),
        "digits_mn_to_us/source_only": (
            Run(None, _run_summary("digits_mn_to_us", "source_only", 0, 0.7, network="lenet")),
        ),
    }
    table = TABLES["table5"]
    return TableResult(
        table,
        tuple(
            CellResult(cell, runs.get(cell.id, ()), "" if cell.id in runs else "pending: later")
            for cell in table.cells
        ),
    )


EXPECTED_INERT = """
Inert loss terms: under 1% of the largest term of their update for a whole stage (METHOD.md D10), \
so they barely moved the weights they were meant to.

- digits_mn_to_us/cetl, seed 0: `dwa1` of reconstruct_target/decoder_and_target_net, rounds 1, 2 \
(at most 0.6% of the largest term)

## Learning curves
"""

EXPECTED_PLOT_SECTIONS = """
## Term balance: gradient norm per loss term (METHOD.md D10)

![table5, MN→US, CETL, seed 0: gradient norm per loss term](balance_table5_mn_us_cetl.png)

## Accuracy after every stage

![table5, MN→US, CETL: accuracy after every stage](stages_table5_mn_us_cetl.png)
"""


def test_report_lists_inert_terms_and_draws_balance_and_stage_plots(tmp_path):
    out = tmp_path / "report"
    header = Header(profile="quick", seeds=(0, 1), hardware="cpu")
    text = write_table_report([_table5_result(tmp_path)], header, out).read_text()
    assert EXPECTED_INERT in text
    assert text.endswith(EXPECTED_PLOT_SECTIONS)
    for name in ("balance_table5_mn_us_cetl.png", "stages_table5_mn_us_cetl.png"):
        assert (out / name).read_bytes()[:8] == PNG
    # The source-only cell (an older run) gets neither plot.
    assert not list(out.glob("balance_*_source.png")) and not list(out.glob("stages_*_source.png"))


def test_report_of_runs_without_the_new_data_is_unchanged(tmp_path):
    result = _table4_result(tmp_path)
    result = TableResult(
        result.table,
        tuple(
            CellResult(
                c.cell, tuple(Run(r.path, dataclasses.replace(r.summary, **EMPTY)) for r in c.runs), c.reason
            )
            for c in result.cells
        ),
    )
    header = TABLE4_HEADER
    out = tmp_path / "report"
    assert write_table_report([result], header, out).read_text() == EXPECTED_TABLE4_REPORT
    assert not list(out.glob("balance_*")) and not list(out.glob("stages_*"))
