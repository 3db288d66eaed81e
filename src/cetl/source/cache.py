"""The source-feature cache (METHOD.md D9).

S is frozen, so for stage inputs without random augmentation S(x) at the tap never
changes: compute it once per (S, tap, images) and index it every round. The key is
a hash of S's fingerprint (parameters, buffers, tap, input transform) and of the
image tensor's bytes, so any change to the source, the tap, the dataset, the subset
or the transform gives a new key. Features live in memory; with ``cache_dir`` they
are also saved as a safetensors file and reused by later runs.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import Tensor

from cetl.files import atomic_write_bytes
from cetl.source.frozen import FrozenSource

FEATURE_BATCH = 512


def cache_key(source: FrozenSource, images: Tensor) -> str:
    """Hash of S's fingerprint, the exact images (shape, dtype, bytes) and the ambient autocast.

    The engine fills the cache under the autocast its steps use (bf16 on CUDA), so features
    computed with and without autocast differ slightly and must not share a file.
    """
    digest = hashlib.sha256(source.fingerprint().encode())
    digest.update(f"{tuple(images.shape)}:{images.dtype}".encode())
    device = images.device.type
    if torch.is_autocast_enabled(device):
        digest.update(f"autocast:{torch.get_autocast_dtype(device)}".encode())
    digest.update(images.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:32]


class FeatureCache:
    """Computes S's tap outputs for a whole image tensor once, optionally persisting them.

    Args:
        cache_dir: where to save features across runs (a safetensors file per key), or
            ``None`` to keep them in memory for this run only.
    """

    def __init__(self, *, cache_dir: Path | None) -> None:
        self.cache_dir = cache_dir

    def features(self, source: FrozenSource, images: Tensor) -> Tensor:
        """``source(images)`` for every image ``(N, *tap_shape)``, on ``images``' device."""
        key = cache_key(source, images)
        path = self.cache_dir / f"{key}.safetensors" if self.cache_dir is not None else None
        hit = path is not None and path.is_file()
        if hit:
            features = load_safetensors(path.read_bytes())["features"].to(images.device)
        else:
            features = torch.cat(
                [
                    source(images[start : start + FEATURE_BATCH])
                    for start in range(0, len(images), FEATURE_BATCH)
                ]
            )
            if features.dtype in (torch.float16, torch.bfloat16):
                # Filled under autocast: keep its values but in float32, because code outside
                # autocast (the Fisher estimate) feeds them to float32 layers.
                features = features.float()
            if path is not None:
                atomic_write_bytes(path, save_safetensors({"features": features.detach().cpu().contiguous()}))
        where = str(path) if path is not None else "memory"
        verb = "loaded from" if hit else "computed into"
        print(f"cetl: source features {tuple(features.shape)} {verb} {where} (D9)", file=sys.stderr)
        return features


def image_digest(image: Tensor) -> bytes:
    """A 128-bit digest of one image's exact bytes (shape and dtype included)."""
    digest = hashlib.blake2b(f"{tuple(image.shape)}:{image.dtype}".encode(), digest_size=16)
    digest.update(image.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.digest()


class FeatureLookup:
    """S's features found by image content, for a method that runs S on every image it predicts.

    A method whose prediction goes through S (a linear probe on S's features) is evaluated on
    batches the engine slices from the validation and test sets, with no indices; running S at
    224 px on them every round costs far more than the training. Features computed once (the
    D9 cache) are registered here with their images, and each later batch is answered row by
    row from its images' digests; images never seen are run through S.

    Args:
        source: S, for the images that were not registered.
    """

    def __init__(self, source: FrozenSource) -> None:
        self.source = source
        self._rows: dict[bytes, int] = {}
        self._features: Tensor | None = None

    def add(self, images: Tensor, features: Tensor) -> None:
        """Register ``features`` ``(N, ...)`` as S's output for ``images`` ``(N, C, H, W)``."""
        offset = 0 if self._features is None else len(self._features)
        for row, image in enumerate(images):
            self._rows.setdefault(image_digest(image), offset + row)
        features = features.detach()
        self._features = features if self._features is None else torch.cat([self._features, features])

    def __call__(self, images: Tensor) -> Tensor:
        """S's features for ``images``: registered rows where known, else a forward pass of S."""
        rows = [self._rows.get(image_digest(image)) for image in images]
        missing = [i for i, row in enumerate(rows) if row is None]
        if self._features is None or len(missing) == len(rows):
            return self.source(images).float()
        known = [i for i, row in enumerate(rows) if row is not None]
        out = self._features.new_empty((len(images), *self._features.shape[1:]))
        index = torch.tensor(known, device=out.device)
        out[index] = self._features[torch.tensor([rows[i] for i in known], device=out.device)]
        if missing:
            out[torch.tensor(missing, device=out.device)] = self.source(images[missing]).float()
        return out.to(images.device)
