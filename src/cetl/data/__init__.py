"""Data: roots, raw datasets through torchvision, protocols, the bundled sample."""

from cetl.data.datasets import DATASETS, RawSplit, load_raw
from cetl.data.digits import PROTOCOLS, LabelledSet
from cetl.data.root import DataRoot, resolve_data_root, sample_root

__all__ = [
    "DATASETS",
    "PROTOCOLS",
    "DataRoot",
    "LabelledSet",
    "RawSplit",
    "load_raw",
    "resolve_data_root",
    "sample_root",
]
