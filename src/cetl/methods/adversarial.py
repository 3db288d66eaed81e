"""Adversarial domain-adaptation baselines of the CETL paper's Table 5: ``dann`` and ``adda``.

Both train through the one engine: a method lists updates and loss terms, nothing more.

- ``dann`` (ReverseGrad): Ganin & Lempitsky, ICML 2015; Ganin et al., JMLR 2016. One update
  over T2 and a domain discriminator on T2's coupling tap, through a gradient reversal layer.
- ``adda``: Tzeng et al., CVPR 2017. T2 starts as a copy of S (the ``source_only`` model, ADDA's
  pre-training), keeps S's classifier frozen, and its encoder is trained against a
  discriminator that tells S's source features from T2's target features.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import torch
from torch import Tensor, nn

from cetl.config import MethodConfig, NonNegativeFloat, PositiveFloat, PositiveInt, Range
from cetl.errors import ConfigError
from cetl.losses.adversarial import domain_loss, grad_reverse, grl_coefficient, inverted_label_loss
from cetl.losses.classification import classification_loss
from cetl.methods.base import Batch, Component, Method, Stage, Update, inverse_decay
from cetl.networks import TapNetwork
from cetl.networks.base import LOGITS
from cetl.networks.discriminator import DomainDiscriminator
from cetl.source import FrozenSource


@dataclass(frozen=True, kw_only=True)
class DannConfig(MethodConfig):
    """Options of ``dann``."""

    name: str = "dann"
    gamma: NonNegativeFloat = 10.0
    """γ of the reversal coefficient's schedule ``λ_p = 2 / (1 + exp(−γ p)) − 1`` (DANN: 10)."""
    domain_weight: NonNegativeFloat = 1.0
    """Weight of the domain loss in the one update: scales D's gradient and, times ``λ_p``
    through the reversal, T2's (TLlib's ``trade_off``)."""
    hidden: PositiveInt = 1024
    """Width of the discriminator's two hidden layers (1024 as TLlib's DANN; 500 as ADDA's)."""
    lr_anneal_alpha: NonNegativeFloat = 10.0
    """α of DANN's learning-rate annealing ``μ_p = μ_0 / (1 + α p)^β`` (§5.2.2: 10); 0 keeps the
    rate constant (this project's DANN before 2026-12-05)."""
    lr_anneal_beta: NonNegativeFloat = 0.75
    """β of the annealing (§5.2.2: 0.75)."""
    discriminator_batch_norm: bool = False
    """BatchNorm in the discriminator's hidden layers, as TLlib's DANN (source and target
    features pass through it as one batch either way)."""


