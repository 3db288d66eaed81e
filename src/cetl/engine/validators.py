"""Model selection without target labels (METHOD.md §8): the rules ``train.selection`` names.

- ``source_val``: accuracy on the held-out labelled split (source data in domain adaptation);
- ``last``: the last round;
- ``unsupervised:entropy``: the mean prediction entropy on unlabelled target images (lower is
  better: confident target predictions; it can reward a collapsed classifier, so read it with care);
- ``unsupervised:reconstruction``: the mean squared error of T1(T2(x)) on unlabelled target
  images (lower is better; methods with a decoder only: CETL, DRCN);
- ``unsupervised:im``: information maximisation, ``L_ent + L_div`` of Liang et al. 2020 (Eq. 2):
  confident *and* diverse target predictions, so a collapse to one class scores badly;
- ``unsupervised:snd``: soft neighbourhood density (Saito et al., ICCV 2021): the mean entropy
  of each target image's softmax-similarity distribution over the other target images'
  predictions (temperature 0.05); higher is better (denser, consistent neighbourhoods), so the
  score recorded is its negative;
- ``unsupervised:dev``: deep embedded validation (You et al., ICML 2019): the source validation
  loss importance-weighted by a logistic domain classifier (source training vs target images,
  on the model's logits), with its control variate (Eq. 8); lower is better. Methods whose
  labelled data is source data only.

Every rule reads only what a domain-adaptation user has; target test accuracy is logged
beside them for the record and never chooses. Every evaluation records every applicable rule
(``unsupervised_<name>``), so one run shows what each rule would have chosen and its regret
(oracle minus chosen, :func:`regret`) without training again.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor

from cetl.data.training import TrainingData
from cetl.errors import ConfigError
from cetl.losses.information import information_maximisation
from cetl.methods.base import Method

UNSUPERVISED_IMAGES = 4096
"""Target images the unsupervised validators score (the first ones of the target stream)."""
UNSUPERVISED = ("entropy", "reconstruction", "im", "snd", "dev")
SND_TEMPERATURE = 0.05
"""τ of SND (Saito et al. 2021: 0.05)."""
DEV_RIDGE = 1e-3
"""L2 penalty of DEV's logistic domain classifier (on z-scored logits)."""
RULES = ("source_val", "last", *(f"unsupervised:{name}" for name in UNSUPERVISED))


def check_selection(selection: str, method: Method, data: TrainingData) -> None:
    """Fail before training when ``method`` cannot be scored by ``selection``."""
    if selection == "source_val" and len(data.labelled_val) == 0:
        raise ConfigError(
            "train.selection=source_val reads the labelled validation split, but data.val_fraction=0 "
            "holds nothing out; use train.selection=last or an unsupervised rule, or a val_fraction > 0"
        )
    if selection == "unsupervised:dev" and selection not in applicable_rules(method, data):
        raise ConfigError(
            "train.selection=unsupervised:dev weighs the labelled *source* validation loss, but this "
            "run has no labelled source validation split; use unsupervised:im or unsupervised:snd"
        )
    if selection != "unsupervised:reconstruction":
        return
    with torch.no_grad():
        reconstruction = method.reconstruct(data.target[:1])
    if reconstruction is None:
        raise ConfigError(
            f"train.selection={selection} needs a method with a decoder (T1), e.g. cetl or drcn; "
            f"{type(method).__name__} has none. Use unsupervised:im, unsupervised:snd, source_val or last."
        )


def applicable_rules(method: Method, data: TrainingData) -> list[str]:
    """The ``unsupervised:*`` rules that can score ``method`` on ``data``."""
    rules = ["entropy", "im", "snd"]
    was_training = method.training
    method.eval()  # no dropout draw: asking must not shift the training RNG
    with torch.no_grad():
        if method.reconstruct(data.target[:1]) is not None:
            rules.append("reconstruction")
    method.train(was_training)
    if method.labelled_domain == "source" and len(data.labelled_val) > 1 and len(data.labelled) > 1:
        rules.append("dev")
    return [f"unsupervised:{name}" for name in rules]


@torch.inference_mode()
def unsupervised_scores(
    rules: list[str],
    method: Method,
    data: TrainingData,
    *,
    autocast: contextlib.AbstractContextManager[Any],
) -> dict[str, float]:
    """``{"unsupervised_<name>": value}`` for each ``unsupervised:<name>`` rule (lower is better).

    Scored in eval mode: dropout would draw from the training RNG, and scoring every round must
    leave training bit-identical to a run that scores nothing.
    """
    was_training = method.training
    method.eval()
    try:
        return _scores([rule.removeprefix("unsupervised:") for rule in rules], method, data, autocast)
    finally:
        method.train(was_training)


