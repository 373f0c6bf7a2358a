"""Notebook 03's analysis: the committed style networks, their curves, network vs optimisation panels, the
paper's Fig. 5 score and Table 1 speed-ups, the differences from the paper and the generated findings.

Pure functions over committed files: a network folder (``model.pt``, ``config.json``, ``history.json``,
``style.json``, as :func:`perceptlib.style.train_style` writes it), the comparison folder of
``scripts/style_compare.py`` (``compare.json`` + images) and Fig. 5 score files of ``scripts/style_diag_eval.py``
(``{"runs": {folder: {"step", "photos": [...], "iterations_matching_network", ...}}}``; at 256² in
``style_diagnostics/eval.json`` and ``style_*progress.json``, at other sizes in
``style_fig5_by_size/<network folder name>_<size>.json``). The notebook configures,
calls and shows; the numbers its text states come from :func:`style_findings` and :func:`differences_markdown`.
"""
from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import Tensor, nn

__all__ = ["PAPER_FIG5", "FIG5_SIZES", "PAINTINGS", "StyleNetwork", "committed_files", "style_networks", "score_files",
           "matching_scores", "size_score_files", "scores_by_size", "scores_from_compare", "comparison_record",
           "fig5_summary", "network_rows", "preferred_networks", "score_at", "diagnostic_rows", "network_losses",
           "plot_network_curves", "comparison_panels", "optimisation_reference", "network_panels", "style_grid",
           "high_resolution_panels", "loss_trend", "projected_steps", "plot_fig5", "speed_table",
           "differences_markdown", "style_findings"]

PAPER_FIG5 = (50, 100)  # [P] Fig. 5: the network's loss equals the baseline's after about 50-100 L-BFGS iterations
FIG5_SIZES = (128, 512)  # sides besides 256² whose Fig. 5 scores network_rows reports (paper: 256², 512², 1024²)
PAINTINGS = {"starry_night": "The Starry Night", "great_wave": "The Great Wave",
             "kandinsky_composition_viii": "Composition VIII", "cafe_terrace": "Café Terrace at Night",
             "night_cafe": "The Night Café", "langlois_bridge": "Langlois Bridge"}
_SHORT = {"norm": {"batch": "BN", "instance": "IN", "none": "no norm"},
          "head": {"paper": "(tanh+1)/2", "tanh150": "150 tanh"}}
_RECIPE_KEYS = ("norm", "head", "channels", "lr", "lr_drops", "style_weight", "style_size", "tv_weight", "upsample",
                "vgg_weights")


@dataclass(frozen=True)
class StyleNetwork:
    """A trained style network found under ``results/``: its painting, where and with which recipe it was
    trained, and the training state (``step`` of ``steps``, ``seconds`` of training)."""

    style: str
    where: str     # "H100" (a results/<device>/ folder), "CPU" or "GPU"
    recipe: str    # "paper recipe", "impl recipe" or e.g. "paper recipe with IN, lr 0.0005"
    folder: Path
    name: str      # the folder relative to the repository root, e.g. "results/h100/style_great_wave"
    step: int
    steps: int
    norm: str
    head: str
    channels: int
    image_size: int
    batch_size: int
    lr: float
    style_weight: float
    seconds: float
    precision: str
    config: dict = field(repr=False, compare=False)

    @property
    def model(self) -> Path:
        return self.folder / "model.pt"

    @property
    def label(self) -> str:
        return f"{self.where}, {self.recipe}"


