"""Natural-image data: CIFAR-10 (full or subset), STL-10, CIFAR-100 and their protocols.

Real-file tests read the CIFAR-10 subset under CETL_DATA_ROOT; the STL↔CIFAR mapping runs on
tiny fake files in torchvision's own formats, since no STL-10 copy is available offline.
"""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from cetl.cli import main
from cetl.data import datasets
from cetl.data.check import check_datasets
from cetl.data.datasets import (
    CIFAR10_CLASSES,
    DATASETS,
    STL10_CLASSES,
    SubsetWarning,
    dataset_variant,
    load_raw,
    locate_dataset,
)
from cetl.data.natural import (
    apply_protocol,
    cifar10_s,
    class_map,
    load_protocol,
    protocol_num_classes,
    stl_cifar,
    stratified_subset,
)
from cetl.data.protocols import PROTOCOLS, STL_CIFAR_CLASSES, to_protocol
from cetl.data.root import DataRoot, sample_root
from cetl.errors import ConfigError, DataError

SUBSET_TRAIN_PER_CLASS = [396, 366, 420, 384, 422, 393, 414, 385, 407, 413]  # datasets README


def _root(path: Path) -> DataRoot:
    return DataRoot(path, "option", download=False)


def _write_cifar(folder: Path, splits: dict[str, np.ndarray]) -> None:
    """CIFAR-10 python-version files; each image is filled with 20 × its label, so it shows its class."""
    folder.mkdir(parents=True)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(CIFAR10_CLASSES)}, f)
    for file, labels in splits.items():
        data = np.repeat((labels * 20).astype(np.uint8)[:, None], 3072, axis=1)  # (N, 3072), CHW rows
        with open(folder / file, "wb") as f:
            pickle.dump({"batch_label": file, "labels": labels.tolist(), "data": data}, f)


def _write_stl(root: Path, train: np.ndarray, test: np.ndarray) -> dict[str, np.ndarray]:
    """STL-10 binary files (column-major 96×96 images, labels 1..10); returns the images written."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    written = {}
    for split, labels in (("train", train), ("test", test)):
        images = np.repeat((labels * 20).astype(np.uint8)[:, None, None, None], 3, axis=1)
        images = np.broadcast_to(images, (len(labels), 3, 96, 96)).copy()
        images[:, 0, :8, :4] = 255  # an asymmetric mark, so a transposed read would show
        images.transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")
        (labels + 1).astype(np.uint8).tofile(folder / f"{split}_y.bin")
        written[split] = images
    return written


@pytest.fixture
def genuine_fake_stl(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let torchvision accept fake STL-10 files (their checksums cannot match the release's)."""
    import torchvision.datasets as tvd

    monkeypatch.setattr(tvd.STL10, "train_list", [[name, None] for name, _ in tvd.STL10.train_list])
    monkeypatch.setattr(tvd.STL10, "test_list", [[name, None] for name, _ in tvd.STL10.test_list])


