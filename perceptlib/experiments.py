"""Runners for notebook 01's reconstruction experiments, with an on-disk cache.

A :class:`RunSpec` names one reconstruction (task, image, layers and weights, distance, loss-network
weights, size, steps, init, optimiser). :func:`run_spec` builds the loss, calls
:func:`perceptlib.reconstruct.reconstruct` and scores the result; with ``cache=DIR`` it stores a PNG and a
JSON per spec under a key derived from the whole spec, so an interrupted run resumes and a committed
run is reloaded instead of recomputed (a cached entry is used only when its target checksum matches).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from .losses import PerceptualLoss
from .reconstruct import Reconstruction, reconstruct
from .vgg import LAYER_NAMES, LossNetwork

__all__ = ["NETWORK_WEIGHTS", "RunSpec", "loss_network", "square_image", "build_loss", "run_spec", "run_specs",
           "image_checksum", "result_row", "balanced_weights", "reconstruction_plan"]

#: Loss-network weight choices: the trained ImageNet VGG-16, or a seeded random one with He (Kaiming)
#: normal init (variance preserving through ReLUs) or PyTorch's default conv init (shrinks with depth).
NETWORK_WEIGHTS: tuple[str, ...] = ("torchvision", "random-kaiming", "random-default")


def square_image(path: str | os.PathLike, size: int) -> Tensor:
    """Load ``path``, centre-crop it to a square and resize to ``(1, 3, size, size)`` float32 in [0, 1],
    rounded to 8-bit levels (antialiased bicubic)."""
    from .images import load_image

    img = load_image(path)
    h, w = img.shape[-2:]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    img = img[None, :, top:top + s, left:left + s]
    if s != size:
        img = F.interpolate(img, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
    return (img.clamp(0, 1) * 255).round() / 255


def loss_network(layers: Iterable[str], weights: str = "torchvision", seed: int = 0) -> LossNetwork:
    """A :class:`LossNetwork` tapping ``layers`` with ``weights`` from :data:`NETWORK_WEIGHTS` (or any value
    ``LossNetwork`` accepts). Random networks are seeded, conv by conv in network order, so a truncated
    network has the same first layers as a deeper one."""
    if weights not in ("random-kaiming", "random-default"):
        return LossNetwork(layers, weights=weights)
    net = LossNetwork(layers, weights=None)
    convs = [m for name, m in zip(net.names, net.body) if name.startswith("conv")]
    with torch.no_grad():
        if weights == "random-kaiming":
            gen = torch.Generator().manual_seed(int(seed))
            for m in convs:
                torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=gen)
                m.bias.zero_()
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed))
                for m in convs:
                    m.reset_parameters()
    return net


@dataclass(frozen=True)
class RunSpec:
    """One reconstruction. ``task``: ``"feature"`` (match ``layers``' features of the image, Fig. 3) or
    ``"style"`` (match their Gram matrices, Fig. 4). ``layers``: ``((name, weight), ...)``."""

    task: str
    image: str
    layers: tuple[tuple[str, float], ...]
    size: int
    steps: int
    distance: str = "l2"
    weights: str = "torchvision"
    init: str = "grey"
    optimizer: str = "lbfgs"
    lr: float | None = None
    tv_weight: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.task not in ("feature", "style"):
            raise ValueError(f"task must be 'feature' or 'style', got {self.task!r}")
        layers = tuple((str(n), float(w)) for n, w in (self.layers.items() if isinstance(self.layers, Mapping)
                                                         else self.layers))
        bad = [n for n, _ in layers if n not in LAYER_NAMES]
        if bad or not layers:
            raise ValueError(f"bad layers {bad or layers}; valid names: " + ", ".join(LAYER_NAMES))
        object.__setattr__(self, "layers", layers)

    @property
    def layer_names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.layers)

    @property
    def label(self) -> str:
        """Short human label: layers (with weights when not all 1), then non-default settings."""
        ws = {w for _, w in self.layers}
        names = "+".join(n if ws == {1.0} else f"{w:g}*{n}" for n, w in self.layers)
        extra = [v for v, d in ((self.distance, "l2"), (self.weights, "torchvision"), (self.init, "grey")) if v != d]
        if self.tv_weight:
            extra.append(f"tv={self.tv_weight:g}")
        return names + (f" [{', '.join(extra)}]" if extra else "")

    def key(self) -> str:
        blob = json.dumps(dataclasses.asdict(self), sort_keys=True)
        digest = hashlib.sha1(blob.encode()).hexdigest()[:10]
        deepest = max(self.layer_names, key=LAYER_NAMES.index)
        dist = self.distance.replace("+", "")
        return f"{self.task}-{self.image}-{deepest}-{self.weights}-{dist}-{self.size}-{digest}"


def build_loss(spec: RunSpec, device: str | torch.device = "cpu") -> PerceptualLoss:
    """The :class:`PerceptualLoss` of ``spec`` (targets not yet set)."""
    taps = [n for n in LAYER_NAMES if n in spec.layer_names]
    net = loss_network(taps, spec.weights, seed=spec.seed)
    layers = dict(spec.layers)
    if spec.task == "feature":
        loss = PerceptualLoss(layers, distance=spec.distance, tv_weight=spec.tv_weight, network=net)
    else:
        loss = PerceptualLoss({}, style_layers=layers, style_weight=1.0, tv_weight=spec.tv_weight, network=net)
    return loss.to(device)


def image_checksum(x: Tensor) -> str:
    """SHA-1 (12 hex) of an image's 8-bit levels."""
    q = (x.detach().float().clamp(0, 1).cpu() * 255).round().to(torch.uint8).numpy().tobytes()
    return hashlib.sha1(q).hexdigest()[:12]


def _scores(img: Tensor, ref: Tensor) -> dict[str, float]:
    from .metrics import lpips, psnr, ssim

    a, b = img[0].float().cpu(), ref[0].float().cpu()
    return {"psnr": float(psnr(a, b)), "ssim": float(ssim(a, b)),
            "lpips": float(lpips(a, b)) if min(a.shape[-2:]) >= 32 else None}  # LPIPS' AlexNet needs 32x32


def _round(d: Mapping[str, float]) -> dict[str, float]:
    return {k: None if v is None else float(f"{v:.6g}") for k, v in d.items()}


def run_spec(spec: RunSpec, image: Tensor, cache: str | os.PathLike | None = None,
             device: str | torch.device = "cpu", progress: bool = True, recompute: bool = False,
             precision: str = "off") -> dict:
    """Run (or load from ``cache``) one reconstruction of ``image`` ``(1, 3, size, size)`` in [0, 1].

    ``precision``: the loss network's (``reconstruct(precision=...)``; the image stays fp32). A bf16 run is
    cached under the spec's key plus ``-bf16``, so it never loads (or overwrites) the fp32 result.

    Returns a dict: ``spec`` (asdict), ``key``, ``label``, ``image`` (the result ``(1, 3, H, W)``, 8-bit
    levels), ``history`` (total loss per step), ``final`` (terms at the result), ``seconds``, ``steps``,
    ``stopped``, ``iterations`` (L-BFGS iterations), ``metrics`` (PSNR/SSIM on Y and LPIPS to ``image``
    for feature runs; ``{}`` for style), ``cached`` (loaded, not computed), ``device``, ``precision``
    (``"fp32"``/``"bf16"``, as used).
    """
    from .images import load_image, save_image
    from .precision import resolve_precision

    if image.dim() == 3:
        image = image[None]
    if tuple(image.shape[-2:]) != (spec.size, spec.size):
        raise ValueError(f"image is {tuple(image.shape[-2:])}, the spec wants {spec.size}x{spec.size}")
    used = resolve_precision(precision, device)
    key, checksum = spec.key() + ("" if used == "fp32" else f"-{used}"), image_checksum(image)
    if cache is not None and not recompute:
        meta, png = Path(cache) / f"{key}.json", Path(cache) / f"{key}.png"
        if meta.is_file() and png.is_file():
            out = json.loads(meta.read_text())
            if out.get("target_checksum") == checksum:
                out.update(image=load_image(png)[None], cached=True)
                return out
    loss = build_loss(spec, device)
    target = image.to(device)
    if spec.task == "feature":
        loss.set_target(target)
    else:
        loss.set_style(target)
    rec: Reconstruction = reconstruct(loss, spec.steps, optimizer=spec.optimizer, init=spec.init, lr=spec.lr,
                                      seed=spec.seed, size=spec.size, progress=progress, precision=used)
    result = (rec.image.clamp(0, 1) * 255).round() / 255
    out = {
        "key": key, "label": spec.label, "spec": json.loads(json.dumps(dataclasses.asdict(spec))),
        "target_checksum": checksum,
        "history": [float(f"{h['total']:.6g}") for h in rec.history], "final": _round(rec.final),
        "seconds": round(rec.seconds, 2), "steps": rec.steps, "iterations": rec.iterations, "stopped": rec.stopped,
        "metrics": _round(_scores(result, image)) if spec.task == "feature" else {},
        "device": str(device) if str(device) != "cpu" else f"cpu ({platform.processor() or platform.machine()}, "
                                                           f"{torch.get_num_threads()} threads)",
        "torch": torch.__version__, "precision": used,
    }
    if cache is not None:
        Path(cache).mkdir(parents=True, exist_ok=True)
        save_image(result[0], Path(cache) / f"{key}.png")
        (Path(cache) / f"{key}.json").write_text(json.dumps(out, indent=1) + "\n")
    out.update(image=result, cached=False)
    return out


def run_specs(specs: Sequence[RunSpec], images: Mapping[str, Tensor], cache: str | os.PathLike | None = None,
              device: str | torch.device = "cpu", progress: bool = True) -> dict[RunSpec, dict]:
    """:func:`run_spec` for each spec (image looked up by ``spec.image``), in order, skipping duplicates."""
    from tqdm.auto import tqdm

    out: dict[RunSpec, dict] = {}
    for spec in tqdm(list(dict.fromkeys(specs)), desc="reconstructions", disable=not progress):
        out[spec] = run_spec(spec, images[spec.image], cache=cache, device=device, progress=False)
    return out


def result_row(res: Mapping, question: str = "") -> dict:
    """A flat table row: question, label, image, size, steps, seconds, final loss, PSNR/SSIM/LPIPS."""
    s = res["spec"]
    return {"question": question, "run": res["label"], "image": s["image"], "size": s["size"], "steps": res["steps"],
            "seconds": res["seconds"], "final_loss": res["final"]["total"],
            "loss_drop": res["final"]["total"] / res["history"][0] if res["history"] and res["history"][0] else None,
            **{k: res["metrics"].get(k) for k in ("psnr", "ssim", "lpips")}}


def balanced_weights(image: Tensor, layers: Sequence[str], init: str = "grey", seed: int = 0,
                     weights: str = "torchvision", digits: int = 2) -> dict[str, float]:
    """Per-layer weights ``1 / l_feat_j(x0, image)`` (rounded to ``digits`` significant digits) so that every
    layer contributes 1 to the loss at the start image ``x0``: combining layers then does not simply
    mean "the layer with the largest feature scale wins"."""
    from .reconstruct import init_image

    x0 = init_image(init, tuple(image.shape[-2:]), seed=seed)
    out = {}
    for name in layers:
        loss = PerceptualLoss({name: 1.0}, network=loss_network([name], weights, seed=seed))
        with torch.no_grad():
            v = float(loss(x0, image))
        out[name] = float(f"{1.0 / v:.{digits}g}")
    return out


def reconstruction_plan(photos: Sequence[str], paintings: Sequence[str], size: int, steps: int,
                        feature_layers: Sequence[str], style_layers: Sequence[str], *, init: str = "grey",
                        noise_layers: Sequence[str] | None = None, conv_layers: Sequence[str] = (),
                        distance_layers: Sequence[str] = (),
                        combined: Sequence[Mapping[str, float]] = (), random_layers: Sequence[str] = (),
                        random_default_layers: Sequence[str] = (), style_init: str = "noise",
                        style_steps: int | None = None) -> dict[str, list[RunSpec]]:
    """Notebook 01's runs, grouped: ``fig3`` (each photo x feature layer, ``init``), ``fig3_noise`` (the
    first photo from noise, as the paper, at ``noise_layers``, default: all feature layers), ``fig4`` (each
    painting x cumulative style set), and the review's questions on the first photo: ``conv_vs_relu``,
    ``distance`` (l1, l1+l2; l2 is in fig3), ``combined`` (the given ``{layer: weight}`` sets), ``random``
    (He-init and default-init random VGG).
    Runs that a question shares with Fig. 3 are the same spec, so they are computed once."""
    feat = lambda img, layers, **kw: RunSpec("feature", img, tuple(layers.items()) if isinstance(layers, Mapping)
                                             else tuple((n, 1.0) for n in layers), size, steps,
                                             init=kw.pop("init", init), **kw)
    p0 = photos[0]
    plan = {
        "fig3": [feat(p, [n]) for p in photos for n in feature_layers],
        "fig3_noise": [feat(p0, [n], init="noise") for n in (feature_layers if noise_layers is None else noise_layers)],
        "fig4": [RunSpec("style", s, tuple((n, 1.0) for n in style_layers[: i + 1]), size, style_steps or steps,
                         init=style_init) for s in paintings for i in range(len(style_layers))],
        "conv_vs_relu": [spec for n in conv_layers for spec in (feat(p0, [n]), feat(p0, ["relu" + n[4:]]))],
        "distance": [feat(p0, [n], distance=d) for n in distance_layers for d in ("l2", "l1", "l1+l2")],
        "combined": [feat(p0, [n]) for w in combined for n in w] + [feat(p0, dict(w)) for w in combined],
        "random": [feat(p0, [n], weights=w) for n in random_layers for w in ("torchvision", "random-kaiming")]
        + [feat(p0, [n], weights="random-default") for n in random_default_layers],
    }
    return {k: list(dict.fromkeys(v)) for k, v in plan.items()}
