"""Using a trained run: classify image files, export the target network.

Both rebuild the network from the run's ``config.yaml`` and load the selected weights
(``best.pt``) with ``weights_only=True``; neither needs the training data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from cetl.build import SOURCE_ONNX, load_target_net
from cetl.config import ExperimentConfig
from cetl.data.datasets import RawSplit
from cetl.data.protocols import PROTOCOLS, to_protocol
from cetl.engine.loop import BEST_CHECKPOINT, LAST_CHECKPOINT
from cetl.errors import CetlError
from cetl.networks.base import LOGITS
from cetl.networks.export import DEFAULT_TAPS, export_onnx, export_program
from cetl.run_folder import CONFIG_FILE, DATA_ROOT_FILE, SUMMARY_FILE


def read_images(paths: list[Path], config: ExperimentConfig) -> Tensor:
    """Image files → the run's protocol tensors ``(N, C, H, W)`` in [0,1]."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    protocol = PROTOCOLS[config.data.protocol]
    images = []
    for path in paths:
        if not path.is_file():
            raise CetlError(f"image '{path}' does not exist")
        try:
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("L" if protocol.channels == 1 else "RGB"))
        except (UnidentifiedImageError, OSError) as error:
            raise CetlError(f"could not read '{path}' as an image ({error})") from None
        tensor = torch.from_numpy(pixels.copy()).reshape(pixels.shape[0], pixels.shape[1], -1)
        raw = RawSplit(tensor.permute(2, 0, 1).unsqueeze(0), torch.zeros(1, dtype=torch.long))
        images.append(to_protocol(raw, protocol).x)
    return torch.cat(images)


@torch.inference_mode()
def predict_files(run_dir: Path, paths: list[Path]) -> list[tuple[Path, int, float]]:
    """(path, predicted class, its softmax probability) for each image file."""
    config, net, _ = load_target_net(run_dir)
    probabilities = net(read_images(paths, config)).softmax(dim=1)
    confidence, labels = probabilities.max(dim=1)
    return [(p, int(lab), float(c)) for p, lab, c in zip(paths, labels, confidence, strict=True)]


RUN_FILES = (CONFIG_FILE, SUMMARY_FILE, DATA_ROOT_FILE, BEST_CHECKPOINT, LAST_CHECKPOINT, "metrics.jsonl")
"""A run folder's own records, which an export must never replace (issue 37)."""


def _check_output(path: Path, run_dir: Path) -> None:
    """Refuse an export path that is a folder or one of the run's own files."""
    if path.is_dir():
        raise CetlError(f"--output {path} is a folder; give a file name, e.g. {path / 'model.onnx'}")
    if path.resolve().parent == run_dir.resolve() and path.name in (*RUN_FILES, SOURCE_ONNX):
        raise CetlError(
            f"--output {path} is one of the run's own files, which the export would replace; "
            f"write it elsewhere (default: {run_dir / 'model.onnx'})"
        )


def export_run(
    run_dir: Path, *, fmt: str, output: Path | None = None, taps: Sequence[str] | None = None
) -> Path:
    """Export T2 with a dynamic batch dimension: ONNX, or a ``torch.export`` program (.pt2).

    The exported model takes ``(N, C, H, W)`` floats in [0,1] at the protocol's size. Its
    first output is ``logits`` ``(N, K)``; an ONNX file also has a named output per tap in
    ``taps`` (default ``coupling``, so the file can be CETL's forward-only S; see
    :mod:`cetl.networks.export`). A ``.pt2`` program returns the logits only.

    Raises:
        CetlError: taps asked for a ``.pt2`` program, or of a network without taps; the onnx
            extra missing.
    """
    path = output or run_dir / ("model.pt2" if fmt == "pt" else "model.onnx")
    _check_output(path, run_dir)
    _, net, info = load_target_net(run_dir)
    image_shape = (info.channels, info.image_size, info.image_size)
    if fmt == "pt":
        if taps and list(taps) != [LOGITS]:
            raise CetlError("a .pt2 program returns the logits only; export taps with --format onnx")
        return export_program(net, path, image_shape=image_shape)
    return export_onnx(net, path, image_shape=image_shape, taps=DEFAULT_TAPS if taps is None else taps)
