"""``cetl.adapt`` and ``cetl adapt``: your own data (an ImageFolder) with a run-folder or ONNX source.

The target is real USPS digits from the bundled sample written as PNG files; S is a network
this project trains on them within the module (``target_only``, the smoke profile), used as a
run folder and as the ONNX file ``adapt`` exports. Every run uses the smoke profile, so the
module takes seconds and needs no CETL_DATA_ROOT.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cetl
from cetl.cli import main
from cetl.data.datasets import load_raw
from cetl.data.root import sample_root
from cetl.engine.checkpoint import load_checkpoint
from cetl.errors import ConfigError, RunError
from cetl.files import FILE_MODE
from cetl.run_folder import read_config
from cetl.workflows.adapt import Result, adapt_config, source_config, target_dataset

TRAIN_PER_CLASS, TEST_PER_CLASS = 12, 4
FAST = ("--set", "train.rounds=1")


def _write_digits(root: Path, split: str, per_class: int, source_split: str) -> None:
    raw = load_raw("usps", source_split, sample_root())
    for digit in range(10):
        for i in torch.nonzero(raw.labels == digit).squeeze(1)[:per_class].tolist():
            path = root / split / f"d{digit}" / f"{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(raw.images[i, 0].numpy()).save(path)


@pytest.fixture(scope="module")
def usps_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder of real USPS digits: 12 per class in train/, 4 in test/, 6 in unlabelled/."""
    root = tmp_path_factory.mktemp("usps_folder")
    _write_digits(root, "train", TRAIN_PER_CLASS, "train")
    _write_digits(root, "test", TEST_PER_CLASS, "test")
    raw = load_raw("usps", "test", sample_root())
    for i in range(6):
        (root / "unlabelled").mkdir(exist_ok=True)
        Image.fromarray(raw.images[-1 - i, 0].numpy()).save(root / "unlabelled" / f"u{i}.png")
    return root


