"""Speed paths (issue 11): the benchmark's functions, the vectorised Fisher, compile, the cache key.

Speed itself is measured by ``benchmarks/speed.py``, not here: these tests check that the fast
paths compute what the plain ones do and that the benchmark produces finite, complete results.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import cetl.fisher.estimate as estimate_module
import cetl.fisher.protection as protection_module
from cetl.build import DataInfo, build_method
from cetl.config import EngineConfig, OptimizerConfig
from cetl.data.synthetic import synthetic_training_data
from cetl.engine import loop
from cetl.engine.distributed import SINGLE
from cetl.experiments import resolve
from cetl.fisher import (
    Stacked,
    estimate_fisher,
    relative_fisher,
    sampled_categorical_loss,
    sampled_gaussian_loss,
)
from cetl.networks import NETWORKS
from cetl.source import FeatureCache, FrozenSource, InputTransform, source_from_network
from cetl.source.cache import cache_key
from cetl.source.frozen import penultimate_extractor
from helpers import make_method, make_source, train_synthetic

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark():
    """``benchmarks/speed.py`` as a module (benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("cetl_speed_benchmark", ROOT / "benchmarks" / "speed.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def tiny_source() -> FrozenSource:
    """A stand-in for ResNet-50 with the same plumbing (resize, RGB, penultimate tap)."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 6),
        nn.Linear(6, 10),
    )
    return FrozenSource(
        model,
        extract=penultimate_extractor(model),
        input_transform=InputTransform(size=40, channels=3),
        description="tiny",
    )


def test_benchmark_functions_give_finite_complete_results(tmp_path: Path) -> None:
    speed = load_benchmark()
    spec = dataclasses.replace(
        speed.PINNED["quick"],
        name="tiny",
        labelled=96,
        val=16,
        target=96,
        test=32,
        batch_size=32,
        rounds=2,
        fisher_batches=2,
        fisher_batch_size=2,
        pass_steps=2,
        resident_steps=2,
        cache_images=4,
        cache_batch_size=2,
        cache_rounds=1,
        cache_fisher_batches=1,
        cache_fisher_batch_size=2,
    )
    cpu = torch.device("cpu")
    result = {"mode": "tiny", "command": "test", "card": "cpu", "torch": torch.__version__, "seconds": 1.0}
    result["pinned"] = dataclasses.asdict(spec)
    result["main"] = speed.measure_main(spec, cpu)
    result["cache"] = speed.measure_cache(spec, cpu, source=tiny_source())
    result["resident"] = speed.measure_resident(spec, cpu)
    out = tmp_path / "speed.json"
    speed.write(result, out)

    saved = json.loads(out.read_text())
    assert set(saved["verdicts"]) == {"overhead", "fisher_share", "cache_speedup", "resident_speedup"}
    for row in saved["verdicts"].values():
        assert math.isfinite(row["value"]) and row["value"] > 0 and isinstance(row["met"], bool)
    main = saved["main"]
    assert set(main["stages"]) == {"reconstruct_source", "reconstruct_target", "classify"}
    for stage in main["stages"].values():
        assert stage["steps"] == 96 // 32
        assert stage["images_per_second"] > 0 and stage["pass_seconds"] > 0
    assert 0 < main["fisher_share"] < 1
    assert main["fisher_seconds"] > 0  # GFI1–GFI3 ran in the measured round
    assert main["stages"]["classify"]["fisher_seconds"] == 0
    assert set(saved["cache"]["stages"]) == {"warm", "uncached"}
    assert "| overhead |" in out.with_suffix(".md").read_text()


def _stacked_problem():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    head = nn.Linear(5, 3)
    x = torch.rand(40, 1, 8, 8)
    k, m = 10, 4
    micro_batches = Stacked((torch.randint(40, (k, m)), torch.randn(k, m, 5), torch.rand(k, m, 3)))

    def gaussian(batch):
        index, noise, _ = batch
        return sampled_gaussian_loss(net(x[index]), noise=noise)

    def categorical(batch):
        index, _, uniform = batch
        return sampled_categorical_loss(head(net(x[index])), uniform=uniform)

    return net, head, {"a": gaussian, "b": categorical}, micro_batches


def test_vectorised_fisher_equals_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    net, head, losses, micro_batches = _stacked_problem()
    batched = []
    real_vmap = torch.func.vmap
    monkeypatch.setattr(torch.func, "vmap", lambda *a, **k: batched.append(1) or real_vmap(*a, **k))
    monkeypatch.setattr(estimate_module, "MAX_CHUNK", 4)  # 10 micro-batches: chunks of 4, 4, 2
    params = dict(net.named_parameters())
    kwargs = {"modules": [net, head], "pairs": [("a", "b")]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to the loop
        fast = estimate_fisher(params, losses, micro_batches, **kwargs)
    assert batched, "the vectorised path was not taken"
    slow = estimate_fisher(params, losses, micro_batches, vectorise=False, **kwargs)
    assert fast.count == slow.count == 10
    for loss in losses:
        for name in params:
            torch.testing.assert_close(
                fast.fisher(loss)[name], slow.fisher(loss)[name], rtol=1e-5, atol=1e-12
            )
    rf_fast, rf_slow = relative_fisher(fast, "a", "b"), relative_fisher(slow, "a", "b")
    for name in params:
        torch.testing.assert_close(rf_fast[name], rf_slow[name], atol=1e-5, rtol=0)


def test_vectorised_fisher_falls_back_when_a_loss_cannot_be_batched() -> None:
    net, head, losses, micro_batches = _stacked_problem()

    def data_dependent(batch):  # int(tensor) has no batched meaning
        return losses["a"](batch) * (1 + int(batch[0][0]) * 0)

    params = dict(net.named_parameters())
    with pytest.warns(UserWarning, match="per-micro-batch loop"):
        fallback = estimate_fisher(params, {"a": data_dependent}, micro_batches, modules=[net, head])
    loop_only = estimate_fisher(
        params, {"a": data_dependent}, micro_batches, modules=[net, head], vectorise=False
    )
    for name in params:
        torch.testing.assert_close(fallback.fisher("a")[name], loop_only.fisher("a")[name])


def test_cetl_gfi_is_vectorised_and_equals_the_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """CETL's Fisher losses take pre-drawn noise, so the batched pass applies and agrees with
    the per-micro-batch loop (same micro-batches, same sampled targets, same mask seed)."""
    config = resolve("digits_mn_to_us", method="cetl", profile="smoke", sets=["method.fisher_batches=6"])
    info = DataInfo(num_classes=4, channels=1, image_size=28, sizes={}, notes=())
    torch.manual_seed(7)
    net = NETWORKS.get("lenet")(in_channels=1, image_size=28, num_classes=4)
    source = source_from_network(net, tap="coupling", temperature=4.0, description="test lenet")
    method = build_method(config, info, source=source)
    method.prepare(synthetic_training_data(), SINGLE)
    method._freeze_decoder()

    def gfis(vectorise: bool) -> dict[str, torch.Tensor]:
        fisher = estimate_module.estimate_fisher
        monkeypatch.setattr(
            protection_module, "estimate_fisher", lambda *a, **k: fisher(*a, vectorise=vectorise, **k)
        )
        torch.manual_seed(3)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            method._compute_gfi("dwa1", method.decoder, "target", ("recon_source", "recon_target"))
            method._compute_gfi("dwa3", method.target_net, "labelled", ("recon_target", "classify"))
        penalties = method.protection.penalties
        return {f"{d}/{n}": g.clone() for d in ("dwa1", "dwa3") for n, g in penalties[d].gfi.items()}

    fast, slow = gfis(True), gfis(False)
    assert fast.keys() == slow.keys()
    for name in fast:
        torch.testing.assert_close(fast[name], slow[name], rtol=1e-4, atol=1e-7)


def test_engine_compile_wraps_each_loss_function_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    compiled = []

    def fake_compile(fn, *args, **kwargs):
        compiled.append(fn)
        return fn

    def run(engine: EngineConfig, run_dir: Path):
        method = make_method("cetl_e", source=make_source())
        train_synthetic(method, run_dir, engine=engine)
        return method.target_net.state_dict()

    monkeypatch.setattr(torch, "compile", fake_compile)
    plain = run(EngineConfig(), tmp_path / "plain")
    assert compiled == []
    wrapped = run(EngineConfig(compile=True), tmp_path / "compiled")
    assert len(compiled) == 3  # one per stage's loss function, reused in round 2
    for name, value in plain.items():
        assert torch.equal(value, wrapped[name]), name


def test_feature_cache_key_separates_autocast() -> None:
    source = tiny_source()
    images = torch.rand(4, 3, 8, 8)
    plain = cache_key(source, images)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast = cache_key(source, images)
    assert plain == cache_key(source, images) and autocast != plain


def test_feature_cache_filled_under_autocast_is_float32() -> None:
    """The engine fills the cache under its autocast; the Fisher reads it outside autocast."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = FeatureCache(cache_dir=None).features(tiny_source(), torch.rand(4, 3, 8, 8))
    assert features.dtype == torch.float32


def test_optimizers_are_fused_only_on_cuda() -> None:
    cpu = loop.make_optimizer([nn.Parameter(torch.zeros(3))], OptimizerConfig())
    assert not cpu.defaults.get("fused")
    if torch.cuda.is_available():
        gpu = loop.make_optimizer([nn.Parameter(torch.zeros(3, device="cuda"))], OptimizerConfig())
        assert gpu.defaults["fused"]
