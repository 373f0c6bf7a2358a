"""Run modes shared by every notebook and command: ``quick``, ``cpu`` and ``paper``.

``quick`` is what nbval runs on a CPU in minutes, ``cpu`` the committed real run sized for
2 cores, ``paper`` the paper's settings for a GPU. The default is ``paper`` when CUDA is
available, else ``cpu``; the environment variable ``PERCEPTLIB_MODE`` overrides both.

Training configs are frozen dataclasses: :class:`SRConfig` / :class:`StyleConfig`, whose defaults
``PAPER_SR`` / ``PAPER_STYLE`` are the paper's values (each field's ``metadata["source"]`` cites
docs/paper.md: [P] ECCV text, [P'] other version, [S] supplement, [L] official Lua code, [PE]
pytorch/examples, [PY] pystiche_papers, [O] other literature, [X] our experiments under results/;
``metadata["help"]`` is the CLI help). :func:`for_mode` derives the ``quick`` and
``cpu`` sizes, :func:`differences` lists ``(field, paper, ours, reason)``.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch

from .precision import PRECISIONS

__all__ = ["MODES", "resolve_mode", "default_device"]

MODES = ("quick", "cpu", "paper")
MODE_ENV = "PERCEPTLIB_MODE"


def resolve_mode(mode: str | None = None) -> str:
    """Return ``mode`` if given, else ``$PERCEPTLIB_MODE``, else ``paper`` on CUDA and ``cpu`` otherwise."""
    chosen = mode or os.environ.get(MODE_ENV) or ("paper" if torch.cuda.is_available() else "cpu")
    chosen = chosen.strip().lower()
    if chosen not in MODES:
        raise ValueError(f"unknown mode {chosen!r} (from {'argument' if mode else MODE_ENV}); choose one of {MODES}")
    return chosen


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# ---------------------------------------------------------------------------------------------
# Training configs: the paper's values (PAPER_SR, PAPER_STYLE) and the derived quick/cpu modes.
# Each field carries its source in metadata["source"] (keys of /work/shared/PAPER.md: [P] ECCV text,
# [P'] another version, [S] supplementary, [L] official Lua code, [PE] pytorch/examples) and a help text.

__all__ += ["SRConfig", "StyleConfig", "PAPER_SR", "PAPER_STYLE", "IMPL_SR", "IMPL_STYLE", "RECIPES", "recipe",
            "for_mode", "differences", "config_from_dict", "parse_layers", "format_layers", "parse_lr_drops",
            "config_json"]


def _f(default: Any, help: str, source: str, choices: tuple | None = None) -> Any:
    return field(default=default, metadata={"help": help, "source": source, "choices": choices})


def parse_layers(text: str | dict | tuple | list) -> tuple[tuple[str, float], ...]:
    """``"relu2_2=1.0,relu3_3=0.5"`` (or ``"relu2_2"``, weight 1), a dict or pairs -> ``(("relu2_2", 1.0), ...)``.
    The empty string gives ``()`` (no feature term)."""
    from .vgg import LAYER_NAMES

    def part(text: str) -> tuple[str, float]:
        name, _, w = text.partition("=")
        try:
            return name.strip(), float(w) if w.strip() else 1.0
        except ValueError:
            raise ValueError(f"bad layer weight in {text!r}; expected name=weight, e.g. relu2_2=1.0") from None

    out = tuple((str(n), float(w)) for n, w in _pairs(text, part))
    unknown = [n for n, _ in out if n not in LAYER_NAMES]
    if unknown:
        raise ValueError(f"unknown VGG-16 layer(s) {unknown}; valid names: " + ", ".join(LAYER_NAMES))
    return out


def _pairs(text: str | dict | tuple | list, part: Callable[[str], tuple]) -> list[tuple]:
    """The pairs of a dict, of a sequence of pairs, or of a comma-separated string (each non-empty part read by
    ``part``)."""
    if isinstance(text, dict):
        return list(text.items())
    if isinstance(text, str):
        return [part(p) for p in filter(None, (p.strip() for p in text.split(",")))]
    return [tuple(p) for p in text]


def format_layers(pairs: tuple[tuple[str, float], ...]) -> str:
    return ",".join(f"{n}={w:g}" for n, w in pairs)


def parse_lr_drops(text: str | dict | tuple | list) -> tuple[tuple[int, float], ...]:
    """``"10000=1e-4,12000=1e-5"``, a dict or pairs -> ``((10000, 1e-4), (12000, 1e-5))``: from the update at
    step 10000 on (the one that makes step 10001) Adam uses 1e-4. Steps must be non-negative and increasing,
    rates positive; ``""`` gives ``()`` (a constant rate)."""
    def part(text: str) -> tuple[str, str]:
        step, eq, lr = text.partition("=")
        if not eq:
            raise ValueError(f"bad learning-rate drop {text!r}; expected step=rate, e.g. 10000=1e-4")
        return step.strip(), lr.strip()

    out = []
    for step, lr in _pairs(text, part):
        try:
            s, r = float(step), float(lr)
        except (TypeError, ValueError):
            raise ValueError(f"bad learning-rate drop {step!r}={lr!r}; expected step=rate, e.g. 10000=1e-4") from None
        if s != int(s) or s < 0 or not r > 0:
            raise ValueError(f"a learning-rate drop needs a step >= 0 and a rate > 0, got {step!r}={lr!r}")
        out.append((int(s), r))
    if any(b[0] <= a[0] for a, b in zip(out, out[1:])):
        raise ValueError(f"learning-rate drops must have increasing steps, got {[s for s, _ in out]}")
    return tuple(out)


_COMPILE_HELP = ("torch.compile the network's forward pass with the loss (inductor; its backward is compiled with "
                 "it): faster steps after a one-off compilation at the first step of each run (tens of seconds "
                 "on a CPU); the same math up to rounding, may be switched on or off when resuming")


@dataclass(frozen=True)
class SRConfig:
    """Super-resolution training (Johnson et al. Sec. 4.2). ``PAPER_SR`` holds the paper's values."""

    mode: str = _f("paper", "run mode this config was derived for", "ours: quick / cpu / paper")
    recipe: str = _f("paper", "recipe the defaults come from: paper (what the paper states) or impl (what works)",
                     "ours: RECIPES", ("paper", "impl"))
    scale: int = _f(4, "upscaling factor (4 or 8)", "[P] x4 and x8 networks", (2, 4, 8))
    patch_size: int = _f(288, "HR training patch side (a multiple of 8)", "[P] 288x288 patches")
    batch_size: int = _f(4, "batch size", "[P] batch size 4")
    steps: int = _f(200_000, "optimisation steps", "[P] 200k iterations")
    lr: float = _f(1e-3, "Adam learning rate", "[P] Adam, learning rate 1e-3, no weight decay or dropout")
    lr_drops: tuple = _f((), "learning-rate drops STEP=RATE,...: from that step on Adam uses RATE",
                         "ours; [P] and [PE] keep the rate constant; [L] -lr_decay_every -1 (off; when on, "
                         "x -lr_decay_factor 0.5 every so many steps, Adam's moments reset)")
    blur_sigma: float = _f(1.0, "Gaussian blur before bicubic downsampling of the training LR",
                           "[P] Gaussian kernel of width sigma=1.0, then bicubic downsampling")
    loss: str = _f("feat", "'feat' (feature layers + pixel_weight * l_pixel + tv) or 'pixel' (l_pixel only)",
                   "[P] l_feat nets and l_pixel baselines, identical otherwise", ("feat", "pixel"))
    layers: tuple = _f((("relu2_2", 1.0),), "feature loss layers and weights, e.g. relu2_2=1.0,relu3_3=0.5",
                       "[P] l_feat at relu2_2 of VGG-16")
    distance: str = _f("l2", "distance for feature and pixel terms: l2 (squared), l1, l1+l2",
                       "[P] Eq. 2 squared Euclidean / (CHW)", ("l2", "l1", "l1+l2"))
    pixel_weight: float = _f(0.0, "weight of l_pixel added to the feature loss (loss=feat)",
                             "[P] none; 'perceptual loss as a regulariser' variant is ours")
    tv_weight: float = _f(0.0, "total-variation weight", "[P] not stated for SR (unconfirmed); ours: 0")
    vgg_weights: str = _f("caffe", "loss network: caffe (the paper's Caffe VGG-16) or torchvision",
                          "[P] VGG-16 pretrained on ImageNet; [L] the Caffe conversion (vgg16.t7)",
                          ("caffe", "torchvision"))
    channels: int = _f(64, "SRNet width", "[S] Table 2: 64 filters")
    blocks: int = _f(4, "SRNet residual blocks", "[S] Table 2: 4 residual blocks")
    upsample: str = _f("deconv", "x2 upsampling: deconv (stride 1/2) or nearest-conv",
                       "[S] fractionally-strided convs, stride 1/2", ("deconv", "nearest-conv"))
    norm: str = _f("batch", "normalisation: batch, instance or none", "[S] spatial batch norm after each conv",
                   ("batch", "instance", "none"))
    head: str = _f("paper", "output head: paper ((tanh+1)/2) or tanh150 (official code: mean + 150 tanh on 0-255)",
                   "[S] scaled tanh; [L] 150*tanh in mean-subtracted 0-255 space", ("paper", "tanh150"))
    train_set: str = _f("train", "training photos: a perceptlib.data set name or a folder of images",
                        "[P] 10k MS-COCO training images; ours: the 'train' set")
    patches_per_image: int = _f(1000, "distinct seeded patches per training image (dataset length / images)",
                                "[P] patches from 10k images (not stated how many per image)")
    seed: int = _f(0, "random seed (model init, sampler, patches)", "[P] not stated; ours")
    checkpoint_every: int = _f(1000, "steps between checkpoints", "ours")
    log_every: int = _f(100, "steps averaged per history entry", "ours")
    eval_limit: int = _f(0, "images per evaluation set (0 = all)", "ours")
    device: str = _f("auto", "cuda, cpu or auto", "[P] one GTX Titan X GPU")
    precision: str = _f("auto", "auto (bf16 autocast on CUDA and on CPUs with native bf16, else fp32), bf16 "
                        "or off (fp32); Grams, losses and the optimiser stay fp32",
                        "[P] fp32 (Torch); ours: perceptlib.precision", PRECISIONS)
    channels_last: bool = _f(True, "channels_last memory format (CUDA only)", "ours, CUDA only")
    compile: bool = _f(False, _COMPILE_HELP, "ours: torch.compile (inductor)")

    def __post_init__(self) -> None:
        _check_choice(self.mode, MODES, "mode")
        if self.scale not in (2, 4, 8):
            raise ValueError(f"scale must be 2, 4 or 8, got {self.scale}")
        if self.patch_size % self.scale or self.patch_size < self.scale:
            raise ValueError(f"patch_size {self.patch_size} must be a positive multiple of scale {self.scale}")
        _check_choice(self.loss, ("feat", "pixel"), "loss")
        _check_choice(self.distance, ("l2", "l1", "l1+l2"), "distance")
        _check_choice(self.upsample, ("deconv", "nearest-conv"), "upsample")
        _check_choice(self.norm, ("batch", "instance", "none"), "norm")
        _check_choice(self.precision, PRECISIONS, "precision")
        object.__setattr__(self, "layers", parse_layers(self.layers))
        if self.loss == "feat" and not self.layers and not self.pixel_weight:
            raise ValueError("loss='feat' needs feature layers or a pixel_weight")
        _check_positive(self, ("batch_size", "steps", "checkpoint_every", "log_every", "channels", "patches_per_image"))
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        object.__setattr__(self, "lr_drops", parse_lr_drops(self.lr_drops))

    @property
    def layer_weights(self) -> dict[str, float]:
        return dict(self.layers)


