"""Speed benchmark (project issue 11): engine overhead, Fisher share, feature cache, resident batches.

Usage (writes ``FILE.json`` and a ``FILE.md`` beside it)::

    PYTHONPATH=src python benchmarks/speed.py --quick          # 2 CPU cores, a few minutes
    PYTHONPATH=src python benchmarks/speed.py --out speed_gpu.json   # a GPU, about 3 minutes

Every number comes from one run at one pinned configuration (:data:`PINNED`), in steady
state: the engine trains ``rounds`` rounds and only the last is measured; isolated passes are
timed after warm-up steps. Data are synthetic tensors of the real experiments' sizes (speed
does not depend on pixel values), so no dataset and no download is needed:

- ``overhead``: a CETL round (``cetl``, Algorithm 1 with GFI; its three stages, GFIs
  included, without the evaluation that follows) divided by the sum of the bare
  forward/backward passes that round must do, each timed in isolation on identical batches:
  stage 1 T1∘adapter on cached S features, stage 2 T1′ forward plus T2→T1 forward/backward,
  stage 3 T2 forward/backward (S itself never runs in a round: its features are cached, D9).
  Target ≤ 1.3.
- ``fisher_share``: Fisher + RF + GFI seconds (GFI1–GFI3 at the default K, m) over the round.
  Target ≤ 0.10.
- ``cache_speedup``: a round with a warm feature cache over one without, ResNet-50 S (random
  weights) at 224×224 feeding a CI-CNN T2 on 32×32 RGB images. Target ≥ 5.
- ``resident_speedup``: training steps with device-resident batches (indexed in place) over the
  same steps fed by a ``DataLoader`` (pinned memory on CUDA), same network and batch. Target
  ≥ 1.5 on a GPU.
- images/s per stage, and on CUDA the classification-step ceilings of METHOD.md §9 (DRCN net:
  47k images/s at batch 128 fp32; 124k at batch 512 bf16 compiled, one H100), re-measured on
  this card, and the count of host synchronisations per training step.

Clocks: on CUDA, wall time with the GPU synchronised; on CPU, this process's CPU time (all
threads), because wall time on a shared machine measures the other jobs too (images/s on CPU
are then per CPU-second of this process, with 2 threads up to twice the wall rate). ``seconds``
in the result is the wall time of the whole run.
"""

from __future__ import annotations

import os

# Before torch starts OpenMP: idle threads sleep rather than spin, so this process's CPU time
# (the CPU clock, see ``seconds_now``) counts work, not threads spinning while a sibling thread
# waits for a core that other jobs hold (spinning inflated it 3-6x on a shared 2-core machine).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import contextlib
import copy
import dataclasses
import json
import platform
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import cetl.fisher.protection as protection_module
from cetl.build import DataInfo, build_method
from cetl.config import EngineConfig, OptimizerConfig, TrainConfig
from cetl.data.labelled import LabelledSet
from cetl.data.synthetic import synthetic_set
from cetl.data.training import TrainingData
from cetl.engine import loop
from cetl.experiments import resolve
from cetl.losses.classification import classification_loss
from cetl.losses.reconstruction import source_reconstruction_loss, target_reconstruction_loss
from cetl.methods import Method
from cetl.networks import NETWORKS
from cetl.source import FeatureCache, FrozenSource, InputTransform, source_from_network
from cetl.source.frozen import penultimate_extractor

RESULTS = Path(__file__).parent / "results"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CEILINGS = {"drcn_b128_fp32": 47_000, "drcn_b512_bf16_compiled": 124_000}
"""METHOD.md §9: DRCN-net classification steps on one H100, images/s."""
TARGETS = {"overhead": 1.3, "fisher_share": 0.10, "cache_speedup": 5.0, "resident_speedup": 1.5}


def clock_note(device: torch.device) -> str:
    """What "seconds" means in this run's results (see :func:`seconds_now`)."""
    if device.type == "cuda":
        return "Clock: wall time, the GPU synchronised before each reading."
    return (
        f"Clock: this process's CPU time ({torch.get_num_threads()} threads), so other jobs on the "
        f"machine do not distort the ratios; images/s are per CPU-second. `resident_speedup`'s "
        f"target is for GPUs."
    )


