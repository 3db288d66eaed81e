"""Bring your own data and source, end to end: USPS with 10 labels per class, S from MNIST as ONNX.

What it does (each step is skipped when its output already exists, so a rerun is cheap):

1. **S**: trains a LeNet-size network on MNIST (``cetl train digits_mn_to_us --method
   source_only``) and exports it with ``cetl export --format onnx``: from here on S is just
   an ONNX file, as a network from any other framework would be.
2. **Your data**: writes USPS as PNG files in an ImageFolder (``train/<digit>/``,
   ``test/<digit>/``), the layout your own images would have.
3. **cetl adapt**, twice with the same seed and labels: ``target_only`` (T2 from the 100
   labelled images alone) and ``cetl`` (T2 coupled to the ONNX S; the other training images
   serve unlabelled), with ``--labels-per-class 10``.
4. Prints USPS test accuracy of both.

Run from anywhere (``python examples/adapt_usps/run.py``); MNIST and USPS are read from
``--data-root`` or ``$CETL_DATA_ROOT``. About 5–10 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

LABELS_PER_CLASS = 10
SOURCE_ROUNDS = 4
"""S trains for 4 rounds of 20,000 MNIST images (half the quick profile's 8: about 98% on
held-out MNIST either way), which keeps the example within 10 minutes on 2 CPU cores."""
METHODS = ("target_only", "cetl")


def cetl(*args: str) -> None:
    """Run one ``cetl`` command, showing it first, as a reader would type it."""
    print("$ cetl " + " ".join(args), flush=True)
    subprocess.run([sys.executable, "-m", "cetl", *args], check=True)


def write_usps_folder(folder: Path, data_root: str) -> None:
    """USPS's training and test images as PNG files, one sub-folder per digit."""
    from PIL import Image

    from cetl.data.datasets import load_raw
    from cetl.data.root import resolve_data_root

    root = resolve_data_root(data_root)
    partial = folder.with_name(folder.name + ".partial")  # renamed when complete
    for split in ("train", "test"):
        raw = load_raw("usps", split, root)  # uint8 (N, 1, 16, 16)
        for index, (image, label) in enumerate(zip(raw.images, raw.labels.tolist(), strict=True)):
            path = partial / split / str(label) / f"{index:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[0].numpy()).save(path)
    partial.rename(folder)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path("adapt_usps"), help="work folder (default: ./adapt_usps)"
    )
    parser.add_argument("--data-root", default=os.environ.get("CETL_DATA_ROOT"), help="MNIST and USPS")
    parser.add_argument("--profile", default="quick", help="quick (default) or smoke (a plumbing check)")
    args = parser.parse_args()
    if not args.data_root:
        parser.error("set --data-root or $CETL_DATA_ROOT to a folder holding MNIST and USPS")
    start = time.perf_counter()
    out: Path = args.out
    source_run, onnx_file, usps = out / "mnist_source", out / "mnist_lenet.onnx", out / "usps_png"
    reused = (source_run / "summary.json").exists()

    if not (source_run / "summary.json").exists():
        cetl("train", "digits_mn_to_us", "--method", "source_only", "--profile", args.profile,
             "--set", f"train.rounds={SOURCE_ROUNDS}", "--data-root", args.data_root,
             "--out", str(source_run), "--overwrite")  # fmt: skip
    if not onnx_file.exists():
        cetl("export", str(source_run), "--format", "onnx", "--output", str(onnx_file))
    if not usps.exists():
        print(f"writing USPS as PNG files into {usps}/", flush=True)
        write_usps_folder(usps, args.data_root)

    accuracy = {}
    for method in METHODS:
        run = out / "runs" / method
        if not (run / "target_net.onnx").exists():
            cetl("adapt", "--source", str(onnx_file), "--target-data", str(usps),
                 "--labels-per-class", str(LABELS_PER_CLASS), "--method", method,
                 "--profile", args.profile, "--seed", "0", "--out", str(run), "--overwrite")  # fmt: skip
        accuracy[method] = json.loads((run / "summary.json").read_text())["target_test_accuracy"]

    source = json.loads((source_run / "summary.json").read_text())
    minutes = (time.perf_counter() - start) / 60
    print()
    print(f"USPS test accuracy ({source['data_sizes']['target_test']} images), {LABELS_PER_CLASS} labels "
          f"per class, seed 0, profile {args.profile}:")  # fmt: skip
    print(f"  S alone (MNIST LeNet, no USPS labels): {100 * source['target_test_accuracy']:6.2f}%")
    for method in METHODS:
        gain = accuracy[method] - accuracy[METHODS[0]]
        extra = f"  ({100 * gain:+.2f} over target_only)" if method != METHODS[0] else ""
        print(f"  {method:<38} {100 * accuracy[method]:6.2f}%{extra}")
    print(f"wall time {minutes:.1f} min" + (" (steps of an earlier run reused)" if reused else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
