"""The shared training loop (exact resume, NaN stop, checkpoints), the SR glue and the train-sr/upscale CLI."""
import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from perceptlib.cli import main
from perceptlib.config import PAPER_SR, StyleConfig, for_mode
from perceptlib.nets import SRNet, TransformerNet
from perceptlib.sr import ImageCache, build_sr_data, build_sr_loss, histogram_match, load_sr, train_sr, upscale
from perceptlib.train import (
    CheckpointError, History, IndexSampler, TrainingDivergedError, load_checkpoint, load_model, train,
)

from conftest import load_asset


pytestmark = pytest.mark.usefixtures("one_thread")

BASE = dataclasses.replace(
    for_mode(PAPER_SR, "quick"), scale=2, patch_size=12, batch_size=2, steps=8, checkpoint_every=3, log_every=2,
    loss="pixel", channels=4, blocks=1, device="cpu", precision="off")


class PairSet(torch.utils.data.Dataset):
    """16 fixed (lr, hr) pairs: smooth random 12x12 HR images and their 2x2-mean LR."""

    def __init__(self, n=16):
        g = torch.Generator().manual_seed(0)
        hr = torch.nn.functional.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=12, mode="bilinear")
        self.hr, self.lr = hr, torch.nn.functional.avg_pool2d(hr, 2)

    def __len__(self):
        return len(self.hr)

    def __getitem__(self, i):
        return self.lr[i], self.hr[i]


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return SRNet(scale=2, channels=4, blocks=1)


class Loss:
    """The pixel loss, with optional faults: raise (a "kill") or return NaN at a given call."""

    def __init__(self, cfg, kill_at=None, nan_at=None, on_nan=None):
        self.inner, self.calls = build_sr_loss(cfg), 0
        self.kill_at, self.nan_at, self.on_nan = kill_at, nan_at, on_nan

    def __call__(self, model, batch):
        self.calls += 1
        if self.calls == self.kill_at:
            raise KeyboardInterrupt("killed")
        assert not torch.is_autocast_enabled("cpu")  # precision="off": no bf16 autocast
        assert batch[0].is_contiguous()  # and no channels_last
        total, terms = self.inner(model, batch)
        if self.calls == self.nan_at:
            if self.on_nan:
                self.on_nan()
            total = total * float("nan")
            terms = {**terms, "pixel": total.detach()}
        return total, terms


def run(out, steps, model_seed=0, **faults):
    cfg = dataclasses.replace(BASE, steps=steps)
    model = tiny_model(model_seed)
    return model, train(model, Loss(cfg, **faults), PairSet(), cfg, out, progress=False)


def assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_loss_decreases_on_a_tiny_problem(tmp_path):
    cfg = dataclasses.replace(BASE, steps=24, lr=1e-2, log_every=1, checkpoint_every=100)
    hist = train(tiny_model(), build_sr_loss(cfg), PairSet(), cfg, tmp_path, progress=False)
    total = hist["total"]
    assert len(total) == 24 and hist.step == list(range(1, 25))
    assert np.mean(total[-5:]) < 0.6 * np.mean(total[:5])
    assert hist["pixel"] == total and all(g > 0 for g in hist["grad_norm"])
    assert (tmp_path / "checkpoint.pt").is_file()  # written at the end even with checkpoint_every > steps


def test_resume_after_kill_is_bit_identical(tmp_path):
    ref_model, ref_hist = run(tmp_path / "ref", 8)
    # killed during step 6: the last checkpoint is at step 3 (with a half-filled log interval)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed", 8, kill_at=6)
    assert load_checkpoint(tmp_path / "killed" / "checkpoint.pt")["step"] == 3
    model, hist = run(tmp_path / "killed", 8, model_seed=123)  # a different init: the checkpoint must win
    assert_same_state(model, ref_model)
    assert hist == ref_hist and hist.step == [2, 4, 6, 8]
    assert hist.steps_run == 5
    a = load_checkpoint(tmp_path / "ref" / "checkpoint.pt")
    b = load_checkpoint(tmp_path / "killed" / "checkpoint.pt")
    for (ka, va), (kb, vb) in zip(a["optimizer"]["state"].items(), b["optimizer"]["state"].items()):
        assert all(torch.equal(va[n], vb[n]) for n in va)
    assert json.loads((tmp_path / "killed" / "history.json").read_text())["terms"] == ref_hist.terms


