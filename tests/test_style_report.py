"""Tests of perceptlib.style_report on tiny synthetic run folders, comparisons and speed tables (headless)."""
from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

matplotlib.use("Agg")

from perceptlib import style_report as R  # noqa: E402
from perceptlib.config import IMPL_STYLE, PAPER_SR, PAPER_STYLE, config_json  # noqa: E402
from perceptlib.figcheck import figure_problems  # noqa: E402
from perceptlib.images import load_image, save_image  # noqa: E402
from perceptlib.losses import PerceptualLoss  # noqa: E402
from perceptlib.style import style_loss_of  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(folder: Path, cfg, style="starry_night", last_step=30, sessions=None, model=True, amp=None) -> Path:
    """A run folder as train_style writes it (model.pt is a placeholder: style_networks never loads it);
    ``amp``: the old ``amp`` field instead of ``precision``. The style term jumps 10x at the 13th entry."""
    folder.mkdir(parents=True)
    raw = json.loads(config_json(cfg))
    if amp is not None:
        del raw["precision"]
        raw["amp"] = amp
    (folder / "config.json").write_text(json.dumps(raw))
    steps = list(range(10, last_step + 1, 10))
    feat = [100.0 / (i + 1) for i in range(len(steps))]
    style_vals = [50.0] * len(steps)
    if len(steps) > 12:
        style_vals[12] = 500.0
    hist = {"step": steps, "terms": {"feat": feat, "style": style_vals, "tv": [1.0] * len(steps),
                                     "total": [a + b for a, b in zip(feat, style_vals)]},
            "elapsed_s": 600.0, "last_step": last_step}
    if sessions is not None:
        hist["sessions"] = sessions
    (folder / "history.json").write_text(json.dumps(hist))
    (folder / "style.json").write_text(json.dumps({"name": style}))
    if model:
        (folder / "model.pt").write_bytes(b"weights")
    return folder


@pytest.fixture
def results(tmp_path) -> Path:
    res = tmp_path / "results"
    _run(res / "h100" / "style_great_wave", dataclasses.replace(PAPER_STYLE, mode="paper"), style="great_wave",
         last_step=200, amp=True)
    _run(res / "style_starry_night", dataclasses.replace(IMPL_STYLE, mode="cpu", image_size=128, steps=1000),
         sessions=[{"device": "cpu", "precision": "bf16"}], last_step=150)
    _run(res / "style_starry_night_lr", dataclasses.replace(PAPER_STYLE, mode="cpu", norm="instance", lr=5e-4,
                                                              device="cpu"), amp=True)
    _run(res / "style_starry_night_cpu", dataclasses.replace(PAPER_STYLE, mode="cpu"), model=False)  # no weights
    _run(res / "style_diagnostics" / "paper", PAPER_STYLE)  # not a style_* folder
    _run(res / "style_sr", PAPER_SR)  # an SR run named like a style run
    return res


def test_style_networks_finds_every_trained_style_network(results):
    nets = R.style_networks(results)
    assert list(nets) == [("great_wave", "H100, paper recipe"), ("starry_night", "CPU, impl recipe"),
                          ("starry_night", "CPU, paper recipe with IN, lr 0.0005")]
    gw, impl, lr = nets.values()
    assert gw.name == "results/h100/style_great_wave" and gw.step == 200 and gw.steps == 40000
    assert (gw.norm, gw.head, gw.channels, gw.precision) == ("batch", "paper", 32, "bf16")  # amp on a GPU: bf16
    assert (impl.norm, impl.head, impl.channels, impl.image_size, impl.precision) == (
        "instance", "tanh150", 16, 128, "bf16")
    assert impl.model == results / "style_starry_night" / "model.pt" and impl.seconds == 600.0
    assert (lr.lr, lr.precision, lr.where) == (5e-4, "fp32", "CPU")  # amp meant bf16 on CUDA only