class DANN(Method):
    """DANN (ReverseGrad): Ganin & Lempitsky, ICML 2015, Eq. 1 with the gradient reversal layer.

    Each step, one update over T2 and the discriminator D minimises

        L_c(T2(x_s), y_s) + domain_weight · L_d(D(R_λ(f_s)), D(R_λ(f_t)))

    where f are T2's coupling-tap features of the source and target batches and ``R_λ``
    reverses gradients scaled by ``λ_p`` (``batch.progress``). D descends ``L_d``; through the
    reversal, T2's feature layers ascend it: the saddle point of Eq. 1 in one backward pass.

    Source and target images go through T2 as one batch, so BatchNorm (``drcn_bn``) sees both
    domains, as in the papers' implementations. The learning rate is annealed as the paper's
    §5.2.2, ``μ_p = μ_0 / (1 + α p)^β`` with α = 10, β = 0.75 and ``μ_0`` the run's
    ``optimizer.lr`` (the update's ``lr_factor``), over the same budget as every other method.

    Args:
        config: the method's options.
        target_net: T2; the discriminator reads its coupling tap.
    """

    Config = DannConfig
    components: ClassVar[frozenset[Component]] = frozenset()

    def __init__(self, config: DannConfig, *, target_net: TapNetwork) -> None:
        super().__init__()
        self.config = config
        self.target_net = target_net
        self.discriminator = DomainDiscriminator(
            target_net.tap_shape(target_net.coupling_tap),
            hidden=config.hidden,
            batch_norm=config.discriminator_batch_norm,
        )

    def stages(self, round_index: int) -> list[Stage]:
        update = Update(
            "target_net_and_discriminator",
            (self.target_net, self.discriminator),
            self._losses,
            {"domain": self.config.domain_weight},
            lr_factor=self._annealing if self.config.lr_anneal_alpha > 0 else None,
        )
        return [Stage("dann", ("labelled", "target"), (update,))]

    def _annealing(self, progress: float) -> float:
        return inverse_decay(progress, self.config.lr_anneal_alpha, self.config.lr_anneal_beta)

    def _losses(self, batch: Batch) -> dict[str, Tensor]:
        features = self.target_net.coupling(torch.cat([batch.x, batch.x_tgt]))
        source = features[: len(batch.x)]
        coefficient = grl_coefficient(batch.progress, self.config.gamma)
        # One discriminator pass over both domains: with BatchNorm in D, separate passes would
        # give each domain its own batch statistics (a give-away); without it, the same numbers.
        logits = self.discriminator(grad_reverse(features, coefficient))
        domain = domain_loss(logits[: len(batch.x)], logits[len(batch.x) :])
        return {
            "classify": classification_loss(self.target_net.classify_tap(source), batch.y),
            "domain": domain,
        }

    def predict(self, x: Tensor) -> Tensor:
        return self.target_net(x)

    def trainable_networks(self) -> dict[str, nn.Module]:
        return {"target_net": self.target_net, "discriminator": self.discriminator}


@dataclass(frozen=True, kw_only=True)
class AddaConfig(MethodConfig):
    """Options of ``adda``."""

    name: str = "adda"
    adversary_tap: Literal["coupling", "logits"] = "coupling"
    """Where the discriminator compares S and T2. ``coupling``: the paper's description, the
    encoder's output (T2's coupling tap), with S's classifier layers frozen in T2. ``logits``:
    the authors' code (erictzeng/adda, ``train_adda.py``), the whole network's output, with
    every layer of T2 adapted."""
    hidden: PositiveInt = 500
    """Width of the discriminator's two hidden layers (ADDA's digits: 500)."""
    lr: PositiveFloat | None = 2e-4
    """Adam learning rate of both updates, the authors' 2e-4 (``None``: the run's
    ``optimizer.lr``). At the ``quick`` profile's 1e-3 the discriminator wins within a round and
    T2's features collapse (MNIST→USPS seed 0: 8.3% target, 28.5% source validation; at 2e-4:
    78.7% / 95.5%); source validation alone shows the collapse, no target label is needed."""
    beta1: Annotated[float, Range(ge=0, lt=1)] = 0.5
    """Adam's β1 of both updates (the authors': 0.5)."""


