"""Name-derived random streams: one seed plus names gives a generator, so adding a new draw
(a new name) never shifts the images or orders any existing draw sees."""

from __future__ import annotations

import hashlib

import torch


def seeded_generator(seed: int, *names: str) -> torch.Generator:
    """A CPU generator seeded from ``seed`` and names (so adding a name shifts no other stream)."""
    digest = hashlib.sha256(repr((seed, *names)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))