def test_style_networks_opens_only_tracked_folders_and_keeps_colliding_keys_apart(results, monkeypatch):
    tracked = {(results / "style_starry_night" / "model.pt").resolve()}
    opened = []
    real = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: opened.append(self.parent.name) or real(self, *a, **k))
    assert list(R.style_networks(results, tracked=tracked)) == [("starry_night", "CPU, impl recipe")]
    assert set(opened) == {"style_starry_night"}  # nothing of the untracked folders is read
    monkeypatch.undo()
    shutil.copytree(results / "style_starry_night", results / "style_starry_night_again")
    keys = [k for k in R.style_networks(results) if "impl" in k[1]]
    assert keys == [("starry_night", "CPU, impl recipe"),
                    ("starry_night", "CPU, impl recipe (style_starry_night_again)")]


def test_committed_files_lists_what_git_tracks(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "a.json").write_text("{}")
    (tmp_path / "results" / "b.json").write_text("{}")
    assert R.committed_files(tmp_path) is None  # not a checkout
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    subprocess.run(["git", "-C", str(tmp_path), "add", "results/a.json"], check=True)
    assert R.committed_files(tmp_path) == {(tmp_path / "results" / "a.json").resolve()}


def _compare() -> dict:
    """Two styles x two photos; optimisation curves of 6 evaluations."""
    def run(style, photo, net, curve):
        return {"style": style, "content": photo, "model": f"results/h100/style_{style}", "model_step": 200,
                "network": {"terms": {"total": net}}, "optimisation": {"terms": {"total": min(curve)}, "curve": curve}}
    return {"device": "GPU", "steps": 6, "size": 32, "init": "noise", "runs": [
        run("great_wave", "cat", 5.0, [9, 8, 6, 4, 3, 2]),      # best so far <= 5 at evaluation 4
        run("great_wave", "cup", 7.0, [9, 10, 6.5, 7, 5, 4]),   # best so far 6.5 at evaluation 3
        run("starry_night", "cat", 1.0, [9, 8, 6, 4, 3, 2]),    # never
        run("starry_night", "cup", 3.0, [9, 8, 6, 4, 3, 2])]}   # at 5


def test_scores_from_compare_count_evaluations_per_photo():
    sc = R.scores_from_compare(_compare())
    gw, sn = sc["results/h100/style_great_wave"], sc["results/h100/style_starry_night"]
    assert [p["iterations"] for p in gw["photos"]] == [4, 3] and gw["iterations_matching_network"] == 3.5
    assert gw["all_reached"] and gw["min"] == 3 and gw["step"] == 200 and gw["max_steps"] == 6
    assert [p["iterations"] for p in sn["photos"]] == [None, 5] and not sn["all_reached"]
    assert sn["iterations_matching_network"] == 5.5  # the photo never reached counts as 6


def test_fig5_summary_reads_the_mean_curve_as_the_paper_does():
    f = R.fig5_summary(_compare())
    gw = f["great_wave"]
    # best so far [9, 8, 6, 4, 3, 2] and [9, 9, 6.5, 6.5, 5, 4]: mean [9, 8.5, 6.25, 5.25, 4, 3]; network mean 6
    np.testing.assert_allclose(gw["curve"], [9, 8.5, 6.25, 5.25, 4, 3])
    assert gw["network_loss"] == 6.0 and gw["iterations"] == 4 and gw["ratio"] == pytest.approx(2.0)
    assert f["starry_night"]["iterations"] == 6 and f["starry_night"]["model"] == "results/h100/style_starry_night"
    fig = R.plot_fig5(f)
    assert len(fig.axes) == 2 and figure_problems(fig) == []
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["optimisation (best so far)", "network", "crossing"]


