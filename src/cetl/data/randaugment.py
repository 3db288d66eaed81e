"""FixMatch's weak and strong augmentations, on whole batches, each image drawn on its own.

Sohn et al., "FixMatch" (NeurIPS 2020), §2.3 and Table 12:

- **weak** α: a random translation by up to 12.5% of the side in each direction, plus a
  horizontal flip with probability 0.5 for colour images (never for digits: a flipped 2 or 7
  is not a digit);
- **strong** A: RandAugment with random magnitudes — two operations per image, drawn
  uniformly from Table 12's list, each at a magnitude drawn uniformly from its range — then
  Cutout of a square whose side is a uniform fraction in [0, 0.5] of the image's.

Every image gets its own operations and magnitudes (torchvision's transforms draw one set per
call, i.e. per batch), and the operations run on the device on the whole batch at once, so
augmenting never leaves the training loop's tensors. Randomness comes from the global torch
generator, which the engine seeds per round, so runs are reproducible and resumable.

Colour-only operations (``color``) are the identity on grey images; geometric operations and
Cutout fill with 0.5 grey on colour images (as FixMatch's 128) and with 0 on grey ones (the
digits' background). Enhancement factors (brightness, color, contrast, sharpness) follow PIL's
``ImageEnhance`` (1 = unchanged) and are drawn in [0.05, 0.95] either side of 1, the range
Table 12 gives for those operations.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torch import Tensor

TRANSLATE_WEAK = 0.125
"""Weak augmentation's largest shift, as a fraction of the side."""
CUTOUT_MAX = 0.5
"""Cutout's largest side, as a fraction of the image's."""


def _uniform(count: int, low: float, high: float, device: torch.device) -> Tensor:
    return torch.empty(count, device=device).uniform_(low, high)


def _fill(x: Tensor) -> float:
    return 0.5 if x.shape[1] == 3 else 0.0


def _identity(count: int, device: torch.device) -> Tensor:
    """``count`` identity 2×3 affine maps, to be edited per image."""
    matrices = torch.zeros(count, 2, 3, device=device)
    matrices[:, 0, 0] = matrices[:, 1, 1] = 1.0
    return matrices


def _affine(x: Tensor, matrices: Tensor, mode: str = "bilinear") -> Tensor:
    """Each image through its own 2×3 affine map (normalised coordinates), filled outside;
    ``nearest`` keeps whole-pixel shifts and flips exact."""
    grid = F.affine_grid(matrices, list(x.shape), align_corners=False)
    fill = _fill(x)
    return F.grid_sample(x - fill, grid, mode=mode, padding_mode="zeros", align_corners=False) + fill


def _geometric(kind: str) -> Callable[[Tensor, Tensor], Tensor]:
    """``(images, magnitudes in [-1, 1]) → images`` for a geometric operation of Table 12."""

    def apply(x: Tensor, m: Tensor) -> Tensor:
        matrices = _identity(len(x), x.device)
        if kind == "rotate":  # ±30°
            angle = m * math.radians(30)
            matrices[:, 0, 0], matrices[:, 0, 1] = angle.cos(), -angle.sin()
            matrices[:, 1, 0], matrices[:, 1, 1] = angle.sin(), angle.cos()
        elif kind == "shear_x":  # ±0.3
            matrices[:, 0, 1] = 0.3 * m
        elif kind == "shear_y":
            matrices[:, 1, 0] = 0.3 * m
        elif kind == "translate_x":  # ±30% of the side (normalised coordinates span 2)
            matrices[:, 0, 2] = 2 * 0.3 * m
        else:
            matrices[:, 1, 2] = 2 * 0.3 * m
        return _affine(x, matrices)

    return apply


