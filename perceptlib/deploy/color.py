"""Colour preservation for style transfer: the stylised image's luminance with the photo's colours.

Gatys et al. (2016), "Preserving color in neural artistic style transfer" (arXiv 1606.05897), Sec. 2.2
(luminance-only transfer), applied after a feed-forward network: stylise, convert both images to a
luma/chroma space, keep the luma of the stylised image and the chroma of the photo, convert back.

The space is **full-range BT.601 YCbCr** (JPEG/JFIF): ``Y = 0.299 R + 0.587 G + 0.114 B`` (the luma of
:func:`perceptlib.metrics.rgb_to_y`, whose studio-range variant maps it to [16, 235]; here Y is in
[0, 1]) and ``Cb``, ``Cr`` centred on 0.5, all for RGB in [0, 1].

A luma/chroma pair need not be a colour in the RGB cube (a bright luma with the chroma of a deep
red). :func:`preserve_color` then keeps the luma and the hue and scales the chroma down just enough to
land inside the cube, instead of clipping RGB (which would change the luma too).
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["rgb_to_ycbcr", "ycbcr_to_rgb", "preserve_color"]

#: RGB -> (Y, Cb - 0.5, Cr - 0.5), rows; full-range BT.601 (ITU-T T.871).
_RGB_TO_YCC = ((0.299, 0.587, 0.114),
               (-0.168735892, -0.331264108, 0.5),
               (0.5, -0.418687589, -0.081312411))
#: (Cb - 0.5, Cr - 0.5) -> RGB offsets, columns of the inverse of ``_RGB_TO_YCC`` (Y -> RGB is (1, 1, 1)).
_CHROMA_TO_RGB = ((0.0, 1.402), (-0.344136286, -0.714136286), (1.772, 0.0))


def _check(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor) or x.dim() not in (3, 4) or x.shape[-3] != 3:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a (3, H, W) or (N, 3, H, W) tensor, got {got}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a float tensor in [0, 1], got dtype {x.dtype}")


def _mix(matrix: tuple, x: Tensor) -> Tensor:
    m = torch.tensor(matrix, dtype=x.dtype, device=x.device)
    return torch.einsum("oc,...chw->...ohw", m, x)


def rgb_to_ycbcr(rgb: Tensor) -> Tensor:
    """``(..., 3, H, W)`` RGB in [0, 1] -> full-range BT.601 ``(Y, Cb, Cr)``, each in [0, 1]."""
    _check(rgb, "rgb")
    ycc = _mix(_RGB_TO_YCC, rgb)
    return ycc + torch.tensor((0.0, 0.5, 0.5), dtype=rgb.dtype, device=rgb.device).view(3, 1, 1)


def ycbcr_to_rgb(ycc: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_ycbcr`: ``(..., 3, H, W)`` ``(Y, Cb, Cr)`` -> RGB (not clamped)."""
    _check(ycc, "ycc")
    y, chroma = ycc[..., :1, :, :], ycc[..., 1:, :, :] - 0.5
    return y + _mix(_CHROMA_TO_RGB, chroma)


def preserve_color(stylised: Tensor, photo: Tensor) -> Tensor:
    """Luminance-only style transfer: ``stylised``'s luma Y with ``photo``'s chroma (Cb, Cr).

    ``stylised``, ``photo``: ``(3, H, W)`` or ``(N, 3, H, W)`` float in [0, 1], the same shape.
    Returns the same shape, float32 in [0, 1], whose Y equals ``stylised``'s and whose (Cb, Cr) equal
    ``photo``'s wherever that colour exists in the RGB cube; elsewhere the chroma is scaled towards grey
    by the smallest factor that fits (same Y, same hue).
    """
    _check(stylised, "stylised")
    _check(photo, "photo")
    if stylised.shape != photo.shape:
        raise ValueError(f"stylised and photo must have the same shape, got {tuple(stylised.shape)} "
                         f"and {tuple(photo.shape)}")
    s = stylised.detach().float().clamp(0, 1)
    p = photo.detach().float().to(s.device).clamp(0, 1)
    y = _mix(_RGB_TO_YCC[:1], s)                                    # (..., 1, H, W) in [0, 1]
    offset = _mix(_CHROMA_TO_RGB, _mix(_RGB_TO_YCC[1:], p))         # RGB offset of the photo's chroma; luma 0
    # the largest k <= 1 with 0 <= y + k * offset <= 1 in every channel
    room = torch.where(offset > 0, 1 - y, y)
    k = torch.where(offset.abs() > 1e-12, room / offset.abs().clamp_min(1e-12), torch.ones_like(offset))
    k = k.amin(dim=-3, keepdim=True).clamp(0, 1)
    return (y + k * offset).clamp_(0, 1)
