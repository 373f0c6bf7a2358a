"""Layout checks for matplotlib figures: overlapping text and legends drawn over data.

All functions draw the figure once with an Agg canvas (restoring its own canvas afterwards) and measure
in display pixels at ``fig.dpi``. Rotated text is compared as a rotated rectangle, not its axis-aligned
hull, so 30°-rotated tick labels side by side are not a false alarm.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

__all__ = ["text_overlaps", "legend_over_data", "figure_problems"]


@dataclass
class _Item:
    """One drawn text: its corners ``(4, 2)`` in display px, axis-aligned hull, owner axes and a label."""

    corners: np.ndarray
    hull: tuple[float, float, float, float]  # x0, y0, x1, y1
    ax: object | None  # owning Axes; None for figure-level text
    role: str
    text: str
    group: object | None = None  # tick labels of one axis share a group


def _renderer(fig):
    """Draw ``fig`` with Agg (layout engines run on draw) and return the renderer; keeps ``fig.canvas``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    old = fig.canvas
    if isinstance(old, FigureCanvasAgg):
        old.draw()
        return old.get_renderer()
    canvas = FigureCanvasAgg(fig)
    try:
        canvas.draw()
        return canvas.get_renderer()
    finally:
        fig.set_canvas(old)


def _corners(t, renderer) -> np.ndarray:
    """The rotated rectangle of text ``t`` as ``(4, 2)`` display coordinates."""
    bb = t.get_window_extent(renderer)
    angle = t.get_rotation() % 180
    if min(angle, 180 - angle) < 1e-6 or abs(angle - 90) < 1e-6:
        return np.array([[bb.x0, bb.y0], [bb.x1, bb.y0], [bb.x1, bb.y1], [bb.x0, bb.y1]])
    rot = t.get_rotation()
    t.set_rotation(0)  # the unrotated size; the rotated box has the same centre as its hull
    try:
        flat = t.get_window_extent(renderer)
    finally:
        t.set_rotation(rot)
    w, h = flat.width / 2, flat.height / 2
    a = np.deg2rad(angle)
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    local = np.array([[-w, -h], [w, -h], [w, h], [-w, h]])
    return local @ r.T + [(bb.x0 + bb.x1) / 2, (bb.y0 + bb.y1) / 2]


def _depth(a: np.ndarray, b: np.ndarray) -> float:
    """Separating-axis overlap of two convex quadrilaterals ``(4, 2)``: > 0 is the penetration depth in px,
    < 0 the gap along the best separating axis."""
    best = np.inf
    for poly in (a, b):
        edges = np.roll(poly, -1, axis=0) - poly
        for e in edges[:2]:
            n = np.array([-e[1], e[0]])
            norm = np.hypot(*n)
            if norm == 0:
                continue
            n = n / norm
            pa, pb = a @ n, b @ n
            best = min(best, min(pa.max(), pb.max()) - max(pa.min(), pb.min()))
    return float(best)


def _texts(fig, renderer) -> Iterator[tuple[object, object | None, str, object | None]]:
    """Every text artist that may be drawn: ``(text, owner axes or None, role, group)``."""
    figs = [fig]
    while figs:
        f = figs.pop()
        figs.extend(getattr(f, "subfigs", []))
        for name in ("_suptitle", "_supxlabel", "_supylabel"):
            if getattr(f, name, None) is not None:
                yield getattr(f, name), None, name.strip("_"), None
        for t in f.texts:
            yield t, None, "figure text", None
        for leg in f.legends:
            if leg.get_visible():
                for t in [leg.get_title(), *leg.get_texts()]:
                    yield t, None, "figure legend", None
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        for loc, t in (("title", ax.title), ("left title", ax._left_title), ("right title", ax._right_title)):
            yield t, ax, loc, None
        if ax.axison:
            for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
                if not axis.get_visible():
                    continue
                yield axis.label, ax, f"{name}label", None
                try:
                    ticks = axis._update_ticks()  # the ticks inside the view, i.e. the drawn ones
                except AttributeError:  # pragma: no cover - other matplotlib versions
                    ticks = axis.get_major_ticks() + axis.get_minor_ticks()
                for tick in ticks:
                    for lab in (tick.label1, tick.label2):
                        yield lab, ax, f"{name} tick label", (axis, lab is tick.label2)
            offset_texts = (ax.xaxis.offsetText, ax.yaxis.offsetText)
            for t in offset_texts:
                yield t, ax, "offset text", None
        for t in ax.texts:
            if hasattr(t, "_check_xy") and not t._check_xy(renderer):
                continue  # an annotation whose point is clipped is not drawn
            yield t, ax, "annotation" if hasattr(t, "xyann") else "text", None
        leg = ax.get_legend()
        if leg is not None and leg.get_visible():
            for t in [leg.get_title(), *leg.get_texts()]:
                yield t, ax, "legend", None


