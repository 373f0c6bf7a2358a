"""The Fig. 3 variants (``scripts/fig3_variants.py``): load its results, plot them, tabulate them.

A results folder holds ``fig3_variants.json`` and one PNG per reconstruction. The json has ``photo``
(a demo photo's name), ``size``, ``variants`` (``{key: {"label", "weights", "tv"}}``), ``layers``,
``table`` (``{variant: {layer: run name}}``), ``runs`` (one dict per run: ``name``, ``png``, ``psnr``,
``ssim``, ``tv_share``, ...) and optionally ``tv_sweep`` (``{weights: [{"tv_tau", "tv_weight", ...}]}``).
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

__all__ = ["load_fig3_variants", "plot_fig3_variants", "plot_fig3_curves", "fig3_variants_table",
           "fig3_sweep_table"]

RESULTS_NAME = "fig3_variants.json"


def load_fig3_variants(results_dir: str | os.PathLike) -> dict:
    """Read ``results_dir``: the json's fields plus ``runs_by_name`` (``{name: run}``), ``images``
    (``{name: (3, H, W) float32 in [0, 1]}``) and ``photo_image`` (the target ``(3, size, size)``, or
    ``None`` when ``photo`` is not a demo photo). Raises ``FileNotFoundError`` naming a missing file."""
    from .data import demo_image_paths
    from .experiments import square_image
    from .images import load_image

    root = Path(results_dir)
    path = root / RESULTS_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {RESULTS_NAME} in {root} (run scripts/fig3_variants.py)")
    doc = json.loads(path.read_text())
    doc["runs_by_name"] = {r["name"]: r for r in doc.get("runs", [])}
    images = {}
    for name in {n for row in doc.get("table", {}).values() for n in row.values()}:
        png = root / doc["runs_by_name"][name]["png"]
        if not png.is_file():
            raise FileNotFoundError(f"reconstruction image missing: {png}")
        images[name] = load_image(png)
    doc["images"] = images
    demo = {p.stem: p for p in demo_image_paths()}
    doc["photo_image"] = square_image(demo[doc["photo"]], int(doc["size"]))[0] if doc.get("photo") in demo else None
    return doc


def _loaded(results: str | os.PathLike | Mapping) -> Mapping:
    return results if isinstance(results, Mapping) else load_fig3_variants(results)


def _cells(res: Mapping, variants: Sequence[str] | None, layers: Sequence[str] | None):
    table = res["table"]
    variants = [v for v in (variants or res["variants"]) if v in table]
    layers = list(layers or res.get("layers") or dict.fromkeys(k for v in variants for k in table[v]))
    return variants, layers


def _np(x: Tensor) -> np.ndarray:
    return x.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def plot_fig3_variants(results: str | os.PathLike | Mapping, *, variants: Sequence[str] | None = None,
                       layers: Sequence[str] | None = None, size: float = 2.0, title: str | None = None):
    """Grid of reconstructions: one row per variant, the photo then one column per layer; each caption
    gives PSNR (dB), SSIM and the TV term's share of the final loss. ``results``: a folder or the dict
    of :func:`load_fig3_variants`. Returns a ``matplotlib.figure.Figure``."""
    from matplotlib.figure import Figure

    res = _loaded(results)
    variants, layers = _cells(res, variants, layers)
    if not variants:
        raise ValueError("no variants to plot (the results' table is empty or none of the requested is in it)")
    photo = res.get("photo_image")
    cols = len(layers) + (photo is not None)
    fig = Figure(figsize=(size * cols, size * len(variants) + 0.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(variants), cols, squeeze=False))
    for row, v in zip(axes, variants):
        for ax in row:
            ax.set_xticks([]), ax.set_yticks([])
            for s in ax.spines.values():
                s.set_visible(False)
        if photo is not None:
            row[0].imshow(_np(photo))
            row[0].set_title("original", fontsize=8)
        row[0].set_ylabel(res["variants"][v]["label"], fontsize=8)
        for ax, layer in zip(row[cols - len(layers):], layers):
            name = res["table"][v].get(layer)
            if name is None:
                ax.text(0.5, 0.5, "not run", ha="center", va="center", fontsize=8, transform=ax.transAxes)
                continue
            r = res["runs_by_name"][name]
            ax.imshow(_np(res["images"][name]))
            tv = f", TV {r['tv_share']:.0%}" if r.get("tv_share") else ""
            ax.set_title(f"{layer}\n{r['psnr']:.1f} dB, SSIM {r['ssim']:.2f}{tv}", fontsize=8)
    fig.suptitle(title or f"Feature reconstruction of {res.get('photo', '?')} from white noise "
                          f"({res.get('size')} px, {res.get('steps')} L-BFGS evaluations)", fontsize=10)
    return fig


def plot_fig3_curves(results: str | os.PathLike | Mapping, *, variants: Sequence[str] | None = None,
                     layers: Sequence[str] | None = None, size: float = 2.6):
    """Best loss so far / start loss against loss evaluations (log scale), one panel per layer, one line
    per variant (from each run's ``curve_every_10``). Returns a ``matplotlib.figure.Figure``."""
    from matplotlib.figure import Figure

    res = _loaded(results)
    variants, layers = _cells(res, variants, layers)
    fig = Figure(figsize=(size * len(layers), size), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(layers), squeeze=False)[0])
    for ax, layer in zip(axes, layers):
        for v in variants:
            name = res["table"][v].get(layer)
            if name is None:
                continue
            r = res["runs_by_name"][name]
            c = np.asarray(r["curve_every_10"], dtype=float) / r["start_loss"]
            ax.plot(np.minimum(10 * np.arange(1, len(c) + 1), r["evaluations"]), c, label=res["variants"][v]["label"])
        ax.set_yscale("log")
        ax.set_title(layer, fontsize=9)
        ax.set_xlabel("loss evaluations", fontsize=8)
    axes[0].set_ylabel("best loss / start loss", fontsize=8)
    handles, labels = axes[-1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, max(1, len(labels))), fontsize=7,
               frameon=False)  # below the panels, off the curves
    return fig


