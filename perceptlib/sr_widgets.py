"""Super-resolution widgets (notebook 02): compare trained SR networks, train a small one with a chosen loss.

:func:`sr_compare_app` shows an HR crop, bicubic and each picked network's output with their PSNRs;
:func:`sr_train_app` trains an :class:`~perceptlib.nets.SRNet` with up to two VGG-16 layers and a pixel
weight (capped on a CPU) and shows its loss curves and a crop of a held-out image, which
:func:`check_disjoint` makes sure is not a training image. Both are :func:`perceptlib.widget_base._app`
apps (Run button, ``app.controls``, ``app.hint``, ``app.notes``, ``app.last_run``); they are re-exported by
:mod:`perceptlib.widgets`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor

from .losses import DISTANCES
from .widget_base import HINTS, TAP_OPTIONS, _app, _line, _set_line

__all__ = ["sr_compare_app", "sr_train_app", "check_disjoint"]

_SR_PIXEL_WEIGHTS = (0.0, 1.0, 1e3, 1e4, 1e5, 1e6, 1e7)


def _sr_image(img) -> Tensor:
    """A path or ``(3, H, W)`` / ``(1, 3, H, W)`` tensor -> ``(3, H, W)`` float in [0, 1]."""
    if isinstance(img, Tensor):
        return (img[0] if img.dim() == 4 else img).float()
    from .images import load_image

    return load_image(img)


def _sr_crop_box(shape, top_pct: float, left_pct: float, size: int, scale: int) -> tuple[int, int, int]:
    """``(top, left, side)`` in HR pixels: ``size`` clamped to the image and aligned to ``scale``,
    the position given in percent of the free range."""
    h, w = shape[-2:]
    side = max(scale, min(int(size), h, w) // scale * scale)
    top = int(round((h - side) * float(top_pct) / 100)) // scale * scale
    left = int(round((w - side) * float(left_pct) / 100)) // scale * scale
    return top, left, side


def sr_compare_app(models: Mapping[str, object], images: Mapping[str, object], *, crop: int = 96,
                   hist_match: bool = False, device: str = "cpu", precision: str = "auto", hint: str | None = None):
    """Compare trained SR networks on an evaluation image: HR crop, bicubic and each picked model's
    output (optionally histogram-matched to the LR input, the paper's post-processing), each titled with
    the PSNR (Y, ``scale``-pixel border) of the whole image and of the crop.

    ``models``: ``{name: SRNet or checkpoint folder/file}`` (folders load on first use); ``images``:
    ``{name: path or (3, H, W) in [0, 1]}``. The LR input follows the benchmark protocol (bicubic ×1/s
    without blur, 8-bit). Models of different scales may be picked together (one bicubic panel per scale).
    ``app.last_run``: ``{"image", "models", "hist_match", "box": (top, left, side), "psnr": {panel: dB},
    "psnr_crop": {panel: dB}, "crops": {panel: (3, side, side)}}``."""
    import ipywidgets as W

    from .degrade import bicubic_upsample, degrade, mod_crop
    from .metrics import psnr
    from .plots import plot_sr_panels
    from .sr import load_sr, upscale

    if not models or not images:
        raise ValueError("sr_compare_app needs at least one model and one image")
    loaded: dict = {k: v for k, v in models.items() if not isinstance(v, (str, bytes)) and hasattr(v, "scale")}
    names = list(models)
    controls = {
        "models": W.SelectMultiple(options=names, value=tuple(names[:2]), rows=min(6, len(names)),
                                   description="models").add_class("pl-model"),
        "image": W.Dropdown(options=list(images), description="image").add_class("pl-image"),
        "top": W.IntSlider(value=50, min=0, max=100, step=1, description="crop top %", continuous_update=False
                           ).add_class("pl-crop-top"),
        "left": W.IntSlider(value=50, min=0, max=100, step=1, description="crop left %", continuous_update=False
                            ).add_class("pl-crop-left"),
        "size": W.IntSlider(value=crop, min=16, max=256, step=8, description="crop side", continuous_update=False
                            ).add_class("pl-crop-size"),
        "hist_match": W.Checkbox(value=hist_match, description="histogram match").add_class("pl-histmatch"),
    }

    def model(name):
        if name not in loaded:
            loaded[name] = load_sr(models[name], device=device)
        return loaded[name]

    def run(models, image, top, left, size, hist_match):
        if not models:
            raise ValueError("pick at least one model")
        nets = {n: model(n) for n in models}
        scales = sorted({int(m.scale) for m in nets.values()})
        hr = mod_crop(_sr_image(images[image]), max(scales))  # scales are powers of 2
        box = _sr_crop_box(hr.shape, top, left, size, max(scales))
        t, lft, side = box
        sl = (..., slice(t, t + side), slice(lft, lft + side))
        outs: dict[str, tuple[Tensor, int]] = {}
        lrs = {s: degrade(hr, s, None, quantize_lr=True) for s in scales}
        for s in scales:
            outs[f"bicubic x{s}"] = (bicubic_upsample(lrs[s], s).clamp(0, 1), s)
        for n, m in nets.items():
            s = int(m.scale)
            outs[n + (" + h.m." if hist_match else "")] = (
                upscale(m, lrs[s], hist_match=hist_match, precision=precision).clamp(0, 1), s)
        scores = {k: float(psnr(v, hr, s)) for k, (v, s) in outs.items()}
        crop_scores = {k: float(psnr(v[sl], hr[sl], 0)) for k, (v, s) in outs.items()}
        panels = {f"HR {image}": hr, f"HR crop {side}x{side}": hr[sl]}
        panels.update({f"{k}\n{scores[k]:.2f} dB (crop {crop_scores[k]:.2f})": v[sl] for k, (v, s) in outs.items()})
        app.last_run = {"image": image, "models": list(models), "hist_match": bool(hist_match), "box": box,
                        "psnr": scores, "psnr_crop": crop_scores, "crops": {k: v[sl] for k, (v, s) in outs.items()}}
        return plot_sr_panels(panels, cols=min(4, len(panels)), boxes={f"HR {image}": (t, lft, side, side)}, size=2.6)

    app = _app(run, controls, HINTS["sr_compare_app"] if hint is None else hint)
    return app


def _image_size(img) -> tuple[int, int] | None:
    """``(H, W)`` of a tensor, or of an image file from its header; None when unreadable."""
    if isinstance(img, Tensor):
        return tuple(img.shape[-2:])
    try:
        from PIL import Image

        with Image.open(img) as im:
            return im.size[1], im.size[0]
    except (OSError, ValueError):
        return None


def check_disjoint(train: Sequence[object], evals: Mapping[str, object]) -> None:
    """Raise ValueError if an evaluation image is also a training image: the same file (resolved path) or
    the same 8-bit pixels (tensors, or a tensor and a file). Items: paths or ``(3, H, W)`` / ``(1, 3, H, W)``."""
    from pathlib import Path

    def levels(img) -> Tensor:
        return (_sr_image(img).clamp(0, 1) * 255).round()

    train_paths = {Path(t).resolve(): t for t in train if not isinstance(t, Tensor)}
    train_tensors = [t for t in train if isinstance(t, Tensor)]
    for name, e in evals.items():
        if not isinstance(e, Tensor) and Path(e).resolve() in train_paths:
            raise ValueError(f"eval image {name!r} ({e}) is also a training image; evaluate on held-out images")
        size = _image_size(e)
        # only images of the same size can be equal: file headers are read first, pixels only on a size match
        same_size = [t for t in train_tensors if tuple(t.shape[-2:]) == size]
        if isinstance(e, Tensor):
            same_size += [t for t in train_paths.values() if _image_size(t) == size]
        if same_size:
            x = levels(e)
            if any(_same_pixels(x, levels(t)) for t in same_size):
                raise ValueError(f"eval image {name!r} has the same pixels as a training image; evaluate on "
                                 "held-out images")


def _same_pixels(a: Tensor, b: Tensor) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.equal(a, b))


def sr_train_app(images: Sequence[object], eval_images: Mapping[str, object], *, cfg=None, steps: int = 200,
                 quick_steps: int = 10, quick_patch: int = 48, layers: Sequence[str] = ("relu2_2", ""),
                 weights: Sequence[float] = (1.0, 1.0), pixel_weight: float = 0.0, crop: int = 64,
                 device: str | None = None, out_dir: str | None = None, hint: str | None = None):
    """Train a small SR network with a loss of your choice: up to two VGG-16 layers with weights, a pixel
    weight (``l_feat + pixel_weight * l_pixel``; no layer = the ``l_pixel`` baseline), the distance, the
    scale, the HR patch side and the steps. ``images``: training photos (paths or ``(3, H, W)``);
    ``eval_images``: ``{name: path or (3, H, W)}`` for the result crop, held out: a ValueError is raised if
    one is also a training image (:func:`check_disjoint`). ``cfg``: the starting
    :class:`~perceptlib.config.SRConfig` (default: the paper's, with the quick mode's batch); its batch,
    precision and VGG weights apply.

    On CUDA the chosen size runs. On a CPU only ``min(steps, quick_steps)`` steps at ``min(patch,
    quick_patch)``² run; the measured time per step gives an estimate for the chosen size (steps × patch
    area), printed and in ``app.last_run["estimate_s"]``. Before a run, the line ``app.notes["plan"]`` says
    what Run will train (steps, patch, batch, device, precision, loss, VGG weights) and, where the CPU cap
    applies, that it does. The figure shows the loss terms and a crop (HR, bicubic, the network) of the
    picked evaluation image. ``app.last_run``: ``{"history", "config", "ran_config", "plan", "terms",
    "steps_run", "seconds", "seconds_per_step", "estimate_s", "psnr", "psnr_bicubic", "crop"}``."""
    import dataclasses
    import tempfile
    import time

    import ipywidgets as W
    import torch
    from matplotlib.figure import Figure

    from .config import PAPER_SR, for_mode
    from .degrade import bicubic_upsample, degrade, mod_crop
    from .metrics import psnr
    from .plots import to_numpy_image
    from .precision import resolve_precision
    from .sr import load_sr, train_sr, upscale

    if not images or not eval_images:
        raise ValueError("sr_train_app needs training images and at least one evaluation image")
    train_images = list(images)
    check_disjoint(train_images, eval_images)
    base = cfg or for_mode(PAPER_SR, "quick")
    dev = torch.device(device) if device else (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    cuda = dev.type == "cuda"
    options = [("(none)", "")] + [(n, n) for n in TAP_OPTIONS]
    layers, weights = list(layers) + [""] * 2, list(weights) + [1.0] * 2
    controls: dict = {}
    for i in range(2):
        controls[f"layer{i + 1}"] = W.Dropdown(options=options, value=layers[i], description=f"layer {i + 1}"
                                               ).add_class("pl-layer")
        controls[f"weight{i + 1}"] = W.FloatLogSlider(value=weights[i], base=10, min=-3, max=3, step=0.25,
                                                      description=f"weight {i + 1}", continuous_update=False
                                                      ).add_class("pl-weight")
    pw_options = sorted(set(_SR_PIXEL_WEIGHTS) | {float(pixel_weight)})
    controls.update({
        "pixel_weight": W.Dropdown(options=pw_options, value=float(pixel_weight), description="pixel weight"
                                   ).add_class("pl-weight").add_class("pl-pixel-weight"),
        "distance": W.Dropdown(options=list(DISTANCES), value=base.distance, description="distance"
                               ).add_class("pl-distance"),
        "scale": W.Dropdown(options=[4, 8], value=base.scale if base.scale in (4, 8) else 4, description="scale"
                            ).add_class("pl-scale"),
        "patch": W.Dropdown(options=sorted({48, 96, 288, int(base.patch_size)}), value=int(base.patch_size),
                            description="HR patch").add_class("pl-patch"),
        "steps": W.IntSlider(value=steps, min=1, max=max(200_000, steps), step=1, description="steps",
                             continuous_update=False).add_class("pl-steps"),
        "image": W.Dropdown(options=list(eval_images), description="eval image").add_class("pl-image"),
    })

    def plan(layer1, weight1, layer2, weight2, pixel_weight, distance, scale, patch, steps, image):
        """The chosen config, the one that runs here, the loss label and the line saying what runs."""
        picked: dict[str, float] = {}
        for name, w in ((layer1, weight1), (layer2, weight2)):
            if name:
                picked[name] = picked.get(name, 0.0) + float(w)
        if not picked and not pixel_weight:
            raise ValueError("pick a layer or a pixel weight > 0")
        chosen = dataclasses.replace(base, scale=int(scale), patch_size=int(patch), steps=int(steps),
                                     distance=distance, loss="feat" if picked else "pixel",
                                     layers=tuple(picked.items()), pixel_weight=float(pixel_weight),
                                     device=dev.type, checkpoint_every=max(int(steps), 1))
        if chosen.patch_size % (2 * chosen.scale):
            raise ValueError(f"HR patch {patch} is not a multiple of 2 x scale {scale}")
        small = max(int(quick_patch) // int(scale) * int(scale), 6 * int(scale))  # LR patches of >= 6 pixels
        ran = chosen if cuda else dataclasses.replace(chosen, patch_size=min(small, chosen.patch_size),
                                                      steps=min(int(steps), int(quick_steps)),
                                                      checkpoint_every=min(int(steps), int(quick_steps)))
        ran = dataclasses.replace(ran, log_every=max(1, ran.steps // 100))
        label = " + ".join([f"{w:g}*{n}" for n, w in picked.items()] +
                           ([f"{float(pixel_weight):g}*pixel"] if picked and pixel_weight else [])) or "pixel"
        vgg = f"VGG-16 {ran.vgg_weights}" if picked else "no VGG (l_pixel only)"
        line = (f"Run trains {ran.steps} steps, batch {ran.batch_size} of {ran.patch_size}² HR patches "
                f"(x{ran.scale}, LR {ran.patch_size // ran.scale}²) on {dev.type}, "
                f"{resolve_precision(ran.precision, dev)}, loss {label} [{ran.distance}], {vgg}; "
                f"evaluates on {image} (not a training image)")
        if (ran.steps, ran.patch_size) != (chosen.steps, chosen.patch_size):
            line += (f". CPU: capped to {ran.steps} steps at {ran.patch_size}² (sliders ask {chosen.steps} at "
                     f"{chosen.patch_size}²)")
        return chosen, ran, label, line

    plan_note = _line("", "pl-plan")

    def show_plan(change=None):
        try:
            text = plan(**{k: w.value for k, w in controls.items()})[3]
        except ValueError as e:
            text = f"Run would fail: {e}"
        _set_line(plan_note, text)

    for w in controls.values():
        w.observe(show_plan, names="value")
    show_plan()

    def run(layer1, weight1, layer2, weight2, pixel_weight, distance, scale, patch, steps, image):
        chosen, ran, label, line = plan(layer1, weight1, layer2, weight2, pixel_weight, distance, scale, patch,
                                        steps, image)
        with tempfile.TemporaryDirectory(prefix="pl_sr_train_") as tmp:  # checkpoints kept only with out_dir
            folder = out_dir or tmp
            t0 = time.perf_counter()
            hist = train_sr(ran, folder, resume=False, progress=False, images=train_images)
            seconds = time.perf_counter() - t0
            net = load_sr(folder, device=dev)
        per_step = seconds / max(1, ran.steps)
        estimate = per_step * chosen.steps * (chosen.patch_size / ran.patch_size) ** 2
        hr = mod_crop(_sr_image(eval_images[image]), ran.scale)
        lr = degrade(hr, ran.scale, None, quantize_lr=True)
        sr = upscale(net, lr).clamp(0, 1)
        bic = bicubic_upsample(lr, ran.scale).clamp(0, 1)
        t, lft, side = _sr_crop_box(hr.shape, 50, 50, crop, ran.scale)
        sl = (..., slice(t, t + side), slice(lft, lft + side))
        scores = {"psnr": float(psnr(sr, hr, ran.scale)), "psnr_bicubic": float(psnr(bic, hr, ran.scale))}
        note = (f"ran {ran.steps} steps at {ran.patch_size}² on {dev.type} in {seconds:.1f} s ({per_step:.3g} s/step)"
                + ("" if cuda else f"; the chosen {chosen.steps} steps at {chosen.patch_size}² would take "
                   f"~{estimate / 60:.1f} min here"))
        print(note)
        app.last_run = {"history": hist.to_dict(), "config": chosen, "ran_config": ran, "label": label,
                        "plan": line, "terms": sorted(hist.terms), "steps_run": ran.steps, "seconds": seconds,
                        "seconds_per_step": per_step, "estimate_s": estimate, "crop": sr[sl],
                        "box": (t, lft, side), **scores}
        fig = Figure(figsize=(12, 3), layout="constrained")  # not pyplot's: shown once, by the widget
        axes = fig.subplots(1, 4, gridspec_kw={"width_ratios": [1.6, 1, 1, 1]})
        ax = axes[0]
        for term in sorted(hist.terms):
            if term != "grad_norm":
                ax.plot(hist.step, hist.terms[term], label=term, lw=1)
        ax.set_yscale("log"); ax.set_xlabel("step"); ax.set_title(f"loss: {label}", fontsize=9)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.28), ncol=3, frameon=False)  # off the curves
        for a, (title, img) in zip(axes[1:], {f"HR {image} (held out)": hr[sl],
                                              f"bicubic x{ran.scale}\n{scores['psnr_bicubic']:.2f} dB": bic[sl],
                                              f"net, {ran.steps} steps at {ran.patch_size}²\n{scores['psnr']:.2f} dB":
                                              sr[sl]}.items()):
            a.imshow(to_numpy_image(img), interpolation="nearest"); a.set_title(title, fontsize=9); a.set_axis_off()
        return fig

    app = _app(run, controls, HINTS["sr_train_app"] if hint is None else hint, {"plan": plan_note})
    return app
