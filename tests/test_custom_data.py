"""The user's own data: ImageFolder trees and .npz files, their loading and their errors.

The images are real MNIST and USPS digits from the bundled sample, written out as PNG files
or arrays, so the tests run without CETL_DATA_ROOT and check pixels bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cetl.cli import main
from cetl.data.check import check_datasets, format_check
from cetl.data.custom import UNLABELLED_LABEL
from cetl.data.datasets import RawSplit, dataset_variant, find_spec, load_raw
from cetl.data.protocols import PROTOCOLS, to_protocol
from cetl.data.root import DataRoot, sample_root
from cetl.errors import ConfigError, DataError

NOWHERE = DataRoot(Path("/nonexistent-cetl-root"), "option", download=False)
"""Own data needs no data root; tests pass one that does not exist to show it."""


def _digits(name: str, split: str, per_class: int) -> RawSplit:
    """``per_class`` real images of each digit, in stored order."""
    raw = load_raw(name, split, sample_root())
    picks = torch.cat([torch.nonzero(raw.labels == d).squeeze(1)[:per_class] for d in range(10)])
    return raw.select(picks.sort().values)


def _save(image: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    array = image.numpy()
    Image.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)).save(path)


def _write_split(root: Path, split: str, raw: RawSplit) -> None:
    for i, (image, label) in enumerate(zip(raw.images, raw.labels, strict=True)):
        _save(image, root / split / f"digit{int(label)}" / f"{i:04d}.png")


def _in_folder_order(raw: RawSplit) -> RawSplit:
    """The order an image folder lists files in: by class folder, then by file name."""
    return raw.select(torch.argsort(raw.labels * len(raw) + torch.arange(len(raw))))


@pytest.fixture(scope="module")
def mnist_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RawSplit, RawSplit]:
    """An image folder of 200 MNIST training and 100 test PNGs, and 30 USPS images unlabelled."""
    root = tmp_path_factory.mktemp("mnist_folder")
    train, test = _digits("mnist", "train", 20), _digits("mnist", "test", 10)
    _write_split(root, "train", train)
    _write_split(root, "test", test)
    for i, image in enumerate(_digits("usps", "test", 3).images):
        _save(image, root / "unlabelled" / f"{i:03d}.png")
    return root, train, test


def _tiny_folder(root: Path, sizes: dict[str, tuple[int, int]], mode: str = "L") -> Path:
    """One image per class folder in train/ and test/; ``sizes`` maps class → (width, height)."""
    for split in ("train", "test"):
        for name, size in sizes.items():
            (root / split / name).mkdir(parents=True, exist_ok=True)
            Image.new(mode, size, color=100 if mode == "L" else (10, 20, 30)).save(
                root / split / name / "a.png"
            )
    return root


def _npz(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)
    return f"npz:{path}"


@pytest.fixture(scope="module")
def usps_arrays() -> dict[str, np.ndarray]:
    train, test = _digits("usps", "train", 10), _digits("usps", "test", 5)
    return {
        "x_train": train.images[:, 0].numpy(),  # (N, H, W) uint8
        "y_train": train.labels.numpy(),
        "x_test": test.images[:, 0].numpy(),
        "y_test": test.labels.numpy(),
    }


# --- ImageFolder --------------------------------------------------------------------------


def test_image_folder_loads_real_digits_bit_for_bit(mnist_folder):
    root, train, test = mnist_folder
    name = f"imagefolder:{root}"
    with pytest.warns(UserWarning, match=r"30 images of size 16x16 rescaled to the most common size 28x28"):
        spec = find_spec(name)
    assert spec.splits == ("train", "test", "unlabelled") and spec.num_classes == 10 and spec.channels == 1
    assert spec.classes == tuple(f"digit{d}" for d in range(10))
    for split, stored in (("train", train), ("test", test)):
        loaded = load_raw(name, split, NOWHERE)
        expected = _in_folder_order(stored)
        assert torch.equal(loaded.images, expected.images) and torch.equal(loaded.labels, expected.labels)
    unlabelled = load_raw(name, "unlabelled", NOWHERE)
    assert unlabelled.images.shape == (30, 1, 28, 28) and set(unlabelled.labels.tolist()) == {
        UNLABELLED_LABEL
    }
    assert dataset_variant(name, NOWHERE) == "full"
    drcn = to_protocol(load_raw(name, "train", NOWHERE), PROTOCOLS["drcn"])
    assert drcn.x.shape == (200, 1, 32, 32) and drcn.x.min() >= 0 and drcn.x.max() <= 1
    assert to_protocol(load_raw(name, "test", NOWHERE), PROTOCOLS["cifar"]).x.shape == (100, 3, 32, 32)


def test_data_check_covers_own_data_without_a_data_root(mnist_folder, tmp_path, capsys, usps_arrays):
    root = mnist_folder[0]
    npz = _npz(tmp_path / "usps.npz", **usps_arrays)
    results = check_datasets(NOWHERE, [f"imagefolder:{root}", npz])
    assert [r.counts for r in results] == [
        {"train": 200, "test": 100, "unlabelled": 30},
        {"train": 100, "test": 50},
    ]
    table = format_check(results, NOWHERE).splitlines()
    assert not any(line.startswith("data root:") for line in table)  # own data: no root involved
    assert table[1].split() == [f"imagefolder:{root}", "ok", "200", "100", "unlabelled", "30"]
    assert main(["data", "check", f"imagefolder:{tmp_path / 'absent'}"]) == 1
    out = capsys.readouterr().out
    assert "MISSING" in out and f"image folder {tmp_path / 'absent'} does not exist" in out


def test_grey_and_colour_images_together_become_rgb(tmp_path):
    root = _tiny_folder(tmp_path, {"a": (8, 8), "b": (8, 8)})
    Image.new("RGBA", (8, 8), color=(200, 0, 0, 128)).save(root / "train" / "b" / "c.png")
    raw = load_raw(f"imagefolder:{root}", "train", NOWHERE)
    assert raw.images.shape == (3, 3, 8, 8)
    assert raw.images[0, :, 0, 0].tolist() == [100, 100, 100]  # grey replicated
    assert raw.images[2, :, 0, 0].tolist() == [200, 0, 0]  # alpha dropped


def test_one_aspect_ratio_is_rescaled_and_validation_split_is_served(tmp_path):
    root = _tiny_folder(tmp_path, {"a": (8, 8), "b": (8, 8), "c": (12, 12)})
    for name in ("a", "b", "c"):
        (root / "val" / name).mkdir(parents=True)
        Image.new("L", (8, 8)).save(root / "val" / name / "v.png")
    with pytest.warns(UserWarning, match=r"2 images of size 12x12 rescaled"):
        spec = find_spec(f"imagefolder:{root}")
    assert spec.splits == ("train", "val", "test")
    assert load_raw(spec.name, "train", NOWHERE).images.shape == (3, 1, 8, 8)
    assert load_raw(spec.name, "val", NOWHERE).labels.tolist() == [0, 1, 2]


# --- npz ----------------------------------------------------------------------------------


def test_npz_loads_every_accepted_layout_and_dtype(tmp_path, usps_arrays):
    x = usps_arrays["x_train"]
    expected = torch.from_numpy(x)[:, None]
    for layout, array in (("nhw", x), ("nhwc", x[..., None]), ("nchw", x[:, None])):
        name = _npz(tmp_path / f"{layout}.npz", **{**usps_arrays, "x_train": array})
        raw = load_raw(name, "train", NOWHERE)
        assert torch.equal(raw.images, expected) and torch.equal(
            raw.labels, torch.from_numpy(usps_arrays["y_train"])
        )
    as_float = _npz(tmp_path / "float.npz", **{**usps_arrays, "x_train": x.astype(np.float32) / 255})
    assert torch.equal(load_raw(as_float, "train", NOWHERE).images, expected)  # k/255 round-trips exactly
    rgb_test = np.repeat(usps_arrays["x_test"][..., None], 3, axis=-1)  # colour test split → all RGB
    mixed = _npz(tmp_path / "mixed.npz", **{**usps_arrays, "x_test": rgb_test})
    assert find_spec(mixed).channels == 3 and load_raw(mixed, "train", NOWHERE).images.shape[1] == 3
    named = _npz(tmp_path / "named.npz", **usps_arrays, classes=np.array([f"c{i}" for i in range(12)]))
    assert find_spec(named).num_classes == 12 and find_spec(named).classes[11] == "c11"
    extra = _npz(
        tmp_path / "extra.npz",
        **usps_arrays,
        x_val=x[:4],
        y_val=usps_arrays["y_train"][:4],
        x_unlabelled=x[:3],
    )
    assert find_spec(extra).splits == ("train", "val", "test", "unlabelled")
    assert (
        len(load_raw(extra, "val", NOWHERE)) == 4
        and load_raw(extra, "unlabelled", NOWHERE).labels.tolist() == [-1] * 3
    )


# --- errors -------------------------------------------------------------------------------


def test_empty_class_folder_is_named(tmp_path):
    root = _tiny_folder(tmp_path, {"cat": (8, 8), "dog": (8, 8)})
    (root / "train" / "dog" / "a.png").unlink()
    (root / "train" / "dog" / "notes.txt").write_text("x")
    with pytest.raises(
        DataError, match=rf"class folder {root / 'train' / 'dog'} has no images \(it holds only notes.txt"
    ):
        find_spec(f"imagefolder:{root}")


def test_mixed_aspect_ratios_name_the_sizes_and_suggest_resizing(tmp_path):
    root = _tiny_folder(tmp_path, {"a": (28, 28), "b": (28, 28), "c": (40, 20)})
    with pytest.raises(DataError) as error:
        find_spec(f"imagefolder:{root}")
    message = str(error.value)
    assert "28x28 (4 images, e.g. " in message and "40x20 (2 images, e.g. train/c/a.png)" in message
    assert "resize" in message


def test_class_folders_must_match_between_train_and_test(tmp_path):
    root = _tiny_folder(tmp_path, {"cat": (8, 8), "dog": (8, 8)})
    (root / "test" / "dog").rename(root / "test" / "dgo")
    with pytest.raises(DataError, match=r"only in train: \['dog'\]; only in test: \['dgo'\]"):
        find_spec(f"imagefolder:{root}")


def test_folder_layout_errors(tmp_path):
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match=r"has no train/ folder; expected PATH/train/<class>"):
        find_spec(f"imagefolder:{tmp_path / 'flat'}")
    loose = tmp_path / "loose" / "train"
    loose.mkdir(parents=True)
    Image.new("L", (8, 8)).save(loose / "a.png")
    with pytest.raises(DataError, match=r"has no class sub-folders"):
        find_spec(f"imagefolder:{tmp_path / 'loose'}")
    broken = _tiny_folder(tmp_path / "broken", {"a": (8, 8)})
    (broken / "train" / "a" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=rf"cannot read image {broken / 'train' / 'a' / 'bad.png'}"):
        find_spec(f"imagefolder:{broken}")
    deep = _tiny_folder(tmp_path / "deep", {"a": (8, 8)})
    Image.new("I;16", (8, 8)).save(deep / "train" / "a" / "b.png")
    with pytest.raises(DataError, match=r"Pillow mode 'I;16'"):
        find_spec(f"imagefolder:{deep}")
    no_val = _tiny_folder(tmp_path / "no_val", {"a": (8, 8)})
    with pytest.raises(DataError, match=r"unknown split 'val' .* Expected layout: PATH/train"):
        load_raw(f"imagefolder:{no_val}", "val", NOWHERE)


def test_npz_missing_arrays_are_named_with_the_expected_names(tmp_path, usps_arrays):
    arrays = {k: v for k, v in usps_arrays.items() if k != "y_test"}
    name = _npz(tmp_path / "a.npz", **arrays, y_tst=usps_arrays["y_test"])
    with pytest.raises(DataError) as error:
        find_spec(name)
    message = str(error.value)
    assert "lacks the arrays y_test; expected x_train, y_train, x_test, y_test" in message
    assert "found x_test, x_train, y_train, y_tst" in message and "did you mean 'y_tst'?" in message
    with pytest.raises(DataError, match=r"does not exist"):
        find_spec(f"npz:{tmp_path / 'none.npz'}")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"cannot read .*junk.npz as an npz file"):
        find_spec(f"npz:{tmp_path / 'junk.npz'}")


def test_npz_length_mismatch_names_both_lengths(tmp_path, usps_arrays):
    name = _npz(tmp_path / "a.npz", **{**usps_arrays, "y_train": usps_arrays["y_train"][:-1]})
    with pytest.raises(DataError, match=r"x_train holds 100 images but y_train holds 99 labels"):
        find_spec(name)


def test_npz_labels_out_of_range_name_the_label_and_the_range(tmp_path, usps_arrays):
    y_test = usps_arrays["y_test"].copy()
    y_test[3] = 10
    name = _npz(tmp_path / "a.npz", **{**usps_arrays, "y_test": y_test})
    with pytest.raises(
        DataError,
        match=r"array y_test, holds label 10 \(at index 3; 1 labels in all\) outside the valid range 0\.\.9",
    ):
        find_spec(name)
    y_train = usps_arrays["y_train"].copy()
    y_train[0] = -2
    with pytest.raises(DataError, match=r"holds label -2 \(at index 0"):
        find_spec(_npz(tmp_path / "b.npz", **{**usps_arrays, "y_train": y_train}))
    named = _npz(tmp_path / "c.npz", **usps_arrays, classes=np.array(["a", "b"]))
    with pytest.raises(
        DataError, match=r"outside the valid range 0\.\.1 \(the 2 names in the classes array\)"
    ):
        find_spec(named)


def test_npz_pixel_and_shape_errors_say_what_is_accepted(tmp_path, usps_arrays):
    cases = {
        "x_train": (
            usps_arrays["x_train"].astype(np.float32),
            r"float pixels in \[0, 25\d\]; expected \[0, 1\]; divide by 255",
        ),
        "x_test": (np.zeros((5, 5, 8, 8), np.uint8), r"shape \(5, 5, 8, 8\); expected \(N, H, W\)"),
        "y_test": (usps_arrays["y_test"].astype(np.float32), r"y_test has shape \(50,\) and dtype float32"),
    }
    for i, (key, (value, pattern)) in enumerate(cases.items()):
        with pytest.raises(DataError, match=pattern):
            find_spec(_npz(tmp_path / f"{i}.npz", **{**usps_arrays, key: value}))
    x_test = np.zeros((50, 20, 10), np.uint8)  # a different aspect ratio from train's 16x16
    with pytest.raises(
        DataError, match=r"16x16 \(100 images, e.g. x_train\), 10x20 \(50 images, e.g. x_test\)"
    ):
        find_spec(_npz(tmp_path / "size.npz", **{**usps_arrays, "x_test": x_test}))


def test_unknown_names_mention_the_own_data_forms():
    with pytest.raises(
        ConfigError, match=r"unknown dataset 'imagefoldr:/x'.*imagefolder:FOLDER or npz:FILE.npz"
    ):
        find_spec("imagefoldr:/x")
