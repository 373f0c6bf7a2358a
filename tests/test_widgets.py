"""Headless widget tests: set control values, click Run, check the figure and the result follow them."""
from __future__ import annotations

import pytest

pytest.importorskip("ipywidgets")
from matplotlib.figure import Figure  # noqa: E402

from perceptlib.experiments import square_image  # noqa: E402
from perceptlib.widgets import TAP_OPTIONS, reconstruction_app, style_reconstruction_app  # noqa: E402

from conftest import load_asset  # noqa: E402

RANDOM = ("random-kaiming", "random-default")


def titles(fig: Figure) -> list[str]:
    return [ax.get_title() for ax in fig.axes if ax.get_title()]


@pytest.fixture(scope="module")
def images():
    return {"chelsea": load_asset("chelsea", 32), "coffee": load_asset("coffee", 32)}


def test_reconstruction_app_controls(images):
    app = reconstruction_app(images, size=32, steps=3, network_options=RANDOM)
    c = app.controls
    assert app.manual_button.description == "Run" and "pl-run" in app.manual_button._dom_classes
    assert [o[1] for o in c["layer1"].options][1:] == list(TAP_OPTIONS)
    assert "conv3_3" in TAP_OPTIONS and "relu3_3" in TAP_OPTIONS and not any(n.startswith("pool") for n in TAP_OPTIONS)
    assert "pl-layer" in c["layer1"]._dom_classes and "pl-weight" in c["weight2"]._dom_classes
    assert list(c["distance"].options) == ["l2", "l1", "l1+l2"]
    assert all(not c[k].continuous_update for k in ("weight1", "weight2", "weight3", "steps"))
    assert app.result is None and app.last_run is None  # nothing runs before the click


def test_reconstruction_app_run_follows_the_controls(images):
    app = reconstruction_app(images, size=32, steps=3, layers=("relu2_2", "", ""), network_options=RANDOM)
    app.manual_button.click()
    assert isinstance(app.result, Figure)
    first = app.last_run
    assert first["spec"]["layers"] == [["relu2_2", 1.0]]
    assert len(first["history"]) == 3 and any("relu2_2" in t for t in titles(app.result))

    c = app.controls
    c["image"].value = "coffee"
    c["layer1"].value = "conv3_3"
    c["layer2"].value = "relu1_2"
    c["weight2"].value = 10.0
    c["distance"].value = "l1"
    c["steps"].value = 5
    c["network"].value = "random-default"
    app.manual_button.click()
    res, fig = app.last_run, app.result
    assert res is not first and isinstance(fig, Figure)
    spec = res["spec"]
    assert [tuple(x) for x in spec["layers"]] == [("conv3_3", 1.0), ("relu1_2", 10.0)]
    assert (spec["image"], spec["distance"], spec["weights"], spec["steps"]) == ("coffee", "l1", "random-default", 5)
    assert len(res["history"]) == 5 and res["image"].shape == (1, 3, 32, 32)
    assert any("conv3_3" in t and "10*relu1_2" in t for t in titles(fig))
    assert any("coffee" in t for t in titles(fig)) and not any("relu2_2" in t for t in titles(fig))
    assert res["metrics"]["psnr"] > 0


def test_reconstruction_app_without_layers_gives_no_result(images):
    app = reconstruction_app(images, size=32, steps=2, layers=("", "", ""), network_options=RANDOM)
    app.manual_button.click()  # the ValueError is swallowed (no kernel): no figure, no run
    assert app.result is None and app.last_run is None


def test_style_app_run_follows_the_controls():
    from perceptlib.data import demo_image_paths

    styles = {p.stem: square_image(p, 32) for p in demo_image_paths()[:2]}
    app = style_reconstruction_app(styles, size=32, steps=2, network_options=("random-kaiming",))
    c = app.controls
    assert "pl-layer" in c["layers"]._dom_classes and c["layers"].value == ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
    c["layers"].value = ("relu2_1", "relu1_1")
    c["style"].value = list(styles)[1]
    c["steps"].value = 4
    app.manual_button.click()
    res = app.last_run
    assert isinstance(app.result, Figure)
    assert [tuple(x)[0] for x in res["spec"]["layers"]] == ["relu1_1", "relu2_1"]  # network order
    assert res["spec"]["task"] == "style" and res["spec"]["image"] == list(styles)[1]
    assert len(res["history"]) == 4 and res["final"]["total"] < res["history"][0]
    assert any("relu1_1+relu2_1" in t for t in titles(app.result))


