"""Using the trained networks outside the notebooks.

- :mod:`.onnx`: :func:`export_onnx` (dynamic batch/height/width) and :class:`OnnxNetwork`, an
  onnxruntime runner for the exported file;
- :mod:`.runner`: :func:`load_network` (torch checkpoint, optionally ``torch.compile``'d, or ONNX file
  behind one interface) and :func:`image_transform` (network + tiles + histogram matching / colour
  preservation);
- :mod:`.tiles`: :func:`run_tiled`, tiled inference with feathered seams for large photos;
- :mod:`.media`, :mod:`.video`: :func:`transform_path` for an image, a folder (mirrored) or a video
  (PyAV, streamed, audio kept), written atomically;
- :mod:`.color`: :func:`preserve_color` (Gatys et al. 2016 luminance-only transfer).

Typical use::

    from perceptlib.deploy import export_onnx, image_transform, load_network, transform_path
    net = load_network("results/h100/style_great_wave")
    transform_path(image_transform(net, tile=512, preserve_color=True), "clip.mp4", "clip_wave.mp4")

ONNX export and onnxruntime need the ``deploy`` extra (``pip install 'perceptlib[deploy]'``), videos
PyAV (in the same extra); both are imported only when used.
"""
from .color import preserve_color, rgb_to_ycbcr, ycbcr_to_rgb
from .media import (
    VIDEO_EXTENSIONS, MediaError, atomic_path, media_kind, summarize, transform_folder, transform_image, transform_path,
)
from .onnx import DEFAULT_OPSET, OnnxNetwork, export_min_size, export_onnx, load_onnx, onnx_max_abs_diff
from .runner import BACKENDS, COMPILED_BF16_FORM, DEFAULT_OVERLAP, TorchNetwork, image_transform, load_network
from .tiles import run_tiled, tile_spans
from .video import transform_video, video_info

__all__ = [
    "preserve_color", "rgb_to_ycbcr", "ycbcr_to_rgb",
    "VIDEO_EXTENSIONS", "MediaError", "atomic_path", "media_kind", "transform_folder", "transform_image",
    "transform_path", "transform_video", "video_info", "summarize",
    "DEFAULT_OPSET", "OnnxNetwork", "export_min_size", "export_onnx", "load_onnx", "onnx_max_abs_diff",
    "BACKENDS", "COMPILED_BF16_FORM", "DEFAULT_OVERLAP", "TorchNetwork", "image_transform", "load_network",
    "run_tiled", "tile_spans",
]
