"""A lower learning rate for the last steps of a style network's training (``StyleConfig.lr_drops``, our own
option: the paper, the official code and pytorch/examples keep Adam's rate constant).

``results/style_lr_drop/<run>/`` holds a committed network's run continued from its checkpoint with a drop
(``train-style ... --steps S2 --lr-drops S1=RATE``) and a copy of the network it started from;
``eval.json`` the Fig. 5 scores of ``scripts/style_diag_eval.py`` of those and of the constant-rate network continued
for as many steps (the control), all measured on one machine. A start network not scored there is looked up in the
main score files (:func:`perceptlib.style_report.matching_scores`).
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .config import config_from_dict, parse_lr_drops
from .train import learning_rate

__all__ = ["schedule_label", "lr_drop_rows", "lr_drop_findings"]


def schedule_label(lr: float, drops, step: int) -> str:
    """The rates a run used up to ``step``: ``"1e-3"`` or ``"1e-3, 1e-4 from step 10000"``."""
    used = [(s, r) for s, r in parse_lr_drops(drops) if s < step]
    return ", ".join([f"{lr:g}", *(f"{r:g} from step {s}" for s, r in used)])


def _train_loss(history: Mapping, step: int, window: int = 500) -> float | None:
    steps = np.asarray(history["step"], dtype=float)
    loss = np.asarray(history["terms"].get("total", []), dtype=float)
    keep = (steps > step - window) & (steps <= step)
    return float(loss[keep].mean()) if loss.size == steps.size and keep.any() else None


def _row(run: str, rec: Mapping, folder: Path, kind: str) -> dict:
    cfg = config_from_dict(json.loads((folder / "config.json").read_text()))
    history = json.loads((folder / "history.json").read_text())
    step = int(rec["step"])
    style = json.loads((folder / "style.json").read_text())["name"] if (folder / "style.json").is_file() else run
    used = [s for s, _ in cfg.lr_drops if s < step]
    return {"run": run, "kind": kind, "style": style, "step": step, "first_drop": used[0] if used else None,
            "schedule": schedule_label(cfg.lr, cfg.lr_drops, step), "rate_end": learning_rate(cfg, step - 1),
            "score": rec["iterations_matching_network"], "score_min": rec["min"], "score_size": rec["size"],
            "photo_loss": float(np.mean([p["network_loss"] for p in rec["photos"]])) if rec.get("photos") else None,
            "goal": rec.get("goal"), "goal_ratio": rec.get("goal_ratio"),
            "train_loss": _train_loss(history, step)}


def lr_drop_rows(folder: str | os.PathLike, scores: Mapping[str, Mapping], root: str | os.PathLike = ".") -> list[dict]:
    """Rows for a table, per painting: each run of ``folder/eval.json``, ``kind`` ``"drop"`` (its rate dropped
    before the scored step), ``"start"`` (constant rate, scored at the step of a drop run's first drop) or
    ``"constant"`` (the control); where no start is scored there, the network ``results/style_<painting>`` from
    ``scores`` when scored at that step. Each row: ``run``, ``style``, ``step``, ``schedule``
    (:func:`schedule_label`), ``first_drop`` (the step of its first drop before ``step``, None without one),
    ``rate_end`` (the rate of its last update), ``score`` (mean L-BFGS evaluations matched), ``score_min``,
    ``score_size``, ``photo_loss`` (the network's mean loss on the scored photos), ``goal``, ``goal_ratio``
    (loss after ``goal`` evaluations / the network's) and ``train_loss`` (mean total training loss over the last
    500 steps to ``step``). Runs are paths relative to ``root``."""
    folder, root = Path(folder), Path(root)
    evals = folder / "eval.json"
    if not evals.is_file():
        return []
    rows, starts = [], {}
    for run, rec in json.loads(evals.read_text()).get("runs", {}).items():
        d = root / run
        if not (d / "config.json").is_file():
            continue
        row = _row(run, rec, d, "constant")
        if row["first_drop"] is not None:
            row["kind"] = "drop"
            starts.setdefault(row["style"], row["first_drop"])
        rows.append(row)
    for row in rows:
        if row["kind"] == "constant" and starts.get(row["style"]) == row["step"]:
            row["kind"] = "start"
    for style, at in starts.items():
        base = f"results/style_{style}"
        rec = scores.get(base)
        if (not any(r["style"] == style and r["kind"] == "start" for r in rows) and rec is not None
                and int(rec["step"]) == at and (root / base / "config.json").is_file()):
            rows.append(_row(base, rec, root / base, "start"))
    order = {"start": 0, "constant": 1, "drop": 2}
    return sorted(rows, key=lambda r: (r["style"], order[r["kind"]], r["step"]))


def lr_drop_findings(rows: list[dict], names: Mapping[str, str] | None = None) -> str:
    """One sentence per painting with a start, a control and a drop run in ``rows``: how many evaluations the
    further steps add at the constant rate and with the drop."""
    names = names or {}
    out = []
    for style in dict.fromkeys(r["style"] for r in rows):
        mine = {r["kind"]: r for r in rows if r["style"] == style}
        if not {"start", "drop"} <= set(mine):
            continue
        s, d, c = mine["start"], mine["drop"], mine.get("constant")
        line = (f"{names.get(style, style)}: from step {s['step']} (worth {s['score']:.1f} evaluations at "
                f"{s['score_size']}²), {d['step'] - s['step']} more steps at a rate of {d['rate_end']:g} reach "
                f"{d['score']:.1f}")
        c = c if c is not None and c["step"] == d["step"] else None  # a control only when as long as the drop
        if c is not None:
            line += f"; as many at the constant rate {c['score']:.1f}"
        # (key, format, the clause on start and drop, the control's clause)
        clauses = (("photo_loss", ".4g", ". The network's mean loss on the photos: {s} at the start, {d} after the "
                    "drop", ", {c} at the constant rate"),
                   ("goal_ratio", ".3f", ". The loss after {goal} evaluations is {s} of the network's at the "
                    "start, {d} after the drop", " ({c} at the constant rate)"),
                   ("train_loss", ".4g", "; the training loss over the last 500 steps falls from {s} to {d}",
                    " ({c} at the constant rate)"))
        for key, fmt, both, control in clauses:
            if d[key] is None or s[key] is None:
                continue
            line += both.format(s=format(s[key], fmt), d=format(d[key], fmt), goal=d["goal"])
            if c is not None and c[key] is not None:
                line += control.format(c=format(c[key], fmt))
        out.append(line + ".")
    return " ".join(out)
