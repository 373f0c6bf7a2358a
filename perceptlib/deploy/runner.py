"""One network interface for both backends, and the per-image function built on it.

A *network* here is a callable ``(N, 3, h, w)`` float in [0, 1] -> ``(N, 3, s*h, s*w)`` float32 in
[0, 1] on the CPU with attributes ``kind`` (``"TransformerNet"``/``"SRNet"``), ``scale``, ``align``,
``min_size``, ``train_step`` and ``runtime`` (e.g. ``"cpu, fp32"``): :class:`TorchNetwork` (a
checkpoint run by torch, precision policy of :mod:`perceptlib.precision`) or
:class:`~perceptlib.deploy.onnx.OnnxNetwork` (an exported file run by onnxruntime, fp32).
:func:`image_transform` adds tiling, histogram matching (SR) and colour preservation (style).

``compile=True`` runs a torch network through :func:`torch.compile` (inductor, weights frozen into the
graph, inference only): the first call at each input shape compiles (about 30 s on a 2-core CPU), the
later ones reuse that graph, so it pays off for videos (one frame size), tiles (one or a few tile shapes)
and folders of equally sized images. In bf16 the graph runs the network in bf16 throughout
(:data:`COMPILED_BF16_FORM`).

Typical use::

    net = load_network("results/h100/sr_x4_feat")                      # torch backend
    net = load_network("sr_x4.onnx", backend="onnxruntime")
    net = load_network("results/style_starry_night", compile=True)     # torch.compile'd
    fn = image_transform(net, tile=256)                                # (3, h, w) -> (3, 4h, 4w)
"""
from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from .onnx import OnnxNetwork, network_geometry

__all__ = ["BACKENDS", "COMPILED_BF16_FORM", "DEFAULT_OVERLAP", "TorchNetwork", "load_network", "image_transform"]

BACKENDS = ("torch", "onnxruntime")
#: Default tile overlap in input pixels: about the receptive field (57 px style, 15 LR px SR) plus margin.
DEFAULT_OVERLAP = {"TransformerNet": 64, "SRNet": 32}
#: How a compiled network runs in bf16: ``"pure"`` (a bf16 copy of the model, ``model.bfloat16()``: bf16
#: weights and activations) or ``"autocast"`` (fp32 weights, bf16 autocast inside the graph). Both give the
#: same output of a trained style network (44.3 dB PSNR against fp32 eager on a photo at 512x512); the
#: pure form is the faster one (benchmarks/bench_deploy.py; the autocast form is kept for comparison).
COMPILED_BF16_FORM = "pure"
#: Input shapes a compiled network compiles a graph for (videos and images of one size: one; tiles: up
#: to four); inputs of further shapes run eagerly (with a warning), each compilation costing ~30 s.
COMPILED_SHAPES = 16


class _Graph(nn.Module):
    """What is compiled: ``(N, 3, h, w)`` float32 -> the network's output clamped to [0, 1], float32, in
    ``form`` (``"fp32"``, or a bf16 form of :data:`COMPILED_BF16_FORM`); input cast, network, head and
    clamp fuse into one graph."""

    def __init__(self, net: nn.Module, form: str, device_type: str) -> None:
        super().__init__()
        self.net, self.form, self.device_type = net, form, device_type

    def forward(self, x: Tensor) -> Tensor:
        if self.form == "autocast":
            with torch.autocast(self.device_type, dtype=torch.bfloat16):
                y = self.net(x)
        elif self.form == "pure":
            y = self.net(x.to(torch.bfloat16))
        else:
            y = self.net(x)
        return y.float().clamp(0, 1)


