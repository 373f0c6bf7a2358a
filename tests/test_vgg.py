import pytest
import torch
import torchvision
from torch import nn

from perceptlib import LAYER_NAMES, LossNetwork, layer_channels, min_input_size
from perceptlib.weights import TORCHVISION_CONV_INDEX


def torchvision_reference(net: LossNetwork) -> nn.Sequential:
    """torchvision's VGG-16 features with ``net``'s conv weights and non-inplace ReLUs."""
    ref = torchvision.models.vgg16(weights=None).features.eval()
    convs = [m for m in net.body if isinstance(m, nn.Conv2d)]
    for conv, idx in zip(convs, TORCHVISION_CONV_INDEX):
        ref[idx].weight.data.copy_(conv.weight)
        ref[idx].bias.data.copy_(conv.bias)
    for m in ref:
        if isinstance(m, nn.ReLU):
            m.inplace = False
    return ref


def reference_taps(ref: nn.Sequential, x: torch.Tensor, mean, std) -> dict[str, torch.Tensor]:
    out, h = {}, (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    for name, module in zip(LAYER_NAMES, ref):
        h = module(h)
        out[name] = h
    return out


def test_layer_names_follow_torchvision_module_types():
    ref = torchvision.models.vgg16(weights=None).features
    kinds = {nn.Conv2d: "conv", nn.ReLU: "relu", nn.MaxPool2d: "pool"}
    assert len(LAYER_NAMES) == len(ref) == 31
    assert [kinds[type(m)] for m in ref] == [n[:4] for n in LAYER_NAMES]
    assert LAYER_NAMES[:5] == ("conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1")
    assert LAYER_NAMES[-3:] == ("conv5_3", "relu5_3", "pool5")


@pytest.mark.parametrize("weights", [None, "torchvision"])
def test_every_tap_matches_torchvision(weights, request):
    if weights:
        request.getfixturevalue("real_weights")
    torch.manual_seed(0)
    net = LossNetwork(LAYER_NAMES, weights=weights)
    x = torch.rand(2, 3, 40, 48)
    ours = net(x)
    theirs = reference_taps(torchvision_reference(net), x, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert list(ours) == list(LAYER_NAMES)
    for name in LAYER_NAMES:
        torch.testing.assert_close(ours[name], theirs[name], rtol=1e-4, atol=1e-4, msg=name)


def test_conv_taps_stay_conv_taps():
    torch.manual_seed(0)
    net = LossNetwork(("conv3_3", "relu3_3", "conv1_1"), weights=None)
    f = net(torch.rand(1, 3, 32, 32))
    assert (f["conv3_3"] < 0).any(), "a conv tap must keep its negative values"
    assert not torch.equal(f["conv3_3"], f["relu3_3"])
    torch.testing.assert_close(f["relu3_3"], f["conv3_3"].clamp(min=0))


def test_truncated_after_deepest_tap_and_subset_forward():
    net = LossNetwork(("relu1_2", "relu2_2"), weights=None)
    assert len(net.body) == LAYER_NAMES.index("relu2_2") + 1
    assert net.names[-1] == "relu2_2"
    x = torch.rand(1, 3, 16, 16)
    full, part = net(x), net(x, layers=["relu1_2"])
    assert list(part) == ["relu1_2"]
    torch.testing.assert_close(part["relu1_2"], full["relu1_2"])
    with pytest.raises(ValueError, match="not tapped"):
        net(x, layers=["relu3_3"])


def test_frozen_even_inside_a_training_parent():
    net = LossNetwork(("relu2_2",), weights=None)
    parent = nn.Sequential(nn.Conv2d(3, 3, 1), net)
    parent.train()
    assert parent[0].training and not net.training
    assert all(not p.requires_grad for p in net.parameters())
    x = torch.rand(2, 3, 16, 16, requires_grad=True)
    net(x)["relu2_2"].square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())


def test_shapes_channels_and_min_size():
    net = LossNetwork(("relu1_2", "relu3_3", "pool4", "relu5_3"), weights=None)
    f = net(torch.rand(1, 3, 32, 48))
    assert f["relu1_2"].shape == (1, 64, 32, 48)
    assert f["relu3_3"].shape == (1, 256, 8, 12)
    assert f["pool4"].shape == (1, 512, 2, 3)
    assert f["relu5_3"].shape == (1, 512, 2, 3)
    assert [layer_channels(n) for n in ("conv1_1", "relu2_2", "pool3", "relu5_3")] == [64, 128, 256, 512]
    assert [min_input_size(n) for n in ("relu1_2", "relu2_2", "pool2", "relu5_3", "pool5")] == [1, 2, 4, 16, 32]


def test_bad_input_gets_clear_errors():
    net = LossNetwork(("relu5_3",), weights=None)
    with pytest.raises(ValueError, match="unknown VGG-16 layer.*valid names: conv1_1"):
        LossNetwork(("relu2_3",), weights=None)
    with pytest.raises(ValueError, match="at least one layer"):
        LossNetwork((), weights=None)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\).*batch dim"):
        net(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        net(torch.rand(1, 1, 32, 32))
    with pytest.raises(TypeError, match="dtype torch.uint8"):
        net(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="divide by 255"):
        net(torch.rand(1, 3, 32, 32) * 255)
    with pytest.raises(ValueError, match="too small.*at least 16x16"):
        net(torch.rand(1, 3, 15, 64))
    bad = torch.rand(1, 3, 32, 32)
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        net(bad)
    with pytest.raises(TypeError, match="torch.Tensor"):
        net([[0.0]])


def test_dtypes_and_channels_last_agree():
    torch.manual_seed(0)
    net = LossNetwork(("relu2_2", "conv3_1"), weights=None)
    x = torch.rand(2, 3, 32, 32)
    ref = net(x)
    cl = net(x.contiguous(memory_format=torch.channels_last))
    for k in ref:
        torch.testing.assert_close(cl[k], ref[k], rtol=1e-4, atol=1e-4)
    for dtype, tol in ((torch.bfloat16, 0.1), (torch.float16, 0.02)):
        low = LossNetwork(("relu2_2", "conv3_1"), weights=None).to(dtype)
        low.load_state_dict(net.state_dict())
        out = low(x)
        for k in ref:
            assert out[k].dtype == dtype
            err = (out[k].float() - ref[k]).abs().max() / ref[k].abs().max()
            assert err < tol, (dtype, k, float(err))


def test_caffe_preprocessing_is_bgr_0_255_minus_mean():
    net = LossNetwork(("relu1_1",), weights=None)
    net.bgr = True  # exercise the Caffe path with random weights
    from perceptlib.vgg import _NORMALISATION

    mean, std, _ = _NORMALISATION["caffe"]
    net.mean.copy_(torch.tensor(mean).view(1, 3, 1, 1))
    net.std.copy_(torch.tensor(std).view(1, 3, 1, 1))
    x = torch.rand(1, 3, 4, 4)
    expected = x.flip(1) * 255 - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    torch.testing.assert_close(net.normalise(x), expected, rtol=1e-5, atol=1e-3)
