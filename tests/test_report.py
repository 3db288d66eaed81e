from cetl.report.render import comparison_table, format_percent, write_report


def summary(method, accuracy, val, selected_by="source_val"):
    return {
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
        "history": [{"round": r, "val_accuracy": val, "target_test_accuracy": accuracy} for r in range(3)],
    }


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