@pytest.fixture(scope="module")
def source_run(usps_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Result:
    """A project network trained by ``cetl.adapt`` itself (no source needed for target_only)."""
    out = tmp_path_factory.mktemp("source") / "run"
    return cetl.adapt(None, usps_folder, method="target_only", profile="smoke", out=out)


def test_the_package_exports_the_function_behind_the_cli():
    from cetl.workflows import adapt as workflow

    assert cetl.adapt is workflow.adapt and cetl.Result is workflow.Result


def test_target_only_run_writes_summary_and_both_target_net_files(source_run: Result):
    run = source_run.run_dir
    summary = json.loads((run / "summary.json").read_text())
    assert summary == source_run.metrics.to_json()
    assert summary["target_net_files"] == ["target_net.pt", "target_net.onnx"]
    for name in ("target_net.onnx", "target_net.pt", "summary.json"):  # one file mode for every output
        assert (run / name).stat().st_mode & 0o777 == FILE_MODE
    assert summary["data_sizes"]["target_test"] == 10 * TEST_PER_CLASS
    assert summary["data_root"].startswith("not read: the run's data is the user's own")
    assert summary["target_dataset"] == f"imagefolder:{source_run.config.data.target.partition(':')[2]}"
    # The ImageFolder's unlabelled/ images join its training images in the unlabelled stream.
    assert summary["data_sizes"]["target_unlabelled"] == 10 * TRAIN_PER_CLASS + 6
    assert 0.0 <= source_run.accuracy <= 1.0
    # The state dict is the selected T2's, loadable with weights_only; the ONNX file computes the same.
    state = load_checkpoint(run / "target_net.pt")
    assert all(torch.equal(state[k], v) for k, v in source_run.target_net.state_dict().items())
    import onnxruntime

    x = torch.rand(3, 1, 32, 32)
    session = onnxruntime.InferenceSession(str(run / "target_net.onnx"))
    onnx_logits, _coupling = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(onnx_logits, source_run.target_net(x).numpy(), atol=1e-4)
    # config.yaml is the resolved config: reading it back gives the same config.
    assert read_config(run) == source_run.config
    assert source_run.config.data.target == f"imagefolder:{source_run.config.data.target.partition(':')[2]}"


def test_run_folder_source_with_few_labels_and_extra_unlabelled_images(
    usps_folder: Path, source_run: Result, tmp_path: Path
):
    extra = tmp_path / "more" / "nested"
    extra.mkdir(parents=True)
    for i in range(5):
        Image.fromarray(np.full((20, 20), 40 * i, dtype=np.uint8)).save(extra / f"{i}.png")
    result = cetl.adapt(
        source_run.run_dir,
        usps_folder,
        unlabelled_data=tmp_path / "more",
        method="cetl_e",
        profile="smoke",
        labels_per_class=3,
        out=tmp_path / "run",
        train={"rounds": 1},
    )
    config = result.config
    assert config.source.kind == "run" and config.source.path == str(source_run.run_dir.resolve())
    assert config.data.protocol == "drcn" and config.network.name == "lenet"
    assert config.data.target_labels_per_class == 3 and config.train.rounds == 1
    sizes = result.metrics.data_sizes
    assert sizes["target_labelled"] == 30 and sizes["labelled_train"] + sizes["labelled_val"] == 30
    assert sizes["target_unlabelled"] == 10 * TRAIN_PER_CLASS + 6 + 5
    assert result.metrics.source.startswith("run ")


def test_onnx_source_through_the_cli(usps_folder: Path, source_run: Result, tmp_path: Path, capsys):
    onnx = source_run.run_dir / "target_net.onnx"
    out = tmp_path / "run"
    code = main(
        [
            *("adapt", "--source", str(onnx), "--target-data", str(usps_folder), "--profile", "smoke"),
            *("--method", "cetl", "--tap", "logits", "--labels-per-class", "2", "--out", str(out), *FAST),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "adapt cetl (smoke, seed 0, lenet): target test accuracy" in printed
    assert f"run folder: {out}" in printed
    config = read_config(out)
    assert config.source.kind == "onnx" and config.source.path == str(onnx.resolve())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["source"].startswith("onnx target_net.onnx sha256:")
    assert (out / "target_net.onnx").is_file() and (out / "target_net.pt").is_file()
    # A forward-only S: beside target_only, kd (S predicts the target's 10 classes) and fixmatch.
    assert set(summary["baselines"]) == {"target_only", "kd", "fixmatch"}
    assert "| kd |" in printed and "| fixmatch |" in printed


def test_the_cli_calls_the_api_function(monkeypatch, usps_folder: Path, tmp_path: Path):
    import sys

    seen = {}

    def spy(*args, **kwargs):
        seen.update(kwargs, args=args)
        raise ConfigError("stop here")

    monkeypatch.setattr(sys.modules["cetl.workflows.adapt"], "adapt", spy)
    code = main(["adapt", "--source", "x.onnx", "--target-data", str(usps_folder), "--set", "a.b=1"])
    assert code == 2
    assert seen["args"] == ("x.onnx", str(usps_folder)) and seen["sets"] == ["a.b=1"]
    assert seen["method"] == "cetl" and seen["target_net"] == "auto" and seen["profile"] == "quick"
    main(["adapt", "--source", "x.onnx", "--target-data", str(usps_folder), "--data-root", "/data"])
    assert seen["data_root"] == "/data"


def test_source_forms_resolve_to_source_kinds(source_run: Result, tmp_path: Path):
    assert source_config("resnet18:none", tap=None) == {"kind": "torchvision", "model": "resnet18:none"}
    assert source_config("torchvision:vgg16", tap="logits") == {
        "kind": "torchvision",
        "model": "vgg16",
        "tap": "logits",
    }
    assert source_config("timm:resnet18.a1_in1k", tap=None) == {"kind": "timm", "model": "resnet18.a1_in1k"}
    assert source_config(source_run.run_dir, tap=None)["kind"] == "run"
    assert source_config(None, tap=None) == {}


def test_auto_network_and_protocol_follow_the_images_colour(tmp_path: Path):
    for split, per_class in (("train", 3), ("test", 1)):
        for name in ("cat", "dog"):
            for i in range(per_class):
                path = tmp_path / "rgb" / split / name / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (24, 24), (30 * i, 100, 200)).save(path)
    config = adapt_config("resnet18:none", tmp_path / "rgb", profile="smoke")
    assert config.data.protocol == "cifar" and config.network.name == "ci_cnn"
    assert config.setting == "transfer" and config.experiment == "tl_any_to_own"
    assert adapt_config("resnet18:none", tmp_path / "rgb", target_net="lenet").network.name == "lenet"
    # Few labels: the classification stage runs enough epochs per round (quick: 30 steps of 32).
    few = adapt_config("resnet18:none", tmp_path / "rgb", labels_per_class=3)
    assert few.train.stage_epochs == 30
    chosen = adapt_config("resnet18:none", tmp_path / "rgb", sets=["train.stage_epochs=2"])
    assert chosen.train.stage_epochs == 2
    assert target_dataset(f"npz:{tmp_path}/x.npz") == f"npz:{tmp_path.resolve()}/x.npz"


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--source", "{tmp}/absent.onnx"], 2, r"the ONNX file does not exist; expected an \.onnx file"),
        (["--source", "resnet19"], 2, r"unknown model 'resnet19'; did you mean 'resnet18'\?"),
        (["--source", "{tmp}"], 1, r"is a folder but not a finished cetl run \(it has no summary\.json\)"),
        (["--source", "./nowhere/model.pt"], 2, r"--source \./nowhere/model\.pt does not exist"),
        (["--source", "resnet18:none", "--labels-per-class", "13"], 2, r"more than the 12 training images"),
        (["--source", "resnet18:none", "--target-net", "lenett"], 2, r"did you mean 'lenet'"),
        (["--source", "resnet18:none", "--unlabelled-data", "{tmp}/none"], 1, r"is not a folder"),
        (["--source", "resnet18:none", "--set", "train.roundz=1"], 2, r"unknown key 'train\.roundz'"),
        ([], 2, r"method cetl borrows from a source network: give --source"),
    ],
)
def test_bad_input_prints_one_message_and_exits_non_zero(usps_folder, tmp_path, capsys, argv, code, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    out = tmp_path / "run"
    base = ["adapt", "--target-data", str(usps_folder), "--profile", "smoke", "--out", str(out)]
    assert main([*base, *argv]) == code
    err = capsys.readouterr().err
    assert err.startswith("cetl: error: ") and "Traceback" not in err
    assert re.search(message, err), err
    assert not out.exists()  # nothing half-made


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda tmp: tmp / "absent", r"--target-data .*absent does not exist; expected an ImageFolder"),
        (lambda tmp: (tmp / "flat").mkdir() or tmp / "flat", r"has no train/ folder; expected PATH/train"),
        (lambda tmp: (tmp / "x.txt").write_text("text") and tmp / "x.txt", r"is not an \.npz file"),
    ],
)
def test_bad_target_data_is_named(tmp_path, capsys, make, message):
    target = make(tmp_path)
    assert main(["adapt", "--source", "resnet18:none", "--target-data", str(target)]) == 1
    assert re.search(message, capsys.readouterr().err)


