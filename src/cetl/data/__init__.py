"""Data: roots, raw datasets through torchvision, protocols, the bundled sample."""

from cetl.data.datasets import DATASETS, RawSplit, dataset_variant, find_spec, load_raw, locate_dataset
from cetl.data.labelled import LabelledSet
from cetl.data.protocols import PROTOCOLS
from cetl.data.root import DataRoot, resolve_data_root, sample_root

__all__ = [
    "DATASETS",
    "PROTOCOLS",
    "DataRoot",
    "LabelledSet",
    "RawSplit",
    "dataset_variant",
    "find_spec",
    "load_raw",
    "locate_dataset",
    "resolve_data_root",
    "sample_root",
]
