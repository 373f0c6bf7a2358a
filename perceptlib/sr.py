"""Super-resolution glue: build the network, loss and data from an :class:`~perceptlib.config.SRConfig`,
train with the shared loop, upscale images, and the paper's histogram-matching post-processing.

Typical use::

    cfg = for_mode(PAPER_SR, "cpu")
    history = train_sr(cfg, "results/sr_x4_feat", loss="feat")
    model = load_sr("results/sr_x4_feat")
    sr = upscale(model, lr)               # (3, h, w) -> (3, 4h, 4w), float in [0, 1]
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .config import SRConfig
from .losses import PerceptualLoss
from .nets import SRNet
from .train import History, infer, load_model, train

__all__ = ["SRLoss", "ImageCache", "build_sr_model", "build_sr_loss", "build_sr_data", "training_images", "train_sr",
           "upscale",
           "histogram_match", "load_sr", "sr_upscale_fn"]


class SRLoss(nn.Module):
    """``loss_fn(model, (lr, hr)) -> (total, terms)`` for :func:`perceptlib.train.train`: the network's
    output ``model(lr)`` against ``hr`` with a :class:`~perceptlib.losses.PerceptualLoss`."""

    def __init__(self, loss: PerceptualLoss) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, model: nn.Module, batch: Sequence[Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        lr, hr = batch
        return self.loss(model(lr), hr, return_terms=True)  # type: ignore[return-value]


def build_sr_model(cfg: SRConfig) -> SRNet:
    """A freshly initialised :class:`~perceptlib.nets.SRNet` for ``cfg`` (seeded with ``cfg.seed``)."""
    torch.manual_seed(cfg.seed)
    return SRNet(scale=cfg.scale, channels=cfg.channels, blocks=cfg.blocks, upsample=cfg.upsample, norm=cfg.norm,
                 head=cfg.head)


def build_sr_loss(cfg: SRConfig) -> SRLoss:
    """``loss="pixel"``: ``l_pixel`` alone (weight 1, ``cfg.distance``) plus ``tv_weight`` TV.
    ``loss="feat"``: ``sum_j w_j l_feat_j`` over ``cfg.layers`` + ``pixel_weight * l_pixel`` + TV."""
    if cfg.loss == "pixel":
        loss = PerceptualLoss(layers={}, distance=cfg.distance, pixel_weight=1.0, tv_weight=cfg.tv_weight)
    else:
        loss = PerceptualLoss(layers=cfg.layer_weights, distance=cfg.distance, pixel_weight=cfg.pixel_weight,
                              tv_weight=cfg.tv_weight, weights=cfg.vgg_weights)
    return SRLoss(loss)


class ImageCache(Sequence):
    """Read-only list of images that decodes each file once and keeps it in memory as 8-bit
    (``(3, H, W)`` uint8: a quarter of float32), returning ``(3, H, W)`` float32 in ``[0, 1]``
    identical to :func:`perceptlib.images.load_image` (images that are not exact 8-bit levels, e.g.
    16-bit or alpha-composited ones, stay float). Tensors pass through unchanged."""

    def __init__(self, items: Sequence[str | os.PathLike | Tensor]) -> None:
        self._items = list(items)
        self._cache: dict[int, Tensor] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i: int) -> Tensor:  # type: ignore[override]
        item = self._items[i]
        if isinstance(item, Tensor):
            return item
        if i not in self._cache:
            from .images import load_image

            img = load_image(item)
            q = (img * 255).round().to(torch.uint8)
            self._cache[i] = q if torch.equal(q.float() / 255, img) else img
        t = self._cache[i]
        return t.float() / 255 if t.dtype == torch.uint8 else t

    def raw(self, i: int) -> Tensor:
        """Item ``i`` as stored: ``(3, H, W)`` uint8 (exact 8-bit images) or float in [0, 1]. Cropping it
        before ``float() / 255`` gives the same values as cropping ``self[i]``, without converting the
        whole photo for every patch."""
        item = self._items[i]
        if isinstance(item, Tensor):
            return item
        if i not in self._cache:
            self[i]  # decodes and caches
        return self._cache[i]


def training_images(train_set: str) -> list:
    """Image files for ``train_set``: a set name of :mod:`perceptlib.data` (e.g. ``"train"``) or a folder."""
    from .data import SET_NAMES, image_paths

    if train_set in SET_NAMES:
        return image_paths(train_set)
    from .images import find_images

    return find_images(train_set)


def build_sr_data(cfg: SRConfig, images: Sequence[str | os.PathLike | Tensor] | None = None,
                  cache: bool = True):
    """:class:`~perceptlib.degrade.SRPatchDataset` of ``cfg.patch_size`` HR patches from ``images``
    (default: :func:`training_images` of ``cfg.train_set``), ``cfg.patches_per_image`` distinct seeded patches
    per image, the paper's blur + bicubic degradation. ``cache``: keep decoded images in memory as
    8-bit (:class:`ImageCache`; about 0.85 GB for the 159 'train' photos) instead of decoding a file
    for every patch (the patches are identical either way)."""
    from .degrade import SRPatchDataset

    if images is None:
        images = training_images(cfg.train_set)
    images = list(images)
    ds = SRPatchDataset(images, patch_size=cfg.patch_size, scale=cfg.scale, blur_sigma=cfg.blur_sigma,
                        seed=cfg.seed, length=len(images) * cfg.patches_per_image, flips=True)
    if cache:
        ds.items = ImageCache(ds.items)  # SRPatchDataset uses tensor items as they are
    return ds


def train_sr(cfg: SRConfig, out_dir: str | os.PathLike, loss: str | None = None, resume: bool = True,
             progress: bool = True, images: Sequence[str | os.PathLike | Tensor] | None = None,
             workers: int = 0, max_seconds: float | None = None) -> History:
    """Train an SR network for ``cfg`` into ``out_dir`` with the shared loop; returns the history.

    ``loss`` (``"pixel"`` / ``"feat"``) overrides ``cfg.loss``; ``images`` overrides the training set.
    Resumes from ``out_dir/checkpoint.pt`` when ``resume``; ``workers`` and ``max_seconds`` as in
    :func:`perceptlib.train.train`.
    """
    if loss is not None:
        cfg = dataclasses.replace(cfg, loss=loss)
    data = build_sr_data(cfg, images)
    return train(build_sr_model(cfg), build_sr_loss(cfg), data, cfg, out_dir, resume=resume, progress=progress,
                 workers=workers, max_seconds=max_seconds)


def load_sr(path: str | os.PathLike, device: str | torch.device = "cpu") -> SRNet:
    """The trained :class:`~perceptlib.nets.SRNet` in a ``model.pt``/``checkpoint.pt`` (or their folder),
    in eval mode. Raises :class:`perceptlib.train.CheckpointError` (a ValueError) for a missing,
    unreadable or non-SR checkpoint."""
    return load_model(path, expect="SRNet", device=device)  # type: ignore[return-value]


def histogram_match(sr: Tensor, lr: Tensor) -> Tensor:
    """Match each channel's histogram of ``sr`` to that of ``lr`` (the paper's SR post-processing).

    ``sr``: ``(3, H, W)`` or ``(N, 3, H, W)``; ``lr``: the same batch layout at any size. Per image and
    channel, the value with cumulative frequency ``q`` in ``sr`` becomes the value with cumulative
    frequency ``q`` in ``lr`` (linear interpolation between ``lr``'s distinct values), as
    ``skimage.exposure.match_histograms``: equal values stay equal and the order of values is kept.
    """
    if sr.dim() != lr.dim() or sr.dim() not in (3, 4) or sr.shape[-3] != lr.shape[-3]:
        raise ValueError(f"sr and lr must both be (C, H, W) or (N, C, H, W) with equal C and N, "
                         f"got {tuple(sr.shape)} and {tuple(lr.shape)}")
    if sr.dim() == 4:
        if sr.shape[0] != lr.shape[0]:
            raise ValueError(f"batch sizes differ: {sr.shape[0]} vs {lr.shape[0]}")
        return torch.stack([histogram_match(s, low) for s, low in zip(sr, lr)])
    out = np.empty(tuple(sr.shape), dtype=np.float64)
    src_all = sr.detach().cpu().double().numpy()
    ref_all = lr.detach().cpu().double().numpy()
    for c in range(sr.shape[0]):
        src, ref = src_all[c].ravel(), ref_all[c].ravel()
        s_values, s_idx, s_counts = np.unique(src, return_inverse=True, return_counts=True)
        r_values, r_counts = np.unique(ref, return_counts=True)
        s_q = np.cumsum(s_counts) / src.size
        r_q = np.cumsum(r_counts) / ref.size
        out[c] = np.interp(s_q, r_q, r_values)[s_idx].reshape(sr.shape[1:])
    return torch.from_numpy(out).to(dtype=sr.dtype, device=sr.device)


def upscale(model: nn.Module, lr: Tensor, hist_match: bool = False, precision: str = "auto") -> Tensor:
    """Super-resolve ``lr`` ``(3, h, w)`` or ``(N, 3, h, w)`` float in ``[0, 1]`` with ``model`` (eval mode,
    no grad, on the model's device) -> ``(…, 3, s*h, s*w)`` float32 in ``[0, 1]`` on the CPU.
    ``hist_match``: apply :func:`histogram_match` to the LR input (the paper's post-processing).
    ``precision``: ``auto`` (bf16 where the device has it), ``bf16`` or ``off`` (:mod:`perceptlib.precision`)."""
    if not isinstance(lr, Tensor) or lr.dim() not in (3, 4) or lr.shape[-3] != 3:
        got = tuple(lr.shape) if isinstance(lr, Tensor) else type(lr).__name__
        raise ValueError(f"lr must be a (3, h, w) or (N, 3, h, w) tensor, got {got}")
    batch = lr.unsqueeze(0) if lr.dim() == 3 else lr
    out = infer(model, batch, precision).clamp_(0, 1)
    if hist_match:
        out = histogram_match(out, batch.float().cpu())
    return out[0] if lr.dim() == 3 else out


def sr_upscale_fn(model: nn.Module, hist_match: bool = False, precision: str = "auto"):
    """``lambda lr: upscale(model, lr, hist_match, precision)`` for :func:`perceptlib.metrics.evaluate_sr`."""
    return lambda lr: upscale(model, lr, hist_match, precision)
