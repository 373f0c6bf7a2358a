"""Pure plotting functions: data in, ``matplotlib.figure.Figure`` out (no model work, no ``show``)."""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence

import numpy as np
from torch import Tensor

__all__ = ["to_numpy_image", "plot_images", "plot_feature_maps", "plot_loss_table"]


def to_numpy_image(x: Tensor) -> np.ndarray:
    """``(3, H, W)`` or ``(1, 3, H, W)`` tensor in [0, 1] -> ``(H, W, 3)`` numpy array for ``imshow``."""
    if x.dim() == 4:
        x = x[0]
    return x.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()


def _figure(rows: int, cols: int, size: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size * cols, size * rows), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, cols, squeeze=False))
    return fig, axes


MAX_COLS = 8  # default strips of more panels are wrapped into rows


def _default_cols(n: int, cols: int | None) -> int:
    """``cols`` if given, else one row of ``n`` or, past :data:`MAX_COLS`, balanced rows of at most that."""
    return cols or -(-n // -(-n // MAX_COLS))


def _text_width(s: str, fontsize: float) -> float:
    """Width in inches of the widest line of ``s`` in the default font at ``fontsize`` points."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextToPath

    prop, measure = FontProperties(size=fontsize), TextToPath()
    return max(measure.get_text_width_height_descent(line, prop, ismath=False)[0] for line in s.split("\n")) / 72


def _wrap(label: str, width: float, fontsize: float) -> str:
    """``label`` with each line longer than ``width`` inches broken after commas, then at spaces (a single
    word longer than ``width`` stays whole); only whitespace becomes newlines, so the text is the same."""
    out = []
    for line in label.split("\n"):
        if _text_width(line, fontsize) <= width:
            out.append(line)
            continue
        tokens = []
        for piece in re.split(r"(?<=,) ", line):
            tokens += [piece] if _text_width(piece, fontsize) <= width else piece.split(" ")
        cur = ""
        for tok in tokens:
            cand = f"{cur} {tok}" if cur else tok
            if cur and _text_width(cand, fontsize) > width:
                out.append(cur)
                cand = tok
            cur = cand
        out.append(cur)
    return "\n".join(out)


def _title_rows(fig, titles: np.ndarray, fontsize: float) -> None:
    """Make ``fig`` taller by the title lines of each row (``titles``: ``(rows, cols)`` strings), so the
    images keep their size instead of shrinking under multi-line titles."""
    lines = sum(max((t.count("\n") + 1 if t else 0) for t in row) for row in titles)
    w, h = fig.get_size_inches()
    fig.set_size_inches(w, h + lines * fontsize * 1.25 / 72)


def _titled_grid(labels: Sequence[str], cols: int | None, size: float):
    """A grid of ``size``-inch panels for ``labels`` (``cols`` as :func:`_default_cols`), axes off, with the
    labels wrapped to the column width and the figure grown by their lines; returns ``(fig, axes, titles)``
    (``titles``: one wrapped label per cell in row order, ``""`` past the last label)."""
    n = len(labels)
    cols = _default_cols(n, cols)
    rows = -(-n // cols)
    fig, axes = _figure(rows, cols, size)
    titles = np.full(rows * cols, "", dtype=object)
    titles[:n] = [_wrap(label, 0.9 * size, 9) for label in labels]
    _title_rows(fig, titles.reshape(rows, cols), 9)
    for ax in axes.flat:
        ax.set_axis_off()
    return fig, axes, titles


def plot_images(images: Mapping[str, Tensor], cols: int | None = None, size: float = 3.0, title: str | None = None):
    """A grid of labelled images ``{label: (3, H, W) in [0, 1]}``; ``cols`` defaults to one row (balanced
    rows past 8 panels). Long labels are wrapped to the column width."""
    fig, axes, labels = _titled_grid(list(images), cols, size)
    for ax, label, img in zip(axes.flat, labels, images.values()):
        ax.imshow(to_numpy_image(img))
        ax.set_title(label, fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def plot_feature_maps(feats: Mapping[str, Tensor], pairs: Sequence[tuple[str, str]], channel: str = "max-var",
                      size: float = 2.6):
    """Conv vs relu taps side by side, one row per ``(conv_name, relu_name)`` pair.

    ``feats`` maps tap names to ``(1, C, H, W)``. Each row shows the same channel (the conv tap's
    channel of largest variance) on a shared diverging colour scale, so the relu's lost negative half
    is visible; the titles give the fraction of negative conv values.
    """
    fig, axes = _figure(len(pairs), 2, size)
    h, w = feats[pairs[0][0]].shape[-2:]
    fig.set_size_inches(2 * size + 1.0, len(pairs) * (size * h / w + 0.35))
    for row, (conv, relu) in zip(axes, pairs):
        c = feats[conv][0].float()
        idx = int(c.flatten(1).var(dim=1).argmax()) if channel == "max-var" else int(channel)
        lim = float(c[idx].abs().max()) or 1.0
        for ax, name in zip(row, (conv, relu)):
            m = feats[name][0, idx].float().cpu().numpy()
            im = ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim)
            neg = float((feats[name][0] < 0).float().mean())
            ax.set_title(f"{name} ch {idx}  ({feats[name].shape[-2]}x{feats[name].shape[-1]}, {neg:.0%} < 0)",
                         fontsize=8)
            ax.set_axis_off()
        fig.colorbar(im, ax=row.tolist(), shrink=0.8)
    return fig


def plot_loss_table(table: Mapping[str, Mapping[str, float]], normalise: bool = True, size: float = 4.0,
                    title: str | None = None):
    """Grouped bars: one group per distance (pixel, layers), one bar per distortion.

    With ``normalise`` each distance's values are divided by their maximum, so the *ranking* of
    distortions per distance can be compared across layers of very different scales.
    """
    dists = list(table)
    columns = list(next(iter(table.values())))
    values = np.array([[table[d][c] for c in columns] for d in dists])  # (distortions, columns)
    if normalise:
        values = values / np.maximum(values.max(axis=0, keepdims=True), 1e-12)
    fig, axes = _figure(1, 1, size)
    ax = axes[0, 0]
    legend_w = max(_text_width(str(d), 8) for d in dists) + 0.6  # the legend sits right of the axes
    fig.set_size_inches(max(size, 1.3 * len(columns)) + legend_w, size)
    width = 0.8 / len(dists)
    x = np.arange(len(columns))
    for i, d in enumerate(dists):
        ax.bar(x + (i - (len(dists) - 1) / 2) * width, values[i], width, label=d)
    ax.set_xticks(x, columns, rotation=30, ha="right")
    ax.set_ylabel("loss / max over distortions" if normalise else "loss")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    if title:
        ax.set_title(title)
    return fig


# --- data and metrics (notebook 00b) ---------------------------------------------------------------
__all__ += ["plot_image_sets", "plot_sr_panels", "plot_metric_bars"]


def _blank(ax) -> None:
    """No ticks and no frame, but (unlike ``set_axis_off``) the y-label still shows."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def plot_image_sets(sets: Mapping[str, Mapping[str, Tensor]], size: float = 2.0, title: str | None = None):
    """Thumbnail rows, one per image set: ``{set_label: {image_name: (3, H, W) in [0, 1]}}``.

    The set label is the y-label of the row's first axis; each thumbnail is titled with its name and
    ``W x H`` size. Shorter rows are padded with empty (hidden) axes.
    """
    if not sets or not all(sets.values()):
        raise ValueError("plot_image_sets needs at least one set, each with at least one image")
    cols = max(len(images) for images in sets.values())
    fig, axes = _figure(len(sets), cols, size)
    for row, (label, images) in zip(axes, sets.items()):
        for ax in row[len(images):]:
            ax.set_axis_off()
        for ax, (name, img) in zip(row, images.items()):
            ax.imshow(to_numpy_image(img))
            ax.set_title(f"{name}\n{img.shape[-1]}x{img.shape[-2]}", fontsize=8)
            _blank(ax)
        row[0].set_ylabel(label, fontsize=10)
    if title:
        fig.suptitle(title)
    return fig


def plot_sr_panels(panels: Mapping[str, Tensor], cols: int | None = None, size: float = 3.0,
                   boxes: Mapping[str, Sequence[int]] | None = None, interpolation: str = "nearest",
                   title: str | None = None):
    """Images of different resolutions at the same display size: ``{panel title: (3, H, W) in [0, 1]}``.

    Panels use ``interpolation`` (default ``"nearest"``, so the pixels of an LR image show as
    blocks). ``boxes`` maps a panel title to ``(top, left, height, width)`` in that panel's pixels,
    drawn as a red rectangle (where a crop comes from); such overview panels are drawn with
    ``"antialiased"`` interpolation since they are usually shown smaller than their size.
    """
    from matplotlib.patches import Rectangle

    boxes = dict(boxes or {})
    unknown = set(boxes) - set(panels)
    if unknown:
        raise ValueError(f"boxes name panels that do not exist: {sorted(unknown)}")
    fig, axes, titles = _titled_grid(list(panels), cols, size)
    for ax, t, (label, img) in zip(axes.flat, titles, panels.items()):
        ax.imshow(to_numpy_image(img), interpolation="antialiased" if label in boxes else interpolation)
        ax.set_title(t, fontsize=9)
        if label in boxes:
            top, left, h, w = boxes[label]
            ax.add_patch(Rectangle((left - 0.5, top - 0.5), w, h, fill=False, edgecolor="red", linewidth=1.5))
    if title:
        fig.suptitle(title)
    return fig


def plot_metric_bars(values: Mapping[str, Mapping[str, float]],
                     reference: Mapping[str, Mapping[str, float]] | None = None, ylabel: str = "PSNR (dB)",
                     reference_label: str = "reference", fmt: str = "{:.2f}", size: float = 4.0,
                     title: str | None = None):
    """Grouped bars ``{series: {group: value}}``: one group per inner key (e.g. a set), one bar per
    series (e.g. a scale and protocol), each bar labelled with ``fmt`` (vertically, inside the bar, so
    the tops stay free for the reference markers). A missing value leaves a gap; the legend sits below.

    ``reference`` (same series and group keys; missing entries skipped) is drawn as black diamonds on
    the matching bar positions, e.g. numbers a paper reports, with ``reference_label`` in the legend.
    """
    series = list(values)
    if not series:
        raise ValueError("plot_metric_bars needs at least one series")
    groups = list(dict.fromkeys(g for s in series for g in values[s]))
    fig, axes = _figure(1, 1, size)
    ax = axes[0, 0]
    fig.set_size_inches(max(size, 1.0 + 0.45 * len(groups) * len(series)), size)
    width = 0.8 / len(series)
    x = np.arange(len(groups))
    ref_x, ref_y, handles = [], [], []
    for i, s in enumerate(series):
        xs = x + (i - (len(series) - 1) / 2) * width
        keep = [j for j, g in enumerate(groups) if g in values[s]]
        bars = ax.bar(xs[keep], [values[s][groups[j]] for j in keep], width, label=s)
        handles.append(bars)
        ax.bar_label(bars, labels=[fmt.format(values[s][groups[j]]) for j in keep], label_type="center",
                     rotation=90, color="white", fontsize=8)
        for j, g in enumerate(groups):
            if reference and g in reference.get(s, {}):
                ref_x.append(float(xs[j]))
                ref_y.append(float(reference[s][g]))
    if ref_x:
        handles += ax.plot(ref_x, ref_y, linestyle="none", marker="D", color="black", markersize=5,
                           label=reference_label)
    ax.set_xticks(x, groups)
    ax.set_ylabel(ylabel)
    ax.margins(y=0.05)
    ax.legend(handles=handles, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncols=2)
    if title:
        ax.set_title(title)
    return fig


# --- reconstruction (notebook 01) ------------------------------------------------------------------
__all__ += ["plot_reconstruction_grid", "plot_style_grid", "plot_loss_histories", "plot_question_bars"]


def plot_reconstruction_grid(originals: Mapping[str, Tensor], rows: Mapping[str, Mapping[str, Tensor]],
                             captions: Mapping[str, Mapping[str, str]] | None = None, size: float = 2.0,
                             first_label: str = "original", title: str | None = None):
    """Fig. 3 layout: one row per image, its original first, then one reconstruction per column.

    ``originals``: ``{row: (3, H, W) or (1, 3, H, W) in [0, 1]}``; ``rows``: ``{row: {column: image}}``
    (e.g. ``{"chelsea": {"relu2_2": ..., "relu3_3": ...}}``); ``captions[row][column]`` is added under
    the column title (e.g. PSNR). Columns are the union of the rows' keys in order; gaps stay blank.
    """
    if not rows:
        raise ValueError("plot_reconstruction_grid needs at least one row")
    cols = list(dict.fromkeys(c for r in rows.values() for c in r))
    fig, axes = _figure(len(rows), len(cols) + 1, size)
    titles = np.full(axes.shape, "", dtype=object)
    for r, (name, recs) in enumerate(rows.items()):
        if name in originals:
            titles[r, 0] = _wrap(f"{name}: {first_label}", 0.9 * size, 8)
        for c, col in enumerate(cols, start=1):
            if col in recs:
                cap = (captions or {}).get(name, {}).get(col)
                titles[r, c] = _wrap(col + (f"\n{cap}" if cap else ""), 0.9 * size, 8)
    _title_rows(fig, titles, 8)
    for ax in axes.flat:
        ax.set_axis_off()
    for r, (name, recs) in enumerate(rows.items()):
        if name in originals:
            axes[r, 0].imshow(to_numpy_image(originals[name]))
            axes[r, 0].set_title(titles[r, 0], fontsize=8)
        for c, col in enumerate(cols, start=1):
            if col in recs:
                axes[r, c].imshow(to_numpy_image(recs[col]))
                axes[r, c].set_title(titles[r, c], fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def plot_style_grid(styles: Mapping[str, Tensor], rows: Mapping[str, Mapping[str, Tensor]],
                    captions: Mapping[str, Mapping[str, str]] | None = None, size: float = 2.0,
                    title: str | None = None):
    """Fig. 4 layout: one row per painting (first column), then the images reconstructed from its Gram
    matrices with growing layer sets, ``rows[painting][column label]``."""
    return plot_reconstruction_grid(styles, rows, captions=captions, size=size, first_label="style", title=title)


def plot_loss_histories(histories: Mapping[str, Sequence[float]], normalise: bool = True, log: bool = True,
                        size: float = 4.0, title: str | None = None, ax=None):
    """Loss per step, one line per run ``{label: [total per step]}``; with ``normalise`` each curve is
    divided by its first value (runs of different layers have very different scales). Past 10 runs the
    colours repeat with another line style; the legend sits right of the axes, off the curves."""
    ncols = -(-len(histories) // 20)
    if ax is None:
        fig, axes = _figure(1, 1, size)
        legend_w = ncols * (max((_text_width(str(k), 7) for k in histories), default=0) + 0.55)
        fig.set_size_inches(size * 1.5 + legend_w, size)
        ax = axes[0, 0]
    fig = ax.figure
    for i, (label, h) in enumerate(histories.items()):
        h = np.asarray(h, dtype=float)
        if normalise and h.size and h[0] != 0:
            h = h / h[0]
        ax.plot(np.arange(1, h.size + 1), h, label=label, linewidth=1.2, color=f"C{i % 10}",
                linestyle=("-", "--", ":", "-.")[i // 10 % 4])
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("step (loss evaluation)")
    ax.set_ylabel("loss / initial loss" if normalise else "loss")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0, ncols=ncols)
    if title:
        ax.set_title(title)
    return fig


def plot_question_bars(rows: Sequence[Mapping], metrics: Sequence[str] = ("psnr", "ssim", "lpips"),
                       group: str = "question", label: str = "run", size: float = 3.2, title: str | None = None):
    """One panel per metric, horizontal bars per row, grouped (and coloured) by ``row[group]``.

    ``rows``: dicts with ``group``, ``label`` and metric keys (e.g. from
    :func:`perceptlib.experiments.result_row`); rows with a missing metric are skipped in that panel.
    Each bar is labelled with its value; LPIPS gets "(lower is better)" in its title.
    """
    if not rows:
        raise ValueError("plot_question_bars needs at least one row")
    groups = list(dict.fromkeys(r[group] for r in rows))
    colours = {g: f"C{i % 10}" for i, g in enumerate(groups)}
    fig, axes = _figure(1, len(metrics), size)
    fig.set_size_inches(size * len(metrics) * 1.3, max(size, 0.28 * len(rows) + 1))
    ylabels = [f"{r[group]}: {r[label]}" for r in rows]
    y = np.arange(len(rows))[::-1]
    for ax, m in zip(axes[0], metrics):
        keep = [i for i, r in enumerate(rows) if r.get(m) is not None]
        vals = [float(rows[i][m]) for i in keep]
        bars = ax.barh(y[keep], vals, color=[colours[rows[i][group]] for i in keep])
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in vals], fontsize=7, padding=2)
        ax.set_yticks(y, ylabels if ax is axes[0, 0] else [""] * len(rows), fontsize=7)
        ax.set_title(m.upper() + (" (lower is better)" if m.lower() == "lpips" else ""), fontsize=9)
        ax.margins(x=0.25)
    if title:
        fig.suptitle(title)
    return fig


def plot_run_terms(runs: Mapping[str, Mapping[str, Sequence[float]]], terms: Sequence[str] = ("feat", "style"),
                   log: bool = True, size: float = 3.2, title: str | None = None, smooth: int = 1):
    """Training curves of several runs side by side: one panel per term, one line per run.

    ``runs``: ``{label: {"step": [...], term: [...], ...}}`` (e.g. ``{name: {"step": h["step"], **h["terms"]}}``
    of ``history.json`` files); runs without a term are left out of its panel. ``smooth``: moving-average
    window in log entries. The legend sits below the panels, so it never covers a curve.
    """
    if not runs:
        raise ValueError("plot_run_terms needs at least one run")
    fig, axes = _figure(1, len(terms), size)
    fig.set_size_inches(size * 1.35 * len(terms), size + 0.35 * ((len(runs) + 2) // 3) + 0.4)
    for ax, term in zip(axes[0], terms):
        for i, (label, r) in enumerate(runs.items()):
            if term not in r:
                continue
            v = np.asarray(r[term], float)
            s = np.asarray(r["step"], float)
            if smooth > 1 and v.size >= smooth:
                v = np.convolve(v, np.ones(smooth) / smooth, mode="valid")
                s = s[smooth - 1:]
            ax.plot(s, v, lw=1.0, color=f"C{i % 10}", ls="-" if i < 10 else "--", label=label)
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(term, fontsize=9)
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    for ax in axes[0][1:]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside lower center", ncol=min(3, len(labels)), fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_table1(results: Mapping[str, Mapping], paper: Mapping[int, Sequence[float]] | None = None,
                size: float = 3.4):
    """Seconds per image vs image side, log-log: the optimisation baseline at 100 and 500 evaluations and the
    network, one marker style per result in ``results`` (``{label: perceptlib.speed.table1(...)}``), plus the
    paper's Titan X numbers (``{side: (opt100, opt300, opt500, network)}``). The legend sits below the axes."""
    fig, axes = _figure(1, 1, size)
    fig.set_size_inches(size * 1.9, size + 0.25 * (len(results) + 1))
    ax = axes[0, 0]
    markers = "osD^v<>"
    for k, (lab, res) in enumerate(results.items()):
        sizes = sorted({r["size"] for r in res["rows"]})
        for n, c in ((500, "C0"), (100, "C2"), (None, "C1")):
            ys = [next(r["seconds"] for r in res["rows"] if r["size"] == s and r["iterations"] == n) for s in sizes]
            ax.plot(sizes, ys, marker=markers[k % len(markers)], color=c, ls=("-", ":", "-.", "--")[k % 4],
                    label=f"{lab}: " + (f"optimisation {n} its" if n else "network"))
    if paper:
        sides = sorted(paper)
        ax.plot(sides, [paper[s][2] for s in sides], "k^--", lw=0.8, label="paper: optimisation 500 its")
        ax.plot(sides, [paper[s][3] for s in sides], "kv--", lw=0.8, label="paper: network")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("image side (px)")
    ax.set_ylabel("seconds per image")
    ax.grid(True, alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=3, fontsize=6, frameon=False)
    return fig
