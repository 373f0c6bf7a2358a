import dataclasses
import json

import pytest

from perceptlib.config import (
    PAPER_SR, PAPER_STYLE, SRConfig, StyleConfig, config_from_dict, config_json, differences, for_mode,
    format_layers, parse_layers,
)


def test_paper_sr_values_and_sources():
    p = PAPER_SR
    assert (p.scale, p.patch_size, p.batch_size, p.steps, p.lr, p.blur_sigma) == (4, 288, 4, 200_000, 1e-3, 1.0)
    assert p.layers == (("relu2_2", 1.0),) and p.layer_weights == {"relu2_2": 1.0}
    assert (p.channels, p.blocks, p.upsample, p.norm, p.distance) == (64, 4, "deconv", "batch", "l2")
    for cfg in (PAPER_SR, PAPER_STYLE):
        for f in dataclasses.fields(cfg):
            src = f.metadata["source"]
            assert any(k in src for k in ("[P]", "[P']", "[S]", "[L]", "ours")), (f.name, src)
            assert f.metadata["help"]


def test_paper_style_values():
    p = PAPER_STYLE
    assert (p.image_size, p.batch_size, p.steps, p.lr) == (256, 4, 40_000, 1e-3)
    assert p.content_layers == (("relu3_3", 1.0),)
    assert "relu2_2" in dataclasses.fields(StyleConfig)[[f.name for f in dataclasses.fields(StyleConfig)]
                                                        .index("content_layers")].metadata["source"]
    assert [n for n, _ in p.style_layers] == ["relu1_2", "relu2_2", "relu3_3", "relu4_3"]
    # the official code's MSE over each C x C Gram = Eq. 4 / C^2, times -style_weights 5
    assert [w * c * c for (_, w), c in zip(p.style_layers, (64, 128, 256, 512))] == pytest.approx([1.0] * 4)
    assert p.style_weight == 5.0
    assert p.tv_weight == pytest.approx(1e-6 * 255**2)  # -tv_strength 1e-6 on 0-255 images
    assert (p.channels, p.padding, p.norm, p.upsample) == (32, "paper", "batch", "deconv")


@pytest.mark.parametrize("base", [PAPER_SR, PAPER_STYLE])
def test_for_mode(base):
    assert for_mode(base, "paper") == base  # PAPER_* are the paper mode
    quick, cpu = for_mode(base, "quick"), for_mode(base, "cpu")
    assert quick.mode == "quick" and cpu.mode == "cpu"
    assert quick.steps < cpu.steps < base.steps
    if isinstance(base, SRConfig):
        assert quick.patch_size == 48 and cpu.patch_size == 96 and cpu.patch_size % 8 == 0
        assert cpu.batch_size == 4
    else:
        assert quick.image_size < cpu.image_size < base.image_size
    # fields the caller changed are kept
    assert for_mode(dataclasses.replace(base, steps=7), "cpu").steps == 7
    with pytest.raises(ValueError, match="unknown mode"):
        for_mode(base, "fast")


def test_differences_rows():
    assert differences(PAPER_SR) == []
    rows = {r[0]: r for r in differences(for_mode(PAPER_SR, "cpu"))}
    assert rows["patch_size"][1:3] == (288, 96) and "CPU" in rows["patch_size"][3]
    assert rows["steps"][1] == 200_000
    assert "mode" not in rows and "lr" not in rows
    custom = dataclasses.replace(for_mode(PAPER_SR, "cpu"), pixel_weight=0.1, steps=123)
    rows = {r[0]: r for r in differences(custom)}
    assert rows["pixel_weight"] == ("pixel_weight", 0.0, 0.1, "set for this run (not a mode default)")
    assert rows["steps"][3] == "set for this run (not a mode default)"
    assert all(len(r) == 4 and r[3] for r in differences(for_mode(PAPER_STYLE, "quick")))


def test_json_roundtrip_and_errors():
    for cfg in (for_mode(PAPER_SR, "cpu"), dataclasses.replace(PAPER_STYLE, content_layers="relu2_2")):
        again = config_from_dict(json.loads(config_json(cfg)))
        assert again == cfg and type(again) is type(cfg)
    with pytest.raises(ValueError, match="unknown SRConfig fields"):
        config_from_dict({"_type": "SRConfig", "patchsize": 3})
    with pytest.raises(ValueError, match="multiple of scale"):
        SRConfig(patch_size=50)
    with pytest.raises(ValueError, match="unknown loss"):
        SRConfig(loss="gan")
    with pytest.raises(ValueError, match="positive integer"):
        SRConfig(steps=0)
    with pytest.raises(ValueError, match="needs feature layers"):
        SRConfig(layers="")
    assert SRConfig(layers="", pixel_weight=1.0).layers == ()
    with pytest.raises(dataclasses.FrozenInstanceError):
        PAPER_SR.steps = 1  # type: ignore[misc]


