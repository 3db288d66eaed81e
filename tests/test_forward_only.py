"""A source run only forward: ONNX taps, kd on the unlabelled images, fixmatch, the engine's EMA
and per-stream batches (issue 36)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cetl.build import SOURCE_ONNX, exported_source, load_target_net
from cetl.cli import main
from cetl.data.root import DataRoot
from cetl.experiments import resolve
from cetl.source.onnx import source_from_onnx
from cetl.workflows.runs import train_run


@pytest.fixture(scope="module")
def _trained_source(tmp_path_factory):
    """Trains the source once per module (``data_root`` is per test, so the root is read here)."""
    cache: dict[str, Path] = {}

    def trained(data_root: DataRoot) -> Path:
        if "run" not in cache:
            run = tmp_path_factory.mktemp("s") / "source"
            config = resolve(
                "digits_mn_to_us", method="source_only", profile="smoke", sets=["network.name=lenet"]
            )
            train_run(config, run_dir=run, data_root=data_root)
            cache["run"] = run
        return cache["run"]

    return trained


@pytest.fixture
def digit_source(_trained_source, data_root):
    """A smoke ``source_only`` MNIST LeNet run folder: the S of ``tl_mn_to_us_*``."""
    return _trained_source(data_root)


@pytest.mark.needs_data
def test_an_onnx_export_carries_the_coupling_tap_and_any_tap_asked_for(digit_source, tmp_path, capsys):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    _, net, _ = load_target_net(digit_source)
    path = tmp_path / "s.onnx"
    assert (
        main(
            [
                "export",
                str(digit_source),
                "--format",
                "onnx",
                "--output",
                str(path),
                "--taps",
                "coupling,conv1",
            ]
        )
        == 0
    )
    images = torch.rand(6, 1, 32, 32)
    with torch.no_grad():
        expected = net.forward_taps(images, [net.coupling_tap, "conv1", "logits"])
    coupling = source_from_onnx(path, tap="coupling", temperature=4.0)
    assert coupling.model.outputs == ["logits", "coupling", "conv1"]
    torch.testing.assert_close(coupling(images), expected[net.coupling_tap], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(coupling.predict(images), expected["logits"], atol=1e-4, rtol=1e-4)
    conv1 = source_from_onnx(path, tap="conv1", temperature=4.0)
    torch.testing.assert_close(conv1(images), expected["conv1"], atol=1e-4, rtol=1e-4)
    assert main(["export", str(digit_source), "--format", "onnx", "--taps", "fc9"]) != 0
    assert "has no tap 'fc9'" in capsys.readouterr().err
    assert main(["export", str(digit_source), "--format", "pt", "--taps", "coupling"]) != 0
    assert "returns the logits only" in capsys.readouterr().err


@pytest.mark.needs_data
def test_cetl_from_the_onnx_export_of_s_trains_as_cetl_from_the_run(digit_source, tmp_path, data_root):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    results = {}
    for access in ("network", "onnx"):
        config = resolve(
            "tl_mn_to_us_n5",
            method="cetl",
            profile="smoke",
            sets=[
                "source.kind=run",
                f"source.path={digit_source}",
                f"source.access={access}",
                "train.rounds=1",
                "data.target_train_limit=256",
            ],
        )
        run = tmp_path / access
        summary = train_run(config, run_dir=run, data_root=data_root)
        _, net, _ = load_target_net(run)
        results[access] = (summary, net.state_dict())
    assert (digit_source / SOURCE_ONNX).is_file()
    assert exported_source(digit_source).stat().st_mtime == (digit_source / SOURCE_ONNX).stat().st_mtime
    (network, weights), (onnx, onnx_weights) = results["network"], results["onnx"]
    assert onnx.target_test_accuracy == pytest.approx(network.target_test_accuracy, abs=0.02)
    for name, tensor in weights.items():
        torch.testing.assert_close(onnx_weights[name], tensor, atol=1e-3, rtol=1e-3, msg=name)
    described = json.loads((tmp_path / "onnx" / "summary.json").read_text())
    assert "onnx source.onnx" in json.dumps(described)