def _items(fig, renderer) -> list[_Item]:
    out, seen = [], set()
    for t, ax, role, group in _texts(fig, renderer):
        if id(t) in seen:  # a suptitle is also in fig.texts
            continue
        seen.add(id(t))
        s = t.get_text()
        if not t.get_visible() or not s.strip() or (t.get_alpha() is not None and t.get_alpha() == 0):
            continue
        c = _corners(t, renderer)
        if not np.isfinite(c).all():
            continue
        out.append(_Item(c, (c[:, 0].min(), c[:, 1].min(), c[:, 0].max(), c[:, 1].max()), ax, role, s, group))
    return out


def _axes_name(fig, ax) -> str:
    if ax is None:
        return "figure"
    i = fig.axes.index(ax)
    title = ax.get_title() or ax.get_title("left") or ax.get_ylabel()
    return f"axes {i}" + (f" ({_short(title)!r})" if title else "")


def _short(s: str, n: int = 40) -> str:
    s = " ".join(s.split())
    return s if len(s) <= n else s[:n - 1] + "…"


def _has_area(ax) -> bool:
    """Whether an axes draws anything in its area (an empty, hidden padding axes does not)."""
    return ax.get_visible() and (ax.axison or bool(ax.images or ax.lines or ax.collections or ax.patches))


def text_overlaps(fig, tol_px: float = 1.0) -> list[str]:
    """Pairs of drawn texts whose boxes overlap by more than ``tol_px`` display px, and texts of one axes
    (or of the figure) that run into another axes' area, as readable strings.

    Texts: suptitle and figure texts and legends, axes titles (all three), axis labels, drawn tick
    labels, offset texts, ``ax.texts`` (annotations, bar labels) and legend texts. Tick labels of the same
    axis are reported as soon as their boxes meet (no tolerance). A text against its own axes' area is
    never reported, nor against an axes with the same area (a twin).
    """
    return _text_overlaps(fig, _renderer(fig), tol_px)


def _text_overlaps(fig, renderer, tol_px: float) -> list[str]:
    items = _items(fig, renderer)
    problems = []
    hull = np.array([it.hull for it in items]).reshape(-1, 4)
    for i, a in enumerate(items):
        for j in range(i + 1, len(items)):
            b = items[j]
            same_ticks = a.group is not None and a.group == b.group
            limit = 0.0 if same_ticks else tol_px
            hx = min(hull[i, 2], hull[j, 2]) - max(hull[i, 0], hull[j, 0])
            hy = min(hull[i, 3], hull[j, 3]) - max(hull[i, 1], hull[j, 1])
            if min(hx, hy) < limit:
                continue
            d = _depth(a.corners, b.corners)
            if (d >= 0.0) if same_ticks else (d > tol_px):
                problems.append(f"{a.role} {_short(a.text)!r} of {_axes_name(fig, a.ax)} and {b.role} "
                                f"{_short(b.text)!r} of {_axes_name(fig, b.ax)} overlap by {d:.1f} px")
    areas = [(ax, ax.get_window_extent(renderer)) for ax in fig.axes if _has_area(ax)]
    for it in items:
        own = it.ax.get_window_extent(renderer) if it.ax is not None else None
        for ax, bb in areas:
            if ax is it.ax or (own is not None and np.allclose(own.extents, bb.extents, atol=1.0)):
                continue
            rect = np.array([[bb.x0, bb.y0], [bb.x1, bb.y0], [bb.x1, bb.y1], [bb.x0, bb.y1]])
            d = _depth(it.corners, rect)
            if d > tol_px:
                problems.append(f"{it.role} {_short(it.text)!r} of {_axes_name(fig, it.ax)} runs {d:.1f} px "
                                f"into the area of {_axes_name(fig, ax)}")
    return problems