@dataclass(frozen=True)
class StyleConfig:
    """Style-transfer training (Johnson et al. Sec. 4.1). ``PAPER_STYLE`` holds the paper's values."""

    mode: str = _f("paper", "run mode this config was derived for", "ours: quick / cpu / paper")
    recipe: str = _f("paper", "recipe the defaults come from: paper (what the paper states) or impl (what works)",
                     "ours: RECIPES", ("paper", "impl"))
    image_size: int = _f(256, "training image side (photos resized/cropped to a square)",
                         "[P] MS-COCO images resized to 256x256")
    batch_size: int = _f(4, "batch size", "[P] batch size 4")
    steps: int = _f(40_000, "optimisation steps", "[P] 40k iterations, about 2 epochs")
    lr: float = _f(1e-3, "Adam learning rate", "[P] Adam, learning rate 1e-3, no weight decay or dropout")
    lr_drops: tuple = _f((), "learning-rate drops STEP=RATE,...: from that step on Adam uses RATE",
                         "ours; [P] and [PE] keep the rate constant; [L] -lr_decay_every -1 (off; when on, "
                         "x -lr_decay_factor 0.5 every so many steps, Adam's moments reset)")
    content_layers: tuple = _f((("relu3_3", 1.0),), "content (feature) loss layers and weights",
                               "[P] ECCV: relu3_3; [P'] arXiv, [PE] pytorch/examples and [PY]: relu2_2")
    style_layers: tuple = _f((("relu1_2", 1 / 64**2), ("relu2_2", 1 / 128**2), ("relu3_3", 1 / 256**2),
                              ("relu4_3", 1 / 512**2)),
                             "style loss layers and weights (the default 1/C_j^2 turns Eq. 4's sum over the "
                             "C x C Gram into the official code's mean)",
                             "[P] relu1_2, relu2_2, relu3_3, relu4_3, summed; [L] MSECriterion over each "
                             "Gram = Eq. 4 / C_j^2")
    content_weight: float = _f(1.0, "content loss weight", "[L] -content_weights 1.0 ([P] silent)")
    style_weight: float = _f(5.0, "style loss weight (with the default 1/C_j^2 layer weights: the official "
                             "code's -style_weights)", "[L] -style_weights 5.0 ([P] silent, tuned per style)")
    tv_weight: float = _f(1e-6 * 255**2, "total-variation weight on [0, 1] images (1e-6 on the official "
                          "code's 0-255 scale = 0.065 here)",
                          "[P'] 1e-6 to 1e-4, cross-validated per style; [L] -tv_strength 1e-6 on 0-255 images")
    style_size: int = _f(256, "longer side of the style image", "[L] -style_image_size 256 ([P] silent)")
    vgg_weights: str = _f("caffe", "loss network: caffe or torchvision",
                          "[P] VGG-16 pretrained on ImageNet; [L] the Caffe conversion (vgg16.t7)",
                          ("caffe", "torchvision"))
    channels: int = _f(32, "TransformerNet base width", "[S] Table 1: 32, 64, 128 filters")
    norm: str = _f("batch", "normalisation: batch, instance or none",
                   "[S] spatial batch norm ([L] defaults to instance norm)", ("batch", "instance", "none"))
    head: str = _f("paper", "output head: paper ((tanh+1)/2) or tanh150 (official code: mean + 150 tanh on 0-255)",
                   "[S] scaled tanh to [0, 255]; [L] -tanh_constant 150 in mean-subtracted 0-255 space; "
                   "[PY] impl_params", ("paper", "tanh150"))
    padding: str = _f("paper", "paper (reflection pad 40, unpadded residual convs) or same",
                      "[S] unpadded residual convs, centre-cropped skip, reflection-padded input", ("paper", "same"))
    upsample: str = _f("deconv", "deconv (stride 1/2) or nearest-conv", "[S] fractionally-strided convs",
                       ("deconv", "nearest-conv"))
    train_set: str = _f("train", "training photos: a perceptlib.data set name or a folder of images",
                        "[P] 80k MS-COCO training images; ours: the 'train' set")
    seed: int = _f(0, "random seed", "[P] not stated; ours")
    checkpoint_every: int = _f(1000, "steps between checkpoints", "ours")
    log_every: int = _f(100, "steps averaged per history entry", "ours")
    device: str = _f("auto", "cuda, cpu or auto", "[P] one GTX Titan X GPU")
    precision: str = _f("auto", "auto (bf16 autocast on CUDA and on CPUs with native bf16, else fp32), bf16 "
                        "or off (fp32); Grams, losses and the optimiser stay fp32",
                        "[P] fp32 (Torch); ours: perceptlib.precision", PRECISIONS)
    channels_last: bool = _f(True, "channels_last memory format (CUDA only)", "ours, CUDA only")
    compile: bool = _f(False, _COMPILE_HELP, "ours: torch.compile (inductor)")

    def __post_init__(self) -> None:
        _check_choice(self.mode, MODES, "mode")
        _check_choice(self.norm, ("batch", "instance", "none"), "norm")
        _check_choice(self.padding, ("paper", "same"), "padding")
        _check_choice(self.upsample, ("deconv", "nearest-conv"), "upsample")
        _check_choice(self.precision, PRECISIONS, "precision")
        object.__setattr__(self, "content_layers", parse_layers(self.content_layers))
        object.__setattr__(self, "style_layers", parse_layers(self.style_layers))
        _check_positive(self, ("image_size", "batch_size", "steps", "checkpoint_every", "log_every", "channels"))
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        object.__setattr__(self, "lr_drops", parse_lr_drops(self.lr_drops))


