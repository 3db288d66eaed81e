"""The command-line contract, in-process through cli.main plus one real subprocess."""

import json
import subprocess
import sys
import typing

import pytest
import yaml

from cetl.cli import main
from cetl.config import SourceConfig


def test_list_prints_each_registry(capsys):
    assert main(["list", "methods"]) == 0
    assert {"source_only", "target_only", "baseline", "cetl_e"} <= set(capsys.readouterr().out.split())
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for what in ("experiments:", "methods:", "networks:", "datasets:", "sources:", "tables:"):
        assert what in out
    assert main(["list", "experiments"]) == 0
    described = capsys.readouterr().out
    assert any(
        line.startswith("digits_mn_to_us ") and "MNIST (labelled) → USPS" in line
        for line in described.splitlines()
    )
    assert all(len(line.split(maxsplit=1)) == 2 for line in described.splitlines())  # every one described
    assert main(["list", "sources"]) == 0
    listed = {line.split()[0] for line in capsys.readouterr().out.splitlines() if line.strip()}
    kinds = typing.get_args(typing.get_type_hints(SourceConfig)["kind"])
    assert "timm" in kinds and set(kinds) <= listed  # every source.kind a user can set is listed


def test_show_config_prints_loadable_resolved_yaml(capsys):
    assert main(["show-config", "digits_us_to_mn", "--method", "target_only", "--profile", "smoke"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["experiment"] == "digits_us_to_mn" and shown["method"] == {"name": "target_only"}
    assert shown["profile"] == "smoke" and shown["data"]["source"] == "usps"


def test_config_errors_exit_2_with_one_line_and_no_traceback(capsys):
    assert main(["train", "digits_mn_to_us", "--set", "train.rouds=2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cetl: error: unknown key 'train.rouds'; did you mean 'rounds'?")
    assert "Traceback" not in err
    assert main(["show-config", "digits_mn_to_uss"]) == 2
    assert "did you mean 'digits_mn_to_us'" in capsys.readouterr().err


def test_argparse_rejects_unknown_list_kind():
    with pytest.raises(SystemExit) as error:
        main(["list", "gizmos"])
    assert error.value.code == 2


def test_data_check_names_an_absent_root(capsys, tmp_path):
    assert main(["data", "check", "--root", str(tmp_path / "nope"), "mnist"]) == 1
    assert str(tmp_path / "nope") in capsys.readouterr().err


def test_data_check_lists_expected_files_for_missing_datasets(capsys, tmp_path):
    assert main(["data", "check", "--root", str(tmp_path), "usps"]) == 1
    out = capsys.readouterr().out
    assert "usps       MISSING" in out and str(tmp_path / "USPS/usps.bz2") in out


@pytest.mark.needs_data
def test_data_check_passes_on_the_real_root(capsys, data_root):
    assert main(["data", "check", "--root", str(data_root.path), "mnist", "usps"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[3].split() == ["mnist", "ok", "60000", "10000"]
    assert out.splitlines()[4].split() == ["usps", "ok", "7291", "2007"]


@pytest.mark.needs_data
def test_smoke_train_eval_predict_export_on_real_mnist_to_usps(capsys, data_root, tmp_path):
    run_dir = tmp_path / "run"
    args = ["train", "digits_mn_to_us", "--profile", "smoke", "--data-root", str(data_root.path)]
    assert main([*args, "--out", str(run_dir)]) == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert {
        "experiment",
        "method",
        "profile",
        "setting",
        "source_dataset",
        "target_dataset",
        "seed",
        "target_test_accuracy",
        "selected_by",
        "wall_seconds",
        "device",
        "world_size",
        "cetl_version",
    } <= set(summary)
    assert summary["source_dataset"] == "mnist" and summary["target_dataset"] == "usps"
    assert summary["selected_by"] == "source_val" and 0.0 <= summary["target_test_accuracy"] <= 1.0
    for name in ("config.yaml", "metrics.jsonl", "best.pt", "last.pt"):
        assert (run_dir / name).is_file()

    # A second train into the same folder is refused; --resume of a finished run re-reports it.
    assert main([*args, "--out", str(run_dir)]) == 1
    assert "already holds a run" in capsys.readouterr().err
    assert main([*args, "--out", str(run_dir), "--resume"]) == 0
    assert main([*args, "--out", str(run_dir), "--resume", "--seed", "5"]) == 1
    assert "changed: seed (0 → 5)" in capsys.readouterr().err

    # The saved config reruns the same experiment.
    rerun = tmp_path / "rerun"
    assert (
        main(["train", str(run_dir / "config.yaml"), "--data-root", str(data_root.path), "--out", str(rerun)])
        == 0
    )
    assert json.loads((rerun / "summary.json").read_text())["history"] == summary["history"]

    capsys.readouterr()
    assert main(["eval", str(run_dir), "--data-root", str(data_root.path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["target_test_accuracy"] == pytest.approx(summary["target_test_accuracy"])

    from PIL import Image

    from cetl.data.datasets import load_raw

    usps = load_raw("usps", "test", data_root)
    image_paths = []
    for index in range(3):
        path = tmp_path / f"digit{index}.png"
        Image.fromarray(usps.images[index, 0].numpy()).save(path)
        image_paths.append(str(path))
    assert main(["predict", str(run_dir), *image_paths]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and all(0 <= int(line.split("\t")[1]) <= 9 for line in lines)
    assert main(["predict", str(run_dir), str(tmp_path / "absent.png")]) == 1
    (tmp_path / "not_an_image.png").write_text("hello")
    assert main(["predict", str(run_dir), str(tmp_path / "not_an_image.png")]) == 1
    assert "could not read" in capsys.readouterr().err

    assert main(["export", str(run_dir), "--format", "pt"]) == 0
    assert (run_dir / "model.pt2").is_file()


@pytest.mark.needs_data
def test_onnx_export_matches_torch(data_root, tmp_path):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    import torch

    from cetl.workflows.serve import export_run, load_target_net

    run_dir = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "digits_us_to_mn",
                "--profile",
                "smoke",
                "--set",
                "data.test_limit=64",
                "--data-root",
                str(data_root.path),
                "--out",
                str(run_dir),
            ]
        )
        == 0
    )
    path = export_run(run_dir, fmt="onnx")
    _, net, _ = load_target_net(run_dir)
    images = torch.rand(5, 1, 32, 32)
    session = ort.InferenceSession(str(path))
    assert [o.name for o in session.get_outputs()] == ["logits", "coupling"]  # S at its coupling tap
    logits, _ = session.run(None, {session.get_inputs()[0].name: images.numpy()})
    torch.testing.assert_close(torch.from_numpy(logits), net(images), atol=1e-4, rtol=1e-4)


def test_eval_of_a_folder_that_is_not_a_run_is_a_clear_error(capsys, tmp_path):
    assert main(["eval", str(tmp_path)]) == 1
    assert "is not a cetl run folder" in capsys.readouterr().err


def test_python_dash_m_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "cetl", "list", "experiments", "--names"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    from cetl.experiments import EXPERIMENTS

    assert result.stdout.split() == EXPERIMENTS.names()
    assert {"digits_mn_to_us", "digits_us_to_mn"} <= set(result.stdout.split())
