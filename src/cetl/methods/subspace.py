"""``sa``: Subspace Alignment, a shallow domain-adaptation baseline on deep features.

Fernando, Habrard, Sebban, Tuytelaars, "Unsupervised Visual Domain Adaptation Using Subspace
Alignment", ICCV 2013 (Table 5's "SA" row of the CETL paper). With X_S, X_T the top-d PCA bases
(D×d) of the source and target features:

- Section 3 there: the alignment ``M* = X_Sᵀ X_T`` (d×d), the closed-form minimiser of
  ``‖X_S M − X_T‖²_F`` (X_S has orthonormal columns);
- Algorithm 1 there: source features are represented as ``F_S X_S M`` (the target-aligned
  source coordinate system ``X_a = X_S M``), target features as ``F_T X_T``, and a classifier
  trained on the former is applied to the latter.

Design choices (stated because the paper leaves them open for deep features):

- **Features**: S's, i.e. the coupling tap of the ``source_only`` model of this seed (METHOD.md
  §9), read through T2, which is initialised with S's weights and never trained. This is the
  simpler of the two options: nothing is learnt by gradient, so the run needs no stage updates,
  and S's round was already chosen on source validation with its own classifier.
- **Preprocessing**: each domain's features are centred and (``standardize``) divided by their
  per-unit standard deviation, the z-scoring common in SA implementations; the floor on that
  deviation (1% of the mean one) keeps near-constant ReLU units from being blown up.
- **Classifier**: a ridge (least-squares) linear classifier on one-hot labels, in closed form,
  instead of the paper's 1-NN/SVM: linear, deterministic, and foldable into T2 (below).
- **Prediction**: the classifier on target coordinates is an affine map of T2's coupling tap, so
  it is written into T2's last linear layer. T2 alone is then the adapted model: ``cetl eval``,
  ``cetl predict``, ``cetl export`` and S-from-a-run all work unchanged.
- **Selection** (no target labels): the fit is done once, in round 0; later rounds have no
  stages, which ends training there (so ``rounds`` is 1 in the summary).
  The engine's ``val_accuracy`` scores source validation images the way SA classifies source
  images, in the *source* projection ``F X_S M`` (:meth:`SA.predict_labelled`; also logged as the
  ``align`` stage's ``source_val_accuracy``); ``cetl eval`` reloads T2 alone, whose folded head is
  the target projection, so its ``val_accuracy`` for an SA run differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from cetl.config import MethodConfig, PositiveFloat, PositiveInt
from cetl.data.training import TrainingData
from cetl.errors import ConfigError
from cetl.fisher.protection import Collectives
from cetl.methods.base import Component, Method, Stage
from cetl.networks import TapNetwork
from cetl.networks.base import LOGITS, Dropout
from cetl.source import FrozenSource

FEATURE_BATCH = 1024
"""Images per forward pass when reading features (eval mode, no gradients)."""

SCALE_FLOOR = 0.01
"""A unit's standard deviation is floored at this fraction of the mean one (``standardize``)."""


@dataclass(frozen=True, kw_only=True)
class SaConfig(MethodConfig):
    """Options of ``sa`` (Fernando et al., ICCV 2013)."""

    name: str = "sa"
    dims: PositiveInt = 64
    """d, the dimension of both PCA subspaces; at most the width of T2's coupling tap."""
    standardize: bool = True
    """Z-score each domain's features (per unit) before PCA; otherwise only centre them."""
    ridge: PositiveFloat = 1e-3
    """Ridge penalty of the linear classifier, relative to the mean eigenvalue of the aligned
    source features' scatter (so it does not depend on their scale)."""


# --------------------------------------------------------------------------- the algebra


def pca_basis(features: Tensor, dims: int) -> tuple[Tensor, Tensor]:
    """The top-``dims`` principal directions of already centred ``features`` and the fraction of
    the total variance they hold.

    Signs are fixed (each direction's largest-magnitude entry is positive) so a basis is the
    same on every device and run; SA's result does not depend on them, the folded weights'
    bit pattern does.

    Shape:
        features ``(N, D)`` → basis ``(D, dims)``, explained fraction ``()``.
    """
    x = features.double()
    scatter = x.T @ x / max(1, x.shape[0] - 1)  # (D, D)
    values, vectors = torch.linalg.eigh(scatter)  # ascending
    values, vectors = values.flip(0), vectors.flip(1)
    basis = vectors[:, :dims]
    largest = basis.abs().argmax(dim=0)
    signs = torch.sign(basis[largest, torch.arange(dims, device=basis.device)])
    basis = basis * torch.where(signs == 0, torch.ones_like(signs), signs)
    explained = values[:dims].clamp_min(0).sum() / values.clamp_min(0).sum().clamp_min(1e-300)
    return basis, explained


def alignment_matrix(source_basis: Tensor, target_basis: Tensor) -> Tensor:
    """``M* = X_Sᵀ X_T`` (SA, Section 3): the d×d map from source to target principal coordinates."""
    return source_basis.T @ target_basis


