"""Headless tests of the data/metrics plots (notebook 00b): the figures show what they were given."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from perceptlib.plots import plot_image_sets, plot_metric_bars, plot_sr_panels


def _img(h: int, w: int, value: float) -> torch.Tensor:
    return torch.full((3, h, w), value)


def _shown(ax) -> list[np.ndarray]:
    return [np.asarray(im.get_array()) for im in ax.images]


def test_plot_image_sets_rows_labels_and_images():
    sets = {
        "Set5-like": {"a.png": _img(8, 12, 0.2), "b.png": _img(10, 10, 0.4), "c.png": _img(6, 6, 0.6)},
        "Set14-like": {"d.png": _img(16, 8, 0.8)},
    }
    fig = plot_image_sets(sets, title="sets")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2 * 3
    rows = [fig.axes[0:3], fig.axes[3:6]]
    assert [r[0].get_ylabel() for r in rows] == ["Set5-like", "Set14-like"]
    assert [ax.get_title() for ax in rows[0]] == ["a.png\n12x8", "b.png\n10x10", "c.png\n6x6"]
    assert rows[1][0].get_title() == "d.png\n8x16"
    # each thumbnail holds exactly its image, as (H, W, 3)
    arr = _shown(rows[0][1])
    assert len(arr) == 1 and arr[0].shape == (10, 10, 3) and np.allclose(arr[0], 0.4)
    assert _shown(rows[1][0])[0].shape == (16, 8, 3)
    # padding axes of the short row are empty and hidden
    assert all(not ax.images and not ax.axison for ax in rows[1][1:])
    assert fig._suptitle.get_text() == "sets"


def test_plot_image_sets_rejects_empty():
    with pytest.raises(ValueError, match="at least one"):
        plot_image_sets({})
    with pytest.raises(ValueError, match="at least one"):
        plot_image_sets({"Set5-like": {}})


def test_plot_sr_panels_titles_interpolation_and_box():
    hr, lr = _img(32, 32, 0.5), _img(8, 8, 0.25)
    panels = {"HR (whole)": _img(64, 48, 1.0), "LR x4": lr, "bicubic x4\n25.00 dB / 0.7000": hr}
    fig = plot_sr_panels(panels, cols=2, boxes={"HR (whole)": (4, 8, 32, 16)}, title="degradation")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 4  # 2x2 grid, last one empty
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[:3] == list(panels)
    assert not fig.axes[3].images
    assert _shown(fig.axes[1])[0].shape == (8, 8, 3) and np.allclose(_shown(fig.axes[1])[0], 0.25)
    assert fig.axes[1].images[0].get_interpolation() == "nearest"
    assert fig.axes[0].images[0].get_interpolation() == "antialiased"
    rects = [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
    assert len(rects) == 1
    r = rects[0]
    assert (r.get_x(), r.get_y(), r.get_width(), r.get_height()) == (7.5, 3.5, 16, 32)
    assert not fig.axes[1].patches
    assert fig._suptitle.get_text() == "degradation"


def test_plot_sr_panels_rejects_unknown_box():
    with pytest.raises(ValueError, match="do not exist"):
        plot_sr_panels({"a": _img(4, 4, 0.0)}, boxes={"b": (0, 0, 1, 1)})


def test_plot_metric_bars_heights_labels_and_reference():
    values = {"x4": {"Set5": 28.0, "Set14": 26.0, "BSD": 25.5}, "x8": {"Set5": 24.0, "Set14": 22.5}}
    ref = {"x4": {"Set5": 28.43, "BSD": 25.96}, "x8": {"Set14": 22.37}}
    fig = plot_metric_bars(values, reference=ref, reference_label="paper", title="bicubic")
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert len(bars) == 5  # x8 has no BSD bar
    heights = sorted(round(b.get_height(), 2) for b in bars)
    assert heights == [22.5, 24.0, 25.5, 26.0, 28.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Set5", "Set14", "BSD"]
    # bar value labels
    texts = {t.get_text() for t in ax.texts}
    assert {"28.00", "26.00", "25.50", "24.00", "22.50"} <= texts
    # x4 bars sit left of x8 bars within each group; reference diamonds sit on the matching bars
    x4_set5 = next(b for b in bars if b.get_height() == 28.0)
    x8_set14 = next(b for b in bars if b.get_height() == 22.5)
    (line,) = ax.lines
    assert line.get_marker() == "D" and line.get_label() == "paper"
    pts = sorted(zip(line.get_xdata(), line.get_ydata()), key=lambda p: p[1])
    assert len(pts) == 3
    assert pts[0] == pytest.approx((x8_set14.get_x() + x8_set14.get_width() / 2, 22.37))
    assert pts[2] == pytest.approx((x4_set5.get_x() + x4_set5.get_width() / 2, 28.43))
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["x4", "x8", "paper"]
    assert ax.get_ylabel() == "PSNR (dB)" and ax.get_title() == "bicubic"


def test_plot_metric_bars_without_reference_has_no_markers():
    fig = plot_metric_bars({"only": {"a": 1.0}}, ylabel="SSIM", fmt="{:.3f}")
    (ax,) = fig.axes
    assert not ax.lines
    assert [t.get_text() for t in ax.texts] == ["1.000"]
    assert ax.get_ylabel() == "SSIM"
    with pytest.raises(ValueError, match="at least one series"):
        plot_metric_bars({})
