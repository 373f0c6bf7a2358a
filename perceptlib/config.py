"""Run modes shared by every notebook and command: ``quick``, ``cpu`` and ``paper``.

``quick`` is what nbval runs on a CPU in minutes, ``cpu`` the committed real run sized for
2 cores, ``paper`` the paper's settings for a GPU. The default is ``paper`` when CUDA is
available, else ``cpu``; the environment variable ``PERCEPTLIB_MODE`` overrides both.
"""
from __future__ import annotations

import os

import torch

__all__ = ["MODES", "resolve_mode", "default_device"]

MODES = ("quick", "cpu", "paper")
MODE_ENV = "PERCEPTLIB_MODE"


def resolve_mode(mode: str | None = None) -> str:
    """Return ``mode`` if given, else ``$PERCEPTLIB_MODE``, else ``paper`` on CUDA and ``cpu`` otherwise."""
    chosen = mode or os.environ.get(MODE_ENV) or ("paper" if torch.cuda.is_available() else "cpu")
    chosen = chosen.strip().lower()
    if chosen not in MODES:
        raise ValueError(f"unknown mode {chosen!r} (from {'argument' if mode else MODE_ENV}); choose one of {MODES}")
    return chosen


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
