"""Target networks (T2) with named taps, the mirrored decoder (T1), and the NETWORKS registry.

Networks are chosen by name (``cetl list networks``). Every builder takes ``in_channels``,
``image_size`` and ``num_classes`` by keyword and returns a :class:`TapNetwork`;
:func:`build_decoder` makes T1 for any network built from a layer spec. Every builder is
registered here, explicitly, so no name depends on someone having imported its module.
"""

from __future__ import annotations

from cetl.networks.base import NetworkBuilder, TapNetwork
from cetl.networks.ci_cnn import ci_cnn
from cetl.networks.digit_nets import drcn, drcn_bn, drcn_k5, lenet, lenet_tllib, lenet_tllib_bottleneck
from cetl.networks.mirror import build_decoder
from cetl.networks.resnet_cifar import resnet26
from cetl.registry import Registry

NETWORKS: Registry[NetworkBuilder] = Registry(
    "network", contract="builder(*, in_channels, image_size, num_classes) -> TapNetwork"
)
NETWORKS.add("drcn", drcn)
NETWORKS.add("drcn_k5", drcn_k5)
NETWORKS.add("drcn_bn", drcn_bn)
NETWORKS.add("lenet", lenet)
NETWORKS.add("lenet_tllib", lenet_tllib)
NETWORKS.add("lenet_tllib_bottleneck", lenet_tllib_bottleneck)
NETWORKS.add("ci_cnn", ci_cnn)
NETWORKS.add("resnet26", resnet26)

__all__ = ["NETWORKS", "NetworkBuilder", "TapNetwork", "build_decoder"]
