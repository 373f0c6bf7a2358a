"""Applying an image function to an image file, a folder (mirrored) or a video, writing atomically.

An *image function* maps ``(3, H, W)`` float in [0, 1] to ``(3, H', W')`` float in [0, 1] (e.g.
:func:`perceptlib.deploy.runner.image_transform`). Every output is written to a hidden temporary file
in its destination folder and renamed when complete, so a failure (unreadable input, error in the
network, interruption) leaves no half-written file; in a folder, the files already done stay.

Typical use::

    fn = image_transform(load_network("results/h100/style_great_wave"))
    transform_path(fn, "photos/", "stylised/")        # same relative paths below stylised/
    transform_path(fn, "clip.mp4", "clip_styled.mp4")
"""
from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..images import IMAGE_EXTENSIONS, load_image

__all__ = ["VIDEO_EXTENSIONS", "ImageFn", "MediaError", "media_kind", "atomic_path", "to_uint8", "save_rgb",
           "transform_image", "transform_folder", "transform_path", "summarize"]

VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm")
ImageFn = Callable[[Tensor], Tensor]


class MediaError(RuntimeError):
    """A file of a folder could not be processed (the message names it)."""


def media_kind(path: str | os.PathLike) -> str | None:
    """``"image"``, ``"video"`` or ``None`` from the file extension (case-insensitive)."""
    suffix = Path(path).suffix.lower()
    return "image" if suffix in IMAGE_EXTENSIONS else "video" if suffix in VIDEO_EXTENSIONS else None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same extension, hidden name); on normal exit it replaces
    ``path``, on an exception it is deleted. Parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial-{secrets.token_hex(4)}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def to_uint8(t: Tensor, rows: int = 512) -> np.ndarray:
    """``(3, H, W)`` float in [0, 1] -> ``(H, W, 3)`` uint8, converted ``rows`` rows at a time (no
    full-size float temporaries for large images)."""
    out = np.empty((t.shape[-2], t.shape[-1], 3), dtype=np.uint8)
    for y in range(0, t.shape[-2], rows):
        part = t[:, y:y + rows].detach().float().cpu().clamp(0, 1).mul_(255).round_().to(torch.uint8)
        out[y:y + rows] = part.permute(1, 2, 0).numpy()
    return out


def save_rgb(t: Tensor, path: str | os.PathLike, quality: int = 95) -> Path:
    """Write ``(3, H, W)`` float in [0, 1] as an 8-bit RGB image (format from the extension, JPEG/WebP
    at ``quality``), atomically. Raises ValueError for NaN, other shapes or an unknown extension."""
    from PIL import Image

    path = Path(path)
    if media_kind(path) != "image":
        raise ValueError(f"unknown image extension {path.suffix!r} for {path}; use one of {IMAGE_EXTENSIONS}")
    if not isinstance(t, Tensor) or t.dim() != 3 or t.shape[0] != 3 or not t.is_floating_point():
        raise ValueError(f"expected a (3, H, W) float tensor, got {getattr(t, 'shape', type(t).__name__)}")
    if torch.isnan(t).any():
        raise ValueError("image holds NaN values")
    kwargs = {"quality": quality} if path.suffix.lower() in (".jpg", ".jpeg", ".webp") else {}
    with atomic_path(path) as tmp:
        Image.fromarray(to_uint8(t), "RGB").save(tmp, format=Image.registered_extensions()[path.suffix.lower()],
                                                 **kwargs)
    return path


def transform_image(fn: ImageFn, src: str | os.PathLike, dst: str | os.PathLike, quality: int = 95) -> dict:
    """``fn`` on one image file -> ``dst`` (an image file). Returns ``{"input", "output", "size_in",
    "size_out"}`` with sizes as ``(W, H)``."""
    img = load_image(src)
    out = fn(img)
    path = save_rgb(out, dst, quality=quality)
    return {"input": Path(src), "output": path, "size_in": (img.shape[-1], img.shape[-2]),
            "size_out": (out.shape[-1], out.shape[-2])}


