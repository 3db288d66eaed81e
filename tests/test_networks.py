"""Contract tests for every registered network, the mirror builder, and pinned sizes."""

from __future__ import annotations

import functools
import inspect

import pytest
import torch
import torchvision
from torch import nn

from cetl.errors import ConfigError
from cetl.networks import NETWORKS, TapNetwork, build_decoder

BATCH = 2
NUM_CLASSES = 10

# name -> (in_channels, image sizes to test). A new network must be added here (checked below).
INPUTS: dict[str, tuple[int, tuple[int, ...]]] = {
    "drcn": (1, (32, 28)),
    "drcn_k5": (1, (32,)),
    "drcn_bn": (1, (32,)),
    "lenet": (1, (28, 32)),
    "lenet_tllib": (1, (28,)),
    "lenet_tllib_bottleneck": (1, (28,)),
    "ci_cnn": (3, (32,)),
    "resnet26": (3, (32,)),
}
TEACHERS = {"resnet26"}  # no mirror: used as KD teachers only
CASES = [(name, size) for name, (_, sizes) in INPUTS.items() for size in sizes]
STUDENT_CASES = [case for case in CASES if case[0] not in TEACHERS]


@functools.cache
def _net(name: str, image_size: int) -> TapNetwork:
    torch.manual_seed(0)
    in_channels = INPUTS[name][0]
    return NETWORKS.get(name)(in_channels=in_channels, image_size=image_size, num_classes=NUM_CLASSES)


def _images(net: TapNetwork) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    shape = (BATCH, net.in_channels, net.image_size, net.image_size)
    return torch.rand(shape, generator=generator)  # (B, C, H, W)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_every_registered_network_is_tested() -> None:
    assert sorted(INPUTS) == NETWORKS.names()


@pytest.mark.parametrize("name", NETWORKS.names())
def test_builder_takes_exactly_the_keyword_only_contract(name: str) -> None:
    parameters = inspect.signature(NETWORKS.get(name)).parameters.values()
    assert {p.name for p in parameters} == {"in_channels", "image_size", "num_classes"}
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters)


@pytest.mark.parametrize(("name", "size"), CASES)
def test_forward_taps_and_classify_tap_agree(name: str, size: int) -> None:
    net = _net(name, size).eval()
    x = _images(net)
    with torch.no_grad():
        logits = net(x)  # (B, K)
        taps = net.forward_taps(x, net.tap_names())
        from_tap = net.classify_tap(taps[net.coupling_tap])  # (B, K)
    assert logits.shape == (BATCH, NUM_CLASSES)
    assert net.tap_names()[-1] == "logits" and net.coupling_tap in net.tap_names()
    assert list(taps) == net.tap_names()
    for tap, value in taps.items():
        assert value.shape == (BATCH, *net.tap_shape(tap)), tap
    torch.testing.assert_close(taps["logits"], logits)
    torch.testing.assert_close(from_tap, logits)


def test_forward_taps_runs_only_as_far_as_needed() -> None:
    net = _net("lenet", 28).eval()
    calls = []
    handle = net.get_submodule("fc1").register_forward_hook(lambda *args: calls.append(1))
    try:
        taps = net.forward_taps(_images(net), ["pool1", "conv1"])
    finally:
        handle.remove()
    assert list(taps) == ["pool1", "conv1"]  # in the order asked
    assert calls == []


def test_unknown_tap_lists_the_valid_ones() -> None:
    net = _net("drcn", 32)
    message = r"has no tap 'fc3'; did you mean 'fc2'\? valid taps: conv1, pool1, conv2"
    with pytest.raises(ConfigError, match=message):
        net.forward_taps(_images(net), ["fc3"])
    with pytest.raises(ConfigError, match="has no tap 'drop_fc1'"):
        net.tap_shape("drop_fc1")  # dropout outputs are not taps