def test_stop_then_continue_with_more_steps(tmp_path):
    ref_model, ref_hist = run(tmp_path / "ref", 8)
    _, first = run(tmp_path / "run", 3)  # stops inside a log interval (log_every=2)
    assert first.step == [2, 3]
    model, hist = run(tmp_path / "run", 8, model_seed=5)
    assert_same_state(model, ref_model)
    assert hist == ref_hist
    # nothing left to do: returns the stored history without training
    model, again = run(tmp_path / "run", 8, model_seed=5)
    assert again == ref_hist and again.steps_run == 0
    assert_same_state(model, ref_model)
    with pytest.warns(UserWarning, match="past cfg.steps=6"):
        run(tmp_path / "run", 6)


def test_workers_give_the_same_run(tmp_path):
    ref_model, ref_hist = run(tmp_path / "ref", 6)
    cfg = dataclasses.replace(BASE, steps=6)
    model = tiny_model()
    hist = train(model, Loss(cfg), PairSet(), cfg, tmp_path / "w", progress=False, workers=2)
    assert_same_state(model, ref_model)
    assert hist == ref_hist


def test_time_limit_stops_cleanly_and_resumes_exactly(tmp_path):
    ref_model, ref_hist = run(tmp_path / "ref", 8)
    cfg = dataclasses.replace(BASE, steps=8)

    class SlowLoss(Loss):  # each step takes > 0.1 s: a 0.25 s limit stops after a few steps
        def __call__(self, model, batch):
            import time
            time.sleep(0.12)
            return super().__call__(model, batch)

    hist = train(tiny_model(), SlowLoss(cfg), PairSet(), cfg, tmp_path / "run", progress=False, max_seconds=0.25)
    assert hist.stopped and "time limit" in hist.stopped
    step = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"]
    assert 1 <= step < 8 and hist.steps_run == step and hist.step[-1] == step
    assert json.loads((tmp_path / "run" / "history.json").read_text())["last_step"] == step
    model, rest = run(tmp_path / "run", 8, model_seed=9)
    assert_same_state(model, ref_model)
    assert rest == ref_hist and rest.stopped is None


def test_sigterm_stops_with_a_checkpoint_and_resumes_exactly(tmp_path):
    """A SIGTERM (kill, timeout) mid-run: the step finishes, a checkpoint is written (no work since the last
    periodic checkpoint is lost), the handler is restored, and resuming gives the uninterrupted run."""
    import os
    import signal

    ref_model, ref_hist = run(tmp_path / "ref", 8)
    cfg = dataclasses.replace(BASE, steps=8)  # periodic checkpoints at 3 and 6

    class TermAt5(Loss):
        def __call__(self, model, batch):
            if self.calls == 4:  # during step 5
                os.kill(os.getpid(), signal.SIGTERM)
            return super().__call__(model, batch)

    before = signal.getsignal(signal.SIGTERM)
    hist = train(tiny_model(), TermAt5(cfg), PairSet(), cfg, tmp_path / "run", progress=False)
    assert signal.getsignal(signal.SIGTERM) is before
    assert hist.stopped == "SIGTERM received: stopped at step 5"
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 5 and hist.steps_run == 5
    model, rest = run(tmp_path / "run", 8, model_seed=9)
    assert_same_state(model, ref_model)
    assert rest == ref_hist and rest.stopped is None


def test_resume_refuses_a_different_config(tmp_path):
    run(tmp_path, 3)
    cfg = dataclasses.replace(BASE, lr=5e-3)
    with pytest.raises(ValueError, match=r"config differs in \['lr'\]"):
        train(tiny_model(), build_sr_loss(cfg), PairSet(), cfg, tmp_path, progress=False)
    # resume=False starts afresh
    hist = train(tiny_model(), build_sr_loss(cfg), PairSet(), cfg, tmp_path, resume=False, progress=False)
    assert hist.step == [2, 4, 6, 8] and load_checkpoint(tmp_path / "checkpoint.pt")["config"]["lr"] == 5e-3


