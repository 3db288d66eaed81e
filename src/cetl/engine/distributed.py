"""Several processes, one training run: torchrun, process groups and the collectives cetl uses.

All ``torch.distributed`` code of the project lives in this module; the engine, the Fisher
estimator and CETL call the :class:`World` they get from :func:`current`, which in a single
process is a no-op, so the same code path runs with one process or many (no distributed-only
branches elsewhere).

Launch: ``torchrun --nproc_per_node=N -m cetl train ...``. :func:`process_group` reads
torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``)
and, when there is more than one process, joins the group with ``gloo`` for CPU tensors and
``nccl`` for CUDA tensors (``cpu:gloo,cuda:nccl`` where CUDA is available).

How the training step stays equivalent to one process with the same global batch
(``docs/distributed.md`` has the argument in full):

- Every rank draws the *same* seeded global batch order and trains on its contiguous slice
  (:meth:`World.shard`); ``train.batch_size`` stays the global batch.
- After ``backward`` the gradients are averaged over ranks, weighted by each rank's share of
  the batch (:meth:`World.reduce_step`): the gradient of the global-batch mean loss, which
  is what DDP computes. Clipping and the optimiser step then run on identical gradients, so
  every rank holds bit-identical weights without ever broadcasting them.
- The loss terms are reduced in the same collective, so logs, stage means and the
  non-finite-loss check see the global-batch values on every rank.

The networks are deliberately not wrapped in ``DistributedDataParallel``: a method calls its
networks from loss closures, stages hold several updates over overlapping parameter sets, and
the frozen source S must stay outside any wrapper (DESIGN.md principle 3). A manual
all-reduce after ``backward`` gives DDP's arithmetic without any of that; it only gives up
DDP's overlap of communication with the backward pass, which is negligible for the networks
here.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from cetl.errors import ConfigError, DataError

ENV_WORLD_SIZE = "WORLD_SIZE"
ENV_RANK = "RANK"
ENV_LOCAL_RANK = "LOCAL_RANK"


@dataclass(frozen=True)
class World:
    """This process's place among the training processes; ``World()`` is a single process.

    Attributes:
        rank: global rank, 0 … size − 1; rank 0 writes logs, checkpoints and the summary.
        size: number of processes.
        local_rank: rank on this machine; picks the GPU (``cuda:<local_rank>``).
    """

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and prints results (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    # ------------------------------------------------------------------ placement

    def device(self, device: torch.device) -> torch.device:
        """A CUDA device without an index becomes this process's GPU, ``cuda:<local_rank>``."""
        if self.distributed and device.type == "cuda" and device.index is None:
            return torch.device("cuda", self.local_rank)
        return device

    def check_batch_size(self, batch_size: int) -> None:
        """The global batch must split evenly, or ranks would weigh their examples differently."""
        if batch_size % self.size:
            raise ConfigError(
                f"train.batch_size {batch_size} is the global batch and must be divisible by the "
                f"{self.size} processes; use a multiple of {self.size} (e.g. "
                f"--set train.batch_size={max(self.size, batch_size // self.size * self.size)})"
            )

    def shard(self, rows: Tensor) -> Tensor:
        """This rank's contiguous slice of ``rows`` (a global batch's indices, or micro-batches).

        Slices differ in length by at most one when ``rows`` does not split evenly (a stream
        smaller than one batch); :meth:`reduce_step` weighs ranks by their counts.

        Raises:
            DataError: fewer rows than processes, so some rank would get none.
        """
        if not self.distributed:
            return rows
        if len(rows) < self.size:
            raise DataError(
                f"a batch of {len(rows)} cannot be split over {self.size} processes (every process "
                f"needs at least one example); use more data or fewer processes"
            )
        return rows.tensor_split(self.size)[self.rank]

    # ------------------------------------------------------------------ collectives

    def reduce_step(
        self, parameters: Iterable[nn.Parameter], terms: Mapping[str, Tensor], count: int
    ) -> dict[str, Tensor]:
        """Average gradients and loss terms over ranks, weighted by each rank's ``count``.

        With ``n_r`` examples on rank ``r`` and ``N = Σ n_r``, the global-batch mean loss is
        ``Σ_r (n_r/N) L_r``, so its gradient is ``Σ_r (n_r/N) ∇L_r``: that is what each
        ``.grad`` holds afterwards, on every rank. One all-reduce carries every gradient, the
        terms and the counts. Parameters without a gradient are skipped (the same ones on
        every rank: all ranks run the same graph).

        Args:
            parameters: the update's parameters, after ``backward``.
            terms: scalar loss terms (detached), each a mean over this rank's examples.
            count: this rank's number of examples.

        Returns:
            ``terms`` averaged over ranks (unchanged in a single process).
        """
        if not self.distributed:
            return dict(terms)
        grads = [p.grad for p in parameters if p.grad is not None]
        names = list(terms)
        device = grads[0].device if grads else next(iter(terms.values())).device
        scalars = torch.stack([terms[name].detach().float().to(device) for name in names])
        *mean_grads, means = self.weighted_mean([*grads, scalars], count)
        for g, mean in zip(grads, mean_grads, strict=True):
            g.copy_(mean)
        return {name: means[i] for i, name in enumerate(names)}

    def weighted_mean(self, tensors: Sequence[Tensor], count: int) -> list[Tensor]:
        """Each tensor averaged over ranks, weighted by each rank's ``count`` of examples (float32).

        One all-reduce carries all of them and the counts, so a global-batch mean costs one
        collective whatever the number of tensors. A single process returns ``tensors`` as they are.
        """
        if not self.distributed:
            return list(tensors)
        weight = float(count)
        device = tensors[0].device
        flat = [t.reshape(-1).float() * weight for t in tensors]
        flat.append(torch.full((1,), weight, device=device))  # sums to N, the global batch
        buffer = torch.cat(flat)
        dist.all_reduce(buffer)
        total = buffer[-1]
        means, offset = [], 0
        for t in tensors:
            means.append((buffer[offset : offset + t.numel()] / total).view(t.shape))
            offset += t.numel()
        return means

    def sum(self, tensor: Tensor) -> Tensor:
        """``tensor`` summed over ranks (a new tensor; the Fisher estimator's ``reduce``)."""
        if not self.distributed:
            return tensor
        reduced = tensor.clone()
        dist.all_reduce(reduced)
        return reduced

    def broadcast(self, tensor: Tensor) -> Tensor:
        """Rank 0's ``tensor`` on every rank (shape and dtype must agree)."""
        if not self.distributed:
            return tensor
        shared = tensor.clone()
        dist.broadcast(shared, src=0)
        return shared

    def broadcast_modules(self, modules: Iterable[nn.Module]) -> None:
        """Copy rank 0's parameters and buffers to every rank, as DDP does when it wraps."""
        if not self.distributed:
            return
        with torch.no_grad():
            for module in modules:
                for tensor in [*module.parameters(), *module.buffers()]:
                    dist.broadcast(tensor.data, src=0)

    def average_buffers(self, modules: Iterable[nn.Module]) -> None:
        """Average floating-point buffers (BatchNorm running statistics) over ranks.

        Each rank updates them from its own slice of the batch; averaging keeps evaluation,
        the Fisher pass (eval mode) and checkpoints identical on every rank.
        """
        if not self.distributed:
            return
        with torch.no_grad():
            for module in modules:
                for buffer in module.buffers():
                    if buffer.is_floating_point():
                        dist.all_reduce(buffer.data)
                        buffer.data.div_(self.size)

    def barrier(self) -> None:
        """Wait for every rank (e.g. until rank 0 has written a file the others read)."""
        if self.distributed:
            dist.barrier()


