"""Input corruptions of DRCN's training recipe, shared by ``drcn`` and the CETL family.

Ghifary, Kleijn, Zhang, Balduzzi, Li, "Deep Reconstruction-Classification Networks for
Unsupervised Domain Adaptation", ECCV 2016, Section 3 ("data augmentation and denoising"):

- *denoising*: the encoder reads a corrupted image and the decoder must return the clean one.
  The corruption is impulse noise in the sense of DRCN's code: each pixel is set to zero with
  probability ``fraction`` (the masking noise of denoising autoencoders).
- *geometric augmentation*: random rotations (±20°) and translations (±20% of the width and
  height), done here on the device with one ``affine_grid`` for the whole batch.

Both draw from the global RNG, which the engine seeds per round, so runs stay reproducible.
Callers decide *when* to corrupt (training only, which stage); these functions only corrupt.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def impulse_noise(x: Tensor, fraction: float) -> Tensor:
    """Zero each element of ``x`` independently with probability ``fraction``.

    Returns ``x`` itself (not a copy) when ``fraction`` is 0, so callers can tell by identity
    that the input is unchanged (CETL then reads S's cached features, D9).

    Shape:
        any; the mask has the shape of ``x`` (per pixel and channel, not per image).
    """
    if fraction <= 0.0:
        return x
    return x * (torch.rand_like(x) >= fraction)


def random_affine(x: Tensor, *, max_degrees: float = 20.0, max_shift: float = 0.2) -> Tensor:
    """Rotate each image by U(−max_degrees, max_degrees) and shift it by U(−max_shift, max_shift)
    of its width and height, filling with zeros (the digits' background).

    Shape:
        ``(B, C, H, W)`` in and out.
    """
    batch = x.shape[0]
    angle = (torch.rand(batch, device=x.device) * 2 - 1) * math.radians(max_degrees)
    # affine_grid works in [-1, 1] grid units, so a shift of s widths is 2s units.
    shift = (torch.rand(batch, 2, device=x.device) * 2 - 1) * (2 * max_shift)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], dim=1), torch.stack([sin, cos, shift[:, 1]], dim=1)], dim=1
    )  # (B, 2, 3)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