def test_matching_scores_merge_files_later_first(tmp_path):
    a, b = tmp_path / "eval.json", tmp_path / "style_x_progress.json"
    a.write_text(json.dumps({"runs": {"results/style_x": {"step": 100, "iterations_matching_network": 10.0},
                                      "results/style_y": {"step": 5, "iterations_matching_network": 2.0}}}))
    b.write_text(json.dumps({"runs": {"results/style_x": {"step": 300, "iterations_matching_network": 20.0}}}))
    sc = R.matching_scores([a, b])
    assert sc["results/style_x"]["step"] == 300 and sc["results/style_x"]["source"] == b.name
    assert sc["results/style_y"]["iterations_matching_network"] == 2.0
    res = tmp_path / "results"
    (res / "style_diagnostics").mkdir(parents=True)
    for f in (res / "style_diagnostics" / "eval.json", res / "style_a_progress.json", res / "style_b_progress.json"):
        f.write_text("{}")
    assert [f.name for f in R.score_files(res)] == ["eval.json", "style_a_progress.json", "style_b_progress.json"]
    assert R.score_files(res, tracked={(res / "style_b_progress.json").resolve()}) == [res / "style_b_progress.json"]


def _scores() -> dict:
    return {"results/h100/style_great_wave": {"step": 200, "iterations_matching_network": 30.2, "min": 25,
                                              "max_steps": 500, "size": 256, "photos": [{}] * 5},
            "results/style_starry_night": {"step": 100, "iterations_matching_network": 55.0, "min": 51,
                                           "max_steps": 300, "size": 256, "photos": [{}] * 5}}


def test_network_rows_and_preferred_networks(results):
    nets = R.style_networks(results)
    fig5 = {"great_wave": {"model": "results/h100/style_great_wave", "step": 200, "iterations": 29, "ratio": 2.6}}
    rows = R.network_rows(nets, _scores(), fig5)
    gw, impl, lr = rows
    assert gw["score"] == 30.2 and gw["score_current"] and gw["curve_iterations"] == 29 and gw["ratio"] == 2.6
    assert impl["score"] == 55.0 and impl["score_step"] == 100 and not impl["score_current"]  # network at 150
    assert lr["score"] is None and lr["ratio"] is None
    assert impl["spikes"] == 1 and lr["spikes"] == 0  # the 10x jump at entry 13 needs 13+ entries
    assert impl["feat_change"] == pytest.approx(1 / 15)  # the last 10 % of 15 entries over the first: (100/15) / 100
    assert impl["minutes"] == 10.0 and impl["painting"] == "The Starry Night"
    assert (impl["norm"], impl["head"], impl["channels"]) == ("instance", "tanh150", 16)
    best = R.preferred_networks(rows)
    assert best == {"great_wave": gw["key"], "starry_night": ("starry_night", "CPU, impl recipe")}
    rows[1]["score"] = None  # both unscored now: the one with more steps wins
    assert nets[R.preferred_networks(rows)["starry_night"]].step == 150
    rows[1]["step"] = 10
    assert R.preferred_networks(rows)["starry_night"] == lr["key"]


def _sized_score(folder: str, step: int, size: int, worth: float, fewest: int) -> dict:
    return {"size": size, "runs": {folder: {"step": step, "size": size, "iterations_matching_network": worth,
                                            "min": fewest, "max_steps": 200, "photos": [{}] * 5}}}


@pytest.fixture
def sized_scores(results) -> Path:
    """Score files at 128² and 512² as scripts/style_diag_eval.py --size S --out FILE writes them: the impl
    Starry Night network (step 150) scored at 512² at step 150 and at 128² at step 100 (stale), the H100 Great
    Wave at 512²; plus files the naming convention leaves out."""
    d = results / "style_fig5_by_size"
    d.mkdir()
    for name, args in {"style_starry_night_512": ("results/style_starry_night", 150, 512, 29.4, 25),
                       "style_starry_night_128": ("results/style_starry_night", 100, 128, 33.8, 28),
                       "style_great_wave_512": ("results/h100/style_great_wave", 200, 512, 41.0, 36)}.items():
        (d / f"{name}.json").write_text(json.dumps(_sized_score(*args)))
    (d / "notes.json").write_text("{}")             # no _<size> ending
    (d / "style_starry_night_big.json").write_text("{}")
    return d


