"""Adversarial domain-adaptation losses: gradient reversal (DANN) and the domain losses (DANN, ADDA).

- Ganin & Lempitsky, "Unsupervised Domain Adaptation by Backpropagation", ICML 2015, and
  Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 2016 (DANN,
  "ReverseGrad" in the CETL paper's Table 5): the saddle-point objective of ICML Eq. 1,
  ``E = L_y − λ L_d``, optimised by plain back-propagation through a gradient reversal layer,
  with λ ramped by ``λ_p = 2 / (1 + exp(−γ p)) − 1``, γ = 10.
- Tzeng, Hoffman, Saenko, Darrell, "Adversarial Discriminative Domain Adaptation", CVPR 2017
  (ADDA): the discriminator loss ``L_advD`` and the target encoder's GAN loss with inverted
  labels, ``L_advM = −E_t log D(M_t(x_t))``.

Domains are labelled source = 1, target = 0 throughout.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


class GradientReversal(torch.autograd.Function):
    """DANN's gradient reversal layer ``R_λ``: identity forward, ``−λ · grad`` backward.

    Ganin & Lempitsky 2015 (the pseudo-function ``R(x) = x``, ``dR/dx = −I``), with
    the λ of Eq. 1 folded into the backward pass so one backward step gives the feature
    extractor ``−λ ∂L_d/∂θ_f`` while the domain classifier still descends ``∂L_d/∂θ_d``.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, coefficient: float) -> Tensor:
        ctx.coefficient = coefficient
        return x.view_as(x)  # a new tensor object, so autograd records this node

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None]:
        return -ctx.coefficient * grad_output, None


def grad_reverse(x: Tensor, coefficient: float) -> Tensor:
    """``x`` unchanged, with gradients flowing back through it multiplied by ``−coefficient``.

    Args:
        x: features of any shape.
        coefficient: λ ≥ 0 of DANN's Eq. 1 (usually :func:`grl_coefficient` of the progress).
    """
    return GradientReversal.apply(x, coefficient)


def grl_coefficient(progress: float, gamma: float = 10.0) -> float:
    """DANN's schedule ``λ_p = 2 / (1 + exp(−γ p)) − 1`` (Ganin & Lempitsky 2015, training procedure).

    It rises from 0 at the start (when the domain classifier's signal is noise) to nearly 1.

    Args:
        progress: p, the fraction of training done, in [0, 1].
        gamma: γ, 10 in both DANN papers.
    """
    return 2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0


def domain_loss(source_logits: Tensor, target_logits: Tensor) -> Tensor:
    """The domain classifier's loss: mean binary cross-entropy, source = 1, target = 0.

    DANN's ``L_d`` (ICML 2015 Eq. 1) and ADDA's ``L_advD`` (both domains' mean log-loss). Each
    domain's mean counts equally, ``½ (BCE_s + BCE_t)``, so unequal batch sizes do not tilt the
    discriminator; with equal sizes this is the mean over the concatenated batch, as in DANN.
    ADDA writes ``L_advD`` as the sum of the two means, twice this; the factor only rescales
    the discriminator's gradient, which Adam undoes.

    Args:
        source_logits: discriminator logits of source features.
        target_logits: discriminator logits of target features.

    Returns:
        A scalar.

    Shape:
        ``(B_s,)`` and ``(B_t,)``.
    """
    source = F.binary_cross_entropy_with_logits(source_logits.float(), torch.ones_like(source_logits.float()))
    target = F.binary_cross_entropy_with_logits(
        target_logits.float(), torch.zeros_like(target_logits.float())
    )
    return 0.5 * (source + target)


def inverted_label_loss(target_logits: Tensor) -> Tensor:
    """ADDA's target-encoder loss ``L_advM = −E_t log D(M_t(x_t))``: the GAN loss with inverted labels.

    The target features are scored as if they were source features (label 1): this gives the
    encoder strong gradients even when the discriminator is confident, unlike minimising
    ``−L_advD`` (Tzeng et al. 2017, Sec. 3, on the "inverted label" GAN loss).

    Args:
        target_logits: discriminator logits of the target encoder's features.

    Returns:
        A scalar.

    Shape:
        ``(B_t,)``.
    """
    logits = target_logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