def test_reconstruction_plots_are_pure_and_labelled(images):
    from perceptlib.plots import plot_loss_histories, plot_question_bars, plot_reconstruction_grid, plot_style_grid

    x = images["chelsea"]
    fig = plot_reconstruction_grid({"a": x, "b": x}, {"a": {"relu2_2": x, "relu4_3": x}, "b": {"relu4_3": x}},
                                   captions={"a": {"relu2_2": "30.0 dB"}})
    assert isinstance(fig, Figure) and len(fig.axes) == 6
    assert titles(fig) == ["a: original", "relu2_2\n30.0 dB", "relu4_3", "b: original", "relu4_3"]
    assert titles(plot_style_grid({"s": x}, {"s": {"relu1_2": x}}))[0] == "s: style"
    fig = plot_loss_histories({"relu2_2": [4.0, 2.0, 1.0]})
    line = fig.axes[0].lines[0]
    assert list(line.get_ydata()) == [1.0, 0.5, 0.25] and fig.axes[0].get_yscale() == "log"
    rows = [{"question": "q1", "run": "conv3_3", "psnr": 22.0, "ssim": 0.5, "lpips": 0.1},
            {"question": "q1", "run": "relu3_3", "psnr": 21.0, "ssim": 0.4, "lpips": None}]
    fig = plot_question_bars(rows)
    assert [ax.get_title() for ax in fig.axes] == ["PSNR", "SSIM", "LPIPS (lower is better)"]
    assert len(fig.axes[0].patches) == 2 and len(fig.axes[2].patches) == 1  # the missing LPIPS is skipped
    with pytest.raises(ValueError, match="at least one row"):
        plot_question_bars([])


def test_style_transfer_app_optimise_and_network(tmp_path, real_weights, one_thread):
    """Changing the style layers and weights changes what the run uses and reports; the network method
    uses the trained net of that style and fails clearly for a style without one."""
    import dataclasses

    from perceptlib.config import PAPER_STYLE, for_mode
    from perceptlib.style import train_style
    from perceptlib.widgets import style_transfer_app

    from conftest import load_asset

    cfg = dataclasses.replace(for_mode(PAPER_STYLE, "quick"), image_size=32, style_size=32, steps=1, batch_size=1,
                              channels=4, device="cpu", vgg_weights="torchvision")
    styles = {"coffee": load_asset("coffee", 64)[0], "astronaut": load_asset("astronaut", 64)[0]}
    train_style(cfg, styles["coffee"], tmp_path / "net", images=[load_asset("chelsea", 64)[0]], progress=False)
    app = style_transfer_app(styles, {"chelsea": load_asset("chelsea")[0]}, {"coffee": tmp_path / "net"}, cfg=cfg,
                             size=32, steps=3)
    c = app.controls
    c["style_layers"].value = ("relu1_2",)
    c["style_weight"].value = 10.0
    app.manual_button.click()
    run = app.last_run
    assert run["method"] == "optimise" and run["style_layers"] == ["relu1_2"]
    assert run["config"].style_weight == 10.0 and run["config"].style_layers == (("relu1_2", 1 / 64**2),)
    assert "style/relu1_2" in run["terms"] and "style/relu2_2" not in run["terms"]
    assert "relu1_2" in app.result.axes[2].get_title() and run["image"].shape == (3, 32, 32)
    c["method"].value = "network"
    app.manual_button.click()
    assert app.last_run["method"] == "network" and "network (step 1)" in app.result.axes[2].get_title()
    c["style"].value = "astronaut"
    app.last_run = None
    app.manual_button.click()  # no network for this style: the run fails (ipywidgets shows the error)
    assert app.last_run is None


# --- super-resolution widgets (notebook 02) ------------------------------------------------------------------

@pytest.fixture(scope="module")
def sr_nets(tmp_path_factory):
    """Two tiny untrained x4 networks saved as checkpoints (one trained step each) and one x8 net."""
    import dataclasses

    from perceptlib.config import PAPER_SR, for_mode
    from perceptlib.sr import train_sr

    root = tmp_path_factory.mktemp("sr_nets")
    photo = load_asset("chelsea", 96)[0]
    base = dataclasses.replace(for_mode(PAPER_SR, "quick"), patch_size=48, batch_size=1, steps=1, channels=4,
                               device="cpu", checkpoint_every=1)
    for name, scale in (("a", 4), ("b", 4), ("c", 8)):
        train_sr(dataclasses.replace(base, scale=scale, seed=ord(name)), root / name, loss="pixel", progress=False,
                 images=[photo])
    return {"a": root / "a", "b": root / "b", "c": root / "c"}