class ADDA(Method):
    """ADDA: Tzeng et al., CVPR 2017: pre-training on source, then adversarial adaptation.

    Pre-training is S, this seed's ``source_only`` run (the source encoder M_s and classifier
    C). T2 starts as a copy of S. Each step runs two updates in order:

    1. ``discriminator``: ``L_advD`` with S's features of the source batch labelled 1 and T2's
       features of the target batch labelled 0;
    2. ``target_encoder``: T2 against ``L_advM``, the GAN loss with inverted labels, on the
       target batch.

    The features are read at ``adversary_tap``: at the coupling tap, T2's layers after it (C)
    stay frozen, so T2 is M_t followed by S's C, as the paper describes; at the logits, all of
    T2 is the mapping, as the authors' code does. S is read at that tap directly (through its
    frozen model, under ``no_grad``), whatever ``source.tap`` says.

    No classification loss trains T2, so ``classify_steps`` is 0. Model selection keeps the
    engine's default (source validation): T2 on source images still says whether adaptation
    has destroyed the source-discriminative features, the failure the adversarial phase can
    cause, without reading target labels.

    The adversarial phase needs a small learning rate: the authors use Adam at 2e-4 (β1 0.5).
    With the ``quick`` profile's 1e-3, T2's features collapse within the first round (MNIST→USPS
    seed 0: source validation 28.5%); with ``--set optimizer.lr=0.0002`` it reached 95.5%.

    T2's features are computed in eval mode for both updates: S's are (S is frozen), and T2
    with dropout (``lenet``) would otherwise differ from S by dropout noise alone, which the
    discriminator could detect without looking at the domain. With BatchNorm nets, T2 thus
    normalises with S's running statistics throughout.

    Args:
        config: the method's options.
        target_net: T2, same architecture as S; loaded with S's weights here.
        source: S, a network of this project (``source.kind`` ``source_only`` or ``run``).

    Raises:
        ConfigError: S is not a project network of T2's architecture.
    """

    Config = AddaConfig
    components: ClassVar[frozenset[Component]] = frozenset({"source"})

    def __init__(self, config: AddaConfig, *, target_net: TapNetwork, source: FrozenSource) -> None:
        super().__init__()
        if not isinstance(source.model, TapNetwork):
            raise ConfigError(
                f"adda needs S to be a network of this project ({source.description} is not); use "
                f"source.kind=source_only or source.kind=run"
            )
        source.copy_into(target_net, why="adda initialises T2 from S")
        self.config = config
        self.source = source
        self.target_net = target_net
        self.tap = target_net.coupling_tap if config.adversary_tap == "coupling" else LOGITS
        for module in _layers_after(target_net, self.tap):
            module.requires_grad_(False)  # S's classifier C, reused unchanged
        self.discriminator = DomainDiscriminator(target_net.tap_shape(self.tap), hidden=config.hidden)

    def stages(self, round_index: int) -> list[Stage]:
        settings = {"beta1": self.config.beta1} | ({"lr": self.config.lr} if self.config.lr else {})
        discriminator = Update(
            "discriminator", (self.discriminator,), self._discriminator_losses, optimizer=settings
        )
        encoder = Update("target_encoder", (self.target_net,), self._encoder_losses, optimizer=settings)
        return [Stage("adda", ("labelled", "target"), (discriminator, encoder))]

    @torch.no_grad()
    def _source_features(self, x: Tensor) -> Tensor:
        """S's output at the adversary tap; S's model is frozen and in eval mode (FrozenSource)."""
        return self.source.model.forward_taps(self.source.input_transform(x), [self.tap])[self.tap]

    def _target_features(self, x: Tensor) -> Tensor:
        with _eval_mode(self.target_net):
            return self.target_net.forward_taps(x, [self.tap])[self.tap]

    def _discriminator_losses(self, batch: Batch) -> dict[str, Tensor]:
        source = self._source_features(batch.x)
        with torch.no_grad():
            target = self._target_features(batch.x_tgt)
        return {"domain": domain_loss(self.discriminator(source), self.discriminator(target))}

    def _encoder_losses(self, batch: Batch) -> dict[str, Tensor]:
        return {"adversarial": inverted_label_loss(self.discriminator(self._target_features(batch.x_tgt)))}

    def predict(self, x: Tensor) -> Tensor:
        return self.target_net(x)

    def trainable_networks(self) -> dict[str, nn.Module]:
        return {"target_net": self.target_net, "discriminator": self.discriminator}


def _layers_after(net: TapNetwork, tap: str) -> list[nn.Module]:
    """The layers of ``net``'s chain after ``tap`` (its classifier when ``tap`` is the coupling tap)."""
    names = [name for name, _ in net.named_children()]
    return [net.get_submodule(name) for name in names[names.index(tap) + 1 :]]


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Run ``module`` in eval mode for the block, then restore its previous mode."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)