def committed_files(root: str | os.PathLike, under: str = "results") -> set[Path] | None:
    """The files git tracks under ``root/under`` (resolved paths), or None outside a git checkout."""
    try:
        out = subprocess.run(["git", "-C", str(root), "ls-files", "-z", "--", under], capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return {(Path(root) / p).resolve() for p in out.split("\0") if p}


def _changes(cfg, base, keys: Sequence[str] = _RECIPE_KEYS) -> str:
    parts = []
    for k in keys:
        v = getattr(cfg, k)
        if v == getattr(base, k):
            continue
        if k == "lr_drops":
            parts.append("lr " + ", ".join(f"{r:g} from step {st}" for st, r in v))
            continue
        parts.append(_SHORT[k].get(v, str(v)) if k in _SHORT else f"{k.replace('_', ' ')} {v:g}"
                     if isinstance(v, float) else f"{k.replace('_', ' ')} {v}")
    return ", ".join(parts)


def _where(folder: Path, results: Path, cfg: dict, history: dict) -> str:
    if folder.parent != results:
        return folder.parent.name.upper()
    sessions = history.get("sessions") or []
    dev = (sessions[-1].get("device") if sessions else None) or cfg.get("_run", {}).get("device") or cfg.get("device")
    if dev not in ("cpu", "cuda"):
        dev = "cuda" if cfg.get("mode") == "paper" else "cpu"
    return "GPU" if dev == "cuda" else "CPU"


def _precision(cfg: dict, history: dict, where: str) -> str:
    sessions = history.get("sessions") or []
    if sessions:
        return "/".join(dict.fromkeys(s.get("precision", "?") for s in sessions))
    if "amp" in cfg:
        return "bf16" if cfg["amp"] and where != "CPU" else "fp32"
    return str(cfg.get("precision", "auto"))


def style_networks(results_dir: str | os.PathLike, tracked: Collection[Path] | None = None
                   ) -> dict[tuple[str, str], StyleNetwork]:
    """Every trained style network in ``results_dir/style_*/`` and ``results_dir/*/style_*/`` (a folder with
    ``model.pt``, ``config.json`` of a StyleConfig and ``history.json``), keyed by ``(style, label)``, e.g.
    ``("great_wave", "H100, paper recipe")``, by style, the paper recipe first. ``tracked``: when given, only
    folders whose ``model.pt`` is in it (resolved paths, e.g. :func:`committed_files`); nothing else is opened."""
    from .config import StyleConfig, config_from_dict, recipe

    results = Path(results_dir)
    found: dict[tuple[str, str], StyleNetwork] = {}
    for d in sorted({*results.glob("style_*"), *results.glob("*/style_*")}):
        if not all((d / f).is_file() for f in ("model.pt", "config.json", "history.json")):
            continue
        if tracked is not None and (d / "model.pt").resolve() not in tracked:
            continue
        raw = json.loads((d / "config.json").read_text())
        if raw.get("_type", "StyleConfig" if "style_layers" in raw else None) != "StyleConfig":
            continue
        cfg = config_from_dict(raw)
        hist = json.loads((d / "history.json").read_text())
        rec = d / "style.json"
        style = json.loads(rec.read_text())["name"] if rec.is_file() else d.name.removeprefix("style_")
        where = _where(d, results, raw, hist)
        diff = _changes(cfg, recipe(StyleConfig(), cfg.recipe))
        step = int(hist.get("last_step", hist["step"][-1] if hist["step"] else 0))
        net = StyleNetwork(style, where, f"{cfg.recipe} recipe" + (f" with {diff}" if diff else ""), d,
                           d.resolve().relative_to(results.resolve().parent).as_posix(), step, cfg.steps, cfg.norm,
                           cfg.head, cfg.channels, cfg.image_size, cfg.batch_size, cfg.lr, cfg.style_weight,
                           float(hist.get("elapsed_s", 0.0)), _precision(raw, hist, where), raw)
        key = (style, net.label)
        found[key if key not in found else (style, f"{net.label} ({d.name})")] = net
    return dict(sorted(found.items(), key=lambda kv: (kv[0][0], kv[1].recipe != "paper recipe", kv[0][1])))


def score_files(results_dir: str | os.PathLike, tracked: Collection[Path] | None = None) -> list[Path]:
    """The Fig. 5 score files under ``results_dir``: ``style_diagnostics/eval.json`` and ``style_*progress.json``
    (only those in ``tracked`` when given)."""
    results = Path(results_dir)
    files = [results / "style_diagnostics" / "eval.json", *sorted(results.glob("style_*progress.json"))]
    return [f for f in files if f.is_file() and (tracked is None or f.resolve() in tracked)]


def matching_scores(files: Sequence[str | os.PathLike]) -> dict[str, dict]:
    """``{network folder: score}`` merged from score files (a later file's entry for a folder replaces an
    earlier one); each score as :func:`perceptlib.style.iterations_matching` returns it, plus ``step``."""
    out: dict[str, dict] = {}
    for f in files:
        for folder, rec in json.loads(Path(f).read_text()).get("runs", {}).items():
            out[Path(folder).as_posix()] = {**rec, "source": Path(f).name}
    return out


def size_score_files(results_dir: str | os.PathLike, tracked: Collection[Path] | None = None) -> list[Path]:
    """The Fig. 5 score files at other sizes than 256²: ``results_dir/style_fig5_by_size/<network folder
    name>_<size>.json`` (``scripts/style_diag_eval.py RUN --size S --out FILE``), by name; only those in
    ``tracked`` when given."""
    files = sorted((Path(results_dir) / "style_fig5_by_size").glob("*_*.json"))
    return [f for f in files if f.stem.rsplit("_", 1)[1].isdigit() and f.is_file()
            and (tracked is None or f.resolve() in tracked)]


def scores_by_size(files: Sequence[str | os.PathLike]) -> dict[str, dict[int, dict]]:
    """``{network folder: {size: score}}`` merged from score files as :func:`matching_scores` merges them; the
    size is the score's ``size`` (else the file's ``size``, else the ``_<size>`` ending of the file name)."""
    out: dict[str, dict[int, dict]] = {}
    for f in files:
        data = json.loads(Path(f).read_text())
        for folder, rec in data.get("runs", {}).items():
            size = int(rec.get("size", data.get("size", Path(f).stem.rsplit("_", 1)[-1])))
            out.setdefault(Path(folder).as_posix(), {})[size] = {**rec, "size": size, "source": Path(f).name}
    return out


def scores_from_compare(compare: Mapping) -> dict[str, dict]:
    """The same score from a committed comparison (``compare.json``: per style and photo, the network's loss
    and the optimisation's loss at every evaluation): per photo the first evaluation whose best loss so far is
    at or below the network's, ``{model folder: {"step", "size", "max_steps", "photos", "iterations_matching_network",
    "min", "all_reached"}}`` (a photo not reached counts as ``max_steps``)."""
    out: dict[str, dict] = {}
    for r in compare["runs"]:
        best = np.minimum.accumulate(np.asarray(r["optimisation"]["curve"], float))
        net = float(r["network"]["terms"]["total"])
        hit = int(np.argmax(best <= net)) + 1 if (best <= net).any() else None
        rec = out.setdefault(Path(r["model"]).as_posix(), {"step": r["model_step"], "size": compare["size"],
                                                           "max_steps": len(best), "photos": []})
        rec["photos"].append({"network_loss": net, "iterations": hit, "optimisation_loss": float(best[-1])})
    for rec in out.values():
        its = [p["iterations"] if p["iterations"] is not None else rec["max_steps"] for p in rec["photos"]]
        rec.update(iterations_matching_network=float(np.mean(its)), min=int(min(its)),
                   all_reached=all(p["iterations"] is not None for p in rec["photos"]), source="compare.json")
    return out


def comparison_record(network: StyleNetwork, photo: str, result: Mapping, size: int) -> dict:
    """One ``compare.json`` run from :func:`perceptlib.style.compare_with_optimisation`'s ``result`` for
    ``network`` on ``photo`` at ``size``² (images left out), for :func:`fig5_summary` / :func:`scores_from_compare`."""
    return {"style": network.style, "content": photo, "size": int(size), "model": network.name,
            "model_step": network.step,
            "network": {"terms": dict(result["network"]["terms"]), "seconds": result["network"]["seconds"]},
            "optimisation": {"terms": dict(result["optimisation"]["terms"]),
                             "seconds": result["optimisation"]["seconds"],
                             "curve": [float(v) for v in result["optimisation"]["curve"]]}}


def fig5_summary(compare: Mapping) -> dict[str, dict]:
    """The paper's Fig. 5 reading per style of a comparison: the optimisation's best loss so far averaged over
    the photos (``curve``, one value per evaluation) against the network's mean loss; ``iterations``: the first
    evaluation where the mean curve is at or below it (None: never); ``ratio``: network loss / the curve's end."""
    out = {}
    for s in dict.fromkeys(r["style"] for r in compare["runs"]):
        runs = [r for r in compare["runs"] if r["style"] == s]
        curve = np.mean([np.minimum.accumulate(np.asarray(r["optimisation"]["curve"], float)) for r in runs], axis=0)
        net = float(np.mean([r["network"]["terms"]["total"] for r in runs]))
        out[s] = {"network_loss": net, "curve": curve, "optimisation_end": float(curve[-1]),
                  "iterations": int(np.argmax(curve <= net)) + 1 if (curve <= net).any() else None,
                  "ratio": net / float(curve[-1]), "evaluations": len(curve), "photos": len(runs),
                  "model": Path(runs[0]["model"]).as_posix(), "step": runs[0]["model_step"]}
    return out


def network_rows(networks: Mapping[tuple[str, str], StyleNetwork], scores: Mapping[str, Mapping],
                 fig5: Mapping[str, Mapping] | None = None, sized: Mapping[str, Mapping[int, Mapping]] | None = None,
                 sizes: Sequence[int] = FIG5_SIZES) -> list[dict]:
    """One row per network: training state, its Fig. 5 score (``score``: mean evaluations, ``score_step``: the
    step it was measured at, ``score_current``: that step is the network's), the same at each of ``sizes`` from
    ``sized`` (:func:`scores_by_size`: ``score_512``, ``score_512_min``, ``score_512_step``, ``score_512_current``;
    None / False where that size was not scored), the style-term jumps and content change of its history
    (:func:`perceptlib.runs.summarise`) and, where a comparison scored this network at this step, the mean-curve
    reading (``curve_iterations``, ``ratio``); from a score run with a goal, :func:`_goal_columns` (``goal``,
    ``goal_ratio``, ``loss_exponent``, ``steps_for_goal``; None otherwise)."""
    from .runs import load_run, summarise

    rows = []
    for key, n in networks.items():
        run = load_run(n.folder)
        s = summarise(run)
        sc = scores.get(n.name)
        f = next((v for v in (fig5 or {}).values() if v["model"] == n.name and v["step"] == n.step), None)
        rows.append({"key": key, "style": n.style, "painting": PAINTINGS.get(n.style, n.style), "label": n.label,
                     "norm": n.norm, "head": n.head, "channels": n.channels, "step": n.step, "steps": n.steps,
                     "image_size": n.image_size, "batch_size": n.batch_size,
                     "minutes": n.seconds / 60, "precision": n.precision, "spikes": s.get("style_spikes"),
                     "feat_change": s.get("feat_change"),
                     "score": sc["iterations_matching_network"] if sc else None,
                     "score_min": sc["min"] if sc else None, "score_step": sc["step"] if sc else None,
                     "score_max": sc["max_steps"] if sc else None, "score_size": sc["size"] if sc else None,
                     "score_photos": len(sc["photos"]) if sc else None,
                     "score_current": bool(sc) and sc["step"] == n.step,
                     **_sized_columns((sized or {}).get(n.name, {}), sizes, n.step),
                     "curve_iterations": f["iterations"] if f else None, "ratio": f["ratio"] if f else None,
                     **_goal_columns(sc, run.history, n.step)})
    return rows


def loss_trend(history: Mapping, term: str = "total", since: float = 0.5) -> float | None:
    """The exponent ``a`` of a power law ``loss ~ step^-a`` fitted (least squares in log-log) to a training
    history's ``terms[term]`` over its last ``1 - since`` of steps (``history``: a ``history.json``, steps and
    logged terms); None when fewer than 10 logged points lie there or a loss is not positive."""
    steps = np.asarray(history["step"], dtype=float)
    loss = np.asarray(history["terms"].get(term, []), dtype=float)
    if not 0 <= since < 1:
        raise ValueError(f"since must be in [0, 1), got {since}")
    if loss.size != steps.size or steps.size == 0:
        return None
    keep = steps > since * steps.max()
    if keep.sum() < 10 or (loss[keep] <= 0).any():
        return None
    slope = np.polyfit(np.log(steps[keep]), np.log(loss[keep]), 1)[0]
    return float(-slope)


def projected_steps(step: int, ratio: float | None, exponent: float | None) -> float | None:
    """Steps at which a network trained ``step`` steps would reach ``ratio`` times its loss, were its loss to keep
    falling as ``step^-exponent`` (:func:`loss_trend`): ``step * ratio^(-1/exponent)``; ``step`` itself when the
    ratio is at least 1 (already there), None without a ratio or a falling trend."""
    if ratio is None or exponent is None or step <= 0:
        return None
    if ratio >= 1:
        return float(step)
    if exponent <= 0:
        return None
    return float(step * ratio ** (-1.0 / exponent))


def _goal_columns(sc: Mapping | None, history: Mapping, step: int) -> dict:
    """``goal``, ``goal_ratio`` (the loss a network worth ``goal`` evaluations reaches / this one's, from a score
    run with a goal), ``loss_exponent`` (:func:`loss_trend` of the network's ``history``) and ``steps_for_goal``
    (:func:`projected_steps`, when the score is of the network's current ``step``)."""
    ratio = sc.get("goal_ratio") if sc else None
    a = loss_trend(history) if ratio is not None else None
    current = bool(sc) and sc["step"] == step
    return {"goal": sc.get("goal") if sc else None, "goal_ratio": ratio, "loss_exponent": a,
            "steps_for_goal": projected_steps(step, ratio, a) if current else None}


def _sized_columns(by_size: Mapping[int, Mapping], sizes: Sequence[int], step: int) -> dict:
    out = {}
    for size in sizes:
        sc = by_size.get(size)
        out.update({f"score_{size}": sc["iterations_matching_network"] if sc else None,
                    f"score_{size}_min": sc["min"] if sc else None, f"score_{size}_step": sc["step"] if sc else None,
                    f"score_{size}_current": bool(sc) and sc["step"] == step})
    return out


def score_at(row: Mapping, size: int, fmt: str = ".1f") -> str | None:
    """A :func:`network_rows` row's Fig. 5 score at ``size``² for a table: the mean evaluations, with the step it
    was measured at when that is not the network's current step (``"29.4 (step 900)"``); None when not scored."""
    key = "score" if size == 256 else f"score_{size}"
    if row.get(key) is None:
        return None
    text = format(row[key], fmt)
    return text if row[f"{key}_current"] else f"{text} (step {row[f'{key}_step']})"


def preferred_networks(rows: Sequence[Mapping]) -> dict[str, tuple[str, str]]:
    """Per style the key of the network with the highest Fig. 5 score (:func:`network_rows`; ties and unscored
    networks: the most steps)."""
    best: dict[str, tuple] = {}
    for r in rows:
        rank = (r["score"] if r["score"] is not None else -1.0, r["step"])
        if r["style"] not in best or rank > best[r["style"]][0]:
            best[r["style"]] = (rank, r["key"])
    return {s: v[1] for s, v in best.items()}


def diagnostic_rows(runs: Mapping[str, object], scores: Mapping[str, Mapping], root: str | os.PathLike,
                    tracked: Collection[Path] | None = None) -> list[dict]:
    """One row per training run (:class:`perceptlib.runs.Run`): :func:`perceptlib.runs.summarise`, ``run``: its
    recipe's changes from the paper and steps (:func:`perceptlib.runs.describe`), ``worth``: its Fig. 5 score
    (``scores`` keyed by folder relative to ``root``), ``weights``: committed (in ``tracked``; without it: present)."""
    from .runs import describe, summarise

    root = Path(root).resolve()
    by_path = {(root / k).resolve(): v for k, v in scores.items()}
    rows = []
    for r in runs.values():
        model = (r.path / "model.pt").resolve()
        sc = by_path.get(r.path.resolve())
        kept = model in tracked if tracked is not None else r.has_model
        rows.append({**summarise(r), "run": f"{describe(r)} ({r.steps} steps)",
                     "worth": sc["iterations_matching_network"] if sc else None,
                     "weights": "committed" if kept else "not committed"})
    return rows


def network_losses(networks: Mapping[tuple[str, str], StyleNetwork], style_files: Mapping[str, str | os.PathLike],
                   device: str | object = "cpu") -> dict[tuple[str, str], object]:
    """Each network's own training loss (:func:`perceptlib.style.build_style_loss` of its config and painting),
    one :class:`~perceptlib.losses.PerceptualLoss` shared by the networks whose loss settings agree."""
    from .config import config_from_dict
    from .style import build_style_loss

    cache: dict = {}
    out = {}
    for key, n in networks.items():
        cfg = config_from_dict({**n.config, "device": str(device)})
        k = (n.style, cfg.content_layers, cfg.style_layers, cfg.content_weight, cfg.style_weight, cfg.tv_weight,
             cfg.style_size, cfg.vgg_weights)
        if k not in cache:
            cache[k] = build_style_loss(cfg, style_files[n.style], device=device)
        out[key] = cache[k]
    return out


def _fig(rows: int, cols: int, w: float, h: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w * cols, h * rows), layout="constrained")
    return fig, np.atleast_2d(fig.subplots(rows, cols, squeeze=False))


