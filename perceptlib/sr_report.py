"""Notebook 02's analysis: the SR results beside the paper's (Figs. 8 and 9), loss curves, crops, findings.

Pure functions over the committed files (``results/**/config.json``, ``history.json``, evaluation JSONs of
the form ``{"x4": {set: {method: {"psnr", "ssim", "lpips", ...}}}, "meta": ...}``): the notebook configures,
calls and shows; the numbers its text states come from :func:`sr_findings`.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

__all__ = ["PAPER_SR_RESULTS", "GAP_MARGIN", "paper_gap", "gap_rows", "gaps_markdown", "merge_evaluations",
           "sr_table_markdown", "smooth", "plot_sr_curves", "last_terms", "crop_panels", "plot_sr_tradeoff",
           "sr_findings", "grid_rows"]

# The paper's Figs. 8 (x4) and 9 (x8): PSNR on Y (dB) / SSIM, means over the real Set5 / Set14 / BSD100
# (docs/paper.md). BSD100's x4 l_feat SSIM is printed "63.17" in the paper (presumably 0.6317).
PAPER_SR_RESULTS: dict[int, dict[str, dict[str, tuple[float, float]]]] = {
    4: {"set5": {"bicubic": (28.43, 0.8114), "pixel": (28.40, 0.8205), "feat": (27.09, 0.7680)},
        "set14": {"bicubic": (25.99, 0.7301), "pixel": (25.75, 0.6994), "feat": (24.99, 0.6731)},
        "bsd100": {"bicubic": (25.96, 0.682), "pixel": (25.91, 0.6680), "feat": (24.95, 0.6317)}},
    8: {"set5": {"bicubic": (23.80, 0.6455), "pixel": (24.77, 0.6864), "feat": (23.26, 0.7058)},
        "set14": {"bicubic": (22.37, 0.5518), "pixel": (23.02, 0.5787), "feat": (21.64, 0.5837)},
        "bsd100": {"bicubic": (22.11, 0.5322), "pixel": (22.54, 0.5526), "feat": (21.35, 0.5474)}},
}
# how close our PSNR gap to bicubic should come to the paper's (dB), per loss
GAP_MARGIN = {"pixel": 0.1, "feat": 1.0}


def paper_gap(scale: int, set_name: str, loss: str) -> float:
    """The paper's PSNR of ``loss`` ("pixel" | "feat") minus bicubic's, in dB."""
    p = PAPER_SR_RESULTS[scale][set_name]
    return p[loss][0] - p["bicubic"][0]


def _loss_of(method: str) -> str | None:
    base = method.split("+")[0]
    return "pixel" if base.startswith("pixel") else "feat" if base.startswith("feat") and "pix" not in base else None


def gap_rows(table: Mapping[int, Mapping[str, Mapping[str, Mapping]]], methods: Sequence[str] | None = None) -> list[dict]:
    """One row per scale, set and method (``pixel*`` / ``feat*``, not the feat+λ·pixel runs): our PSNR gap to
    bicubic, the paper's, their difference and whether it is within :data:`GAP_MARGIN` (at most that much
    worse than the paper's gap; better counts as within); the checkerboard
    energy (dB, output vs HR) where the evaluation has it. ``table``: ``{scale: {set: {method: metrics}}}``."""
    rows = []
    for scale, sets in table.items():
        for set_name, tab in sets.items():
            if "bicubic" not in tab or set_name not in PAPER_SR_RESULTS.get(scale, {}):
                continue
            for m, r in tab.items():
                loss = _loss_of(m)
                if loss is None or (methods is not None and m not in methods):
                    continue
                ours, paper = r["psnr"] - tab["bicubic"]["psnr"], paper_gap(scale, set_name, loss)
                rows.append({"scale": scale, "set": set_name, "method": m, "loss": loss, "psnr": r["psnr"],
                             "gap": ours, "paper_gap": paper, "off_by": ours - paper,
                             "within": ours - paper >= -GAP_MARGIN[loss],
                             "lpips": r.get("lpips"), "checkerboard_db": r.get("checkerboard_db")})
    return rows


def gaps_markdown(rows: Sequence[Mapping]) -> str:
    """A Markdown table of :func:`gap_rows`."""
    out = ["| scale | set | method | PSNR | ours − bicubic | paper − bicubic | difference | within | checkerboard |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cb = "" if r.get("checkerboard_db") is None else f"{r['checkerboard_db']:+.1f} dB"
        out.append(f"| ×{r['scale']} | {r['set']} | {r['method']} | {r['psnr']:.2f} | {r['gap']:+.2f} | "
                   f"{r['paper_gap']:+.2f} | {r['off_by']:+.2f} | {'yes' if r['within'] else 'no'} "
                   f"(±{GAP_MARGIN[r['loss']]:g}) | {cb} |")
    return "\n".join(out)


def grid_rows(evaluation: Mapping, methods: Sequence[str], scale: int = 4) -> list[dict]:
    """Per set and method of one evaluation file (``{"x4": {set: {method: metrics}}, "meta": {"models": ...}}``):
    the step, PSNR minus bicubic, LPIPS, the checkerboard energy and its split by pattern
    (``checkerboard_peaks``, :func:`perceptlib.metrics.checkerboard_spectrum`; the pattern columns are ``None``
    where the evaluation predates the split). Bicubic's own row comes first in each set."""
    models = evaluation.get("meta", {}).get("models", {})
    rows = []
    for set_name, tab in evaluation.get(f"x{scale}", {}).items():
        bic = tab["bicubic"]
        for m in ["bicubic", *methods]:
            r = tab.get(m)
            if r is None:
                continue
            peaks = r.get("checkerboard_peaks") or {}
            step = models.get(f"x{scale}/{m.split('+')[0]}", {}).get("step")
            rows.append({"set": set_name, "method": m, "step": step,
                         "psnr": r["psnr"], "gap": r["psnr"] - bic["psnr"], "lpips": r.get("lpips"),
                         "grid_db": r.get("checkerboard_db"),
                         **{f"grid {k}": peaks.get(k) for k in ("1/2, 0", "1/2, 1/2", "1/4, 0")}})
    return rows


