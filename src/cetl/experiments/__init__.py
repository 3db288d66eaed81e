"""Shipped experiments: Python functions ``profile -> ExperimentConfig``, in one registry.

Names follow ``<setting>_<source>_to_<target>``; ``cetl list experiments`` shows them.
:func:`resolve` is the one path from a command line (experiment or YAML file, method,
profile, seed, ``--set``) to a validated config.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cetl.config import PROFILES, ExperimentConfig, merge, parse_set_overrides, read_yaml
from cetl.errors import ConfigError
from cetl.experiments import (
    any_to_own,
    digits,
    distillation,
    label_efficiency,
    natural,
    tllib_digits,
    transfer,
)
from cetl.methods import method_config_class
from cetl.registry import Registry, did_you_mean

ExperimentFn = Callable[[str], ExperimentConfig]
EXPERIMENTS: Registry[ExperimentFn] = Registry("experiment", contract="fn(profile: str) -> ExperimentConfig")
for _module in (digits, tllib_digits, natural, distillation, transfer, any_to_own, label_efficiency):
    for _name, _fn in _module.EXPERIMENTS.items():
        EXPERIMENTS.add(_name, _fn)
METHOD_POLICIES: dict[str, dict[str, dict[str, Any]]] = dict(tllib_digits.POLICIES)
"""Experiment → method → overrides that experiment applies when a run picks that method (a
published recipe's per-method optimiser and network, e.g. TLlib's ``erm``/``dann`` settings)."""

DEFAULT_PROFILE = "quick"


def merge_config(config: ExperimentConfig, overrides: dict[str, Any]) -> ExperimentConfig:
    """:func:`cetl.config.merge` told where each method's options class lives, so that an
    override may change ``method.name`` (every merge above the schema goes through here)."""
    return merge(config, overrides, method_configs=method_config_class)


def is_config_file(target: str) -> bool:
    """Whether a ``cetl train`` target names a YAML file rather than an experiment."""
    return target.endswith((".yaml", ".yml")) or Path(target).is_file()


def resolve(
    target: str,
    *,
    method: str | None = None,
    profile: str | None = None,
    seed: int | None = None,
    sets: list[str] | None = None,
) -> ExperimentConfig:
    """The validated config for a command line.

    Precedence, lowest first: the experiment's profile defaults, its policy for the chosen
    method (:data:`METHOD_POLICIES`), the YAML file, ``--method``, ``--seed``, then ``--set``
    overrides. A ``--method`` that differs from the file's method starts from that method's
    defaults (and policy).

    Raises:
        ConfigError: unknown experiment, profile, method or key, or a wrong type.
    """
    file_overrides: dict[str, Any] = {}
    if is_config_file(target):
        file_overrides = read_yaml(target)
        name = file_overrides.pop("experiment", None)
        if not isinstance(name, str):
            raise ConfigError(
                f"config file '{target}' must name the experiment it changes, e.g. "
                f"'experiment: digits_mn_to_us' (known: {', '.join(EXPERIMENTS.names())})"
            )
        file_profile = file_overrides.pop("profile", None)
        profile = profile or file_profile
    else:
        name = target
    profile = profile or DEFAULT_PROFILE
    if profile not in PROFILES:
        raise ConfigError(
            f"unknown profile '{profile}';{did_you_mean(profile, list(PROFILES))} "
            f"known profiles: {', '.join(PROFILES)}"
        )
    config = EXPERIMENTS.get(name)(profile)
    file_method = file_overrides.get("method", {})
    chosen = method or (file_method.get("name") if isinstance(file_method, dict) else None)
    config = _with_policy(config, name, chosen or config.method.name)
    config = merge_config(config, file_overrides)
    if method is not None and config.method.name != method:
        config = merge_config(config, {"method": {"name": method}})
        config = _with_policy(config, name, method)
    if seed is not None:
        config = merge_config(config, {"seed": seed})
    if sets:
        config = merge_config(config, parse_set_overrides(sets))
    return config


def _with_policy(config: ExperimentConfig, experiment: str, method: str) -> ExperimentConfig:
    """``config`` with ``experiment``'s policy for ``method`` applied (unchanged without one)."""
    policy = METHOD_POLICIES.get(experiment, {}).get(method)
    if policy is None:
        return config
    sections = {key: value for key, value in policy.items() if key != "method"}
    return merge_config(config, {"method": {"name": method, **policy.get("method", {})}, **sections})
