"""Controlled distortions of an image and the loss each layer assigns to them.

Used by the quickstart to ask which distances notice which changes: a 1-pixel shift is invisible to
a person but large in pixel L2; blur and noise of equal pixel error look very different.
"""
from __future__ import annotations

import io
from collections.abc import Iterable, Mapping

import numpy as np
import torch
from torch import Tensor

from .degrade import gaussian_blur
from .losses import Distance, distance
from .vgg import LossNetwork

__all__ = ["standard_distortions", "grid_patterns", "jpeg", "loss_table"]


def jpeg(x: Tensor, quality: int) -> Tensor:
    """JPEG round trip of ``(N, 3, H, W)`` in [0, 1] at ``quality`` (Pillow)."""
    from PIL import Image

    out = []
    for img in x.detach().clamp(0, 1):
        arr = (img.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
        back = np.asarray(Image.open(buf).convert("RGB"), dtype=np.float32) / 255
        out.append(torch.from_numpy(back).permute(2, 0, 1))
    return torch.stack(out).to(x)


def standard_distortions(x: Tensor, seed: int = 0) -> dict[str, Tensor]:
    """Named distortions of ``x`` ``(N, 3, H, W)`` in [0, 1]: blur, Gaussian noise, JPEG, a shift.

    The shift moves the image one pixel right (edge column repeated); noise is seeded.
    """
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x.shape, generator=g).to(x)
    shifted = torch.cat([x[..., :1], x[..., :-1]], dim=-1)
    return {
        "shift 1px": shifted,
        "blur σ=1": gaussian_blur(x, 1.0),
        "blur σ=2": gaussian_blur(x, 2.0),
        "noise σ=0.05": (x + 0.05 * noise).clamp(0, 1),
        "noise σ=0.1": (x + 0.1 * noise).clamp(0, 1),
        "JPEG q=10": jpeg(x, 10),
    }


def grid_patterns(x: Tensor, amplitude: float = 0.02) -> dict[str, Tensor]:
    """``x`` ``(N, 3, H, W)`` in [0, 1] plus periodic ±``amplitude`` patterns of equal pixel energy
    (``l_pixel = amplitude²`` each): stripes of period 2, 4 and 8 px along the width, and the period-2
    checkerboard, named with their frequencies as :func:`perceptlib.metrics.checkerboard_spectrum` keys them.
    Not clamped, so every pattern adds exactly that energy (keep ``x`` away from 0 and 1 or accept values
    slightly outside [0, 1])."""
    h, w = x.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h, device=x.device), torch.arange(w, device=x.device), indexing="ij")
    sign = lambda m: (m.to(x.dtype) * 2 - 1)  # noqa: E731  (0/1 -> -1/+1)
    patterns = {"stripes, period 2 (1/2, 0)": sign(xx % 2), "stripes, period 4 (1/4, 0)": sign((xx // 2) % 2),
                "stripes, period 8 (1/8, 0)": sign((xx // 4) % 2),
                "checkerboard, period 2 (1/2, 1/2)": sign((xx + yy) % 2)}
    return {k: x + amplitude * p for k, p in patterns.items()}


@torch.no_grad()
def loss_table(net: LossNetwork, x: Tensor, distorted: Mapping[str, Tensor],
               layers: Iterable[str] | None = None, kind: Distance = "l2") -> dict[str, dict[str, float]]:
    """``{distortion: {"pixel": l_pixel, layer: l_feat, ...}}`` between ``x`` and each distorted copy.

    ``x``: ``(N, 3, H, W)`` in [0, 1]; ``layers`` default to every tap of ``net``.
    """
    layers = tuple(layers or net.layers)
    ref = net(x, layers=layers)
    table: dict[str, dict[str, float]] = {}
    for name, y in distorted.items():
        feats = net(y, layers=layers)
        row = {"pixel": float(distance(y, x, kind))}
        row.update({k: float(distance(feats[k], ref[k], kind)) for k in layers})
        table[name] = row
    return table
