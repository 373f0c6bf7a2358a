"""The pytorch/examples ``fast_neural_style`` code the benchmarks compare against (transformer_net.py, vgg.py,
utils.py), as written there: used by bench_loss.py (its Vgg16, with the ImageNet weights) and bench_train.py
(all of it, with random weights).

Images: the reference networks take ``(N, 3, H, W)`` in 0-255 (:func:`ref_normalize_batch` maps them to the
ImageNet-normalised input of :class:`RefVgg16`); Gram matrices are ``(N, C, C)``, divided by ``C * H * W``.
"""
from __future__ import annotations

from collections import namedtuple

import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
VggOutputs = namedtuple("VggOutputs", ["relu1_2", "relu2_2", "relu3_3", "relu4_3"])


class ConvLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2d(self.reflection_pad(x))


class RefResidualBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in1 = nn.InstanceNorm2d(channels, affine=True)
        self.conv2 = ConvLayer(channels, channels, kernel_size=3, stride=1)
        self.in2 = nn.InstanceNorm2d(channels, affine=True)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        residual = x
        out = self.relu(self.in1(self.conv1(x)))
        out = self.in2(self.conv2(out))
        return out + residual


class UpsampleConvLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 upsample: int | None = None) -> None:
        super().__init__()
        self.upsample = upsample
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(in_channels, out_channels, kernel_size, stride)

    def forward(self, x: Tensor) -> Tensor:
        if self.upsample:
            x = F.interpolate(x, mode="nearest", scale_factor=self.upsample)
        return self.conv2d(self.reflection_pad(x))


class RefTransformerNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.in1 = ConvLayer(3, 32, kernel_size=9, stride=1), nn.InstanceNorm2d(32, affine=True)
        self.conv2, self.in2 = ConvLayer(32, 64, kernel_size=3, stride=2), nn.InstanceNorm2d(64, affine=True)
        self.conv3, self.in3 = ConvLayer(64, 128, kernel_size=3, stride=2), nn.InstanceNorm2d(128, affine=True)
        self.res = nn.Sequential(*(RefResidualBlock(128) for _ in range(5)))
        self.deconv1 = UpsampleConvLayer(128, 64, kernel_size=3, stride=1, upsample=2)
        self.in4 = nn.InstanceNorm2d(64, affine=True)
        self.deconv2 = UpsampleConvLayer(64, 32, kernel_size=3, stride=1, upsample=2)
        self.in5 = nn.InstanceNorm2d(32, affine=True)
        self.deconv3 = ConvLayer(32, 3, kernel_size=9, stride=1)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        y = self.relu(self.in1(self.conv1(x)))
        y = self.relu(self.in2(self.conv2(y)))
        y = self.relu(self.in3(self.conv3(y)))
        y = self.res(y)
        y = self.relu(self.in4(self.deconv1(y)))
        y = self.relu(self.in5(self.deconv2(y)))
        return self.deconv3(y)


class RefVgg16(nn.Module):
    """``vgg.Vgg16``: torchvision's VGG-16 features in four slices (to relu1_2, relu2_2, relu3_3, relu4_3),
    frozen unless ``requires_grad``. ``pretrained``: the ImageNet weights of
    ``perceptlib.weights.resolve_vgg16("torchvision")`` (offline) copied in; else torchvision's random init."""

    def __init__(self, requires_grad: bool = False, pretrained: bool = False) -> None:
        super().__init__()
        import torchvision

        features = torchvision.models.vgg16(weights=None).features
        if pretrained:
            from perceptlib.weights import CONV_NAMES, TORCHVISION_CONV_INDEX, resolve_vgg16

            sd, _ = resolve_vgg16("torchvision")
            for name, idx in zip(CONV_NAMES, TORCHVISION_CONV_INDEX):
                features[idx].weight.data.copy_(sd[f"{name}.weight"])
                features[idx].bias.data.copy_(sd[f"{name}.bias"])
        self.slice1, self.slice2 = features[:4], features[4:9]
        self.slice3, self.slice4 = features[9:16], features[16:23]
        if not requires_grad:
            for p in self.parameters():
                p.requires_grad = False

    def forward(self, x: Tensor) -> VggOutputs:
        h1 = self.slice1(x)
        h2 = self.slice2(h1)
        h3 = self.slice3(h2)
        h4 = self.slice4(h3)
        return VggOutputs(h1, h2, h3, h4)


def ref_gram(y: Tensor) -> Tensor:
    """``utils.gram_matrix``, in float32 (a no-op on fp32 features; bench_loss's bf16 autocast features are cast)."""
    b, ch, h, w = y.size()
    features = y.float().view(b, ch, w * h)
    return features.bmm(features.transpose(1, 2)) / (ch * h * w)


def ref_normalize_batch(batch: Tensor) -> Tensor:
    """``utils.normalize_batch``: 0-255 input -> ImageNet-normalised."""
    mean = batch.new_tensor(IMAGENET_MEAN).view(-1, 1, 1)
    std = batch.new_tensor(IMAGENET_STD).view(-1, 1, 1)
    return (batch.div(255.0) - mean) / std