@pytest.fixture
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget which subsets were already announced in this process."""
    monkeypatch.setattr(datasets, "_WARNED_SUBSETS", set())


# --- CIFAR-10 on the real subset ----------------------------------------------------------


@pytest.mark.needs_data
def test_cifar10_subset_is_found_loaded_and_announced_once(data_root, fresh_warnings):
    with pytest.warns(SubsetWarning, match=r"4000 train / 1000 test images \(the official release has 50000"):
        train = load_raw("cifar10", "train", data_root)
    with warnings.catch_warnings():
        warnings.simplefilter("error", SubsetWarning)
        test = load_raw("cifar10", "test", data_root)
        load_raw("cifar10", "train", data_root)
    assert train.images.shape == (4000, 3, 32, 32) and train.images.dtype == torch.uint8
    assert test.images.shape == (1000, 3, 32, 32)
    assert train.labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]  # as the official batches
    assert test.labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert train.images[0, 0, 0, :6].tolist() == [59, 43, 50, 68, 98, 119]  # row-major, red first
    assert torch.bincount(train.labels).tolist() == SUBSET_TRAIN_PER_CLASS
    assert dataset_variant("cifar10", data_root) == "subset"
    assert locate_dataset("cifar10", data_root).path == data_root.path / "subsets/cifar-10-batches-py"
    assert dataset_variant("mnist", data_root) == "full"


@pytest.mark.needs_data
def test_data_check_shows_the_cifar10_subset_and_absent_natural_datasets(capsys, data_root):
    assert main(["data", "check", "--root", str(data_root.path), "cifar10"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[3].split() == ["cifar10", "subset", "4000", "1000"]
    assert any("a subset of CIFAR-10, 4000 / 1000 of the official 50000 / 10000" in line for line in lines)
    results = {r.name: r for r in check_datasets(data_root, ["stl10", "cifar100"])}
    assert not results["stl10"].ok and not results["cifar100"].ok
    assert str(data_root.path / "stl10_binary/train_X.bin") in results["stl10"].problem
    assert str(data_root.path / "cifar-100-python/train") in results["cifar100"].problem


@pytest.mark.needs_data
def test_cifar10_s_on_the_subset_is_every_training_image_and_all_test_images(data_root):
    # The cap of 1,000 per class is the paper's 20% of the full set; the subset has fewer per class.
    train = cifar10_s("train", data_root, split_seed=0)
    assert torch.bincount(train.y).tolist() == SUBSET_TRAIN_PER_CLASS
    assert train.x.shape == (sum(SUBSET_TRAIN_PER_CLASS), 3, 32, 32) and train.x.dtype == torch.float32
    assert torch.equal(train.x, cifar10_s("train", data_root, split_seed=1).x)  # nothing left to draw
    stored = {bytes(row) for row in load_raw("cifar10", "train", data_root).images.flatten(1).numpy()}
    drawn = (train.x * 255).round().to(torch.uint8).flatten(1).numpy()
    assert all(bytes(row) in stored for row in drawn)  # stored images, unresized (already 32×32)
    test = cifar10_s("test", data_root, split_seed=0)
    assert len(test) == 1000 and torch.equal(test.y, load_raw("cifar10", "test", data_root).labels)


@pytest.mark.needs_data
def test_stl_cifar_on_the_real_cifar10_subset_keeps_nine_classes(data_root):
    test = stl_cifar("cifar10", "test", data_root)
    stored = load_raw("cifar10", "test", data_root).labels
    assert len(test) == int((stored != 6).sum()) and test.y.max() == 8
    assert test.x.shape[1:] == (3, 32, 32)


# --- CIFAR-10 copies on fake files --------------------------------------------------------


def test_partial_cifar10_in_the_official_folder_is_a_subset(tmp_path, fresh_warnings):
    labels = np.arange(10)
    _write_cifar(tmp_path / "cifar-10-batches-py", {"data_batch_2": labels, "test_batch": labels[:4]})
    with pytest.warns(SubsetWarning, match=r"10 train / 4 test"):
        raw = load_raw("cifar10", "train", _root(tmp_path))
    assert raw.labels.tolist() == list(range(10)) and raw.images[3].unique().tolist() == [60]
    assert dataset_variant("cifar10", _root(tmp_path)) == "subset"


def test_complete_cifar10_in_the_official_folder_is_checksummed(tmp_path):
    labels = np.arange(10)
    files = {f"data_batch_{i}": labels for i in range(1, 6)} | {"test_batch": labels}
    _write_cifar(tmp_path / "cifar-10-batches-py", files)
    assert dataset_variant("cifar10", _root(tmp_path)) == "full"
    with pytest.raises(DataError, match=r"could not read them"):  # fake files fail torchvision's md5
        load_raw("cifar10", "train", _root(tmp_path))


def test_absent_natural_datasets_name_their_files_and_how_to_get_them(tmp_path):
    expected = {
        "stl10": ("stl10_binary/train_X.bin", "torchvision.datasets.STL10"),
        "cifar100": ("cifar-100-python/train", "torchvision.datasets.CIFAR100"),
        "cifar10": ("cifar-10-batches-py/data_batch_5", "ROOT/subsets/cifar-10-batches-py"),
    }
    for name, (file, how) in expected.items():
        with pytest.raises(DataError) as error:
            load_raw(name, "train", _root(tmp_path))
        assert str(tmp_path / file) in str(error.value) and how in str(error.value)
        with pytest.raises(DataError, match=r"was not found"):
            dataset_variant(name, _root(tmp_path))


# --- STL↔CIFAR ----------------------------------------------------------------------------


def test_the_nine_class_maps_match_class_names():
    stl = class_map(DATASETS.get("stl10"), PROTOCOLS["stl_cifar"])
    cifar = class_map(DATASETS.get("cifar10"), PROTOCOLS["stl_cifar"])
    assert stl.tolist() == [0, 2, 1, 3, 4, 5, 6, -1, 7, 8]
    assert cifar.tolist() == [0, 1, 2, 3, 4, 5, -1, 6, 7, 8]
    aliases = PROTOCOLS["stl_cifar"].class_aliases
    for classes, mapping in ((STL10_CLASSES, stl), (CIFAR10_CLASSES, cifar)):
        kept = {
            aliases.get(name, name): int(new) for name, new in zip(classes, mapping, strict=True) if new >= 0
        }
        assert kept == {name: index for index, name in enumerate(STL_CIFAR_CLASSES)}
    assert protocol_num_classes("stl10", PROTOCOLS["stl_cifar"]) == 9
    assert protocol_num_classes("cifar10", PROTOCOLS["cifar"]) == 10


def test_stl_cifar_maps_fake_stl_and_cifar_into_one_label_space(tmp_path, genuine_fake_stl, fresh_warnings):
    labels = np.arange(10).repeat(2)
    written = _write_stl(tmp_path, labels, labels[::2])
    _write_cifar(tmp_path / "subsets/cifar-10-batches-py", {"data_batch_1": labels, "test_batch": labels})
    raw = load_raw("stl10", "train", _root(tmp_path))
    assert torch.equal(raw.images, torch.from_numpy(written["train"]))  # orientation as written
    assert len(load_raw("stl10", "test", _root(tmp_path))) == 10
    with pytest.warns(SubsetWarning):
        sets = {name: stl_cifar(name, "train", _root(tmp_path)) for name in ("stl10", "cifar10")}
    for name, classes in (("stl10", STL10_CLASSES), ("cifar10", CIFAR10_CLASSES)):
        data = sets[name]
        assert data.x.shape == (18, 3, 32, 32)  # 2 images of each of the 9 shared classes
        stored_label = (data.x[:, 1, 16, 16] * 255).round().long() // 20  # the fill encodes it
        names = [PROTOCOLS["stl_cifar"].class_aliases.get(n, n) for n in (classes[i] for i in stored_label)]
        assert names == [STL_CIFAR_CLASSES[i] for i in data.y]
        assert "monkey" not in names and "frog" not in names
    assert torch.bincount(sets["stl10"].y).tolist() == torch.bincount(sets["cifar10"].y).tolist() == [2] * 9


def test_stl_is_down_sampled_with_antialiasing(tmp_path, genuine_fake_stl):
    _write_stl(tmp_path, np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64))
    folder = tmp_path / "stl10_binary"
    stripes = np.zeros((1, 3, 96, 96), dtype=np.uint8)
    stripes[..., ::2] = 255  # one-pixel stripes: aliasing would keep only one phase of them
    stripes.transpose(0, 1, 3, 2).tofile(folder / "train_X.bin")
    x = load_protocol("stl10", "train", _root(tmp_path), PROTOCOLS["stl_cifar"]).x
    assert x.shape == (1, 3, 32, 32)
    assert torch.allclose(x, torch.full_like(x, 0.5), atol=0.1)  # plain bilinear gives 0s and 1s


def test_a_class_protocol_on_a_dataset_without_those_classes_is_refused():
    with pytest.raises(ConfigError, match=r"MNIST \(mnist\) lacks airplane, automobile"):
        class_map(DATASETS.get("mnist"), PROTOCOLS["stl_cifar"])


# --- stratified fraction and the RGB protocol ---------------------------------------------


def test_stratified_subset_caps_each_class_and_is_seeded():
    labels = torch.tensor([0] * 5 + [1] * 3 + [2] * 1 + [3] * 10)
    raw = datasets.RawSplit(torch.arange(len(labels), dtype=torch.uint8).view(-1, 1, 1, 1), labels)
    capped = stratified_subset(raw, 3, seed=0, name="fake/train")
    assert torch.bincount(capped.labels).tolist() == [3, 3, 1, 3]  # a smaller class is kept whole
    assert capped.images.flatten().tolist() == sorted(capped.images.flatten().tolist())  # stored order
    assert torch.equal(capped.images, stratified_subset(raw, 3, seed=0, name="fake/train").images)
    draws = {
        tuple(stratified_subset(raw, 3, seed=s, name="fake/train").images.flatten().tolist())
        for s in range(5)
    }
    assert len(draws) > 1
    with pytest.raises(ConfigError, match="at least 1"):
        stratified_subset(raw, 0, seed=0, name="fake/train")


def test_cap_applies_to_the_training_split_only():
    raw = datasets.RawSplit(torch.zeros(2500, 3, 32, 32, dtype=torch.uint8), torch.arange(2).repeat(1250))
    protocol = PROTOCOLS["cifar10s"]
    assert len(apply_protocol(raw, "cifar10", "train", protocol, split_seed=0)) == 2000  # 1,000 per class
    assert len(apply_protocol(raw, "cifar10", "test", protocol, split_seed=0)) == 2500


def test_cifar_protocol_keeps_rgb_at_32_and_grey_becomes_three_channels():
    assert (PROTOCOLS["cifar"].image_size, PROTOCOLS["cifar"].channels) == (32, 3)
    assert (PROTOCOLS["drcn"].channels, PROTOCOLS["adda"].image_size) == (1, 28)
    colour = datasets.RawSplit(
        torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8), torch.zeros(2).long()
    )
    assert torch.equal(to_protocol(colour, PROTOCOLS["cifar"]).x, colour.images.float() / 255)
    grey = to_protocol(load_raw("usps", "test", sample_root()).select(torch.arange(2)), PROTOCOLS["cifar"]).x
    assert grey.shape == (2, 3, 32, 32) and torch.equal(grey[:, 0], grey[:, 2])
