"""reconstruct(): projected L-BFGS / Adam image reconstruction, on a tiny random network and real images."""
from __future__ import annotations

import json

import pytest
import torch

from perceptlib import PerceptualLoss
from perceptlib.experiments import RunSpec, balanced_weights, loss_network, reconstruction_plan, run_spec, square_image
from perceptlib.metrics import psnr
from perceptlib.reconstruct import Reconstruction, ReconstructionError, init_image, reconstruct

from conftest import load_asset


def feature_loss(target, layers=("relu2_2",), **kw):
    loss = PerceptualLoss({n: 1.0 for n in layers}, network=loss_network(layers, "random-kaiming"), **kw)
    loss.set_target(target)
    return loss


@pytest.fixture
def small():
    return load_asset("chelsea", 24)


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_loss_decreases_and_image_stays_in_range(small, optimizer):
    loss = feature_loss(small)
    r = reconstruct(loss, 40, optimizer=optimizer, init="noise", lr=None if optimizer == "lbfgs" else 0.05,
                    progress=False)
    assert isinstance(r, Reconstruction)
    assert r.steps == len(r.history) == 40 and r.stopped is None
    assert r.final_loss < 0.2 * r.history[0]["total"]
    assert r.image.shape == small.shape and r.image.min() >= 0 and r.image.max() <= 1
    # the final terms are the loss of the returned image, computed independently here
    with torch.no_grad():
        assert float(loss(r.image)) == pytest.approx(r.final_loss, rel=1e-4)
    # the reconstruction is closer to the target than the noise it started from
    assert psnr(r.image[0], small[0]) > psnr(init_image("noise", 24)[0], small[0]) + 3


def test_projection_keeps_iterates_in_range(small):
    """Adam with a big step would leave [0, 1]; every iterate the loss sees must be inside."""
    seen = []
    loss = feature_loss(small)
    r = reconstruct(loss, 10, optimizer="adam", lr=2.0, progress=False,
                    callback=lambda step, terms, img: seen.append((float(img.min()), float(img.max()))))
    assert len(seen) == 10 and all(0 <= lo and hi <= 1 for lo, hi in seen)
    assert r.image.min() >= 0 and r.image.max() <= 1


def test_seeded_runs_are_identical_and_seeds_differ(small):
    a = reconstruct(feature_loss(small), 15, init="noise", seed=3, progress=False)
    b = reconstruct(feature_loss(small), 15, init="noise", seed=3, progress=False)
    c = reconstruct(feature_loss(small), 15, init="noise", seed=4, progress=False)
    assert torch.equal(a.image, b.image) and a.losses == b.losses
    assert not torch.equal(a.image, c.image)


def test_history_has_named_terms_and_style_content_tv_work_together(small):
    style = load_asset("coffee", 24)
    net = loss_network(["relu1_2", "relu2_1", "relu2_2"], "random-kaiming")
    loss = PerceptualLoss({"relu2_2": 1.0}, style_layers={"relu1_2": 1.0, "relu2_1": 1.0}, style_weight=50.0,
                          tv_weight=1e-3, network=net)
    loss.set_target(small)
    loss.set_style(style)
    r = reconstruct(loss, 30, init=small, progress=False)  # Gatys: start from the content image
    first, last = r.history[0], r.final
    assert {"total", "feat", "style", "tv", "feat/relu2_2", "style/relu1_2", "style/relu2_1"} <= set(first)
    assert first["total"] == pytest.approx(first["feat"] + first["style"] + first["tv"], rel=1e-5)
    assert first["feat"] == pytest.approx(0, abs=1e-9)  # the content image matches itself
    assert last["style"] < 0.5 * first["style"] and last["total"] < first["total"]


def test_style_only_needs_size(small):
    loss = PerceptualLoss({}, style_layers={"relu1_2": 1.0}, style_weight=1.0,
                          network=loss_network(["relu1_2"], "random-kaiming"))
    loss.set_style(small)
    with pytest.raises(ValueError, match="size="):
        reconstruct(loss, 2, progress=False)
    r = reconstruct(loss, 20, size=(16, 20), progress=False)
    assert r.image.shape == (1, 3, 16, 20) and r.final_loss < r.history[0]["total"]


