"""Using a trained run: classify image files, export the target network.

Both rebuild the network from the run's ``config.yaml`` and load the selected weights
(``best.pt``) with ``weights_only=True``; neither needs the training data.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from cetl.build import load_target_net
from cetl.config import ExperimentConfig
from cetl.data.datasets import RawSplit
from cetl.data.protocols import PROTOCOLS, to_protocol
from cetl.errors import CetlError
from cetl.files import atomic_output


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


def export_run(run_dir: Path, *, fmt: str, output: Path | None = None) -> Path:
    """Export T2 with a dynamic batch dimension: ONNX, or a ``torch.export`` program (.pt2).

    The exported model takes ``(N, C, H, W)`` floats in [0,1] at the protocol's size and
    returns logits ``(N, K)``. The file is written atomically: an export that fails leaves the
    previous file (or none), never half of one.
    """
    _, net, info = load_target_net(run_dir)
    example = torch.rand(2, info.channels, info.image_size, info.image_size)
    batch = torch.export.Dim("batch", min=1)
    path = output or run_dir / ("model.pt2" if fmt == "pt" else "model.onnx")
    if fmt != "pt":
        try:
            import onnxscript  # noqa: F401  (the exporter needs it; fail with our message, not torch's)
        except ImportError:
            raise CetlError("ONNX export needs the onnx extra: pip install 'cetl[onnx]'") from None
    with atomic_output(path, suffix=path.suffix) as temporary:
        if fmt == "pt":
            program = torch.export.export(net, (example,), dynamic_shapes={"x": {0: batch}})
            torch.export.save(program, str(temporary))
        else:
            torch.onnx.export(
                net,
                (example,),
                str(temporary),
                input_names=["images"],
                output_names=["logits"],
                dynamic_shapes={"x": {0: batch}},
                dynamo=True,
                external_data=False,
            )
    return path
