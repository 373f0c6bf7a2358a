"""Image reconstruction by optimisation: invert features (the paper's Fig. 3), Gram matrices (Fig. 4),
or both with TV (the Gatys et al. baseline of Table 1 / Fig. 5).

One loop, :func:`reconstruct`, used by every notebook. It optimises the pixels of an image ``x``
``(1, 3, H, W)`` to minimise a :class:`~perceptlib.losses.PerceptualLoss` whose fixed targets were cached
with ``set_target`` (content) and/or ``set_style`` (Gram matrices). The image is kept in [0, 1]
(projected optimisation): the loss sees ``clamp(x, 0, 1)`` and ``x`` is projected onto [0, 1] after every
Adam step and after every chunk of ``chunk`` L-BFGS iterations (the paper's "projected L-BFGS").
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = ["Reconstruction", "ReconstructionError", "INITS", "OPTIMIZERS", "init_image", "reconstruct"]

INITS: tuple[str, ...] = ("noise", "grey")
OPTIMIZERS: tuple[str, ...] = ("lbfgs", "adam")
_DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.02}


@dataclass
class Reconstruction:
    """What :func:`reconstruct` returns.

    ``image``: ``(1, 3, H, W)`` float32 in [0, 1] on the CPU: the evaluated (projected) iterate with the
    lowest loss (L-BFGS' line search also evaluates rejected trial points; for Adam this is almost
    always the last iterate).
    ``history``: one dict of loss terms per step (one loss evaluation; ``"total"`` plus the loss's
    named terms, e.g. ``"feat/relu2_2"``). ``final``: the terms at ``image``. ``seconds``: wall time.
    ``steps``: loss evaluations done. ``stopped``: why it stopped before ``steps`` (else ``None``).
    ``scale``: the value the optimised objective was divided by (the initial loss, or 1).
    ``iterations``: optimiser iterations (L-BFGS: fewer than ``steps``, its line search evaluates the loss
    one or more times per iteration; Adam: ``steps``).
    """

    image: Tensor
    history: list[dict[str, float]]
    seconds: float
    steps: int
    final: dict[str, float] = field(default_factory=dict)
    stopped: str | None = None
    scale: float = 1.0
    iterations: int = 0

    @property
    def losses(self) -> list[float]:
        """The ``"total"`` of every step."""
        return [h["total"] for h in self.history]

    @property
    def final_loss(self) -> float:
        return self.final.get("total", self.history[-1]["total"] if self.history else math.nan)


class ReconstructionError(FloatingPointError):
    """The loss (or the image) became NaN/inf. ``step``: the failing step (0-based); ``terms``: the loss
    terms there; ``image``: the last image with a finite loss ``(1, 3, H, W)`` in [0, 1];
    ``history``: the finite steps before it."""

    def __init__(self, message: str, step: int, terms: dict[str, float], image: Tensor,
                 history: list[dict[str, float]]) -> None:
        super().__init__(message)
        self.step, self.terms, self.image, self.history = step, terms, image, history


class _Stop(Exception):
    pass


def _size(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        return size, size
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(s, int) for s in size):
        return int(size[0]), int(size[1])
    raise ValueError(f"size must be an int or (H, W), got {size!r}")


def init_image(kind: str, size: int | Sequence[int], seed: int = 0, noise: float = 0.02,
               device: str | torch.device = "cpu") -> Tensor:
    """A seeded start image ``(1, 3, H, W)`` float32 in [0, 1].

    ``"noise"``: uniform white noise in [0, 1] (the paper's start). ``"grey"``: 0.5 plus Gaussian noise
    of std ``noise`` (a faint perturbation, so the optimiser is not started at a symmetric point).
    """
    h, w = _size(size)
    gen = torch.Generator().manual_seed(int(seed))
    if kind == "noise":
        x = torch.rand(1, 3, h, w, generator=gen)
    elif kind == "grey":
        x = 0.5 + noise * torch.randn(1, 3, h, w, generator=gen)
    else:
        raise ValueError(f"unknown init {kind!r}; choose one of {INITS} or pass a (1, 3, H, W) tensor")
    return x.clamp_(0, 1).to(device)


def _device_of(loss) -> torch.device:
    for t in list(getattr(loss, "buffers", lambda: [])()) + list(getattr(loss, "parameters", lambda: [])()):
        return t.device
    return torch.device("cpu")


def _terms(loss, x: Tensor, used: str = "fp32") -> tuple[Tensor, dict[str, float]]:
    from .precision import autocast

    with autocast(used, x.device):
        out = loss(x, return_terms=True)
    total, terms = out if isinstance(out, tuple) else (out, {})
    vals = {k: float(v) for k, v in terms.items()}
    vals["total"] = float(total.detach())
    return total, vals


def reconstruct(loss, steps: int, optimizer: str = "lbfgs", init: str | Tensor = "noise", lr: float | None = None,
                seed: int = 0, size: int | Sequence[int] | None = None, progress: bool = True,
                callback: Callable[[int, dict[str, float], Tensor], bool | None] | None = None,
                normalise: bool = True, chunk: int = 20, noise: float = 0.02,
                line_search: str | None = "strong_wolfe", device: str | torch.device | None = None,
                precision: str = "off") -> Reconstruction:
    """Optimise an image to minimise ``loss``; returns a :class:`Reconstruction`.

    Args:
        loss: a :class:`~perceptlib.losses.PerceptualLoss` (or any module called as
            ``loss(x, return_terms=True) -> (total, {name: value})``) whose targets are cached
            (``set_target`` for content/pixels, ``set_style`` for Gram matrices).
        steps: loss evaluations (one per Adam step; one or more per L-BFGS iteration with line search).
        optimizer: ``"lbfgs"`` (history 100, lr 1, strong-Wolfe line search) or ``"adam"``.
        init: ``"noise"`` (uniform, the paper), ``"grey"`` (0.5 + faint noise) or an image
            ``(1, 3, H, W)``/``(3, H, W)`` in [0, 1], e.g. the content image for style transfer.
        lr: step size; default 1.0 for L-BFGS, 0.02 for Adam.
        seed: seeds the start image; runs with equal arguments give identical results.
        size: ``H`` or ``(H, W)`` of the start image; default: the cached content target's size.
        progress: show a tqdm bar.
        callback: ``callback(step, terms, image)`` after every step; return True to stop early.
        normalise: optimise ``loss / loss(x0)`` so that L-BFGS' first step and tolerances do not
            depend on the loss's scale (e.g. vanishing random-network features). History is unscaled.
        chunk: L-BFGS iterations between projections onto [0, 1].
        line_search: L-BFGS line search, ``"strong_wolfe"`` or ``None`` (fixed step ``lr``, as the Lua
            ``optim.lbfgs``; that diverges on the projected content+style objective, see the tests).
        noise: std of the ``"grey"`` start's noise.
        device: default: where the loss's buffers live.
        precision: the loss network's precision (``off``: fp32, the default; ``auto``/``bf16``: bf16
            autocast where supported, :mod:`perceptlib.precision`). The image, its gradient and
            L-BFGS' state stay fp32 either way.

    Raises:
        ReconstructionError: (a ``FloatingPointError``) when the loss or image becomes NaN/inf; it names
            the step and terms and carries the last good image.
        ValueError: bad ``optimizer``, ``init``, ``steps`` or an init whose size does not match ``size``
            or the content target.
    """
    from tqdm.auto import tqdm

    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    from .precision import resolve_precision

    device = torch.device(device) if device is not None else _device_of(loss)
    used = resolve_precision(precision, device)
    target = loss.target_image
    want = _size(size) if size is not None else (tuple(target.shape[-2:]) if target is not None else None)
    if isinstance(init, Tensor):
        x0 = init.detach().float()
        if x0.dim() == 3:
            x0 = x0[None]
        if x0.dim() != 4 or x0.shape[:2] != (1, 3):
            raise ValueError(f"init image must be (1, 3, H, W) or (3, H, W), got shape {tuple(init.shape)}")
        if want is not None and tuple(x0.shape[-2:]) != want:
            raise ValueError(f"init image is {tuple(x0.shape[-2:])} but the target/size is {want}")
        if not torch.isfinite(x0).all():
            raise ValueError("init image contains NaN or inf")
        x0 = x0.clamp(0, 1).to(device)
    else:
        if want is None:
            raise ValueError("give size= (the loss has no content target to take the size from)")
        x0 = init_image(init, want, seed=seed, noise=noise, device=device)

    x = x0.clone().requires_grad_(True)
    lr = _DEFAULT_LR[optimizer] if lr is None else float(lr)
    if optimizer == "lbfgs":
        opt = torch.optim.LBFGS([x], lr=lr, max_iter=chunk, max_eval=chunk, history_size=100,
                                tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn=line_search)
    else:
        opt = torch.optim.Adam([x], lr=lr)

    history: list[dict[str, float]] = []
    state = {"good": x0.detach().clone(), "scale": None, "stop": False, "best": None, "best_terms": None}

    def fail(step: int, terms: dict[str, float], what: str):
        shown = ", ".join(f"{k}={v:.4g}" for k, v in terms.items())
        return ReconstructionError(f"{what} at step {step} of {steps} ({shown}); stopped, the last good image "
                                   "is in .image", step, terms, state["good"].cpu(), list(history))

    def closure() -> Tensor:
        step = len(history)
        if step >= steps:
            raise _Stop
        opt.zero_grad(set_to_none=True)
        if not torch.isfinite(x.detach()).all():
            raise fail(step, {}, "the image became NaN/inf")
        xc = x.clamp(0, 1)
        total, terms = _terms(loss, xc, used)
        if not math.isfinite(terms["total"]):
            raise fail(step, terms, "the loss is not finite")
        if state["scale"] is None:
            state["scale"] = abs(terms["total"]) if normalise and terms["total"] != 0 else 1.0
        (total / state["scale"]).backward()
        state["good"] = xc.detach().clone()
        if state["best"] is None or terms["total"] <= state["best_terms"]["total"]:
            state["best"], state["best_terms"] = state["good"], terms
        history.append(terms)
        bar.update(1)
        bar.set_postfix(loss=f"{terms['total']:.4g}", refresh=False)
        if callback is not None and callback(step, terms, state["good"]):
            state["stop"] = True
            raise _Stop
        return total.detach() / state["scale"]

    stopped = None
    start = time.perf_counter()
    bar = tqdm(total=steps, disable=not progress, desc=f"reconstruct ({optimizer})", leave=False)
    try:
        while len(history) < steps and not state["stop"]:
            before = len(history)
            if optimizer == "lbfgs":  # a line search may need more evaluations than max_eval: closure stops it
                k = min(chunk, steps - before)
                opt.param_groups[0]["max_iter"] = opt.param_groups[0]["max_eval"] = k
            try:
                opt.step(closure)
            except _Stop:
                pass
            with torch.no_grad():
                x.clamp_(0, 1)
            if state["stop"]:
                stopped = f"callback at step {len(history)}"
            elif optimizer == "lbfgs" and len(history) == before:
                stopped = f"converged (L-BFGS tolerance) at step {len(history)}"
                break
    finally:
        bar.close()
    if optimizer == "adam" and len(history) == steps and not state["stop"]:
        with torch.no_grad():  # Adam's last update has not been evaluated yet
            _, terms = _terms(loss, x.detach().clamp(0, 1), used)
        if math.isfinite(terms["total"]) and terms["total"] <= state["best_terms"]["total"]:
            state["best"], state["best_terms"] = x.detach().clamp(0, 1), terms
    iterations = int(opt.state[x].get("n_iter", 0)) if optimizer == "lbfgs" else len(history)
    return Reconstruction(image=state["best"].cpu(), history=history, seconds=time.perf_counter() - start,
                          steps=len(history), final=state["best_terms"], stopped=stopped,
                          scale=float(state["scale"] or 1.0), iterations=iterations)
