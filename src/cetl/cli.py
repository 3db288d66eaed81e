"""The ``cetl`` command line.

Commands (dataset and experiment names are lower-case):

    cetl demo [--out DIR]                          10 USPS labels per class, a frozen MNIST net; report
    cetl adapt --source S --target-data DATA [--tap T] [--unlabelled-data DIR] [--labels-per-class N]
               [--target-net NAME|auto] [--method M] [--profile P] [--seed N] [--set KEY=VALUE ...]
               [--out DIR] [--resume | --overwrite]      your own data and source (docs/adapt.md)
    cetl train EXPERIMENT|CONFIG.yaml [--method M] [--profile smoke|quick|paper] [--seed N]
               [--set KEY=VALUE ...] [--data-root DIR] [--out DIR] [--resume | --overwrite]
    cetl compare EXPERIMENT --methods M1,M2,... [--seeds N] [--profile P] [--set KEY=VALUE ...]
                 [--data-root DIR] [--out DIR]     methods × seeds side by side, paired per seed
    cetl reproduce TABLE [--profile P] [--seeds N] [--out DIR] [--only CELL ...] [--set KEY=VALUE ...]
                   [--data-root DIR] [--dry-run]   a paper table's cells × seeds, then its report
    cetl report RUN_OR_DIR ... [--out DIR] [--profile P]   measured vs paper tables with plots
    cetl eval RUN_DIR [--data-root DIR]
    cetl predict RUN_DIR IMAGE [IMAGE ...]
    cetl export RUN_DIR --format onnx|pt [--output FILE] [--taps coupling,LAYER]
    cetl show-config EXPERIMENT|CONFIG.yaml [--method M] [--profile P] [--set KEY=VALUE ...]
    cetl list [experiments|methods|networks|datasets|sources|tables]
    cetl data check [--root DIR] [NAME ...]

Errors caused by input (a bad key, a missing dataset, a corrupt checkpoint) print one
message and exit non-zero (2 for config errors, 1 otherwise, 130 after Ctrl-C, 143 after
SIGTERM, which is handled like Ctrl-C: ``cetl.engine.signals``).

Why one file: every sub-command is a thin parser plus a handler that forwards to a workflow;
keeping them together keeps the command-line surface (names, exit codes, help text) reviewable in
one place, and each handler is a few lines.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from cetl.errors import CetlError, RunError
from cetl.version import __version__

LISTABLE = ("experiments", "methods", "networks", "datasets", "sources", "tables")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cetl",
        description="Coupled End-to-end Transfer Learning and its baselines.",
    )
    parser.add_argument("--version", action="version", version=f"cetl {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_arguments(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "target",
            metavar="EXPERIMENT|CONFIG.yaml",
            help="a shipped experiment (cetl list experiments) or a YAML config file",
        )
        sub.add_argument("--method", help="method name (cetl list methods)")
        sub.add_argument("--profile", help="smoke (tests), quick (CPU, default) or paper (GPU)")
        sub.add_argument(
            "--set",
            dest="sets",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override a config value, e.g. --set train.rounds=4 (repeatable)",
        )

    train = commands.add_parser("train", help="train one experiment into a run folder")
    config_arguments(train)
    train.add_argument("--seed", type=int, help="run seed (default: the config's, 0)")
    train.add_argument(
        "--data-root",
        help="dataset folder in torchvision's layout (default: $CETL_DATA_ROOT, else a download cache)",
    )
    train.add_argument("--out", help="run folder (default: runs/EXPERIMENT/PROFILE/METHOD/seedN)")
    train.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last finished round"
    )
    train.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out (its checkpoints, records and summary) with a new one",
    )

    compare = commands.add_parser(
        "compare", help="train methods × seeds of one experiment and tabulate them, paired per seed"
    )
    compare.add_argument(
        "experiment", metavar="EXPERIMENT", help="a shipped experiment (cetl list experiments)"
    )
    compare.add_argument(
        "--methods", required=True, help="comma-separated method names, e.g. source_only,dann,cetl"
    )
    compare.add_argument("--seeds", type=_positive_int, default=3, help="seeds 0..N-1 (default: 3)")
    compare.add_argument("--profile", default="quick", help="smoke, quick (default) or paper")
    compare.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="override for every cell"
    )
    compare.add_argument("--data-root", help="dataset folder (default: as for train)")
    compare.add_argument(
        "--only-finished", action="store_true", help="train nothing; tabulate the cells already finished"
    )
    compare.add_argument(
        "--out",
        type=Path,
        default=Path("runs"),
        help="runs root: cells go to OUT/EXPERIMENT/PROFILE/METHOD/seedN, tables beside them (default: runs)",
    )

    show = commands.add_parser("show-config", help="print the resolved config as YAML")
    config_arguments(show)

    listing = commands.add_parser("list", help="list registered names")
    listing.add_argument("what", nargs="?", choices=LISTABLE, help="what to list (default: all)")
    listing.add_argument(
        "--names", action="store_true", help="bare names, one per line (for scripts), without descriptions"
    )

    data = commands.add_parser("data", help="dataset tools")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")
    check = data_commands.add_parser("check", help="show which datasets a data root holds")
    check.add_argument("--root", help="data root (default: $CETL_DATA_ROOT, else the download cache)")
    check.add_argument("names", nargs="*", metavar="NAME", help="datasets to check (default: all)")

    evaluate = commands.add_parser("eval", help="re-evaluate a finished run's selected weights")
    evaluate.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    evaluate.add_argument("--data-root", help="dataset folder (default: as for train)")

    predict = commands.add_parser("predict", help="classify image files with a trained run")
    predict.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    predict.add_argument("images", nargs="+", type=Path, metavar="IMAGE")

    export = commands.add_parser("export", help="export a run's target network")
    export.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    export.add_argument(
        "--format",
        required=True,
        choices=("onnx", "pt"),
        help="onnx (ONNX, opset 18) or pt (torch.export program, .pt2)",
    )
    export.add_argument("--output", type=Path, help="output file (default: RUN_DIR/model.onnx|.pt2)")
    export.add_argument(
        "--taps",
        help="onnx: comma-separated taps written as named outputs after the logits, so the file can "
        "be a forward-only S at them (default: coupling; a layer name works too)",
    )

    demo = commands.add_parser(
        "demo",
        help="10 labelled USPS images per class and a frozen MNIST network: target_only, fine_tune, "
        "cetl (CPU, minutes)",
    )
    demo.add_argument("--out", type=Path, default=Path("demo"), help="output folder (default: demo)")
    demo.add_argument(
        "--data-root", help="dataset folder (default: $CETL_DATA_ROOT, else the bundled sample)"
    )
    _adapt_parser(commands)
    _reproduce_parsers(commands)
    return parser


def _adapt_parser(commands: argparse._SubParsersAction) -> None:
    """``cetl adapt``: the arguments of :func:`cetl.workflows.adapt.adapt`, one flag each."""
    adapt = commands.add_parser(
        "adapt",
        help="train a target network on your own data, borrowing from a frozen source (docs/adapt.md)",
    )
    adapt.add_argument(
        "--source",
        help="S: a torchvision/timm model NAME[:WEIGHTS] (e.g. resnet18:IMAGENET1K_V1), a run folder "
        "of this project, or an .onnx file (not needed for --method target_only)",
    )
    adapt.add_argument("--tap", help="S's output to couple to: coupling (default), logits, soft, or a name")
    adapt.add_argument(
        "--target-data",
        required=True,
        help="an ImageFolder (train/<class>/, optional val/, test/, unlabelled/) or an .npz file",
    )
    adapt.add_argument(
        "--unlabelled-data", metavar="DIR", help="extra unlabelled images, flat or in sub-folders"
    )
    adapt.add_argument(
        "--labels-per-class", type=int, metavar="N", help="use only N labelled training images per class"
    )
    adapt.add_argument(
        "--target-net", default="auto", help="T2: a 'cetl list networks' name or auto (default)"
    )
    adapt.add_argument("--method", default="cetl", help="a 'cetl list methods' name (default: cetl)")
    adapt.add_argument("--profile", default="quick", help="smoke, quick (default, CPU) or paper (GPU)")
    adapt.add_argument("--seed", type=int, default=0, help="run seed (default: 0)")
    adapt.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="override a config value"
    )
    adapt.add_argument("--out", help="run folder (default: runs/adapt/DATA/PROFILE/METHOD/seedN)")
    adapt.add_argument(
        "--data-root",
        help="dataset folder for registered datasets a source or target names (default: as for train)",
    )
    adapt.add_argument(
        "--baselines",
        default="auto",
        help="methods trained beside --method on the same labels and seed, for a paired table "
        "(comma-separated, e.g. target_only,fine_tune; none for none; default auto: target_only, and "
        "for a forward-only S also kd where S predicts the target's classes, and fixmatch)",
    )
    adapt.add_argument(
        "--frozen",
        action="store_true",
        help="S may only be run forward (never fine-tuned): forward-only baselines (an ONNX S always is)",
    )
    adapt.add_argument("--resume", action="store_true", help="continue the run in --out")
    adapt.add_argument("--overwrite", action="store_true", help="replace the run in --out")


def _reproduce_parsers(commands: argparse._SubParsersAction) -> None:
    """``cetl reproduce`` (a paper table's cells × seeds) and ``cetl report`` (their tables and plots)."""
    reproduce = commands.add_parser(
        "reproduce",
        help="run a paper table's (or a study's) cells × seeds (resumable) and report them beside the paper",
    )
    reproduce.add_argument(
        "table",
        metavar="TABLE",
        help="table2 … table5, or a study such as label_efficiency_mn_to_us (cetl list tables)",
    )
    reproduce.add_argument("--profile", default="quick", help="smoke, quick (default) or paper")
    reproduce.add_argument("--seeds", type=_positive_int, default=3, help="seeds 0..N-1 (default: 3)")
    reproduce.add_argument(
        "--only",
        nargs="+",
        default=[],
        metavar="CELL",
        help="run only these cells: EXPERIMENT/METHOD, an experiment or a method (the report shows all)",
    )
    reproduce.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="override for every cell"
    )
    reproduce.add_argument("--data-root", help="dataset folder (default: as for train)")
    reproduce.add_argument(
        "--out",
        type=Path,
        default=Path("runs"),
        help="runs root: cells as for cetl compare, the report in OUT/TABLE/PROFILE (default: runs)",
    )
    reproduce.add_argument(
        "--carry",
        type=Path,
        action="append",
        default=[],
        metavar="RESULTS_JSON",
        help="an earlier reproduction's results.json: cells with no finished run here are reported "
        "from it (repeatable; the first file wins)",
    )
    reproduce.add_argument(
        "--dry-run",
        action="store_true",
        help="list what each cell would do (reuse, train, not run); train nothing",
    )
    report = commands.add_parser("report", help="paper tables with measured numbers and plots, from runs")
    report.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="RUN_OR_DIR",
        help="a run folder, a folder of runs, or a 'cetl reproduce' report folder",
    )
    report.add_argument(
        "--out", type=Path, help="report folder (default: the reproduce folder given, else ./report)"
    )
    report.add_argument("--profile", help="the profile to report when the runs mix several")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (errors from input never show a traceback)."""
    args = build_parser().parse_args(argv)
    from cetl.engine.signals import terminate_as_interrupt

    try:
        with terminate_as_interrupt(), _processes():
            return COMMANDS[args.command](args)
    except CetlError as error:
        print(f"cetl: error: {error}", file=sys.stderr)
        return error.exit_code
    except OSError as error:  # the machine, not the input: a full disk, a folder that vanished
        print(f"cetl: error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as error:  # Ctrl-C, or SIGTERM (cetl.engine.signals.Terminated)
        what = f"terminated ({error})" if str(error) else "interrupted"
        hint = error.hint if isinstance(error, Interrupted) else _resume_hint(args.command)
        print(f"\ncetl: {what}. {hint}", file=sys.stderr)
        return getattr(error, "exit_code", 130)


class Interrupted(KeyboardInterrupt):
    """A Ctrl-C or SIGTERM with the command's own advice on how to continue.

    A command that knows more than :func:`main` (the run folder it wrote into) raises this from
    the interrupt, through :func:`_advice_on_interrupt`; it stays a ``KeyboardInterrupt``, so every
    ``finally`` on the way out runs as for Ctrl-C, and keeps the signal's exit code.
    """

    def __init__(self, cause: KeyboardInterrupt, hint: str) -> None:
        super().__init__(*cause.args)
        self.hint = hint
        self.exit_code: int = getattr(cause, "exit_code", 130)


@contextlib.contextmanager
def _advice_on_interrupt(hint: Callable[[], str]) -> Iterator[None]:
    """Within the block, an interrupt becomes :class:`Interrupted` carrying ``hint()``."""
    try:
        yield
    except Interrupted:
        raise
    except KeyboardInterrupt as error:
        raise Interrupted(error, hint()) from error


def _resume_hint(command: str) -> str:
    """How to continue after an interrupt, for a command that gave no advice of its own."""
    if command in ("compare", "reproduce"):
        return (
            "Finished cells are kept and the interrupted one resumes from its last finished round: "
            f"run the same 'cetl {command}' command again."
        )
    return (
        "Finished rounds are checkpointed; continue with "
        "'cetl train RUN_DIR/config.yaml --out RUN_DIR --resume'."
    )


def _processes() -> contextlib.AbstractContextManager[object]:
    """torchrun's process group for the command's duration (docs/distributed.md); else nothing."""
    if "WORLD_SIZE" not in os.environ:  # not launched by torchrun: skip importing torch.distributed
        return contextlib.nullcontext()
    from cetl.engine.distributed import process_group

    return process_group()


def _train(args: argparse.Namespace) -> int:
    from cetl.data.root import resolve_data_root
    from cetl.engine.distributed import current
    from cetl.experiments import resolve
    from cetl.run_folder import default_run_dir, run_data_root
    from cetl.workflows.runs import resume_hint, train_run

    config = resolve(args.target, method=args.method, profile=args.profile, seed=args.seed, sets=args.sets)
    run_dir = Path(args.out) if args.out else default_run_dir(config)
    # A resume reads the data the run started with, unless told otherwise.
    data_root = run_data_root(run_dir, args.data_root) if args.resume else resolve_data_root(args.data_root)
    with _advice_on_interrupt(lambda: resume_hint(run_dir)):
        summary = train_run(
            config,
            run_dir=run_dir,
            data_root=data_root,
            resume=args.resume,
            overwrite=args.overwrite,
        )
    if not current().is_main:
        return 0
    print(
        f"{summary.experiment} {summary.method} ({summary.profile}, seed {summary.seed}): "
        f"target test accuracy {100 * summary.target_test_accuracy:.2f}% "
        f"(selected by {summary.selected_by}, round {summary.selected_round + 1}"
        f"/{summary.rounds}) in {summary.wall_seconds:.0f} s on {summary.device}\n"
        f"run folder: {run_dir}"
    )
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _compare(args: argparse.Namespace) -> int:
    from cetl.data.root import resolve_data_root
    from cetl.experiments import resolve
    from cetl.workflows.compare import compare, parse_methods

    methods = parse_methods(args.methods)
    for method in methods:  # every cell's config is validated before the first one trains
        resolve(args.experiment, method=method, profile=args.profile, sets=args.sets)
    folder = compare(
        args.experiment,
        methods,
        list(range(args.seeds)),
        profile=args.profile,
        out=args.out,
        data_root=resolve_data_root(args.data_root),
        sets=args.sets,
        only_finished=args.only_finished,
    )
    if not (folder / "compare.md").exists():
        raise RunError(f"no cell of {args.experiment} has finished under '{args.out}' yet")
    print((folder / "compare.md").read_text(encoding="utf-8"), end="")
    print(f"tables: {folder / 'compare.md'}, {folder / 'compare.json'}")
    return 0


def _show_config(args: argparse.Namespace) -> int:
    from cetl.config import dump_yaml
    from cetl.experiments import resolve

    print(dump_yaml(resolve(args.target, method=args.method, profile=args.profile, sets=args.sets)), end="")
    return 0


def _list(args: argparse.Namespace) -> int:
    from cetl.data.datasets import DATASETS
    from cetl.experiments import EXPERIMENTS
    from cetl.experiments.label_efficiency import STUDIES
    from cetl.experiments.paper import TABLES
    from cetl.methods import METHODS
    from cetl.networks import NETWORKS
    from cetl.source.adapters import source_kinds
    from cetl.source.packaged import packaged_kinds

    described = {
        "experiments": {name: _first_line(EXPERIMENTS.get(name).__doc__) for name in EXPERIMENTS.names()},
        "methods": dict.fromkeys(METHODS.names(), ""),
        "networks": dict.fromkeys(NETWORKS.names(), ""),
        "datasets": dict.fromkeys(DATASETS.names(), ""),
        "sources": source_kinds() | packaged_kinds(),
        "tables": {name: table.title for name, table in {**TABLES, **STUDIES}.items()},
    }
    for what in [args.what] if args.what else LISTABLE:
        entries = described[what]
        if not args.what:
            print(f"{what}: {', '.join(entries)}")
        elif args.names or not any(entries.values()):
            print("\n".join(entries))
        else:
            width = max(map(len, entries))
            print("\n".join(f"{name:<{width}}  {text}".rstrip() for name, text in entries.items()))
    return 0


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n", 1)[0]


def _data(args: argparse.Namespace) -> int:
    from cetl.data.check import check_datasets, format_check
    from cetl.data.datasets import DATASETS
    from cetl.data.root import resolve_data_root

    root = resolve_data_root(args.root)
    results = check_datasets(root, args.names or DATASETS.names())
    print(format_check(results, root))
    return 0 if all(r.ok for r in results) else 1


def _eval(args: argparse.Namespace) -> int:
    from cetl.run_folder import run_data_root
    from cetl.workflows.runs import evaluate_run

    report = evaluate_run(args.run_dir, data_root=run_data_root(args.run_dir, args.data_root))
    print(json.dumps(report, indent=2))
    return 0


def _predict(args: argparse.Namespace) -> int:
    from cetl.workflows.serve import predict_files

    for path, label, probability in predict_files(args.run_dir, args.images):
        print(f"{path}\t{label}\t{probability:.4f}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from cetl.workflows.serve import export_run

    taps = None if args.taps is None else [tap.strip() for tap in args.taps.split(",") if tap.strip()]
    path = export_run(args.run_dir, fmt=args.format, output=args.output, taps=taps)
    print(f"wrote {path}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from cetl.workflows.demo import run_demo

    run_demo(args.out, data_root=args.data_root)
    return 0


def _adapt(args: argparse.Namespace) -> int:
    from cetl.workflows.adapt import adapt, baseline_table, parse_baselines

    advice = "Finished rounds are checkpointed; run the same 'cetl adapt' command with --resume to continue."
    with _advice_on_interrupt(lambda: advice):  # the train hint would skip the exports
        result = adapt(
            args.source,
            args.target_data,
            unlabelled_data=args.unlabelled_data,
            target_net=args.target_net,
            method=args.method,
            profile=args.profile,
            seed=args.seed,
            tap=args.tap,
            labels_per_class=args.labels_per_class,
            sets=args.sets,
            out=args.out,
            data_root=args.data_root,
            resume=args.resume,
            overwrite=args.overwrite,
            baselines=parse_baselines(args.baselines),
            frozen=args.frozen,
        )
    metrics = result.metrics
    sizes = metrics.data_sizes
    measured = (
        f"target test accuracy {100 * result.accuracy:.2f}% on {sizes['target_test']} test images"
        if result.measured_on == "test"
        else f"validation accuracy {100 * result.accuracy:.2f}% on {sizes['labelled_val']} images "
        f"(the data has no test split)"
    )
    print(
        f"adapt {metrics.method} ({metrics.profile}, seed {metrics.seed}, {metrics.network}): "
        f"{measured} in {metrics.wall_seconds:.0f} s\n"
        f"run folder: {result.run_dir} ({', '.join(metrics.target_net_files)}, summary.json)"
    )
    if metrics.baselines:
        print(baseline_table(metrics), end="")
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from cetl.data.root import resolve_data_root
    from cetl.workflows.reproduce import format_plan, get_table, plan, reproduce, select_cells

    table = get_table(args.table)
    select_cells(table, args.only)  # a typo in --only fails before anything is planned
    data_root = resolve_data_root(args.data_root)
    seeds = list(range(args.seeds))
    if args.dry_run:
        tasks = plan(table, seeds, profile=args.profile, sets=args.sets, out=args.out, data_root=data_root)
        chosen = set(select_cells(table, args.only))
        print(format_plan([task for task in tasks if task.cell in chosen]))
        return 1 if any(task.state == "conflict" for task in tasks if task.cell in chosen) else 0
    folder, failed = reproduce(
        table,
        seeds,
        profile=args.profile,
        out=args.out,
        data_root=data_root,
        sets=args.sets,
        only=args.only,
        command=_reproduce_command(args),
        carry=args.carry,
    )
    print((folder / "report.md").read_text(encoding="utf-8"), end="")
    print(f"report: {folder / 'report.md'}, {folder / 'results.json'}")
    return 1 if failed else 0


def _reproduce_command(args: argparse.Namespace) -> str:
    """The command line that repeats a reproduction (for its report), from parsed arguments."""
    parts = ["cetl reproduce", args.table, f"--profile {args.profile}", f"--seeds {args.seeds}"]
    parts += [f"--out {args.out}"] + [f"--set {s}" for s in args.sets]
    parts += [f"--only {' '.join(args.only)}"] if args.only else []
    parts += [f"--carry {path}" for path in args.carry]
    return " ".join(parts)


def _report(args: argparse.Namespace) -> int:
    from cetl.workflows.report import build_report

    path = build_report(args.paths, out=args.out, profile=args.profile)
    print(path.read_text(encoding="utf-8"), end="")
    print(f"report: {path}, {path.with_name('results.json')}")
    return 0


COMMANDS = {
    "train": _train,
    "compare": _compare,
    "show-config": _show_config,
    "list": _list,
    "data": _data,
    "eval": _eval,
    "predict": _predict,
    "export": _export,
    "demo": _demo,
    "reproduce": _reproduce,
    "report": _report,
    "adapt": _adapt,
}
