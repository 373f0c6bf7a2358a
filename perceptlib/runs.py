"""Reading and summarising training runs: a run folder's config and history, the loss level at the end,
and loss spikes (the failure mode of the paper-recipe style networks).

Typical use::

    runs = load_runs("results/style_diagnostics")      # {name: Run}
    table = [summarise(r) for r in runs.values()]
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Run", "load_run", "load_runs", "summarise", "spikes", "describe", "markdown_table"]


@dataclass
class Run:
    """One training folder: ``name``, ``config`` (dict as saved), ``history`` (dict: ``step``, ``terms``,
    ``elapsed_s``, ``sessions``), ``path`` and whether trained weights are present."""

    name: str
    path: Path
    config: dict
    history: dict
    has_model: bool

    @property
    def steps(self) -> int:
        return int(self.history.get("last_step", self.history["step"][-1] if self.history["step"] else 0))

    def term(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of a logged term (e.g. ``"feat"``, ``"style"``, ``"grad_norm"``)."""
        return np.asarray(self.history["step"], float), np.asarray(self.history["terms"][name], float)


def load_run(path: str | os.PathLike, name: str | None = None) -> Run:
    """The run in folder ``path`` (``config.json`` + ``history.json`` written by :func:`perceptlib.train.train`)."""
    p = Path(path)
    for f in ("config.json", "history.json"):
        if not (p / f).is_file():
            raise FileNotFoundError(f"{p} has no {f}: not a training run folder")
    return Run(name or p.name, p, json.loads((p / "config.json").read_text()),
               json.loads((p / "history.json").read_text()), (p / "model.pt").is_file())


def load_runs(folder: str | os.PathLike, names: Sequence[str] | None = None) -> dict[str, Run]:
    """Every run under ``folder`` (sub-folders with a ``history.json``), or only ``names``, in that order."""
    folder = Path(folder)
    if names is None:
        names = sorted(d.name for d in folder.iterdir() if (d / "history.json").is_file())
    return {n: load_run(folder / n, n) for n in names}


def spikes(values: Sequence[float], window: int = 10, factor: float = 3.0) -> list[int]:
    """Indices ``i`` where ``values[i]`` exceeds ``factor`` x the median of the ``window`` entries before it:
    the sudden jumps of a term that then wipe out what the network had learnt."""
    v = np.asarray(values, float)
    return [i for i in range(window, len(v)) if v[i] > factor * np.median(v[i - window:i])]


def summarise(run: Run, tail: float = 0.2, terms: Sequence[str] = ("feat", "style", "tv", "total")) -> dict:
    """``{"name", "steps", "seconds", "<term>_end"...: mean over the last ``tail`` of the log, "style_spikes":
    count of :func:`spikes` of the style term, "feat_change": feat_end / the mean of the first 10 % }``."""
    out: dict = {"name": run.name, "steps": run.steps, "seconds": float(run.history.get("elapsed_s", 0.0))}
    for t in terms:
        if t not in run.history["terms"]:
            continue
        _, v = run.term(t)
        k = max(1, int(round(len(v) * tail)))
        out[f"{t}_end"] = float(np.nanmean(v[-k:]))
    if "style" in run.history["terms"]:
        out["style_spikes"] = len(spikes(run.term("style")[1]))
    if "feat" in run.history["terms"]:
        _, v = run.term("feat")
        k = max(1, len(v) // 10)
        out["feat_change"] = float(np.nanmean(v[-k:]) / np.nanmean(v[:k]))
    sessions: Sequence[Mapping] = run.history.get("sessions", [])
    if sessions:
        out["precision"] = "/".join(dict.fromkeys(s.get("precision", "?") for s in sessions))
        out["device"] = "/".join(dict.fromkeys(s.get("name", "?") for s in sessions))
    return out


_SHORT = {"norm": {"batch": "BN", "instance": "IN", "none": "no norm"},
          "head": {"paper": "(tanh+1)/2", "tanh150": "150 tanh"}}


def describe(run: Run, keys: Sequence[str] = ("norm", "head", "channels", "lr", "style_weight", "style_size",
                                              "tv_weight", "upsample", "vgg_weights")) -> str:
    """A short label of the recipe fields of ``run``'s config that differ from the paper's (``"paper"`` when
    none do), e.g. ``"IN, 150 tanh, lr 0.0005"``."""
    from .config import config_from_dict

    cfg = config_from_dict(run.config)
    paper = type(cfg)()
    parts = []
    for k in keys:
        if not hasattr(cfg, k) or getattr(cfg, k) == getattr(paper, k):
            continue
        v = getattr(cfg, k)
        parts.append(_SHORT[k].get(v, str(v)) if k in _SHORT else f"{k.replace('_', ' ')} {v:g}"
                     if isinstance(v, float) else f"{k.replace('_', ' ')} {v}")
    return ", ".join(parts) or "paper"


def markdown_table(rows: Sequence[Mapping], columns: Mapping[str, str] | None = None,
                   float_format: str = ".3g") -> str:
    """``rows`` as a Markdown table: ``columns`` maps each key to its header (default: every key of the rows,
    in first-seen order, as its own header); floats are formatted with ``float_format`` (e.g. ``".2f"`` for
    dB), None becomes a dash."""
    if columns is None:
        columns = {k: k for r in rows for k in r}
    def cell(v) -> str:
        if v is None:
            return "–"
        if isinstance(v, float):
            return format(v, float_format)
        return str(v)

    head = "| " + " | ".join(columns.values()) + " |"
    rule = "|" + "---|" * len(columns)
    body = ["| " + " | ".join(cell(r.get(k)) for k in columns) + " |" for r in rows]
    return "\n".join([head, rule, *body])
