"""Hand-run benchmark: what the term-balance measurement (METHOD.md D10) costs per training step.

Usage (writes ``benchmarks/results/balance_cost.md`` and ``.json``)::

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/balance_cost.py

A ``cetl`` method at the ``quick`` digit size (LeNet, 32×32 grey, batch 128, synthetic images of
the real sizes: speed does not depend on pixel values) has each of its three updates timed
with and without ``norms_out`` — in alternating blocks, on this process's CPU clock
(``speed.seconds_now``), so other jobs on the machine distort the ratio little. The cost of
leaving balance on is the extra time of a measured step divided by ``balance_every`` (a
measured step every 25 steps by default, plus a stage's last).
"""

from __future__ import annotations

import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from speed import Clock, autocast_for, build_cetl, network_source, synthetic_data

from cetl.config import OptimizerConfig, TrainConfig
from cetl.engine import loop
from cetl.engine.distributed import SINGLE
from cetl.files import atomic_write_json, atomic_write_text
from cetl.methods.base import Batch

RESULTS = Path(__file__).parent / "results"
BATCH = 128
BLOCK = 10
BLOCKS = 6
BALANCE_EVERY = TrainConfig().balance_every


def main() -> None:
    device = torch.device("cpu")
    torch.manual_seed(0)
    data = synthetic_data(labelled=2048, val=256, target=2048, test=256, channels=1)
    method = build_cetl(
        network="lenet",
        channels=1,
        source=network_source("lenet", 1),
        cache=True,
        fisher_batches=32,
        fisher_batch_size=8,
    )
    method.prepare(data, SINGLE)
    method.train()
    stages = method.stages(0)
    stages[0].on_end()  # GFI1 → DWA1 in stage 2
    stages[1].on_end()  # GFI2, GFI3 → DWA3 in stage 3 (and DWA2 next round)
    stages = method.stages(1)  # round 2: every update has its DWA term
    clock = Clock(device)
    autocast = autocast_for(device)
    rows = []
    for stage in stages:
        update = stage.updates[0]
        optimizer = loop.make_optimizer(list(update.parameters()), OptimizerConfig(lr=1e-4))
        generator = torch.Generator().manual_seed(0)

        def batch(generator: torch.Generator = generator) -> Batch:
            index = torch.randint(len(data.target), (BATCH,), generator=generator)
            return Batch(
                x=data.labelled.x[index],
                y=data.labelled.y[index],
                x_tgt=data.target[index],
                idx=index,
                idx_tgt=index,
            )

        def steps(measure: bool, update=update, optimizer=optimizer) -> None:
            for _ in range(BLOCK):
                loop.run_update(
                    update,
                    batch(),
                    optimizer,
                    max_grad_norm=None,
                    autocast=autocast,
                    norms_out={} if measure else None,
                )

        steps(False)  # warm-up
        times = {"plain": 0.0, "measured": 0.0}
        for _ in range(BLOCKS):
            for kind in ("plain", "measured"):
                block: dict[str, float] = {}
                with clock(block, kind):
                    steps(kind == "measured")
                times[kind] += block[kind] / (BLOCK * BLOCKS)
        terms = sorted(update.losses(batch()))
        extra = times["measured"] / times["plain"] - 1
        rows.append(
            {
                "stage": stage.name,
                "update": update.name,
                "terms": terms,
                "plain_ms": 1000 * times["plain"],
                "measured_ms": 1000 * times["measured"],
                "measured_step_extra": extra,
                "amortised_overhead": extra / BALANCE_EVERY,
            }
        )
    result = {
        "command": "OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/balance_cost.py",
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "clock": "process CPU time",
        "batch_size": BATCH,
        "balance_every": BALANCE_EVERY,
        "rows": rows,
    }
    RESULTS.mkdir(exist_ok=True)
    atomic_write_json(RESULTS / "balance_cost.json", result)
    lines = [
        "# Term-balance cost (METHOD.md D10)",
        "",
        f"Command: `{result['command']}`  ",
        f"Machine: {result['machine']}; clock: this process's CPU time; `cetl`, LeNet, 32×32, batch "
        f"{BATCH}, round 2 (every update has its DWA term); {BLOCKS}×{BLOCK} steps per kind, alternating.",
        "",
        "| stage / update | terms | plain ms/step | measured ms/step | extra on a measured step "
        f"| amortised at balance_every={BALANCE_EVERY} |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['stage']} / {r['update']} | {', '.join(r['terms'])} | {r['plain_ms']:.1f} "
            f"| {r['measured_ms']:.1f} | {100 * r['measured_step_extra']:+.0f}% "
            f"| {100 * r['amortised_overhead']:+.1f}% |"
        )
    atomic_write_text(RESULTS / "balance_cost.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
