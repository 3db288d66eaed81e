"""The one streaming Fisher estimator (CETL paper Section 3.2; METHOD.md D4).

Chen, Zhang, Dong, "Coupled End-to-End Transfer Learning with Generalized Fisher
Information", CVPR 2018. GFI (Eq. 10) starts from the diagonal Fisher information ``F_i``
of a task's loss for each shared parameter ``θ_i``, and the Relative Fisher (Eq. 9) from the
*samples* of that Fisher for two tasks. METHOD.md D4 defines both:

    f_i^k = (∂L̃_k / ∂θ_i)²,   F_i = (1/K) Σ_k f_i^k,

one sample per micro-batch ``k`` (K micro-batches of m examples), dropout off and BatchNorm
statistics frozen. ``F`` is the mean of squares, never the square of the mean gradient: the
mean gradient of a converged task is ≈ 0 while its Fisher is not (the classic EWC bug).

Which Fisher is estimated is decided by the loss functions the caller passes:

* ``fisher: sampled`` (default, the paper's "gradients of outputs with respect to weights"):
  the loss uses targets drawn from the model itself — :func:`sampled_categorical_loss` for
  cross-entropy, :func:`sampled_gaussian_loss` for squared error. Its expectation is the
  true Fisher (the Gauss–Newton diagonal for squared error).
* ``fisher: empirical``: the same losses with the true targets (e.g.
  :func:`cetl.losses.classification.classification_loss`). No extra code: pass a different
  loss function. Its values vanish as a stage converges, because the residuals do.

Memory is O(#params): the estimator keeps running sums, never the K samples, unless
``keep_samples=True`` (for the ``binned`` Relative Fisher, O(K·#params)). Speed: micro-batches
given as a tensor or :class:`Stacked` are differentiated a few at a time in one batched pass
(``torch.func.vmap``), holding at most :data:`MAX_CHUNK` samples' gradients at once.

Why one file: the estimator, its sampled losses and the vectorised per-micro-batch squares are one
numerical procedure (METHOD.md D4); the losses decide which Fisher it estimates, so they stay
beside it.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from cetl.errors import ConfigError

LossFn = Callable[[Any], Tensor]
"""``micro_batch -> scalar loss L̃_k``; evaluated once per micro-batch and differentiated."""

Reduce = Callable[[Tensor], Tensor]
"""``local sum -> sum over all ranks`` (e.g. a DDP all-reduce); must return the reduced tensor."""

EPS_SCALE = 1e-8
"""ε = EPS_SCALE × mean(f) keeps ``log(f + ε)`` finite where a Fisher sample is exactly 0 (D5)."""


ZERO_LOG = 1e-4
"""A Fisher sample counts as 0 where ``log(f + ε)`` is within this many nats of ``log ε``, i.e.
``f ≲ 1e-4 ε = 1e-12 × mean(f)``: exact zeros, and samples that only round-off tells from them
(float32's logs near ``log ε`` carry ~1e-5 nats of it)."""


def shifted_log(f: Tensor, eps: float) -> Tensor:
    """``ℓ = log(f + ε) − log ε``, the log Fisher sample of D5 shifted so that a zero gives exactly 0.

    A shift does not change a correlation; it makes a micro-batch where both losses of a pair are
    0 add exactly nothing to every log moment, so the moments *without* those micro-batches
    (``rf_shared_zeros: exclude``) are the same sums over fewer terms. A sample is 0 (``ℓ`` set to
    exactly 0) where ``ℓ < ZERO_LOG``, in whichever dtype the logs are taken, so the float32
    (batched) and float64 (loop) paths agree on which samples are zeros.
    """
    shifted = torch.log(f + eps).sub_(math.log(eps))
    return shifted.masked_fill_(shifted < ZERO_LOG, 0.0)


CHUNK_ELEMENTS = 2**27
"""Vectorised path: per-micro-batch gradients held at once, in scalars (#params × losses × chunk):
with their squares and logs about 2 GB at most, e.g. 4 micro-batches of the DRCN decoder."""
MAX_CHUNK = 8
"""Vectorised path: micro-batches differentiated in one batched pass, at most."""


@dataclass(frozen=True)
class Stacked:
    """K micro-batches as tensors with a leading K dimension, e.g. ``(indices (K, m), noise (K, …))``.

    Iterating yields the K rows (tuples of row tensors), so any loss function written for one
    micro-batch works on the per-micro-batch loop; :func:`estimate_fisher` also recognises the
    layout and differentiates several micro-batches in one batched pass (``torch.func.vmap``).
    """

    tensors: tuple[Tensor, ...]

    def __post_init__(self) -> None:
        if not self.tensors or len({len(t) for t in self.tensors}) != 1:
            raise ConfigError(
                f"Stacked micro-batches need tensors of one leading size K; got sizes "
                f"{[tuple(t.shape) for t in self.tensors]}"
            )

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __iter__(self) -> Iterator[tuple[Tensor, ...]]:
        return (tuple(t[k] for t in self.tensors) for k in range(len(self)))

    def rows(self, index: Tensor | slice) -> Stacked:
        """The micro-batches at ``index`` (e.g. this rank's share), still stacked."""
        return Stacked(tuple(t[index] for t in self.tensors))


@dataclass(frozen=True)
class FisherStats:
    """Finalised statistics of one loss's Fisher samples, per parameter name.

    Attributes:
        mean: ``F_i = mean_k f_i^k``, the diagonal Fisher (same shape and device as θ).
        log_mean: ``mean_k ℓ_i^k`` in float64, with ``ℓ = log(f + ε) − log ε`` (:func:`shifted_log`:
            0 exactly where ``f = 0``); only for losses in a pair (for RF).
        log_sq_mean: ``mean_k (ℓ_i^k)²`` in float64; only for losses in a pair.
        eps: the ε of those logs; ``None`` when the loss is in no pair.
        samples: ``f_i^k`` stacked over k, ``(K, *θ.shape)``; only with ``keep_samples=True``.
    """

    mean: dict[str, Tensor]
    log_mean: dict[str, Tensor] | None = None
    log_sq_mean: dict[str, Tensor] | None = None
    eps: float | None = None
    samples: dict[str, Tensor] | None = None


@dataclass(frozen=True)
class FisherEstimate:
    """What :func:`estimate_fisher` returns: per-loss statistics and joint moments of pairs.

    Attributes:
        count: K, the number of micro-batches (summed over ranks when reduced).
        losses: loss name → its :class:`FisherStats`.
        log_cross_mean: ``(first, second)`` pair → ``mean_k ℓ1·ℓ2`` (the shifted logs of
            :class:`FisherStats`) per parameter name (float64), the joint moment the gaussian
            Relative Fisher needs.
        shared_zeros: ``(first, second)`` pair → the fraction of the K micro-batches on which
            *both* losses' samples are 0 (``ℓ = 0``, :func:`shifted_log`; e.g. a ReLU unit
            inactive on the whole micro-batch), per parameter name (float32);
            ``rf_shared_zeros: exclude`` leaves them out of the Relative Fisher.
    """

    count: int
    losses: dict[str, FisherStats]
    log_cross_mean: dict[tuple[str, str], dict[str, Tensor]]
    shared_zeros: dict[tuple[str, str], dict[str, Tensor]] = field(default_factory=dict)

    def stats(self, loss: str) -> FisherStats:
        """The statistics of ``loss`` (a :class:`ConfigError` naming the estimated losses)."""
        if loss not in self.losses:
            raise ConfigError(f"no Fisher was estimated for loss '{loss}'; estimated: {sorted(self.losses)}")
        return self.losses[loss]

    def fisher(self, loss: str) -> dict[str, Tensor]:
        """``F`` of ``loss`` per parameter name."""
        return self.stats(loss).mean


def estimate_fisher(
    parameters: Mapping[str, nn.Parameter],
    losses: Mapping[str, LossFn],
    micro_batches: Iterable[Any],
    *,
    modules: Sequence[nn.Module],
    pairs: Sequence[tuple[str, str]] = (),
    keep_samples: bool = False,
    reduce: Reduce | None = None,
    holds_first: bool = True,
    vectorise: bool = True,
) -> FisherEstimate:
    """Diagonal Fisher ``F_i = mean_k (∂L̃_k/∂θ_i)²`` of several losses in one streaming pass (D4).

    Every loss is evaluated on the *same* micro-batch k, so the samples of two losses are
    paired by k, as the Relative Fisher (Eq. 9) requires. Gradients come from
    ``torch.autograd.grad`` on ``parameters`` only: ``.grad`` fields are never touched, and a
    parameter a loss does not reach gets zero samples (no error). During the pass every module
    in ``modules`` is in eval mode — dropout off and BatchNorm using, not updating, its running
    statistics — and each submodule's own train/eval flag is restored afterwards.

    For each pair ``(a, b)`` the pass also accumulates ``Σ_k ℓ_a``, ``Σ_k ℓ_a²`` and the cross
    product ``Σ_k ℓ_a·ℓ_b`` of the shifted logs ``ℓ = log(f+ε) − log ε`` (:func:`shifted_log`) in
    float64 (float64 because the correlation is computed from raw moments, whose cancellation
    float32 cannot afford), and how many micro-batches give both losses a 0 (``ℓ = 0``). ε of a loss is
    ``EPS_SCALE × mean(f)`` with the mean over all regularised parameters of the *first*
    micro-batch (of the rank with ``holds_first``, under ``reduce``), so it does not depend on
    how the K micro-batches are split over ranks: a streaming pass cannot know the mean over
    all K in advance, and ε only has to be negligible against typical samples while keeping
    ``log`` finite at exact zeros; it is floored at float32's smallest normal number.

    Args:
        parameters: the regularised parameter set, by name (e.g. T1's ``named_parameters()``).
        losses: loss name → ``fn(micro_batch)`` returning the scalar ``L̃_k``.
        micro_batches: the K micro-batches (consumed once; typically K = 32 of m = 8).
        modules: the networks the losses run through; put in eval mode during the pass.
        pairs: loss pairs whose Relative Fisher will be needed (see
            :func:`cetl.fisher.relative.relative_fisher`).
        keep_samples: also keep every ``f^k`` (O(K·#params); for the ``binned`` RF).
            Single-process only.
        reduce: sums over ranks (a DDP all-reduce). Called, in the same order on every rank,
            once after the first micro-batch (for ε, when there are pairs) and once per
            accumulated tensor at the end; every rank must see at least one micro-batch.
            ``None``: single process.
        holds_first: whether this rank's first micro-batch is the estimate's first (rank 0
            under a contiguous split); exactly one rank must hold it, and only it sets ε.
        vectorise: with ``micro_batches`` a tensor or :class:`Stacked` and every parameter in
            ``modules``, differentiate up to :data:`MAX_CHUNK` micro-batches in one batched pass
            (``torch.func.vmap`` of ``torch.func.grad``): the same samples as the loop, several
            times faster because a micro-batch of m = 8 leaves a CPU or GPU mostly idle. Loss
            functions must then avoid data-dependent Python (``int(tensor)``) and generators
            (pre-draw noise into the micro-batch); if the first batched pass fails, the
            estimate falls back to the loop with a warning. ``False``: always the loop.

    Returns:
        A :class:`FisherEstimate`.

    Raises:
        ConfigError: no micro-batches, a loss that is not a scalar, a parameter that does not
            require grad, an unknown or degenerate pair, or ``keep_samples`` with ``reduce``.
    """
    names = list(parameters)
    params = [parameters[name] for name in names]
    pairs = _check_inputs(names, params, losses, pairs, keep_samples, reduce)
    logged = sorted({loss for pair in pairs for loss in pair})
    acc = _Accumulator(names, params, list(losses), logged, pairs, keep_samples)
    with _eval_mode(modules), torch.enable_grad():
        chunks = _vectorised_squares(params, losses, micro_batches, modules) if vectorise else None
        if chunks is not None:
            for k, squares in enumerate(chunks):  # (c, *θ.shape) per parameter: c micro-batches
                if k == 0:
                    acc.set_eps(
                        {loss: [f[0] for f in fs] for loss, fs in squares.items()}, reduce, holds_first
                    )
                acc.add_stacked(squares)
        else:
            for k, batch in enumerate(micro_batches):
                squares = {loss: _squared_gradients(loss, fn(batch), params) for loss, fn in losses.items()}
                if k == 0:
                    acc.set_eps(squares, reduce, holds_first)
                acc.add(squares)
    return acc.finalise(reduce)


def sampled_categorical_loss(
    logits: Tensor, generator: torch.Generator | None = None, *, uniform: Tensor | None = None
) -> Tensor:
    """Cross-entropy against labels drawn from the model's own softmax (D4, ``fisher: sampled``).

    With ``y ~ softmax(logits)`` the expected squared gradient of this loss is the true Fisher of
    the classifier (Eq. 4's likelihood), not the empirical one. Labels are drawn by the
    Gumbel-max trick from uniform noise generated on ``generator``'s device and then moved, so a
    CPU generator gives the same labels on every device.

    Args:
        logits: unnormalised class scores, classes on dim 1.
        generator: the random stream (``None``: torch's global one).
        uniform: the U(0, 1) noise itself, shaped like ``logits`` (pre-drawn, e.g. so that a
            vectorised Fisher pass needs no generator); ``generator`` is then unused.

    Returns:
        The mean cross-entropy over the micro-batch.

    Shape:
        logits ``(B, C)`` (or ``(B, C, *)``).
    """
    if uniform is None:
        device = generator.device if generator is not None else logits.device
        uniform = torch.rand(logits.shape, generator=generator, device=device)
    uniform = uniform.to(logits.device)
    # Gumbel-max: argmax(logits + Gumbel noise) ~ softmax(logits); the floor keeps log finite.
    gumbel = -torch.log(-torch.log(uniform.clamp_min(torch.finfo(uniform.dtype).tiny)))
    labels = (logits.detach().float() + gumbel).argmax(dim=1)  # (B, *)
    return nn.functional.cross_entropy(logits.float(), labels)


def sampled_gaussian_loss(
    prediction: Tensor, generator: torch.Generator | None = None, *, noise: Tensor | None = None
) -> Tensor:
    """Squared error against ``prediction + N(0, 1)`` noise (D4, ``fisher: sampled``).

    The loss is ``mean_n ½ Σ_d (pred_nd − target_nd)²`` with ``target = pred.detach() + ν``,
    ``ν ~ N(0, I)``: the negative log-likelihood of a unit-variance Gaussian with the
    prediction as its mean. Its gradient is ``−(1/B) Σ_n J_nᵀ ν_n``, so the expected squared
    gradient is ``(1/B²) Σ_n diag(J_nᵀ J_n)`` — the Gauss–Newton diagonal of the micro-batch
    (1/B of the per-example one; any constant factor is removed by
    :func:`normalise_fisher` and does not change the Relative Fisher). The reconstruction losses
    themselves are means over pixels (D2); summing over output dims here keeps this the exact
    negative log-likelihood, whose expected squared gradient is the Fisher.

    Args:
        prediction: the model output (e.g. a reconstruction).
        generator: the random stream (``None``: torch's global one); noise is drawn on its
            device and moved, so a CPU generator gives the same targets on every device.
        noise: ν itself, shaped like ``prediction`` (pre-drawn); ``generator`` is then unused.

    Returns:
        A scalar.

    Shape:
        prediction ``(B, *)``.
    """
    if noise is None:
        device = generator.device if generator is not None else prediction.device
        noise = torch.randn(prediction.shape, generator=generator, device=device)
    noise = noise.to(prediction.device)
    residual = prediction.float() - (prediction.detach().float() + noise)  # (B, *)
    return 0.5 * residual.reshape(len(residual), -1).square().sum(dim=1).mean()


def normalise_fisher(mean: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``F / mean(F)`` over the whole regularised parameter set (METHOD.md D4, ``fisher_norm: mean``).

    Reconstruction and classification losses have Fishers of very different scales; dividing
    by the mean makes the DWA weight λ (Eq. 11) scale-free. An all-zero Fisher (a loss that
    reaches none of the parameters) is returned unchanged rather than divided by zero.

    Args:
        mean: ``F`` per parameter name.

    Returns:
        ``F`` divided by its mean over all elements of all tensors.
    """
    numel = sum(f.numel() for f in mean.values())
    if numel == 0:
        return dict(mean)
    average = sum(float(f.sum(dtype=torch.float64)) for f in mean.values()) / numel
    if average <= 0:
        return dict(mean)
    return {name: f / average for name, f in mean.items()}


def _check_inputs(
    names: list[str],
    params: list[nn.Parameter],
    losses: Mapping[str, LossFn],
    pairs: Sequence[tuple[str, str]],
    keep_samples: bool,
    reduce: Reduce | None,
) -> list[tuple[str, str]]:
    """Validate :func:`estimate_fisher`'s arguments; return the pairs as a list of tuples."""
    if not names:
        raise ConfigError("estimate_fisher needs at least one parameter to regularise; got none")
    if not losses:
        raise ConfigError("estimate_fisher needs at least one loss; got none")
    frozen = [name for name, p in zip(names, params, strict=True) if not p.requires_grad]
    if frozen:
        raise ConfigError(f"Fisher parameters must require grad; these do not: {frozen}")
    checked = []
    for pair in pairs:
        first, second = pair
        unknown = [loss for loss in pair if loss not in losses]
        if unknown:
            raise ConfigError(f"Fisher pair {pair} names unknown losses {unknown}; losses: {sorted(losses)}")
        if first == second:
            raise ConfigError(f"a Relative Fisher pair needs two different losses; got {pair}")
        checked.append((first, second))
    if keep_samples and reduce is not None:
        raise ConfigError(
            "keep_samples=True (the binned Relative Fisher) is single-process only: per-rank "
            "samples cannot be summed; use the gaussian estimator under DDP"
        )
    return checked


def _squared_gradients(loss_name: str, loss: Tensor, params: list[nn.Parameter]) -> list[Tensor]:
    """``(∂L̃_k/∂θ)²`` per parameter; zeros where the loss does not reach a parameter."""
    if loss.ndim != 0:
        raise ConfigError(
            f"loss '{loss_name}' must return a scalar for the Fisher; got shape {tuple(loss.shape)}"
        )
    if not loss.requires_grad:
        return [torch.zeros_like(p, dtype=_acc_dtype(p)) for p in params]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [
        torch.zeros_like(p, dtype=_acc_dtype(p)) if g is None else g.detach().to(_acc_dtype(p)).square()
        for g, p in zip(grads, params, strict=True)
    ]


class _Holder(nn.Module):
    """The networks the losses run through, under one root, so ``functional_call`` can swap in
    the regularised parameters wherever a loss function reaches them."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        super().__init__()
        self.nets = nn.ModuleList(modules)

    def forward(self, fn: LossFn, micro_batch: Any) -> Tensor:
        return fn(micro_batch)


def _vectorised_squares(
    params: list[nn.Parameter], losses: Mapping[str, LossFn], micro_batches: Any, modules: Sequence[nn.Module]
) -> Iterator[dict[str, list[Tensor]]] | None:
    """Squared per-micro-batch gradients, several micro-batches per batched pass, or ``None``
    when the inputs do not allow it (then the caller loops over micro-batches).

    Each item maps a loss to ``(c, *θ.shape)`` tensors, one row per micro-batch, in order.
    """
    if isinstance(micro_batches, Tensor):
        stacked, unpack = Stacked((micro_batches,)), True
    elif isinstance(micro_batches, Stacked):
        stacked, unpack = micro_batches, False
    else:
        return None
    holder = _Holder(modules)
    held = {id(p): name for name, p in holder.named_parameters(remove_duplicate=False)}
    if len(stacked) == 0 or any(id(p) not in held for p in params):
        return None
    keys = [held[id(p)] for p in params]
    theta = {key: p.detach() for key, p in zip(keys, params, strict=True)}
    numel = sum(p.numel() for p in params) * len(losses)
    chunk = max(1, min(MAX_CHUNK, CHUNK_ELEMENTS // max(1, numel)))

    def loss_of(weights: dict[str, Tensor], row: tuple[Tensor, ...], fn: LossFn) -> Tensor:
        return torch.func.functional_call(holder, weights, (fn, row[0] if unpack else row), strict=False)

    per_row = {
        loss: torch.func.vmap(
            torch.func.grad(functools.partial(loss_of, fn=fn)), in_dims=(None, 0), randomness="different"
        )
        for loss, fn in losses.items()
    }

    def squares(start: int) -> dict[str, list[Tensor]]:
        rows = stacked.rows(slice(start, start + chunk)).tensors
        with torch.no_grad():  # the transforms differentiate; no outer graph is needed
            grads = {loss: fn(theta, rows) for loss, fn in per_row.items()}
        return {
            loss: [g[key].to(_acc_dtype(p)).square() for key, p in zip(keys, params, strict=True)]
            for loss, g in grads.items()
        }

    try:
        first = squares(0)
    except RuntimeError as error:  # an op or a Python construct vmap cannot batch
        warnings.warn(
            f"Fisher: batched micro-batches unavailable ({str(error).splitlines()[0]}); "
            f"using the per-micro-batch loop",
            stacklevel=3,
        )
        return None

    def generate() -> Iterator[dict[str, list[Tensor]]]:
        yield first
        for start in range(chunk, len(stacked), chunk):
            yield squares(start)

    return generate()


def _acc_dtype(p: Tensor) -> torch.dtype:
    """At least float32: squares of bf16 gradients would lose most of their digits."""
    return torch.promote_types(p.dtype, torch.float32)


class _Accumulator:
    """Running sums behind :func:`estimate_fisher`; everything O(#params) unless keeping samples."""

    def __init__(
        self,
        names: list[str],
        params: list[nn.Parameter],
        losses: list[str],
        logged: list[str],
        pairs: list[tuple[str, str]],
        keep_samples: bool,
    ) -> None:
        self.names, self.losses, self.logged, self.pairs = names, losses, logged, pairs
        self.device = params[0].device
        self.count = 0
        self.eps: dict[str, float] = {}
        self.sums = {loss: [torch.zeros_like(p, dtype=_acc_dtype(p)) for p in params] for loss in losses}
        wide = {"dtype": torch.float64}
        self.log_sums = {loss: [torch.zeros_like(p, **wide) for p in params] for loss in logged}
        self.log_sq_sums = {loss: [torch.zeros_like(p, **wide) for p in params] for loss in logged}
        self.cross_sums = {pair: [torch.zeros_like(p, **wide) for p in params] for pair in pairs}
        # Counts up to K: exact in float32, half the memory of the float64 moments.
        self.zero_sums = {pair: [torch.zeros_like(p, dtype=torch.float32) for p in params] for pair in pairs}
        self.samples: dict[str, list[list[Tensor]]] | None = (
            {loss: [[] for _ in params] for loss in losses} if keep_samples else None
        )

    def set_eps(self, squares: dict[str, list[Tensor]], reduce: Reduce | None, holds_first: bool) -> None:
        """ε per paired loss from the estimate's first micro-batch, shared by all ranks via ``reduce``."""
        if not self.logged:
            return
        rows = []
        for loss in self.logged:
            total = torch.zeros((), dtype=torch.float64, device=self.device)
            for f in squares[loss]:
                total += f.sum(dtype=torch.float64).to(self.device)
            numel = float(sum(f.numel() for f in squares[loss]))
            rows.append(torch.stack([total, torch.tensor(numel, dtype=torch.float64, device=self.device)]))
        totals = torch.stack(rows)  # (L, 2): Σf and #elements, per paired loss
        if reduce is not None:
            totals = reduce(totals if holds_first else torch.zeros_like(totals))
        elif not holds_first:
            raise ConfigError("holds_first=False needs reduce: some rank must hold the first micro-batch")
        floor = torch.finfo(torch.float32).tiny
        for loss, (total, numel) in zip(self.logged, totals.tolist(), strict=True):
            self.eps[loss] = max(EPS_SCALE * total / numel, floor)

    def add(self, squares: dict[str, list[Tensor]]) -> None:
        """Fold one micro-batch's samples into the sums."""
        self.count += 1
        for loss in self.losses:
            for acc, f in zip(self.sums[loss], squares[loss], strict=True):
                acc.add_(f)
            if self.samples is not None:
                for kept, f in zip(self.samples[loss], squares[loss], strict=True):
                    kept.append(f)
        logs = {
            loss: [shifted_log(f.double(), self.eps[loss]) for f in squares[loss]] for loss in self.logged
        }
        for loss in self.logged:
            for s, s2, a in zip(self.log_sums[loss], self.log_sq_sums[loss], logs[loss], strict=True):
                s.add_(a)
                s2.addcmul_(a, a)
        for (first, second), cross in self.cross_sums.items():
            for c, a, b in zip(cross, logs[first], logs[second], strict=True):
                c.addcmul_(a, b)
            for z, a, b in zip(self.zero_sums[(first, second)], logs[first], logs[second], strict=True):
                z.add_((a == 0) & (b == 0))

    def add_stacked(self, squares: dict[str, list[Tensor]]) -> None:
        """Fold c micro-batches' samples at once (a leading dimension c on every tensor).

        ``log(f + ε)`` is taken in f's precision (float32, 1e-7 relative); sums, squares and
        cross products are formed and accumulated in float64 (mixed-dtype in-place ops, row by
        row: no float64 temporaries), which is where the raw moments need the precision.
        """
        self.count += len(next(iter(squares.values()))[0])
        for loss in self.losses:
            for acc, f in zip(self.sums[loss], squares[loss], strict=True):
                acc.add_(f.sum(dim=0))
            if self.samples is not None:
                for kept, f in zip(self.samples[loss], squares[loss], strict=True):
                    kept.extend(f.unbind(0))
        logs = {loss: [shifted_log(f, self.eps[loss]) for f in squares[loss]] for loss in self.logged}
        for loss in self.logged:
            for s, s2, a in zip(self.log_sums[loss], self.log_sq_sums[loss], logs[loss], strict=True):
                for row in a:
                    s.add_(row)
                    s2.addcmul_(row, row)
        for (first, second), cross in self.cross_sums.items():
            for c, a, b in zip(cross, logs[first], logs[second], strict=True):
                for row_a, row_b in zip(a, b, strict=True):
                    c.addcmul_(row_a, row_b)
            for z, a, b in zip(self.zero_sums[(first, second)], logs[first], logs[second], strict=True):
                z.add_(((a == 0) & (b == 0)).sum(dim=0))

    def finalise(self, reduce: Reduce | None) -> FisherEstimate:
        """Reduce the sums over ranks (if asked) and divide by the total K."""
        count = self.count
        if reduce is not None:
            total = reduce(torch.tensor(float(count), dtype=torch.float64, device=self.device))
            count = round(total.item())
        if count == 0:
            raise ConfigError("estimate_fisher got no micro-batches; the Fisher needs K ≥ 1 (default 32)")

        def mean(sums: list[Tensor]) -> dict[str, Tensor]:
            reduced = [reduce(s) if reduce is not None else s for s in sums]
            return {name: s / count for name, s in zip(self.names, reduced, strict=True)}

        stats = {}
        for loss in self.losses:
            logged = loss in self.eps
            stats[loss] = FisherStats(
                mean=mean(self.sums[loss]),
                log_mean=mean(self.log_sums[loss]) if logged else None,
                log_sq_mean=mean(self.log_sq_sums[loss]) if logged else None,
                eps=self.eps.get(loss),
                samples=self._stacked(loss),
            )
        cross = {pair: mean(sums) for pair, sums in self.cross_sums.items()}
        zeros = {pair: mean(sums) for pair, sums in self.zero_sums.items()}
        return FisherEstimate(count=count, losses=stats, log_cross_mean=cross, shared_zeros=zeros)

    def _stacked(self, loss: str) -> dict[str, Tensor] | None:
        if self.samples is None:
            return None
        return {name: torch.stack(kept) for name, kept in zip(self.names, self.samples[loss], strict=True)}


@contextmanager
def _eval_mode(modules: Sequence[nn.Module]) -> Iterator[None]:
    """Eval mode for the estimate (dropout off, BatchNorm frozen), then every flag as it was.

    Flags are saved per submodule, not per root: a user may hold part of a network in eval
    (a frozen BatchNorm) while the rest trains, and ``root.train()`` would undo that.
    """
    saved = [(m, m.training) for root in modules for m in root.modules()]
    for root in modules:
        root.eval()
    try:
        yield
    finally:
        for module, training in saved:
            module.training = training