@pytest.mark.parametrize(("name", "size"), STUDENT_CASES)
def test_decoder_maps_the_coupling_tap_back_to_an_image(name: str, size: int) -> None:
    net = _net(name, size)
    decoder = build_decoder(net).eval()
    # Large features, so that the output clip is exercised on both sides.
    features = 50.0 * torch.randn(BATCH, *net.tap_shape(net.coupling_tap))
    with torch.no_grad():
        reconstruction = decoder(features)  # (B, C, H, W)
    assert reconstruction.shape == (BATCH, net.in_channels, net.image_size, net.image_size)
    assert reconstruction.min() >= 0.0 and reconstruction.max() <= 1.0


def test_teacher_has_no_mirror() -> None:
    with pytest.raises(ConfigError, match=r"'resnet26' has no mirror.*teacher"):
        build_decoder(_net("resnet26", 32))


def test_drcn_decoder_is_method_md_decoder() -> None:
    # METHOD.md §7: fc 1024 → fc 12,800 → reshape 200×8×8 → conv 200 → conv 150 + upsample ×2
    # → conv 100 + upsample ×2 → conv 1, clipped to [0, 1].
    decoder = build_decoder(_net("drcn", 32))

    def describe(module: nn.Module) -> tuple[object, ...]:
        core = module[0] if isinstance(module, nn.Sequential) else module
        relu = isinstance(module, nn.Sequential) and isinstance(module[-1], nn.ReLU)
        match core:
            case nn.Linear():
                return ("linear", core.in_features, core.out_features, relu)
            case nn.Conv2d():
                return ("conv", core.in_channels, core.out_channels, core.kernel_size, relu)
            case nn.Unflatten():
                return ("unflatten", tuple(core.unflattened_size))
            case nn.Upsample():
                return ("upsample", core.scale_factor)
        return (type(core).__name__,)

    assert [(name, *describe(m)) for name, m in decoder.named_children()] == [
        ("fc2", "linear", 1024, 1024, True),
        ("fc1", "linear", 1024, 12800, True),
        ("unflatten", "unflatten", (200, 8, 8)),
        ("entry", "conv", 200, 200, (3, 3), True),
        ("conv3", "conv", 200, 150, (3, 3), True),
        ("unpool2", "upsample", 2.0),
        ("conv2", "conv", 150, 100, (3, 3), True),
        ("unpool1", "upsample", 2.0),
        ("conv1", "conv", 100, 1, (3, 3), False),
        ("clip", "Clip01"),
    ]
    # fc2' + fc1' + entry + conv3' + conv2' + conv1', weights + biases:
    # (1024·1024 + 1024) + (1024·12800 + 12800) + (200·200·9 + 200) + (200·150·9 + 150)
    # + (150·100·9 + 100) + (100·1·9 + 1)
    assert _count(decoder) == 14_935_951


def test_batch_norm_is_mirrored_except_on_the_output_layer() -> None:
    decoder = build_decoder(_net("drcn_bn", 32))
    assert isinstance(decoder.get_submodule("fc1.bn"), nn.BatchNorm1d)
    assert decoder.get_submodule("fc1.bn").num_features == 12800
    assert isinstance(decoder.get_submodule("conv3.bn"), nn.BatchNorm2d)
    assert isinstance(decoder.get_submodule("conv1"), nn.Conv2d)  # bare: no BN, no ReLU


def test_unpadded_convs_mirror_to_transposed_convs() -> None:
    decoder = build_decoder(_net("lenet", 28))
    assert isinstance(decoder.get_submodule("conv2.conv"), nn.ConvTranspose2d)
    assert isinstance(decoder.get_submodule("conv1"), nn.ConvTranspose2d)