def merge_evaluations(files: Mapping[str | Path, Callable[[str], str | None]], scales: Sequence[int] = (4, 8),
                      steps: Mapping[str, int] | None = None) -> dict[int, dict[str, dict[str, dict]]]:
    """``{scale: {set: {method: metrics}}}`` from committed evaluation JSONs. ``files`` maps each file to a
    function renaming its methods (``None`` drops one). When ``steps`` (run key ``"x4/feat"`` -> step) is
    given, an entry whose evaluated step (``meta.models["x4/feat"].step``, or ``meta["sr_x4_feat"].step`` as
    the sr-eval command writes it) differs is dropped, so a table never mixes an old evaluation with a newer
    network."""
    out: dict[int, dict[str, dict[str, dict]]] = {s: {} for s in scales}
    for path, rename in files.items():
        path = Path(path)
        if not path.is_file():
            continue
        ev = json.loads(path.read_text())
        meta = ev.get("meta", {}).get("models", {})
        for s in scales:
            for set_name, tab in ev.get(f"x{s}", {}).items():
                for m, v in tab.items():
                    name = rename(m)
                    if name is None:
                        continue
                    base = m.split("+")[0]
                    info = meta.get(f"x{s}/{base}") or ev.get("meta", {}).get(f"sr_x{s}_{base}") or {}
                    if steps is not None and m != "bicubic" and info.get("step") != steps.get(
                            f"x{s}/{name.split('+')[0]}"):
                        continue
                    out[s].setdefault(set_name, {})[name] = v
    return out


def sr_table_markdown(table: Mapping[int, Mapping[str, Mapping[str, Mapping]]],
                      methods: Sequence[str] | None = None) -> str:
    """PSNR / SSIM / LPIPS per scale, set and method, with the paper's PSNR / SSIM beside, as Markdown."""
    out = ["| scale | set | method | PSNR | SSIM | LPIPS | checkerboard | paper PSNR / SSIM |",
           "|---|---|---|---|---|---|---|---|"]
    for scale, sets in table.items():
        for set_name, tab in sets.items():
            for m, r in tab.items():
                if methods is not None and m not in methods:
                    continue
                p = PAPER_SR_RESULTS.get(scale, {}).get(set_name, {}).get(m)
                lp = "" if r.get("lpips") is None else f"{r['lpips']:.4f}"
                cb = "" if r.get("checkerboard_db") is None else f"{r['checkerboard_db']:+.1f} dB"
                out.append(f"| ×{scale} | {set_name} | {m} | {r['psnr']:.2f} | {r['ssim']:.4f} | {lp} | {cb} | "
                           + (f"{p[0]:.2f} / {p[1]:.4f}" if p else "") + " |")
    return "\n".join(out)


