"""The paper's losses: feature reconstruction, Gram/style, pixel and total variation.

All functions take ``(N, C, H, W)`` tensors and return a scalar averaged over the batch, normalised
as in Johnson et al. (2016): ``l_feat = ||a - b||^2 / (C H W)`` (Eq. 2), ``G = F F^T / (C H W)``
(Eq. 3), ``l_style = ||G(a) - G(b)||_F^2`` (Eq. 4), ``l_pixel = ||a - b||^2 / (C H W)``.
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Literal

import torch
from torch import Tensor, nn

from .vgg import LAYER_NAMES, LossNetwork

__all__ = [
    "DISTANCES", "Distance", "distance", "feature_reconstruction_loss", "gram_matrix", "style_loss",
    "total_variation", "pixel_loss", "PerceptualLoss",
]

Distance = Literal["l2", "l1", "l1+l2"]
DISTANCES: tuple[str, ...] = ("l2", "l1", "l1+l2")


def distance(a: Tensor, b: Tensor, kind: Distance = "l2") -> Tensor:
    """Per-element distance summed over (C, H, W), divided by C*H*W, averaged over the batch.

    ``"l2"``: squared L2 (the paper); ``"l1"``: absolute differences; ``"l1+l2"``: their sum.
    ``b`` may broadcast against ``a`` (e.g. a ``(1, C, H, W)`` target).
    """
    if kind not in DISTANCES:
        raise ValueError(f"unknown distance {kind!r}; choose one of {DISTANCES}")
    if a.dim() != 4:
        raise ValueError(f"expected (N, C, H, W) tensors, got shape {tuple(a.shape)}")
    if a.shape[1:] != b.shape[1:] or b.shape[0] not in (1, a.shape[0]):
        raise ValueError(f"shape mismatch: {tuple(a.shape)} vs {tuple(b.shape)}")
    diff = a.float() - b.float()
    out = diff.new_zeros(())
    if "l2" in kind:
        out = out + diff.square().mean()
    if "l1" in kind:
        out = out + diff.abs().mean()
    return out


def feature_reconstruction_loss(a: Tensor, b: Tensor, kind: Distance = "l2") -> Tensor:
    """Eq. 2: ``||phi(a) - phi(b)||_2^2 / (C H W)`` for ``(N, C, H, W)`` features, batch mean."""
    return distance(a, b, kind)


def pixel_loss(a: Tensor, b: Tensor, kind: Distance = "l2") -> Tensor:
    """``||a - b||_2^2 / (C H W)`` for ``(N, 3, H, W)`` images, batch mean (the paper's l_pixel)."""
    return distance(a, b, kind)


def gram_matrix(f: Tensor) -> Tensor:
    """Eq. 3: ``(N, C, H, W)`` features -> ``(N, C, C)`` Gram ``F F^T / (C H W)``, in float32.

    The product runs in float32 even under autocast: a bf16 Gram keeps ~3 significant digits, too few
    for the small differences the style loss measures (and fp16 Grams overflow)."""
    if f.dim() != 4:
        raise ValueError(f"expected (N, C, H, W) features, got shape {tuple(f.shape)}")
    n, c, h, w = f.shape
    flat = f.float().reshape(n, c, h * w)
    with torch.autocast(f.device.type, enabled=False):
        return torch.bmm(flat, flat.transpose(1, 2)) / (c * h * w)


def style_loss(pred: Mapping[str, Tensor], target: Mapping[str, Tensor],
               weights: Mapping[str, float] | None = None) -> Tensor:
    """Eq. 4 summed over layers: ``sum_j w_j ||G_j(pred) - G_j(target)||_F^2``, batch mean.

    ``pred`` and ``target`` map layer names to ``(N, C, C)`` Gram matrices (``target`` may have
    N = 1 and broadcast); ``weights`` defaults to 1 for every layer of ``pred``.
    """
    weights = weights if weights is not None else {k: 1.0 for k in pred}
    total = None
    for name, w in weights.items():
        if name not in pred or name not in target:
            raise KeyError(f"no Gram matrix for layer {name!r}")
        term = w * (pred[name] - target[name]).square().sum(dim=(1, 2)).mean()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("style_loss needs at least one layer")
    return total


def total_variation(x: Tensor, power: float = 2.0) -> Tensor:
    """Anisotropic total variation of ``(N, C, H, W)`` images: the sum over pixels and channels of
    ``|x[i+1, j] - x[i, j]|^p + |x[i, j+1] - x[i, j]|^p``, averaged over the batch.

    ``power=2`` (squared neighbour differences) as the official code; ``power=1`` the L1 form.
    """
    if x.dim() != 4:
        raise ValueError(f"expected (N, C, H, W) images, got shape {tuple(x.shape)}")
    dy = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().pow(power)
    dx = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().pow(power)
    return (dy.sum(dim=(1, 2, 3)) + dx.sum(dim=(1, 2, 3))).mean()


def _as_weights(layers: Mapping[str, float] | Iterable[str] | str | None) -> dict[str, float]:
    if layers is None:
        return {}
    if isinstance(layers, str):
        layers = {layers: 1.0}
    elif not isinstance(layers, Mapping):
        layers = {name: 1.0 for name in layers}
    out = {str(k): float(v) for k, v in layers.items()}
    unknown = [k for k in out if k not in LAYER_NAMES]
    if unknown:
        raise ValueError(f"unknown VGG-16 layer(s) {unknown}; valid names: " + ", ".join(LAYER_NAMES))
    return out


class PerceptualLoss(nn.Module):
    """Weighted sum of the paper's losses, called as ``loss(pred, target)``.

    ``total = sum_j layers[j] * l_feat_j + style_weight * sum_j style_layers[j] * l_style_j
    + pixel_weight * l_pixel + tv_weight * l_tv``. ``pred``/``target``: ``(N, 3, H, W)`` float in
    [0, 1]; the target goes through the truncated network under ``no_grad`` (stopping at the
    deepest *content* layer), only ``pred`` through autograd. Fixed targets can be cached with
    :meth:`set_target` and :meth:`set_style`. With ``return_terms=True`` a dict of detached terms
    comes back too: weighted ``feat``/``style``/``pixel``/``tv`` (summing to ``total``) and
    unweighted per-layer ``feat/<layer>``, ``style/<layer>``.
    """

    def __init__(self, layers: Mapping[str, float] | Iterable[str] | str | None = None,
                 distance: Distance = "l2", pixel_weight: float = 0.0,
                 style_layers: Mapping[str, float] | Iterable[str] | None = None, style_weight: float = 0.0,
                 tv_weight: float = 0.0, weights: str | os.PathLike | None = "torchvision",
                 style_image: Tensor | None = None, network: LossNetwork | None = None) -> None:
        super().__init__()
        self.layers = _as_weights({"relu2_2": 1.0} if layers is None else layers)
        self.style_layers = _as_weights(style_layers) if style_weight else {}
        if distance not in DISTANCES:
            raise ValueError(f"unknown distance {distance!r}; choose one of {DISTANCES}")
        self.distance = distance
        self.pixel_weight, self.style_weight, self.tv_weight = float(pixel_weight), float(style_weight), float(tv_weight)
        taps = [n for n in LAYER_NAMES if n in self.layers or n in self.style_layers]
        if style_weight and not self.style_layers:
            raise ValueError("style_weight is set but style_layers is empty")
        if not taps and not (pixel_weight or tv_weight):
            raise ValueError("the loss has no terms: give layers, style layers, pixel_weight or tv_weight")
        self.net: LossNetwork | None = None
        if taps:
            if network is not None and not set(taps) <= set(network.layers):
                raise ValueError(f"the given network taps {network.layers}, but the loss needs {taps}")
            self.net = network if network is not None else LossNetwork(taps, weights=weights)
        self._target: dict[str, Tensor] | None = None
        self._target_image: Tensor | None = None
        self.style_grams: dict[str, Tensor] = {}
        if style_image is not None:
            self.set_style(style_image)

    @torch.no_grad()
    def _features(self, x: Tensor, layers: Iterable[str]) -> dict[str, Tensor]:
        return self.net(x, layers=tuple(layers))  # type: ignore[misc]

    def set_style(self, style_image: Tensor) -> None:
        """Cache the target Gram matrices of ``style_image`` ``(1, 3, H, W)`` in [0, 1]."""
        if not self.style_layers:
            raise ValueError("this loss has no style term (set style_layers and style_weight)")
        feats = self._features(style_image, self.style_layers)
        self.style_grams = {k: gram_matrix(v) for k, v in feats.items()}

    def set_target(self, target: Tensor | None) -> None:
        """Cache the content features (and pixels) of a fixed ``target``; ``None`` clears it."""
        self._target_image = None if target is None else target.detach()
        self._target = None
        if target is not None and self.layers:
            self._target = self._features(target, self.layers)

    @property
    def target_image(self) -> Tensor | None:
        """The fixed target cached by :meth:`set_target` ``(N, 3, H, W)``, or ``None``."""
        return self._target_image

    def forward(self, pred: Tensor, target: Tensor | None = None, return_terms: bool = False
                ) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        needs_target = bool(self.layers) or bool(self.pixel_weight)
        if target is None and needs_target and self._target_image is None:
            raise ValueError("no target: pass loss(pred, target) or call set_target(target) first")
        if self.style_layers and not self.style_grams:
            raise ValueError("no style target: call set_style(style_image) first")
        terms: dict[str, Tensor] = {}
        total = pred.new_zeros((), dtype=torch.float32)
        if self.net is not None:
            feats = self.net(pred)
            if self.layers:
                tfeats = self._features(target, self.layers) if target is not None else self._target
                feat = total.new_zeros(())
                for name, w in self.layers.items():
                    term = feature_reconstruction_loss(feats[name], tfeats[name], self.distance)  # type: ignore[index]
                    terms[f"feat/{name}"] = term.detach()
                    feat = feat + w * term
                terms["feat"] = feat.detach()
                total = total + feat
            if self.style_layers:
                grams = {k: gram_matrix(feats[k]) for k in self.style_layers}
                style = total.new_zeros(())
                for k, w in self.style_layers.items():
                    term = style_loss(grams, self.style_grams, {k: 1.0})
                    terms[f"style/{k}"] = term.detach()
                    style = style + w * term
                style = self.style_weight * style
                terms["style"] = style.detach()
                total = total + style
        if self.pixel_weight:
            ref = target.detach() if target is not None else self._target_image
            pix = self.pixel_weight * pixel_loss(pred, ref, self.distance)  # type: ignore[arg-type]
            terms["pixel"] = pix.detach()
            total = total + pix
        if self.tv_weight:
            tv = self.tv_weight * total_variation(pred.float())
            terms["tv"] = tv.detach()
            total = total + tv
        terms["total"] = total.detach()
        return (total, terms) if return_terms else total