def plot_network_curves(histories: Mapping[str, Mapping], terms: Sequence[str] = ("feat", "style", "tv"),
                        cols: int = 4, size: tuple[float, float] = (3.6, 2.9)):
    """Training curves, one panel per network (``{title: history.json dict}``), one line per logged term, log
    scale; one legend below the panels. Returns the Figure."""
    from .plots import _wrap

    if not histories:
        raise ValueError("plot_network_curves needs at least one history")
    cols = min(cols, len(histories))
    rows = -(-len(histories) // cols)
    fig, axes = _fig(rows, cols, *size)
    for ax in axes.flat[len(histories):]:
        ax.set_axis_off()
    for ax, (title, h) in zip(axes.flat, histories.items()):
        for i, t in enumerate(terms):
            if t in h["terms"]:
                ax.plot(h["step"], h["terms"][t], lw=1, color=f"C{i}", label=t)
        ax.set_yscale("log")
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_title(_wrap(title, 0.9 * size[0], 8), fontsize=8)
    handles = [ax.get_legend_handles_labels() for ax in axes.flat[:len(histories)]]
    h, lab = max(handles, key=lambda x: len(x[1]))
    fig.legend(h, lab, loc="outside lower center", ncol=len(lab), fontsize=8, frameon=False)
    return fig


def _load(folder: Path, stem: str) -> Tensor:
    from .images import load_image

    path = next((p for p in sorted(folder.glob(stem + ".*")) if p.suffix.lower() in (".jpg", ".jpeg", ".png")), None)
    if path is None:
        raise FileNotFoundError(f"no image {stem}.* in {folder}")
    return load_image(path)


def comparison_panels(compare: Mapping, folder: str | os.PathLike) -> dict[str, Tensor]:
    """Panels for :func:`perceptlib.plots.plot_images` from a committed comparison: per photo the photo, then
    each style's network and optimisation output captioned with its total loss (files ``content__<photo>.*``,
    ``<style>__<photo>__network.*``, ``<style>__<photo>__optimisation.*`` in ``folder``)."""
    folder = Path(folder)
    panels = {}
    for n in dict.fromkeys(r["content"] for r in compare["runs"]):
        panels[f"photo: {n}"] = _load(folder, f"content__{n}")
        for r in (r for r in compare["runs"] if r["content"] == n):
            for m in ("network", "optimisation"):
                panels[f"{r['style']} {m}, {n}\nloss {r[m]['terms']['total']:.3g}"] = _load(
                    folder, f"{r['style']}__{n}__{m}")
    return panels


def optimisation_reference(compare: Mapping, folder: str | os.PathLike, style: str) -> dict[str, tuple[str, Tensor]]:
    """``{photo: (caption, image)}``: the committed optimisation result of ``style`` per photo (for
    :func:`network_panels`), captioned with the evaluations, the device and its total loss."""
    return {r["content"]: (f"optimisation ({compare['steps']} evaluations), {r['content']}\nloss "
                           f"{r['optimisation']['terms']['total']:.3g}",
                           _load(Path(folder), f"{style}__{r['content']}__optimisation"))
            for r in compare["runs"] if r["style"] == style}


def network_panels(nets: Mapping[str, nn.Module], photos: Mapping[str, Tensor], losses: Mapping[str, object],
                   reference: Mapping[str, tuple[str, Tensor]] | None = None
                   ) -> tuple[dict[str, Tensor], dict[str, dict[str, float]]]:
    """Each photo ``(3, H, W)`` in [0, 1], then an optional ``reference[photo] = (caption, image)`` (e.g. the
    committed optimisation result), then every network's output captioned ``label`` and its total loss under
    ``losses[label]`` (a :class:`~perceptlib.losses.PerceptualLoss`). Returns ``(panels, {label: {photo: loss}})``."""
    from .style import style_loss_of, stylize

    panels, totals = {}, {k: {} for k in nets}
    for n, photo in photos.items():
        panels[f"photo: {n}"] = photo
        if reference and n in reference:
            panels[reference[n][0]] = reference[n][1]
        for label, net in nets.items():
            out = stylize(net, photo)
            totals[label][n] = style_loss_of(out, photo, losses[label])["total"]
            panels[f"{label}, {n}\nloss {totals[label][n]:.3g}"] = out
    return panels, totals


def style_grid(nets: Mapping[str, nn.Module], photos: Mapping[str, Tensor], paintings: Mapping[str, Tensor],
               size: int = 256) -> tuple[dict[str, Tensor], dict[str, dict[str, Tensor]]]:
    """The paper's Fig. 6 as rows for :func:`~perceptlib.plots.plot_reconstruction_grid`: a first row of the
    paintings (``paintings[style]`` ``(3, H, W)`` in [0, 1], centre-cropped to ``size``²), then one row per
    photo, each photo (centre-cropped to ``size``²) stylised by every network ``nets[style]``. Returns
    ``(originals, rows)``: ``originals[photo]`` the cropped photo, ``rows[row][painting title]`` the images."""
    from .speed import square_crop
    from .style import stylize

    if not nets or not photos:
        raise ValueError("style_grid needs at least one network and one photo")
    if size < 16:
        raise ValueError(f"size must be at least 16 px, got {size}")
    title = {s: PAINTINGS.get(s, s) for s in nets}
    rows = {"painting": {title[s]: square_crop(paintings[s], size) for s in nets if s in paintings}}
    originals = {}
    for n, photo in photos.items():
        originals[n] = square_crop(photo, size)
        rows[n] = {title[s]: stylize(net, originals[n]) for s, net in nets.items()}
    return originals, rows


def high_resolution_panels(nets: Mapping[str, nn.Module], photo: Tensor, sides: Sequence[int] = (512, 1024),
                           name: str = "photo") -> dict[str, Tensor]:
    """The paper's Fig. 7: ``photo`` ``(3, H, W)`` in [0, 1] resized so its longer side is each of ``sides``
    (aspect kept, antialiased), stylised at that size by every network ``nets[style]``; panels titled with the
    painting and the ``W x H`` size the network ran at."""
    import torch.nn.functional as F

    from .style import stylize

    if not nets:
        raise ValueError("high_resolution_panels needs at least one network")
    h, w = photo.shape[-2:]
    panels = {}
    for side in sides:
        if side < 16:
            raise ValueError(f"sides must be at least 16 px, got {side}")
        hh, ww = max(round(h * side / max(h, w)), 16), max(round(w * side / max(h, w)), 16)
        img = F.interpolate(photo.reshape(1, 3, h, w), size=(hh, ww), mode="bilinear", antialias=True,
                            align_corners=False)[0].clamp(0, 1)
        for s, net in nets.items():
            panels[f"{PAINTINGS.get(s, s)}, {name} at {ww}x{hh}"] = stylize(net, img)
    return panels


def plot_fig5(summary: Mapping[str, Mapping], size: tuple[float, float] = (4.6, 3.2)):
    """The paper's Fig. 5 per style: the optimisation's mean best-so-far loss per L-BFGS evaluation (log scale)
    and the network's mean loss (dashed), the crossing marked. ``summary``: :func:`fig5_summary`."""
    if not summary:
        raise ValueError("plot_fig5 needs at least one style")
    fig, axes = _fig(1, len(summary), *size)
    for ax, (s, r) in zip(axes[0], summary.items()):
        c = np.asarray(r["curve"])
        ax.plot(np.arange(1, c.size + 1), c, color="C0", label="optimisation (best so far)")
        ax.axhline(r["network_loss"], ls="--", color="C1", label="network")
        if r["iterations"]:
            ax.plot([r["iterations"]], [r["network_loss"]], "o", color="k", ms=4, label="crossing")
        ax.set_yscale("log")
        ax.set_xlabel("L-BFGS evaluations")
        ax.set_title(f"{PAINTINGS.get(s, s)}\n{r['model']}, step {r['step']}", fontsize=8)
    h, lab = axes[0, 0].get_legend_handles_labels()
    fig.legend(h, lab, loc="outside lower center", ncol=len(lab), fontsize=8, frameon=False)
    return fig


def speed_table(res: Mapping) -> dict[int, dict]:
    """``{size: {"network": s, 100: s, 300: s, 500: s, "measured": all measured}}`` from a
    :func:`perceptlib.speed.table1` result."""
    out: dict[int, dict] = {}
    for r in res["rows"]:
        d = out.setdefault(int(r["size"]), {"measured": True})
        d["network" if r["iterations"] is None else int(r["iterations"])] = float(r["seconds"])
        d["measured"] &= bool(r.get("measured", True))
    return dict(sorted(out.items()))


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def differences_markdown(networks: Mapping[tuple[str, str], StyleNetwork], n_train: int,
                         compare: Mapping | None = None, speeds: Mapping[str, Mapping] | None = None) -> str:
    """A Markdown table: the paper's setting (from :data:`perceptlib.config.PAPER_STYLE`) against each committed
    network's, the optimisation baseline of the comparison and the devices of the speed tables."""
    from .config import PAPER_STYLE as P, config_from_dict

    cfgs = {k: config_from_dict(n.config) for k, n in networks.items()}
    sizes = sorted({c.image_size for c in cfgs.values()})
    rows = [("training photos", f"MS-COCO, 80k photos resized to {P.image_size}²",
             f"the {n_train} `train` photos (a COCO stand-in, docs/data.md); random {'/'.join(map(str, sizes))}² "
             "crops of each photo resized to that shorter side"),
            ("training", f"{P.steps} iterations of {P.image_size}², batch {P.batch_size}, Adam {P.lr:g}",
             "<br>".join(f"{PAINTINGS.get(n.style, n.style)}, {n.label}: {n.step} of {n.steps} steps of "
                         f"{n.image_size}², batch {n.batch_size}, Adam {n.lr:g}, {n.seconds / 60:.0f} min in "
                         f"{n.precision} ({_pixel_share(n, P)} of the paper's training pixels)"
                         for n in networks.values())),
            ("network", "batch norm, (tanh+1)/2 output, base width 32 ([S] Table 1)",
             "<br>".join(f"{PAINTINGS.get(n.style, n.style)}, {n.label}: {_SHORT['norm'][n.norm]}, "
                         f"{_SHORT['head'][n.head]} output, base width {n.channels}" for n in networks.values()))]
    weights = sorted({(c.content_weight, c.style_weight, c.tv_weight) for c in cfgs.values()})
    rows.append(("loss weights", "Eq. 4; weights tuned per style, not given",
                 "; ".join(f"content {cw:g}, style {sw:g} × the mean over each Gram (Eq. 4 / C_j²), TV {tv:.3g} on "
                           f"[0, 1] images ({tv / 255 ** 2:.2g} on 0–255)" for cw, sw, tv in weights)))
    vgg = sorted({c.vgg_weights for c in cfgs.values()})
    rows.append(("loss network", "VGG-16 (the official code: the Caffe model)", f"VGG-16, {_join(vgg)} weights"))
    if compare:
        rows.append(("optimisation baseline", "projected L-BFGS from white noise",
                     f"projected L-BFGS from {compare['init']}, {compare['steps']} evaluations at {compare['size']}², "
                     f"on {compare['device']}"))
    if speeds:
        rows.append(("speed table", "GTX Titan X", _join([f"{k}: {v['device']} ({v['dtype']})"
                                                         for k, v in speeds.items()])))
    return "\n".join(["| | paper | here |", "|---|---|---|", *(f"| {a} | {b} | {c} |" for a, b, c in rows)])


def _pixel_share(n: StyleNetwork, paper) -> str:
    """The pixels a network has been trained on (steps × batch × side²) as a share of the paper's training."""
    share = n.step * n.batch_size * n.image_size ** 2 / (paper.steps * paper.batch_size * paper.image_size ** 2)
    return f"{100 * share:.2g}%"


def _network_line(r: Mapping) -> str:
    line = (f"- **{r['painting']}, {r['label']}** ({r['step']} of {r['steps']} steps of {r['image_size']}², "
            f"{r['minutes']:.0f} min): ")
    others = [s for s in FIG5_SIZES if r.get(f"score_{s}") is not None]
    if r["score"] is None:
        line += "no Fig. 5 score at 256² committed." if others else "no Fig. 5 score committed."
    else:
        at = "" if r["score_current"] else f" (scored at step {r['score_step']})"
        line += (f"the optimisation needs {r['score']:.1f} L-BFGS evaluations on average (fewest {r['score_min']}, "
                 f"{r['score_photos']} photos at {r['score_size']}²) to reach its loss{at}; the paper's networks: "
                 f"{PAPER_FIG5[0]}–{PAPER_FIG5[1]}.")
    if others:
        line += " The same score at " + "; at ".join(
            f"{s}²: {r[f'score_{s}']:.1f} (fewest {r[f'score_{s}_min']})"
            + ("" if r[f"score_{s}_current"] else f", scored at step {r[f'score_{s}_step']}") for s in others) + "."
    if r["ratio"] is not None:
        line += (f" The mean optimisation curve crosses its mean loss after {r['curve_iterations']} evaluations and "
                 f"ends {r['ratio']:.1f}× lower.")
    if r["spikes"] is not None:
        line += (f" Style term jumps (≥ 3× the recent median): {r['spikes']}; content term at the end / at the "
                 f"start: {r['feat_change']:.2f}"
                 + (" (it ended above where it started)." if r["feat_change"] >= 1 else "."))
    return line


def _num(v: float, fmt: str = ".3g") -> str:
    """``v`` with ``fmt``, but whole numbers from 1000 up without an exponent (8020, not 8.02e+03)."""
    return f"{v:.0f}" if abs(v) >= 1000 else format(v, fmt)


def _slash(values: Sequence[float], fmt: str, unit: str = "") -> str:
    return " / ".join(_num(v, fmt) + unit for v in values)


def _speed_lines(label: str, res: Mapping, paper: Mapping[int, Sequence[float]] | None) -> list[str]:
    t = speed_table(res)
    sizes = list(t)
    sides = " / ".join(f"{s}²" for s in sizes)
    measured = all(t[s]["measured"] for s in sizes)
    scale, unit = (1000, "ms") if max(t[s]["network"] for s in sizes) < 1 else (1, "s")
    line = (f"- **{label}** ({res['device']}, {res['dtype']}): one forward pass takes "
            f"{_slash([t[s]['network'] * scale for s in sizes], '.3g')} {unit} at {sides}; 500 evaluations "
            f"{_slash([t[s][500] for s in sizes], '.3g')} s"
            f"{'' if measured else ' (partly extrapolated, ~ in the table)'}"
            f": the network is {_slash([t[s][500] / t[s]['network'] for s in sizes], '.0f', '×')} faster")
    known = [s for s in sizes if paper and s in paper and len(paper[s]) > 4]
    if known:
        line += (f" (the paper, Titan X: {_slash([paper[s][4] for s in known], '.0f', '×')} at "
                 + " / ".join(f"{s}²" for s in known) + ").")
    else:
        line += "."
    per = [t[s][500] / 500 * 1000 for s in sizes]
    if len(sizes) > 1:
        grow = per[1] / per[0]
        line += (f" Its time per evaluation is {_slash(per, '.3g')} ms: ×{grow:.2f} from {sizes[0]}² to {sizes[1]}² "
                 f"for ×{(sizes[1] / sizes[0]) ** 2:.0f} the pixels"
                 + (", so at the small sizes the baseline is bound by per-evaluation overhead rather than compute "
                    "and the speed-ups there are larger than a leaner baseline's would be." if grow < 1.5 else "."))
    return [line]


def style_findings(rows: Sequence[Mapping], speeds: Mapping[str, Mapping] | None = None,
                   paper_table1: Mapping[int, Sequence[float]] | None = None,
                   content_layer: Mapping[str, Mapping[str, float]] | None = None,
                   content_setting: str = "") -> str:
    """The "What we found" Markdown, every number computed: per network its Fig. 5 score and history
    (:func:`network_rows`), the best network per painting, the speed-ups per device (``speeds``: ``{label:
    table1 result}``) against the paper's (``{side: (opt100, opt300, opt500, network, speed-up)}``) and the two
    content layers' final terms (``{layer: {"feat", "style", ...}}``, run as ``content_setting`` says)."""
    out = ["**Networks** (the paper's Fig. 5 score: how many evaluations of the optimisation baseline, from white "
           "noise with the same loss, reach the network's loss on photos it was not trained on):"]
    out += [_network_line(r) for r in rows]
    for s in dict.fromkeys(r["style"] for r in rows):
        mine = [r for r in rows if r["style"] == s and r["score"] is not None]
        if len(mine) > 1:
            best = max(mine, key=lambda r: r["score"])
            others = _join([format(r["score"], ".1f") for r in mine if r is not best])
            out.append(f"- {best['painting']}: the highest score is {best['label']}'s ({best['score']:.1f} "
                       f"evaluations, against {others} for the others).")
    reached = [r for r in rows if r["score"] is not None and r["score"] >= PAPER_FIG5[0]]
    scored = [r for r in rows if r["score"] is not None]
    if scored:
        out.append(f"- {len(reached)} of {len(scored)} scored networks reach the paper's {PAPER_FIG5[0]} evaluations.")
    if speeds:
        out += ["", "**Speed** (the paper's Table 1):"]
        for label, res in speeds.items():
            out += _speed_lines(label, res, paper_table1)
    if content_layer and len(content_layer) == 2:
        (a, ta), (b, tb) = content_layer.items()
        out += ["", f"**Content layer** ({content_setting}): with `{b}` the optimisation ends at style "
                    f"{tb['style']:.3g} and content {tb['feat']:.3g}, with `{a}` at style {ta['style']:.3g} and "
                    f"content {ta['feat']:.3g}: the style term is "
                    f"{'lower' if tb['style'] < ta['style'] else 'higher'} with `{b}` "
                    f"(×{tb['style'] / ta['style']:.2f})."]
    return "\n".join(out)
