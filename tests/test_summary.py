"""`summary.json` as a typed, versioned record: round trip, old files, newer files, bad files."""

from __future__ import annotations

import dataclasses
import json

import pytest

from cetl.errors import RunError
from cetl.run_folder import read_summary
from cetl.summary import SUMMARY_VERSION, RunSummary, read_summary_file, write_summary
from helpers import as_summary


def test_write_then_read_gives_the_same_record_with_its_version(tmp_path):
    summary = as_summary(
        {"history": [{"round": 0, "target_test_accuracy": 0.7}], "data_sizes": {"target_test": 9}}
    )
    write_summary(tmp_path / "summary.json", summary)
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["summary_version"] == SUMMARY_VERSION and "extra" not in on_disk
    assert read_summary(tmp_path) == summary
    assert read_summary(tmp_path / "unfinished") is None


def test_a_summary_from_before_the_version_reads_and_keeps_keys_it_does_not_know(tmp_path):
    old = {
        "experiment": "digits_mn_to_us",
        "method": "dann",
        "profile": "quick",
        "seed": 2,
        "target_test_accuracy": 0.85,
        "selected_by": "source_val",
        "wall_seconds": 12.5,
        "term_balance": None,  # older runs wrote null where there was nothing to record
        "a_key_from_elsewhere": [1, 2],
    }
    (tmp_path / "summary.json").write_text(json.dumps(old))
    summary = read_summary_file(tmp_path / "summary.json")
    assert (summary.method, summary.seed, summary.term_balance) == ("dann", 2, {})
    assert summary.target_test_percent == pytest.approx(85.0)
    assert summary.extra == {"a_key_from_elsewhere": [1, 2]}
    rewritten = dataclasses.replace(summary, target_net_files=["target_net.pt"])
    write_summary(tmp_path / "again.json", rewritten)
    assert json.loads((tmp_path / "again.json").read_text())["a_key_from_elsewhere"] == [1, 2]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"summary_version": 99, "method": "cetl"}', "newer than this cetl reads"),
        ('{"method": "cetl", "seed": 0}', "lacks experiment, profile, selected_by, target_test_accuracy"),
        ("[1, 2]", "a JSON object was expected"),
        ("{not json", "cannot read the run summary"),
    ],
)
def test_a_file_that_is_not_a_summary_this_cetl_reads_gets_a_clear_error(tmp_path, content, message):
    (tmp_path / "summary.json").write_text(content)
    with pytest.raises(RunError, match=message):
        read_summary(tmp_path)


def test_a_run_without_a_test_split_has_no_percent_to_tabulate():
    summary = as_summary({"target_test_accuracy": None, "val_accuracy": 0.6})
    with pytest.raises(RunError, match="no target test accuracy"):
        _ = summary.target_test_percent
    assert isinstance(summary, RunSummary)