def test_nan_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    snapshot = {}

    def grab():
        snapshot["ckpt"] = (tmp_path / "checkpoint.pt").read_bytes()
        snapshot["model"] = (tmp_path / "model.pt").read_bytes()

    with pytest.raises(TrainingDivergedError, match=r"non-finite loss at step 5: .*pixel=nan.*left untouched"):
        run(tmp_path, 8, nan_at=5, on_nan=grab)
    assert (tmp_path / "checkpoint.pt").read_bytes() == snapshot["ckpt"]
    assert (tmp_path / "model.pt").read_bytes() == snapshot["model"]
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 3
    assert not list(tmp_path.glob(".*.tmp"))


def test_non_finite_gradient_stops(tmp_path):
    cfg = dataclasses.replace(BASE, steps=4)
    model = tiny_model()
    model.tail.weight.register_hook(lambda g: g * float("inf"))
    with pytest.raises(TrainingDivergedError, match=r"non-finite gradient at step 1 .*last good checkpoint: none"):
        train(model, build_sr_loss(cfg), PairSet(), cfg, tmp_path, progress=False)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_a_collapsed_network_stops_and_keeps_the_last_live_checkpoint(tmp_path):
    """A net whose gradient goes to zero (here: the loss multiplied by 0 from call 21 on) stops with a clear
    error after DEAD_STEPS such steps; no checkpoint of it is written meanwhile."""
    from perceptlib.train import DEAD_STEPS

    cfg = dataclasses.replace(BASE, steps=400, checkpoint_every=10, log_every=5)
    inner = build_sr_loss(cfg)
    calls = {"n": 0}

    def dies_at_21(model, batch):
        calls["n"] += 1
        total, terms = inner(model, batch)
        return (total * 0.0 if calls["n"] > 20 else total), terms

    with pytest.raises(TrainingDivergedError, match=rf"zero gradient on {DEAD_STEPS} of the 100 steps up to step "
                                                    rf"{20 + DEAD_STEPS}: the network has stopped learning.*untouched"):
        train(tiny_model(), dies_at_21, PairSet(), cfg, tmp_path, progress=False)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 20  # 30 ... 100 were not written
    # a healthy run with the same settings is not stopped
    hist = train(tiny_model(), build_sr_loss(dataclasses.replace(cfg, steps=120)), PairSet(),
                 dataclasses.replace(cfg, steps=120), tmp_path / "ok", progress=False)
    assert hist.step[-1] == 120 and load_checkpoint(tmp_path / "ok" / "checkpoint.pt")["step"] == 120


@pytest.mark.slow
def test_compile_trains_like_eager_and_saves_plain_checkpoints(tmp_path):
    """compile=True: the same losses up to rounding, checkpoints with the module's own keys, model.pt loads
    without compilation, and the run resumes with compile off (and eager runs resume with it on)."""
    cfg = dataclasses.replace(BASE, steps=6, log_every=1)
    ref_model = tiny_model()
    ref = train(ref_model, build_sr_loss(cfg), PairSet(), cfg, tmp_path / "eager", progress=False)
    on = dataclasses.replace(cfg, compile=True)
    model = tiny_model()
    hist = train(model, build_sr_loss(on), PairSet(), on, tmp_path / "compiled", progress=False)
    assert hist.step == ref.step and hist.sessions[-1]["compile"] and not ref.sessions[-1]["compile"]
    np.testing.assert_allclose(hist["total"], ref["total"], rtol=1e-4)
    assert hist["total"][-1] < hist["total"][0]
    a, b = (load_checkpoint(tmp_path / d / "checkpoint.pt") for d in ("eager", "compiled"))
    assert list(b["model"]) == list(a["model"]) == list(tiny_model().state_dict())
    assert b["config"]["compile"] is True and a["config"]["compile"] is False
    for k, v in b["model"].items():  # (a conv bias before a batch norm has no gradient but rounding noise,
        if k.endswith(".weight"):     # which Adam turns into steps of size lr: compared through the output)
            torch.testing.assert_close(v, a["model"][k], rtol=1e-3, atol=1e-4)
    net = load_model(tmp_path / "compiled" / "model.pt", expect="SRNet")
    assert_same_state(net, model)
    x = PairSet().lr[:2]
    out = upscale(net, x, precision="off")
    assert torch.equal(out, upscale(model, x, precision="off"))
    torch.testing.assert_close(out, upscale(load_model(tmp_path / "eager"), x, precision="off"), rtol=0, atol=2e-3)
    # stopped and resumed with compile on: bit for bit (the same kernels)
    train(tiny_model(), build_sr_loss(on), PairSet(), dataclasses.replace(on, steps=3), tmp_path / "again",
          progress=False)
    again = tiny_model(5)
    assert train(again, build_sr_loss(on), PairSet(), on, tmp_path / "again", progress=False) == hist
    assert_same_state(again, model)
    # switched off (and on) when resuming
    more = train(tiny_model(), build_sr_loss(cfg), PairSet(), dataclasses.replace(cfg, steps=8),
                 tmp_path / "compiled", progress=False)
    assert more.step[-1] == 8 and [s["compile"] for s in more.sessions] == [True, False]
    more = train(tiny_model(), build_sr_loss(on), PairSet(), dataclasses.replace(on, steps=8),
                 tmp_path / "eager", progress=False)
    assert more.step[-1] == 8 and [s["compile"] for s in more.sessions] == [False, True]


