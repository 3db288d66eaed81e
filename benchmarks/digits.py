"""Hand-run benchmark: `cetl compare` over digit experiments, with results copied here.

Usage (writes ``benchmarks/results/<name>/<experiment>/``: ``compare.md``, ``compare.json`` and
the plots it links; the data root's path is written as ``$CETL_DATA_ROOT``)::

    CETL_DATA_ROOT=../shared/datasets python benchmarks/digits.py --name table5_quick \\
        --methods source_only,sa,dann,drcn,adda,cetl --experiments digits_mn_to_us digits_us_to_mn

Each experiment is one ``cetl compare`` (the same code path, cells in ``runs/benchmarks/``):
finished cells are reused, so an interrupted benchmark resumes, and ``source_only`` of seed s
is S of every coupling method of seed s, so differences from it are paired. Times are wall
seconds on this machine; compare them only within one run.
"""

from __future__ import annotations

import argparse
import platform
import shutil
from pathlib import Path

import torch

from cetl.data.root import resolve_data_root
from cetl.workflows.compare import compare, parse_methods

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True, help="results file stem")
    parser.add_argument("--experiments", nargs="+", default=["digits_mn_to_us"])
    parser.add_argument("--methods", default="source_only", help="comma-separated, as for cetl compare")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--profile", default="quick")
    parser.add_argument("--set", action="append", default=[], help="config override for every cell")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks"))
    parser.add_argument(
        "--only-finished",
        action="store_true",
        help="train nothing: tabulate the cells that have finished (a partial table, or a re-render)",
    )
    args = parser.parse_args()
    methods = parse_methods(args.methods)
    cpu = platform.processor() or platform.machine()
    machine = f"{cpu}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    RESULTS.mkdir(exist_ok=True)
    for experiment in args.experiments:
        folder = compare(
            experiment,
            methods,
            list(range(args.seeds)),
            profile=args.profile,
            out=args.out,
            data_root=resolve_data_root(None),
            sets=args.set,
            only_finished=args.only_finished,
        )
        # One folder per experiment: the table, its JSON and the PNGs compare.md links.
        target = RESULTS / args.name / experiment
        target.mkdir(parents=True, exist_ok=True)
        root = str(resolve_data_root(None).path)
        text = (folder / "compare.md").read_text(encoding="utf-8").replace(root, "$CETL_DATA_ROOT")
        (target / "compare.md").write_text(f"{text}\nMachine: {machine}.\n", encoding="utf-8")
        json_text = (folder / "compare.json").read_text(encoding="utf-8").replace(root, "$CETL_DATA_ROOT")
        (target / "compare.json").write_text(json_text, encoding="utf-8")
        for png in folder.glob("*.png"):
            shutil.copyfile(png, target / png.name)
        print(text)


if __name__ == "__main__":
    main()