def _scores(
    names: list[str], method: Method, data: TrainingData, autocast: contextlib.AbstractContextManager[Any]
) -> dict[str, float]:
    x = data.target[:UNSUPERVISED_IMAGES]  # (n, C, H, W)
    scores: dict[str, float] = {}
    with autocast:
        logits = method.predict(x).float()
        if "entropy" in names:
            log_p = torch.log_softmax(logits, dim=1)
            scores["entropy"] = float(-(log_p.exp() * log_p).sum(1).mean())
        if "im" in names:
            entropy, diversity = information_maximisation(logits)
            scores["im"] = float(entropy + diversity)
        if "snd" in names:
            scores["snd"] = -soft_neighbourhood_density(logits)
        if "reconstruction" in names:
            reconstruction = method.reconstruct(x)
            assert reconstruction is not None  # check_selection ran first
            scores["reconstruction"] = float((reconstruction.float() - x.float()).pow(2).mean())
        if "dev" in names:
            source = data.labelled.x[:UNSUPERVISED_IMAGES]
            val = data.labelled_val
            scores["dev"] = deep_embedded_validation(
                source_logits=method.predict_labelled(source).float(),
                target_logits=logits,
                val_logits=method.predict_labelled(val.x).float(),
                val_labels=val.y,
            )
    return {f"unsupervised_{name}": value for name, value in scores.items()}


def soft_neighbourhood_density(logits: Tensor) -> float:
    """SND of target predictions ``(N, K)`` (Saito et al. 2021, Eqs. 1–3): higher is better."""
    p = torch.nn.functional.normalize(torch.softmax(logits.float(), dim=1), dim=1)
    similarity = p @ p.T
    similarity.fill_diagonal_(-torch.inf)  # an image is not its own neighbour
    log_q = torch.log_softmax(similarity / SND_TEMPERATURE, dim=1)
    entropy = -(log_q.exp() * torch.nan_to_num(log_q, neginf=0.0)).sum(dim=1)
    return float(entropy.mean())


def deep_embedded_validation(
    *, source_logits: Tensor, target_logits: Tensor, val_logits: Tensor, val_labels: Tensor
) -> float:
    """DEV (You et al. 2019, Eq. 8) of a model: its per-image source validation loss, weighted by
    ``w(x) = (n_s / n_t) · d(x) / (1 − d(x))`` with ``d`` a logistic domain classifier's
    P(target | logits), plus the control variate ``η (mean(w) − 1)``, ``η = −Cov(wℓ, w) / Var(w)``."""
    with torch.inference_mode(False), torch.enable_grad():
        features = torch.cat([source_logits, target_logits]).clone()
        domain = torch.cat([torch.zeros(len(source_logits)), torch.ones(len(target_logits))])
        mean, std = features.mean(0), features.std(0) + 1e-6
        z = (features - mean) / std
        weight = torch.zeros(z.shape[1], requires_grad=True)
        bias = torch.zeros((), requires_grad=True)
        optimizer = torch.optim.LBFGS([weight, bias], max_iter=100, line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            optimizer.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ weight + bias, domain)
            loss = loss + DEV_RIDGE * weight.pow(2).sum()
            loss.backward()
            return loss

        optimizer.step(closure)
        with torch.no_grad():
            d = torch.sigmoid(((val_logits.clone() - mean) / std) @ weight + bias).clamp(1e-6, 1 - 1e-6)
    w = (len(source_logits) / len(target_logits)) * d / (1 - d)
    loss = torch.nn.functional.cross_entropy(val_logits.float(), val_labels, reduction="none")
    weighted = w * loss
    stacked = torch.stack([weighted, w])
    covariance = torch.cov(stacked)
    eta = -covariance[0, 1] / covariance[1, 1].clamp_min(1e-12)
    return float(weighted.mean() + eta * w.mean() - eta)


def selection_score(selection: str, record: dict[str, Any]) -> float:
    """Higher is better: validation accuracy, or minus an unsupervised validator's value."""
    if selection.startswith("unsupervised:"):
        return -record[f"unsupervised_{selection.removeprefix('unsupervised:')}"]
    return record["val_accuracy"]


def chosen_record(history: list[dict[str, Any]], rule: str) -> dict[str, Any] | None:
    """The evaluation record ``rule`` picks from a run's ``history`` (the first best, as the
    engine does), or ``None`` where the history lacks its score."""
    if not history:
        return None
    if rule == "last":
        return history[-1]
    key = "val_accuracy" if rule == "source_val" else f"unsupervised_{rule.removeprefix('unsupervised:')}"
    if any(record.get(key) is None for record in history):
        return None
    return max(history, key=lambda record: selection_score(rule, record))


def selection_history(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A run's evaluation records cut to what :func:`chosen_record`, :func:`regret` and a learning
    curve read: each round, its target test and validation accuracy and every rule's score. Kept
    per seed in a report's ``results.json``, so a cell carried into a later report keeps its regret."""
    keys = ("round", "target_test_accuracy", "val_accuracy")
    return [
        {k: v for k, v in record.items() if k in keys or k.startswith("unsupervised_")}
        for record in history
        if "target_test_accuracy" in record
    ]


def regret(history: list[dict[str, Any]], rule: str) -> float | None:
    """Oracle minus chosen target test accuracy (a fraction) for ``rule`` on one run: what the
    rule lost against picking the round by target labels. ``None`` without its scores."""
    chosen = chosen_record(history, rule)
    if chosen is None or any(record["target_test_accuracy"] is None for record in history):
        return None
    oracle = max(record["target_test_accuracy"] for record in history)
    return oracle - chosen["target_test_accuracy"]