def _covered(ax, region, renderer, tol_px: float) -> list[str]:
    """What data of ``ax`` (lines, scatter points, bars) lies inside the display ``region`` (a Bbox)."""
    from matplotlib.container import BarContainer

    found = []
    for line in ax.lines:
        if not line.get_visible():
            continue
        path = line.get_transform().transform_path(line.get_path())
        xy = path.vertices[np.isfinite(path.vertices).all(axis=1)]
        inside = ((xy[:, 0] >= region.x0) & (xy[:, 0] <= region.x1)
                  & (xy[:, 1] >= region.y0) & (xy[:, 1] <= region.y1))
        drawn_line = line.get_linestyle() not in ("None", "none", "", " ") and line.get_linewidth() > 0
        if inside.any() or (drawn_line and path.cleaned(remove_nans=True).intersects_bbox(region, filled=False)):
            found.append(f"line {line.get_label()!r}")
    for coll in ax.collections:
        offsets = np.asarray(coll.get_offsets())
        if not coll.get_visible() or offsets.size == 0 or not hasattr(coll, "get_sizes") or not len(coll.get_sizes()):
            continue
        xy = coll.get_offset_transform().transform(offsets)
        xy = xy[np.isfinite(xy).all(axis=1)]
        if ((xy[:, 0] >= region.x0) & (xy[:, 0] <= region.x1)
                & (xy[:, 1] >= region.y0) & (xy[:, 1] <= region.y1)).any():
            found.append(f"points {coll.get_label()!r}")
    for cont in ax.containers:
        if not isinstance(cont, BarContainer):
            continue
        for rect in cont.patches:
            if not rect.get_visible():
                continue
            bb = rect.get_window_extent(renderer)
            if (min(bb.x1, region.x1) - max(bb.x0, region.x0) > tol_px
                    and min(bb.y1, region.y1) - max(bb.y0, region.y0) > tol_px):
                found.append(f"bars {cont.get_label()!r}")
                break
    return found


def legend_over_data(fig, tol_px: float = 1.0) -> list[str]:
    """Legends whose box covers data of their axes (line vertices and segments, scatter points, bars;
    only the part inside the axes, where data is drawn); a figure legend is checked against every axes."""
    return _legend_over_data(fig, _renderer(fig), tol_px)


def _legend_over_data(fig, renderer, tol_px: float) -> list[str]:
    from matplotlib.transforms import Bbox

    legends = [(ax.get_legend(), [ax], _axes_name(fig, ax)) for ax in fig.axes
               if ax.get_visible() and ax.get_legend() is not None]
    legends += [(leg, fig.axes, "figure") for leg in fig.legends]
    problems = []
    for leg, axes, where in legends:
        if not leg.get_visible():
            continue
        box = leg.get_window_extent(renderer)
        for ax in axes:
            region = Bbox.intersection(box, ax.get_window_extent(renderer))
            if region is None or region.width <= 0 or region.height <= 0:
                continue
            found = _covered(ax, region, renderer, tol_px)
            if found:
                whose = "its" if axes == [ax] else f"{_axes_name(fig, ax)}'s"
                problems.append(f"legend of {where} covers {whose} data: " + ", ".join(found[:4])
                                + (f" (+{len(found) - 4} more)" if len(found) > 4 else ""))
    return problems


def figure_problems(fig, tol_px: float = 1.0) -> list[str]:
    """:func:`text_overlaps` followed by :func:`legend_over_data` (one draw)."""
    renderer = _renderer(fig)
    return _text_overlaps(fig, renderer, tol_px) + _legend_over_data(fig, renderer, tol_px)