def _fmt(x, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def fig3_variants_table(results: str | os.PathLike | Mapping, *, variants: Sequence[str] | None = None,
                        layers: Sequence[str] | None = None) -> str:
    """A Markdown table, one row per variant x layer (plus the json's ``longer`` reruns, ``{variant: {layer:
    run name}}``, after their grid run): network, TV weight (tau), PSNR, SSIM, LPIPS, final loss, TV share,
    evaluations / iterations, the best loss's relative drop over the last quarter of the evaluations
    (0: converged), seconds and precision."""
    res = _loaded(results)
    variants, layers = _cells(res, variants, layers)
    longer = res.get("longer", {})
    lines = ["| variant | layer | network | TV weight (τ) | PSNR (dB) | SSIM | LPIPS | final loss | TV share "
             "| evaluations / iterations | drop in last 25 % | s | precision |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for layer in layers:
        for v, name in [(v, n) for v in variants for n in (res["table"][v].get(layer), longer.get(v, {}).get(layer))]:
            if name is None:
                continue
            r = res["runs_by_name"][name]
            tv = f"{r['tv_weight']:.3g} ({r['tv_tau']:g})" if r.get("tv_weight") else "0"
            lines.append(f"| {res['variants'][v]['label']} | {layer} | {r['weights']} | {tv} | {r['psnr']:.2f} | "
                         f"{r['ssim']:.3f} | {_fmt(r.get('lpips'), '.3f')} | {r['final_loss']:.4g} | "
                         f"{r['tv_share']:.1%} | {r['evaluations']} / {r['iterations']} | "
                         f"{r['flattening_last_25pct']:.2%} | {r['seconds']:.0f} | {r['precision']} |")
    return "\n".join(lines)


def fig3_sweep_table(results: str | os.PathLike | Mapping) -> str:
    """A Markdown table of the TV-weight sweep (per network: tau, weight, TV share, PSNR, SSIM, final loss),
    the chosen tau marked."""
    res = _loaded(results)
    chosen = res.get("tv_tau", {})
    lines = ["| network | τ | TV weight | TV share | PSNR (dB) | SSIM | final loss | chosen |",
             "|---|---|---|---|---|---|---|---|"]
    for weights, rows in res.get("tv_sweep", {}).items():
        for r in rows:
            lines.append(f"| {weights} | {r['tv_tau']:g} | {r['tv_weight']:.3g} | {r['tv_share']:.1%} | "
                         f"{r['psnr']:.2f} | {r['ssim']:.3f} | {r['final_loss']:.4g} | "
                         f"{'✓' if chosen.get(weights) == r['tv_tau'] else ''} |")
    return "\n".join(lines)
