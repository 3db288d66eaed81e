"""S, the frozen source network: run forward only, never trained (METHOD.md §1).

:class:`FrozenSource` is the one wrapper every source goes through — a network this
project trained, a torchvision model, or any callable. It enforces what the method
assumes and what other libraries get wrong (wrapping a frozen teacher in DDP,
BatchNorm statistics drifting in train mode):

- eval mode always (``train()`` is a no-op), every parameter ``requires_grad=False``;
- forward under ``torch.no_grad``: S never enters autograd;
- a fingerprint of parameters *and* buffers, so a test (and the feature cache) can tell
  that S is bit-identical after any method ran.

It is an ``nn.Module`` so ``method.to(device)`` moves it, but the engine never
checkpoints or optimises it: methods list only their trainable networks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cetl.errors import ConfigError


@dataclass(frozen=True)
class InputTransform:
    """How target images become S's input (for S only; T1 still reconstructs the original).

    Attributes:
        size: resize to ``size × size`` (full frame, bilinear), or keep the size.
        channels: 3 repeats a grey channel (grey→RGB); 1 averages RGB with luma weights.
        mean, std: per-channel normalisation after resizing, e.g. ImageNet statistics.
    """

    size: int | None = None
    channels: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __call__(self, x: Tensor) -> Tensor:
        if self.channels == 3 and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif self.channels == 1 and x.shape[1] == 3:
            weights = x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            x = (x * weights).sum(dim=1, keepdim=True)
        if self.size is not None and x.shape[-1] != self.size:
            x = F.interpolate(
                x,
                size=(self.size, self.size),
                mode="bilinear",
                align_corners=False,
                antialias=x.shape[-1] > self.size,
            )
        if self.mean is not None and self.std is not None:
            mean = x.new_tensor(self.mean).view(1, -1, 1, 1)
            std = x.new_tensor(self.std).view(1, -1, 1, 1)
            x = (x - mean) / std
        return x


class FrozenSource(nn.Module):
    """A source network that can only be run forward, read at one tap.

    Args:
        model: the network (its weights are frozen in place).
        extract: ``(model, x) -> tap output``; reads the configured tap (a layer, the logits).
        temperature: when set, the tap output (logits) becomes soft targets
            ``softmax(logits / temperature)`` (knowledge distillation, D8).
        input_transform: applied to images before ``model`` (size, channels, normalisation).
        description: names the source and tap in logs and errors.
        classes: names of the classes S's logits predict, where known (a network this project
            trained: its labelled dataset's classes); ``()`` for a model of unknown labels.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        extract: Callable[[nn.Module, Tensor], Tensor],
        temperature: float | None = None,
        input_transform: InputTransform | None = None,
        description: str,
        classes: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        if temperature is not None and temperature <= 0:
            raise ConfigError(f"source.temperature must be positive, got {temperature}")
        self.model = model.eval().requires_grad_(False)
        self._extract = extract
        self.temperature = temperature
        self.input_transform = input_transform or InputTransform()
        self.description = description
        self.classes = classes

    def train(self, mode: bool = True) -> FrozenSource:
        """Always eval: BatchNorm statistics and dropout of S must never change."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """S's tap output for images ``x`` ``(B, C, H, W)`` in [0,1]; never has a gradient."""
        out = self._extract(self.model, self.input_transform(x))
        if self.temperature is not None:
            out = torch.softmax(out.float() / self.temperature, dim=1)
        return out

    def copy_into(self, network: nn.Module, *, why: str) -> None:
        """Load S's weights into ``network`` (ADDA's and SA's T2, ``target_init=source``).

        Raises:
            ConfigError: the architectures differ; the message starts with ``why``.
        """
        try:
            network.load_state_dict(self.model.state_dict())
        except RuntimeError as error:
            raise ConfigError(
                f"{why}, so S and T2 need one architecture (S: {self.description}); "
                f"{error.args[0].splitlines()[0]}"
            ) from None

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """S's own logits (for the bound monitor and ``source_accuracy_on_target``)."""
        return self.model(self.input_transform(x))

    def fingerprint(self) -> str:
        """SHA-256 of every parameter and buffer (names, dtypes, shapes, bytes) and the tap."""
        digest = hashlib.sha256(self.description.encode())
        for name, tensor in sorted(self.model.state_dict().items()):
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            # reshape(-1): a 0-dim int64 buffer (BatchNorm's num_batches_tracked) cannot be viewed as bytes
            digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        digest.update(repr((self.temperature, self.input_transform)).encode())
        return digest.hexdigest()

    def tap_shape(self, image_shape: tuple[int, int, int]) -> tuple[int, ...]:
        """Per-sample tap shape for images of ``image_shape`` ``(C, H, W)`` (one dry run)."""
        parameter = next(self.model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        try:
            return tuple(self(torch.zeros(1, *image_shape, device=device)).shape[1:])
        except RuntimeError as error:  # the first place a mismatched S meets this run's images
            raise ConfigError(
                f"the source S ({self.description}) cannot take this run's images of shape "
                f"(C, H, W) = {tuple(image_shape)}: {str(error).splitlines()[0]}. S was made for other "
                f"images (a source run trained under another data.protocol?); use an S trained on "
                f"this protocol, or resize its input with source.input_size"
            ) from None

    def extra_repr(self) -> str:
        return f"{self.description!r}"


def _capture(model: nn.Module, x: Tensor, module_name: str, *, read_input: bool) -> Tensor:
    """Run ``model`` on ``x`` and return what submodule ``module_name`` received or produced."""
    captured: list[Tensor] = []
    module = model.get_submodule(module_name)
    if read_input:
        handle = module.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
    else:
        handle = module.register_forward_hook(lambda _m, _i, output: captured.append(output))
    try:
        model(x)
    finally:
        handle.remove()
    return captured[0]


def layer_extractor(model: nn.Module, layer: str) -> Callable[[nn.Module, Tensor], Tensor]:
    """Read the output of submodule ``layer`` of any ``nn.Module`` (a forward hook)."""
    names = [n for n, _ in model.named_modules() if n]
    if layer not in names:
        raise ConfigError(f"source has no layer '{layer}'; its layers include: {', '.join(names[:40])}")
    return lambda model, x: _capture(model, x, layer, read_input=False)


def penultimate_extractor(model: nn.Module) -> Callable[[nn.Module, Tensor], Tensor]:
    """Read the input of the model's last ``nn.Linear``: "features before the last FC layer"."""
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ConfigError("source has no nn.Linear layer, so it has no penultimate features; name a tap")
    return lambda model, x: _capture(model, x, linears[-1], read_input=True)


def logits_extractor(model: nn.Module, x: Tensor) -> Tensor:
    return model(x)


def tap_extractor(
    model: nn.Module, tap: str, temperature: float, *, coupling: Callable[[nn.Module, Tensor], Tensor]
) -> tuple[Callable[[nn.Module, Tensor], Tensor], float | None]:
    """(extract, temperature) for a ``source.tap`` name on a foreign model (torchvision, timm):
    ``coupling`` is the library's own features-before-the-classifier reader, ``logits`` and
    ``soft`` (softened by ``temperature``, D8) read the output, anything else a named layer."""
    if tap == "coupling":
        return coupling, None
    if tap in ("logits", "soft"):
        return logits_extractor, (temperature if tap == "soft" else None)
    return layer_extractor(model, tap), None
