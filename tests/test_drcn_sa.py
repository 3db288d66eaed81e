"""Domain-adaptation baselines ``drcn`` (DRCN, ECCV 2016) and ``sa`` (Subspace Alignment, ICCV 2013)."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from cetl.config import TrainConfig
from cetl.data.augment import impulse_noise, random_affine
from cetl.data.synthetic import synthetic_training_data
from cetl.engine import loop
from cetl.errors import ConfigError
from cetl.methods import METHODS
from cetl.methods.drcn import DRCN
from cetl.methods.subspace import SA, SubspaceAlignment, alignment_matrix, pca_basis, ridge_classifier
from cetl.networks import NETWORKS
from cetl.source import source_from_network
from helpers import make_method, make_source, train_synthetic

# --------------------------------------------------------------------------- corruptions


def test_impulse_noise_zeroes_single_pixels_with_the_given_probability():
    x = torch.rand(64, 1, 32, 32) + 0.5  # strictly positive, so a zero means "masked"
    assert impulse_noise(x, 0.0) is x  # off: the very tensor (CETL's cache relies on identity)
    torch.manual_seed(0)
    noisy = impulse_noise(x, 0.3)
    assert noisy.shape == x.shape
    masked = noisy == 0
    assert torch.equal(noisy[~masked], x[~masked])  # kept pixels are untouched
    assert masked.float().mean().item() == pytest.approx(0.3, abs=0.01)
    per_image = masked.flatten(1).float().mean(dim=1)
    assert per_image.min() > 0 and per_image.max() < 1  # a per-pixel mask, not per image


def test_random_affine_without_range_is_the_identity_and_keeps_shapes():
    x = torch.rand(5, 1, 32, 32)
    torch.testing.assert_close(random_affine(x, max_degrees=0, max_shift=0), x, atol=1e-5, rtol=0)
    assert random_affine(x).shape == x.shape
    # A shift of exactly a quarter width moves the content by 8 of 32 pixels.
    torch.manual_seed(0)
    blob = torch.zeros(1, 1, 32, 32)
    blob[..., 12:20, 12:20] = 1
    moved = random_affine(blob.expand(64, -1, -1, -1), max_degrees=0, max_shift=0.25)
    columns = (moved[:, 0].sum(dim=1) > 0.5).float()  # (64, 32): which columns hold the blob
    starts = columns.argmax(dim=1) - 12
    assert starts.abs().max() <= 8 and starts.abs().max() >= 6


# --------------------------------------------------------------------------- DRCN


def test_drcn_stages_weights_and_trained_networks():
    method = make_method("drcn")
    assert isinstance(method, DRCN) and METHODS.get("drcn") is DRCN
    reconstruct, classify = method.stages(0)
    assert (reconstruct.name, reconstruct.streams) == ("reconstruct_target", ("target",))
    assert (classify.name, classify.streams) == ("classify", ("labelled",))
    (r_update,), (c_update,) = reconstruct.updates, classify.updates
    assert dict(r_update.weights) == pytest.approx({"recon_target": 0.3})  # 1 − λ, DRCN's λ = 0.7
    assert dict(c_update.weights) == pytest.approx({"classify": 0.7})
    assert r_update.networks == (method.target_net, method.decoder)
    assert c_update.networks == (method.target_net,)
    other = make_method("drcn", sets=["method.classify_weight=0.4"])
    assert dict(other.stages(3)[0].updates[0].weights) == pytest.approx({"recon_target": 0.6})
    with pytest.raises(ConfigError, match="classify_weight"):
        make_method("drcn", sets=["method.classify_weight=1.5"])


def test_drcn_reconstructs_the_clean_image_from_the_noisy_one():
    method = make_method("drcn", sets=["method.recipe=bare", "method.input_noise=0.5"])
    data = synthetic_training_data()
    batch = loop.Batch(x_tgt=data.target[:8], idx_tgt=torch.arange(8))
    method.train()
    torch.manual_seed(3)
    term = method._reconstruct_target(batch)["recon_target"]
    torch.manual_seed(3)  # the same draws: the noise mask, then lenet's conv dropout
    noisy = data.target[:8] * (torch.rand_like(data.target[:8]) >= 0.5)
    tap = method.target_net.forward_taps(noisy, [method.target_net.coupling_tap])[
        method.target_net.coupling_tap
    ]
    expected = ((method.decoder(tap) - data.target[:8]) ** 2).mean()
    torch.testing.assert_close(term, expected)
    method.eval()  # no corruption outside training
    clean_tap = method.target_net.forward_taps(data.target[:8], ["fc1"])["fc1"]
    torch.testing.assert_close(
        method._reconstruct_target(batch)["recon_target"],
        F.mse_loss(method.decoder(clean_tap), data.target[:8]),
    )


def test_drcn_authors_recipe_augments_and_corrupts_without_dropout_and_uses_adam_3e4():
    data = synthetic_training_data()
    batch = loop.Batch(x_tgt=data.target[:8], idx_tgt=torch.arange(8))
    authors = make_method("drcn", sets=["method.input_noise=0", "method.augment=false"])
    bare = make_method("drcn", sets=["method.recipe=bare"])
    authors.train()
    bare.train()
    # No dropout on the authors' reconstruction path: the same input gives the same loss twice.
    first, second = (authors._reconstruct_target(batch)["recon_target"] for _ in range(2))
    torch.testing.assert_close(first, second)
    assert authors.target_net.training  # dropout is back on for classification
    first, second = (bare._reconstruct_target(batch)["recon_target"] for _ in range(2))
    assert not torch.equal(first, second)  # LeNet's dropout draws differently each time
    defaults = make_method("drcn")
    assert (defaults.input_noise, defaults.augment) == (0.5, True)
    assert (bare.input_noise, bare.augment) == (0.0, False)
    assert all(u.optimizer == {"name": "adam", "lr": 3e-4} for st in defaults.stages(0) for u in st.updates)
    assert all(u.optimizer == {} for st in bare.stages(0) for u in st.updates)


def test_drcn_trains_two_rounds_and_moves_both_networks(tmp_path):
    method = make_method("drcn", sets=["method.input_noise=0.2", "method.augment=true"])
    before = {k: v.clone() for k, v in method.decoder.state_dict().items()}
    result = train_synthetic(method, tmp_path)
    assert result.term_steps == {"recon_target": 4, "classify": 4}
    assert any(not torch.equal(before[k], v) for k, v in method.decoder.state_dict().items())
    assert method.reconstruct(torch.rand(2, 1, 28, 28)).shape == (2, 1, 28, 28)
    assert method.predict(torch.rand(3, 1, 28, 28)).shape == (3, 4)


# --------------------------------------------------------------------------- SA: the algebra


def test_alignment_recovers_a_known_rotation_between_bases():
    basis, _ = torch.linalg.qr(torch.randn(6, 3, generator=torch.Generator().manual_seed(0)))
    angle = 0.3
    rotation = torch.tensor(
        [[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0], [0.0, 0.0, 1.0]]
    )
    torch.testing.assert_close(alignment_matrix(basis, basis @ rotation), rotation, atol=1e-6, rtol=0)
    torch.testing.assert_close(alignment_matrix(basis, basis), torch.eye(3), atol=1e-6, rtol=0)


def test_pca_basis_by_hand():
    points = torch.tensor(
        [[3.0, 0, 0], [-3, 0, 0], [0, -2, 0], [0, 2, 0], [0, 0, 1], [0, 0, -1]]
    )  # centred; scatter = diag(18, 8, 2) / 5
    basis, explained = pca_basis(points, 2)
    torch.testing.assert_close(basis, torch.tensor([[1.0, 0], [0, 1], [0, 0]], dtype=torch.float64))
    assert float(explained) == pytest.approx(26 / 28)
    flipped, _ = pca_basis(-points, 2)  # signs are fixed: the same basis for the mirrored data
    torch.testing.assert_close(flipped, basis)


def test_sa_on_a_two_dimensional_example_by_hand():
    # Source varies along x, target along the diagonal: X_S = e_x, X_T = (1, 1)/√2, M = 1/√2.
    source = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [3.0, 0.0], [-3.0, 0.0]]) + torch.tensor([5.0, 1.0])
    labels = torch.tensor([1, 0, 1, 0])
    target = torch.tensor([[1.0, 1.0], [-1.0, -1.0], [2.0, 2.0], [-2.0, -2.0]])
    sa = SubspaceAlignment(features=2, dims=1, num_classes=2)
    record = sa.fit(source, labels, target, standardize=False, ridge=1e-9)
    r = 1 / math.sqrt(2)
    torch.testing.assert_close(sa.alignment, torch.tensor([[r]]))
    assert record["subspace_similarity"] == pytest.approx(0.5)
    assert record["source_explained_variance"] == pytest.approx(1.0)
    # Source coordinates: (x − 5)·1·M; target coordinates: (x + y)/√2.
    torch.testing.assert_close(
        sa.source_coordinates(torch.tensor([[7.0, 1.0]])).float(), torch.tensor([[2 * r]])
    )
    torch.testing.assert_close(
        sa.target_coordinates(torch.tensor([[1.0, 2.0]])).float(), torch.tensor([[3 * r]])
    )
    # The classifier separates the classes by the sign of the coordinate, on both domains.
    assert sa.source_logits(source).argmax(dim=1).tolist() == labels.tolist()
    assert sa.target_logits(target).argmax(dim=1).tolist() == [1, 0, 1, 0]
    weight, bias = sa.folded_target_head()
    torch.testing.assert_close((target.double() @ weight.T + bias).float(), sa.target_logits(target))


def test_ridge_classifier_by_hand():
    z = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # Least squares: slope Σ(z−z̄)(y−ȳ)/Σ(z−z̄)² = 2/5 for class 1, intercept 0.5 − 0.4·1.5.
    weight, bias = ridge_classifier(z, labels, 2, ridge=1e-12)
    torch.testing.assert_close(weight, torch.tensor([[-0.4, 0.4]], dtype=torch.float64))
    torch.testing.assert_close(bias, torch.tensor([1.1, -0.1], dtype=torch.float64))
    # ridge = 1: α = 1 × mean eigenvalue of Z̃ᵀZ̃ = 5, so the slope is 2/(5 + 5).
    weight, _ = ridge_classifier(z, labels, 2, ridge=1.0)
    torch.testing.assert_close(weight, torch.tensor([[-0.2, 0.2]], dtype=torch.float64))


def test_identical_domains_align_to_the_identity():
    features = torch.randn(200, 10, generator=torch.Generator().manual_seed(1)) * torch.arange(1.0, 11.0)
    sa = SubspaceAlignment(features=10, dims=4, num_classes=3)
    record = sa.fit(features, torch.arange(200) % 3, features, standardize=True, ridge=1e-3)
    torch.testing.assert_close(sa.alignment, torch.eye(4), atol=1e-6, rtol=0)
    assert record["subspace_similarity"] == pytest.approx(1.0)
    torch.testing.assert_close(sa.source_logits(features), sa.target_logits(features), atol=1e-5, rtol=0)


# --------------------------------------------------------------------------- SA: the method


def test_sa_writes_its_classifier_into_t2_and_resumes(tmp_path, interrupt_at_evaluation):
    source = make_source()
    fingerprint = source.fingerprint()
    method = make_method("sa", sets=["method.dims=8"], source=source)
    assert isinstance(method, SA) and not any(p.requires_grad for p in method.target_net.parameters())
    train = TrainConfig(rounds=3, batch_size=16, max_steps_per_epoch=2, tensorboard=False, progress=False)
    result = train_synthetic(method, tmp_path / "a", train=train)
    assert source.fingerprint() == fingerprint
    assert result.selected_round == 0 and result.term_steps == {}
    assert len({h["target_test_accuracy"] for h in result.history}) == 1  # one fit, in round 0
    stage = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    align = next(r for r in stage if r.get("kind") == "stage")
    assert align["stage"] == "align" and 0.0 <= align["source_val_accuracy"] <= 1.0
    # Selection scores source validation through the source projection (predict_labelled).
    assert result.history[0]["val_accuracy"] == pytest.approx(align["source_val_accuracy"])
    # T2 alone is the SA model on target images (what cetl eval, predict and export load).
    x = synthetic_training_data().target[:16]
    method.eval()
    features = method.target_net.forward_taps(x, ["fc1"])["fc1"]
    torch.testing.assert_close(method.predict(x), method.alignment.target_logits(features), atol=1e-4, rtol=0)
    # The encoder is S's, untouched.
    for name, value in source.model.state_dict().items():
        if not name.startswith("logits"):
            assert torch.equal(method.target_net.state_dict()[name], value), name

    # Training ends after the fit (round 0); resuming the saved run restores the fitted SA state
    # from the checkpoint instead of fitting again.
    resumed = make_method("sa", sets=["method.dims=8"], source=source)
    again = train_synthetic(resumed, tmp_path / "a", train=train, resume=True)
    assert again.history == result.history
    for name, value in method.alignment.state_dict().items():
        assert torch.equal(resumed.alignment.state_dict()[name], value), name


def test_sa_errors_name_the_problem():
    with pytest.raises(ConfigError, match=r"method\.dims=600"):
        make_method("sa", sets=["method.dims=600"], source=make_source())  # lenet's fc1 has 500
    torch.manual_seed(0)
    other = NETWORKS.get("drcn")(in_channels=1, image_size=28, num_classes=4)
    wrong = source_from_network(other, tap="coupling", temperature=4.0, description="drcn")
    with pytest.raises(ConfigError, match="reads S's features through T2, so S and T2 need one architecture"):
        make_method("sa", source=wrong)


# --------------------------------------------------------------------------- real data, CLI


@pytest.mark.needs_data
def test_cli_smoke_runs_and_eval_reproduces_the_summary(data_root, tmp_path, capsys, monkeypatch):
    from cetl.cli import main

    monkeypatch.chdir(tmp_path)  # S (the source_only run) is trained under ./runs
    args = ["train", "digits_mn_to_us", "--profile", "smoke", "--data-root", str(data_root.path)]
    for name in ("drcn", "sa"):
        assert main([*args, "--method", name, "--out", name]) == 0
        summary = json.loads((tmp_path / name / "summary.json").read_text())
        assert summary["method"] == name and summary["rounds"] == (1 if name == "sa" else 2)
        capsys.readouterr()
        assert main(["eval", name, "--data-root", str(data_root.path)]) == 0
        report = json.loads(capsys.readouterr().out)
        assert report["target_test_accuracy"] == pytest.approx(summary["target_test_accuracy"])
        if name == "drcn":  # SA's summary scores source images in the source projection; T2 alone cannot
            assert report["val_accuracy"] == pytest.approx(summary["val_accuracy"])
    assert set(json.loads((tmp_path / "drcn" / "summary.json").read_text())["stage_seconds"]) == {
        "reconstruct_target",
        "classify",
    }
    assert "source_accuracy_on_target" in json.loads((tmp_path / "sa" / "summary.json").read_text())
