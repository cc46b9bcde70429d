"""Visual-saliency prompt (SPEC §3.6).

Pure scoring functions on feature tensors, plus :func:`visual_saliency`, which runs a feature
extractor at the configured resolution and maps the scores back to the image. The scoring uses
partial selection (top-k) and matrix products in row chunks instead of a full sort of the
P x P distance matrix or per-pixel loops; the values are those of the straightforward definition.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Literal, Optional

import cv2
import numpy as np
import torch

log = logging.getLogger(__name__)

Neighbors = Literal["farthest", "nearest"]


def _flat(features: torch.Tensor) -> torch.Tensor:
    """(1, C, h, w) or (C, h, w) -> (C, h*w)."""
    if features.dim() == 4:
        if features.shape[0] != 1:
            raise ValueError("one image at a time")
        features = features[0]
    return features.float().reshape(features.shape[0], -1)  # autocast may hand in bf16/fp16


def self_similarity_saliency(features: torch.Tensor, n: int = 400, neighbors: Neighbors = "farthest",
                             chunk: int = 4096) -> np.ndarray:
    """Single-object saliency on a feature grid -> (h, w) float32.

    ``farthest`` (official): mean of d = 0.5 (1 - cos) over the ``n`` positions farthest from each
    position. ``nearest`` (paper): mean of d = 1 - cos over its ``n`` nearest positions (itself
    included, as in a plain sort).
    """
    h, w = features.shape[-2:]
    f = _flat(features)
    p = f.shape[1]
    n = max(1, min(int(n), p))
    out = torch.empty(p, dtype=f.dtype, device=f.device)
    for start in range(0, p, chunk):
        sim = f[:, start:start + chunk].T @ f  # (rows, P)
        if neighbors == "farthest":
            d = 0.5 * (1 - sim)
            vals = torch.topk(d, n, dim=1, largest=True, sorted=False)[0]
        elif neighbors == "nearest":
            d = 1 - sim
            vals = torch.topk(d, n, dim=1, largest=False, sorted=False)[0]
        else:
            raise ValueError(f"neighbors must be 'farthest' or 'nearest', not {neighbors!r}")
        out[start:start + chunk] = vals.mean(dim=1)
    return out.view(h, w).cpu().numpy()


def cross_object_saliency(features: torch.Tensor, grid_masks: np.ndarray,
                          chunk: int = 4096) -> Optional[np.ndarray]:
    """Multi-object saliency on a feature grid -> (h, w) float64, or None with fewer than 2 objects.

    For each object mask i and each of its positions: 0.5 (1 - max cosine) to the positions of the
    OTHER object masks; positions shared with object i count as zero vectors there (cosine 0), as
    in the authors' implementation. Pixel-wise max over objects, 0 outside every object.
    """
    h, w = features.shape[-2:]
    f = _flat(features)
    masks = np.asarray(grid_masks, dtype=bool).reshape(len(grid_masks), -1)
    nonempty = [i for i in range(len(masks)) if masks[i].any()]
    if len(nonempty) < 2:
        return None
    result = np.zeros(h * w, dtype=np.float64)
    for i in nonempty:
        own = masks[i]
        others = np.zeros(h * w, dtype=bool)
        for j in nonempty:
            if j != i:
                others |= masks[j]
        other_idx = torch.from_numpy(np.flatnonzero(others & ~own)).to(f.device)
        shared = bool((others & own).any())
        own_idx = np.flatnonzero(own)
        g = f[:, other_idx]  # (C, M)
        best = torch.empty(len(own_idx), dtype=f.dtype, device=f.device)
        own_t = torch.from_numpy(own_idx).to(f.device)
        for start in range(0, len(own_idx), chunk):
            rows = f[:, own_t[start:start + chunk]].T  # (r, C)
            if g.shape[1]:
                m = (rows @ g).max(dim=1)[0]
                if shared:
                    m = torch.clamp(m, min=0.0)
            else:
                m = torch.zeros(rows.shape[0], dtype=f.dtype, device=f.device)
            best[start:start + chunk] = m
        score = np.zeros(h * w, dtype=np.float64)
        score[own_idx] = (0.5 * (1.0 - best)).cpu().numpy()
        np.maximum(result, score, out=result)
    return result.reshape(h, w)


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
