"""Knowledge-distillation baselines of the CETL paper's Table 4: ``kd``, ``fitnets``, ``fsp``.

The teacher is S (METHOD.md §5): a :class:`~cetl.source.FrozenSource`, never trained, read
only forward; in the shipped ``kd_*`` experiments it is a ResNet-26 this project trains once per
seed and caches (``source.network``). The student is T2. Each method only names its loss terms;
the engine trains them.

- ``kd`` (Hinton et al. 2015): one stage, ``α·τ²·KL(p_t^τ ‖ p_s^τ) + (1−α)·CE``
  (:mod:`cetl.methods.kd`, re-exported here, since FitNets' second stage is it).
- ``fitnets`` (Romero et al. 2015): a *hint* stage that trains the student up to its guided
  layer, plus a regressor, to predict the teacher's hint layer (Eq. 3), then the KD stage.
- ``fsp`` (Yim et al. 2017): an *fsp* stage that trains the student to reproduce the teacher's
  FSP matrices (Eqs. 1–2), then the plain classification loss.

Two-stage schedule: the first stage runs once, in round 0, for ``hint_epochs`` epochs; every
round (round 0 included) then runs one epoch of the second stage, so ``train.rounds`` sets the
classification budget exactly as for ``kd`` and ``target_only``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from cetl.config import MethodConfig, PositiveInt
from cetl.errors import ConfigError
from cetl.losses.classification import classification_loss
from cetl.losses.distillation import fsp_loss, fsp_matrix, hint_loss
from cetl.methods.base import Batch, Component, Method, Stage, Update, labels_by_setting
from cetl.methods.kd import KDConfig, KnowledgeDistillation
from cetl.networks import TapNetwork
from cetl.source import FrozenSource

# --------------------------------------------------------------------------- helpers


def teacher_network(source: FrozenSource, method: str) -> TapNetwork:
    """S's network when it exposes named taps (a project network), else a ConfigError."""
    if not isinstance(source.model, TapNetwork):
        raise ConfigError(
            f"method {method} reads the teacher's intermediate layers, so S must be a network of this "
            f"project (source.kind=source_only or run), not {source.description}"
        )
    return source.model


@torch.no_grad()
def teacher_taps(source: FrozenSource, x: Tensor, names: Sequence[str]) -> dict[str, Tensor]:
    """Several taps of the frozen teacher in one forward pass, outside autograd.

    :class:`FrozenSource` reads one configured tap; FitNets and FSP need others, so this goes
    through the same input transform and the network's ``forward_taps`` under ``no_grad``
    (S stays in eval mode: ``FrozenSource.train`` is a no-op).
    """
    net = teacher_network(source, "distillation")
    return net.forward_taps(source.input_transform(x), list(names))


def layers_through(net: TapNetwork, tap: str) -> tuple[nn.Module, ...]:
    """The layers of ``net`` from the input up to and including ``tap``: what a hint trains."""
    net.tap_shape(tap)  # a ConfigError listing the valid taps
    layers = []
    for name, module in net.named_children():
        layers.append(module)
        if name == tap:
            break
    return tuple(layers)


def _tap_shape(net: TapNetwork, tap: str, key: str) -> tuple[int, ...]:
    try:
        return net.tap_shape(tap)
    except ConfigError as error:
        raise ConfigError(f"{key}: {error}") from None


def _layer_list(value: str, key: str) -> list[str]:
    names = [name.strip() for name in value.split(",") if name.strip()]
    if len(names) < 2:
        raise ConfigError(
            f"{key} must list at least two comma-separated layers (one FSP pair), got {value!r}"
        )
    return names


def hint_regressor(guided: tuple[int, ...], hint: tuple[int, ...]) -> nn.Module:
    """FitNets' regressor ``r``: maps the guided layer's output to the hint layer's shape.

    Romero et al. (§2.2) use a convolutional regressor on maps, with the kernel chosen so a
    valid convolution turns the guided ``N_g × N_g`` map into the hint's ``N_h × N_h``
    (``k = N_g − N_h + 1``; 1×1 when the sizes agree), and a fully connected one otherwise.

    Raises:
        ConfigError: the guided map is smaller than the hint map, or a vector must become a map.
    """
    if len(guided) == 3 and len(hint) == 3:
        kernel = (guided[1] - hint[1] + 1, guided[2] - hint[2] + 1)
        if min(kernel) < 1:
            raise ConfigError(
                f"FitNets: the guided layer's maps {guided} are smaller than the hint's {hint}; guide a "
                f"student layer with maps at least {hint[1:]} (method.guided_layer)"
            )
        return nn.Conv2d(guided[0], hint[0], kernel_size=kernel)
    if len(hint) == 1:
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(guided), hint[0]))
    raise ConfigError(
        f"FitNets: cannot regress the guided layer's {guided} onto the hint map {hint}; pick a guided "
        f"layer with feature maps (method.guided_layer) or a vector hint (method.hint_layer)"
    )