def test_nan_at_step_zero_stops_with_message(small):
    bad = small.clone()
    bad[..., 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):  # a NaN target is refused before any step
        feature_loss(small).set_target(bad)
    loss = NanAfter(0, layers={"relu2_2": 1.0}, network=loss_network(["relu2_2"], "random-kaiming"))
    loss.set_target(small)
    with pytest.raises(ReconstructionError, match=r"not finite at step 0 of 5 \(.*feat/relu2_2=nan") as ei:
        reconstruct(loss, 5, init="grey", progress=False)
    assert isinstance(ei.value, FloatingPointError)
    assert ei.value.step == 0 and ei.value.history == [] and ei.value.terms["total"] != ei.value.terms["total"]
    assert torch.equal(ei.value.image, init_image("grey", 24))  # nothing good happened: the start image


class NanAfter(PerceptualLoss):
    """A real loss whose value turns NaN from the n-th call on (a failing term mid-run)."""

    def __init__(self, n, **kw):
        super().__init__(**kw)
        self.n, self.calls = n, 0

    def forward(self, pred, target=None, return_terms=False):
        total, terms = super().forward(pred, target, return_terms=True)
        self.calls += 1
        if self.calls > self.n:
            total = total * float("nan")
            terms = {**terms, "feat/relu2_2": terms["feat/relu2_2"] * float("nan"), "total": total.detach()}
        return (total, terms) if return_terms else total


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_nan_midway_keeps_last_good_image(small, optimizer):
    loss = NanAfter(7, layers={"relu2_2": 1.0}, network=loss_network(["relu2_2"], "random-kaiming"))
    loss.set_target(small)
    kept = []
    with pytest.raises(ReconstructionError, match="at step 7 of 30") as ei:
        reconstruct(loss, 30, optimizer=optimizer, init="noise", progress=False,
                    callback=lambda step, terms, img: kept.append(img.clone()))
    err = ei.value
    assert err.step == 7 and len(err.history) == 7 and "nan" in str(err)
    assert torch.isfinite(err.image).all() and err.image.min() >= 0 and err.image.max() <= 1
    assert torch.equal(err.image, kept[-1])


def test_bad_arguments(small):
    loss = feature_loss(small)
    with pytest.raises(ValueError, match=r"init image is \(20, 20\) but the target/size is \(24, 24\)"):
        reconstruct(loss, 2, init=torch.rand(1, 3, 20, 20), progress=False)
    with pytest.raises(ValueError, match=r"must be \(1, 3, H, W\)"):
        reconstruct(loss, 2, init=torch.rand(2, 3, 24, 24), progress=False)
    with pytest.raises(ValueError, match="unknown init 'zeros'"):
        reconstruct(loss, 2, init="zeros", progress=False)
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'"):
        reconstruct(loss, 2, optimizer="sgd", progress=False)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        reconstruct(loss, 0, progress=False)
    with pytest.raises(ValueError, match="NaN or inf"):
        reconstruct(loss, 2, init=torch.full((3, 24, 24), float("nan")), progress=False)


def test_callback_can_stop_early(small):
    r = reconstruct(feature_loss(small), 50, progress=False, callback=lambda step, terms, img: step == 4)
    assert r.steps == 5 and r.stopped == "callback at step 5"


def test_random_networks_are_seeded_and_prefix_consistent():
    a = loss_network(["relu2_2"], "random-kaiming", seed=1)
    b = loss_network(["relu3_3"], "random-kaiming", seed=1)
    d1, d2 = loss_network(["relu2_2"], "random-default", seed=1), loss_network(["relu2_2"], "random-default", seed=1)
    assert torch.equal(a.body[0].weight, b.body[0].weight) and torch.equal(a.body[5].weight, b.body[5].weight)
    assert torch.equal(d1.body[0].weight, d2.body[0].weight)
    # He init keeps the weight variance at 2 / fan_in; PyTorch's default is 1 / (3 fan_in)
    w, wd = b.body[-2].weight, d1.body[-2].weight  # conv3_3, conv2_2
    assert w.var().item() == pytest.approx(2 / (256 * 9), rel=0.05)
    assert wd.var().item() == pytest.approx(1 / (3 * 128 * 9), rel=0.05)


