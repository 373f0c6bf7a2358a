"""One network interface for both backends, and the per-image function built on it.

A *network* here is a callable ``(N, 3, h, w)`` float in [0, 1] -> ``(N, 3, s*h, s*w)`` float32 in
[0, 1] on the CPU with attributes ``kind`` (``"TransformerNet"``/``"SRNet"``), ``scale``, ``align``,
``min_size``, ``train_step`` and ``runtime`` (e.g. ``"cpu, fp32"``): :class:`TorchNetwork` (a
checkpoint run by torch, precision policy of :mod:`perceptlib.precision`) or
:class:`~perceptlib.deploy.onnx.OnnxNetwork` (an exported file run by onnxruntime, fp32).
:func:`image_transform` adds tiling, histogram matching (SR) and colour preservation (style).

Typical use::

    net = load_network("results/h100/sr_x4_feat")                      # torch backend
    net = load_network("sr_x4.onnx", backend="onnxruntime")
    fn = image_transform(net, tile=256)                                # (3, h, w) -> (3, 4h, 4w)
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from torch import Tensor, nn

from .onnx import OnnxNetwork, network_geometry

__all__ = ["BACKENDS", "DEFAULT_OVERLAP", "TorchNetwork", "load_network", "image_transform"]

BACKENDS = ("torch", "onnxruntime")
#: Default tile overlap in input pixels: about the receptive field (57 px style, 15 LR px SR) plus margin.
DEFAULT_OVERLAP = {"TransformerNet": 64, "SRNet": 32}


class TorchNetwork:
    """A perceptlib ``nn.Module`` as a network (module docstring), run by
    :func:`perceptlib.train.infer` (eval mode, no grad) at ``precision`` (``auto``/``bf16``/``off``)."""

    def __init__(self, model: nn.Module, precision: str = "auto") -> None:
        from ..precision import resolve_precision

        geo = network_geometry(model)
        self.model, self.kind, self.scale = model, geo["kind"], geo["scale"]
        self.align, self.min_size = geo["align"], geo["min_size"]
        self.device = next(model.parameters()).device
        self.precision = resolve_precision(precision, self.device)
        self.train_step = getattr(model, "train_step", None)
        self.runtime = f"{self.device}, {self.precision}"

    def __call__(self, batch: Tensor) -> Tensor:
        from ..train import infer

        return infer(self.model, batch, self.precision).clamp_(0, 1)


def load_network(path: str | os.PathLike, backend: str = "torch", device: str = "auto", precision: str = "auto",
                 expect: str | None = None) -> TorchNetwork | OnnxNetwork:
    """The network in ``path``: a checkpoint (``model.pt``, ``checkpoint.pt`` or their folder) for
    ``backend="torch"``, an ``.onnx`` file from :func:`~perceptlib.deploy.onnx.export_onnx` for
    ``"onnxruntime"``. ``device``: ``auto`` (CUDA when available), ``cpu``, ``cuda``. ``expect``: the
    class it must be (``"TransformerNet"``/``"SRNet"``); ValueError otherwise. ``precision``: torch
    only (onnxruntime runs the fp32 graph; ``bf16`` is refused there)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend == "onnxruntime":
        if Path(path).suffix.lower() != ".onnx":
            raise ValueError(f"the onnxruntime backend runs an exported .onnx file (perceptlib export), got {path}")
        if precision == "bf16":
            raise ValueError("precision bf16 needs the torch backend; the exported ONNX graph runs in fp32")
        net: TorchNetwork | OnnxNetwork = OnnxNetwork(path, device=device)
    else:
        if Path(path).suffix.lower() == ".onnx":
            raise ValueError(f"{path} is an ONNX file: run it with the onnxruntime backend")
        from ..config import default_device
        from ..train import load_model

        dev = str(default_device()) if device in (None, "", "auto") else device
        net = TorchNetwork(load_model(path, expect=expect, device=dev), precision=precision)
    if expect is not None and net.kind != expect:
        raise ValueError(f"{path} holds a {net.kind} network, expected {expect}")
    return net


def image_transform(net: TorchNetwork | OnnxNetwork, tile: int = 0, overlap: int | None = None,
                    hist_match: bool = False, preserve_color: bool = False,
                    progress: bool = False) -> Callable[[Tensor], Tensor]:
    """``(3, H, W)`` float in [0, 1] -> ``(3, s*H, s*W)`` float32 in [0, 1]: ``net`` on the image, in
    ``tile``-pixel tiles overlapping by ``overlap`` (default :data:`DEFAULT_OVERLAP`) when ``tile > 0``
    (:func:`~perceptlib.deploy.tiles.run_tiled`), then :func:`perceptlib.sr.histogram_match` to the
    input (``hist_match``, SR) or :func:`~perceptlib.deploy.color.preserve_color` (style)."""
    from .tiles import run_tiled

    if hist_match and net.kind != "SRNet":
        raise ValueError("histogram matching is for super-resolution networks")
    if preserve_color and net.kind != "TransformerNet":
        raise ValueError("colour preservation is for style networks")
    if overlap is None:
        overlap = DEFAULT_OVERLAP[net.kind]
    if tile > 0 and tile < max(net.min_size, 2 * overlap):
        raise ValueError(f"tile {tile} is too small: it must be at least twice the overlap ({overlap}) "
                         f"and at least {net.min_size} px")

    def fn(image: Tensor) -> Tensor:
        out = run_tiled(net, image, tile, overlap, scale=net.scale, align=net.align, progress=progress)
        if hist_match:
            from ..sr import histogram_match

            out = histogram_match(out, image.float().cpu())
        if preserve_color:  # pixelwise: in strips of rows, without full-size temporaries
            from .color import preserve_color as keep_colour

            for y in range(0, out.shape[-2], 256):
                out[..., y:y + 256, :] = keep_colour(out[..., y:y + 256, :], image[..., y:y + 256, :])
        return out

    return fn
