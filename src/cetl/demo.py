"""``cetl demo``: the main job — a quick MNIST→USPS comparison with a report.

Runs the ``quick`` profile of ``digits_mn_to_us`` for ``source_only`` and the best
method available, side by side with the same seed and data, then writes
``report.md`` with a table and a plot. Data: ``--data-root``, else
``$CETL_DATA_ROOT``, else the small real sample bundled with cetl (offline).

It is resumable: a method whose run folder already has a summary is not trained
again, and an interrupted one continues from its last finished round.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cetl.config import merge
from cetl.data.root import ENV_VAR, DataRoot, resolve_data_root, sample_root
from cetl.experiments import resolve
from cetl.report.render import comparison_table, write_report
from cetl.runs import LAST_CHECKPOINT, read_summary, train_run

DEMO_EXPERIMENT = "digits_mn_to_us"
DEMO_METHODS = ("source_only", "cetl", "target_only")
"""``source_only`` is also S of ``cetl`` (the same run), so the two rows are paired;
``target_only`` reads target labels and is shown as the oracle upper bound."""


def demo_data_root(explicit: str | None) -> DataRoot:
    """Explicit root, else ``$CETL_DATA_ROOT``, else the bundled sample (never a download)."""
    if explicit or os.environ.get(ENV_VAR):
        return resolve_data_root(explicit)
    return sample_root()


def run_demo(out: Path, *, data_root: str | None = None, profile: str = "quick") -> Path:
    """Train (or reuse) the demo runs under ``out/runs`` and write ``out/report.md``.

    ``profile`` exists for tests (``smoke``); the demo itself is the ``quick`` profile.
    """
    root = demo_data_root(data_root)
    print(f"cetl demo: {DEMO_EXPERIMENT} ({profile} profile) on {root.describe()}")
    summaries: list[dict[str, Any]] = []
    for method in DEMO_METHODS:
        run_dir = out / "runs" / method
        # source_only's run *is* S of cetl: point the source at it so it is trained once.
        config = merge(
            resolve(DEMO_EXPERIMENT, method=method, profile=profile),
            {"source": {"path": str(out / "runs" / "source_only")}},
        )
        finished = read_summary(run_dir)
        if finished is not None:
            print(f"- {method}: already trained, reusing {run_dir}")
            summaries.append(finished)
            continue
        resume = (run_dir / LAST_CHECKPOINT).exists()
        print(f"- {method}: {'resuming' if resume else 'training'} into {run_dir}")
        summary = train_run(config, run_dir=run_dir, data_root=root, resume=resume)
        print(
            f"  target test accuracy {100 * summary['target_test_accuracy']:.2f}% "
            f"in {summary['wall_seconds']:.0f} s"
        )
        summaries.append(summary)
    intro = (
        f"Domain adaptation from labelled MNIST to unlabelled USPS with the `{profile}` profile "
        "(DRCN protocol: 32×32 grey, LeNet-size network). Model selection never reads target "
        "labels: `source_val` picks the round with the best accuracy on held-out *source* "
        "images. Paper numbers are Table 5 of the CETL paper (DRCN network, full data)."
    )
    path = write_report(summaries, out, title="cetl demo: MNIST → USPS", intro=intro)
    print()
    print(comparison_table(summaries))
    print(f"report: {path}")
    return path
