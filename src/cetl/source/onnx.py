"""S from an ONNX file run in ONNX Runtime (``source.kind=onnx``; the ``onnx`` extra).

The file is treated as untrusted: it is read once as bytes, hashed, and handed to ONNX
Runtime *as those bytes* (never ``onnx.load``, no custom-op libraries, and no external-data
files resolved next to it), so the fingerprint the feature cache keys on (D9) covers exactly
the model that runs. An ONNX model has no trainable parameters here, so it cannot be
fine-tuned (``fine_tune`` says so).

- **Output (the tap).** ``source.tap`` names one of the file's outputs. Where the file has
  no output of that name, ``coupling`` reads its first output, and ``logits`` and ``soft``
  (softened by the temperature, D8) the output named ``logits``, else the first. S's own
  predictions (``FrozenSource.predict``: the bound monitor, ``kd``) are that logits output,
  whichever tap the coupling reads. An exported network only exposes the outputs it was
  exported with: ``cetl export RUN --format onnx`` writes ``logits`` and ``coupling`` (and
  ``--taps`` more); for a file from elsewhere, export the features you want S to give.
- **Input.** One image input ``(N, C, H, W)``. A fixed C converts grey/RGB; a fixed H = W
  is the resize size (``source.input_size`` may only repeat it); otherwise
  ``source.input_size`` or the image's own size. Normalisation: ``source.normalize``
  (``auto`` = none: the model receives [0,1] images, as ``cetl export`` writes them).
- **Fixed batch.** A model exported with a fixed batch size B runs in chunks of B; the last
  chunk is padded with zeros and the padding's outputs dropped (in eval mode every sample's
  output depends on that sample only).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cetl.errors import CetlError, ConfigError
from cetl.source.adapters import resolve_input_transform
from cetl.source.frozen import FrozenSource

INSTALL_HINT = 'pip install "cetl[onnx]"'
ANY_FILE_TAPS = ("coupling", "logits", "soft")
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise CetlError(f"source.kind=onnx needs ONNX Runtime: {INSTALL_HINT}") from None
    return onnxruntime


def _fixed(dim: Any) -> int | None:
    """A dimension's size when the file fixes it (symbolic and unknown dims are ``None``)."""
    return dim if isinstance(dim, int) and dim > 0 else None


class OnnxModel(nn.Module):
    """An ONNX Runtime session as a module: ``forward`` returns one named output as a tensor.

    It has no parameters; its one buffer, ``sha256``, is the file's hash, so
    :meth:`FrozenSource.fingerprint` (and the feature cache key) changes with the file.

    Args:
        data: the ONNX file's bytes.
        name: the file's name, for error messages.

    Attributes:
        outputs: the file's output names.
        logits_output: what :meth:`forward` returns: ``logits`` when the file has an output of
            that name, else its first.
    """

    def __init__(self, data: bytes, *, name: str) -> None:
        super().__init__()
        ort = _import_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()  # honour OMP_NUM_THREADS
        options.inter_op_num_threads = 1
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        try:
            self._session = ort.InferenceSession(data, sess_options=options, providers=providers)
        except Exception as error:  # ORT raises its own exception types (InvalidProtobuf, Fail, ...)
            raise CetlError(f"ONNX Runtime could not load '{name}' as an ONNX model: {error}") from None
        inputs = self._session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            described = ", ".join(f"{i.name} {i.shape}" for i in inputs)
            raise ConfigError(
                f"ONNX source '{name}' must take one image input (N, C, H, W); it takes: {described}"
            )
        (image,) = inputs
        if image.type not in _NUMPY_TYPES:
            raise ConfigError(f"ONNX source '{name}' takes {image.type} images; cetl feeds floats")
        self.input_name = image.name
        self.input_dtype = _NUMPY_TYPES[image.type]
        self.outputs = [o.name for o in self._session.get_outputs()]
        self.logits_output = "logits" if "logits" in self.outputs else self.outputs[0]
        batch, channels, height, width = (_fixed(d) for d in image.shape)
        self.fixed_batch = batch
        self.channels = channels
        self.size = height if height is not None and height == width else None
        if height is not None and height != width:
            raise ConfigError(f"ONNX source '{name}' takes {height}×{width} images; only square inputs work")
        self.register_buffer(
            "sha256", torch.frombuffer(bytearray(hashlib.sha256(data).digest()), dtype=torch.uint8)
        )

    def forward(self, x: Tensor) -> Tensor:
        """The logits output for images ``x`` ``(B, C, H, W)`` (:attr:`logits_output`)."""
        return self.run(x, self.logits_output)

    def run(self, x: Tensor, output: str) -> Tensor:
        """Output ``output`` for images ``x`` ``(B, C, H, W)``, on ``x``'s device (float32)."""
        array = x.detach().float().cpu().numpy().astype(self.input_dtype, copy=False)
        chunk = self.fixed_batch or max(1, len(array))
        parts = []
        for start in range(0, len(array), chunk):
            part = array[start : start + chunk]
            count = len(part)
            if count < chunk:  # a fixed-batch model: pad the last chunk, keep only real outputs
                padding = np.zeros((chunk - count, *part.shape[1:]), dtype=part.dtype)
                part = np.concatenate([part, padding])
            (out,) = self._session.run([output], {self.input_name: part})
            parts.append(out[:count])
        return torch.from_numpy(np.concatenate(parts).astype(np.float32, copy=False)).to(x.device)


def source_from_onnx(
    path: Path, *, tap: str, temperature: float, input_size: int | None = None, normalize: str = "auto"
) -> FrozenSource:
    """S from an ONNX file (see the module docstring for outputs, inputs and batching).

    Raises:
        ConfigError: the file is missing, has no output ``tap``, or takes inputs S cannot feed.
        CetlError: ONNX Runtime is not installed or cannot load the file.
    """
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"source.path '{path}' cannot be read as an ONNX file ({error.strerror})") from None
    model = OnnxModel(data, name=path.name)
    if tap in model.outputs:
        output = tap
    elif tap == "coupling":
        output = model.outputs[0]
    elif tap in ANY_FILE_TAPS:
        output = model.logits_output
    else:
        raise ConfigError(
            f"ONNX source '{path.name}' has no output '{tap}'; its outputs: {', '.join(model.outputs)} "
            f"(source.tap={'/'.join(ANY_FILE_TAPS)} work with any file; export more outputs with "
            f"'cetl export RUN --format onnx --taps LAYER')"
        )
    if input_size is not None and model.size is not None and input_size != model.size:
        raise ConfigError(
            f"ONNX source '{path.name}' takes {model.size}×{model.size} images; source.input_size="
            f"{input_size} cannot change that (leave it unset)"
        )
    transform = resolve_input_transform(
        input_size=input_size,
        normalize=normalize,
        channels=model.channels,
        default_size=model.size,
        default_stats=None,
    )
    digest = bytes(model.sha256.tolist()).hex()
    return FrozenSource(
        model,
        extract=functools.partial(_read_output, output=output),
        temperature=temperature if tap == "soft" else None,
        input_transform=transform,
        description=f"onnx {path.name} sha256:{digest[:12]} @{output}",
    )


def _read_output(model: nn.Module, x: Tensor, *, output: str) -> Tensor:
    """FrozenSource's extractor: one named output of the file (S's tap)."""
    assert isinstance(model, OnnxModel)
    return model.run(x, output)
