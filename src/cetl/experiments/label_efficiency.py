"""Label efficiency (paper §3.4.4): a frozen digit network S, a LeNet T2, N labelled target images per class.

The question a user of ``cetl adapt`` asks ("does borrowing from a network I can only run
forward beat training on my few labels, or fine-tuning?") as a curve over N. Experiments are
``tl_<src>_to_<tgt>_n<N>`` for N in :data:`LABELS_PER_CLASS` and ``tl_<src>_to_<tgt>_all``:

- S is the ``source_only`` run of ``digits_<src>_to_<tgt>`` for the same profile and seed (the
  digit network this project trains on the other domain; ``source.kind=experiment``), trained
  first when missing and reused after. Its target test accuracy is S's own line in the report.
- The labelled stream is the target's training set: N images of each class, drawn by the
  run's seed (``data.labels_seed`` unset), so every seed sees its own draw, recorded in
  ``summary.json`` as ``label_draw``. Every target training image is also an unlabelled image.
- Nothing is held out for validation (``data.val_fraction=0``): with 1–10 labels per class a
  hold-out would leave classes without a training image. Every method trains a fixed budget
  and keeps its last round (``train.selection=last``); no label outside the N per class, and
  never a test label, chooses anything.
- Budget: ``cetl adapt``'s template (:mod:`cetl.experiments.any_to_own`), with the classification
  epochs per round raised so N·10 images still give its steps per round.

:data:`STUDIES` lays the experiments out as tables for ``cetl reproduce label_efficiency_mn_to_us``
(rows: S and the methods; columns: N), whose report draws the curve.
``forward_only_mn_to_us``/``_us_to_mn`` lay the same experiments out for a source that may
only be run forward (issue 36): every method reads S only through its ONNX export (variant
``fo``), beside FixMatch, which needs no S.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from cetl.config import ExperimentConfig, SourceConfig
from cetl.experiments.any_to_own import adapt_experiment, classify_epochs
from cetl.experiments.digits import QUICK_MNIST_LIMIT
from cetl.experiments.paper import TEACHER, Cell, Table

ExperimentFn = Callable[[str], ExperimentConfig]

LABELS_PER_CLASS = (1, 5, 10, 50, 100)
"""Labelled target images per class on the curve; ``_all`` adds every training label."""
DIRECTIONS = {("mn", "us"): ("mnist", "usps"), ("us", "mn"): ("usps", "mnist")}
"""Short names (as in ``digits_mn_to_us``) → datasets."""
NUM_CLASSES = 10


def label_efficiency_experiment(
    name: str, source: str, target: str, per_class: int | None, profile: str
) -> ExperimentConfig:
    """T2 = LeNet on ``target`` with ``per_class`` labels per class (``None``: all), S from ``source``."""
    base = adapt_experiment(profile)
    short = {dataset: key for pair in DIRECTIONS for key, dataset in zip(pair, DIRECTIONS[pair], strict=True)}
    limit = QUICK_MNIST_LIMIT if profile == "quick" and target == "mnist" else None
    data = dataclasses.replace(
        base.data,
        source=target,
        target=target,
        target_labels_per_class=per_class or 0,
        target_train_limit=limit,
        val_fraction=0.0,
        labels_seed=None,
    )
    train = dataclasses.replace(base.train, selection="last")
    if per_class is not None:
        train = dataclasses.replace(
            train, stage_epochs=classify_epochs(train, profile, per_class * NUM_CLASSES)
        )
    return dataclasses.replace(
        base,
        experiment=name,
        data=data,
        source=SourceConfig(kind="experiment", experiment=f"digits_{short[source]}_to_{short[target]}"),
        train=train,
    )


def _experiment(source: str, target: str, per_class: int | None) -> tuple[str, ExperimentFn]:
    short_source, short_target = next(k for k, v in DIRECTIONS.items() if v == (source, target))
    name = f"tl_{short_source}_to_{short_target}_{'all' if per_class is None else f'n{per_class}'}"

    def experiment(profile: str) -> ExperimentConfig:
        return label_efficiency_experiment(name, source, target, per_class, profile)

    count = (
        "all its labels"
        if per_class is None
        else f"{per_class} label{'s' if per_class > 1 else ''} per class"
    )
    experiment.__doc__ = (
        f"{target.upper()} with {count}, S = the {source.upper()} LeNet (source_only of "
        f"digits_{short_source}_to_{short_target}); last round, nothing held out."
    )
    return name, experiment


EXPERIMENTS: dict[str, ExperimentFn] = dict(
    _experiment(source, target, per_class)
    for source, target in DIRECTIONS.values()
    for per_class in (*LABELS_PER_CLASS, None)
)


def curve_experiments(source_short: str, target_short: str) -> list[tuple[int | None, str]]:
    """``(labels per class or None for all, experiment name)`` of one direction, in curve order."""
    prefix = f"tl_{source_short}_to_{target_short}_"
    return [(n, f"{prefix}n{n}") for n in LABELS_PER_CLASS] + [(None, f"{prefix}all")]


CURVE_ROWS: tuple[tuple[str, str, str], ...] = (
    (TEACHER, "", "S (frozen, trained on the other domain)"),
    ("target_only", "", "target_only (T2 on the labels alone)"),
    ("fine_tune", "", "fine_tune (S fine-tuned on the labels)"),
    ("kd", "", "kd (S as teacher)"),
    ("baseline", "", "baseline (CETL's classification schedule, no coupling)"),
    ("baseline", "from-s", "baseline, T2 from S (fine-tuning on CETL's schedule)"),
    ("cetl_e", "", "cetl_e"),
    ("cetl", "", "cetl"),
    ("cetl", "from-s", "cetl, T2 from S"),
)
"""The curve's rows in report order: (method or S itself, variant, row label). Variant
``from-s`` starts T2 from S's weights (``method.target_init=source``; S and T2 are both LeNets):
the coupling earns its place only by beating ``baseline`` started the same way."""
VARIANT_SETS = {"": (), "from-s": ("method.target_init=source",), "fo": ("source.access=onnx",)}
"""Variant ``fo`` (forward only) gives S to the method only as S's ONNX export (its logits and
coupling tap, ``source.access=onnx``): what a vendor's model allows."""

