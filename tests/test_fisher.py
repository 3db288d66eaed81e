"""Fisher, Relative Fisher, GFI and DWA against hand-written references (METHOD.md §3, D4–D6)."""

from __future__ import annotations

import copy
import math
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from torch import Tensor, nn

from cetl.engine.distributed import SINGLE
from cetl.errors import ConfigError
from cetl.fisher import (
    RF_ESTIMATORS,
    DWAPenalty,
    FisherEstimate,
    Stacked,
    estimate_fisher,
    generalized_fisher,
    kept_fractions,
    normalise_fisher,
    relative_fisher,
    rf_quantiles,
    sampled_categorical_loss,
    sampled_gaussian_loss,
)
from cetl.fisher.relative import binned_mutual_information, linfoot, min_kept


def _net() -> nn.Sequential:
    """A 2-layer net with BatchNorm and dropout, the two things that break naive estimators."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))
    net[1].running_mean.uniform_(-1, 1)  # non-default statistics, so using batch statistics shows
    net[1].running_var.uniform_(0.5, 2)
    return net


def _micro_batches(k: int = 5, m: int = 4) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(m, 6, generator=g), torch.randint(0, 3, (m,), generator=g)) for _ in range(k)]


def _synthetic(z1: Tensor, z2: Tensor, *, keep_samples: bool = False) -> FisherEstimate:
    """Run the real estimator on losses ``g_k·θ`` whose squared gradients are ``exp(z_k)`` exactly.

    Shape: z1, z2 ``(K, N)``; the parameter ``w`` is ``(N,)``.
    """
    theta = nn.Parameter(torch.zeros(z1.shape[1]))
    g1, g2 = torch.exp(z1 / 2), torch.exp(z2 / 2)
    return estimate_fisher(
        {"w": theta},
        {"a": lambda k: (g1[k] * theta).sum(), "b": lambda k: (g2[k] * theta).sum()},
        range(len(z1)),
        modules=[],
        pairs=[("a", "b")],
        keep_samples=keep_samples,
    )


def _ranks(x: Tensor) -> Tensor:
    return x.argsort().argsort().double()


def _spearman(x: Tensor, y: Tensor) -> float:
    rx, ry = _ranks(x), _ranks(y)
    return float(torch.corrcoef(torch.stack([rx, ry]))[0, 1])


def _pearson_reference(f1: Tensor, f2: Tensor, eps1: float, eps2: float) -> Tensor:
    """|ρ| over k of log(f + ε), two-pass, 0 where a column is constant. Shape: (K, *) → (*)."""
    a, b = torch.log(f1.double() + eps1), torch.log(f2.double() + eps2)
    da, db = a - a.mean(0), b - b.mean(0)
    denominator = (da.square().sum(0) * db.square().sum(0)).sqrt()
    return torch.where(denominator > 0, (da * db).sum(0).abs() / denominator, 0.0).float()


# ---- the estimator (D4) ----------------------------------------------------------------


def test_streaming_estimate_matches_brute_force_loop() -> None:
    net = _net()
    unused = nn.Parameter(torch.ones(2))  # reached by no loss: zero Fisher, not an error
    params = {**dict(net.named_parameters()), "unused": unused}
    batches = _micro_batches()
    net.train()
    estimate = estimate_fisher(
        params,
        {
            "ce": lambda b: nn.functional.cross_entropy(net(b[0]), b[1]),
            "sq": lambda b: net(b[0]).square().mean(),
        },
        batches,
        modules=[net],
    )

    reference = copy.deepcopy(net).eval()  # the definition: dropout off, BatchNorm statistics frozen
    for name, fn in (("ce", nn.functional.cross_entropy), ("sq", None)):
        total = {n: torch.zeros_like(p) for n, p in reference.named_parameters()}
        for x, y in batches:
            out = reference(x)
            loss = fn(out, y) if fn is not None else out.square().mean()
            grads = torch.autograd.grad(loss, list(reference.parameters()))
            for (n, _), g in zip(reference.named_parameters(), grads, strict=True):
                total[n] += g**2
        for n, t in total.items():
            torch.testing.assert_close(estimate.fisher(name)[n], t / len(batches))
        assert torch.equal(estimate.fisher(name)["unused"], torch.zeros(2))
    assert estimate.count == len(batches)
    assert all(p.grad is None for p in params.values())  # autograd.grad only, .grad untouched


def test_batchnorm_statistics_and_modes_are_restored() -> None:
    net = _net().train()
    net[3].eval()  # a user-frozen submodule must stay frozen, the rest training
    before = {k: v.clone() for k, v in net.state_dict().items()}
    modes = [m.training for m in net.modules()]
    seen = []

    def loss(batch: tuple[Tensor, Tensor]) -> Tensor:
        seen.append([m.training for m in net.modules()])
        return net(batch[0]).sum()

    estimate_fisher(dict(net.named_parameters()), {"l": loss}, _micro_batches(), modules=[net])
    assert all(not any(flags) for flags in seen)  # eval throughout the estimate
    assert [m.training for m in net.modules()] == modes
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k  # running_mean / running_var / num_batches_tracked


def test_mean_of_squares_not_square_of_mean() -> None:
    theta = nn.Parameter(torch.zeros(1))
    signs = [1.0, -1.0, 1.0, -1.0]  # gradients ±2: mean 0, mean of squares 4
    estimate = estimate_fisher({"t": theta}, {"l": lambda s: 2 * s * theta.sum()}, signs, modules=[])
    torch.testing.assert_close(estimate.fisher("l")["t"], torch.tensor([4.0]))


def test_empirical_fisher_of_linear_gaussian_model_is_exact() -> None:
    # y = w·x + r with known residuals r: L = ½(y − w·x)², ∂L/∂w = −r·x, so F = mean_k r_k² x_k².
    g = torch.Generator().manual_seed(2)
    x, r = torch.randn(50, 3, generator=g), torch.randn(50, generator=g)
    w_true = torch.tensor([0.5, -1.0, 2.0])
    y = x @ w_true + r
    w = nn.Parameter(w_true.clone())
    estimate = estimate_fisher({"w": w}, {"l": lambda k: 0.5 * (y[k] - x[k] @ w) ** 2}, range(50), modules=[])
    torch.testing.assert_close(estimate.fisher("l")["w"], (r[:, None] ** 2 * x**2).mean(0))


def test_sampled_gaussian_fisher_of_linear_model_is_e_x_squared_over_m() -> None:
    # pred = x·w; with unit noise the micro-batch gradient is −(1/m)Σ ν_j x_j, so E[f_i] = E[x_i²]/m.
    k, m = 3000, 4
    scales = torch.tensor([0.5, 1.0, 2.0])
    g = torch.Generator().manual_seed(3)
    xs = torch.randn(k, m, 3, generator=g) * scales
    w = nn.Parameter(torch.ones(3))
    estimate = estimate_fisher(
        {"w": w}, {"l": lambda x: sampled_gaussian_loss(x @ w, g)}, xs, modules=[]
    )  # relative std ≈ sqrt(2/K) ≈ 0.026
    torch.testing.assert_close(estimate.fisher("l")["w"], scales**2 / m, rtol=0.13, atol=0)


def test_sampled_categorical_fisher_is_bernoulli_variance() -> None:
    # One example, logits = W·x: ∂CE/∂W_cj = (p_c − 1[y=c])·x_j, so E_y~p[f] = p_c(1 − p_c)·x_j².
    x = torch.tensor([1.0, -2.0])
    weight = nn.Parameter(torch.tensor([[0.3, 0.1], [-0.2, 0.4], [0.0, -0.5]]))
    g = torch.Generator().manual_seed(4)
    estimate = estimate_fisher(
        {"W": weight},
        {"l": lambda _: sampled_categorical_loss((weight @ x)[None], g)},
        range(4000),
        modules=[],
    )
    p = torch.softmax(weight.detach() @ x, 0)
    torch.testing.assert_close(estimate.fisher("l")["W"], (p * (1 - p))[:, None] * x**2, rtol=0.1, atol=0)


def test_sampled_losses_are_reproducible_from_the_generator() -> None:
    logits, pred = torch.randn(8, 5), torch.randn(8, 3, 2)
    for fn, arg in ((sampled_categorical_loss, logits), (sampled_gaussian_loss, pred)):
        same = [fn(arg, torch.Generator().manual_seed(7)) for _ in range(2)]
        other = fn(arg, torch.Generator().manual_seed(8))
        assert torch.equal(same[0], same[1]) and not torch.equal(same[0], other)


def test_default_path_keeps_no_per_micro_batch_tensors() -> None:
    net = _net()
    params = dict(net.named_parameters())
    loss = {"l": lambda b: net(b[0]).sum(), "m": lambda b: net(b[0]).mean()}
    plain = estimate_fisher(params, loss, _micro_batches(), modules=[net])
    assert all(s.samples is None and s.log_mean is None for s in plain.losses.values())
    assert plain.log_cross_mean == {}
    paired = estimate_fisher(params, loss, _micro_batches(), modules=[net], pairs=[("l", "m")])
    for stats in paired.losses.values():
        assert stats.samples is None
        assert all(stats.log_mean[n].shape == p.shape for n, p in params.items())
    kept = estimate_fisher(params, loss, _micro_batches(k=5), modules=[net], keep_samples=True)
    assert kept.losses["l"].samples["0.weight"].shape == (5, 8, 6)


def test_reduce_sums_over_ranks_like_one_process() -> None:
    """Two threads play two DDP ranks; their ``reduce`` sums tensors across them."""
    torch.manual_seed(0)
    # Tanh, not ReLU: no exact-zero samples, whose log(ε) would make RF depend on ε, and ε
    # comes from the first micro-batch of each rank (two of them here, one in a single process).
    net, batches = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)), _micro_batches(k=6)
    barrier, slots = threading.Barrier(2), [None, None]

    def all_reduce(t: Tensor, rank: int) -> Tensor:
        slots[rank] = t
        barrier.wait()
        total = slots[0] + slots[1]
        barrier.wait()  # nobody overwrites a slot before both have read it
        return total

    def run(rank: int, world: int) -> FisherEstimate:
        local = copy.deepcopy(net)  # a replica per rank, as under DDP
        return estimate_fisher(
            dict(local.named_parameters()),
            {"a": lambda b: local(b[0]).sum(), "b": lambda b: nn.functional.cross_entropy(local(b[0]), b[1])},
            batches[rank::world],
            modules=[local],
            pairs=[("a", "b")],
            keep_samples=world == 1,
            reduce=(lambda t: all_reduce(t, rank)) if world > 1 else None,
        )

    with ThreadPoolExecutor(2) as pool:
        ranks = list(pool.map(run, [0, 1], [2, 2]))
    single = run(0, 1)
    eps_a, eps_b = ranks[0].losses["a"].eps, ranks[0].losses["b"].eps
    assert (eps_a, eps_b) == (ranks[1].losses["a"].eps, ranks[1].losses["b"].eps)  # agreed across ranks
    for estimate in ranks:
        assert estimate.count == 6
        for loss in ("a", "b"):
            for name, f in single.fisher(loss).items():
                torch.testing.assert_close(estimate.fisher(loss)[name], f)
        rf = relative_fisher(estimate, "a", "b")
        for name, kept_a in single.losses["a"].samples.items():
            reference = _pearson_reference(kept_a, single.losses["b"].samples[name], eps_a, eps_b)
            torch.testing.assert_close(rf[name], reference, atol=1e-5, rtol=0)


def test_estimator_errors_are_config_errors() -> None:
    theta = nn.Parameter(torch.zeros(2))
    params, ok = {"t": theta}, {"l": lambda _: theta.sum()}
    with pytest.raises(ConfigError, match="no micro-batches"):
        estimate_fisher(params, ok, [], modules=[])
    with pytest.raises(ConfigError, match="scalar"):
        estimate_fisher(params, {"l": lambda _: theta * 2}, [0], modules=[])
    with pytest.raises(ConfigError, match="unknown losses"):
        estimate_fisher(params, ok, [0], modules=[], pairs=[("l", "typo")])
    with pytest.raises(ConfigError, match="single-process"):
        estimate_fisher(params, ok, [0], modules=[], keep_samples=True, reduce=lambda t: t)
    with pytest.raises(ConfigError, match="require grad"):
        estimate_fisher({"t": torch.zeros(2)}, ok, [0], modules=[])
    with pytest.raises(ConfigError, match="did you mean 'binned'"):
        relative_fisher(estimate_fisher(params, ok, [0], modules=[]), "l", "l", estimator="binnd")


def test_normalise_fisher_has_mean_one_and_guards_zero() -> None:
    fisher = {"a": torch.tensor([1.0, 3.0]), "b": torch.tensor([[2.0, 6.0]])}
    normalised = normalise_fisher(fisher)
    torch.testing.assert_close(normalised["a"], torch.tensor([1 / 3, 1.0]))
    torch.testing.assert_close(normalised["b"], torch.tensor([[2 / 3, 2.0]]))
    zeros = normalise_fisher({"a": torch.zeros(3)})
    assert torch.equal(zeros["a"], torch.zeros(3))


# ---- Relative Fisher (Eq. 9, D5) -------------------------------------------------------


def test_gaussian_rf_is_abs_pearson_of_log_samples() -> None:
    g = torch.Generator().manual_seed(5)
    z1, z2 = torch.randn(16, 4, generator=g), torch.randn(16, 4, generator=g)
    z2 = z1 + 0.7 * z2
    z1[3:9, 1] = -math.inf  # exact zeros, where ε matters
    estimate = _synthetic(z1, z2, keep_samples=True)
    f1, f2 = estimate.losses["a"].samples["w"], estimate.losses["b"].samples["w"]
    eps1, eps2 = 1e-8 * float(f1[0].mean()), 1e-8 * float(f2[0].mean())  # from the first micro-batch
    assert estimate.losses["a"].eps == pytest.approx(eps1) and estimate.losses["b"].eps == pytest.approx(eps2)
    rf = relative_fisher(estimate, "b", "a")["w"]  # either order
    torch.testing.assert_close(rf, _pearson_reference(f1, f2, eps1, eps2), atol=1e-5, rtol=0)


@pytest.mark.parametrize("estimator", RF_ESTIMATORS.names())
def test_rf_is_zero_for_independent_one_for_identical_and_increasing(estimator: str) -> None:
    k, n = 256, 1000
    g = torch.Generator().manual_seed(6)
    z1, z2 = torch.randn(k, n, generator=g), torch.randn(k, n, generator=g)
    means = []
    for rho in (0.0, 0.3, 0.6, 0.9):
        correlated = rho * z1 + math.sqrt(1 - rho**2) * z2
        rf = relative_fisher(_synthetic(z1, correlated, keep_samples=True), "a", "b", estimator=estimator)[
            "w"
        ]
        assert rf.min() >= 0 and rf.max() <= 1
        means.append(float(rf.mean()))
    assert means[0] < 0.1
    assert means == sorted(means) and means[3] > 0.8
    identical = relative_fisher(_synthetic(z1, z1, keep_samples=True), "a", "b", estimator=estimator)["w"]
    bins = round(k ** (1 / 3))
    floor = 1.0 if estimator == "gaussian" else math.sqrt(1 - 1 / bins**2)  # binned tops out at log B
    assert float(identical.min()) >= floor - 1e-5


def test_gaussian_rf_of_independent_samples_at_k32_is_about_0_14() -> None:
    g = torch.Generator().manual_seed(7)
    rf = relative_fisher(
        _synthetic(torch.randn(32, 4000, generator=g), torch.randn(32, 4000, generator=g)), "a", "b"
    )
    assert abs(float(rf["w"].mean()) - math.sqrt(2 / (math.pi * 31))) < 0.01  # METHOD.md D5's ≈0.14


def test_gaussian_and_binned_rank_parameters_alike() -> None:
    k, n = 256, 500
    g = torch.Generator().manual_seed(8)
    rho = torch.linspace(0, 1, n)
    z1, z2 = torch.randn(k, n, generator=g), torch.randn(k, n, generator=g)
    estimate = _synthetic(z1, rho * z1 + (1 - rho**2).sqrt() * z2, keep_samples=True)
    gaussian = relative_fisher(estimate, "a", "b")["w"]
    binned = relative_fisher(estimate, "a", "b", estimator="binned")["w"]
    assert _spearman(gaussian, binned) > 0.9
    assert _spearman(gaussian, rho) > 0.9


@pytest.mark.parametrize("estimator", RF_ESTIMATORS.names())
def test_rf_is_zero_without_nan_where_a_sample_has_no_variance(estimator: str) -> None:
    g = torch.Generator().manual_seed(9)
    z = torch.randn(32, 4, generator=g)
    z1, z2 = z.clone(), z.clone()
    z1[:, 0] = -math.inf  # f = 0 exactly: a parameter loss a never touches
    z1[:, 1] = 1.0  # constant non-zero samples
    z1[:, 2] = z2[:, 2] = -math.inf  # neither loss touches it
    rf = relative_fisher(_synthetic(z1, z2, keep_samples=True), "a", "b", estimator=estimator)["w"]
    assert not rf.isnan().any()
    assert torch.equal(rf[:3], torch.zeros(3))
    assert rf[3] > 0.9  # the identical column, for contrast

    theta, other = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(2))
    untouched = estimate_fisher(  # loss b never reaches `other`
        {"t": theta, "o": other},
        {"a": lambda k: (k * theta).sum() + (k * other).sum(), "b": lambda k: (k * theta).sum()},
        [1.0, 2.0, 3.0, 5.0],
        modules=[],
        pairs=[("a", "b")],
        keep_samples=True,
    )
    rf = relative_fisher(untouched, "a", "b", estimator=estimator)
    assert torch.equal(rf["o"], torch.zeros(2))


def _shared_zero_columns() -> tuple[Tensor, Tensor]:
    """K = 6 log samples ``z`` (f = exp(z); −inf is f = 0) in four hand-made columns.

    Rows 0–3 are the micro-batches where the losses use θ; rows 4–5 give both an exact 0 in
    columns 0, 1 and 3. Over rows 0–3, column 0 has ρ = 0 exactly (deviations −1.5, −.5, .5, 1.5
    against −1, 1, 1, −1) and column 1 ρ = 0.8 (Σ a′b′ = 4, Σ a′² = Σ b′² = 5).
    """
    zero = -math.inf
    z1 = torch.tensor(
        [
            [1.0, 1.0, 1.0, 1.0],
            [2.0, 2.0, 2.0, zero],
            [3.0, 3.0, 3.0, zero],
            [4.0, 4.0, 4.0, zero],
            [zero, zero, 5.0, zero],
            [zero, zero, 6.0, 2.0],
        ]
    )
    z2 = torch.tensor(
        [
            [1.0, 1.0, 1.0, 2.0],
            [3.0, 2.0, 3.0, zero],
            [3.0, 4.0, 3.0, zero],
            [1.0, 3.0, 1.0, zero],
            [zero, zero, zero, zero],  # column 2: loss b alone is 0, which is kept
            [zero, zero, 0.0, 1.0],
        ]
    )
    return z1, z2


def test_gaussian_rf_with_shared_zeros_counted_or_excluded_matches_hand_values() -> None:
    z1, z2 = _shared_zero_columns()
    estimate = _synthetic(z1, z2, keep_samples=True)
    f1, f2 = estimate.losses["a"].samples["w"], estimate.losses["b"].samples["w"]
    assert torch.equal(estimate.shared_zeros[("a", "b")]["w"], torch.tensor([2, 2, 0, 4]) / 6)
    agree = relative_fisher(estimate, "a", "b", shared_zeros="agree")["w"]
    exclude = relative_fisher(estimate, "a", "b", shared_zeros="exclude")["w"]
    assert not agree.isnan().any() and not exclude.isnan().any()
    # Counted, the two points at (log ε1, log ε2) dominate: |ρ| of all six rows, ≈ 1.
    eps1, eps2 = estimate.losses["a"].eps, estimate.losses["b"].eps
    torch.testing.assert_close(agree, _pearson_reference(f1, f2, eps1, eps2), atol=1e-5, rtol=0)
    assert agree[0] > 0.95 and agree[1] > 0.95
    # Excluded: the hand values over rows 0–3; column 2 (no shared zero) as with agree; column 3
    # keeps 2 of 6 micro-batches, fewer than min_kept(6) = 3, so RF = 0.
    torch.testing.assert_close(exclude[:2], torch.tensor([0.0, 0.8]), atol=1e-5, rtol=0)
    assert exclude[2] == agree[2] and exclude[2] > 0
    assert exclude[3] == 0 and agree[3] > 0
    assert relative_fisher(estimate, "a", "b")["w"].equal(exclude)  # the default


def test_binned_rf_with_shared_zeros_excluded_is_the_rf_of_the_kept_rows() -> None:
    g = torch.Generator().manual_seed(12)
    z1, z2 = torch.randn(32, 3, generator=g), torch.randn(32, 3, generator=g)
    z2[:, 0] = z1[:, 0] + 0.3 * z2[:, 0]
    for column, rows in ((0, slice(20, 32)), (1, slice(0, 8)), (2, slice(30, 32))):
        z1[rows, column] = z2[rows, column] = -math.inf
    estimate = _synthetic(z1, z2, keep_samples=True)
    exclude = relative_fisher(estimate, "a", "b", estimator="binned", shared_zeros="exclude")["w"]
    agree = relative_fisher(estimate, "a", "b", estimator="binned", shared_zeros="agree")["w"]
    f1, f2 = estimate.losses["a"].samples["w"], estimate.losses["b"].samples["w"]
    bins = round(32 ** (1 / 3))  # the full K's, as the estimator keeps it
    for column, kept in ((0, slice(0, 20)), (1, slice(8, 32)), (2, slice(0, 30))):
        alone = binned_mutual_information(f1[kept, column : column + 1], f2[kept, column : column + 1], bins)
        assert math.isclose(float(exclude[column]), float(linfoot(alone)), abs_tol=1e-6)
    full = binned_mutual_information(f1, f2)
    torch.testing.assert_close(agree, linfoot(full).float())
    assert agree[1] > exclude[1]  # eight shared zeros make their own bin: information from nothing


def test_shared_zeros_with_too_few_kept_micro_batches_give_zero_not_noise() -> None:
    assert [min_kept(k) for k in (1, 2, 5, 6, 32)] == [1, 2, 3, 3, 16]
    g = torch.Generator().manual_seed(13)
    z = torch.randn(32, 2, generator=g)
    z1, z2 = z.clone(), z.clone()  # identical: RF 1 wherever it is computed
    z1[:17, 0] = z2[:17, 0] = -math.inf  # 15 of 32 left: below half
    z1[:16, 1] = z2[:16, 1] = -math.inf  # 16 left: enough
    for estimator in RF_ESTIMATORS.names():
        rf = relative_fisher(_synthetic(z1, z2, keep_samples=True), "a", "b", estimator=estimator)["w"]
        assert rf[0] == 0 and rf[1] > 0.9, estimator


@pytest.mark.parametrize("shared_zeros", ["agree", "exclude"])
def test_shared_zero_treatments_match_a_two_pass_reference_on_both_paths(shared_zeros: str) -> None:
    """Streaming moments (loop: float64 logs; batched: float32) against |ρ| over the kept rows."""
    k, n = 32, 300
    g = torch.Generator().manual_seed(14)
    z1, z2 = torch.randn(k, n, generator=g), torch.randn(k, n, generator=g)
    z2 = 0.6 * z1 + 0.8 * z2
    gate = torch.rand(k, n, generator=g) < torch.linspace(0, 0.6, n)  # a ReLU unit off on this batch
    alone = torch.rand(k, n, generator=g) < 0.1  # loss a alone is 0
    z1[gate | alone], z2[gate] = -math.inf, -math.inf
    # Samples 1e-20 (ε ≈ 1e-8 here) are zeros too: float32 logs cannot tell them from 0, so both
    # paths must count them as zeros (ZERO_LOG), or the paths disagree on what is excluded.
    tiny = (torch.rand(k, n, generator=g) < 0.05) & ~gate
    z1[tiny], z2[tiny] = math.log(1e-20), math.log(1e-20)
    g1, g2 = torch.exp(z1 / 2), torch.exp(z2 / 2)

    class Linear(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.zeros(n))

    net = Linear()
    losses = {"a": lambda row: (row[0] * net.w).sum(), "b": lambda row: (row[1] * net.w).sum()}
    rfs = []
    stacked = Stacked((g1, g2))
    for batches in (stacked, list(stacked)):  # Stacked: the batched (vmap) path; a list: the loop
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no silent fallback from the batched path
            estimate = estimate_fisher(
                {"w": net.w}, losses, batches, modules=[net], pairs=[("a", "b")], keep_samples=True
            )
        rfs.append(relative_fisher(estimate, "a", "b", shared_zeros=shared_zeros)["w"])
    f1, f2 = estimate.losses["a"].samples["w"].double(), estimate.losses["b"].samples["w"].double()
    eps1, eps2 = estimate.losses["a"].eps, estimate.losses["b"].eps
    both = (f1 < 1e-4 * eps1) & (f2 < 1e-4 * eps2)
    assert int(both.sum()) > int(((f1 == 0) & (f2 == 0)).sum())  # the tiny samples count
    keep = ~both if shared_zeros == "exclude" else torch.ones_like(f1, dtype=torch.bool)
    a, b = torch.log(f1 + eps1), torch.log(f2 + eps2)
    reference = torch.zeros(n)
    for column in range(n):
        rows = keep[:, column]
        if rows.sum() >= min_kept(k):
            pair = torch.stack([a[rows, column], b[rows, column]])
            reference[column] = torch.corrcoef(pair)[0, 1].abs().float()
    for rf in rfs:
        assert not rf.isnan().any()
        torch.testing.assert_close(rf, reference, atol=1e-5, rtol=0)
    if shared_zeros == "agree":  # many shared zeros pull |ρ| up; excluding them does not
        assert float(rfs[0][-50:].mean()) > float(rfs[0][:50].mean()) + 0.2


def test_rf_shared_zeros_option_reaches_the_estimator(monkeypatch: pytest.MonkeyPatch) -> None:
    from cetl.build import DataInfo, build_method
    from cetl.data.synthetic import synthetic_training_data
    from cetl.experiments import resolve
    from cetl.fisher import protection as protection_module
    from cetl.networks import NETWORKS
    from cetl.source import source_from_network

    seen = []

    def spy(*args, **kwargs):
        seen.append(kwargs.get("shared_zeros"))
        return relative_fisher(*args, **kwargs)

    monkeypatch.setattr(protection_module, "relative_fisher", spy)
    info = DataInfo(num_classes=4, channels=1, image_size=28, sizes={}, notes=())
    for sets, expected in (([], "exclude"), (["method.rf_shared_zeros=agree"], "agree")):
        config = resolve("digits_mn_to_us", method="cetl", profile="smoke", sets=sets)
        assert config.method.rf_shared_zeros == expected
        torch.manual_seed(7)
        net = NETWORKS.get("lenet")(in_channels=1, image_size=28, num_classes=4)
        source = source_from_network(net, tap="coupling", temperature=4.0, description="test lenet")
        method = build_method(config, info, source=source)
        method.prepare(synthetic_training_data(), SINGLE)
        seen.clear()
        method.stages(0)[0].on_end()  # stage 1 ends: GFI1
        assert seen == [expected]
    with pytest.raises(ConfigError, match="rf_shared_zeros"):
        resolve("digits_mn_to_us", method="cetl", profile="smoke", sets=["method.rf_shared_zeros=ignore"])
    with pytest.raises(ConfigError, match="rf_shared_zeros"):
        relative_fisher(_synthetic(torch.zeros(3, 1), torch.zeros(3, 1)), "a", "b", shared_zeros="ignore")


def test_binned_mutual_information_matches_hand_count() -> None:
    # K = 8, B = 2: x's bins 0,0,0,0,1,1,1,1; y's 0,0,1,1,0,0,1,1 → independent cells of 2 each.
    x = torch.tensor([1.0, 2, 3, 4, 5, 6, 7, 8])[:, None]
    y = torch.tensor([1.0, 2, 5, 6, 3, 4, 7, 8])[:, None]
    mi = binned_mutual_information(x, y, bins=2)
    # Plug-in I = 0; Miller–Madow: (1 + 1 − 3) / 16 < 0, clamped to 0.
    assert float(mi) == 0.0
    same = binned_mutual_information(x, x, bins=2)
    assert math.isclose(float(same), math.log(2) + (1 + 1 - 1) / 16, rel_tol=1e-9)


def test_rf_quantiles_interpolate_like_numpy() -> None:
    summary = rf_quantiles({"layer": torch.arange(11.0) / 10})
    assert summary["layer"].keys() == {"q10", "q50", "q90", "mean"}
    for key, value in (("q10", 0.1), ("q50", 0.5), ("q90", 0.9), ("mean", 0.5)):
        assert math.isclose(summary["layer"][key], value, abs_tol=1e-6)
    assert math.isclose(rf_quantiles({"l": torch.tensor([0.0, 1.0])}, qs=(0.25,))["l"]["q25"], 0.25)


# ---- GFI (Eq. 10) and DWA (Eq. 11) -----------------------------------------------------


def test_gfi_keeps_with_probability_p_where_shared_and_1_minus_p_elsewhere() -> None:
    n = 100_000
    fisher = {"w": torch.rand(n) + 0.1}
    rf = {"w": torch.cat([torch.full((n // 2,), 0.5), torch.full((n // 2,), 0.49)])}  # u itself is shared
    gfi = generalized_fisher(fisher, rf, generator=torch.Generator().manual_seed(0), keep_prob=0.9)["w"]
    kept = gfi != 0
    sigma = math.sqrt(0.9 * 0.1 / (n // 2))
    assert abs(float(kept[: n // 2].float().mean()) - 0.9) < 5 * sigma
    assert abs(float(kept[n // 2 :].float().mean()) - 0.1) < 5 * sigma
    assert torch.equal(gfi[kept], fisher["w"][kept])  # kept entries are F itself
    fractions = kept_fractions({"w": gfi})
    assert fractions["overall"] == fractions["w"] == int(kept.sum()) / n


def test_gfi_masks_are_reproducible_from_the_seed() -> None:
    fisher = {"b": torch.rand(50), "a": torch.rand(4, 5)}
    rf = {"a": torch.rand(4, 5), "b": torch.rand(50)}

    def draw(seed: int) -> dict[str, Tensor]:
        return generalized_fisher(fisher, rf, generator=torch.Generator().manual_seed(seed))

    first, again, other = draw(1), draw(1), draw(2)
    assert all(torch.equal(first[n], again[n]) for n in fisher)
    assert not all(torch.equal(first[n], other[n]) for n in fisher)
    reordered = generalized_fisher(
        dict(reversed(fisher.items())), rf, generator=torch.Generator().manual_seed(1)
    )
    assert all(torch.equal(first[n], reordered[n]) for n in fisher)  # order of the dict does not matter
    with pytest.raises(ConfigError, match="different parameters"):
        generalized_fisher(fisher, {"a": rf["a"]}, generator=torch.Generator())
    with pytest.raises(ConfigError, match="keep_prob"):
        generalized_fisher(fisher, rf, generator=torch.Generator(), keep_prob=1.5)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_dwa_gradient_is_gfi_times_displacement(reduction: str) -> None:
    g = torch.Generator().manual_seed(10)
    params = {
        "w": nn.Parameter(torch.randn(3, 4, generator=g)),
        "b": nn.Parameter(torch.randn(4, generator=g)),
    }
    gfi = {
        name: torch.rand(p.shape, generator=g) * (torch.rand(p.shape, generator=g) > 0.5)
        for name, p in params.items()
    }
    penalty = DWAPenalty.capture(gfi, params, reduction=reduction)
    anchor = {name: p.detach().clone() for name, p in params.items()}
    with torch.no_grad():
        for p in params.values():
            p.add_(torch.randn(p.shape, generator=g))
    assert all(torch.equal(penalty.anchor[n], anchor[n]) for n in params)  # θ* is a copy, not a view

    weight = 0.7  # λ, applied by the caller as the term's weight
    value = weight * penalty(params)
    grads = torch.autograd.grad(value, list(params.values()))
    divisor = 16 if reduction == "mean" else 1
    expected_value = (
        sum(0.5 * weight * (gfi[n] * (params[n] - anchor[n]) ** 2).sum() for n in params) / divisor
    )
    torch.testing.assert_close(value, expected_value)
    for (name, p), grad in zip(params.items(), grads, strict=True):
        torch.testing.assert_close(grad, weight * gfi[name] * (p.detach() - anchor[name]) / divisor)
    with pytest.raises(ConfigError, match="dwa_reduction"):
        DWAPenalty.capture(gfi, params, reduction="max")  # type: ignore[arg-type]
