"""Style-transfer glue: the training data, loss and network from a :class:`~perceptlib.config.StyleConfig`,
training with the shared loop, stylising with a trained network, and the optimisation baseline
(Gatys et al.) with the *same* loss through :func:`perceptlib.reconstruct.reconstruct`.

Typical use::

    cfg = for_mode(PAPER_STYLE, "cpu")
    style = load_image(image_paths("styles")[...])
    history = train_style(cfg, style, "results/style_starry_night")
    net = load_style("results/style_starry_night")
    out = stylize(net, photo)                         # (3, H, W) -> (3, H, W) float in [0, 1]
    opt = optimise_style(photo, style, cfg, steps=500)  # the baseline, same loss and weights
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import StyleConfig
from .losses import PerceptualLoss
from .nets import TransformerNet
from .train import History, infer, load_model, train

__all__ = ["StyleDataset", "StyleLoss", "style_image_tensor", "build_style_model", "build_style_loss",
           "train_style", "load_style", "style_of", "stylize", "optimise_style", "style_loss_of", "compare_with_optimisation",
           "iterations_matching"]


def _resize_short(img: Tensor, size: int) -> Tensor:
    """``(3, H, W)`` -> shorter side ``size`` (antialiased bilinear), float in [0, 1]."""
    h, w = img.shape[-2:]
    s = size / min(h, w)
    hw = (max(size, round(h * s)), max(size, round(w * s)))
    if hw == (h, w):
        return img
    return F.interpolate(img[None], size=hw, mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)


def style_image_tensor(style: Tensor | str | os.PathLike, size: int) -> Tensor:
    """The style target ``(1, 3, h, w)`` in [0, 1] with its *longer* side resized to ``size`` (as the
    official code's ``-style_image_size``). ``style``: a file or a ``(3, H, W)``/``(1, 3, H, W)`` tensor."""
    from .images import load_image

    img = load_image(style) if not isinstance(style, Tensor) else style.detach().float()
    if img.dim() == 4:
        img = img[0]
    if img.dim() != 3 or img.shape[0] != 3:
        raise ValueError(f"style image must be (3, H, W) or (1, 3, H, W), got {tuple(img.shape)}")
    h, w = img.shape[-2:]
    s = size / max(h, w)
    hw = (max(1, round(h * s)), max(1, round(w * s)))
    return F.interpolate(img[None], size=hw, mode="bilinear", antialias=s < 1, align_corners=False).clamp(0, 1)


class StyleDataset(torch.utils.data.Dataset):
    """Seeded square training crops: item ``i`` is photo ``i % n`` with its shorter side resized to
    ``size``, a ``size x size`` crop and a horizontal flip drawn from ``default_rng((seed, i))``.
    Photos are decoded and resized once and kept as 8-bit. Items: ``(3, size, size)`` float32 in [0, 1].
    (The official code resizes COCO to 256x256 without cropping; crops give more variety from our
    159 photos.)"""

    def __init__(self, images: Sequence[str | os.PathLike | Tensor], size: int, seed: int = 0,
                 crops_per_image: int = 100) -> None:
        from .images import load_image

        if not images:
            raise ValueError("StyleDataset needs at least one image")
        self.size, self.seed = int(size), int(seed)
        self.items: list[Tensor] = []
        for im in images:
            t = im.float() if isinstance(im, Tensor) else load_image(im)
            self.items.append((_resize_short(t, self.size) * 255).round().to(torch.uint8))
        self.length = len(self.items) * int(crops_per_image)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Tensor:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for StyleDataset of length {self.length}")
        img = self.items[index % len(self.items)]
        rng = np.random.default_rng((self.seed, index))
        h, w = img.shape[-2:]
        y, x = int(rng.integers(0, h - self.size + 1)), int(rng.integers(0, w - self.size + 1))
        crop = img[:, y:y + self.size, x:x + self.size]
        if rng.random() < 0.5:
            crop = crop.flip(-1)
        return crop.float().div(255).contiguous()


class StyleLoss(nn.Module):
    """``loss_fn(model, photos) -> (total, terms)`` for :func:`perceptlib.train.train`: the stylised
    ``model(photos)`` against the photos (content) and the cached style Grams."""

    def __init__(self, loss: PerceptualLoss) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, model: nn.Module, batch: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return self.loss(model(batch), batch, return_terms=True)  # type: ignore[return-value]


def build_style_model(cfg: StyleConfig) -> TransformerNet:
    """A freshly initialised :class:`~perceptlib.nets.TransformerNet` for ``cfg`` (seeded)."""
    torch.manual_seed(cfg.seed)
    return TransformerNet(channels=cfg.channels, norm=cfg.norm, padding=cfg.padding, upsample=cfg.upsample,
                          head=cfg.head)


def build_style_loss(cfg: StyleConfig, style: Tensor | str | os.PathLike,
                     device: str | torch.device | None = None) -> PerceptualLoss:
    """The paper's style-transfer objective for ``cfg``: ``content_weight * sum_j w_j l_feat_j +
    style_weight * sum_j w_j l_style_j + tv_weight * l_tv`` with the style Grams of ``style`` (resized
    to ``cfg.style_size``) cached."""
    loss = PerceptualLoss(layers={k: cfg.content_weight * w for k, w in cfg.content_layers},
                          style_layers=dict(cfg.style_layers), style_weight=cfg.style_weight,
                          tv_weight=cfg.tv_weight, weights=cfg.vgg_weights)
    if device is not None:
        loss.to(device)
    dev = next(loss.net.buffers()).device if loss.net is not None else torch.device("cpu")
    loss.set_style(style_image_tensor(style, cfg.style_size).to(dev))
    return loss


def train_style(cfg: StyleConfig, style: Tensor | str | os.PathLike, out_dir: str | os.PathLike,
                images: Sequence[str | os.PathLike | Tensor] | None = None, resume: bool = True,
                progress: bool = True, workers: int = 0, max_seconds: float | None = None) -> History:
    """Train a :class:`~perceptlib.nets.TransformerNet` for one ``style`` image into ``out_dir`` with the
    shared loop (:func:`perceptlib.train.train`; resumes from ``out_dir/checkpoint.pt``). ``images``:
    training photos (default: ``cfg.train_set``)."""
    from .sr import training_images

    if images is None:
        images = training_images(cfg.train_set)
    data = StyleDataset(list(images), cfg.image_size, seed=cfg.seed)
    from .train import _resolve_device

    loss = build_style_loss(cfg, style, device=_resolve_device(cfg.device))
    from . import distributed
    from .runlock import RunLock

    if distributed.is_main():  # refused at once if a live run holds the folder, before style.png is touched
        RunLock(out_dir, "train_style").acquire().release()
        _save_style_record(out_dir, style, cfg)
    return train(build_style_model(cfg), StyleLoss(loss), data, cfg, out_dir, resume=resume,
                 progress=progress, workers=workers, max_seconds=max_seconds)


def _save_style_record(out_dir: str | os.PathLike, style: Tensor | str | os.PathLike, cfg: StyleConfig) -> None:
    """``out_dir/style.png`` (the style target as used, longer side ``cfg.style_size``) and ``style.json``."""
    import json
    from pathlib import Path

    from .images import save_image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    target = style_image_tensor(style, cfg.style_size)[0]
    save_image(target, out / "style.png")
    name = Path(style).stem if not isinstance(style, Tensor) else "tensor"
    (out / "style.json").write_text(json.dumps({"name": name, "source": str(style) if not isinstance(style, Tensor)
                                                else "tensor", "size": list(target.shape[-2:])}, indent=2) + "\n")


def style_of(path: str | os.PathLike) -> tuple[str, Tensor]:
    """``(name, (3, h, w) style target)`` recorded next to a trained network by :func:`train_style`."""
    import json
    from pathlib import Path

    from .images import load_image

    folder = Path(path) if Path(path).is_dir() else Path(path).parent
    rec = folder / "style.json"
    if not rec.is_file():
        raise FileNotFoundError(f"no style.json next to {path} (written by train_style)")
    return json.loads(rec.read_text())["name"], load_image(folder / "style.png")


def load_style(path: str | os.PathLike, device: str | torch.device = "cpu") -> TransformerNet:
    """The trained :class:`~perceptlib.nets.TransformerNet` in a ``model.pt``/``checkpoint.pt`` (or their
    folder), in eval mode. Raises :class:`perceptlib.train.CheckpointError` (a ValueError) for a
    missing, unreadable or non-style checkpoint."""
    return load_model(path, expect="TransformerNet", device=device)  # type: ignore[return-value]


def stylize(model: nn.Module, image: Tensor, precision: str = "auto") -> Tensor:
    """Stylise ``image`` ``(3, H, W)`` or ``(N, 3, H, W)`` float in [0, 1], any size, with a trained network
    (eval mode, no grad, on the model's device) -> the same shape, float32 in [0, 1] on the CPU.
    ``precision``: ``auto`` (bf16 where the device has it), ``bf16`` or ``off`` (:mod:`perceptlib.precision`)."""
    if not isinstance(image, Tensor) or image.dim() not in (3, 4) or image.shape[-3] != 3:
        got = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
        raise ValueError(f"image must be a (3, H, W) or (N, 3, H, W) tensor, got {got}")
    if not image.is_floating_point():
        raise TypeError(f"expected a float image in [0, 1], got dtype {image.dtype}; use x.float() / 255")
    batch = image[None] if image.dim() == 3 else image
    out = infer(model, batch, precision).clamp_(0, 1)
    return out[0] if image.dim() == 3 else out


def style_loss_of(image: Tensor, content: Tensor, loss: PerceptualLoss) -> dict[str, float]:
    """The terms of ``loss`` for a stylised ``image`` against ``content`` (both ``(3, H, W)`` or
    ``(1, 3, H, W)`` in [0, 1]): to compare a network's output with the optimisation result."""
    dev = next(loss.net.buffers()).device if loss.net is not None else torch.device("cpu")
    x = (image[None] if image.dim() == 3 else image).float().to(dev)
    c = (content[None] if content.dim() == 3 else content).float().to(dev)
    with torch.no_grad():
        _, terms = loss(x, c, return_terms=True)
    return {k: float(v) for k, v in terms.items()}


def optimise_style(content: Tensor, style: Tensor | str | os.PathLike, cfg: StyleConfig, steps: int = 500,
                   init: str | Tensor = "noise", optimizer: str = "lbfgs", seed: int = 0,
                   device: str | torch.device | None = None, progress: bool = True,
                   loss: PerceptualLoss | None = None, **kwargs):
    """The optimisation baseline (Gatys et al., as the paper's Table 1 and Fig. 5): optimise an image
    from ``init`` (white noise, as the paper; or ``"content"``) for ``steps`` loss evaluations with
    projected L-BFGS, minimising the same loss as :func:`train_style` for ``cfg`` with ``content``
    ``(3, H, W)`` in [0, 1] as the content target. Returns a :class:`perceptlib.reconstruct.Reconstruction`."""
    from .reconstruct import reconstruct
    from .train import _resolve_device

    dev = torch.device(device) if device is not None else _resolve_device(cfg.device)
    if loss is None:
        loss = build_style_loss(cfg, style, device=dev)
    c = (content[None] if content.dim() == 3 else content).float().to(dev)
    loss.set_target(c)
    if isinstance(init, str) and init == "content":
        init = c
    try:
        return reconstruct(loss, steps=steps, optimizer=optimizer, init=init, seed=seed, progress=progress,
                           device=dev, **kwargs)
    finally:
        loss.set_target(None)




def compare_with_optimisation(model: nn.Module, content: Tensor, style: Tensor | str | os.PathLike,
                              cfg: StyleConfig, steps: int = 500, init: str = "noise",
                              device: str | torch.device | None = None, progress: bool = False) -> dict:
    """Stylise ``content`` ``(3, H, W)`` in [0, 1] with the trained ``model`` and by optimisation with the
    same loss (``cfg``'s weights and layers, ``steps`` L-BFGS evaluations from ``init``). Returns
    ``{"network": {"image", "terms", "seconds"}, "optimisation": {"image", "terms", "seconds", "curve"}}``
    with images ``(3, H, W)`` on the CPU, loss terms as floats and ``curve`` the total loss per evaluation."""
    import time

    from .train import _resolve_device

    dev = torch.device(device) if device is not None else _resolve_device(cfg.device)
    loss = build_style_loss(cfg, style, device=dev)
    model = model.to(dev)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t = time.perf_counter()
    out = stylize(model, content)
    net_s = time.perf_counter() - t
    rec = optimise_style(content, style, cfg, steps=steps, init=init, device=dev, progress=progress, loss=loss)
    return {"network": {"image": out, "terms": style_loss_of(out, content, loss), "seconds": net_s},
            "optimisation": {"image": rec.image[0], "terms": style_loss_of(rec.image[0], content, loss),
                             "seconds": rec.seconds, "curve": rec.losses}}


def iterations_matching(model: nn.Module, photos: Sequence[Tensor], style: Tensor | str | os.PathLike,
                        cfg: StyleConfig, size: int = 256, max_steps: int = 500, precision: str = "off",
                        device: str | torch.device | None = None, seed: int = 0, goal: int | None = None) -> dict:
    """The paper's Fig. 5 measure: how many L-BFGS evaluations of the optimisation baseline (white-noise
    start, the same loss as the network's training: ``cfg``'s layers and weights) it takes to reach the
    network's loss, per photo.

    Each photo ``(3, H, W)`` in [0, 1] is centre-cropped and resized to ``size``²; the network's output is
    scored with the loss in fp32; the optimisation stops as soon as its best loss so far is at or below
    the network's (so a network worth ``k`` evaluations costs ``k`` of them), or after ``max_steps``.
    ``precision``: the loss network's during the optimisation (``off``: fp32, the default). ``goal``: an
    evaluation count (e.g. 50, the paper's lower bound); the optimisation then runs to at least ``goal``
    evaluations and each photo also gets ``loss_at_goal`` (its best loss after ``goal`` evaluations: the loss a
    network worth ``goal`` evaluations reaches) and ``goal_ratio`` (that loss / the network's).

    Returns ``{"size", "max_steps", "photos": [{"network_loss", "iterations" (None: not reached),
    "optimisation_loss" (best reached)}], "iterations_matching_network": mean over photos (a photo not
    reached counts as max_steps), "min", "all_reached"}``; with ``goal`` also ``"goal"`` and ``"goal_ratio"``
    (the mean over photos).
    """
    if goal is not None and not 1 <= goal <= max_steps:
        raise ValueError(f"goal must be between 1 and max_steps={max_steps}, got {goal}")
    from .speed import square_crop
    from .train import _resolve_device

    dev = torch.device(device) if device is not None else _resolve_device(cfg.device)
    loss = build_style_loss(cfg, style, device=dev)
    model = model.to(dev)
    rows = []
    for photo in photos:
        x = square_crop(photo, size)
        net_loss = style_loss_of(stylize(model, x), x, loss)["total"]
        state = {"best": float("inf"), "hit": None, "at_goal": None, "best_at_hit": None}

        def stop(step: int, terms: dict, image: Tensor) -> bool:
            state["best"] = min(state["best"], terms["total"])
            if state["hit"] is None and state["best"] <= net_loss:
                state["hit"], state["best_at_hit"] = step + 1, state["best"]
            if goal is not None and step + 1 == goal:
                state["at_goal"] = state["best"]
            return state["hit"] is not None and (goal is None or step + 1 >= goal)

        optimise_style(x, style, cfg, steps=max_steps, init="noise", seed=seed, device=dev, progress=False, loss=loss,
                       callback=stop, precision=precision)
        row = {"network_loss": net_loss, "iterations": state["hit"],
               "optimisation_loss": state["best_at_hit"] if state["hit"] is not None else state["best"]}
        if goal is not None:
            row["loss_at_goal"] = state["at_goal"]
            row["goal_ratio"] = state["at_goal"] / net_loss if state["at_goal"] is not None else None
        rows.append(row)
    its = [r["iterations"] if r["iterations"] is not None else max_steps for r in rows]
    res = {"size": int(size), "max_steps": int(max_steps), "photos": rows,
           "iterations_matching_network": float(np.mean(its)), "min": int(min(its)),
           "all_reached": all(r["iterations"] is not None for r in rows)}
    if goal is not None:
        ratios = [r["goal_ratio"] for r in rows if r["goal_ratio"] is not None]
        res.update(goal=int(goal), goal_ratio=float(np.mean(ratios)) if len(ratios) == len(rows) else None)
    return res