def _media_files(folder: Path, skip: Path | None) -> list[Path]:
    files = []
    for p in sorted(folder.rglob("*")):
        if any(part.startswith(".") for part in p.relative_to(folder).parts) or media_kind(p) is None:
            continue
        if not p.is_file() or (skip is not None and skip in p.resolve().parents):
            continue
        files.append(p)
    return files


def transform_folder(fn: ImageFn, src: str | os.PathLike, dst: str | os.PathLike, progress: bool = True,
                     quality: int = 95) -> list[dict]:
    """``fn`` on every image and video below ``src`` (recursively; hidden files skipped), written to the
    same relative path below ``dst``. Stops at the first failure with a :class:`MediaError` naming the
    file; the outputs written before it stay. Returns one record per file (as :func:`transform_image`)."""
    from tqdm.auto import tqdm

    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise FileNotFoundError(f"input folder not found: {src}")
    if dst.exists() and not dst.is_dir():
        raise ValueError(f"the output of a folder must be a folder, {dst} is a file")
    s, d = src.resolve(), dst.resolve()
    if d == s:
        raise ValueError(f"output folder {dst} is the input folder; choose another one")
    files = _media_files(src, d if s in d.parents else None)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) or videos ({', '.join(VIDEO_EXTENSIONS)}) "
                         f"below {src}")
    done = []
    for f in tqdm(files, unit="file", disable=not progress, desc=src.name):
        target = dst / f.relative_to(src)
        try:
            done.append(_transform_file(fn, f, target, progress=False, quality=quality))
        except Exception as e:
            raise MediaError(f"{f} failed ({len(done)} of {len(files)} files written to {dst}): "
                             f"{type(e).__name__}: {e}") from e
    return done


def _transform_file(fn: ImageFn, src: Path, dst: Path, progress: bool, quality: int) -> dict:
    if media_kind(src) == "video":
        from .video import transform_video

        return transform_video(fn, src, dst, progress=progress)
    return transform_image(fn, src, dst, quality=quality)


def transform_path(fn: ImageFn, src: str | os.PathLike, dst: str | os.PathLike, progress: bool = True,
                   quality: int = 95) -> list[dict]:
    """``fn`` on an image file, a video file (:data:`VIDEO_EXTENSIONS`) or a folder of them
    (:func:`transform_folder`). A file's output may be an existing folder (the input's name is kept);
    an image must go to an image, a video to a video. Returns one record per file."""
    src, dst = Path(src), Path(dst)
    if src.is_dir():
        return transform_folder(fn, src, dst, progress=progress, quality=quality)
    if not src.exists():
        raise FileNotFoundError(f"input not found: {src}")
    kind = media_kind(src)
    if kind is None:
        raise ValueError(f"unknown input type {src.suffix!r} for {src}: expected an image "
                         f"({', '.join(IMAGE_EXTENSIONS)}), a video ({', '.join(VIDEO_EXTENSIONS)}) or a folder")
    if dst.is_dir():
        dst = dst / src.name
    if media_kind(dst) != kind:
        allowed = IMAGE_EXTENSIONS if kind == "image" else VIDEO_EXTENSIONS
        raise ValueError(f"the output of {kind} {src.name} must be a{'n' if kind == 'image' else ''} {kind} "
                         f"file ({', '.join(allowed)}) or a folder, got {dst}")
    return [_transform_file(fn, src, dst, progress=progress, quality=quality)]


def summarize(records: list[dict], src: str | os.PathLike, dst: str | os.PathLike) -> str:
    """One line describing what :func:`transform_path` did (sizes as ``WxH``)."""
    def size(s: tuple[int, int]) -> str:
        return f"{s[0]}x{s[1]}"

    if Path(src).is_dir():
        videos = sum(1 for r in records if "frames" in r)
        return (f"{src}: {len(records) - videos} images and {videos} videos -> {dst} "
                f"(same relative paths)")
    r = records[0]
    if "frames" in r:
        audio = f"audio {r['audio']}" if r["audio"] else "no audio"
        return (f"{r['input']} {size(r['size_in'])}, {r['frames']} frames at {r['fps']:.4g} fps -> {r['output']} "
                f"{size(r['size_out'])} ({audio})")
    return f"{r['input']} {size(r['size_in'])} -> {r['output']} {size(r['size_out'])}"
