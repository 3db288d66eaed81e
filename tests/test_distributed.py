"""Multi-process training: 2 CPU processes (gloo) must train what 1 process trains.

The spawned test is the contract of ``cetl.engine.distributed``: with the same global batch,
two ranks × B/2 give the losses and weights of one process × B (up to float rounding), S is
never wrapped or touched, and the GFI masks of ``cetl`` agree across ranks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from cetl.build import DataInfo, build_method
from cetl.config import MethodConfig, OptimizerConfig, TrainConfig
from cetl.data.synthetic import synthetic_training_data
from cetl.engine import distributed, loop
from cetl.engine.distributed import World
from cetl.errors import ConfigError, DataError
from cetl.experiments import resolve
from cetl.fisher import estimate_fisher
from cetl.methods.baselines import SourceOnly
from cetl.networks import NETWORKS
from cetl.source import FrozenSource, source_from_network

WORLD_SIZE = 2
INFO = DataInfo(num_classes=4, channels=1, image_size=28, sizes={}, notes=())
TRAIN = TrainConfig(
    rounds=2, batch_size=16, max_steps_per_epoch=2, log_every=1, tensorboard=False, progress=False
)
JOBS = ("source_only", "cetl", "cetl_fi")
"""``cetl`` runs with DWA scaled down (``dwa_reduction=mean``): its GFI mask thresholds RF, so
float rounding flips a few parameters near u, and at full strength those flips (not the
arithmetic) move the weights apart. ``cetl_fi`` (GFI = F, no mask) checks DWA at full strength."""
OPTIMIZER = OptimizerConfig(name="sgd", lr=1e-2)
"""SGD, not Adam: Adam divides by √v, so a gradient that is 0 up to rounding gets a step of up to
lr and rounding-level differences surface amplified (2e-5 here); with SGD they stay ~1e-8."""


# --------------------------------------------------------------------------- single process


def test_a_single_process_world_changes_nothing():
    world = distributed.current()
    assert world == World() and world.is_main and not world.distributed
    rows = torch.arange(10)
    assert world.shard(rows) is rows
    terms = {"a": torch.tensor(1.5)}
    assert world.reduce_step([], terms, 3) == terms
    with distributed.process_group() as world:  # WORLD_SIZE unset: nothing is initialised
        assert not world.distributed and not dist.is_initialized()


def test_ranks_slice_the_global_batch_in_order():
    rows = torch.arange(16)
    slices = [World(rank=r, size=WORLD_SIZE).shard(rows) for r in range(WORLD_SIZE)]
    assert [s.tolist() for s in slices] == [list(range(8)), list(range(8, 16))]
    uneven = [World(rank=r, size=WORLD_SIZE).shard(torch.arange(5)) for r in range(WORLD_SIZE)]
    assert [len(s) for s in uneven] == [3, 2]  # a stream smaller than a batch: reduce_step weighs
    with pytest.raises(DataError, match="cannot be split over 2 processes"):
        World(rank=1, size=WORLD_SIZE).shard(torch.arange(1))


def test_the_global_batch_must_split_evenly_and_gpus_follow_local_rank():
    with pytest.raises(ConfigError, match=r"divisible by the 4 processes.*train.batch_size=12"):
        World(size=4).check_batch_size(14)
    World(size=4).check_batch_size(16)
    world = World(rank=3, size=4, local_rank=1)
    assert world.device(torch.device("cuda")) == torch.device("cuda", 1)
    assert world.device(torch.device("cpu")) == torch.device("cpu")


def test_only_a_reduced_fisher_may_take_epsilon_from_another_rank():
    net = nn.Linear(3, 2)
    with pytest.raises(ConfigError, match="holds_first=False needs reduce"):
        estimate_fisher(
            dict(net.named_parameters()),
            {"a": lambda x: net(x).square().mean(), "b": lambda x: net(x).sum()},
            [torch.ones(4, 3)],
            modules=[net],
            pairs=[("a", "b")],
            holds_first=False,
        )


def test_a_malformed_world_size_is_a_config_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE='two'"), distributed.process_group():
        pass


# --------------------------------------------------------------------------- two processes


def _no_dropout(module: nn.Module) -> nn.Module:
    """Dropout masks cannot match between 1 × B and 2 × B/2 draws; the arithmetic can."""
    for sub in module.modules():
        if isinstance(sub, nn.Dropout | nn.Dropout2d):
            sub.p = 0.0
    return module


class _CountingSourceOnly(SourceOnly):
    """Records the batch each step sees: a rank must see its half of the global batch."""

    def _classify(self, batch):
        self.__dict__.setdefault("batch_sizes", set()).add(len(batch.x))
        return super()._classify(batch)


def _make(job: str):
    torch.manual_seed(0)
    if job == "source_only":
        net = NETWORKS.get("lenet")(in_channels=1, image_size=28, num_classes=4)
        return _CountingSourceOnly(MethodConfig(), target_net=_no_dropout(net))
    torch.manual_seed(7)
    source_net = NETWORKS.get("lenet")(in_channels=1, image_size=28, num_classes=4)
    source = source_from_network(source_net, tap="coupling", temperature=4.0, description="test lenet")
    config = resolve(
        "digits_mn_to_us",
        method=job,
        profile="smoke",
        sets=[
            "method.fisher_batches=8",
            "method.recon_reduction=mean",  # SGD at lr 1e-2 on a 784-pixel sum: steps that amplify rounding
            *(["method.dwa_reduction=mean"] if job == "cetl" else []),
        ],
    )
    method = build_method(config, INFO, source=source)
    _no_dropout(method.target_net)
    return method


def _run(job: str, run_dir: Path) -> dict:
    """Train ``job`` on the synthetic data; everything the test compares, as plain tensors."""
    method = _make(job)
    fingerprint = method.source.fingerprint() if hasattr(method, "source") else None
    result = loop.train(
        method,
        synthetic_training_data(),
        train_config=TRAIN,
        optimizer_config=OPTIMIZER,
        seed=0,
        run_dir=run_dir,
        resume=False,
    )
    out = {
        "weights": {
            f"{name}.{key}": value.detach().clone()
            for name, net in method.trainable_networks().items()
            for key, value in net.state_dict().items()
        },
        "history": result.history,
        "masks": {
            name: {k: g != 0 for k, g in p.gfi.items()}
            for name, p in getattr(getattr(method, "protection", None), "penalties", {}).items()
        },
        "batch_sizes": getattr(method, "batch_sizes", None),
        "wrapped": [
            type(m).__name__ for m in method.modules() if "DistributedDataParallel" in type(m).__name__
        ],
    }
    if fingerprint is not None:
        source = method.source
        out["source_is_plain"] = type(source) is FrozenSource and not source.training
        out["source_untouched"] = source.fingerprint() == fingerprint and all(
            p.grad is None and not p.requires_grad for p in source.parameters()
        )
    return out


def _uneven_step(world: World) -> dict:
    """reduce_step with 3 examples on rank 0 and 1 on rank 1 (a stream smaller than a batch)."""
    parameter = nn.Parameter(torch.zeros(2))
    parameter.grad = torch.tensor([1.0, 2.0]) if world.rank == 0 else torch.tensor([5.0, -2.0])
    unused = nn.Parameter(torch.zeros(1))  # no gradient on any rank: skipped, stays None
    terms = {"a": torch.tensor(2.0 if world.rank == 0 else 6.0)}
    reduced = world.reduce_step([parameter, unused], terms, 3 if world.rank == 0 else 1)
    return {"grad": parameter.grad, "unused": unused.grad, "a": reduced["a"]}


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        torch.save(_uneven_step(distributed.current()), Path(out_dir) / f"uneven-rank{rank}.pt")
        for job in JOBS:
            run_dir = Path(out_dir) / job  # one folder: only rank 0 may write to it
            torch.save(_run(job, run_dir), Path(out_dir) / f"{job}-rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ddp")
    mp.start_processes(
        _worker, args=(str(folder / "init"), str(folder)), nprocs=WORLD_SIZE, start_method="spawn"
    )
    return folder


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> dict[str, tuple[dict, Path]]:
    """The reference: each job in this (single) process, with the same global batch.

    It runs on one intra-op thread, as each rank does: the thread count changes the order of
    float reductions; with this process on 2 threads that rounding, grown over the run, moved a
    decoder bias of ``cetl_fi`` by 1e-4 (relative) and flipped a parameter of ``cetl``'s GFI
    mask. Neither is part of what the test checks: how the ranks split and reduce the batch.
    """
    folder = tmp_path_factory.mktemp("single")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {job: (_run(job, folder / job), folder / job) for job in JOBS}
    finally:
        torch.set_num_threads(threads)


def _records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    drop = {"seconds"}
    return [
        {k: v for k, v in json.loads(line).items() if k not in drop and "seconds" not in k} for line in lines
    ]


def _assert_close_records(ddp: list[dict], single: list[dict]) -> None:
    assert [(r["kind"], r.get("stage"), r["step"]) for r in ddp] == [
        (r["kind"], r.get("stage"), r["step"]) for r in single
    ]
    for a, b in zip(ddp, single, strict=True):
        assert a.keys() == b.keys()
        for key, value in a.items():
            # RF quantiles are correlations of logs from K = 8 samples, picked element by element:
            # ill-conditioned enough to turn float rounding of the weights into ~1e-4 (relative).
            rel = 1e-3 if "_rf/" in key else 1e-5
            # Label-free scores such as IM are differences of O(1) entropies (log 10 ≈ 2.3) that nearly
            # cancel: their rounding is that of the terms, ~1e-5 absolute, not of the small result.
            absolute = 1e-5 if key.startswith("unsupervised_") else 1e-7
            # A GFI mask keeps the parameters whose RF passes u: rounding flips the few that sit on u,
            # so the kept fraction moves by whole parameters (1 of ~4e5 is 2.3e-6), not by rounding.
            if "_kept" in key:
                absolute = 1e-4
            if isinstance(value, float):
                assert value == pytest.approx(b[key], rel=rel, abs=absolute), (a["kind"], a.get("stage"), key)


@pytest.mark.parametrize("job", JOBS)
def test_two_ranks_train_what_one_process_trains(job, two_ranks, one_process):
    single, single_dir = one_process[job]
    ranks = [torch.load(two_ranks / f"{job}-rank{r}.pt", weights_only=False) for r in range(WORLD_SIZE)]
    for name, value in single["weights"].items():
        assert torch.equal(ranks[0]["weights"][name], ranks[1]["weights"][name]), name  # bit-identical ranks
        torch.testing.assert_close(
            ranks[0]["weights"][name], value, rtol=1e-5, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}"
        )
    # Losses: rank 0's log holds the global-batch values, step by step.
    _assert_close_records(_records(two_ranks / job), _records(single_dir))
    assert ranks[0]["history"] == ranks[1]["history"]
    if job == "source_only":
        assert single["batch_sizes"] == {16} and ranks[1]["batch_sizes"] == {16 // WORLD_SIZE}
    assert not (two_ranks / job / "tensorboard").exists()
    for rank in ranks:
        assert rank["wrapped"] == []
        if job != "source_only":
            assert rank["source_is_plain"] and rank["source_untouched"]


def test_gfi_masks_agree_across_ranks_and_with_one_process(two_ranks, one_process):
    single, _ = one_process["cetl"]
    ranks = [torch.load(two_ranks / f"cetl-rank{r}.pt", weights_only=False) for r in range(WORLD_SIZE)]
    assert set(ranks[0]["masks"]) == {"dwa1", "dwa2", "dwa3"}
    for name, masks in ranks[0]["masks"].items():
        for key, mask in masks.items():
            assert torch.equal(mask, ranks[1]["masks"][name][key]), (name, key)
            agreement = (mask == single["masks"][name][key]).float().mean()
            assert agreement > 0.99, (name, key, float(agreement))
        kept = sum(int(m.sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())
        assert 0.0 < kept < 1.0  # a real mask, not all or nothing


def test_ranks_are_weighted_by_their_examples(two_ranks):
    # Hand-computed: (3·g0 + 1·g1) / 4 and (3·2 + 1·6) / 4, the mean over all 4 examples.
    for rank in range(WORLD_SIZE):
        result = torch.load(two_ranks / f"uneven-rank{rank}.pt", weights_only=True)
        torch.testing.assert_close(result["grad"], torch.tensor([2.0, 1.0]))
        assert result["unused"] is None
        assert float(result["a"]) == pytest.approx(3.0)


@pytest.mark.slow
@pytest.mark.needs_data
def test_torchrun_cli_writes_one_run_folder(data_root, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CETL_DATA_ROOT": str(data_root.path)}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(WORLD_SIZE),
        "-m",
        "cetl",
        "train",
        "digits_mn_to_us",
        "--method",
        "source_only",
        "--profile",
        "smoke",
        "--out",
        str(out),
    ]
    finished = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert finished.stdout.count("target test accuracy") == 1  # rank 0 alone reports
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == WORLD_SIZE
    assert summary["stage_seconds"]
    assert (out / "best.pt").exists() and (out / "last.pt").exists()
