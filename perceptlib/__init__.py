"""perceptlib: perceptual losses (Johnson, Alahi & Fei-Fei, ECCV 2016), reproduced step by step.

The public API: :class:`LossNetwork` (frozen VGG-16 with named taps, :data:`LAYER_NAMES`), the
paper's losses and :class:`PerceptualLoss`, and :func:`resolve_vgg16` for the offline weights.
"""
from .config import (
    MODES, PAPER_SR, PAPER_STYLE, SRConfig, StyleConfig, config_from_dict, default_device, differences, for_mode,
    resolve_mode,
)
from .deploy import export_onnx, image_transform, load_network, load_onnx, preserve_color, run_tiled, transform_path
from .losses import (
    DISTANCES, PerceptualLoss, distance, feature_reconstruction_loss, gram_matrix, pixel_loss, style_loss,
    total_variation,
)
from .nets import SRNet, TransformerNet, count_parameters
from .reconstruct import Reconstruction, ReconstructionError, init_image, reconstruct
from .sr import histogram_match, load_sr, train_sr, upscale
from .style import load_style, optimise_style, stylize, train_style
from .runlock import RunLockedError
from .train import (
    CheckpointError, CheckpointWriteError, History, TrainingDivergedError, load_checkpoint, load_model, train,
)
from .vgg import LAYER_NAMES, LossNetwork, layer_channels, min_input_size
from .weights import WeightsError, WeightsInfo, resolve_vgg16

__version__ = "0.1.0"

__all__ = [
    "MODES", "default_device", "resolve_mode",
    "SRConfig", "StyleConfig", "PAPER_SR", "PAPER_STYLE", "for_mode", "differences", "config_from_dict",
    "SRNet", "TransformerNet", "count_parameters",
    "reconstruct", "Reconstruction", "ReconstructionError", "init_image",
    "train", "History", "TrainingDivergedError", "CheckpointError", "CheckpointWriteError", "RunLockedError",
    "load_checkpoint", "load_model",
    "train_sr", "upscale", "histogram_match", "load_sr",
    "train_style", "stylize", "load_style", "optimise_style",
    "DISTANCES", "PerceptualLoss", "distance", "feature_reconstruction_loss", "gram_matrix", "pixel_loss",
    "style_loss", "total_variation",
    "LAYER_NAMES", "LossNetwork", "layer_channels", "min_input_size",
    "WeightsError", "WeightsInfo", "resolve_vgg16",
    "export_onnx", "load_onnx", "load_network", "image_transform", "transform_path", "run_tiled", "preserve_color",
]