def _enhance(degenerate: Callable[[Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    """PIL's ``ImageEnhance``: blend with a degenerate image at a factor 1 ± 0.95·|m|."""

    def apply(x: Tensor, m: Tensor) -> Tensor:
        factor = (1.0 + 0.95 * m).view(-1, 1, 1, 1)
        base = degenerate(x)
        return (base + factor * (x - base)).clamp(0.0, 1.0)

    return apply


def _grey(x: Tensor) -> Tensor:
    return TF.rgb_to_grayscale(x, num_output_channels=3) if x.shape[1] == 3 else x


def _mean_grey(x: Tensor) -> Tensor:
    return _grey(x).mean(dim=(1, 2, 3), keepdim=True).expand_as(x)


def _posterize(x: Tensor, m: Tensor) -> Tensor:
    """Keep 4 to 8 bits per pixel."""
    bits = (6 + 2 * m).round().clamp(4, 8).to(torch.int32)
    mask = (0xFF << (8 - bits)) & 0xFF
    values = (x * 255).round().to(torch.int32) & mask.view(-1, 1, 1, 1)
    return values.to(x.dtype) / 255


def _solarize(x: Tensor, m: Tensor) -> Tensor:
    """Invert the pixels at or above a threshold in [0, 1]."""
    threshold = ((m + 1) / 2).view(-1, 1, 1, 1)
    return torch.where(x >= threshold, 1.0 - x, x)


def _color(x: Tensor, m: Tensor) -> Tensor:
    return _enhance(_grey)(x, m) if x.shape[1] == 3 else x


OPERATIONS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "identity": lambda x, m: x,
    "autocontrast": lambda x, m: TF.autocontrast(x),
    "equalize": lambda x, m: TF.equalize(x),
    "brightness": _enhance(torch.zeros_like),
    "color": _color,
    "contrast": _enhance(_mean_grey),
    "sharpness": _enhance(lambda x: TF.adjust_sharpness(x, 0.0)),
    "posterize": _posterize,
    "solarize": _solarize,
    "rotate": _geometric("rotate"),
    "shear_x": _geometric("shear_x"),
    "shear_y": _geometric("shear_y"),
    "translate_x": _geometric("translate_x"),
    "translate_y": _geometric("translate_y"),
}
"""RandAugment's operations (FixMatch Table 12), each ``(images, magnitudes in [-1, 1])``."""


def weak(x: Tensor) -> Tensor:
    """α(x): each image shifted by up to 12.5% of its side (integer pixels), colour ones also
    flipped left–right with probability 0.5."""
    count, _, height, width = x.shape
    pad = max(1, round(TRANSLATE_WEAK * height))
    shifts = torch.randint(-pad, pad + 1, (count, 2), device=x.device)
    matrices = _identity(count, x.device)
    matrices[:, 0, 2] = 2 * shifts[:, 0] / width
    matrices[:, 1, 2] = 2 * shifts[:, 1] / height
    if x.shape[1] == 3:
        flip = torch.rand(count, device=x.device) < 0.5
        matrices[flip, 0, 0] = -1.0
    return _affine(x, matrices, mode="nearest")


def cutout(x: Tensor) -> Tensor:
    """Each image with one square (side a uniform fraction in [0, 0.5] of its own) filled."""
    count, _, height, width = x.shape
    side = _uniform(count, 0.0, CUTOUT_MAX, x.device) * height
    centre_y = _uniform(count, 0.0, height, x.device)
    centre_x = _uniform(count, 0.0, width, x.device)
    rows = torch.arange(height, device=x.device).view(1, -1, 1) + 0.5
    cols = torch.arange(width, device=x.device).view(1, 1, -1) + 0.5
    half = (side / 2).view(-1, 1, 1)
    inside = ((rows - centre_y.view(-1, 1, 1)).abs() < half) & ((cols - centre_x.view(-1, 1, 1)).abs() < half)
    return torch.where(inside.unsqueeze(1), torch.full_like(x, _fill(x)), x)


def strong(x: Tensor, *, operations: int = 2) -> Tensor:
    """A(x): RandAugment with ``operations`` random operations at random magnitudes per image,
    then Cutout (FixMatch's RA variant)."""
    names = list(OPERATIONS)
    out = x
    for _ in range(operations):
        chosen = torch.randint(len(names), (len(x),), device=x.device)
        magnitudes = _uniform(len(x), -1.0, 1.0, x.device)
        mixed = out.clone()
        for index, name in enumerate(names):
            rows = (chosen == index).nonzero().flatten()
            if len(rows):
                mixed[rows] = OPERATIONS[name](out[rows], magnitudes[rows]).to(out.dtype)
        out = mixed
    return cutout(out)