def test_parse_layers():
    assert parse_layers("relu2_2=1.0, relu3_3=0.5") == (("relu2_2", 1.0), ("relu3_3", 0.5))
    assert parse_layers("relu2_2") == (("relu2_2", 1.0),)
    assert parse_layers({"relu1_2": 2}) == (("relu1_2", 2.0),)
    assert parse_layers([["relu1_2", 2]]) == (("relu1_2", 2.0),)
    assert format_layers(parse_layers("relu2_2=1,relu3_3=0.5")) == "relu2_2=1,relu3_3=0.5"
    with pytest.raises(ValueError, match="unknown VGG-16 layer"):
        parse_layers("relu9_9=1")
    with pytest.raises(ValueError, match="bad layer weight"):
        parse_layers("relu2_2=x")


def test_recipes():
    from perceptlib.config import IMPL_STYLE, PAPER_STYLE, StyleConfig, differences, for_mode, recipe

    impl = for_mode(IMPL_STYLE, "cpu")
    assert (impl.recipe, impl.norm, impl.channels, impl.head) == ("impl", "instance", 16, "tanh150")
    assert impl.image_size == 128  # the mode's sizes still apply
    rows = {r[0]: r[3] for r in differences(impl)}
    assert rows["norm"].startswith("impl recipe: [L]") and "recipe" not in rows
    back = recipe(impl, "paper")
    assert (back.norm, back.channels, back.head, back.image_size) == (PAPER_STYLE.norm, 32, "paper", 128)
    with pytest.raises(ValueError, match="unknown recipe"):
        recipe(StyleConfig, "fast")


def test_resume_of_a_run_saved_before_new_fields(tmp_path):
    """A checkpoint whose config predates a field (here head and recipe) resumes: missing = the default."""
    import dataclasses

    import torch

    from perceptlib.config import PAPER_SR
    from perceptlib.nets import SRNet
    from perceptlib.sr import build_sr_loss
    from perceptlib.train import CHECKPOINT, load_checkpoint, train

    cfg = dataclasses.replace(for_mode(PAPER_SR, "quick"), scale=2, patch_size=12, batch_size=2, steps=2,
                              checkpoint_every=2, log_every=1, loss="pixel", channels=4, blocks=1, device="cpu",
                              precision="off")
    g = torch.Generator().manual_seed(0)
    hr = torch.rand(4, 3, 12, 12, generator=g)
    data = [(torch.nn.functional.avg_pool2d(h[None], 2)[0], h) for h in hr]
    train(SRNet(scale=2, channels=4, blocks=1), build_sr_loss(cfg), data, cfg, tmp_path, progress=False)
    ck = load_checkpoint(tmp_path / CHECKPOINT)
    for k in ("head", "recipe"):
        ck["config"].pop(k)
    ck.pop("path")
    torch.save(ck, tmp_path / CHECKPOINT)
    hist = train(SRNet(scale=2, channels=4, blocks=1), build_sr_loss(cfg), data, dataclasses.replace(cfg, steps=3),
                 tmp_path, progress=False)
    assert hist.step[-1] == 3 and hist.steps_run == 1


def test_compile_field_flag_and_differences():
    """compile: off by default in both configs, listed as a hardware setting when on, a --compile/--no-compile flag."""
    from perceptlib.cli import _config_from_args, build_parser

    for base in (PAPER_SR, PAPER_STYLE):
        field = {f.name: f for f in dataclasses.fields(base)}["compile"]
        assert base.compile is False and "ours" in field.metadata["source"]
        assert "compile" not in {r[0] for r in differences(for_mode(base, "cpu"))}
        rows = {r[0]: r for r in differences(dataclasses.replace(for_mode(base, "cpu"), compile=True))}
        assert rows["compile"] == ("compile", False, True, "hardware setting")
    parser = build_parser()
    for cmd, base in ((["train-sr"], PAPER_SR), (["train-style", "--style", "x.png"], PAPER_STYLE)):
        for flag, want in (([], False), (["--compile"], True), (["--compile", "--no-compile"], False)):
            cfg = _config_from_args(base, parser.parse_args(cmd + ["--mode", "quick"] + flag))
            assert cfg.compile is want and type(cfg) is type(base)
    again = config_from_dict(json.loads(config_json(dataclasses.replace(PAPER_STYLE, compile=True))))
    assert again.compile is True
