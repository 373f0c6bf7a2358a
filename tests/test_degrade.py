"""Tests of perceptlib.degrade: MATLAB bicubic imresize, blur, mod_crop, degrade, SRPatchDataset."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from perceptlib.degrade import (SRPatchDataset, bicubic_upsample, cubic, degrade, gaussian_blur, imresize, mod_crop,
                                quantize)
from perceptlib.images import load_image, save_image

SKIMAGE_DATA = Path(__import__("skimage").__file__).parent / "data"


@pytest.fixture(scope="module")
def astro() -> torch.Tensor:
    return load_image(SKIMAGE_DATA / "astronaut.png")[:, 100:292, 150:342].contiguous()  # 192 x 192


def ramp4() -> torch.Tensor:
    return torch.arange(16, dtype=torch.float64).view(1, 4, 4)  # MATLAB: reshape(0:15, 4, 4)'


# ---------------------------------------------------------------------------------------------
# kernel and imresize against hand-computed MATLAB values


def test_cubic_kernel_values():
    x = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, -0.5])
    want = [1.0, 0.8671875, 0.5625, 0.2265625, 0.0, -0.0703125, -0.0625, -0.0234375, 0.0, 0.0, 0.5625]
    assert torch.allclose(cubic(x), torch.tensor(want))


def test_ramp_half_without_antialias_matches_matlab():
    # imresize(reshape(0:15,4,4)', 0.5, 'bicubic', 'Antialiasing', false) in MATLAB/Octave
    out = imresize(ramp4(), 0.5, antialias=False)
    assert torch.allclose(out, torch.tensor([[[2.1875, 4.3125], [10.6875, 12.8125]]], dtype=torch.float64))


def test_ramp_half_with_antialias_hand_computed():
    # Antialiased x0.5 weights are 0.5*cubic(0.5*d) for d = +-0.5, +-1.5, +-2.5, +-3.5:
    # 0.43359375, 0.11328125, -0.03515625, -0.01171875. For output 1 (centre u = 1.5) the taps are
    # input indices -2..5 (1-based), mirrored symmetrically to 3 2 1 1 2 3 4 4, so on the row 0 1 2 3:
    # -0.01171875*2 - 0.03515625*1 + 0.43359375*1 + 0.11328125*2 - 0.03515625*3 - 0.01171875*3 = 0.4609375;
    # output 2 (u = 3.5): taps 1 1 2 3 4 4 3 2 -> 2.5390625. Columns add 4x the same (rows step by 4).
    out = imresize(ramp4(), 0.5)
    r1, r2 = 0.4609375, 2.5390625
    want = torch.tensor([[[4 * r1 + r1, 4 * r1 + r2], [4 * r2 + r1, 4 * r2 + r2]]], dtype=torch.float64)
    assert torch.allclose(out, want, atol=1e-12)
    assert torch.allclose(out, torch.tensor([[[2.3046875, 4.3828125], [10.6171875, 12.6953125]]], dtype=torch.float64))


def test_impulse_response_is_widened_kernel():
    x = torch.zeros(1, 1, 32, dtype=torch.float64)
    x[..., 16] = 1.0
    out = imresize(x, size=(1, 16))[0, 0]
    want = torch.zeros(16, dtype=torch.float64)
    want[6:10] = torch.tensor([-0.01171875, 0.11328125, 0.43359375, -0.03515625])
    assert torch.allclose(out, want, atol=1e-12)
    assert math.isclose(float(out.sum()), 0.5)


def test_upsample_symmetric_border_and_linear_interior():
    x = torch.arange(32, dtype=torch.float64).view(1, 1, 32)
    out = imresize(x, size=(1, 128))[0, 0]
    # first output: centre u = 0.625 (1-based); taps -1 0 1 2 mirror to values 1 0 0 1:
    # cubic(1.625)*1 + cubic(0.625)*0 + cubic(0.375)*0 + cubic(1.375)*1 = -0.0439453125 - 0.0732421875
    assert math.isclose(float(out[0]), -0.1171875, abs_tol=1e-12)
    u = torch.arange(1, 129, dtype=torch.float64) / 4 + 0.375 - 1  # 0-based input coordinate
    assert torch.allclose(out[8:-8], u[8:-8], atol=1e-12)  # cubic convolution reproduces ramps


def test_upsample_first_pixel_x2():
    x = torch.arange(8, dtype=torch.float64).view(1, 1, 8)
    # u = 0.75: taps -1 0 1 2 (1-based) with cubic(1.75), cubic(0.75), cubic(0.25), cubic(1.25),
    # on mirrored values 1 0 0 1 -> -0.0234375 - 0.0703125
    assert math.isclose(float(imresize(x, 2)[0, 0, 0]), -0.09375, abs_tol=1e-12)


@pytest.mark.parametrize("scale,antialias",
                         [(0.25, True), (0.125, True), (0.3, True), (0.25, False), (4, True), (3, True)])
def test_constant_stays_constant(scale, antialias):
    x = torch.full((2, 3, 40, 56), 0.37, dtype=torch.float64)
    out = imresize(x, scale, antialias=antialias)
    assert out.shape == (2, 3, math.ceil(40 * scale), math.ceil(56 * scale))
    assert torch.allclose(out, torch.full_like(out, 0.37), atol=1e-12)


def test_output_sizes_follow_matlab_ceil():
    assert imresize(torch.zeros(1, 10, 10), 0.25).shape == (1, 3, 3)
    assert imresize(torch.zeros(1, 300, 299), 1 / 3).shape == (1, 100, 100)
    assert imresize(torch.zeros(1, 7, 9), size=(3, 20)).shape == (1, 3, 20)


def test_anisotropic_size_is_separable(astro):
    both = imresize(astro, size=(48, 96))
    rows = imresize(imresize(astro, size=(48, 192)), size=(48, 96))
    assert torch.allclose(both, rows, atol=1e-6)


def test_batched_equals_single_and_differentiable(astro):
    b = torch.stack([astro, astro.flip(-1)])
    out = imresize(b, 0.25)
    assert torch.allclose(out[1], imresize(astro.flip(-1), 0.25), atol=1e-7)
    assert torch.allclose(out[0].flip(-1), out[1], atol=1e-6)  # the mapping is mirror-symmetric
    x = astro.clone().requires_grad_(True)
    imresize(x, 0.25).sum().backward()
    # every output pixel's weights sum to 1 -> total gradient equals the number of outputs
    assert math.isclose(float(x.grad.sum()), 3 * 48 * 48, rel_tol=1e-5)


def test_antialias_matters_only_when_shrinking(astro):
    assert not torch.allclose(imresize(astro, 0.25), imresize(astro, 0.25, antialias=False), atol=1e-3)
    assert torch.equal(imresize(astro, 2), imresize(astro, 2, antialias=False))


def test_imresize_errors():
    x = torch.zeros(1, 8, 8)
    with pytest.raises(ValueError, match="exactly one of scale or size"):
        imresize(x, 0.5, size=(4, 4))
    with pytest.raises(ValueError, match="exactly one of scale or size"):
        imresize(x)
    with pytest.raises(ValueError, match="positive number"):
        imresize(x, -2)
    with pytest.raises(ValueError, match="two positive integers"):
        imresize(x, size=(4, 0))
    with pytest.raises(TypeError, match="floating"):
        imresize(torch.zeros(1, 8, 8, dtype=torch.uint8), 0.5)
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(N, C, H, W\)"):
        imresize(torch.zeros(8, 8), 0.5)
    with pytest.raises(TypeError, match="torch.Tensor"):
        imresize(np.zeros((1, 8, 8)), 0.5)


# ---------------------------------------------------------------------------------------------
# blur, mod_crop, degrade


def test_gaussian_blur_matches_scipy(astro):
    from scipy.ndimage import gaussian_filter

    for sigma in (1.0, 2.5):
        ours = gaussian_blur(astro.double(), sigma).numpy()
        ref = gaussian_filter(astro.double().numpy(), (0, sigma, sigma), mode="reflect", truncate=4.0)
        assert np.abs(ours - ref).max() < 1e-12
    c = torch.full((3, 9, 9), 0.6)
    assert torch.allclose(gaussian_blur(c, 1.0), c, atol=1e-6)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        gaussian_blur(c, 0.0)


def test_mod_crop():
    x = torch.arange(13 * 10, dtype=torch.float32).view(1, 13, 10)
    y = mod_crop(x, 4)
    assert y.shape == (1, 12, 8) and torch.equal(y, x[:, :12, :8])
    assert mod_crop(torch.zeros(2, 3, 16, 24), 8).shape == (2, 3, 16, 24)
    with pytest.raises(ValueError, match="positive integer"):
        mod_crop(x, 0)
    with pytest.raises(ValueError, match="smaller than the scale"):
        mod_crop(torch.zeros(1, 3, 3), 4)


def test_degrade_protocols(astro):
    lr = degrade(astro, 4)
    assert lr.shape == (3, 48, 48)
    assert torch.allclose(lr, imresize(astro, 0.25).clamp(0, 1))
    paper = degrade(astro, 4, blur_sigma=1.0)
    assert torch.allclose(paper, imresize(gaussian_blur(astro, 1.0), 0.25).clamp(0, 1))
    # the extra blur removes detail: the paper's LR is smoother than the benchmark LR
    tv = lambda t: (t[..., 1:, :] - t[..., :-1, :]).abs().mean()  # noqa: E731
    assert tv(paper) < tv(lr)
    assert degrade(astro, 8).shape == (3, 24, 24)
    q = degrade(astro, 4, quantize_lr=True)
    assert torch.allclose(q * 255, (q * 255).round(), atol=1e-4) and (q - lr).abs().max() <= 0.5 / 255 + 1e-6
    assert 0 <= float(lr.min()) and float(lr.max()) <= 1


def test_degrade_errors(astro):
    with pytest.raises(ValueError, match="not divisible by scale 4; mod_crop"):
        degrade(astro[:, :190], 4)
    with pytest.raises(ValueError, match="positive integer"):
        degrade(astro, 2.5)
    with pytest.raises(TypeError, match="floating"):
        degrade((astro * 255).to(torch.uint8), 4)


def test_bicubic_upsample_and_quantize(astro):
    lr = degrade(astro, 4)
    sr = bicubic_upsample(lr, 4)
    assert sr.shape == astro.shape and 0 <= float(sr.min()) and float(sr.max()) <= 1
    mse = float(((sr - astro) ** 2).mean())
    assert 1e-4 < mse < 1e-2  # a blurry but faithful reconstruction
    assert torch.equal(quantize(torch.tensor([-1.0, 0.2, 2.0])), torch.tensor([0.0, 51 / 255, 1.0]))


# ---------------------------------------------------------------------------------------------
# SRPatchDataset


def _locate(img: torch.Tensor, patch: torch.Tensor, step: int) -> tuple[int, int]:
    p = patch.shape[-1]
    hits = [(y, x) for y in range(0, img.shape[1] - p + 1, step) for x in range(0, img.shape[2] - p + 1, step)
            if torch.equal(img[:, y:y + p, x:x + p], patch)]
    assert len(hits) == 1
    return hits[0]


@pytest.mark.parametrize("scale,blur", [(4, 1.0), (4, None), (8, 1.0)])
def test_patches_equal_crops_of_whole_image_degradation(astro, scale, blur):
    ds = SRPatchDataset([astro], patch_size=64, scale=scale, blur_sigma=blur, seed=3, length=6, flips=False)
    full_lr = degrade(astro, scale, blur)
    for i in range(len(ds)):
        lr, hr = ds[i]
        assert hr.shape == (3, 64, 64) and lr.shape == (3, 64 // scale, 64 // scale)
        y, x = _locate(astro, hr, scale)
        want = full_lr[:, y // scale:(y + 64) // scale, x // scale:(x + 64) // scale]
        assert torch.allclose(lr, want, atol=1e-6)


def test_patches_seeded():
    img = load_image(SKIMAGE_DATA / "chelsea.png")[:, :200, :200]
    a = SRPatchDataset([img], patch_size=96, seed=7, length=4)
    b = SRPatchDataset([img], patch_size=96, seed=7, length=4)
    c = SRPatchDataset([img], patch_size=96, seed=8, length=4)
    for i in range(4):
        assert all(torch.equal(u, v) for u, v in zip(a[i], b[i]))
    assert not all(torch.equal(a[i][1], c[i][1]) for i in range(4))
    assert not torch.equal(a[0][1], a[1][1])


def test_flips_are_consistent(astro):
    img = astro[:, :64, :64]
    ds = SRPatchDataset([img], patch_size=64, scale=4, length=24, seed=0)
    full = degrade(img, 4, 1.0)
    seen = set()
    for i in range(len(ds)):
        lr, hr = ds[i]
        for dims in ((), (-1,), (-2,), (-1, -2)):
            if torch.equal(hr, img.flip(dims) if dims else img):
                assert torch.allclose(lr, full.flip(dims) if dims else full, atol=1e-6)
                seen.add(dims)
                break
        else:
            pytest.fail("HR patch is not a flip of the image")
    assert len(seen) == 4


def test_dataset_from_paths_and_small_images(tmp_path, astro):
    save_image(astro, tmp_path / "big.png")
    save_image(astro[:, :50, :80], tmp_path / "small.png")
    with pytest.warns(UserWarning, match="1 of 2 images are smaller than the 96x96 patch.*skipped"):
        ds = SRPatchDataset([tmp_path / "big.png", tmp_path / "small.png"], patch_size=96, length=3)
    lr, hr = ds[2]
    assert lr.shape == (3, 24, 24) and hr.dtype == torch.float32
    with pytest.raises(ValueError, match="smaller than the 96x96 patch"):
        SRPatchDataset([tmp_path / "big.png", tmp_path / "small.png"], patch_size=96, on_small="error")
    with pytest.raises(ValueError, match="no usable image left"):
        SRPatchDataset([tmp_path / "small.png"], patch_size=96)
    with pytest.raises(FileNotFoundError, match="gone.png"):
        SRPatchDataset([tmp_path / "gone.png"], patch_size=96)


def test_dataset_errors(astro):
    with pytest.raises(ValueError, match="multiple of scale"):
        SRPatchDataset([astro], patch_size=90, scale=4)
    with pytest.raises(ValueError, match="at least one image"):
        SRPatchDataset([], patch_size=96)
    with pytest.raises(ValueError, match="on_small"):
        SRPatchDataset([astro], patch_size=96, on_small="ignore")
    ds = SRPatchDataset([astro], patch_size=96, length=2)
    with pytest.raises(IndexError, match="out of range"):
        ds[2]
