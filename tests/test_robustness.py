"""Robustness (issue 13): bad input fails clearly and early; stopped runs lose nothing.

Each test removes nothing from the code under test: it builds the bad input (a diverging
loss, a truncated file, a killed process, a pickle that runs code) and checks the message
the user sees, the exit code, and what is left on disk.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from cetl.cli import main
from cetl.config import EngineConfig, MethodConfig, OptimizerConfig, TrainConfig
from cetl.data.datasets import load_raw
from cetl.data.root import DataRoot
from cetl.data.synthetic import synthetic_training_data
from cetl.engine import loop
from cetl.engine.checkpoint import load_checkpoint
from cetl.engine.nonfinite import NonFiniteWatch
from cetl.errors import ConfigError, DataError, RunError
from cetl.files import atomic_write_text
from cetl.methods.baselines import SourceOnly
from cetl.networks import NETWORKS
from cetl.source.adapters import source_from_network

SMOKE = ["train", "digits_mn_to_us", "--profile", "smoke"]

# --------------------------------------------------------------------------- numerics


def poison(monkeypatch: pytest.MonkeyPatch, calls) -> None:
    """Make ``source_only``'s classification loss NaN on the given (1-based) calls."""
    real = SourceOnly._classify
    count = {"n": 0}

    def classify(self, batch):
        count["n"] += 1
        terms = real(self, batch)
        return {k: v * float("nan") for k, v in terms.items()} if count["n"] in calls else terms

    monkeypatch.setattr(SourceOnly, "_classify", classify)


def make_method() -> SourceOnly:
    torch.manual_seed(0)
    return SourceOnly(
        MethodConfig(), target_net=NETWORKS.get("lenet")(in_channels=1, image_size=28, num_classes=4)
    )


def train_synthetic(run_dir: Path, *, rounds: int, engine: EngineConfig | None = None):
    """Synthetic data, 96 images in batches of 16: 6 steps a round."""
    method = make_method()
    result = loop.train(
        method,
        synthetic_training_data(),
        train_config=TrainConfig(
            rounds=rounds, batch_size=16, log_every=4, tensorboard=False, progress=False
        ),
        optimizer_config=OptimizerConfig(lr=1e-3),
        seed=0,
        run_dir=run_dir,
        resume=False,
        engine_config=engine,
    )
    return method, result


def stage_records(run_dir: Path) -> list[dict]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "stage"]


def test_non_finite_loss_stops_naming_round_stage_term_and_step_and_keeps_the_last_checkpoint(
    tmp_path, monkeypatch
):
    poison(monkeypatch, {15})  # round 3's third step (log_every=4: not a logging step)
    with pytest.raises(RunError) as error:
        train_synthetic(tmp_path, rounds=4)
    assert str(error.value) == (
        "non-finite loss in round 3, stage 'classify', update 'target_net', step 15: classify=nan, "
        f"loss=nan. The run stopped; {tmp_path / 'last.pt'} still holds round 2, the last finished "
        "one. Lower optimizer.lr, set optimizer.max_grad_norm, or skip such batches with --set "
        "engine.on_nan=skip_batch"
    )
    checkpoint = load_checkpoint(tmp_path / "last.pt")
    assert checkpoint["progress"]["rounds_done"] == 2
    assert all(torch.isfinite(t).all() for t in checkpoint["networks"]["target_net"].values())


def test_on_cuda_the_first_bad_step_is_kept_on_the_device_until_checked():
    # The device type only decides when values are read; CPU tensors stand in for CUDA ones.
    watch = NonFiniteWatch(torch.device("cuda"), advice=lambda: "advice")

    def terms(value: float) -> dict[str, torch.Tensor]:
        return {"classify": torch.tensor(value), "loss": torch.tensor(2 * value)}

    for step, value in enumerate([1.0, float("inf"), float("nan"), 3.0], start=1):
        watch.observe(terms(value), round_index=1, stage="classify", update="target_net", step=step)
    with pytest.raises(RunError) as error:
        watch.check(round_index=1)
    assert str(error.value) == (
        "non-finite loss in round 2, stage 'classify', update 'target_net', step 2: classify=inf, "
        "loss=inf. advice"
    )
    eager = NonFiniteWatch(torch.device("cpu"), advice=lambda: "advice")
    with pytest.raises(RunError, match=r"step 7: classify=nan, loss=nan\. advice$"):
        eager.observe(terms(float("nan")), round_index=0, stage="classify", update="target_net", step=7)


