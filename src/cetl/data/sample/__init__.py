"""A small real digit sample bundled with cetl, so the demo runs offline from a fresh clone.

``digits.npz`` holds, as stored uint8 images and labels:

- MNIST train: the 2,000 images the ADDA protocol draws (``split_seed`` 0), in that order;
- USPS train: the 1,800 images the ADDA protocol draws (``split_seed`` 0), in that order;
- MNIST test (10,000) and USPS test (2,007): the full test sets.

Because the training subsets are stored in the order :func:`cetl.data.subsets.seeded_subset`
draws them, the ``adda`` protocol on the sample sees exactly the images it sees on the full
data. ``scripts/make_sample.py`` rebuilds the file from a torchvision-layout data root.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from cetl.data.datasets import DatasetSpec, RawSplit
from cetl.errors import DataError

SAMPLE_FILE = Path(__file__).with_name("digits.npz")
SAMPLE_COUNTS = {"mnist": 2000, "usps": 1800}


@functools.cache
def _arrays() -> dict[str, np.ndarray]:
    if not SAMPLE_FILE.is_file():
        raise DataError(f"the bundled sample '{SAMPLE_FILE}' is missing; reinstall cetl")
    with np.load(SAMPLE_FILE, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def load_sample(spec: DatasetSpec, split: str) -> RawSplit:
    """One split of the bundled sample, or a :class:`DataError` for datasets it lacks."""
    arrays = _arrays()
    key = f"{spec.name}_{split}"
    if f"{key}_images" not in arrays:
        held = sorted({k.rsplit("_", 2)[0] for k in arrays})
        raise DataError(
            f"the bundled sample holds only {', '.join(held)}; {spec.title} needs a data root "
            f"(set --data-root or $CETL_DATA_ROOT)"
        )
    return RawSplit(
        torch.from_numpy(arrays[f"{key}_images"]).contiguous(),
        torch.from_numpy(arrays[f"{key}_labels"]).long(),
    )