# --------------------------------------------------------------------------- fitnets


@dataclass(frozen=True, kw_only=True)
class FitNetsConfig(KDConfig):
    """Options of FitNets: the hint and guided layers, the hint stage's length, then KD's."""

    name: str = "fitnets"
    hint_layer: str = "stage2"
    """The teacher's hint layer u_h (ResNet-26's middle stage, 32×16×16)."""
    guided_layer: str = "conv2"
    """The student's guided layer v_g (CI-CNN's conv2, 96×16×16: a 1×1 conv regressor)."""
    hint_epochs: PositiveInt = 2
    """Epochs of the hint stage, run once in round 0 before the first KD epoch."""


class FitNets(KnowledgeDistillation):
    """Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015, Eqs. 2–3.

    Stage ``hint`` (round 0 only, ``hint_epochs`` epochs): the student's layers up to the guided
    layer and the regressor r minimise ``‖u_h(x) − r(v_g(x))‖²`` (Eq. 3, as a mean), u_h being
    the frozen teacher's hint layer. Then every round runs the ``distill`` stage of ``kd``
    (Eq. 2, Hinton's loss) on the whole student. The regressor is dropped after the hint stage
    (it is still checkpointed, so the run folder stays complete).
    """

    Config = FitNetsConfig

    def __init__(
        self,
        config: FitNetsConfig,
        *,
        target_net: TapNetwork,
        source: FrozenSource,
        labelled_domain: Literal["source", "target"],
        setting: str = "transfer",
    ) -> None:
        super().__init__(
            config, target_net=target_net, source=source, labelled_domain=labelled_domain, setting=setting
        )
        teacher = teacher_network(source, "fitnets")
        guided = _tap_shape(target_net, config.guided_layer, "method.guided_layer")
        hint = _tap_shape(teacher, config.hint_layer, "method.hint_layer")
        self.regressor = hint_regressor(guided, hint)

    def stages(self, round_index: int) -> list[Stage]:
        if round_index > 0:
            return [self._distill_stage()]
        guided = (*layers_through(self.target_net, self.config.guided_layer), self.regressor)
        hint = Stage(
            "hint", ("labelled",), (Update("guided", guided, self._hint),), epochs=self.config.hint_epochs
        )
        return [hint, self._distill_stage()]

    def _hint(self, batch: Batch) -> dict[str, Tensor]:
        guided = self.target_net.forward_taps(batch.x, [self.config.guided_layer])[self.config.guided_layer]
        hint = teacher_taps(self.source, batch.x, [self.config.hint_layer])[self.config.hint_layer]
        return {"hint": hint_loss(self.regressor(guided), hint)}

    def trainable_networks(self) -> dict[str, nn.Module]:
        return {"target_net": self.target_net, "regressor": self.regressor}


# --------------------------------------------------------------------------- fsp


@dataclass(frozen=True, kw_only=True)
class FSPConfig(MethodConfig):
    """Options of FSP distillation: which layers form the pairs, and the FSP stage's length."""

    name: str = "fsp"
    teacher_layers: str = "stem,stage1,stage2,stage3"
    """Comma-separated teacher taps; consecutive ones form the FSP pairs (ResNet-26's stages)."""
    student_layers: str = "conv1,conv2,conv3,conv5"
    """Comma-separated student taps, as many as ``teacher_layers``, paired in the same order."""
    hint_epochs: PositiveInt = 2
    """Epochs of the FSP stage (Yim et al.'s stage 1), run once in round 0."""