def _check_choice(value: Any, choices: tuple, what: str) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of {tuple(choices)}")


def _check_positive(cfg: Any, names: tuple[str, ...]) -> None:
    for n in names:
        v = getattr(cfg, n)
        if int(v) != v or v < 1:
            raise ValueError(f"{n} must be a positive integer, got {v!r}")


PAPER_SR = SRConfig()
PAPER_STYLE = StyleConfig()

# The working recipes: what the official code does and what the short ablation runs showed (notebooks 02 and
# 03, results/style_diagnostics, results/sr_diagnostics). Each change from the paper, with its source.
_IMPL_CHANGES: dict[str, dict[str, tuple[Any, str]]] = {
    "StyleConfig": {
        "norm": ("instance", "[L] -use_instance_norm 1 (the default; 'significantly improves the quality'); "
                             "batch-norm runs collapsed to a texture here"),
        "channels": (16, "[L] the instance-norm models have half the filters per layer, same quality"),
        "head": ("tanh150", "[L] -tanh_constant 150 in mean-subtracted 0-255 space; [PY] impl_params"),
    },
    "SRConfig": {
        "norm": ("none", "[X] results/sr_diagnostics: with eval-mode batch norm the l_feat net is 11 dB under "
                         "bicubic (the batch statistics do not transfer to whole images); instance norm diverged; "
                         "no norm is 1.3 dB under at 1000 steps"),
        "upsample": ("nearest-conv", "[O] Odena et al. 2016 (Distill, 'Deconvolution and checkerboard "
                                     "artifacts'); [X] removes the l_feat grid (+14.7 dB -> -3.0 dB at the "
                                     "upsampling frequency)"),
    },
}


