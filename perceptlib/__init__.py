"""perceptlib: perceptual losses (Johnson, Alahi & Fei-Fei, ECCV 2016), reproduced step by step.

The public API: :class:`LossNetwork` (frozen VGG-16 with named taps, :data:`LAYER_NAMES`), the
paper's losses and :class:`PerceptualLoss`, and :func:`resolve_vgg16` for the offline weights.
"""
from .config import MODES, default_device, resolve_mode
from .losses import (
    DISTANCES, PerceptualLoss, distance, feature_reconstruction_loss, gram_matrix, pixel_loss, style_loss,
    total_variation,
)
from .vgg import LAYER_NAMES, LossNetwork, layer_channels, min_input_size
from .weights import WeightsError, WeightsInfo, resolve_vgg16

__version__ = "0.1.0"

__all__ = [
    "MODES", "default_device", "resolve_mode",
    "DISTANCES", "PerceptualLoss", "distance", "feature_reconstruction_loss", "gram_matrix", "pixel_loss",
    "style_loss", "total_variation",
    "LAYER_NAMES", "LossNetwork", "layer_channels", "min_input_size",
    "WeightsError", "WeightsInfo", "resolve_vgg16",
]
