"""``cetl demo``: the main job — a few labelled USPS digits and a frozen MNIST network.

What cetl is for, in minutes on a CPU: S is a LeNet trained on MNIST (``source_only`` of
``digits_mn_to_us``) and then only run forward; the target has 10 labelled USPS images per
class (``tl_mn_to_us_n10``) and the rest of USPS's training images unlabelled. The demo trains
S, then ``target_only`` (the labels alone), ``fine_tune`` (S fine-tuned on them: what a
practitioner would try first) and ``cetl``, one seed, and prints and writes the measured table,
paired differences and the plot, whatever the numbers are. Nothing is held out and every method
keeps its last round (:mod:`cetl.experiments.label_efficiency`).

It is one column of the ``label_efficiency_mn_to_us`` study, run through ``cetl reproduce``'s
cell machinery: finished runs are reused, an interrupted one resumes. Data: ``--data-root``,
else ``$CETL_DATA_ROOT``, else the small real sample bundled with cetl (offline). The
domain-adaptation comparison (no target labels at all) is ``cetl reproduce table5``.
"""

from __future__ import annotations

import os
from pathlib import Path

from cetl.data.root import ENV_VAR, DataRoot, resolve_data_root, sample_root
from cetl.report.curve import curve_markdown, paired_markdown
from cetl.workflows.reproduce import collect, get_table, read_manifest, report_from_manifest, reproduce

DEMO_TABLE = "label_efficiency_demo"
"""The ``label_efficiency_mn_to_us`` column of 10 labels per class, rows S, ``target_only``,
``fine_tune`` and ``cetl`` (:data:`cetl.experiments.label_efficiency.DEMO_METHODS`)."""


def demo_data_root(explicit: str | None) -> DataRoot:
    """Explicit root, else ``$CETL_DATA_ROOT``, else the bundled sample (never a download)."""
    if explicit or os.environ.get(ENV_VAR):
        return resolve_data_root(explicit)
    return sample_root()


def run_demo(out: Path, *, data_root: str | None = None, profile: str = "quick") -> Path:
    """Train (or reuse) the demo's runs under ``out/runs`` and write ``out/report.md``.

    ``profile`` exists for tests (``smoke``); the demo itself is the ``quick`` profile.
    """
    root = demo_data_root(data_root)
    table = get_table(DEMO_TABLE)
    print(
        f"cetl demo: 10 labelled USPS images per class, S = a LeNet trained on MNIST "
        f"({profile} profile) on {root.describe()}"
    )
    folder, failed = reproduce(
        table,
        [0],
        profile=profile,
        out=out / "runs",
        data_root=root,
        command="cetl demo",
        log=lambda line: print(f"- {line}"),
    )
    report = report_from_manifest(folder, out)  # demo/report.md beside the runs
    result = collect(read_manifest(folder))
    print()
    print(curve_markdown(result, seeds=1), end="")
    print()
    print(paired_markdown(result), end="")
    print(f"\nreport: {report}")
    if failed:
        print(f"cetl demo: {failed} run(s) failed; the report says why")
    return report
