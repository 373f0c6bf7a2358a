"""Timing of style transfer as in the paper's Table 1: one forward pass of a transformation network vs
``n`` iterations of the optimisation baseline (:func:`perceptlib.style.optimise_style`), on any device.

``time_network`` is the median of timed passes after warm-up; ``time_optimisation`` times one run from
white noise to each requested evaluation count and, when the run would exceed ``budget`` seconds,
stops early and extrapolates the rest from the measured time per evaluation (``measured=False``).
CUDA work is synchronised before every clock read.
"""
from __future__ import annotations

import os
import statistics
import time

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["square_crop", "time_network", "time_optimisation", "table1", "format_table1"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def square_crop(img: Tensor, size: int) -> Tensor:
    """Centre square crop of ``(3, H, W)`` in [0, 1], resized to ``size``² (antialiased bilinear)."""
    h, w = img.shape[-2:]
    s = min(h, w)
    crop = img[..., (h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s].reshape(1, 3, s, s)
    return F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)


def time_network(net: nn.Module, size: int, device: str | torch.device = "cpu", repeats: int = 10,
                 warmup: int = 2, precision: str = "off") -> float:
    """Median seconds of one no-grad forward pass of ``net`` on a ``(1, 3, size, size)`` batch, in
    ``precision`` (``off``: fp32; ``auto``/``bf16``: :mod:`perceptlib.precision`)."""
    from .precision import autocast, resolve_precision

    device = torch.device(device)
    net = net.to(device).eval()
    x = torch.rand(1, 3, size, size, device=device)
    times = []
    with torch.no_grad(), autocast(resolve_precision(precision, device), device):
        for _ in range(warmup):
            net(x)
        _sync(device)
        for _ in range(repeats):
            t = time.perf_counter()
            net(x)
            _sync(device)
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def time_optimisation(content: Tensor, style: Tensor | str | os.PathLike, cfg, size: int, iters: list[int],
                      device: str | torch.device = "cpu", budget: float = 60.0, precision: str = "off"
                      ) -> tuple[dict[int, tuple[float, bool]], float]:
    """``({n: (seconds, measured)}, final total loss)`` for the optimisation baseline at ``size``² on
    ``content`` (centre-cropped), with ``cfg``'s loss (a :class:`~perceptlib.config.StyleConfig`) and
    the loss network in ``precision`` (the image stays fp32)."""
    from .style import build_style_loss, optimise_style

    device = torch.device(device)
    iters = sorted(iters)
    loss = build_style_loss(cfg, style, device=device)
    photo = square_crop(content, size)
    optimise_style(photo, style, cfg, steps=3, device=device, progress=False, loss=loss,
                   precision=precision)  # warm-up
    stamps: list[float] = []
    t0 = [0.0]

    def cb(step, terms, image):
        stamps.append(time.perf_counter() - t0[0])
        if 3 <= len(stamps) < iters[-1]:
            per = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
            return stamps[0] + per * (iters[-1] - 1) > budget and stamps[-1] > min(budget / 4, 10)
        return False

    _sync(device)
    t0[0] = time.perf_counter()
    rec = optimise_style(photo, style, cfg, steps=iters[-1], device=device, progress=False, loss=loss, callback=cb,
                         precision=precision)
    per = (stamps[-1] - stamps[0]) / max(1, len(stamps) - 1)
    out = {n: ((stamps[n - 1], True) if n <= len(stamps) else (stamps[0] + per * (n - 1), False)) for n in iters}
    return out, rec.final_loss


def table1(net: nn.Module, content: Tensor, style: Tensor | str | os.PathLike, cfg, sizes: list[int],
           device: str | torch.device = "cpu", budget: float = 60.0, precision: str = "off",
           iters: tuple[int, ...] = (100, 300, 500), repeats: int | None = None) -> dict:
    """The paper's Table 1 on ``device``: for each size, the optimisation baseline's seconds to ``iters``
    evaluations (:func:`time_optimisation`; ``measured`` False where extrapolated past ``budget``) and one
    network pass (:func:`time_network`), in ``precision``. Returns ``{"device", "dtype", "precision",
    "torch", "rows": [{"size", "method", "iterations" (None: network), "seconds", "measured"}]}``."""
    from .precision import describe_machine, resolve_precision

    device = torch.device(device)
    used = resolve_precision(precision, device)
    rows = []
    for size in sizes:
        opt, _ = time_optimisation(content, style, cfg, size, list(iters), device, budget=budget, precision=used)
        rows += [{"size": size, "method": "optimisation", "iterations": n, "seconds": s, "measured": m}
                 for n, (s, m) in opt.items()]
        reps = repeats or (3 if device.type == "cpu" else 20)
        rows.append({"size": size, "method": "network", "iterations": None, "measured": True,
                     "seconds": time_network(net, size, device, repeats=reps, precision=used)})
    m = describe_machine(device)
    return {"device": f"{m['name']}, {m['threads']} thread(s)" if device.type == "cpu" else m["name"],
            "dtype": "float32" if used == "fp32" else "bfloat16 autocast", "precision": used,
            "torch": m["torch"], "rows": rows, "iterations_are": "loss+gradient evaluations"}


def format_table1(res: dict, paper: dict | None = None, label: str = "") -> str:
    """A text table of :func:`table1`'s result (``~`` = extrapolated), with the paper's row per size from
    ``paper`` (``{size: (opt100, opt300, opt500, network[, stated speed-up vs 500])}``) when given. The paper's
    speed-ups were computed from unrounded times, so only a stated one is printed, never one recomputed from
    the rounded seconds."""
    lines = [f"{label + ': ' if label else ''}{res['device']}, {res['dtype']}; ~ = extrapolated",
             f"{'size':>5s} {'opt 100':>9s} {'opt 300':>9s} {'opt 500':>9s} {'network':>9s} {'x vs 500':>9s}"
             + ("   paper (Titan X): opt 100 / 300 / 500 / network" if paper else "")]
    for size in sorted({r["size"] for r in res["rows"]}):
        r = {row["iterations"]: row for row in res["rows"] if row["size"] == size}
        cells = [f"{'~' if not r[n]['measured'] else ''}{r[n]['seconds']:.3g}" for n in (100, 300, 500)]
        p = (paper or {}).get(size)
        lines.append(f"{size:5d} " + " ".join(f"{c:>9s}" for c in cells) + f" {r[None]['seconds']:9.4f} "
                     f"{r[500]['seconds'] / r[None]['seconds']:8.0f}x"
                     + (f"   {p[0]} / {p[1]} / {p[2]} / {p[3]} ({p[4]:.0f}x)" if p and len(p) > 4 else
                        f"   {p[0]} / {p[1]} / {p[2]} / {p[3]}" if p else ""))
    return "\n".join(lines)
