"""Property tests of the config loader: any YAML-like input loads or fails with a ConfigError.

A user can put anything in a config file or a ``--set``; whatever it is, ``cetl`` must either
accept it (and then dump a config that reloads to the same thing) or print one ConfigError
naming the key, never a traceback from deep inside the loader.
"""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cetl.config import ExperimentConfig, Range, dump_yaml, parse_set_overrides, read_yaml
from cetl.errors import ConfigError
from cetl.experiments import EXPERIMENTS, merge_config, resolve
from cetl.methods import METHODS

BASE = EXPERIMENTS.get("digits_mn_to_us")("smoke")


def _schema_names() -> tuple[list[str], list[object]]:
    """Every key of the schema (all sections, every method's options) and every literal choice."""
    keys: set[str] = set()
    choices: set[object] = set()
    classes = [type(BASE)] + [METHODS.get(name).Config for name in METHODS.names()]
    while classes:
        cls = classes.pop()
        hints = typing.get_type_hints(cls)
        for item in dataclasses.fields(cls):
            keys.add(item.name)
            if dataclasses.is_dataclass(hints[item.name]):
                classes.append(hints[item.name])
            if typing.get_origin(hints[item.name]) is typing.Literal:
                choices.update(typing.get_args(hints[item.name]))
    return sorted(keys), sorted(choices, key=repr)


KEYS, CHOICES = _schema_names()
NAMES = METHODS.names() + EXPERIMENTS.names()

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2**63]),
    st.integers(min_value=4300, max_value=4400).map(lambda digits: 10**digits),  # repr() refuses these
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(CHOICES + NAMES),
)
keys = st.one_of(st.sampled_from(KEYS), st.text(max_size=8), st.integers(), st.booleans(), st.none())
trees = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=4),
    max_leaves=12,
)


def _section(cls: type) -> st.SearchStrategy[dict]:
    """Mostly well-formed overrides of one section, so fuzzing reaches the value checks."""
    hints = typing.get_type_hints(cls)
    optional = {
        item.name: (_section(hints[item.name]) if dataclasses.is_dataclass(hints[item.name]) else scalars)
        for item in dataclasses.fields(cls)
    }
    return st.fixed_dictionaries({}, optional=optional)


method_sections = st.sampled_from(METHODS.names()).flatmap(
    lambda name: _section(METHODS.get(name).Config).map(lambda section: {**section, "name": name})
)
schema_trees = st.one_of(
    _section(ExperimentConfig),
    _section(ExperimentConfig).flatmap(lambda tree: method_sections.map(lambda m: {**tree, "method": m})),
)


def _load_or_config_error(tree: object) -> ExperimentConfig | None:
    try:
        return merge_config(BASE, tree)  # type: ignore[arg-type]
    except ConfigError as error:
        assert str(error) and "\n" not in str(error).splitlines()[0]
        return None


@settings(max_examples=300, deadline=None, database=None)
@given(st.one_of(trees, schema_trees))
def test_any_tree_loads_or_raises_config_error_and_what_loads_round_trips(tree):
    config = _load_or_config_error(tree)
    if config is not None:
        again = merge_config(BASE, yaml.safe_load(dump_yaml(config)))
        assert again == config


@settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(max_size=20), max_size=4))
def test_any_set_overrides_load_or_raise_config_error(items):
    with contextlib.suppress(ConfigError):
        resolve("digits_mn_to_us", profile="smoke", sets=items)


yaml_text = st.one_of(
    st.text(max_size=60),
    st.lists(
        st.sampled_from(
            [f"{k}: " for k in KEYS[:20]] + ["  ", "- ", "{", "}", "[", "]", ":", "\n", "&a ", "*a"]
        )
        | st.sampled_from(["1" * 5000, "2001-02-30", "!!float x", "!!binary zz", ".nan", "-1", "1e400"]),
        max_size=12,
    ).map("".join),
    st.binary(max_size=40).map(lambda b: b.decode("latin-1")),
)


@settings(max_examples=150, deadline=None, database=None)
@given(yaml_text)
def test_any_config_file_text_loads_or_raises_config_error(text):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(f"experiment: digits_mn_to_us\nprofile: smoke\n{text}", encoding="utf-8")
        with contextlib.suppress(ConfigError):
            resolve(str(path))


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("optimizer.lr=-1", "invalid value -1 for 'optimizer.lr': must be > 0"),
        ("optimizer.lr=.nan", "invalid value nan for 'optimizer.lr': expected a finite number"),
        ("optimizer.max_grad_norm=0", "invalid value 0 for 'optimizer.max_grad_norm': must be > 0"),
        ("train.batch_size=0", "invalid value 0 for 'train.batch_size': must be >= 1"),
        ("train.rounds=0", "invalid value 0 for 'train.rounds': must be >= 1"),
        ("data.val_fraction=1.5", "invalid value 1.5 for 'data.val_fraction': must be in [0, 1)"),
        ("data.test_limit=-5", "invalid value -5 for 'data.test_limit': must be >= 1"),
        ("seed=-1", "invalid value -1 for 'seed': must be >= 0"),
        ("source.temperature=0", "invalid value 0 for 'source.temperature': must be > 0"),
        ("method.keep_prob=1.7", "invalid value 1.7 for 'method.keep_prob': must be in [0, 1]"),
        ("method.rf_threshold=-0.5", "invalid value -0.5 for 'method.rf_threshold': must be in [0, 1]"),
        ("method.input_noise=1", "invalid value 1 for 'method.input_noise': must be in [0, 1)"),
    ],
)
def test_out_of_range_values_name_key_value_and_range(item, message):
    with pytest.raises(ConfigError) as error:
        resolve("digits_mn_to_us", profile="smoke", sets=["method.name=cetl_e", item])
    assert str(error.value) == message


def test_bounds_are_inclusive_or_exclusive_as_declared():
    config = resolve(
        "digits_mn_to_us",
        profile="smoke",
        sets=[
            "method.name=cetl_e",
            "method.keep_prob=1",
            "method.rf_threshold=0",
            "seed=0",
            "train.rounds=1",
        ],
    )
    assert (config.method.keep_prob, config.method.rf_threshold, config.train.rounds) == (1.0, 0.0, 1)
    assert 0.5 in Range(gt=0, lt=1) and 0 not in Range(gt=0) and float("nan") not in Range(ge=0)
    assert str(Range(ge=0, lt=1)) == "in [0, 1)" and str(Range(le=2)) == "<= 2"


def test_unreadable_yaml_values_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"--set seed=1{5000}: the value is not valid YAML"):
        parse_set_overrides(["seed=" + "1" * 5000])
    path = tmp_path / "bad.yaml"
    path.write_text("experiment: digits_mn_to_us\nseed: 2001-02-30\n")
    with pytest.raises(ConfigError, match=r"is not valid YAML: day is out of range"):
        read_yaml(str(path))
    path.write_bytes(b"experiment: \xff\xfe")
    with pytest.raises(ConfigError, match=r"is not valid YAML"):
        read_yaml(str(path))
    with pytest.raises(ConfigError, match=r"could not be read"):
        read_yaml(str(tmp_path))
    with pytest.raises(ConfigError, match=r"invalid value <an integer of 16610 bits> for 'seed'"):
        merge_config(BASE, {"seed": 2**16609 * -1})
