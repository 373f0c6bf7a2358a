"""Tiled inference for large images: overlapping tiles, blended with feathered (linear-ramp) seams.

A network's working memory grows with the image it sees: :class:`~perceptlib.nets.SRNet` keeps 64
channels at the output size, :class:`~perceptlib.nets.TransformerNet` 32 at the input size. Run tile by
tile, it needs the memory of one tile whatever the photo's size; the image itself is held once as input
and once as output (float32, 12 bytes per pixel of each).

Tiles are ``tile x tile`` input pixels (the last ones along each axis are widened to reach the edge),
neighbours overlap by at least ``overlap`` pixels and tile starts are multiples of ``align`` (4 for the
style network, whose two stride-2 convolutions make its output depend on the phase of the 4-pixel grid).
In an overlap the two tiles are cross-faded with a linear ramp; the weights of all tiles sum to one at
every pixel. Pixels farther than the network's receptive field (about 57 px for TransformerNet, 15 LR px
for SRNet) from a tile's inner edges come out as without tiles for networks without instance norm.
Instance norm normalises each tile with its own statistics, so tiles differ slightly in contrast and
colour; the ramps hide the seams but the result is not the untiled one.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["tile_spans", "run_tiled"]


def tile_spans(length: int, tile: int, overlap: int, align: int = 1) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of the tiles along an axis of ``length`` pixels: one span when
    ``length <= tile``; else starts every ``tile - overlap`` pixels (rounded down to a multiple of
    ``align``), the last tile ending at ``length`` (``tile`` to ``tile + align - 1`` long)."""
    if tile < 1 or overlap < 0 or align < 1:
        raise ValueError(f"need tile >= 1, overlap >= 0, align >= 1; got {tile}, {overlap}, {align}")
    if 2 * overlap > tile:
        raise ValueError(f"tile overlap {overlap} must be at most half the tile size {tile}")
    if length <= tile:
        return [(0, length)]
    step = max(align, (tile - overlap) // align * align)
    starts = sorted(set(range(0, length - tile, step)) | {(length - tile) // align * align})
    return [(s, s + tile) for s in starts[:-1]] + [(starts[-1], length)]


def _feather(spans: list[tuple[int, int]], scale: int) -> list[Tensor]:
    """Per-span 1-D weights at the output scale: linear ramps over each overlap, normalised to sum to 1."""
    weights = []
    for i, (a, b) in enumerate(spans):
        n = (b - a) * scale
        p = torch.arange(n, dtype=torch.float64) + 0.5
        w = torch.ones(n, dtype=torch.float64)
        if i > 0:
            w = torch.minimum(w, p / ((spans[i - 1][1] - a) * scale))
        if i + 1 < len(spans):
            w = torch.minimum(w, (n - p) / ((b - spans[i + 1][0]) * scale))
        weights.append(w)
    total = torch.zeros(spans[-1][1] * scale, dtype=torch.float64)
    for (a, b), w in zip(spans, weights):
        total[a * scale:b * scale] += w
    return [(w / total[a * scale:b * scale]).float() for (a, b), w in zip(spans, weights)]


def run_tiled(fn: Callable[[Tensor], Tensor], image: Tensor, tile: int, overlap: int, scale: int = 1,
              align: int = 1, progress: bool = False) -> Tensor:
    """``fn`` applied to ``image`` tile by tile, the tiles' outputs blended with feathered seams.

    ``fn``: ``(N, 3, h, w)`` -> ``(N, 3, scale*h, scale*w)`` float (e.g. a network in eval mode).
    ``image``: ``(3, H, W)`` or ``(N, 3, H, W)`` float in [0, 1]. ``tile``, ``overlap``: input pixels
    (``overlap <= tile / 2``); ``tile <= 0`` or an image within one tile runs ``fn`` once. ``align``:
    tile starts are multiples of it. Returns ``(…, 3, scale*H, scale*W)`` float32 on the CPU.
    """
    if not isinstance(image, Tensor) or image.dim() not in (3, 4) or image.shape[-3] != 3:
        got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"image must be a (3, H, W) or (N, 3, H, W) tensor, got {got}")
    batch = image[None] if image.dim() == 3 else image
    h, w = batch.shape[-2:]
    if tile <= 0 or (h <= tile and w <= tile):
        out = fn(batch).float().cpu()
        return out[0] if image.dim() == 3 else out
    rows, cols = tile_spans(h, tile, overlap, align), tile_spans(w, tile, overlap, align)
    wy, wx = _feather(rows, scale), _feather(cols, scale)
    out = torch.zeros(batch.shape[0], 3, h * scale, w * scale)
    from tqdm.auto import tqdm

    with tqdm(total=len(rows) * len(cols), unit="tile", disable=not progress, leave=False) as bar:
        for (y0, y1), ry in zip(rows, wy):
            for (x0, x1), rx in zip(cols, wx):
                part = fn(batch[..., y0:y1, x0:x1].contiguous()).float().cpu()
                want = (batch.shape[0], 3, (y1 - y0) * scale, (x1 - x0) * scale)
                if tuple(part.shape) != want:
                    raise ValueError(f"tile function returned {tuple(part.shape)} for a "
                                     f"{y1 - y0}x{x1 - x0} tile, expected {want} (scale {scale})")
                out[..., y0 * scale:y1 * scale, x0 * scale:x1 * scale].addcmul_(part, ry[:, None] * rx[None, :])
                bar.update()
    return out[0] if image.dim() == 3 else out