def test_size_score_files_follow_the_naming_convention_and_the_tracked_filter(results, sized_scores, monkeypatch):
    assert [f.name for f in R.size_score_files(results)] == [
        "style_great_wave_512.json", "style_starry_night_128.json", "style_starry_night_512.json"]
    tracked = {(sized_scores / "style_starry_night_512.json").resolve()}
    opened = []
    real = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: opened.append(self.name) or real(self, *a, **k))
    files = R.size_score_files(results, tracked)
    assert files == [sized_scores / "style_starry_night_512.json"] and opened == []  # listing opens nothing
    assert R.scores_by_size(files) == {"results/style_starry_night": {512: {
        **_sized_score("results/style_starry_night", 150, 512, 29.4, 25)["runs"]["results/style_starry_night"],
        "source": "style_starry_night_512.json"}}}
    assert R.size_score_files(results / "nowhere") == []


def test_scores_by_size_key_by_folder_and_size_later_file_first(tmp_path):
    a, b, c = tmp_path / "style_x_512.json", tmp_path / "style_x_512_again.json", tmp_path / "style_x_1024.json"
    a.write_text(json.dumps(_sized_score("results/style_x", 100, 512, 20.0, 18)))
    b.write_text(json.dumps(_sized_score("results/style_x", 300, 512, 30.0, 27)))
    c.write_text(json.dumps({"runs": {"results/style_x": {"step": 300, "iterations_matching_network": 50.0}}}))
    sc = R.scores_by_size([a, b, c])
    assert sorted(sc["results/style_x"]) == [512, 1024]  # no size in the record or the file: the file name's
    assert sc["results/style_x"][512]["step"] == 300 and sc["results/style_x"][512]["source"] == b.name
    assert sc["results/style_x"][1024]["iterations_matching_network"] == 50.0


def test_network_rows_add_the_scores_at_other_sizes(results, sized_scores):
    nets = R.style_networks(results)
    sized = R.scores_by_size(R.size_score_files(results))
    gw, impl, lr = R.network_rows(nets, _scores(), None, sized)
    assert (impl["score"], impl["score_current"]) == (55.0, False)  # the 256² score as before
    assert (impl["score_512"], impl["score_512_min"], impl["score_512_step"], impl["score_512_current"]) == (
        29.4, 25, 150, True)
    assert (impl["score_128"], impl["score_128_step"], impl["score_128_current"]) == (33.8, 100, False)  # at 150
    assert gw["score_512"] == 41.0 and gw["score_512_current"] and gw["score_128"] is None
    assert all(lr[k] is None for k in ("score_128", "score_512", "score_512_min", "score_512_step"))
    assert not lr["score_512_current"] and not gw["score_128_current"]
    assert [R.score_at(r, 512) for r in (gw, impl, lr)] == ["41.0", "29.4", None]
    assert R.score_at(impl, 128) == "33.8 (step 100)" and R.score_at(impl, 256) == "55.0 (step 100)"
    only = R.network_rows(nets, _scores(), None, R.scores_by_size(
        R.size_score_files(results, {(sized_scores / "style_starry_night_512.json").resolve()})))
    assert [r["score_512"] for r in only] == [None, 29.4, None]  # the untracked Great Wave file is left out
    assert [r["score_512"] for r in R.network_rows(nets, _scores())] == [None] * 3  # no sized scores given
    md = R.style_findings(R.network_rows(nets, {}, None, sized))
    assert "The same score at 128²: 33.8 (fewest 28), scored at step 100; at 512²: 29.4 (fewest 25)." in md
    assert "no Fig. 5 score at 256² committed. The same score at 512²: 41.0 (fewest 36)." in md
    assert md.count("no Fig. 5 score committed.") == 1  # the lr run: nothing at any size


