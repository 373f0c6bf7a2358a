"""ONNX export of the trained networks and an onnxruntime runner for the exported files.

:func:`export_onnx` uses the dynamo exporter (``torch.onnx.export(..., dynamo=True)``, opset
:data:`DEFAULT_OPSET`) with dynamic batch, height and width. The graph is the network followed by a
clamp to [0, 1], i.e. what :func:`perceptlib.style.stylize` / :func:`perceptlib.sr.upscale` return,
in float32. Its input is ``image`` ``(N, 3, H, W)`` float32 in [0, 1], its output ``output``
``(N, 3, s*H, s*W)`` (``s`` = 1 for style, the SR scale for SR).

Smallest input the exported graph accepts (:func:`export_min_size`): ``TransformerNet`` with
``padding="paper"``: 41x41 (the 40-pixel reflection padding becomes one ``Pad``, which needs 41 pixels;
the torch network repeats the reflection for smaller images); ``padding="same"`` and ``SRNet`` with
reflection padding: 5x5; ``SRNet`` with zero padding: 1x1. Use tiles or the torch backend below that.

The file carries ``perceptlib.*`` metadata (class, hyper-parameters, scale, minimum size, training
step) that :class:`OnnxNetwork` reads. Needs the ``deploy`` extra: ``pip install 'perceptlib[deploy]'``.
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["DEFAULT_OPSET", "export_onnx", "export_min_size", "network_geometry", "OnnxNetwork", "load_onnx",
           "onnx_max_abs_diff"]

DEFAULT_OPSET = 23
_INSTALL = "pip install 'perceptlib[deploy]' (or: pip install onnx onnxruntime onnxscript)"


def network_geometry(model: nn.Module) -> dict:
    """``{"kind", "scale", "align", "min_size"}`` of a perceptlib network: its class name, upscaling
    factor, the stride tiles must be aligned to, and the smallest side the *torch* network takes."""
    kind = type(model).__name__
    hp = getattr(model, "hparams", {})
    if kind == "TransformerNet":
        return {"kind": kind, "scale": 1, "align": 4, "min_size": 1 if hp.get("padding") == "paper" else 5}
    if kind == "SRNet":
        return {"kind": kind, "scale": int(hp["scale"]), "align": 1,
                "min_size": 5 if hp.get("padding_mode") == "reflect" else 1}
    raise ValueError(f"expected a TransformerNet or SRNet, got {kind}")


def export_min_size(model: nn.Module) -> int:
    """The smallest height/width the exported graph of ``model`` accepts (module docstring)."""
    geo = network_geometry(model)
    if geo["kind"] == "TransformerNet" and model.hparams.get("padding") == "paper":
        return int(model.input_pad) + 1
    return geo["min_size"]


class _Clamped(nn.Module):
    """The exported graph: ``net(image).clamp(0, 1)``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: Tensor) -> Tensor:
        return self.net(image).clamp(0, 1)


def export_onnx(model: nn.Module, path: str | os.PathLike, opset: int = DEFAULT_OPSET) -> Path:
    """Write ``model`` (a :class:`~perceptlib.nets.TransformerNet` or :class:`~perceptlib.nets.SRNet`)
    to ``path`` as ONNX with dynamic batch/height/width (module docstring). The file is written to a
    temporary name next to ``path`` and renamed when complete. Returns ``path``."""
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter's op library)
    except ImportError as e:
        raise ImportError(f"ONNX export needs onnx and onnxscript: {_INSTALL}") from e
    from .media import atomic_path

    geo = network_geometry(model)
    lo = export_min_size(model)
    net = _Clamped(copy.deepcopy(model).float().cpu().eval()).eval()
    example = torch.rand(1, 3, max(64, lo), max(64, lo))
    dims = {0: torch.export.Dim("batch"), 2: torch.export.Dim("height", min=lo),
            3: torch.export.Dim("width", min=lo)}
    with torch.no_grad():
        program = torch.onnx.export(net, (example,), dynamo=True, opset_version=opset, input_names=["image"],
                                    output_names=["output"], dynamic_shapes={"image": dims}, verbose=False)
    meta = {"class": geo["kind"], "hparams": json.dumps(model.hparams, sort_keys=True), "scale": geo["scale"],
            "align": geo["align"], "min_size": lo, "train_step": getattr(model, "train_step", None),
            "format": "perceptlib-onnx-1"}
    for k, v in meta.items():
        program.model.metadata_props[f"perceptlib.{k}"] = "" if v is None else str(v)
    path = Path(path)
    with atomic_path(path) as tmp:
        program.save(str(tmp), external_data=False)
    return path


