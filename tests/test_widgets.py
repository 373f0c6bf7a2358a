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


def test_every_app_has_a_one_sentence_hint_under_its_controls(images):
    import re

    import ipywidgets as W

    from perceptlib.widgets import HINTS

    assert set(HINTS) == {"reconstruction_app", "style_reconstruction_app", "style_transfer_app", "sr_compare_app",
                          "sr_train_app"}
    for name, text in HINTS.items():
        assert text.startswith("Try this: ") and text.endswith(".") and "\n" not in text, name
        assert not re.search(r"[.!?] [A-Z]", text), f"{name}: more than one sentence: {text}"
    assert len(set(HINTS.values())) == len(HINTS)  # specific to each app

    app = reconstruction_app(images, size=32, steps=2, network_options=RANDOM)
    assert isinstance(app.hint, W.HTML) and "pl-hint" in app.hint._dom_classes
    assert app.hint.value.startswith("Try this: relu2_2 vs relu4_3") and app.hint.layout.display is None
    kids = list(app.children)
    assert kids.index(app.manual_button) < kids.index(app.hint) < kids.index(app.out)  # under the controls
    assert all(kids.index(w) < kids.index(app.hint) for w in app.controls.values())
    own = style_reconstruction_app(images, size=32, steps=2, network_options=RANDOM, hint="Try this: relu1_1.")
    assert own.hint.value == "Try this: relu1_1." and own.hint in own.children
    assert reconstruction_app(images, size=32, hint="").hint.layout.display == "none"


def test_reconstruction_app_caffe_weights_reach_the_loss_network(images, caffe_weights, one_thread, monkeypatch):
    """'caffe' is offered by default, and picking it builds the loss network from the Caffe VGG-16."""
    import perceptlib.experiments as ex
    from perceptlib.weights import CONTENT_SHA256

    built = []
    real = ex.loss_network

    def spy(layers, weights="torchvision", seed=0):
        net = real(layers, weights, seed)
        built.append((weights, net))
        return net

    monkeypatch.setattr(ex, "loss_network", spy)
    app = reconstruction_app(images, size=32, steps=2, layers=("relu2_2", "", ""))
    c = app.controls
    assert [v for _, v in c["network"].options] == ["torchvision", "caffe", "random-kaiming", "random-default"]
    assert c["network"].value == "torchvision"
    c["network"].value = "caffe"
    app.manual_button.click()
    weights, net = built[-1]
    assert weights == "caffe" and net.weights_info.name == "caffe"
    assert net.weights_info.sha256 == CONTENT_SHA256["caffe"]
    caffe = app.last_run
    assert caffe["spec"]["weights"] == "caffe" and "caffe" in caffe["label"]
    assert any("caffe" in t for t in titles(app.result))
    c["network"].value = "torchvision"
    app.manual_button.click()
    assert built[-1][1].weights_info.name == "torchvision" and app.last_run["spec"]["weights"] == "torchvision"
    # different networks, different features: the start loss (same grey start, same target) differs
    assert app.last_run["history"][0] != pytest.approx(caffe["history"][0], rel=1e-3)


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