def test_comparison_record_feeds_the_fig5_readings(results):
    net = R.style_networks(results)[("starry_night", "CPU, impl recipe")]
    res = {"network": {"terms": {"total": 4.5, "feat": 1.0}, "seconds": 0.01, "image": torch.zeros(3, 4, 4)},
           "optimisation": {"terms": {"total": 2.0}, "seconds": 3.0, "curve": [9.0, 5.0, 4.0, 2.0],
                            "image": torch.zeros(3, 4, 4)}}
    rec = R.comparison_record(net, "cat", res, 64)
    assert rec["model"] == "results/style_starry_night" and rec["model_step"] == 150 and "image" not in rec["network"]
    json.dumps(rec)  # no tensors left
    compare = {"size": 64, "runs": [rec]}
    assert R.scores_from_compare(compare)["results/style_starry_night"]["photos"][0]["iterations"] == 3
    assert R.fig5_summary(compare)["starry_night"]["ratio"] == pytest.approx(2.25)


def test_diagnostic_rows_label_score_and_say_which_weights_are_committed(results):
    from perceptlib.runs import load_run

    runs = {d: load_run(results / d) for d in ("style_starry_night", "style_starry_night_cpu")}
    rows = R.diagnostic_rows(runs, _scores(), results.parent)
    assert rows[0]["run"] == "IN, 150 tanh, channels 16 (150 steps)" and rows[0]["worth"] == 55.0
    assert rows[1]["run"] == "paper (30 steps)" and rows[1]["worth"] is None
    assert [r["weights"] for r in rows] == ["committed", "not committed"]  # present / absent
    assert [r["weights"] for r in R.diagnostic_rows(runs, {}, results.parent, tracked=set())] == ["not committed"] * 2
    assert rows[0]["style_spikes"] == 1 and rows[0]["steps"] == 150


def test_plot_network_curves_one_panel_per_network_and_one_legend(results):
    hists = {k[1]: json.loads((n.folder / "history.json").read_text()) for k, n in R.style_networks(results).items()}
    fig = R.plot_network_curves(hists, cols=2)
    panels = [ax for ax in fig.axes if ax.axison]
    assert len(panels) == 3 and len(fig.axes) == 4  # 2 x 2, the fourth blank
    assert [ln.get_label() for ln in panels[0].get_lines()] == ["feat", "style", "tv"]
    np.testing.assert_allclose(panels[0].get_lines()[0].get_ydata(), hists["H100, paper recipe"]["terms"]["feat"])
    assert len(fig.legends) == 1 and figure_problems(fig) == []
    with pytest.raises(ValueError, match="at least one"):
        R.plot_network_curves({})


def test_comparison_panels_load_the_committed_images(tmp_path):
    cmp = _compare()
    imgs = {}
    for n in ("cat", "cup"):
        imgs[f"content__{n}"] = torch.full((3, 8, 8), 0.2)
        for s in ("great_wave", "starry_night"):
            for m in ("network", "optimisation"):
                imgs[f"{s}__{n}__{m}"] = torch.rand(3, 8, 8)
    for stem, t in imgs.items():
        save_image(t, tmp_path / f"{stem}.png")
    panels = R.comparison_panels(cmp, tmp_path)
    assert list(panels)[:3] == ["photo: cat", "great_wave network, cat\nloss 5", "great_wave optimisation, cat\nloss 2"]
    assert len(panels) == 10
    assert torch.equal(panels["starry_night network, cup\nloss 3"],
                       load_image(tmp_path / "starry_night__cup__network.png"))
    ref = R.optimisation_reference(cmp, tmp_path, "great_wave")
    assert list(ref) == ["cat", "cup"] and ref["cup"][0] == "optimisation (6 evaluations), cup\nloss 4"
    assert torch.equal(ref["cat"][1], load_image(tmp_path / "great_wave__cat__optimisation.png"))
    (tmp_path / "content__cat.png").unlink()
    with pytest.raises(FileNotFoundError, match="content__cat"):
        R.comparison_panels(cmp, tmp_path)


