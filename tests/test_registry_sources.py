"""Every source kind ``source.kind`` accepts, picked up from the config schema: S is built the
way ``cetl train`` builds it, runs forward on a batch of its protocol's images, and stays
bit-identical (DESIGN.md principle 5; source kinds are a ``Literal``, not a registry).

A new kind added to :class:`cetl.config.SourceConfig` fails here until :data:`SECTIONS` says how
to name an S of that kind offline.
"""

from __future__ import annotations

import os
import typing
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from cetl.build import build_source
from cetl.cli import main
from cetl.config import SourceConfig

KINDS: tuple[str, ...] = typing.get_args(typing.get_type_hints(SourceConfig)["kind"])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished ``smoke`` LeNet run on MNIST: S for the run-folder kinds, and (exported) ONNX."""
    root = os.environ.get("CETL_DATA_ROOT")
    if not root or not Path(root).is_dir():
        pytest.skip("needs CETL_DATA_ROOT")
    out = tmp_path_factory.mktemp("source") / "run"
    args = ["train", "digits_mn_to_us", "--method", "source_only", "--profile", "smoke"]
    assert main([*args, "--data-root", root, "--out", str(out)]) == 0
    return out


def _exported(run: Path) -> SourceConfig:
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    onnx = run.parent / "s.onnx"
    if not onnx.exists():
        assert main(["export", str(run), "--format", "onnx", "--output", str(onnx)]) == 0
    return SourceConfig(kind="onnx", path=str(onnx), tap="logits")


def _timm(run: Path) -> SourceConfig:
    pytest.importorskip("timm")
    return SourceConfig(kind="timm", model="resnet18:none", tap="logits")


SECTIONS: dict[str, Callable[[Path], SourceConfig]] = {
    # The run-folder kinds differ in how the folder is found (cetl.workflows.runs), not in S.
    "source_only": lambda run: SourceConfig(kind="source_only"),
    "experiment": lambda run: SourceConfig(kind="experiment", experiment="digits_mn_to_us"),
    "run": lambda run: SourceConfig(kind="run", path=str(run)),
    "torchvision": lambda run: SourceConfig(kind="torchvision", model="resnet18:none", tap="logits"),
    "timm": _timm,
    "packaged": lambda run: SourceConfig(kind="packaged", model="efficientnet_lite0", input_size=32),
    "onnx": _exported,
}
"""How a test names an S of each kind without a network (``:none``: random weights)."""

USES_RUN_FOLDER = {"source_only", "experiment", "run"}


def test_every_source_kind_has_a_test_section():
    assert set(SECTIONS) == set(KINDS), f"add a SECTIONS entry for {set(KINDS) - set(SECTIONS)}"


@pytest.mark.parametrize("kind", KINDS)
def test_every_source_kind_builds_a_frozen_source_that_runs_forward(kind, finished_run):
    config = SECTIONS[kind](finished_run)
    source = build_source(config, run_dir=finished_run if kind in USES_RUN_FOLDER else None)
    before = source.fingerprint()
    images = torch.rand(3, 1, 32, 32)  # the run's protocol (drcn: grey 32×32); pretrained kinds resize

    output = source(images)

    assert output.shape[0] == 3 and torch.isfinite(output).all()
    assert not output.requires_grad
    assert source.fingerprint() == before
