"""perceptlib.style_schedule: the learning-rate drop comparison (start, constant-rate control, drop)."""
import dataclasses
import json

import pytest

from perceptlib.config import IMPL_STYLE, config_json
from perceptlib.style_schedule import lr_drop_findings, lr_drop_rows, schedule_label


def _net(root, rel, drops=(), losses=None):
    d = root / rel
    d.mkdir(parents=True)
    (d / "config.json").write_text(config_json(dataclasses.replace(IMPL_STYLE, lr_drops=drops)))
    steps = list(range(100, 1300, 100))
    losses = losses or [1000.0 - s / 10 for s in steps]
    (d / "history.json").write_text(json.dumps({"step": steps, "terms": {"total": losses}}))
    (d / "style.json").write_text(json.dumps({"name": "wave"}))
    return rel


def _score(step, score, ratio, losses=(10.0, 20.0)):
    return {"step": step, "iterations_matching_network": score, "min": int(score) - 2, "size": 256, "goal": 50,
            "goal_ratio": ratio, "photos": [{"network_loss": v} for v in losses]}


def test_schedule_label_lists_the_rates_used_up_to_a_step():
    assert schedule_label(1e-3, (), 500) == "0.001"
    assert schedule_label(1e-3, "400=1e-4,900=1e-5", 500) == "0.001, 0.0001 from step 400"
    assert schedule_label(1e-3, "400=1e-4", 400) == "0.001"  # the drop at 400 made no update before step 400


def test_rows_and_findings(tmp_path):
    folder = tmp_path / "results" / "style_lr_drop"
    start = _net(tmp_path, "results/style_wave")
    drop = _net(tmp_path, "results/style_lr_drop/wave_1e-4", "1000=1e-4",
                [1000.0 - s / 10 for s in range(100, 1100, 100)] + [800.0, 790.0])
    _net(tmp_path, "results/style_lr_drop/unscored", "1000=1e-5")  # not in eval.json: no row
    (folder / "eval.json").write_text(json.dumps({"runs": {drop: _score(1200, 44.0, 0.95),
                                                           start: _score(1200, 41.0, 0.88)}}))
    scores = {start: _score(1000, 40.0, 0.86)}  # the main score file: the network at the drop's step
    rows = lr_drop_rows(folder, scores, tmp_path)
    assert [(r["kind"], r["step"], r["score"]) for r in rows] == [("start", 1000, 40.0), ("constant", 1200, 41.0),
                                                                   ("drop", 1200, 44.0)]
    assert rows[2]["schedule"] == "0.001, 0.0001 from step 1000" and rows[2]["rate_end"] == pytest.approx(1e-4)
    assert rows[1]["schedule"] == "0.001"
    # the mean over the last 500 steps up to the scored step, not the whole history
    assert rows[0]["train_loss"] == pytest.approx(sum(1000.0 - s / 10 for s in range(600, 1100, 100)) / 5)
    assert rows[2]["train_loss"] == pytest.approx((920 + 910 + 900 + 800 + 790) / 5)  # steps 800-1200
    text = lr_drop_findings(rows, {"wave": "The Wave"})
    assert text.startswith("The Wave: from step 1000 (worth 40.0 evaluations at 256²), 200 more steps at a rate "
                           "of 0.0001 reach 44.0; as many at the constant rate 41.0.")
    assert "0.860 of the network's at the start, 0.950 after the drop (0.880 at the constant rate)" in text
    assert "mean loss on the photos: 15 at the start, 15 after the drop, 15 at the constant rate" in text


def test_a_start_scored_beside_the_drop_run_is_preferred(tmp_path):
    folder = tmp_path / "results" / "style_lr_drop"
    main = _net(tmp_path, "results/style_wave")
    start = _net(tmp_path, "results/style_lr_drop/wave_1000")  # a copy of the network at the drop's step
    drop = _net(tmp_path, "results/style_lr_drop/wave_1e-4", "1000=1e-4")
    (folder / "eval.json").write_text(json.dumps({"runs": {
        drop: _score(1200, 44.0, 0.95, (9.0, 11.0)), start: _score(1000, 42.0, 0.9, (10.0, 12.0)),
        main: _score(1200, 39.0, 0.85, (12.0, 14.0))}}))
    rows = lr_drop_rows(folder, {main: _score(1000, 40.0, 0.86)}, tmp_path)  # the other machine's start: unused
    assert [(r["kind"], r["run"], r["score"]) for r in rows] == [
        ("start", start, 42.0), ("constant", main, 39.0), ("drop", drop, 44.0)]
    assert [r["photo_loss"] for r in rows] == [11.0, 13.0, 10.0]
    assert "11 at the start, 10 after the drop, 13 at the constant rate" in lr_drop_findings(rows)


def test_start_needs_a_score_at_the_drop_step(tmp_path):
    folder = tmp_path / "results" / "style_lr_drop"
    start = _net(tmp_path, "results/style_wave")
    drop = _net(tmp_path, "results/style_lr_drop/wave_1e-4", "1000=1e-4")
    (folder / "eval.json").write_text(json.dumps({"runs": {drop: _score(1200, 44.0, 0.95)}}))
    rows = lr_drop_rows(folder, {start: _score(900, 39.0, 0.8)}, tmp_path)  # scored at another step
    assert [r["kind"] for r in rows] == ["drop"] and lr_drop_findings(rows) == ""
    assert lr_drop_rows(tmp_path / "nothing", {}, tmp_path) == []
