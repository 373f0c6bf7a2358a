"""Widget factories for the notebooks: controls in, the same pure functions as the figures out.

Each factory returns an ``ipywidgets.interactive`` with a Run button (``manual``), so nothing is
computed until it is clicked. After a run, ``app.result`` is the Figure and ``app.last_run`` the
result dict of :func:`perceptlib.experiments.run_spec`. Controls carry CSS classes (``pl-layer``,
``pl-weight``, ``pl-distance``, ``pl-steps``, ...) for browser tests; they are named in ``app.controls``.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from .losses import DISTANCES
from .vgg import LAYER_NAMES

__all__ = ["TAP_OPTIONS", "reconstruction_app", "style_reconstruction_app", "style_transfer_app"]

#: Layers a picker offers: every conv and relu tap, in network order (pools are left out).
TAP_OPTIONS: tuple[str, ...] = tuple(n for n in LAYER_NAMES if not n.startswith("pool"))
_TV_OPTIONS = (0.0, 1e-6, 1e-5, 1e-4, 1e-3)


def _caption(res: Mapping) -> str:
    m = res.get("metrics") or {}
    score = f"PSNR {m['psnr']:.1f} dB, SSIM {m['ssim']:.2f}, LPIPS {m['lpips']:.2f}\n" if m else ""
    return f"{score}{res['steps']} steps, loss {res['history'][0]:.3g} -> {res['final']['total']:.3g}"


def _common_controls(steps: int, max_steps: int, init: str, network_options: Sequence[str]) -> dict:
    import ipywidgets as W

    return {
        "steps": W.IntSlider(value=steps, min=1, max=max_steps, step=1, description="steps",
                             continuous_update=False).add_class("pl-steps"),
        "init": W.Dropdown(options=["grey", "noise"], value=init, description="init").add_class("pl-init"),
        "network": W.Dropdown(options=list(network_options), value=network_options[0],
                              description="VGG weights").add_class("pl-network"),
        "tv_weight": W.Dropdown(options=list(_TV_OPTIONS), value=0.0, description="TV weight").add_class("pl-tv"),
        "optimizer": W.Dropdown(options=["lbfgs", "adam"], value="lbfgs", description="optimizer")
        .add_class("pl-optimizer"),
    }


def _app(f, controls: dict):
    import ipywidgets as W

    app = W.interactive(f, {"manual": True, "manual_name": "Run", "auto_display": True}, **controls)
    app.manual_button.add_class("pl-run")
    app.controls = controls
    app.last_run = None
    return app


def reconstruction_app(images: Mapping[str, Tensor], *, size: int = 64, steps: int = 30, max_steps: int = 500,
                       layers: Sequence[str] = ("relu2_2", "relu4_3", ""), weights: Sequence[float] = (1.0, 1.0, 1.0),
                       init: str = "grey", network_options: Sequence[str] = ("torchvision", "random-kaiming",
                                                                             "random-default"),
                       device: str = "cpu"):
    """Feature reconstruction (Fig. 3) with up to three layers ``{layer: weight}``, a distance, steps,
    start image, loss-network weights, TV weight and optimiser; ``images``: ``{name: (1, 3, size, size)}``
    (use :func:`perceptlib.experiments.square_image`). Leave a layer picker at "" to not use it."""
    import ipywidgets as W

    from .experiments import RunSpec, run_spec
    from .plots import plot_reconstruction_grid

    if not images:
        raise ValueError("reconstruction_app needs at least one image")
    options = [("(none)", "")] + [(n, n) for n in TAP_OPTIONS]
    controls = {"image": W.Dropdown(options=list(images), description="image").add_class("pl-image")}
    for i, (name, w) in enumerate(zip(list(layers) + [""] * (3 - len(layers)), list(weights) + [1.0] * 3)):
        controls[f"layer{i + 1}"] = W.Dropdown(options=options, value=name, description=f"layer {i + 1}"
                                               ).add_class("pl-layer")
        controls[f"weight{i + 1}"] = W.FloatLogSlider(value=w, base=10, min=-3, max=3, step=0.25,
                                                      description=f"weight {i + 1}", continuous_update=False
                                                      ).add_class("pl-weight")
    controls["distance"] = W.Dropdown(options=list(DISTANCES), value="l2", description="distance"
                                      ).add_class("pl-distance")
    controls.update(_common_controls(steps, max_steps, init, network_options))

    def run(image, layer1, weight1, layer2, weight2, layer3, weight3, distance, steps, init, network, tv_weight,
            optimizer):
        picked = {}
        for name, w in ((layer1, weight1), (layer2, weight2), (layer3, weight3)):
            if name:
                picked[name] = picked.get(name, 0.0) + float(w)
        if not picked:
            raise ValueError("pick at least one layer")
        spec = RunSpec("feature", image, tuple(picked.items()), size=size, steps=int(steps), distance=distance,
                       weights=network, init=init, optimizer=optimizer, tv_weight=float(tv_weight))
        res = run_spec(spec, images[image], device=device, progress=False)
        app.last_run = res
        return plot_reconstruction_grid({image: images[image]}, {image: {spec.label: res["image"]}},
                                        captions={image: {spec.label: _caption(res)}}, size=3.0)

    app = _app(run, controls)
    return app


def style_reconstruction_app(styles: Mapping[str, Tensor], *, size: int = 64, steps: int = 30,
                             max_steps: int = 500, layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3"),
                             init: str = "noise", network_options: Sequence[str] = ("torchvision", "random-kaiming"),
                             device: str = "cpu"):
    """Style reconstruction (Fig. 4): match the Gram matrices of the chosen layers (equal weights) of a
    painting ``styles[name]`` ``(1, 3, size, size)``, from noise or grey."""
    import ipywidgets as W

    from .experiments import RunSpec, run_spec
    from .plots import plot_style_grid

    if not styles:
        raise ValueError("style_reconstruction_app needs at least one style image")
    controls = {
        "style": W.Dropdown(options=list(styles), description="painting").add_class("pl-image"),
        "layers": W.SelectMultiple(options=list(TAP_OPTIONS), value=tuple(layers), rows=8,
                                   description="Gram layers").add_class("pl-layer"),
    }
    controls.update(_common_controls(steps, max_steps, init, network_options))

    def run(style, layers, steps, init, network, tv_weight, optimizer):
        if not layers:
            raise ValueError("pick at least one layer")
        ordered = [n for n in LAYER_NAMES if n in layers]
        spec = RunSpec("style", style, tuple((n, 1.0) for n in ordered), size=size, steps=int(steps),
                       weights=network, init=init, optimizer=optimizer, tv_weight=float(tv_weight))
        res = run_spec(spec, styles[style], device=device, progress=False)
        app.last_run = res
        return plot_style_grid({style: styles[style]}, {style: {spec.label: res["image"]}},
                               captions={style: {spec.label: _caption(res)}}, size=3.0)

    app = _app(run, controls)
    return app


def style_transfer_app(styles: Mapping[str, Tensor], contents: Mapping[str, Tensor],
                       networks: Mapping[str, object] | None = None, *, cfg=None, size: int = 128, steps: int = 20,
                       max_steps: int = 500, device: str = "cpu"):
    """Style transfer (Sec. 4.1): stylise a content photo with a painting's style, by optimisation
    (``"optimise"``: projected L-BFGS from the photo, ``steps`` evaluations) with the chosen content,
    style and TV weights and style layers, or with the trained network of that style (``"network"``,
    where ``networks`` maps the style name to a checkpoint folder). ``styles``/``contents``: ``{name:
    (3, H, W) in [0, 1]}``; photos are centre-cropped and resized to ``size``². ``cfg``: the
    :class:`~perceptlib.config.StyleConfig` whose weights are the starting values (default: the paper's).
    Style layers get the official code's weights ``1 / C_j^2`` times the style weight. The caption and
    ``app.last_run["terms"]`` give the loss terms of the output under the chosen weights."""
    import dataclasses
    import time

    import ipywidgets as W

    from .config import PAPER_STYLE
    from .plots import plot_images
    from .style import build_style_loss, load_style, optimise_style, style_loss_of, stylize
    from .vgg import layer_channels

    if not styles or not contents:
        raise ValueError("style_transfer_app needs at least one style and one content image")
    base = dataclasses.replace(cfg or PAPER_STYLE, device=str(device))
    networks = dict(networks or {})
    loaded: dict = {}
    controls = {
        "style": W.Dropdown(options=list(styles), description="painting").add_class("pl-style"),
        "content": W.Dropdown(options=list(contents), description="photo").add_class("pl-image"),
        "method": W.Dropdown(options=["optimise", "network"], value="optimise", description="method"
                             ).add_class("pl-method"),
        "content_weight": W.FloatLogSlider(value=base.content_weight, base=10, min=-2, max=2, step=0.25,
                                           description="content w.", continuous_update=False
                                           ).add_class("pl-weight").add_class("pl-content-weight"),
        "style_weight": W.FloatLogSlider(value=base.style_weight, base=10, min=-2, max=3, step=0.25,
                                         description="style w.", continuous_update=False
                                         ).add_class("pl-weight").add_class("pl-style-weight"),
        "tv_weight": W.Dropdown(options=sorted({0.0, 1e-3, 1e-2, round(base.tv_weight, 6), 0.3, 1.0}), value=round(
            base.tv_weight, 6), description="TV weight").add_class("pl-tv"),
        "style_layers": W.SelectMultiple(options=list(TAP_OPTIONS), value=tuple(n for n, _ in base.style_layers),
                                         rows=8, description="style layers").add_class("pl-layer"),
        "steps": W.IntSlider(value=steps, min=1, max=max_steps, step=1, description="steps",
                             continuous_update=False).add_class("pl-steps"),
    }

    def square(img: Tensor) -> Tensor:
        import torch.nn.functional as F

        h, w = img.shape[-2:]
        s = min(h, w)
        crop = img[..., (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        return F.interpolate(crop.reshape(1, 3, s, s), size=(size, size), mode="bilinear", antialias=True,
                             align_corners=False)[0].clamp(0, 1)

    def run(style, content, method, content_weight, style_weight, tv_weight, style_layers, steps):
        if not style_layers:
            raise ValueError("pick at least one style layer")
        ordered = [n for n in LAYER_NAMES if n in style_layers]
        cfg = dataclasses.replace(base, content_weight=float(content_weight), style_weight=float(style_weight),
                                  tv_weight=float(tv_weight),
                                  style_layers=tuple((n, 1.0 / layer_channels(n) ** 2) for n in ordered))
        photo = square(contents[content])
        loss = build_style_loss(cfg, styles[style], device=device)
        t = time.perf_counter()
        if method == "network":
            if style not in networks:
                raise ValueError(f"no trained network for {style!r}; trained: {sorted(networks) or 'none'}")
            if style not in loaded:
                loaded[style] = load_style(networks[style], device=device)
            out = stylize(loaded[style], photo)
            how = f"network (step {loaded[style].train_step})"
        else:
            rec = optimise_style(photo, styles[style], cfg, steps=int(steps), init="content", device=device,
                                 progress=False, loss=loss)
            out = rec.image[0]
            how = f"optimisation, {rec.steps} L-BFGS evaluations"
        seconds = time.perf_counter() - t
        terms = style_loss_of(out, photo, loss)
        app.last_run = {"method": method, "style": style, "content": content, "image": out, "terms": terms,
                        "seconds": seconds, "style_layers": ordered, "config": cfg}
        caption = (f"{how}, {seconds:.2g} s\nloss {terms['total']:.4g} = content {terms.get('feat', 0):.3g} + style "
                   f"{terms.get('style', 0):.3g} + TV {terms.get('tv', 0):.3g}\nstyle layers {', '.join(ordered)}, "
                   f"weights c {content_weight:.3g} s {style_weight:.3g} tv {tv_weight:.3g}")
        fig = plot_images({f"photo: {content}": photo, f"painting: {style}": styles[style], caption: out}, size=3.2)
        return fig

    app = _app(run, controls)
    return app