def _fold_batch_norms(model: nn.Module) -> nn.Module:
    """``model`` (eval mode) with every ``Conv2d``/``ConvTranspose2d`` followed by a ``BatchNorm2d`` in
    an ``nn.Sequential`` replaced by one convolution with the norm folded in (the norm by an identity),
    in place. Inductor's freezing folds such norms itself but scales a transposed convolution's weight
    along its input channels (wrong output, e.g. 20 dB for the trained x4 SR network, when the two
    channel counts are equal; torch 2.14), so the compiled graph gets them folded already."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            conv, bn = seq[i], seq[i + 1]
            if (isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(bn, nn.BatchNorm2d)
                    and bn.track_running_stats and bn.running_mean is not None):
                seq[i] = fuse_conv_bn_eval(conv, bn, transpose=isinstance(conv, nn.ConvTranspose2d))
                seq[i + 1] = nn.Identity()
    return model


def _compiled_graph(model: nn.Module, precision: str, device: torch.device, form: str | None = None) -> nn.Module:
    """``torch.compile`` (inductor, static shapes, full graph) of a :class:`_Graph` over an eval-mode
    deep copy of ``model`` (bf16 for the pure form) in resolved ``precision`` (``"bf16"``/``"fp32"``);
    ``form`` overrides :data:`COMPILED_BF16_FORM`. Compilation itself happens at the first call, which
    must run under :func:`_compile_context`."""
    if precision == "bf16":
        form = form or COMPILED_BF16_FORM
        if form not in ("pure", "autocast"):
            raise ValueError(f"unknown bf16 form {form!r}; expected 'pure' or 'autocast'")
    else:
        form = "fp32"
    net = _fold_batch_norms(copy.deepcopy(model).eval().requires_grad_(False))
    if form == "pure":
        net = net.to(torch.bfloat16)
    return torch.compile(_Graph(net, form, device.type), backend="inductor", dynamic=False, fullgraph=True)


def _compile_context():
    """Inference without grad, inductor's ``freezing`` on (weights folded into the graph as constants)
    and room for the graphs of many networks (torch counts them per function: all networks together):
    for the compiled call only, the settings restored after."""
    import contextlib

    import torch._dynamo.config
    import torch._inductor.config

    stack = contextlib.ExitStack()
    stack.enter_context(torch.no_grad())
    stack.enter_context(torch._inductor.config.patch(freezing=True))
    limit = max(torch._dynamo.config.accumulated_recompile_limit, 1024)
    stack.enter_context(torch._dynamo.config.patch(recompile_limit=limit, accumulated_recompile_limit=limit))
    return stack


class TorchNetwork:
    """A perceptlib ``nn.Module`` as a network (module docstring), run by
    :func:`perceptlib.train.infer` (eval mode, no grad) at ``precision`` (``auto``/``bf16``/``off``);
    with ``compile``, by :func:`torch.compile` instead (module docstring; ``model`` itself is left as it
    is: the graph is built over a copy). ``compiled_shapes``: the input shapes compiled so far."""

    def __init__(self, model: nn.Module, precision: str = "auto", compile: bool = False) -> None:
        from ..precision import resolve_precision

        geo = network_geometry(model)
        self.model, self.kind, self.scale = model, geo["kind"], geo["scale"]
        self.align, self.min_size = geo["align"], geo["min_size"]
        self.device = next(model.parameters()).device
        self.precision = resolve_precision(precision, self.device)
        self.train_step = getattr(model, "train_step", None)
        self.compiled = bool(compile)
        self._graph = _compiled_graph(model, self.precision, self.device) if compile else None
        self.compiled_shapes: set[tuple[int, ...]] = set()
        self._warned = False
        self.runtime = f"{self.device}, {self.precision}" + (", compiled" if compile else "")

    def __call__(self, batch: Tensor) -> Tensor:
        shape = tuple(batch.shape)
        if self._graph is not None and (shape in self.compiled_shapes or len(self.compiled_shapes) < COMPILED_SHAPES):
            with _compile_context():  # contiguous: tiles (views) and whole images of one size share a graph
                out = self._graph(batch.to(self.device, torch.float32).contiguous()).cpu()
            self.compiled_shapes.add(shape)
            return out
        if self._graph is not None and not self._warned:
            import warnings

            warnings.warn(f"{COMPILED_SHAPES} input shapes compiled already: {shape} and further new shapes run "
                          "eagerly", stacklevel=2)
            self._warned = True
        from ..train import infer

        return infer(self.model, batch, self.precision).clamp_(0, 1)


def load_network(path: str | os.PathLike, backend: str = "torch", device: str = "auto", precision: str = "auto",
                 expect: str | None = None, compile: bool = False) -> TorchNetwork | OnnxNetwork:
    """The network in ``path``: a checkpoint (``model.pt``, ``checkpoint.pt`` or their folder) for
    ``backend="torch"``, an ``.onnx`` file from :func:`~perceptlib.deploy.onnx.export_onnx` for
    ``"onnxruntime"``. ``device``: ``auto`` (CUDA when available), ``cpu``, ``cuda``. ``expect``: the
    class it must be (``"TransformerNet"``/``"SRNet"``); ValueError otherwise. ``precision``: torch
    only (onnxruntime runs the fp32 graph; ``bf16`` is refused there). ``compile``: torch only
    (:class:`TorchNetwork`); ValueError with onnxruntime."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
    if backend == "onnxruntime":
        if compile:
            raise ValueError("compile (torch.compile) needs the torch backend; onnxruntime runs the exported "
                             "graph with its own optimisations")
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
        net = TorchNetwork(load_model(path, expect=expect, device=dev), precision=precision, compile=compile)
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
