"""Bring your own data and source: :func:`adapt`, the engine of ``cetl adapt``.

The paper's practical promise (§3.4.4): improve a small target network with little labelled
data by borrowing from any pre-trained network that can merely be run forward — a torchvision
or timm model, an ONNX file from any framework, or a run of this project — with no source
data and no fine-tuning of S.

:func:`adapt` turns its arguments into an :class:`~cetl.config.ExperimentConfig` derived from
the registered ``tl_any_to_own`` template (:mod:`cetl.experiments.any_to_own`) and trains it with
:func:`cetl.workflows.runs.train_run`, the one way a run is trained; ``cetl adapt`` calls this same
function. Nothing here trains or builds networks itself: it checks the inputs (reading the
data's headers and, for ``labels_per_class``, its training labels), *decides* (which source
kind, protocol, network and budget) and hands over.

Rules it applies (``docs/adapt.md`` explains them for users):

- **Source** (``source=``): an existing ``.onnx`` file → ``source.kind=onnx``; a folder holding a
  finished run → ``run``; ``torchvision:NAME[:WEIGHTS]`` / ``timm:NAME[:none]``, or a bare name
  that torchvision lists (else one timm knows) → ``torchvision`` / ``timm``.
- **Protocol**: a project run's protocol (S takes its own image size and colour); otherwise
  grey target images → ``drcn`` (32×32 grey), colour → ``cifar`` (32×32 RGB). Images of any
  size are rescaled full frame to the protocol's size (32×32; 28×28 for an ``adda`` run).
- **target_net="auto"**: grey → ``lenet`` (``drcn`` for the ``paper`` profile), colour → ``ci_cnn``.
- **Few labels**: ``labels_per_class`` is ``data.target_labels_per_class``; all training images
  stay in the unlabelled stream. The classification stage runs enough epochs per round to make
  :data:`~cetl.experiments.any_to_own.CLASSIFY_STEPS_PER_ROUND` steps (an epoch of 100 images is a
  few steps), unless ``train.stage_epochs`` is given.

Why one file: it is one decision procedure (source kind → protocol → network → budget) whose rules
are documented together above; each rule is a small function.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cetl.errors import ConfigError, DataError, RunError
from cetl.summary import RunSummary

if TYPE_CHECKING:  # heavy imports stay out of ``import cetl`` (the CLI starts fast)
    from torch import nn

    from cetl.config import ExperimentConfig
    from cetl.data.root import DataRoot

TARGET_NET_ONNX = "target_net.onnx"
TARGET_NET_STATE = "target_net.pt"
GREY_NETWORKS = {"smoke": "lenet", "quick": "lenet", "paper": "drcn"}
COLOUR_NETWORK = "ci_cnn"
RUN_PROTOCOLS = {
    "drcn": "drcn",
    "adda": "adda",
    "tllib": "tllib",
    "cifar": "cifar",
    "cifar10s": "cifar",
    "stl_cifar": "cifar",
}
"""A run source's protocol → the target's: the same image size and colour, without class lists
(the user's classes are their own)."""
SMALL_VALIDATION = 100
"""Fewer validation images than this get a note: one image is more than a point of accuracy."""
DEFAULT_BASELINES = ("target_only",)
"""Trained beside every ``cetl adapt`` run: T2 on the labels alone, the bar borrowing must clear."""
FORWARD_ONLY_BASELINES = ("target_only", "kd", "fixmatch")
"""Trained beside a run whose S may only be run forward (an ONNX file, or ``frozen``): the
methods a practitioner with such an S would reach for — S's predictions distilled on every
target image (``kd``, only where S predicts the target's classes) and FixMatch, which needs no
S (issue 36)."""
SOURCE_FORMS = (
    "an .onnx file, a run folder of this project (holding summary.json), or a model name: "
    "torchvision NAME[:WEIGHTS] (e.g. resnet18:IMAGENET1K_V1), timm NAME (e.g. resnet18.a1_in1k) or a "
    "packaged ImageNet network (efficientnet_lite0, offline with the imagenet extra), optionally "
    "prefixed torchvision:, timm: or packaged:"
)


@dataclass(frozen=True)
class Result:
    """What :func:`adapt` returns.

    Attributes:
        target_net: the trained T2 with its selected weights, in eval mode; takes
            ``(N, C, 32, 32)`` floats in [0, 1] (``config.data.protocol``) and returns logits.
        metrics: the run's ``summary.json`` (``metrics.target_test_accuracy``, ``.val_accuracy``, ...).
        run_dir: the run folder (``config.yaml``, ``metrics.jsonl``, ``target_net.onnx``/``.pt``).
        config: the resolved config; ``cetl train RUN_DIR/config.yaml`` reruns it.
    """

    target_net: nn.Module
    metrics: RunSummary
    run_dir: Path
    config: ExperimentConfig

    @property
    def accuracy(self) -> float:
        """Target test accuracy in [0, 1], or the validation accuracy where the data has no test
        split (``measured_on`` says which)."""
        return float(measured_accuracy(self.metrics)[1])

    @property
    def measured_on(self) -> str:
        """``test``, or ``validation`` for data without a test split."""
        return "test" if self.metrics.target_test_accuracy is not None else "validation"


def adapt(
    source: str | os.PathLike[str] | None,
    target_data: str | os.PathLike[str],
    unlabelled_data: str | os.PathLike[str] | None = None,
    target_net: str = "auto",
    method: str = "cetl",
    profile: str = "quick",
    seed: int = 0,
    *,
    tap: str | None = None,
    labels_per_class: int | None = None,
    sets: Sequence[str] = (),
    out: str | os.PathLike[str] | None = None,
    data_root: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    baselines: Sequence[str] | None = None,
    frozen: bool = False,
    **overrides: Any,
) -> Result:
    """Train a target network on your own data, borrowing from a frozen source S.

    Args:
        source: S (see the module docstring for the forms); ``None`` only for methods that
            read no source (``target_only``).
        target_data: an ImageFolder (``train/<class>/``, optional ``val/``, ``test/``,
            ``unlabelled/``) or an ``.npz`` file (``cetl.data.custom``). Accuracy is reported on
            its test split; without one, on validation only (``target_test_accuracy`` null).
        unlabelled_data: a folder of extra unlabelled target images (flat or in sub-folders).
        target_net: a ``cetl list networks`` name, or ``auto``.
        method: a ``cetl list methods`` name (``cetl``, ``cetl_e``, ``target_only``, ...).
        profile: ``smoke`` (tests), ``quick`` (CPU) or ``paper`` (GPU).
        seed: the run seed.
        tap: S's tap (``source.tap``): ``coupling``, ``logits``, ``soft``, a layer or ONNX output name.
        labels_per_class: use only this many labelled training images per class (few-label setting).
        sets: ``KEY=VALUE`` overrides, as ``--set``.
        out: run folder (default ``runs/adapt/<data>/<profile>/<method>/seed<N>``).
        data_root: only for sources or data that read registered datasets (default as ``cetl train``).
        resume: continue the run in ``out``; overwrite: replace it.
        baselines: methods trained beside ``method`` on the same data, labels, seed and
            overrides, so the summary answers "did borrowing from S help?" (``baselines`` in
            ``summary.json``: each one's accuracy and the paired difference). A finished
            baseline with the same config is reused across calls; ``fine_tune`` is skipped
            (with a note) for a source without trainable weights. ``()`` trains none; ``None``
            (default) chooses (:func:`auto_baselines`): ``target_only``, and for a forward-only
            S also ``kd`` (where S predicts the target's classes) and ``fixmatch``.
        frozen: S may only be run forward, whatever it is (a network you will not let anything
            train): no method or baseline fine-tunes it, and the baselines are the forward-only
            ones. An ONNX source is always forward-only.
        **overrides: config sections as nested mappings, e.g. ``train={"rounds": 4}``.

    Raises:
        ConfigError, DataError, RunError: bad input; the message says what was expected.
    """
    from cetl.data.root import resolve_data_root
    from cetl.workflows.runs import train_run

    root = resolve_data_root(data_root)

    def configure(method_name: str, with_source: bool = True) -> ExperimentConfig:
        """The config of ``method_name`` on this call's data, labels, seed and overrides."""
        return adapt_config(
            source if with_source else None,
            target_data,
            unlabelled_data=unlabelled_data,
            target_net=target_net,
            method=method_name,
            profile=profile,
            seed=seed,
            tap=tap,
            labels_per_class=labels_per_class,
            sets=sets,
            overrides=overrides,
            data_root=root,
        )

    config = configure(method)
    forward_only = source is not None and (frozen or config.source.kind == "onnx")
    if forward_only and method in TRAINS_S:
        raise ConfigError(
            f"--method {method} trains S, but S may only be run forward here (--frozen or an ONNX file); "
            f"pick a method that reads S forward (cetl, kd, hint) or drop --frozen"
        )
    if baselines is None:
        baselines = auto_baselines(config, forward_only=forward_only)
    run_dir = Path(out) if out is not None else default_adapt_dir(config)
    summary = train_run(config, run_dir=run_dir, data_root=root, resume=resume, overwrite=overwrite)
    held_out = summary.data_sizes.get("labelled_val", 0)
    if 0 < held_out < SMALL_VALIDATION:
        print(
            f"cetl: note: validation holds {held_out} images, so its accuracy moves by "
            f"{100 / held_out:.1f} points per image: read it (and any round chosen on it) as rough "
            f"(add a val/ split, or more labels)"
        )
    metrics, net = _export_target_net(run_dir)
    compared = {}
    for baseline in dict.fromkeys(b for b in baselines if b != method):
        baseline_config = configure(baseline, with_source=baseline != "target_only")
        if baseline in TRAINS_S and forward_only:
            why = "an ONNX source has no weights" if config.source.kind == "onnx" else "--frozen"
            print(f"cetl: note: baseline {baseline} skipped: it trains S ({why})")
            continue
        folder = (
            default_adapt_dir(baseline_config) if out is None else run_dir.parent / "baselines" / baseline
        )
        compared[baseline] = _baseline(baseline_config, folder, root, metrics)
    if compared:
        from cetl.run_folder import SUMMARY_FILE
        from cetl.summary import write_summary

        metrics = dataclasses.replace(metrics, baselines=compared)
        write_summary(run_dir / SUMMARY_FILE, metrics)
    return Result(target_net=net, metrics=metrics, run_dir=run_dir, config=config)


TRAINS_S = ("fine_tune", "shot")
"""Methods that train a copy of S, impossible for a forward-only one."""


def auto_baselines(config: ExperimentConfig, *, forward_only: bool) -> tuple[str, ...]:
    """The baselines :func:`adapt` trains unless told: ``target_only``; for a forward-only S
    :data:`FORWARD_ONLY_BASELINES` (``kd`` only where S's logits are the target's classes)."""
    if not forward_only:
        return DEFAULT_BASELINES
    if predicts_target_classes(config):
        return FORWARD_ONLY_BASELINES
    print("cetl: note: baseline kd skipped: S's logits are not the target's classes (their number or names)")
    return tuple(name for name in FORWARD_ONLY_BASELINES if name != "kd")


def predicts_target_classes(config: ExperimentConfig) -> bool:
    """Whether S's logits can be distilled into T2: as many as the target's classes, with the
    same names where S knows its class names."""
    import torch

    from cetl.build import build_source
    from cetl.data.datasets import find_spec
    from cetl.data.protocols import PROTOCOLS

    protocol = PROTOCOLS[config.data.protocol]
    run_dir = Path(config.source.path) if config.source.kind == "run" and config.source.path else None
    source = build_source(config.source, run_dir=run_dir)
    logits = source.predict(torch.zeros(1, protocol.channels, protocol.image_size, protocol.image_size))
    classes = find_spec(config.data.target).classes
    if logits.ndim != 2 or logits.shape[1] != len(classes):
        return False
    return not source.classes or tuple(source.classes) == tuple(classes)


def _baseline(config: ExperimentConfig, run_dir: Path, root: DataRoot, metrics: RunSummary) -> dict[str, Any]:
    """Train (or reuse, when it finished with this very config) one baseline; its record."""
    key, accuracy = measured_accuracy(metrics)
    from cetl.config import to_dict
    from cetl.run_folder import read_config, read_summary
    from cetl.workflows.runs import LAST_CHECKPOINT, config_differences, train_run

    summary = read_summary(run_dir)
    if summary is not None and config_differences(to_dict(read_config(run_dir)), to_dict(config)):
        print(f"cetl: note: baseline {config.method.name} in {run_dir} had another config; training it again")
        summary = train_run(config, run_dir=run_dir, data_root=root, overwrite=True)
    elif summary is None:
        print(f"cetl: training baseline {config.method.name} into {run_dir}")
        summary = train_run(
            config, run_dir=run_dir, data_root=root, resume=(run_dir / LAST_CHECKPOINT).exists()
        )
    return {
        "target_test_accuracy": summary.target_test_accuracy,
        "val_accuracy": summary.val_accuracy,
        "difference": 100 * (accuracy - getattr(summary, key)),
        "measured_on": "test" if key == "target_test_accuracy" else "validation",
        "wall_seconds": summary.wall_seconds,
        "run_dir": str(run_dir),
    }


def adapt_config(
    source: str | os.PathLike[str] | None,
    target_data: str | os.PathLike[str],
    *,
    unlabelled_data: str | os.PathLike[str] | None = None,
    target_net: str = "auto",
    method: str = "cetl",
    profile: str = "quick",
    seed: int = 0,
    tap: str | None = None,
    labels_per_class: int | None = None,
    sets: Sequence[str] = (),
    overrides: Mapping[str, Any] | None = None,
    data_root: DataRoot | None = None,
) -> ExperimentConfig:
    """The validated config :func:`adapt` trains (nothing is trained; data headers are read).

    Precedence, lowest first: the ``tl_any_to_own`` template of ``profile``, what the arguments decide
    (data, source, protocol, network, budget), ``overrides``, then ``sets``. ``data_root``
    is where registered datasets would be read (the user's own data ignores it; passing the
    root :func:`adapt` trains with lets the label count here share the loader's cache).
    """
    from cetl.build import uses_source
    from cetl.config import parse_set_overrides
    from cetl.data.datasets import find_spec
    from cetl.data.protocols import PROTOCOLS
    from cetl.experiments import merge_config, resolve
    from cetl.experiments.any_to_own import NAME as ADAPT_EXPERIMENT
    from cetl.networks import NETWORKS

    config = resolve(ADAPT_EXPERIMENT, method=method, profile=profile, seed=seed)
    dataset = target_dataset(target_data)
    spec = find_spec(dataset)
    source_section = source_config(source, tap=tap)
    protocol = _protocol(source_section, spec.channels)
    channels = PROTOCOLS[protocol].channels
    network = _network(target_net, channels, profile)
    NETWORKS.get(network)  # an unknown --target-net fails here, with "did you mean"
    data: dict[str, Any] = {"source": dataset, "target": dataset, "protocol": protocol}
    if unlabelled_data is not None:
        folder = Path(unlabelled_data).expanduser().resolve()
        if not folder.is_dir():
            raise DataError(
                f"--unlabelled-data {unlabelled_data} is not a folder; expected a folder of image files "
                f"(flat or in sub-folders)"
            )
        data["unlabelled"] = str(folder)
    if labels_per_class is not None:
        _check_labels_per_class(dataset, labels_per_class, data_root)
        data["target_labels_per_class"] = labels_per_class
    config = merge_config(config, {"data": data, "network": {"name": network}, "source": source_section})
    user = [dict(overrides or {}), parse_set_overrides(list(sets))]
    for layer in user:
        config = merge_config(config, layer)
    if not any("stage_epochs" in (layer.get("train") or {}) for layer in user):
        epochs = _classify_epochs(config, spec, labels_per_class)
        config = merge_config(config, {"train": {"stage_epochs": epochs}})
    if source is None and uses_source(config):
        raise ConfigError(
            f"method {config.method.name} borrows from a source network: give --source ({SOURCE_FORMS}); "
            f"target_only trains without one"
        )
    return config


def parse_baselines(text: str) -> tuple[str, ...] | None:
    """``--baselines``: comma-separated method names, ``none``, or ``auto`` (``None``: let
    :func:`adapt` choose by the source, :func:`auto_baselines`).

    Raises:
        ConfigError: an unknown method, with a suggestion.
    """
    from cetl.methods import METHODS

    if text.strip().lower() == "none":
        return ()
    if text.strip().lower() == "auto":
        return None
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    for name in names:
        METHODS.get(name)  # unknown names fail here, with a "did you mean"
    return names


def measured_accuracy(summary: RunSummary) -> tuple[str, float]:
    """The accuracy a run is judged by, with its summary field: target test, else validation
    (the user's data may have no test split)."""
    if summary.target_test_accuracy is not None:
        return "target_test_accuracy", summary.target_test_accuracy
    if summary.val_accuracy is None:
        raise RunError(
            f"run {summary.method} seed {summary.seed} measured no accuracy (no test or validation split)"
        )
    return "val_accuracy", summary.val_accuracy


def baseline_table(metrics: RunSummary) -> str:
    """The paired table ``cetl adapt`` prints: this run, then each baseline and its difference,
    on the target test split (on validation where the data has none)."""
    key, accuracy = measured_accuracy(metrics)
    where = "target test" if key == "target_test_accuracy" else "validation (no test split)"
    lines = [
        f"| method | {where} acc. (%) | this run minus it (points) | run folder |",
        "|---|---:|---:|---|",
        f"| {metrics.method} (this run) | {100 * accuracy:.2f} | – | – |",
    ]
    for name, entry in metrics.baselines.items():
        accuracy, difference = 100 * entry[key], entry["difference"]
        lines.append(f"| {name} | {accuracy:.2f} | {difference:+.2f} | {entry['run_dir']} |")
    return "\n".join(lines) + "\n"


def default_adapt_dir(config: ExperimentConfig) -> Path:
    """``runs/adapt/<data name>/<profile>/<method>/seed<N>``."""
    name = Path(config.data.target.partition(":")[2]).stem
    return Path("runs", "adapt", name, config.profile, config.method.name, f"seed{config.seed}")


# --------------------------------------------------------------------------- inputs


def target_dataset(target_data: str | os.PathLike[str]) -> str:
    """``imagefolder:ABS_PATH`` or ``npz:ABS_FILE`` for a folder, an ``.npz`` file or such a name."""
    text = os.fspath(target_data)
    scheme, colon, location = text.partition(":")
    if colon and scheme in ("imagefolder", "npz"):
        return f"{scheme}:{Path(location).expanduser().resolve()}"
    path = Path(text).expanduser().resolve()
    if path.is_dir():
        return f"imagefolder:{path}"
    if path.is_file() and path.suffix.lower() == ".npz":
        return f"npz:{path}"
    what = "is not an .npz file" if path.is_file() else "does not exist"
    raise DataError(
        f"--target-data {text} {what}; expected an ImageFolder (a folder with train/<class>/ images, "
        f"optional val/, test/ and unlabelled/) or an .npz file (x_train, y_train, x_test, y_test)"
    )


def source_config(source: str | os.PathLike[str] | None, *, tap: str | None) -> dict[str, Any]:
    """The ``source`` config section for ``--source`` (see the module docstring).

    Raises:
        ConfigError: an .onnx file or path that does not exist, or an unknown model name.
        RunError: a folder that is not a finished run.
    """
    section: dict[str, Any] = {} if tap is None else {"tap": tap}
    if source is None:
        return section
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.suffix.lower() == ".onnx":
        if not path.is_file():
            raise ConfigError(
                f"--source {text}: the ONNX file does not exist; expected an .onnx file whose first input "
                f"is an image batch (N, C, H, W), e.g. one written by 'cetl export RUN --format onnx'"
            )
        return section | {"kind": "onnx", "path": str(path.resolve())}
    if path.is_dir():
        if not (path / "summary.json").is_file():
            raise RunError(
                f"--source {text} is a folder but not a finished cetl run (it has no summary.json); "
                f"give the folder of a finished run (e.g. runs/<experiment>/<profile>/<method>/seed0)"
            )
        return section | {"kind": "run", "path": str(path.resolve())}
    kind, colon, spec = text.partition(":")
    if colon and kind in ("torchvision", "timm", "packaged"):
        return section | {"kind": kind, "model": spec}
    if os.sep in text or text.startswith(("~", ".")) or path.suffix:
        raise ConfigError(f"--source {text} does not exist; expected {SOURCE_FORMS}")
    return section | {"kind": _model_kind(text), "model": text}


def _model_kind(spec: str) -> str:
    """``packaged`` for a network a package ships (:data:`cetl.source.packaged.PACKAGED`: it
    works offline), ``torchvision`` when torchvision lists the name, else ``timm`` when timm knows it."""
    import torchvision.models as models

    from cetl.registry import did_you_mean
    from cetl.source.packaged import PACKAGED

    name = spec.partition(":")[0]
    if name in PACKAGED:
        return "packaged"
    if name in models.list_models():
        return "torchvision"
    try:
        import timm
    except ImportError:
        timm = None
    if timm is not None and timm.is_model(name):
        return "timm"
    hint = did_you_mean(name, models.list_models())
    missing = "" if timm is not None else ' (timm is not installed: pip install "cetl[timm]" for its models)'
    raise ConfigError(f"--source {spec}: unknown model '{name}';{hint} expected {SOURCE_FORMS}{missing}")


def _protocol(source_section: Mapping[str, Any], channels: int) -> str:
    """A run source's own protocol (S takes its images), else by the target's colour."""
    if source_section.get("kind") == "run":
        from cetl.run_folder import read_config

        return RUN_PROTOCOLS[read_config(Path(source_section["path"])).data.protocol]
    return "drcn" if channels == 1 else "cifar"


def _network(target_net: str, channels: int, profile: str) -> str:
    if target_net != "auto":
        return target_net
    return GREY_NETWORKS.get(profile, "lenet") if channels == 1 else COLOUR_NETWORK


def _check_labels_per_class(dataset: str, per_class: int, root: DataRoot | None) -> None:
    """Fail before training when a class has fewer training images than ``--labels-per-class``."""
    import torch

    from cetl.data.datasets import find_spec, load_raw
    from cetl.data.root import resolve_data_root

    if per_class < 1:
        raise ConfigError(f"--labels-per-class must be at least 1, got {per_class}")
    spec = find_spec(dataset)
    labels = load_raw(dataset, "train", root or resolve_data_root(None)).labels
    counts = torch.bincount(labels, minlength=spec.num_classes)
    fewest = int(counts.min())
    if fewest < per_class:
        name = spec.classes[int(counts.argmin())] if spec.classes else str(int(counts.argmin()))
        raise ConfigError(
            f"--labels-per-class {per_class} is more than the {fewest} training images of class "
            f"'{name}' in {spec.title}; use --labels-per-class {fewest} or less, or add images"
        )


def _classify_epochs(config: ExperimentConfig, spec: Any, labels_per_class: int | None) -> int:
    """Classification epochs per round so that few labels still get enough steps (module docstring)."""
    from cetl.experiments.any_to_own import classify_epochs

    if labels_per_class is None:
        return config.train.stage_epochs
    labelled = labels_per_class * spec.num_classes
    if "val" not in spec.splits and config.data.val_fraction > 0:  # split_validation's hold-out
        labelled -= max(1, round(labelled * config.data.val_fraction))
    return classify_epochs(config.train, config.profile, labelled)


# --------------------------------------------------------------------------- outputs


def _export_target_net(run_dir: Path) -> tuple[RunSummary, nn.Module]:
    """Write ``target_net.pt`` (state dict) and ``target_net.onnx`` atomically; note them in the summary."""
    from cetl.build import load_target_net
    from cetl.engine.checkpoint import save_checkpoint
    from cetl.errors import CetlError
    from cetl.run_folder import SUMMARY_FILE, read_summary
    from cetl.summary import write_summary
    from cetl.workflows.serve import export_run

    _, net, _ = load_target_net(run_dir)
    save_checkpoint(run_dir / TARGET_NET_STATE, dict(net.state_dict()))
    files = [TARGET_NET_STATE]
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter's progress lines
            export_run(run_dir, fmt="onnx", output=run_dir / TARGET_NET_ONNX)  # written atomically
        files.append(TARGET_NET_ONNX)
    except CetlError as error:  # the onnx extra is missing: the run and the state dict stand
        print(f"cetl: note: {TARGET_NET_ONNX} not written: {error}")
    finished = read_summary(run_dir)
    if finished is None:
        raise RunError(f"'{run_dir}' has no {SUMMARY_FILE}: the run did not finish")
    summary = dataclasses.replace(finished, target_net_files=files)
    write_summary(run_dir / SUMMARY_FILE, summary)
    return summary, net
