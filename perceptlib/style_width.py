"""Half vs full width of the style network: the official code's instance-norm models have half the filters of the
paper's Table 1 (16/32/64 instead of 32/64/128). ``scripts/style_width.sh`` trains both widths with the same recipe,
steps and seed for a few paintings and scores each with the paper's Fig. 5 measure; this module reads that folder.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .config import StyleConfig, config_from_dict
from .nets import TransformerNet, count_parameters

__all__ = ["width_rows", "width_findings"]


def width_rows(folder: str | os.PathLike) -> list[dict]:
    """One row per run in ``folder`` (``<style>_c<width>/`` with ``config.json``, ``history.json``, scored in
    ``eval.json`` by ``scripts/style_diag_eval.py``): ``style``, ``channels``, ``parameters``, ``steps``,
    ``seconds_per_step`` (training wall time / steps), ``cpu``, ``precision``, ``score`` (mean L-BFGS
    evaluations matching the network's loss), ``score_min``, ``score_size``. Runs without a score are left out."""
    root = Path(folder)
    evals = root / "eval.json"
    scores = json.loads(evals.read_text())["runs"] if evals.is_file() else {}
    rows = []
    for run, rec in scores.items():
        d = root / Path(run).name
        if not (d / "config.json").is_file():
            continue
        raw = json.loads((d / "config.json").read_text())
        cfg = config_from_dict(raw)
        if not isinstance(cfg, StyleConfig):
            continue
        hist = json.loads((d / "history.json").read_text())
        sessions = hist.get("sessions", [])
        seconds = sum(s["seconds"] for s in sessions)
        style = json.loads((d / "style.json").read_text())["name"] if (d / "style.json").is_file() else d.name
        net = TransformerNet(channels=cfg.channels, norm=cfg.norm, padding=cfg.padding, upsample=cfg.upsample,
                             head=cfg.head)
        rows.append({"style": style, "channels": cfg.channels, "parameters": count_parameters(net),
                     "steps": int(rec["step"]), "seconds_per_step": seconds / max(int(rec["step"]), 1),
                     "cpu": sessions[-1].get("name") if sessions else None,
                     "precision": sessions[-1].get("precision") if sessions else None,
                     "score": rec["iterations_matching_network"], "score_min": rec["min"],
                     "score_size": rec["size"]})
    return sorted(rows, key=lambda r: (r["style"], r["channels"]))


def width_findings(rows: list[dict], names: dict[str, str] | None = None) -> str:
    """One sentence per painting comparing the narrowest and the widest network of ``rows``."""
    names = names or {}
    out = []
    for style in dict.fromkeys(r["style"] for r in rows):
        mine = sorted((r for r in rows if r["style"] == style), key=lambda r: r["channels"])
        if len(mine) < 2:
            continue
        a, b = mine[0], mine[-1]
        better = "half" if a["score"] > b["score"] else "full" if b["score"] > a["score"] else "neither"
        out.append(f"{names.get(style, style)}, {a['steps']} steps: width {a['channels']} "
                   f"({a['parameters']:,} parameters) is worth {a['score']:.1f} evaluations at {a['score_size']}², "
                   f"width {b['channels']} ({b['parameters']:,}) {b['score']:.1f}"
                   + ("" if better == "neither" else f": the {better}-width network is ahead at this length") + ".")
    return " ".join(out)
