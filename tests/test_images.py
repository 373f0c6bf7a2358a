"""Tests of perceptlib.images: loading any format to (3, H, W) float in [0, 1], saving, helpers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from perceptlib.images import find_images, load_image, save_image, to_batch

SKIMAGE_DATA = Path(__import__("skimage").__file__).parent / "data"
ASSETS = Path(__import__("perceptlib").__file__).parent / "assets"


def _rgb(h: int = 6, w: int = 5) -> np.ndarray:
    return (np.arange(h * w * 3).reshape(h, w, 3) * 7 % 256).astype(np.uint8)


def test_png_matches_raw_pixels():
    t = load_image(SKIMAGE_DATA / "astronaut.png")
    raw = np.array(Image.open(SKIMAGE_DATA / "astronaut.png").convert("RGB"))
    assert t.dtype == torch.float32 and t.shape == (3, 512, 512)
    assert torch.equal(t, torch.from_numpy(raw).permute(2, 0, 1).float() / 255)


def test_jpeg_asset_in_range():
    t = load_image(ASSETS / "chelsea.jpg")
    assert t.shape[0] == 3 and max(t.shape[1:]) == 400
    assert 0 <= float(t.min()) and float(t.max()) <= 1 and 0.2 < float(t.mean()) < 0.8


@pytest.mark.parametrize("ext,kw", [(".png", {}), (".bmp", {}), (".tiff", {}), (".webp", {"lossless": True}),
                                    (".ppm", {})])
def test_lossless_formats_roundtrip(tmp_path, ext, kw):
    arr = _rgb()
    p = tmp_path / f"x{ext}"
    Image.fromarray(arr).save(p, **kw)
    assert torch.equal(load_image(p), torch.from_numpy(arr).permute(2, 0, 1).float() / 255)


def test_grey_replicated(tmp_path):
    g = np.array([[0, 51], [204, 255]], np.uint8)
    Image.fromarray(g, "L").save(tmp_path / "g.png")
    t = load_image(tmp_path / "g.png")
    assert t.shape == (3, 2, 2)
    for c in range(3):
        assert torch.allclose(t[c], torch.tensor([[0.0, 0.2], [0.8, 1.0]]))


def test_sixteen_bit_grey(tmp_path):
    g = np.array([[0, 65535], [32768, 13107]], np.uint16)
    Image.fromarray(g).save(tmp_path / "g16.png")
    t = load_image(tmp_path / "g16.png")
    assert torch.allclose(t[1], torch.from_numpy(g.astype(np.float32) / 65535), atol=1e-7)


def test_rgba_composited_on_white(tmp_path):
    a = np.zeros((1, 3, 4), np.uint8)
    a[0, 0] = (255, 0, 0, 255)  # opaque red
    a[0, 1] = (255, 0, 0, 0)    # fully transparent
    a[0, 2] = (0, 0, 0, 102)    # black at alpha 0.4
    Image.fromarray(a, "RGBA").save(tmp_path / "a.png")
    t = load_image(tmp_path / "a.png")
    assert torch.allclose(t[:, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(t[:, 0, 1], torch.ones(3))
    assert torch.allclose(t[:, 0, 2], torch.full((3,), 0.6), atol=1e-6)


def test_la_and_palette_transparency_on_white(tmp_path):
    la = np.array([[[0, 0], [0, 255]]], np.uint8)  # black transparent, black opaque
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    t = load_image(tmp_path / "la.png")
    assert torch.allclose(t[:, 0, 0], torch.ones(3)) and torch.allclose(t[:, 0, 1], torch.zeros(3))

    p = Image.new("P", (2, 1))
    p.putpalette([0, 0, 255, 10, 20, 30] + [0] * 762)
    p.putdata([0, 1])
    p.save(tmp_path / "p.png", transparency=0)
    t = load_image(tmp_path / "p.png")
    assert torch.allclose(t[:, 0, 0], torch.ones(3))
    assert torch.allclose(t[:, 0, 1], torch.tensor([10, 20, 30]) / 255.0)


def test_exif_orientation_applied(tmp_path):
    arr = np.zeros((2, 3, 3), np.uint8)
    arr[0, 0] = 255  # top-left marker
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    Image.fromarray(arr).save(tmp_path / "o.png", exif=exif)
    t = load_image(tmp_path / "o.png")
    assert t.shape == (3, 3, 2)
    assert float(t[0, 0, 1]) == 1.0 and float(t[0].sum()) == 1.0  # marker moved to the top-right


def test_size_longer_side_and_exact(tmp_path):
    Image.fromarray(np.full((40, 80, 3), 128, np.uint8)).save(tmp_path / "r.png")
    t = load_image(tmp_path / "r.png", size=20)
    assert t.shape == (3, 10, 20) and torch.allclose(t, torch.full_like(t, 128 / 255))
    assert load_image(tmp_path / "r.png", size=(7, 9)).shape == (3, 7, 9)
    with pytest.raises(ValueError, match="size must be"):
        load_image(tmp_path / "r.png", size=0)
    with pytest.raises(ValueError, match="size must be"):
        load_image(tmp_path / "r.png", size=(7,))


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.png"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "junk.png").write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match="cannot read image .*junk.png"):
        load_image(tmp_path / "junk.png")
    good = (SKIMAGE_DATA / "coffee.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 3])
    with pytest.raises(ValueError, match="cannot read image .*cut.png"):
        load_image(tmp_path / "cut.png")
    with pytest.raises(ValueError, match="not an image file"):
        load_image(tmp_path)


def test_save_roundtrip_clamp_and_round(tmp_path):
    t = torch.tensor([0.0, 1 / 255, 0.5, 1.0, -0.3, 1.7, 2.4 / 255, 2.6 / 255]).view(1, 1, 8).repeat(3, 1, 1)
    p = save_image(t, tmp_path / "sub" / "s.png")
    back = load_image(p)
    want = torch.tensor([0, 1, 128, 255, 0, 255, 2, 3]) / 255.0
    assert torch.allclose(back[0, 0], want) and torch.equal(back[0], back[2])
    save_image(t[None], tmp_path / "b.png")  # (1, 3, H, W) accepted
    assert torch.equal(load_image(tmp_path / "b.png"), back)


def test_save_jpeg_close(tmp_path):
    t = load_image(SKIMAGE_DATA / "chelsea.png")[:, :64, :64]
    save_image(t, tmp_path / "c.jpg")
    assert (load_image(tmp_path / "c.jpg") - t).abs().mean() < 0.02


def test_save_errors(tmp_path):
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        save_image(torch.zeros(1, 4, 4), tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        save_image(torch.zeros(2, 3, 4, 4), tmp_path / "x.png")
    with pytest.raises(TypeError, match="float"):
        save_image(torch.zeros(3, 4, 4, dtype=torch.uint8), tmp_path / "x.png")
    with pytest.raises(ValueError, match="NaN"):
        save_image(torch.full((3, 4, 4), float("nan")), tmp_path / "x.png")
    with pytest.raises(ValueError, match="unknown image extension"):
        save_image(torch.zeros(3, 4, 4), tmp_path / "x.xyz")
    with pytest.raises(TypeError, match="torch.Tensor"):
        save_image(np.zeros((3, 4, 4)), tmp_path / "x.png")


def test_to_batch():
    x = torch.rand(3, 4, 5)
    assert torch.equal(to_batch(x)[0], x) and to_batch(x).shape == (1, 3, 4, 5)
    y = torch.rand(2, 3, 4, 5)
    assert to_batch(y) is y
    with pytest.raises(ValueError, match=r"\(3, H, W\) or \(N, 3, H, W\)"):
        to_batch(torch.rand(4, 4, 5))
    with pytest.raises(TypeError, match="torch.Tensor"):
        to_batch([1, 2])


def test_find_images(tmp_path):
    for name in ("b.PNG", "a.jpg", "c.webp"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "dir.png").mkdir()
    assert [p.name for p in find_images(tmp_path)] == ["a.jpg", "b.PNG", "c.webp"]
    with pytest.raises(FileNotFoundError, match="missing"):
        find_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        find_images(tmp_path / "empty")