def smooth(steps: Sequence[float], values: Sequence[float], window: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Running mean of ``values`` over ``window`` training steps (``steps`` are the logged steps)."""
    s, v = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    k = max(1, int(round(window / max(1.0, float(np.median(np.diff(s))) if len(s) > 1 else 1.0))))
    return (s[k - 1:], np.convolve(v, np.ones(k) / k, mode="valid")) if len(v) >= k else (s, v)


def plot_sr_curves(histories: Mapping[str, Mapping], window: int = 500, size: tuple[float, float] = (5.2, 3.6)):
    """Two panels: ℓ_pixel of the ℓ_pixel networks and ℓ_feat of the ℓ_feat networks (running means over
    ``window`` steps, log scale), one line per run key (``"x4/pixel"``, ...); the legends sit below the axes.
    ``histories``: key -> ``history.json`` dicts. Returns the Figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(2 * size[0], size[1]), layout="constrained")
    styles = ["-", "--", ":", "-."]
    for ax, term, title in zip(axes, ("pixel", "feat"), ("ℓ_pixel of the ℓ_pixel networks", "ℓ_feat (relu2_2) of the ℓ_feat networks")):
        n = 0
        for key, h in histories.items():
            if key.split("/")[-1].split("_")[0] != term or term not in h["terms"]:
                continue
            ax.plot(*smooth(h["step"], h["terms"][term], window), label=key, lw=1.4, ls=styles[(n // 10) % 4])
            n += 1
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(title, fontsize=10)
        if n:
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=min(n, 3), frameon=False)
    return fig


def last_terms(histories: Mapping[str, Mapping], window: int = 500) -> dict[str, dict[str, float]]:
    """Mean of each logged loss term over each run's last ``window`` steps: key -> {term: value}."""
    out = {}
    for key, h in histories.items():
        s = np.asarray(h["step"])
        last = s > s[-1] - window
        out[key] = {t: float(np.mean(np.asarray(v, dtype=float)[last])) for t, v in h["terms"].items()
                    if t in ("pixel", "feat")}
    return out


def crop_panels(hr: Tensor, outputs: Mapping[str, Tensor], box: tuple[int, int, int], scale: int,
                psnr_fn: Callable[[Tensor, Tensor, int], float]) -> dict[str, Tensor]:
    """Panels for :func:`perceptlib.plots.plot_sr_panels`: the whole HR image, its crop, and each output's
    crop captioned with its whole-image PSNR (``psnr_fn(sr, hr, border)``). ``box`` = (top, left, side) of
    the crop in HR pixels, moved inside the image and onto the LR grid. ``hr``/outputs: (3, H, W) in [0, 1]."""
    top, left, side, _ = crop_box(hr, box, scale)
    sl = np.s_[..., top:top + side, left:left + side]
    panels = {"HR": hr, "HR crop": hr[sl]}
    for name, out in outputs.items():
        out = out.clamp(0, 1)
        panels[f"{name}\n{psnr_fn(out, hr, scale):.2f} dB"] = out[sl]
    return panels


def crop_box(hr: Tensor, box: tuple[int, int, int], scale: int) -> tuple[int, int, int, int]:
    """The (top, left, height, width) that :func:`crop_panels` cuts, for drawing it on the HR panel."""
    top, left, side = box
    return (min(top, hr.shape[-2] - side) // scale * scale, min(left, hr.shape[-1] - side) // scale * scale,
            side, side)


def plot_sr_tradeoff(table: Mapping[str, Mapping[str, Mapping]], curve: Sequence[str],
                     extra: Mapping[str, str] | None = None, size: float = 4.6):
    """PSNR against LPIPS per set, one panel each: the ``curve`` methods joined in order (ℓ_pixel → ℓ_feat
    + λ·ℓ_pixel → ℓ_feat), ``extra`` methods (name -> marker) as points, bicubic as a star with dashed
    guides. ``table``: {set: {method: metrics}}; sets missing a method are skipped. Returns the Figure."""
    import matplotlib.pyplot as plt

    extra = dict(extra or {})
    sets = [t for t, tab in table.items() if all(m in tab for m in [*curve, "bicubic"])]
    if not sets:
        raise ValueError(f"no set has all of {list(curve) + ['bicubic']}")
    fig, axes = plt.subplots(1, len(sets), figsize=(size * len(sets), size * 0.85), squeeze=False,
                             layout="constrained")
    for ax, t in zip(axes[0], sets):
        tab = table[t]
        xs, ys = [tab[m]["lpips"] for m in curve], [tab[m]["psnr"] for m in curve]
        ax.plot(xs, ys, "-o", color="C0", label="ℓ_pixel → ℓ_feat + λ·ℓ_pixel → ℓ_feat")
        for i, (m, xv, yv) in enumerate(zip(curve, xs, ys)):
            ax.annotate(m.replace("feat_pix", "λ="), (xv, yv), fontsize=7, xytext=(5, -10 if i % 2 else 4),
                        textcoords="offset points")
        for j, (m, marker) in enumerate(extra.items()):
            if m in tab:
                ax.scatter(tab[m]["lpips"], tab[m]["psnr"], marker=marker, color=f"C{j + 2}", s=28, label=m)
        b = tab["bicubic"]
        ax.axhline(b["psnr"], color="grey", ls="--", lw=1)
        ax.axvline(b["lpips"], color="grey", ls="--", lw=1)
        ax.scatter(b["lpips"], b["psnr"], marker="*", s=120, color="k", label="bicubic", zorder=3)
        ax.set_xlabel("LPIPS (lower is better)")
        ax.set_ylabel("PSNR Y (dB)")
        ax.set_title(f"×4 {t}", fontsize=10)
        ax.margins(0.15)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4), fontsize=7, frameon=False)
    return fig


