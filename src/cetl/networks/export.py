"""A trained network as a file another program runs forward: ONNX (with taps) or ``torch.export``.

The ONNX file's first output is ``logits``; each tap asked for follows as a named output
(``coupling`` is the network's coupling tap, whatever layer that is), so the file can be a
forward-only S at those taps (``source.kind=onnx``, ``source.tap=coupling``): the access to S
a vendor's model gives, which the forward-only comparisons read S through. Files are written
atomically: a failed export leaves the previous file (or none), never half of one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from cetl.errors import CetlError
from cetl.files import atomic_output
from cetl.networks.base import LOGITS, TapNetwork

COUPLING_OUTPUT = "coupling"
"""The output name of the coupling tap in an exported file."""
DEFAULT_TAPS = (COUPLING_OUTPUT,)
"""Taps an ONNX export writes unless told otherwise."""
ONNX_HINT = "ONNX export needs the onnx extra: pip install 'cetl[onnx]'"


class LogitsAndTaps(nn.Module):
    """``net`` returning its logits and then the outputs of ``layers``, from one forward pass."""

    def __init__(self, net: TapNetwork, layers: Sequence[str]) -> None:
        super().__init__()
        self.net = net
        self.layers = tuple(layers)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        outputs = self.net.forward_taps(x, [*self.layers, LOGITS])
        return (outputs[LOGITS], *(outputs[layer] for layer in self.layers))


def tap_outputs(net: nn.Module, taps: Sequence[str]) -> dict[str, str]:
    """``{output name: layer}`` for ``taps`` (``coupling`` → the coupling tap; ``logits`` is
    always the first output, so it is not listed again).

    Raises:
        CetlError: taps asked of a network without any (a fine-tuned copy of a foreign S).
        ConfigError: a name that is not a tap (the message lists the valid ones).
    """
    wanted = [tap for tap in dict.fromkeys(taps) if tap != LOGITS]
    if not wanted:
        return {}
    if not isinstance(net, TapNetwork):
        raise CetlError(
            f"this network exposes only its logits, so taps {', '.join(wanted)} cannot be exported; "
            f"export with --taps logits"
        )
    outputs = {}
    for tap in wanted:
        layer = net.coupling_tap if tap == COUPLING_OUTPUT else tap
        net.tap_shape(layer)  # a ConfigError naming the valid taps
        outputs[tap] = layer
    return outputs


def export_onnx(
    net: nn.Module, path: Path, *, image_shape: tuple[int, int, int], taps: Sequence[str] = DEFAULT_TAPS
) -> Path:
    """``net`` (in eval mode) as an ONNX file with a dynamic batch: input ``images`` in [0,1],
    outputs ``logits`` and one per tap (:func:`tap_outputs`)."""
    try:
        import onnxscript  # noqa: F401  (the exporter needs it; fail with our message, not torch's)
    except ImportError:
        raise CetlError(ONNX_HINT) from None
    outputs = tap_outputs(net, taps)
    module = LogitsAndTaps(net, list(outputs.values())).eval() if outputs else net
    example = torch.rand(2, *image_shape)
    with atomic_output(path, suffix=path.suffix) as temporary:
        torch.onnx.export(
            module,
            (example,),
            str(temporary),
            input_names=["images"],
            output_names=[LOGITS, *outputs],
            dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1)}},
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return path


def export_program(net: nn.Module, path: Path, *, image_shape: tuple[int, int, int]) -> Path:
    """``net`` as a ``torch.export`` program (``.pt2``) with a dynamic batch, returning logits."""
    example = torch.rand(2, *image_shape)
    batch = torch.export.Dim("batch", min=1)
    with atomic_output(path, suffix=path.suffix) as temporary:
        program = torch.export.export(net, (example,), dynamic_shapes={"x": {0: batch}})
        torch.export.save(program, str(temporary))
    return path
