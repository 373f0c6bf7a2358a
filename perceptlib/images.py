"""Reading and writing images as float tensors ``(3, H, W)`` in ``[0, 1]``.

Conversion rules of :func:`load_image` (any format Pillow reads: PNG, JPEG, WebP, BMP, TIFF, GIF, ...):

- the EXIF orientation tag is applied (photos come out upright);
- multi-frame files (GIF, TIFF) give their first frame;
- greyscale (``1``, ``L``, 16-bit ``I;16``/``I``) is replicated to three equal RGB channels;
  16-bit images are divided by 65535, 8-bit ones by 255;
- anything with transparency (``RGBA``, ``LA``, ``PA``, ``P`` or ``L``/``RGB`` with a transparent
  colour) is composited on **white**: ``rgb * alpha + 1 * (1 - alpha)``, in float;
- other modes (``CMYK``, ``YCbCr``, ``P``, ``HSV``, ...) go through Pillow's ``convert("RGB")``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["IMAGE_EXTENSIONS", "load_image", "save_image", "to_batch", "find_images", "pil_to_tensor"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".ppm", ".pgm", ".pnm")


def pil_to_tensor(img) -> Tensor:
    """A ``PIL.Image`` -> ``(3, H, W)`` float32 in ``[0, 1]`` with the conversion rules above."""
    mode = img.mode
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        arr = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        rgb, alpha = arr[..., :3], arr[..., 3:]
        arr = rgb * alpha + (1.0 - alpha)
    elif mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        raw = np.asarray(img).astype(np.float64)
        if raw.min() < 0 or raw.max() > 65535:
            raise ValueError(f"32-bit integer image with values outside [0, 65535] (mode {mode}) is not supported")
        arr = np.repeat((raw / 65535.0)[..., None], 3, axis=2).astype(np.float32)
    elif mode == "F":
        raw = np.asarray(img, dtype=np.float32)
        if not (np.isfinite(raw).all() and raw.min() >= 0 and raw.max() <= 1):
            raise ValueError("floating-point image (mode F) must hold finite values in [0, 1]")
        arr = np.repeat(raw[..., None], 3, axis=2)
    elif mode in ("1", "L"):
        arr = np.repeat((np.asarray(img.convert("L"), dtype=np.float32) / 255.0)[..., None], 3, axis=2)
    else:
        arr = np.asarray(img if mode == "RGB" else img.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1))).clamp_(0, 1)


def load_image(path: str | os.PathLike, size: int | Sequence[int] | None = None) -> Tensor:
    """Read an image file as ``(3, H, W)`` float32 in ``[0, 1]`` (conversion rules: module docstring).

    Args:
        path: image file.
        size: ``None`` keeps the size; an int makes the **longer** side that long, keeping the aspect
            ratio; ``(H, W)`` resizes to exactly that. Resampling is Pillow's antialiased bicubic
            on the 8-bit RGB image (after compositing).

    Raises:
        FileNotFoundError: ``path`` does not exist (the message names it).
        ValueError: the file is not a readable image, or ``size`` is invalid.
    """
    from PIL import Image, ImageOps

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image not found: {path}")
    if not path.is_file():
        raise ValueError(f"not an image file (is a directory?): {path}")
    try:
        with Image.open(path) as im:
            im.seek(0)
            im.load()
            im = ImageOps.exif_transpose(im)
            t = pil_to_tensor(im)
    except ValueError as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
    except Exception as e:  # UnidentifiedImageError, truncated files, decoder errors
        raise ValueError(f"cannot read image {path}: {type(e).__name__}: {e}") from e
    if size is not None:
        t = _resize(t, _target_size(t.shape[-2:], size))
    return t


def _target_size(hw: Sequence[int], size: int | Sequence[int]) -> tuple[int, int]:
    h, w = int(hw[0]), int(hw[1])
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        f = size / max(h, w)
        return max(1, round(h * f)), max(1, round(w * f))
    ints = isinstance(size, (tuple, list)) and all(isinstance(s, (int, np.integer)) for s in size)
    if ints and len(size) == 2 and min(size) >= 1:
        return int(size[0]), int(size[1])
    raise ValueError(f"size must be a positive int (longer side) or (H, W), got {size!r}")


def _resize(t: Tensor, hw: tuple[int, int]) -> Tensor:
    from PIL import Image

    if tuple(t.shape[-2:]) == hw:
        return t
    arr = (t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    im = Image.fromarray(arr, "RGB").resize((hw[1], hw[0]), Image.Resampling.BICUBIC)
    return pil_to_tensor(im)


def to_batch(x: Tensor) -> Tensor:
    """``(3, H, W)`` -> ``(1, 3, H, W)``; ``(N, 3, H, W)`` unchanged; other shapes raise ValueError."""
    if not isinstance(x, Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 3 and x.shape[0] == 3:
        return x.unsqueeze(0)
    if x.ndim == 4 and x.shape[1] == 3:
        return x
    raise ValueError(f"expected an image of shape (3, H, W) or (N, 3, H, W), got {tuple(x.shape)}")


def save_image(t: Tensor, path: str | os.PathLike, quality: int = 95) -> Path:
    """Write ``(3, H, W)`` or ``(1, 3, H, W)`` float in ``[0, 1]`` as an 8-bit RGB image.

    Values are clamped to ``[0, 1]`` and rounded to the nearest of 256 levels. The format follows the
    file extension (JPEG/WebP with ``quality``). Parent directories are created. Returns the path.
    Raises ValueError for other shapes, NaN values or an unknown extension; TypeError for non-float.
    """
    from PIL import Image

    if not isinstance(t, Tensor):
        raise TypeError(f"expected a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"expected a float tensor in [0, 1], got dtype {t.dtype}")
    if t.ndim == 4 and t.shape[0] == 1:
        t = t[0]
    if t.ndim != 3 or t.shape[0] != 3:
        raise ValueError(f"save_image expects (3, H, W) or (1, 3, H, W), got {tuple(t.shape)}")
    if torch.isnan(t).any():
        raise ValueError("image holds NaN values")
    path = Path(path)
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise ValueError(f"unknown image extension {path.suffix!r} for {path}; use one of {IMAGE_EXTENSIONS}")
    arr = (t.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    kwargs = {"quality": quality} if path.suffix.lower() in (".jpg", ".jpeg", ".webp") else {}
    Image.fromarray(np.ascontiguousarray(arr), "RGB").save(path, **kwargs)
    return path


def find_images(directory: str | os.PathLike) -> list[Path]:
    """Image files (by extension, case-insensitive) directly in ``directory``, sorted by name.

    Raises FileNotFoundError when the directory is missing and ValueError when it holds no image.
    """
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"image directory not found: {d}")
    paths = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not paths:
        raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in {d}")
    return paths