@pytest.mark.parametrize(
    ("name", "size", "count"),
    [
        # 100·1·9+100 + 150·100·9+150 + 200·150·9+200 + 12800·1024+1024 + 1024·1024+1024
        # + 1024·10+10
        ("drcn", 32, 14_574_424),
        ("drcn_k5", 32, 14_816_024),
        # drcn - 450 conv biases + 900 BN2d + (-2048 fc biases + 4096 BN1d)
        ("drcn_bn", 32, 14_576_922),
        # 20·1·25+20 + 50·20·25+50 + 1250·500+500 + 500·10+10
        ("lenet", 32, 656_080),
        # as lenet-32 but fc1 takes 800 = 50·4·4 inputs: 1250·500 → 800·500
        ("lenet", 28, 431_080),
        ("lenet_tllib", 28, 431_080),  # the same layers; normalisation has no parameters
        # + bottleneck 500·256 (no bias under BatchNorm) + BatchNorm 2·256, head 256·10+10
        ("lenet_tllib_bottleneck", 28, 431_080 - 5_010 + 128_000 + 512 + 2_570),
        ("ci_cnn", 32, 3_721_642),
        ("resnet26", 32, 366_938),
    ],
)
def test_parameter_counts(name: str, size: int, count: int) -> None:
    assert _count(_net(name, size)) == count


def test_ci_cnn_has_under_ten_percent_of_alexnets_parameters() -> None:
    with torch.device("meta"):  # counts shapes only: no weights, no allocation
        alexnet = torchvision.models.alexnet(weights=None)
    assert _count(alexnet) == 61_100_840
    assert _count(_net("ci_cnn", 32)) < 0.1 * _count(alexnet)


def test_state_dict_keys_read_like_the_architecture() -> None:
    layers = [("conv1", "conv"), ("conv2", "conv"), ("conv3", "conv"), ("fc1", "linear")]
    layers += [("fc2", "linear")]
    expected = [f"{layer}.{core}.{kind}" for layer, core in layers for kind in ("weight", "bias")]
    assert list(_net("drcn", 32).state_dict()) == [*expected, "logits.weight", "logits.bias"]


def test_unknown_network_says_did_you_mean() -> None:
    with pytest.raises(ConfigError, match="unknown network 'drnc'; did you mean 'drcn'"):
        NETWORKS.get("drnc")


def test_unsupported_image_size_lists_the_sizes_that_work() -> None:
    with pytest.raises(ConfigError, match=r"image_size 30: 'pool2'.*: 4, 8, .*28, 32"):
        NETWORKS.get("drcn")(in_channels=1, image_size=30, num_classes=NUM_CLASSES)
    with pytest.raises(ConfigError, match="num_classes must be a positive integer"):
        NETWORKS.get("lenet")(in_channels=1, image_size=28, num_classes=0)


def test_decoder_with_every_output_below_zero_recovers() -> None:
    """A decoder pushed entirely below the clip (what mostly-black digits do to the DRCN net on a
    GPU) must still learn: with a hard clamp no gradient reaches it and the loss never moves."""
    torch.manual_seed(0)
    net = _net("lenet", 28)
    decoder = build_decoder(net)
    last_conv = [m for m in decoder.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)][-1]
    with torch.no_grad():
        last_conv.bias.fill_(-1.0)  # every output clipped to 0
    features = torch.rand(BATCH, *net.tap_shape(net.coupling_tap))
    images = torch.rand(BATCH, net.in_channels, net.image_size, net.image_size)
    optimizer = torch.optim.Adam(decoder.parameters(), lr=1e-3)
    losses = []
    for _ in range(60):
        loss = nn.functional.mse_loss(decoder(features), images)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_tllib_lenet_is_lenet_on_normalised_inputs() -> None:
    """Same weights, same outputs, as ``lenet`` fed ``(x − 0.5) / 0.5``: the recipe's input map,
    inside the network, while T1 still reconstructs the [0, 1] image."""
    tllib = _net("lenet_tllib", 28).eval()
    plain = NETWORKS.get("lenet")(in_channels=1, image_size=28, num_classes=NUM_CLASSES).eval()
    plain.load_state_dict(tllib.state_dict())
    x = _images(tllib)
    with torch.no_grad():
        torch.testing.assert_close(tllib(x), plain((x - 0.5) / 0.5))
    assert "normalize" not in tllib.tap_names()
    decoder_layers = [name for name, _ in build_decoder(tllib).named_children()]
    assert "normalize" not in decoder_layers and decoder_layers[-1] == "clip"
    bottleneck = _net("lenet_tllib_bottleneck", 28)
    assert bottleneck.coupling_tap == "bottleneck" and bottleneck.tap_shape("bottleneck") == (256,)