def test_network_panels_caption_each_output_with_its_loss():
    net = nn.Conv2d(3, 3, 1)
    nn.init.zeros_(net.weight)
    nn.init.constant_(net.bias, 0.5)  # every output pixel 0.5, exactly
    loss = PerceptualLoss(layers={"relu1_2": 1.0}, weights=None, tv_weight=1.0)
    photos = {"a": torch.rand(3, 16, 16), "b": torch.rand(3, 16, 16)}
    ref = {"a": ("optimisation, a", torch.zeros(3, 16, 16))}
    panels, totals = R.network_panels({"net": net}, photos, {"net": loss}, reference=ref)
    want = style_loss_of(torch.full((3, 16, 16), 0.5), photos["b"], loss)["total"]
    assert totals["net"]["b"] == pytest.approx(want)
    assert list(panels) == ["photo: a", "optimisation, a", f"net, a\nloss {totals['net']['a']:.3g}", "photo: b",
                            f"net, b\nloss {want:.3g}"]
    assert torch.equal(panels["photo: b"], photos["b"]) and float(panels[f"net, b\nloss {want:.3g}"].mean()) == 0.5


def _speed(device, net, opt500, measured=True):
    rows = []
    for s, n, o in zip((256, 512), net, opt500):
        rows += [{"size": s, "method": "optimisation", "iterations": i, "seconds": o * i / 500, "measured": measured}
                 for i in (100, 300, 500)]
        rows.append({"size": s, "method": "network", "iterations": None, "seconds": n, "measured": True})
    return {"device": device, "dtype": "float32", "rows": rows}


def test_speed_table_and_findings_compute_every_number(results):
    gpu = _speed("GPU X", (0.002, 0.004), (10.0, 11.0))
    cpu = _speed("CPU Y", (0.5, 2.0), (300.0, 1300.0), measured=False)
    t = R.speed_table(cpu)
    assert t[512] == {"measured": False, 100: 260.0, 300: 780.0, 500: 1300.0, "network": 2.0}
    rows = R.network_rows(R.style_networks(results), _scores())
    rows[2]["feat_change"] = 1.2
    paper = {256: (3.17, 9.52, 15.86, 0.015, 1060), 512: (10.97, 32.91, 54.85, 0.05, 1026)}
    md = R.style_findings(rows, {"GPU": gpu, "CPU": cpu}, paper,
                          {"relu3_3": {"feat": 10.0, "style": 8.0}, "relu2_2": {"feat": 11.0, "style": 4.0}}, "5 its")
    assert "needs 30.2 L-BFGS evaluations on average (fewest 25, 5 photos at 256²) to reach its loss;" in md
    assert "to reach its loss (scored at step 100)" in md  # the impl network is at step 150
    assert "no Fig. 5 score committed" in md  # the lr run
    assert "content term at the end / at the start: 1.20 (it ended above where it started)." in md
    assert "content term at the end / at the start: 0.07." in md  # the impl run: 1/15
    assert "1 of 2 scored networks reach the paper's 50 evaluations" in md
    # GPU: 10 / 0.002 = 5000x, 11 / 0.004 = 2750x; 20 -> 22 ms per evaluation: x1.10 for x4 pixels
    assert "2 / 4 ms at 256² / 512²; 500 evaluations 10 / 11 s: the network is 5000× / 2750× faster" in md
    assert "(the paper, Titan X: 1060× / 1026× at 256² / 512²)" in md
    assert "20 / 22 ms: ×1.10 from 256² to 512² for ×4 the pixels, so at the small sizes" in md
    # CPU: seconds (the 512² pass takes 2 s), extrapolated, 600x / 650x, 600 -> 2600 ms: no overhead claim
    assert "0.5 / 2 s at 256² / 512²; 500 evaluations 300 / 1300 s (partly extrapolated" in md
    assert "600× / 650× faster" in md and "×4.33 from 256² to 512² for ×4 the pixels." in md
    assert "with `relu2_2` the optimisation ends at style 4 and content 11, with `relu3_3` at style 8" in md
    assert "the style term is lower with `relu2_2` (×0.50)" in md


