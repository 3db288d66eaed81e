import pytest

from cetl.config import MethodConfig
from cetl.data.datasets import DATASETS
from cetl.errors import ConfigError
from cetl.experiments import EXPERIMENTS
from cetl.methods import METHODS, Method
from cetl.networks import NETWORKS
from cetl.registry import Registry


def test_get_unknown_name_suggests_the_closest_and_lists_all():
    registry: Registry[int] = Registry("widget")
    registry.add("alpha", 1)
    registry.add("beta", 2)
    with pytest.raises(ConfigError) as error:
        registry.get("alpah")
    assert str(error.value) == "unknown widget 'alpah'; did you mean 'alpha'? known widgets: alpha, beta"


def test_upper_case_names_get_the_lower_case_suggestion():
    with pytest.raises(ConfigError, match=r"unknown method 'CETL'; did you mean 'cetl'\?"):
        METHODS.get("CETL")
    with pytest.raises(ConfigError, match=r"did you mean 'fine_tune'\?"):
        METHODS.get("Fine_Tune")


def test_get_unknown_name_without_close_match_has_no_suggestion():
    registry: Registry[int] = Registry("widget")
    registry.add("alpha", 1)
    with pytest.raises(ConfigError, match=r"^unknown widget 'zzz'; known widgets: alpha$"):
        registry.get("zzz")


def test_duplicate_and_upper_case_names_are_refused():
    registry: Registry[int] = Registry("widget")
    registry.add("alpha", 1)
    with pytest.raises(KeyError, match="twice"):
        registry.add("alpha", 2)
    with pytest.raises(KeyError, match="lower-case"):
        registry.add("Beta", 2)


def test_shipped_registries_hold_what_the_cli_contract_names():
    assert {"digits_mn_to_us", "digits_us_to_mn"} <= set(EXPERIMENTS.names())
    assert {"source_only", "target_only"} <= set(METHODS.names())
    assert {"drcn", "drcn_k5", "drcn_bn", "lenet", "ci_cnn", "resnet26"} <= set(NETWORKS.names())
    assert set(DATASETS.names()) == {"mnist", "usps", "svhn", "cifar10", "cifar100", "stl10"}


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_declares_config_and_labelled_domain(name):
    method = METHODS.get(name)
    assert issubclass(method, Method)
    assert issubclass(method.Config, MethodConfig)
    assert method.labelled_domain in ("source", "target")


@pytest.mark.parametrize("name", EXPERIMENTS.names())
@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
def test_every_experiment_builds_every_profile(name, profile):
    config = EXPERIMENTS.get(name)(profile)
    assert config.experiment == name
    assert config.profile == profile
    NETWORKS.get(config.network.name)  # resolves
    DATASETS.get(config.data.source)
    DATASETS.get(config.data.target)