def recipe(cfg: SRConfig | StyleConfig | type, name: str) -> SRConfig | StyleConfig:
    """``cfg`` (a config or its class) with the fields of recipe ``name`` (``"paper"``: the paper's values,
    ``"impl"``: the working recipe, ``_IMPL_CHANGES``); other fields, including sizes, stay as they are."""
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {RECIPES}")
    cls = cfg if isinstance(cfg, type) else type(cfg)
    base = cls() if isinstance(cfg, type) else cfg
    paper = cls()
    if name == "paper":
        values = {k: getattr(paper, k) for k in _IMPL_CHANGES[cls.__name__]}
    else:
        values = {k: v for k, (v, _) in _IMPL_CHANGES[cls.__name__].items()}
    return replace(base, recipe=name, **values)


RECIPES = ("paper", "impl")
IMPL_SR = recipe(SRConfig, "impl")
IMPL_STYLE = recipe(StyleConfig, "impl")

# quick: nbval / tests on a CPU in minutes; cpu: the committed run on 2 shared cores. Measured for SR x4 at
# 96x96, batch 4, one thread per run under `nice`, two runs side by side: l_pixel 1.2-2.6 steps/s, l_feat
# (relu2_2) 0.6-1.6 steps/s, i.e. 4000 steps in roughly 30-90 min per model depending on the load.
_MODE_CHANGES: dict[tuple[str, str], dict[str, Any]] = {
    ("SRConfig", "quick"): dict(patch_size=48, batch_size=2, steps=20, checkpoint_every=10, log_every=1,
                                eval_limit=2),
    ("SRConfig", "cpu"): dict(patch_size=96, batch_size=4, steps=4000, checkpoint_every=25, log_every=5),
    ("StyleConfig", "quick"): dict(image_size=64, batch_size=2, steps=20, style_size=64, checkpoint_every=10,
                                   log_every=1),
    ("StyleConfig", "cpu"): dict(image_size=128, batch_size=4, steps=2000, style_size=256, checkpoint_every=50,
                                 log_every=10),
}

