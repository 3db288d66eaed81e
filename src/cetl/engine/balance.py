"""Term balance (METHOD.md D10): is every loss term of an update actually moving the weights?

A term whose gradient is 0.1% of its neighbour's is switched off, whatever the equations say:
the project measured CETL's DWA and the joint variants' reconstruction terms at 1e-5 to 1e-3 of
their neighbours for months before anyone looked. So the engine measures, on a few steps of
every stage, the gradient norm of each *weighted* term (λ·term, as it enters the update's sum)
with respect to the parameters the update trains, and flags a term that stays under
:data:`INERT_RATIO` of the largest term of its update for a whole stage.

Measuring never changes training: the per-term gradients are taken with
``torch.autograd.grad`` before the ordinary backward of the sum, so a measured step applies
exactly the gradient an unmeasured one would. Under ``torchrun`` the norms are those of the
global batch (each term's gradient averaged over ranks, on measured steps only).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

INERT_RATIO = 0.01
"""A term under this fraction of its update's largest term, at every measurement of a stage,
is reported as inert."""


def term_gradient_norms(
    weighted_terms: Mapping[str, Tensor],
    parameters: Iterable[nn.Parameter],
    *,
    reduce: Callable[[Sequence[Tensor]], Sequence[Tensor]] | None = None,
) -> dict[str, float]:
    """L2 norm of ∂(weighted term)/∂θ over all of ``parameters``, per term.

    The graph is retained, so the caller's backward of the sum still works. A term that does
    not depend on any of the parameters has norm 0.

    Args:
        weighted_terms: ``{name: λ·term}``, scalars still attached to the graph.
        parameters: the update's trainable parameters.
        reduce: averages a term's gradients over ranks (``World.weighted_mean``), so a
            multi-process run logs the norms of the global batch, as one process would.
    """
    params = list(parameters)
    norms: dict[str, float] = {}
    for name, term in weighted_terms.items():
        if not term.requires_grad:
            norms[name] = 0.0
            continue
        grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        present = [g for g in grads if g is not None]
        if reduce is not None and present:
            present = list(reduce(present))
        squares = [g.float().square().sum() for g in present]
        norms[name] = float(torch.stack(squares).sum().sqrt()) if squares else 0.0
    return norms


def ratios(norms: Mapping[str, float]) -> dict[str, float]:
    """Each norm over the largest of the same measurement (all 0 when every norm is 0)."""
    largest = max(norms.values(), default=0.0)
    return {name: (value / largest if largest > 0 else 0.0) for name, value in norms.items()}


class BalanceTracker:
    """Aggregates balance measurements into what ``summary.json`` reports.

    Its whole state is plain data (:attr:`state`), saved with the engine's progress, so a
    resumed run reports the same balance as an uninterrupted one.

    ``state``:
        ``totals``: ``{"stage/update": {term: {"sum_norm", "sum_ratio", "max_ratio", "n"}}}``
        over the run; ``inert``: ``{"stage/update/term": {"stage", "update", "term", "rounds",
        "max_ratio"}}``; ``current``: the running stage's per-term maximum ratio.
    """

    def __init__(self, state: dict[str, Any] | None = None, *, announce: bool = True) -> None:
        self.state: dict[str, Any] = state if state else {"totals": {}, "inert": {}, "current": {}}
        self.announce = announce

    def add(self, stage: str, update: str, norms: Mapping[str, float]) -> None:
        """One measurement of one update's terms."""
        key = f"{stage}/{update}"
        totals = self.state["totals"].setdefault(key, {})
        current = self.state["current"].setdefault(key, {})
        for term, ratio in ratios(norms).items():
            entry = totals.setdefault(term, {"sum_norm": 0.0, "sum_ratio": 0.0, "max_ratio": 0.0, "n": 0})
            entry["sum_norm"] += norms[term]
            entry["sum_ratio"] += ratio
            entry["max_ratio"] = max(entry["max_ratio"], ratio)
            entry["n"] += 1
            current[term] = max(current.get(term, 0.0), ratio)

    def end_stage(self, round_index: int, stage: str) -> list[dict[str, Any]]:
        """Close the running stage: terms of updates with ≥ 2 terms that stayed under
        :data:`INERT_RATIO` are recorded (and announced on stderr the first time)."""
        found = []
        for key, terms in self.state["current"].items():
            if not key.startswith(f"{stage}/") or len(terms) < 2:
                continue
            update = key.removeprefix(f"{stage}/")
            for term, max_ratio in terms.items():
                if max_ratio >= INERT_RATIO:
                    continue
                entry = self.state["inert"].setdefault(
                    f"{key}/{term}",
                    {"stage": stage, "update": update, "term": term, "rounds": [], "max_ratio": 0.0},
                )
                if self.announce and not entry["rounds"]:
                    largest = max(terms, key=terms.__getitem__)
                    print(
                        f"cetl: term '{term}' of {key} is inert in round {round_index + 1}: its gradient "
                        f"stayed under {max_ratio:.2%} of '{largest}' (METHOD.md D10; see grad_norm/* "
                        f"in metrics.jsonl)",
                        file=sys.stderr,
                    )
                entry["rounds"].append(round_index)
                entry["max_ratio"] = max(entry["max_ratio"], max_ratio)
                found.append(entry)
        self.state["current"] = {
            k: v for k, v in self.state["current"].items() if not k.startswith(f"{stage}/")
        }
        return found

    def summary(self) -> dict[str, Any]:
        """``term_balance`` and ``inert_terms`` as ``summary.json`` holds them."""
        balance = {
            key: {
                term: {
                    "mean_norm": entry["sum_norm"] / entry["n"],
                    "mean_ratio": entry["sum_ratio"] / entry["n"],
                    "max_ratio": entry["max_ratio"],
                    "measurements": entry["n"],
                }
                for term, entry in terms.items()
            }
            for key, terms in self.state["totals"].items()
        }
        return {"term_balance": balance, "inert_terms": list(self.state["inert"].values())}
