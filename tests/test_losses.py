import math

import pytest
import torch

from perceptlib import (
    LossNetwork, PerceptualLoss, distance, feature_reconstruction_loss, gram_matrix, pixel_loss, style_loss,
    total_variation,
)


def test_feature_loss_is_squared_l2_over_chw_batch_mean():
    torch.manual_seed(0)
    a, b = torch.randn(3, 4, 5, 6), torch.randn(3, 4, 5, 6)
    per_image = [((a[i] - b[i]) ** 2).sum() / (4 * 5 * 6) for i in range(3)]
    torch.testing.assert_close(feature_reconstruction_loss(a, b), sum(per_image) / 3)
    l1 = sum((a[i] - b[i]).abs().sum() / 120 for i in range(3)) / 3
    torch.testing.assert_close(distance(a, b, "l1"), l1)
    torch.testing.assert_close(distance(a, b, "l1+l2"), l1 + sum(per_image) / 3)
    torch.testing.assert_close(pixel_loss(a, b), feature_reconstruction_loss(a, b))
    # a (1, C, H, W) target broadcasts over the batch
    torch.testing.assert_close(feature_reconstruction_loss(a, b[:1]),
                               sum(((a[i] - b[0]) ** 2).sum() / 120 for i in range(3)) / 3)


def test_gram_matrix_hand_worked():
    # one image, C=2, H=1, W=2: F = [[1, 2], [3, 4]] -> F F^T = [[5, 11], [11, 25]], / (2*1*2)
    f = torch.tensor([[[[1.0, 2.0]], [[3.0, 4.0]]]])
    torch.testing.assert_close(gram_matrix(f), torch.tensor([[[5.0, 11.0], [11.0, 25.0]]]) / 4)
    g = gram_matrix(torch.randn(2, 3, 4, 5))
    assert g.shape == (2, 3, 3)
    torch.testing.assert_close(g, g.transpose(1, 2))


def test_style_loss_is_weighted_squared_frobenius():
    torch.manual_seed(0)
    p = {"a": torch.randn(2, 3, 3), "b": torch.randn(2, 4, 4)}
    t = {"a": torch.randn(1, 3, 3), "b": torch.randn(1, 4, 4)}
    fro = {k: sum(((p[k][i] - t[k][0]) ** 2).sum() for i in range(2)) / 2 for k in p}
    torch.testing.assert_close(style_loss(p, t), fro["a"] + fro["b"])
    torch.testing.assert_close(style_loss(p, t, {"a": 2.0, "b": 0.5}), 2 * fro["a"] + 0.5 * fro["b"])
    with pytest.raises(KeyError, match="'c'"):
        style_loss(p, t, {"c": 1.0})


def test_total_variation_hand_worked():
    x = torch.tensor([[[[0.0, 1.0], [3.0, 7.0]]]])
    # vertical diffs: 3, 6; horizontal: 1, 4
    torch.testing.assert_close(total_variation(x), torch.tensor(9 + 36 + 1 + 16.0))
    torch.testing.assert_close(total_variation(x, power=1), torch.tensor(3 + 6 + 1 + 4.0))
    assert total_variation(torch.ones(2, 3, 8, 8)) == 0


def test_distance_errors():
    with pytest.raises(ValueError, match="unknown distance 'l3'"):
        distance(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), "l3")
    with pytest.raises(ValueError, match="shape mismatch"):
        distance(torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, 2))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        gram_matrix(torch.zeros(3, 4, 4))


@pytest.fixture
def net() -> LossNetwork:
    torch.manual_seed(0)
    return LossNetwork(("relu1_2", "relu2_2", "relu3_3"), weights=None)


def test_perceptual_loss_zero_for_identical_and_matches_formula(net):
    loss = PerceptualLoss({"relu2_2": 1.0, "relu3_3": 0.5}, network=net)
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    assert loss(x, x).item() == 0
    f, g = net(x), net(y)
    expected = feature_reconstruction_loss(f["relu2_2"], g["relu2_2"]) + 0.5 * feature_reconstruction_loss(
        f["relu3_3"], g["relu3_3"])
    total, terms = loss(x, y, return_terms=True)
    torch.testing.assert_close(total, expected)
    assert set(terms) == {"feat/relu2_2", "feat/relu3_3", "feat", "total"}


