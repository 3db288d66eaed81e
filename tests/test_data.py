"""Data roots, protocols and the bundled sample; real-file tests need CETL_DATA_ROOT."""

from pathlib import Path

import pytest
import torch

from cetl.build import build_training_data
from cetl.config import DataConfig
from cetl.data.check import check_datasets
from cetl.data.datasets import load_raw
from cetl.data.protocols import PROTOCOLS, to_protocol
from cetl.data.root import DataRoot, resolve_data_root, sample_root
from cetl.data.subsets import seeded_subset
from cetl.errors import DataError


def test_root_resolution_order(monkeypatch, tmp_path):
    monkeypatch.setenv("CETL_DATA_ROOT", str(tmp_path / "env"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_data_root(str(tmp_path / "opt")) == DataRoot(tmp_path / "opt", "option", download=False)
    assert resolve_data_root(None) == DataRoot(tmp_path / "env", "env", download=False)
    monkeypatch.delenv("CETL_DATA_ROOT")
    assert resolve_data_root(None) == DataRoot(tmp_path / "cache" / "cetl" / "data", "cache", download=True)


def test_missing_dataset_names_the_files_and_how_to_get_them(tmp_path):
    root = DataRoot(tmp_path, "option", download=False)
    with pytest.raises(DataError) as error:
        load_raw("svhn", "train", root)
    message = str(error.value)
    assert "SVHN (svhn) was not found in" in message and str(tmp_path) in message
    assert str(tmp_path / "SVHN/train_32x32.mat") in message
    assert "torchvision.datasets.SVHN" in message


def test_absent_root_is_named(tmp_path):
    with pytest.raises(DataError, match=r"does not exist"):
        load_raw("mnist", "test", DataRoot(tmp_path / "nope", "option", download=False))
    with pytest.raises(DataError, match=str(tmp_path / "nope")):
        check_datasets(DataRoot(tmp_path / "nope", "option", download=False), ["mnist"])


def test_offline_download_fails_fast_with_advice(tmp_path, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(DataError, match=r"(?s)could not download USPS .*set --data-root or \$CETL_DATA_ROOT"):
        load_raw("usps", "test", DataRoot(tmp_path / "cache", "cache", download=True))


def test_corrupt_file_is_reported_as_corrupt(tmp_path):
    (tmp_path / "USPS").mkdir()
    for name in ("usps.bz2", "usps.t.bz2"):
        (tmp_path / "USPS" / name).write_bytes(b"not bzip2")
    with pytest.raises(DataError, match=r"could not read them"):
        load_raw("usps", "test", DataRoot(tmp_path, "option", download=False))


def test_protocol_resizes_full_frame_and_keeps_range():
    raw = load_raw("usps", "test", sample_root())
    images = to_protocol(raw.select(torch.arange(16)), PROTOCOLS["drcn"]).x
    assert images.shape == (16, 1, 32, 32) and images.dtype == torch.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    small = to_protocol(load_raw("mnist", "test", sample_root()).select(torch.arange(4)), PROTOCOLS["adda"])
    assert small.x.shape == (4, 1, 28, 28)
    assert torch.equal(small.x, load_raw("mnist", "test", sample_root()).images[:4].float() / 255)


def test_sample_holds_adda_subsets_and_full_test_sets():
    root = sample_root()
    assert len(load_raw("mnist", "train", root)) == 2000
    assert len(load_raw("usps", "train", root)) == 1800
    assert len(load_raw("mnist", "test", root)) == 10000
    assert len(load_raw("usps", "test", root)) == 2007
    with pytest.raises(DataError, match=r"holds only mnist, usps"):
        load_raw("svhn", "test", root)
    assert Path(root.path / "digits.npz").stat().st_size < 5 * 1024 * 1024


@pytest.mark.needs_data
def test_real_counts_and_check(data_root):
    results = {r.name: r for r in check_datasets(data_root, ["mnist", "usps", "svhn"])}
    assert results["mnist"].counts == {"train": 60000, "test": 10000}
    assert results["usps"].counts == {"train": 7291, "test": 2007}
    assert not results["svhn"].ok and "train_32x32.mat" in results["svhn"].problem


@pytest.mark.needs_data
def test_sample_equals_the_adda_draw_from_the_full_data(data_root):
    for name, count in (("mnist", 2000), ("usps", 1800)):
        full = seeded_subset(load_raw(name, "train", data_root), count, seed=0, name=f"{name}/train")
        sample = load_raw(name, "train", sample_root())
        assert torch.equal(full.images, sample.images) and torch.equal(full.labels, sample.labels)


@pytest.mark.needs_data
def test_drcn_and_adda_protocols_on_real_files(data_root):
    drcn, info = build_training_data(
        DataConfig(source="mnist", target="usps", protocol="drcn"), root=data_root, labelled_domain="source"
    )
    assert info.sizes == {
        "labelled_train": 54000,
        "labelled_val": 6000,
        "target_unlabelled": 7291,
        "target_test": 2007,
    }
    assert drcn.labelled.x.shape[1:] == (1, 32, 32) and drcn.target.shape[1:] == (1, 32, 32)
    adda, info = build_training_data(
        DataConfig(source="usps", target="mnist", protocol="adda"), root=data_root, labelled_domain="source"
    )
    assert info.sizes == {
        "labelled_train": 1620,
        "labelled_val": 180,
        "target_unlabelled": 2000,
        "target_test": 10000,
    }
    assert adda.labelled.x.shape[1:] == (1, 28, 28)


@pytest.mark.needs_data
def test_splits_are_seeded_and_disjoint(data_root):
    config = DataConfig(source="usps", target="mnist", protocol="adda")
    first, _ = build_training_data(config, root=data_root, labelled_domain="source")
    again, _ = build_training_data(config, root=data_root, labelled_domain="source")
    assert torch.equal(first.labelled.x, again.labelled.x)
    train_rows = {tuple(row.tolist()) for row in first.labelled.x.flatten(1)[:, ::7]}
    val_rows = {tuple(row.tolist()) for row in first.labelled_val.x.flatten(1)[:, ::7]}
    assert len(train_rows & val_rows) <= 2  # USPS holds a few duplicate images, nothing more
    other, _ = build_training_data(
        DataConfig(source="usps", target="mnist", protocol="adda", split_seed=1),
        root=data_root,
        labelled_domain="source",
    )
    assert not torch.equal(first.labelled.x, other.labelled.x)


@pytest.mark.needs_data
def test_target_only_trains_on_target_labels_and_transductive_uses_test_images(data_root):
    config = DataConfig(source="usps", target="mnist", protocol="adda", transductive=True)
    data, info = build_training_data(config, root=data_root, labelled_domain="target")
    assert info.sizes["labelled_train"] + info.sizes["labelled_val"] == 2000  # MNIST "p" subset
    assert torch.equal(data.target, data.target_test.x)