# why a mode departs from the paper, per field (fields changed by hand get a generic reason)
_REASONS: dict[str, str] = {
    "patch_size": "CPU budget: smaller HR patches (still divisible by 8)",
    "image_size": "CPU budget: smaller training images",
    "style_size": "smaller style image to match the smaller training images",
    "batch_size": "quick mode: smallest useful batch",
    "steps": "CPU budget: far fewer steps (the paper needs a GPU for ~4 h)",
    "checkpoint_every": "more frequent checkpoints for short, interruptible runs",
    "log_every": "finer loss curve for short runs",
    "eval_limit": "quick mode: evaluate on a couple of images only",
    "mode": "the run mode",
}


def for_mode(cfg: SRConfig | StyleConfig, mode: str | None = None) -> SRConfig | StyleConfig:
    """``cfg`` sized for ``mode`` (``quick``, ``cpu`` or ``paper``; default :func:`resolve_mode`).

    ``paper`` returns the paper's sizes unchanged; ``quick`` and ``cpu`` replace the sizes/steps
    (``_MODE_CHANGES``). Fields the caller already changed from the paper's value are kept.
    """
    mode = resolve_mode(mode)
    paper = type(cfg)()
    changes = {k: v for k, v in _MODE_CHANGES.get((type(cfg).__name__, mode), {}).items()
               if getattr(cfg, k) == getattr(paper, k)}
    return replace(cfg, mode=mode, **changes)