def test_a_target_without_test_split_reports_validation_only(tmp_path: Path, capsys):
    _write_digits(tmp_path / "d", "train", TRAIN_PER_CLASS, "train")
    argv = ["adapt", "--target-data", str(tmp_path / "d"), "--method", "target_only", "--profile", "smoke"]
    assert main([*argv, "--out", str(tmp_path / "run"), "--baselines", "none", *FAST]) == 0
    printed = capsys.readouterr()
    assert "validation accuracy" in printed.out and "(the data has no test split)" in printed.out
    assert "has no test split: target test accuracy is not measured (null)" in printed.err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["target_test_accuracy"] is None and summary["val_accuracy"] is not None
    assert summary["oracle_target_test_accuracy"] is None  # no test labels: no oracle either


def test_run_folder_source_must_be_finished(tmp_path: Path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "config.yaml").write_text("experiment: tl_any_to_own\n")
    with pytest.raises(RunError, match=r"no summary\.json"):
        source_config(tmp_path / "half", tap=None)


def test_own_val_split_and_extra_images_reach_the_training_data(tmp_path: Path):
    """val/ is the validation set (no hold-out from train/); unlabelled images of any size join."""
    from cetl.build import build_training_data, labelled_domain
    from cetl.data.root import resolve_data_root

    for split, count in (("train", 6), ("val", 2), ("test", 2)):
        for name in ("a", "b", "c"):
            for i in range(count):
                path = tmp_path / "data" / split / name / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((16, 16), 20 * i, dtype=np.uint8)).save(path)
    (tmp_path / "extra").mkdir()
    for i in range(4):
        Image.new("RGB", (40, 40), (i, 2 * i, 3 * i)).save(tmp_path / "extra" / f"{i}.jpg")
    config = adapt_config(None, tmp_path / "data", unlabelled_data=tmp_path / "extra", method="target_only")
    data, info = build_training_data(
        config.data, root=resolve_data_root(None), labelled_domain=labelled_domain(config)
    )
    assert info.sizes["labelled_train"] == 18 and info.sizes["labelled_val"] == 6
    assert info.sizes["target_unlabelled"] == 18 + 4 and info.sizes["target_test"] == 6
    assert data.target.shape[1:] == (1, 32, 32)  # colour extras converted to the grey protocol
    few = adapt_config(None, tmp_path / "data", method="target_only", labels_per_class=2)
    data, info = build_training_data(few.data, root=resolve_data_root(None), labelled_domain="target")
    assert info.sizes["labelled_train"] == 6 and info.sizes["labelled_val"] == 6


