"""The contracts every method fits: Update, Stage, Method (DESIGN.md, "Contracts").

A method only *describes* training: which parameters each update trains and which
named, unweighted loss terms it minimises. The engine (``cetl.engine.loop``) owns
everything else — optimisers, backward, clipping, AMP, logging, evaluation,
checkpoints — so every method, CETL and baselines alike, runs through one loop.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from torch import Tensor, nn

from cetl.config import MethodConfig

if TYPE_CHECKING:
    from cetl.data.training import TrainingData
    from cetl.fisher.protection import Collectives

Component = Literal[
    "source", "decoder", "source_adapter", "feature_cache", "labelled_domain", "class_names", "setting"
]

Stream = Literal["labelled", "target"]
"""``labelled``: the labelled training data (source images in domain adaptation, target images
otherwise). ``target``: unlabelled target training images (labels are never loaded)."""


def labels_by_setting(setting: str) -> Literal["source", "target"]:
    """Target labels, except source labels in domain adaptation (where reading target labels
    would make a method an oracle): the rule of every method that works in several settings."""
    return "source" if setting == "domain_adaptation" else "target"


@dataclass(frozen=True)
class Batch:
    """One step's data; fields a stage did not ask for are ``None``.

    Attributes:
        x: labelled images ``(B, C, H, W)``.
        y: their labels ``(B,)``.
        x_tgt: unlabelled target images ``(B, C, H, W)``.
        idx, idx_tgt: positions of ``x`` and ``x_tgt`` in their streams, so a method can look
            up per-image values computed once (the source-feature cache, D9).
        progress: fraction of the planned training done before this step, in [0, 1): rounds
            and the steps within the current stage epoch. Schedules read it (DANN's
            gradient-reversal coefficient) so they need no state of their own to resume.
    """

    x: Tensor | None = None
    y: Tensor | None = None
    x_tgt: Tensor | None = None
    idx: Tensor | None = None
    idx_tgt: Tensor | None = None
    progress: float = 0.0


def inverse_decay(progress: float, alpha: float, beta: float) -> float:
    """The learning-rate factor ``(1 + α p)^-β`` at a fraction ``p`` of training done.

    DANN's annealing (Ganin & Lempitsky 2015, §5.2.2: α = 10, β = 0.75) and TLlib's
    ``(1 + γ·step)^-0.75`` (α = γ × total steps) are this one curve; the engine applies it run-wide
    (``optimizer.anneal_alpha``) and ``dann`` as its own policy, so both read one formula.
    """
    return (1.0 + alpha * progress) ** -beta


@dataclass(frozen=True)
class Update:
    """One optimiser step per training step: ``networks``' parameters against ``losses``.

    Attributes:
        name: stable identifier; with the stage name it keys the optimiser and its checkpoint.
        networks: modules whose trainable parameters this update changes.
        losses: ``batch -> {term name: scalar}``, unweighted.
        weights: per-term weights (Eq. 3's λ, Eq. 6's λ1..λ3, DWA λs); missing terms weigh 1.
        optimizer: fields of ``OptimizerConfig`` this update's optimiser overrides (e.g. ADDA's
            published ``{"lr": 2e-4, "beta1": 0.5}``); empty keeps the run's settings.
        lr_scales: per network of ``networks``, a factor on the learning rate of the parameters
            it is first to list (fine-tuning's smaller rate for a pre-trained backbone than for a
            new head); empty: 1 for every network.
        lr_factor: the learning rate's factor at a fraction of training done (``Batch.progress``),
            applied before every step: a method's own annealing policy (DANN's
            ``μ_p = μ_0 / (1 + 10 p)^0.75``, :func:`inverse_decay`); ``None`` leaves it to the
            run's ``optimizer.anneal_alpha`` (constant when that is 0).
    """

    name: str
    networks: tuple[nn.Module, ...]
    losses: Callable[[Batch], dict[str, Tensor]]
    weights: Mapping[str, float] = field(default_factory=dict)
    optimizer: Mapping[str, Any] = field(default_factory=dict)
    lr_scales: tuple[float, ...] = ()
    lr_factor: Callable[[float], float] | None = None

    def parameters(self) -> Iterator[nn.Parameter]:
        """Trainable parameters, each once, in a stable order."""
        for _, group in self._by_network():
            yield from group

    def param_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimiser parameter groups at ``lr``: one group without :attr:`lr_scales` (the layout
        every checkpoint so far holds), else one per network with parameters, at ``lr`` × its scale."""
        if not self.lr_scales:
            return [{"params": list(self.parameters()), "lr": lr}]
        if len(self.lr_scales) != len(self.networks):
            raise ValueError(
                f"update {self.name}: {len(self.lr_scales)} lr_scales for {len(self.networks)} networks"
            )
        return [
            {"params": group, "lr": lr * self.lr_scales[index]}
            for index, group in self._by_network()
            if group
        ]

    def _by_network(self) -> Iterator[tuple[int, list[nn.Parameter]]]:
        """Each network's trainable parameters not listed by an earlier network."""
        seen: set[int] = set()
        for index, network in enumerate(self.networks):
            group = []
            for parameter in network.parameters():
                if parameter.requires_grad and id(parameter) not in seen:
                    seen.add(id(parameter))
                    group.append(parameter)
            yield index, group