def differences(cfg: SRConfig | StyleConfig) -> list[tuple[str, Any, Any, str]]:
    """Rows ``(field, paper, ours, reason)`` for every field of ``cfg`` that differs from the paper's
    config (``PAPER_SR`` or ``PAPER_STYLE``), the ``mode`` field aside."""
    paper = type(cfg)()
    rows = []
    for f in fields(cfg):
        p, o = getattr(paper, f.name), getattr(cfg, f.name)
        if f.name == "mode" or p == o:
            continue
        auto = _MODE_CHANGES.get((type(cfg).__name__, cfg.mode), {}).get(f.name) == o
        impl = _IMPL_CHANGES.get(type(cfg).__name__, {}).get(f.name)
        if f.name == "recipe":
            continue
        if cfg.recipe == "impl" and impl is not None and impl[0] == o:
            rows.append((f.name, p, o, "impl recipe: " + impl[1]))
            continue
        reason = _REASONS.get(f.name, "") if auto else "set for this run (not a mode default)"
        if f.name in ("device", "precision", "channels_last", "compile"):
            reason = "hardware setting"
        elif f.name == "loss" and o == "pixel":
            reason = "the paper's l_pixel baseline (same data, network and training)"
        rows.append((f.name, p, o, reason or "changed for this mode"))
    return rows


def config_from_dict(d: dict) -> SRConfig | StyleConfig:
    """Rebuild a config from :func:`dataclasses.asdict` / JSON (``_type`` selects the class; other keys
    starting with ``_`` are records, ignored; unknown keys raise ValueError). Configs written before
    ``precision`` existed carry ``amp`` (true: bf16 autocast on CUDA, fp32 on CPU); it becomes
    ``precision`` ``"auto"`` (true) or ``"off"`` (false)."""
    d = dict(d)
    kind = d.pop("_type", None) or ("StyleConfig" if "style_layers" in d else "SRConfig")
    d = {k: v for k, v in d.items() if not k.startswith("_")}
    if "amp" in d and "precision" not in d:
        d["precision"] = "auto" if d.pop("amp") else "off"
    cls = {"SRConfig": SRConfig, "StyleConfig": StyleConfig}.get(kind)
    if cls is None:
        raise ValueError(f"unknown config type {kind!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {kind} fields {unknown}")
    return cls(**d)


def config_json(cfg: SRConfig | StyleConfig) -> str:
    d = dataclasses.asdict(cfg)
    d["_type"] = type(cfg).__name__
    return json.dumps(d, indent=2)
