"""The one training loop: rounds → stages → steps → updates.

Every method, CETL and baselines alike, trains here; a method only supplies
stages and named, unweighted loss terms (``cetl.methods.base``). Read top to
bottom, :func:`train` and the :class:`_Run` it drives are the whole story:

    for round in rounds:                       # resumable at round boundaries
        for stage in method.stages(round):
            for epoch, step:                   # batches indexed in place on the device
                for update in stage.updates:   # weighted sum → backward → clip → step
        evaluate; select without target labels; checkpoint atomically

Launch: ``cetl train EXPERIMENT [--method M] [--profile P]`` (single process), or
``torchrun --nproc_per_node=N -m cetl train ...`` (one process per GPU; ``docs/distributed.md``).

Determinism: every random stream (batch order, dropout) is seeded from the run
seed and the round, stage, epoch and stream names, so a run interrupted after
round k and resumed reproduces the uninterrupted run bit for bit on CPU.

Why one file: it is the one training loop (DESIGN.md); its helpers (batches, progress, state) exist
only for :func:`train`, and reading the loop top to bottom is the point. :class:`_Run` holds one
run's settings and progress, so each part of a round (a stage's steps, an update, the round's
evaluation and checkpoint) is a method of its own rather than a closure inside one long function.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from cetl.config import EngineConfig, OptimizerConfig, TrainConfig
from cetl.data.labelled import LabelledSet
from cetl.data.training import TrainingData
from cetl.engine.averaging import WeightAverage
from cetl.engine.balance import BalanceTracker, term_gradient_norms
from cetl.engine.checkpoint import load_checkpoint, save_checkpoint
from cetl.engine.distributed import SINGLE, World, current
from cetl.engine.logging import MetricsLog, NullLog, RunClock, progress
from cetl.engine.nonfinite import NonFiniteWatch
from cetl.engine.validators import applicable_rules, check_selection, selection_score, unsupervised_scores
from cetl.errors import ConfigError, RunError
from cetl.methods.base import Batch, Method, Stage, Stream, Update, inverse_decay
from cetl.seeding import seeded_generator

LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
EVAL_BATCH_SIZE = 1024


@dataclass
class TrainingResult:
    """What a finished run reports (``summary.json`` adds the experiment's identity)."""

    selected_by: str
    selected_round: int
    target_test_accuracy: float | None
    """``None`` when the target data has no test split (the user's own data)."""
    val_accuracy: float | None
    """``None`` when nothing is held out for validation (``data.val_fraction=0``)."""
    rounds: int
    steps: dict[str, int]
    term_steps: dict[str, int]
    wall_seconds: float
    device: str
    history: list[dict[str, Any]] = field(default_factory=list)
    stage_history: list[dict[str, Any]] = field(default_factory=list)
    """Accuracies after every stage (``train.eval_every_stage``); empty when off."""
    term_balance: dict[str, Any] = field(default_factory=dict)
    """Per ``stage/update`` and term: mean gradient norm and mean/max ratio to the update's
    largest term (METHOD.md D10, :mod:`cetl.engine.balance`)."""
    inert_terms: list[dict[str, Any]] = field(default_factory=list)


def _optional_float(value: float | None) -> float | None:
    return None if value is None else float(value)


def resolve_device(name: str) -> torch.device:
    """``auto`` → CUDA when available, else CPU; an unavailable device is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device '{name}' is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device is '{name}' but CUDA is not available; use train.device=cpu")
    return device


def resolve_selection(selection: str, labelled_domain: str) -> str:
    """Model selection that never reads target labels (METHOD.md §8)."""
    if selection == "auto":
        return "source_val" if labelled_domain == "source" else "last"
    if selection == "source_val" and labelled_domain != "source":
        raise ConfigError(
            "train.selection=source_val needs labelled source data, but this method trains on "
            "target labels; use train.selection=last (or auto)"
        )
    return selection


def make_optimizer(
    parameters: list[nn.Parameter] | list[dict[str, Any]], config: OptimizerConfig
) -> torch.optim.Optimizer:
    """The optimiser named in the config; each (stage, update) gets its own, kept across rounds (D7).

    ``parameters`` are tensors, or parameter groups (``{"params": [...], "lr": ...}``) where an
    update scales the rate per network (:attr:`cetl.methods.base.Update.lr_scales`).
    """
    tensors = [p for entry in parameters for p in (entry["params"] if isinstance(entry, dict) else [entry])]
    if not tensors:
        raise ConfigError("an update has no trainable parameters; check the method's networks")
    # Fused kernels on CUDA: one launch per step instead of several per parameter tensor.
    fused = True if all(p.is_cuda for p in tensors) else None
    if config.name in ("adam", "adamw"):
        adam = torch.optim.Adam if config.name == "adam" else torch.optim.AdamW
        betas = (config.beta1, 0.999)
        return adam(parameters, lr=config.lr, betas=betas, weight_decay=config.weight_decay, fused=fused)
    if config.nesterov and config.momentum == 0:
        raise ConfigError(
            "optimizer.nesterov needs momentum: set optimizer.momentum above 0 (e.g. 0.9) or "
            "optimizer.nesterov=false"
        )
    return torch.optim.SGD(
        parameters,
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
        nesterov=config.nesterov,
    )


def run_update(
    update: Update,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    *,
    max_grad_norm: float | None,
    autocast: contextlib.AbstractContextManager[Any],
    world: World = SINGLE,
    skip_non_finite: bool = False,
    norms_out: dict[str, float] | None = None,
) -> dict[str, Tensor] | None:
    """One optimiser step on the weighted sum of the update's loss terms.

    With ``norms_out`` (a dict), the gradient norm of each weighted term with respect to the
    update's parameters is measured first and written into it (METHOD.md D10); the step
    itself is unchanged. An update with one term reads its norm off the summed gradient.

    With ``skip_non_finite`` (``engine.on_nan=skip_batch``) a non-finite loss skips the step
    and returns ``None``. Deciding needs the value on the host, one GPU sync per update: the
    price of skipping. It is read after the terms are averaged over ranks, so every rank of a
    multi-process run skips the same steps.

    Returns detached terms plus their weighted ``loss``: tensors, not floats, because
    ``.item()`` would synchronise with the GPU on every step; the loop converts them only on
    logging steps. With several processes, gradients and terms are averaged over ranks right
    after ``backward`` (``cetl.engine.distributed``), so clipping, the step and the returned
    terms are those of the global batch, identical on every rank.
    """
    with autocast:
        terms = update.losses(batch)
    weighted = {name: update.weights.get(name, 1.0) * term.float() for name, term in terms.items()}
    total = sum(weighted.values())
    examples = batch.x if batch.x is not None else batch.x_tgt
    count = len(examples) if examples is not None else 1
    if norms_out is not None and len(weighted) > 1:
        reduce = (lambda grads: world.weighted_mean(grads, count)) if world.distributed else None
        norms_out.update(term_gradient_norms(weighted, update.parameters(), reduce=reduce))
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    terms = world.reduce_step(update.parameters(), {**terms, "loss": total}, count)
    if norms_out is not None and len(weighted) == 1:  # the summed gradient is the term's own
        grads = [p.grad.float().square().sum() for p in update.parameters() if p.grad is not None]
        norms_out[next(iter(weighted))] = float(torch.stack(grads).sum().sqrt()) if grads else 0.0
    if skip_non_finite and not bool(torch.isfinite(terms["loss"])):
        optimizer.zero_grad(set_to_none=True)
        return None
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(list(update.parameters()), max_grad_norm)
    if update.lr_factor is not None:  # the rate each group started with, kept in its state
        factor = update.lr_factor(batch.progress)
        for group in optimizer.param_groups:
            group["lr"] = group.setdefault("base_lr", group["lr"]) * factor
    optimizer.step()
    return {name: term.detach() for name, term in terms.items()}


@torch.inference_mode()
def accuracy(
    model: nn.Module,
    data: LabelledSet,
    *,
    autocast: contextlib.AbstractContextManager[Any],
    predict: Callable[[Tensor], Tensor] | None = None,
) -> float:
    """Top-1 accuracy (a fraction) of ``predict`` (default ``model.predict``, or ``model`` itself)
    on ``data``, with ``model`` in eval mode."""
    predict = predict or getattr(model, "predict", model)
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=data.y.device)
    for start in range(0, len(data), EVAL_BATCH_SIZE):
        with autocast:
            logits = predict(data.x[start : start + EVAL_BATCH_SIZE])
        correct += (logits.argmax(dim=1) == data.y[start : start + EVAL_BATCH_SIZE]).sum()
    model.train(was_training)
    return correct.item() / max(1, len(data))


def _stream_tensors(data: TrainingData, stream: Stream) -> tuple[Tensor, Tensor | None]:
    if stream == "labelled":
        return data.labelled.x, data.labelled.y
    return data.target, None


def _batches(
    data: TrainingData,
    stage: Stage,
    *,
    batch_size: int,
    max_steps: int | None,
    seed: int,
    tag: tuple[Any, ...],
    progress: Callable[[float], float],
    world: World = SINGLE,
) -> tuple[int, Iterator[Batch]]:
    """(number of steps, iterator of batches) for one epoch of ``stage``.

    ``progress`` maps the fraction of this epoch done to the fraction of the whole run done.
    Every rank draws the same global batches and keeps its slice (``world.shard``).

    The first stream sets the epoch length (full batches only, unless the stream is smaller
    than one batch); the others are cycled, each with its own seeded order. A stream's batch
    is ``batch_size`` times its ``stage.batch_scale`` (1 unless the stage says otherwise).
    """
    sizes = [len(_stream_tensors(data, s)[0]) for s in stage.streams]
    batch_sizes = [batch_size * stage.batch_scale.get(s, 1) for s in stage.streams]
    steps = max(1, sizes[0] // batch_sizes[0])
    if max_steps is not None:
        steps = min(steps, max_steps)

    def indices(stream: Stream, size: int, batch_size: int) -> Iterator[Tensor]:
        pass_index = 0
        while True:
            generator = seeded_generator(seed, *map(str, tag), stream, str(pass_index))
            # Drawn on the CPU (the same order on every device), copied once per pass: a
            # blocking host-to-device copy per step would synchronise with the GPU every step.
            order = torch.randperm(size, generator=generator).to(_stream_tensors(data, stream)[0].device)
            usable = max(1, size // batch_size) * batch_size if size >= batch_size else size
            for start in range(0, usable, batch_size):
                yield order[start : start + batch_size]
            pass_index += 1

    def generate() -> Iterator[Batch]:
        iterators = [indices(*spec) for spec in zip(stage.streams, sizes, batch_sizes, strict=True)]
        for step in range(steps):
            fields: dict[str, Any] = {"progress": progress(step / steps)}
            for stream, iterator in zip(stage.streams, iterators, strict=True):
                x, y = _stream_tensors(data, stream)
                index = world.shard(next(iterator)).to(x.device)
                if stream == "labelled":
                    fields["x"], fields["y"], fields["idx"] = x[index], y[index], index
                else:
                    fields["x_tgt"], fields["idx_tgt"] = x[index], index
            yield Batch(**fields)

    return steps, generate()


@dataclass
class _Progress:
    """Everything a resumed run needs besides weights and optimisers (saved in ``last.pt``)."""

    rounds_done: int = 0
    stage_steps: dict[str, int] = field(default_factory=dict)
    term_steps: dict[str, int] = field(default_factory=dict)
    """Steps in which each loss term was optimised: ``classify`` gives the classification budget."""
    elapsed: float = 0.0
    best: dict[str, Any] = field(
        default_factory=lambda: {"round": -1, "val_accuracy": -math.inf, "target_test_accuracy": math.nan}
    )
    history: list[dict[str, Any]] = field(default_factory=list)
    stage_losses: dict[str, float] = field(default_factory=dict)
    """Mean loss of each stage in the last round (D7's convergence test compares them)."""
    calm_rounds: int = 0
    """Consecutive rounds in which every stage's mean loss moved less than ``tol``."""
    stage_history: list[dict[str, Any]] = field(default_factory=list)
    balance: dict[str, Any] = field(default_factory=dict)
    """:class:`BalanceTracker`'s state."""

    @property
    def global_step(self) -> int:
        return sum(self.stage_steps.values())


def train(
    method: Method,
    data: TrainingData,
    *,
    train_config: TrainConfig,
    optimizer_config: OptimizerConfig,
    seed: int,
    run_dir: Path,
    resume: bool,
    engine_config: EngineConfig | None = None,
) -> TrainingResult:
    """Train ``method`` round by round, checkpointing each one.

    Model selection reads the labelled validation split or takes the last round; the
    target test accuracy is computed every round for the record but never chooses anything.
    Stops after ``train_config.rounds`` or, with ``train_config.tol`` set, when every stage's
    mean loss changed by less than ``tol`` (relative) for ``patience`` rounds (D7).

    Raises:
        RunError: on resume, when the checkpoint is missing or does not match the method.
    """
    return _Run(
        method,
        data,
        train_config=train_config,
        optimizer_config=optimizer_config,
        seed=seed,
        run_dir=run_dir,
        resume=resume,
        engine_config=engine_config,
    ).run()


class _Run:
    """One call of :func:`train`: the run's settings and progress, with each part of a round as a
    method (setup here; :meth:`run` is the round loop, :meth:`run_stage` the step loop)."""

    def __init__(
        self,
        method: Method,
        data: TrainingData,
        *,
        train_config: TrainConfig,
        optimizer_config: OptimizerConfig,
        seed: int,
        run_dir: Path,
        resume: bool,
        engine_config: EngineConfig | None,
    ) -> None:
        self.method, self.train_config, self.optimizer_config = method, train_config, optimizer_config
        self.seed, self.run_dir = seed, run_dir
        world = current()
        world.check_batch_size(train_config.batch_size)
        device = world.device(resolve_device(train_config.device))
        selection = resolve_selection(train_config.selection, method.labelled_domain)
        method.to(device)
        data = data.to(device)
        check_selection(selection, method, data)
        rules = applicable_rules(method, data)
        use_amp = train_config.amp and device.type == "cuda"
        autocast: contextlib.AbstractContextManager[Any] = (
            torch.autocast("cuda", dtype=torch.bfloat16) if use_amp else contextlib.nullcontext()
        )
        engine = engine_config or EngineConfig()
        if engine.channels_last and device.type == "cuda":
            method.to(memory_format=torch.channels_last)  # 4-D weights: convolutions pick NHWC kernels
        networks = method.trainable_networks()
        with autocast:  # a value cached here equals what a step would compute under the same autocast
            method.prepare(data, world)
        state = _Progress()
        optimizer_states: dict[str, Any] = {}
        averages: dict[str, Any] | None = None
        if resume:
            checkpoint = load_checkpoint(run_dir / LAST_CHECKPOINT, map_location=device)
            _load_networks(networks, checkpoint["networks"], run_dir / LAST_CHECKPOINT)
            method.load_resumable_state(checkpoint["method_state"])
            state = _Progress(**checkpoint["progress"])
            optimizer_states = dict(checkpoint["optimizers"])
            averages = checkpoint.get("averages")
            if world.is_main:
                print(
                    f"cetl: resuming '{run_dir}' after round {state.rounds_done} of {train_config.rounds} "
                    f"(from {LAST_CHECKPOINT})",
                    file=sys.stderr,
                )
        world.broadcast_modules(networks.values())  # as DDP: every rank starts from rank 0's weights
        decays = method.averaged_networks()  # averaged from the weights every rank now shares
        average = WeightAverage(networks, decays) if decays else None
        if average is not None and averages is not None:
            average.load_state_dict(averages)
        log = (
            MetricsLog(
                run_dir / "metrics.jsonl",
                tensorboard_dir=run_dir / "tensorboard" if train_config.tensorboard else None,
                resume_after_round=state.rounds_done - 1 if resume else None,
            )
            if world.is_main
            else NullLog()
        )
        watch = NonFiniteWatch(device, advice=lambda: _non_finite_advice(run_dir, state.rounds_done))
        balance = BalanceTracker(state.balance, announce=world.is_main)
        state.balance = balance.state

        self.world, self.device, self.selection, self.data, self.rules = world, device, selection, data, rules
        self.autocast, self.engine, self.networks, self.state = autocast, engine, networks, state
        self.average = average
        self.optimizer_states, self.log, self.watch, self.balance = optimizer_states, log, watch, balance
        self.skip_non_finite = engine.on_nan == "skip_batch"
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.compiled: dict[Callable[[Batch], dict[str, Tensor]], Callable[[Batch], dict[str, Tensor]]] = {}
        # The clock starts once setup (S's features, caches) is done, as a resumed run's did.
        self.started = time.perf_counter() - state.elapsed
        self.clock = RunClock(start_fraction=state.rounds_done / train_config.rounds)

    def averaged(self) -> contextlib.AbstractContextManager[Any]:
        """The weight averages in the networks (:mod:`cetl.engine.averaging`) for what evaluates,
        selects or saves the selected weights; nothing when the method keeps none."""
        return self.average.applied() if self.average is not None else contextlib.nullcontext()

    def optimizer_for(self, stage: Stage, update: Update) -> torch.optim.Optimizer:
        """The optimiser of ``(stage, update)``, made on first use and kept across rounds (D7);
        a resumed run's state is loaded into it then."""
        key = f"{stage.name}/{update.name}"
        if key not in self.optimizers:
            settings = dataclasses.replace(self.optimizer_config, **update.optimizer)
            self.optimizers[key] = make_optimizer(update.param_groups(settings.lr), settings)
            if key in self.optimizer_states:
                self.optimizers[key].load_state_dict(self.optimizer_states.pop(key))
        return self.optimizers[key]

    def engine_update(self, update: Update) -> Update:
        """``update`` as the engine runs it: annealed by the run's ``optimizer.anneal_alpha`` unless
        the method brought its own schedule, and with its loss function compiled
        (``engine.compile``): the forward pass through the trainable networks and the losses
        become one graph, with a compiled backward; the optimiser step stays outside (fused on
        CUDA). Compiled functions are keyed by the loss function, so rounds reuse them."""
        settings = dataclasses.replace(self.optimizer_config, **update.optimizer)
        if update.lr_factor is None and settings.anneal_alpha > 0:
            schedule = functools.partial(
                inverse_decay, alpha=settings.anneal_alpha, beta=settings.anneal_beta
            )
            update = dataclasses.replace(update, lr_factor=schedule)
        if not self.engine.compile:
            return update
        if update.losses not in self.compiled:
            self.compiled[update.losses] = torch.compile(update.losses)
        return dataclasses.replace(update, losses=self.compiled[update.losses])

    def step_update(
        self, stage: Stage, update: Update, batch: Batch, *, measure: bool, round_index: int
    ) -> dict[str, Tensor] | None:
        """:func:`run_update` with the engine's settings; on ``measure`` steps also the term
        balance (D10), logged as a ``kind: balance`` record."""
        norms: dict[str, float] | None = {} if measure else None
        terms = run_update(
            update,
            batch,
            self.optimizer_for(stage, update),
            max_grad_norm=self.optimizer_config.max_grad_norm,
            autocast=self.autocast,
            world=self.world,
            skip_non_finite=self.skip_non_finite,
            norms_out=norms,
        )
        if norms:
            self.balance.add(stage.name, update.name, norms)
            record = {"kind": "balance", "round": round_index, "stage": stage.name, "update": update.name}
            values = {f"grad_norm/{name}": value for name, value in norms.items()}
            step = self.state.global_step + 1
            self.log.write({**record, "step": step, **values}, step=step)
        return terms

    def evaluate_accuracies(self) -> dict[str, float | None]:
        """Labelled-validation accuracy (selection reads it; ``None`` without a validation split)
        and target test accuracy (reported only)."""
        method, data, autocast = self.method, self.data, self.autocast
        return {
            "val_accuracy": (
                accuracy(method, data.labelled_val, autocast=autocast, predict=method.predict_labelled)
                if len(data.labelled_val)
                else None
            ),
            "target_test_accuracy": (
                accuracy(method, data.target_test, autocast=autocast) if len(data.target_test) else None
            ),
        }

    def stage_eval(self, round_index: int, stage_name: str, accuracies: dict[str, Any]) -> None:
        """Record the accuracies after one stage (``train.eval_every_stage``): never used to select."""
        entry = {"round": round_index, "stage": stage_name} | {
            k: accuracies[k] for k in ("val_accuracy", "target_test_accuracy")
        }
        self.state.stage_history.append(entry)
        step = self.state.global_step
        self.log.write({"kind": "stage_eval", **entry, "step": step}, step=step)

    def run_stage(self, stage: Stage, round_index: int, position: int, stage_count: int) -> dict[str, Any]:
        """All epochs of one stage (``position`` of the round's ``stage_count``); returns its
        ``kind: stage`` record (mean loss, seconds)."""
        train_config, state = self.train_config, self.state
        started_stage = time.perf_counter()
        updates = [self.engine_update(update) for update in stage.updates]
        loss_sum = torch.zeros((), device=self.device)  # summed on the device: no sync per step
        stage_steps = skipped = 0
        epochs = stage.epochs or train_config.stage_epochs
        for epoch in range(epochs):
            count, batches = _batches(
                self.data,
                stage,
                batch_size=train_config.batch_size,
                max_steps=train_config.max_steps_per_epoch,
                seed=self.seed,
                tag=("batches", round_index, stage.name, epoch),
                progress=lambda done, epoch=epoch: (
                    (round_index + (epoch + done) / epochs) / train_config.rounds
                ),
                world=self.world,
            )
            description = f"round {round_index + 1}/{train_config.rounds} {stage.name}"

            def run_fraction(step: int, epoch: int = epoch, count: int = count) -> float:
                within = (position + (epoch + step / max(1, count)) / epochs) / stage_count
                return (round_index + within) / train_config.rounds

            for step_index, batch in enumerate(
                progress(
                    batches,
                    total=count,
                    description=description,
                    enabled=train_config.progress and self.world.is_main,
                    run_fraction=run_fraction,
                    clock=self.clock,
                )
            ):
                terms: dict[str, Tensor] = {}
                measure = train_config.balance_every is not None and (
                    (stage_steps + 1) % train_config.balance_every == 0
                    or (epoch == epochs - 1 and step_index == count - 1)
                )
                for update in updates:
                    update_terms = self.step_update(
                        stage, update, batch, measure=measure, round_index=round_index
                    )
                    if update_terms is None:  # engine.on_nan=skip_batch: counted, not optimised
                        skipped += 1
                        continue
                    self.watch.observe(
                        update_terms,
                        round_index=round_index,
                        stage=stage.name,
                        update=update.name,
                        step=state.global_step + 1,
                    )
                    loss_sum += update_terms["loss"]
                    for name, value in update_terms.items():
                        if name != "loss":
                            state.term_steps[name] = state.term_steps.get(name, 0) + 1
                        terms[f"loss_{update.name}" if name == "loss" else name] = value
                if self.average is not None:
                    self.average.update()
                stage_steps += 1
                state.stage_steps[stage.name] = state.stage_steps.get(stage.name, 0) + 1
                if state.global_step % train_config.log_every == 0:
                    self.watch.check(round_index=round_index)
                    values = _checked_floats(terms, stage.name)
                    record = {"kind": "train", "round": round_index, "stage": stage.name}
                    self.log.write({**record, "step": state.global_step, **values}, step=state.global_step)
            self.watch.check(round_index=round_index)  # once per epoch even when no step was logged
            _checked_floats(terms, stage.name)
        # BatchNorm statistics: one set for eval and the Fisher
        self.world.average_buffers(self.networks.values())
        extra = stage.on_end() if stage.on_end is not None else None
        return {
            "kind": "stage",
            "round": round_index,
            "stage": stage.name,
            "step": state.global_step,
            "mean_loss": float(loss_sum) / max(1, stage_steps),
            "seconds": time.perf_counter() - started_stage,
            **({"skipped_batches": skipped} if self.skip_non_finite else {}),
            **(extra or {}),
        }

    def run_round(self, round_index: int) -> bool:
        """Train one round's stages, then evaluate, select and checkpoint it; ``False`` when the
        method has nothing left to train (SA fits once, in round 0)."""
        train_config, method, world = self.train_config, self.method, self.world
        # Dropout and noise differ between ranks (rank 0 draws as a single process would);
        # what must agree across ranks (the GFI's draws) is broadcast by its owner.
        rank_tag = ("rank", str(world.rank)) if world.rank else ()
        torch.manual_seed(seeded_generator(self.seed, "round", str(round_index), *rank_tag).initial_seed())
        method.train()
        stages = method.stages(round_index)
        if not stages and round_index > 0:
            return False
        stage_records = []
        for position, stage in enumerate(stages):
            stage_records.append(self.run_stage(stage, round_index, position, len(stages)))
            self.balance.end_stage(round_index, stage.name)
            if train_config.eval_every_stage and position < len(stages) - 1:  # the last: the round's
                with self.averaged():
                    accuracies = self.evaluate_accuracies()
                self.stage_eval(round_index, stage.name, accuracies)
        for record in stage_records:
            self.log.write(record, step=self.state.global_step)
        _update_convergence(self.state, stage_records, train_config.tol)
        with self.averaged():
            accuracies = self.evaluate_accuracies()
        record = {"kind": "eval", "round": round_index, "step": self.state.global_step, **accuracies}
        if train_config.eval_every_stage and stages:
            self.stage_eval(round_index, stages[-1].name, record)
        self.end_round(round_index, record)
        return True

    def end_round(self, round_index: int, record: dict[str, Any]) -> None:
        """Complete the round's ``kind: eval`` record, select without target labels, checkpoint."""
        method, state, world = self.method, self.state, self.world
        with self.averaged():  # what is scored and selected is what best.pt will hold
            # Every applicable rule, not only the one that selects: each run then shows what
            # the others would have chosen (their regret) without training again.
            record |= unsupervised_scores(self.rules, method, self.data, autocast=self.autocast)
            if self.train_config.monitor:
                method.eval()
                with torch.inference_mode():
                    record |= method.monitor(self.data)
            state.history.append(record)
            self.log.write(record, step=state.global_step)
            score = selection_score(self.selection, record)
            if self.selection == "last" or score > state.best.get("score", -math.inf):
                state.best = {k: record[k] for k in ("round", "val_accuracy", "target_test_accuracy")}
                state.best["score"] = score
                if world.is_main:
                    selected = {"networks": _state(self.networks), "best": state.best}
                    save_checkpoint(self.run_dir / BEST_CHECKPOINT, selected)
        state.rounds_done = round_index + 1
        state.elapsed = time.perf_counter() - self.started
        if world.is_main:
            optimizers = {k: o.state_dict() for k, o in self.optimizers.items()} | self.optimizer_states
            save_checkpoint(
                self.run_dir / LAST_CHECKPOINT,
                {
                    "networks": _state(self.networks),
                    "method_state": method.resumable_state(),
                    "optimizers": optimizers,
                    "progress": dataclasses.asdict(state),
                    **({"averages": self.average.state_dict()} if self.average is not None else {}),
                },
            )

    def run(self) -> TrainingResult:
        """Every round left (D7: until ``rounds``, or converged), then the selected weights back."""
        train_config, state, world = self.train_config, self.state, self.world
        try:
            for round_index in range(state.rounds_done, train_config.rounds):
                if train_config.tol is not None and state.calm_rounds >= train_config.patience:
                    break  # D7: converged
                if not self.run_round(round_index):
                    break
        finally:
            self.log.close()

        if world.is_main:
            selected = load_checkpoint(self.run_dir / BEST_CHECKPOINT, map_location=self.device)
            _load_networks(self.networks, selected["networks"], self.run_dir / BEST_CHECKPOINT)
        world.broadcast_modules(self.networks.values())  # the selected weights, without a shared filesystem
        return TrainingResult(
            selected_by=self.selection,
            selected_round=int(state.best["round"]),
            target_test_accuracy=_optional_float(state.best["target_test_accuracy"]),
            val_accuracy=_optional_float(state.best["val_accuracy"]),
            rounds=state.rounds_done,
            steps=dict(state.stage_steps),
            term_steps=dict(state.term_steps),
            wall_seconds=time.perf_counter() - self.started,
            device=str(self.device),
            history=state.history,
            stage_history=state.stage_history,
            **self.balance.summary(),
        )


def _update_convergence(state: _Progress, stage_records: list[dict[str, Any]], tol: float | None) -> None:
    """D7: count rounds in which every stage's mean loss moved less than ``tol`` (relative)."""
    losses = {r["stage"]: r["mean_loss"] for r in stage_records}
    if tol is not None and state.stage_losses and set(losses) == set(state.stage_losses):
        calm = all(
            abs(losses[name] - state.stage_losses[name]) <= tol * max(abs(state.stage_losses[name]), 1e-12)
            for name in losses
        )
        state.calm_rounds = state.calm_rounds + 1 if calm else 0
    state.stage_losses = losses


def _non_finite_advice(run_dir: Path, rounds_done: int) -> str:
    kept = (
        f"{run_dir / LAST_CHECKPOINT} still holds round {rounds_done}, the last finished one"
        if rounds_done
        else "no round had finished, so there is no checkpoint"
    )
    return (
        f"The run stopped; {kept}. Lower optimizer.lr, set optimizer.max_grad_norm, or skip such "
        f"batches with --set engine.on_nan=skip_batch"
    )


def _checked_floats(terms: dict[str, Tensor], stage: str) -> dict[str, float]:
    """Loss terms as floats; a non-finite one stops the run with advice.

    Checked on logging steps and at epoch ends rather than every step, because reading a
    value synchronises with the GPU.
    """
    values = {name: float(value) for name, value in terms.items()}
    if not all(math.isfinite(v) for v in values.values()):
        raise RunError(
            f"stage '{stage}' produced a non-finite loss ({values}); lower optimizer.lr or set "
            f"optimizer.max_grad_norm"
        )
    return values


def _state(networks: dict[str, nn.Module]) -> dict[str, dict[str, Tensor]]:
    return {name: net.state_dict() for name, net in networks.items()}


def _load_networks(networks: dict[str, nn.Module], states: dict[str, Any], origin: Path) -> None:
    if set(states) != set(networks):
        raise RunError(
            f"'{origin}' holds networks {sorted(states)} but this method trains {sorted(networks)}; "
            f"it was written by another method or version"
        )
    for name, network in networks.items():
        try:
            network.load_state_dict(states[name])
        except RuntimeError as error:
            raise RunError(
                f"'{origin}': the weights of '{name}' do not fit this network "
                f"({str(error).splitlines()[0]}); was the network or data changed?"
            ) from None
