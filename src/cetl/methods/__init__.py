"""The METHODS registry; every method module is registered here explicitly."""

from __future__ import annotations

from cetl.config import MethodConfig
from cetl.methods.adversarial import ADDA, DANN
from cetl.methods.base import Batch, Method, Stage, Update
from cetl.methods.baselines import SourceOnly, TargetOnly
from cetl.methods.cetl import CETL, Baseline, Cetl, CetlE, CetlE2E, CetlFI
from cetl.methods.cetl_sequential import CetlF, CetlU
from cetl.methods.distillation import FSP, FitNets
from cetl.methods.drcn import DRCN
from cetl.methods.fine_tune import FineTune
from cetl.methods.fixmatch import FixMatch, FixMatchKD
from cetl.methods.hint import FeatureHint
from cetl.methods.kd import KnowledgeDistillation
from cetl.methods.linear_probe import LinearProbe
from cetl.methods.mmd import WDAN
from cetl.methods.shot import Shot
from cetl.methods.subspace import SA
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
METHODS.add("kd", KnowledgeDistillation)
METHODS.add("fitnets", FitNets)
METHODS.add("fsp", FSP)
METHODS.add("dann", DANN)
METHODS.add("adda", ADDA)
METHODS.add("wdan", WDAN)
METHODS.add("wda", WDAN)  # the CETL paper's name for WDAN (Table 5, [37])
METHODS.add("drcn", DRCN)
METHODS.add("sa", SA)
METHODS.add("fine_tune", FineTune)  # Table 3's FT-VGG
METHODS.add("shot", Shot)  # source-free: Liang et al., ICML 2020
METHODS.add("hint", FeatureHint)  # forward-only feature distillation, no decoder (METHOD.md §11)
METHODS.add("linear_probe", LinearProbe)  # a reference: S kept at inference
METHODS.add("fixmatch", FixMatch)  # semi-supervised, no S: Sohn et al., NeurIPS 2020
METHODS.add("fixmatch_kd", FixMatchKD)  # fixmatch + kd's soft term on the unlabelled images


def method_config_class(name: str) -> type[MethodConfig]:
    """The options class of method ``name`` (what :func:`cetl.config.merge` is told to use);
    unknown names fail with the registry's "did you mean"."""
    return METHODS.get(name).Config


__all__ = ["CETL", "METHODS", "Batch", "Method", "Stage", "Update", "method_config_class"]
