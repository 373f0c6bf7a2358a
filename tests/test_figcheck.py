"""perceptlib.figcheck on synthetic figures: each problem is reported, and the same figure laid out with
enough room is clean."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from matplotlib.figure import Figure  # noqa: E402

from perceptlib.figcheck import figure_problems, legend_over_data, text_overlaps  # noqa: E402


def _two_titles(width: float) -> Figure:
    fig = Figure(figsize=(width, 2.5), dpi=100)
    axes = fig.subplots(1, 2)
    axes[0].set_title("a rather long title for a narrow axes")
    axes[1].set_title("and another long one on the right")
    for ax in axes:
        ax.set_axis_off()
    return fig


def test_overlapping_titles_are_reported_and_wide_figure_is_clean():
    problems = text_overlaps(_two_titles(3.0))
    assert any("'a rather long title" in p and "'and another long one" in p and "overlap" in p for p in problems)
    assert text_overlaps(_two_titles(12.0)) == []


def test_tolerance_is_in_pixels():
    fig = Figure(figsize=(4, 2), dpi=100)
    fig.text(0.1, 0.5, "left")
    fig.text(0.1, 0.5, "right")  # same place: overlaps by its full height
    assert len(text_overlaps(fig)) == 1
    assert text_overlaps(fig, tol_px=100) == []


def test_crowded_tick_labels_of_one_axis_are_reported():
    fig = Figure(figsize=(2, 2), dpi=100)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1])
    ax.set_xticks(np.linspace(0, 1, 12), [f"label {i}" for i in range(12)])
    problems = text_overlaps(fig)
    assert any(p.startswith("x tick label") and "and x tick label" in p for p in problems)
    ax.set_xticks([0, 1], ["0", "1"])
    assert text_overlaps(fig) == []


def test_rotated_tick_labels_side_by_side_are_clean():
    # their axis-aligned hulls overlap, the rotated boxes do not
    fig = Figure(figsize=(6, 3), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    ax.bar(np.arange(6), np.arange(1, 7))
    ax.set_xticks(np.arange(6), [f"relu{i}_2 long" for i in range(6)], rotation=30, ha="right")
    assert text_overlaps(fig) == []


def _title_next_to_image(title: str) -> Figure:
    # a wide image is drawn lower than the square one beside it, so its title sits beside that image
    fig = Figure(figsize=(4, 2), dpi=100)
    axes = fig.subplots(1, 2)
    axes[0].imshow(np.zeros((8, 32, 3)))
    axes[1].imshow(np.zeros((8, 8, 3)))
    for ax in axes:
        ax.set_axis_off()
    axes[0].set_title(title, loc="left")
    return fig


def test_title_running_into_the_neighbours_image_is_reported():
    problems = text_overlaps(_title_next_to_image("a title much too long for one column of images"))
    assert any("runs" in p and "into the area of axes 1" in p for p in problems), problems
    assert text_overlaps(_title_next_to_image("short")) == []


def test_text_on_its_own_axes_is_not_reported():
    fig = Figure(figsize=(4, 3), dpi=100)
    ax = fig.add_subplot()
    ax.imshow(np.zeros((8, 8, 3)))
    ax.text(3, 3, "inside its own image")
    assert text_overlaps(fig) == []


def _lines(legend_kw: dict) -> Figure:
    fig = Figure(figsize=(5, 3), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    x = np.linspace(0, 1, 50)
    for k in range(6):
        ax.plot(x, np.full_like(x, k / 5), label=f"run {k}")  # horizontal lines fill the whole height
    ax.legend(**legend_kw)
    return fig


def test_legend_over_lines_is_reported_and_outside_is_clean():
    problems = legend_over_data(_lines({"loc": "center"}))
    assert len(problems) == 1 and "legend of axes 0 covers its data" in problems[0] and "'run " in problems[0]
    assert legend_over_data(_lines({"loc": "upper left", "bbox_to_anchor": (1.02, 1)})) == []


def test_legend_over_bars_and_scatter():
    fig = Figure(figsize=(4, 3), dpi=100)
    ax = fig.add_subplot()
    ax.bar([0, 1, 2], [3, 3, 3], width=0.9, label="bars")
    ax.scatter([1], [1.5], label="dot")
    ax.set_xlim(-0.5, 2.5)
    ax.legend(loc="center")
    (problem,) = legend_over_data(fig)
    assert "bars 'bars'" in problem and "points 'dot'" in problem


def test_figure_problems_is_both_and_leaves_the_canvas():
    fig = _lines({"loc": "center"})
    fig.suptitle("x")
    fig.text(0.5, 0.98, "x", ha="center", va="center", fontsize=12)
    canvas = fig.canvas
    problems = figure_problems(fig)
    assert any("suptitle" in p for p in problems) and any("legend of axes 0" in p for p in problems)
    assert fig.canvas is canvas


# --- perceptlib.plots at the sizes the notebooks use ------------------------------------------------

def test_loss_histories_with_many_runs_keep_curves_distinct_and_legend_off_them():
    from perceptlib.plots import plot_loss_histories

    steps = np.arange(1, 201)
    hist = {f"relu{i}_2 [random-kaiming]": list(np.exp(-steps / (10 + 5 * i))) for i in range(14)}
    fig = plot_loss_histories(hist, title="Loss per step / start value: trained vs random weights, conv vs relu")
    styles = {(line.get_color(), line.get_linestyle()) for line in fig.axes[0].lines}
    assert len(styles) == 14
    assert figure_problems(fig) == []


def test_image_grid_wraps_long_titles_to_its_columns():
    import torch

    from perceptlib.plots import plot_images

    images = {f"starry_night optimisation, photo {i}\nloss 1.32e+05": torch.rand(3, 16, 16) for i in range(10)}
    fig = plot_images(images, cols=5, size=2.0)
    assert figure_problems(fig) == []
    titles = [ax.get_title() for ax in fig.axes if ax.get_images()]
    assert [" ".join(t.split()) for t in titles] == [" ".join(k.split()) for k in images]  # same words
    assert all("\n" in t.split("\nloss")[0] for t in titles)  # the long first line is broken
    # a strip of more than 8 panels becomes balanced rows
    fig = plot_images(dict(list(images.items())[:10]), size=1.0)
    assert fig.axes[0].get_gridspec().get_geometry() == (2, 5)


def test_loss_table_legend_is_off_the_bars():
    from perceptlib.plots import plot_loss_table

    rng = np.random.default_rng(0)
    dists = ["shift 1px", "blur σ=1", "blur σ=2", "noise σ=0.05", "noise σ=0.1", "JPEG q=10"]
    layers = ["pixel", "relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3"]
    table = {d: {c: float(rng.uniform(0.1, 1)) for c in layers} for d in dists}
    table["noise σ=0.1"] = {c: 10.0 for c in layers}  # the maxima, full-height bars under any inner legend
    assert figure_problems(plot_loss_table(table, title="torchvision VGG-16: loss / its maximum")) == []
