"""The METHODS registry; every method module is registered here explicitly."""

from __future__ import annotations

from cetl.methods.base import Batch, Method, Stage, Update
from cetl.methods.baselines import SourceOnly, TargetOnly
from cetl.methods.cetl import CETL, Baseline, Cetl, CetlE, CetlE2E, CetlF, CetlFI, CetlU
from cetl.registry import Registry

METHODS: Registry[type[Method]] = Registry(
    "method", contract="cls(config: cls.Config, *, target_net: TapNetwork, ...) -> Method (see build.py)"
)
METHODS.add("source_only", SourceOnly)
METHODS.add("target_only", TargetOnly)
METHODS.add("baseline", Baseline)
METHODS.add("cetl_f", CetlF)
METHODS.add("cetl_u", CetlU)
METHODS.add("cetl_e", CetlE)
METHODS.add("cetl_fi", CetlFI)
METHODS.add("cetl", Cetl)
METHODS.add("cetl_e2e", CetlE2E)

__all__ = ["CETL", "METHODS", "Batch", "Method", "Stage", "Update"]
