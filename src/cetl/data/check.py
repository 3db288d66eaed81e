"""``cetl data check``: what a data root holds, and what to do about what it lacks."""

from __future__ import annotations

from dataclasses import dataclass

from cetl.data.datasets import DATASETS, SPLITS, load_raw, missing_message
from cetl.data.root import DataRoot
from cetl.errors import DataError


@dataclass(frozen=True)
class CheckResult:
    """Whether one dataset loads from a root, with its split sizes or the reason it does not."""

    name: str
    ok: bool
    counts: dict[str, int]
    problem: str = ""


def check_datasets(root: DataRoot, names: list[str]) -> list[CheckResult]:
    """Try to load every split of each named dataset from ``root`` (never downloads).

    Raises:
        DataError: ``root`` does not exist (one clear error instead of one per dataset).
        ConfigError: an unknown dataset name (with "did you mean").
    """
    specs = [DATASETS.get(name) for name in names]
    if not root.path.is_dir():
        raise DataError(f"data root {root.describe()} does not exist; pass an existing folder with --root")
    offline = DataRoot(root.path, root.origin, download=False)
    results = []
    for spec in specs:
        if spec.missing_files(offline.path):
            results.append(CheckResult(spec.name, False, {}, missing_message(spec, offline)))
            continue
        try:
            counts = {split: len(load_raw(spec.name, split, offline)) for split in SPLITS}
        except DataError as error:
            results.append(CheckResult(spec.name, False, {}, str(error)))
        else:
            results.append(CheckResult(spec.name, True, counts))
    return results


def format_check(results: list[CheckResult], root: DataRoot) -> str:
    """A table of results, then the problem of each missing dataset."""
    lines = [f"data root: {root.describe()}", "", f"{'dataset':<10} {'status':<8} {'train':>7} {'test':>7}"]
    for result in results:
        train = str(result.counts.get("train", "-"))
        test = str(result.counts.get("test", "-"))
        lines.append(f"{result.name:<10} {'ok' if result.ok else 'MISSING':<8} {train:>7} {test:>7}")
    for result in results:
        if not result.ok:
            lines += ["", result.problem]
    return "\n".join(lines)