@dataclass(frozen=True)
class Stage:
    """A phase of a round: its data streams and the updates run in order each step.

    Attributes:
        name: ``classify``, ``reconstruct_source``, ...; shown in logs and progress bars.
        streams: data the stage draws; the first stream's size sets the epoch length and the
            others are cycled alongside it.
        updates: run in this order on every step's batch.
        on_end: called once after the stage's epochs (e.g. to freeze T1′ or compute a GFI); may
            return numbers to log with the stage's record.
        epochs: epochs this stage runs in this round; ``None`` uses ``train.stage_epochs``.
        batch_scale: per stream, its batch as a multiple of ``train.batch_size`` (FixMatch's μ
            unlabelled images per labelled one); streams not named draw ``train.batch_size``.
    """

    name: str
    streams: tuple[Stream, ...]
    updates: tuple[Update, ...]
    on_end: Callable[[], dict[str, float] | None] | None = None
    epochs: int | None = None
    batch_scale: Mapping[Stream, int] = field(default_factory=dict)


class Method(nn.Module, metaclass=abc.ABCMeta):
    """Base class of every registered method.

    Registry contract: ``cls(config: cls.Config, *, target_net: TapNetwork, ...) -> Method``;
    ``cetl.build.build_method`` supplies what each family needs (S, T1, the feature cache).

    Attributes:
        Config: the method's options (a :class:`MethodConfig` subclass).
        components: the parts besides T2 the method is built with (see below).
        labelled_domain: whose labels the method trains on; decides what the ``labelled``
            stream holds and whether model selection can use source validation.
    """

    Config: ClassVar[type[MethodConfig]] = MethodConfig
    labelled_domain: Literal["source", "target"] = "source"
    components: ClassVar[frozenset[Component]] = frozenset()
    """What ``build_method`` passes besides ``target_net`` (keyword arguments of the same
    names): ``source`` (the FrozenSource S), ``decoder`` (T1 mirrored from T2),
    ``source_adapter`` (S's tap → T1's input, D1), ``feature_cache`` (D9),
    ``labelled_domain`` (resolved for the experiment's setting), ``class_names`` and
    ``setting`` (the experiment's, for a rule that differs by setting)."""

    @classmethod
    def labelled_domain_for(cls, setting: str) -> Literal["source", "target"]:
        """Whose labels this method reads in ``setting`` (known before the method is built)."""
        return cls.labelled_domain

    @abc.abstractmethod
    def stages(self, round_index: int) -> list[Stage]:
        """The stages of round ``round_index`` (0-based), in order; none (after round 0) ends
        training early, for methods that are done (SA fits once)."""

    @abc.abstractmethod
    def predict(self, x: Tensor) -> Tensor:
        """Class logits ``(B, K)`` of the network being trained."""

    @abc.abstractmethod
    def trainable_networks(self) -> dict[str, nn.Module]:
        """Networks the engine trains, checkpoints and (later) wraps in DDP; never the source."""

    def averaged_networks(self) -> dict[str, float]:
        """Names of :meth:`trainable_networks` whose exponential moving average the engine keeps,
        each with its decay per optimiser step; evaluation, selection and the selected weights
        are the average's (:mod:`cetl.engine.averaging`). Default: none."""
        return {}

    def predict_labelled(self, x: Tensor) -> Tensor:
        """Logits for images of the *labelled* domain, which model selection scores. Equal to
        :meth:`predict` except for methods that treat the domains differently (SA projects
        source images through the source subspace)."""
        return self.predict(x)

    def reconstruct(self, x: Tensor) -> Tensor | None:
        """T1(T2(x)) for methods with a decoder, else ``None``; the ``unsupervised:reconstruction``
        selection rule scores target images with it (no labels needed)."""
        return None

    def monitor(self, data: TrainingData) -> dict[str, float]:
        """Numbers logged with each evaluation that never choose a model (the error-bound
        monitor, METHOD.md §6); called in eval mode without gradients. Default: none."""
        return {}

    def prepare(self, data: TrainingData, world: Collectives) -> None:
        """Called once by the engine after moving the method and data to the device, before
        training: the place to precompute per-image values (e.g. the source-feature cache).
        ``world`` is the engine's training processes, for estimates that must agree across
        ranks (CETL's DWA); a method keeps what it needs rather than looking for it later."""

    def resumable_state(self) -> dict[str, Any]:
        """Tensors and plain data, besides network weights, that later rounds read (e.g. a
        GFI computed at the end of stage 2 and used in the next round's stage 1)."""
        return {}

    def load_resumable_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`resumable_state` returned (on ``--resume``)."""
