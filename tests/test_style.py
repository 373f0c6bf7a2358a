"""Style transfer: data, the loss (the official code's weighting), training with the shared loop, stylising,
the optimisation baseline with the same loss, and the train-style / stylize commands."""
import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from perceptlib.cli import main
from perceptlib.config import PAPER_STYLE, for_mode
from perceptlib.losses import gram_matrix
from perceptlib.style import (
    StyleDataset, build_style_loss, compare_with_optimisation, load_style, optimise_style, style_image_tensor,
    style_of, stylize, train_style,
)
from perceptlib.train import CheckpointError
from perceptlib.vgg import LossNetwork

from conftest import load_asset

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = dataclasses.replace(for_mode(PAPER_STYLE, "quick"), image_size=32, style_size=48, batch_size=2, steps=3,
                           checkpoint_every=2, log_every=1, channels=4, device="cpu", vgg_weights="torchvision")


def _save(t, path):
    Image.fromarray((t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)
    return path


@pytest.fixture
def files(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    for name in ("chelsea", "coffee", "astronaut"):
        _save(load_asset(name, 64)[0], d / f"{name}.png")
    style = _save(load_asset("coffee")[0, :, :60, :90], tmp_path / "style.png")
    return d, style


def test_dataset_is_seeded_square_and_covers_small_photos():
    imgs = [torch.rand(3, 40, 70), torch.rand(3, 20, 24)]  # the second is smaller than the crop: upscaled
    ds = StyleDataset(imgs, 32, seed=3, crops_per_image=5)
    assert len(ds) == 10 and ds[1].shape == (3, 32, 32) and ds[0].dtype == torch.float32
    assert torch.equal(ds[7], StyleDataset(imgs, 32, seed=3, crops_per_image=5)[7])
    assert not torch.equal(ds[0], StyleDataset(imgs, 32, seed=4, crops_per_image=5)[0])
    assert 0 <= float(ds[4].min()) and float(ds[4].max()) <= 1
    with pytest.raises(IndexError):
        ds[10]
    with pytest.raises(ValueError, match="at least one image"):
        StyleDataset([], 32)


def test_style_image_longer_side():
    t = style_image_tensor(torch.rand(3, 60, 90), 45)
    assert t.shape == (1, 3, 30, 45)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        style_image_tensor(torch.rand(60, 90), 45)


def test_default_weights_equal_the_official_codes_mse(real_weights):
    """Eq. 4 with the default 1/C^2 layer weights x 5 = the official code's 5 x MSE over each Gram."""
    cfg = dataclasses.replace(PAPER_STYLE, tv_weight=0.0, device="cpu")
    style, x = load_asset("coffee", 64), load_asset("chelsea", 64)
    loss = build_style_loss(cfg, style[0], device="cpu")
    _, terms = loss(x, x, return_terms=True)
    net = LossNetwork([n for n, _ in cfg.style_layers], weights="caffe")
    fx, fs = net(x), net(style_image_tensor(style[0], cfg.style_size))
    ref = sum(5.0 * torch.nn.functional.mse_loss(gram_matrix(fx[n]), gram_matrix(fs[n])) for n, _ in cfg.style_layers)
    assert float(terms["style"]) == pytest.approx(float(ref), rel=1e-4)
    assert float(terms["feat"]) == 0.0  # content: the output equals the photo


def test_train_style_load_and_stylize(tmp_path, files, real_weights):
    photos, style = files
    cfg = dataclasses.replace(TINY, train_set=str(photos))
    hist = train_style(cfg, style, tmp_path / "run", progress=False)
    assert hist.step == [1, 2, 3]
    assert {"feat", "feat/relu3_3", "style", "style/relu4_3", "tv", "total"} <= set(hist.terms)
    np.testing.assert_allclose(np.add(np.add(hist["feat"], hist["style"]), hist["tv"]), hist["total"], rtol=1e-5)
    net = load_style(tmp_path / "run")
    assert net.train_step == 3 and not net.training
    name, target = style_of(tmp_path / "run")
    assert name == "style" and target.shape == (3, 32, 48)  # longer side = style_size
    x = torch.rand(3, 37, 50)  # odd size: the output keeps it
    y = stylize(net, x)
    assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1
    assert stylize(net, x[None]).shape == (1, 3, 37, 50)
    with pytest.raises(TypeError, match="float"):
        stylize(net, (x * 255).to(torch.uint8))
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        stylize(net, torch.rand(37, 50))


def test_optimisation_baseline_uses_the_same_loss(files, real_weights):
    _, style = files
    cfg = dataclasses.replace(TINY, style_size=32)
    content = load_asset("chelsea", 32)[0]
    rec = optimise_style(content, style, cfg, steps=12, progress=False)
    assert rec.steps == 12 and rec.final["total"] < 0.5 * rec.history[0]["total"]
    assert {"feat", "style", "tv", "total"} <= set(rec.final)
    torch.manual_seed(0)
    from perceptlib.style import build_style_model

    res = compare_with_optimisation(build_style_model(cfg), content, style, cfg, steps=4)
    assert res["network"]["image"].shape == content.shape == res["optimisation"]["image"].shape
    assert len(res["optimisation"]["curve"]) == 4
    # the terms are those of the same loss: recomputing the optimised image's loss gives its final value
    assert res["optimisation"]["terms"]["total"] == pytest.approx(min(res["optimisation"]["curve"]), rel=1e-4)


def test_cli_train_style_and_stylize(tmp_path, files, capsys, real_weights):
    photos, style = files
    out = tmp_path / "net"
    args = ["train-style", "--style", str(style), "--mode", "quick", "--steps", "2", "--train-set", str(photos),
            "--image-size", "32", "--style-size", "32", "--channels", "4", "--vgg-weights", "torchvision",
            "--device", "cpu", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "steps: paper 40000, ours 2" in text and (out / "model.pt").is_file()
    assert json.loads((out / "style.json").read_text())["name"] == "style"
    png = tmp_path / "out.png"
    assert main(["stylize", "--model", str(out), str(photos / "chelsea.png"), str(png), "--device", "cpu"]) == 0
    assert Image.open(png).size == (64, 64)
    capsys.readouterr()
    assert main(["stylize", "--model", str(tmp_path / "missing"), str(photos / "chelsea.png"), str(png)]) == 1
    assert main(["stylize", "--model", str(out), str(tmp_path / "nope.png"), str(png)]) == 1
    assert main(["train-style", "--style", "no_such_painting", "--mode", "quick"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "checkpoint not found" in err[0] and "not found" in err[1]
    assert "neither a file nor one of the 'styles' set" in err[2]


def test_load_style_refuses_an_sr_checkpoint(tmp_path):
    from perceptlib.nets import SRNet
    from perceptlib.train import _FORMAT

    torch.save({"format": _FORMAT, "version": 1, "step": 1, "config": {}, "model_class":
                {"class": "SRNet", "hparams": {"scale": 2, "channels": 4, "blocks": 1}},
                "model": SRNet(scale=2, channels=4, blocks=1).state_dict()}, tmp_path / "model.pt")
    with pytest.raises(CheckpointError, match="holds a SRNet network, expected TransformerNet"):
        load_style(tmp_path)


def test_speed_helpers_measure_and_extrapolate(files, real_weights):
    from perceptlib.nets import TransformerNet
    from perceptlib.speed import square_crop, time_network, time_optimisation

    _, style = files
    assert square_crop(torch.rand(3, 40, 60), 16).shape == (3, 16, 16)
    assert 0 < time_network(TransformerNet(channels=4), 32, "cpu", repeats=2) < 10
    cfg = dataclasses.replace(TINY, style_size=32)
    content = load_asset("chelsea", 48)[0]
    full, loss = time_optimisation(content, style, cfg, 32, [2, 4], "cpu", budget=1e9)
    assert all(m for _, m in full.values()) and 0 < full[2][0] < full[4][0] and loss > 0
    # a budget far below the run's time: stops after a few evaluations, the rest is extrapolated
    cut, _ = time_optimisation(content, style, cfg, 32, [3, 400], "cpu", budget=1e-3)
    assert cut[3][1] and not cut[400][1] and cut[400][0] > cut[3][0]


def test_table1_and_its_text_and_plot(files, real_weights):
    from perceptlib.nets import TransformerNet
    from perceptlib.plots import plot_table1
    from perceptlib.speed import format_table1, table1

    _, style = files
    cfg = dataclasses.replace(TINY, style_size=32)
    content = load_asset("chelsea", 48)[0]
    res = table1(TransformerNet(channels=4), content, style, cfg, [32], "cpu", budget=1e-3, precision="off",
                 iters=(100, 300, 500), repeats=1)
    assert res["precision"] == "fp32" and res["dtype"] == "float32"
    rows = {r["iterations"]: r for r in res["rows"]}
    assert set(rows) == {100, 300, 500, None} and not rows[500]["measured"] and rows[None]["seconds"] > 0
    text = format_table1(res, {32: (1.0, 2.0, 3.0, 0.01, 1234)}, "here")
    assert "~" in text and "(1234x)" in text and "(300x)" not in text  # the stated speed-up, not a recomputed one
    fig = plot_table1({"here": res}, {32: (1.0, 2.0, 3.0, 0.01)})
    assert len(fig.axes[0].lines) == 5 and fig.legends