@dataclass(frozen=True)
class Pinned:
    """One pinned configuration: the sizes of the quick (CPU) or paper (GPU) MNIST→USPS runs.

    Attributes:
        network: T2 of the main measurement (S is the same architecture, as in domain adaptation).
        labelled, val, target, test: image counts (MNIST train minus 10% validation, USPS
            train, USPS test).
        rounds: engine rounds per measured run; the last is measured, the rest warm up.
        pass_steps: steps per isolated-pass timing; ``resident_steps``: per data-path timing.
        cache_*: the ResNet-50 → CI-CNN feature-cache measurement (32×32 RGB images; the
            full size is CIFAR-10-s's 10,000 images at the default K, m; ``quick`` runs 64
            images, K = m = 4, since ResNet-50 takes ~0.15 CPU-seconds per image).
    """

    name: str
    network: str
    labelled: int
    val: int
    target: int
    test: int
    batch_size: int = 128
    rounds: int = 2
    fisher_batches: int = 32
    fisher_batch_size: int = 8
    pass_steps: int = 20
    resident_steps: int = 20
    cache_network: str = "ci_cnn"
    cache_images: int = 10_000
    cache_batch_size: int = 128
    cache_rounds: int = 2
    cache_fisher_batches: int = 32
    cache_fisher_batch_size: int = 8
    ceilings: bool = True
    """Re-measure the CUDA ceilings (batch 512 bf16 compiled takes about a minute to compile)."""
    ceiling_steps: int = 100
    """Timed steps per ceiling (after 10 warm-up steps)."""


PINNED = {
    "quick": Pinned(
        name="quick",
        network="lenet",
        labelled=18_000,
        val=2_000,
        target=7_291,
        test=2_007,
        pass_steps=15,
        resident_steps=15,
        cache_images=64,
        cache_batch_size=16,
        cache_fisher_batches=4,
        cache_fisher_batch_size=4,
        ceilings=False,
    ),
    "full": Pinned(
        name="full",
        network="drcn",
        labelled=54_000,
        val=6_000,
        target=7_291,
        test=2_007,
        pass_steps=50,
        resident_steps=200,
    ),
}


# --------------------------------------------------------------------------- helpers


def seconds_now(device: torch.device) -> float:
    """The benchmark's clock: wall time on CUDA; on CPU this process's CPU time (all threads),
    so that other jobs on a shared machine do not distort the ratios (see :func:`timed_like`)."""
    return time.perf_counter() if device.type == "cuda" else time.process_time()


@contextlib.contextmanager
def timed_like(device: torch.device) -> Iterator[None]:
    """Make the engine's and CETL's own timers (stage ``seconds``, ``gfi*_fisher_seconds``) use
    :func:`seconds_now`, so every duration in one result is on one clock."""
    public = {name: getattr(time, name) for name in dir(time) if not name.startswith("_")}
    clock = types.SimpleNamespace(**{**public, "perf_counter": lambda: seconds_now(device)})
    saved = loop.time, protection_module.time
    loop.time = protection_module.time = clock
    try:
        yield
    finally:
        loop.time, protection_module.time = saved


class Clock:
    """Seconds of a block on :func:`seconds_now`, synchronising the GPU first so queued work counts."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def __call__(self, into: dict[str, float], key: str) -> Iterator[None]:
        self.sync()
        started = seconds_now(self.device)
        yield
        self.sync()
        into[key] = seconds_now(self.device) - started


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """The engine's autocast (``train.amp`` default: bf16 on CUDA, none on CPU)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


def synthetic_data(
    *, labelled: int, val: int, target: int, test: int, channels: int, num_classes: int = 10
) -> TrainingData:
    """Learnable synthetic images of the pinned sizes (32×32): the data path of a real run."""

    def make(count: int, seed: int) -> LabelledSet:
        return synthetic_set(count, image_size=32, num_classes=num_classes, channels=channels, seed=seed)

    return TrainingData(make(labelled, 1), make(val, 2), make(target, 3).x, make(test, 4))


def build_cetl(
    *,
    network: str,
    channels: int,
    source: FrozenSource,
    cache: bool,
    fisher_batches: int,
    fisher_batch_size: int,
    variant: str = "cetl",
) -> Method:
    """A CETL method through the same build path as ``cetl train`` (seed 0)."""
    config = resolve(
        "digits_mn_to_us",
        method=variant,
        profile="smoke",
        seed=0,
        sets=[
            f"network.name={network}",
            "source.cache=" + ("memory" if cache else "'off'"),  # quoted: YAML reads a bare off as false
            f"method.fisher_batches={fisher_batches}",
            f"method.fisher_batch_size={fisher_batch_size}",
        ],
    )
    info = DataInfo(num_classes=10, channels=channels, image_size=32, sizes={}, notes=())
    return build_method(config, info, source=source)


