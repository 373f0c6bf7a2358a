import pytest
import torch
from torch import nn

from perceptlib.nets import ResidualBlock, SRNet, TransformerNet, build_net, count_parameters


pytestmark = pytest.mark.usefixtures("one_thread")


def conv(cin, cout, k):  # weights + bias
    return cin * cout * k * k + cout


def norm(c):  # affine scale + shift (batch norm and affine instance norm alike)
    return 2 * c


def expected_sr_params(scale, c=64, blocks=4):
    # [S] Table 2: 9x9 conv 3->c, `blocks` residual blocks (two 3x3 c->c convs, each + norm),
    # log2(scale) stride-1/2 3x3 convs c->c + norm, 9x9 conv c->3 (no norm).
    n_up = {4: 2, 8: 3}[scale]
    return (conv(3, c, 9) + norm(c) + blocks * 2 * (conv(c, c, 3) + norm(c))
            + n_up * (conv(c, c, 3) + norm(c)) + conv(c, 3, 9))


def expected_style_params(c=32):
    # [S] Table 1: c9s1-32, d64, d128, 5 x R128, u64, u32, c9s1-3
    return (conv(3, c, 9) + norm(c) + conv(c, 2 * c, 3) + norm(2 * c) + conv(2 * c, 4 * c, 3) + norm(4 * c)
            + 5 * 2 * (conv(4 * c, 4 * c, 3) + norm(4 * c))
            + conv(4 * c, 2 * c, 3) + norm(2 * c) + conv(2 * c, c, 3) + norm(c) + conv(c, 3, 9))


@pytest.mark.parametrize("scale", [4, 8])
@pytest.mark.parametrize("upsample", ["deconv", "nearest-conv"])
def test_srnet_shape_range_and_parameter_count(scale, upsample):
    torch.manual_seed(0)
    net = SRNet(scale=scale, upsample=upsample).eval()
    assert count_parameters(net) == expected_sr_params(scale)
    x = torch.rand(2, 3, 7, 10)
    y = net(x)
    assert y.shape == (2, 3, 7 * scale, 10 * scale)
    assert 0 <= y.min() and y.max() <= 1
    # output is (tanh + 1) / 2 of the last conv
    pre = net.tail(net.up(net.blocks(net.head(x))))
    torch.testing.assert_close(y, (torch.tanh(pre) + 1) / 2)
    n_transposed = sum(isinstance(m, nn.ConvTranspose2d) for m in net.modules())
    assert n_transposed == (0 if upsample == "nearest-conv" else {4: 2, 8: 3}[scale])


def test_srnet_known_counts_and_options():
    assert expected_sr_params(4) == 401_859  # ~1.6 MB in float32
    assert count_parameters(SRNet(4, norm="instance")) == 401_859
    assert count_parameters(SRNet(4, norm="none")) == 401_859 - (1 + 2 * 4 + 2) * norm(64)  # head, blocks, upsampling
    with pytest.raises(ValueError, match="scale"):
        SRNet(scale=3)
    with pytest.raises(ValueError, match="upsample"):
        SRNet(upsample="pixelshuffle")
    with pytest.raises(ValueError, match=r"\(N, 3, h, w\)"):
        SRNet()(torch.rand(3, 8, 8))


def test_srnet_output_saturates_in_unit_range():
    net = SRNet(4, channels=8, blocks=1).eval()
    with torch.no_grad():
        net.tail.bias.fill_(100.0)
    assert torch.allclose(net(torch.rand(1, 3, 5, 6)), torch.ones(1, 3, 20, 24))
    with pytest.raises(ValueError, match="at least 5x5"):
        net(torch.rand(1, 3, 4, 9))


@pytest.mark.parametrize("padding", ["paper", "same"])
@pytest.mark.parametrize("upsample", ["deconv", "nearest-conv"])
@pytest.mark.parametrize("hw", [(32, 32), (33, 30), (17, 45), (64, 63)])
def test_transformer_net_keeps_any_size(padding, upsample, hw):
    net = TransformerNet(channels=4, padding=padding, upsample=upsample).eval()
    y = net(torch.rand(1, 3, *hw))
    assert y.shape == (1, 3, *hw)
    assert 0 <= y.min() and y.max() <= 1


def test_transformer_net_parameter_counts_and_structure():
    assert expected_style_params() == 1_679_235
    for norm_kind in ("batch", "instance"):
        assert count_parameters(TransformerNet(norm=norm_kind)) == expected_style_params()
    for up in ("deconv", "nearest-conv"):
        net = TransformerNet(upsample=up)
        n_t = sum(isinstance(m, nn.ConvTranspose2d) for m in net.modules())
        assert n_t == (2 if up == "deconv" else 0)
        assert count_parameters(net) == expected_style_params()  # same convs, same parameters
    paper = TransformerNet()
    assert paper.input_pad == 40
    assert all(not b.padded and b.body[0].padding == (0, 0) for b in paper.blocks)
    assert all(b.padded for b in TransformerNet(padding="same").blocks)
    # no ReLU after the residual addition: a block's output can be negative
    assert not isinstance(list(paper.blocks[0].body)[-1], nn.ReLU)
    assert isinstance(TransformerNet(norm="instance").down[1], nn.InstanceNorm2d)


def test_unpadded_residual_block_crops_the_skip():
    torch.manual_seed(0)
    block = ResidualBlock(2, norm="none", padded=False)
    x = torch.randn(1, 2, 9, 11)
    y = block(x)
    assert y.shape == (1, 2, 5, 7)
    torch.testing.assert_close(y, x[..., 2:-2, 2:-2] + block.body(x))


@pytest.mark.parametrize("padding", ["paper", "same"])
def test_transformer_net_odd_sizes_stay_aligned(padding):
    # Dropping the last column (odd width) must not shift the picture: far from the right border
    # (the receptive field is under 60 px) the outputs agree; a shifted crop would not.
    torch.manual_seed(0)
    net = TransformerNet(channels=4, padding=padding).eval()
    x = torch.rand(1, 3, 12, 160)
    y_even, y_odd = net(x), net(x[..., :159])
    assert y_odd.shape[-1] == 159
    torch.testing.assert_close(y_odd[..., :90], y_even[..., :90], rtol=1e-4, atol=1e-5)
    assert not torch.allclose(y_odd[..., 1:91], y_even[..., :90], atol=1e-3)


def test_transformer_net_tiny_images_and_errors():
    assert TransformerNet(channels=2).eval()(torch.rand(1, 3, 3, 2)).shape == (1, 3, 3, 2)
    with pytest.raises(ValueError, match="at least 5x5"):
        TransformerNet(channels=2, padding="same")(torch.rand(1, 3, 4, 8))
    with pytest.raises(ValueError, match="padding"):
        TransformerNet(padding="zeros")
    with pytest.raises(ValueError, match="norm"):
        TransformerNet(norm="group")


def test_build_net_roundtrip():
    net = SRNet(8, channels=8, blocks=2, upsample="nearest-conv")
    clone = build_net("SRNet", net.hparams)
    clone.load_state_dict(net.state_dict())
    x = torch.rand(1, 3, 5, 5)
    torch.testing.assert_close(clone.eval()(x), net.eval()(x))
    with pytest.raises(ValueError, match="unknown network"):
        build_net("UNet", {})
