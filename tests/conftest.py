"""Shared fixtures: the real-data root (skipping cleanly without it) and tiny configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cetl.data.root import ENV_VAR, DataRoot


@pytest.fixture
def data_root() -> DataRoot:
    """The real datasets from ``CETL_DATA_ROOT``; tests using it skip when it is unset."""
    path = os.environ.get(ENV_VAR)
    if not path:
        pytest.skip(f"{ENV_VAR} is not set; real-data tests need MNIST and USPS there")
    if not Path(path).is_dir():
        pytest.skip(f"{ENV_VAR}={path} does not exist")
    return DataRoot(Path(path).absolute(), "env", download=False)


@pytest.fixture(autouse=True)
def _no_ambient_data_root(monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Tests that do not ask for ``data_root`` must not depend on the caller's environment."""
    if "data_root" not in request.fixturenames and "keep_env" not in request.keywords:
        monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture
def interrupt_at_evaluation(monkeypatch: pytest.MonkeyPatch):
    """``interrupt_at_evaluation(n)`` makes the engine's n-th accuracy call raise Ctrl-C.

    The engine evaluates twice per round (validation, target test) after checkpointing the
    previous round, so n = 2r + 1 interrupts round r+1 with r rounds saved. Call it with
    ``None`` to restore normal evaluation.
    """
    from cetl.engine import loop

    real = loop.accuracy

    def arm(n: int | None) -> None:
        if n is None:
            monkeypatch.setattr(loop, "accuracy", real)
            return
        calls = {"n": 0}

        def interrupting(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == n:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(loop, "accuracy", interrupting)

    return arm


CHECKOUT = Path(__file__).resolve().parent.parent
WRITABLE_OUTPUTS = ("runs", "demo", "report")
"""Folders the CLI writes into the current directory by default; the suite must leave them alone."""


BENCHMARK_RUNS = CHECKOUT / "runs" / "benchmarks"
"""Hand-run benchmarks (``benchmarks/``) write there, perhaps while the suite runs beside them."""


def _outputs() -> set[str]:
    return {
        str(p)
        for name in WRITABLE_OUTPUTS
        for p in (CHECKOUT / name).rglob("*")
        if not p.is_relative_to(BENCHMARK_RUNS)
    }


@pytest.fixture(scope="session", autouse=True)
def _checkout_is_left_unchanged():
    """Every test writes under ``tmp_path``: a run the suite left in the checkout would be
    reused by a user's next command (a test-made S, refused folders)."""
    before = _outputs()
    yield
    added = sorted(_outputs() - before)
    assert not added, f"the test suite wrote into the checkout: {added[:5]}"
