"""The frozen source network S: the wrapper, its adapters and the feature cache."""

from cetl.source.adapters import (
    source_from_callable,
    source_from_network,
    source_from_torchvision,
)
from cetl.source.cache import FeatureCache
from cetl.source.frozen import FrozenSource, InputTransform
from cetl.source.onnx import source_from_onnx
from cetl.source.packaged import source_from_package
from cetl.source.timm_source import source_from_timm

__all__ = [
    "FeatureCache",
    "FrozenSource",
    "InputTransform",
    "source_from_callable",
    "source_from_network",
    "source_from_onnx",
    "source_from_package",
    "source_from_timm",
    "source_from_torchvision",
]