def test_compile_falls_back_to_eager_when_the_loss_has_no_gradient(tmp_path, monkeypatch):
    """A compiled loss without a gradient (the inductor aliasing bug the packing works around) is caught: a
    warning, then the eager loss for the rest of the run, with the eager run's results."""
    def broken_compile(fn, **kwargs):
        return lambda model, batch: (lambda out: (out[0].detach(), *out[1:]))(fn(model, batch))

    cfg = dataclasses.replace(BASE, steps=4)
    ref_model, ref = run(tmp_path / "eager", 4)
    monkeypatch.setattr(torch, "compile", broken_compile)
    model = tiny_model()
    on = dataclasses.replace(cfg, compile=True)
    with pytest.warns(UserWarning, match="torch.compile returned a loss without gradient"):
        hist = train(model, build_sr_loss(on), PairSet(), on, tmp_path / "compiled", progress=False)
    assert hist == ref
    assert_same_state(model, ref_model)


def test_index_sampler_epochs_are_permutations():
    s = IndexSampler(10, 4, seed=3)
    first = [i for b in range(5) for i in s.indices(b)]  # 20 samples = two epochs
    assert sorted(first[:10]) == list(range(10)) and sorted(first[10:]) == list(range(10))
    assert first[:10] != first[10:]
    assert IndexSampler(10, 4, seed=3).indices(3) == s.indices(3)  # pure function of (seed, batch)
    assert IndexSampler(10, 4, seed=4).indices(0) != s.indices(0)
    with pytest.raises(ValueError):
        IndexSampler(0, 4, 0)


def test_style_network_uses_the_same_loop(tmp_path):
    cfg = dataclasses.replace(for_mode(StyleConfig(), "quick"), image_size=8, steps=2, batch_size=2,
                              checkpoint_every=1, channels=2, device="cpu")
    images = torch.rand(4, 3, 8, 8)

    def loss_fn(model, batch):
        out = model(batch)
        total = (out - batch).square().mean()
        return total, {"content": total.detach()}

    torch.manual_seed(0)
    hist = train(TransformerNet(channels=2), loss_fn, images, cfg, tmp_path, progress=False)
    assert hist.step == [1, 2] and set(hist.terms) == {"content", "total", "grad_norm"}
    net = load_model(tmp_path, expect="TransformerNet")
    assert net.train_step == 2 and net.train_config["_type"] == "StyleConfig" and not net.training
    with pytest.raises(CheckpointError, match="holds a TransformerNet network, expected SRNet"):
        load_sr(tmp_path / "model.pt")


def test_bad_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_sr(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="no model.pt or checkpoint.pt in folder"):
        load_sr(tmp_path)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_sr(tmp_path / "junk.pt")
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a perceptlib training checkpoint"):
        load_sr(tmp_path / "other.pt")
    run(tmp_path / "ok", 1)
    ckpt = torch.load(tmp_path / "ok" / "model.pt", weights_only=True)
    ckpt["model"]["tail.weight"] = torch.zeros(1)
    torch.save(ckpt, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="cannot rebuild the SRNet"):
        load_sr(tmp_path / "broken.pt")


