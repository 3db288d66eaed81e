"""Hostile files built under tmp_path: none of them may run code or reach a traceback (issue 37)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from cetl.cli import main
from cetl.data.cifar_batches import read_batches


class _Payload:
    """A pickle that, when loaded by pickle.load, runs a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _batch(count: int) -> dict:
    rng = np.random.default_rng(0)
    return {
        "batch_label": "x",
        "labels": [int(v) for v in rng.integers(0, 10, count)],
        "data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
    }


def _cifar_subset(root: Path, payload_in: str | None, marker: Path) -> Path:
    folder = root / "subsets" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    files = {
        "batches.meta": {"label_names": [str(i) for i in range(10)], "num_cases_per_batch": 10},
        "data_batch_1": _batch(20),
        "test_batch": _batch(10),
    }
    for name, content in files.items():
        if name == payload_in:
            content = {**content, "data": _Payload(marker)} if name != "batches.meta" else _Payload(marker)
        (folder / name).write_bytes(pickle.dumps(content, protocol=2))
    return folder


def test_cifar_batches_are_read_as_torchvision_reads_them_without_pickle_load(tmp_path):
    folder = _cifar_subset(tmp_path, None, tmp_path / "marker")
    images, labels = read_batches(folder, ["data_batch_1"])
    expected = _batch(20)
    assert images.shape == (20, 32, 32, 3) and labels == expected["labels"]
    np.testing.assert_array_equal(images, expected["data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


@pytest.mark.parametrize("planted", ["data_batch_1", "test_batch"])
def test_a_planted_cifar_pickle_runs_nothing_and_names_its_file(tmp_path, capsys, planted):
    marker = tmp_path / "ran"
    root = tmp_path / "root"
    _cifar_subset(root, planted, marker)
    code = main(["data", "check", "--root", str(root), "cifar10"])
    captured = capsys.readouterr()
    err = captured.out + captured.err
    assert not marker.exists()  # the payload never ran
    assert code != 0
    assert f"{planted} is not a CIFAR batch file: its pickle asks for posix.system" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("name", ["best.pt", "last.pt", "summary.json", "config.yaml"])
def test_an_export_never_replaces_the_runs_own_files(tmp_path, capsys, name):
    own = tmp_path / name
    own.write_bytes(b"the run's own bytes")
    assert main(["export", str(tmp_path), "--format", "onnx", "--output", str(own)]) != 0
    assert "is one of the run's own files" in capsys.readouterr().err
    assert own.read_bytes() == b"the run's own bytes"


def test_an_export_to_a_folder_says_to_name_a_file(tmp_path, capsys):
    assert main(["export", str(tmp_path), "--format", "onnx", "--output", str(tmp_path)]) != 0
    assert "is a folder; give a file name" in capsys.readouterr().err
