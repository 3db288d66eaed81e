"""Shared zeros in the Relative Fisher on ReLU nets (hand-run benchmark; METHOD.md D5).

A ReLU unit that is inactive for every image of a micro-batch gives its incoming weights a
squared gradient of exactly 0; where that happens for *both* losses of a pair, the gaussian
Relative Fisher sees the point ``(log ε1, log ε2)``, about 18 nats below every other sample of
both losses. This script measures how often that happens on trained networks, per parameter
tensor, and what the two treatments of such micro-batches (``rf_shared_zeros``: ``agree``
counts them as a sample, ``exclude`` leaves them out of the correlation) do to RF and to the GFI
kept fractions, for GFI1, GFI2 and GFI3.

Usage (after training S and a short CETL run, e.g. at the ``quick`` profile)::

    cetl train digits_mn_to_us --method source_only --profile quick \
        --out runs/rfprobe/source_only/seed0
    cetl train digits_mn_to_us --method cetl --profile quick --set train.rounds=2 \
        --set source.path=runs/rfprobe/source_only/seed0 --out runs/rfprobe/cetl
    PYTHONPATH=src python benchmarks/rf_zeros.py runs/rfprobe/cetl --out runs/rfprobe/rf_zeros.json
    PYTHONPATH=src python benchmarks/rf_zeros.py runs/rfprobe/cetl --fisher empirical \
        --out runs/rfprobe/rf_zeros_empirical.json

It rebuilds the run's method, loads the networks of its last finished round (``last.pt``) and
runs the method's own Fisher pass (``CETL._compute_gfi``: K micro-batches of m images drawn as in
training, seeded by ``--seed``, with its sampled targets and losses) with ``keep_samples=True``,
so that every ``f^k`` is available. GFI1 is thus measured on T1 after the last round rather than
right after stage 1, and GFI2/GFI3 on T1/T2 after stage 3 rather than after stage 2.
Every number then comes from those samples: the GFI masks of both treatments use the same seed
(the same uniforms), so they differ only where RF crosses u.

Writes ``FILE.json`` (every number) and prints the per-layer tables (Markdown), the source of
``benchmarks/results/rf_zeros.md``. The streaming RF of both treatments is checked against a
two-pass reference over the same samples (the last line it prints).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

import cetl.fisher.protection as protection_module
from cetl.build import build_method, build_source, build_training_data, labelled_domain
from cetl.engine.checkpoint import load_checkpoint
from cetl.engine.distributed import SINGLE
from cetl.engine.loop import LAST_CHECKPOINT
from cetl.fisher import generalized_fisher, normalise_fisher, relative_fisher
from cetl.fisher.estimate import shifted_log
from cetl.fisher.relative import min_kept
from cetl.run_folder import read_config, run_data_root

GFIS = {  # name → (network attribute, stream, (protected loss, other loss)), METHOD.md D6
    "gfi1": ("decoder", "target", ("recon_source", "recon_target")),
    "gfi2": ("decoder", "target", ("recon_target", "recon_source")),
    "gfi3": ("target_net", "labelled", ("recon_target", "classify")),
}
TREATMENTS = ("agree", "exclude")
MASK_SEED = 1234


def load_method(run_dir: Path, data_root: str | None, fisher: str | None) -> Any:
    """The run's CETL method with the networks of its last finished round, prepared on its data
    (``fisher``: override D4's ``sampled``/``empirical``)."""
    config = read_config(run_dir)
    root = run_data_root(run_dir, data_root)
    data, info = build_training_data(config.data, root=root, labelled_domain=labelled_domain(config))
    source = build_source(config.source, run_dir=Path(config.source.path))
    method = build_method(config, info, source=source)
    states = load_checkpoint(run_dir / LAST_CHECKPOINT)["networks"]
    for name, network in method.trainable_networks().items():
        network.load_state_dict(states[name])
    method.prepare(data, SINGLE)
    if fisher is not None:
        method.config = dataclasses.replace(method.config, fisher=fisher)
    return config, method


def capture_estimate(method: Any, gfi: str, seed: int) -> Any:
    """Run the method's own Fisher pass for ``gfi`` with every sample kept; return the estimate."""
    network, stream, losses = GFIS[gfi]
    captured = {}
    original = protection_module.estimate_fisher

    def keeping(*args: Any, **kwargs: Any) -> Any:
        kwargs["keep_samples"] = True
        captured["estimate"] = original(*args, **kwargs)
        return captured["estimate"]

    torch.manual_seed(seed)
    protection_module.estimate_fisher = keeping
    try:
        method._compute_gfi(f"dwa{gfi[-1]}", getattr(method, network), stream, losses)
    finally:
        protection_module.estimate_fisher = original
    return captured["estimate"]


def quantiles(values: Tensor, qs: tuple[float, ...] = (0.1, 0.5, 0.9)) -> list[float]:
    flat = values.reshape(-1).double().sort().values
    position = torch.tensor(qs, dtype=torch.float64) * (flat.numel() - 1)
    low, high = position.floor().long(), position.ceil().long()
    return (flat[low] + (flat[high] - flat[low]) * (position - low)).tolist()


def pearson_reference(
    x: Tensor, y: Tensor, keep: Tensor, min_samples: int | None = None, *, signed: bool = False
) -> Tensor:
    """|ρ| over the kept k of each column, two-pass in float64; 0 where either side is constant
    or fewer than ``min_samples`` (default :func:`min_kept` of K) samples are kept: the
    estimator's rules. Shape: (K, N) → (N,)."""
    w = keep.double()
    n = w.sum(0)
    mx = (x * w).sum(0) / n.clamp_min(1)
    my = (y * w).sum(0) / n.clamp_min(1)
    dx, dy = (x - mx) * w, (y - my) * w
    sxx, syy, sxy = dx.square().sum(0), dy.square().sum(0), (dx * dy).sum(0)
    scale_x = (x.square() * w).sum(0)
    scale_y = (y.square() * w).sum(0)
    enough = n >= (min_kept(len(x)) if min_samples is None else min_samples)
    varies = (sxx > 1e-9 * scale_x) & (syy > 1e-9 * scale_y) & enough
    rho = sxy / (sxx * syy).sqrt().clamp_min(1e-300)
    return torch.where(varies, rho if signed else rho.abs(), 0.0)


def median(values: Tensor) -> float | None:
    return float(values.double().median()) if values.numel() else None


def layer_table(estimate: Any, losses: tuple[str, str], seed: int) -> dict[str, Any]:
    """Per parameter tensor: zero patterns, constant samples, RF and GFI kept under each treatment."""
    first, second = losses
    a, b = estimate.stats(first), estimate.stats(second)
    fisher = normalise_fisher(a.mean)
    rf = {t: relative_fisher(estimate, first, second, shared_zeros=t) for t in TREATMENTS}
    gfi = {
        t: generalized_fisher(fisher, rf[t], generator=torch.Generator().manual_seed(seed))
        for t in TREATMENTS
    }
    rows: dict[str, Any] = {}
    sums: dict[str, float] = {}

    def tally(key: str, value: float) -> None:
        sums[key] = sums.get(key, 0.0) + value

    for name in a.mean:
        fa = a.samples[name].reshape(len(a.samples[name]), -1)  # (K, N), the estimator's dtype
        fb = b.samples[name].reshape(len(b.samples[name]), -1)
        la, lb = shifted_log(fa, a.eps), shifted_log(fb, b.eps)  # as the estimator takes them
        za, zb = la == 0, lb == 0  # the estimator's zeros: f + ε == ε
        both, one = za & zb, za ^ zb
        constant = (fa.amin(0) == fa.amax(0)) | (fb.amin(0) == fb.amax(0))  # (N,): RF = 0 by D5
        live = ~constant
        shared = both.sum(0)  # (N,) shared zeros per parameter
        n_left = len(fa) - shared
        f_protected = fisher[name].reshape(-1)
        row: dict[str, Any] = {
            "numel": fa.shape[1],
            "both_zero": float(both.double().mean()),
            "one_zero": float(one.double().mean()),
            "neither": float((~za & ~zb).double().mean()),
            "exact_zero_first": float((fa == 0).double().mean()),
            "exact_zero_second": float((fb == 0).double().mean()),
            "constant": float(constant.double().mean()),
            "all_zero_first": float(za.all(0).double().mean()),
            "all_zero_second": float(zb.all(0).double().mean()),
            "both_zero_in_varying": float(both[:, live].double().mean()) if live.any() else 0.0,
            "varying_with_shared_zero": float((live & (shared > 0)).double().mean()),
            "varying_left_lt8": float((live & (n_left < 8)).double().mean()),
            "fisher_zero": float((f_protected == 0).double().mean()),
        }
        # The reference correlates the unshifted log(f + ε), whose second moment D5's
        # "constant" test is relative to; the zeros (and so the exclusions) are the estimator's.
        xa, xb = la.double() + math.log(a.eps), lb.double() + math.log(b.eps)
        references = {
            "agree": pearson_reference(xa, xb, torch.ones_like(both)),
            "exclude": pearson_reference(xa, xb, ~both),
        }
        # ε sensitivity: the same samples with ε × 1e4 (EPS_SCALE 1e-4 instead of 1e-8), two-pass.
        big_a, big_b = shifted_log(fa.double(), a.eps * 1e4), shifted_log(fb.double(), b.eps * 1e4)
        big_both = (big_a == 0) & (big_b == 0)
        big_a, big_b = big_a + math.log(a.eps * 1e4), big_b + math.log(b.eps * 1e4)
        larger_eps = {
            "agree": pearson_reference(big_a, big_b, torch.ones_like(big_both)),
            "exclude": pearson_reference(big_a, big_b, ~big_both),
        }
        with_shared = live & (shared > 0)
        signs = {
            "agree": pearson_reference(xa, xb, torch.ones_like(both), signed=True),
            "exclude": pearson_reference(xa, xb, ~both, signed=True),
        }
        # The ``exclude`` guard: RF = 0 where fewer than n_min micro-batches remain (min_kept).
        unguarded = pearson_reference(xa, xb, ~both, min_samples=3)
        row["exclude_rf_ge_u_by_min_samples"] = {
            str(n_min): float(((unguarded >= 0.5) & (n_left >= n_min)).double().mean())
            for n_min in (3, 5, 8, 12, 16)
        }
        row["varying_left_hist"] = {
            label: float((live & (n_left >= low) & (n_left < high)).double().mean())
            for label, low, high in (("3-4", 3, 5), ("5-7", 5, 8), ("8-11", 8, 12), ("12-15", 12, 16))
        }
        for t in TREATMENTS:
            values = rf[t][name].reshape(-1)
            kept = gfi[t][name].reshape(-1)
            row[t] = {
                "rf_q10_q50_q90": quantiles(values),
                "rf_q50_varying": median(values[live]),
                "rf_q50_varying_shared": median(values[with_shared]),
                "rf_q50_varying_no_shared": median(values[live & (shared == 0)]),
                "rf_ge_u": float((values >= 0.5).double().mean()),
                "rf_ge_u_varying_shared": float((values[with_shared] >= 0.5).double().mean())
                if with_shared.any()
                else None,
                "rf_ge_u_larger_eps": float((larger_eps[t] >= 0.5).double().mean()),
                "rf_ge_u_left_lt8": float((values[live & (n_left < 8)] >= 0.5).double().mean())
                if (live & (n_left < 8)).any()
                else None,
                # |ρ| counts opposite movement as sharing: how much of RF ≥ u is ρ ≤ −u?
                "negative_share_of_rf_ge_u": float((signs[t][values >= 0.5] < 0).double().mean())
                if (values >= 0.5).any()
                else None,
                "kept": float((kept != 0).double().mean()),
                "kept_of_nonzero_f": float((kept != 0).sum() / (f_protected != 0).sum().clamp_min(1)),
                "kept_mass": float(kept.double().sum() / f_protected.double().sum().clamp_min(1e-300)),
                "max_gap_to_two_pass": float((values.double() - references[t]).abs().max()),
            }
            tally(f"kept_{t}", float((kept != 0).sum()))
            tally(f"kept_mass_{t}", float(kept.double().sum()))
            tally(f"rf_ge_u_{t}", float((values >= 0.5).sum()))
            tally(f"rf_ge_u_larger_eps_{t}", float((larger_eps[t] >= 0.5).sum()))
        rows[name] = row
        for n_min, value in row["exclude_rf_ge_u_by_min_samples"].items():
            tally(f"exclude_rf_ge_u_min{n_min}", value * fa.shape[1])
        tally("entries", both.numel())
        tally("both", float(both.sum()))
        tally("one", float(one.sum()))
        tally("params", fa.shape[1])
        tally("constant", float(constant.sum()))
        tally("nonzero_f", float((f_protected != 0).sum()))
        tally("mass", float(f_protected.double().sum()))
    overall = {
        "both_zero": sums["both"] / sums["entries"],
        "one_zero": sums["one"] / sums["entries"],
        "constant": sums["constant"] / sums["params"],
        "fisher_zero": 1 - sums["nonzero_f"] / sums["params"],
    }
    overall["exclude_rf_ge_u_by_min_samples"] = {
        n_min: sums[f"exclude_rf_ge_u_min{n_min}"] / sums["params"] for n_min in ("3", "5", "8", "12", "16")
    }
    for t in TREATMENTS:
        overall[f"rf_q50_{t}"] = quantiles(torch.cat([v.reshape(-1) for v in rf[t].values()]))[1]
        overall[f"rf_ge_u_{t}"] = sums[f"rf_ge_u_{t}"] / sums["params"]
        overall[f"rf_ge_u_larger_eps_{t}"] = sums[f"rf_ge_u_larger_eps_{t}"] / sums["params"]
        overall[f"kept_{t}"] = sums[f"kept_{t}"] / sums["params"]
        overall[f"kept_of_nonzero_f_{t}"] = sums[f"kept_{t}"] / sums["nonzero_f"]
        overall[f"kept_mass_{t}"] = sums[f"kept_mass_{t}"] / sums["mass"]
    return {
        "losses": list(losses),
        "eps": [a.eps, b.eps],
        "K": estimate.count,
        "overall": overall,
        "layers": rows,
    }


def _f(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def markdown(result: dict[str, Any]) -> str:
    """Two tables: what the samples look like and what each treatment gives (1), and why (2)."""
    one = [
        "| GFI | layer | #params | both 0 | one 0 | neither | const. (RF=0) | F=0 | RF q50 agree | "
        "RF q50 exclude | RF≥u agree | RF≥u exclude | kept agree | kept exclude |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    two = [
        "| GFI | layer | varying with shared 0 | RF q50 varying, no shared 0 | RF q50 varying with shared 0: "
        "agree / exclude | RF≥u there: agree / exclude | RF≥u with ε×1e4: agree / exclude | "
        "kept of F≠0: agree / exclude | kept F mass: agree / exclude |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for gfi, table in result["gfis"].items():
        for name, row in table["layers"].items():
            ag, ex = row["agree"], row["exclude"]
            one.append(
                f"| {gfi} | `{name}` | {row['numel']:,} | {row['both_zero']:.3f} | {row['one_zero']:.3f} | "
                f"{row['neither']:.3f} | {row['constant']:.3f} | {row['fisher_zero']:.3f} | "
                f"{ag['rf_q10_q50_q90'][1]:.3f} | {ex['rf_q10_q50_q90'][1]:.3f} | {ag['rf_ge_u']:.3f} | "
                f"{ex['rf_ge_u']:.3f} | {ag['kept']:.3f} | {ex['kept']:.3f} |"
            )
            two.append(
                f"| {gfi} | `{name}` | {row['varying_with_shared_zero']:.3f} | "
                f"{_f(ag['rf_q50_varying_no_shared'])} | "
                f"{_f(ag['rf_q50_varying_shared'])} / {_f(ex['rf_q50_varying_shared'])} | "
                f"{_f(ag['rf_ge_u_varying_shared'])} / {_f(ex['rf_ge_u_varying_shared'])} | "
                f"{ag['rf_ge_u_larger_eps']:.3f} / {ex['rf_ge_u_larger_eps']:.3f} | "
                f"{ag['kept_of_nonzero_f']:.3f} / {ex['kept_of_nonzero_f']:.3f} | "
                f"{ag['kept_mass']:.3f} / {ex['kept_mass']:.3f} |"
            )
        o = table["overall"]
        one.append(
            f"| {gfi} | **all** | | {o['both_zero']:.3f} | {o['one_zero']:.3f} | "
            f"{1 - o['both_zero'] - o['one_zero']:.3f} | {o['constant']:.3f} | {o['fisher_zero']:.3f} | "
            f"{o['rf_q50_agree']:.3f} | {o['rf_q50_exclude']:.3f} | {o['rf_ge_u_agree']:.3f} | "
            f"{o['rf_ge_u_exclude']:.3f} | **{o['kept_agree']:.3f}** | **{o['kept_exclude']:.3f}** |"
        )
        two.append(
            f"| {gfi} | **all** | | | | | {o['rf_ge_u_larger_eps_agree']:.3f} / "
            f"{o['rf_ge_u_larger_eps_exclude']:.3f} | {o['kept_of_nonzero_f_agree']:.3f} / "
            f"{o['kept_of_nonzero_f_exclude']:.3f} | {o['kept_mass_agree']:.3f} / "
            f"{o['kept_mass_exclude']:.3f} |"
        )
    return "\n".join(one) + "\n\n" + "\n".join(two) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="a finished cetl/cetl_fi run folder")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--seed", type=int, default=0, help="micro-batches, sampled targets, GFI mask")
    parser.add_argument(
        "--fisher", choices=("sampled", "empirical"), default=None, help="override the run's D4 Fisher"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/rfprobe/rf_zeros.json"))
    args = parser.parse_args(argv)
    torch.set_grad_enabled(True)
    config, method = load_method(args.run_dir, args.data_root, args.fisher)
    result: dict[str, Any] = {
        "run": {
            "experiment": config.experiment,
            "profile": config.profile,
            "method": config.method.name,
            "network": config.network.name,
            "rounds": config.train.rounds,
            "checkpoint": LAST_CHECKPOINT,
            "K": config.method.fisher_batches,
            "m": config.method.fisher_batch_size,
            "fisher": method.config.fisher,
        },
        "gfis": {},
    }
    for index, gfi in enumerate(GFIS):
        estimate = capture_estimate(method, gfi, args.seed * 10 + index)
        result["gfis"][gfi] = layer_table(estimate, GFIS[gfi][2], MASK_SEED + index)
        print(f"{gfi}: {json.dumps(result['gfis'][gfi]['overall'])}", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    print(markdown(result))
    gaps = [
        row[t]["max_gap_to_two_pass"]
        for g in result["gfis"].values()
        for row in g["layers"].values()
        for t in TREATMENTS
    ]
    print(f"streaming RF vs two-pass reference: max |Δ| = {max(gaps):.2e}", file=sys.stderr)
    return 0 if max(gaps) <= 1e-4 else 1


if __name__ == "__main__":
    raise SystemExit(main())