def test_gradient_reaches_prediction_only(net):
    style = torch.rand(1, 3, 48, 48)
    loss = PerceptualLoss({"relu2_2": 1.0}, style_layers={"relu1_2": 1.0, "relu3_3": 1.0}, style_weight=10.0,
                          pixel_weight=0.1, tv_weight=1e-3, network=net, style_image=style)
    pred = torch.rand(2, 3, 32, 32, requires_grad=True)
    target = torch.rand(2, 3, 32, 32, requires_grad=True)
    total, terms = loss(pred, target, return_terms=True)
    total.backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert target.grad is None
    assert all(p.grad is None for p in net.parameters())
    weighted = sum(terms[k] for k in ("feat", "style", "pixel", "tv"))
    torch.testing.assert_close(weighted, terms["total"])
    # the style term uses the cached Grams of the style image, whatever its size
    grams = {k: gram_matrix(v) for k, v in net(style).items()}
    pg = {k: gram_matrix(v) for k, v in net(pred.detach()).items()}
    torch.testing.assert_close(terms["style"], 10.0 * style_loss(pg, grams, {"relu1_2": 1.0, "relu3_3": 1.0}))


def test_cached_target_equals_explicit_target(net):
    loss = PerceptualLoss({"relu3_3": 1.0}, pixel_weight=2.0, distance="l1+l2", network=net)
    x, y = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32)
    explicit = loss(x, y)
    loss.set_target(y)
    torch.testing.assert_close(loss(x), explicit)
    loss.set_target(None)
    with pytest.raises(ValueError, match="no target"):
        loss(x)


def test_perceptual_loss_errors(net):
    with pytest.raises(ValueError, match="unknown VGG-16 layer"):
        PerceptualLoss({"relu9_9": 1.0}, weights=None)
    with pytest.raises(ValueError, match="unknown distance"):
        PerceptualLoss(distance="cosine", weights=None)
    with pytest.raises(ValueError, match="no terms"):
        PerceptualLoss({}, weights=None)
    with pytest.raises(ValueError, match="needs"):
        PerceptualLoss({"relu4_3": 1.0}, network=net)
    styled = PerceptualLoss({}, style_layers=["relu1_2"], style_weight=1.0, network=net)
    with pytest.raises(ValueError, match="set_style"):
        styled(torch.rand(1, 3, 16, 16))


def test_pixel_only_loss_runs_no_network():
    loss = PerceptualLoss({}, pixel_weight=1.0, weights="never-loaded-path")
    assert loss.net is None
    x, y = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(loss(x, y), ((x - y) ** 2).mean())


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return -10 * math.log10(((a - b) ** 2).mean().item())


def _invert(net: LossNetwork, layer: str, target: torch.Tensor, steps: int = 200) -> torch.Tensor:
    """Projected L-BFGS on one layer's feature loss, from a grey image with faint noise."""
    from perceptlib import reconstruct

    loss = PerceptualLoss({layer: 1.0}, network=net)
    loss.set_target(target)
    return reconstruct(loss, steps, init="grey", progress=False).image


@pytest.mark.weights
@pytest.mark.slow
def test_inverting_relu2_2_of_a_real_photo_recovers_it(real_weights):
    """200 L-BFGS steps on the relu2_2 loss of the real VGG-16 rebuild a 64x64 photo to > 22 dB
    (the grey start is ~13 dB). A random network's relu2_2 is as invertible in PSNR (notebook 01)."""
    from conftest import load_asset

    target = load_asset("chelsea", 64)
    start = _psnr(torch.full_like(target, 0.5), target)
    out = _invert(LossNetwork(("relu2_2",), weights="torchvision"), "relu2_2", target)
    assert _psnr(out, target) > 22 > start + 5


@pytest.mark.weights
@pytest.mark.slow
def test_trained_relu3_3_recovers_a_photo_far_better_than_random_weights(real_weights):
    """At relu3_3 the trained VGG-16 keeps what a He-initialised random VGG-16 loses (measured at 64²:
    16.2 vs 13.3 dB, SSIM 0.47 vs 0.25, LPIPS 0.16 vs 0.91)."""
    from conftest import load_asset

    from perceptlib.experiments import loss_network
    from perceptlib.metrics import lpips, ssim

    target = load_asset("chelsea", 64)
    out = {w: _invert(loss_network(["relu3_3"], w), "relu3_3", target) for w in ("torchvision", "random-kaiming")}
    trained, rand = out["torchvision"], out["random-kaiming"]
    assert _psnr(trained, target) > _psnr(rand, target) + 1.5
    assert ssim(trained[0], target[0]) > ssim(rand[0], target[0]) + 0.1
    assert lpips(trained, target) < 0.5 * lpips(rand, target)