FORWARD_ONLY_LABELS = (1, 5, 10, 50)
"""Labelled target images per class on the forward-only curves."""
FORWARD_ONLY_ROWS: tuple[tuple[str, str, str], ...] = (
    (TEACHER, "", "S (frozen, trained on the other domain)"),
    ("target_only", "", "target_only (T2 on the labels alone)"),
    ("kd", "fo", "kd (S's logits on every target image)"),
    ("hint", "fo", "hint (S's coupling tap on the unlabelled images, no decoder)"),
    ("fixmatch", "", "fixmatch (no S)"),
    ("fixmatch_kd", "fo", "fixmatch + kd's soft term"),
    ("cetl", "fo", "cetl"),
)
"""The forward-only curve's rows: every method that can use an S it may only run forward, and
FixMatch, which needs no S. T2 starts from random weights in every row (S's weights are not
there to start from)."""


def _curve_table(
    name: str,
    title: str,
    rows: tuple[tuple[str, str, str], ...],
    columns: dict[str, str],
    references: tuple[str, ...],
    notes: tuple[str, ...] = (),
) -> Table:
    """A curve over labels per class: every ``(method, variant, row)`` in every ``{experiment: column}``."""
    return Table(
        name=name,
        title=title,
        rows=tuple(row for _, _, row in rows),
        columns=tuple(columns.values()),
        cells=tuple(
            Cell(row, column, experiment, method, None, sets=VARIANT_SETS[variant], variant=variant)
            for experiment, column in columns.items()
            for method, variant, row in rows
        ),
        curve="labelled target images per class",
        references=references,
        notes=notes,
    )


def _study(source_short: str, target_short: str) -> Table:
    source, target = DIRECTIONS[(source_short, target_short)]
    columns = {
        name: "all" if n is None else str(n) for n, name in curve_experiments(source_short, target_short)
    }
    return _curve_table(
        f"label_efficiency_{source_short}_to_{target_short}",
        f"Label efficiency, {source.upper()} network → {target.upper()}: target test accuracy against "
        f"labelled {target.upper()} images per class (not a paper table)",
        CURVE_ROWS,
        columns,
        references=("fine_tune", "target_only"),
    )


def _forward_only_study(source_short: str, target_short: str) -> Table:
    source, target = DIRECTIONS[(source_short, target_short)]
    columns = {
        name: str(n) for n, name in curve_experiments(source_short, target_short) if n in FORWARD_ONLY_LABELS
    }
    return _curve_table(
        f"forward_only_{source_short}_to_{target_short}",
        f"A source run only forward, {source.upper()} network → {target.upper()}: target test accuracy "
        f"against labelled {target.upper()} images per class, S given to every method as its ONNX "
        f"export (not a paper table)",
        FORWARD_ONLY_ROWS,
        columns,
        references=("target_only", "fixmatch", "cetl-fo"),
        notes=(
            "S is the other domain's LeNet, read by every method only through its ONNX export "
            "(logits and the coupling tap; source.access=onnx); T2 is a LeNet from random weights.",
            "Budget: the quick profile's 10 rounds, each with the classification steps of target_only "
            "(at least 30 at batch 32); fixmatch's and fixmatch_kd's steps each also read 7 × 32 "
            "unlabelled images (μ = 7), kd's stage is one pass over at most 3,200 target images per round, "
            "hint's and cetl's unlabelled stages as many.",
            "Nothing is held out and every row keeps its last round; kd's τ = 4 and α = 0.9 and fixmatch's "
            "τ = 0.95, λ_u = 1, μ = 7, EMA 0.999 are the papers' values, fixed before running.",
        ),
    )


DEMO_COLUMN = "10"
DEMO_METHODS = (TEACHER, "target_only", "fine_tune", "cetl")


def _demo(study: Table) -> Table:
    """``cetl demo``'s table: the study's 10-labels column, S, ``target_only``, ``fine_tune``, ``cetl``."""
    cells = tuple(
        c for c in study.cells if c.column == DEMO_COLUMN and c.method in DEMO_METHODS and not c.variant
    )
    return dataclasses.replace(
        study,
        name="label_efficiency_demo",
        title="cetl demo: 10 labelled USPS images per class, S = a LeNet trained on MNIST",
        rows=tuple(c.row for c in cells),
        columns=(DEMO_COLUMN,),
        cells=cells,
    )


_MN_TO_US = _study("mn", "us")
STUDIES: dict[str, Table] = {
    table.name: table
    for table in (
        _MN_TO_US,
        _study("us", "mn"),
        _demo(_MN_TO_US),
        _forward_only_study("mn", "us"),
        _forward_only_study("us", "mn"),
    )
}
"""Label-efficiency studies ``cetl reproduce`` runs beside the paper's tables (``cetl demo``'s
single column among them), and the forward-only curves (S only as its ONNX export)."""
