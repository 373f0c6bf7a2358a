"""The frozen VGG-16 loss network with named taps (``conv1_1`` ... ``relu5_3``, ``pool1`` ... ``pool5``).

Unlike ``torchvision.models.vgg16().features`` (in-place ReLUs), a ``conv*`` tap here is the
convolution's output before its ReLU, so conv and relu taps of the same layer differ.
"""
from __future__ import annotations

import os
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from .weights import CONV_CHANNELS, CONV_NAMES, WeightsInfo, resolve_vgg16

__all__ = ["LAYER_NAMES", "LossNetwork", "min_input_size", "layer_channels"]


def _layer_names() -> tuple[str, ...]:
    names: list[str] = []
    for block, convs in enumerate((2, 2, 3, 3, 3), start=1):
        for i in range(1, convs + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return tuple(names)


#: Every tap of VGG-16 in network order.
LAYER_NAMES: tuple[str, ...] = _layer_names()

# Input normalisation per weights family: (mean, std, bgr), with mean/std in the network's channel order.
# torchvision: RGB in [0, 1], ImageNet mean/std. caffe: RGB [0, 1] -> BGR, x255, minus the BGR mean,
# i.e. (x_bgr - mean_bgr / 255) / (1 / 255).
_NORMALISATION = {
    "torchvision": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), False),
    "caffe": ((103.939 / 255, 116.779 / 255, 123.68 / 255), (1 / 255, 1 / 255, 1 / 255), True),
}


def _check_layers(layers: Iterable[str]) -> tuple[str, ...]:
    if isinstance(layers, str):
        layers = (layers,)
    layers = tuple(dict.fromkeys(layers))
    if not layers:
        raise ValueError("LossNetwork needs at least one layer; valid names: " + ", ".join(LAYER_NAMES))
    unknown = [n for n in layers if n not in LAYER_NAMES]
    if unknown:
        raise ValueError(f"unknown VGG-16 layer(s) {unknown}; valid names: " + ", ".join(LAYER_NAMES))
    return layers


def min_input_size(layer: str) -> int:
    """Smallest image side that still gives a non-empty ``layer`` output (2 ** pools passed)."""
    idx = LAYER_NAMES.index(_check_layers((layer,))[0])
    return 2 ** sum(1 for n in LAYER_NAMES[: idx + 1] if n.startswith("pool"))


def layer_channels(layer: str) -> int:
    """Number of channels of a tap (64 ... 512)."""
    block = int(_check_layers((layer,))[0][4])  # conv1_1, relu1_1, pool1: the block digit is at index 4
    return {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}[block]


class LossNetwork(nn.Module):
    """Frozen, truncated VGG-16 returning the requested taps.

    ``forward(x)``: ``x`` is ``(N, 3, H, W)`` float RGB in [0, 1]; returns ``{name: (N, C, H', W')}``
    in the order of ``layers``. ``weights``: ``"torchvision"`` (ImageNet, default), ``"caffe"`` (the
    paper's Caffe VGG-16), a path to a state dict, or ``None`` (random init; for tests only).
    The network stops after the deepest requested tap, never trains (``.train()`` is ignored) and
    its parameters never require grad.
    """

    def __init__(self, layers: Iterable[str] = ("relu2_2",), weights: str | os.PathLike | None = "torchvision",
                 check_range: bool = True) -> None:
        super().__init__()
        self.layers = _check_layers(layers)
        self.check_range = check_range
        deepest = max(LAYER_NAMES.index(n) for n in self.layers)
        self.min_size = min_input_size(LAYER_NAMES[deepest])
        tapped = set(self.layers)
        modules: dict[str, nn.Module] = {}
        cin = 3
        for name in LAYER_NAMES[: deepest + 1]:
            if name.startswith("conv"):
                cout = CONV_CHANNELS[CONV_NAMES.index(name)]
                modules[name] = nn.Conv2d(cin, cout, 3, padding=1)
                cin = cout
            elif name.startswith("relu"):
                # In place only when nobody reads the conv output it would overwrite.
                modules[name] = nn.ReLU(inplace="conv" + name[4:] not in tapped)
            else:
                modules[name] = nn.MaxPool2d(2, 2)
        self.body = nn.Sequential(*modules.values())
        self.names = tuple(modules)

        family = "caffe" if weights == "caffe" else "torchvision"
        mean, std, bgr = _NORMALISATION[family]
        self.bgr = bgr
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.weights_info: WeightsInfo | None = None
        if weights is not None:
            sd, self.weights_info = resolve_vgg16(weights)
            convs = {n: m for n, m in modules.items() if n.startswith("conv")}
            missing = [n for n in convs if f"{n}.weight" not in sd]
            if missing:
                raise ValueError(f"the weights ({self.weights_info.source}) stop before {missing[0]}, which layer "
                                 f"{LAYER_NAMES[deepest]!r} needs; use a fuller export or the full weights")
            for n, m in convs.items():
                m.weight.data.copy_(sd[f"{n}.weight"])
                m.bias.data.copy_(sd[f"{n}.bias"])
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> LossNetwork:
        """Ignored: the loss network always stays in eval mode."""
        return super().train(False)

    def extra_repr(self) -> str:
        src = self.weights_info.name if self.weights_info else "random"
        return f"layers={list(self.layers)}, weights={src}"

    def _check(self, x: Tensor) -> None:
        if not isinstance(x, Tensor):
            raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected an (N, 3, H, W) RGB batch, got shape {tuple(x.shape)}"
                             + ("; add a batch dim with x[None]" if x.dim() == 3 else ""))
        if not x.is_floating_point():
            raise TypeError(f"expected a float image in [0, 1], got dtype {x.dtype}; use x.float() / 255")
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(f"image {tuple(x.shape[-2:])} is too small for layer {self.layers[-1]!r}: "
                             f"the deepest tap needs at least {self.min_size}x{self.min_size} pixels")
        if self.check_range and not torch.compiler.is_compiling():  # a host sync: would split a compiled graph
            lo, hi = (float(v) for v in torch.aminmax(x.detach()))
            if lo != lo or hi != hi:
                raise ValueError("input contains NaN")
            if lo < -0.5 or hi > 1.5:
                hint = " (it looks like 0-255: divide by 255)" if hi > 2 else ""
                raise ValueError(f"expected values in [0, 1], got [{lo:.3g}, {hi:.3g}]{hint}")

    def normalise(self, x: Tensor) -> Tensor:
        """Map RGB in [0, 1] to the input space the weights were trained on."""
        if self.bgr:
            x = x.flip(1)
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward(self, x: Tensor, layers: Iterable[str] | None = None) -> dict[str, Tensor]:
        """Taps of ``x`` ``(N, 3, H, W)`` in [0, 1]: all of ``self.layers``, or the subset ``layers``
        (the pass then stops at the deepest of them)."""
        layers = self.layers if layers is None else _check_layers(layers)
        extra = [n for n in layers if n not in self.layers]
        if extra:
            raise ValueError(f"layer(s) {extra} are not tapped by this network (it taps {list(self.layers)})")
        self._check(x)
        if not torch.is_autocast_enabled(x.device.type):
            x = x.to(self.mean.dtype)
        x = self.normalise(x)
        wanted, out = set(layers), {}
        for name, module in zip(self.names, self.body):
            x = module(x)
            if name in wanted:
                out[name] = x
                if len(out) == len(wanted):
                    break
        return {n: out[n] for n in layers}
