"""Where perceptlib keeps downloaded and converted files.

The cache directory is ``$PERCEPTLIB_CACHE`` when set, else ``$XDG_CACHE_HOME/perceptlib``,
else ``~/.cache/perceptlib``. Nothing is created on import.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_dir"]

CACHE_ENV = "PERCEPTLIB_CACHE"


def cache_dir(sub: str | None = None, create: bool = True) -> Path:
    """Return the cache directory (or ``sub`` inside it), creating it when ``create``."""
    root = os.environ.get(CACHE_ENV)
    if root:
        path = Path(root).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        path = (Path(xdg) if xdg else Path.home() / ".cache") / "perceptlib"
    if sub:
        path = path / sub
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path