def test_differences_markdown_states_each_networks_setting(results):
    nets = R.style_networks(results)
    md = R.differences_markdown(nets, 17, _compare(), {"here": _speed("CPU Y", (0.5, 2.0), (300.0, 1300.0))})
    lines = md.splitlines()
    assert lines[0] == "| | paper | here |" and len(lines) == 2 + 7
    assert "the 17 `train` photos" in md and "random 128/256² crops" in md
    assert "MS-COCO, 80k photos resized to 256²" in md and "40000 iterations of 256², batch 4, Adam 0.001" in md
    assert ("The Starry Night, CPU, impl recipe: 150 of 1000 steps of 128², batch 4, Adam 0.001, 10 min in bf16 "
            "(0.094% of the paper's training pixels)") in md  # 150·4·128² / (40000·4·256²)
    assert "The Starry Night, CPU, impl recipe: IN, 150 tanh output, base width 16" in md
    assert ("content 1, style 5 × the mean over each Gram (Eq. 4 / C_j²), TV 0.065 on [0, 1] images "
            "(1e-06 on 0–255)") in md
    assert "projected L-BFGS from noise, 6 evaluations at 32², on GPU" in md and "here: CPU Y (float32)" in md


def test_network_losses_share_one_loss_per_setting(results, tmp_path, real_weights):
    base = dataclasses.replace(PAPER_STYLE, mode="quick", vgg_weights="torchvision", style_size=32)
    res = tmp_path / "more"
    _run(res / "style_a", base)
    _run(res / "style_b", dataclasses.replace(base, norm="instance"))  # same loss, other network
    _run(res / "style_c", dataclasses.replace(base, style_weight=2.0))  # another loss
    nets = R.style_networks(res)
    assert len(nets) == 3
    style = tmp_path / "painting.png"
    save_image(torch.rand(3, 24, 32), style)
    losses = R.network_losses(nets, {"starry_night": style})
    a, b, c = (losses[k] for k in nets)
    assert a is b and c is not a and c.style_weight == 2.0 and a.style_weight == 5.0


def _tiny_nets() -> dict[str, nn.Module]:
    from perceptlib.nets import TransformerNet

    torch.manual_seed(0)
    return {s: TransformerNet(channels=4, norm="instance", head="tanh150").eval()
            for s in ("starry_night", "great_wave")}


def test_style_grid_is_fig6_paintings_then_one_row_per_photo():
    from perceptlib.plots import plot_reconstruction_grid
    from perceptlib.speed import square_crop
    from perceptlib.style import stylize

    nets = _tiny_nets()
    g = torch.Generator().manual_seed(1)
    photos = {"a": torch.rand(3, 40, 60, generator=g), "b": torch.rand(3, 50, 30, generator=g)}
    paintings = {s: torch.rand(3, 70, 90, generator=g) for s in nets}
    originals, rows = R.style_grid(nets, photos, paintings, size=32)
    assert list(rows) == ["painting", "a", "b"] and list(originals) == ["a", "b"]
    assert list(rows["painting"]) == ["The Starry Night", "The Great Wave"]
    assert all(img.shape == (3, 32, 32) for row in rows.values() for img in row.values())
    crop = square_crop(photos["b"], 32)
    assert torch.equal(originals["b"], crop)
    assert torch.allclose(rows["b"]["The Great Wave"], stylize(nets["great_wave"], crop))
    assert not torch.allclose(rows["b"]["The Great Wave"], rows["b"]["The Starry Night"])
    fig = plot_reconstruction_grid(originals, rows, first_label="photo")
    assert not figure_problems(fig)
    with pytest.raises(ValueError, match="at least one network"):
        R.style_grid({}, photos, paintings)


