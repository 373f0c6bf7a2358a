"""Helpers of the deploy tests: tiny checkpoints as `train` writes them, and generated videos."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from perceptlib.nets import SRNet, TransformerNet


def write_checkpoint(model: nn.Module, folder: Path, step: int = 3) -> Path:
    """``folder/model.pt`` in the format :func:`perceptlib.train.load_model` reads."""
    from perceptlib.train import _FORMAT, _VERSION, MODEL_FILE, _model_record

    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"format": _FORMAT, "version": _VERSION, "step": step, "config": None,
                "model_class": _model_record(model), "model": model.state_dict()}, folder / MODEL_FILE)
    return folder / MODEL_FILE


def tiny_style(seed: int = 0, **kw) -> TransformerNet:
    torch.manual_seed(seed)
    return TransformerNet(channels=kw.pop("channels", 4), norm=kw.pop("norm", "instance"), **kw).eval()


def tiny_sr(seed: int = 0, **kw) -> SRNet:
    torch.manual_seed(seed)
    return SRNet(channels=kw.pop("channels", 8), blocks=kw.pop("blocks", 1), **kw).eval()


def make_video(path: Path, frames: int = 12, width: int = 48, height: int = 40, audio: bool = True,
               fps: int = 12) -> Path:
    """A short H.264 video of moving colour bars, with a 440 Hz AAC tone as long as the video when ``audio``."""
    import av

    with av.open(str(path), "w") as c:
        v = c.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = width, height, "yuv420p"
        a = c.add_stream("aac", rate=44100) if audio else None
        if a is not None:
            a.layout = "mono"
        for i in range(frames):
            arr = np.zeros((height, width, 3), np.uint8)
            arr[..., 0] = 20 * i % 256
            arr[:, : 4 * i % width, 1] = 200
            arr[height // 2:, :, 2] = 120
            c.mux(v.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")))
        c.mux(v.encode(None))
        if a is not None:
            rate, size = 44100, a.codec_context.frame_size or 1024
            tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(rate * frames // fps) / rate)).astype(np.float32)
            for k in range(0, len(tone), size):
                f = av.AudioFrame.from_ndarray(tone[None, k:k + size], format="flt", layout="mono")
                f.sample_rate, f.pts = rate, k
                c.mux(a.encode(f))
            c.mux(a.encode(None))
    return path
