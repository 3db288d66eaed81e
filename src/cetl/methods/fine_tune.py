"""``fine_tune``: the source network with a new last layer, trained on the labelled target data.

CETL paper, Section 4.1.2 and Table 3 ("FT-VGG"): "we replaced the last fully-connected
layer in VGG and fine-tuned it using the target datasets". The loss is the classification
loss of Eq. 4 on the labelled stream (target training images in transfer learning), one
``classify`` stage per round, exactly like ``target_only`` — only the network differs.

S itself stays frozen and bit-identical: the method trains a *copy* of S's module
(``copy.deepcopy``, then unfrozen). Target images go through S's input transform (resized
to S's input size and normalised for S), so fine-tuning VGG-16 runs it at 224×224.

Which network is fine-tuned is whatever S is (``source.kind``): a torchvision or timm model
or a network this project trained. An ONNX file runs in ONNX Runtime and has no trainable
parameters, so it cannot be fine-tuned; that is a clear error.

The recipe follows current few-shot practice rather than the paper's one line:

- ``head``: ``auto`` keeps S's own classifier when S predicts the target's classes by name (a
  digit network fine-tuned on other digits: its head already knows the labels, and a fresh
  head on 10 images per class throws that away), else a new last layer as in FT-VGG; ``new``
  and ``keep`` force either (``keep`` needs S to output as many classes as the target has).
- ``backbone_lr_scale``: every layer but the head learns at this fraction of the learning
  rate (0.1: the pre-trained features move slowly while the head adapts); 1 is one rate for all.
- Budget and selection are the experiment's, the same as every other method of a comparison
  (in the label-efficiency studies: a fixed number of steps, last round).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from torch import Tensor, nn

from cetl.config import MethodConfig, Range
from cetl.errors import ConfigError
from cetl.losses.classification import classification_loss
from cetl.methods.base import Batch, Component, Method, Stage, Update
from cetl.networks import TapNetwork
from cetl.source import FrozenSource, InputTransform


def replace_classifier(model: nn.Module, num_classes: int) -> str:
    """Swap the model's last ``nn.Linear`` (its classifier) for a fresh one with ``num_classes``
    outputs, in place; returns the layer's name.

    timm models are asked through their own ``reset_classifier`` (their classifier is not always
    the last ``nn.Linear`` registered).

    Raises:
        ConfigError: the model has no ``nn.Linear`` to replace.
    """
    reset = getattr(model, "reset_classifier", None)
    if callable(reset) and hasattr(model, "get_classifier"):
        reset(num_classes)
        head = model.get_classifier()
        return next(n for n, m in model.named_modules() if m is head)
    linears = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ConfigError(
            "fine_tune replaces the source's last fully connected layer, but the source has no nn.Linear"
        )
    name = linears[-1]
    old = model.get_submodule(name)
    head = nn.Linear(old.in_features, num_classes, bias=old.bias is not None)
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, head)
    return name


@dataclass(frozen=True, kw_only=True)
class FineTuneConfig(MethodConfig):
    """Options of ``fine_tune`` (module docstring: the recipe)."""

    name: str = "fine_tune"
    head: Literal["auto", "new", "keep"] = "auto"
    """``auto``: keep S's classifier when S predicts the target's classes by name, else a new
    one; ``new``: always a new last layer (the paper's FT-VGG); ``keep``: S's classifier."""
    backbone_lr_scale: Annotated[float, Range(gt=0, le=1)] = 0.1
    """Learning rate of every layer but the head, as a fraction of ``optimizer.lr``."""


def keeps_head(head: str, source: FrozenSource, class_names: tuple[str, ...], num_classes: int) -> bool:
    """Whether fine-tuning keeps S's classifier (``head``, see :class:`FineTuneConfig`).

    Raises:
        ConfigError: ``keep`` while S's classifier has another number of outputs than the target.
    """
    if head == "new":
        return False
    same_labels = bool(class_names) and source.classes == class_names
    if head == "auto":
        return same_labels
    outputs = [m for m in source.model.modules() if isinstance(m, nn.Linear)]
    if not outputs or outputs[-1].out_features != num_classes:
        raise ConfigError(
            f"method.head=keep keeps S's classifier, but S ({source.description}) does not output "
            f"{num_classes} classes; use method.head=new (or auto)"
        )
    return True


class FineTune(Method):
    """FT-VGG of the CETL paper (§4.1.2, Table 3): S's network with a new last layer for the
    target classes, all of it trained with ``L_c^t`` (Eq. 4) on the labelled target images.

    Args:
        config: the method's options.
        target_net: T2 as configured; only its number of classes is read (the trained network
            is the copy of S).
        source: S; its module is copied, never trained.

    Raises:
        ConfigError: S is an ONNX file or another source without trainable parameters.
    """

    Config = FineTuneConfig
    labelled_domain: Literal["source", "target"] = "target"
    components: ClassVar[frozenset[Component]] = frozenset({"source", "class_names"})

    def __init__(
        self,
        config: FineTuneConfig,
        *,
        target_net: TapNetwork,
        source: FrozenSource,
        class_names: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        if not any(True for _ in source.model.parameters()):
            raise ConfigError(
                f"fine_tune needs a source with weights to train, but {source.description} has none "
                f"(an ONNX file runs in ONNX Runtime and cannot be fine-tuned); use a torchvision, "
                f"timm or project-trained source"
            )
        self.config = config
        network = copy.deepcopy(source.model)  # S's own module stays frozen, in eval mode
        self.kept_head = keeps_head(config.head, source, class_names, target_net.num_classes)
        if self.kept_head:
            self.head_name = [n for n, m in network.named_modules() if isinstance(m, nn.Linear)][-1]
        else:
            self.head_name = replace_classifier(network, target_net.num_classes)
        self.network = network.requires_grad_(True).train()
        self.input_transform: InputTransform = source.input_transform

    def stages(self, round_index: int) -> list[Stage]:
        # The head first, so its parameters take the full rate and the rest the backbone's.
        head = self.network.get_submodule(self.head_name)
        update = Update(
            "fine_tuned",
            (head, self.network),
            self._classify,
            lr_scales=(1.0, self.config.backbone_lr_scale),
        )
        return [Stage("classify", ("labelled",), (update,))]

    def _classify(self, batch: Batch) -> dict[str, Tensor]:
        return {"classify": classification_loss(self.predict(batch.x), batch.y)}

    def predict(self, x: Tensor) -> Tensor:
        return self.network(self.input_transform(x))

    def trainable_networks(self) -> dict[str, nn.Module]:
        return {"fine_tuned": self.network}

    def exportable(self) -> nn.Module:
        """The fine-tuned network behind S's input transform: images in [0,1] at the run's
        protocol size → logits, as every exported or evaluated target network takes them."""
        return FineTunedNetwork(self.network, self.input_transform)


class FineTunedNetwork(nn.Module):
    """A fine-tuned copy of S with the input transform it was trained behind (export, eval)."""

    def __init__(self, network: nn.Module, input_transform: InputTransform) -> None:
        super().__init__()
        self.network = network
        self.input_transform = input_transform

    def forward(self, x: Tensor) -> Tensor:
        return self.network(self.input_transform(x))
