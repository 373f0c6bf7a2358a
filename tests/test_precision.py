"""The precision policy: auto/bf16/off, the fp32 fallback on machines without bf16, what stays fp32."""
import dataclasses
import json
import math
import warnings

import pytest
import torch

from perceptlib import precision as P
from perceptlib.config import PAPER_SR, PAPER_STYLE, config_from_dict, for_mode
from perceptlib.losses import PerceptualLoss, gram_matrix
from perceptlib.nets import SRNet, TransformerNet
from perceptlib.sr import build_sr_loss
from perceptlib.style import stylize
from perceptlib.train import History, load_checkpoint, train

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(params=[False, True], ids=["no-bf16-cpu", "bf16-cpu"])
def cpu_bf16(request, monkeypatch):
    """Pretend the CPU has (or lacks) native bf16."""
    monkeypatch.setattr(P, "_cpu_bf16", lambda: request.param)
    return request.param


def test_resolve(cpu_bf16):
    assert P.resolve_precision("off", "cpu") == "fp32"
    assert P.resolve_precision("auto", "cpu") == ("bf16" if cpu_bf16 else "fp32")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert P.resolve_precision("bf16", "cpu") == "bf16"
    assert bool(w) == (not cpu_bf16) and (not w or "much slower" in str(w[0].message))
    with pytest.raises(ValueError, match="unknown precision"):
        P.resolve_precision("fp16", "cpu")
    with pytest.raises(ValueError, match="unknown precision"):
        StyleConfig = type(PAPER_STYLE)
        StyleConfig(precision="half")


def test_autocast_context(cpu_bf16):
    with P.autocast("auto", "cpu"):
        assert torch.is_autocast_enabled("cpu") == cpu_bf16
    with P.autocast("off", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the no-bf16 warning, tested above
        with P.autocast("bf16", "cpu"):
            assert torch.is_autocast_enabled("cpu")


class PixelSet(torch.utils.data.Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.hr = torch.rand(8, 3, 12, 12, generator=g)

    def __len__(self):
        return len(self.hr)

    def __getitem__(self, i):
        return torch.nn.functional.avg_pool2d(self.hr[i][None], 2)[0], self.hr[i]


def test_train_takes_the_path_the_machine_allows(tmp_path, cpu_bf16):
    cfg = dataclasses.replace(for_mode(PAPER_SR, "quick"), scale=2, patch_size=12, batch_size=2, steps=3,
                              checkpoint_every=3, log_every=1, loss="pixel", channels=4, blocks=1, device="cpu")
    assert cfg.precision == "auto"
    inner, seen = build_sr_loss(cfg), []

    def loss_fn(model, batch):
        seen.append(torch.is_autocast_enabled("cpu"))
        return inner(model, batch)

    torch.manual_seed(0)
    model = SRNet(scale=2, channels=4, blocks=1)
    hist = train(model, loss_fn, PixelSet(), cfg, tmp_path, progress=False)
    assert seen == [cpu_bf16] * 3
    rec = hist.sessions[-1]
    assert rec["precision"] == ("bf16" if cpu_bf16 else "fp32") and rec["bf16_supported"] == cpu_bf16
    assert (rec["start_step"], rec["end_step"], rec["device"]) == (0, 3, "cpu")
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights and Adam stay fp32
    opt_state = load_checkpoint(tmp_path / "checkpoint.pt")["optimizer"]["state"]
    assert all(v["exp_avg"].dtype == torch.float32 for v in opt_state.values())
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["precision"] == "auto" and saved["_run"]["precision"] == rec["precision"]
    assert config_from_dict(saved) == cfg  # the _run record is ignored when rebuilding
    assert History.load(tmp_path / "history.json").sessions == hist.sessions
    # resuming on a machine that resolves differently (or with another precision) is allowed
    more = train(SRNet(scale=2, channels=4, blocks=1), loss_fn,
                 PixelSet(), dataclasses.replace(cfg, steps=4, precision="off"), tmp_path, progress=False)
    assert [r["precision"] for r in more.sessions] == [rec["precision"], "fp32"]
    assert seen[-1] is False


def test_old_amp_configs_still_load():
    d = dataclasses.asdict(for_mode(PAPER_SR, "cpu"))
    d.pop("precision")
    assert config_from_dict({**d, "amp": True}).precision == "auto"
    assert config_from_dict({**d, "amp": False}).precision == "off"


def test_gram_and_head_stay_fp32_under_autocast():
    g = torch.Generator().manual_seed(0)
    f = torch.rand(2, 16, 12, 12, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gram = gram_matrix(f.bfloat16())
        out = TransformerNet(channels=4, norm="instance")(torch.rand(1, 3, 20, 20, generator=g))
    assert gram.dtype == torch.float32 and out.dtype == torch.float32
    # the product itself is fp32: only the bf16 rounding of the features separates it from the fp32 Gram
    torch.testing.assert_close(gram, gram_matrix(f.bfloat16().float()), rtol=1e-5, atol=1e-7)


def test_style_loss_terms_fp32_under_autocast():
    loss = PerceptualLoss(layers={"relu2_2": 1.0}, style_layers={"relu1_2": 1.0, "relu2_2": 1.0}, style_weight=1.0,
                          tv_weight=1e-3, weights=None)
    g = torch.Generator().manual_seed(1)
    loss.set_style(torch.rand(1, 3, 32, 32, generator=g))
    x, y = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    ref, ref_terms = loss(x, y, return_terms=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low, terms = loss(x, y, return_terms=True)
    assert low.dtype == torch.float32 and all(v.dtype == torch.float32 for v in terms.values())
    assert math.isclose(float(low), float(ref), rel_tol=0.03)


@pytest.mark.skipif(not P.bf16_supported("cpu"), reason="this CPU has no native bf16")
def test_stylize_bf16_matches_fp32():
    torch.manual_seed(0)
    net = TransformerNet(channels=8, norm="instance").eval()
    img = torch.rand(3, 64, 72)
    a, b = stylize(net, img, precision="bf16"), stylize(net, img, precision="off")
    psnr = 10 * math.log10(1 / float((a - b).square().mean()))
    assert a.dtype == torch.float32 and psnr > 35


def test_cli_stylize_reports_precision(tmp_path, capsys, cpu_bf16):
    from perceptlib.cli import main
    from perceptlib.images import save_image
    from perceptlib.style import build_style_model

    cfg = dataclasses.replace(for_mode(PAPER_STYLE, "quick"), channels=4, device="cpu")
    model = build_style_model(cfg)
    from perceptlib.train import MODEL_FILE, _FORMAT, _VERSION, _model_record

    torch.save({"format": _FORMAT, "version": _VERSION, "step": 0, "config": dataclasses.asdict(cfg),
                "model_class": _model_record(model), "model": model.state_dict()}, tmp_path / MODEL_FILE)
    save_image(torch.rand(3, 24, 24), tmp_path / "in.png")
    for flag, used in (("auto", "bf16" if cpu_bf16 else "fp32"), ("off", "fp32")):
        assert main(["stylize", "--model", str(tmp_path), "--precision", flag, "--device", "cpu",
                     str(tmp_path / "in.png"), str(tmp_path / "out.png")]) == 0
        assert f"cpu, {used})" in capsys.readouterr().out