SINGLE = World()
"""One process: every collective is the identity."""


def current() -> World:
    """The world of this process: the initialised process group, else a single process."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    rank = dist.get_rank()
    return World(rank=rank, size=dist.get_world_size(), local_rank=int(os.environ.get(ENV_LOCAL_RANK, rank)))


def backend() -> str:
    """``gloo`` for CPU tensors, plus ``nccl`` for CUDA tensors where CUDA and NCCL exist."""
    if torch.cuda.is_available() and dist.is_nccl_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


@contextlib.contextmanager
def process_group(*, timeout_minutes: float = 30.0) -> Iterator[World]:
    """Join the process group torchrun set up (if any) for the duration of the block.

    Without torchrun, or with ``WORLD_SIZE=1``, nothing is initialised and the world is a
    single process. An already initialised group (a test that spawned its own processes) is
    used as it is and left for its owner to destroy.

    Raises:
        ConfigError: ``WORLD_SIZE`` is set but not an integer, or torch lacks distributed support.
    """
    text = os.environ.get(ENV_WORLD_SIZE, "1")
    try:
        size = int(text)
    except ValueError:
        raise ConfigError(
            f"{ENV_WORLD_SIZE}={text!r} is not a number of processes; launch with torchrun"
        ) from None
    if size <= 1 or (dist.is_available() and dist.is_initialized()):
        yield current()
        return
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; run a single process (cetl train ...)")
    local_rank = int(os.environ.get(ENV_LOCAL_RANK, "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
    dist.init_process_group(backend(), timeout=datetime.timedelta(minutes=timeout_minutes))
    try:
        yield current()
    finally:
        dist.destroy_process_group()