def network_source(network: str, channels: int) -> FrozenSource:
    """S of domain adaptation: T2's architecture (random weights; speed only), coupling tap."""
    torch.manual_seed(1)
    net = NETWORKS.get(network)(in_channels=channels, image_size=32, num_classes=10)
    return source_from_network(net, tap="coupling", temperature=4.0, description=f"benchmark {network}")


def resnet50_source() -> FrozenSource:
    """ResNet-50 with random weights at 224×224 (ImageNet normalisation), penultimate features."""
    import torchvision

    torch.manual_seed(2)
    model = torchvision.models.resnet50(weights=None)
    transform = InputTransform(size=224, channels=3, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    return FrozenSource(
        model,
        extract=penultimate_extractor(model),
        input_transform=transform,
        description="resnet50 (random weights) @avgpool, 224x224",
    )


def engine_run(
    method: Method,
    data: TrainingData,
    *,
    rounds: int,
    batch_size: int,
    device: torch.device,
    engine: EngineConfig | None = None,
) -> dict[str, Any]:
    """Train ``method`` with the engine; per-stage timings of the last round (the others warm up).

    Returns:
        ``stages`` (name → steps, seconds, fisher_seconds, images_per_second), ``round_seconds``
        (the stages of the last round, GFIs included), ``fisher_seconds`` and ``wall_seconds``
        (the whole call: prepare, all rounds, evaluations, checkpoints).
    """
    with tempfile.TemporaryDirectory(prefix="cetl-speed-") as tmp, timed_like(device):
        started = time.perf_counter()
        loop.train(
            method,
            data,
            train_config=TrainConfig(
                rounds=rounds, batch_size=batch_size, device=str(device), tensorboard=False, progress=False
            ),
            optimizer_config=OptimizerConfig(lr=1e-3),
            seed=0,
            run_dir=Path(tmp),
            resume=False,
            engine_config=engine,
        )
        wall = time.perf_counter() - started
        lines = (Path(tmp) / "metrics.jsonl").read_text().splitlines()
    records = [r for r in map(json.loads, lines) if r["kind"] == "stage"]
    stages: dict[str, dict[str, float]] = {}
    previous_step = 0
    for record in records:
        steps = record["step"] - previous_step
        previous_step = record["step"]
        if record["round"] != rounds - 1:
            continue
        fisher = sum(v for k, v in record.items() if k.endswith("_fisher_seconds"))
        seconds = record["seconds"]
        stages[record["stage"]] = {
            "steps": steps,
            "seconds": seconds,
            "fisher_seconds": fisher,
            "images_per_second": steps * batch_size / max(seconds - fisher, 1e-9),
        }
    round_seconds = sum(s["seconds"] for s in stages.values())
    return {
        "stages": stages,
        "round_seconds": round_seconds,
        "fisher_seconds": sum(s["fisher_seconds"] for s in stages.values()),
        "wall_seconds": wall,
    }


def _time_steps(
    step: Callable[[int], None], *, steps: int, warmup: int, clock: Clock, into: dict[str, float], key: str
) -> None:
    for i in range(warmup):
        step(i)
    with clock(into, key):
        for i in range(steps):
            step(i)
    into[key] /= steps


def time_passes(
    method: Method, data: TrainingData, *, batch_size: int, steps: int, device: torch.device, cached: bool
) -> dict[str, dict[str, float]]:
    """Seconds per step of each CETL stage's bare passes, and of its optimiser step, in isolation.

    The passes are exactly what a round must compute (METHOD.md §4), on the method's own
    networks in train mode under the engine's autocast: stage 1 ``T1(adapter(S(x)))`` with S's
    features from the cache (or S run, ``cached=False``), stage 2 ``T1′(S(x))`` without grad and
    ``T1(T2(x))`` with, stage 3 ``T2(x)``; each a forward, a loss and a backward. Every pass type
    sees the same ``steps`` batches.
    """
    clock, autocast = Clock(device), autocast_for(device)
    method.train()
    t2, t1, adapter, source = method.target_net, method.decoder, method.source_adapter, method.source
    frozen = copy.deepcopy(nn.Sequential(adapter, t1)).eval().requires_grad_(False)  # T1′ (D3)
    with autocast:
        features = FeatureCache(cache_dir=None).features(source, data.target) if cached else None
    generator = torch.Generator().manual_seed(0)

    def batches(n: int) -> list[Tensor]:
        return [torch.randperm(n, generator=generator)[:batch_size].to(device) for _ in range(steps)]

    target_idx, labelled_idx = batches(len(data.target)), batches(len(data.labelled))
    coupling = t2.coupling_tap

    def tap(idx: Tensor) -> Tensor:
        return features[idx] if features is not None else source(data.target[idx])

    def recon_source(i: int) -> Tensor:
        idx = target_idx[i % steps]
        return source_reconstruction_loss(t1(adapter(tap(idx))), data.target[idx])

    def recon_target(i: int) -> Tensor:
        idx = target_idx[i % steps]
        with torch.no_grad():
            recons1 = frozen(tap(idx))
        return target_reconstruction_loss(
            t1(t2.forward_taps(data.target[idx], [coupling])[coupling]), recons1
        )

    def classify(i: int) -> Tensor:
        idx = labelled_idx[i % steps]
        return classification_loss(t2(data.labelled.x[idx]), data.labelled.y[idx])

    stages = {
        "reconstruct_source": (recon_source, (adapter, t1)),
        "reconstruct_target": (recon_target, (t1, t2)),
        "classify": (classify, (t2,)),
    }
    result: dict[str, dict[str, float]] = {}
    for name, (loss_fn, networks) in stages.items():
        parameters = [p for net in networks for p in net.parameters() if p.requires_grad]
        timings: dict[str, float] = {}

        def backward(i: int, loss_fn: Callable[[int], Tensor] = loss_fn) -> None:
            with autocast:
                loss = loss_fn(i)
            loss.backward()

        _time_steps(backward, steps=steps, warmup=3, clock=clock, into=timings, key="pass_seconds")
        optimizer = loop.make_optimizer(parameters, OptimizerConfig(lr=0.0))  # lr 0: nothing moves

        def step(i: int, optimizer: torch.optim.Optimizer = optimizer) -> None:
            optimizer.step()

        _time_steps(step, steps=steps, warmup=3, clock=clock, into=timings, key="optimizer_seconds")
        for p in parameters:
            p.grad = None
        result[name] = timings
    return result


def measure_main(spec: Pinned, device: torch.device) -> dict[str, Any]:
    """``overhead``, ``fisher_share`` and images/s per stage: one CETL run at ``spec``'s sizes."""
    data = synthetic_data(
        labelled=spec.labelled, val=spec.val, target=spec.target, test=spec.test, channels=1
    ).to(device)
    method = build_cetl(
        network=spec.network,
        channels=1,
        source=network_source(spec.network, 1),
        cache=True,
        fisher_batches=spec.fisher_batches,
        fisher_batch_size=spec.fisher_batch_size,
    )
    run = engine_run(method, data, rounds=spec.rounds, batch_size=spec.batch_size, device=device)
    passes = time_passes(
        method, data, batch_size=spec.batch_size, steps=spec.pass_steps, device=device, cached=True
    )
    needed = sum(run["stages"][name]["steps"] * p["pass_seconds"] for name, p in passes.items())
    optimizer = sum(run["stages"][name]["steps"] * p["optimizer_seconds"] for name, p in passes.items())
    clock, timings = Clock(device), {}
    with clock(timings, "eval_seconds"):  # the engine evaluates both splits after every round
        for split in (data.labelled_val, data.target_test):
            loop.accuracy(method, split, autocast=autocast_for(device))
    result = {
        "overhead": run["round_seconds"] / needed,
        "overhead_counting_optimizer": run["round_seconds"] / (needed + optimizer),
        "fisher_share": run["fisher_seconds"] / run["round_seconds"],
        "round_seconds": run["round_seconds"],
        "passes_seconds": needed,
        "optimizer_seconds": optimizer,
        "fisher_seconds": run["fisher_seconds"],
        "eval_seconds": timings["eval_seconds"],
        "engine_wall_seconds": run["wall_seconds"],
        "stages": {name: {**stage, **passes[name]} for name, stage in run["stages"].items()},
    }
    return result


def measure_cache(
    spec: Pinned, device: torch.device, *, source: FrozenSource | None = None
) -> dict[str, Any]:
    """``cache_speedup``: CETL rounds with S's features cached (D9) vs S run on every step.

    S is ResNet-50 at 224×224 with random weights; T2 the CI-CNN on 32×32 RGB images (the
    paper's transfer-learning pair). Without the cache S runs in stages 1 and 2 and for every
    GFI1/GFI2 micro-batch. ``fill_seconds`` is the one-off cost the warm cache paid before.
    ``source`` replaces ResNet-50 (tests use a tiny one).
    """
    source = (source or resnet50_source()).to(device)
    if device.type == "cuda":
        source.to(memory_format=torch.channels_last)  # as the engine converts it (engine.channels_last)
    n = spec.cache_images
    data = synthetic_data(labelled=n, val=max(2, n // 10), target=n, test=n, channels=3).to(device)
    clock, timings = Clock(device), {}
    with autocast_for(device):
        source(data.target[:2])  # warm-up
        with clock(timings, "fill_seconds"):
            FeatureCache(cache_dir=None).features(source, data.target)
    runs = {}
    for cached in (True, False):
        method = build_cetl(
            network=spec.cache_network,
            channels=3,
            source=source,
            cache=cached,
            fisher_batches=spec.cache_fisher_batches,
            fisher_batch_size=spec.cache_fisher_batch_size,
        )
        runs["warm" if cached else "uncached"] = engine_run(
            method, data, rounds=spec.cache_rounds, batch_size=spec.cache_batch_size, device=device
        )
    return {
        "cache_speedup": runs["uncached"]["round_seconds"] / runs["warm"]["round_seconds"],
        "warm_round_seconds": runs["warm"]["round_seconds"],
        "uncached_round_seconds": runs["uncached"]["round_seconds"],
        "fill_seconds": timings["fill_seconds"],
        "images": n,
        "source": source.description,
        "target_net": spec.cache_network,
        "stages": {name: run["stages"] for name, run in runs.items()},
    }


def measure_resident(spec: Pinned, device: torch.device) -> dict[str, Any]:
    """``resident_speedup``: T2 classification steps fed by indexing device-resident tensors (the
    engine) vs by a ``DataLoader`` over the same tensors in host memory (the usual way), same
    network, batch and optimiser. The DataLoader gets pinned memory and non-blocking copies on
    CUDA, and its best worker count of those tried counts (0 on CPU, where cores are scarce)."""
    clock, autocast = Clock(device), autocast_for(device)
    batch, steps = spec.batch_size, spec.resident_steps
    data = synthetic_set(spec.labelled, image_size=32, num_classes=10, channels=1, seed=5)
    torch.manual_seed(3)
    net = NETWORKS.get(spec.network)(in_channels=1, image_size=32, num_classes=10).to(device)
    if device.type == "cuda":
        net.to(memory_format=torch.channels_last)
    net.train()
    optimizer = loop.make_optimizer(list(net.parameters()), OptimizerConfig(lr=1e-3))

    def train_step(x: Tensor, y: Tensor) -> None:
        with autocast:
            loss = classification_loss(net(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    timings: dict[str, float] = {}
    x_dev, y_dev = data.x.to(device), data.y.to(device)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0)).to(device)

    def resident(i: int) -> None:
        start = (i * batch) % (len(order) - batch + 1)
        index = order[start : start + batch]
        train_step(x_dev[index], y_dev[index])

    _time_steps(resident, steps=steps, warmup=5, clock=clock, into=timings, key="resident")
    workers = [0, 4] if device.type == "cuda" else [0]
    for count in workers:
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(data.x, data.y),
            batch_size=batch,
            shuffle=True,
            drop_last=True,
            num_workers=count,
            pin_memory=device.type == "cuda",
            persistent_workers=count > 0,
        )
        batches = _forever(loader)

        def from_loader(i: int, batches: Iterator[list[Tensor]] = batches) -> None:
            x, y = next(batches)
            train_step(x.to(device, non_blocking=True), y.to(device, non_blocking=True))

        _time_steps(from_loader, steps=steps, warmup=5, clock=clock, into=timings, key=f"dataloader_{count}w")
        del batches, loader
    best = min(v for k, v in timings.items() if k.startswith("dataloader"))
    return {
        "resident_speedup": best / timings["resident"],
        "seconds_per_step": timings,
        "network": spec.network,
        "batch_size": batch,
        "images_per_second_resident": batch / timings["resident"],
    }


def _forever(loader: torch.utils.data.DataLoader) -> Iterator[list[Tensor]]:
    while True:
        yield from loader


def measure_ceilings(spec: Pinned, device: torch.device) -> dict[str, Any]:
    """METHOD.md §9's DRCN-net classification ceilings re-measured on this card, and the engine
    (``baseline``: stage 3 alone) at batch 512 with ``engine.compile`` against the compiled one."""
    clock = Clock(device)
    result: dict[str, Any] = {"method_md": CEILINGS}
    data = synthetic_set(spec.labelled, image_size=32, num_classes=10, channels=1, seed=6)
    x, y = data.x.to(device), data.y.to(device)
    for key, batch, dtype, compiled in (
        ("drcn_b128_fp32", 128, None, False),
        ("drcn_b512_bf16_compiled", 512, torch.bfloat16, True),
    ):
        torch.manual_seed(4)
        net = NETWORKS.get("drcn")(in_channels=1, image_size=32, num_classes=10).to(device)
        net.to(memory_format=torch.channels_last).train()
        optimizer = loop.make_optimizer(list(net.parameters()), OptimizerConfig(lr=1e-3))
        autocast = torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()

        def loss_of(xb: Tensor, yb: Tensor, net: nn.Module = net) -> Tensor:
            return classification_loss(net(xb), yb)

        forward = torch.compile(loss_of) if compiled else loss_of

        def step(
            i: int,
            batch: int = batch,
            forward: Callable[[Tensor, Tensor], Tensor] = forward,
            optimizer: torch.optim.Optimizer = optimizer,
            autocast: contextlib.AbstractContextManager[Any] = autocast,
        ) -> None:
            start = (i * batch) % (len(x) - batch)
            with autocast:
                loss = forward(x[start : start + batch], y[start : start + batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        timings: dict[str, float] = {}
        _time_steps(
            step, steps=spec.ceiling_steps, warmup=10, clock=clock, into=timings, key="seconds_per_step"
        )
        result[key] = batch / timings["seconds_per_step"]
    method = build_cetl(
        network="drcn",
        channels=1,
        source=network_source("drcn", 1),
        cache=False,
        fisher_batches=spec.fisher_batches,
        fisher_batch_size=spec.fisher_batch_size,
        variant="baseline",
    )
    train = synthetic_data(labelled=spec.labelled, val=spec.val, target=8, test=spec.test, channels=1)
    run = engine_run(
        method, train, rounds=2, batch_size=512, device=device, engine=EngineConfig(compile=True)
    )
    result["engine_b512_bf16_compiled"] = run["stages"]["classify"]["images_per_second"]
    return result


def measure_syncs(spec: Pinned, device: torch.device) -> dict[str, Any]:
    """Host synchronisations per training step (CUDA), in the whole engine loop.

    ``torch.cuda.set_sync_debug_mode`` reports every synchronisation; the engine runs one CETL
    round twice, with 5 and with 15 steps per stage and no logging steps. Setup, epoch ends,
    GFIs, evaluation and checkpoints sync the same number of times in both, so the difference
    over the 30 extra steps is what each step costs (0 is the goal).
    """
    data = synthetic_data(
        labelled=spec.labelled, val=spec.val, target=spec.target, test=spec.test, channels=1
    ).to(device)
    counts: dict[int, int] = {}
    first: list[str] = []
    for steps in (5, 15):
        method = build_cetl(
            network=spec.network,
            channels=1,
            source=network_source(spec.network, 1),
            cache=True,
            fisher_batches=spec.fisher_batches,
            fisher_batch_size=spec.fisher_batch_size,
        )
        train = TrainConfig(
            rounds=1,
            batch_size=spec.batch_size,
            max_steps_per_epoch=steps,
            log_every=10**9,
            device=str(device),
            tensorboard=False,
            progress=False,
        )
        with (
            tempfile.TemporaryDirectory(prefix="cetl-speed-") as tmp,
            warnings.catch_warnings(record=True) as caught,
        ):
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                loop.train(
                    method,
                    data,
                    train_config=train,
                    optimizer_config=OptimizerConfig(lr=1e-3),
                    seed=0,
                    run_dir=Path(tmp),
                    resume=False,
                )
            finally:
                torch.cuda.set_sync_debug_mode(0)
        syncs = [str(w.message).splitlines()[0] for w in caught if "synchroniz" in str(w.message).lower()]
        counts[steps] = len(syncs)
        first = first or syncs[:3]
    return {
        "syncs_per_step": (counts[15] - counts[5]) / (3 * 10),
        "syncs_per_round": counts,
        "examples": first,
    }


# --------------------------------------------------------------------------- report


def card_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return (
        f"CPU {platform.machine()} ({os.cpu_count()} cores visible, {torch.get_num_threads()} torch threads)"
    )


def verdicts(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each headline number against its issue-11 target (``resident_speedup``'s is for GPUs)."""
    found = {
        "overhead": result.get("main", {}).get("overhead"),
        "fisher_share": result.get("main", {}).get("fisher_share"),
        "cache_speedup": result.get("cache", {}).get("cache_speedup"),
        "resident_speedup": result.get("resident", {}).get("resident_speedup"),
    }
    rows = {}
    for key, value in found.items():
        if value is None:
            continue
        target = TARGETS[key]
        at_most = key in ("overhead", "fisher_share")
        met = value <= target if at_most else value >= target
        rows[key] = {"value": value, "target": f"{'≤' if at_most else '≥'} {target:g}", "met": met}
    return rows


def _measured(result: dict[str, Any], part: str) -> dict[str, Any] | None:
    """A part's measurements, or None when it was not run or failed (its error is listed)."""
    found = result.get(part)
    return None if not found or "error" in found else found


def render_markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# Speed benchmark ({result['mode']})",
        "",
        f"Command: `{result['command']}`  ",
        f"Device: {result['card']}; torch {result['torch']}; {result['seconds']:.0f} s in all.",
        "",
        "| metric | value | target | met |",
        "|---|---:|---|---|",
    ]
    for key, row in result["verdicts"].items():
        lines.append(f"| {key} | {row['value']:.3f} | {row['target']} | {'yes' if row['met'] else 'no'} |")
    main = _measured(result, "main")
    if main:
        lines += [
            "",
            f"CETL round (`cetl`, {result['pinned']['network']}, batch {result['pinned']['batch_size']}, "
            f"K={result['pinned']['fisher_batches']}, m={result['pinned']['fisher_batch_size']}): "
            f"{main['round_seconds']:.2f} s; bare passes {main['passes_seconds']:.2f} s, optimiser steps "
            f"{main['optimizer_seconds']:.2f} s, GFIs {main['fisher_seconds']:.2f} s; evaluation after the "
            f"round {main['eval_seconds']:.2f} s (not in the round).",
            "",
            "| stage | steps | stage s | GFI s | images/s | pass s/step | optimiser s/step |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, s in main["stages"].items():
            lines.append(
                f"| {name} | {s['steps']} | {s['seconds']:.2f} | {s['fisher_seconds']:.2f} | "
                f"{s['images_per_second']:.0f} | {s['pass_seconds']:.4f} | {s['optimizer_seconds']:.4f} |"
            )
    cache = _measured(result, "cache")
    if cache:
        lines += [
            "",
            f"Feature cache: {cache['source']} → {cache['target_net']}, {cache['images']} images: round "
            f"{cache['warm_round_seconds']:.2f} s warm vs {cache['uncached_round_seconds']:.2f} s uncached; "
            f"filling the cache once took {cache['fill_seconds']:.2f} s.",
        ]
    resident = _measured(result, "resident")
    if resident:
        per_step = ", ".join(f"{k} {1000 * v:.2f} ms" for k, v in resident["seconds_per_step"].items())
        lines += [
            "",
            f"Data path ({resident['network']}, batch {resident['batch_size']}): {per_step} per step.",
        ]
    ceilings = _measured(result, "ceilings")
    if ceilings:
        lines += [
            "",
            "| DRCN classification, images/s | METHOD.md (H100) | this card |",
            "|---|---:|---:|",
        ]
        for key, reference in CEILINGS.items():
            lines.append(f"| {key} | {reference:,} | {ceilings[key]:,.0f} |")
        compiled = ceilings["engine_b512_bf16_compiled"]
        lines.append(
            f"| engine `baseline` (stage 3 alone), batch 512, bf16, engine.compile | — | {compiled:,.0f} "
            f"({compiled / ceilings['drcn_b512_bf16_compiled']:.0%} of this card's compiled ceiling) |"
        )
        if main:
            stage = main["stages"]["classify"]["images_per_second"]
            lines.append(
                f"| engine `cetl` classify stage, batch 128, bf16 autocast | — | {stage:,.0f} "
                f"({stage / ceilings['drcn_b128_fp32']:.0%} of this card's batch-128 ceiling) |"
            )
    syncs = _measured(result, "syncs")
    if syncs:
        lines += [
            "",
            f"Host synchronisations per training step: {syncs['syncs_per_step']:.2f} (one round: "
            f"{syncs['syncs_per_round']} with 5 and 15 steps per stage).",
        ]
    failed = [
        f"- {part}: {found['error']}"
        for part, found in result.items()
        if isinstance(found, dict) and "error" in found
    ]
    if failed:
        lines += ["", "Failed parts (not measured):", "", *failed]
    if result.get("notes"):
        lines += ["", "Notes:", "", *(f"- {note}" for note in result["notes"])]
    return "\n".join(lines) + "\n"


def write(result: dict[str, Any], out: Path) -> None:
    """Write ``out`` (JSON) and the Markdown beside it; called after every part, so a run cut
    short still leaves what it measured."""
    result["verdicts"] = verdicts(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(render_markdown(result))


def run(
    spec: Pinned,
    device: torch.device,
    out: Path,
    *,
    command: str,
    notes: list[str] | None = None,
    only: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Every measurement (or those named in ``only``) in order, writing results after each part."""
    started = time.perf_counter()
    result: dict[str, Any] = {
        "mode": spec.name,
        "command": command,
        "device": str(device),
        "card": card_name(device),
        "torch": torch.__version__,
        "pinned": dataclasses.asdict(spec),
        "targets": TARGETS,
        "notes": [*(notes or []), clock_note(device)],
    }
    measures: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("main", lambda: measure_main(spec, device)),
        ("cache", lambda: measure_cache(spec, device)),
        ("resident", lambda: measure_resident(spec, device)),
    ]
    if device.type == "cuda":
        measures.append(("syncs", lambda: measure_syncs(spec, device)))
    if device.type == "cuda" and spec.ceilings:
        measures.append(("ceilings", lambda: measure_ceilings(spec, device)))
    if only is not None:
        unknown = sorted(set(only) - {name for name, _ in measures})
        if unknown:
            raise SystemExit(f"speed: unknown or unavailable part(s) {unknown} on {device.type}")
        measures = [(name, measure) for name, measure in measures if name in only]
    for name, measure in measures:
        part_started = time.perf_counter()
        try:
            result[name] = measure()
        except Exception as error:  # one failed part must not lose the others
            result[name] = {"error": f"{type(error).__name__}: {error}"}
            print(f"speed: {name} failed: {result[name]['error']}", file=sys.stderr)
        result[name]["part_seconds"] = time.perf_counter() - part_started
        result["seconds"] = time.perf_counter() - started
        write(result, out)
        print(f"speed: {name} done after {result['seconds']:.0f} s", file=sys.stderr)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the CPU-sized configuration (minutes)")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (a .md is written beside it)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--note", action="append", default=[], help="a line for the results' notes")
    parser.add_argument(
        "--parts", default=None, help="a comma-separated subset of main,cache,resident,syncs,ceilings"
    )
    args = parser.parse_args()
    spec = PINNED["quick" if args.quick else "full"]
    device = loop.resolve_device(args.device)
    out = args.out or RESULTS / f"speed_{device.type if device.type == 'cpu' else 'gpu'}_{spec.name}.json"
    # Recorded in committed results: never this machine's absolute path, only its name there.
    resolved, here = Path(out).resolve(), Path.cwd()
    shown = resolved.relative_to(here) if resolved.is_relative_to(here) else f"$OUT/{resolved.name}"
    command = "python benchmarks/speed.py" + (" --quick" if args.quick else "") + f" --out {shown}"
    print(f"speed: {spec.name} on {card_name(device)} -> {out}", file=sys.stderr)
    parts = None if args.parts is None else tuple(args.parts.split(","))
    if parts is not None:
        command += f" --parts {args.parts}"
    run(spec, device, out, command=command, notes=args.note, only=parts)


if __name__ == "__main__":
    main()