def test_histogram_match_synthetic():
    torch.manual_seed(0)
    lr = torch.rand(3, 8, 8)
    hr_like = torch.nn.functional.interpolate(lr[None], scale_factor=4, mode="nearest")[0]
    # a monotone distortion of each channel (different per channel) is undone exactly
    distorted = torch.stack([hr_like[0] * 0.5 + 0.1, hr_like[1].pow(2), 1 - (1 - hr_like[2]) * 0.3])
    torch.testing.assert_close(histogram_match(distorted, lr), hr_like)
    # output values come from lr's distribution; order and ties are kept
    sr = torch.rand(3, 32, 32).mul(8).round() / 8
    out = histogram_match(sr, lr)
    for c in range(3):
        s, o = sr[c].flatten(), out[c].flatten()
        order = torch.argsort(s)
        assert torch.all(torch.diff(o[order]) >= 0)
        same = s[:, None] == s[None, :]
        assert torch.all((o[:, None] == o[None, :])[same])
        assert lr[c].min() <= o.min() and o.max() <= lr[c].max()
    # batched, and matching an image to itself is the identity
    torch.testing.assert_close(histogram_match(torch.stack([lr, lr]), torch.stack([lr, lr])), torch.stack([lr, lr]))
    with pytest.raises(ValueError, match="batch sizes differ"):
        histogram_match(torch.rand(2, 3, 4, 4), torch.rand(1, 3, 2, 2))


def test_upscale_shapes_and_hist_match():
    model = SRNet(scale=4, channels=4, blocks=1)
    lr = torch.rand(3, 6, 7)
    sr = upscale(model, lr)
    assert sr.shape == (3, 24, 28) and model.training  # mode restored
    matched = upscale(model, lr, hist_match=True)
    torch.testing.assert_close(torch.sort(matched[0].flatten()).values[::16].mean(), lr[0].mean(), atol=0.05,
                               rtol=0)
    assert upscale(model, lr[None]).shape == (1, 3, 24, 28)
    with pytest.raises(ValueError, match=r"\(3, h, w\)"):
        upscale(model, torch.rand(6, 7))