class FSP(Method):
    """Yim, Joo, Bae, Kim, "A Gift from Knowledge Distillation", CVPR 2017, Eqs. 1–2.

    Stage ``fsp`` (round 0 only, ``hint_epochs`` epochs): the student minimises
    ``Σ_i ‖G_i^T(x) − G_i^S(x)‖²`` (Eq. 2, λ_i = 1) over the FSP matrices (Eq. 1) of consecutive
    layer pairs. Then every round runs ``classify``: the cross-entropy alone (Yim et al.'s
    stage 2, "the main task").

    The paper's teacher and student share their channel widths, so G^T and G^S have one shape.
    ResNet-26 (16, 16, 32, 64) and CI-CNN (32, 96, 192, 128) do not: each student map passes
    through a learned 1×1 conv *connector* to its teacher map's channel count (a FitNets-style
    regressor, trained with the student in the FSP stage) before G^S is formed.

    Args:
        config: the layer lists and the FSP stage's length.
        target_net: the student (T2).
        source: the teacher (S), frozen; a network of this project (its taps are read).
        labelled_domain: whose labels the classification stage reads.

    Raises:
        ConfigError: unknown taps, lists of unequal length, or a tap that is not a feature map.
    """

    Config = FSPConfig
    components: ClassVar[frozenset[Component]] = frozenset({"source", "labelled_domain"})

    def __init__(
        self,
        config: FSPConfig,
        *,
        target_net: TapNetwork,
        source: FrozenSource,
        labelled_domain: Literal["source", "target"],
    ) -> None:
        super().__init__()
        self.config = config
        self.target_net = target_net
        self.source = source
        self.labelled_domain = labelled_domain
        teacher = teacher_network(source, "fsp")
        self._teacher_layers = _layer_list(config.teacher_layers, "method.teacher_layers")
        self._student_layers = _layer_list(config.student_layers, "method.student_layers")
        if len(self._teacher_layers) != len(self._student_layers):
            raise ConfigError(
                f"method.teacher_layers has {len(self._teacher_layers)} layers but method.student_layers "
                f"has {len(self._student_layers)}; they are paired in order, so list as many of each"
            )
        connectors = {}
        for t_name, s_name in zip(self._teacher_layers, self._student_layers, strict=True):
            t_shape = _tap_shape(teacher, t_name, "method.teacher_layers")
            s_shape = _tap_shape(target_net, s_name, "method.student_layers")
            if len(t_shape) != 3 or len(s_shape) != 3:
                raise ConfigError(
                    f"FSP pairs feature maps, but teacher '{t_name}' is {t_shape} and student '{s_name}' is "
                    f"{s_shape}; list convolutional taps only (method.teacher_layers, method.student_layers)"
                )
            same = s_shape[0] == t_shape[0]
            connectors[s_name] = nn.Identity() if same else nn.Conv2d(s_shape[0], t_shape[0], 1)
        self.connectors = nn.ModuleDict(connectors)

    @classmethod
    def labelled_domain_for(cls, setting: str) -> Literal["source", "target"]:
        return labels_by_setting(setting)

    def stages(self, round_index: int) -> list[Stage]:
        classify = Stage(
            "classify", ("labelled",), (Update("target_net", (self.target_net,), self._classify),)
        )
        if round_index > 0:
            return [classify]
        deepest = max(self._student_layers, key=self.target_net.tap_names().index)
        trained = (*layers_through(self.target_net, deepest), self.connectors)
        fsp = Stage(
            "fsp", ("labelled",), (Update("student", trained, self._fsp),), epochs=self.config.hint_epochs
        )
        return [fsp, classify]

    def _fsp(self, batch: Batch) -> dict[str, Tensor]:
        teacher = teacher_taps(self.source, batch.x, self._teacher_layers)
        student = self.target_net.forward_taps(batch.x, self._student_layers)
        student = {name: self.connectors[name](student[name]) for name in self._student_layers}
        g_teacher = [fsp_matrix(teacher[a], teacher[b]) for a, b in pairwise(self._teacher_layers)]
        g_student = [fsp_matrix(student[a], student[b]) for a, b in pairwise(self._student_layers)]
        return {"fsp": fsp_loss(g_student, g_teacher)}

    def _classify(self, batch: Batch) -> dict[str, Tensor]:
        return {"classify": classification_loss(self.target_net(batch.x), batch.y)}

    def predict(self, x: Tensor) -> Tensor:
        return self.target_net(x)

    def trainable_networks(self) -> dict[str, nn.Module]:
        return {"target_net": self.target_net, "connectors": self.connectors}
