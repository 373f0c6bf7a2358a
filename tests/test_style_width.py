"""perceptlib.style_width: rows and findings of the half- vs full-width comparison folder."""
import json
import shutil
from pathlib import Path

from perceptlib.style_width import width_findings, width_rows

SRC = Path(__file__).resolve().parents[1] / "results" / "style_width" / "starry_night_c16"


def _run(root: Path, name: str, channels: int, score: float, seconds: float, steps: int = 10) -> str:
    d = root / name
    shutil.copytree(SRC, d)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**cfg, "channels": channels}))
    hist = json.loads((d / "history.json").read_text())
    hist["sessions"] = [{**hist["sessions"][-1], "seconds": seconds}]
    (d / "history.json").write_text(json.dumps(hist))
    return f"results/style_width/{name}"


def test_rows_and_findings(tmp_path):
    runs = {_run(tmp_path, "a_c16", 16, 20.0, 5.0): {"step": 10, "iterations_matching_network": 20.0, "min": 18,
                                                     "size": 256},
            _run(tmp_path, "a_c32", 32, 25.5, 8.0): {"step": 10, "iterations_matching_network": 25.5, "min": 22,
                                                     "size": 256}}
    _run(tmp_path, "unscored_c8", 8, 0, 1.0)  # no entry in eval.json: left out
    (tmp_path / "eval.json").write_text(json.dumps({"runs": runs}))
    rows = width_rows(tmp_path)
    assert [r["channels"] for r in rows] == [16, 32]
    assert rows[1]["parameters"] > 3 * rows[0]["parameters"]  # ~4x: parameters grow with width squared
    assert abs(rows[0]["seconds_per_step"] - 0.5) < 1e-9 and abs(rows[1]["seconds_per_step"] - 0.8) < 1e-9
    text = width_findings(rows, {"starry_night": "The Starry Night"})
    assert "width 16" in text and "25.5" in text and "full-width network is ahead" in text


def test_missing_eval_gives_no_rows(tmp_path):
    _run(tmp_path, "a_c16", 16, 20.0, 5.0)
    assert width_rows(tmp_path) == []