@pytest.fixture
def photo_dir(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    for name in ("chelsea", "coffee"):
        arr = (load_asset(name, 64)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(arr).save(d / f"{name}.png")
    return d


def test_image_cache_gives_identical_patches(photo_dir):
    cfg = dataclasses.replace(for_mode(PAPER_SR, "quick"), patch_size=32, train_set=str(photo_dir))
    cached, plain = build_sr_data(cfg), build_sr_data(cfg, cache=False)
    assert isinstance(cached.items, ImageCache) and len(cached) == 2 * cfg.patches_per_image
    for i in (0, 1, 7, 1999):
        for a, b in zip(cached[i], plain[i]):
            assert torch.equal(a, b)


def test_train_sr_feat_with_real_vgg(tmp_path, photo_dir, real_weights):
    cfg = dataclasses.replace(for_mode(PAPER_SR, "quick"), patch_size=32, steps=2, checkpoint_every=1,
                              vgg_weights="torchvision", pixel_weight=0.5, channels=8, blocks=1,
                              train_set=str(photo_dir), device="cpu")
    hist = train_sr(cfg, tmp_path, loss="feat", progress=False)
    assert {"feat", "feat/relu2_2", "pixel", "total"} <= set(hist.terms)
    np.testing.assert_allclose(np.add(hist["feat"], hist["pixel"]), hist["total"], rtol=1e-5)
    model = load_sr(tmp_path)
    assert model.scale == 4 and model.train_config["loss"] == "feat" and model.train_step == 2
    assert History.load(tmp_path / "history.json") == hist


def test_cli_train_upscale_eval(tmp_path, photo_dir, capsys):
    out = tmp_path / "run"
    args = ["train-sr", "--mode", "quick", "--loss", "pixel", "--steps", "2", "--train-set", str(photo_dir),
            "--out", str(out), "--no-progress", "--device", "cpu", "--channels", "8"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "loss l_pixel, mode quick" in text and "patch_size: paper 288, ours 48" in text
    assert "step 2/2" in text and "steps/s this time" in text
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["steps"] == 2 and cfg["channels"] == 8 and cfg["loss"] == "pixel"
    # upscale an image file
    lr_path, sr_path = tmp_path / "lr.png", tmp_path / "sr.png"
    Image.new("RGB", (10, 6), (200, 30, 90)).save(lr_path)
    assert main(["upscale", "--model", str(out / "model.pt"), str(lr_path), str(sr_path), "--device", "cpu"]) == 0
    assert Image.open(sr_path).size == (40, 24)
    assert main(["upscale", "--model", str(out), str(lr_path), str(tmp_path / "m.png"), "--hist-match"]) == 0
    # sr-eval with the model
    js = tmp_path / "eval.json"
    assert main(["sr-eval", "--model", str(out), "--hr-dir", str(photo_dir), "--no-lpips", "--json", str(js),
                 "--device", "cpu"]) == 0
    res = json.loads(js.read_text())
    assert res["meta"]["method"] == "model" and res["meta"]["scale"] == 4
    assert res["meta"]["model"]["loss"] == "pixel" and res["meta"]["model"]["step"] == 2
    assert len(res["images"]) == 2 and all(np.isfinite(r["psnr"]) for r in res["images"])
    capsys.readouterr()
    assert main(["sr-eval", "--model", str(out), "--scale", "8", "--hr-dir", str(photo_dir), "--no-lpips"]) == 1
    assert "upscales x4" in capsys.readouterr().err
    assert main(["upscale", "--model", str(tmp_path / "nope.pt"), str(lr_path), str(sr_path)]) == 1
    assert "checkpoint not found" in capsys.readouterr().err
    # resuming with a changed architecture is refused with a one-line error
    assert main(args[:-2] + ["--channels", "16"]) == 1
    assert "config differs in ['channels']" in capsys.readouterr().err
    shutil.rmtree(out)


def test_learning_rate_drops_apply_from_their_step_and_may_be_added_ahead_on_resume(tmp_path):
    from perceptlib.config import parse_lr_drops
    from perceptlib.train import learning_rate

    cfg = dataclasses.replace(BASE, lr=1e-2, lr_drops="4=1e-3,6=1e-4")
    assert cfg.lr_drops == ((4, 1e-3), (6, 1e-4))
    assert [learning_rate(cfg, s) for s in (0, 3, 4, 5, 6, 9)] == [1e-2, 1e-2, 1e-3, 1e-3, 1e-4, 1e-4]
    assert learning_rate({"lr": 0.5}, 10) == 0.5  # a config of older perceptlib: constant
    for bad in ("4=0", "-1=1e-3", "6=1e-3,4=1e-4", "4", "x=1"):
        with pytest.raises(ValueError):
            parse_lr_drops(bad)

    def go(out, steps, drops):
        c = dataclasses.replace(BASE, lr=1e-2, steps=steps, lr_drops=drops)
        model = tiny_model()
        train(model, build_sr_loss(c), PairSet(), c, out, progress=False)
        return model

    const = go(tmp_path / "const", 8, ())
    ref = go(tmp_path / "ref", 8, "4=1e-9")
    # a near-zero rate from step 4 on: the network stays where it was at step 4 (and differs from the constant run)
    at4 = go(tmp_path / "at4", 4, ())
    params = lambda m: dict(m.named_parameters())  # noqa: E731 (batch-norm statistics move without Adam)
    for k, v in params(ref).items():
        assert torch.allclose(v, params(at4)[k], atol=1e-6), k
    assert any(not torch.allclose(v, params(const)[k], atol=1e-4) for k, v in params(ref).items())
    # resuming a constant-rate run at step 4 with a drop at step 4 gives the run that had the drop from the start
    assert_same_state(go(tmp_path / "at4", 8, "4=1e-9"), ref)
    # but a drop before the checkpoint's step changes updates already made
    with pytest.raises(ValueError, match=r"config differs in \['lr_drops'\]"):
        go(tmp_path / "const", 12, "2=1e-3")


def test_cli_parses_learning_rate_drops(tmp_path, photo_dir, capsys):
    out = tmp_path / "sr"
    assert main(["train-sr", "--mode", "quick", "--steps", "2", "--scale", "2", "--patch-size", "16", "--loss",
                 "pixel", "--train-set", str(photo_dir), "--lr-drops", "1=1e-4", "--no-progress",
                 "--out", str(out)]) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["lr_drops"] == [[1, 1e-4]]
    assert "lr_drops: paper (), ours ((1, 0.0001),)" in capsys.readouterr().out


def test_fork_changes_only_the_config_and_continues_from_the_fork_step(tmp_path, capsys):
    from perceptlib.train import FORK_FILE, fork_run

    _, src_hist = run(tmp_path / "src", 4)
    before = (tmp_path / "src" / "checkpoint.pt").read_bytes()
    rec = fork_run(tmp_path / "src", tmp_path / "tv", {"tv_weight": 0.5})
    assert (tmp_path / "src" / "checkpoint.pt").read_bytes() == before  # the source is only read
    assert rec == json.loads((tmp_path / "tv" / FORK_FILE).read_text()) == {"from": str(tmp_path / "src"), "step": 4, "changes": {"tv_weight": 0.5},
                   "before": {"tv_weight": BASE.tv_weight}}
    assert json.loads((tmp_path / "tv" / "config.json").read_text())["tv_weight"] == 0.5
    # the old config is refused in the fork; the new one continues from step 4 with the old history in front
    cfg0, cfg1 = dataclasses.replace(BASE, steps=8), dataclasses.replace(BASE, steps=8, tv_weight=0.5)
    with pytest.raises(ValueError, match=r"config differs in \['tv_weight'\]"):
        train(tiny_model(), Loss(cfg0), PairSet(), cfg0, tmp_path / "tv", progress=False)
    m_tv = tiny_model(1)
    hist = train(m_tv, Loss(cfg1), PairSet(), cfg1, tmp_path / "tv", progress=False)
    assert hist.step == [2, 4, 6, 8] and hist["pixel"][:2] == src_hist["pixel"]
    assert (hist.sessions[-1]["start_step"], hist.sessions[-1]["end_step"]) == (4, 8)
    # forked there and back: the continuation is bit for bit the source's own
    fork_run(tmp_path / "src", tmp_path / "a", {"tv_weight": 0.5})
    fork_run(tmp_path / "a", tmp_path / "back", {"tv_weight": BASE.tv_weight})
    m_back, m_src = tiny_model(2), tiny_model(3)
    back = train(m_back, Loss(cfg0), PairSet(), cfg0, tmp_path / "back", progress=False)
    ref = train(m_src, Loss(cfg0), PairSet(), cfg0, tmp_path / "src", progress=False)
    assert_same_state(m_back, m_src)
    assert back.terms == ref.terms
    assert any(not torch.equal(a, b) for a, b in zip(m_tv.state_dict().values(), m_src.state_dict().values()))
    # refused: unknown fields, unchanged values, a folder with a checkpoint, a source without one
    with pytest.raises(ValueError, match="no config field"):
        fork_run(tmp_path / "src", tmp_path / "x", {"tv_wieght": 1.0})
    with pytest.raises(ValueError, match=r"no config field\(s\) \['_type'\]"):
        fork_run(tmp_path / "src", tmp_path / "x", {"_type": "StyleConfig"})
    with pytest.raises(ValueError, match="already"):
        fork_run(tmp_path / "src", tmp_path / "x", {"tv_weight": BASE.tv_weight})
    with pytest.raises(ValueError, match="holds a checkpoint"):
        fork_run(tmp_path / "src", tmp_path / "tv", {"tv_weight": 0.25})
    with pytest.raises(CheckpointError, match="not found"):
        fork_run(tmp_path / "nothing", tmp_path / "y", {"tv_weight": 0.25})
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    # the command line: JSON values, a one-line error for a bad field
    assert main(["fork", str(tmp_path / "src"), str(tmp_path / "cli"), "--set", "tv_weight=1e-3",
                 "--set", "lr=0.002"]) == 0
    out = capsys.readouterr().out
    assert "at step 8" in out and "--tv-weight 0.001 --lr 0.002" in out  # src went on to 8 above
    assert json.loads((tmp_path / "cli" / FORK_FILE).read_text())["changes"] == {"tv_weight": 1e-3, "lr": 0.002}
    assert main(["fork", str(tmp_path / "src"), str(tmp_path / "z"), "--set", "nope=1"]) == 1
    assert "no config field(s) ['nope']" in capsys.readouterr().err
