import dataclasses

import pytest
import yaml

from cetl.config import ExperimentConfig, dump_yaml, parse_set_overrides
from cetl.errors import ConfigError
from cetl.experiments import merge_config, resolve


def test_unknown_top_level_key_names_it_with_suggestion_and_valid_keys():
    with pytest.raises(ConfigError) as error:
        resolve("digits_mn_to_us", sets=["sed=1"])
    assert str(error.value) == (
        "unknown key 'sed'; did you mean 'seed'? valid keys: experiment, setting, profile, seed, "
        "data, network, source, method, optimizer, train, engine"
    )


def test_unknown_nested_key_names_its_section():
    with pytest.raises(ConfigError) as error:
        resolve("digits_mn_to_us", sets=["train.round=3"])
    message = str(error.value)
    assert message.startswith(
        "unknown key 'train.round'; did you mean 'rounds'? valid keys in train: rounds,"
    )


def test_wrong_types_are_refused_with_the_expected_type():
    with pytest.raises(
        ConfigError, match=r"^invalid value 'many' for 'train.rounds': expected int, got str$"
    ):
        resolve("digits_mn_to_us", sets=["train.rounds=many"])
    with pytest.raises(ConfigError, match=r"expected int, got bool"):
        resolve("digits_mn_to_us", sets=["seed=true"])
    with pytest.raises(ConfigError, match=r"expected int or null"):
        resolve("digits_mn_to_us", sets=["data.test_limit=abc"])


def test_literal_fields_list_the_choices():
    with pytest.raises(ConfigError) as error:
        resolve("digits_mn_to_us", sets=["data.protocol=adaa"])
    assert str(error.value) == (
        "invalid value 'adaa' for 'data.protocol'; did you mean 'adda'? "
        "expected one of: 'drcn', 'adda', 'tllib', 'cifar', 'cifar10s', 'stl_cifar'"
    )


def test_section_given_a_scalar_is_refused():
    with pytest.raises(ConfigError, match=r"'train' must be a mapping"):
        resolve("digits_mn_to_us", sets=["train=5"])


def test_int_is_accepted_for_float_and_set_values_parse_as_yaml():
    config = resolve("digits_mn_to_us", sets=["optimizer.lr=1", "data.test_limit=null", "train.amp=false"])
    assert config.optimizer.lr == 1.0 and isinstance(config.optimizer.lr, float)
    assert config.data.test_limit is None
    assert config.train.amp is False


def test_parse_set_overrides_nests_and_rejects_malformed_items():
    assert parse_set_overrides(["a.b=1", "a.c=x", "d=[1, 2]"]) == {"a": {"b": 1, "c": "x"}, "d": [1, 2]}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set_overrides(["no_equals_sign"])


def test_unknown_method_and_profile_and_experiment_fail_with_suggestions():
    with pytest.raises(ConfigError, match=r"unknown method 'source_onyl'; did you mean 'source_only'\?"):
        resolve("digits_mn_to_us", method="source_onyl")
    with pytest.raises(ConfigError, match=r"unknown profile 'quik'; did you mean 'quick'\?"):
        resolve("digits_mn_to_us", profile="quik")
    with pytest.raises(ConfigError, match=r"known experiments: digits_mn_to_sv, digits_mn_to_us,"):
        resolve("mnist_to_usps")


def test_dumped_config_round_trips_through_a_yaml_file(tmp_path):
    config = resolve(
        "digits_us_to_mn", method="target_only", profile="smoke", seed=3, sets=["train.rounds=5"]
    )
    path = tmp_path / "config.yaml"
    path.write_text(dump_yaml(config))
    assert resolve(str(path)) == config


def test_yaml_file_merges_onto_the_named_experiment_and_cli_flags_win(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "experiment": "digits_mn_to_us",
                "profile": "smoke",
                "method": {"name": "target_only"},
                "train": {"rounds": 7},
                "seed": 4,
            }
        )
    )
    config = resolve(str(path), seed=9)
    assert (config.profile, config.method.name, config.train.rounds, config.seed) == (
        "smoke",
        "target_only",
        7,
        9,
    )
    assert resolve(str(path), profile="quick").profile == "quick"
    assert resolve(str(path), method="source_only").method.name == "source_only"


def test_yaml_file_must_name_an_experiment(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: {rounds: 3}\n")
    with pytest.raises(ConfigError, match=r"must name the experiment it changes"):
        resolve(str(path))
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match=r"must hold a mapping"):
        resolve(str(path))
    with pytest.raises(ConfigError, match=r"does not exist"):
        resolve(str(tmp_path / "absent.yaml"))


def test_configs_are_frozen():
    config = resolve("digits_mn_to_us")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 1  # type: ignore[misc]
    assert isinstance(merge_config(config, {}), ExperimentConfig)


def test_scientific_notation_without_a_dot_is_a_float(tmp_path):
    # PyYAML (YAML 1.1) reads 2e-4 as a string; a user writing it means the number.
    config = resolve(
        "digits_mn_to_us", profile="smoke", sets=["optimizer.lr=2e-4", "optimizer.max_grad_norm=1E1"]
    )
    assert config.optimizer.lr == 2e-4 and config.optimizer.max_grad_norm == 10.0
    path = tmp_path / "c.yaml"
    path.write_text("experiment: digits_mn_to_us\noptimizer:\n  lr: 3e-4\n")
    assert resolve(str(path), profile="smoke").optimizer.lr == 3e-4
    with pytest.raises(ConfigError, match="expected int"):
        resolve("digits_mn_to_us", profile="smoke", sets=["train.rounds=2e1"])
