"""Dynamic Weight Allocation as one component: estimate a (Generalized) Fisher at a stage's end,
anchor θ* there, and return the penalty that protects it later (CETL paper Eqs. 7–11; METHOD.md
D4–D6).

A method that uses it says *what* to protect — the network, the image stream, the loss that
learnt it and the loss it competes with — and supplies the per-micro-batch loss functions;
everything about *how* (micro-batch draws agreed over ranks, sampled targets, the RF, the GFI
mask, θ*, the penalty and its state across a resume) lives here. The training processes come
from the engine through :class:`Collectives` (its ``World``): this component never looks for
them, and the data it reads are the images the method was handed in ``prepare``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol

import torch
from torch import Tensor, nn

from cetl.fisher.estimate import Stacked, estimate_fisher, normalise_fisher
from cetl.fisher.gfi import DWAPenalty, generalized_fisher, kept_fractions
from cetl.fisher.relative import relative_fisher, rf_quantiles

FisherLoss = Callable[[tuple[Tensor, ...]], Tensor]
"""``fn((indices, *noise)) -> L̃`` on one micro-batch (D4); see :meth:`DWAProtection.estimate`."""


class Collectives(Protocol):
    """What an estimate needs from the training processes: the engine's
    :class:`~cetl.engine.distributed.World` (a single process's is a no-op)."""

    @property
    def is_main(self) -> bool: ...

    @property
    def distributed(self) -> bool: ...

    def shard(self, rows: Tensor) -> Tensor: ...

    def sum(self, tensor: Tensor) -> Tensor: ...

    def broadcast(self, tensor: Tensor) -> Tensor: ...


class DWAProtection:
    """The DWA terms of one method (``dwa1``…), each a penalty with its own GFI and θ*.

    Args:
        generalized: mask the Fisher with the RF (Eq. 10, ``cetl``), or keep it whole (EWC,
            ``cetl_fi``).
        sampled: D4's targets drawn from the model (``True``) or the true ones.
        batches, batch_size: K micro-batches of m images per estimate (D4).
        normalise: divide F by its mean, so λ is scale-free across losses (D4).
        rf_estimator, rf_shared_zeros: D5 and its refinement.
        rf_threshold, keep_prob: u and p of Eq. 10.
        reduction: Eq. 11 literally (``sum``) or divided by the parameter count (``mean``).
    """

    def __init__(
        self,
        *,
        generalized: bool,
        sampled: bool,
        batches: int,
        batch_size: int,
        normalise: bool,
        rf_estimator: Literal["gaussian", "binned"],
        rf_shared_zeros: Literal["agree", "exclude"],
        rf_threshold: float,
        keep_prob: float,
        reduction: Literal["mean", "sum"],
    ) -> None:
        self.generalized = generalized
        self.sampled = sampled
        self.batches = batches
        self.batch_size = batch_size
        self.normalise = normalise
        self.rf_estimator = rf_estimator
        self.rf_shared_zeros = rf_shared_zeros
        self.rf_threshold = rf_threshold
        self.keep_prob = keep_prob
        self.reduction = reduction
        self.penalties: dict[str, DWAPenalty] = {}  # "dwa1".."dwa3", each with its θ*

    def estimate(
        self,
        name: str,
        network: nn.Module,
        *,
        images: Tensor,
        losses: tuple[str, str],
        loss_for: Callable[[str, int], FisherLoss],
        num_classes: int,
        modules: Sequence[nn.Module],
        world: Collectives,
    ) -> dict[str, float]:
        """Estimate F of ``losses[0]`` and its RF against ``losses[1]`` on ``network``'s
        parameters, draw the GFI (or keep F) and anchor DWA term ``name`` at θ* = now.

        Args:
            images: the stream the micro-batches index (``(N, C, H, W)``).
            loss_for: ``(loss name, slot) -> fn((indices, *noise))``; ``noise[slot]`` is that
                loss's pre-drawn noise on the micro-batch, so the estimate does not depend on
                which rank evaluates it, and the estimator may batch micro-batches.
            num_classes: shapes the sampled classification noise.
            modules: put in eval mode during the pass (BatchNorm statistics must not drift).

        Returns:
            The numbers logged with the stage: kept fractions, RF quantiles per layer, time.
        """
        started = time.perf_counter()
        # Ranks draw from different RNG streams (the engine seeds them per rank), so rank 0's
        # draws are broadcast: micro-batches, sampled targets and the GFI mask agree everywhere.
        rows = world.broadcast(torch.randint(len(images), (self.batches, self.batch_size)))
        mask_seed = int(world.broadcast(torch.randint(2**62, (1,))))
        # One seed per (micro-batch, loss): sampled targets independent of how K is split over ranks.
        noise_seeds = world.broadcast(torch.randint(2**62, (self.batches, len(losses))))
        # Noise drawn here from those seeds, not inside the losses: the estimator can then
        # differentiate several micro-batches in one batched pass (``Stacked``).
        noise = (
            [self._noise(key, noise_seeds[:, slot], images, num_classes) for slot, key in enumerate(losses)]
            if self.sampled
            else []
        )
        micro_batches = Stacked(tuple(t.to(images.device) for t in (rows, *noise)))
        binned = self.rf_estimator == "binned"  # keeps per-sample Fishers: every rank does all K
        if not binned:
            micro_batches = micro_batches.rows(world.shard(torch.arange(len(micro_batches))))
        loss_fns = {key: loss_for(key, slot) for slot, key in enumerate(losses)}
        parameters = dict(network.named_parameters())
        estimate = estimate_fisher(
            parameters,
            loss_fns,
            micro_batches,
            modules=list(modules),
            pairs=[losses],
            keep_samples=binned,
            reduce=world.sum if world.distributed and not binned else None,
            holds_first=world.is_main or binned,
        )
        fisher = estimate.fisher(losses[0])
        if self.normalise:
            fisher = normalise_fisher(fisher)
        rf = relative_fisher(
            estimate, *losses, estimator=self.rf_estimator, shared_zeros=self.rf_shared_zeros
        )
        if self.generalized:
            gfi = generalized_fisher(
                fisher,
                rf,
                generator=torch.Generator().manual_seed(mask_seed),
                rf_threshold=self.rf_threshold,
                keep_prob=self.keep_prob,
            )
        else:
            gfi = fisher  # cetl_fi: plain Fisher, i.e. EWC
        self.penalties[name] = DWAPenalty.capture(gfi, parameters, reduction=self.reduction)
        gfi_name = name.replace("dwa", "gfi")
        record = {
            f"{gfi_name}_kept/{k}" if k != "overall" else f"{gfi_name}_kept": v
            for k, v in kept_fractions(gfi).items()
        }
        for layer, quantiles in rf_quantiles(rf).items():
            record.update({f"{gfi_name}_rf/{layer}/{q}": v for q, v in quantiles.items()})
        record[f"{gfi_name}_fisher_seconds"] = time.perf_counter() - started
        return record

    def _noise(self, key: str, seeds: Tensor, images: Tensor, num_classes: int) -> Tensor:
        """The sampled-target noise of loss ``key`` for each micro-batch, one CPU generator per seed:
        ``N(0, 1)`` shaped like a reconstruction ``(m, C, H, W)``, or ``U(0, 1)`` shaped like the
        logits ``(m, classes)`` for ``classify`` (D4).

        Shape:
            seeds ``(K,)`` → ``(K, m, …)`` on the CPU.
        """
        m = self.batch_size
        shape = (m, num_classes) if key == "classify" else (m, *images.shape[1:])
        draw = torch.rand if key == "classify" else torch.randn
        return torch.stack(
            [draw(shape, generator=torch.Generator().manual_seed(int(seed))) for seed in seeds]
        )

    def penalty(self, name: str, network: nn.Module) -> dict[str, Tensor]:
        """The DWA term ``name`` on ``network`` once its GFI exists (none in round 1's stage 1)."""
        if name not in self.penalties:
            return {}
        return {name: self.penalties[name](dict(network.named_parameters()))}

    def state(self) -> dict[str, Any]:
        """Every term's GFI, θ* and reduction (GFI2 is used in the next round's stage 1)."""
        return {
            name: {"gfi": p.gfi, "anchor": p.anchor, "reduction": p.reduction}
            for name, p in self.penalties.items()
        }

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` (on ``--resume``); other keys of a method's state are ignored."""
        self.penalties = {
            name: DWAPenalty(**value) for name, value in state.items() if name.startswith("dwa")
        }
