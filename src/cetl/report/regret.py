"""Selection regret: what each label-free rule lost against choosing the round by target labels.

Every evaluation records every applicable rule's score (``cetl.engine.validators``), so a
finished run answers, for each rule, "which round would it have chosen, and how far below the
oracle round (best target test accuracy, read here and only here) is that round?". The table
has one row per method (or table cell), one column per rule, the mean regret over seeds in
points and the rule the runs actually selected with marked; a rule a run did not log is "–".
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from cetl.engine.validators import RULES, regret, selection_history
from cetl.summary import RunSummary

ORACLE_NOTE = (
    "Regret = oracle − chosen target test accuracy (points), mean over seeds; the oracle round is "
    "picked by target test labels, which no rule reads, so this is an oracle figure for evaluating "
    "the rules, never a result. `*`: the rule the runs selected with."
)


def regret_markdown(groups: Sequence[tuple[str, Sequence[RunSummary]]]) -> str:
    """The regret table for ``(label, run summaries)`` groups; empty when no run has a history."""
    cells: dict[str, dict[str, list[float]]] = {}
    used: dict[str, set[str]] = {}
    for label, summaries in groups:
        for summary in summaries:
            history = selection_history(summary.history)
            if not history:
                continue
            used.setdefault(label, set()).add(summary.selected_by)
            for rule in RULES:
                value = regret(history, rule)
                if value is not None:
                    cells.setdefault(label, {}).setdefault(rule, []).append(100 * value)
    rules = [rule for rule in RULES if any(rule in row for row in cells.values())]
    if not cells or not rules:
        return ""
    names = [rule.removeprefix("unsupervised:") for rule in rules]
    lines = ["| method | " + " | ".join(names) + " |", "|---|" + "---:|" * len(rules)]
    for label, row in cells.items():
        texts = []
        for rule in rules:
            values = row.get(rule)
            mark = "*" if rule in used.get(label, set()) else ""
            texts.append("–" if not values else f"{statistics.fmean(values):.2f}{mark}")
        lines.append(f"| {label} | " + " | ".join(texts) + " |")
    return "\n".join(lines) + "\n\n" + ORACLE_NOTE + "\n"
