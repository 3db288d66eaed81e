"""Numbers the CETL paper reports (METHOD.md §8), as data, for reports to set beside ours.

Table 5 (digit and STL/CIFAR domain adaptation, target test accuracy in %). Keys are
(method, experiment); rows without a runnable method here are kept under their paper name
so a report can still show them.
"""

from __future__ import annotations

TABLE5_COLUMNS = {
    "digits_mn_to_us": "MN→US",
    "digits_us_to_mn": "US→MN",
    "digits_sv_to_mn": "SV→MN",
    "digits_mn_to_sv": "MN→SV",
    "natural_st_to_ci": "ST→CI",
    "natural_ci_to_st": "CI→ST",
}

_TABLE5_ROWS = {
    "source_only": (85.55, 65.77, 62.33, 25.95, 54.17, 63.61),
    "sa": (85.89, 51.54, 63.17, 28.52, 54.04, 62.88),
    "dann": (91.11, 74.01, 73.91, 35.67, 56.91, 66.12),
    "drcn": (91.80, 88.67, 81.97, 40.05, 58.86, 66.37),
    "adda": (89.40, 90.10, 76.00, None, None, None),
    "wda": (72.30, 65.50, 67.30, 23.5, None, None),
    "cetl": (92.96, 90.89, 83.33, 45.27, 60.11, 66.39),
}

TABLE5: dict[tuple[str, str], float] = {
    (method, experiment): number
    for method, numbers in _TABLE5_ROWS.items()
    for experiment, number in zip(TABLE5_COLUMNS, numbers, strict=True)
    if number is not None
}


def paper_accuracy(method: str, experiment: str) -> float | None:
    """The paper's number (in %) for a cell, or ``None`` where the paper has none."""
    return TABLE5.get((method, experiment))
