"""Knowledge distillation (paper §3.4.2, Table 4): a ResNet-26 teacher, a CI-CNN student.

``kd_cifar10`` and ``kd_cifar100``: setting ``distillation``, protocol ``cifar`` (32×32 RGB as
stored), source = target = the CIFAR set, so every method reads the student's own labelled
training images (METHOD.md §5). The teacher is S: the ``source_only`` run of the same seed
trained as ``resnet26`` (``source.network``), trained once into
``runs/<experiment>/<profile>/source_only-resnet26/seed<N>`` and reused by every method after
(a changed config is refused rather than silently retrained). Its test accuracy is
``source_accuracy_on_target`` in each student's ``summary.json``.

S's tap is ``soft`` with τ = 4 (D8): CETL couples T1 to the teacher's softened logits, mapped by
the source adapter (D1) to the decoder's input, the student's ``fc7``. ``kd`` and ``fitnets`` read
the teacher's raw logits and soften them with their own ``method.temperature`` (also 4).

Profiles (Table 4's rows: ``target_only`` = "student", ``kd`` = "soft targets", ``fitnets``,
``fsp``, ``cetl``):

- ``smoke``: 256 training and 256 test images, 2 rounds of a few steps (tests).
- ``quick``: the data as present (the CIFAR-10 subset here: 4,000 training images, 3,600 after
  the validation split, and 1,000 test images), 8 rounds, Adam 1e-3 as the other ``quick``
  profiles. On 2 CPU cores one thread trains CI-CNN at ≈ 310 images/s and ResNet-26 at ≈ 190
  (batch 128, idle machine), so a classification epoch takes ≈ 12 s and ≈ 19 s; CETL's rounds
  add two reconstruction stages and three Fisher estimates (≈ 30 s a round on CPU). Caution:
  on 3,600 images, without augmentation, ResNet-26 (Adam) is a weak teacher — 42% at 8 epochs,
  49% at 30 (seed 0, H200) while CI-CNN alone reaches 40% and 53% — so distillation cannot show
  Table 4's gains here, and 8 rounds leave every student still improving.
- ``paper``: the full sets, 100 rounds, Adam 3e-4 (METHOD.md §9's default, not tuned); GPU work.
"""

from __future__ import annotations

from collections.abc import Callable

from cetl.config import (
    ExperimentConfig,
    NetworkConfig,
    SourceConfig,
)
from cetl.experiments.paper import TABLES, paper_numbers
from cetl.experiments.profiles import budget, profile_data

ExperimentFn = Callable[[str], ExperimentConfig]

TEACHER_NETWORK = "resnet26"
STUDENT_NETWORK = "ci_cnn"
TEMPERATURE = 4.0
"""τ of D8, on both sides."""

TABLE4 = paper_numbers(TABLES["table4"])
"""The CETL paper's Table 4 (test accuracy in %), keyed by (method, experiment), from
:mod:`cetl.experiments.paper`; ``teacher`` is S."""


def distillation_experiment(name: str, dataset: str, profile: str) -> ExperimentConfig:
    """A distillation config on ``dataset``: ResNet-26 teacher (S), CI-CNN student (T2)."""
    train, optimizer = budget(profile, name, paper_rounds=100)
    data = profile_data(profile, source=dataset, target=dataset, protocol="cifar")
    return ExperimentConfig(
        experiment=name,
        setting="distillation",
        profile=profile,
        data=data,
        network=NetworkConfig(name=STUDENT_NETWORK),
        source=SourceConfig(kind="source_only", network=TEACHER_NETWORK, tap="soft", temperature=TEMPERATURE),
        optimizer=optimizer,
        train=train,
    )


def kd_cifar10(profile: str) -> ExperimentConfig:
    """CIFAR-10: ResNet-26 teacher → CI-CNN student (Table 4, left)."""
    return distillation_experiment("kd_cifar10", "cifar10", profile)


def kd_cifar100(profile: str) -> ExperimentConfig:
    """CIFAR-100: ResNet-26 teacher → CI-CNN student (Table 4, right)."""
    return distillation_experiment("kd_cifar100", "cifar100", profile)


EXPERIMENTS: dict[str, ExperimentFn] = {"kd_cifar10": kd_cifar10, "kd_cifar100": kd_cifar100}