def test_style_transfer_app_optimise_and_network(tmp_path, real_weights, one_thread, monkeypatch):
    """Changing the style layers, weights, content layer and start changes what the optimiser gets and the
    run reports; the network method uses the trained net of that style, disables the loss controls, reports
    its terms under the net's own config, and fails clearly for a style without a net."""
    import dataclasses

    import perceptlib.style as style_mod
    from perceptlib.config import PAPER_STYLE, for_mode
    from perceptlib.style import train_style
    from perceptlib.widgets import NETWORK_MODE_NOTE, style_transfer_app

    from conftest import load_asset

    calls = []
    real = style_mod.optimise_style

    def spy(content, style, cfg, **kw):
        calls.append((cfg, kw))
        return real(content, style, cfg, **kw)

    monkeypatch.setattr(style_mod, "optimise_style", spy)
    cfg = dataclasses.replace(for_mode(PAPER_STYLE, "quick"), image_size=32, style_size=32, steps=1, batch_size=1,
                              channels=4, device="cpu", vgg_weights="torchvision")
    styles = {"coffee": load_asset("coffee", 64)[0], "astronaut": load_asset("astronaut", 64)[0]}
    train_style(cfg, styles["coffee"], tmp_path / "net", images=[load_asset("chelsea", 64)[0]], progress=False)
    app = style_transfer_app(styles, {"chelsea": load_asset("chelsea")[0]}, {"coffee": tmp_path / "net"}, cfg=cfg,
                             size=32, steps=3)
    c = app.controls
    assert c["content_layer"].value == "relu3_3"
    assert {"relu2_2", "relu3_3"} <= {v for _, v in c["content_layer"].options}
    assert c["init"].value == "content" and not any(w.disabled for w in c.values())
    assert app.notes["mode"].layout.display == "none"  # the network-mode line only shows in network mode
    app.manual_button.click()
    assert calls[-1][0].content_layers == (("relu3_3", 1.0),) and calls[-1][1]["init"] == "content"
    assert "feat/relu3_3" in app.last_run["terms"]
    c["style_layers"].value = ("relu1_2",)
    c["style_weight"].value = 10.0
    c["content_layer"].value = "relu2_2"
    c["init"].value = "noise"
    app.manual_button.click()
    run = app.last_run
    got, kw = calls[-1]  # what reached the optimiser
    assert got.content_layers == (("relu2_2", 1.0),) and kw["init"] == "noise" and kw["steps"] == 3
    assert got.style_weight == 10.0 and got.style_layers == (("relu1_2", 1 / 64**2),)
    assert run["method"] == "optimise" and run["style_layers"] == ["relu1_2"] and run["init"] == "noise"
    assert run["config"] == got and run["content_layers"] == ["relu2_2"]
    assert "style/relu1_2" in run["terms"] and "style/relu2_2" not in run["terms"]
    assert "feat/relu2_2" in run["terms"] and "feat/relu3_3" not in run["terms"]
    title = app.result.axes[2].get_title()
    assert "relu1_2" in title and "from noise" in title and "content relu2_2" in title
    assert run["image"].shape == (3, 32, 32)

    n_calls = len(calls)
    c["method"].value = "network"
    off = ("content_layer", "content_weight", "style_weight", "tv_weight", "style_layers", "init", "steps")
    assert all(c[k].disabled for k in off) and not any(c[k].disabled for k in ("style", "content", "method"))
    assert app.notes["mode"].value == NETWORK_MODE_NOTE and app.notes["mode"].layout.display is None
    assert app.notes["mode"] in app.children
    app.manual_button.click()
    run = app.last_run
    assert run["method"] == "network" and "network (step 1)" in app.result.axes[2].get_title()
    assert len(calls) == n_calls  # no optimisation ran
    # the terms are those of the net's own training loss, not of the (disabled) sliders
    assert run["style_layers"] == [n for n, _ in cfg.style_layers] and run["config"].style_weight == cfg.style_weight
    assert "style/relu4_3" in run["terms"] and run["content_layers"] == ["relu3_3"]
    c["method"].value = "optimise"
    assert not any(c[k].disabled for k in off) and app.notes["mode"].layout.display == "none"
    c["method"].value = "network"
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
    plan = app.notes["plan"].value  # shown before Run: what will run, and that the CPU cap applies
    assert app.last_run is None and "pl-plan" in app.notes["plan"]._dom_classes
    for part in ("2 steps", "batch 1 of 32² HR patches", "on cpu", "10*relu1_2", "VGG-16 torchvision",
                 "evaluates on astronaut", "CPU: capped to 2 steps at 32² (sliders ask 5000 at 48²)"):
        assert part in plan, f"{part!r} not in {plan!r}"
    from perceptlib.precision import resolve_precision

    assert f"on cpu, {resolve_precision(cfg.precision, 'cpu')}, loss 10*relu1_2 [l2]" in plan
    app.manual_button.click()
    run = app.last_run
    assert run["plan"] == plan
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
    assert app.notes["plan"].value.startswith("Run would fail: pick a layer")
    app.last_run = None
    app.manual_button.click()  # no loss term: the run fails
    assert app.last_run is None


def test_sr_train_app_plan_line_without_the_cap():
    import dataclasses

    from perceptlib.config import PAPER_SR, for_mode
    from perceptlib.widgets import sr_train_app

    cfg = dataclasses.replace(for_mode(PAPER_SR, "quick"), batch_size=2, patch_size=48, precision="off")
    app = sr_train_app([load_asset("chelsea", 96)[0]], {"coffee": load_asset("coffee", 96)[0]}, cfg=cfg, steps=3,
                       quick_steps=10, quick_patch=48, pixel_weight=1e3, device="cpu")
    plan = app.notes["plan"].value
    assert "Run trains 3 steps, batch 2 of 48² HR patches (x4, LR 12²) on cpu, fp32" in plan
    assert "loss 1*relu2_2 + 1000*pixel [l2], VGG-16 caffe" in plan and "capped" not in plan
    app.controls["steps"].value = 11  # now over the cap: the line says so at once
    assert "CPU: capped to 10 steps at 48² (sliders ask 11 at 48²)" in app.notes["plan"].value
    app.controls["layer1"].value = ""
    assert "loss 1000*pixel" not in app.notes["plan"].value  # no layer: the l_pixel baseline, weight 1
    assert "loss pixel [l2], no VGG" in app.notes["plan"].value


def test_sr_train_app_refuses_an_eval_image_it_trains_on(tmp_path):
    import shutil

    from perceptlib.data import demo_image_paths
    from perceptlib.images import load_image
    from perceptlib.widgets import check_disjoint, sr_train_app

    chelsea, coffee, astronaut = demo_image_paths()
    with pytest.raises(ValueError, match="'x' .* is also a training image"):
        sr_train_app([chelsea, coffee], {"ok": astronaut, "x": chelsea})
    with pytest.raises(ValueError, match="'x' has the same pixels as a training image"):
        sr_train_app([load_image(chelsea), load_image(coffee)], {"x": coffee})  # tensor vs file
    with pytest.raises(ValueError, match="same pixels"):
        sr_train_app([coffee], {"x": load_image(coffee)[None]})  # file vs (1, 3, H, W) tensor
    copy = tmp_path / "copy.jpg"
    shutil.copy(chelsea, copy)  # another path, same pixels: compared as tensors only when one side is a tensor
    with pytest.raises(ValueError, match="same pixels"):
        check_disjoint([load_image(copy)], {"x": chelsea})
    check_disjoint([chelsea, load_image(coffee)], {"a": astronaut, "b": load_image(astronaut)})  # held out: fine
    tweaked = load_image(coffee)
    tweaked[0, 0, 0] = 1 - tweaked[0, 0, 0]
    check_disjoint([tweaked], {"x": coffee})  # one pixel differs: not the same image
