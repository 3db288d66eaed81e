"""Exponential moving averages of network weights, kept by the loop for methods that ask.

FixMatch (Sohn et al. 2020, §4 "we use an exponential moving average of model parameters" to
report results) and mean-teacher methods evaluate an average of the weights, not the weights
being trained. The average is updated after every optimiser step, and the loop owns every
step, so the average lives here (DESIGN.md: a method computes losses, the engine does the
rest); a method only names the networks and their decay (:meth:`Method.averaged_networks`).

After the n-th step (n = 1, 2, …) ``θ̄ ← d_n·θ̄ + (1 − d_n)·θ`` for every floating-point
parameter, with ``d_n = min(d, n / (n + 9))`` — TensorFlow's ``ExponentialMovingAverage`` with
``num_updates``, which FixMatch's code uses — so that in a short CPU run the average is not
dominated by the initial weights (d = 0.999 remembers about 1,000 steps; a quick run may take
300). Buffers (BatchNorm's running statistics, counters) are copied, as the reference
implementations do, since a running mean is already an average. Evaluation, model selection
and ``best.pt`` see the average (:meth:`WeightAverage.applied`); ``last.pt`` keeps the trained
weights and the average beside them, so a resumed run continues both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from cetl.errors import ConfigError


class WeightAverage:
    """The moving averages of ``networks[name]`` for each ``name`` in ``decays``.

    Args:
        networks: the method's trainable networks (:meth:`Method.trainable_networks`).
        decays: network name → decay ``d`` in [0, 1) per optimiser step (e.g. 0.999).

    Raises:
        ConfigError: a name that is not a trainable network, or a decay outside [0, 1).
    """

    def __init__(self, networks: Mapping[str, nn.Module], decays: Mapping[str, float]) -> None:
        for name, decay in decays.items():
            if name not in networks:
                raise ConfigError(
                    f"the method averages network '{name}', which it does not train ({', '.join(networks)})"
                )
            if not 0.0 <= decay < 1.0:
                raise ConfigError(f"the weight average of '{name}' needs a decay in [0, 1), got {decay}")
        self.decays = dict(decays)
        self.networks = {name: networks[name] for name in decays}
        self._parameters = {
            name: {key for key, _ in network.named_parameters()} for name, network in self.networks.items()
        }
        self.updates = 0
        self.averages: dict[str, dict[str, Tensor]] = {
            name: {key: value.detach().clone() for key, value in network.state_dict().items()}
            for name, network in self.networks.items()
        }

    @torch.no_grad()
    def update(self) -> None:
        """One step of every average toward the networks' current weights."""
        self.updates += 1
        for name, network in self.networks.items():
            decay = min(self.decays[name], self.updates / (self.updates + 9))
            average, weight = self.averages[name], 1.0 - decay
            for key, value in network.state_dict().items():
                if key in self._parameters[name] and value.is_floating_point():
                    average[key].lerp_(value.detach(), weight)
                else:
                    average[key].copy_(value)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the networks for the ``with`` block, the trained ones after."""
        trained = {
            name: {key: value.detach().clone() for key, value in network.state_dict().items()}
            for name, network in self.networks.items()
        }
        try:
            for name, network in self.networks.items():
                network.load_state_dict(self.averages[name])
            yield
        finally:
            for name, network in self.networks.items():
                network.load_state_dict(trained[name])

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates, "networks": self.averages}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.updates = int(state["updates"])
        for name in self.networks:
            for key, value in state["networks"][name].items():
                self.averages[name][key].copy_(value)
