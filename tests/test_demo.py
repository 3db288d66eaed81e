"""The demo offline: bundled sample, S and three methods at 10 labels per class, report, reuse."""

import pytest

from cetl.errors import RunError
from cetl.workflows.demo import DEMO_TABLE, demo_data_root, run_demo
from cetl.workflows.reproduce import get_table


def test_demo_defaults_to_the_bundled_sample_without_a_data_root():
    assert demo_data_root(None).origin == "sample"


def test_demo_is_the_ten_labels_column_of_the_label_efficiency_study():
    table = get_table(DEMO_TABLE)
    assert table.columns == ("10",)
    assert [c.folder for c in table.cells] == ["teacher", "target_only", "fine_tune", "cetl"]
    assert {c.experiment for c in table.cells} == {"tl_mn_to_us_n10"}


def test_demo_runs_offline_on_the_sample_and_writes_a_report(tmp_path, capsys):
    report = run_demo(tmp_path, profile="smoke")
    text = report.read_text()
    for row in get_table(DEMO_TABLE).rows:
        assert f"| {row} | " in text
    assert "the small real digit sample bundled with cetl" in text
    assert "Paired difference from `fine_tune`" in text
    assert (tmp_path / "curve_label_efficiency_demo.png").is_file()
    for method in ("target_only", "fine_tune", "cetl"):
        assert (tmp_path / "runs" / "tl_mn_to_us_n10" / "smoke" / method / "seed0" / "summary.json").is_file()
    printed = capsys.readouterr().out
    assert "| cetl | " in printed and "report: " in printed
    run_demo(tmp_path, profile="smoke")  # a second call reuses the finished runs
    assert capsys.readouterr().out.count("(reused)") == 4


@pytest.mark.needs_data
def test_runs_trained_on_the_sample_are_not_reused_for_real_data(tmp_path, monkeypatch, data_root):
    with monkeypatch.context() as offline:
        offline.delenv("CETL_DATA_ROOT")
        run_demo(tmp_path, profile="smoke")  # the bundled sample
    with pytest.raises(RunError, match="was trained on the bundled sample, and this call reads"):
        run_demo(tmp_path, data_root=str(data_root.path), profile="smoke")
