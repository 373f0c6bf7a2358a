"""Super-resolution degradations: MATLAB-compatible bicubic resizing, Gaussian blur, HR/LR patches.

Two ways of making a low-resolution (LR) image from a high-resolution (HR) one:

- **benchmark protocol** (``blur_sigma=None``, the default): MATLAB ``imresize(hr, 1/scale)``,
  i.e. bicubic with antialiasing. This is how Set5/Set14/BSD100 LR images are made for the
  published bicubic/SRCNN tables.
- **paper protocol** (``blur_sigma=1.0``): Johnson et al. train on LR images made by "blurring
  with a Gaussian kernel of width sigma = 1.0 and downsampling with bicubic interpolation". The
  bicubic step is the same antialiased MATLAB-style bicubic (the paper does not say which
  bicubic; pass ``antialias=False`` to :func:`degrade` for the plain, non-widened kernel).

Images are tensors ``(C, H, W)`` or ``(N, C, H, W)``, float, normally in ``[0, 1]``. Everything is
differentiable torch code and runs on the tensor's device.
"""
from __future__ import annotations

import math
import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "cubic", "imresize", "gaussian_blur", "mod_crop", "degrade", "bicubic_upsample", "quantize",
    "SRPatchDataset",
]


def cubic(x: Tensor) -> Tensor:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``); support ``[-2, 2]``."""
    ax = x.abs()
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


def _symmetric(idx: Tensor, n: int) -> Tensor:
    """Map integer indices (0-based, any range) into ``[0, n)`` by half-sample symmetric mirroring.

    This is MATLAB's ``padarray(..., 'symmetric')`` (edge pixel repeated: ``... 1 0 | 0 1 ... n-1 |
    n-1 n-2 ...``), applied periodically so it also works when the padding exceeds ``n``.
    """
    m = torch.remainder(idx, 2 * n)
    return torch.where(m < n, m, 2 * n - 1 - m)


@lru_cache(maxsize=64)
def _contributions(in_len: int, out_len: int, scale: float, antialias: bool) -> tuple[Tensor, Tensor]:
    """Indices ``(out_len, P)`` (0-based, mirrored) and weights ``(out_len, P)`` float64, as MATLAB's
    ``contributions()`` in ``imresize.m`` computes them for the bicubic kernel."""
    widen = antialias and scale < 1
    width = 4.0 / scale if widen else 4.0
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # 1-based input coordinate of each output pixel centre
    left = torch.floor(u - width / 2)
    taps = math.ceil(width) + 2
    idx = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    dist = u[:, None] - idx
    w = scale * cubic(dist * scale) if widen else cubic(dist)
    w = w / w.sum(dim=1, keepdim=True)
    keep = (w != 0).any(dim=0)  # MATLAB drops all-zero columns
    w, idx = w[:, keep], idx[:, keep]
    return _symmetric(idx.long() - 1, in_len), w


@lru_cache(maxsize=64)
def _resize_matrix(in_len: int, out_len: int, scale: float, antialias: bool) -> Tensor:
    """Dense ``(out_len, in_len)`` float64 matrix of :func:`_contributions` (mirrored taps summed)."""
    idx, w = _contributions(in_len, out_len, scale, antialias)
    return torch.zeros(out_len, in_len, dtype=torch.float64).scatter_add_(1, idx, w)


def _resize_dim(x: Tensor, dim: int, out_len: int, scale: float, antialias: bool) -> Tensor:
    m = _resize_matrix(x.shape[dim], out_len, float(scale), antialias).to(device=x.device, dtype=x.dtype)
    return m @ x if dim == -2 else x @ m.T


def _check_image(x: Tensor, name: str = "x") -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor in [0, 1], got dtype {x.dtype}")
    if x.ndim not in (3, 4):
        raise ValueError(f"{name} must have shape (C, H, W) or (N, C, H, W), got {tuple(x.shape)}")


def imresize(x: Tensor, scale: float | None = None, size: Sequence[int] | None = None,
             antialias: bool = True) -> Tensor:
    """Bicubic resize exactly as MATLAB's ``imresize(x, scale)`` / ``imresize(x, [h w])`` on doubles.

    Args:
        x: ``(C, H, W)`` or ``(N, C, H, W)`` float tensor (any range; usually ``[0, 1]``).
        scale: factor for both sides; the output is ``ceil(scale * H) x ceil(scale * W)``.
        size: ``(out_h, out_w)`` instead of ``scale``; each side then uses ``out / in`` as its factor.
        antialias: widen the kernel by ``1/scale`` when shrinking (MATLAB's default ``true``).

    Kernel: cubic with a = -0.5; pixel centres aligned (``u = x/s + (1 - 1/s)/2``); borders padded
    symmetrically; each output's weights normalised to sum to 1. The dimension that shrinks most is
    resized first, as in MATLAB. The output is not clamped (bicubic over/undershoots).
    """
    _check_image(x)
    if (scale is None) == (size is None):
        raise ValueError("give exactly one of scale or size")
    h, w = x.shape[-2:]
    if scale is not None:
        if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"scale must be a positive number, got {scale!r}")
        sh = sw = float(scale)
        # ceil as MATLAB does, tolerant of float error such as 300 * (1/3) = 100.00000000000001
        oh, ow = math.ceil(h * sh - 1e-9), math.ceil(w * sw - 1e-9)
    else:
        if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
            raise ValueError(f"size must be two positive integers (out_h, out_w), got {size!r}")
        oh, ow = int(size[0]), int(size[1])
        sh, sw = oh / h, ow / w
    order = [(-2, oh, sh), (-1, ow, sw)]
    if sw < sh:
        order.reverse()
    for dim, n, s in order:
        x = _resize_dim(x, dim, n, s, antialias)
    return x


def _gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> Tensor:
    radius = int(truncate * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: Tensor, sigma: float = 1.0, truncate: float = 4.0) -> Tensor:
    """Separable Gaussian blur of each channel, with symmetric (edge-repeating) borders.

    Same as ``scipy.ndimage.gaussian_filter(x, sigma, mode='reflect', truncate=4.0)`` per channel:
    kernel radius ``int(truncate * sigma + 0.5)`` (4 px for sigma = 1), normalised to sum 1.
    ``x``: ``(C, H, W)`` or ``(N, C, H, W)`` float. ``sigma <= 0`` raises ValueError.
    """
    _check_image(x)
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    k = _gaussian_kernel1d(float(sigma), truncate).to(device=x.device, dtype=x.dtype)
    r = (k.numel() - 1) // 2
    shape, (h, w) = x.shape, x.shape[-2:]
    rows = _symmetric(torch.arange(-r, h + r, device=x.device), h)
    cols = _symmetric(torch.arange(-r, w + r, device=x.device), w)
    xp = x.reshape(-1, 1, h, w).index_select(2, rows).index_select(3, cols)
    out = F.conv2d(F.conv2d(xp, k.view(1, 1, -1, 1)), k.view(1, 1, 1, -1))
    return out.reshape(shape)


def mod_crop(x: Tensor, scale: int) -> Tensor:
    """Crop the bottom/right of ``x`` (``(..., H, W)``) so that H and W are multiples of ``scale``."""
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    h, w = x.shape[-2:]
    scale = int(scale)
    if h < scale or w < scale:
        raise ValueError(f"image of size {h}x{w} is smaller than the scale {scale}")
    return x[..., : h - h % scale, : w - w % scale]


def quantize(x: Tensor) -> Tensor:
    """Clamp to ``[0, 1]`` and round to the 256 levels of an 8-bit image (as saving a PNG does)."""
    return torch.round(x.clamp(0, 1) * 255) / 255


def degrade(hr: Tensor, scale: int, blur_sigma: float | None = None, antialias: bool = True,
            quantize_lr: bool = False) -> Tensor:
    """LR image from an HR image: optional Gaussian blur, then bicubic downsampling by ``scale``.

    Args:
        hr: ``(3, H, W)`` or ``(N, 3, H, W)`` float in ``[0, 1]``; H and W multiples of ``scale``
            (use :func:`mod_crop`), else ValueError.
        scale: integer factor (4 or 8 in the paper).
        blur_sigma: ``None`` = benchmark protocol (no blur); ``1.0`` = the paper's training protocol.
        antialias: MATLAB's antialiasing kernel widening in the bicubic step.
        quantize_lr: round the LR image to 8-bit levels (as when it is stored as PNG).

    Returns ``(3, H/scale, W/scale)`` (or batched) float clamped to ``[0, 1]``.
    """
    _check_image(hr, "hr")
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    h, w = hr.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"HR size {h}x{w} is not divisible by scale {scale}; mod_crop(hr, {scale}) first")
    x = gaussian_blur(hr, blur_sigma) if blur_sigma else hr
    lr = imresize(x, size=(h // scale, w // scale), antialias=antialias).clamp(0, 1)
    return quantize(lr) if quantize_lr else lr


def bicubic_upsample(lr: Tensor, scale: int) -> Tensor:
    """MATLAB bicubic upsampling by ``scale``: ``(..., 3, h, w)`` -> ``(..., 3, h*scale, w*scale)``,
    clamped to ``[0, 1]``: the "Bicubic" baseline of SR tables."""
    _check_image(lr, "lr")
    h, w = lr.shape[-2:]
    return imresize(lr, size=(h * int(scale), w * int(scale))).clamp(0, 1)


class SRPatchDataset(torch.utils.data.Dataset):
    """Random, seeded HR/LR training patch pairs (Johnson et al.: 288x288 HR patches).

    Item ``i`` uses image ``i % len(images)``, a crop position on the ``scale`` grid and random
    horizontal/vertical flips drawn from ``numpy.random.default_rng((seed, i))``: the same seed and
    index always give the same pair. The LR patch is degraded from the HR crop plus a margin of
    context (clamped at the image border), so it equals the matching crop of ``degrade`` applied to
    the whole (mod-cropped) image.

    Args:
        paths_or_images: image files, or ``(3, H, W)`` float tensors in ``[0, 1]``.
        patch_size: HR patch side, a multiple of ``scale``.
        scale, blur_sigma: as in :func:`degrade` (default: paper protocol, sigma 1.0).
        length: number of items (default: number of usable images).
        flips: random horizontal and vertical flips.
        on_small: images smaller than the patch are ``"skip"``-ped with one warning (default) or
            raise ValueError (``"error"``). Sizes of files are read from their headers.

    Items are ``(lr, hr)``: ``(3, p/scale, p/scale)`` and ``(3, p, p)`` float32 in ``[0, 1]``.
    """

    def __init__(self, paths_or_images: Sequence[str | os.PathLike | Tensor], patch_size: int = 288,
                 scale: int = 4, blur_sigma: float | None = 1.0, seed: int = 0, length: int | None = None,
                 flips: bool = True, on_small: str = "skip") -> None:
        if patch_size % scale or patch_size < scale:
            raise ValueError(f"patch_size {patch_size} must be a positive multiple of scale {scale}")
        if on_small not in ("skip", "error"):
            raise ValueError(f"on_small must be 'skip' or 'error', got {on_small!r}")
        items = list(paths_or_images)
        if not items:
            raise ValueError("SRPatchDataset needs at least one image")
        self.patch_size, self.scale, self.blur_sigma = int(patch_size), int(scale), blur_sigma
        self.seed, self.flips = int(seed), bool(flips)
        # context needed around a patch: the Gaussian radius plus the antialiased kernel's half-width
        radius = int(4.0 * blur_sigma + 0.5) if blur_sigma else 0
        self.margin = -(-(radius + 2 * self.scale + 1) // self.scale) * self.scale
        self.items, small = [], []
        for it in items:
            if isinstance(it, Tensor):
                _check_image(it, "image")
                h, w = it.shape[-2:]
            else:
                h, w = _image_size(Path(it))
            if min(h, w) < self.patch_size:
                small.append((it if not isinstance(it, Tensor) else "<tensor>", h, w))
            else:
                self.items.append(it)
        if small:
            first = small[0]
            msg = (f"{len(small)} of {len(items)} images are smaller than the {patch_size}x{patch_size} "
                   f"patch (first: {first[0]}, {first[1]}x{first[2]})")
            if on_small == "error" or not self.items:
                raise ValueError(msg + ("; no usable image left" if not self.items else ""))
            warnings.warn(msg + "; skipped", stacklevel=2)
        self.length = len(self.items) if length is None else int(length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for SRPatchDataset of length {self.length}")
        from .images import load_image

        k = index % len(self.items)
        raw = getattr(self.items, "raw", None)  # an in-memory cache of 8-bit images (perceptlib.sr.ImageCache)
        item = raw(k) if raw is not None else self.items[k]
        img = item if isinstance(item, Tensor) else load_image(item)
        img = mod_crop(img, self.scale)
        rng = np.random.default_rng((self.seed, index))
        s, p, m = self.scale, self.patch_size, self.margin
        h, w = img.shape[-2:]
        y = int(rng.integers(0, (h - p) // s + 1)) * s
        x = int(rng.integers(0, (w - p) // s + 1)) * s
        y0, x0 = max(0, y - m), max(0, x - m)
        y1, x1 = min(h, y + p + m), min(w, x + p + m)
        hr_ctx = img[..., y0:y1, x0:x1]
        hr_ctx = hr_ctx.float() / 255 if hr_ctx.dtype == torch.uint8 else hr_ctx.float()
        img, y, x = hr_ctx, y - y0, x - x0  # from here on, coordinates within the context
        lr_ctx = degrade(hr_ctx, s, self.blur_sigma)
        hr = img[..., y:y + p, x:x + p]
        ly, lx = y // s, x // s
        lr = lr_ctx[..., ly:ly + p // s, lx:lx + p // s]
        if self.flips:
            if rng.random() < 0.5:
                hr, lr = hr.flip(-1), lr.flip(-1)
            if rng.random() < 0.5:
                hr, lr = hr.flip(-2), lr.flip(-2)
        return lr.contiguous(), hr.contiguous()


def _image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image file from its header (EXIF rotation ignored; patches are square)."""
    from PIL import Image

    if not path.is_file():
        raise FileNotFoundError(f"image not found: {path}")
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except Exception as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
