"""Rebuild ``src/cetl/data/sample/digits.npz`` from a torchvision-layout data root.

Usage: ``python scripts/make_sample.py ../shared/datasets``
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from cetl.data.datasets import load_raw
from cetl.data.root import DataRoot
from cetl.data.sample import SAMPLE_COUNTS, SAMPLE_FILE
from cetl.data.subsets import seeded_subset


def main(root: str) -> None:
    data_root = DataRoot(Path(root), "option", download=False)
    arrays: dict[str, np.ndarray] = {}
    for name, count in SAMPLE_COUNTS.items():
        # The same call the adda protocol makes (split_seed 0), so the sample matches it.
        train = seeded_subset(load_raw(name, "train", data_root), count, seed=0, name=f"{name}/train")
        test = load_raw(name, "test", data_root)
        for split, raw in (("train", train), ("test", test)):
            arrays[f"{name}_{split}_images"] = raw.images.numpy().astype(np.uint8)
            arrays[f"{name}_{split}_labels"] = raw.labels.numpy().astype(np.uint8)
    np.savez_compressed(SAMPLE_FILE, **arrays)
    print(f"wrote {SAMPLE_FILE} ({SAMPLE_FILE.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/datasets")