def test_high_resolution_panels_keep_the_aspect_at_each_longer_side():
    nets = _tiny_nets()
    photo = torch.rand(3, 30, 45, generator=torch.Generator().manual_seed(2))
    panels = R.high_resolution_panels(nets, photo, sides=(48, 90), name="p")
    assert [tuple(v.shape) for v in panels.values()] == [(3, 32, 48)] * 2 + [(3, 60, 90)] * 2
    assert "The Great Wave, p at 90x60" in panels
    assert all(0 <= float(v.min()) and float(v.max()) <= 1 for v in panels.values())
    with pytest.raises(ValueError, match="at least 16"):
        R.high_resolution_panels(nets, photo, sides=(8,))


def test_loss_trend_recovers_a_power_law_and_projected_steps_inverts_it():
    steps = np.arange(10, 10001, 10)
    hist = {"step": steps.tolist(), "terms": {"total": (3e5 * steps ** -0.2).tolist()}}
    a = R.loss_trend(hist)
    assert a == pytest.approx(0.2, rel=1e-6)
    # 0.72 of the loss at step 10000 needs 10000 * 0.72^(-1/0.2) steps; checked against the law itself
    proj = R.projected_steps(10000, 0.72, a)
    assert 3e5 * proj ** -0.2 == pytest.approx(0.72 * 3e5 * 10000 ** -0.2, rel=1e-6)
    assert R.projected_steps(10000, 1.2, a) == 10000      # already worth the goal
    assert R.projected_steps(10000, 0.72, -0.1) is None   # a rising loss never gets there
    assert R.projected_steps(10000, None, a) is None
    # only the last half counts: a different early slope is ignored
    early = np.where(steps <= 5000, 1e9 * steps ** -1.0, 3e5 * steps ** -0.2)
    assert R.loss_trend({"step": steps.tolist(), "terms": {"total": early.tolist()}}) == pytest.approx(0.2, rel=1e-6)
    assert R.loss_trend({"step": [1, 2], "terms": {"total": [2.0, 1.0]}}) is None
    with pytest.raises(ValueError, match="since"):
        R.loss_trend(hist, since=1.0)


def test_network_rows_project_the_steps_to_the_goal_from_a_goal_score(results):
    networks = R.style_networks(results)
    key, n = next(iter(networks.items()))
    base = {"iterations_matching_network": 30.0, "min": 25, "step": n.step, "max_steps": 300, "size": 256,
            "photos": [{}] * 5}
    rows = R.network_rows(networks, {n.name: {**base, "goal": 50, "goal_ratio": 0.8}})
    row = next(r for r in rows if r["key"] == key)
    a = R.loss_trend(json.loads((n.folder / "history.json").read_text()))
    assert a is not None and row["steps_for_goal"] is not None
    assert row["goal"] == 50 and row["goal_ratio"] == 0.8 and row["loss_exponent"] == a
    assert row["steps_for_goal"] == R.projected_steps(n.step, 0.8, a)
    stale = R.network_rows(networks, {n.name: {**base, "step": n.step - 1, "goal": 50, "goal_ratio": 0.8}})
    assert next(r for r in stale if r["key"] == key)["steps_for_goal"] is None   # scored at another step
    plain = R.network_rows(networks, {n.name: base})
    assert next(r for r in plain if r["key"] == key)["goal_ratio"] is None


def test_a_learning_rate_drop_is_part_of_the_label(tmp_path):
    res = tmp_path / "results"
    _run(res / "style_great_wave", dataclasses.replace(IMPL_STYLE, mode="cpu", lr_drops="900=1e-4"), style="great_wave")
    assert list(R.style_networks(res)) == [("great_wave", "CPU, impl recipe with lr 0.0001 from step 900")]
