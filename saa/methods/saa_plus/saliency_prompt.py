"""The saliency prompt (SPEC §3.6): run the feature extractor at the configured resolution, score
with :mod:`saa.saliency.single`, and bring the scores back to the image."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Optional

import cv2
import numpy as np
import torch

from ...saliency.single import Neighbors, cross_object_saliency, self_similarity_saliency

log = logging.getLogger("saa.saliency")  # the logger name users filter by


@dataclass
class SaliencyResult:
    map: np.ndarray  # (H, W) at the image resolution
    branch: str  # "single" or "multi"
    note: str = ""


def visual_saliency(image: np.ndarray, object_masks: np.ndarray, n_objects: int,
                    extractor: Callable[[np.ndarray, int], torch.Tensor], *, neighbors: Neighbors = "farthest",
                    n: int = 400, single_size: int = 256, multi_size: int = 1024,
                    single_fn=None, multi_fn=None, single_features: Optional[torch.Tensor] = None) -> SaliencyResult:
    """Saliency map of ``image`` (uint8 H x W x 3, in the colour order the preset feeds the CNN).

    ``single_features``: the image's feature grid at ``single_size`` if the caller already has it
    (what ``extractor(cv2.resize(image, (single_size, single_size)), single_size)`` returns, e.g.
    from the cross-image pass); the single-object branch then uses it instead of running the CNN.
    """
    single_fn = single_fn or self_similarity_saliency
    multi_fn = multi_fn or cross_object_saliency
    height, width = image.shape[:2]
    present = int(sum(bool(m.any()) for m in object_masks))
    if n_objects > 1 and present >= 2:
        big = cv2.resize(image, (multi_size, multi_size))
        feats = extractor(big, multi_size)
        gh, gw = feats.shape[-2:]
        grid = np.stack([cv2.resize(m.astype(np.int32), (gw, gh), interpolation=cv2.INTER_NEAREST) > 0
                         for m in object_masks]) if len(object_masks) else np.zeros((0, gh, gw), bool)
        scores = multi_fn(feats, grid)
        if scores is not None:
            return SaliencyResult(cv2.resize(scores, (width, height)), "multi")
        present = int(sum(bool(g.any()) for g in grid))
    if n_objects > 1:
        note = (f"multi-object saliency needs at least 2 object masks, found {present}; "
                f"fell back to single-object saliency")
        log.warning(note)
    else:
        note = ""
    if single_features is not None:
        feats = single_features
    else:
        feats = extractor(cv2.resize(image, (single_size, single_size)), single_size)
    heat = single_fn(feats, n=n, neighbors=neighbors)
    return SaliencyResult(cv2.resize(heat, (width, height)), "single", note)
