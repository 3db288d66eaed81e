"""The demo's offline path: bundled sample, both methods, report, resumable."""

from cetl.demo import DEMO_METHODS, demo_data_root, run_demo


def test_demo_defaults_to_the_bundled_sample_without_a_data_root():
    assert demo_data_root(None).origin == "sample"


def test_demo_runs_offline_on_the_sample_and_writes_a_report(tmp_path, capsys):
    report = run_demo(tmp_path, profile="smoke")
    text = report.read_text()
    for method in DEMO_METHODS:
        assert f"| {method}" in text
        assert (tmp_path / "runs" / method / "summary.json").is_file()
    assert "the small real digit sample bundled with cetl" in text
    assert (tmp_path / "curves.png").is_file()
    capsys.readouterr()
    run_demo(tmp_path, profile="smoke")  # a second call reuses the finished runs
    assert capsys.readouterr().out.count("already trained") == len(DEMO_METHODS)