def _fmt_list(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def sr_findings(rows: Sequence[Mapping], table: Mapping[int, Mapping[str, Mapping[str, Mapping]]],
                labels: Mapping[str, str]) -> str:
    """Markdown findings generated from :func:`gap_rows` and the table: per method, how far its PSNR gap to
    bicubic is from the paper's, whether ℓ_feat has the best LPIPS per set, and the checkerboard energy.
    ``labels``: method -> how the text names it (e.g. ``"feat_impl"`` -> "ℓ_feat, no norm + nearest-conv")."""
    lines = []
    for m in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == m]
        loss = mine[0]["loss"]
        inside = [f"×{r['scale']} {r['set']}" for r in mine if r["within"]]
        diffs = ", ".join(f"×{r['scale']} {r['set']} {r['gap']:+.2f} dB (paper {r['paper_gap']:+.2f})" for r in mine)
        lines.append(f"- **{labels.get(m, m)}**: PSNR − bicubic {diffs}; within {GAP_MARGIN[loss]:g} dB of the "
                     f"paper's gap on {len(inside)} of {len(mine)}" + (f" ({_fmt_list(inside)})." if inside else "."))
        cbs = [r["checkerboard_db"] for r in mine if r.get("checkerboard_db") is not None]
        if cbs:
            kind = ("a grid" if max(cbs) > 10 else "a slight excess over the photos" if max(cbs) > 1
                    else "no excess over the photos")
            lines[-1] += (f" Checkerboard energy {min(cbs):+.1f} to {max(cbs):+.1f} dB against the HR images: {kind} "
                          f"(0 dB: the photos' own energy at the upsampling frequencies).")
    for scale, sets in table.items():
        for set_name, tab in sets.items():
            scored = {m: r["lpips"] for m, r in tab.items() if r.get("lpips") is not None}
            if not scored:
                continue
            best = min(scored, key=scored.get)
            lines.append(f"- ×{scale} {set_name}: lowest LPIPS {labels.get(best, best)} ({scored[best]:.4f}; "
                         f"bicubic {scored.get('bicubic', float('nan')):.4f}).")
    return "\n".join(lines)