def ridge_classifier(z: Tensor, labels: Tensor, num_classes: int, ridge: float) -> tuple[Tensor, Tensor]:
    """Least-squares fit of one-hot ``labels`` from ``z`` with an unpenalised bias.

    ``W = (Z̃ᵀZ̃ + α I)⁻¹ Z̃ᵀỸ`` on centred ``Z̃``, ``Ỹ``; ``b = ȳ − z̄ W``; α = ``ridge`` × the mean
    eigenvalue of ``Z̃ᵀZ̃``.

    Shape:
        z ``(N, d)``, labels ``(N,)`` → weight ``(d, K)``, bias ``(K,)``.
    """
    z = z.double()
    targets = torch.nn.functional.one_hot(labels, num_classes).double()
    z_mean, y_mean = z.mean(dim=0), targets.mean(dim=0)
    zc, yc = z - z_mean, targets - y_mean
    gram = zc.T @ zc
    alpha = ridge * gram.diagonal().mean().clamp_min(1e-300)
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    weight = torch.linalg.solve(gram + alpha * eye, zc.T @ yc)
    return weight, y_mean - z_mean @ weight


class SubspaceAlignment(nn.Module):
    """SA's fitted state: per-domain centring and scaling, both bases, M and the classifier.

    All of it lives in buffers, so it is saved with the run's checkpoints and restored on
    ``--resume`` like any network's weights.

    Args:
        features: D, the width of the features (T2's coupling tap).
        dims: d, the subspace dimension.
        num_classes: K.
    """

    def __init__(self, *, features: int, dims: int, num_classes: int) -> None:
        super().__init__()
        for domain in ("source", "target"):
            self.register_buffer(f"{domain}_mean", torch.zeros(features))
            self.register_buffer(f"{domain}_scale", torch.ones(features))
            self.register_buffer(f"{domain}_basis", torch.zeros(features, dims))
        self.register_buffer("alignment", torch.zeros(dims, dims))
        self.register_buffer("weight", torch.zeros(dims, num_classes))
        self.register_buffer("bias", torch.zeros(num_classes))

    @torch.no_grad()
    def fit(
        self, source: Tensor, labels: Tensor, target: Tensor, *, standardize: bool, ridge: float
    ) -> dict[str, float]:
        """Fit bases, M and the classifier from source features with labels and target features.

        Returns diagnostics for the log: each domain's explained variance and the subspaces'
        similarity ``‖M‖²_F / d`` (the mean squared cosine of their principal angles: 1 when the
        subspaces coincide, 0 when orthogonal).
        """
        record: dict[str, float] = {}
        for domain, features in (("source", source), ("target", target)):
            x = features.double()
            mean = x.mean(dim=0)
            scale = torch.ones_like(mean)
            if standardize:
                std = x.std(dim=0, unbiased=False)
                scale = std.clamp_min(SCALE_FLOOR * std.mean().clamp_min(1e-12))
            basis, explained = pca_basis((x - mean) / scale, self.alignment.shape[0])
            getattr(self, f"{domain}_mean").copy_(mean)
            getattr(self, f"{domain}_scale").copy_(scale)
            getattr(self, f"{domain}_basis").copy_(basis)
            record[f"{domain}_explained_variance"] = float(explained)
        self.alignment.copy_(alignment_matrix(self.source_basis.double(), self.target_basis.double()))
        weight, bias = ridge_classifier(self.source_coordinates(source), labels, self.bias.numel(), ridge)
        self.weight.copy_(weight)
        self.bias.copy_(bias)
        record["subspace_similarity"] = float(
            self.alignment.double().square().sum() / self.alignment.shape[0]
        )
        return record

    def source_coordinates(self, features: Tensor) -> Tensor:
        """``F_S X_S M`` (SA's Algorithm 1): source features in target-aligned coordinates."""
        centred = (features.double() - self.source_mean.double()) / self.source_scale.double()
        return centred @ self.source_basis.double() @ self.alignment.double()

    def target_coordinates(self, features: Tensor) -> Tensor:
        """``F_T X_T`` (SA's Algorithm 1): target features in their own principal coordinates."""
        centred = (features.double() - self.target_mean.double()) / self.target_scale.double()
        return centred @ self.target_basis.double()

    def source_logits(self, features: Tensor) -> Tensor:
        """The classifier on source images (their own projection): for source validation."""
        return (self.source_coordinates(features) @ self.weight.double() + self.bias.double()).float()

    def target_logits(self, features: Tensor) -> Tensor:
        """The classifier on target images: what SA predicts and what is folded into T2."""
        return (self.target_coordinates(features) @ self.weight.double() + self.bias.double()).float()

    def folded_target_head(self) -> tuple[Tensor, Tensor]:
        """:meth:`target_logits` as one linear layer on raw features: ``(weight (K, D), bias (K,))``.

        ``((f − μ_T) / σ_T) X_T W + b = f A + (b − (μ_T / σ_T) X_T W)`` with ``A = diag(1/σ_T) X_T W``.
        """
        projection = self.target_basis.double() / self.target_scale.double()[:, None]  # (D, d)
        a = projection @ self.weight.double()  # (D, K)
        return a.T, self.bias.double() - self.target_mean.double() @ a


