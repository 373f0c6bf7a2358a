"""Run summaries (perceptlib.runs), the training-curve plot, the checkerboard measure and the Fig. 5 measure."""
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from perceptlib.config import PAPER_STYLE, for_mode
from perceptlib.metrics import checkerboard_db, checkerboard_spectrum
from perceptlib.plots import plot_run_terms
from perceptlib.runs import load_run, load_runs, spikes, summarise

pytestmark = pytest.mark.usefixtures("one_thread")


def write_run(folder, style, feat, sessions=()):
    folder.mkdir(parents=True)
    steps = list(range(10, 10 * len(style) + 1, 10))
    (folder / "config.json").write_text(json.dumps({"steps": steps[-1]}))
    (folder / "history.json").write_text(json.dumps({"step": steps, "terms": {"style": style, "feat": feat},
                                                     "elapsed_s": 12.5, "sessions": list(sessions),
                                                     "last_step": steps[-1]}))


def test_spikes_and_summary(tmp_path):
    style = [10.0] * 30
    style[20] = 100.0  # one jump of 10x
    assert spikes(style) == [20]
    assert spikes([10.0] * 30) == []
    feat = list(np.linspace(4, 2, 30))
    write_run(tmp_path / "a", style, feat, [{"precision": "bf16", "name": "cpu X"}])
    write_run(tmp_path / "b", [5.0] * 30, [3.0] * 30)
    runs = load_runs(tmp_path)
    assert list(runs) == ["a", "b"] and not runs["a"].has_model
    s = summarise(runs["a"])
    assert s["steps"] == 300 and s["style_spikes"] == 1 and s["precision"] == "bf16" and s["device"] == "cpu X"
    assert math.isclose(s["feat_end"], np.mean(feat[-6:])) and s["feat_change"] < 0.6
    with pytest.raises(FileNotFoundError, match="not a training run"):
        load_run(tmp_path)
    fig = plot_run_terms({n: {"step": r.history["step"], **r.history["terms"]} for n, r in runs.items()},
                         terms=("feat", "style"), smooth=3)
    axes = fig.axes
    assert [a.get_title() for a in axes] == ["feat", "style"] and all(len(a.lines) == 2 for a in axes)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["a", "b"]


def test_checkerboard_measure():
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 12, generator=g), size=96, mode="bicubic",
                                             align_corners=False)[0].clamp(0, 1)
    assert abs(checkerboard_db(smooth, smooth, 4)) < 1e-9
    yy, xx = torch.meshgrid(torch.arange(96), torch.arange(96), indexing="ij")
    grid = 0.03 * ((yy % 2) ^ (xx % 2)).float()  # a period-2 checkerboard
    assert checkerboard_db((smooth + grid).clamp(0, 1), smooth, 4) > 10
    with pytest.raises(ValueError, match="power of two"):
        checkerboard_db(smooth, smooth, 3)
    flat = torch.full_like(smooth, 0.5)  # a collapsed network's output: no energy anywhere, a finite floor
    assert checkerboard_db(flat, smooth, 4) < -200
    assert all(v["db"] < -200 for v in checkerboard_spectrum(flat, smooth, 4).values())


