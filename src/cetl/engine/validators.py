"""Model selection without target labels (METHOD.md §8): the rules ``train.selection`` names.

- ``source_val``: accuracy on the held-out labelled split (source data in domain adaptation);
- ``last``: the last round;
- ``unsupervised:entropy``: the mean prediction entropy on unlabelled target images (lower is
  better: confident target predictions; it can reward a collapsed classifier, so read it with care);
- ``unsupervised:reconstruction``: the mean squared error of T1(T2(x)) on unlabelled target
  images (lower is better; methods with a decoder only: CETL, DRCN).

Every rule reads only what a domain-adaptation user has; target test accuracy is logged
beside them for the record and never chooses.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from cetl.data.training import TrainingData
from cetl.errors import ConfigError
from cetl.methods.base import Method

UNSUPERVISED_IMAGES = 4096
"""Target images the unsupervised validators score (the first ones of the target stream)."""
UNSUPERVISED = ("entropy", "reconstruction")


def check_selection(selection: str, method: Method, data: TrainingData) -> None:
    """Fail before training when ``method`` cannot be scored by ``selection``."""
    if selection == "source_val" and len(data.labelled_val) == 0:
        raise ConfigError(
            "train.selection=source_val reads the labelled validation split, but data.val_fraction=0 "
            "holds nothing out; use train.selection=last or an unsupervised rule, or a val_fraction > 0"
        )
    if selection != "unsupervised:reconstruction":
        return
    with torch.no_grad():
        reconstruction = method.reconstruct(data.target[:1])
    if reconstruction is None:
        raise ConfigError(
            f"train.selection={selection} needs a method with a decoder (T1), e.g. cetl or drcn; "
            f"{type(method).__name__} has none. Use unsupervised:entropy, source_val or last."
        )


@torch.inference_mode()
def unsupervised_score(
    selection: str,
    method: Method,
    data: TrainingData,
    *,
    autocast: contextlib.AbstractContextManager[Any],
) -> dict[str, float]:
    """``{"unsupervised_<name>": value}`` for an ``unsupervised:<name>`` rule (lower is better)."""
    name = selection.removeprefix("unsupervised:")
    x = data.target[:UNSUPERVISED_IMAGES]  # (n, C, H, W)
    with autocast:
        if name == "entropy":
            log_p = torch.log_softmax(method.predict(x).float(), dim=1)
            value = -(log_p.exp() * log_p).sum(1).mean()
        else:
            reconstruction = method.reconstruct(x)
            assert reconstruction is not None  # check_selection ran first
            value = (reconstruction.float() - x.float()).pow(2).mean()
    return {f"unsupervised_{name}": float(value)}
