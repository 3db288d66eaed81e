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
"""

from __future__ import annotations

import copy
from typing import ClassVar, Literal

from torch import Tensor, nn

from cetl.config import MethodConfig
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

    Config = MethodConfig
    labelled_domain: Literal["source", "target"] = "target"
    components: ClassVar[frozenset[Component]] = frozenset({"source"})

    def __init__(self, config: MethodConfig, *, target_net: TapNetwork, source: FrozenSource) -> None:
        super().__init__()
        if not any(True for _ in source.model.parameters()):
            raise ConfigError(
                f"fine_tune needs a source with weights to train, but {source.description} has none "
                f"(an ONNX file runs in ONNX Runtime and cannot be fine-tuned); use a torchvision, "
                f"timm or project-trained source"
            )
        self.config = config
        network = copy.deepcopy(source.model)  # S's own module stays frozen, in eval mode
        self.head_name = replace_classifier(network, target_net.num_classes)
        self.network = network.requires_grad_(True).train()
        self.input_transform: InputTransform = source.input_transform

    def stages(self, round_index: int) -> list[Stage]:
        update = Update("fine_tuned", (self.network,), self._classify)
        return [Stage("classify", ("labelled",), (update,))]

    def _classify(self, batch: Batch) -> dict[str, Tensor]:
        return {"classify": classification_loss(self.predict(batch.x), batch.y)}

    def predict(self, x: Tensor) -> Tensor:
        return self.network(self.input_transform(x))

    def trainable_networks(self) -> dict[str, nn.Module]:
        return {"fine_tuned": self.network}