def test_run_spec_caches_and_resumes(tmp_path, small):
    spec = RunSpec("feature", "chelsea", (("relu1_2", 1.0),), size=24, steps=6, weights="random-kaiming")
    first = run_spec(spec, small, cache=tmp_path, progress=False)
    assert not first["cached"] and len(first["history"]) == 6 and first["metrics"]["psnr"] > 0
    assert first["metrics"]["lpips"] is None  # 24 px is below LPIPS' 32 px minimum
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == [f"{spec.key()}.json", f"{spec.key()}.png"]
    again = run_spec(spec, small, cache=tmp_path, progress=False)
    assert again["cached"] and torch.equal(again["image"], first["image"])
    assert json.loads((tmp_path / files[0]).read_text())["history"] == first["history"]
    # a different target image is not served from the cache
    other = run_spec(spec, load_asset("coffee", 24), cache=tmp_path, progress=False)
    assert not other["cached"]
    # a different spec has a different key
    assert RunSpec("feature", "chelsea", (("relu1_2", 1.0),), 24, 7, weights="random-kaiming").key() != spec.key()


def test_run_spec_precision_is_recorded_and_cached_apart(tmp_path, small):
    from perceptlib.precision import bf16_supported

    if not bf16_supported("cpu"):
        pytest.skip("this CPU has no native bf16")
    spec = RunSpec("feature", "chelsea", (("relu1_2", 1.0),), size=24, steps=6, weights="random-kaiming",
                   tv_weight=1e-3)
    fp32 = run_spec(spec, small, cache=tmp_path, progress=False)
    bf16 = run_spec(spec, small, cache=tmp_path, progress=False, precision="bf16")
    assert fp32["precision"] == "fp32" and bf16["precision"] == "bf16"
    assert not bf16["cached"] and bf16["key"] == spec.key() + "-bf16"  # the fp32 result was not served
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{spec.key()}{s}.{e}" for s in ("", "-bf16")
                                                                for e in ("json", "png"))
    assert bf16["history"] != fp32["history"]  # bf16 autocast really changed the arithmetic
    assert bf16["history"][0] == pytest.approx(fp32["history"][0], rel=0.05)
    again = run_spec(spec, small, cache=tmp_path, progress=False, precision="bf16")
    assert again["cached"] and again["history"] == bf16["history"]
    assert {"tv", "feat"} <= set(bf16["final"])


def test_iterations_counted(small):
    """Fixed-step L-BFGS evaluates once per iteration, except the first evaluation of each chunk."""
    loss = feature_loss(small)
    for steps in (40, 45):
        r = reconstruct(loss, steps, init="noise", line_search=None, chunk=20, progress=False)
        assert r.iterations == steps - -(-steps // 20)
    wolfe = reconstruct(loss, 40, init="noise", progress=False)
    assert 0 < wolfe.iterations < wolfe.steps
    assert reconstruct(loss, 7, optimizer="adam", progress=False).iterations == 7


def test_plan_shares_fig3_runs_with_the_questions():
    plan = reconstruction_plan(["a", "b"], ["s"], 32, 5, ["relu2_2", "relu4_3"], ["relu1_2", "relu2_2"],
                               conv_layers=["conv4_3"], distance_layers=["relu4_3"], random_layers=["relu2_2"])
    assert [s.label for s in plan["fig4"]] == ["relu1_2 [noise]", "relu1_2+relu2_2 [noise]"]
    assert plan["conv_vs_relu"][1] in plan["fig3"] and plan["distance"][0] in plan["fig3"]
    assert plan["random"][0] in plan["fig3"] and plan["random"][1].weights == "random-kaiming"
    with pytest.raises(ValueError, match="valid names"):
        RunSpec("feature", "a", (("relu9_9", 1.0),), 32, 5)


def test_square_image_and_balanced_weights():
    from perceptlib.data import demo_image_paths

    x = square_image(demo_image_paths()[0], 32)
    assert x.shape == (1, 3, 32, 32) and torch.equal(x, (x * 255).round() / 255)
    w = balanced_weights(x, ["relu1_2", "relu2_2"], weights="random-kaiming")
    for name, weight in w.items():  # each layer contributes ~1 at the grey start image
        loss = PerceptualLoss({name: weight}, network=loss_network([name], "random-kaiming"))
        assert float(loss(init_image("grey", 32), x)) == pytest.approx(1.0, rel=0.05)


@pytest.mark.weights
def test_real_vgg_relu2_2_inversion_recovers_the_photo(real_weights):
    x = load_asset("chelsea", 48)
    loss = PerceptualLoss({"relu2_2": 1.0}, tv_weight=1e-4)
    loss.set_target(x)
    r = reconstruct(loss, 100, init="grey", progress=False)
    start = psnr(init_image("grey", 48)[0], x[0])
    assert psnr(r.image[0], x[0]) > max(17.0, start + 4)
    assert r.final_loss < 0.05 * r.history[0]["total"]