def test_npz_target_data(tmp_path: Path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(20, 16, 16), dtype=np.uint8)
    y = np.arange(20) % 2
    np.savez(tmp_path / "mine.npz", x_train=x, y_train=y, x_test=x[:4], y_test=y[:4])
    config = adapt_config("resnet18:none", tmp_path / "mine.npz", profile="smoke")
    assert config.data.target == f"npz:{(tmp_path / 'mine.npz').resolve()}"
    assert config.data.protocol == "drcn" and config.network.name == "lenet"


def test_the_same_data_at_another_path_draws_the_same_labels(usps_folder: Path, tmp_path: Path):
    """Few labels and the validation split are drawn by the data's name, not its location."""
    import shutil

    from cetl.build import build_training_data

    copy = tmp_path / "elsewhere" / usps_folder.name
    shutil.copytree(usps_folder, copy)
    drawn = []
    for folder in (usps_folder, copy):
        config = adapt_config(None, folder, method="target_only", labels_per_class=3)
        data, _ = build_training_data(config.data, root=sample_root(), labelled_domain="target")
        drawn.append((data.labelled.x, data.labelled_val.x))
    assert torch.equal(drawn[0][0], drawn[1][0]) and torch.equal(drawn[0][1], drawn[1][1])


def test_an_interrupted_adapt_says_how_to_resume(monkeypatch, usps_folder: Path, capsys):
    import sys

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sys.modules["cetl.workflows.adapt"], "adapt", interrupted)
    assert main(["adapt", "--source", "resnet18:none", "--target-data", str(usps_folder)]) == 130
    assert "run the same 'cetl adapt' command with --resume" in capsys.readouterr().err


def test_adapt_trains_baselines_beside_its_run_and_reuses_them(
    usps_folder: Path, source_run: Result, tmp_path: Path, capsys
):
    common = ["--source", str(source_run.run_dir), "--target-data", str(usps_folder), "--profile", "smoke"]
    common += ["--labels-per-class", "2", "--baselines", "target_only,fine_tune", *FAST]
    assert main(["adapt", *common, "--method", "cetl_e", "--out", str(tmp_path / "first")]) == 0
    printed = capsys.readouterr().out
    assert "| cetl_e (this run) |" in printed and "| target_only |" in printed and "| fine_tune |" in printed
    assert "training baseline fine_tune" in printed
    assert "validation holds 2 images, so its accuracy moves by 50.0 points per image" in printed
    summary = json.loads((tmp_path / "first" / "summary.json").read_text())
    baselines = summary["baselines"]
    assert set(baselines) == {"target_only", "fine_tune"}
    expected = 100 * (summary["target_test_accuracy"] - baselines["target_only"]["target_test_accuracy"])
    assert baselines["target_only"]["difference"] == pytest.approx(expected)
    assert (tmp_path / "baselines" / "fine_tune" / "summary.json").is_file()
    # Another method on the same labels and seed reuses both baselines.
    assert main(["adapt", *common, "--method", "target_only", "--out", str(tmp_path / "second")]) == 0
    printed = capsys.readouterr().out
    assert "training baseline" not in printed and "| fine_tune |" in printed
    assert (
        main(["adapt", *common[: -len(FAST)], "--baselines", "fine_tun", "--out", str(tmp_path / "x")]) == 2
    )
    assert "did you mean 'fine_tune'" in capsys.readouterr().err


def test_a_frozen_source_is_never_trained(usps_folder: Path, source_run: Result, tmp_path: Path, capsys):
    common = ["--source", str(source_run.run_dir), "--target-data", str(usps_folder), "--profile", "smoke"]
    code = main(["adapt", *common, "--frozen", "--method", "fine_tune", "--out", str(tmp_path / "x"), *FAST])
    assert code == 2
    assert "--method fine_tune trains S, but S may only be run forward here" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