def test_sr_compare_app_follows_the_controls(sr_nets, one_thread):
    import torch

    from perceptlib.sr import load_sr
    from perceptlib.widgets import sr_compare_app

    imgs = {"chelsea": load_asset("chelsea", 128)[0], "coffee": load_asset("coffee", 96)}
    app = sr_compare_app({"a": sr_nets["a"], "b": load_sr(sr_nets["b"]), "c": sr_nets["c"]}, imgs, crop=32)
    c = app.controls
    assert "pl-run" in app.manual_button._dom_classes and "pl-model" in c["models"]._dom_classes
    assert c["models"].value == ("a", "b") and app.last_run is None
    app.manual_button.click()
    run = app.last_run
    assert isinstance(app.result, Figure) and run["image"] == "chelsea" and run["box"][2] == 32
    assert set(run["psnr"]) == {"bicubic x4", "a", "b"} and all(v > 5 for v in run["psnr"].values())
    assert all(x.shape == (3, 32, 32) for x in run["crops"].values())

    c["models"].value = ("b", "c")
    c["image"].value = "coffee"
    c["size"].value = 48
    c["top"].value, c["left"].value = 0, 100
    c["hist_match"].value = True
    app.manual_button.click()
    run = app.last_run
    assert run["image"] == "coffee" and run["hist_match"] and run["models"] == ["b", "c"]
    assert run["box"] == (0, 48, 48)  # 96x96 image: left 100 % = the right edge
    assert set(run["crops"]) == {"bicubic x4", "bicubic x8", "b + h.m.", "c + h.m."}
    assert all(x.shape == (3, 48, 48) for x in run["crops"].values())
    assert torch.equal(run["crops"]["bicubic x8"], run["crops"]["bicubic x8"].clamp(0, 1))
    assert app.result.axes[1].images[0].get_array().shape[:2] == (48, 48)  # the HR crop panel
    assert any("c + h.m." in ax.get_title() for ax in app.result.axes)

    c["models"].value = ()
    app.last_run = None
    app.manual_button.click()  # no model picked: the run fails (ipywidgets shows the error)
    assert app.last_run is None


def test_sr_train_app_follows_the_controls(real_weights, one_thread):
    import dataclasses

    from perceptlib.config import PAPER_SR, for_mode
    from perceptlib.widgets import sr_train_app

    cfg = dataclasses.replace(for_mode(PAPER_SR, "quick"), batch_size=1, channels=4, vgg_weights="torchvision")
    train = [load_asset("chelsea", 96)[0], load_asset("coffee", 96)[0]]
    app = sr_train_app(train, {"astronaut": load_asset("astronaut", 96)[0]}, cfg=cfg, steps=5000, quick_steps=2,
                       quick_patch=32, crop=32, device="cpu")
    c = app.controls
    assert "pl-layer" in c["layer1"]._dom_classes and "pl-weight" in c["weight1"]._dom_classes
    assert "pl-pixel-weight" in c["pixel_weight"]._dom_classes and "pl-steps" in c["steps"]._dom_classes
    c["layer1"].value = "relu1_2"
    c["weight1"].value = 10.0
    app.manual_button.click()
    run = app.last_run
    assert isinstance(app.result, Figure)
    assert "feat/relu1_2" in run["terms"] and "feat/relu2_2" not in run["terms"] and "pixel" not in run["terms"]
    assert run["config"].layers == (("relu1_2", 10.0),) and run["config"].steps == 5000
    assert run["steps_run"] == 2 and len(run["history"]["step"]) == 2 and run["history"]["step"][-1] == 2
    assert run["ran_config"].patch_size == 32 and run["crop"].shape == (3, 32, 32)
    assert run["estimate_s"] > run["seconds"]  # 5000 steps at 48^2 vs 2 steps at 32^2
    assert "10*relu1_2" in app.result.axes[0].get_title()

    c["layer1"].value = ""
    c["layer2"].value = "relu2_2"
    c["pixel_weight"].value = 1e3
    c["scale"].value = 8
    app.manual_button.click()
    run = app.last_run
    assert run["config"].layers == (("relu2_2", 1.0),) and run["config"].pixel_weight == 1e3
    assert run["config"].scale == 8 and {"feat/relu2_2", "pixel"} <= set(run["terms"])
    assert run["label"] == "1*relu2_2 + 1000*pixel"

    c["layer2"].value = ""
    c["pixel_weight"].value = 0.0
    app.last_run = None
    app.manual_button.click()  # no loss term: the run fails
    assert app.last_run is None
