"""``cetl data check``: what a data root holds, and what to do about what it lacks.

Names are registered datasets (``mnist``, ``cifar10``, ...) or the user's own data
(``imagefolder:PATH``, ``npz:FILE``, which need no data root). A dataset is ``ok``
(the official release), ``subset`` (a partial copy, loaded but not comparable with
full-data numbers) or ``MISSING``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from cetl.data.datasets import SubsetWarning, find_spec, is_custom, load_raw, locate_dataset
from cetl.data.root import DataRoot
from cetl.errors import DataError

STATUS = {"full": "ok", "subset": "subset"}
COLUMNS = ("train", "test")
"""Splits shown as columns; others (``val``, ``unlabelled``) go into the notes column."""


@dataclass(frozen=True)
class CheckResult:
    """Whether one dataset loads from a root, with its split sizes or the reason it does not."""

    name: str
    ok: bool
    counts: dict[str, int]
    problem: str = ""
    variant: str = ""
    """``full`` or ``subset`` when ``ok``."""
    note: str = ""
    """For a subset: where it is and how much of the official release it holds."""


def check_datasets(root: DataRoot, names: list[str]) -> list[CheckResult]:
    """Try to load every split of each named dataset from ``root`` (never downloads).

    Raises:
        DataError: ``root`` does not exist and a registered dataset is to be checked (one clear
            error instead of one per dataset).
        ConfigError: an unknown dataset name (with "did you mean").
    """
    registered = [find_spec(name) for name in names if not is_custom(name)]
    if registered and not root.path.is_dir():
        raise DataError(f"data root {root.describe()} does not exist; pass an existing folder with --root")
    offline = DataRoot(root.path, root.origin, download=False)
    return [_check_one(name, offline) for name in names]


def _check_one(name: str, root: DataRoot) -> CheckResult:
    try:
        spec = find_spec(name)
        found = locate_dataset(name, root)
        with warnings.catch_warnings():  # the table says "subset"; no need to warn as well
            warnings.simplefilter("ignore", SubsetWarning)
            counts = {split: len(load_raw(name, split, root)) for split in spec.splits}
    except DataError as error:
        return CheckResult(name, False, {}, str(error))
    note = ""
    if found.variant == "subset":
        held = " / ".join(str(counts.get(split, 0)) for split in COLUMNS)
        full = " / ".join(str(spec.full_counts.get(split, "?")) for split in COLUMNS)
        note = (
            f"a subset of {spec.title}, {held} of the official {full} train / test images, in "
            f"{found.path}; numbers on it are not comparable with full-data results"
        )
    return CheckResult(name, True, counts, variant=found.variant, note=note)


def format_check(results: list[CheckResult], root: DataRoot) -> str:
    """A table of results, then the note of each subset and the problem of each missing dataset."""
    width = max([10, *(len(result.name) for result in results)])
    registered = [result.name for result in results if not is_custom(result.name)]
    # The user's own data (imagefolder:/npz:) is read where it is named; the root is not involved.
    header = [f"data root: {root.describe()}", ""] if registered else []
    lines = [
        *header,
        f"{'dataset':<{width}} {'status':<8} {'train':>7} {'test':>7}",
    ]
    for result in results:
        status = STATUS[result.variant] if result.ok else "MISSING"
        cells = [f"{result.counts.get(split, '-'):>7}" for split in COLUMNS]
        extra = ", ".join(f"{split} {n}" for split, n in result.counts.items() if split not in COLUMNS)
        lines.append(f"{result.name:<{width}} {status:<8} {' '.join(cells)}  {extra}".rstrip())
    for result in results:
        if result.note:
            lines += ["", f"{result.name}: {result.note}"]
        if not result.ok:
            lines += ["", result.problem]
    return "\n".join(lines)
