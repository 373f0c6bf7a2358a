import matplotlib
import pytest
import torch

from perceptlib import LossNetwork, distance
from perceptlib.distortions import grid_patterns, jpeg, loss_table, standard_distortions
from perceptlib.plots import plot_feature_maps, plot_images, plot_loss_table

matplotlib.use("Agg")


def test_standard_distortions_are_what_they_say():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 24, 32)
    d = standard_distortions(x, seed=3)
    assert set(d) == {"shift 1px", "blur σ=1", "blur σ=2", "noise σ=0.05", "noise σ=0.1", "JPEG q=10"}
    torch.testing.assert_close(d["shift 1px"][..., 1:], x[..., :-1])
    torch.testing.assert_close(d["shift 1px"][..., 0], x[..., 0])
    for v in d.values():
        assert v.shape == x.shape and v.min() >= 0 and v.max() <= 1
    # stronger distortions move further from the original; noise is seeded
    assert distance(d["noise σ=0.1"], x) > distance(d["noise σ=0.05"], x)
    assert distance(d["blur σ=2"], x) > distance(d["blur σ=1"], x)
    torch.testing.assert_close(standard_distortions(x, seed=3)["noise σ=0.1"], d["noise σ=0.1"])
    assert not torch.equal(standard_distortions(x, seed=4)["noise σ=0.1"], d["noise σ=0.1"])
    # JPEG at high quality is close to identity, at low quality it is not
    assert distance(jpeg(x, 95), x) < distance(jpeg(x, 5), x)


def test_grid_patterns_have_equal_energy_and_their_period():
    from perceptlib.metrics import checkerboard_spectrum

    x = 0.3 + 0.4 * torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(2)),
                                                    size=64, mode="bicubic", align_corners=False).clamp(0, 1)
    d = grid_patterns(x, amplitude=0.02)
    assert len(d) == 4
    for name, y in d.items():
        assert distance(y, x) == pytest.approx(0.02 ** 2, rel=1e-4)  # the same pixel energy
        if "(1/8" not in name:  # the spectrum split names periods 2 and 4 at x4
            spec = checkerboard_spectrum(y[0], x[0], 4)
            top = max(spec, key=lambda k: spec[k]["share"])
            assert name.endswith(f"({top})"), (name, top)


def test_loss_table_matches_direct_computation():
    torch.manual_seed(0)
    net = LossNetwork(("relu1_2", "relu2_2"), weights=None)
    x, y = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    table = loss_table(net, x, {"other": y, "same": x}, kind="l1")
    fx, fy = net(x), net(y)
    assert table["same"] == {"pixel": 0.0, "relu1_2": 0.0, "relu2_2": 0.0}
    assert table["other"]["pixel"] == pytest.approx(float(distance(y, x, "l1")))
    for k in ("relu1_2", "relu2_2"):
        assert table["other"][k] == pytest.approx(float(distance(fy[k], fx[k], "l1")), rel=1e-6)


def test_plots_draw_the_data_they_are_given():
    torch.manual_seed(0)
    fig = plot_images({"a": torch.rand(3, 8, 8), "b": torch.zeros(3, 8, 8), "c": torch.ones(3, 8, 8)}, cols=2)
    titles = [ax.get_title() for ax in fig.axes if ax.get_images()]
    assert titles == ["a", "b", "c"]
    assert fig.axes[1].get_images()[0].get_array().max() == 0

    feats = {"conv1_1": torch.tensor([[[[-1.0, 2.0], [3.0, -4.0]]]]),
             "relu1_1": torch.tensor([[[[0.0, 2.0], [3.0, 0.0]]]])}
    fig = plot_feature_maps(feats, [("conv1_1", "relu1_1")])
    imgs = [ax for ax in fig.axes if ax.get_images()]
    assert [ax.get_title().split()[0] for ax in imgs] == ["conv1_1", "relu1_1"]
    assert "50% < 0" in imgs[0].get_title() and "0% < 0" in imgs[1].get_title()
    assert imgs[0].get_images()[0].get_clim() == (-4.0, 4.0)

    table = {"d1": {"pixel": 1.0, "relu1_2": 4.0}, "d2": {"pixel": 2.0, "relu1_2": 2.0}}
    fig = plot_loss_table(table)
    heights = sorted(round(p.get_height(), 6) for p in fig.axes[0].patches)
    assert heights == [0.5, 0.5, 1.0, 1.0]
    raw = plot_loss_table(table, normalise=False)
    assert sorted(p.get_height() for p in raw.axes[0].patches) == [1.0, 2.0, 2.0, 4.0]