def test_checkerboard_spectrum_names_the_pattern():
    g = torch.Generator().manual_seed(1)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 12, generator=g), size=96, mode="bicubic",
                                             align_corners=False)[0].clamp(0.1, 0.9)
    yy, xx = torch.meshgrid(torch.arange(96), torch.arange(96), indexing="ij")
    patterns = {"1/2, 0": (xx % 2).float(),                       # period-2 stripes along one axis
                "1/2, 1/2": ((yy % 2) ^ (xx % 2)).float(),        # the period-2 checkerboard
                "1/4, 0": ((yy // 2) % 2).float()}                # period-4 stripes along the other axis
    for key, pat in patterns.items():
        sr = smooth + 0.05 * (pat - 0.5)
        spec = checkerboard_spectrum(sr, smooth, 4)
        assert set(spec) == {"1/2, 0", "1/2, 1/2", "1/4, 0", "1/4, 1/4", "1/2, 1/4"}
        assert abs(sum(v["share"] for v in spec.values()) - 1) < 1e-9
        assert max(spec, key=lambda k: spec[k]["share"]) == key and spec[key]["share"] > 0.9
        assert spec[key]["db"] > 10
        # the parts add up to checkerboard_db: sr energy sum / hr energy sum
        hr_parts = sum(v["share"] / 10 ** (v["db"] / 10) for v in spec.values())
        assert abs(-10 * math.log10(hr_parts) - checkerboard_db(sr, smooth, 4)) < 1e-6
    with pytest.raises(ValueError, match="same shape"):
        checkerboard_spectrum(smooth, smooth[:, :48], 4)


class Constant(torch.nn.Module):
    """A "network" that outputs grey: a poor stylisation, reached by the optimisation within a few steps."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return torch.full_like(x, 0.5) + 0 * self.w


def _matching_case():
    """A quick style config with two style layers, a random 32² style image and a smooth 40² photo."""
    cfg = dataclasses.replace(for_mode(PAPER_STYLE, "quick"), vgg_weights="torchvision", device="cpu",
                              style_layers=(("relu1_2", 1 / 64**2), ("relu2_2", 1 / 128**2)))
    g = torch.Generator().manual_seed(0)
    style = torch.rand(3, 32, 32, generator=g)
    photo = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=40, mode="bilinear")[0]
    return cfg, style, photo


def test_iterations_matching_stops_at_the_network_loss(real_weights):
    from perceptlib.data import image_paths  # noqa: F401  (the photos are tensors here)
    from perceptlib.style import build_style_loss, iterations_matching, optimise_style
    from perceptlib.speed import square_crop

    cfg, style, photo = _matching_case()
    res = iterations_matching(Constant(), [photo], style, cfg, size=32, max_steps=60)
    row = res["photos"][0]
    assert res["all_reached"] and row["iterations"] == res["min"] == res["iterations_matching_network"]
    assert row["optimisation_loss"] <= row["network_loss"]
    k = row["iterations"]
    if k > 1:  # one evaluation fewer does not reach it
        loss = build_style_loss(cfg, style)
        rec = optimise_style(square_crop(photo, 32), style, cfg, steps=k - 1, loss=loss, progress=False)
        assert min(rec.losses) > row["network_loss"]


def test_iterations_matching_goal_reads_the_loss_a_network_worth_goal_evaluations_reaches(real_weights):
    from perceptlib.style import build_style_loss, iterations_matching, optimise_style
    from perceptlib.speed import square_crop

    cfg, style, photo = _matching_case()
    plain = iterations_matching(Constant(), [photo], style, cfg, size=32, max_steps=60)
    k = plain["photos"][0]["iterations"]
    goal = k + 5
    res = iterations_matching(Constant(), [photo], style, cfg, size=32, max_steps=60, goal=goal)
    row = res["photos"][0]
    assert row["iterations"] == k and row["optimisation_loss"] == plain["photos"][0]["optimisation_loss"]
    rec = optimise_style(square_crop(photo, 32), style, cfg, steps=goal, loss=build_style_loss(cfg, style),
                         progress=False)
    assert row["loss_at_goal"] == pytest.approx(min(rec.losses), rel=1e-5)
    assert row["loss_at_goal"] <= row["network_loss"] and res["goal_ratio"] == pytest.approx(row["goal_ratio"])
    assert res["goal_ratio"] == pytest.approx(row["loss_at_goal"] / row["network_loss"])
    early = iterations_matching(Constant(), [photo], style, cfg, size=32, max_steps=60, goal=1)
    assert early["goal_ratio"] >= 1 or k == 1   # one evaluation: not yet at the network's loss
    with pytest.raises(ValueError, match="goal"):
        iterations_matching(Constant(), [photo], style, cfg, size=32, max_steps=60, goal=61)