class OnnxNetwork:
    """An exported perceptlib network run by onnxruntime.

    ``net(batch)``: ``(N, 3, h, w)`` float in [0, 1] -> ``(N, 3, scale*h, scale*w)`` float32 in [0, 1]
    on the CPU, ``h, w >= min_size``. Attributes ``kind`` (``"TransformerNet"``/``"SRNet"``),
    ``hparams``, ``scale``, ``align``, ``min_size``, ``train_step``, ``path``, ``providers``, ``runtime``.
    ``device``: ``cpu`` or ``cuda`` (needs onnxruntime-gpu); ``threads``: intra-op threads (default:
    torch's, which follows ``OMP_NUM_THREADS``).
    """

    def __init__(self, path: str | os.PathLike, device: str = "cpu", threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise ImportError(f"the onnxruntime backend needs onnxruntime: {_INSTALL}") from e
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {self.path}")
        has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        dev = ("cuda" if has_cuda else "cpu") if str(device) == "auto" else str(device)
        providers = ["CPUExecutionProvider"]
        if dev.startswith("cuda"):
            if not has_cuda:
                raise RuntimeError("this onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu); "
                                   "use --device cpu")
            providers.insert(0, "CUDAExecutionProvider")
        elif dev != "cpu":
            raise ValueError(f"unknown device {device!r} for onnxruntime; use cpu, cuda or auto")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=opts, providers=providers)
        except Exception as e:  # onnxruntime's own exception types
            raise ValueError(f"cannot load ONNX model {self.path}: {str(e).splitlines()[0]}") from e
        meta = self.session.get_modelmeta().custom_metadata_map
        if "perceptlib.class" not in meta:
            raise ValueError(f"{self.path} holds no perceptlib metadata (export it with `perceptlib export`)")
        self.kind = meta["perceptlib.class"]
        self.hparams = json.loads(meta.get("perceptlib.hparams", "{}"))
        self.scale, self.align = int(meta["perceptlib.scale"]), int(meta["perceptlib.align"])
        self.min_size = int(meta["perceptlib.min_size"])
        self.train_step = int(meta["perceptlib.train_step"]) if meta.get("perceptlib.train_step") else None
        self.providers = self.session.get_providers()
        self.runtime = f"onnxruntime {self.providers[0].removesuffix('ExecutionProvider')}, fp32"
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name

    def __repr__(self) -> str:
        return f"OnnxNetwork({str(self.path)!r}, kind={self.kind!r}, scale={self.scale}, providers={self.providers})"

    def __call__(self, batch: Tensor) -> Tensor:
        if not isinstance(batch, Tensor) or batch.dim() != 4 or batch.shape[1] != 3:
            got = tuple(batch.shape) if isinstance(batch, Tensor) else type(batch).__name__
            raise ValueError(f"expected an (N, 3, h, w) tensor, got {got}")
        h, w = batch.shape[-2:]
        if min(h, w) < self.min_size:
            raise ValueError(f"{self.path.name} accepts images of at least {self.min_size}x{self.min_size} "
                             f"pixels, got {h}x{w} (use the torch backend)")
        x = batch.detach().float().cpu().contiguous().numpy()
        return torch.from_numpy(self.session.run([self.output_name], {self.input_name: x})[0])


def load_onnx(path: str | os.PathLike, device: str = "cpu", threads: int | None = None) -> OnnxNetwork:
    """An :class:`OnnxNetwork` for an ``.onnx`` file written by :func:`export_onnx`."""
    return OnnxNetwork(path, device=device, threads=threads)


def onnx_max_abs_diff(model: nn.Module, onnx_net: OnnxNetwork, sizes: tuple[tuple[int, int], ...] = ((64, 64),),
                      batch: int = 1, seed: int = 0) -> float:
    """Largest ``|onnxruntime - torch|`` (fp32, clamped outputs) over random images of ``sizes`` (h, w)."""
    g = torch.Generator().manual_seed(seed)
    m = copy.deepcopy(model).float().cpu().eval()
    worst = 0.0
    for h, w in sizes:
        x = torch.rand(batch, 3, h, w, generator=g)
        with torch.no_grad():
            ref = m(x).clamp(0, 1)
        worst = max(worst, float((onnx_net(x) - ref).abs().max()))
    return worst