def test_skip_batch_skips_the_optimiser_step_and_counts_it(tmp_path, monkeypatch):
    initial = {k: v.clone() for k, v in make_method().state_dict().items()}
    poison(monkeypatch, set(range(1, 7)))  # every step of the only round
    method, result = train_synthetic(tmp_path / "all", rounds=1, engine=EngineConfig(on_nan="skip_batch"))
    assert [r["skipped_batches"] for r in stage_records(tmp_path / "all")] == [6]
    assert result.term_steps == {}
    for name, value in method.state_dict().items():  # not one step taken: Adam never moved
        assert torch.equal(value, initial[name]), name

    poison(monkeypatch, {2, 9})
    method, result = train_synthetic(tmp_path / "two", rounds=2, engine=EngineConfig(on_nan="skip_batch"))
    assert [r["skipped_batches"] for r in stage_records(tmp_path / "two")] == [1, 1]
    assert result.term_steps == {"classify": 10}
    assert all(torch.isfinite(v).all() for v in method.state_dict().values())
    assert all(torch.isfinite(torch.tensor(r["mean_loss"])) for r in stage_records(tmp_path / "two"))


@pytest.mark.needs_data
def test_cli_exits_non_zero_on_a_non_finite_loss(capsys, data_root, tmp_path, monkeypatch):
    poison(monkeypatch, {4})  # smoke: 3 steps a round, so round 2's first step
    out = tmp_path / "run"
    assert main([*SMOKE, "--data-root", str(data_root.path), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "cetl: error: non-finite loss in round 2, stage 'classify', update 'target_net', step 4" in err
    assert load_checkpoint(out / "last.pt")["progress"]["rounds_done"] == 1
    assert not (out / "summary.json").exists()


# --------------------------------------------------------------------------- interruption


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """One finished smoke run; tests copy it before changing anything in it."""
    root = os.environ.get("CETL_DATA_ROOT")
    if not root or not Path(root).is_dir():
        pytest.skip("needs CETL_DATA_ROOT")
    out = tmp_path_factory.mktemp("finished") / "run"
    # One thread, as the killed child process and the resumed runs use: float sums then agree
    # bit for bit (with OMP_NUM_THREADS unset, as in CI, torch would use every core here).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*SMOKE, "--data-root", root, "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


KILLABLE = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from cetl.engine import loop

    real = loop.save_checkpoint

    def save_then_wait(path, payload):  # after round 1's checkpoint, wait to be killed
        real(path, payload)
        if path.name == loop.LAST_CHECKPOINT:
            Path(os.environ["READY"]).write_text(str(payload["progress"]["rounds_done"]))
            time.sleep(300)

    loop.save_checkpoint = save_then_wait
    from cetl.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.fixture
def one_thread():
    """Runs in this process use one thread, as the killed child process does (bit-equal sums)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def kill_after_first_round(args: list[str], ready: Path) -> int:
    """Run ``cetl`` in a child process and SIGKILL it once round 1 is checkpointed."""
    env = {**os.environ, "READY": str(ready), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-c", KILLABLE, *args], env=env, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 300
    while not ready.exists():
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the run never finished its first round"
        time.sleep(0.1)
    child.kill()
    child.communicate(timeout=60)
    return child.returncode


def same_run(a: Path, b: Path) -> None:
    """Same records (bar timings), same result, same weights in both checkpoints."""
    summaries = [json.loads((d / "summary.json").read_text()) for d in (a, b)]
    for key in ("history", "target_test_accuracy", "val_accuracy", "selected_round", "steps", "rounds"):
        assert summaries[0][key] == summaries[1][key], key

    def records(d: Path) -> list[dict]:
        return [
            {k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (d / "metrics.jsonl").read_text().splitlines()
        ]

    assert records(a) == records(b)
    for name in ("last.pt", "best.pt"):
        left, right = (load_checkpoint(d / name)["networks"]["target_net"] for d in (a, b))
        assert all(torch.equal(left[k], right[k]) for k in left), name


@pytest.mark.needs_data
@pytest.mark.slow
def test_killed_and_terminated_runs_resume_to_the_uninterrupted_result(
    capsys, data_root, finished_run, tmp_path, monkeypatch, one_thread
):
    args = [*SMOKE, "--data-root", str(data_root.path)]  # finished_run's command: 2 rounds

    killed = tmp_path / "killed"
    assert kill_after_first_round([*args, "--out", str(killed)], tmp_path / "ready") == -signal.SIGKILL
    assert (tmp_path / "ready").read_text() == "1" and not (killed / "summary.json").exists()
    with (killed / "metrics.jsonl").open("a") as log:  # as if killed in the middle of a record
        log.write('{"kind": "train", "rou')
    capsys.readouterr()
    assert main([*args, "--out", str(killed), "--resume"]) == 0
    assert f"cetl: resuming '{killed}' after round 1 of 2 (from last.pt)" in capsys.readouterr().err
    same_run(finished_run, killed)

    # SIGTERM (a scheduler's stop) after round 1's checkpoint: handled like Ctrl-C, exit 128 + 15.
    real = loop.save_checkpoint

    def save_then_terminate(path, payload):
        real(path, payload)
        if path.name == loop.LAST_CHECKPOINT:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(loop, "save_checkpoint", save_then_terminate)
    terminated = tmp_path / "terminated"
    assert main([*args, "--out", str(terminated)]) == 143
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"cetl: terminated (received signal SIGTERM). Finished rounds are saved in "
        f"{terminated / 'last.pt'}; continue with 'cetl train {terminated / 'config.yaml'} --out "
        f"{terminated} --resume'."
    )
    assert load_checkpoint(terminated / "last.pt")["progress"]["rounds_done"] == 1
    monkeypatch.setattr(loop, "save_checkpoint", real)
    assert main([*args, "--out", str(terminated), "--resume"]) == 0
    same_run(finished_run, terminated)


def test_sigterm_raises_a_keyboard_interrupt_only_inside_the_block():
    from cetl.engine.signals import Terminated, terminate_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt) as error, terminate_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this
    assert isinstance(error.value, Terminated) and error.value.exit_code == 143
    assert signal.getsignal(signal.SIGTERM) is before


# --------------------------------------------------------------------------- untrusted files


class RunsCode:
    """Unpickling this calls ``os.system``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.mark.needs_data
def test_checkpoints_that_would_run_code_are_refused(capsys, data_root, finished_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    marker = tmp_path / "code-ran"
    for name in ("best.pt", "last.pt"):
        torch.save({"networks": {"target_net": RunsCode(marker)}}, run_dir / name)

    capsys.readouterr()
    assert main(["eval", str(run_dir), "--data-root", str(data_root.path)]) == 1
    assert main(["predict", str(run_dir), str(run_dir / "config.yaml")]) == 1
    resume = [*SMOKE, "--data-root", str(data_root.path), "--out", str(run_dir), "--resume"]
    assert main(resume) == 1
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("cetl: error: checkpoint '") for e in errors)
    assert all("could not be read safely: it holds Python objects other than tensors" in e for e in errors)
    assert not any("weights_only" in e for e in errors)  # torch's advice to turn the protection off
    assert not marker.exists()


# --------------------------------------------------------------------------- the run folder


def test_atomic_writes_get_the_permissions_of_a_plain_write(tmp_path):
    (tmp_path / "plain.json").write_text("{}")
    atomic_write_text(tmp_path / "summary.json", "{}")  # not mkstemp's owner-only 0600
    modes = [(tmp_path / name).stat().st_mode & 0o777 for name in ("plain.json", "summary.json")]
    assert modes[0] == modes[1]


def test_an_unwritable_run_folder_fails_before_any_data_is_read(capsys, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    # The data root does not exist: the folder check must come first to produce this message.
    args = [*SMOKE, "--data-root", str(tmp_path / "no_data"), "--out", str(blocker / "run")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"cetl: error: cannot write run files to '{blocker / 'run'}' (")
    assert "choose a writable folder with --out" in err
    if Path("/proc/self").is_dir():  # a folder that exists but takes no files, even from root
        assert main([*SMOKE, "--data-root", str(tmp_path / "no_data"), "--out", "/proc/self"]) == 1
        assert capsys.readouterr().err.startswith("cetl: error: cannot write run files to '/proc/self' (")
    if os.geteuid() != 0:  # permissions do not stop root
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert main([*SMOKE, "--out", str(locked / "run")]) == 1
        assert "cannot write run files" in capsys.readouterr().err


@pytest.mark.needs_data
def test_a_folder_holding_a_run_needs_resume_or_overwrite(capsys, data_root, finished_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    (run_dir / "eval.json").write_text("{}")
    (run_dir / ".last.pt.x1y2").write_bytes(b"left by a killed process")
    args = [*SMOKE, "--data-root", str(data_root.path), "--out", str(run_dir), "--set", "seed=3"]
    capsys.readouterr()
    assert main(args) == 1
    assert capsys.readouterr().err == (
        f"cetl: error: '{run_dir}' already holds a run. Pass --resume to continue (or re-report) it, "
        "--overwrite to replace it, or choose another folder with --out.\n"
    )
    assert main([*args, "--resume", "--overwrite"]) == 2
    assert "pass one" in capsys.readouterr().err
    assert main([*args, "--overwrite"]) == 0
    assert json.loads((run_dir / "summary.json").read_text())["seed"] == 3
    assert not (run_dir / "eval.json").exists() and not (run_dir / ".last.pt.x1y2").exists()


# --------------------------------------------------------------------------- data


DIGIT_FILES = (
    "MNIST/raw/train-images-idx3-ubyte",
    "MNIST/raw/train-labels-idx1-ubyte",
    "MNIST/raw/t10k-images-idx3-ubyte",
    "MNIST/raw/t10k-labels-idx1-ubyte",
    "USPS/usps.bz2",
    "USPS/usps.t.bz2",
)


def damaged_root(tmp_path: Path, data_root: DataRoot, damage: dict[str, bytes]) -> Path:
    """A data root of links to the real digit files, except damaged copies of the small ones named."""
    root = tmp_path / "root"
    for relative in DIGIT_FILES:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        if relative in damage:
            (root / relative).write_bytes(damage[relative])
        else:
            (root / relative).symlink_to(data_root.path / relative)
    return root


@pytest.mark.needs_data
def test_a_truncated_dataset_file_is_named_and_leaves_no_run_folder(capsys, data_root, tmp_path):
    labels, usps_test = "MNIST/raw/train-labels-idx1-ubyte", "USPS/usps.t.bz2"
    root = damaged_root(
        tmp_path,
        data_root,
        {
            labels: (data_root.path / labels).read_bytes()[:5000],
            usps_test: (data_root.path / usps_test).read_bytes()[:100_000],
        },
    )
    out = tmp_path / "run"
    assert main([*SMOKE, "--data-root", str(root), "--out", str(out)]) == 1  # reads MNIST train first
    err = capsys.readouterr().err
    assert "cetl: error: MNIST files are present" in err and "could not read them (train split:" in err
    assert f"  - {root / labels} (5,000 bytes)" in err
    assert not out.exists()
    with pytest.raises(
        DataError, match=r"(?s)USPS .*test split: Compressed file ended.*usps\.t\.bz2 \(100,000"
    ):
        load_raw("usps", "test", DataRoot(root, "option", download=False))


@pytest.mark.needs_data
def test_a_label_outside_the_classes_is_named_with_its_image(data_root, tmp_path):
    labels = bytearray((data_root.path / "MNIST/raw/t10k-labels-idx1-ubyte").read_bytes())
    labels[8 + 5] = 11  # the idx header is 8 bytes: image 5 gets label 11
    root = damaged_root(tmp_path, data_root, {"MNIST/raw/t10k-labels-idx1-ubyte": bytes(labels)})
    with pytest.raises(DataError) as error:
        load_raw("mnist", "test", DataRoot(root, "option", download=False))
    assert str(error.value).startswith(
        f"MNIST test split in {root} (from --data-root) has 1 label(s) outside 0..9, the first 11 at image 5"
    )


@pytest.mark.needs_data
def test_a_missing_dataset_leaves_no_run_folder(capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "run"
    assert main([*SMOKE, "--data-root", str(tmp_path / "empty"), "--out", str(out)]) == 1
    assert "MNIST (mnist) was not found" in capsys.readouterr().err
    assert not out.exists()


def test_a_source_made_for_other_images_is_a_config_error():
    net = NETWORKS.get("lenet")(in_channels=1, image_size=28, num_classes=10)
    source = source_from_network(net, tap="coupling", temperature=4.0, description="run s28")
    assert source.tap_shape((1, 28, 28))
    with pytest.raises(ConfigError) as error:
        source.tap_shape((1, 32, 32))
    assert str(error.value).startswith(
        "the source S (run s28 @fc1) cannot take this run's images of shape (C, H, W) = (1, 32, 32): "
    )
    assert "source.input_size" in str(error.value)


@pytest.mark.needs_data
def test_cli_source_run_of_another_protocol_fails_before_the_run_folder(
    capsys, data_root, finished_run, tmp_path
):
    out = tmp_path / "run"
    args = [*SMOKE, "--method", "cetl_e", "--data-root", str(data_root.path), "--out", str(out)]
    sets = ["--set", "source.kind=run", "--set", f"source.path={finished_run}", "--set", "data.protocol=adda"]
    assert main([*args, *sets]) == 2
    assert "cetl: error: the source S (run " in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.needs_data
def test_the_resume_hint_works_in_a_shell_without_the_data_root(
    tmp_path, monkeypatch, interrupt_at_evaluation, data_root
):
    run = tmp_path / "run"
    argv = ["train", "digits_mn_to_us", "--method", "source_only", "--profile", "smoke", "--out", str(run)]
    interrupt_at_evaluation(3)  # round 0 saved, round 1 interrupted
    assert main([*argv, "--data-root", str(data_root.path)]) == 130
    assert json.loads((run / "data_root.json").read_text())["path"] == str(data_root.path)
    interrupt_at_evaluation(None)
    monkeypatch.delenv("CETL_DATA_ROOT", raising=False)  # a new shell: only the run knows the data
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-cache"))  # a download would fail here
    assert main(["train", str(run / "config.yaml"), "--out", str(run), "--resume"]) == 0
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data_root_origin"] == "run" and summary["rounds"] == 2