# --------------------------------------------------------------------------- the method


def _linear_head(net: TapNetwork) -> nn.Linear:
    """T2's last layer, checked to be a plain linear map of the coupling tap (dropout aside).

    Raises:
        ConfigError: the network is not a layer chain whose coupling tap feeds the logits layer
            through dropout only, so SA's classifier cannot be written into it.
    """
    spec = net.spec
    names = [layer.name for layer in spec] if spec is not None else []
    head = net.get_submodule(LOGITS) if LOGITS in names else None
    between = spec[names.index(net.coupling_tap) + 1 : -1] if net.coupling_tap in names else None
    chain_ok = between is not None and all(isinstance(layer, Dropout) for layer in between)
    if not isinstance(head, nn.Linear) or head.bias is None or not chain_ok:
        raise ConfigError(
            f"method sa writes its classifier into T2's last layer, which must be a linear map of the "
            f"coupling tap '{net.coupling_tap}'; network '{net.name}' is not built that way. Use a "
            f"layer-chain network such as lenet or drcn (network.name)."
        )
    return head


class SA(Method):
    """Subspace Alignment (Fernando et al., ICCV 2013, M* = X_Sᵀ X_T and Algorithm 1) on S's features.

    Args:
        config: the method's options.
        target_net: T2; gets S's weights, is never trained, and receives SA's classifier as its
            last layer.
        source: S, the ``source_only`` model; must share T2's architecture.
    """

    Config = SaConfig
    labelled_domain: Literal["source", "target"] = "source"
    components: ClassVar[frozenset[Component]] = frozenset({"source"})

    def __init__(self, config: SaConfig, *, target_net: TapNetwork, source: FrozenSource) -> None:
        super().__init__()
        source.copy_into(target_net, why="method sa reads S's features through T2")
        _linear_head(target_net)  # fail now, not after S's features are read
        width = target_net.tap_shape(target_net.coupling_tap)
        if len(width) != 1 or config.dims > width[0]:
            raise ConfigError(
                f"method.dims={config.dims} must be at most the width of T2's coupling tap "
                f"'{target_net.coupling_tap}' {width}; lower method.dims"
            )
        self.config = config
        self.target_net = target_net.requires_grad_(False)
        self.alignment = SubspaceAlignment(
            features=width[0], dims=config.dims, num_classes=target_net.num_classes
        )
        self._data: TrainingData | None = None

    def prepare(self, data: TrainingData, world: Collectives) -> None:
        self._data = data

    def stages(self, round_index: int) -> list[Stage]:
        """Round 0: the ``align`` stage (no updates; the fit is its ``on_end``). Later: nothing."""
        if round_index > 0:
            return []
        return [Stage("align", ("labelled",), (), on_end=self._fit, epochs=1)]

    @torch.no_grad()
    def _features(self, images: Tensor) -> Tensor:
        parts = [
            self.target_net.coupling(images[start : start + FEATURE_BATCH])
            for start in range(0, len(images), FEATURE_BATCH)
        ]
        return torch.cat(parts).float()

    @torch.no_grad()
    def _fit(self) -> dict[str, float]:
        """Fit SA on S's features, write the target classifier into T2, report source validation."""
        if self._data is None:
            raise RuntimeError("SA.prepare(data) must run before training")
        data = self._data
        was_training = self.target_net.training
        self.target_net.eval()
        try:
            source, target = self._features(data.labelled.x), self._features(data.target)
            smallest = min(len(source), len(target))
            if self.config.dims > smallest:
                raise ConfigError(
                    f"method.dims={self.config.dims} exceeds the number of images in a domain "
                    f"({smallest}); lower method.dims"
                )
            record = self.alignment.fit(
                source, data.labelled.y, target, standardize=self.config.standardize, ridge=self.config.ridge
            )
            weight, bias = self.alignment.folded_target_head()
            head = _linear_head(self.target_net)
            head.weight.copy_(weight)
            head.bias.copy_(bias)
            val_logits = self.alignment.source_logits(self._features(data.labelled_val.x))
            correct = (val_logits.argmax(dim=1) == data.labelled_val.y).sum()
            record["source_val_accuracy"] = float(correct) / max(1, len(data.labelled_val))
        finally:
            self.target_net.train(was_training)
        return record

    def predict(self, x: Tensor) -> Tensor:
        """T2 with SA's folded classifier: the target projection (what SA deploys)."""
        return self.target_net(x)

    def predict_labelled(self, x: Tensor) -> Tensor:
        """Source images through the *source* projection ``F_S X_S M``, as SA classifies them."""
        return self.alignment.source_logits(self._features(x))

    def trainable_networks(self) -> dict[str, nn.Module]:
        """T2 (with the folded head) and SA's buffers: checkpointed, though nothing is trained."""
        return {"target_net": self.target_net, "alignment": self.alignment}
