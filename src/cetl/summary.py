"""A finished run's result as one typed, versioned record: what ``summary.json`` holds.

Reports, comparisons, reproductions, ``cetl adapt`` and the CLI all read the same file; with a
dict of ~40 string keys each reader spelled the keys itself and a renamed key failed far from
its cause. Here the fields are named once, written by :func:`write_summary` and read by
:func:`read_summary_file` (through :func:`cetl.run_folder.read_summary`), and the file carries
``summary_version`` so a summary from a newer cetl is refused with advice instead of misread.

Files from before the version existed (no ``summary_version``) hold the same keys and read as
version 0. Keys this version does not know are kept in :attr:`RunSummary.extra` and written
back unchanged, so re-writing a summary (``cetl adapt`` adds its exported files) loses nothing.

Nested records (per-round history, per-stage history, term balance, the label draw) stay plain
JSON data: their producers (the engine, the balance monitor, the data builder) define them.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cetl.errors import RunError
from cetl.files import atomic_write_json

SUMMARY_VERSION = 1
"""Bump when a field changes meaning or is removed; adding a field with a default needs no bump."""

_VERSION_KEY = "summary_version"


@dataclass(frozen=True, kw_only=True)
class RunSummary:
    """What one finished run measured, and on what (the contents of ``summary.json``)."""

    experiment: str
    method: str
    profile: str
    seed: int
    target_test_accuracy: float | None
    """Of the selected model, in [0, 1]; ``None`` where the data has no labelled test split."""
    selected_by: str
    """The selection rule that picked the model (``source_val``, ``last``, ...)."""
    wall_seconds: float
    setting: str = ""
    source_dataset: str = ""
    target_dataset: str = ""
    device: str = "?"
    world_size: int = 1
    torch_threads: int | None = None
    """``torch.get_num_threads()`` while it trained: a CPU run's float sums, hence its last digits,
    depend on it, so an S retrained with another thread count is another S (``None``: not recorded)."""
    cetl_version: str = ""
    val_accuracy: float | None = None
    selected_round: int | None = None
    rounds: int = 0
    classify_steps: int = 0
    steps: int = 0
    network: str | None = None
    protocol: str | None = None
    transductive: bool = False
    data_root: str = "?"
    data_root_origin: str = ""
    num_classes: int | None = None
    data_sizes: dict[str, int] = field(default_factory=dict)
    data_variants: dict[str, str] = field(default_factory=dict)
    data_notes: list[str] = field(default_factory=list)
    label_draw: dict[str, Any] | None = None
    """The seeded draw of labelled target images, where the run drew one (few-label runs)."""
    source: str | None = None
    """S's description, for runs that read S."""
    source_run: str | None = None
    source_accuracy_on_target: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    """One record per round: accuracies and every label-free selection score."""
    stage_history: list[dict[str, Any]] = field(default_factory=list)
    term_balance: dict[str, Any] = field(default_factory=dict)
    inert_terms: list[dict[str, Any]] = field(default_factory=list)
    oracle_target_test_accuracy: float | None = None
    """The best round by target labels: an oracle figure for the record, never a result."""
    oracle_round: int | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    target_net_files: list[str] = field(default_factory=list)
    """Files ``cetl adapt`` exported the target network to."""
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)
    """``cetl adapt``'s paired baselines: each one's accuracy and the difference."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Keys this version of cetl does not know, kept so that a re-write loses nothing."""

    @property
    def target_test_percent(self) -> float:
        """The selected model's target test accuracy in %, for tables (a run without a test
        split has none to tabulate)."""
        if self.target_test_accuracy is None:
            raise RunError(
                f"run {self.experiment}/{self.method} seed {self.seed} has no target test accuracy "
                "(its data has no labelled test split)"
            )
        return 100 * self.target_test_accuracy

    def to_json(self) -> dict[str, Any]:
        """The ``summary.json`` object: every field, its version, and the kept unknown keys."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        return {_VERSION_KEY: SUMMARY_VERSION, **data, **self.extra}

    @classmethod
    def from_json(cls, data: Any, *, where: str = "summary") -> RunSummary:
        """Read a ``summary.json`` object; ``where`` names it in errors."""
        if not isinstance(data, dict):
            raise RunError(f"{where} is not a cetl run summary (a JSON object was expected)")
        data = dict(data)
        version = data.pop(_VERSION_KEY, 0)
        if not isinstance(version, int) or version > SUMMARY_VERSION:
            raise RunError(
                f"{where} has summary_version {version!r}, newer than this cetl reads "
                f"({SUMMARY_VERSION}): upgrade cetl to read it"
            )
        fields = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - data.keys())
        if missing:
            raise RunError(f"{where} is not a complete cetl run summary: it lacks {', '.join(missing)}")
        known = {key: value for key, value in data.items() if key in fields}
        extra = {key: value for key, value in data.items() if key not in fields}
        # Older summaries wrote some optional fields as null where this one keeps an empty value.
        for name in (
            "data_sizes",
            "data_variants",
            "data_notes",
            "history",
            "stage_history",
            "term_balance",
            "inert_terms",
            "stage_seconds",
            "target_net_files",
            "baselines",
        ):
            if known.get(name, 0) is None:
                del known[name]
        return cls(**known, extra=extra)


def write_summary(path: Path, summary: RunSummary) -> None:
    """Write ``summary.json`` atomically: its presence means "finished", so never half a file."""
    atomic_write_json(path, summary.to_json())


def read_summary_file(path: Path) -> RunSummary:
    """Read one ``summary.json``, with a clear error for a file that is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunError(f"cannot read the run summary '{path}': {error}") from error
    return RunSummary.from_json(data, where=f"'{path}'")
