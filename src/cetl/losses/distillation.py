"""Knowledge-distillation losses: soft targets, FitNets hints, FSP matrices.

The baselines of the CETL paper's Table 4 (METHOD.md §5, §8):

- Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", NIPS Deep Learning
  Workshop 2015: soft targets ``softmax(z / τ)`` (Eq. 1) and the ``τ²`` scaling of §2;
- Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015: the hint loss (Eq. 3);
- Yim, Joo, Bae, Kim, "A Gift from Knowledge Distillation: Fast Optimization, Network
  Minimization and Transfer Learning", CVPR 2017: the FSP matrix (Eq. 1) and its loss (Eq. 2).

Every function is pure; the teacher's tensors come from a frozen S and carry no gradient.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def soft_target_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """``τ² · KL(softmax(t/τ) ‖ softmax(s/τ))``: Hinton et al. 2015, Eq. 1 and §2.

    Matching softened distributions scales the gradient with respect to the logits by
    ``1/τ²`` (§2 of the paper), so the ``τ²`` factor keeps the soft term's weight comparable
    with the hard-label cross-entropy whatever τ is; it is part of the term, not of its weight.
    KL and the cross-entropy ``H(p_t, p_s)`` differ only by the teacher's entropy, a constant,
    so their gradients agree; KL is reported because it is 0 at a perfect match.

    Args:
        student_logits: the student's unnormalised scores ``s``.
        teacher_logits: the teacher's unnormalised scores ``t`` (no gradient flows into them).
        temperature: τ > 0.

    Returns:
        The mean over the batch of ``τ² Σ_k p_t,k (log p_t,k − log p_s,k)``.

    Shape:
        both ``(B, K)``.
    """
    log_teacher = F.log_softmax(teacher_logits.detach().float() / temperature, dim=1)
    return _tau_squared_kl(student_logits, log_teacher, temperature)


def soft_probability_loss(student_logits: Tensor, teacher_probs: Tensor, temperature: float) -> Tensor:
    """:func:`soft_target_loss` for a teacher that gives its softened distribution
    ``softmax(t/τ)`` rather than ``t`` (a ``soft`` tap of S, D8: CETL's optional Hinton term).

    Shape:
        both ``(B, K)``; ``teacher_probs`` rows sum to 1.
    """
    log_teacher = teacher_probs.detach().float().clamp_min(torch.finfo(torch.float32).tiny).log()
    return _tau_squared_kl(student_logits, log_teacher, temperature)


def _tau_squared_kl(student_logits: Tensor, log_teacher: Tensor, temperature: float) -> Tensor:
    log_student = F.log_softmax(student_logits.float() / temperature, dim=1)
    kl = F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True)
    return temperature**2 * kl


def hint_loss(regressed: Tensor, hint: Tensor) -> Tensor:
    """FitNets' hint loss ``½‖u_h(x) − r(v_g(x))‖²`` (Romero et al. 2015, Eq. 3), as a mean.

    ``u_h`` is the teacher's hint layer, ``v_g`` the student's guided layer and ``r`` the
    learned regressor. Here the squared error is averaged over elements and batch (the
    convention of METHOD.md D2) rather than summed with the factor ½, so the learning rate
    does not depend on the hint layer's size; the minimiser is the same.

    Args:
        regressed: ``r(v_g(x))``, the regressor's output.
        hint: ``u_h(x)``, the teacher's hint (no gradient flows into it).

    Returns:
        The mean squared error.

    Shape:
        both ``(B, *hint_shape)``.
    """
    return F.mse_loss(regressed.float(), hint.detach().float())


def fsp_matrix(first: Tensor, second: Tensor) -> Tensor:
    """The FSP ("flow of solution procedure") matrix of Yim et al. 2017, Eq. 1.

    ``G_ij = Σ_s Σ_t F1_{s,t,i} · F2_{s,t,j} / (h · w)``: the inner products, over spatial
    positions, of every channel of one map with every channel of a later one. Yim et al.
    take both maps at the same ``h × w``; where they differ, the larger map is average-pooled
    to the smaller size first (as common implementations do; the paper's ResNets pair maps of
    one size).

    Args:
        first: ``F1``, the earlier feature map.
        second: ``F2``, the later feature map.

    Returns:
        ``G`` per image.

    Shape:
        first ``(B, C1, H1, W1)``, second ``(B, C2, H2, W2)`` → ``(B, C1, C2)``.
    """
    first, second = first.float(), second.float()
    size = (min(first.shape[2], second.shape[2]), min(first.shape[3], second.shape[3]))
    if first.shape[2:] != size:
        first = F.adaptive_avg_pool2d(first, size)
    if second.shape[2:] != size:
        second = F.adaptive_avg_pool2d(second, size)
    positions = size[0] * size[1]
    return torch.einsum("bihw,bjhw->bij", first, second) / positions


def fsp_loss(student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
    """``L_FSP = (1/N) Σ_x Σ_i λ_i ‖G_i^T(x) − G_i^S(x)‖²₂`` (Yim et al. 2017, Eq. 2), λ_i = 1.

    The paper weighs every pair equally; the squared Frobenius norm is summed over the
    matrix entries and the pairs, and averaged over the batch.

    Args:
        student: the student's FSP matrices ``G_i^S``, one per layer pair.
        teacher: the teacher's ``G_i^T`` in the same order (no gradient flows into them).

    Returns:
        A scalar.

    Shape:
        pair i: both ``(B, C1_i, C2_i)``.

    Raises:
        ValueError: the lists differ in length or a pair differs in shape.
    """
    if len(student) != len(teacher) or not student:
        raise ValueError(
            f"fsp_loss needs equal, non-empty lists of matrices, got {len(student)}, {len(teacher)}"
        )
    total = student[0].new_zeros((), dtype=torch.float32)
    for i, (g_student, g_teacher) in enumerate(zip(student, teacher, strict=True)):
        if g_student.shape != g_teacher.shape:
            raise ValueError(
                f"FSP pair {i}: student {tuple(g_student.shape)} vs teacher {tuple(g_teacher.shape)}"
            )
        difference = g_student.float() - g_teacher.detach().float()
        total = total + difference.pow(2).sum(dim=(1, 2)).mean()
    return total
