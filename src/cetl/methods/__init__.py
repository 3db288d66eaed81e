"""The METHODS registry; every method module is registered here explicitly."""

from __future__ import annotations

from cetl.methods.base import Batch, Method, Stage, Update
from cetl.methods.baselines import SourceOnly, TargetOnly
from cetl.registry import Registry

METHODS: Registry[type[Method]] = Registry(
    "method", contract="cls(config: cls.Config, *, target_net: TapNetwork) -> Method"
)
METHODS.add("source_only", SourceOnly)
METHODS.add("target_only", TargetOnly)

__all__ = ["METHODS", "Batch", "Method", "Stage", "Update"]
