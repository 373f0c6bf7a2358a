"""Pure plotting functions: data in, ``matplotlib.figure.Figure`` out (no model work, no ``show``)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from torch import Tensor

__all__ = ["to_numpy_image", "plot_images", "plot_feature_maps", "plot_loss_table"]


def to_numpy_image(x: Tensor) -> np.ndarray:
    """``(3, H, W)`` or ``(1, 3, H, W)`` tensor in [0, 1] -> ``(H, W, 3)`` numpy array for ``imshow``."""
    if x.dim() == 4:
        x = x[0]
    return x.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def _figure(rows: int, cols: int, size: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size * cols, size * rows), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    return fig, axes


def plot_images(images: Mapping[str, Tensor], cols: int | None = None, size: float = 3.0, title: str | None = None):
    """A grid of labelled images ``{label: (3, H, W) in [0, 1]}``."""
    n = len(images)
    cols = cols or n
    rows = -(-n // cols)
    fig, axes = _figure(rows, cols, size)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, (label, img) in zip(axes.flat, images.items()):
        ax.imshow(to_numpy_image(img))
        ax.set_title(label, fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def plot_feature_maps(feats: Mapping[str, Tensor], pairs: Sequence[tuple[str, str]], channel: str = "max-var",
                      size: float = 2.6):
    """Conv vs relu taps side by side, one row per ``(conv_name, relu_name)`` pair.

    ``feats`` maps tap names to ``(1, C, H, W)``. Each row shows the same channel (the conv tap's
    channel of largest variance) on a shared diverging colour scale, so the relu's lost negative half
    is visible; the titles give the fraction of negative conv values.
    """
    fig, axes = _figure(len(pairs), 2, size)
    h, w = feats[pairs[0][0]].shape[-2:]
    fig.set_size_inches(2 * size + 1.0, len(pairs) * (size * h / w + 0.35))
    for row, (conv, relu) in zip(axes, pairs):
        c = feats[conv][0].float()
        idx = int(c.flatten(1).var(dim=1).argmax()) if channel == "max-var" else int(channel)
        lim = float(c[idx].abs().max()) or 1.0
        for ax, name in zip(row, (conv, relu)):
            m = feats[name][0, idx].float().cpu().numpy()
            im = ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim)
            neg = float((feats[name][0] < 0).float().mean())
            ax.set_title(f"{name} ch {idx}  ({feats[name].shape[-2]}x{feats[name].shape[-1]}, {neg:.0%} < 0)",
                         fontsize=8)
            ax.set_axis_off()
        fig.colorbar(im, ax=row.tolist(), shrink=0.8)
    return fig


def plot_loss_table(table: Mapping[str, Mapping[str, float]], normalise: bool = True, size: float = 4.0,
                    title: str | None = None):
    """Grouped bars: one group per distance (pixel, layers), one bar per distortion.

    With ``normalise`` each distance's values are divided by their maximum, so the *ranking* of
    distortions per distance can be compared across layers of very different scales.
    """
    dists = list(table)
    columns = list(next(iter(table.values())))
    values = np.array([[table[d][c] for c in columns] for d in dists])  # (distortions, columns)
    if normalise:
        values = values / np.maximum(values.max(axis=0, keepdims=True), 1e-12)
    fig, axes = _figure(1, 1, size)
    ax = axes[0, 0]
    fig.set_size_inches(max(size, 1.3 * len(columns)), size)
    width = 0.8 / len(dists)
    x = np.arange(len(columns))
    for i, d in enumerate(dists):
        ax.bar(x + (i - (len(dists) - 1) / 2) * width, values[i], width, label=d)
    ax.set_xticks(x, columns, rotation=30, ha="right")
    ax.set_ylabel("loss / max over distortions" if normalise else "loss")
    ax.legend(fontsize=8, ncols=2)
    if title:
        ax.set_title(title)
    return fig
