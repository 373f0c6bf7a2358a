"""perceptlib.deploy: colour preservation, tiled inference and ONNX export / onnxruntime (the file
formats and the CLI over folders and videos: test_deploy_media.py)."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from deploy_cases import tiny_sr, tiny_style, write_checkpoint
from PIL import Image

from perceptlib.deploy import preserve_color, rgb_to_ycbcr, run_tiled, tile_spans, ycbcr_to_rgb
from perceptlib.nets import SRNet, TransformerNet

ROOT = Path(__file__).resolve().parents[1]
STARRY = ROOT / "results" / "style_starry_night_cpu_instance_lr5e-4"
SR_X4 = ROOT / "results" / "h100" / "sr_x4_feat"


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


# ---------------------------------------------------------------- colour


def test_ycbcr_is_pil_full_range_bt601():
    rgb = torch.randint(0, 256, (3, 16, 24), generator=torch.Generator().manual_seed(0)).to(torch.uint8)
    pil = np.asarray(Image.fromarray(rgb.permute(1, 2, 0).numpy(), "RGB").convert("YCbCr"), dtype=np.float64)
    ours = rgb_to_ycbcr(rgb.double() / 255).permute(1, 2, 0).numpy() * 255
    assert np.abs(ours - pil).max() <= 1.0  # PIL works in 8-bit fixed point
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    assert torch.allclose(ycbcr_to_rgb(rgb_to_ycbcr(x)), x, atol=1e-6)


def test_preserve_color_keeps_stylised_luma_and_photo_chroma():
    g = torch.Generator().manual_seed(1)
    # colours well inside the RGB cube: every (luma, chroma) pair below is a colour
    photo = 0.35 + 0.3 * torch.rand(3, 20, 30, generator=g)
    stylised = 0.35 + 0.3 * torch.rand(3, 20, 30, generator=g)
    out = preserve_color(stylised, photo)
    assert out.shape == photo.shape and out.dtype == torch.float32
    yo, ys, yp = rgb_to_ycbcr(out), rgb_to_ycbcr(stylised), rgb_to_ycbcr(photo)
    assert (yo[0] - ys[0]).abs().max() < 1e-5
    assert (yo[1:] - yp[1:]).abs().max() < 1e-5
    # by hand: R = Y + 1.402 (Cr - 0.5) with Y of the stylised image and Cr of the photo
    y = 0.299 * stylised[0] + 0.587 * stylised[1] + 0.114 * stylised[2]
    cr = 0.5 * photo[0] - 0.418687589 * photo[1] - 0.081312411 * photo[2]
    assert torch.allclose(out[0], y + 1.402 * cr, atol=1e-5)


def test_preserve_color_out_of_gamut_keeps_luma_and_hue():
    g = torch.Generator().manual_seed(2)
    photo, stylised = torch.rand(2, 3, 32, 32, generator=g), torch.rand(2, 3, 32, 32, generator=g)
    stylised[:, :, :8] = 0.97  # bright luma with saturated photo colours: outside the cube
    out = preserve_color(stylised, photo)
    assert out.min() >= 0 and out.max() <= 1
    yo, ys, yp = rgb_to_ycbcr(out), rgb_to_ycbcr(stylised), rgb_to_ycbcr(photo)
    assert (yo[:, 0] - ys[:, 0]).abs().max() < 1e-5  # luma always the stylised one
    co, cp = yo[:, 1:] - 0.5, yp[:, 1:] - 0.5
    k = (co * cp).sum(1) / (cp * cp).sum(1).clamp_min(1e-12)  # chroma = k * photo chroma, 0 <= k <= 1
    assert (co - k[:, None] * cp).abs().max() < 1e-5 and k.min() > -1e-4 and k.max() < 1 + 1e-4
    assert (k < 0.99).any()


def test_preserve_color_bad_inputs():
    with pytest.raises(ValueError, match="same shape"):
        preserve_color(torch.rand(3, 4, 4), torch.rand(3, 4, 5))
    with pytest.raises(TypeError, match="float"):
        preserve_color(torch.zeros(3, 4, 4, dtype=torch.uint8), torch.rand(3, 4, 4))
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        preserve_color(torch.rand(4, 4), torch.rand(4, 4))


# ---------------------------------------------------------------- tiles


def test_tile_spans():
    assert tile_spans(100, 128, 32) == [(0, 100)]
    spans = tile_spans(300, 128, 32, align=4)
    assert spans[0][0] == 0 and spans[-1][1] == 300
    assert all(a % 4 == 0 for a, _ in spans)
    assert all(b - a >= 128 for a, b in spans)
    assert all(spans[i][1] - spans[i + 1][0] >= 32 for i in range(len(spans) - 1))
    with pytest.raises(ValueError, match="at most half"):
        tile_spans(300, 64, 40)


@pytest.mark.parametrize("scale", [1, 2])
def test_feathered_weights_sum_to_one(scale):
    x = torch.rand(2, 3, 70, 93)
    up = (lambda b: b.clone()) if scale == 1 else (lambda b: b.repeat_interleave(2, -1).repeat_interleave(2, -2))
    out = run_tiled(up, x, tile=32, overlap=12, scale=scale, align=4)
    assert torch.allclose(out, up(x), atol=1e-6)


def _single_cover(length: int, spans) -> torch.Tensor:
    count = torch.zeros(length, dtype=torch.int64)
    for a, b in spans:
        count[a:b] += 1
    return count == 1


@pytest.mark.parametrize("make,tile,overlap,size", [
    (lambda: TransformerNet(channels=4, norm="batch"), 128, 64, (250, 310)),
    (lambda: TransformerNet(channels=4, norm="none", padding="same"), 128, 64, (203, 261)),
    (lambda: SRNet(channels=8, blocks=2, norm="batch"), 48, 20, (90, 101)),
])
def test_tiled_matches_untiled_away_from_seams(make, tile, overlap, size):
    """Without instance norm, pixels covered by one tile only (farther than the receptive field from
    the tile's inner edges) come out exactly as from the whole image."""
    from perceptlib.deploy import TorchNetwork

    torch.manual_seed(0)
    model = make().eval()
    with torch.no_grad():
        model.tail.weight.mul_(30)  # spread the random network's outputs over [0, 1]
    net = TorchNetwork(model, precision="off")
    x = torch.rand(1, 3, *size)
    whole = net(x)
    tiled = run_tiled(net, x, tile, overlap, scale=net.scale, align=net.align)
    assert tiled.shape == whole.shape and whole.std() > 0.1
    rows, cols = tile_spans(size[0], tile, overlap, net.align), tile_spans(size[1], tile, overlap, net.align)
    assert len(rows) > 1 and len(cols) > 1
    my = _single_cover(size[0], rows).repeat_interleave(net.scale)
    mx = _single_cover(size[1], cols).repeat_interleave(net.scale)
    mask = my[:, None] & mx[None, :]
    diff = (tiled - whole).abs()[0].amax(0)
    print(f"away from seams {float(diff[mask].max()):.2g}, at seams max {float(diff.max()):.2g} "
          f"mean {float(diff[~mask].mean()):.2g}")
    assert diff[mask].max() < 1e-5
    assert diff.max() < 0.1 and diff.mean() < 0.01  # seams: blended, near the untiled result


def test_tiled_instance_norm_is_close_and_feathered():
    """Instance norm uses each tile's statistics (the trained Starry Night network): close to the
    untiled result, and the feathering spreads the tiles' differences instead of cutting at a seam."""
    from conftest import load_asset

    from perceptlib.deploy import TorchNetwork
    from perceptlib.train import load_model

    net = TorchNetwork(load_model(STARRY), precision="off")
    x = load_asset("chelsea")[..., :240, :300]
    whole = net(x)
    feathered, hard = run_tiled(net, x, 128, 64, align=4), run_tiled(net, x, 128, 0, align=4)
    psnr = -10 * torch.log10((feathered - whole).square().mean())
    assert psnr > 22  # 26.5 dB measured with 128-px tiles

    def jump(im: torch.Tensor) -> float:  # largest step between neighbouring columns' mean error
        m = (im - whole).mean(dim=(0, 1, 2))
        return float((m[1:] - m[:-1]).abs().max())

    assert jump(feathered) < 0.75 * jump(hard)


# ---------------------------------------------------------------- ONNX

SIZES = ((64, 64), (50, 77), (45, 90))  # one square, two not divisible by 4


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Tiny random style (instance norm) and SR networks, their checkpoints and ONNX files (via the CLI)."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from perceptlib.cli import main

    root = tmp_path_factory.mktemp("onnx")
    out = {}
    for name, model in (("style", tiny_style()), ("sr", tiny_sr())):
        ckpt = write_checkpoint(model, root / name)
        assert main(["export", "--model", str(ckpt), "--onnx", str(root / f"{name}.onnx")]) == 0
        out[name] = (model, ckpt, root / f"{name}.onnx")
    return out


@pytest.mark.parametrize("name", ["style", "sr"])
def test_onnx_matches_torch(exported, name, capsys):
    from perceptlib.deploy import load_onnx, onnx_max_abs_diff

    model, _, path = exported[name]
    net = load_onnx(path)
    assert net.kind == type(model).__name__ and net.scale == (4 if name == "sr" else 1)
    assert net.min_size == (41 if name == "style" else 5) and net.train_step == 3
    diff = onnx_max_abs_diff(model, net, SIZES, batch=2)
    print(f"{name}: onnxruntime vs torch max abs diff {diff:.3g} at {SIZES}, batch 2")
    assert diff <= 1e-4
    with pytest.raises(ValueError, match="at least"):
        net(torch.rand(1, 3, 4, 50))


@pytest.mark.slow
@pytest.mark.parametrize("folder,sizes", [(STARRY, ((96, 96), (75, 101), (41, 64))),
                                          (SR_X4, ((24, 24), (19, 33), (42, 29)))])
def test_onnx_matches_torch_trained(folder, sizes, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from perceptlib.deploy import export_onnx, load_onnx, onnx_max_abs_diff
    from perceptlib.train import load_model

    model = load_model(folder)
    net = load_onnx(export_onnx(model, tmp_path / "net.onnx"))
    diff = onnx_max_abs_diff(model, net, sizes)
    print(f"{folder.name}: onnxruntime vs torch max abs diff {diff:.3g} at {sizes}")
    assert diff <= 1e-4


def test_cli_onnx_backend(exported, tmp_path, capsys):
    from perceptlib.cli import main

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (46, 57, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    for name, cmd in (("style", "stylize"), ("sr", "upscale")):
        _, ckpt, onnx_file = exported[name]
        a, b, src = tmp_path / f"{name}_torch.png", tmp_path / f"{name}_ort.png", str(tmp_path / "in.png")
        flags = ["--device", "cpu", "--no-progress"]
        assert main([cmd, "--model", str(ckpt), src, str(a), *flags, "--precision", "off"]) == 0
        assert main([cmd, "--backend", "onnxruntime", "--model", str(onnx_file), src, str(b), *flags]) == 0
        assert "onnxruntime CPU, fp32)" in capsys.readouterr().out
        ia, ib = np.asarray(Image.open(a), dtype=int), np.asarray(Image.open(b), dtype=int)
        assert ia.shape == ib.shape == ((46, 57, 3) if name == "style" else (184, 228, 3))
        assert np.abs(ia - ib).max() <= 1
    # wrong file or network for the backend: one-line errors
    assert main(["stylize", "--backend", "onnxruntime", "--model", str(exported["style"][1]),
                 str(tmp_path / "in.png"), str(tmp_path / "x.png")]) == 1
    assert "runs an exported .onnx file" in capsys.readouterr().err
    assert main(["stylize", "--backend", "onnxruntime", "--model", str(exported["sr"][2]),
                 str(tmp_path / "in.png"), str(tmp_path / "x.png")]) == 1
    assert "holds a SRNet network, expected TransformerNet" in capsys.readouterr().err
    assert main(["upscale", "--model", str(exported["sr"][2]), str(tmp_path / "in.png"), str(tmp_path / "x.png")]) == 1
    assert "run it with the onnxruntime backend" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()


# ---------------------------------------------------------------- torch.compile


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10((a - b).square().mean()))


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _unchanged(model: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    after = model.state_dict()
    return after.keys() == before.keys() and all(
        after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())


@pytest.fixture(scope="module")
def compiled_style():
    """A tiny random instance-norm style network (8 channels, 1 block), a snapshot of its weights and a
    compiled fp32 network of it (compiled at its first call)."""
    from perceptlib.deploy import TorchNetwork

    model = tiny_style(channels=8, blocks=1)
    with torch.no_grad():
        model.tail.weight.mul_(30)  # outputs spread over [0, 1]
    before = _snapshot(model)
    return model, before, TorchNetwork(model, precision="off", compile=True)


@pytest.mark.slow  # each compiling test: ~20 s on 2 busy cores with an empty inductor cache, ~5 s with it
def test_compiled_fp32_matches_eager_and_reuses_the_graph(compiled_style):
    """fp32 compiled = eager; freezing stays off outside the call; the caller's model is untouched; the
    four equal tiles of a 112x112 image and a second frame of the same size reuse the first graph."""
    import torch._dynamo.config
    import torch._inductor.config

    from perceptlib.deploy import TorchNetwork

    model, before, net = compiled_style
    eager = TorchNetwork(model, precision="off")
    assert net.compiled and net.runtime == "cpu, fp32, compiled" and not eager.compiled
    frozen = torch._inductor.config.freezing
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    out, ref = net(x), eager(x)
    assert out.dtype == torch.float32 and out.shape == ref.shape and ref.std() > 0.1
    assert (out - ref).abs().max() <= 1e-4
    assert torch._inductor.config.freezing == frozen and not frozen
    assert _unchanged(model, before) and not model.training
    image = torch.rand(1, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    assert tile_spans(112, 64, 16, 4) == [(0, 64), (48, 112)]
    with torch._dynamo.config.patch(error_on_recompile=True):  # a new graph would raise here
        tiled = run_tiled(net, image, 64, 16, align=4)
        frames = [net(x) for _ in range(2)]
    assert net.compiled_shapes == {(1, 3, 64, 64)}
    assert (tiled - run_tiled(eager, image, 64, 16, align=4)).abs().max() <= 1e-4
    assert all(torch.equal(f, out) for f in frames)


def _sr_with_batch_norm_stats() -> SRNet:
    """A tiny x4 SRNet whose batch norms have non-trivial running statistics and affine parameters (as
    trained: folding them changes the weights), its deconvolutions 8 -> 8 channels."""
    model = tiny_sr(channels=8)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(0.3 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.weight.copy_(1 + 0.5 * torch.randn(m.num_features, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.num_features, generator=g))
    return model


def test_fold_batch_norms_keeps_the_output():
    from perceptlib.deploy.runner import _fold_batch_norms

    model = _sr_with_batch_norm_stats()
    x = torch.rand(2, 3, 12, 15, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(x)
        folded = _fold_batch_norms(copy.deepcopy(model))
        out = folded(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in folded.modules()) == 2
    assert (folded.up[0].weight - model.up[0].weight).abs().max() > 0.1  # the norm is in the weights now
    assert (out - ref).abs().max() < 1e-5


@pytest.mark.slow  # one compilation
def test_compiled_sr_with_batch_norm_matches_eager():
    """Batch norm after an 8 -> 8 deconvolution: inductor's own folding would scale the wrong weight axis."""
    from perceptlib.deploy import TorchNetwork

    model = _sr_with_batch_norm_stats()
    before = _snapshot(model)
    x = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    out, ref = TorchNetwork(model, "off", compile=True)(x), TorchNetwork(model, "off")(x)
    assert out.shape == ref.shape == (1, 3, 96, 96) and ref.std() > 0.01
    assert (out - ref).abs().max() <= 1e-4
    assert _unchanged(model, before)


@pytest.mark.slow  # one compilation (bf16)
def test_compiled_bf16_trained_style_psnr():
    """The trained Starry Night network (16 channels, instance norm) compiled in bf16
    (COMPILED_BF16_FORM) against fp32 eager on a photo; the caller's fp32 model stays as it was."""
    from conftest import load_asset

    from perceptlib.deploy import COMPILED_BF16_FORM, TorchNetwork
    from perceptlib.precision import bf16_supported
    from perceptlib.train import load_model

    if not bf16_supported("cpu"):
        pytest.skip("no native bf16 on this CPU")
    model = load_model(ROOT / "results" / "style_starry_night")
    assert model.hparams["channels"] == 16 and model.hparams["norm"] == "instance"
    before = _snapshot(model)
    x = load_asset("chelsea", 96)
    net = TorchNetwork(model, "bf16", compile=True)
    out, ref = net(x), TorchNetwork(model, "off")(x)
    psnr = _psnr(out, ref)
    print(f"compiled bf16 ({COMPILED_BF16_FORM}) vs fp32 eager: {psnr:.1f} dB")
    assert net.runtime == "cpu, bf16, compiled" and out.dtype == torch.float32
    assert psnr >= 35
    assert _unchanged(model, before) and all(p.dtype == torch.float32 for p in model.parameters())


def test_compile_needs_the_torch_backend(tmp_path, capsys):
    from perceptlib.cli import main
    from perceptlib.deploy import load_network

    with pytest.raises(ValueError, match="needs the torch backend"):
        load_network(tmp_path / "net.onnx", backend="onnxruntime", compile=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "in.png")
    assert main(["stylize", "--backend", "onnxruntime", "--compile", "--model", str(tmp_path / "net.onnx"),
                 str(tmp_path / "in.png"), str(tmp_path / "out.png")]) == 1
    assert "compile (torch.compile) needs the torch backend" in capsys.readouterr().err
    assert not (tmp_path / "out.png").exists()


@pytest.mark.slow  # one compilation
def test_cli_stylize_compile(tmp_path, capsys):
    from perceptlib.cli import main

    ckpt = write_checkpoint(tiny_style(channels=8, blocks=1), tmp_path / "style")
    rgb = np.random.default_rng(0).integers(0, 256, (44, 52, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "in.png")
    flags = ["--model", str(ckpt), str(tmp_path / "in.png"), "--device", "cpu", "--precision", "off", "--no-progress"]
    assert main(["stylize", *flags[:3], str(tmp_path / "eager.png"), *flags[3:]]) == 0
    assert main(["stylize", *flags[:3], str(tmp_path / "compiled.png"), *flags[3:], "--compile"]) == 0
    assert "cpu, fp32, compiled)" in capsys.readouterr().out
    a = np.asarray(Image.open(tmp_path / "eager.png"), dtype=int)
    b = np.asarray(Image.open(tmp_path / "compiled.png"), dtype=int)
    assert a.shape == b.shape == (44, 52, 3) and a.std() > 5
    assert np.abs(a - b).max() <= 1
