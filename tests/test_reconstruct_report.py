"""reconstruct_report: loading, plotting and tabulating a (tiny, synthetic) Fig. 3 variants folder, headless."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from perceptlib.images import save_image
from perceptlib.reconstruct_report import (
    fig3_sweep_table, fig3_variants_table, load_fig3_variants, plot_fig3_curves, plot_fig3_variants,
)

SIZE = 16


def _run(name, layer, weights, psnr, tv_share=0.0, tv_weight=0.0, tau=0.0):
    return {"name": name, "png": f"{name}.png", "layer": layer, "weights": weights, "psnr": psnr, "ssim": psnr / 100,
            "lpips": None if tv_share else 0.5, "final_loss": 2.0, "tv_share": tv_share, "tv_weight": tv_weight,
            "tv_tau": tau, "start_loss": 8.0, "evaluations": 25, "iterations": 21, "flattening_last_25pct": 0.0123,
            "curve_every_10": [6.0, 4.0, 2.0], "seconds": 3.2, "precision": "bf16"}


@pytest.fixture
def results(tmp_path):
    runs = [_run("a_relu2_2", "relu2_2", "torchvision", 21.5), _run("a_relu4_3", "relu4_3", "torchvision", 12.25),
            _run("c_relu2_2", "relu2_2", "caffe", 23.0, tv_share=0.1, tv_weight=0.5, tau=1.0),
            _run("sweep_caffe_tau1_relu4_3", "relu4_3", "caffe", 15.75, tv_share=0.2, tv_weight=2.0, tau=1.0)]
    colours = {}
    for i, r in enumerate(runs):
        img = torch.zeros(3, SIZE, SIZE)
        img[i % 3] = (i + 1) / 4  # a distinct solid colour per run
        img[:, :4, :4] = 1.0      # and a corner, so the orientation is checked
        save_image(img, tmp_path / r["png"])
        colours[r["name"]] = img
    doc = {"photo": "chelsea", "size": SIZE, "steps": 25, "layers": ["relu2_2", "relu4_3"],
           "variants": {"a": {"label": "torchvision, no TV", "weights": "torchvision", "tv": False},
                        "c": {"label": "Caffe + TV", "weights": "caffe", "tv": True}},
           "table": {"a": {"relu2_2": "a_relu2_2", "relu4_3": "a_relu4_3"},
                     "c": {"relu2_2": "c_relu2_2", "relu4_3": "sweep_caffe_tau1_relu4_3"}},
           "tv_sweep": {"caffe": [{"tv_tau": t, "tv_weight": 2.0 * t, "tv_share": 0.2 * t, "psnr": 15.0 + t,
                                   "ssim": 0.1, "final_loss": 2.0, "name": f"s{t}"} for t in (0.3, 1.0, 3.0)]},
           "tv_tau": {"caffe": 1.0}, "runs": runs}
    (tmp_path / "fig3_variants.json").write_text(json.dumps(doc))
    return tmp_path, colours


def test_load_reads_images_and_the_target(results):
    root, colours = results
    res = load_fig3_variants(root)
    assert set(res["images"]) == set(colours)
    for name, img in colours.items():
        assert torch.allclose(res["images"][name], img, atol=1 / 255)
    assert res["photo_image"].shape == (3, SIZE, SIZE) and 0 <= res["photo_image"].min() < res["photo_image"].max() <= 1


def test_grid_shows_each_run_in_its_cell_with_its_psnr(results):
    root, colours = results
    fig = plot_fig3_variants(root)
    assert isinstance(fig, Figure)
    axes = np.array(fig.axes).reshape(2, 3)  # rows: variants a, c; columns: original, relu2_2, relu4_3
    assert axes[0, 0].get_title() == "original" and axes[1, 0].get_ylabel() == "Caffe + TV"
    for (i, j), name in {(0, 1): "a_relu2_2", (0, 2): "a_relu4_3", (1, 1): "c_relu2_2",
                         (1, 2): "sweep_caffe_tau1_relu4_3"}.items():
        shown = axes[i, j].images[0].get_array()
        assert np.allclose(shown, colours[name].permute(1, 2, 0).numpy(), atol=1 / 255), name
    assert "12.2 dB" in axes[0, 2].get_title() and "TV" not in axes[0, 2].get_title()
    assert "15.8 dB" in axes[1, 2].get_title() and "TV 20%" in axes[1, 2].get_title()
    # a subset, in the order asked, and a cell that was not run
    one = plot_fig3_variants(root, variants=["c"], layers=["relu4_3", "relu5_1"])
    assert len(one.axes) == 3 and "15.8 dB" in one.axes[1].get_title()
    assert one.axes[2].texts[0].get_text() == "not run"
    with pytest.raises(ValueError, match="no variants"):
        plot_fig3_variants(root, variants=["z"])


def test_curves_are_normalised_by_the_start_loss(results):
    fig = plot_fig3_curves(results[0])
    assert len(fig.axes) == 2
    line = fig.axes[0].lines[0]
    assert np.allclose(line.get_ydata(), [0.75, 0.5, 0.25]) and list(line.get_xdata()) == [10, 20, 25]


def test_tables_carry_the_numbers(results):
    root, _ = results
    table = fig3_variants_table(root).splitlines()
    assert len(table) == 2 + 4 and table[0].startswith("| variant |")
    assert table[2].startswith("| torchvision, no TV | relu2_2 | torchvision | 0 | 21.50 |")
    assert "| Caffe + TV | relu4_3 | caffe | 2 (1) | 15.75 | 0.158 | – |" in table[5]
    assert "| 20.0% | 25 / 21 | 1.23% | 3 | bf16 |" in table[5]
    sweep = fig3_sweep_table(root).splitlines()
    assert len(sweep) == 5 and [r.endswith("✓ |") for r in sweep[2:]] == [False, True, False]


def test_table_lists_a_longer_rerun_after_its_grid_run(results):
    root, _ = results
    doc = json.loads((root / "fig3_variants.json").read_text())
    longer = dict(_run("a_relu4_3_eval1000", "relu4_3", "torchvision", 14.5), evaluations=1000, iterations=950)
    doc["runs"].append(longer)
    doc["longer"] = {"a": {"relu4_3": longer["name"]}}
    (root / "fig3_variants.json").write_text(json.dumps(doc))
    table = fig3_variants_table(root).splitlines()
    assert len(table) == 2 + 5
    assert "| 12.25 |" in table[4] and "| 14.50 |" in table[5] and "| 1000 / 950 |" in table[5]
    assert len(plot_fig3_variants(root).axes) == 6  # the grid is unchanged


def test_missing_files_are_named(results, tmp_path_factory):
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(FileNotFoundError, match="no fig3_variants.json"):
        load_fig3_variants(empty)
    root, _ = results
    (root / "a_relu4_3.png").unlink()
    with pytest.raises(FileNotFoundError, match="a_relu4_3.png"):
        plot_fig3_variants(root)
