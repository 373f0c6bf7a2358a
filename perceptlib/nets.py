"""The paper's feed-forward networks: :class:`SRNet` (super-resolution) and :class:`TransformerNet` (style).

Both follow the supplementary material [S] of Johnson et al. (2016): 9x9 first and last convolutions,
3x3 elsewhere, batch norm + ReLU after every convolution except the last, residual blocks of two 3x3
convolutions without a ReLU after the addition (Gross & Wilber), fractionally-strided (transposed)
convolutions for upsampling and a scaled tanh output. Our tanh is scaled to ``[0, 1]``
(``(tanh(x) + 1) / 2``), the range every other perceptlib function expects (the paper: ``[0, 255]``);
``head="tanh150"`` is the official code's head instead (``HEADS``; outputs slightly outside [0, 1],
clamped by :func:`perceptlib.style.stylize` and :func:`perceptlib.sr.upscale`).

Options that later re-implementations use: instance norm (Ulyanov et al.), padded residual blocks and
nearest-neighbour x2 upsampling followed by a convolution, which avoids checkerboard artefacts.
Every network keeps its constructor arguments in ``hparams`` so checkpoints can rebuild it
(:func:`build_net`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SRNet", "TransformerNet", "ResidualBlock", "build_net", "NETS", "count_parameters"]

NORMS = ("batch", "instance", "none")
UPSAMPLES = ("deconv", "nearest-conv")
#: Output heads: ``paper`` = ``(tanh(x) + 1) / 2`` in [0, 1] (the paper's scaled tanh); ``tanh150`` = the
#: official Lua code's ``150 * tanh(x)`` added to the Caffe mean pixel on the 0-255 scale, i.e.
#: ``mean / 255 + (150 / 255) * tanh(x)``, about [-0.14, 1.04]: mid-grey needs no saturation and the
#: ends of [0, 1] are reached at |tanh| ~ 0.7, where the gradient has not vanished yet.
HEADS = ("paper", "tanh150")
_CAFFE_MEAN_RGB = (123.68 / 255, 116.779 / 255, 103.939 / 255)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm {kind!r}; choose one of {NORMS}")


def _check(value: str, choices: tuple[str, ...], what: str) -> str:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of {choices}")
    return value


def _conv(cin: int, cout: int, k: int, stride: int = 1, padding: int | None = None,
          padding_mode: str = "zeros") -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2 if padding is None else padding,
                     padding_mode=padding_mode)


def _up(cin: int, cout: int, kind: str, padding_mode: str = "zeros") -> nn.Module:
    """x2 upsampling: a fractionally-strided 3x3 conv (stride 1/2) or nearest x2 + 3x3 conv."""
    if kind == "deconv":
        # ConvTranspose2d(k=3, s=2, p=1, output_padding=1) maps h -> 2h exactly; output 2i sits on input i.
        return nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), _conv(cin, cout, 3, padding_mode=padding_mode))


def _scaled_tanh(x: Tensor, head: str = "paper") -> Tensor:
    """The output head (``HEADS``) in float32, also under bf16 autocast (bf16 has ~1/512 resolution near 0.5)."""
    t = torch.tanh(x.float())
    if head == "paper":
        return (t + 1) / 2
    mean = torch.tensor(_CAFFE_MEAN_RGB, device=x.device).view(1, 3, 1, 1)
    return mean + (150 / 255) * t


class ResidualBlock(nn.Module):
    """conv3x3-norm-ReLU-conv3x3-norm plus the identity; no ReLU after the addition ([S]).

    ``padded=False`` (the paper's style net): both convs are unpadded, the output is 4 px smaller in
    each dimension and the skip path is centre-cropped by 2 px per side. ``padded=True``: the convs are
    padded with ``padding_mode`` and sizes are kept.
    """

    def __init__(self, channels: int, norm: str = "batch", padded: bool = True, padding_mode: str = "zeros") -> None:
        super().__init__()
        pad = 1 if padded else 0
        self.padded = padded
        self.body = nn.Sequential(
            _conv(channels, channels, 3, padding=pad, padding_mode=padding_mode), _norm(norm, channels),
            nn.ReLU(inplace=True),
            _conv(channels, channels, 3, padding=pad, padding_mode=padding_mode), _norm(norm, channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        skip = x if self.padded else x[..., 2:-2, 2:-2]
        return skip + self.body(x)


class SRNet(nn.Module):
    """Super-resolution network of [S] Table 2 (x4) and its x8 version.

    9x9 conv 64 -> ``blocks`` padded residual blocks of ``channels`` -> ``log2(scale)`` x2 upsampling
    layers (each + norm + ReLU) -> 9x9 conv to 3 -> ``(tanh + 1) / 2``. Input ``(N, 3, h, w)`` float
    in ``[0, 1]`` (the low-resolution image), output ``(N, 3, scale*h, scale*w)`` in ``[0, 1]``.
    Convolutions are padded (the activations stay at the input size in [S]); ``padding_mode``
    ``"reflect"`` (default; avoids dark borders; inputs of at least 5x5) or ``"zeros"``.
    """

    def __init__(self, scale: int = 4, channels: int = 64, blocks: int = 4, upsample: str = "deconv",
                 norm: str = "batch", padding_mode: str = "reflect", head: str = "paper") -> None:
        super().__init__()
        if scale not in (2, 4, 8, 16):
            raise ValueError(f"scale must be a power of two (2, 4, 8, 16), got {scale!r}")
        _check(upsample, UPSAMPLES, "upsample")
        _check(norm, NORMS, "norm")
        _check(padding_mode, ("reflect", "zeros"), "padding_mode")
        _check(head, HEADS, "head")
        self.hparams = dict(scale=scale, channels=channels, blocks=blocks, upsample=upsample, norm=norm,
                            padding_mode=padding_mode, head=head)
        self.scale = scale
        c = channels
        self.head = nn.Sequential(_conv(3, c, 9, padding_mode=padding_mode), _norm(norm, c), nn.ReLU(inplace=True))
        self.blocks = nn.Sequential(*(ResidualBlock(c, norm, True, padding_mode) for _ in range(blocks)))
        ups: list[nn.Module] = []
        for _ in range(int(math.log2(scale))):
            ups += [_up(c, c, upsample, padding_mode), _norm(norm, c), nn.ReLU(inplace=True)]
        self.up = nn.Sequential(*ups)
        self.tail = _conv(c, 3, 9, padding_mode=padding_mode)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"SRNet expects (N, 3, h, w), got {tuple(x.shape)}")
        if self.hparams["padding_mode"] == "reflect" and min(x.shape[-2:]) < 5:
            raise ValueError(f"SRNet with reflection padding needs inputs of at least 5x5 pixels, "
                             f"got {x.shape[-2]}x{x.shape[-1]}")
        return _scaled_tanh(self.tail(self.up(self.blocks(self.head(x)))), self.hparams["head"])


def _reflect_pad(x: Tensor, pad: int) -> Tensor:
    """Reflection padding by ``pad`` on every side, repeated when the image is smaller than ``pad``."""
    while pad > 0:
        p = min(pad, x.shape[-1] - 1, x.shape[-2] - 1)
        if p < 1:  # a 1-pixel image cannot be reflected
            return F.pad(x, (pad,) * 4, mode="replicate")
        x = F.pad(x, (p,) * 4, mode="reflect")
        pad -= p
    return x


class TransformerNet(nn.Module):
    """Style-transfer network of [S] Table 1.

    9x9 conv ``c`` -> 3x3 stride-2 convs ``2c``, ``4c`` -> 5 residual blocks of ``4c`` -> two x2
    upsampling layers ``2c``, ``c`` -> 9x9 conv to 3 -> ``(tanh + 1) / 2``; norm + ReLU after every conv
    but the last. ``c = channels`` (32 in the paper; 16 is the official code's half-width option).

    ``padding="paper"``: reflection padding of 40 px at the input and unpadded residual-block convs
    with a centre-cropped skip ([S]; 5 blocks x 2 convs x 1 px x 4 (the 1/4 resolution) = 40).
    ``padding="same"``: no input padding, reflection-padded residual convs (pytorch/examples).
    Other convolutions are zero-padded (``k // 2``).

    Input ``(N, 3, H, W)`` float in ``[0, 1]``, any H, W; output ``(N, 3, H, W)`` in ``[0, 1]``.
    When H or W is not a multiple of 4 the two stride-2 convs round up (``ceil``), the network
    produces ``4 * ceil(H / 4)`` rows and the extra bottom rows / right columns are cropped; output
    pixel ``(i, j)`` is aligned with input pixel ``(i, j)`` in both cases. ``padding="same"`` needs
    at least 5x5 pixels; ``"paper"`` takes any size (the reflection repeats for images under 41 px).
    """

    def __init__(self, channels: int = 32, norm: str = "batch", padding: str = "paper",
                 upsample: str = "deconv", blocks: int = 5, head: str = "paper") -> None:
        super().__init__()
        _check(norm, NORMS, "norm")
        _check(padding, ("paper", "same"), "padding")
        _check(upsample, UPSAMPLES, "upsample")
        _check(head, HEADS, "head")
        self.hparams = dict(channels=channels, norm=norm, padding=padding, upsample=upsample, blocks=blocks,
                            head=head)
        self.input_pad = 8 * blocks if padding == "paper" else 0  # 2 px per side per block at 1/4 scale: 40 for 5
        c = channels

        def cnr(cin: int, cout: int, k: int, stride: int = 1) -> list[nn.Module]:
            return [_conv(cin, cout, k, stride), _norm(norm, cout), nn.ReLU(inplace=True)]

        self.down = nn.Sequential(*cnr(3, c, 9), *cnr(c, 2 * c, 3, 2), *cnr(2 * c, 4 * c, 3, 2))
        padded = padding == "same"
        self.blocks = nn.Sequential(*(ResidualBlock(4 * c, norm, padded, "reflect") for _ in range(blocks)))
        self.up = nn.Sequential(
            _up(4 * c, 2 * c, upsample, "reflect"), _norm(norm, 2 * c), nn.ReLU(inplace=True),
            _up(2 * c, c, upsample, "reflect"), _norm(norm, c), nn.ReLU(inplace=True),
        )
        self.tail = _conv(c, 3, 9)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"TransformerNet expects (N, 3, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        if not self.input_pad and min(h, w) < 5:
            raise ValueError(f"padding='same' needs images of at least 5x5 pixels, got {h}x{w}")
        if self.input_pad:
            x = _reflect_pad(x, self.input_pad)
        y = self.tail(self.up(self.blocks(self.down(x))))
        # y starts at the padded input's pixel `input_pad` (the residual crops) or at 0 ("same").
        return _scaled_tanh(y[..., :h, :w], self.hparams["head"])


NETS: dict[str, type[nn.Module]] = {"SRNet": SRNet, "TransformerNet": TransformerNet}


def build_net(name: str, hparams: dict) -> nn.Module:
    """Rebuild a network from its class name and ``hparams`` (as stored in checkpoints)."""
    if name not in NETS:
        raise ValueError(f"unknown network {name!r}; known: {sorted(NETS)}")
    return NETS[name](**hparams)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
